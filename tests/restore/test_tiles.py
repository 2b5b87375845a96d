"""Overlapping-tile processing: the plan, the blending, the memory choice, and the API.

Every fit here is tiny (3-level 16-wide net, <= 30 iterations, images <= 150 px).
"""

import itertools

import numpy as np
import pytest
import torch

from napari_deep_prior import device
from napari_deep_prior.restore import planning
from napari_deep_prior.restore.api import (
    ImageTooLargeError,
    denoise,
    inpaint,
    prepare_denoise,
    prepare_inpaint,
)
from napari_deep_prior.restore.lanes import LANES_ENV
from napari_deep_prior.restore.planning import choose_tile_size, estimate_fit_bytes
from napari_deep_prior.restore.tiles import (
    MIN_TILE,
    TileBlender,
    blend_window,
    default_overlap,
    plan_tiles,
)


@pytest.fixture
def fast(tiny_params):
    """tiny_params without early stopping, averaging, previews or history: quick and simple."""
    return tiny_params.replace(iterations=20, early_stop=False, exp_weight=None, history_every=0, preview_every=0)


def _spans(boxes, axis):
    return sorted({(b[0], b[1]) if axis == 0 else (b[2], b[3]) for b in boxes})


def _tile_edges(boxes, n, axis):
    """Indices k of the neighbour pairs (k, k+1) that straddle a tile's inner edge."""
    edges = set()
    for a0, a1 in _spans(boxes, axis):
        for e in (a0, a1):
            if 0 < e < n:
                edges.add(e - 1)
    return sorted(edges)


# -- the plan ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "h, w, tile, overlap",
    [
        (33, 33, 32, 8),
        (97, 61, 32, 8),
        (150, 130, 64, 16),
        (159, 47, 48, 12),
        (37, 151, 32, 6),
        (64, 64, 64, 16),
        (65, 129, 64, 0),
        (20, 100, 32, 31),
    ],
)
def test_plan_covers_every_pixel_with_the_overlap(h, w, tile, overlap):
    boxes = plan_tiles(h, w, tile, overlap)
    count = np.zeros((h, w), int)
    for y0, y1, x0, x1 in boxes:
        assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
        # every tile has the full size (the last row/column is shifted inward)
        assert (y1 - y0, x1 - x0) == (min(tile, h), min(tile, w))
        count[y0:y1, x0:x1] += 1
    assert count.min() >= 1
    for axis in (0, 1):
        spans = _spans(boxes, axis)
        for (a0, a1), (b0, _b1) in itertools.pairwise(spans):
            assert b0 > a0 and a1 - b0 >= overlap
    assert len(boxes) == len(_spans(boxes, 0)) * len(_spans(boxes, 1))


@pytest.mark.parametrize(
    "args, msg",
    [
        ((100, 100, 16, 4), "at least 32"),
        ((100, 100, 64, 64), "smaller than the tile side"),
        ((100, 100, 64, -1), ">= 0"),
        ((0, 100, 64, 8), "positive"),
    ],
)
def test_plan_rejects_bad_arguments(args, msg):
    with pytest.raises(ValueError, match=msg):
        plan_tiles(*args)
    with pytest.raises(TypeError, match="integer"):
        plan_tiles(100, 100, 64.0, 8)


def test_default_overlap():
    assert default_overlap(64) == 16 and default_overlap(256) == 32 and default_overlap(200) == 26
    assert all(default_overlap(t) % 2 == 0 and default_overlap(t) < t for t in range(MIN_TILE, 600))


# -- the blending -----------------------------------------------------------------------


def test_blend_window_ramps_only_on_inner_sides():
    w = blend_window(40, 48, 12, edges=(True, False, True, False))
    assert w.shape == (40, 48) and w.dtype == np.float32
    assert (w > 0).all() and w.max() == 1.0
    assert (w[:28, :36] == 1).all()  # the border sides and the interior keep full weight
    assert w[-1, -1] < 1e-3 and w[0, -1] < 0.01 and w[-1, 0] < 0.01
    assert np.all(np.diff(w[0, 36:]) < 0)  # falling ramp across the overlap
    # a rising and a falling ramp over the same overlap sum to one
    left = blend_window(8, 32, (0, 0, 12, 0), edges=(True, True, False, True))
    right = blend_window(8, 32, (0, 0, 0, 12), edges=(True, True, True, False))
    np.testing.assert_allclose(left[0, :12] + right[0, -12:], 1.0, atol=1e-6)


