"""OME-Zarr to OME-Zarr on the command line, plane by plane: the same result as in memory, metadata
and pyramid, memory bounded by a plane, nothing left behind by a failure.  Needs zarr (the extra)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("zarr")

from napari_deep_prior import cli  # noqa: E402 - after the skips
from napari_deep_prior.io import ImageMeta, read_image, read_image_meta, write_image  # noqa: E402
from napari_deep_prior.omezarr import PYRAMID_SIDE  # noqa: E402

FAST = ["--iterations", "3", "--seed", "1", "-q"]
ZYX = ImageMeta("ZYX", {"Z": (0.5, "µm"), "Y": (0.1, "µm"), "X": (0.1, "µm")}, None, "ome-zarr")


@pytest.fixture
def stack_zarr(tmp_path):
    """A 3-plane ZYX uint8 OME-Zarr, wider than one pyramid level (0.5 / 0.1 / 0.1 µm)."""
    rng = np.random.default_rng(0)
    data = (rng.random((3, PYRAMID_SIDE + 44, 280)) * 255).astype(np.uint8)
    path = tmp_path / "in.zarr"
    write_image(path, data, None, meta=ZYX)
    return path


def test_a_stack_is_restored_plane_by_plane_as_in_memory(stack_zarr, tmp_path, capsys, monkeypatch):
    from napari_deep_prior.restore import stream

    reads = []
    real_read = stream.StackJob._read

    def counted(self, plane):
        reads.append(plane)
        return real_read(self, plane)

    monkeypatch.setattr(stream.StackJob, "_read", counted)
    out = tmp_path / "out.zarr"
    assert cli.main(["denoise", str(stack_zarr), "-o", str(out), *FAST]) == 0
    text = capsys.readouterr().out
    assert "restoring 3 plane(s) one at a time" in text and "(plane by plane)" in text
    assert sorted(reads) == [0, 1, 1, 2, 2]  # the range pass, then each plane once more (0 kept)
    assert cli.main(["denoise", str(stack_zarr), "-o", str(tmp_path / "eager.tif"), *FAST]) == 0
    np.testing.assert_array_equal(read_image(out), read_image(tmp_path / "eager.tif"))
    meta = read_image_meta(out)
    assert meta.axes == "ZYX" and meta.pixel_sizes == ZYX.pixel_sizes
    prov = meta.provenance
    assert prov["task"] == "denoise" and prov["seed"] == 1 and len(prov["planes"]) == 3
    assert [p["iterations_run"] for p in prov["planes"]] == [3, 3, 3]
    attrs = json.loads((out / ".zattrs").read_text())
    datasets = attrs["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == ["0", "1"]
    level1 = json.loads((out / "1" / ".zarray").read_text())
    assert level1["shape"] == [3, (PYRAMID_SIDE + 44) // 2, 140] and level1["chunks"][0] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_a_warm_start_runs_plane_by_plane_as_in_memory(stack_zarr, tmp_path, capsys):
    warm = [*FAST, "--warm-start"]
    assert cli.main(["denoise", str(stack_zarr), "-o", str(tmp_path / "out.zarr"), *warm]) == 0
    assert "(plane by plane)" in capsys.readouterr().out
    assert cli.main(["denoise", str(stack_zarr), "-o", str(tmp_path / "eager.tif"), *warm]) == 0
    assert cli.main(["denoise", str(stack_zarr), "-o", str(tmp_path / "cold.tif"), *FAST]) == 0
    streamed, eager = read_image(tmp_path / "out.zarr"), read_image(tmp_path / "eager.tif")
    np.testing.assert_array_equal(streamed, eager)
    assert not np.array_equal(eager[1:], read_image(tmp_path / "cold.tif")[1:])
    assert read_image_meta(tmp_path / "out.zarr").provenance["options"]["warm_start"] is True


def test_an_rgb_stack_keeps_its_channels_last(tmp_path, capsys):
    rng = np.random.default_rng(1)
    rgb = (rng.random((2, 40, 36, 3)) * 255).astype(np.uint8)
    src = tmp_path / "rgb.zarr"
    write_image(src, rgb, -1)
    assert cli.main(["denoise", str(src), "-o", str(tmp_path / "out.zarr"), *FAST]) == 0
    assert cli.main(["denoise", str(src), "-o", str(tmp_path / "eager.tif"), *FAST]) == 0
    capsys.readouterr()
    streamed = read_image(tmp_path / "out.zarr")
    assert streamed.shape == rgb.shape
    np.testing.assert_array_equal(streamed, read_image(tmp_path / "eager.tif"))


def test_a_plane_that_fails_leaves_no_output_and_an_existing_one_as_it_was(tmp_path, capsys):
    data = np.random.default_rng(2).random((3, 32, 32)).astype(np.float32)
    data[2, 5, 5] = np.nan  # plane 2 cannot be fitted
    src = tmp_path / "in.zarr"
    write_image(src, data, None)
    out = tmp_path / "out.zarr"
    assert cli.main(["denoise", str(src), "-o", str(out), *FAST]) == 2
    assert "plane 2 of 3" in capsys.readouterr().err
    assert not out.exists()
    before = np.ones((3, 32, 32), np.float32)
    write_image(out, before, None)
    assert cli.main(["denoise", str(src), "-o", str(out), *FAST]) == 2
    np.testing.assert_array_equal(read_image(out), before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr", "out.zarr"]
