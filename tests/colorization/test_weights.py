"""Finding, downloading and verifying weights, without ever touching the network."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.error

import pytest
import torch

from napari_deep_prior.colorization import weights as W
from napari_deep_prior.colorization.weights import WeightsInfo
from napari_deep_prior.errors import WeightsError


@pytest.fixture(autouse=True)
def isolated_folders(tmp_path, monkeypatch):
    """No real environment variable, an empty torch hub cache, and no network."""
    hub = tmp_path / "hub"
    monkeypatch.delenv(W.ENV_VAR, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(W, "_urlopen", no_network)
    W._VERIFIED.clear()
    return hub / "checkpoints"


def fake_info(payload: bytes, name: str = "fake") -> WeightsInfo:
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    return WeightsInfo(name, f"{name}-{prefix}.pth", len(payload), f"https://example.invalid/{name}-{prefix}.pth")


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def test_published_files():
    assert W.WEIGHTS["eccv16"].filename == "colorization_release_v2-9b330a0b.pth"
    assert W.WEIGHTS["eccv16"].size == 128_976_165
    assert W.WEIGHTS["eccv16"].hash_prefix == "9b330a0b"
    assert W.WEIGHTS["siggraph17"].filename == "siggraph17-df00044c.pth"
    assert W.WEIGHTS["siggraph17"].size == 136_787_426
    assert W.WEIGHTS["siggraph17"].url.endswith("/siggraph17-df00044c.pth")


def test_unknown_model():
    with pytest.raises(ValueError, match="eccv16"):
        W.weights_info("vgg")


def test_lookup_order(tmp_path, monkeypatch, isolated_folders):
    name = W.WEIGHTS["siggraph17"].filename
    hub = isolated_folders
    env = tmp_path / "env"
    explicit = tmp_path / "explicit"
    for folder in (hub, env, explicit):
        folder.mkdir(parents=True)
        (folder / name).write_bytes(b"x")
    assert W.find_weights("siggraph17") == hub / name
    monkeypatch.setenv(W.ENV_VAR, str(env))
    assert W.search_folders() == [env, hub]
    assert W.find_weights("siggraph17") == env / name
    assert W.find_weights("siggraph17", explicit) == explicit / name  # a folder
    other = tmp_path / "renamed.pth"
    other.write_bytes(b"y")
    assert W.find_weights("siggraph17", other) == other  # a file
    (env / name).unlink()
    assert W.find_weights("siggraph17") == hub / name
    (hub / name).unlink()
    assert W.find_weights("siggraph17") is None


def test_explicit_path_missing(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        W.find_weights("eccv16", tmp_path / "nope.pth")


def test_explicit_folder_without_file(tmp_path):
    with pytest.raises(WeightsError, match="has no file colorization_release_v2-9b330a0b.pth"):
        W.find_weights("eccv16", tmp_path)


def test_offline_error_says_what_where_and_how(isolated_folders):
    with pytest.raises(WeightsError) as info:
        W.get_weights("eccv16")
    msg = str(info.value)
    assert "colorization_release_v2-9b330a0b.pth" in msg
    assert "128,976,165 bytes" in msg
    assert "https://colorizers.s3.us-east-2.amazonaws.com/colorization_release_v2-9b330a0b.pth" in msg
    assert str(isolated_folders) in msg
    assert W.ENV_VAR in msg and "offline" in msg
    assert not list(isolated_folders.glob("*.part"))  # no partial file left behind


def test_no_download_allowed():
    with pytest.raises(WeightsError, match="was not found"):
        W.get_weights("siggraph17", download=False)


def test_download_verifies_and_renames(tmp_path, monkeypatch):
    payload = bytes(range(256)) * 5000
    info = fake_info(payload)
    seen = []
    monkeypatch.setattr(W, "_urlopen", lambda url, timeout: FakeResponse(payload))
    path = W.download_weights(info, tmp_path / "dl", progress=lambda d, t: seen.append((d, t)))
    assert path == tmp_path / "dl" / info.filename
    assert path.read_bytes() == payload
    assert seen[0] == (0, len(payload)) and seen[-1] == (len(payload), len(payload))
    # the file and the record of its full sha256 (sha256sum format), no .part file
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == [info.filename, info.filename + ".sha256"]
    digest = hashlib.sha256(payload).hexdigest()
    assert (tmp_path / "dl" / (info.filename + ".sha256")).read_text() == f"{digest}  {info.filename}\n"
    W.verify_weights(path, info)


def test_download_goes_to_env_folder(tmp_path, monkeypatch):
    payload = b"weights" * 100
    info = fake_info(payload)
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path / "env"))
    monkeypatch.setattr(W, "_urlopen", lambda url, timeout: FakeResponse(payload))
    assert W.get_weights(info) == tmp_path / "env" / info.filename


def test_truncated_download_is_rejected(tmp_path, monkeypatch):
    payload = b"abc" * 1000
    info = fake_info(payload)
    resp = FakeResponse(payload[:-10])  # the connection ends early
    resp.headers = {"Content-Length": str(len(payload))}
    monkeypatch.setattr(W, "_urlopen", lambda url, timeout: resp)
    with pytest.raises(WeightsError, match="2,990 bytes instead of 3,000"):
        W.download_weights(info, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_download_is_rejected(tmp_path, monkeypatch):
    payload = b"abc" * 1000
    info = fake_info(payload)
    monkeypatch.setattr(W, "_urlopen", lambda url, timeout: FakeResponse(b"abd" * 1000))
    with pytest.raises(WeightsError, match="damaged"):
        W.download_weights(info, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_verify_wrong_size(tmp_path):
    info = fake_info(b"12345")
    p = tmp_path / info.filename
    p.write_bytes(b"1234")
    with pytest.raises(WeightsError, match="has 4 bytes but"):
        W.verify_weights(p, info)


def test_verify_wrong_hash(tmp_path):
    info = fake_info(b"12345")
    p = tmp_path / info.filename
    p.write_bytes(b"12346")
    with pytest.raises(WeightsError, match=f"does not start with\\s+{info.hash_prefix}"):
        W.verify_weights(p, info)
    W.verify_weights(p, info, check_hash=False)  # size only


def test_load_state_dict_rejects_non_tensor_pickles(tmp_path):
    p = tmp_path / "evil.pth"
    torch.save({"a": object.__new__(WeightsInfo)}, p)
    with pytest.raises(WeightsError, match="cannot read"):
        W.load_state_dict(p)


def test_load_colorizer_from_a_verified_file(tmp_path, monkeypatch):
    # A small stand-in network keeps this test fast: the loader is generic over names.
    from napari_deep_prior.colorization import networks as colorizers

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model1 = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))

    monkeypatch.setitem(colorizers.COLORIZERS, "tiny", Tiny)
    sd = Tiny().state_dict()
    buf = io.BytesIO()
    torch.save(sd, buf)
    payload = buf.getvalue()
    info = fake_info(payload, "tiny")
    monkeypatch.setitem(W.WEIGHTS, "tiny", info)
    (tmp_path / info.filename).write_bytes(payload)
    net = W.load_colorizer("tiny", tmp_path, device="cpu")
    assert not net.training
    torch.testing.assert_close(net.model1[0].weight, sd["model1.0.weight"])
    # A file of the right size and hash but the wrong layout is refused clearly.
    monkeypatch.setitem(colorizers.COLORIZERS, "tiny", lambda: torch.nn.Linear(2, 2))
    with pytest.raises(WeightsError, match="does not match the tiny network"):
        W.load_colorizer("tiny", tmp_path / info.filename)


# --- reliability: size limit, interruptions, stale .part files, read-only folders ----------------


class CountingResponse(FakeResponse):
    """A response that records how many bytes were asked for at each read."""

    def __init__(self, data: bytes, headers=True):
        super().__init__(data)
        self.asked: list[int] = []
        if not headers:
            self.headers = None

    def read(self, n=-1):
        self.asked.append(n)
        return super().read(n)


def test_download_reads_no_more_than_the_expected_size(tmp_path, monkeypatch):
    payload = bytes(range(256)) * 40
    info = fake_info(payload)
    monkeypatch.setattr(W, "_CHUNK", 1000)
    resp = CountingResponse(payload)
    monkeypatch.setattr(W, "_urlopen", lambda url, timeout: resp)
    W.download_weights(info, tmp_path)
    # every read asks for at most what is still missing, then one byte to see the end
    done = 0
    for n in resp.asked[:-1]:
        assert 0 < n <= len(payload) - done
        done += n
    assert done == len(payload) and resp.asked[-1] == 1


def test_download_longer_than_expected_is_refused(tmp_path, monkeypatch):
    payload = b"abc" * 1000
    info = fake_info(payload)
    # no Content-Length: the extra bytes are found after the expected size
    resp = CountingResponse(payload + b"more", headers=False)
    monkeypatch.setattr(W, "_urlopen", lambda url, timeout: resp)
    with pytest.raises(WeightsError, match="more than the 3,000 bytes"):
        W.download_weights(info, tmp_path)
    assert sum(resp.asked) <= len(payload) + 1
    assert list(tmp_path.iterdir()) == []


def test_download_announcing_another_size_is_refused_before_reading(tmp_path, monkeypatch):
    payload = b"abc" * 1000
    info = fake_info(payload)
    resp = CountingResponse(payload + b"x")
    monkeypatch.setattr(W, "_urlopen", lambda url, timeout: resp)
    with pytest.raises(WeightsError, match="announces 3,001 bytes"):
        W.download_weights(info, tmp_path)
    assert resp.asked == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_interrupted_download_leaves_no_part_file(tmp_path, monkeypatch, interrupt):
    payload = b"abc" * 1000
    info = fake_info(payload)
    monkeypatch.setattr(W, "_CHUNK", 100)
    monkeypatch.setattr(W, "_urlopen", lambda url, timeout: FakeResponse(payload))

    def progress(done, total):
        if done >= 500:
            raise interrupt()

    with pytest.raises(interrupt):
        W.download_weights(info, tmp_path, progress=progress)
    assert list(tmp_path.iterdir()) == []


_SLOW_DOWNLOAD = """
import sys, time, hashlib, io
from pathlib import Path
from napari_deep_prior.colorization import weights as W

