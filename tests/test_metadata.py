"""Image metadata in and out of files: axes, pixel sizes and provenance (io.read_image_meta / write_image).

Real files written to tmp_path with tifffile, Pillow and imageio, read back; tiny arrays, no fit.
"""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_deep_prior.io import (
    ImageMeta,
    read_history_tiff,
    read_image,
    read_image_meta,
    write_history_tiff,
    write_image,
)
from napari_deep_prior.provenance import SOFTWARE

ZYX_SIZES = {"Z": (0.5, "µm"), "Y": (0.1, "µm"), "X": (0.1, "µm")}
PROV = {"software": SOFTWARE, "version": "0.0", "task": "denoise", "preset": "denoise", "note": "µ ünïcode"}


def _sizes_close(got, want):
    assert list(got) == list(want)
    for axis, (value, unit) in want.items():
        assert got[axis][0] == pytest.approx(value, rel=1e-6) and got[axis][1] == unit, (axis, got[axis])


@pytest.fixture
def imagej_zyx(tmp_path):
    """An ImageJ hyperstack ZYX of 0.1 µm pixels and 0.5 µm z-spacing, as Fiji writes it."""
    path = tmp_path / "stack.tif"
    data = np.arange(3 * 16 * 20, dtype=np.uint16).reshape(3, 16, 20)
    tifffile.imwrite(
        path, data, imagej=True, resolution=(10, 10), metadata={"axes": "ZYX", "spacing": 0.5, "unit": "micron"}
    )
    return path, data


def test_read_imagej_stack(imagej_zyx):
    path, _ = imagej_zyx
    meta = read_image_meta(path)
    assert meta.kind == "imagej" and meta.axes == "ZYX" and meta.provenance is None
    _sizes_close(meta.pixel_sizes, ZYX_SIZES)


@pytest.mark.parametrize("unit", ["um", "micron", "\\u00B5m", "micrometer"])
def test_imagej_unit_spellings(tmp_path, unit):
    path = tmp_path / "u.tif"
    tifffile.imwrite(
        path, np.zeros((8, 8), np.uint8), imagej=True, resolution=(4, 4), metadata={"axes": "YX", "unit": unit}
    )
    assert read_image_meta(path).pixel_sizes == {"Y": (0.25, "µm"), "X": (0.25, "µm")}


@pytest.mark.parametrize("name, kind", [("out.tif", "imagej"), ("out.ome.tif", "ome"), ("out.ome.tiff", "ome")])
def test_imagej_input_round_trips_axes_sizes_and_provenance(imagej_zyx, name, kind):
    path, data = imagej_zyx
    meta = read_image_meta(path)
    out = path.parent / name
    write_image(out, data, None, meta=meta, provenance=PROV)
    back = read_image_meta(out)
    assert back.kind == kind and back.axes == "ZYX"
    _sizes_close(back.pixel_sizes, ZYX_SIZES)
    assert back.provenance == PROV
    np.testing.assert_array_equal(read_image(out), data)
    with tifffile.TiffFile(out) as tf:
        if kind == "imagej":
            assert tf.is_imagej and json.loads(tf.imagej_metadata["Info"]) == PROV
        else:
            assert tf.is_ome and 'Namespace="napari-deep-prior"' in tf.ome_metadata


def test_plain_tiff_resolution_tags_and_json(tmp_path):
    out = tmp_path / "plain.tif"
    data = np.zeros((3, 16, 20), np.float64)
    write_image(out, data, None, meta=ImageMeta("ZYX", ZYX_SIZES, None, "tiff"), provenance=PROV)
    with tifffile.TiffFile(out) as tf:
        assert not tf.is_imagej and not tf.is_ome
        page = tf.pages[0]
        assert page.tags["ResolutionUnit"].value == 3  # centimetre
        assert page.tags["XResolution"].value == (100000, 1)  # 0.1 µm = 1e5 pixels per cm
        assert tf.shaped_metadata[0]["napari_deep_prior"] == PROV
        assert tf.series[0].axes == "ZYX"
    back = read_image_meta(out)
    assert back.kind == "tiff" and back.axes == "ZYX" and back.provenance == PROV
    _sizes_close(back.pixel_sizes, ZYX_SIZES)


