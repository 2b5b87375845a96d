"""Public API: ``denoise`` and ``inpaint``, ndarray in, ndarray out.

One flow for every task: array in -> validated, normalised float planes -> a
:class:`DIPJob` whose ``steps()`` generator runs one :class:`~.fit.DIPFit` per plane ->
result back in the input's dtype, range and layout.  The napari widgets and the command
line are thin front ends over :func:`prepare_denoise` / :func:`prepare_inpaint`.

Planes whose fit does not fit in the device's memory are processed in overlapping tiles
blended without seams (:mod:`.tiles`); ``tile_size`` controls it (None: automatic, 0: never).

Dtype policy (tested): integer input is fitted as float in [0, 1] (scaled from its data
range) and comes back as the same integer dtype, rounded and clipped; float32/float64 keep
their dtype and range; float16 is computed and returned as float32.  With the Poisson loss
the result is an estimate of the photon rate, which is fractional: integer counts come back
as float32 in the counts' units (``output_dtype="input"`` restores the rounded integers).
The input array is never modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generator, Literal

import numpy as np

from .params import DENOISE_DEFAULTS, DIPParams, get_preset

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
        The restored image, same shape as the input, in the dtype of the module's dtype
        policy (float16 input gives float32; integer counts with the Poisson loss give
        float32 rates; ``output_dtype`` overrides it).
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
    fits : list
        Per plane, the :class:`~.fit.FitResult` (None for a plane not fitted); for a tiled
        plane the last tile's, without its history and weights.
    notes : list of str
        Human-readable remarks on the run (e.g. a history dropped to save memory).
    tiles : list of (y0, y1, x0, x1) or None
        The tile plan of every plane when the image was processed in tiles.
    tile_stop_iterations, tile_iterations_run : list of list of int
        For tiled runs, per plane and tile (0 for a tile not fitted); ``stop_iterations``
        and ``iterations_run`` then hold the largest value over the plane's tiles.
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
    notes: list[str] = field(default_factory=list)
    tiles: list | None = field(default=None, repr=False)
    tile_stop_iterations: list[list[int]] = field(default_factory=list, repr=False)
    tile_iterations_run: list[list[int]] = field(default_factory=list, repr=False)


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
    out_dtype: np.dtype | None = None  # the result's dtype (None: the input's, float16 -> float32)
    counts_scale: float = 1.0  # Poisson loss: photon counts per unit of the normalised planes

    @property
    def result_dtype(self) -> np.dtype:
        """The dtype results and history frames are returned in."""
        if self.out_dtype is not None:
            return self.out_dtype
        return np.dtype(np.float32) if self.dtype == np.float16 else self.dtype


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


def _resolve_output_dtype(output_dtype, input_dtype: np.dtype, poisson: bool) -> np.dtype | None:
    """The result's dtype for ``output_dtype`` (None: the policy; "input": the input's)."""
    if output_dtype is None:
        # a Poisson rate estimate is fractional: integer counts come back as float32
        return np.dtype(np.float32) if poisson and input_dtype.kind in "ui" else None
    if isinstance(output_dtype, str) and output_dtype == "input":
        return None
    try:
        dt = np.dtype(output_dtype)
    except TypeError:
        dt = None
    if dt is None or dt.kind not in "uif":
        raise ValueError(
            f"output_dtype={output_dtype!r} is not supported; give None (the default policy), "
            "'input' (the input's dtype) or an integer or float dtype such as 'float32' or 'uint16'"
        )
    return np.dtype(np.float32) if dt == np.float16 else dt


@dataclass(frozen=True)
class CameraModel:
    """How a camera's values relate to photon counts (the Poisson loss only).

    ``photons = (value - offset) / gain``, plus Gaussian read noise of ``read_noise``
    photons (electrons) rms, handled by the shifted-Poisson approximation: ``photons +
    read_noise**2`` is fitted as Poisson counts of rate ``rate + read_noise**2`` (its
    variance is right), and the rate is returned in the input's units, ``rate * gain +
    offset``.
    """

    offset: float = 0.0
    gain: float = 1.0
    read_noise: float = 0.0

    @classmethod
    def from_args(cls, offset, gain, read_noise, poisson: bool) -> "CameraModel | None":
        given = {k: v for k, v in (("camera_offset", offset), ("gain", gain), ("read_noise", read_noise))
                 if v is not None}
        if not given:
            return None
        if not poisson:
            raise ValueError(
                f"{' and '.join(given)} describe{'s' if len(given) == 1 else ''} how the image "
                "relates to photon counts, which only the Poisson loss uses; pass loss='poisson' "
                "as well, or leave them out"
            )
        for name, v in given.items():
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not np.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if "gain" in given and not given["gain"] > 0:
            raise ValueError(f"gain must be > 0 (camera units per photon), got {given['gain']}")
        if "read_noise" in given and given["read_noise"] < 0:
            raise ValueError(f"read_noise must be >= 0 (photons rms), got {given['read_noise']}")
        return cls(float(offset or 0.0), float(1.0 if gain is None else gain), float(read_noise or 0.0))


def _normalise(arr: np.ndarray, has_alpha: bool, poisson: bool, shape, ca,
               camera: CameraModel | None = None) -> tuple[np.ndarray, _Layout]:
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
    if poisson:
        return _normalise_counts(planes, camera, arr.dtype, shape, ca, stack_shape, alpha)
    lo = float(planes.min())
    hi = float(planes.max())
    scale = hi - lo if hi > lo else 1.0
    work = (planes.astype(np.float64) - lo) / scale
    layout = _Layout(np.dtype(arr.dtype), tuple(shape), ca, tuple(stack_shape), lo, scale, alpha,
                     planes)
    return work.astype(np.float32), layout


def _normalise_counts(planes, camera, dtype, shape, ca, stack_shape, alpha):
    """Planes of photon counts (after the camera model) scaled to [0, 1]; the layout maps back."""
    cam = camera or CameraModel()
    photons = (planes.astype(np.float64) - cam.offset) / cam.gain + cam.read_noise ** 2
    low = float(photons.min())
    if low < 0:
        if camera is None:
            raise ValueError(
                f"the Poisson loss needs non-negative photon counts, but the image has minimum "
                f"{low:g}; convert camera values to counts first (camera_offset=..., gain=..., "
                "read_noise=...; on the command line --offset, --gain, --read-noise) or use "
                "loss='gaussian'"
            )
        # values below the offset are read noise: the shifted counts are clipped at 0
        np.maximum(photons, 0.0, out=photons)
    counts_scale = float(photons.max()) or 1.0
    # value = work * scale + lo inverts photons = (value - offset) / gain + read_noise**2
    layout = _Layout(np.dtype(dtype), tuple(shape), ca, tuple(stack_shape),
                     cam.offset - cam.read_noise ** 2 * cam.gain, counts_scale * cam.gain, alpha,
                     planes, counts_scale=counts_scale)
    return (photons / counts_scale).astype(np.float32), layout


def _denormalise(planes: np.ndarray, layout: _Layout, keep=None) -> np.ndarray:
    """(..., P, H, W, C) normalised float -> the input's dtype, range and layout.

    ``keep = (known, source)``: pixels where ``known`` (P, H, W) is True take their exact
    values from ``source`` (P, H, W, C), the input planes in their own dtype.
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
    name = preset or task
    if params is None and name == DENOISE_DEFAULTS["gaussian"] and overrides.get("loss") == "poisson":
        # the default for photon counts is its own preset (net, learning rate and stop)
        name = DENOISE_DEFAULTS["poisson"]
    p = params if params is not None else get_preset(name, task=task)
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