@pytest.mark.parametrize("h, w, tile, overlap", [(150, 130, 64, 16), (97, 61, 32, 8), (65, 129, 48, 20)])
def test_identical_constant_tiles_blend_to_the_constant(h, w, tile, overlap):
    boxes = plan_tiles(h, w, tile, overlap)
    blender = TileBlender(h, w, 2, boxes)
    const = np.array([0.3, 0.7], np.float32)
    for k, (y0, y1, x0, x1) in enumerate(boxes):
        blender.add(k, np.broadcast_to(const, (y1 - y0, x1 - x0, 2)))
    out = blender.image(fallback=np.zeros((h, w, 2), np.float32))
    np.testing.assert_allclose(out, np.broadcast_to(const, out.shape), rtol=1e-6, atol=0)
    # with a regular plan the weights themselves sum to one where tiles overlap regularly
    assert blender.wsum.min() > 0


def test_two_constant_tiles_change_smoothly_across_the_overlap():
    overlap = 16
    boxes = plan_tiles(40, 112, 64, overlap)  # two tiles side by side, overlapping 16 columns
    assert boxes == [(0, 40, 0, 64), (0, 40, 48, 112)]
    a, b = 0.2, 0.9
    blender = TileBlender(40, 112, 1, boxes)
    blender.add(0, np.full((40, 64, 1), a, np.float32))
    blender.add(1, np.full((40, 64, 1), b, np.float32))
    row = blender.image()[20, :, 0]
    np.testing.assert_allclose(row[:48], a, rtol=1e-6)
    np.testing.assert_allclose(row[64:], b, rtol=1e-6)
    jumps = np.diff(row)
    assert np.all(jumps >= -1e-7)  # monotone from a to b
    assert jumps.max() <= abs(b - a) * 3.0 / overlap
    assert np.abs(blender.image()[:, :, 0] - row).max() < 1e-6  # the same on every row


def test_blender_keeps_the_fallback_where_no_tile_was_added():
    boxes = plan_tiles(100, 100, 64, 16)
    blender = TileBlender(100, 100, 1, boxes)
    blender.add(0, np.ones((64, 64, 1), np.float32))
    fallback = np.full((100, 100, 1), -1.0, np.float32)
    out = blender.image(fallback)
    np.testing.assert_array_equal(out[:64, :64], 1.0)
    np.testing.assert_array_equal(out[64:], -1.0)
    np.testing.assert_array_equal(out[:, 64:], -1.0)
    # a running tile's estimate can be blended in without changing the buffers
    num = blender.num.copy()
    out2 = blender.image(fallback, extra=(1, np.full((64, 64, 1), 2.0, np.float32)))
    np.testing.assert_array_equal(blender.num, num)
    assert out2[10, 70, 0] == pytest.approx(2.0) and 1.0 < out2[10, 55, 0] < 2.0


# -- the memory choice ------------------------------------------------------------------


def test_choose_tile_size_respects_the_budget_and_the_multiple(tiny_params):
    budget = estimate_fit_bytes(tiny_params, 96, 96, 1) + 1
    tile = choose_tile_size(tiny_params, 500, 400, 1, budget)
    assert tile == 96 and tile % 8 == 0  # 3 levels: multiples of 8
    assert estimate_fit_bytes(tiny_params, tile, tile, 1) <= budget
    assert estimate_fit_bytes(tiny_params, tile + 8, tile + 8, 1) > budget
    # never larger than the image (rounded up to the multiple)
    assert choose_tile_size(tiny_params, 50, 41, 1, 1e12) == 56
    with pytest.raises(ImageTooLargeError, match="even the smallest tile"):
        choose_tile_size(tiny_params, 500, 400, 1, 1000)
    with pytest.raises(ValueError):  # ImageTooLargeError is a ValueError too
        choose_tile_size(tiny_params, 500, 400, 1, 1000)


