"""The command line on a real dask cluster (--workers N, --scheduler ADDRESS): the same files as in
this process, per-file failures reported, a killed worker losing nothing.

Real worker processes (2 workers of 1 thread, as CI's 2 cores give), tiny images, few iterations.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import dask
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_deep_prior import cli
from napari_deep_prior.io import read_image

distributed = pytest.importorskip("distributed")

FAST = ["--iterations", "4", "--seed", "1", "--history-every", "0", "-q"]


def _grey(seed: int, shape=(24, 24)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    clean = 120 + 60 * np.sin(x / 5.0 + seed) * np.cos(y / 7.0)
    return np.clip(clean + rng.normal(0, 15, shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cluster():
    c = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
    )
    yield c
    c.close()


@pytest.fixture
def batch(tmp_path) -> Path:
    """3 grey PNGs, a 4-plane TIFF stack and a corrupt TIFF in tmp_path/raw."""
    d = tmp_path / "raw"
    d.mkdir()
    for i, name in enumerate("abc"):
        iio.imwrite(d / f"{name}.png", _grey(i))
    tifffile.imwrite(d / "stack.tif", np.stack([_grey(10 + k) for k in range(4)]), photometric="minisblack")
    (d / "broken.tif").write_bytes(b"II*\x00" + os.urandom(200))
    return d


def _outputs(d: Path) -> dict[str, np.ndarray]:
    return {p.name: read_image(p) for p in sorted(d.iterdir())}


def test_a_batch_on_two_workers_writes_what_the_process_writes(batch, tmp_path, capsys, one_torch_thread):
    here, there = tmp_path / "here", tmp_path / "there"
    assert cli.main(["denoise", str(batch), "--out-dir", str(here), *FAST]) == 1
    capsys.readouterr()
    assert cli.main(["denoise", str(batch), "--out-dir", str(there), "--workers", "2", *FAST]) == 1
    out, err = capsys.readouterr()
    assert "dask: 2 worker(s) of 1 thread(s) on a local cluster" in out
    assert "4 done, 0 skipped, 1 failed" in out
    assert f"failed: {batch / 'broken.tif'}" in err
    a, b = _outputs(here), _outputs(there)
    assert sorted(a) == sorted(b) == ["a.png", "b.png", "c.png", "stack.tif"]
    for name in a:
        assert a[name].shape == b[name].shape and a[name].dtype == b[name].dtype
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert b["stack.tif"].shape == (4, 24, 24)
    assert not (there / "broken.tif").exists()


def test_a_tiled_plane_on_a_running_cluster_is_the_process_result(cluster, tmp_path, capsys, one_torch_thread):
    src = tmp_path / "big.png"
    iio.imwrite(src, _grey(5, (96, 100)))
    tiles = ["--tile", "64", "--tile-overlap", "16"]
    assert cli.main(["denoise", str(src), "-o", str(tmp_path / "here.png"), *tiles, *FAST]) == 0
    capsys.readouterr()
    args = ["denoise", str(src), "-o", str(tmp_path / "there.png"), *tiles, *FAST]
    scheduler_file = tmp_path / "scheduler.json"  # how a cluster started elsewhere is found
    with distributed.Client(cluster, set_as_default=False) as c:
        c.write_scheduler_file(str(scheduler_file))
    assert cli.main([*args, "--scheduler", str(scheduler_file)]) == 0
    out, _err = capsys.readouterr()
    assert "processing in 4 tiles" in out and f"the cluster at {scheduler_file}" in out
    np.testing.assert_array_equal(read_image(tmp_path / "here.png"), read_image(tmp_path / "there.png"))


def test_killing_a_worker_during_a_batch_loses_nothing(tmp_path, capsys, one_torch_thread):
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, np.stack([_grey(20 + k, (32, 32)) for k in range(4)]), photometric="minisblack")
    slow = ["--iterations", "40", "--seed", "2", "--history-every", "0", "-q"]
    assert cli.main(["denoise", str(src), "-o", str(tmp_path / "here.tif"), *slow]) == 0
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=50
    )
    killed = []
    stop = threading.Event()

    def kill_a_busy_worker():
        """Once a worker is fitting, kill its process (SIGKILL): its fit is lost with it."""
        with distributed.Client(cluster, set_as_default=False) as c:
            pids = c.run(os.getpid)
            while not stop.is_set():
                busy = [w for w, keys in c.processing().items() if keys]
                if busy:
                    time.sleep(0.5)
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append(busy[0])
                    return
                time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    try:
        code = cli.main(
            ["denoise", str(src), "-o", str(tmp_path / "there.tif"), *slow, "--scheduler", cluster.scheduler_address]
        )
    finally:
        stop.set()
        killer.join(30)
        cluster.close()
    assert killed, "no worker was busy: the test did not kill one"
    assert code == 0, capsys.readouterr()
    np.testing.assert_array_equal(read_image(tmp_path / "here.tif"), read_image(tmp_path / "there.tif"))


def test_cluster_options_are_checked(batch, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["denoise", str(batch), "--out-dir", str(tmp_path / "o"), "--workers", "2", "--scheduler", "x"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert cli.main(["denoise", str(batch / "a.png"), "-o", str(tmp_path / "o.png"), "--workers", "0"]) == 2
    assert "--workers must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):  # nothing listens on port 9
        code = cli.main(
            ["denoise", str(batch / "a.png"), "-o", str(tmp_path / "o.png"), "--scheduler", "tcp://127.0.0.1:9"]
        )
    assert code == 2
    err = capsys.readouterr().err
    assert "--scheduler tcp://127.0.0.1:9: cannot reach a dask scheduler there" in err
    assert not (tmp_path / "o.png").exists()