def _denormalise_frames(frames, n: int, layout: _Layout, keep=None) -> np.ndarray:
    """Denormalise ``n`` history frames (each (P, H, W, C)) one at a time.

    The same values as ``_denormalise`` of the whole stack, without its float64 copy of
    every frame at once.
    """
    out = None
    for k, fr in enumerate(frames):
        d = _denormalise(fr[None], layout, keep)
        if out is None:
            out = np.empty((n,) + d.shape[1:], dtype=d.dtype)
        out[k] = d[0]
    return out


def _relay(fit, *, preview: Callable | None = None, **fields):
    """Yield the Steps of one fit with ``fields`` (plane, tile...) set; return its FitResult.

    ``preview`` maps a Step's preview image (a tiled plane shows the whole plane blended).
    """
    gen = fit.steps()
    while True:
        try:
            step = next(gen)
        except StopIteration as stop:
            return stop.value
        for name, value in fields.items():
            setattr(step, name, value)
        if preview is not None and step.preview is not None:
            step.preview = preview(step.preview)
        yield step


class DIPJob:
    """A validated denoise or inpaint job over one or more 2D planes.

    Create it with :func:`prepare_denoise` or :func:`prepare_inpaint` (all input checks
    happen there, before any heavy work); iterate :meth:`steps` to run it; call
    :meth:`result` at the end, or after a cancel to get what was computed so far (planes not
    reached keep the input's values).

    Attributes
    ----------
    tiles : list of (y0, y1, x0, x1) or None
        The tile plan applied to every plane (None: each plane is fitted whole).
    tile_overlap : int or None
        Minimum overlap of neighbouring tiles.
    fit_params : DIPParams
        The parameters of each fit (``params``, with the history turned off when a tiled
        history would not fit in memory).
    notes : list of str
        Remarks passed on to :attr:`DIPOutput.notes`.
    """

    def __init__(self, task: str, planes: np.ndarray, known: np.ndarray | None,
                 layout: _Layout, params: DIPParams, device, seed: int,
                 warm_start: bool = False, *, tiles: list | None = None,
                 tile_overlap: int | None = None, fit_params: DIPParams | None = None,
                 notes: list[str] | None = None):
        self.task = task
        self.planes = planes
        self.known = known  # (P, H, W) bool or None
        self.layout = layout
        self.params = params
        self.device = device
        self.seed = seed
        self.warm_start = warm_start
        self.tiles = None if tiles is None else [tuple(int(v) for v in b) for b in tiles]
        self.tile_overlap = tile_overlap
        self.fit_params = params if fit_params is None else fit_params
        self.notes = list(notes or [])
        self.fits: list = []  # per plane started: its DIPFit (tiled: the running tile's, else None)
        self.results: list = []  # FitResult per plane finished (tiled: the last tile's, stripped)
        # tiled runs: the running plane's blender, finished planes' images, per-tile metadata
        self._blender = None
        self._blend_plane = -1
        self._tile = -1
        self._tiled_images: dict[int, np.ndarray] = {}
        n_tiles = 0 if self.tiles is None else len(self.tiles)
        self._tile_stops = [[0] * n_tiles for _ in range(self.n_planes)]
        self._tile_runs = [[0] * n_tiles for _ in range(self.n_planes)]
        self._hist_num: np.ndarray | None = None  # (F, P, H, W, C) tiled history
        self._hist_loss_sum: np.ndarray | None = None
        self._hist_loss_n: np.ndarray | None = None
        self._hist_len = np.zeros(self.n_planes, dtype=np.int64)

    @property
    def n_planes(self) -> int:
        return self.planes.shape[0]

    @property
    def n_tiles(self) -> int:
        """Tiles per plane (1 when planes are fitted whole)."""
        return 1 if self.tiles is None else len(self.tiles)

    def steps(self) -> Generator["Step", None, DIPOutput]:  # noqa: F821
        """Fit every plane (and tile) in turn, yielding Step records.

        ``plane``/``n_planes`` and ``tile``/``n_tiles`` are set on every Step; a tiled
        plane's preview is the whole plane blended so far.
        """
        from .device import tune_cpu_allocator
        from .fit import DIPFit

        if self.device.type == "cpu":
            tune_cpu_allocator()
        elif self.device.type == "cuda":
            import torch

            # every step of a fit has the same shapes: let cuDNN pick its fastest kernels once
            torch.backends.cudnn.benchmark = True
        counts_scale = self.layout.counts_scale if self.params.loss == "poisson" else 1.0
        state = None
        try:
            for i in range(self.n_planes):
                known = None if self.known is None else self.known[i]
                if known is not None and known.all():
                    # this plane has nothing to fill: keep it as it is
                    self.fits.append(None)
                    self.results.append(None)
                    continue
                if self.tiles is not None:
                    state = yield from self._fit_tiles(i, known, counts_scale, state)
                    continue
                fit = DIPFit(self.planes[i], known=known, params=self.fit_params, device=self.device,
                             seed=self.seed, counts_scale=counts_scale,
                             init_state=state if self.warm_start else None)
                self.fits.append(fit)
                res = yield from _relay(fit, plane=i, n_planes=self.n_planes)
                self.results.append(res)
                if state is None:
                    # The warm start of every later plane: the first fitted plane's weights at
                    # its early-stopping point.  Chaining each plane's weights on to the next
                    # kept adding fitting steps and lost up to 1 dB by the 8th plane of a
                    # 128 px stack (benchmarks/dip_stack.py); the first cold fit does not drift.
                    state = res.state_dict
        finally:
            self._release()
        return self.result()

    def _fit_tiles(self, i: int, known, counts_scale: float, state):
        """Fit plane ``i`` tile by tile, blending each tile as it finishes."""
        from dataclasses import replace

        from .fit import DIPFit, history_iterations
        from .tiles import TileBlender

        h, w, c = self.planes.shape[1:]
        n_frames = len(history_iterations(self.fit_params))
        if n_frames and self._hist_num is None:
            self._hist_num = np.zeros((n_frames, self.n_planes, h, w, c), dtype=np.float32)
            self._hist_loss_sum = np.zeros((n_frames, self.n_planes))
            self._hist_loss_n = np.zeros((n_frames, self.n_planes), dtype=np.int64)
        blender = TileBlender(h, w, c, self.tiles, n_frames=n_frames,
                              frames=None if not n_frames else self._hist_num[:, i])
        self._blender, self._blend_plane = blender, i
        self.fits.append(None)
        last = None
        n_tiles = len(self.tiles)
        for k, (y0, y1, x0, x1) in enumerate(self.tiles):
            kt = None if known is None else known[y0:y1, x0:x1]
            if kt is not None and kt.all():
                continue  # no hole in this tile: its pixels keep their input values
            fit = DIPFit(self.planes[i, y0:y1, x0:x1], known=kt, params=self.fit_params,
                         device=self.device, seed=self.seed, counts_scale=counts_scale,
                         init_state=state if self.warm_start else None)
            self.fits[i], self._tile = fit, k
            res = yield from _relay(
                fit, plane=i, n_planes=self.n_planes, tile=k, n_tiles=n_tiles,
                preview=lambda prev, k=k: blender.image(self.planes[i], extra=(k, prev)))
            hist = res.history
            blender.add(k, res.image, None if hist is None else hist.frames)
            if hist is not None and len(hist.losses):
                m = len(hist.losses)
                self._hist_loss_sum[:m, i] += hist.losses
                self._hist_loss_n[:m, i] += 1
                self._hist_len[i] = max(self._hist_len[i], m)
            self._tile_stops[i][k] = int(res.iteration)
            self._tile_runs[i][k] = int(res.iterations_run)
            if self.warm_start and state is None:
                state = res.state_dict  # the first fitted tile's, as for planes
            # keep small metadata only: no tile image history or weights stay alive
            last = replace(res, history=None, state_dict=None)
            fit._net = None
            self.fits[i] = None
            del fit, res, hist
        self._tiled_images[i] = blender.image(self.planes[i])
        blender.finalise_frames(self.planes[i])
        self._blender, self._blend_plane, self._tile = None, -1, -1
        self.results.append(last)
        return state

    def _release(self) -> None:
        for fit in self.fits:
            if fit is not None:
                fit._net = None
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    def result(self) -> DIPOutput:
        """Assemble the output from the planes fitted so far (a running plane gives its current estimate)."""
        if self.tiles is not None:
            return self._tiled_result()
        p_count = self.n_planes
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
            history = (_denormalise_frames(frames, f, self.layout, keep) if f
                       else _denormalise(frames, self.layout, keep))
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
            notes=list(self.notes),
        )

    def _tiled_result(self) -> DIPOutput:
        from dataclasses import replace

        from .fit import history_iterations

        p_count = self.n_planes
        out = self.planes.copy()
        fit_results: list = []
        stops = [list(s) for s in self._tile_stops]
        runs = [list(r) for r in self._tile_runs]
        running = None  # (plane, tile, FitResult of the running tile) after a cancel
        for i in range(p_count):
            res = None
            if i < len(self.results):
                res = self.results[i]
                if i in self._tiled_images:
                    out[i] = self._tiled_images[i]
            elif i == self._blend_plane and self._blender is not None:
                fit = self.fits[i] if i < len(self.fits) else None
                extra = None
                if fit is not None and fit._cand is not None:
                    cur = fit.result()
                    running = (i, self._tile, cur)
                    extra = (self._tile, cur.image)
                    stops[i][self._tile] = int(cur.iteration)
                    runs[i][self._tile] = int(cur.iterations_run)
                    res = replace(cur, history=None, state_dict=None)
                out[i] = self._blender.image(self.planes[i], extra=extra)
            fit_results.append(res)
        keep = None if self.known is None else (self.known, self.layout.source)
        history = None
        its = np.zeros(0, dtype=np.int64)
        hl = np.zeros((0, p_count))
        if self._hist_num is not None:
            hist_len = self._hist_len.copy()
            loss_sum = self._hist_loss_sum.copy()
            loss_n = self._hist_loss_n.copy()
            run_hist = None
            if running is not None and running[2].history is not None:
                i, _k, cur = running
                run_hist = cur.history
                m = len(run_hist.losses)
                loss_sum[:m, i] += run_hist.losses
                loss_n[:m, i] += 1
                hist_len[i] = max(hist_len[i], m)
            f = int(hist_len.max())
            its = history_iterations(self.fit_params)[:f]
            with np.errstate(invalid="ignore"):
                hl = np.where(loss_n[:f] > 0, loss_sum[:f] / np.maximum(loss_n[:f], 1), np.nan)
            if f:
                history = _denormalise_frames(self._tiled_frames(f, running, run_hist), f,
                                              self.layout, keep)
        return DIPOutput(
            image=_denormalise(out, self.layout, keep),
            history=history,
            history_iterations=np.asarray(its),
            history_losses=hl,
            stop_iterations=[max(s) if s else 0 for s in stops],
            iterations_run=[max(r) if r else 0 for r in runs],
            planes_done=len(self.results),
            seed=self.seed,
            fits=fit_results,
            notes=list(self.notes),
            tiles=list(self.tiles),
            tile_stop_iterations=stops,
            tile_iterations_run=runs,
        )

    def _tiled_frames(self, f: int, running, run_hist):
        """Yield the first ``f`` normalised history frames, each (P, H, W, C)."""
        live = None
        if self._blender is not None:
            i = self._blend_plane
            extra = None
            if running is not None:
                _i, k, cur = running
                extra = (k, cur.image, None if run_hist is None else run_hist.frames)
            live = (i, self._blender.frame_images(self.planes[i], extra=extra))
        for k in range(f):
            frame = np.empty(self.planes.shape, dtype=np.float32)
            for i in range(self.n_planes):
                if i in self._tiled_images:
                    frame[i] = self._hist_num[k, i]  # normalised when the plane finished
                else:
                    frame[i] = self.planes[i]
            if live is not None:
                frame[live[0]] = next(live[1])
            yield frame