def _small_memory(monkeypatch, nbytes):
    monkeypatch.setattr(device, "memory_limit", lambda dev: device.MemoryLimit(int(nbytes), "ram"))


def test_automatic_tiling_when_memory_is_small_and_tile_size_0_refuses(monkeypatch, fast):
    h, w = 64, 300  # wide enough that its 30-frame history cannot fit beside a 64 px tile
    p = fast.replace(iterations=30, history_every=1)  # a 30-frame history
    need_tile = planning._tiled_output_bytes(h, w, 3, 1) + estimate_fit_bytes(p.replace(history_every=0), 64, 64, 3)
    _small_memory(monkeypatch, need_tile / 0.9 + 1000)
    img = np.random.default_rng(0).random((h, w, 3)).astype(np.float32)
    job = prepare_denoise(img, params=p, channel_axis=-1)  # automatic
    # tiles no larger than memory allows (64 px), shrunk to just cover the image
    side = job.tiles[0][1] - job.tiles[0][0]
    assert len(job.tiles) > 1 and side <= 64
    assert job.tiles == plan_tiles(h, w, side, default_overlap(side))
    assert len(job.tiles) == len(plan_tiles(h, w, 64, default_overlap(64)))
    with pytest.raises(ImageTooLargeError, match="tile_size") as exc:
        prepare_denoise(img, params=p, channel_axis=-1, tile_size=0)
    assert isinstance(exc.value, ValueError)
    # the history of the whole image does not fit beside the tiles: dropped, with a note
    assert job.fit_params.history_every == 0
    for _ in job.steps():
        pass
    full = job.result()
    assert full.image.shape == img.shape and full.history is None
    assert len(full.notes) == 1 and "history dropped" in full.notes[0]
    assert "turn the history off" in full.notes[0] and "crop" in full.notes[0]
    # far too little memory even for tiles: still a clear ImageTooLargeError
    _small_memory(monkeypatch, 10_000)
    with pytest.raises(ImageTooLargeError, match="needs about .* GiB but only"):
        prepare_denoise(img, params=p, channel_axis=-1)


def test_no_tiles_when_the_image_fits(fast):
    img = np.zeros((100, 90), np.float32)
    assert prepare_denoise(img, params=fast).tiles is None
    assert prepare_denoise(img, params=fast, tile_size=128).tiles is None  # one tile: the image


@pytest.mark.parametrize(
    "kw, exc, msg",
    [
        ({"tile_size": 8}, ValueError, "too small"),
        ({"tile_size": -4}, ValueError, ">= 0"),
        ({"tile_size": True}, TypeError, "tile_size"),
        ({"tile_size": 48.0}, TypeError, "tile_size"),
        ({"tile_size": 48, "tile_overlap": 48}, ValueError, "smaller than the tile side"),
    ],
)
def test_bad_tile_arguments(fast, kw, exc, msg):
    with pytest.raises(exc, match=msg):
        prepare_denoise(np.zeros((100, 90)), params=fast, **kw)


def test_forced_tile_size_is_rounded_up_to_the_multiple(fast):
    job = prepare_denoise(np.zeros((100, 90)), params=fast, tile_size=60, tile_overlap=10)
    assert job.tiles == plan_tiles(100, 90, 64, 10) and job.tile_overlap == 10


# -- end to end -------------------------------------------------------------------------


