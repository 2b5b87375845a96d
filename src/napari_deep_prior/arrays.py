"""The shared floor under both rooms: array layout, dtype round trip, seeds, generators.

Everything here is plain NumPy (no torch, no Qt), used by :mod:`~napari_deep_prior.restore`,
:mod:`~napari_deep_prior.colorization`, the command line and the widgets alike:

- :func:`check_dtype`, :func:`normalise_channel_axis`, :func:`split_channels`: validate an
  image and move its channels last (``channel_axis=None`` means grey);
- :class:`Layout` with :func:`normalise` / :func:`denormalise`: the dtype/range round trip
  (integer input is fitted as float in [0, 1] and comes back as the same integer dtype; float
  keeps its dtype and range; float16 comes back as float32);
- :func:`new_seed`, :func:`derive_seed`: one way to draw and split seeds;
- :func:`drive`: run a ``steps()`` generator to its return value;
- :func:`format_duration`: ``m:ss`` / ``h:mm:ss`` for progress and reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from .errors import ParameterError

__all__ = [
    "MIN_SIDE",
    "SEED_MAX",
    "Layout",
    "check_data_range",
    "check_finite",
    "check_seed",
    "check_dtype",
    "check_values_in_range",
    "denormalise",
    "denormalise_frames",
    "derive_seed",
    "drive",
    "finite_range",
    "format_duration",
    "guess_channel_axis",
    "new_seed",
    "normalise",
    "normalise_channel_axis",
    "resolve_output_dtype",
    "split_channels",
    "template_literal",
]

#: Smallest height and width accepted (smaller images carry too little structure to fit).
MIN_SIDE = 8

#: The largest seed accepted: seeds are unsigned 32-bit integers, which NumPy's and torch's
#: generators all take (torch stops at 2**64 - 1 and the fit also seeds with ``seed + 1``).
SEED_MAX = 2**32 - 1

R = TypeVar("R")


# -- generators, seeds, time ----------------------------------------------------------------


def drive(steps: Generator[object, None, R], callback: Callable[[object], object] | None = None) -> R:
    """Run a ``steps()`` generator to its end and return its return value.

    ``callback(step)`` is called with every yielded item.  The generator is closed on the way
    out, so an exception in the callback (or a KeyboardInterrupt) releases what it holds.

    Examples
    --------
    >>> def steps():
    ...     yield 1
    ...     return "done"
    >>> drive(steps())
    'done'
    """
    try:
        while True:
            try:
                item = next(steps)
            except StopIteration as stop:
                return stop.value
            if callback is not None:
                callback(item)
    finally:
        steps.close()


def new_seed() -> int:
    """A fresh random seed in [0, 2**31 - 1) (fits an int32 spin box and every RNG)."""
    return int(np.random.SeedSequence().generate_state(1)[0]) % (2**31 - 1)


def derive_seed(seed: int, *keys: int) -> int:
    """A seed derived from ``seed`` and ``keys`` (independent streams for members, planes...)."""
    if not keys:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(1)[0]) % (2**31 - 1)


def check_seed(seed) -> int | None:
    """``seed`` as an int in [0, SEED_MAX] (None stays None).

    A TypeError for anything but an integer, a :class:`~.errors.ParameterError` for an integer
    out of range (torch would fail with "Overflow when unpacking long long").
    """
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer or None, got {seed!r}")
    seed = int(seed)
    if not 0 <= seed <= SEED_MAX:
        raise ParameterError(
            f"{{seed}} must be an integer from 0 to {SEED_MAX} (2**32 - 1), got {seed}; "
            "leave it out to draw a random one"
        )
    return seed


def template_literal(value) -> str:
    """``str(value)`` with its braces doubled, to quote a user's value in a ParameterError template."""
    return str(value).replace("{", "{{").replace("}", "}}")


