"""Hole-aware regions: the plan around an inpainting's holes and the job that fits only them.

Fits are tiny (3-level 16-wide net, 20 iterations, images <= 128 px).
"""

import numpy as np
import pytest

from napari_deep_prior.restore.api import inpaint, prepare_inpaint
from napari_deep_prior.restore.regions import (
    default_margin,
    hole_kind,
    large_holes,
    plan_hole_regions,
    regions_cost,
    scattered_holes,
)
from napari_deep_prior.restore.tiles import TileBlender


@pytest.fixture
def fast(tiny_params):
    return tiny_params.replace(iterations=20, early_stop=False, exp_weight=None, history_every=0, preview_every=0)


def _covered_with_margin(holes, boxes, margin):
    """Every hole pixel lies in a box, ``margin`` inside each side that is not on the border."""
    h, w = holes.shape
    ok = np.zeros_like(holes)
    for y0, y1, x0, x1 in boxes:
        inner = np.zeros_like(holes)
        iy0 = y0 if y0 == 0 else y0 + margin
        iy1 = y1 if y1 == h else y1 - margin
        ix0 = x0 if x0 == 0 else x0 + margin
        ix1 = x1 if x1 == w else x1 - margin
        inner[iy0:iy1, ix0:ix1] = True
        ok |= inner
    return bool(ok[holes].all())


def _image(h=128, w=128, seed=0):
    yy, xx = np.mgrid[:h, :w]
    rng = np.random.default_rng(seed)
    img = 0.5 + 0.3 * np.sin(xx / 7.0) * np.cos(yy / 11.0) + 0.05 * rng.standard_normal((h, w))
    return np.clip(img, 0, 1).astype(np.float32)


# -- the plan --------------------------------------------------------------------------


def test_two_separated_holes_give_two_boxes_with_the_margin():
    holes = np.zeros((512, 512), bool)
    holes[100:104, 50:90] = True
    holes[400:420, 400:410] = True
    boxes = plan_hole_regions(holes)
    assert len(boxes) == 2
    assert _covered_with_margin(holes, boxes, 16)
    for y0, y1, x0, x1 in boxes:
        assert (y1 - y0) % 32 == 0 and (x1 - x0) % 32 == 0 and min(y1 - y0, x1 - x0) >= 64
    assert regions_cost(boxes, 32, 64) < 0.25 * regions_cost([(0, 512, 0, 512)], 32, 64)


def test_close_holes_merge_into_one_box():
    holes = np.zeros((256, 256), bool)
    holes[100:104, 60:80] = True
    holes[100:104, 90:110] = True  # 10 px apart: their boxes overlap almost entirely
    boxes = plan_hole_regions(holes)
    assert len(boxes) == 1
    assert _covered_with_margin(holes, boxes, 16)


def test_margin_grows_with_the_hole_thickness():
    assert default_margin(4) == 16 and default_margin(30) == 60
    holes = np.zeros((512, 512), bool)
    holes[200:240, 200:240] = True  # 40 px thick: 80 px of context
    (box,) = plan_hole_regions(holes)
    assert _covered_with_margin(holes, [box], 80)


def test_a_long_thin_stroke_is_cut_into_cells():
    holes = np.zeros((512, 512), bool)
    holes[250:254, 20:500] = True  # a horizontal scratch
    boxes = plan_hole_regions(holes, max_side=128)
    assert len(boxes) > 1 and all(max(b[1] - b[0], b[3] - b[2]) <= 128 for b in boxes)
    assert _covered_with_margin(holes, boxes, 16)


@pytest.mark.parametrize("kind", ["random", "everywhere"])
def test_dense_or_scattered_masks_fit_the_whole_image(kind):
    rng = np.random.default_rng(1)
    if kind == "random":
        holes = rng.random((256, 256)) < 0.5  # 50 % missing pixels
    else:
        holes = np.zeros((256, 256), bool)
        holes[::40, :] = True  # lines across the whole image
    assert plan_hole_regions(holes) is None