def test_forced_tiling_end_to_end(tiny_params):
    p = tiny_params.replace(iterations=20)
    img = (np.random.default_rng(0).random((150, 130)) * 4000).astype(np.uint16)
    steps = []
    out, full = denoise(img, params=p, tile_size=64, seed=0, callback=steps.append, return_history=True)
    assert out.shape == img.shape and out.dtype == np.uint16
    assert full.tiles == plan_tiles(150, 130, 64, 16) and len(full.tiles) == 9
    assert {s.tile for s in steps} == set(range(9)) and {s.n_tiles for s in steps} == {9}
    fr = [s.fraction for s in steps]
    assert fr == sorted(fr) and fr[-1] == pytest.approx(1.0)
    previews = [s.preview for s in steps if s.preview is not None]
    assert previews and all(pv.shape == (150, 130, 1) for pv in previews)  # the whole plane
    # 20 iterations: a frame every 2 (at least 10 frames)
    assert full.history.shape == (10, 150, 130) and full.history.dtype == np.uint16
    assert list(full.history_iterations) == list(range(2, 21, 2)) and full.history_losses.shape == (10, 1)
    assert np.isfinite(full.history_losses).all() and full.notes == []
    assert full.planes_done == 1 and full.iterations_run == [20] and full.stop_iterations[0] > 0
    assert len(full.tile_iterations_run[0]) == 9
    # the last history frame is every tile's estimate at its last iteration: the result
    np.testing.assert_array_equal(full.history[-1], out)


def test_no_visible_seams(fast):
    """Neighbour differences at the tiles' inner edges look like anywhere else.

    Hard pasting the tiles instead of blending them gives ratios of 1.8-3.8 here
    (checked by replacing TileBlender.add with a plain overwrite); blended: 0.95-1.3.
    """
    h = w = 112
    y, x = np.mgrid[0:h, 0:w]
    clean = 0.5 + 0.3 * np.sin((x + y) / 9.0)  # the same gradient statistics in every column
    img = (clean + np.random.default_rng(0).normal(0, 0.05, clean.shape)).astype(np.float32)
    p = fast.replace(iterations=30)
    job = prepare_denoise(img, params=p, tile_size=64, tile_overlap=16, seed=0)
    assert len(job.tiles) == 4
    for _ in job.steps():
        pass
    out = job.result().image.astype(np.float64)
    assert np.corrcoef(out.ravel(), clean.ravel())[0, 1] > 0.9  # it fitted the image
    for axis in (0, 1):
        n = out.shape[axis]
        d = np.abs(np.diff(out, axis=axis)).mean(axis=1 - axis)  # per neighbour pair
        edges = _tile_edges(job.tiles, n, axis)
        band = set()
        for a0, a1 in _spans(job.tiles, axis):
            if a0 > 0:
                band.update(range(a0 - 2, a0 + 16 + 2))
            if a1 < n:
                band.update(range(a1 - 16 - 2, a1 + 2))
        rest = [k for k in range(n - 1) if k not in band]
        overlap = sorted(k for k in band if 0 <= k < n - 1)
        assert d[edges].mean() / d[rest].mean() < 1.5, axis
        assert d[overlap].mean() / d[rest].mean() < 1.5, axis


def test_inpaint_tiles_keep_known_pixels_bit_exact(fast):
    rng = np.random.default_rng(1)
    img = (rng.random((112, 112, 3)) * 255).astype(np.uint8)
    mask = np.zeros((112, 112), bool)
    mask[10:20, 10:30] = True  # only in the top-left tile
    mask[50:56, 40:60] = True  # in the overlap of all four tiles
    steps = []
    out = inpaint(img, mask, params=fast, channel_axis=-1, tile_size=64, seed=0, callback=steps.append)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~mask], img[~mask])
    assert not np.array_equal(out[mask], img[mask])
    assert {s.tile for s in steps} == {0, 1, 2, 3}
    # a tile without holes is not fitted
    mask2 = np.zeros((112, 112), bool)
    mask2[5:10, 5:10] = True
    steps = []
    out2, full2 = inpaint(
        img, mask2, params=fast, channel_axis=-1, tile_size=64, seed=0, callback=steps.append, return_history=True
    )
    assert {s.tile for s in steps} == {0} and full2.tile_iterations_run == [[20, 0, 0, 0]]
    np.testing.assert_array_equal(out2[~mask2], img[~mask2])


def test_tile_without_known_pixels_is_refused(fast):
    img = np.random.default_rng(0).random((112, 112))
    mask = np.zeros((112, 112), bool)
    mask[:70, :70] = True  # covers the whole top-left 64x64 tile
    with pytest.raises(ValueError, match="no known pixel.*larger tile_size"):
        prepare_inpaint(img, mask, params=fast, tile_size=64)
    assert prepare_inpaint(img, mask, params=fast, tile_size=0).tiles is None