def test_plain_tiff_from_another_program_read_from_its_tags(tmp_path):
    cm = tmp_path / "cm.tif"
    tifffile.imwrite(cm, np.zeros((8, 8), np.uint8), resolution=(50000, 25000), resolutionunit="CENTIMETER")
    _sizes_close(read_image_meta(cm).pixel_sizes, {"Y": (0.4, "µm"), "X": (0.2, "µm")})
    dpi = tmp_path / "dpi.tif"
    tifffile.imwrite(dpi, np.zeros((8, 8, 3), np.uint8), photometric="rgb", resolution=(300, 300), resolutionunit=2)
    meta = read_image_meta(dpi)
    assert meta.axes == "YXC"
    _sizes_close(meta.pixel_sizes, {"Y": (1 / 300, "in"), "X": (1 / 300, "in")})
    out = tmp_path / "dpi_out.tif"
    write_image(out, np.ones((8, 8, 3), np.uint8), -1, meta=meta)
    with tifffile.TiffFile(out) as tf:  # a scan keeps its dots per inch
        assert tf.pages[0].tags["XResolution"].value == (300, 1)
        assert tf.pages[0].tags["ResolutionUnit"].value == 2
    # tifffile's default (1 pixel per unit, no unit) is no calibration
    bare = tmp_path / "bare.tif"
    tifffile.imwrite(bare, np.zeros((8, 8), np.uint8))
    assert read_image_meta(bare).pixel_sizes == {}


def test_imagej_input_with_a_result_imagej_cannot_hold_becomes_plain_tiff(imagej_zyx):
    path, data = imagej_zyx
    out = path.parent / "f64.tif"
    write_image(out, data.astype(np.float64), None, meta=read_image_meta(path), provenance=PROV)
    back = read_image_meta(out)
    assert back.kind == "tiff" and back.axes == "ZYX" and back.provenance == PROV
    _sizes_close(back.pixel_sizes, ZYX_SIZES)


def test_rgb_and_channels_last(tmp_path):
    rgb = np.zeros((16, 20, 3), np.uint8)
    meta = ImageMeta("YXC", {"Y": (0.1, "µm"), "X": (0.1, "µm")}, None, "imagej")
    for name, kind in (("rgb.tif", "imagej"), ("rgb.ome.tif", "ome")):
        write_image(tmp_path / name, rgb, -1, meta=meta, provenance=PROV)
        back = read_image_meta(tmp_path / name)
        assert (back.kind, back.axes, back.provenance) == (kind, "YXC", PROV)
        assert read_image(tmp_path / name).shape == rgb.shape
    two = np.zeros((16, 20, 2), np.float32)  # two channels last: OME stores them interleaved
    write_image(tmp_path / "two.ome.tif", two, -1, meta=ImageMeta("YXC", {"X": (2.0, "nm"), "Y": (2.0, "nm")}))
    back = read_image_meta(tmp_path / "two.ome.tif")
    assert back.axes == "YXC" and back.pixel_sizes == {"Y": (2.0, "nm"), "X": (2.0, "nm")}
    assert read_image(tmp_path / "two.ome.tif").shape == two.shape


def test_axes_follow_the_output():
    grey = ImageMeta("YX", {"Y": (0.2, "µm"), "X": (0.1, "µm")})
    assert grey.axes_for((8, 8, 3), -1) == "YXC"  # colorized
    stack = ImageMeta("CYX", {})
    assert stack.axes_for((2, 8, 8), None) == "CYX"  # channels fitted as a grey stack
    assert stack.axes_for((2, 8, 8), 0) == "CYX"
    assert ImageMeta("ZYX", {}).axes_for((8, 8), None) is None  # nothing to match
    assert ImageMeta("", {}).axes_for((8, 8), None) is None
    zoomed = ImageMeta("ZYX", ZYX_SIZES).zoomed(4)
    assert zoomed.pixel_sizes == {"Z": (0.5, "µm"), "Y": (0.025, "µm"), "X": (0.025, "µm")}


