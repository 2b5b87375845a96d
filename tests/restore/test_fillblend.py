"""The blended fill (DIPParams.fill_blend): held-out pixels shaped like the holes weigh the
network's fill against a biharmonic one."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from fit_steps import drain
from napari_deep_prior.restore.fillblend import (
    MAX_BLEND_HOLE_PIXELS,
    MIN_BLEND_PIXELS,
    blend_fill,
    blend_pixels,
    blend_weight,
)
from napari_deep_prior.restore.fit import DIPFit
from napari_deep_prior.restore.regions import hole_kind


def _strokes(shape=(64, 64)):
    """Two thin painted strokes and a short bar."""
    holes = np.zeros(shape, bool)
    holes[20:23, 5:60] = True
    holes[30:58, 40:43] = True
    holes[45:48, 8:20] = True
    return holes


def _smooth(shape=(64, 64)):
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]] / (shape[0] - 1)
    return (0.5 + 0.3 * np.sin(2.5 * x + 1.0) * np.cos(2.0 * y)).astype(np.float32)


def _holes_mse(out, clean, holes):
    return float(np.mean((out[holes] - clean[holes]) ** 2))


def test_held_out_pixels_are_known_pieces_shaped_like_the_holes():
    holes = _strokes()
    known = ~holes
    held = blend_pixels(known, 0.03, seed=0)
    assert held is not None and held.shape == known.shape
    assert not (held & holes).any()  # only known pixels are held out
    assert held.sum() >= 0.03 * known.sum()
    # every held-out piece is a piece of the holes shifted by a third of the image
    shifted = np.roll(holes, (64 // 3, 64 // 3), axis=(0, 1)) & known
    assert not (held & ~shifted).any()
    labels, n = ndimage.label(shifted, structure=np.ones((3, 3), bool))
    pieces = set(np.unique(labels[held])) - {0}
    np.testing.assert_array_equal(held, np.isin(labels, list(pieces)))  # whole pieces only
    assert len(pieces) < n  # not all of them for 3 %
    # seeded: the same seed gives the same pixels, another seed may take other pieces
    np.testing.assert_array_equal(held, blend_pixels(known, 0.03, seed=0))
    assert blend_pixels(known, 0.5, seed=1).sum() > held.sum()


@pytest.mark.parametrize(
    "known, fraction",
    [
        (np.ones((32, 32), bool), 0.05),  # no holes
        (~_strokes(), 0.0),  # off
        (np.pad(np.zeros((2, 2), bool), 15, constant_values=True), 0.05),  # 4 hole pixels: too few to weigh
    ],
)
def test_no_held_out_pixels(known, fraction):
    assert blend_pixels(known, fraction, seed=0) is None


def test_no_blend_for_a_hole_too_large_for_the_classical_fill(monkeypatch):
    from napari_deep_prior.restore import fillblend

    assert MAX_BLEND_HOLE_PIXELS >= 2**16  # a 256 x 256 hole is blended
    monkeypatch.setattr(fillblend, "MAX_BLEND_HOLE_PIXELS", 100)
    known = np.ones((64, 64), bool)
    known[10:20, 10:20] = False  # 100 pixels: within the limit
    known[40:42, 5:45] = False
    assert blend_pixels(known, 0.2, seed=0) is not None
    known[20, 10] = False  # 101
    assert blend_pixels(known, 0.2, seed=0) is None


def test_blend_pixels_wants_a_2d_mask():
    with pytest.raises(ValueError, match="2D mask"):
        blend_pixels(np.ones((4, 4, 2), bool), 0.05, 0)


def _case():
    """(clean (H, W, 1), holes, known, held-out pixels, the damaged target)."""
    clean = _smooth()[..., None]
    holes = _strokes()
    known = ~holes
    target = np.where(holes[..., None], 0.0, clean).astype(np.float32)
    return clean, holes, known, blend_pixels(known, 0.05, seed=0), target


def test_blend_weight_follows_the_better_fill():
    clean, holes, known, held, target = _case()
    # an exact estimate: all weight on it, the holes are the estimate's
    out, w = blend_fill(clean, target, known, held)
    assert w == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(out[holes], clean[holes], atol=1e-5)
    # a useless estimate (flat grey): no weight, the holes are the biharmonic fill
    from skimage.restoration import inpaint_biharmonic

    flat = np.full_like(clean, 0.5)
    out, w = blend_fill(flat, target, known, held)
    assert w < 0.05
    bih = inpaint_biharmonic(target, holes, channel_axis=-1)
    assert _holes_mse(out, clean, holes) <= 1.05 * _holes_mse(bih, clean, holes)
    # known pixels are the estimate's, untouched
    np.testing.assert_array_equal(out[known], flat[known])


def test_min_weight_keeps_a_share_of_the_network():
    """min_weight: the share chosen on the held-out pixels, but at least min_weight."""
    from skimage.restoration import inpaint_biharmonic

    clean, holes, known, held, target = _case()
    flat = np.full_like(clean, 0.5)  # a useless estimate: the held-out pixels ask for w near 0
    _, w0 = blend_fill(flat, target, known, held)
    assert w0 < 0.05
    out, w = blend_fill(flat, target, known, held, min_weight=0.5)
    assert w == 0.5
    b = inpaint_biharmonic(target, holes, channel_axis=-1).astype(np.float32)
    np.testing.assert_allclose(out[holes], 0.5 * (b[holes] + flat[holes]), atol=1e-6)
    np.testing.assert_array_equal(out[known], flat[known])
    # a share above the floor is left as chosen
    _, w1 = blend_fill(clean, target, known, held, min_weight=0.5)
    assert w1 == pytest.approx(1.0, abs=1e-3)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="min_weight"):
            blend_fill(flat, target, known, held, min_weight=bad)


def test_blend_weight_is_the_least_squares_share():
    """On held-out pixels where the estimate is off by a known amount the weight recovers it."""
    clean, holes, known, held, target = _case()
    from skimage.restoration import inpaint_biharmonic

    b = inpaint_biharmonic(np.where((holes | held)[..., None], 0.0, clean), holes | held, channel_axis=-1)
    # e - b = 2 (y - b) on the held-out pixels: the best share is 1/2
    estimate = (b + 2.0 * (clean - b)).astype(np.float32)
    _, w = blend_fill(estimate, target, known, held)
    assert w == pytest.approx(0.5, abs=1e-3)


def test_a_short_fit_blended_beats_its_network_alone(tiny_params, one_torch_thread):
    """Few steps leave the network's fill poor: the blend leans on the classical fill."""
    clean = _smooth()
    holes = _strokes()
    target = np.where(holes, 0.0, clean)[..., None].astype(np.float32)
    p = tiny_params.replace(iterations=20, early_stop=False, history_every=0)

    def fit(fill_blend):
        f = DIPFit(target, known=~holes, params=p.replace(fill_blend=fill_blend), device=torch.device("cpu"), seed=0)
        return f, drain(f)[1]

    fit_b, blended = fit(0.05)
    _, alone = fit(0.0)
    assert alone.fill_weight is None and blended.fill_weight is not None and 0.0 <= blended.fill_weight < 0.5
    assert fit_b._blend_held is not None and not (fit_b._blend_held & holes).any()
    e_blend = _holes_mse(blended.image[..., 0], clean, holes)
    e_alone = _holes_mse(alone.image[..., 0], clean, holes)
    assert e_blend < 0.5 * e_alone
    # calling result() again (a cancelled run's partial result) gives the same blend
    np.testing.assert_array_equal(fit_b.result().image, blended.image)


