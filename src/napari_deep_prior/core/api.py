"""Public API: ``denoise`` and ``inpaint``, ndarray in, ndarray out.

One flow for every task: array in -> validated, normalised float planes -> a
:class:`DIPJob` whose ``steps()`` generator runs one :class:`~.fit.DIPFit` per plane ->
result back in the input's dtype, range and layout.  The napari widgets and the command
line are thin front ends over :func:`prepare_denoise` / :func:`prepare_inpaint`.

Dtype policy (tested): integer input is fitted as float in [0, 1] (scaled from its data
range) and comes back as the same integer dtype, rounded and clipped; float32/float64 keep
their dtype and range; float16 is computed and returned as float32.  The input array is
never modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generator, Literal

import numpy as np

from .params import DIPParams, get_preset

__all__ = [
    "denoise",
    "inpaint",
    "prepare_denoise",
    "prepare_inpaint",
    "DIPJob",
    "DIPOutput",
    "ImageTooLargeError",
    "MIN_SIDE",
]

#: Smallest height and width accepted (smaller images carry too little structure to fit).
MIN_SIDE = 8


class ImageTooLargeError(MemoryError, ValueError):
    """The estimated memory of a fit exceeds what the device has available."""


@dataclass
class DIPOutput:
    """Result of a DIP job, in the input's dtype and layout.

    Attributes
    ----------
    image : ndarray
        The restored image, same shape as the input (float16 input gives float32).
    history : ndarray or None
        Shape (F, *image.shape): frame k is the estimate at ``history_iterations[k]``.
        Planes that stopped earlier repeat their last frame.
    history_iterations : ndarray, shape (F,)
    history_losses : ndarray, shape (F, n_planes)
        Loss at each frame (NaN after a plane's stop).
    stop_iterations : list of int
        Per plane, the iteration the returned estimate comes from.
    iterations_run : list of int
        Per plane, the steps actually taken.
    planes_done : int
        Planes fitted to the end (fewer after a cancel).
    seed : int
    """

    image: np.ndarray
    history: np.ndarray | None
    history_iterations: np.ndarray
    history_losses: np.ndarray
    stop_iterations: list[int]
    iterations_run: list[int]
    planes_done: int
    seed: int
    fits: list = field(default_factory=list, repr=False)


@dataclass
class _Layout:
    dtype: np.dtype
    shape: tuple[int, ...]
    channel_axis: int | None
    stack_shape: tuple[int, ...]
    lo: float
    scale: float
    alpha: np.ndarray | None  # (P, H, W, 1) in the original dtype
    source: np.ndarray  # (P, H, W, C) the fitted channels, original dtype (a view of the input)


def _check_dtype(image: np.ndarray, what: str = "image") -> None:
    if image.dtype.kind not in "uif":
        raise TypeError(
            f"{what} has dtype {image.dtype}, which is not supported; give an integer "
            "(uint8, uint16, int...) or float (float16/32/64) array"
        )


def _normalise_channel_axis(channel_axis: int | None, ndim: int) -> int | None:
    if channel_axis is None:
        return None
    if not isinstance(channel_axis, (int, np.integer)) or isinstance(channel_axis, bool):
        raise TypeError(f"channel_axis must be an int or None, got {channel_axis!r}")
    if not -ndim <= channel_axis < ndim:
        raise ValueError(f"channel_axis={channel_axis} is out of range for an image with {ndim} dimensions")
    return int(channel_axis) % ndim


def _split_layout(image: np.ndarray, channel_axis: int | None, has_alpha: bool | None):
    """Validate the shape and return (array moved to (..., H, W, C), channel_axis, alpha flag)."""
    if image.size == 0:
        raise ValueError(f"image is empty (shape {image.shape}); give an image with pixels")
    ca = _normalise_channel_axis(channel_axis, image.ndim)
    min_ndim = 3 if ca is not None else 2
    if image.ndim < min_ndim:
        raise ValueError(
            f"image has shape {image.shape}: a {'multichannel' if ca is not None else 'grey'} "
            f"image needs at least {min_ndim} dimensions"
            + (" (set channel_axis=None for a grey image)" if ca is not None else "")
        )
    arr = np.moveaxis(image, ca, -1) if ca is not None else image[..., None]
    h, w = arr.shape[-3:-1]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(
            f"image is {h}x{w} pixels (shape {image.shape}); Deep Image Prior needs at least "
            f"{MIN_SIDE}x{MIN_SIDE} pixels in the last two spatial axes"
            + ("" if ca is not None else "; for an RGB image pass channel_axis=-1")
        )
    c = arr.shape[-1]
    if has_alpha is None:
        has_alpha = ca is not None and ca == image.ndim - 1 and c == 4
    if has_alpha and c < 2:
        raise ValueError("has_alpha=True needs at least 2 channels (colour + alpha)")
    return arr, ca, bool(has_alpha)


def _normalise(arr: np.ndarray, has_alpha: bool, poisson: bool, shape, ca) -> tuple[np.ndarray, _Layout]:
    stack_shape = arr.shape[:-3]
    h, w, c = arr.shape[-3:]
    planes = arr.reshape((-1, h, w, c))
    alpha = None
    if has_alpha:
        alpha = planes[..., -1:].copy()
        planes = planes[..., :-1]
    if planes.dtype.kind == "f":
        bad = ~np.isfinite(planes)
        if bad.any():
            raise ValueError(
                f"image contains {int(bad.sum())} NaN or infinite value(s); replace them "
                "(e.g. np.nan_to_num) or mark those pixels as holes and use inpaint"
            )
    lo = float(planes.min())
    hi = float(planes.max())
    if poisson:
        if lo < 0:
            raise ValueError(
                f"the Poisson loss needs non-negative photon counts, but the image has minimum {lo:g}; "
                "use loss='gaussian' or subtract the camera offset first"
            )
        lo = 0.0
    scale = hi - lo if hi > lo else 1.0
    work = (planes.astype(np.float64) - lo) / scale
    layout = _Layout(np.dtype(arr.dtype), tuple(shape), ca, tuple(stack_shape), lo, scale, alpha,
                     planes)
    return work.astype(np.float32), layout


def _denormalise(planes: np.ndarray, layout: _Layout, keep=None) -> np.ndarray:
    """(..., P, H, W, C) normalised float -> the input's dtype, range and layout.

    ``keep = (known, source)``: pixels where ``known`` (P, H, W) is True take their exact
    values from ``source`` (P, H, W, C), the input planes in their own dtype.
    """
    lead = planes.shape[:-4]
    vals = planes.astype(np.float64) * layout.scale + layout.lo
    dt = layout.dtype
    if dt.kind in "ui":
        info = np.iinfo(dt)
        vals = np.clip(np.rint(vals), info.min, info.max).astype(dt)
    else:
        vals = vals.astype(np.float32 if dt == np.float16 else dt)
    if keep is not None:
        known, source = keep
        vals = np.where(known[..., None], source.astype(vals.dtype), vals)
    if layout.alpha is not None:
        alpha = np.broadcast_to(layout.alpha.astype(vals.dtype), vals.shape[:-1] + (1,))
        vals = np.concatenate([vals, alpha], axis=-1)
    vals = vals.reshape(lead + layout.stack_shape + vals.shape[-3:])
    if layout.channel_axis is None:
        vals = vals[..., 0]
    else:
        vals = np.moveaxis(vals, -1, len(lead) + layout.channel_axis)
    return vals


def _resolve_params(task: str, preset: str | None, params: DIPParams | None, **overrides) -> DIPParams:
    if params is not None and not isinstance(params, DIPParams):
        raise TypeError(f"params must be a DIPParams, got {type(params).__name__}")
    p = params if params is not None else get_preset(preset or task, task=task)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "iterations" in changes:
        it = changes["iterations"]
        if isinstance(it, bool) or not isinstance(it, (int, np.integer)):
            raise TypeError(f"iterations must be an integer, got {it!r}")
        if it <= 0:
            raise ValueError(f"iterations must be a positive integer, got {it}")
        changes["iterations"] = int(it)
    return p.replace(**changes) if changes else p


def _new_seed() -> int:
    return int(np.random.SeedSequence().entropy % (2**31 - 1))


class DIPJob:
    """A validated denoise or inpaint job over one or more 2D planes.

    Create it with :func:`prepare_denoise` or :func:`prepare_inpaint` (all input checks
    happen there, before any heavy work); iterate :meth:`steps` to run it; call
    :meth:`result` at the end, or after a cancel to get what was computed so far (planes not
    reached keep the input's values).
    """

    def __init__(self, task: str, planes: np.ndarray, known: np.ndarray | None,
                 layout: _Layout, params: DIPParams, device, seed: int,
                 warm_start: bool = False):
        self.task = task
        self.planes = planes
        self.known = known  # (P, H, W) bool or None
        self.layout = layout
        self.params = params
        self.device = device
        self.seed = seed
        self.warm_start = warm_start
        self.fits: list = []  # DIPFit per plane started
        self.results: list = []  # FitResult per plane finished

    @property
    def n_planes(self) -> int:
        return self.planes.shape[0]

    def steps(self) -> Generator["Step", None, DIPOutput]:  # noqa: F821
        """Fit every plane in turn, yielding Step records (with ``plane``/``n_planes`` set)."""
        from .device import tune_cpu_allocator
        from .fit import DIPFit

        if self.device.type == "cpu":
            tune_cpu_allocator()
        counts_scale = self.layout.scale if self.params.loss == "poisson" else 1.0
        state = None
        try:
            for i in range(self.n_planes):
                known = None if self.known is None else self.known[i]
                if known is not None and known.all():
                    # this plane has nothing to fill: keep it as it is
                    self.fits.append(None)
                    self.results.append(None)
                    continue
                fit = DIPFit(self.planes[i], known=known, params=self.params, device=self.device,
                             seed=self.seed, counts_scale=counts_scale,
                             init_state=state if self.warm_start else None)
                self.fits.append(fit)
                gen = fit.steps()
                while True:
                    try:
                        step = next(gen)
                    except StopIteration as stop:
                        res = stop.value
                        break
                    step.plane, step.n_planes = i, self.n_planes
                    yield step
                self.results.append(res)
                state = res.state_dict
        finally:
            self._release()
        return self.result()

    def _release(self) -> None:
        for fit in self.fits:
            if fit is not None:
                fit._net = None
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    def result(self) -> DIPOutput:
        """Assemble the output from the planes fitted so far (a running plane gives its current estimate)."""
        p_count = self.n_planes
        h, w, c = self.planes.shape[1:]
        out = self.planes.copy()
        fit_results = []
        for i in range(p_count):
            res = None
            if i < len(self.results):
                res = self.results[i]
            elif i < len(self.fits) and self.fits[i] is not None and self.fits[i]._cand is not None:
                res = self.fits[i].result()
            fit_results.append(res)
            if res is not None:
                out[i] = res.image
        keep = None if self.known is None else (self.known, self.layout.source)
        history = None
        its = np.zeros(0, dtype=np.int64)
        hl = np.zeros((0, p_count))
        hists = [r.history for r in fit_results if r is not None and r.history is not None]
        if hists:
            longest = max(hists, key=lambda hh: len(hh.iterations))
            its = longest.iterations
            f = len(its)
            frames = np.repeat(out[None], f, axis=0) if f else np.zeros((0,) + out.shape, np.float32)
            hl = np.full((f, p_count), np.nan)
            for i, r in enumerate(fit_results):
                if r is None or r.history is None or len(r.history.iterations) == 0:
                    continue
                n = len(r.history.iterations)
                fr = r.history.frames
                frames[:n, i] = fr
                frames[n:, i] = fr[-1]
                hl[:n, i] = r.history.losses
            history = _denormalise(frames, self.layout, keep)
        return DIPOutput(
            image=_denormalise(out, self.layout, keep),
            history=history,
            history_iterations=np.asarray(its),
            history_losses=hl,
            stop_iterations=[r.iteration if r is not None else 0 for r in fit_results],
            iterations_run=[r.iterations_run if r is not None else 0 for r in fit_results],
            planes_done=len(self.results),
            seed=self.seed,
            fits=fit_results,
        )


def _check_memory(params: DIPParams, h: int, w: int, c: int, n_planes: int, device) -> None:
    from .device import available_memory
    from .fit import estimate_fit_bytes, history_iterations

    need = estimate_fit_bytes(params, h, w, c)
    need += 2 * len(history_iterations(params)) * n_planes * h * w * c * 4  # assembled history
    avail = available_memory(device)
    if avail is not None and need > 0.9 * avail:
        raise ImageTooLargeError(
            f"a {h}x{w}x{c} fit with this preset needs about {need / 2**30:.1f} GiB but only "
            f"{avail / 2**30:.1f} GiB is available on {device}; crop or downscale the image, "
            "choose a lighter preset, turn the history off (history_every=0) or use a GPU"
        )


def _prepare(task, image, mask, *, preset, params, channel_axis, has_alpha, device, seed,
             warm_start, **overrides) -> DIPJob:
    from .device import resolve_device

    p = _resolve_params(task, preset, params, **overrides)
    image = np.asarray(image)
    _check_dtype(image)
    arr, ca, alpha = _split_layout(image, channel_axis, has_alpha)
    h, w, c = arr.shape[-3:]
    c_fit = c - 1 if alpha else c
    n_planes = int(np.prod(arr.shape[:-3], dtype=np.int64))
    known = None
    if task == "inpaint":
        known = _validate_mask(mask, image.shape, arr.shape[:-1], n_planes)
    dev = resolve_device(device)
    _check_memory(p, h, w, c_fit, n_planes, dev)
    planes, layout = _normalise(arr, alpha, p.loss == "poisson", image.shape, ca)
    if seed is None:
        seed = _new_seed()
    elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer or None, got {seed!r}")
    return DIPJob(task, planes, known, layout, p, dev, int(seed), warm_start=warm_start)


def _validate_mask(mask, image_shape, spatial_shape, n_planes) -> np.ndarray:
    """Return known-pixel masks (P, H, W) from a hole mask (nonzero = fill)."""
    if mask is None:
        raise ValueError("inpaint needs a mask: nonzero where pixels must be filled")
    mask = np.asarray(mask)
    if mask.dtype.kind not in "buif":
        raise TypeError(f"mask has dtype {mask.dtype}; give a boolean or label (integer) array")
    hw = tuple(spatial_shape[-2:])
    if mask.shape == hw:
        holes = np.broadcast_to(mask != 0, (n_planes,) + hw)
    elif mask.shape == tuple(spatial_shape):
        holes = (mask != 0).reshape((n_planes,) + hw)
    else:
        raise ValueError(
            f"mask has shape {mask.shape} but image is {tuple(image_shape)} "
            f"(spatial shape {hw}); paint the mask on a layer of the image's size"
        )
    if mask.dtype.kind == "f" and not np.isfinite(mask).all():
        raise ValueError("mask contains NaN or infinite values; use a boolean or label array")
    if not holes.any():
        raise ValueError(
            "mask marks no pixel to fill (it is all zero); paint the damaged pixels with a "
            "nonzero label (or invert a mask where 0 marks the holes)"
        )
    full = holes.reshape(n_planes, -1).all(axis=1)
    if full.any():
        raise ValueError(
            "mask marks every pixel as a hole"
            + (f" in plane {int(np.argmax(full))}" if n_planes > 1 else "")
            + "; nothing is left to learn from: mark only the damaged pixels (or invert the mask)"
        )
    return ~holes


def prepare_denoise(image, *, preset: str | None = "denoise", params: DIPParams | None = None,
                    channel_axis: int | None = None, has_alpha: bool | None = None,
                    iterations: int | None = None, lr: float | None = None,
                    early_stop: bool | None = None, loss: Literal["gaussian", "poisson"] | None = None,
                    history_every: int | None = None, device="auto", seed: int | None = None,
                    warm_start: bool = False) -> DIPJob:
    """Validate a denoising job without running it (see :func:`denoise` for the parameters)."""
    return _prepare("denoise", image, None, preset=preset, params=params, channel_axis=channel_axis,
                    has_alpha=has_alpha, device=device, seed=seed, warm_start=warm_start,
                    iterations=iterations, lr=lr, early_stop=early_stop, loss=loss,
                    history_every=history_every)


def prepare_inpaint(image, mask, *, preset: str | None = "inpaint", params: DIPParams | None = None,
                    channel_axis: int | None = None, has_alpha: bool | None = None,
                    iterations: int | None = None, lr: float | None = None,
                    early_stop: bool | None = None, history_every: int | None = None,
                    device="auto", seed: int | None = None, warm_start: bool = False) -> DIPJob:
    """Validate an inpainting job without running it (see :func:`inpaint` for the parameters)."""
    return _prepare("inpaint", image, mask, preset=preset, params=params, channel_axis=channel_axis,
                    has_alpha=has_alpha, device=device, seed=seed, warm_start=warm_start,
                    iterations=iterations, lr=lr, early_stop=early_stop, history_every=history_every)


def _run(job: DIPJob, callback: Callable | None, return_history: bool):
    for step in job.steps():
        if callback is not None:
            callback(step)
    out = job.result()
    if return_history:
        return out.image, out
    return out.image


def denoise(image, *, preset: str | None = "denoise", params: DIPParams | None = None,
            channel_axis: int | None = None, has_alpha: bool | None = None,
            iterations: int | None = None, lr: float | None = None, early_stop: bool | None = None,
            loss: Literal["gaussian", "poisson"] | None = None, history_every: int | None = None,
            device="auto", seed: int | None = None, callback: Callable | None = None,
            return_history: bool = False, warm_start: bool = False):
    """Denoise an image with Deep Image Prior.

    A randomly initialised encoder-decoder is fitted to the noisy image; its architecture
    reproduces image structure long before noise, so the fit is stopped early (ES-WMV,
    automatically by default).

    Parameters
    ----------
    image : ndarray, shape (..., H, W) or (..., H, W, C)
        Grey image, image with channels (``channel_axis``), or an nD stack whose leading axes
        (time, z, ...) are processed plane by plane.  Integer or float dtype.
    preset : str, optional
        A key of :data:`~napari_deep_prior.core.params.PRESETS` or "paper".  Default "denoise".
    params : DIPParams, optional
        Full parameters (overrides ``preset``).
    channel_axis : int or None
        Axis of the channels; None means grey.
    has_alpha : bool or None
        Leave the last channel untouched (RGBA). None: True for 4 channels on the last axis.
    iterations, lr, early_stop, loss, history_every : optional
        Override the preset's values.  ``loss="poisson"`` for photon counts.
    device : {"auto", "cpu", "cuda", "mps"} or torch.device
    seed : int, optional
        Same seed, same result on the CPU.  None draws one (see the returned output's ``seed``).
    callback : callable, optional
        Called with every :class:`~napari_deep_prior.core.fit.Step`.
    return_history : bool
        Also return the :class:`DIPOutput` (history stack, iterations, losses, stops).
    warm_start : bool
        For stacks: start each plane from the previous plane's weights.

    Returns
    -------
    restored : ndarray
        Same shape and dtype as ``image`` (float16 gives float32).
    output : DIPOutput
        Only with ``return_history=True``.

    Raises
    ------
    ValueError, TypeError
        Bad shapes, dtypes, values or parameters, with the fix in the message.
    ImageTooLargeError
        The fit would not fit in the device's available memory.

    References
    ----------
    .. [1] D. Ulyanov, A. Vedaldi, V. Lempitsky, "Deep Image Prior", CVPR 2018.
    .. [2] H. Wang, T. Li, Z. Zhuang, T. Chen, H. Liang, J. Sun, "Early Stopping for Deep
       Image Prior", TMLR 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_deep_prior import denoise
    >>> rng = np.random.default_rng(0)
    >>> noisy = np.clip(0.5 + 0.1 * rng.standard_normal((32, 32)), 0, 1)
    >>> denoise(noisy, iterations=20, seed=0).shape
    (32, 32)
    """
    job = prepare_denoise(image, preset=preset, params=params, channel_axis=channel_axis,
                          has_alpha=has_alpha, iterations=iterations, lr=lr, early_stop=early_stop,
                          loss=loss, history_every=history_every, device=device, seed=seed,
                          warm_start=warm_start)
    return _run(job, callback, return_history)


def inpaint(image, mask, *, preset: str | None = "inpaint", params: DIPParams | None = None,
            channel_axis: int | None = None, has_alpha: bool | None = None,
            iterations: int | None = None, lr: float | None = None, early_stop: bool | None = None,
            history_every: int | None = None, device="auto", seed: int | None = None,
            callback: Callable | None = None, return_history: bool = False,
            warm_start: bool = False):
    """Fill the masked pixels of an image with Deep Image Prior.

    The network is fitted to the known pixels only; its output in the holes is the fill.
    Known pixels of the result keep their input values.

    Parameters
    ----------
    image : ndarray, shape (..., H, W) or (..., H, W, C)
        As for :func:`denoise`.
    mask : ndarray, shape (H, W) or the image's non-channel shape
        Boolean or label array: nonzero marks the pixels to fill.  A 2D mask applies to every
        plane of a stack.
    preset : str, optional
        Default "inpaint"; "paper" is the text-removal recipe; see
        :data:`~napari_deep_prior.core.params.PRESETS` for the large-hole, large-region and
        missing-pixel recipes.
    params, channel_axis, has_alpha, iterations, lr, early_stop, history_every, device, seed,
    callback, return_history, warm_start
        As for :func:`denoise`.

    Returns
    -------
    restored : ndarray
        Same shape and dtype as ``image`` (float16 gives float32).
    output : DIPOutput
        Only with ``return_history=True``.

    References
    ----------
    .. [1] D. Ulyanov, A. Vedaldi, V. Lempitsky, "Deep Image Prior", CVPR 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_deep_prior import inpaint
    >>> img = np.tile(np.linspace(0, 1, 32), (32, 1))
    >>> mask = np.zeros((32, 32), bool); mask[12:16, 12:16] = True
    >>> inpaint(img, mask, iterations=20, seed=0).shape
    (32, 32)
    """
    job = prepare_inpaint(image, mask, preset=preset, params=params, channel_axis=channel_axis,
                          has_alpha=has_alpha, iterations=iterations, lr=lr, early_stop=early_stop,
                          history_every=history_every, device=device, seed=seed,
                          warm_start=warm_start)
    return _run(job, callback, return_history)