def format_duration(seconds: float) -> str:
    """``m:ss`` below an hour, ``h:mm:ss`` above; ``?`` for an unknown (NaN, negative) time."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# -- validation and channel axis ------------------------------------------------------------


def check_dtype(image: np.ndarray, what: str = "image") -> None:
    """Integer or float dtypes only, with the fix in the message."""
    if image.dtype.kind not in "uif":
        raise TypeError(
            f"{what} has dtype {image.dtype}, which is not supported; give an integer "
            "(uint8, uint16, int...) or float (float16/32/64) array"
        )


def normalise_channel_axis(channel_axis: int | None, ndim: int, shape: tuple | None = None) -> int | None:
    """``channel_axis`` as a non-negative axis of an ``ndim``-dimensional image (None: grey)."""
    if channel_axis is None:
        return None
    if not isinstance(channel_axis, (int, np.integer)) or isinstance(channel_axis, bool):
        raise TypeError(f"channel_axis must be an int or None, got {channel_axis!r}")
    if not -ndim <= channel_axis < ndim:
        what = f"of shape {tuple(shape)}" if shape is not None else f"with {ndim} dimensions"
        raise ParameterError(f"{{channel_axis}} {channel_axis} is out of range for an image {what}")
    return int(channel_axis) % ndim


def guess_channel_axis(shape: tuple[int, ...]) -> int | None:
    """-1 for an image whose last axis holds 3 or 4 colour channels (RGB, RGBA), else None (grey)."""
    return -1 if len(shape) >= 3 and shape[-1] in (3, 4) else None


def split_channels(
    image: np.ndarray,
    channel_axis: int | None,
    has_alpha: bool | None,
    min_side: int = MIN_SIDE,
    what: str = "Deep Image Prior",
):
    """Validate the shape; return (array moved to (..., H, W, C), channel_axis, has_alpha)."""
    if image.size == 0:
        raise ValueError(f"image is empty (shape {image.shape}); give an image with pixels")
    ca = normalise_channel_axis(channel_axis, image.ndim, image.shape)
    min_ndim = 3 if ca is not None else 2
    if image.ndim < min_ndim:
        raise ParameterError(
            f"image has shape {image.shape}: a {'multichannel' if ca is not None else 'grey'} "
            f"image needs at least {min_ndim} dimensions"
            + (" (leave {channel_axis} None for a grey image)" if ca is not None else "")
        )
    arr = np.moveaxis(image, ca, -1) if ca is not None else image[..., None]
    h, w = arr.shape[-3:-1]
    if h < min_side or w < min_side:
        raise ParameterError(_too_small(image.shape, arr.shape, ca, min_side, what))
    c = arr.shape[-1]
    if has_alpha is None:
        has_alpha = ca is not None and ca == image.ndim - 1 and c == 4
    if has_alpha and c < 2:
        raise ParameterError("{has_alpha} needs at least 2 channels (colour + alpha)")
    return arr, ca, bool(has_alpha)


def _too_small(shape: tuple, planes_shape: tuple, ca: int | None, min_side: int, what: str) -> str:
    """The ParameterError template for planes smaller than ``min_side``: how the image was read."""
    h, w, c = planes_shape[-3:]
    n = int(np.prod(planes_shape[:-3], dtype=np.int64))
    planes = f"{n} planes of {h}x{w} pixels" if n > 1 else f"one plane of {h}x{w} pixels"
    if ca is None:
        read = f"read without a channel axis (grey) as {planes}"
    else:
        read = f"read with {c} channels on axis {ca} as {planes}"
    msg = f"the image of shape {tuple(shape)} was {read}; {what} needs at least {min_side}x{min_side} pixels a plane"
    small = [a for a, n_ in enumerate(shape) if n_ < min_side and a != ca]
    if ca is None and len(shape) >= 3 and shape[-1] < min_side:
        return msg + f"; if its last axis holds {shape[-1]} channels, give {{channel_axis}} -1"
    if ca is not None and small and small[-1] >= len(shape) - 3:
        return msg + f"; if axis {small[-1]} holds the channels, give {{channel_axis}} {small[-1]}"
    return msg + "; give a larger image"


def resolve_output_dtype(output_dtype, input_dtype: np.dtype, fractional_counts: bool = False) -> np.dtype | None:
    """The result's dtype for ``output_dtype`` (None: the policy; "input": the input's).

    ``fractional_counts``: the result is a rate estimate of integer counts (Poisson), which
    the policy returns as float32.
    """
    if output_dtype is None:
        return np.dtype(np.float32) if fractional_counts and input_dtype.kind in "ui" else None
    if isinstance(output_dtype, str) and output_dtype == "input":
        return None
    try:
        dt = np.dtype(output_dtype)
    except TypeError:
        dt = None
    if dt is None or dt.kind not in "uif":
        raise ParameterError(
            f"{{output_dtype}} {template_literal(repr(output_dtype))} is not supported; give None (the default "
            "policy), 'input' (the input's dtype) or an integer or float dtype such as 'float32' or 'uint16'"
        )
    return np.dtype(np.float32) if dt == np.float16 else dt


# -- the dtype / range / layout round trip ----------------------------------------------------


@dataclass
class Layout:
    """How normalised float planes map back to the user's array.

    :func:`normalise` makes one from an image; :func:`denormalise` applies it to any array of
    planes (the result, a preview, history frames).  ``value = work * scale + lo``.

    Attributes
    ----------
    dtype : numpy dtype
        The input's dtype.
    shape : tuple
        The input's shape.
    channel_axis : int or None
        The input's channel axis (non-negative), None for grey.
    stack_shape : tuple
        The leading (non-spatial, non-channel) axes, flattened into planes.
    lo, scale : float
        The affine map from the normalised planes to the input's values.
    alpha : ndarray or None
        (P, H, W, 1) alpha channel in the input's dtype, passed through untouched.
    source : ndarray
        (P, H, W, C) the fitted channels in the input's dtype (a view of the input): pixels
        kept exactly (known pixels of an inpainting) are taken from here.
    out_dtype : numpy dtype or None
        The result's dtype (None: the input's, float16 giving float32).
    counts_scale : float
        Photon counts per unit of the normalised planes (Poisson loss; 1 otherwise).
    """

    dtype: np.dtype
    shape: tuple[int, ...]
    channel_axis: int | None
    stack_shape: tuple[int, ...]
    lo: float
    scale: float
    alpha: np.ndarray | None
    source: np.ndarray
    out_dtype: np.dtype | None = None
    counts_scale: float = 1.0

    @property
    def result_dtype(self) -> np.dtype:
        """The dtype results and history frames are returned in."""
        if self.out_dtype is not None:
            return self.out_dtype
        return np.dtype(np.float32) if self.dtype == np.float16 else self.dtype

    def result_shape(self, height: int, width: int) -> tuple[int, ...]:
        """The shape of a result whose planes are ``height`` x ``width`` (in the input's layout)."""
        c = self.source.shape[-1] + (0 if self.alpha is None else 1)
        hwc = (height, width) + ((c,) if self.channel_axis is not None else ())
        full = self.stack_shape + hwc
        if self.channel_axis is None:
            return full
        order = list(full)
        ch = order.pop(-1)
        order.insert(self.channel_axis, ch)
        return tuple(order)


def planes_of(arr: np.ndarray, has_alpha: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(..., H, W, C) -> ((P, H, W, C') colour planes, (P, H, W, 1) alpha or None)."""
    h, w, c = arr.shape[-3:]
    planes = arr.reshape((-1, h, w, c))
    if not has_alpha:
        return planes, None
    return planes[..., :-1], planes[..., -1:].copy()


def check_finite(planes: np.ndarray, known: np.ndarray | None = None) -> np.ndarray | None:
    """Refuse NaN or infinite values, except in the holes of an inpainting.

    Parameters
    ----------
    planes : ndarray, shape (P, H, W, C)
    known : ndarray of bool, shape (P, H, W), optional
        The measured pixels (inpainting); non-finite values in the holes (``~known``) are
        allowed: they are unknown anyway.

    Returns
    -------
    ndarray of bool, shape (P, H, W, C), or None
        Where the (allowed) non-finite values are; None when every value is finite.
    """
    if planes.dtype.kind != "f":
        return None
    bad = ~np.isfinite(planes)
    if not bad.any():
        return None
    n_values = int(bad.sum())
    bad_px = bad.any(axis=-1)
    if known is None:
        raise ParameterError(
            f"image contains {n_values} NaN or infinite value(s) at {int(bad_px.sum())} pixel(s); a fit "
            "needs finite values: fill those pixels in with inpaint and a {mask} that covers them "
            "(nonzero wherever a value is not finite, e.g. ~np.isfinite(image) of a grey image), "
            "or replace them (e.g. np.nan_to_num)",
            params=("mask",),
        )
    outside = bad_px & known
    if outside.any():
        raise ParameterError(
            f"image contains {n_values} NaN or infinite value(s) at {int(bad_px.sum())} pixel(s), "
            f"{int(outside.sum())} of them outside the holes of the {{mask}}; non-finite values are "
            "accepted only inside the holes (they are filled in anyway): make the {mask} cover them "
            "(nonzero wherever a value is not finite) or replace them (e.g. np.nan_to_num)"
        )
    return bad


def check_data_range(data_range) -> tuple[float, float] | None:
    """``data_range`` as ``(lo, hi)`` floats, finite with ``lo <= hi`` (None stays None).

    The value range that :func:`normalise` maps to [0, 1] instead of the image's own minimum
    and maximum (see :func:`~napari_deep_prior.restore.api.prepare`).
    """
    if data_range is None:
        return None
    try:
        lo, hi = data_range
    except (TypeError, ValueError):
        raise TypeError(
            f"data_range must be a pair (lo, hi) of numbers, got {data_range!r}; give the minimum and "
            "maximum of the whole stack, or leave it out to use the image's own"
        ) from None
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"data_range must be a pair (lo, hi) of numbers, got {data_range!r}")
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ParameterError(
            f"{{data_range}} must be two finite numbers (lo, hi) with lo <= hi, got ({lo:g}, {hi:g}); "
            "give the minimum and maximum of the whole stack"
        )
    return lo, hi


def finite_range(values: np.ndarray) -> tuple[float, float] | None:
    """(min, max) of the finite values of an array as floats; None when it has none."""
    if values.dtype.kind == "f":
        ok = np.isfinite(values)
        if not ok.all():
            values = values[ok]
    if values.size == 0:
        return None
    return float(values.min()), float(values.max())


def check_values_in_range(lo: float, hi: float, data_range: tuple[float, float]) -> None:
    """Refuse values spanning ``[lo, hi]`` that do not lie within ``data_range``."""
    if lo < data_range[0] or hi > data_range[1]:
        raise ParameterError(
            f"the image's values span [{lo:g}, {hi:g}], outside the {{data_range}} "
            f"({data_range[0]:g}, {data_range[1]:g}); give the minimum and maximum of the whole stack "
            "(every plane's values must lie within it), or leave it out"
        )


def normalise(
    arr: np.ndarray,
    has_alpha: bool,
    shape,
    channel_axis,
    known: np.ndarray | None = None,
    data_range: tuple[float, float] | None = None,
) -> tuple[np.ndarray, Layout]:
    """(..., H, W, C) array -> ((P, H, W, C) float32 planes in [0, 1], the Layout back).

    ``known`` ((P, H, W) bool, an inpainting's measured pixels): NaN or infinite values are
    allowed in the holes; they are replaced by 0 (the range is that of the finite values).

    ``data_range`` ``(lo, hi)``: map this range to [0, 1] instead of the finite values' own
    minimum and maximum (which must lie within it; :func:`check_data_range`).  Normalising
    the planes of a stack one at a time with the whole stack's range gives exactly the values
    of normalising the whole stack at once.
    """
    planes, alpha = planes_of(arr, has_alpha)
    bad = check_finite(planes, known)
    finite = planes if bad is None else planes[~bad]
    lo = float(finite.min())
    hi = float(finite.max())
    data_range = check_data_range(data_range)
    if data_range is not None:
        check_values_in_range(lo, hi, data_range)
        lo, hi = data_range
    scale = hi - lo if hi > lo else 1.0
    work = (planes.astype(np.float64) - lo) / scale
    if bad is not None:
        work[bad] = 0.0
    layout = Layout(np.dtype(arr.dtype), tuple(shape), channel_axis, tuple(arr.shape[:-3]), lo, scale, alpha, planes)
    return work.astype(np.float32), layout


def denormalise(planes: np.ndarray, layout: Layout, keep=None) -> np.ndarray:
    """(..., P, H, W, C) normalised float -> the input's dtype, range and layout.

    ``keep = (known, source)``: pixels where ``known`` (P, H, W) is True take their exact
    values from ``source`` (P, H, W, C), the input planes in their own dtype.  The planes may
    be larger than the input's (an up-scaled result): the alpha channel is then resized with
    them (nearest neighbour).
    """
    lead = planes.shape[:-4]
    vals = planes.astype(np.float64) * layout.scale + layout.lo
    dt = layout.result_dtype
    if dt.kind in "ui":
        info = np.iinfo(dt)
        vals = np.clip(np.rint(vals), info.min, info.max).astype(dt)
    else:
        vals = vals.astype(dt)
    if keep is not None:
        known, source = keep
        with np.errstate(invalid="ignore"):  # NaN in the holes of an inpainting's source: not taken
            vals = np.where(known[..., None], source.astype(vals.dtype), vals)
    if layout.alpha is not None:
        alpha = layout.alpha
        if alpha.shape[1:3] != vals.shape[-3:-1]:
            ry = -(-vals.shape[-3] // alpha.shape[1])
            rx = -(-vals.shape[-2] // alpha.shape[2])
            alpha = alpha.repeat(ry, axis=1).repeat(rx, axis=2)[:, : vals.shape[-3], : vals.shape[-2]]
        alpha = np.broadcast_to(alpha.astype(vals.dtype), vals.shape[:-1] + (1,))
        vals = np.concatenate([vals, alpha], axis=-1)
    vals = vals.reshape(lead + layout.stack_shape + vals.shape[-3:])
    if layout.channel_axis is None:
        vals = vals[..., 0]
    else:
        vals = np.moveaxis(vals, -1, len(lead) + layout.channel_axis)
    return vals


def denormalise_frames(frames: Iterable[np.ndarray], n: int, layout: Layout, keep=None) -> np.ndarray:
    """Denormalise ``n`` history frames (each (P, H, W, C)) one at a time.

    The same values as :func:`denormalise` of the whole stack, without its float64 copy of
    every frame at once.
    """
    out = None
    for k, fr in enumerate(frames):
        d = denormalise(fr[None], layout, keep)
        if out is None:
            out = np.empty((n,) + d.shape[1:], dtype=d.dtype)
        out[k] = d[0]
    return out
