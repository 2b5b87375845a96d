"""Reliability of the command line: every case of the reliability issue, as a hostile user tries them.

Each row of ``CASES`` builds its files, runs the CLI, and checks the exit code, a fragment of the
message, that every file the user had is byte for byte unchanged, and (for refusals) that the
fit never started.  Signals during a fit and during a write run the CLI in a real subprocess.
"""

from __future__ import annotations

import errno
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from child_signals import SIGINT_DEFAULT
from napari_deep_prior import cli
from napari_deep_prior.io import read_history_tiff

FAST = ["--iterations", "20", "-q"]


# -- files ------------------------------------------------------------------------------------


def _grey(seed=0, shape=(32, 32)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    clean = 120 + 60 * np.sin(x / 5.0) * np.cos(y / 7.0)
    return np.clip(clean + rng.normal(0, 15, shape), 0, 255).astype(np.uint8)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` grey pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _tiff_header_only(path: Path, side: int) -> None:
    """A TIFF whose header claims ``side`` x ``side`` uint8 pixels; the pixel data are not there."""
    tifffile.imwrite(path, shape=(side, side), dtype=np.uint8)
    with open(path, "r+b") as fh:  # keep the header, drop the (sparse) pixel data
        fh.truncate(512)


@pytest.fixture
def files(tmp_path) -> Path:
    d = tmp_path
    grey = _grey()
    iio.imwrite(d / "x.png", grey)
    iio.imwrite(d / "clean.png", _grey(seed=9))
    rgba = np.dstack([np.stack([grey] * 3, -1), np.full(grey.shape, 200, np.uint8)])
    iio.imwrite(d / "rgba.png", rgba)
    mask = np.zeros(grey.shape, np.uint8)
    mask[10:16, 8:20] = 255
    iio.imwrite(d / "m.png", mask)
    tifffile.imwrite(d / "stack.tif", np.stack([_grey(s) for s in range(3)]))
    tifffile.imwrite(d / "five.tif", np.stack([_grey(s) for s in range(5)], -1))
    tifffile.imwrite(d / "const.tif", np.full((32, 32), 0.37, np.float32))
    nan = grey.astype(np.float32)
    nan[12:14, 10:12] = np.nan
    tifffile.imwrite(d / "nan.tif", nan)
    iio.imwrite(d / "big_ref.png", _grey(shape=(40, 40)))
    (d / "prev.jpg").write_bytes(b"previous result, keep me")
    (d / "prev.png").write_bytes(b"previous png result, keep me")
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("this is not an image\n")
    (d / "folder").mkdir()
    (d / "folder.png").mkdir()
    (d / "demo_noisy.png").mkdir()
    _tiff_header_only(d / "huge.tif", 100_000)
    _png_header_only(d / "bomb.png", 20_000, 20_000)
    (d / "hints.csv").write_text("row,col,color\n4,4,#ff0000\n99,5,#00ff00\n")
    return d


# -- the table --------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    argv: list[str]  # "{d}" is the test folder
    rc: int
    fragment: str  # in stderr (errors) or stdout (success)
    fit: bool = False  # may the fit start?
    absent: list[str] = field(default_factory=list)  # files that must not exist afterwards
    posix_user: bool = False  # needs a non-root user (permission bits)


CASES = [
    # --- data loss: refused before anything is written
    Case("rgba-to-existing-jpeg", ["denoise", "{d}/rgba.png", "-o", "{d}/prev.jpg"], 2, "JPEG cannot hold"),
    Case("output-is-input", ["denoise", "{d}/x.png", "-o", "{d}/x.png"], 2, "an input of this run"),
    Case("output-is-input-spelled-otherwise", ["denoise", "{d}/x.png", "-o", "{d}/folder/../x.png"], 2, "an input"),
    Case(
        "output-is-mask",
        ["inpaint", "{d}/x.png", "--mask", "{d}/m.png", "-o", "{d}/m.png"],
        2,
        "same file as --mask",
    ),
    Case(
        "output-is-reference",
        ["denoise", "{d}/x.png", "--reference", "{d}/clean.png", "-o", "{d}/clean.png"],
        2,
        "same file as --reference",
    ),
    Case(
        "history-is-output",
        ["denoise", "{d}/x.png", "-o", "{d}/same.tif", "--history", "{d}/same.tif"],
        2,
        "two outputs cannot share a file",
        absent=["same.tif"],
    ),
    # --- checked before the fit, not after
    Case("output-is-folder", ["denoise", "{d}/x.png", "-o", "{d}/folder.png"], 2, "is a folder"),
    Case("output-folder-missing", ["denoise", "{d}/x.png", "-o", "{d}/nope/out.png"], 2, "does not exist"),
    Case(
        "history-folder-missing",
        ["denoise", "{d}/x.png", "-o", "{d}/out.png", "--history", "{d}/nope/h.tif"],
        2,
        "does not exist",
        absent=["out.png"],
    ),
    Case(
        "history-not-tiff",
        ["denoise", "{d}/x.png", "-o", "{d}/out.png", "--history", "{d}/h.png"],
        2,
        "give a .tif path",
    ),
    Case(
        "reference-wrong-shape",
        ["denoise", "{d}/x.png", "-o", "{d}/out.png", "--reference", "{d}/big_ref.png"],
        2,
        "nothing was run",
        absent=["out.png"],
    ),
    Case("stack-to-jpeg", ["denoise", "{d}/stack.tif", "-o", "{d}/out.jpg"], 2, "holds one 2D image"),
    Case("stack-to-png", ["denoise", "{d}/stack.tif", "-o", "{d}/out.png"], 2, "animated PNG"),
    Case(
        "five-channels-to-jpeg",
        ["denoise", "{d}/five.tif", "--channel-axis", "-1", "-o", "{d}/out.jpg"],
        2,
        "JPEG cannot hold an image of 5 channels",
    ),
    Case("float-to-png", ["denoise", "{d}/const.tif", "-o", "{d}/out.png"], 2, "write a .tif"),
    Case("demo-folder-missing", ["demo", "-o", "{d}/nope/demo.png"], 2, "does not exist"),
    Case("demo-output-is-folder", ["demo", "-o", "{d}/folder.png"], 2, "is a folder"),
    Case("demo-bad-type", ["demo", "-o", "{d}/demo.txt"], 2, "unsupported file type"),
    Case("demo-noisy-copy-is-folder", ["demo", "-o", "{d}/demo.png"], 2, "the noisy copy"),
    Case("read-only-folder", ["denoise", "{d}/x.png", "-o", "{d}/ro/out.png"], 2, "permission denied"),
    # --- silent garbage
    Case("lr-inf", ["denoise", "{d}/x.png", "-o", "{d}/out.png", "--lr", "inf"], 2, "--lr"),
    Case("lr-huge", ["denoise", "{d}/x.png", "-o", "{d}/out.png", "--lr", "1e30"], 2, "--lr"),
    Case("lr-nan", ["denoise", "{d}/x.png", "-o", "{d}/out.png", "--lr", "nan"], 2, "--lr"),
    Case("demo-sigma-nan", ["demo", "-o", "{d}/demo.png", "--sigma", "nan"], 2, "--sigma"),
    Case("demo-sigma-negative", ["demo", "-o", "{d}/demo.png", "--sigma", "-3"], 2, "--sigma"),
    Case(
        "constant-image",
        ["denoise", "{d}/const.tif", "-o", "{d}/const_out.tif", *FAST],
        0,
        "is constant (value 0.37): nothing to fit",
        fit=True,
    ),
    # --- tracebacks instead of messages
    Case("tiff-header-100000", ["denoise", "{d}/huge.tif", "-o", "{d}/out.tif"], 2, "100000x100000 uint8"),
    Case("png-bomb-20000", ["denoise", "{d}/bomb.png", "-o", "{d}/out.png"], 2, "decompression bomb"),
    # --- misleading messages
    Case("input-is-folder", ["denoise", "{d}/folder", "-o", "{d}/out.png"], 2, "is a folder, not an image"),
    Case("empty-png", ["denoise", "{d}/empty.png", "-o", "{d}/out.png"], 2, "is empty (0 bytes)"),
    Case("text-png", ["denoise", "{d}/text.png", "-o", "{d}/out.png"], 2, "it is a text file"),
    Case("missing-input", ["denoise", "{d}/missing.png", "-o", "{d}/out.png"], 2, "no such image file"),
    Case("seed-2**70", ["denoise", "{d}/x.png", "-o", "{d}/out.png", "--seed", str(2**70)], 2, "--seed"),
    Case("five-channels-auto", ["denoise", "{d}/five.tif", "-o", "{d}/out.tif"], 2, "--channel-axis -1"),
    Case("tile-too-small", ["denoise", "{d}/x.png", "-o", "{d}/out.png", "--tile", "3"], 2, "--tile"),
    Case(
        "channel-axis-out-of-range",
        ["denoise", "{d}/x.png", "-o", "{d}/out.png", "--channel-axis", "5"],
        2,
        "--channel-axis",
    ),
    Case(
        "history-every-negative",
        ["denoise", "{d}/x.png", "-o", "{d}/out.png", "--history-every", "-1"],
        2,
        "--history-every",
    ),
    Case(
        "nan-pixels-denoise",
        ["denoise", "{d}/nan.tif", "-o", "{d}/out.tif"],
        2,
        "fill those pixels in with inpaint and a --mask that covers them",
    ),
    Case(
        "hint-out-of-range-by-csv-line",
        ["colorize", "{d}/x.png", "--method", "levin", "--hints", "{d}/hints.csv", "-o", "{d}/c.png"],
        2,
        "line 3",
    ),
]


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def no_fit(monkeypatch):
    """Fail if a fit starts (the CLI runs every job through cli._run_job)."""
    started = []
    real = cli._run_job

    def spy(job, quiet):
        started.append(job)
        return real(job, quiet)

    monkeypatch.setattr(cli, "_run_job", spy)
    return started


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_case(case, files, no_fit, capsys, one_torch_thread, monkeypatch):
    d = files
    if case.id == "read-only-folder":
        (d / "ro").mkdir()
        if os.geteuid() == 0:  # root ignores permission bits: refuse the way a read-only mount does
            import tempfile

            real = tempfile.mkstemp

            def mkstemp(*a, dir=None, **k):
                if dir is not None and Path(dir) == d / "ro":
                    raise PermissionError(errno.EACCES, "Permission denied")
                return real(*a, dir=dir, **k)

            monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        else:
            (d / "ro").chmod(0o555)
    before = _snapshot(d)
    argv = [a.replace("{d}", str(d)) for a in case.argv]
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == case.rc, (out, err)
    text = err if case.rc else out + err
    assert case.fragment in text, text
    if case.rc:
        assert "Traceback" not in err
        assert err.count("\n") == 1, err  # one line
    after = _snapshot(d)
    for name, data in before.items():
        assert after.get(name) == data, f"{name} changed"
    new = set(after) - set(before)
    if case.rc:
        assert not new, f"a refused run wrote {new}"
        assert not no_fit, "the fit started before the refusal"
    for name in case.absent:
        assert not (d / name).exists()
    assert not [p for p in d.rglob("*.part*")], "a temporary file was left behind"


def test_constant_image_is_returned_unchanged(files, one_torch_thread, capsys):
    d = files
    assert cli.main(["denoise", str(d / "const.tif"), "-o", str(d / "c.tif"), *FAST]) == 0
    np.testing.assert_array_equal(tifffile.imread(d / "c.tif"), tifffile.imread(d / "const.tif"))


def test_nan_pixels_inpainted_when_the_mask_covers_them(files, one_torch_thread, capsys):
    d = files
    mask = np.zeros((32, 32), np.uint8)
    mask[11:15, 9:13] = 255
    iio.imwrite(d / "nanmask.png", mask)
    rc = cli.main(["inpaint", str(d / "nan.tif"), "--mask", str(d / "nanmask.png"), "-o", str(d / "o.tif"), *FAST])
    assert rc == 0, capsys.readouterr().err
    assert np.isfinite(tifffile.imread(d / "o.tif")).all()


def test_history_of_a_short_run_has_ten_frames(files, one_torch_thread, capsys):
    d = files
    rc = cli.main(["denoise", str(d / "x.png"), "-o", str(d / "o.png"), "--history", str(d / "h.tif"), *FAST])
    assert rc == 0
    frames, its, _ = read_history_tiff(d / "h.tif")
    assert len(its) >= 10 and frames.shape[0] == len(its) and its[-1] <= 20


def test_disk_full_during_the_write_keeps_the_old_file(files, one_torch_thread, monkeypatch, capsys):
    """The writer fails half way (ENOSPC, as on a full disk): the old file is intact, no temporary is left."""
    d = files
    tifffile.imwrite(d / "prev.tif", np.arange(16, dtype=np.uint8).reshape(4, 4))
    before = (d / "prev.tif").read_bytes()
    real = tifffile.imwrite

    def full_disk(path, data, **kw):
        real(path, data, **kw)
        with open(path, "r+b") as fh:  # half the file made it to the disk
            fh.truncate(os.path.getsize(path) // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", full_disk)
    rc = cli.main(["denoise", str(d / "x.png"), "-o", str(d / "prev.tif"), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "no space left on the device" in err and "not changed" in err, err
    assert (d / "prev.tif").read_bytes() == before
    assert not list(d.glob(".*part*"))


def test_disk_full_without_errno_is_named(files, one_torch_thread, monkeypatch, capsys):
    """numpy's short write raises OSError('2304 requested and 956 written') without an errno."""
    d = files

    def short_write(path, data, **kw):
        Path(path).write_bytes(b"\0" * 956)
        raise OSError("2304 requested and 956 written")

    monkeypatch.setattr(tifffile, "imwrite", short_write)
    monkeypatch.setattr("shutil.disk_usage", lambda p: SimpleNamespace(total=10**9, used=10**9, free=512))
    rc = cli.main(["denoise", str(d / "x.png"), "-o", str(d / "o.tif"), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "no space left" in err, err
    assert not (d / "o.tif").exists()


# -- signals: a real subprocess -----------------------------------------------------------------

_SLOW_WRITER = textwrap.dedent(
    """
    import sys, time, tifffile
    real = tifffile.imwrite
    def slow(path, data, **kw):
        real(path, data, **kw)
        with open(path, "r+b") as fh:
            fh.truncate(33)  # what an interrupted write leaves
        print("WRITING", flush=True)
        time.sleep(60)
    tifffile.imwrite = slow
    from napari_deep_prior.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("CI", None)
    return env


def _wait_for(proc, marker: str, timeout: float = 120.0) -> str:
    seen = ""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if marker in line:
            return seen
    proc.kill()
    raise AssertionError(f"never saw {marker!r}: {seen}")


@pytest.mark.parametrize("signum, rc", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGKILL, -9)])
def test_signal_during_the_write_keeps_the_old_file(tmp_path, signum, rc):
    d = tmp_path
    iio.imwrite(d / "x.png", _grey(shape=(1024, 1024)))
    tifffile.imwrite(d / "prev.tif", np.full((8, 8), 7, np.uint8))
    before = (d / "prev.tif").read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, "denoise", str(d / "x.png"), "-o", str(d / "prev.tif")]
        + ["--iterations", "2", "--tile", "0", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        preexec_fn=SIGINT_DEFAULT,
    )
    _wait_for(proc, "WRITING")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == rc, err
    assert (d / "prev.tif").read_bytes() == before
    if signum != signal.SIGKILL:  # a killed process cannot clean up its hidden temporary file
        assert not list(d.glob(".*part*")), list(d.iterdir())
        assert "Traceback" not in err, err


def _fit_process(d: Path, extra=()):
    iio.imwrite(d / "x.png", _grey(shape=(48, 48)))
    return subprocess.Popen(
        [sys.executable, "-m", "napari_deep_prior.cli", "denoise", str(d / "x.png"), "-o", str(d / "out.tif")]
        + ["--iterations", "100000", "--no-early-stop", "--history", str(d / "h.tif"), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        preexec_fn=SIGINT_DEFAULT,
    )


def test_ctrl_c_writes_the_estimate_so_far(tmp_path):
    proc = _fit_process(tmp_path)
    _wait_for(proc, "it 1")  # the fit is running (the progress bar prints a line every 10 %)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "estimate" in out and "iteration" in out, out
    result = tifffile.imread(tmp_path / "out.tif")
    assert result.shape == (48, 48) and result.dtype == np.uint8
    assert "Traceback" not in out


def test_sigterm_during_the_fit_exits_at_once_without_writing(tmp_path):
    proc = _fit_process(tmp_path)
    _wait_for(proc, "it 1")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "terminated" in out and "Traceback" not in out, out
    assert not (tmp_path / "out.tif").exists() and not (tmp_path / "h.tif").exists()


def test_second_ctrl_c_during_the_write_exits_without_writing(tmp_path):
    """Ctrl-C stops the fit and the estimate is being written; a second Ctrl-C abandons the write."""
    d = tmp_path
    iio.imwrite(d / "x.png", _grey(shape=(48, 48)))
    tifffile.imwrite(d / "prev.tif", np.full((8, 8), 7, np.uint8))
    before = (d / "prev.tif").read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, "denoise", str(d / "x.png"), "-o", str(d / "prev.tif")]
        + ["--iterations", "100000", "--no-early-stop"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        preexec_fn=SIGINT_DEFAULT,
    )
    _wait_for(proc, "it 1")
    proc.send_signal(signal.SIGINT)
    _wait_for(proc, "WRITING")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "interrupted twice" in out and "Traceback" not in out, out
    assert (d / "prev.tif").read_bytes() == before
    assert not list(d.glob(".*part*"))


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 74088185856 bytes"
        ),
        RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    ],
    ids=["MemoryError", "cpu-allocator", "cuda-oom"],
)
def test_out_of_memory_anywhere_is_exit_2(files, monkeypatch, capsys, error):
    """An allocation failure in the middle of the fit: exit 2, one line saying what to do, no file."""
    from napari_deep_prior.restore import fit

    def fail(self):
        raise error
        yield  # a generator

    monkeypatch.setattr(fit.DIPFit, "steps", fail)
    d = files
    rc = cli.main(["denoise", str(d / "x.png"), "-o", str(d / "o.png"), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "out of memory" in err and "--tile" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (d / "o.png").exists()


def test_address_space_limit_is_the_memory_limit(tmp_path):
    """Under ``ulimit -v`` (as SLURM and some containers set it) the plan sees the limit, not the RAM:
    a whole-image fit that cannot fit is refused with a message naming the limit, not a crash."""
    import resource

    iio.imwrite(tmp_path / "x.png", np.dstack([_grey(s, shape=(1024, 1024)) for s in range(3)]))
    limit = 2_500 * 2**20

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "napari_deep_prior.cli", "denoise", str(tmp_path / "x.png")]
        + ["-o", str(tmp_path / "o.png"), "--tile", "0", "-q"],
        capture_output=True,
        text=True,
        env=_env(),
        preexec_fn=cap,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "ulimit -v" in proc.stderr and "--tile" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.png").exists()