def _check_size_arg(value, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer or None, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 (or None for automatic), got {value}")
    return int(value)


def _tiled_output_bytes(h: int, w: int, c: int, n_planes: int) -> int:
    """Memory of a tiled run's full-size buffers: blending sums, finished planes, the output."""
    # weighted sum and sum of weights; finished planes; the result's float32 copy, its float64
    # scaling and the output array (up to 8 bytes per value)
    return 4 * h * w * (c + 1) + n_planes * h * w * c * (4 + 4 + 8 + 8)


def _plan_tiles(params: DIPParams, h: int, w: int, c: int, n_planes: int, device,
                tile_size: int | None, tile_overlap: int | None):
    """Decide whether and how to tile; returns (tiles, overlap, fit_params, notes).

    Raises ImageTooLargeError when neither the whole plane nor tiles fit in memory.
    """
    from .device import available_memory
    from .fit import estimate_fit_bytes, history_iterations
    from .nets import min_padded_side, required_multiple
    from .tiles import MIN_TILE, choose_tile_size, default_overlap, plan_tiles

    tile_size = _check_size_arg(tile_size, "tile_size")
    tile_overlap = _check_size_arg(tile_overlap, "tile_overlap")
    mult = required_multiple(params.net)
    min_tile = max(MIN_TILE, min_padded_side(params.net))
    min_tile = -(-min_tile // mult) * mult
    if tile_size:
        if tile_size < min_tile:
            raise ValueError(
                f"tile_size={tile_size} is too small for this network: tiles need at least "
                f"{min_tile} pixels a side (or use tile_size=None for automatic, 0 for none)"
            )
        tile_size = -(-tile_size // mult) * mult
    n_frames = len(history_iterations(params))
    hist_bytes = 2 * n_frames * n_planes * h * w * c * 4  # assembled history
    need = estimate_fit_bytes(params, h, w, c) + hist_bytes
    avail = available_memory(device)
    budget = None if avail is None else 0.9 * avail
    whole_fits = budget is None or need <= budget
    forced_whole = tile_size is not None and tile_size >= max(h, w)
    if tile_size == 0 or forced_whole or (tile_size is None and whole_fits):
        if not whole_fits:
            raise ImageTooLargeError(
                f"a {h}x{w}x{c} fit with this preset needs about {need / 2**30:.1f} GiB but only "
                f"{avail / 2**30:.1f} GiB is available on {device}; process it in tiles "
                "(tile_size=None for automatic tiles, or a tile side), crop or downscale the "
                "image, choose a lighter preset, turn the history off (history_every=0) or use a GPU"
            )
        return None, None, params, []

    out_bytes = _tiled_output_bytes(h, w, c, n_planes)
    no_hist = params.replace(history_every=0) if n_frames else params
    if tile_size is None:
        free = budget - out_bytes
        keep_hist = n_frames > 0 and hist_bytes <= 0.5 * free
        fit_params = params if keep_hist else no_hist
        try:
            tile = choose_tile_size(fit_params, h, w, c, free - (hist_bytes if keep_hist else 0))
        except ImageTooLargeError as exc:
            raise ImageTooLargeError(
                f"a {h}x{w}x{c} fit with this preset needs about {need / 2**30:.1f} GiB but only "
                f"{avail / 2**30:.1f} GiB is available on {device}, and processing it in tiles "
                f"does not fit either ({exc}; the {n_planes}-plane output buffers need "
                f"{out_bytes / 2**30:.2f} GiB); crop or downscale the image, choose a lighter "
                "preset or use a device with more memory"
            ) from None
    else:
        tile = tile_size
        keep_hist = n_frames > 0
        fit_params = params
        if budget is not None:
            th, tw = min(tile, h), min(tile, w)
            keep_hist = (n_frames > 0
                         and out_bytes + hist_bytes + estimate_fit_bytes(params, th, tw, c) <= budget)
            fit_params = params if keep_hist else no_hist
            tile_need = estimate_fit_bytes(fit_params, th, tw, c) + out_bytes
            if tile_need > budget:
                raise ImageTooLargeError(
                    f"tiles of {tile}x{tile} pixels need about {tile_need / 2**30:.2f} GiB with the "
                    f"output buffers but only {avail / 2**30:.1f} GiB is available on {device}; "
                    "use a smaller tile_size or tile_size=None (automatic)"
                )
    if tile_size is None:
        tile = _shrink_tile(tile, h, w, min_tile, mult, tile_overlap)
    overlap = default_overlap(tile) if tile_overlap is None else tile_overlap
    if overlap >= tile:
        raise ValueError(f"tile_overlap={overlap} must be smaller than the tile side ({tile})")
    tiles = plan_tiles(h, w, tile, overlap)
    notes = []
    if n_frames and not keep_hist:
        notes.append(
            f"history dropped: the image is processed in {len(tiles)} tiles of {tile}x{tile} "
            f"pixels and its {n_frames}-frame history (about {hist_bytes / 2**30:.1f} GiB) does "
            "not fit in the memory available; crop the image to get a history, or set "
            "history_every=0 to silence this note"
        )
    return tiles, overlap, fit_params, notes


def _shrink_tile(tile: int, h: int, w: int, min_tile: int, mult: int, overlap: int | None) -> int:
    """The smallest tile side (a multiple of ``mult``) that needs no more tiles than ``tile``.

    Memory decides the largest side; tiles that just cover the image waste less work on
    overlaps (a 4096 px square with memory for 2048 px tiles needs 3 x 3 tiles either way:
    2048 px tiles overlap by 1024 px, 1504 px tiles by 188 px, with 54 % of the pixels).
    """
    from .tiles import default_overlap

    def counts(t):
        ov = default_overlap(t) if overlap is None else overlap
        if ov >= t:
            return None
        return tuple(1 if n <= t else 1 + -(-(n - t) // (t - ov)) for n in (h, w))

    target = counts(tile)
    best = tile
    t = tile - mult
    while t >= min_tile:
        c = counts(t)
        if c is None or c[0] > target[0] or c[1] > target[1]:
            break
        best = t
        t -= mult
    return best


def _check_tile_known(known: np.ndarray, tiles: list, tile: int) -> None:
    """Every tile that has a hole must also have known pixels to learn from."""
    planes = range(1) if known.strides[0] == 0 else range(known.shape[0])
    for p in planes:
        kp = known[p]
        if kp.all():
            continue
        for (y0, y1, x0, x1) in tiles:
            if not kp[y0:y1, x0:x1].any():
                where = f" of plane {p}" if known.shape[0] > 1 and known.strides[0] != 0 else ""
                raise ValueError(
                    f"tile rows {y0}:{y1}, columns {x0}:{x1}{where} lies entirely inside the hole: "
                    f"it has no known pixel to learn from; use a larger tile_size (now {tile}) "
                    "so every tile reaches known pixels"
                )


def _prepare(task, image, mask, *, preset, params, channel_axis, has_alpha, device, seed,
             warm_start, tile_size=None, tile_overlap=None, output_dtype=None,
             camera_offset=None, gain=None, read_noise=None, **overrides) -> DIPJob:
    from .device import resolve_device

    p = _resolve_params(task, preset, params, **overrides)
    image = np.asarray(image)
    _check_dtype(image)
    out_dtype = _resolve_output_dtype(output_dtype, image.dtype, p.loss == "poisson")
    camera = CameraModel.from_args(camera_offset, gain, read_noise, p.loss == "poisson")
    arr, ca, alpha = _split_layout(image, channel_axis, has_alpha)
    h, w, c = arr.shape[-3:]
    c_fit = c - 1 if alpha else c
    n_planes = int(np.prod(arr.shape[:-3], dtype=np.int64))
    known = None
    if task == "inpaint":
        known = _validate_mask(mask, image.shape, arr.shape[:-1], n_planes)
    dev = resolve_device(device)
    tiles, overlap, fit_params, notes = _plan_tiles(p, h, w, c_fit, n_planes, dev, tile_size,
                                                    tile_overlap)
    if tiles is not None and known is not None:
        _check_tile_known(known, tiles, max(max(y1 - y0, x1 - x0) for y0, y1, x0, x1 in tiles))
    planes, layout = _normalise(arr, alpha, p.loss == "poisson", image.shape, ca, camera)
    layout.out_dtype = out_dtype
    if seed is None:
        seed = _new_seed()
    elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer or None, got {seed!r}")
    return DIPJob(task, planes, known, layout, p, dev, int(seed), warm_start=warm_start,
                  tiles=tiles, tile_overlap=overlap, fit_params=fit_params, notes=notes)


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
                    warm_start: bool = False, tile_size: int | None = None,
                    tile_overlap: int | None = None, output_dtype=None,
                    camera_offset: float | None = None, gain: float | None = None,
                    read_noise: float | None = None) -> DIPJob:
    """Validate a denoising job without running it (see :func:`denoise` for the parameters)."""
    return _prepare("denoise", image, None, preset=preset, params=params, channel_axis=channel_axis,
                    has_alpha=has_alpha, device=device, seed=seed, warm_start=warm_start,
                    tile_size=tile_size, tile_overlap=tile_overlap, output_dtype=output_dtype,
                    camera_offset=camera_offset, gain=gain, read_noise=read_noise,
                    iterations=iterations, lr=lr, early_stop=early_stop, loss=loss,
                    history_every=history_every)


def prepare_inpaint(image, mask, *, preset: str | None = "inpaint", params: DIPParams | None = None,
                    channel_axis: int | None = None, has_alpha: bool | None = None,
                    iterations: int | None = None, lr: float | None = None,
                    early_stop: bool | None = None, history_every: int | None = None,
                    device="auto", seed: int | None = None, warm_start: bool = False,
                    tile_size: int | None = None, tile_overlap: int | None = None,
                    output_dtype=None) -> DIPJob:
    """Validate an inpainting job without running it (see :func:`inpaint` for the parameters)."""
    return _prepare("inpaint", image, mask, preset=preset, params=params, channel_axis=channel_axis,
                    has_alpha=has_alpha, device=device, seed=seed, warm_start=warm_start,
                    tile_size=tile_size, tile_overlap=tile_overlap, output_dtype=output_dtype,
                    iterations=iterations, lr=lr, early_stop=early_stop, history_every=history_every)


def _run(job: DIPJob, callback: Callable | None, return_history: bool):
    gen = job.steps()
    while True:
        try:
            step = next(gen)
        except StopIteration as stop:
            out = stop.value  # steps() assembles the result once; no second copy
            break
        if callback is not None:
            callback(step)
    if return_history:
        return out.image, out
    return out.image


def denoise(image, *, preset: str | None = "denoise", params: DIPParams | None = None,
            channel_axis: int | None = None, has_alpha: bool | None = None,
            iterations: int | None = None, lr: float | None = None, early_stop: bool | None = None,
            loss: Literal["gaussian", "poisson"] | None = None, history_every: int | None = None,
            device="auto", seed: int | None = None, callback: Callable | None = None,
            return_history: bool = False, warm_start: bool = False,
            tile_size: int | None = None, tile_overlap: int | None = None, output_dtype=None,
            camera_offset: float | None = None, gain: float | None = None,
            read_noise: float | None = None):
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
        Override the preset's values.  ``loss="poisson"`` for photon counts (the image must
        be the counts themselves: subtract a camera offset and divide by the gain first); with
        the default preset it selects the ``"denoise-poisson"`` preset, which stops where the
        fit's deviance from the counts reaches the deviance Poisson noise leaves.
    device : {"auto", "cpu", "cuda", "mps"} or torch.device
    seed : int, optional
        Same seed, same result on the CPU.  None draws one (see the returned output's ``seed``).
    callback : callable, optional
        Called with every :class:`~napari_deep_prior.core.fit.Step`.
    return_history : bool
        Also return the :class:`DIPOutput` (history stack, iterations, losses, stops).
    warm_start : bool
        For stacks: start each plane from the previous plane's weights (and, for tiled
        planes, each tile from the previous tile's).
    tile_size : int or None
        Process each plane in overlapping square tiles of this side, blended without seams,
        so images too large for one fit still run.  None (default): automatic, only when the
        whole-plane fit would not fit in the device's available memory (the largest tile
        that fits is used); 0: never (raise :class:`ImageTooLargeError` instead); a positive
        side forces tiles (at least the network's smallest input, rounded up to a multiple of
        ``2 ** depth``).  A tiled run keeps its history only when it fits in memory (see
        ``DIPOutput.notes``).
    tile_overlap : int or None
        Minimum overlap of neighbouring tiles (default ``max(16, tile // 8)``, even).
    output_dtype : None, "input" or dtype
        dtype of the result and its history.  None (default): the input's dtype (float16
        gives float32), except that integer counts denoised with ``loss="poisson"`` come
        back as float32 rates in the counts' units; "input": always the input's dtype
        (integers rounded and clipped); or any integer or float dtype.
    camera_offset, gain, read_noise : float, optional
        Poisson loss on camera values that are not photon counts (e.g. sCMOS in ADU):
        ``photons = (image - camera_offset) / gain`` (gain in camera units per photon), with
        Gaussian read noise of ``read_noise`` photons rms (shifted-Poisson approximation).
        The result is the rate in the image's units (``rate * gain + camera_offset``).

    Returns
    -------
    restored : ndarray
        Same shape as ``image``, dtype as ``output_dtype`` says.
    output : DIPOutput
        Only with ``return_history=True``.

    Raises
    ------
    ValueError, TypeError
        Bad shapes, dtypes, values or parameters, with the fix in the message.
    ImageTooLargeError
        The fit would not fit in the device's available memory, even in tiles (or with
        ``tile_size=0``).

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
                          warm_start=warm_start, tile_size=tile_size, tile_overlap=tile_overlap,
                          output_dtype=output_dtype, camera_offset=camera_offset, gain=gain,
                          read_noise=read_noise)
    return _run(job, callback, return_history)


def inpaint(image, mask, *, preset: str | None = "inpaint", params: DIPParams | None = None,
            channel_axis: int | None = None, has_alpha: bool | None = None,
            iterations: int | None = None, lr: float | None = None, early_stop: bool | None = None,
            history_every: int | None = None, device="auto", seed: int | None = None,
            callback: Callable | None = None, return_history: bool = False,
            warm_start: bool = False, tile_size: int | None = None,
            tile_overlap: int | None = None, output_dtype=None):
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
    callback, return_history, warm_start, tile_size, tile_overlap, output_dtype
        As for :func:`denoise`.  In tiles, a tile without holes is not fitted and a tile
        entirely inside a hole is refused at once (use a larger ``tile_size``).

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
                          warm_start=warm_start, tile_size=tile_size, tile_overlap=tile_overlap,
                          output_dtype=output_dtype)
    return _run(job, callback, return_history)
