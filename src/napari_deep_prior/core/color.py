"""Colour science for colorization: Lab conversions, gamut clipping, hints, Levin propagation.

Lab is CIE L*a*b* under D65 with the 2 degree observer, exactly as
:func:`skimage.color.rgb2lab` / :func:`skimage.color.lab2rgb` (which these functions wrap or
reproduce and are tested against): L in [0, 100], a and b roughly in [-110, 110].

A *hint* is a user-chosen colour at one pixel, ``(row, col, color)``, with the colour given
as a ``'#rrggbb'`` string or an RGB triple (integers 0-255 or floats 0-1).  Hints are
encoded as square patches of ab values (:func:`encode_hints`) at each covered pixel's own
lightness, pulled into the sRGB gamut there (:func:`gamut_clip`), the convention of the
interactive colorization GUI of Zhang et al. (2017).

:func:`levin` propagates hint colours by the optimisation of Levin, Lischinski and Weiss
(2004): neighbouring pixels of similar lightness get similar colours.

References
----------
.. [1] A. Levin, D. Lischinski, Y. Weiss, "Colorization using Optimization",
       ACM SIGGRAPH 2004.
.. [2] R. Zhang, J.-Y. Zhu, P. Isola, X. Geng, A. S. Lin, T. Yu, A. A. Efros, "Real-Time
       User-Guided Image Colorization with Learned Deep Priors", ACM SIGGRAPH 2017.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from typing import Iterable, NamedTuple, Sequence, Union

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from skimage import color as skcolor

__all__ = [
    "Hint",
    "ColorLike",
    "rgb_to_lab",
    "lab_to_rgb",
    "gray_to_lightness",
    "lab_to_linear_rgb",
    "in_gamut",
    "gamut_clip",
    "parse_color",
    "color_to_hex",
    "normalize_hints",
    "encode_hints",
    "read_hints_csv",
    "write_hints_csv",
    "levin",
    "levin_system",
    "levin_weights",
    "levin_affinity",
    "LEVIN_OFFSETS",
    "AB_MAX",
]

#: Largest |a| or |b| the colorizer networks represent (their ab normalisation constant).
AB_MAX = 110.0

#: sRGB -> XYZ (D65) matrix and the D65 white point, as used by scikit-image.
_XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],
                          [0.212671, 0.715160, 0.072169],
                          [0.019334, 0.119193, 0.950227]])
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
#: Slack on linear RGB when deciding whether a colour is inside the gamut (rounding of the
#: published matrices puts white at 1.00001).
_GAMUT_TOL = 1e-4

ColorLike = Union[str, Sequence[float], np.ndarray]


class Hint(NamedTuple):
    """One colour hint: pixel (row, col) should have ``color``.

    ``color`` is a ``'#rrggbb'`` string or an RGB triple (integers 0-255 or floats 0-1).
    """

    row: float
    col: float
    color: ColorLike


# --------------------------------------------------------------------------------------
# Lab conversions
# --------------------------------------------------------------------------------------

def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB to CIE Lab (D65), a wrapper of :func:`skimage.color.rgb2lab`.

    Parameters
    ----------
    rgb : ndarray, shape (..., 3)
        Floats in [0, 1], or integers (scaled from their dtype's range, e.g. uint8 / 255).

    Returns
    -------
    lab : ndarray, shape (..., 3), float64
        L in [0, 100], a and b about [-110, 110].

    Examples
    --------
    >>> rgb_to_lab(np.array([1.0, 1.0, 1.0])).round(2)
    array([100.,  -0.,   0.])
    """
    rgb = np.asarray(rgb)
    if rgb.shape[-1:] != (3,):
        raise ValueError(f"rgb must have 3 channels in its last axis, got shape {rgb.shape}")
    if rgb.dtype.kind == "f":
        rgb = rgb.astype(np.float64, copy=False)
    return skcolor.rgb2lab(rgb)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE Lab (D65) to sRGB in [0, 1], a wrapper of :func:`skimage.color.lab2rgb`.

    Out-of-gamut colours are clipped to [0, 1] per channel (silently: the "negative Z"
    warning of scikit-image is suppressed; use :func:`gamut_clip` first to keep hues).

    Parameters
    ----------
    lab : ndarray, shape (..., 3)

    Returns
    -------
    rgb : ndarray, shape (..., 3), float64 in [0, 1]
    """
    lab = np.asarray(lab, dtype=np.float64)
    if lab.shape[-1:] != (3,):
        raise ValueError(f"lab must have 3 channels in its last axis, got shape {lab.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return skcolor.lab2rgb(lab)


def _srgb_to_linear(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return np.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)


def _f_lab(t: np.ndarray) -> np.ndarray:
    return np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16.0 / 116.0)


def gray_to_lightness(gray: np.ndarray) -> np.ndarray:
    """Lab lightness L of a grey sRGB image, same as ``rgb2lab(gray[..., None].repeat(3, -1))[..., 0]``.

    Parameters
    ----------
    gray : ndarray
        Floats in [0, 1] (any shape).

    Returns
    -------
    L : ndarray, float64, same shape, in [0, 100]
    """
    # The Y row of the sRGB->XYZ matrix sums to 1, so a grey pixel has Y = linear(gray).
    y = _srgb_to_linear(np.clip(gray, 0.0, 1.0)) * _XYZ_FROM_RGB[1].sum()
    return 116.0 * _f_lab(y) - 16.0


def lab_to_linear_rgb(L: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """Lab to *linear* RGB without any clipping (values outside [0, 1] are out of gamut).

    Parameters
    ----------
    L : ndarray, shape (...)
    ab : ndarray, shape (..., 2)

    Returns
    -------
    rgb_linear : ndarray, shape (..., 3), float64
    """
    L = np.asarray(L, dtype=np.float64)
    ab = np.asarray(ab, dtype=np.float64)
    fy = (L + 16.0) / 116.0
    fx = fy + ab[..., 0] / 500.0
    fz = fy - ab[..., 1] / 200.0
    f = np.stack(np.broadcast_arrays(fx, fy, fz), axis=-1)
    xyz = np.where(f > 0.2068966, f ** 3, (f - 16.0 / 116.0) / 7.787) * _WHITE_D65
    return xyz @ _RGB_FROM_XYZ.T


def in_gamut(L: np.ndarray, ab: np.ndarray, tol: float = _GAMUT_TOL) -> np.ndarray:
    """Whether Lab colours map into the sRGB cube [0, 1]^3 without clipping.

    Returns
    -------
    ok : ndarray of bool, shape broadcast(L, ab[..., 0])
    """
    return _inside(L, ab, tol, tol)


def _inside(L, ab, low_tol: float, high_tol: float) -> np.ndarray:
    lin = lab_to_linear_rgb(L, ab)
    return np.all((lin >= -low_tol) & (lin <= 1.0 + high_tol), axis=-1)


def gamut_clip(rgb_or_ab: np.ndarray, L: np.ndarray | float, *, iterations: int = 24) -> np.ndarray:
    """Bring a colour into the sRGB gamut at a given lightness, keeping L and the hue.

    The chroma (the length of ab) is shrunk by bisection until ``lab2rgb([L, a, b])`` lies
    inside [0, 1] without clipping; in-gamut colours are returned unchanged.  Grey (ab = 0)
    is in gamut at every L in [0, 100], so a solution always exists.

    Parameters
    ----------
    rgb_or_ab : ndarray, shape (..., 3) or (..., 2)
        An sRGB colour in [0, 1] (last axis of length 3: its ab is taken) or an ab pair
        (last axis of length 2).
    L : float or ndarray
        The lightness (0-100) the colour will be shown at; broadcast against the colour.
    iterations : int
        Bisection steps (24 gives a chroma precision far below 0.01 ab units).

    Returns
    -------
    ab : ndarray, shape broadcast(L, colour[..., 0]) + (2,), float64

    Examples
    --------
    Pure red cannot stay that saturated on a very dark pixel:

    >>> ab = gamut_clip(np.array([1.0, 0.0, 0.0]), 10.0)
    >>> bool(np.hypot(*ab) < np.hypot(*rgb_to_lab(np.array([1.0, 0.0, 0.0]))[1:]))
    True
    """
    c = np.asarray(rgb_or_ab, dtype=np.float64)
    if c.shape[-1:] == (3,):
        ab = rgb_to_lab(np.clip(c, 0.0, 1.0))[..., 1:]
    elif c.shape[-1:] == (2,):
        ab = c
    else:
        raise ValueError(
            f"gamut_clip needs an RGB colour (last axis 3) or an ab pair (last axis 2); "
            f"got shape {c.shape}"
        )
    L = np.clip(np.asarray(L, dtype=np.float64), 0.0, 100.0)
    shape = np.broadcast_shapes(L.shape, ab.shape[:-1])
    L = np.broadcast_to(L, shape)
    ab = np.broadcast_to(ab, shape + (2,))
    ok = in_gamut(L, ab)
    if ok.all():
        return ab.copy()
    lo = np.zeros(shape)
    hi = np.ones(shape)
    lo[ok] = 1.0
    todo = ~ok
    Lt, abt = L[todo], ab[todo]
    lo_t, hi_t = lo[todo], hi[todo]
    for _ in range(iterations):
        mid = 0.5 * (lo_t + hi_t)
        # Strict at the low end (no negative light, so dark colours round-trip exactly);
        # the high end keeps the slack that white itself needs.
        good = _inside(Lt, abt * mid[:, None], 0.0, _GAMUT_TOL)
        lo_t = np.where(good, mid, lo_t)
        hi_t = np.where(good, hi_t, mid)
    lo[todo] = lo_t
    return ab * lo[..., None]


# --------------------------------------------------------------------------------------
# Colours and hints
# --------------------------------------------------------------------------------------

_HEX = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$")


def parse_color(color: ColorLike) -> np.ndarray:
    """An sRGB colour as floats in [0, 1].

    Parameters
    ----------
    color : str or sequence of 3 numbers
        ``'#rrggbb'`` (or ``'#rgb'``), integers 0-255 (Python ints or an integer array),
        or floats 0-1.

    Returns
    -------
    rgb : ndarray, shape (3,), float64 in [0, 1]

    Raises
    ------
    ValueError
        For a malformed string or values out of range.
    TypeError
        For anything that is neither a string nor three numbers.

    Examples
    --------
    >>> parse_color('#ff8000')
    array([1.        , 0.50196078, 0.        ])
    >>> bool(parse_color((255, 128, 0))[1] == parse_color((1.0, 128 / 255, 0.0))[1])
    True
    """
    if isinstance(color, str):
        m = _HEX.match(color.strip())
        if not m:
            raise ValueError(
                f"colour {color!r} is not a hex colour; write it as '#rrggbb' "
                "(e.g. '#ff8000'), or give an RGB triple such as (255, 128, 0) or (1.0, 0.5, 0.0)"
            )
        h = m.group(1)
        if len(h) == 3:
            h = "".join(ch * 2 for ch in h)
        return np.array([int(h[i:i + 2], 16) for i in (0, 2, 4)], dtype=np.float64) / 255.0
    if isinstance(color, (bytes, dict)) or not hasattr(color, "__len__"):
        raise TypeError(
            f"colour must be a '#rrggbb' string or an RGB triple, got {type(color).__name__} "
            f"{color!r}"
        )
    arr = np.asarray(color)
    if arr.shape != (3,) or arr.dtype.kind not in "uifb":
        raise TypeError(
            f"colour must be a '#rrggbb' string or three numbers (R, G, B), got {color!r}"
        )
    # Integers 0-255 unless any value is a float (then all are read as floats 0-1).
    is_int = arr.dtype.kind in "uib" or all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in color
    )
    if is_int:
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError(f"integer colour {color!r} must have values in 0-255")
        return arr.astype(np.float64) / 255.0
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError(
            f"float colour {color!r} must have values in [0, 1]; for 0-255 values give "
            "integers, e.g. (255, 128, 0)"
        )
    return arr


def color_to_hex(color: ColorLike) -> str:
    """``'#rrggbb'`` for any accepted colour (see :func:`parse_color`)."""
    rgb = np.clip(np.rint(parse_color(color) * 255.0), 0, 255).astype(int)
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def normalize_hints(hints: Iterable, shape: tuple[int, int]) -> list[tuple[int, int, np.ndarray]]:
    """Validate hints against an image of ``shape`` (H, W).

    Returns
    -------
    list of (row, col, rgb)
        Integer pixel positions (rounded) and colours as floats in [0, 1].

    Raises
    ------
    TypeError, ValueError
        Naming the offending hint and how to fix it.
    """
    if hints is None:
        raise ValueError("no hints were given; pass a list of (row, col, colour) hints")
    if isinstance(hints, (str, bytes)):
        raise TypeError(
            "hints must be a list of (row, col, colour) tuples; to read a CSV file use "
            "read_hints_csv(path)"
        )
    h, w = shape
    out = []
    for i, hint in enumerate(hints):
        try:
            row, col, colour = hint
        except (TypeError, ValueError):
            raise TypeError(
                f"hint {i} is {hint!r}; each hint must be (row, col, colour), e.g. "
                "(120, 64, '#ff8000')"
            ) from None
        try:
            r, c = float(row), float(col)
        except (TypeError, ValueError):
            raise TypeError(f"hint {i}: row and col must be numbers, got {row!r}, {col!r}") from None
        if not (np.isfinite(r) and np.isfinite(c)):
            raise ValueError(f"hint {i}: row and col must be finite, got {row!r}, {col!r}")
        ri, ci = int(np.floor(r + 0.5)), int(np.floor(c + 0.5))
        if not (0 <= ri < h and 0 <= ci < w):
            raise ValueError(
                f"hint {i} at (row, col) = ({row}, {col}) is outside the image of shape ({h}, {w}); "
                f"rows must be in 0..{h - 1} and columns in 0..{w - 1}"
            )
        try:
            rgb = parse_color(colour)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"hint {i}: {exc}") from None
        out.append((ri, ci, rgb))
    return out


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"hint size must be an odd integer number of pixels, got {size!r}")
    if size < 1 or size % 2 == 0:
        raise ValueError(
            f"hint size must be a positive odd number of pixels (1, 3, 5, ...), got {size}"
        )
    return int(size)


def encode_hints(L: np.ndarray, hints: Iterable, *, size: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise hints into an ab image and a mask.

    Each hint covers a ``size`` x ``size`` square centred on its pixel (cut at the image
    border).  Every covered pixel gets the hint colour's ab, pulled into gamut at that
    pixel's own lightness (:func:`gamut_clip`).  Where squares overlap, later hints win.

    Parameters
    ----------
    L : ndarray, shape (H, W)
        Lightness (0-100) of the image.
    hints : iterable of (row, col, colour)
        See :class:`Hint`.  Positions are rounded to the nearest pixel.
    size : int
        Side of the square, odd (1 = single pixels; 5 is the GUI default of Zhang et al.).

    Returns
    -------
    ab_hint : ndarray, shape (H, W, 2), float32
        Hint ab values, 0 outside the hints.
    mask : ndarray, shape (H, W), float32
        1 where a hint is given, 0 elsewhere.

    Examples
    --------
    >>> L = np.full((16, 16), 50.0)
    >>> ab, mask = encode_hints(L, [(8, 8, '#ff0000')], size=3)
    >>> int(mask.sum()), bool(ab[8, 8, 0] > 40)
    (9, True)
    """
    L = np.asarray(L, dtype=np.float64)
    if L.ndim != 2:
        raise ValueError(f"L must be a 2-D lightness image (H, W), got shape {L.shape}")
    size = _check_size(size)
    parsed = normalize_hints(hints, L.shape)
    h, w = L.shape
    half = size // 2
    ab_hint = np.zeros((h, w, 2), np.float32)
    mask = np.zeros((h, w), np.float32)
    if not parsed:
        return ab_hint, mask
    colours_ab = rgb_to_lab(np.stack([p[2] for p in parsed]))[:, 1:]
    # Gather every covered pixel once, clip all of them in one vectorised call.
    boxes, idx_r, idx_c, owner = [], [], [], []
    for k, (r, c, _rgb) in enumerate(parsed):
        r0, r1 = max(r - half, 0), min(r + half + 1, h)
        c0, c1 = max(c - half, 0), min(c + half + 1, w)
        rr, cc = np.mgrid[r0:r1, c0:c1]
        boxes.append((r0, r1, c0, c1))
        idx_r.append(rr.ravel())
        idx_c.append(cc.ravel())
        owner.append(np.full(rr.size, k))
    idx_r_all = np.concatenate(idx_r)
    idx_c_all = np.concatenate(idx_c)
    owner_all = np.concatenate(owner)
    clipped = gamut_clip(colours_ab[owner_all], L[idx_r_all, idx_c_all])
    start = 0
    for (r0, r1, c0, c1) in boxes:  # in order, so later hints overwrite earlier ones
        n = (r1 - r0) * (c1 - c0)
        ab_hint[r0:r1, c0:c1] = clipped[start:start + n].reshape(r1 - r0, c1 - c0, 2)
        mask[r0:r1, c0:c1] = 1.0
        start += n
    return ab_hint, mask


