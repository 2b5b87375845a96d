"""Overlapping tiles for images whose whole-plane fit does not fit in memory.

A plane too large for one Deep Image Prior fit is cut into overlapping square tiles
(:func:`plan_tiles`); each tile is fitted on its own and the estimates are blended with
smooth weights (:func:`blend_window`) that fall to almost zero at a tile's inner edges and
sum to one across every overlap, so no seam shows (:class:`TileBlender`).  Sides of a tile
that lie on the image border keep full weight.  Pure numpy: which tile side fits in memory
is decided in :mod:`.planning`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "MIN_TILE",
    "TileBlender",
    "blend_window",
    "default_overlap",
    "plan_tiles",
]

#: Smallest tile side accepted (smaller tiles carry too little context for a fit).
MIN_TILE = 32

#: Smallest blending weight inside a tile (keeps the sum of weights away from zero).
_EPS = 1e-6

Box = tuple[int, int, int, int]


def _check_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis: as few tiles as the overlap allows, spread
    evenly from 0 to ``length - tile`` (so no pair overlaps much more than the others)."""
    if length <= tile:
        return [0]
    n = 1 + -(-(length - tile) // (tile - overlap))  # ceil((length - tile) / stride) + 1
    span = length - tile
    return [(k * span) // (n - 1) for k in range(n)]


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Box]:
    """Overlapping tiles covering a ``height`` x ``width`` image.

    Parameters
    ----------
    height, width : int
        Image size in pixels.
    tile : int
        Tile side (at least :data:`MIN_TILE`).  Along an axis shorter than ``tile`` a tile
        spans the whole axis.
    overlap : int
        Minimum overlap of neighbouring tiles, ``0 <= overlap < tile``.

    Returns
    -------
    list of (y0, y1, x0, x1)
        Tiles in row-major order; ``image[y0:y1, x0:x1]`` is a tile.  Every tile has the
        full side ``min(tile, height)`` x ``min(tile, width)``; along each axis the fewest
        tiles whose neighbours overlap by at least ``overlap`` are spread evenly from one
        border to the other.

    Raises
    ------
    ValueError
        Non-positive image size, ``tile < MIN_TILE`` or ``overlap`` outside ``[0, tile)``.

    Examples
    --------
    >>> plan_tiles(100, 60, 64, 16)
    [(0, 64, 0, 60), (36, 100, 0, 60)]
    """
    height, width = _check_int(height, "height"), _check_int(width, "width")
    tile, overlap = _check_int(tile, "tile"), _check_int(overlap, "overlap")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if tile < MIN_TILE:
        raise ValueError(f"tile side must be at least {MIN_TILE} pixels, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be >= 0 and smaller than the tile side ({tile}), got {overlap}")
    ys = _axis_starts(height, tile, overlap)
    xs = _axis_starts(width, tile, overlap)
    th, tw = min(tile, height), min(tile, width)
    return [(y, y + th, x, x + tw) for y in ys for x in xs]


def default_overlap(tile: int) -> int:
    """Default overlap for a tile side: ``max(16, tile // 8)`` rounded up to even (and < tile / 2)."""
    ov = max(16, int(tile) // 8)
    ov += ov % 2
    return min(ov, (int(tile) - 1) // 2 // 2 * 2)


def _ramp(n: int) -> np.ndarray:
    """Raised-cosine ramp of ``n`` samples rising from ~0 to ~1.

    ``_ramp(n)[t] + _ramp(n)[n - 1 - t] == 1``: a rising and a falling ramp over the same
    overlap sum to one.
    """
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    return 0.5 - 0.5 * np.cos(np.pi * t)


def _axis_window(length: int, before: int, after: int, edge_before: bool, edge_after: bool) -> np.ndarray:
    w = np.ones(length, dtype=np.float64)
    before = 0 if edge_before else min(max(int(before), 0), length)
    after = 0 if edge_after else min(max(int(after), 0), length)
    if before:
        w[:before] *= _ramp(before)
    if after:
        w[length - after :] *= _ramp(after)[::-1]
    return w


def blend_window(tile_h: int, tile_w: int, overlap, edges: Sequence[bool] = (False,) * 4) -> np.ndarray:
    """Blending weights of one tile.

    Parameters
    ----------
    tile_h, tile_w : int
        Tile size.
    overlap : int or (top, bottom, left, right)
        Width of the ramp on each side: the overlap with the neighbouring tile there.
    edges : (top, bottom, left, right) of bool
        True for a side that lies on the image border: no ramp there (full weight), so the
        image's border pixels are not down-weighted.

    Returns
    -------
    ndarray, shape (tile_h, tile_w), float32
        1 in the interior; on each inner side a raised-cosine ramp rising from ~0 at the
        tile's edge to 1 across the overlap (separable: the product of a vertical and a
        horizontal profile).  Every weight is > 0.  The rising ramp of one tile and the
        falling ramp of its neighbour over the same overlap sum to one.

    Examples
    --------
    >>> w = blend_window(64, 64, 16, edges=(True, False, True, False))
    >>> float(w[0, 0]), float(w[-1, -1]) < 0.01
    (1.0, True)
    """
    if np.ndim(overlap) == 0:
        top = bottom = left = right = int(overlap)
    else:
        top, bottom, left, right = (int(v) for v in overlap)
    if min(top, bottom, left, right) < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap!r}")
    if len(edges) != 4:
        raise ValueError(f"edges must be 4 booleans (top, bottom, left, right), got {edges!r}")
    e_top, e_bottom, e_left, e_right = (bool(e) for e in edges)
    wy = _axis_window(int(tile_h), top, bottom, e_top, e_bottom)
    wx = _axis_window(int(tile_w), left, right, e_left, e_right)
    return np.maximum(np.outer(wy, wx), _EPS).astype(np.float32)


class TileBlender:
    """Accumulates tile estimates with blending weights into one full-size plane.

    Parameters
    ----------
    height, width, channels : int
        Plane size.
    boxes : list of (y0, y1, x0, x1)
        The tile plan (see :func:`plan_tiles`), or boxes that need not cover the plane (hole
        regions: pixels outside every box take the ``fallback`` of :meth:`image`); each tile's
        ramps span its actual overlaps with the boxes that reach into it.
    n_frames : int
        Also accumulate this many history frames per tile (into :attr:`frames`).
    frames : ndarray, shape (n_frames, height, width, channels), float32, optional
        Buffer to accumulate the frames into (zero-filled by the caller), e.g. a view of a
        job-level history stack; allocated when omitted and ``n_frames > 0``.

    Notes
    -----
    Memory: two float32 buffers of the plane's size (weighted sum and sum of weights), plus
    the frames buffer when a history is kept.  No tile estimate is kept.
    """

    def __init__(
        self,
        height: int,
        width: int,
        channels: int,
        boxes: Sequence[Box],
        n_frames: int = 0,
        frames: np.ndarray | None = None,
    ):
        self.shape = (int(height), int(width), int(channels))
        self.boxes = [tuple(int(v) for v in b) for b in boxes]
        if not self.boxes:
            raise ValueError("boxes is empty: a tile plan covers the image with at least one tile")
        self.num = np.zeros(self.shape, dtype=np.float32)
        self.wsum = np.zeros(self.shape[:2], dtype=np.float32)
        self.n_frames = int(n_frames)
        if self.n_frames and frames is None:
            frames = np.zeros((self.n_frames,) + self.shape, dtype=np.float32)
        self.frames = frames if self.n_frames else None
        self._b = np.asarray(self.boxes, dtype=np.int64).reshape(-1, 4)

    def _ramps(self, index: int) -> tuple[int, int, int, int]:
        """Ramp widths (top, bottom, left, right) of tile ``index``: its overlaps with the tiles
        that reach into it across each side (the widest one).

        On a grid plan these are the overlaps with the neighbouring row and column; boxes that
        do not cover the image (hole regions) get ramps only where another box overlaps them.
        """
        b = self._b
        y0, y1, x0, x1 = b[index]
        o = b[(b[:, 0] < y1) & (b[:, 1] > y0) & (b[:, 2] < x1) & (b[:, 3] > x0)]  # boxes that overlap it

        def widest(sel, width):
            return int(width[sel].max()) if sel.any() else 0

        top = widest((o[:, 0] < y0) & (o[:, 1] < y1), o[:, 1] - y0)
        bottom = widest((o[:, 0] > y0) & (o[:, 1] > y1), y1 - o[:, 0])
        left = widest((o[:, 2] < x0) & (o[:, 3] < x1), o[:, 3] - x0)
        right = widest((o[:, 2] > x0) & (o[:, 3] > x1), x1 - o[:, 2])
        return top, bottom, left, right

    def window(self, index: int) -> np.ndarray:
        """Blending weights of tile ``index`` (see :func:`blend_window`)."""
        y0, y1, x0, x1 = self.boxes[index]
        h, w, _ = self.shape
        edges = (y0 == 0, y1 == h, x0 == 0, x1 == w)
        return blend_window(y1 - y0, x1 - x0, self._ramps(index), edges)

    def add(
        self, index: int, estimate: np.ndarray, frames: np.ndarray | None = None, window: np.ndarray | None = None
    ) -> None:
        """Blend in the finished estimate (H_t, W_t, C) of tile ``index``.

        ``frames`` (n, H_t, W_t, C): the tile's history; frames after the ``n``-th repeat
        its last one (its final ``estimate`` when ``n == 0``).
        """
        y0, y1, x0, x1 = self.boxes[index]
        win = self.window(index) if window is None else window
        self.num[y0:y1, x0:x1] += win[..., None] * estimate
        self.wsum[y0:y1, x0:x1] += win
        if self.frames is not None:
            self._add_frames(self.frames, index, win, estimate, frames)

    def _add_frames(self, dest, index, win, estimate, frames) -> None:
        y0, y1, x0, x1 = self.boxes[index]
        n = 0 if frames is None else min(len(frames), self.n_frames)
        for k in range(self.n_frames):
            fr = frames[k] if k < n else (frames[n - 1] if n else estimate)
            dest[k, y0:y1, x0:x1] += win[..., None] * fr

    @staticmethod
    def _normalise(num, wsum, fallback, out) -> np.ndarray:
        covered = wsum > 0
        np.divide(num, np.where(covered, wsum, 1.0)[..., None], out=out)
        if fallback is not None and not covered.all():
            out[~covered] = fallback[~covered]
        return out

    def image(self, fallback: np.ndarray | None = None, extra: tuple[int, np.ndarray] | None = None) -> np.ndarray:
        """The blended plane (H, W, C) float32; the buffers are not changed.

        Parameters
        ----------
        fallback : ndarray (H, W, C), optional
            Values of pixels no tile has covered yet (e.g. the input after a cancel);
            zeros when omitted.
        extra : (index, estimate), optional
            Also blend in an unfinished tile's current estimate (a running tile).
        """
        out = np.empty(self.shape, dtype=np.float32)
        self._normalise(self.num, self.wsum, fallback, out)
        if extra is not None:
            index, est = extra
            y0, y1, x0, x1 = self.boxes[index]
            win = self.window(index)
            num = self.num[y0:y1, x0:x1] + win[..., None] * est
            ws = self.wsum[y0:y1, x0:x1] + win
            out[y0:y1, x0:x1] = num / ws[..., None]
        return out

    def frame_images(
        self, fallback: np.ndarray | None = None, extra: tuple[int, np.ndarray, np.ndarray | None] | None = None
    ):
        """Yield the blended history frames (H, W, C) one by one (buffers unchanged).

        ``extra = (index, estimate, frames)`` also blends in an unfinished tile.
        """
        if self.frames is None:
            return
        win = None
        if extra is not None:
            index, est, fr = extra
            y0, y1, x0, x1 = self.boxes[index]
            win = self.window(index)
            ws = self.wsum[y0:y1, x0:x1] + win
            n = 0 if fr is None else min(len(fr), self.n_frames)
        for k in range(self.n_frames):
            out = np.empty(self.shape, dtype=np.float32)
            self._normalise(self.frames[k], self.wsum, fallback, out)
            if win is not None:
                f = fr[k] if k < n else (fr[n - 1] if n else est)
                out[y0:y1, x0:x1] = (self.frames[k, y0:y1, x0:x1] + win[..., None] * f) / ws[..., None]
            yield out

    def finalise_frames(self, fallback: np.ndarray | None = None) -> None:
        """Normalise the frames buffer in place (once every tile has been added)."""
        if self.frames is None:
            return
        for k in range(self.n_frames):
            self._normalise(self.frames[k], self.wsum, fallback, self.frames[k])
