"""Hole-aware regions: fit only the neighbourhoods of an inpainting's holes.

A few painted strokes on a large scan need no fit of the whole image: every hole pixel only
needs its own neighbourhood of known pixels as context.  :func:`plan_hole_regions` covers the
holes with boxes (each hole pixel at least ``margin`` pixels inside its box, unless the box
meets the image border), sized as the network wants them and merged while merging saves work;
the job fits each box as a tile and blends overlapping boxes as tiles are blended.  Pixels
outside every box are known pixels and keep their input values.  For a dense or scattered mask
(e.g. 50 % of the pixels missing at random: the holes' neighbourhoods cover more than
``dense_fraction`` of the image), or when the boxes would cost more than ``max_cost`` of a
whole-image fit, it returns None: fit the whole image.  Pure numpy and scipy.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "MIN_MARGIN",
    "REGION_OVERHEAD_PIXELS",
    "LARGE_MIN_MEAN_DISTANCE",
    "SCATTERED_MAX_MEAN_DISTANCE",
    "SCATTERED_MIN_FRACTION",
    "default_margin",
    "plan_hole_regions",
    "regions_cost",
    "hole_kind",
    "large_holes",
    "scattered_holes",
]

Box = tuple[int, int, int, int]

#: Fixed cost of one more fit, as an area in pixels: a step of a small fit is not as cheap as its
#: area says (per-layer overheads of the network), so two nearby boxes are merged when the box
#: around both is at most this much larger than the two apart.  Measured with the "inpaint"
#: preset's net on one CPU thread: a step costs about 0.01-0.05 s + 1.5-1.75e-5 s per pixel
#: (64 px 0.11 s, 128 px 0.29 s, 256 px 1.16 s), i.e. the overhead of 600-3000 pixels.
REGION_OVERHEAD_PIXELS = 32 * 32

#: Smallest known context around a hole, in pixels.  Boxes are grown to the network's multiple
#: (32 for the default nets) and at least its smallest input (64), so a small isolated hole gets
#: about 30 pixels of context whatever this is; it matters along long holes cut into cells, whose
#: boxes cost about 8 * margin pixels per pixel of length (32 would double that).  To be measured
#: against the whole-image fit (benchmarks/dip_inpaint_regions.py).
MIN_MARGIN = 16


def default_margin(thickness: float, min_margin: int = MIN_MARGIN) -> int:
    """Known context kept around a hole of ``thickness`` pixels: ``max(min_margin, 2 * thickness)``.

    A hole is filled from its surroundings; a thick hole needs a wider ring of known pixels for
    the network to learn what continues across it (twice its thickness), a thin one at least
    ``min_margin`` (:data:`MIN_MARGIN`).
    """
    return int(max(int(min_margin), int(np.ceil(2.0 * float(thickness)))))


def _sized(a0: int, a1: int, length: int, multiple: int, min_side: int) -> tuple[int, int]:
    """The span ``[a0, a1)`` grown (centred, kept inside ``[0, length)``) to a side the net takes whole.

    The side becomes a multiple of ``multiple`` and at least ``min_side``: the network pads its
    input to such a side anyway, so known pixels are free context.  An axis shorter than that
    side is taken whole.
    """
    side = max(int(min_side), -(-(a1 - a0) // multiple) * multiple)
    if side >= length:
        return 0, length
    a0 -= (side - (a1 - a0)) // 2
    a0 = min(max(a0, 0), length - side)
    return a0, a0 + side


def _padded(n, multiple: int, min_side: int):
    """The network's input side for a side of ``n`` pixels (elementwise)."""
    return np.maximum(min_side, -(-np.asarray(n) // multiple) * multiple)


def regions_cost(boxes, multiple: int = 1, min_side: int = 1) -> int:
    """The work of fitting ``boxes``: their padded areas plus :data:`REGION_OVERHEAD_PIXELS` each."""
    b = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    hp = _padded(b[:, 1] - b[:, 0], multiple, min_side)
    wp = _padded(b[:, 3] - b[:, 2], multiple, min_side)
    return int((hp * wp).sum() + REGION_OVERHEAD_PIXELS * len(b))


def _cores(labels: np.ndarray, objects, cells: list[int]) -> list[tuple[int, Box]]:
    """(component index, bounding box) of each component, cut into cells of ``cells[i]`` pixels.

    A long stroke's bounding box is mostly known pixels: cut into square cells, each cell's
    part of the stroke gets its own small box.
    """
    out = []
    for idx, sl in enumerate(objects):
        if sl is None:
            continue
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        cell = cells[idx]
        if y1 - y0 <= cell and x1 - x0 <= cell:
            out.append((idx, (y0, y1, x0, x1)))
            continue
        comp = labels[y0:y1, x0:x1] == idx + 1
        for cy in range(0, y1 - y0, cell):
            for cx in range(0, x1 - x0, cell):
                part = comp[cy : cy + cell, cx : cx + cell]
                rows = np.flatnonzero(part.any(axis=1))
                if not len(rows):
                    continue
                cols = np.flatnonzero(part.any(axis=0))
                out.append(
                    (idx, (y0 + cy + rows[0], y0 + cy + rows[-1] + 1, x0 + cx + cols[0], x0 + cx + cols[-1] + 1))
                )
    return out


def _merge(boxes: list[Box], h: int, w: int, multiple: int, min_side: int, max_side: int | None) -> list[Box]:
    """Merge pairs of boxes, the largest saving first, while the box around both costs less."""
    b = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    while len(b) > 1:
        y0 = np.minimum(b[:, None, 0], b[None, :, 0])
        y1 = np.maximum(b[:, None, 1], b[None, :, 1])
        x0 = np.minimum(b[:, None, 2], b[None, :, 2])
        x1 = np.maximum(b[:, None, 3], b[None, :, 3])
        # the union, sized as a box is (its side a multiple, at least min_side, or the whole axis)
        hu = np.minimum(_padded(y1 - y0, multiple, min_side), h)
        wu = np.minimum(_padded(x1 - x0, multiple, min_side), w)
        one = _padded(b[:, 1] - b[:, 0], multiple, min_side) * _padded(b[:, 3] - b[:, 2], multiple, min_side)
        both = _padded(hu, multiple, min_side) * _padded(wu, multiple, min_side)
        saving = one[:, None] + one[None, :] + REGION_OVERHEAD_PIXELS - both
        if max_side is not None:
            saving[(hu > max_side) | (wu > max_side)] = -1
        np.fill_diagonal(saving, -1)
        i, j = np.unravel_index(int(np.argmax(saving)), saving.shape)
        if saving[i, j] < 0:
            break
        ys = _sized(int(y0[i, j]), int(y1[i, j]), h, multiple, min_side)
        xs = _sized(int(x0[i, j]), int(x1[i, j]), w, multiple, min_side)
        keep = np.ones(len(b), dtype=bool)
        keep[[i, j]] = False
        b = np.concatenate([b[keep], np.array([[ys[0], ys[1], xs[0], xs[1]]], dtype=np.int64)])
    return [tuple(int(v) for v in row) for row in b]


def plan_hole_regions(
    holes,
    *,
    margin: int | None = None,
    min_margin: int = MIN_MARGIN,
    multiple: int = 32,
    min_side: int = 64,
    max_side: int | None = None,
    dense_fraction: float = 0.5,
    max_cost: float = 0.75,
) -> list[Box] | None:
    """Boxes around the holes of a mask that, fitted alone, restore every hole pixel.

    Parameters
    ----------
    holes : ndarray of bool, shape (H, W) or (P, H, W)
        True where a pixel must be filled; a stack's planes are united (one plan for all).
    margin : int, optional
        Known context around every hole pixel, in pixels.  Default: per connected hole,
        :func:`default_margin` of its thickness (twice its largest inscribed radius), at least
        ``min_margin``.
    min_margin : int
        Smallest default margin (:data:`MIN_MARGIN`).
    multiple, min_side : int
        Box sides are grown to a multiple of ``multiple`` and at least ``min_side`` (what the
        network pads its input to anyway; an axis shorter than that is taken whole).
    max_side : int, optional
        Largest box side (the memory plan's tile side): longer holes are cut into cells and
        boxes are not merged beyond it.
    dense_fraction : float
        Return None when the holes grown by ``min_margin`` cover more than this fraction of
        the image (a dense or scattered mask, e.g. 50 % of the pixels missing at random).
    max_cost : float
        Return None when the boxes would cost more than this fraction of a whole-image fit
        (:func:`regions_cost`): saving less than a quarter of the work is not worth the extra
        fits and seams.

    Returns
    -------
    list of (y0, y1, x0, x1) or None
        Boxes in row-major order of their top-left corner; every hole pixel lies in a box, at
        least its margin away from the box's sides that are not on the image border.  None:
        fit the whole image.  An empty list when there is no hole.

    Examples
    --------
    >>> holes = np.zeros((512, 512), bool)
    >>> holes[100:104, 50:90] = holes[400:420, 400:410] = True
    >>> plan_hole_regions(holes)
    [(70, 134, 28, 124), (378, 442, 373, 437)]
    """
    from scipy import ndimage

    holes = np.asarray(holes, dtype=bool)
    if holes.ndim == 3:
        holes = holes.any(axis=0)
    if holes.ndim != 2:
        raise ValueError(f"holes must be (H, W) or (P, H, W), got shape {holes.shape}")
    if not 0 < dense_fraction <= 1:
        raise ValueError(f"dense_fraction must be in (0, 1], got {dense_fraction}")
    if not max_cost > 0:
        raise ValueError(f"max_cost must be > 0, got {max_cost}")
    h, w = holes.shape
    if not holes.any():
        return []
    multiple, min_side, min_margin = int(multiple), int(min_side), int(min_margin)
    if margin is not None:
        min_margin = int(margin)
    # a dense or scattered mask: the holes' neighbourhoods alone cover too much of the image
    grown = ndimage.maximum_filter(holes, size=2 * min_margin + 1, mode="constant")
    if grown.mean() > dense_fraction:
        return None
    labels, n = ndimage.label(holes, structure=np.ones((3, 3), dtype=bool))
    objects = ndimage.find_objects(labels)
    if margin is None:
        radius = ndimage.maximum(ndimage.distance_transform_edt(holes), labels, np.arange(1, n + 1))
        margins = [default_margin(2 * r, min_margin) for r in np.atleast_1d(radius)]
    else:
        margins = [int(margin)] * n
    if max_side is not None:
        # a box is a cell plus a margin on each side: keep it within max_side
        margins = [min(m, max(0, (int(max_side) - multiple) // 2)) for m in margins]
    # cells of twice the margin: a thin line of length L costs about 8 * margin * L pixels, the least
    cells = [max(multiple, 2 * m) for m in margins]
    if max_side is not None:
        cells = [max(1, min(c, int(max_side) - 2 * m)) for c, m in zip(cells, margins, strict=True)]
    boxes = []
    for idx, (y0, y1, x0, x1) in _cores(labels, objects, cells):
        m = margins[idx]
        ys = _sized(max(0, y0 - m), min(h, y1 + m), h, multiple, min_side)
        xs = _sized(max(0, x0 - m), min(w, x1 + m), w, multiple, min_side)
        boxes.append((ys[0], ys[1], xs[0], xs[1]))
    boxes = _merge(sorted(set(boxes)), h, w, multiple, min_side, max_side)
    if max_side is not None and any(max(y1 - y0, x1 - x0) > max_side for y0, y1, x0, x1 in boxes):
        return None  # the network's smallest input does not fit in max_side
    whole = regions_cost([(0, h, 0, w)], multiple, min_side)
    if regions_cost(boxes, multiple, min_side) > max_cost * whole:
        return None
    return sorted(boxes, key=lambda b: (b[0], b[2]))


#: A mask is *scattered* (missing pixels spread over the image, e.g. half of them missing at
#: random) when its holes cover at least this fraction of the image ...
SCATTERED_MIN_FRACTION = 0.2
#: ... and a hole pixel lies on average at most this far (in pixels) from a known one.  Measured
#: on the benchmark masks (benchmarks/dip_inpaint_speed.py): 50 % missing at random 1.03 (at 128
#: and 256 px); text over kate 1.41-1.59 but 4-7 % of the image; painted strokes 2.15; vase 8.1,
#: library 6-9.
SCATTERED_MAX_MEAN_DISTANCE = 1.5


def _mean_distances(holes) -> list[tuple[float, float]]:
    """(hole fraction, mean distance in pixels from a hole pixel to the nearest known one) of each
    plane of (H, W) or (P, H, W) holes that has holes (a plane without known pixels: infinite)."""
    from scipy import ndimage

    holes = np.asarray(holes, dtype=bool)
    if holes.ndim not in (2, 3):
        raise ValueError(f"holes must be (H, W) or (P, H, W), got shape {holes.shape}")
    out = []
    for h in holes.reshape(-1, *holes.shape[-2:]):
        if h.any():
            d = math.inf if h.all() else float(ndimage.distance_transform_edt(h)[h].mean())
            out.append((float(h.mean()), d))
    return out


def scattered_holes(holes) -> bool:
    """Whether a mask's holes are scattered pixels rather than shapes (scratches, text, regions).

    Holes of (H, W), or of each plane of (P, H, W) that has holes, that cover at least
    :data:`SCATTERED_MIN_FRACTION` of the image, with a mean distance from a hole pixel to the
    nearest known pixel of at most :data:`SCATTERED_MAX_MEAN_DISTANCE`.  The hole-change stop
    reads such masks with its own ratio (``DIPParams.es_hole_change_scattered``), and the
    blended fill (``DIPParams.fill_blend``) leaves them alone.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> scattered_holes(rng.random((64, 64)) < 0.5)
    True
    >>> box = np.zeros((64, 64), bool); box[20:40, 20:40] = True
    >>> scattered_holes(box)
    False
    """
    return hole_kind(holes) == "scattered"


#: A mask's holes are *large* (regions, blotches, a missing corner: not scratches, text, strokes
#: or scattered pixels) when a hole pixel lies on average at least this far (in pixels) from a
#: known one, in every plane that has holes.  Benchmark masks: text over kate 1.41-1.59, painted
#: strokes 2.15, vase 8.1, library 6.0, seeded ellipses covering 8 % of a 256 px crop 5.0-7.2.
LARGE_MIN_MEAN_DISTANCE = 4.0


def large_holes(holes) -> bool:
    """Whether a mask's holes are large regions rather than thin shapes or scattered pixels.

    Holes of (H, W), or of each plane of (P, H, W) that has holes, whose pixels lie on average at
    least :data:`LARGE_MIN_MEAN_DISTANCE` pixels from the nearest known pixel.  The hole-change
    stop reads such masks with its own ratio (``DIPParams.es_hole_change_large``), and their fits
    have a step limit of their own (``iterations_large``): the network's fill of a large hole
    peaks early and then drifts while the known pixels are still being fitted.

    Examples
    --------
    >>> box = np.zeros((64, 64), bool); box[15:45, 15:45] = True
    >>> large_holes(box)
    True
    >>> scratch = np.zeros((64, 64), bool); scratch[30:33, 5:60] = True
    >>> large_holes(scratch)
    False
    """
    return hole_kind(holes) == "large"


def hole_kind(holes) -> str:
    """The kind of a mask's holes: "scattered" (:func:`scattered_holes`), "large"
    (:func:`large_holes`) or "" (thin shapes such as scratches, text and strokes, a mix of kinds
    across planes, or no holes); one distance transform of each plane."""
    planes = _mean_distances(holes)
    if not planes:
        return ""
    if all(frac >= SCATTERED_MIN_FRACTION and dist <= SCATTERED_MAX_MEAN_DISTANCE for frac, dist in planes):
        return "scattered"
    if all(dist >= LARGE_MIN_MEAN_DISTANCE for _, dist in planes):
        return "large"
    return ""