def test_png_text_chunk_and_jpeg(tmp_path):
    img = np.zeros((8, 10, 3), np.uint8)
    write_image(tmp_path / "o.png", img, -1, meta=ImageMeta("YXC", {}), provenance=PROV)
    with Image.open(tmp_path / "o.png") as im:
        assert json.loads(im.text[SOFTWARE]) == PROV
    meta = read_image_meta(tmp_path / "o.png")
    assert (meta.kind, meta.axes, meta.provenance) == ("png", "YXC", PROV)
    np.testing.assert_array_equal(iio.imread(tmp_path / "o.png"), img)
    write_image(tmp_path / "o.jpg", img, -1, provenance=PROV)  # JPEG: no metadata written
    assert read_image_meta(tmp_path / "o.jpg").provenance is None
    write_image(tmp_path / "g.png", img[..., 0])
    assert read_image_meta(tmp_path / "g.png") == ImageMeta("YX", {}, None, "png")


def test_history_tiff_carries_axes_sizes_and_provenance(imagej_zyx):
    path, data = imagej_zyx
    frames = np.stack([data] * 4)
    out = path.parent / "h.tif"
    write_history_tiff(out, frames, [1, 2, 3, 4], [0.4, 0.3, 0.2, 0.1], meta=read_image_meta(path), provenance=PROV)
    back = read_image_meta(out)
    assert back.axes == "IZYX" and back.provenance == PROV
    _sizes_close(back.pixel_sizes, ZYX_SIZES)
    got, its, losses = read_history_tiff(out)
    np.testing.assert_array_equal(got, frames)
    assert its == [1, 2, 3, 4] and losses == [0.4, 0.3, 0.2, 0.1]


def test_without_metadata_a_tiff_is_written_as_before(tmp_path):
    write_image(tmp_path / "a.tif", np.zeros((2, 8, 8), np.uint16), None)
    with tifffile.TiffFile(tmp_path / "a.tif") as tf:
        assert tf.shaped_metadata[0] == {"shape": [2, 8, 8]}
    assert read_image_meta(tmp_path / "a.tif").provenance is None


def test_ome_refuses_a_dtype_it_cannot_hold_before_writing(tmp_path):
    from napari_deep_prior.io import check_output

    with pytest.raises(ValueError, match="OME-TIFF cannot hold int64"):
        check_output(tmp_path / "x.ome.tif", np.int64, (8, 8), None)
    with pytest.raises(ValueError, match="OME-TIFF"):
        write_image(tmp_path / "x.ome.tif", np.zeros((8, 8), np.int64), None, provenance=PROV)
    assert not list(tmp_path.iterdir())  # nothing written, no temporary file left


def test_read_image_meta_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such image file"):
        read_image_meta(tmp_path / "missing.tif")
    (tmp_path / "text.tif").write_text("not a tiff at all")
    with pytest.raises(ValueError, match="not a readable TIFF"):
        read_image_meta(tmp_path / "text.tif")


def test_foreign_json_is_not_provenance(tmp_path):
    path = tmp_path / "other.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8), metadata={"napari_deep_prior": {"software": "someone else"}})
    assert read_image_meta(path).provenance is None
    ij = tmp_path / "info.tif"
    tifffile.imwrite(ij, np.zeros((8, 8), np.uint8), imagej=True, metadata={"Info": "Microscope: free text"})
    assert read_image_meta(ij).provenance is None


def test_ome_zarr_without_the_zarr_extra_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    import sys

    from napari_deep_prior.cli import main
    from napari_deep_prior.io import check_output

    monkeypatch.setitem(sys.modules, "zarr", None)  # as if zarr-python were not installed
    with pytest.raises(ValueError, match=r"pip install \"zarr>=2\.18\""):
        check_output(tmp_path / "out.zarr", np.uint8, (8, 8), None)
    (tmp_path / "in.zarr").mkdir()
    assert main(["info", str(tmp_path / "in.zarr")]) == 2
    assert 'pip install "zarr>=2.18"' in capsys.readouterr().err