# --------------------------------------------------------------------------------------
# Hints CSV files
# --------------------------------------------------------------------------------------

def read_hints_csv(path: str | os.PathLike) -> list[Hint]:
    """Read hints from a CSV file.

    Two layouts are accepted, with a header line: ``row,col,color`` (colour ``#rrggbb``)
    or ``row,col,r,g,b`` (integers 0-255, or floats 0-1 when any value has a decimal point).

    Returns
    -------
    list of Hint

    Raises
    ------
    ValueError
        If the header or a line is malformed (the line number is given).
    """
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh) if r and any(x.strip() for x in r)]
    if not rows:
        raise ValueError(f"hints file {os.fspath(path)!r} is empty; it needs a header "
                         "'row,col,color' or 'row,col,r,g,b'")
    header = [x.strip().lower() for x in rows[0]]
    hex_layout = header == ["row", "col", "color"] or header == ["row", "col", "colour"]
    rgb_layout = header == ["row", "col", "r", "g", "b"]
    if not (hex_layout or rgb_layout):
        raise ValueError(
            f"hints file {os.fspath(path)!r} has header {rows[0]!r}; expected "
            "'row,col,color' (with #rrggbb colours) or 'row,col,r,g,b'"
        )
    hints = []
    for lineno, rec in enumerate(rows[1:], start=2):
        rec = [x.strip() for x in rec]
        want = 3 if hex_layout else 5
        if len(rec) != want:
            raise ValueError(f"{os.fspath(path)}, line {lineno}: expected {want} values, got {rec!r}")
        try:
            row, col = float(rec[0]), float(rec[1])
            row = int(row) if row.is_integer() else row
            col = int(col) if col.is_integer() else col
            if hex_layout:
                colour: ColorLike = rec[2]
            else:
                vals = rec[2:]
                if any(("." in v or "e" in v.lower()) for v in vals):
                    colour = tuple(float(v) for v in vals)
                else:
                    colour = tuple(int(v) for v in vals)
            parse_color(colour)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{os.fspath(path)}, line {lineno}: {rec!r}: {exc}") from None
        hints.append(Hint(row, col, colour))
    return hints