def test_scattered_holes_are_missing_pixels_not_shapes():
    rng = np.random.default_rng(1)
    assert scattered_holes(rng.random((128, 128)) < 0.5)  # half the pixels missing at random
    assert scattered_holes(rng.random((128, 128)) < 0.25)
    assert not scattered_holes(rng.random((128, 128)) < 0.1)  # too few: a sprinkle, not a dense mask
    box = np.zeros((128, 128), bool)
    box[20:80, 20:80] = True  # 22 % of the image, but one region
    assert not scattered_holes(box)
    lines = np.zeros((128, 128), bool)
    lines[::4, :] = True  # thin lines 1 px from known pixels, 25 % of the image: scattered enough
    assert scattered_holes(lines)
    strokes = np.zeros((128, 128), bool)
    for r in range(0, 128, 16):
        strokes[r : r + 6, :] = True  # 6 px wide strokes, 38 % of the image: shapes
    assert not scattered_holes(strokes)
    assert not scattered_holes(np.ones((32, 32), bool)) and not scattered_holes(np.zeros((32, 32), bool))
    # a stack: every plane that has holes must be scattered; planes without holes do not count
    stack = np.stack([rng.random((64, 64)) < 0.5, np.zeros((64, 64), bool)])
    assert scattered_holes(stack)
    stack[1, 10:50, 10:50] = True
    assert not scattered_holes(stack)
    with pytest.raises(ValueError, match="holes must be"):
        scattered_holes(np.zeros((2, 2, 8, 8), bool))


def test_large_holes_are_regions_not_thin_shapes():
    box = np.zeros((128, 128), bool)
    box[20:50, 20:50] = True  # a 30 px blotch: its pixels ~5 px from the nearest known one
    assert large_holes(box) and hole_kind(box) == "large"
    small = np.zeros((128, 128), bool)
    small[20:30, 20:30] = True  # a 10 px square: ~1.8 px on average
    assert not large_holes(small) and hole_kind(small) == ""
    strokes = np.zeros((128, 128), bool)
    strokes[40:49, :] = True  # a 9 px wide stroke: ~2.2 px
    assert not large_holes(strokes)
    missing = np.random.default_rng(2).random((128, 128)) < 0.5
    assert hole_kind(missing) == "scattered" and not large_holes(missing)
    assert not large_holes(np.zeros((32, 32), bool)) and hole_kind(np.zeros((32, 32), bool)) == ""
    assert large_holes(np.ones((32, 32), bool))  # nothing known: as far from a known pixel as can be
    # a stack: every plane that has holes must be large; a plane of thin holes makes the mix ""
    stack = np.stack([box, np.zeros((128, 128), bool)])
    assert large_holes(stack)
    stack[1] = strokes
    assert hole_kind(stack) == ""


def test_no_hole_gives_no_region_and_stacks_are_united():
    assert plan_hole_regions(np.zeros((64, 64), bool)) == []
    holes = np.zeros((2, 256, 256), bool)
    holes[0, 10:14, 10:14] = True
    holes[1, 200:204, 200:204] = True
    boxes = plan_hole_regions(holes)
    assert len(boxes) == 2 and _covered_with_margin(holes.any(axis=0), boxes, 16)


def test_blender_leaves_pixels_outside_the_regions_to_the_fallback():
    boxes = [(0, 32, 0, 32), (20, 52, 20, 52)]
    bl = TileBlender(64, 64, 1, boxes)
    for k in range(2):
        bl.add(k, np.full((32, 32, 1), 2.0, np.float32))
    fallback = np.full((64, 64, 1), 7.0, np.float32)
    out = bl.image(fallback)
    covered = np.zeros((64, 64), bool)
    for y0, y1, x0, x1 in boxes:
        covered[y0:y1, x0:x1] = True
    np.testing.assert_allclose(out[covered], 2.0, rtol=1e-5)
    assert (out[~covered] == 7.0).all()
    # the overlap is blended: across it the value moves smoothly from one box's to the other's
    bl = TileBlender(64, 64, 1, boxes)
    bl.add(0, np.full((32, 32, 1), 2.0, np.float32))
    bl.add(1, np.full((32, 32, 1), 4.0, np.float32))
    diag = bl.image(fallback)[np.arange(16, 36), np.arange(16, 36), 0]
    assert diag[0] == pytest.approx(2.0) and diag[-1] == pytest.approx(4.0)
    assert (np.diff(diag) >= -1e-5).all() and np.diff(diag).max() < 0.6