def test_warm_start_across_tiles(fast):
    img = np.random.default_rng(0).random((64, 100)).astype(np.float32)
    p = fast.replace(iterations=10)
    cold = denoise(img, params=p, tile_size=64, seed=0)
    warm = denoise(img, params=p, tile_size=64, seed=0, warm_start=True)
    np.testing.assert_array_equal(cold[:, :36], warm[:, :36])  # only the first tile there
    assert not np.array_equal(cold[:, 64:], warm[:, 64:])


def test_cancel_mid_tile_keeps_what_was_done(tiny_params, monkeypatch):
    # the tiles one after another, as counted below (a cancel in lanes: tests/restore/test_lanes.py)
    monkeypatch.setenv(LANES_ENV, "1")
    p = tiny_params.replace(iterations=20, early_stop=False)
    img = (np.random.default_rng(0).random((112, 112)) * 255).astype(np.uint8)
    job = prepare_denoise(img, params=p, tile_size=64, seed=0)
    gen = job.steps()
    steps = [next(gen) for _ in range(6)]  # 4 Steps per tile: stop inside tile 1
    gen.close()
    assert (steps[-1].tile, steps[-1].iteration) == (1, 10)
    out = job.result()
    assert out.image.shape == img.shape and out.image.dtype == np.uint8
    assert out.planes_done == 0 and out.tile_iterations_run == [[20, 10, 0, 0]]
    # tiles 2 and 3 were never reached: where only they cover, the input is kept
    np.testing.assert_array_equal(out.image[64:], img[64:])
    assert not np.array_equal(out.image[:48, :48], img[:48, :48])
    assert not np.array_equal(out.image[:48, 64:], img[:48, 64:])  # the running tile's estimate
    assert out.history.shape == (10, 112, 112) and list(out.history_iterations) == list(range(2, 21, 2))
    np.testing.assert_array_equal(out.history[:, 64:], np.broadcast_to(img[64:], (10, 48, 112)))


def test_automatic_tiles_just_cover_the_image():
    from napari_deep_prior.restore.planning import _shrink_tile

    assert _shrink_tile(2048, 4096, 4096, 32, 32, None) == 1504
    for h, w, tile in ((4096, 4096, 2048), (3000, 1000, 2048), (700, 900, 256)):
        small = _shrink_tile(tile, h, w, 32, 32, None)
        assert small <= tile and small % 32 == 0
        big_plan = plan_tiles(h, w, tile, default_overlap(tile))
        small_plan = plan_tiles(h, w, small, default_overlap(small))
        assert len(small_plan) == len(big_plan)  # no more tiles, each smaller
        # one step smaller would need more tiles
        if small - 32 >= 32:
            assert len(plan_tiles(h, w, small - 32, default_overlap(small - 32))) > len(big_plan)


# --- the capacity rule: planes larger than the preset's network restores well whole ----------


