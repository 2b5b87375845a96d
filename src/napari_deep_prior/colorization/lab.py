"""CIE Lab conversions and the sRGB gamut.

Lab is CIE L*a*b* under D65 with the 2 degree observer, exactly as
:func:`skimage.color.rgb2lab` / :func:`skimage.color.lab2rgb` (which these functions wrap or
reproduce and are tested against): L in [0, 100], a and b roughly in [-110, 110].
:func:`lab_image` turns a lightness and a chroma image into the colorizers' RGB output
(uint8 for uint8 input, else float32 in [0, 1]).
"""

from __future__ import annotations

import warnings

import numpy as np
from skimage import color as skcolor

__all__ = [
    "AB_MAX",
    "gamut_clip",
    "gray_to_lightness",
    "in_gamut",
    "lab_image",
    "lab_to_linear_rgb",
    "lab_to_rgb",
    "rgb_to_lab",
]

AB_MAX = 110.0

#: sRGB -> XYZ (D65) matrix and the D65 white point, as used by scikit-image.
_XYZ_FROM_RGB = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
#: Slack on linear RGB when deciding whether a colour is inside the gamut (rounding of the
#: published matrices puts white at 1.00001).
_GAMUT_TOL = 1e-4


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
    xyz = np.where(f > 0.2068966, f**3, (f - 16.0 / 116.0) / 7.787) * _WHITE_D65
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
            f"gamut_clip needs an RGB colour (last axis 3) or an ab pair (last axis 2); got shape {c.shape}"
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


def lab_image(L: np.ndarray, ab: np.ndarray, *, as_uint8: bool) -> np.ndarray:
    """RGB of a lightness image and its chroma, in the colorizers' output dtype.

    Parameters
    ----------
    L : ndarray, shape (H, W)
        Lightness, 0-100.
    ab : ndarray, shape (H, W, 2)
    as_uint8 : bool
        uint8 (the input was uint8) or float32 in [0, 1].

    Returns
    -------
    rgb : ndarray, shape (H, W, 3)

    Examples
    --------
    >>> lab_image(np.full((2, 2), 100.0), np.zeros((2, 2, 2)), as_uint8=True)[0, 0]
    array([255, 255, 255], dtype=uint8)
    """
    rgb = lab_to_rgb(np.concatenate([np.asarray(L, np.float64)[..., None], np.asarray(ab, np.float64)], axis=-1))
    if as_uint8:
        return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    return rgb.astype(np.float32)
