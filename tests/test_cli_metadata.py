"""The command line keeps the input's axes and pixel sizes, records how a result was made, and shows both (`info`).

Real files in tmp_path; a handful of iterations on tiny images.
"""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_deep_prior.cli import main
from napari_deep_prior.io import read_image_meta

FAST = ["--iterations", "5", "-q"]
ZYX_SIZES = {"Z": (0.5, "µm"), "Y": (0.1, "µm"), "X": (0.1, "µm")}


def _noisy(shape, dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 1000).astype(dtype)


def _assert_sizes(meta, want):
    assert list(meta.pixel_sizes) == list(want)
    for axis, (value, unit) in want.items():
        assert meta.pixel_sizes[axis][0] == pytest.approx(value, rel=1e-6) and meta.pixel_sizes[axis][1] == unit


@pytest.fixture
def imagej_stack(tmp_path):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(
        path,
        _noisy((2, 24, 24)),
        imagej=True,
        resolution=(10, 10),
        metadata={"axes": "ZYX", "spacing": 0.5, "unit": "um"},
    )
    return path


def test_denoise_keeps_imagej_metadata_and_info_shows_it(imagej_stack, capsys):
    d = imagej_stack.parent
    rc = main(["denoise", str(imagej_stack), "-o", str(d / "out.tif"), "--history", str(d / "h.tif"), *FAST])
    assert rc == 0, capsys.readouterr().err
    meta = read_image_meta(d / "out.tif")
    assert meta.kind == "imagej" and meta.axes == "ZYX"
    _assert_sizes(meta, ZYX_SIZES)
    prov = meta.provenance
    assert prov["task"] == "denoise" and prov["input"] == "stack.tif" and prov["preset"] == "denoise"
    assert prov["params_changed"] == {"iterations": 5} and prov["seed"] == 0
    assert [p["stop_iteration"] for p in prov["planes"]] == [5, 5]
    assert all(p["noise_sigma"] > 0 for p in prov["planes"])
    hist = read_image_meta(d / "h.tif")  # the history too
    assert hist.axes == "IZYX" and hist.provenance == prov
    _assert_sizes(hist, ZYX_SIZES)
    capsys.readouterr()

    assert main(["info", str(d / "out.tif")]) == 0
    text = capsys.readouterr().out
    assert "ImageJ" in text and "2 x 24 x 24 (ZYX), uint16" in text
    assert "Z 0.5 µm, Y 0.1 µm, X 0.1 µm" in text
    assert "task: denoise of stack.tif" in text and "preset: denoise" in text and "iterations = 5" in text

    assert main(["info", str(d / "out.tif"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["axes"] == "ZYX" and record["shape"] == [2, 24, 24] and record["dtype"] == "uint16"
    assert record["pixel_sizes"]["Z"] == [0.5, "µm"]
    assert record["provenance"] == prov


def test_denoise_to_ome_tiff(imagej_stack, capsys):
    out = imagej_stack.parent / "out.ome.tif"
    assert main(["denoise", str(imagej_stack), "-o", str(out), *FAST]) == 0, capsys.readouterr().err
    meta = read_image_meta(out)
    assert meta.kind == "ome" and meta.axes == "ZYX" and meta.provenance["task"] == "denoise"
    _assert_sizes(meta, ZYX_SIZES)
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["format"] == "tiff" and record["kind"] == "ome"
    assert record["provenance"]["params_changed"] == {"iterations": 5}
    # and back from OME to OME: the sizes survive a second run
    again = imagej_stack.parent / "again.ome.tif"
    assert main(["denoise", str(out), "-o", str(again), *FAST]) == 0
    _assert_sizes(read_image_meta(again), ZYX_SIZES)
    assert read_image_meta(again).provenance["input"] == "out.ome.tif"


def test_plain_tiff_resolution_is_kept(tmp_path, capsys):
    src = tmp_path / "plain.tif"
    tifffile.imwrite(src, _noisy((24, 24)), resolution=(20000, 20000), resolutionunit="CENTIMETER")
    out = tmp_path / "out.tif"
    assert main(["denoise", str(src), "-o", str(out), *FAST]) == 0, capsys.readouterr().err
    with tifffile.TiffFile(out) as tf:
        assert tf.pages[0].tags["XResolution"].value == (20000, 1)
        assert tf.pages[0].tags["ResolutionUnit"].value == 3
    meta = read_image_meta(out)
    assert meta.kind == "tiff" and meta.axes == "YX" and meta.provenance["task"] == "denoise"
    _assert_sizes(meta, {"Y": (0.5, "µm"), "X": (0.5, "µm")})


def test_upscale_halves_the_pixel_size(imagej_stack, capsys):
    out = imagej_stack.parent / "big.tif"
    assert main(["upscale", str(imagej_stack), "-o", str(out), "--factor", "2", *FAST]) == 0
    meta = read_image_meta(out)
    _assert_sizes(meta, {"Z": (0.5, "µm"), "Y": (0.05, "µm"), "X": (0.05, "µm")})
    assert meta.provenance["task"] == "upscale" and meta.provenance["options"]["factor"] == 2
    assert tifffile.imread(out).shape == (2, 48, 48)


def test_png_output_carries_provenance_in_a_text_chunk(tmp_path, capsys):
    from PIL import Image

    src = tmp_path / "noisy.png"
    iio.imwrite(src, _noisy((24, 24), np.uint8))
    mask = np.zeros((24, 24), np.uint8)
    mask[5:9, 5:9] = 255
    iio.imwrite(tmp_path / "mask.png", mask)
    out = tmp_path / "filled.png"
    rc = main(["inpaint", str(src), "--mask", str(tmp_path / "mask.png"), "-o", str(out), "--seed", "4", *FAST])
    assert rc == 0, capsys.readouterr().err
    with Image.open(out) as im:
        prov = json.loads(im.text["napari-deep-prior"])
    assert prov["task"] == "inpaint" and prov["mask"] == "mask.png" and prov["seed"] == 4
    assert read_image_meta(out).provenance == prov
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "PNG" in text and "pixel sizes: none recorded" in text and "task: inpaint of noisy.png" in text


def test_colorize_records_method_and_hints(tmp_path, capsys):
    grey = np.tile(np.linspace(40, 200, 32).astype(np.uint8), (24, 1))
    src = tmp_path / "grey.tif"
    tifffile.imwrite(src, grey, imagej=True, resolution=(4, 4), metadata={"axes": "YX", "unit": "um"})
    (tmp_path / "hints.csv").write_text("row,col,color\n10,5,#c03020\n20,25,#2040c0\n")
    out = tmp_path / "colour.tif"
    rc = main(["colorize", str(src), "-o", str(out), "--method", "levin", "--hints", str(tmp_path / "hints.csv")])
    assert rc == 0, capsys.readouterr().err
    meta = read_image_meta(out)
    assert meta.axes == "YXC" and meta.kind == "imagej"
    _assert_sizes(meta, {"Y": (0.25, "µm"), "X": (0.25, "µm")})
    prov = meta.provenance
    assert (prov["task"], prov["method"], prov["hints"], prov["hint_size"], prov["weights"]) == (
        "colorize",
        "levin",
        2,
        5,
        None,
    )


def test_info_without_provenance_and_bad_files(tmp_path, capsys):
    plain = tmp_path / "photo.jpg"
    iio.imwrite(plain, np.zeros((8, 8, 3), np.uint8))
    assert main(["info", str(plain)]) == 0
    text = capsys.readouterr().out
    assert "JPEG" in text and "8 x 8 x 3 (YXC), uint8" in text and "provenance: none" in text
    assert main(["info", str(plain), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["provenance"] is None

    assert main(["info", str(tmp_path / "missing.tif")]) == 2
    err = capsys.readouterr().err
    assert "no such image file" in err and err.count("\n") == 1
    assert main(["info", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    (tmp_path / "fake.png").write_text("hello")
    assert main(["info", str(tmp_path / "fake.png")]) == 2
    assert "is not a PNG image" in capsys.readouterr().err


def test_a_result_is_written_even_if_its_provenance_fails(tmp_path, capsys, monkeypatch):
    from napari_deep_prior import provenance

    def broken(*args, **kwargs):
        raise TypeError("a test's broken record")

    monkeypatch.setattr(provenance, "dip_provenance", broken)
    src = tmp_path / "noisy.png"
    iio.imwrite(src, _noisy((24, 24), np.uint8))
    assert main(["denoise", str(src), "-o", str(tmp_path / "out.png"), *FAST]) == 0
    assert "provenance could not be recorded" in capsys.readouterr().err
    assert iio.imread(tmp_path / "out.png").shape == (24, 24)
    assert read_image_meta(tmp_path / "out.png").provenance is None
