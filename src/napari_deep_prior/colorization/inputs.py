"""Input handling of the colorizers: image validation, the dtype policy, lightness, resizing.

Every colorizer sees one 2-D image, grey ``(H, W)`` or RGB(A) ``(H, W, 3|4)`` (any other
channel axis is moved last), and works on its Lab lightness.  Dtype policy: uint8 is read as
value / 255; floats already in [0, 1] are used as they are; other integer dtypes and floats
outside [0, 1] are scaled from their data range.
"""

from __future__ import annotations

import numpy as np

from ..arrays import MIN_SIDE, check_dtype, normalise_channel_axis, template_literal
from ..errors import ParameterError
from .lab import gray_to_lightness, rgb_to_lab

__all__ = ["lightness", "lightness_of", "resize", "split_image", "to_unit_float", "working_shape"]


def to_unit_float(arr: np.ndarray) -> np.ndarray:
    """Values as float64 in [0, 1] following the module's dtype policy."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    work = arr.astype(np.float64)
    lo, hi = float(work.min()), float(work.max())
    if arr.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        return work
    if hi > lo:
        return (work - lo) / (hi - lo)
    return np.full_like(work, 0.5)


def _as_array(image) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    if hasattr(image, "__array__") or isinstance(image, (list, tuple)):
        return np.asarray(image)
    raise TypeError(f"image must be a NumPy array, got {type(image).__name__}")


def _channels_last(image: np.ndarray, channel_axis: int | None) -> np.ndarray:
    nd = image.ndim
    ca = normalise_channel_axis(channel_axis, nd, image.shape)
    if ca is not None:
        if nd != 3:
            raise ParameterError(
                f"image has shape {image.shape}: with {{channel_axis}}={template_literal(channel_axis)} colorize "
                "needs one 2-D image with a channel axis (3 dimensions); colorize the planes "
                "of a stack one at a time"
            )
        return np.moveaxis(image, ca, -1)
    if nd == 2 or (nd == 3 and image.shape[-1] in (1, 3, 4)):
        return image  # grey, or RGB(A) with channels last (the napari convention)
    if nd == 3:
        raise ParameterError(
            f"image has shape {image.shape}, which looks like a stack of "
            f"{image.shape[0]} planes; colorize works on one 2-D image: pass one plane "
            "(image[i]), or set {channel_axis} if an axis holds 1, 3 or 4 colour channels"
        )
    raise ValueError(
        f"image has shape {image.shape} ({nd} dimensions); colorize needs a 2-D grey "
        "image (H, W) or an RGB(A) image (H, W, 3|4); colorize the planes of a stack "
        "one at a time"
    )


def split_image(image, channel_axis: int | None = None) -> tuple[np.ndarray, bool]:
    """Validate an image; return (array (H, W) grey or (H, W, 3) RGB, is_rgb).

    Alpha is dropped, a single channel is read as grey.  Raises TypeError / ValueError that
    name the bad shape, dtype or value and the fix.
    """
    image = _as_array(image)
    check_dtype(image)
    if image.size == 0:
        raise ValueError(f"image is empty (shape {image.shape}); give an image with pixels")
    arr = _channels_last(image, channel_axis)
    if arr.ndim == 3:
        c = arr.shape[-1]
        if c not in (1, 3, 4):
            raise ValueError(
                f"image has {c} channels (shape {image.shape}); colorize accepts 1 (grey), 3 (RGB) or 4 (RGBA) channels"
            )
        arr = arr[..., 0] if c == 1 else arr[..., :3]
    h, w = arr.shape[:2]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(
            f"image is {h}x{w} pixels (shape {image.shape}); colorize needs at least {MIN_SIDE}x{MIN_SIDE}"
        )
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError("image contains NaN or infinite values; replace them first (e.g. np.nan_to_num)")
    return arr, arr.ndim == 3


def lightness_of(arr: np.ndarray, is_rgb: bool) -> np.ndarray:
    """Lab lightness of an array :func:`split_image` returned."""
    unit = to_unit_float(arr)
    return rgb_to_lab(unit)[..., 0] if is_rgb else gray_to_lightness(unit)


def lightness(image, *, channel_axis: int | None = None) -> np.ndarray:
    """Lab lightness L (0-100) of a grey or RGB image, float64 (H, W).

    A grey image is read as sRGB grey (the same L as ``rgb2lab`` of the grey tiled to
    RGB); an RGB(A) image gives its own L (alpha is ignored).

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 1|3|4)
    channel_axis : int, optional
        Axis of the colour channels; None for a grey image or channels last.

    Examples
    --------
    >>> float(lightness(np.full((8, 8), 255, np.uint8))[0, 0])
    100.0
    """
    return lightness_of(*split_image(image, channel_axis))


def resize(arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (H, W) or (H, W, C) float arrays, anti-aliased when shrinking (float64)."""
    from skimage.transform import resize as sk_resize

    if arr.shape[:2] == tuple(shape):
        return arr.astype(np.float64, copy=True)
    shrink = shape[0] < arr.shape[0] or shape[1] < arr.shape[1]
    return sk_resize(arr.astype(np.float64), shape, order=1, mode="edge", anti_aliasing=shrink, preserve_range=True)


def working_shape(shape: tuple[int, int], max_pixels: int | None) -> tuple[int, int]:
    """``shape`` shrunk (same aspect) to at most ``max_pixels`` pixels, no side below MIN_SIDE."""
    h, w = shape
    if max_pixels is None or h * w <= max_pixels:
        return h, w
    f = (max_pixels / (h * w)) ** 0.5
    return max(MIN_SIDE, int(round(h * f))), max(MIN_SIDE, int(round(w * f)))
