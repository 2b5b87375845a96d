"""Lab conversions, gamut clipping, hint encoding, hint CSV files and Levin propagation."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import color as skcolor

from napari_deep_prior.colorization import hints as H
from napari_deep_prior.colorization import lab as LAB
from napari_deep_prior.colorization import levin as LV


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# --- Lab ------------------------------------------------------------------------------


def test_rgb_to_lab_matches_skimage(rng):
    rgb = rng.random((7, 5, 3))
    np.testing.assert_allclose(LAB.rgb_to_lab(rgb), skcolor.rgb2lab(rgb), atol=1e-10)
    u8 = (rgb * 255).astype(np.uint8)
    np.testing.assert_allclose(LAB.rgb_to_lab(u8), skcolor.rgb2lab(u8), atol=1e-10)


def test_lab_to_rgb_matches_skimage_and_round_trips(rng):
    rgb = rng.random((6, 4, 3))
    lab = skcolor.rgb2lab(rgb)
    np.testing.assert_allclose(LAB.lab_to_rgb(lab), skcolor.lab2rgb(lab), atol=1e-10)
    np.testing.assert_allclose(LAB.lab_to_rgb(LAB.rgb_to_lab(rgb)), rgb, atol=1e-6)


def test_lab_shape_errors():
    with pytest.raises(ValueError, match="3 channels"):
        LAB.rgb_to_lab(np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="3 channels"):
        LAB.lab_to_rgb(np.zeros((4, 4)))


def test_gray_to_lightness_matches_skimage(rng):
    g = rng.random((9, 11))
    expected = skcolor.rgb2lab(np.repeat(g[..., None], 3, axis=-1))[..., 0]
    np.testing.assert_allclose(LAB.gray_to_lightness(g), expected, atol=1e-4)


def test_linear_rgb_is_unclipped_inverse(rng):
    rgb = rng.random((50, 3))
    lab = skcolor.rgb2lab(rgb)
    lin = LAB.lab_to_linear_rgb(lab[:, 0], lab[:, 1:])
    expected = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    np.testing.assert_allclose(lin, expected, atol=1e-5)
    assert LAB.in_gamut(lab[:, 0], lab[:, 1:]).all()
    # Very saturated green at low lightness is out of gamut.
    assert not LAB.in_gamut(20.0, np.array([-100.0, 80.0]))


# --- gamut clip -----------------------------------------------------------------------


def test_gamut_clip_keeps_in_gamut_colours(rng):
    rgb = rng.random((20, 3))
    lab = LAB.rgb_to_lab(rgb)
    np.testing.assert_allclose(LAB.gamut_clip(lab[:, 1:], lab[:, 0]), lab[:, 1:], atol=1e-9)
    np.testing.assert_allclose(LAB.gamut_clip(rgb, lab[:, 0]), lab[:, 1:], atol=1e-9)


@pytest.mark.parametrize("L", [5.0, 30.0, 70.0, 97.0])
def test_gamut_clip_brings_colour_into_gamut_keeping_hue(L):
    red = np.array([1.0, 0.0, 0.0])
    ab0 = LAB.rgb_to_lab(red)[1:]
    ab = LAB.gamut_clip(red, L)
    assert LAB.in_gamut(L, ab)
    assert np.hypot(*ab) <= np.hypot(*ab0) + 1e-9
    # same hue: ab is a non-negative multiple of the original ab
    cos = ab @ ab0 / (np.linalg.norm(ab) * np.linalg.norm(ab0) + 1e-12)
    assert np.linalg.norm(ab) < 1e-6 or cos > 0.9999
    # lab2rgb round-trips: L and ab survive the conversion (no channel clipping)
    back = LAB.rgb_to_lab(LAB.lab_to_rgb(np.array([L, *ab])))
    np.testing.assert_allclose(back, [L, *ab], atol=0.05)


def test_gamut_clip_extremes_and_broadcast():
    ab = LAB.gamut_clip(np.array([60.0, 60.0]), np.array([0.0, 100.0, 50.0]))
    assert ab.shape == (3, 2)
    np.testing.assert_allclose(ab[:2], 0.0, atol=0.5)  # black and white hold no chroma
    assert np.hypot(*ab[2]) > 10


def test_gamut_clip_bad_shape():
    with pytest.raises(ValueError, match="last axis"):
        LAB.gamut_clip(np.zeros(4), 50.0)


# --- colours ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "colour, expected",
    [
        ("#ff8000", [1.0, 128 / 255, 0.0]),
        ("FF8000", [1.0, 128 / 255, 0.0]),
        ("#f80", [1.0, 136 / 255, 0.0]),
        ((255, 128, 0), [1.0, 128 / 255, 0.0]),
        ([1.0, 0.5, 0.0], [1.0, 0.5, 0.0]),
        (np.array([255, 0, 0], np.uint8), [1.0, 0.0, 0.0]),
        (np.array([0.2, 0.4, 0.6]), [0.2, 0.4, 0.6]),
    ],
)
def test_parse_color(colour, expected):
    np.testing.assert_allclose(H.parse_color(colour), expected)


def test_color_to_hex():
    assert H.color_to_hex((255, 128, 0)) == "#ff8000"
    assert H.color_to_hex((1.0, 0.0, 0.5)) == "#ff0080"


def test_parse_color_bad_string():
    with pytest.raises(ValueError, match="#rrggbb"):
        H.parse_color("#12345g")


def test_parse_color_int_out_of_range():
    with pytest.raises(ValueError, match="0-255"):
        H.parse_color((256, 0, 0))


def test_parse_color_float_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        H.parse_color((1.5, 0.0, 0.0))


def test_parse_color_wrong_type():
    with pytest.raises(TypeError, match="string or"):
        H.parse_color(12)


def test_parse_color_wrong_length():
    with pytest.raises(TypeError, match="three numbers"):
        H.parse_color((1, 2))


def test_parse_color_mixed_int_float():
    np.testing.assert_allclose(H.parse_color((0, 0.5, 1)), [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="give\\s+integers"):
        H.parse_color((255, 0.5, 0))


# --- hint encoding --------------------------------------------------------------------


def test_encode_hints_patch_values_are_gamut_clipped_per_pixel():
    L = np.tile(np.linspace(5, 95, 20), (20, 1))
    ab_hint, mask = H.encode_hints(L, [(10, 10, "#ff0000")], size=5)
    assert ab_hint.shape == (20, 20, 2) and mask.shape == (20, 20)
    assert ab_hint.dtype == np.float32 and mask.dtype == np.float32
    assert mask.sum() == 25 and mask[8:13, 8:13].all()
    red_ab = LAB.rgb_to_lab(np.array([1.0, 0.0, 0.0]))[1:]
    for c in range(8, 13):
        expected = LAB.gamut_clip(red_ab, L[10, c])
        np.testing.assert_allclose(ab_hint[10, c], expected, atol=1e-4)
        assert LAB.in_gamut(L[10, c], ab_hint[10, c].astype(np.float64))
    assert not ab_hint[mask == 0].any()


def test_encode_hints_border_overlap_and_rounding():
    L = np.full((10, 12), 50.0)
    ab_hint, mask = H.encode_hints(L, [(0, 0, "#0000ff"), (1.4, 1.2, "#ff0000"), (9, 11, (0, 255, 0))], size=3)
    assert mask[:2, :2].all() and mask[0:3, 0:3].sum() == 9
    red_ab = LAB.gamut_clip(np.array([1.0, 0, 0]), 50.0)
    np.testing.assert_allclose(ab_hint[0, 0], red_ab, atol=1e-4)  # later hint wins
    assert mask[8:, 10:].all() and mask.sum() == 9 + 4
    ab1, m1 = H.encode_hints(L, [(5, 5, "#00ff00")], size=1)
    assert m1.sum() == 1


def test_encode_hints_even_size():
    with pytest.raises(ValueError, match="odd"):
        H.encode_hints(np.zeros((8, 8)), [(1, 1, "#ffffff")], size=4)


def test_encode_hints_outside():
    with pytest.raises(ValueError, match=r"outside the image of shape \(8, 9\)"):
        H.encode_hints(np.zeros((8, 9)), [(3, 9, "#ffffff")])


def test_encode_hints_malformed_hint():
    with pytest.raises(TypeError, match="row, col, colour"):
        H.encode_hints(np.zeros((8, 8)), [(3, "#ffffff")])


def test_encode_hints_bad_colour_names_hint():
    with pytest.raises(ValueError, match=r"^hints\[1\]: colour 'blue'"):
        H.encode_hints(np.zeros((8, 8)), [(3, 3, "#ffffff"), (1, 1, "blue")])


def test_api_hints_outside_are_numbered_as_python_indexes():
    with pytest.raises(ValueError, match=r"^hints\[2\]: the hint at \(row, col\) = \(3, 9\) is outside"):
        H.normalize_hints([(0, 0, "#fff"), (1, 1, "#fff"), (3, 9, "#fff")], (8, 9))


# --- CSV ------------------------------------------------------------------------------


def test_csv_round_trip_hex(tmp_path):
    hints = [(3, 4, "#ff8000"), (10.5, 2, (0, 128, 255)), (0, 0, (0.0, 1.0, 0.0))]
    path = tmp_path / "hints.csv"
    H.write_hints_csv(path, hints)
    assert path.read_text().splitlines()[0] == "row,col,color"
    back = H.read_hints_csv(path)
    assert [(h.row, h.col) for h in back] == [(3, 4), (10.5, 2), (0, 0)]
    assert [h.color for h in back] == ["#ff8000", "#0080ff", "#00ff00"]


def test_csv_round_trip_rgb(tmp_path):
    path = tmp_path / "hints.csv"
    H.write_hints_csv(path, [(1, 2, "#102030")], layout="rgb")
    assert path.read_text().splitlines() == ["row,col,r,g,b", "1,2,16,32,48"]
    (hint,) = H.read_hints_csv(path)
    assert hint == H.Hint(1, 2, (16, 32, 48))


def test_csv_float_rgb(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("row,col,r,g,b\n5,6,0.5,0.25,1.0\n")
    (hint,) = H.read_hints_csv(path)
    np.testing.assert_allclose(H.parse_color(hint.color), [0.5, 0.25, 1.0])


def test_csv_bad_header(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("x,y,colour\n1,2,#ffffff\n")
    with pytest.raises(ValueError, match="row,col,color"):
        H.read_hints_csv(path)


def test_csv_bad_line(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("row,col,color\n1,2,#ffffff\n3,4,#zzzzzz\n")
    with pytest.raises(ValueError, match="line 3"):
        H.read_hints_csv(path)


# Every error names the line as a text editor numbers it (header = line 1) and its text;
# blank lines count, a byte-order mark does not shift anything.
CSV_ERRORS = {
    "bad header": ("\ufeffx,y,colour\n1,2,#ffffff\n", "line 1 ('x,y,colour'): the header should be"),
    "blank lines": ("row,col,color\n\n1,2,#ffffff\n\n3,4,#zzzzzz\n", "line 5 ('3,4,#zzzzzz'): colour '#zzzzzz'"),
    "too few values": ("row,col,color\n1,2,#ffffff\n3,#ff0000\n", "line 3 ('3,#ff0000'): expected 3 values"),
    "row not a number": (
        "row,col,r,g,b\n1,2,3,4,5\nten,2,3,4,5\n",
        "line 3 ('ten,2,3,4,5'): row 'ten' is not a number",
    ),
    "nan col": ("row,col,color\n1,nan,#ffffff\n", "line 2 ('1,nan,#ffffff'): col 'nan' must be a finite number"),
    "rgb out of range": ("row,col,r,g,b\r\n1,2,3,4,500\r\n", "line 2 ('1,2,3,4,500'): integer colour"),
    "header after blanks": ("\n\nrow,col\n", "line 3 ('row,col'): the header should be"),
}


@pytest.mark.parametrize("case", list(CSV_ERRORS))
def test_csv_errors_name_the_line_and_its_text(tmp_path, case):
    text, expected = CSV_ERRORS[case]
    path = tmp_path / "h.csv"
    path.write_bytes(text.encode("utf-8"))
    with pytest.raises(ValueError) as err:
        H.read_hints_csv(path)
    assert str(err.value).startswith(f"{path}, "), str(err.value)
    assert expected in str(err.value), str(err.value)


def test_csv_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "h.csv"
    path.write_bytes(b"row,col,color\n1,2,#ffffff\n3,4,\xe9t\xe9\n")
    with pytest.raises(ValueError, match=r"line 3: the file is not UTF-8 text"):
        H.read_hints_csv(path)


def test_csv_with_bom_and_blank_lines_reads(tmp_path):
    path = tmp_path / "h.csv"
    path.write_bytes("\ufeffrow,col,color\r\n\r\n1,2,#ffffff\r\n".encode())
    (hint,) = H.read_hints_csv(path)
    assert hint == (1, 2, "#ffffff") and hint.where == f"{path}, line 3 ('1,2,#ffffff')"


def test_csv_hint_outside_the_image_is_reported_by_line(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("row,col,color\n1,2,#ffffff\n\n60,20,#ff0000\n")
    hints = H.read_hints_csv(path)
    with pytest.raises(ValueError) as err:
        H.normalize_hints(hints, (48, 48))
    msg = str(err.value)
    assert msg.startswith(f"{path}, line 4 ('60,20,#ff0000'): the hint at (row, col) = (60, 20) is outside"), msg
    assert "rows must be in 0..47" in msg


def test_write_hints_csv_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    import errno
    import os

    path = tmp_path / "hints.csv"
    H.write_hints_csv(path, [(1, 2, "#102030")])
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"hints\[1\]"):
        H.write_hints_csv(path, [(3, 4, "#ffffff"), (5, 6, "blue")])  # refused before writing
    assert path.read_bytes() == before

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # the disk fills up as the file is flushed
    with pytest.raises(OSError, match="no space left on the device") as err:
        H.write_hints_csv(path, [(3, 4, "#ffffff")])
    assert "the existing file was not changed" in str(err.value)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["hints.csv"]  # no temporary file left


def test_csv_bad_layout(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        H.write_hints_csv(tmp_path / "h.csv", [], layout="json")


# --- Levin ----------------------------------------------------------------------------


def test_nested_dissection_is_a_permutation():
    order = LV._nested_dissection(13, 29)
    assert sorted(order.tolist()) == list(range(13 * 29))


def test_levin_weights_rows_sum_to_one():
    rng = np.random.default_rng(1)
    W = LV.levin_affinity(rng.random((6, 7)))
    np.testing.assert_allclose(np.asarray(W.sum(axis=1)).ravel(), 1.0)
    assert W.nnz == 8 * 4 * 5 + 5 * 2 * (4 + 5) + 3 * 4


def test_levin_propagates_one_hint_over_a_flat_region():
    L = np.full((24, 30), 60.0)
    ab_hint, mask = H.encode_hints(L, [(3, 4, "#3060c0")], size=3)
    ab = LV.levin(L, ab_hint, mask)
    assert ab.shape == (24, 30, 2) and ab.dtype == np.float32
    np.testing.assert_allclose(ab, np.broadcast_to(ab_hint[3, 4], ab.shape), atol=0.5)


def _two_hints(L):
    ab_hint, mask = H.encode_hints(L, [(20, 5, "#c03020"), (20, 34, "#2040c0")], size=3)
    ab = LV.levin(L, ab_hint, mask)
    d = np.linalg.norm(ab_hint[20, 5] - ab_hint[20, 34])
    jump = np.linalg.norm(ab[:, 19] - ab[:, 20], axis=-1) / d
    return ab, ab_hint, mask, d, jump


def test_levin_stops_at_a_strong_edge():
    h, w = 40, 40
    # Left half bright, right half dark: a strong vertical edge between columns 19 and 20.
    edge = np.where(np.arange(w)[None, :] < 20, 75.0, 25.0) + np.zeros((h, 1))
    ab, ab_hint, mask, d, jump = _two_hints(edge)
    # Without the edge the colours blend smoothly: neighbouring columns differ by < 5 %.
    _, _, _, _, jump_flat = _two_hints(np.full((h, w), 50.0))
    assert jump_flat.max() < 0.05
    # With it, the colour changes abruptly across the edge, at every row ...
    assert jump.min() > 0.35
    # ... and each half stays close to its own hint, corners included.
    assert np.linalg.norm(ab[0, 0] - ab_hint[20, 5]) < 0.25 * d
    assert np.linalg.norm(ab[39, 39] - ab_hint[20, 34]) < 0.25 * d
    # Hinted pixels keep their values exactly.
    np.testing.assert_allclose(ab[mask > 0], ab_hint[mask > 0], atol=1e-4)


def test_levin_smooth_without_edges_blends():
    L = np.full((20, 20), 50.0)
    ab_hint, mask = H.encode_hints(L, [(10, 0, "#c03020"), (10, 19, "#2040c0")], size=1)
    ab = LV.levin(L, ab_hint, mask)
    mid = ab[10, 10]
    assert np.linalg.norm(mid - ab_hint[10, 0]) > 10 and np.linalg.norm(mid - ab_hint[10, 19]) > 10


def test_levin_needs_a_hint():
    with pytest.raises(ValueError, match="at least one hint"):
        LV.levin(np.zeros((8, 8)), np.zeros((8, 8, 2)), np.zeros((8, 8)))


def test_levin_shape_mismatch():
    with pytest.raises(ValueError, match="shapes"):
        LV.levin(np.zeros((8, 8)), np.zeros((8, 9, 2)), np.ones((8, 8)))


def test_levin_screened_prior_holds_far_from_hints():
    L = np.full((30, 60), 50.0)
    ab_hint, mask = H.encode_hints(L, [(15, 2, "#c03020")], size=3)
    prior = np.zeros((30, 60, 2))
    prior[..., 1] = -20.0
    ab = LV.levin(L, ab_hint, mask, prior=prior, prior_weight=0.01)
    np.testing.assert_allclose(ab[mask > 0], ab_hint[mask > 0], atol=1e-4)  # hints fixed
    np.testing.assert_allclose(ab[15, 59], [0.0, -20.0], atol=0.5)  # prior far away
    assert np.linalg.norm(ab[15, 4] - ab_hint[15, 2]) < np.linalg.norm(ab[15, 4] - prior[15, 4])
    # with a prior, no hint at all is fine
    np.testing.assert_allclose(LV.levin(L, ab_hint, 0 * mask, prior=prior, prior_weight=0.1), prior, atol=1e-4)


def test_levin_prior_errors():
    L = np.full((8, 8), 50.0)
    with pytest.raises(ValueError, match="prior_weight"):
        LV.levin(L, np.zeros((8, 8, 2)), np.ones((8, 8)), prior=np.zeros((8, 8, 2)), prior_weight=-1)
    with pytest.raises(ValueError, match="prior must have shape"):
        LV.levin(L, np.zeros((8, 8, 2)), np.ones((8, 8)), prior=np.zeros((8, 8)), prior_weight=1)