def test_scattered_holes_are_not_blended(tiny_params, one_torch_thread):
    """Half the pixels missing at random: no pixels are taken from between the holes."""
    clean = _smooth()
    holes = np.random.default_rng(0).random(clean.shape) < 0.5
    assert hole_kind(holes) == "scattered"
    target = np.where(holes, 0.0, clean)[..., None].astype(np.float32)
    p = tiny_params.replace(iterations=10, early_stop=False, history_every=0, fill_blend=0.05)
    fit = DIPFit(target, known=~holes, params=p, device=torch.device("cpu"), seed=0)
    res = drain(fit)[1]
    assert fit._blend_held is None and res.fill_weight is None
    # the same fraction on strokes does blend
    strokes = _strokes()
    target = np.where(strokes, 0.0, clean)[..., None].astype(np.float32)
    fit = DIPFit(target, known=~strokes, params=p, device=torch.device("cpu"), seed=0)
    assert drain(fit)[1].fill_weight is not None
    # and so does a large hole (it stops earlier, es_hole_change_large, but is blended as any)
    box = np.zeros(clean.shape, bool)
    box[10:40, 14:44] = True
    assert hole_kind(box) == "large"
    target = np.where(box, 0.0, clean)[..., None].astype(np.float32)
    fit = DIPFit(target, known=~box, params=p, device=torch.device("cpu"), seed=0)
    assert drain(fit)[1].fill_weight is not None


