"""OME-Zarr in and out (the zarr extra): pyramid, chunks, axes/scale/units, provenance, atomic replacement.

Skipped without zarr-python (``pip install ".[zarr]"``).  Real folders in tmp_path, tiny arrays.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

pytest.importorskip("zarr")

from napari_deep_prior.cli import main  # noqa: E402 - after the skip
from napari_deep_prior.io import (  # noqa: E402
    ImageMeta,
    check_output,
    read_header,
    read_image,
    read_image_meta,
    write_image,
)
from napari_deep_prior.omezarr import AXES_KEY, PYRAMID_MIN_SIDE, PYRAMID_SIDE, ngff_axes  # noqa: E402
from napari_deep_prior.provenance import LAYER_KEY, SOFTWARE  # noqa: E402

PROV = {"software": SOFTWARE, "version": "0.0", "task": "denoise"}
ZYX_SIZES = {"Z": (0.5, "µm"), "Y": (0.1, "µm"), "X": (0.1, "µm")}


def _attrs(path):
    return json.loads((path / ".zattrs").read_text())


def test_write_a_pyramid_with_axes_scales_units_and_provenance(tmp_path):
    data = (np.random.default_rng(0).random((2, 2 * PYRAMID_SIDE + 20, 2 * PYRAMID_MIN_SIDE + 10)) * 1000).astype(
        np.uint16
    )
    out = tmp_path / "stack.zarr"
    write_image(out, data, None, meta=ImageMeta("ZYX", ZYX_SIZES, None, "imagej"), provenance=PROV)
    attrs = _attrs(out)
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4"
    assert ms["axes"] == [
        {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    # 532 x 138 -> 266 x 69: halved while the largest side exceeds 256 and the smallest stays >= 64
    assert [d["path"] for d in ms["datasets"]] == ["0", "1"]
    s0, s1 = (d["coordinateTransformations"] for d in ms["datasets"])
    assert s0 == [{"type": "scale", "scale": [0.5, 0.1, 0.1]}]
    assert s1[0]["scale"] == pytest.approx([0.5, 0.2, 0.2])
    assert s1[1] == {"type": "translation", "translation": pytest.approx([0.0, 0.05, 0.05])}
    assert attrs[LAYER_KEY] == PROV
    z0 = json.loads((out / "0" / ".zarray").read_text())
    assert z0["chunks"] == [1, *data.shape[1:]] and z0["dimension_separator"] == "/"
    z1 = json.loads((out / "1" / ".zarray").read_text())
    assert z1["shape"] == [2, data.shape[1] // 2, data.shape[2] // 2]
    # level 1 is the 2 x 2 mean of level 0
    import zarr

    level1 = np.asarray(zarr.open_group(str(out), mode="r")["1"][...])
    want = data[:, :2, :2].astype(float).mean(axis=(1, 2))
    np.testing.assert_allclose(level1[:, 0, 0], np.rint(want))
    # read back: the full-resolution level, its metadata
    np.testing.assert_array_equal(read_image(out), data)
    header = read_header(out)
    assert header.format == "zarr" and header.shape == data.shape and header.dtype == np.uint16
    meta = read_image_meta(out)
    assert meta.kind == "ome-zarr" and meta.axes == "ZYX" and meta.provenance == PROV
    assert meta.pixel_sizes == ZYX_SIZES


def test_channels_last_are_stored_first_and_read_back_last(tmp_path):
    rgb = (np.random.default_rng(1).random((20, 30, 3)) * 255).astype(np.uint8)
    out = tmp_path / "rgb.zarr"
    write_image(out, rgb, -1, meta=ImageMeta("YX", {"Y": (2.0, "nm"), "X": (2.0, "nm")}))
    attrs = _attrs(out)
    assert [a["name"] for a in attrs["multiscales"][0]["axes"]] == ["c", "y", "x"]
    assert attrs[AXES_KEY] == "YXC"
    assert json.loads((out / "0" / ".zarray").read_text())["shape"] == [3, 20, 30]
    np.testing.assert_array_equal(read_image(out), rgb)
    meta = read_image_meta(out)
    assert meta.axes == "YXC" and meta.pixel_sizes == {"Y": (2.0, "nm"), "X": (2.0, "nm")}


def test_ngff_axes_order_and_refusals(tmp_path):
    assert ngff_axes((4, 5, 8, 8, 3), -1, "TZYXC") == ("TCZYX", [0, 4, 1, 2, 3])
    assert ngff_axes((5, 8, 8), None) == ("ZYX", [0, 1, 2])  # no metadata: one leading axis is Z
    with pytest.raises(ValueError, match="NGFF 0.4"):
        ngff_axes((2, 3, 4, 5, 8, 8), None)
    with pytest.raises(ValueError, match="cannot hold"):
        ngff_axes((2, 3, 8, 8), 1, "QCYX")  # a channel and another non-space axis
    with pytest.raises(ValueError, match="NGFF"):
        check_output(tmp_path / "six.zarr", np.float32, (2, 3, 4, 5, 8, 8), None)
    with pytest.raises(ValueError, match="not complex64"):
        check_output(tmp_path / "c.zarr", np.complex64, (8, 8), None)
    assert not list(tmp_path.iterdir())


def test_replaces_an_ome_zarr_but_never_another_folder(tmp_path):
    out = tmp_path / "r.zarr"
    write_image(out, np.zeros((8, 8), np.uint8), None, provenance=PROV)
    write_image(out, np.ones((10, 12), np.uint8), None)  # replaced all at once
    assert read_header(out).shape == (10, 12) and read_image_meta(out).provenance is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]  # no temporary or old folder left
    precious = tmp_path / "data.zarr"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a Zarr image"):
        write_image(precious, np.zeros((8, 8), np.uint8), None)
    assert (precious / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="not a readable OME-Zarr"):
        read_header(precious)
    with pytest.raises(FileNotFoundError, match="no such image file"):
        read_header(tmp_path / "missing.zarr")


def test_cli_imagej_to_ome_zarr_and_back(tmp_path, capsys):
    src = tmp_path / "stack.tif"
    noisy = (np.random.default_rng(2).random((2, 24, 24)) * 1000).astype(np.uint16)
    tifffile.imwrite(
        src, noisy, imagej=True, resolution=(10, 10), metadata={"axes": "ZYX", "spacing": 0.5, "unit": "um"}
    )
    out = tmp_path / "out.zarr"
    assert main(["denoise", str(src), "-o", str(out), "--iterations", "5", "-q"]) == 0, capsys.readouterr().err
    meta = read_image_meta(out)
    assert meta.axes == "ZYX" and meta.pixel_sizes == ZYX_SIZES
    assert meta.provenance["task"] == "denoise" and meta.provenance["input"] == "stack.tif"
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "OME-Zarr" in text and "2 x 24 x 24 (ZYX), uint16" in text and "task: denoise of stack.tif" in text
    back = tmp_path / "back.tif"
    assert main(["denoise", str(out), "-o", str(back), "--iterations", "5", "-q"]) == 0
    meta = read_image_meta(back)  # a plain TIFF now (the input was not ImageJ): the sizes are kept
    assert meta.axes == "ZYX" and meta.provenance["input"] == "out.zarr"
    for axis, (value, unit) in ZYX_SIZES.items():
        assert meta.pixel_sizes[axis][0] == pytest.approx(value) and meta.pixel_sizes[axis][1] == unit