def write_hints_csv(path: str | os.PathLike, hints: Iterable, *, layout: str = "hex") -> None:
    """Write hints to a CSV file readable by :func:`read_hints_csv`.

    Parameters
    ----------
    path : path-like
    hints : iterable of (row, col, colour)
    layout : {"hex", "rgb"}
        ``row,col,color`` with ``#rrggbb`` colours, or ``row,col,r,g,b`` with 0-255 integers.
    """
    if layout not in ("hex", "rgb"):
        raise ValueError(f"layout must be 'hex' or 'rgb', got {layout!r}")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        wr = csv.writer(fh)
        wr.writerow(["row", "col", "color"] if layout == "hex" else ["row", "col", "r", "g", "b"])
        for i, hint in enumerate(hints):
            try:
                row, col, colour = hint
            except (TypeError, ValueError):
                raise TypeError(f"hint {i} is {hint!r}; each hint must be (row, col, colour)") from None
            rc = [_fmt_num(row), _fmt_num(col)]
            if layout == "hex":
                wr.writerow(rc + [color_to_hex(colour)])
            else:
                rgb = np.clip(np.rint(parse_color(colour) * 255.0), 0, 255).astype(int)
                wr.writerow(rc + [str(v) for v in rgb])


def _fmt_num(v) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(f)