payload = bytes(range(256)) * 4000
info = W.WeightsInfo("fake", "fake-%s.pth" % hashlib.sha256(payload).hexdigest()[:8], len(payload), "x")
folder = Path(sys.argv[1])

class Slow(io.BytesIO):
    headers = None
    def read(self, n=-1):
        (folder / "started").touch()
        time.sleep(0.05)
        return super().read(min(n, 1000))

W._urlopen = lambda url, timeout: Slow(payload)
W.download_weights(info, folder)
print("finished")
"""


def test_sigterm_during_download_removes_the_part_file(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    if not hasattr(signal, "SIGTERM") or sys.platform == "win32":
        pytest.skip("POSIX signals")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_DOWNLOAD, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the download did not start"
            time.sleep(0.02)
        time.sleep(0.1)
        assert list(tmp_path.glob("*.part")), "a .part file is being written"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGTERM  # it still dies of SIGTERM ...
    assert b"finished" not in out
    assert list(tmp_path.glob("*.part")) == []  # ... after removing its .part file
    assert not list(tmp_path.glob("fake-*.pth"))


def test_stale_part_files_are_removed(tmp_path, monkeypatch):
    import subprocess
    import sys
    import time

    payload = b"abc" * 1000
    info = fake_info(payload)
    other = fake_info(b"other", "other")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has ended
    host = W._host()
    old = time.time() - 2 * W.STALE_PART_SECONDS
    files = {
        "dead here": f"{info.filename}.{host}.{dead_pid}.abc123.part",
        "alive here": f"{info.filename}.{host}.{os.getppid()}.def456.part",
        "this process": f"{info.filename}.{host}.{os.getpid()}.ghi789.part",
        "other machine, recent": f"{info.filename}.elsewhere.{dead_pid}.jkl012.part",
        "other machine, old": f"{info.filename}.elsewhere.{os.getppid()}.mno345.part",
        "old version, old": f"{info.filename}.pqr678.part",
        "old version, recent": f"{info.filename}.stu901.part",
        "another weight file": f"{other.filename}.{host}.{dead_pid}.vwx234.part",
    }
    for key, name in files.items():
        (tmp_path / name).write_bytes(b"partial")
        if key.endswith(", old"):
            os.utime(tmp_path / name, (old, old))
    monkeypatch.setattr(W, "_urlopen", lambda url, timeout: FakeResponse(payload))
    W.download_weights(info, tmp_path)
    left = {key for key, name in files.items() if (tmp_path / name).exists()}
    assert left == {"alive here", "this process", "other machine, recent", "old version, recent", "another weight file"}
    assert (tmp_path / info.filename).read_bytes() == payload


def test_get_weights_removes_stale_parts_of_the_search_folders(tmp_path, monkeypatch, isolated_folders):
    import time

    payload = b"abc" * 1000
    info = fake_info(payload)
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path / "env"))
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / info.filename).write_bytes(payload)
    stale = isolated_folders / f"{info.filename}.x1y2z3.part"
    isolated_folders.mkdir(parents=True)
    stale.write_bytes(b"partial")
    old = time.time() - 2 * W.STALE_PART_SECONDS
    os.utime(stale, (old, old))
    assert W.get_weights(info) == tmp_path / "env" / info.filename
    assert not stale.exists()


@pytest.fixture
def read_only(monkeypatch):
    """Make a folder read-only: chmod 0o555, or (root ignores that) a file system that says EROFS."""
    import errno
    import stat
    import tempfile

    made: list = []

    def make(folder):
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            real = tempfile.mkstemp

            def mkstemp(*args, dir=None, **kwargs):
                if dir is not None and os.path.samefile(dir, folder):
                    raise OSError(errno.EROFS, "Read-only file system", str(folder / "x.part"))
                return real(*args, dir=dir, **kwargs)

            monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        else:
            folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
            made.append(folder)
        return folder

    yield make
    for folder in made:
        folder.chmod(0o755)


def test_read_only_weights_folder_is_explained(tmp_path, monkeypatch, read_only):
    payload = b"abc" * 1000
    info = fake_info(payload)
    folder = read_only(tmp_path / "ro")
    monkeypatch.setattr(W, "_urlopen", lambda url, timeout: FakeResponse(payload))
    with pytest.raises(WeightsError) as err:
        W.download_weights(info, folder)
    msg = str(err.value)
    assert f"cannot download {info.filename} into {folder}" in msg
    assert "read-only" in msg or "permission denied" in msg
    assert W.ENV_VAR in msg and "weights=" in msg
    assert "Errno" not in msg and ".part" not in msg
    assert list(folder.iterdir()) == []


def test_get_weights_downloads_into_the_first_writable_folder(tmp_path, monkeypatch, isolated_folders, read_only):
    payload = b"abc" * 1000
    info = fake_info(payload)
    env = read_only(tmp_path / "env")
    monkeypatch.setenv(W.ENV_VAR, str(env))
    monkeypatch.setattr(W, "_urlopen", lambda url, timeout: FakeResponse(payload))
    assert W.get_weights(info) == isolated_folders / info.filename


def test_a_file_in_a_read_only_folder_still_loads(tmp_path, read_only):
    payload = b"abc" * 1000
    info = fake_info(payload)
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / info.filename).write_bytes(payload)
    read_only(folder)
    assert W.read_weights(folder / info.filename, info) == payload  # no record can be made: fine
    assert not (folder / (info.filename + ".sha256")).exists()


# --- reliability: the bytes checked are the bytes loaded; full sha256 ---------------------------


def no_prefix_info(payload: bytes, sha256: str | None = None) -> WeightsInfo:
    """A file name without a usable hash prefix: any content passes the prefix check, as a
    32-bit prefix shared by chance would."""
    return WeightsInfo("fake", "fake-.pth", len(payload), "https://example.invalid/fake-.pth", sha256)


def test_first_use_records_the_full_hash_and_later_loads_must_match(tmp_path):
    a, b = b"A" * 3000, b"B" * 3000
    info = no_prefix_info(a)
    path = tmp_path / info.filename
    record = tmp_path / (info.filename + ".sha256")
    path.write_bytes(a)
    assert W.read_weights(path, info) == a
    assert record.read_text() == f"{hashlib.sha256(a).hexdigest()}  {info.filename}\n"
    path.write_bytes(b)  # damaged or replaced after it was first verified
    with pytest.raises(WeightsError, match="has changed since it was first verified") as err:
        W.read_weights(path, info)
    assert f"Delete {info.filename} and {record.name}" in str(err.value)
    with pytest.raises(WeightsError, match="has changed since it was first verified"):
        W.verify_weights(path, info)
    record.unlink()  # replaced on purpose: trust the new file
    assert W.read_weights(path, info) == b
    W.verify_weights(path, info)


def test_a_malformed_record_is_named(tmp_path):
    payload = b"A" * 3000
    info = no_prefix_info(payload)
    (tmp_path / info.filename).write_bytes(payload)
    (tmp_path / (info.filename + ".sha256")).write_text("not a hash\n")
    with pytest.raises(WeightsError, match=r"should hold the sha256 .* Delete"):
        W.read_weights(tmp_path / info.filename, info)


def test_full_sha256_when_pinned(tmp_path, monkeypatch):
    a, b = b"A" * 3000, b"B" * 3000
    info = no_prefix_info(a, sha256=hashlib.sha256(a).hexdigest())
    (tmp_path / info.filename).write_bytes(b)
    with pytest.raises(WeightsError, match="not the published"):
        W.read_weights(tmp_path / info.filename, info)
    monkeypatch.setattr(W, "_urlopen", lambda url, timeout: FakeResponse(b))
    with pytest.raises(WeightsError, match="the download is damaged"):
        W.download_weights(info, tmp_path / "dl")
    monkeypatch.setattr(W, "_urlopen", lambda url, timeout: FakeResponse(a))
    assert W.download_weights(info, tmp_path / "dl").read_bytes() == a


def test_load_colorizer_unpickles_the_bytes_it_verified(tmp_path, monkeypatch):
    """A file swapped between the check and the load is refused: the load reads it once."""
    from napari_deep_prior.colorization import networks as colorizers

    monkeypatch.setitem(colorizers.COLORIZERS, "tiny", lambda: torch.nn.Linear(2, 2))
    good, evil = io.BytesIO(), io.BytesIO()
    net = torch.nn.Linear(2, 2)
    torch.save(net.state_dict(), good)
    with torch.no_grad():
        net.weight.fill_(1.0)
    torch.save(net.state_dict(), evil)
    assert len(good.getvalue()) == len(evil.getvalue())
    info = no_prefix_info(good.getvalue())
    monkeypatch.setitem(W.WEIGHTS, "tiny", info)
    path = tmp_path / info.filename
    path.write_bytes(good.getvalue())
    W.verify_weights(path, info)  # records the good file
    real_get = W.get_weights

    def get_then_swap(*args, **kwargs):
        found = real_get(*args, **kwargs)
        path.write_bytes(evil.getvalue())  # the race: replaced after the path was checked
        return found

    monkeypatch.setattr(W, "get_weights", get_then_swap)
    with pytest.raises(WeightsError, match="has changed since it was first verified"):
        W.load_colorizer("tiny", path)
    # and torch.load is handed the verified buffer, never the path
    path.write_bytes(good.getvalue())
    seen = []
    real_load = torch.load
    monkeypatch.setattr(W, "get_weights", real_get)
    monkeypatch.setattr(torch, "load", lambda f, **kw: seen.append((type(f), kw)) or real_load(f, **kw))
    W.load_colorizer("tiny", path)
    assert seen == [(io.BytesIO, {"map_location": "cpu", "weights_only": True})]