def test_the_default_denoise_fits_large_planes_in_tiles_of_its_capacity():
    """The shipped denoise preset, planned only (nothing is fitted): 512 px planes in 16 tiles of 160."""
    img = np.random.default_rng(0).random((512, 512, 3)).astype(np.float32)
    job = prepare_denoise(img, channel_axis=-1, device="cpu", seed=0)
    assert job.fit_params.tile_capacity == 160
    assert job.tiles == plan_tiles(512, 512, 160, default_overlap(160)) and len(job.tiles) == 16
    assert any("16 overlapping tiles of 160x160" in n and "tile_size=0" in n for n in job.notes)
    # a 1024 x 768 plane: tiles of the capacity, at most 1.6x its pixels in all
    job = prepare_denoise(img[..., 0].repeat(2, 0)[:, :384].repeat(2, 1), device="cpu", seed=0)
    sides = {b[1] - b[0] for b in job.tiles} | {b[3] - b[2] for b in job.tiles}
    assert sides == {160} and len(job.tiles) > 16
    assert planning._boxes_area(job.tiles) <= planning.CAPACITY_MAX_AREA * 1024 * 768
    # whole: small planes, tile_size 0 or the plane's size, a preset without a capacity
    for kw in ({"tile_size": 0}, {"tile_size": 512}, {"loss": "poisson"}, {"preset": "denoise-paper"}):
        job = prepare_denoise(img, channel_axis=-1, device="cpu", seed=0, **kw)
        assert job.tiles is None, kw
        assert not any("overlapping tiles" in n for n in job.notes)
    assert prepare_denoise(img[:240, :240], channel_axis=-1, device="cpu", seed=0).tiles is None
    # from 256 px: tiles of 160, or the next larger side where those would overlap too much; no
    # side between 256 and 1024 px is left whole
    for side, tile, n in ((256, 160, 4), (288, 160, 4), (320, 192, 4), (384, 160, 9), (480, 192, 9)):
        job = prepare_denoise(img[:side, :side], channel_axis=-1, device="cpu", seed=0)
        assert job.tiles == plan_tiles(side, side, tile, default_overlap(tile)) and len(job.tiles) == n, side
        assert any(f"{n} overlapping tiles of {tile}x{tile}" in n_ for n_ in job.notes)
    big = np.zeros((1024, 1024), np.float32)
    for side in range(256, 1025, 16):
        job = prepare_denoise(big[:side, :side], device="cpu", seed=0)
        assert job.tiles is not None and 160 <= max(b[1] - b[0] for b in job.tiles) <= 240, side
    # an explicit tile size still wins
    job = prepare_denoise(img, channel_axis=-1, device="cpu", seed=0, tile_size=192)
    assert {b[1] - b[0] for b in job.tiles} == {192}


def test_tiles_for_memory_are_no_larger_than_the_capacity(monkeypatch):
    """Memory for 600 px tiles of a 1200 px plane: the default network still gets tiles of at most 160."""
    from napari_deep_prior.restore.presets import get_preset

    p = get_preset("denoise")
    need = estimate_fit_bytes(p, 1200, 1200, 1) + 2 * len(planning.history_iterations(p)) * 1200 * 1200 * 4
    _small_memory(monkeypatch, 0.5 * need)  # the whole plane does not fit
    img = np.zeros((1200, 1200), np.float32)
    job = prepare_denoise(img, device="cpu", seed=0)
    assert max(b[1] - b[0] for b in job.tiles) <= 160 and len(job.tiles) > 4
    assert not any("overlapping tiles of" in n and "better in tiles" in n for n in job.notes)  # memory's call
    job = prepare_denoise(img, device="cpu", seed=0, params=p.replace(tile_capacity=0))
    assert max(b[1] - b[0] for b in job.tiles) > 288  # without a capacity, as large as memory allows


def test_capacity_tile_is_for_the_cpu_and_large_enough_planes(fast):
    p = fast.replace(tile_capacity=64)
    mult, min_tile = 8, 32
    cpu = torch.device("cpu")
    assert planning.capacity_tile(fast, 112, 112, cpu, min_tile, mult, None) is None  # no capacity set
    # 112 x 112 in 2 x 2 tiles of 64 (the smallest side that needs no more tiles): 1.31x its pixels
    t = planning.capacity_tile(p, 112, 112, cpu, min_tile, mult, None)
    assert t == 64 and len(plan_tiles(112, 112, t, default_overlap(t))) == 4
    assert planning.capacity_tile(p, 112, 112, torch.device("meta"), min_tile, mult, None) is None  # not a CPU
    assert planning.capacity_tile(p, 100, 100, cpu, min_tile, mult, None) is None  # smaller than 1.6 x 64
    # 512 px: tiles of 64 would cost 1.89x its pixels (11 x 11) and of 72 1.60x (9 x 9, just over
    # 1.6x): the next larger side that does not, 80 (8 x 8, 1.56x)
    assert planning.capacity_tile(p, 512, 512, cpu, min_tile, mult, None) == 80

    # 186 px: every side from 64 to 96 (1.5x the capacity) costs more than 1.6x; the one with the
    # fewest pixels (80: 1.66x), not the whole plane
    areas = {s: planning._boxes_area(plan_tiles(186, 186, s, default_overlap(s))) / 186**2 for s in range(64, 97, 8)}
    assert min(areas.values()) > planning.CAPACITY_MAX_AREA
    assert planning.capacity_tile(p, 186, 186, cpu, min_tile, mult, None) == min(areas, key=areas.get) == 80
    # a plane of at least 256 x 256 pixels below 1.6 x the capacity (CAPACITY_MIN_SIDE): 2 x 2 tiles of at most it
    big = fast.replace(tile_capacity=288)
    assert planning.capacity_tile(big, 256, 256, cpu, min_tile, mult, None) == 144  # 2 x 2, 1.27x
    assert planning.capacity_tile(big, 240, 240, cpu, min_tile, mult, None) is None  # fewer pixels
    assert planning.capacity_tile(big, 300, 100, cpu, min_tile, mult, None) is None