# --------------------------------------------------------------------------------------
# Levin, Lischinski, Weiss (2004)
# --------------------------------------------------------------------------------------

#: Levin et al.: sigma_r^2 = 0.6 * (luminance variance of the 3x3 window), floored.
_LEVIN_VAR_SCALE = 0.6
_LEVIN_VAR_FLOOR = 2e-6
#: The most similar neighbour keeps at least this (unnormalised) weight, so a pixel whose
#: neighbours all differ strongly from it is still tied to the closest one (as in the
#: authors' code) instead of getting an all-zero, undefined row.
_LEVIN_MIN_WEIGHT = 0.01

_LEVIN_WEIGHT_FLOOR = 1e-10
#: Blocks of the nested-dissection ordering at most this many pixels a side are left whole.
_ND_LEAF = 4

#: Neighbour offsets (drow, dcol) of the 3x3 window, in the order of levin_weights().
LEVIN_OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def levin_weights(Y: np.ndarray) -> np.ndarray:
    """Normalised 3x3-window affinities of Levin et al. (2004), one plane per neighbour.

    ``weights[k, r, c]`` is the weight of neighbour ``(r + dr_k, c + dc_k)`` of pixel
    ``(r, c)``, with the offsets ``(dr_k, dc_k)`` of :data:`LEVIN_OFFSETS`:
    ``exp(-(Y(r) - Y(s))^2 / (2 sigma_r^2))`` normalised to sum 1 over the neighbours,
    ``sigma_r^2 = 0.6 * var(window)`` (floored at 2e-6, and large enough that the closest
    neighbour has weight >= 0.01).  Neighbours outside the image have weight 0.

    Parameters
    ----------
    Y : ndarray, shape (H, W)
        Luminance in [0, 1] (e.g. L / 100).

    Returns
    -------
    weights : ndarray, shape (8, H, W), float64
    """
    Y = np.asarray(Y, dtype=np.float64)
    h, w = Y.shape
    pad = np.pad(Y, 1, constant_values=np.nan)
    neigh = np.stack([pad[1 + dr:1 + dr + h, 1 + dc:1 + dc + w] for dr, dc in LEVIN_OFFSETS])
    valid = ~np.isnan(neigh)
    window = np.concatenate([neigh, Y[None]], axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        var = np.nanvar(window, axis=0)
    d2 = np.where(valid, (neigh - Y[None]) ** 2, np.inf)
    two_sigma2 = 2.0 * np.maximum(_LEVIN_VAR_SCALE * var, _LEVIN_VAR_FLOOR)
    # Keep the closest neighbour's weight above _LEVIN_MIN_WEIGHT.
    two_sigma2 = np.maximum(two_sigma2, d2.min(axis=0) / -np.log(_LEVIN_MIN_WEIGHT))
    # The tiny floor keeps every pair of grid neighbours connected, so the system stays
    # non-singular even where the exponential underflows to 0 on an extreme edge.
    wts = np.where(valid, np.maximum(np.exp(-d2 / two_sigma2[None]), _LEVIN_WEIGHT_FLOOR), 0.0)
    wts /= wts.sum(axis=0, keepdims=True)
    return wts


def levin_affinity(Y: np.ndarray) -> sp.csr_matrix:
    """The normalised affinity matrix W of Levin et al. (2004) (see :func:`levin_weights`).

    Returns
    -------
    W : scipy.sparse.csr_matrix, shape (H*W, H*W)
        ``W[r, s]`` is the weight of neighbour s in the average of pixel r; rows sum to 1.
    """
    wts = levin_weights(Y)
    h, w = wts.shape[1:]
    idx = np.arange(h * w).reshape(h, w)
    pad_idx = np.pad(idx, 1, constant_values=-1)
    cols = np.stack([pad_idx[1 + dr:1 + dr + h, 1 + dc:1 + dc + w] for dr, dc in LEVIN_OFFSETS])
    rows = np.broadcast_to(idx[None], cols.shape)
    keep = (cols >= 0).ravel()
    return sp.csr_matrix(
        (wts.ravel()[keep], (rows.ravel()[keep], cols.ravel()[keep])), shape=(h * w, h * w)
    )


def _nested_dissection(h: int, w: int) -> np.ndarray:
    """A nested-dissection ordering of the pixels of an h x w grid (3x3 neighbourhoods).

    A single row or column separates the two halves of a block for the 9-point stencil;
    ordering each half before its separator, recursively, keeps the LU fill near
    O(n log n), much less than SuperLU's own orderings on this problem (1.4 s instead of
    2.4-10 s for 512 x 512).
    """
    idx = np.arange(h * w).reshape(h, w)
    out: list[np.ndarray] = []
    stack = [(idx, False)]
    # Iterative post-order: (block, separator_already_split)
    while stack:
        block, emit = stack.pop()
        if emit:
            out.append(block.ravel())
            continue
        bh, bw = block.shape
        if bh == 0 or bw == 0:
            continue
        if bh <= _ND_LEAF and bw <= _ND_LEAF:
            out.append(block.ravel())
            continue
        if bh >= bw:
            m = bh // 2
            parts = (block[:m], block[m + 1:], block[m])
        else:
            m = bw // 2
            parts = (block[:, :m], block[:, m + 1:], block[:, m])
        # push in reverse so that first half, second half, then separator are emitted
        stack.append((parts[2], True))
        stack.append((parts[1], False))
        stack.append((parts[0], False))
    return np.concatenate(out)


def levin_system(Y: np.ndarray, known: np.ndarray, *, screen: float = 0.0):
    """Factorise Levin's system for the unknown pixels once.

    Parameters
    ----------
    Y : ndarray, shape (H, W)
        Luminance in [0, 1].
    known : ndarray of bool, shape (H, W)
        Pixels whose colour is fixed.
    screen : float
        Weight mu of a pull towards a prior: each unknown pixel solves
        ``(1 + mu) U(r) - sum_s w_rs U(s) = mu P(r)`` (0: Levin's original system).

    Returns
    -------
    solve : callable
        ``solve(values, prior=None)`` takes the (H, W) channel with the known pixels set
        (and the (H, W) prior P when ``screen`` > 0) and returns the propagated channel.
    """
    h, w = Y.shape
    n = h * w
    known = np.asarray(known, bool).ravel()
    A = ((1.0 + screen) * sp.identity(n, format="csr") - levin_affinity(Y)).tocsr()
    order = _nested_dissection(h, w)
    unk = order[~known[order]]
    kn = np.flatnonzero(known)
    A_u = A[unk]
    A_uu = A_u[:, unk].tocsc()
    A_uk = A_u[:, kn].tocsr()
    lu = None
    if unk.size:
        # I - W is diagonally dominant: no pivoting needed, which keeps the ordering.
        lu = spla.splu(A_uu, permc_spec="NATURAL", diag_pivot_thresh=0.0,
                       options=dict(SymmetricMode=True))

    def solve(values: np.ndarray, prior: np.ndarray | None = None) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64).ravel()
        out = v.copy()
        if lu is not None:
            rhs = -(A_uk @ v[kn]) if kn.size else np.zeros(unk.size)
            if screen and prior is not None:
                rhs = rhs + screen * np.asarray(prior, dtype=np.float64).ravel()[unk]
            out[unk] = lu.solve(rhs)
        return out.reshape(h, w)

    return solve