def test_inpaint_notes_the_blend_and_returns_known_pixels_exactly(tiny_params, one_torch_thread):
    from napari_deep_prior.arrays import drive
    from napari_deep_prior.restore.api import prepare_inpaint

    clean = _smooth()
    holes = _strokes()
    damaged = np.where(holes, 0.0, clean)
    p = tiny_params.replace(iterations=20, early_stop=False, fill_blend=0.05)
    out = drive(prepare_inpaint(damaged, holes, params=p, seed=0, tile_size=0).steps())
    w = out.fits[0].fill_weight
    assert w is not None
    assert any("biharmonic" in n and f"{w:.2f}" in n for n in out.notes)
    np.testing.assert_array_equal(out.image[~holes], damaged[~holes])
    # in tiles each tile weighs its own fill, and the note gives the range
    p = p.replace(iterations=10, fill_blend=0.2)
    out = drive(prepare_inpaint(damaged, holes, params=p, seed=0, tile_size=32, tile_overlap=8).steps())
    assert out.tiles is not None and len(out.tiles) > 1
    assert any("over" in n and "fits" in n and "biharmonic" in n for n in out.notes)
    np.testing.assert_array_equal(out.image[~holes], damaged[~holes])


def test_large_holes_keep_the_least_network_share(tiny_params, one_torch_thread):
    """fill_blend_large_min: a large hole's blend keeps at least that share of the network's
    fill, whatever the held-out pieces ask for; thin holes are weighed by them alone."""
    clean = _smooth()
    box = np.zeros(clean.shape, bool)
    box[10:40, 14:44] = True
    strokes = _strokes()
    assert hole_kind(box) == "large" and hole_kind(strokes) == ""
    p = tiny_params.replace(iterations=10, early_stop=False, history_every=0, fill_blend=0.05)

    def weight(holes, floor):
        target = np.where(holes, 0.0, clean)[..., None].astype(np.float32)
        params = p.replace(fill_blend_large_min=floor)
        res = drain(DIPFit(target, known=~holes, params=params, device=torch.device("cpu"), seed=0))[1]
        return res.fill_weight, res.image

    w_free, img_free = weight(box, 0.0)
    w_kept, img_kept = weight(box, 0.9)
    assert w_free < 0.9 and w_kept == 0.9  # ten steps: the held-out pieces prefer the classical fill
    assert not np.array_equal(img_free[box], img_kept[box])
    np.testing.assert_array_equal(img_free[~box], img_kept[~box])  # known pixels as given
    # thin strokes: the floor is not read
    assert weight(strokes, 0.0)[0] == weight(strokes, 0.9)[0] < 0.9


@pytest.mark.parametrize("bad", [-0.1, 0.6, float("nan")])
def test_fill_blend_bounds(tiny_params, bad):
    with pytest.raises(ValueError, match="fill_blend"):
        tiny_params.replace(fill_blend=bad)


@pytest.mark.parametrize("bad", [-0.1, 1.1, float("nan")])
def test_fill_blend_large_min_bounds(tiny_params, bad):
    with pytest.raises(ValueError, match="fill_blend_large_min"):
        tiny_params.replace(fill_blend_large_min=bad)


def test_min_blend_pixels_is_what_blend_pixels_enforces():
    known = np.ones((100, 100), bool)
    known[5:6, 5 : 5 + MIN_BLEND_PIXELS - 1] = False  # one piece one pixel short
    assert blend_pixels(known, 0.5, seed=0) is None
    known[5:6, 5 : 5 + MIN_BLEND_PIXELS] = False
    assert blend_pixels(known, 0.5, seed=0).sum() == MIN_BLEND_PIXELS


def test_blend_weight_is_the_clipped_least_squares_share():
    rng = np.random.default_rng(3)
    truth = rng.random(500).astype(np.float32)
    classical = truth + rng.normal(0, 0.1, 500).astype(np.float32)
    assert blend_weight(truth, classical, truth) == pytest.approx(1.0)  # the network exact
    assert blend_weight(classical, classical, truth) == 1.0  # the two agree: nothing to weigh
    # an estimate twice as far from the truth, on the other side: half of it
    assert blend_weight(2 * truth - classical, classical, truth) == pytest.approx(0.5, abs=1e-5)
    assert blend_weight(classical + (classical - truth), classical, truth) == 0.0  # worse the same way: clipped
