"""Memory and tile planning: will a fit fit on the device, and if not, in which tiles.

:func:`estimate_fit_bytes` predicts the peak memory of one fit; :func:`plan_tiles_for`
decides whether a plane is fitted whole or in overlapping tiles (and whether its history
is kept), raising :class:`~napari_deep_prior.errors.ImageTooLargeError` with the way out
when neither fits.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .. import device as devices
from ..errors import ImageTooLargeError, ParameterError
from ..nets import NetParams, SkipNet, min_padded_side, padded_shape, required_multiple
from .degradations import Degradation
from .fit import _ES_MAX_ELEMENTS, history_iterations
from .presets import DIPParams
from .regions import hole_kind, plan_hole_regions
from .tiles import MIN_TILE, default_overlap, plan_tiles

__all__ = [
    "MemoryPlanError",
    "check_image_bytes",
    "choose_tile_size",
    "estimate_fit_bytes",
    "plan_regions_for",
    "plan_tiles_for",
]

_ESTIMATE_MARGIN = 1.3

#: Hole regions are fitted instead of the whole plane unless the holes grown by the margin cover
#: more than this fraction of it (a dense or scattered mask) ...
REGIONS_DENSE_FRACTION = 0.5
#: ... or the regions cost more than this fraction of a whole-plane fit.
REGIONS_MAX_COST = 0.75


class MemoryPlanError(ParameterError, ImageTooLargeError):
    """An :class:`~napari_deep_prior.errors.ImageTooLargeError` whose way out names parameters.

    Its message is a :class:`~napari_deep_prior.errors.ParameterError` template ("leave
    {tile_size} automatic"), so each front end re-words it in its own vocabulary.
    """


def _bound(limit) -> str:
    """`` (the RAM available)``: what bounds the memory available, when it can be told."""
    return "" if limit is None else f" ({limit.describe()})"


_ACT_CACHE: dict[tuple, float] = {}


def _activation_elements_per_pixel(net: NetParams, channels: int) -> float:
    """Elements of all layer outputs of one forward, per padded input pixel (measured once).

    Counted on the meta device (no memory, no random draw; see :func:`_parameter_count`).
    """
    key = (net, channels)
    if key not in _ACT_CACHE:
        side = min_padded_side(net)
        total = 0

        def hook(_m, _i, out):
            nonlocal total
            total += out.numel()

        with torch.device("meta"):
            model = SkipNet.from_params(net, channels)
            handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
            with torch.no_grad():
                model(torch.zeros(1, net.in_channels, side, side))
        for h in handles:
            h.remove()
        # The up blocks after a nearest-neighbour up-sampling run their convolution outside its
        # module (nets._up_block_nearest): its output, channels_up[i] maps at level i, is not
        # seen by the hooks.
        for i in range(net.depth):
            if model.up_on_coarse_map(i):
                total += net.channels_up[i] * (side >> i) ** 2
        _ACT_CACHE[key] = total / float(side * side)
    return _ACT_CACHE[key]


@functools.lru_cache(maxsize=64)
def _parameter_count(net: NetParams, channels: int) -> int:
    """The network's number of weights, counted on the meta device.

    Nothing is allocated and no random number is drawn: a fit being built in another thread
    draws its weights from torch's global generator (seeded), which must not move under it.
    """

    with torch.device("meta"):
        return sum(p.numel() for p in SkipNet.from_params(net, channels).parameters())


def estimate_fit_bytes(params: DIPParams, height: int, width: int, channels: int) -> int:
    """Estimated peak memory of one fit, in bytes (activations, gradients, optimiser, buffers).

    A seed ensemble (``params.ensemble`` K > 1) holds K networks: K times the activations,
    weights and inputs of one, plus the members' outputs and loss terms.
    """
    hp, wp = padded_shape(params.net, height, width)
    k = params.ensemble
    act = _activation_elements_per_pixel(params.net, channels) * hp * wp
    n_params = _parameter_count(params.net, channels)
    n_img = height * width * channels
    es = min(n_img, _ES_MAX_ELEMENTS) * params.es_window
    frames = len(history_iterations(params)) * n_img
    # activations are kept for backward and their gradients are live at the same time (x2);
    # weights, gradients and two Adam moments (x4, twice for the backtracking copy);
    # target, mask, averages, early-stopping candidate (~6 images); z and its jitter.
    elems = 2.0 * act + 8 * n_params + 6 * n_img + es + 2 * params.net.in_channels * hp * wp
    if k > 1:
        # the other members' activations, weights and inputs, and their outputs, predictions
        # and loss terms (~3 images each).  Measured peak / this estimate on the CPU (default
        # preset, RGB, every large block returned to the OS when freed): 256 px K = 1-4 1.01,
        # 1.05, 0.94, 0.90; 384 px K = 1, 2, 4 0.73, 0.89, 0.81.
        elems += (k - 1) * (2.0 * act + 8 * n_params + 3 * n_img + 2 * params.net.in_channels * hp * wp)
    # The layer outputs miss the functional intermediates (reflection-padded copies inside the
    # convolutions, up-sampled and concatenated tensors) and the allocator's slack: the
    # measured peak of the default network on the CPU was 1.23-1.30x the sum above at
    # 512-2048 px (benchmarks/dip_speed.py --scaling).
    return int(_ESTIMATE_MARGIN * 4 * elems + 4 * frames)


def choose_tile_size(params, height: int, width: int, channels: int, budget_bytes: float) -> int:
    """The largest tile side whose fit fits in ``budget_bytes``.

    Parameters
    ----------
    params : DIPParams
        The fit's parameters (network, history cadence).
    height, width, channels : int
        Image size; the tile never grows beyond the image (rounded up to the multiple).
    budget_bytes : float
        Memory allowed for one tile's fit.

    Returns
    -------
    int
        A multiple of :func:`~.nets.required_multiple`, at least
        ``max(MIN_TILE, min_padded_side)``, such that :func:`~.fit.estimate_fit_bytes` of a
        tile (``min(tile, height)`` x ``min(tile, width)``) is at most ``budget_bytes``.

    Raises
    ------
    ImageTooLargeError
        (a ``ValueError`` and ``MemoryError``) Even the smallest tile does not fit.
    """
    mult = required_multiple(params.net)
    lo = max(MIN_TILE, min_padded_side(params.net))
    lo = -(-lo // mult) * mult
    hi = max(lo, -(-max(int(height), int(width)) // mult) * mult)

    def need(t: int) -> int:
        return estimate_fit_bytes(params, min(t, height), min(t, width), channels)

    smallest = need(lo)
    if smallest > budget_bytes:
        raise ImageTooLargeError(
            f"even the smallest tile ({lo}x{lo} pixels) needs about {smallest / 2**30:.2f} GiB "
            f"but the budget is {max(budget_bytes, 0) / 2**30:.2f} GiB"
        )
    a, b = lo // mult, hi // mult  # need(a * mult) fits; find the largest k in [a, b] that fits
    while a < b:
        m = (a + b + 1) // 2
        if need(m * mult) <= budget_bytes:
            a = m
        else:
            b = m - 1
    return a * mult


def _check_size_arg(value, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer or None, got {value!r}")
    if value < 0:
        raise ParameterError(f"{{{name}}} must be >= 0 (or automatic), got {value}")
    return int(value)


#: Bytes per input value while an image is normalised: two float64 copies and a bool mask.
_NORMALISE_BYTES = 17
#: Bytes per input value of a run: the float32 planes; per result value: the blending sums
#: and the result's float32 copy, float64 scaling and output array (:func:`_tiled_output_bytes`).
_PLANES_BYTES = 4
_RESULT_BYTES = 32


def check_image_bytes(shape, dtype, *, scale: int = 1, device="cpu", params: DIPParams | None = None) -> int:
    """Refuse, from its header alone, an image too large to restore in the memory available.

    For the front ends, before an image file is decoded: the decoded pixels, the working
    copies of a restoration (the normalised planes, the result's buffers) and, on the CPU, the
    fit of the smallest tile must fit in the memory available (the smallest of the RAM
    available, the cgroup's limit and ``ulimit -v``: :func:`~napari_deep_prior.device.cpu_memory_limit`).
    Images that pass may still be processed in tiles or refused by the finer plan of
    :func:`plan_tiles_for`.

    Parameters
    ----------
    shape : tuple of int
        The image's shape, as its header says (any layout: channels count as values).
    dtype : dtype
        The decoded dtype.
    scale : int
        Side of the result per side of the input (the up-scaling factor; 1 otherwise).
    device : str or torch.device
        Where the fits run ("cpu", "cuda", "auto"): on the CPU the smallest tile's fit needs
        host memory too.
    params : DIPParams, optional
        The fit's parameters (default: the "denoise" preset), for the smallest tile's fit.

    Returns
    -------
    int
        The estimated peak bytes of host memory.

    Raises
    ------
    ImageTooLargeError
        With the image's size in pixels and GiB, the memory available and what bounds it.

    Examples
    --------
    >>> check_image_bytes((512, 512, 3), "uint8") < 2**30
    True
    """
    shape = tuple(int(n) for n in shape)
    dtype = np.dtype(dtype)
    if any(n < 0 for n in shape):
        raise ValueError(f"shape {shape} has a negative length")
    n = 1
    for side in shape:
        n *= side  # a Python int: no overflow for a forged header
    decoded = n * dtype.itemsize
    s2 = int(scale) ** 2
    need = decoded + max(_NORMALISE_BYTES * n, _PLANES_BYTES * n + _RESULT_BYTES * n * s2)
    limit = devices.memory_limit(torch.device("cpu"))
    if (limit is None or need <= limit.available) and devices.resolve_device(device).type == "cpu":
        # the smallest tile's fit (measured on a network: only for an image that may fit)
        from .presets import get_preset

        p = params if params is not None else get_preset("denoise")
        mult = required_multiple(p.net)
        side = -(-max(MIN_TILE, min_padded_side(p.net)) // mult) * mult
        need += estimate_fit_bytes(p, side, side, 3)
    if limit is None or need <= limit.available:
        return need
    hw = shape[-3:-1] if len(shape) >= 3 and shape[-1] in (3, 4) else shape[-2:]
    pixels = "x".join(map(str, hw)) + f" {dtype} pixels" if len(hw) == 2 else f"{n} {dtype} values"
    raise ImageTooLargeError(
        f"the image is too large to restore here: {pixels} (shape {shape}) take "
        f"{decoded / 2**30:.1f} GiB decoded and about {need / 2**30:.1f} GiB with the working copies "
        f"of a restoration, but only {limit.available / 2**30:.1f} GiB is available "
        f"({limit.describe()}); crop or downscale the image first (or process a region of it), "
        "or use a machine with more memory"
    )


def _tiled_output_bytes(h: int, w: int, c: int, n_planes: int) -> int:
    """Memory of a tiled run's full-size buffers: blending sums, finished planes, the output."""
    # weighted sum and sum of weights; finished planes; the result's float32 copy, its float64
    # scaling and the output array (up to 8 bytes per value)
    return 4 * h * w * (c + 1) + n_planes * h * w * c * (4 + 4 + 8 + 8)


def plan_tiles_for(
    params: DIPParams,
    degradation: Degradation,
    h: int,
    w: int,
    c: int,
    n_planes: int,
    device,
    tile_size: int | None,
    tile_overlap: int | None,
    capacity: bool = True,
):
    """Decide whether and how to tile a restoration; returns (tiles, overlap, fit_params, notes).

    Memory is planned for the result's planes (the input's scaled by the degradation's factor);
    ``tiles`` are boxes of the input planes and ``tile_size`` / ``tile_overlap`` are in input
    pixels.  The degradation may refuse the plan (a tile entirely inside a hole).  Raises
    :class:`~napari_deep_prior.errors.ImageTooLargeError` when neither the whole plane nor
    tiles fit in memory.

    The preset's ``tile_capacity`` applies unless ``capacity`` is False, and for inpainting
    only to thin or scattered holes (:func:`~.regions.hole_kind`), not to large ones: a large
    hole cut by a tile's edge loses the context beyond it, and tiles were measured on thin holes
    (painted strokes: Boat at 512 px with 5 % strokes, 16 tiles of 160 with ``tile_iterations``
    800 against the whole plane) and scattered ones (half the pixels missing: Barbara and Man at
    512 px, House and Monarch at 256 px, tiles of 160 with ``tile_iterations_scattered`` 1200;
    README).
    """
    tile_size = _check_size_arg(tile_size, "tile_size")
    tile_overlap = _check_size_arg(tile_overlap, "tile_overlap")
    s = degradation.scale
    kind = _holes_kind(degradation) if params.tile_capacity and capacity else ""
    if params.tile_capacity and not (capacity and kind != "large"):
        params = params.replace(tile_capacity=0)  # memory alone decides
    tiles, overlap, fit_params, notes = _plan_tiles(
        params,
        h * s,
        w * s,
        c,
        n_planes,
        device,
        None if tile_size is None else tile_size * s,
        None if tile_overlap is None else tile_overlap * s,
        holes_kind=kind,
    )
    if tiles is None:
        return tiles, overlap, fit_params, notes
    tile = max(max(y1 - y0, x1 - x0) for y0, y1, x0, x1 in tiles)
    if s > 1:  # the same plan on the input's grid
        tile, overlap = tile // s, -(-overlap // s)
        tiles = plan_tiles(h, w, tile, overlap)
    degradation.check_tiles(tiles, tile)
    return tiles, overlap, fit_params, notes


def _holes_kind(degradation: Degradation) -> str:
    """:func:`~.regions.hole_kind` of the degradation's holes ("" without holes)."""
    holes = degradation.holes()
    return "" if holes is None else hole_kind(holes)


def plan_regions_for(
    params: DIPParams,
    degradation: Degradation,
    h: int,
    w: int,
    c: int,
    n_planes: int,
    device,
    tiles: list | None,
    fit_params: DIPParams,
) -> tuple[list, list[str]] | None:
    """Boxes around the degradation's holes to fit instead of the whole plane, or None.

    For a degradation with :meth:`~.degradations.Degradation.holes` (inpainting) whose tile
    size was left automatic: :func:`~.regions.plan_hole_regions` with the network's sizes
    (boxes a multiple of its required multiple, at least its smallest input and no larger
    than the memory plan's ``tiles``).  None (keep the plan of
    :func:`plan_tiles_for`) when the holes are dense, when a box would have no known pixel in
    some plane, or when the blending buffers do not fit in memory.

    Returns
    -------
    (boxes, notes) or None
        ``boxes``: (y0, y1, x0, x1) in input pixels, the job's tile plan; ``notes``: one line
        saying how many regions and how much of the image they cover.
    """
    if degradation.scale != 1:
        return None
    holes = degradation.holes()
    if holes is None:
        return None
    mult = required_multiple(params.net)
    min_side = -(-max(MIN_TILE, min_padded_side(params.net)) // mult) * mult
    max_side = None if tiles is None else max(max(y1 - y0, x1 - x0) for y0, y1, x0, x1 in tiles)
    boxes = plan_hole_regions(
        holes,
        multiple=mult,
        min_side=min_side,
        max_side=max_side,
        dense_fraction=REGIONS_DENSE_FRACTION,
        max_cost=REGIONS_MAX_COST,
    )
    if not boxes:
        return None
    side = max(max(y1 - y0, x1 - x0) for y0, y1, x0, x1 in boxes)
    if tiles is None:  # the whole plane fits; so must a region's fit with the blending buffers
        limit = devices.memory_limit(device)
        if limit is not None:
            bh, bw = max(y1 - y0 for y0, y1, _, _ in boxes), max(x1 - x0 for _, _, x0, x1 in boxes)
            hist_bytes = 2 * len(history_iterations(fit_params)) * n_planes * h * w * c * 4
            need = estimate_fit_bytes(fit_params, bh, bw, c) + _tiled_output_bytes(h, w, c, n_planes) + hist_bytes
            if need > 0.9 * limit.available:
                return None
    try:
        degradation.check_tiles(boxes, side)
    except ParameterError:
        return None  # a region without known pixels in some plane: the usual plan
    share = sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in boxes) / float(h * w)
    n = len(boxes)
    note = f"fitting {n} region{'s' if n > 1 else ''} around the holes ({100 * share:.0f} % of the image)"
    return boxes, [note]


def _plan_tiles(
    params: DIPParams,
    h: int,
    w: int,
    c: int,
    n_planes: int,
    device,
    tile_size: int | None,
    tile_overlap: int | None,
    holes_kind: str = "",
):
    """Decide whether and how to tile; returns (tiles, overlap, fit_params, notes).

    ``holes_kind``: :func:`~.regions.hole_kind` of an inpainting's holes, for the capacity's note
    (a tile's step limit, ``DIPParams.tile_iterations`` or ``tile_iterations_scattered``).

    Raises ImageTooLargeError when neither the whole plane nor tiles fit in memory.
    """
    tile_size = _check_size_arg(tile_size, "tile_size")
    tile_overlap = _check_size_arg(tile_overlap, "tile_overlap")
    mult = required_multiple(params.net)
    min_tile = max(MIN_TILE, min_padded_side(params.net))
    min_tile = -(-min_tile // mult) * mult
    if tile_size:
        if tile_size < min_tile:
            raise ParameterError(
                f"{{tile_size}} {tile_size} is too small for this network: tiles need at least "
                f"{min_tile} pixels a side (or leave {{tile_size}} automatic; 0: no tiles)"
            )
        tile_size = -(-tile_size // mult) * mult
    n_frames = len(history_iterations(params))
    hist_bytes = 2 * n_frames * n_planes * h * w * c * 4  # assembled history
    limit = devices.memory_limit(device)
    avail = None if limit is None else limit.available
    try:
        need = estimate_fit_bytes(params, h, w, c) + hist_bytes
    except (MemoryError, RuntimeError) as exc:  # measuring the network allocates a little
        if not isinstance(exc, MemoryError) and "allocate" not in str(exc).lower():
            raise
        raise ImageTooLargeError(
            f"no memory is left even to plan the fit: {0 if avail is None else avail / 2**30:.1f} GiB is "
            f"available on {device}{_bound(limit)}; free memory or raise the limit"
        ) from exc
    budget = None if avail is None else 0.9 * avail
    whole_fits = budget is None or need <= budget
    forced_whole = tile_size is not None and tile_size >= max(h, w)
    capacity = None  # tiles for the network's capacity (not for memory)
    if tile_size is None and whole_fits:
        capacity = capacity_tile(params, h, w, device, min_tile, mult, tile_overlap)
    if capacity is None and (tile_size == 0 or forced_whole or (tile_size is None and whole_fits)):
        if not whole_fits:
            raise MemoryPlanError(
                f"a {h}x{w}x{c} fit with this preset needs about {need / 2**30:.1f} GiB but only "
                f"{avail / 2**30:.1f} GiB is available on {device}{_bound(limit)}; process it in tiles "
                "(leave {tile_size} automatic, or give a tile side), crop or downscale the "
                "image, choose a lighter preset, turn the history off ({history_every} 0) or use a GPU"
            )
        return None, None, params, []

    out_bytes = _tiled_output_bytes(h, w, c, n_planes)
    no_hist = params.replace(history_every=0) if n_frames else params
    if tile_size is None and capacity is None:
        free = budget - out_bytes
        keep_hist = n_frames > 0 and hist_bytes <= 0.5 * free
        fit_params = params if keep_hist else no_hist
        try:
            tile = choose_tile_size(fit_params, h, w, c, free - (hist_bytes if keep_hist else 0))
        except ImageTooLargeError as exc:
            raise ImageTooLargeError(
                f"a {h}x{w}x{c} fit with this preset needs about {need / 2**30:.1f} GiB but only "
                f"{avail / 2**30:.1f} GiB is available on {device}{_bound(limit)}, and processing it in tiles "
                f"does not fit either ({exc}; the {n_planes}-plane output buffers need "
                f"{out_bytes / 2**30:.2f} GiB); crop or downscale the image, choose a lighter "
                "preset or use a device with more memory"
            ) from None
        cap = _capacity_side(params, device, min_tile, mult)
        if cap is not None:  # memory may allow larger tiles than the network fits well
            tile = min(tile, cap)
    else:
        tile = tile_size or capacity
        keep_hist = n_frames > 0
        fit_params = params
        if budget is not None:
            th, tw = min(tile, h), min(tile, w)
            keep_hist = n_frames > 0 and out_bytes + hist_bytes + estimate_fit_bytes(params, th, tw, c) <= budget
            fit_params = params if keep_hist else no_hist
            tile_need = estimate_fit_bytes(fit_params, th, tw, c) + out_bytes
            if tile_need > budget:
                raise MemoryPlanError(
                    f"tiles of {tile}x{tile} pixels need about {tile_need / 2**30:.2f} GiB with the "
                    f"output buffers but only {avail / 2**30:.1f} GiB is available on {device}{_bound(limit)}; "
                    "give a smaller {tile_size} or leave it automatic"
                )
    if tile_size is None:
        tile = _shrink_tile(tile, h, w, min_tile, mult, tile_overlap)
    overlap = default_overlap(tile) if tile_overlap is None else tile_overlap
    if overlap >= tile:
        raise ParameterError(f"{{tile_overlap}} {overlap} must be smaller than the tile side ({tile})")
    tiles = plan_tiles(h, w, tile, overlap)
    notes = []
    if capacity is not None:
        steps = params.tile_step_limit(holes_kind)
        each = f", each for at most {steps} steps" if 0 < steps < params.iterations else ""
        cost = "in up to about 1.6 times the time" if holes_kind == "scattered" else "in about the same time or less"
        notes.append(
            f"fitted in {len(tiles)} overlapping tiles of {tile}x{tile} pixels{each}: this preset's network "
            f"restores planes of {h}x{w} pixels better in tiles ({cost} on a CPU); a tile size of 0 "
            "(tile_size=0, --tile 0) fits each plane whole"
        )
    if n_frames and not keep_hist:
        notes.append(
            f"history dropped: the image is processed in {len(tiles)} tiles of {tile}x{tile} "
            f"pixels and its {n_frames}-frame history (about {hist_bytes / 2**30:.1f} GiB) does "
            "not fit in the memory available; crop the image to get a history, or turn the "
            "history off to silence this note"
        )
    return tiles, overlap, fit_params, notes


#: The capacity rule (``DIPParams.tile_capacity``) tiles planes whose larger side is at least
#: this many times the capacity (160 px: from 256 px) in tiles of the capacity ...
CAPACITY_MIN_SIDE = 1.6
#: ... when the tiles' pixels, overlaps counted twice, are at most this many times the plane's
#: (512 px: 16 tiles of 160, 1.56x) ...
CAPACITY_MAX_AREA = 1.6
#: ... else in the smallest larger tiles that are, up to this many times the capacity (480 px:
#: 9 tiles of 192, 1.44x), else in those of them with the fewest pixels.
CAPACITY_MAX_GROW = 1.5
#: Smaller planes of at least this many pixels are split in 2 x 2 tiles (at most 2 a side) ...
CAPACITY_SPLIT_PIXELS = 256 * 256
#: ... when those tiles' pixels are at most this many times the plane's (256 px: 4 tiles of 160,
#: 1.56x).
CAPACITY_SPLIT_MAX_AREA = 1.6


def _capacity_side(params: DIPParams, device, min_tile: int, mult: int) -> int | None:
    """The largest tile side the preset's ``tile_capacity`` allows on ``device`` (a multiple of
    ``mult``, at least ``min_tile``), or None: no capacity, or not a CPU."""
    cap = params.tile_capacity
    if not cap or getattr(device, "type", str(device)) != "cpu":
        return None
    return max(min_tile, cap // mult * mult)


def capacity_tile(params: DIPParams, h: int, w: int, device, min_tile: int, mult: int, overlap: int | None):
    """The tile side the capacity rule gives a ``h`` x ``w`` plane, or None (fit it whole).

    A preset with ``tile_capacity`` T (the default ``denoise`` network: 160) fits planes of at
    least ``CAPACITY_MIN_SIDE * T`` pixels a side on a CPU in overlapping tiles of T pixels a
    side when they cost at most ``CAPACITY_MAX_AREA`` times the plane's pixels, else in the
    smallest larger side (a multiple of ``mult``, at most ``CAPACITY_MAX_GROW * T``) whose tiles
    do, else in the side of those whose tiles have the fewest pixels: such a plane is never
    fitted whole (tiles of at most 288 px within 1.4x the pixels left a 640 px plane whole,
    between the thresholds).  Measured
    at 512 px, one thread (``benchmarks/dip_tiles.py --compare``, five images): the whole-plane
    fit of the thin default network came out 0.31-0.73 dB below 4 tiles of 288 px (three of the
    five had not reached the noise-level stop after 1600-2400 steps); 16 tiles of 160 px came out
    above those 4 on all five images tried (+0.04 to +0.38 dB, Baboon +2.65; +0.73 on the mean)
    in 0.91x the time on the mean: a 160 px tile stops after about half the steps of a 288 px one,
    so fewer steps a pixel outweigh the wider overlaps (README).  Smaller planes of at least
    ``CAPACITY_SPLIT_PIXELS`` are split in 2 x 2 tiles (the smallest side that
    needs no more than 2 a side, at most T, at most ``CAPACITY_SPLIT_MAX_AREA`` times the
    plane's pixels): all nine Set9 images
    at 256 px in 4 tiles of 160 px came out 0.05-0.48 dB (0.35 on the mean) above their
    whole-plane fits, in less time (F16 159 s against 187, kodim03 146 against 178; one thread,
    two processes on 2 cores).  GPUs fit planes whole: on an H200 (steps
    replayed as CUDA graphs) the nine full-size Set9 images came out at 30.01 dB on the mean in
    7-26 s an image alone; the same 4 tiles of 288 px gave 0.26-0.77 dB more on the five images
    tried (as on the CPU), but in 28-55 s an image with three such runs sharing the GPU (alone
    not measured), since the tiles run one after another.
    """
    cap = _capacity_side(params, device, min_tile, mult)
    if cap is None:
        return None
    if max(h, w) >= CAPACITY_MIN_SIDE * params.tile_capacity:
        # tiles of the capacity; where their overlaps would cost more than CAPACITY_MAX_AREA (a
        # side just past a whole number of tiles), the next larger side whose tiles do not, up to
        # CAPACITY_MAX_GROW times the capacity; failing that, the side of those with the fewest
        # pixels in all (never the whole plane: it is both slower and worse)
        fewest = None
        for t in range(cap, int(CAPACITY_MAX_GROW * cap) + 1, mult):
            ov = default_overlap(t) if overlap is None else overlap
            if ov >= t:
                continue
            boxes = plan_tiles(h, w, t, ov)
            if len(boxes) < 2:
                break
            area = _boxes_area(boxes)
            if area <= CAPACITY_MAX_AREA * h * w:
                return t
            if fewest is None or area < fewest[0]:
                fewest = (area, t)
        if fewest is not None:
            return fewest[1]
    # smaller planes (and any the sides above could not split, e.g. with an overlap as wide as the
    # tiles): 2 x 2 tiles of at most the capacity
    t = _split_tile(h, w, min_tile, mult, overlap) if h * w >= CAPACITY_SPLIT_PIXELS else None
    return t if t is not None and t <= cap else None


def _boxes_area(boxes) -> int:
    """Pixels of all tiles together (overlaps counted once per tile)."""
    return sum((b[1] - b[0]) * (b[3] - b[2]) for b in boxes)


def _tile_counts(t: int, h: int, w: int, overlap: int | None) -> tuple[int, int] | None:
    """Tiles of side ``t`` along each axis of a ``h`` x ``w`` plane (None: the overlap is too wide)."""
    ov = default_overlap(t) if overlap is None else overlap
    if ov >= t:
        return None
    return tuple(1 if n <= t else 1 + -(-(n - t) // (t - ov)) for n in (h, w))


def _split_tile(h: int, w: int, min_tile: int, mult: int, overlap: int | None) -> int | None:
    """The smallest tile side (a multiple of ``mult``) that splits the plane in at most 2 x 2
    tiles, at least 2 in all, at most ``CAPACITY_SPLIT_MAX_AREA`` times its pixels; else None."""
    t = -(-max(min_tile, mult) // mult) * mult
    while t < max(h, w):
        c = _tile_counts(t, h, w, overlap)
        if c is not None and max(c) <= 2:
            ov = default_overlap(t) if overlap is None else overlap
            boxes = plan_tiles(h, w, t, ov)
            return t if len(boxes) >= 2 and _boxes_area(boxes) <= CAPACITY_SPLIT_MAX_AREA * h * w else None
        t += mult
    return None


def _shrink_tile(tile: int, h: int, w: int, min_tile: int, mult: int, overlap: int | None) -> int:
    """The smallest tile side (a multiple of ``mult``) that needs no more tiles than ``tile``.

    Memory decides the largest side; tiles that just cover the image waste less work on
    overlaps (a 4096 px square with memory for 2048 px tiles needs 3 x 3 tiles either way:
    2048 px tiles overlap by 1024 px, 1504 px tiles by 188 px, with 54 % of the pixels).
    """
    target = _tile_counts(tile, h, w, overlap)
    best = tile
    t = tile - mult
    while t >= min_tile:
        c = _tile_counts(t, h, w, overlap)
        if c is None or c[0] > target[0] or c[1] > target[1]:
            break
        best = t
        t -= mult
    return best