def levin(L: np.ndarray, ab_hint: np.ndarray, mask: np.ndarray, *,
          prior: np.ndarray | None = None, prior_weight: float = 0.0) -> np.ndarray:
    """Propagate hint colours by the optimisation of Levin, Lischinski and Weiss (2004).

    Each chroma channel U minimises ``sum_r (U(r) - sum_s w_rs U(s))^2`` over the pixels
    without a hint, with the hinted pixels fixed; ``w_rs`` are the normalised 3x3-window
    luminance affinities (:func:`levin_affinity`).  One sparse system is factorised once
    and solved for a and b.  A 512 x 512 image takes about a second.

    Parameters
    ----------
    L : ndarray, shape (H, W)
        Lightness, 0-100.
    ab_hint : ndarray, shape (H, W, 2)
        Hint ab values (used where ``mask`` is set).
    mask : ndarray, shape (H, W)
        Non-zero where a hint is given.
    prior : ndarray, shape (H, W, 2), optional
        A chroma estimate to fall back on far from the hints (screened propagation):
        unknown pixels solve ``(1 + mu) U(r) - sum_s w_rs U(s) = mu P(r)``, so hint
        colours dominate within about ``1 / sqrt(mu)`` pixels and the prior beyond.
    prior_weight : float
        mu above (0: plain Levin; the prior is ignored).

    Returns
    -------
    ab : ndarray, shape (H, W, 2), float32

    Raises
    ------
    ValueError
        If there is no hint at all, or the shapes disagree.

    References
    ----------
    .. [1] A. Levin, D. Lischinski, Y. Weiss, "Colorization using Optimization",
           ACM SIGGRAPH 2004.

    Examples
    --------
    >>> L = np.full((32, 32), 60.0)
    >>> ab_hint, mask = encode_hints(L, [(4, 4, '#3060c0')], size=3)
    >>> ab = levin(L, ab_hint, mask)
    >>> bool(np.allclose(ab[30, 30], ab_hint[4, 4], atol=0.5))
    True
    """
    L = np.asarray(L, dtype=np.float64)
    ab_hint = np.asarray(ab_hint, dtype=np.float64)
    known = np.asarray(mask) > 0
    if L.ndim != 2 or ab_hint.shape != L.shape + (2,) or known.shape != L.shape:
        raise ValueError(
            f"levin needs L (H, W), ab_hint (H, W, 2) and mask (H, W); got shapes {L.shape}, "
            f"{ab_hint.shape} and {known.shape}"
        )
    mu = float(prior_weight) if prior is not None else 0.0
    if mu < 0:
        raise ValueError(f"prior_weight must be >= 0, got {prior_weight}")
    if mu > 0:
        prior = np.asarray(prior, dtype=np.float64)
        if prior.shape != L.shape + (2,):
            raise ValueError(f"prior must have shape {L.shape + (2,)}, got {prior.shape}")
    if not known.any() and mu == 0:
        raise ValueError("levin needs at least one hint (the mask is empty); add a hint")
    solve = levin_system(L / 100.0, known, screen=mu)
    out = np.empty(L.shape + (2,), np.float32)
    for ch in range(2):
        vals = np.where(known, ab_hint[..., ch], 0.0)
        out[..., ch] = solve(vals, prior[..., ch] if mu > 0 else None)
    return out