# -- the job ----------------------------------------------------------------------------


def test_inpaint_fits_only_regions_known_pixels_bit_exact(fast):
    img = _image()
    mask = np.zeros(img.shape, bool)
    mask[20:24, 20:40] = True
    mask[100:106, 90:96] = True
    job = prepare_inpaint(img, mask, params=fast, seed=0, device="cpu")
    assert job.regions and len(job.tiles) == 2
    assert any(n.startswith("fitting 2 regions around the holes") for n in job.notes)
    _, out = inpaint(img, mask, params=fast, seed=0, device="cpu", return_history=True)
    assert out.regions and out.tiles == job.tiles
    assert np.array_equal(out.image[~mask], img[~mask])
    assert np.isfinite(out.image).all()
    assert not np.allclose(out.image[mask], img[mask])
    # the holes are filled with plausible values: closer to the truth than a zero fill
    assert np.mean((out.image[mask] - img[mask]) ** 2) < 0.5 * np.mean(img[mask] ** 2)


def test_tile_size_0_fits_the_whole_image(fast):
    img = _image()
    mask = np.zeros(img.shape, bool)
    mask[20:24, 20:40] = True
    job = prepare_inpaint(img, mask, params=fast, seed=0, device="cpu", tile_size=0)
    assert job.tiles is None and not job.regions
    _, out = inpaint(img, mask, params=fast, seed=0, device="cpu", tile_size=0, return_history=True)
    assert out.tiles is None and not out.regions
    assert np.array_equal(out.image[~mask], img[~mask])


def test_explicit_tile_size_keeps_the_tile_plan(fast):
    img = _image()
    mask = np.zeros(img.shape, bool)
    mask[20:24, 20:40] = True
    job = prepare_inpaint(img, mask, params=fast, seed=0, device="cpu", tile_size=64)
    assert not job.regions and len(job.tiles) > 1 and {b[1] - b[0] for b in job.tiles} == {64}


def test_dense_mask_fits_the_whole_image(fast):
    img = _image(64, 64)
    mask = np.random.default_rng(0).random(img.shape) < 0.5
    job = prepare_inpaint(img, mask, params=fast, seed=0, device="cpu")
    assert job.tiles is None and not job.regions


def test_stack_with_a_2d_mask(fast):
    img = np.stack([_image(seed=0), _image(seed=1)])
    mask = np.zeros(img.shape[1:], bool)
    mask[60:66, 60:70] = True
    _, out = inpaint(img, mask, params=fast, seed=0, device="cpu", return_history=True)
    assert out.regions and len(out.tiles) == 1
    assert np.array_equal(out.image[:, ~mask], img[:, ~mask])
    assert np.isfinite(out.image).all()
    assert all(not np.allclose(out.image[i][mask], img[i][mask]) for i in range(2))


def test_hole_at_the_image_border_rgb(fast):
    img = np.stack([_image(seed=s) for s in range(3)], axis=-1)
    u8 = (img * 255).astype(np.uint8)
    mask = np.zeros(img.shape[:2], bool)
    mask[0:5, 120:128] = True  # the top-right corner
    _, out = inpaint(u8, mask, params=fast, seed=0, device="cpu", channel_axis=-1, return_history=True)
    assert out.regions and len(out.tiles) == 1
    y0, y1, x0, x1 = out.tiles[0]
    assert y0 == 0 and x1 == 128
    assert out.image.dtype == np.uint8
    assert np.array_equal(out.image[~mask], u8[~mask])