def _strokes(h, w, y0=0, y1=None, x0=0, x1=None, every=40):
    """Thin holes: 3 px wide lines every ``every`` rows and columns of the window."""
    y1, x1 = h if y1 is None else y1, w if x1 is None else x1
    mask = np.zeros((h, w), bool)
    for y in range(y0 + every // 2, y1 - 2, every):
        mask[y : y + 3, x0:x1] = True
    for x in range(x0 + every // 2, x1 - 2, every):
        mask[y0:y1, x : x + 3] = True
    return mask


def test_the_default_inpaint_tiles_planes_of_thin_or_scattered_holes():
    """The shipped inpaint preset, planned only: thin holes all over a 512 px plane in 16 tiles of
    160 (each fit for at most tile_iterations steps), scattered holes too (at most
    tile_iterations_scattered); large holes, and holes that regions cover, planned as without a
    capacity."""
    from napari_deep_prior.restore.presets import get_preset
    from napari_deep_prior.restore.regions import hole_kind

    img = np.random.default_rng(0).random((512, 512)).astype(np.float32)
    thin = _strokes(512, 512)
    assert hole_kind(thin) == ""
    job = prepare_inpaint(img, thin, device="cpu", seed=0)
    assert job.tiles == plan_tiles(512, 512, 160, default_overlap(160)) and not job.regions
    assert job.fit_params.tile_iterations == get_preset("inpaint").tile_iterations > 0
    cap = get_preset("inpaint").tile_iterations
    assert any(f"16 overlapping tiles of 160x160 pixels, each for at most {cap} steps" in n for n in job.notes)
    assert prepare_inpaint(img, thin, device="cpu", seed=0, tile_size=0).tiles is None
    # scattered holes (half the pixels) all over the plane: the same tiles, their own limit
    scattered = np.random.default_rng(1).random((512, 512)) < 0.5
    assert hole_kind(scattered) == "scattered"
    job = prepare_inpaint(img, scattered, device="cpu", seed=0)
    assert job.tiles == plan_tiles(512, 512, 160, default_overlap(160)) and not job.regions
    cap = get_preset("inpaint").tile_iterations_scattered
    assert 0 < cap < get_preset("inpaint").iterations and cap != get_preset("inpaint").tile_iterations
    assert any(f"16 overlapping tiles of 160x160 pixels, each for at most {cap} steps" in n for n in job.notes)
    # large holes (discs 40 px across) all over the plane: as without a capacity
    yy, xx = np.mgrid[:512, :512]
    large = ((yy % 64 - 32) ** 2 + (xx % 64 - 32) ** 2) < 20**2
    assert hole_kind(large) == "large"
    job = prepare_inpaint(img, large, device="cpu", seed=0)
    ref = prepare_inpaint(img, large, device="cpu", seed=0, params=get_preset("inpaint").replace(tile_capacity=0))
    assert job.tiles == ref.tiles and job.regions == ref.regions
    assert not any("overlapping tiles of" in n for n in job.notes)
    # thin holes in one corner: the same regions as without a capacity (regions replace the whole plane)
    corner = _strokes(512, 512, 16, 208, 16, 208)
    job = prepare_inpaint(img, corner, device="cpu", seed=0)
    ref = prepare_inpaint(img, corner, device="cpu", seed=0, params=get_preset("inpaint").replace(tile_capacity=0))
    assert job.regions and job.tiles == ref.tiles
    # a 240 px plane is fitted whole, as in denoising
    assert prepare_inpaint(img[:240, :240], thin[:240, :240], device="cpu", seed=0).tiles is None


def test_a_tile_fit_stops_at_tile_iterations(fast):
    """tile_iterations caps the fits of a tiled plane's tiles; a whole plane and regions keep iterations."""
    from napari_deep_prior.restore.fit import DIPFit

    rng = np.random.default_rng(2)
    img = rng.random((112, 112)).astype(np.float32)
    mask = _strokes(112, 112)
    p = fast.replace(tile_iterations=8)
    out, full = inpaint(img, mask, params=p, tile_size=64, seed=0, return_history=True)
    assert full.tile_iterations_run == [[8, 8, 8, 8]]
    np.testing.assert_array_equal(out[~mask], img[~mask])
    assert inpaint(img, mask, params=p, tile_size=0, seed=0, return_history=True)[1].iterations_run == [20]
    # regions around holes are not tiles: each runs its iterations
    spots = np.zeros((112, 112), bool)
    spots[20:24, 20:40] = True
    spots[90:96, 80:86] = True
    _, regions = inpaint(img, spots, params=p, seed=0, return_history=True)
    assert regions.regions and regions.tile_iterations_run == [[20, 20]]
    known = ~mask
    target = img[..., None]
    for tile, n in ((True, 8), (False, 20)):
        fit = DIPFit(target, known=known, params=p, device=torch.device("cpu"), seed=0, tile=tile)
        assert fit.max_iterations == n
        steps = list(fit.steps())
        assert steps[-1].iteration == steps[-1].iterations == n and fit.result().iterations_run == n
    # a tile with a large hole keeps iterations; scattered holes have their own limit
    blotch = np.ones((112, 112), bool)
    blotch[30:80, 30:80] = False
    assert DIPFit(target, known=blotch, params=p, device="cpu", seed=0, tile=True).max_iterations == 20
    assert DIPFit(target, params=p, device="cpu", seed=0, tile=True).max_iterations == 8  # no mask: denoising
    scattered = rng.random((112, 112)) >= 0.5  # known: half the pixels
    assert DIPFit(target, known=scattered, params=p, device="cpu", seed=0, tile=True).max_iterations == 20
    ps = p.replace(tile_iterations_scattered=12)
    assert DIPFit(target, known=scattered, params=ps, device="cpu", seed=0, tile=True).max_iterations == 12
    assert DIPFit(target, known=scattered, params=ps, device="cpu", seed=0).max_iterations == 20  # not a tile
    assert DIPFit(target, known=known, params=ps, device="cpu", seed=0, tile=True).max_iterations == 8  # thin
    out, full = inpaint(img, ~scattered, params=ps, tile_size=64, seed=0, return_history=True)
    assert full.tile_iterations_run == [[12, 12, 12, 12]]
    np.testing.assert_array_equal(out[scattered], img[scattered])
    # 0: the preset's iterations; above them: no change
    for cap in (0, 50):
        p = fast.replace(tile_iterations=cap)
        assert DIPFit(target, known=known, params=p, device="cpu", seed=0, tile=True).max_iterations == 20


@pytest.mark.parametrize("name", ["tile_iterations", "tile_iterations_scattered"])
@pytest.mark.parametrize("bad", [-1, True, 2.5])
def test_tile_iterations_is_checked(fast, bad, name):
    with pytest.raises((ValueError, TypeError), match=name):
        fast.replace(**{name: bad})


@pytest.mark.parametrize("bad", [-1, True, 2.5])
def test_tile_capacity_is_checked(fast, bad):
    with pytest.raises((ValueError, TypeError), match="tile_capacity"):
        fast.replace(tile_capacity=bad)
