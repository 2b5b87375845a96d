"""Finding, downloading and verifying weights, without ever touching the network."""

from __future__ import annotations

import hashlib
import io
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
    assert [p.name for p in (tmp_path / "dl").iterdir()] == [info.filename]
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
    monkeypatch.setattr(W, "_urlopen", lambda url, timeout: FakeResponse(payload[:-10]))
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
