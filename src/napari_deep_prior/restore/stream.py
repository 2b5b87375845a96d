"""Restore a stack one plane at a time: read each plane when it is needed, write each result out.

For stacks that are not (or cannot be) in memory: a dask array (an OME-Zarr opened in napari),
a zarr array, or any array-like that reads a plane when it is indexed.  :meth:`StackJob.steps`
runs in two passes, each reading every plane once:

1. **scan** (skipped when ``data_range`` is given and no mask needs it): the range of the
   finite values of every plane (last plane first) gives the whole stack's range; a mask's
   holes are gathered over the planes too;
2. **fit**: every plane in turn (the first one is kept from the scan, so it is read only
   once) is prepared with :func:`~.api.prepare` (``data_range=`` the stack's range, the same
   seed for every plane), fitted, and its result (and history frames) written into arrays
   made by ``store`` (default: NumPy arrays in memory; the napari widget gives zarr arrays
   on disk).

Each plane is prepared as one plane of the whole stack would be: the same range, the same
seed, the same tile plan and (for inpainting) the same regions around the holes of every
plane; so the result is bitwise the result of one :class:`~.job.DIPJob` over the whole stack
(:func:`~.api.prepare` of the array in memory), warm start included (every later plane starts
from the first fitted plane's weights, passed from job to job), except that a plan the
whole-stack job makes from its total size (tiles forced by memory, a history dropped from
memory) is made for one plane.  Memory holds one plane at a time: its input, mask, normalised copy, fit and result.

On a multi-core CPU, planes small enough to be fitted on one thread (:mod:`.lanes`) run
several at once, as a whole-stack job runs them: each plane's job in its own lane thread, the
planes read, prepared and written in order on the caller's thread (with a warm start, once the
first fitted plane has given its weights).  The result is the same; memory then holds up to
twice as many planes as there are lanes.

Examples
--------
>>> import numpy as np
>>> from napari_deep_prior.restore.degradations import Identity
>>> from napari_deep_prior.restore.stream import StackJob
>>> from napari_deep_prior.arrays import drive
>>> stack = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
>>> out = drive(StackJob(Identity, stack, iterations=5, seed=0).steps())
>>> out.image.shape, out.planes_done
((3, 16, 16), 3)
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..arrays import (
    check_data_range,
    check_dtype,
    check_seed,
    finite_range,
    new_seed,
    resolve_output_dtype,
    split_channels,
)
from ..device import resolve_device
from ..errors import ParameterError
from .api import _check_noise_sigma, _resolve_params, prepare
from .camera import CameraModel
from .degradations import Degradation
from .fit import Step
from .job import DIPOutput, _label
from .lanes import Lanes, choose_lanes

__all__ = ["Scan", "StackJob", "memory_store"]

#: ``store(name, shape, dtype)`` -> a writable array: ``name`` is "image" or "history".
Store = Callable[[str, tuple[int, ...], np.dtype], Any]


def memory_store(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """The default ``store`` of :class:`StackJob`: a zero-filled NumPy array in memory."""
    return np.zeros(shape, dtype=dtype)


@dataclass
class Scan:
    """Yielded by :meth:`StackJob.steps` while the stack's value range is read.

    Attributes
    ----------
    plane : int
        The plane just read (the scan runs from the last plane to the first).
    done, n_planes : int
        Planes read so far, and in all.
    """

    plane: int
    done: int
    n_planes: int

    @property
    def fraction(self) -> float:
        """The scan is not counted in the fit's progress."""
        return 0.0


def _in_plane(exc: BaseException, plane: int, n_planes: int) -> BaseException:
    """``exc`` with the plane it happened in named first (same type; a ParameterError keeps its names)."""
    if n_planes <= 1:
        return exc
    where = f"plane {plane} of {n_planes}: "
    if isinstance(exc, ParameterError):
        try:
            return type(exc)(where.replace("{", "{{") + exc.template, exc.params)
        except TypeError:  # pragma: no cover - a subclass with another signature
            return exc
    try:
        return type(exc)(where + str(exc))
    except TypeError:  # pragma: no cover
        return exc


def _reraise_in_plane(exc: BaseException, plane: int, n_planes: int):
    new = _in_plane(exc, plane, n_planes)
    if new is exc:
        raise exc
    raise new from exc


_PLANE_CLASSES: dict[type, type] = {}


def _plane_class(cls: type[Degradation]) -> type[Degradation]:
    """``cls`` whose :meth:`~.degradations.Degradation.holes` are the whole stack's (when given).

    A whole-stack job plans the regions around the holes of *every* plane; a plane prepared
    alone must plan the same regions to give the same result.
    """
    if cls not in _PLANE_CLASSES:

        def holes(self):
            own = cls.holes(self)
            stack = getattr(self, "stack_holes", None)
            return own if own is None or stack is None else stack

        _PLANE_CLASSES[cls] = type(cls.__name__, (cls,), {"holes": holes, "__module__": cls.__module__})
    return _PLANE_CLASSES[cls]


class StackJob:
    """A restoration over a stack read plane by plane, its results written plane by plane.

    Parameters
    ----------
    degradation : Degradation subclass
        The task's degradation class (:data:`~.degradations.DEGRADATIONS`): ``Identity``,
        ``Mask``, ``Downsample``...; it is made for every plane from ``fields``.
    image : array-like, shape (..., H, W) or with a channel axis
        A NumPy, dask or zarr array (anything with ``shape``, ``dtype`` and indexing by
        slices); only ``image[index]`` of one plane at a time is read, in :meth:`steps`.
    fields : mapping, optional
        The degradation's fields (:attr:`~.degradations.Degradation.fields`).  A "mask"
        field is an array-like of shape (H, W) (every plane) or the image's non-channel
        shape (read plane by plane), or a callable ``plane -> (H, W) array``; nonzero marks
        the pixels to restore, and a plane whose mask is all zero is returned as it is.
        "choice" fields (``factor``) are passed as they are.
    channel_axis, has_alpha, preset, params, device, tile_size, tile_overlap, output_dtype,
    camera_offset, gain, read_noise, noise_sigma, **overrides
        As for :func:`~.api.prepare` (every plane is prepared with them).
    seed : int, optional
        The seed of every plane's fit (None: one is drawn, :attr:`seed`).
    warm_start : bool
        Every plane after the first fitted one starts from that plane's weights at its stop
        (:attr:`~.job.DIPJob.warm_state`), as in a whole-stack job.
    data_range : (float, float), optional
        The stack's value range, if known: the scan is then skipped (unless a mask field
        needs it).  Every plane's values must lie within it.
    store : callable, optional
        ``store(name, shape, dtype)`` -> a zero-filled writable array for the result
        (``name`` "image") and its history ("history", made when the first plane has one);
        default :func:`memory_store`.  An array that is not NumPy must have ``resize``
        (zarr's), used to drop unused history frames.  The attribute :attr:`store` may be
        replaced until :meth:`steps` starts.

    Attributes
    ----------
    n_planes, seed, params, preset, device, result_shape, result_dtype, store
    image_out, history_out : array or None
        The arrays made by ``store`` (once :meth:`steps` started / a history was saved).
    fits : list
        Per plane, its :class:`~.fit.FitResult` without ``image``, ``history`` and
        ``state_dict`` (None for a plane not fitted): memory does not grow with the stack.
    data_range : (float, float) or None
        The stack's range (after the scan).

    Raises
    ------
    ValueError, TypeError
        Bad shapes, dtypes, fields or parameters (here, before any plane is read; a plane's
        own problems, such as NaN outside the holes, are raised by :meth:`steps` with the
        plane named).
    """

    def __init__(
        self,
        degradation: type[Degradation],
        image,
        *,
        fields: Mapping[str, Any] | None = None,
        channel_axis: int | None = None,
        has_alpha: bool | None = None,
        preset: str | None = None,
        params=None,
        device="auto",
        seed: int | None = None,
        warm_start: bool = False,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        output_dtype=None,
        camera_offset: float | None = None,
        gain: float | None = None,
        read_noise: float | None = None,
        noise_sigma: float | None = None,
        data_range: tuple[float, float] | None = None,
        store: Store | None = None,
        **overrides,
    ):
        if not (isinstance(degradation, type) and issubclass(degradation, Degradation)):
            raise TypeError(
                f"degradation must be a Degradation class (Identity, Mask, Downsample...), got {degradation!r}"
            )
        if not all(hasattr(image, a) for a in ("shape", "dtype", "__getitem__")):
            raise TypeError(
                "image must be an array (NumPy, dask, zarr...) with shape, dtype and indexing, "
                f"got {type(image).__name__}"
            )
        fields = dict(fields or {})
        kinds = {f.name: f.kind for f in degradation.fields}
        unknown = sorted(set(fields) - set(kinds))
        if unknown:
            raise TypeError(f"{degradation.name} has no field {', '.join(unknown)}; its fields: {', '.join(kinds)}")
        self._mask_names = [n for n, k in kinds.items() if k == "mask"]
        for name in self._mask_names:
            if fields.get(name) is None:
                raise ParameterError(f"{degradation.name} needs a {{{name}}}: nonzero where pixels must be restored")
        choices = {n: v for n, v in fields.items() if n not in self._mask_names}
        self._cls = _plane_class(degradation)
        # the degradation without its masks: validates the choices, says the scale (and the provenance's options)
        self.degradation = degradation(**choices, **dict.fromkeys(self._mask_names))
        check_dtype(image)
        shape = tuple(int(n) for n in image.shape)
        # the shape's checks on a zero-strided stand-in (nothing is read or allocated)
        virtual = np.broadcast_to(np.zeros((), dtype=image.dtype), shape)
        _arr, ca, alpha = split_channels(virtual, channel_axis, has_alpha)
        self.params, self.preset = _resolve_params(self.degradation, preset, params, **overrides)
        seed = check_seed(seed)
        self._noise_sigma = _check_noise_sigma(noise_sigma, self.degradation, self.params)
        poisson = self.params.loss == "poisson"
        out_dtype = resolve_output_dtype(output_dtype, np.dtype(image.dtype), poisson)
        self.camera = CameraModel.from_args(camera_offset, gain, read_noise, poisson)
        self.data_range = check_data_range(data_range)
        self.image = image
        self.shape = shape
        self.channel_axis = ca
        self.has_alpha = alpha
        grid = [a for a in range(len(shape)) if a != ca]
        self._grid_axes = grid
        self._stack_axes = grid[:-2]
        self.stack_shape = tuple(shape[a] for a in self._stack_axes)
        self.n_planes = int(np.prod(self.stack_shape, dtype=np.int64))
        self._grid_shape = tuple(shape[a] for a in grid)
        hw = self._grid_shape[-2:]
        for name in self._mask_names:
            value = fields[name]
            if callable(value):
                continue
            mshape = tuple(getattr(value, "shape", np.shape(value)))
            if mshape not in (hw, self._grid_shape):
                raise ParameterError(
                    f"{{{name}}} has shape {mshape} but image is {shape} (spatial shape {hw}); paint the "
                    "mask on a layer of the image's size"
                )
        self._fields = fields
        s = self.degradation.scale
        out = list(shape)
        for a in grid[-2:]:
            out[a] *= s
        self.result_shape = tuple(out)
        if out_dtype is None:
            out_dtype = np.dtype(np.float32) if np.dtype(image.dtype) == np.float16 else np.dtype(image.dtype)
        self.result_dtype = np.dtype(out_dtype)
        self.seed = new_seed() if seed is None else seed
        self.warm_start = bool(warm_start)
        self._warm_state: dict | None = None  # the first fitted plane's weights (warm start)
        self.device = resolve_device(device)
        self.store = store or memory_store
        self._kwargs = dict(
            preset=preset,
            params=params,
            channel_axis=channel_axis,
            has_alpha=has_alpha,
            device=self.device,
            seed=self.seed,
            tile_size=tile_size,
            tile_overlap=tile_overlap,
            output_dtype=output_dtype,
            camera_offset=camera_offset,
            gain=gain,
            read_noise=read_noise,
            noise_sigma=noise_sigma,
            **overrides,
        )
        # a mask read plane by plane is scanned for its holes (their union plans the regions, and
        # a mask with no hole in any plane is refused, as by a whole-stack job)
        self._needs_scan = self.data_range is None or any(not _is_plane_mask(fields[n], hw) for n in self._mask_names)
        # the state of a run
        self.image_out = None
        self.history_out = None
        self._holes: np.ndarray | None = None
        self._kept: tuple | None = None  # (plane, image, masks) read by the scan for the fit
        self._flat: dict[str, np.ndarray] = {}  # 2D masks, read once
        self._job = None  # the running plane's DIPJob
        self.lanes = 1  # planes fitted at once (lanes: small planes on a multi-core CPU)
        self._plane = -1
        self._recent_layouts: dict[int, Any] = {}
        self.layout = None
        self.tiles = None
        self.regions = False
        self.fits: list = [None] * self.n_planes
        self._started = [False] * self.n_planes
        self._done = [False] * self.n_planes
        self._written = [False] * self.n_planes
        self._stops = [0] * self.n_planes
        self._runs = [0] * self.n_planes
        self._tile_stops: list = [[] for _ in range(self.n_planes)]
        self._tile_runs: list = [[] for _ in range(self.n_planes)]
        self._notes: list[str] = []
        self._hist_its = np.zeros(0, dtype=np.int64)
        self._hist_losses: np.ndarray | None = None
        self._hist_pending: list[int] = []  # planes done before the history array existed

    # ------------------------------------------------------------------ what a job exposes
    @property
    def task(self) -> str:
        """The task's name ("denoise", "inpaint", ...)."""
        return self.degradation.name

    @property
    def preset_params(self):
        """The parameters of :attr:`preset` (None when there is no such preset)."""
        from .presets import PRESETS

        return PRESETS.get(self.preset) if self.preset else None

    @property
    def noise_sigma(self) -> float | None:
        """A given noise level in the normalised planes' units (None before the first plane)."""
        if self._noise_sigma is None or self.layout is None:
            return None
        return self._noise_sigma / float(self.layout.scale)

    @property
    def planes_done(self) -> int:
        """Planes finished (fitted, or returned as they are)."""
        return int(sum(self._done))

    @property
    def planes_written(self) -> int:
        """Planes with a result in the store: finished ones, and a cancelled plane's estimate."""
        return int(sum(self._written))

    @property
    def started(self) -> bool:
        """Whether the fit of some plane has begun (the scan is over)."""
        return any(self._started)

    def plane_layout(self, plane: int):
        """The :class:`~napari_deep_prior.arrays.Layout` of plane ``plane`` (a preview's way back to
        the input's values); the latest plane's when that plane's is no longer kept."""
        return self._recent_layouts.get(plane, self.layout)

    # ------------------------------------------------------------------ reading
    def _index(self, plane: int) -> tuple:
        """Index of plane ``plane`` in the image (length-1 slices on the stack axes)."""
        index: list[Any] = [slice(None)] * len(self.shape)
        if self._stack_axes:
            for a, i in zip(self._stack_axes, np.unravel_index(plane, self.stack_shape), strict=True):
                index[a] = slice(int(i), int(i) + 1)
        return tuple(index)

    def _read(self, plane: int) -> np.ndarray:
        return np.asarray(self.image[self._index(plane)])

    def _mask(self, name: str, plane: int) -> np.ndarray:
        value = self._fields[name]
        hw = self._grid_shape[-2:]
        if callable(value):
            m = np.asarray(value(plane))
        elif _is_plane_mask(value, hw):
            if name not in self._flat:
                self._flat[name] = np.asarray(value)
            m = self._flat[name]
        else:
            index = self._index(plane)
            m = np.asarray(value[tuple(index[a] for a in self._grid_axes)])
        if m.size != hw[0] * hw[1]:
            raise ParameterError(
                f"{{{name}}} of plane {plane} has shape {m.shape}, but the image's planes are {hw}; give "
                "a mask plane of the image's size"
            )
        return m.reshape(hw)

    def _masks(self, plane: int) -> dict[str, np.ndarray]:
        return {n: self._mask(n, plane) for n in self._mask_names}

    def _colour_range(self, arr: np.ndarray) -> tuple[float, float] | None:
        planes, _ca, alpha = split_channels(arr, self.channel_axis, self.has_alpha)
        return finite_range(planes[..., :-1] if alpha else planes)

    # ------------------------------------------------------------------ the run
    def steps(self) -> Generator[Step | Scan, None, DIPOutput]:
        """Scan the stack, then fit and write every plane; yields :class:`Scan` and :class:`~.fit.Step`.

        Returns
        -------
        DIPOutput
            ``image`` and ``history`` are the arrays the ``store`` made (:attr:`image_out`,
            :attr:`history_out` with its unused frames dropped), not copies.
        """
        if self.image_out is None:
            self.image_out = self.store("image", self.result_shape, self.result_dtype)
        if self._needs_scan:
            yield from self._scan()
        else:
            self._check_plane_masks()
        decided = False
        for p in range(self.n_planes):
            plane, masks = self._take(p)
            self._started[p] = True
            job = self._prepare_plane(p, plane, masks, self._warm_state)
            if job is None:
                self._write_as_is(p, plane)
                continue
            del plane, masks
            if not decided and (not self.warm_start or self._warm_state is not None):
                # the first plane to fit (after the warm start's first plane) decides whether
                # the planes run in lanes: all planes have its size, network and plan
                decided = True
                n = self._choose_lanes(job, self.n_planes - p)
                if n > 1:
                    yield from self._fit_in_lanes(p, job, n)
                    break
            yield from self._fit_job(p, job)
            del job
        return self.result()

    def _take(self, p: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Plane ``p`` and its masks (the first plane is kept from the scan: read once)."""
        if self._kept is not None and self._kept[0] == p:
            _p, plane, masks = self._kept
            self._kept = None
            return plane, masks
        return self._read(p), self._masks(p)

    def _no_holes(self) -> ParameterError:
        names = " / ".join(f"{{{n}}}" for n in self._mask_names)
        return ParameterError(
            f"{names} marks no pixel to restore in any plane (it is all zero); paint the damaged "
            "pixels with a nonzero label (or invert a mask where 0 marks the holes)"
        )

    def _check_plane_masks(self) -> None:
        """Masks of one plane for every plane (no scan): refuse one without holes."""
        for name in self._mask_names:
            if not self._mask(name, 0).any():
                raise self._no_holes()

    def _scan(self):
        need_range = self.data_range is None
        lo = hi = None
        holes = None
        for k, p in enumerate(reversed(range(self.n_planes))):
            plane = self._read(p) if need_range else None
            masks = self._masks(p)
            r = None if plane is None else self._colour_range(plane)
            if r is not None:
                lo = r[0] if lo is None else min(lo, r[0])
                hi = r[1] if hi is None else max(hi, r[1])
            for m in masks.values():
                holes = (m != 0) if holes is None else holes | (m != 0)
            if p == 0 and plane is not None:
                self._kept = (0, plane, masks)
            yield Scan(plane=p, done=k + 1, n_planes=self.n_planes)
            del plane, masks
        if self._mask_names and (holes is None or not holes.any()):
            raise self._no_holes()
        self._holes = holes
        if need_range:
            if lo is None:
                raise ParameterError("image has no finite value in any plane; nothing to restore")
            self.data_range = (lo, hi)

    def _prepare_plane(self, p: int, plane: np.ndarray, masks: dict[str, np.ndarray], init_state):
        """Plane ``p``'s :class:`~.job.DIPJob` (None: nothing to restore in it); errors name the plane."""
        if any(not m.any() for m in masks.values()):
            return None  # its result is its input, as in a whole-stack job
        deg = self._cls(**{**self._fields, **masks})
        deg.stack_holes = self._holes
        try:
            return prepare(
                deg,
                plane,
                data_range=self.data_range,
                warm_start=self.warm_start,
                init_state=init_state,
                **self._kwargs,
            )
        except (ValueError, TypeError) as exc:
            _reraise_in_plane(exc, p, self.n_planes)

    def _write_as_is(self, p: int, plane: np.ndarray) -> None:
        self._write(p, plane.astype(self.result_dtype), None)
        self._done[p] = True

    def _begin(self, p: int, job) -> None:
        """Plane ``p``'s job is the one running (progress, preview's layout, a cancel's estimate)."""
        self._job, self._plane = job, p
        self.layout = job.layout
        self._recent_layouts = {k: v for k, v in self._recent_layouts.items() if k == p - 1}
        self._recent_layouts[p] = job.layout
        if self.tiles is None and job.tiles is not None:
            self.tiles, self.regions = list(job.tiles), bool(job.regions)

    def _finish(self, p: int, job, output: DIPOutput) -> None:
        if self.warm_start and self._warm_state is None:
            # every later plane starts from the first fitted plane's weights, as in a whole-stack job
            self._warm_state = job.warm_state
        self._write(p, output.image, output)
        self._done[p] = True
        self._job, self._plane = None, -1

    def _fit_job(self, p: int, job):
        """Run plane ``p``'s job here, relaying its Steps."""
        self._begin(p, job)
        gen = job.steps()
        try:
            while True:
                try:
                    step = next(gen)
                except StopIteration as stop:
                    output = stop.value
                    break
                step.plane, step.n_planes = p, self.n_planes
                yield step
        except (ValueError, TypeError) as exc:
            _reraise_in_plane(exc, p, self.n_planes)
        finally:
            gen.close()
        self._finish(p, job, output)

    # ------------------------------------------------------------------ several planes at once
    def _choose_lanes(self, job, n_planes: int) -> int:
        """Lanes for the planes left (1: one plane at a time): small whole-plane fits on a
        multi-core CPU only (:func:`~.lanes.choose_lanes`), as a whole-stack job runs them."""
        if job.device.type != "cpu" or not _lane_job(job):
            return 1
        from ..device import available_memory

        unit_bytes, unit_pixels = job.lane_size()
        return choose_lanes(job.device, n_planes, unit_bytes, available_memory(job.device), unit_pixels=unit_pixels)

    def _fit_in_lanes(self, p0: int, job0, n: int):
        """Planes ``p0``... with up to ``n`` fitted at once, each plane's job in a lane thread.

        Planes are read and prepared in order on this thread when a lane is free, and their
        results are written in order: the output, history and warm start are those of one
        plane at a time (each fit runs on one thread either way).  Only the awaited plane's
        Steps are yielded.  A plane that cannot run in a lane (a plan with tiles) is fitted
        here at its turn; an error is raised at its plane's turn, naming the plane.
        """
        import torch

        first = {p0: job0}

        def make_run(p: int, _tile, state) -> _PlaneRun:
            if p in first:
                return _PlaneRun(job=first.pop(p))
            try:
                plane, masks = self._take(p)
                job = self._prepare_plane(p, plane, masks, state if self.warm_start else None)
            except Exception as exc:  # raised at its turn, after the planes before it
                return _PlaneRun(error=exc)
            if job is None:
                return _PlaneRun(plane=plane)
            return _PlaneRun(job=job, here=not _lane_job(job))

        units = [(p, None) for p in range(p0, self.n_planes)]
        threads_before = torch.get_num_threads()
        lanes = Lanes(units, make_run, n, warm_start=self.warm_start, init_state=self._warm_state)
        self.lanes = n
        try:
            for p, _tile in units:
                run = lanes.fit((p, None))
                self._started[p] = True
                if run.job is not None and not run.here:
                    self._begin(p, run.job)
                fields = {"plane": p, "n_planes": self.n_planes}
                run = yield from lanes.result((p, None), lambda step, fields=fields: _label(step, None, fields))
                if run.error is not None:
                    if isinstance(run.error, (ValueError, TypeError)) and run.job is not None:
                        _reraise_in_plane(run.error, p, self.n_planes)
                    raise run.error
                if run.job is None:
                    self._write_as_is(p, run.plane)
                elif run.here:
                    yield from self._fit_job(p, run.job)
                else:
                    self._finish(p, run.job, run.output)
                del run
        finally:
            lanes.close()
            torch.set_num_threads(threads_before)  # the lanes set their own count

    # ------------------------------------------------------------------ writing
    def _out_index(self, p: int) -> tuple:
        return self._index(p)

    def _write(self, p: int, image: np.ndarray, output: DIPOutput | None) -> None:
        """Write plane ``p``'s result (and its history frames) and keep its small metadata."""
        idx = self._out_index(p)
        self.image_out[idx] = image
        self._written[p] = True
        if output is not None:
            fit = output.fits[0] if output.fits else None
            # small metadata only (stops, losses): no image, history or weights stay alive per plane
            self.fits[p] = None if fit is None else replace(fit, image=None, history=None, state_dict=None)
            self._stops[p] = int(output.stop_iterations[0])
            self._runs[p] = int(output.iterations_run[0])
            if output.tiles is not None:
                self._tile_stops[p] = list(output.tile_stop_iterations[0])
                self._tile_runs[p] = list(output.tile_iterations_run[0])
            for note in output.notes:
                if note not in self._notes:
                    self._notes.append(note)
            if output.history is not None and len(output.history_iterations):
                self._write_history(p, output)
                return
        if self.history_out is not None:
            self._write_frames(p, np.asarray(image)[None], np.zeros(0))
        else:
            self._hist_pending.append(p)

    def _write_history(self, p: int, output: DIPOutput) -> None:
        its = np.asarray(output.history_iterations)
        if self.history_out is None:
            from .fit import history_iterations

            n = max(len(its), len(history_iterations(self._job.fit_params)) if self._job is not None else 0)
            self.history_out = self.store("history", (n,) + self.result_shape, self.result_dtype)
            self._hist_losses = np.full((n, self.n_planes), np.nan)
            for q in self._hist_pending:  # planes returned as they are: their result in every frame
                self._write_frames(q, np.asarray(self.image_out[self._out_index(q)])[None], np.zeros(0))
            self._hist_pending = []
        if len(its) > len(self._hist_its):
            self._hist_its = its.copy()
        self._write_frames(p, np.asarray(output.history), np.asarray(output.history_losses)[:, 0])

    def _write_frames(self, p: int, frames: np.ndarray, losses: np.ndarray) -> None:
        """Frames of plane ``p``; the last repeats to the end, as a whole-stack job's history does."""
        hist = self.history_out
        n_all = hist.shape[0]
        n = min(len(frames), n_all)
        idx = self._out_index(p)
        if n:
            hist[(slice(0, n), *idx)] = frames[:n]
        if n < n_all:
            hist[(slice(n, n_all), *idx)] = np.broadcast_to(frames[-1], (n_all - n,) + frames.shape[1:])
        m = min(len(losses), n_all)
        self._hist_losses[:m, p] = losses[:m]

    # ------------------------------------------------------------------ the output
    def result(self) -> DIPOutput:
        """The output so far: after a cancel, the running plane's current estimate is written too.

        Planes not reached keep the store's fill value (zero), as no plane is read here.
        """
        job, p = self._job, self._plane
        if job is not None and p >= 0 and not self._done[p]:
            try:
                partial = job.result()
            except RuntimeError:  # no step was taken yet
                partial = None
            if partial is not None:
                self._write(p, partial.image, partial)
        f = len(self._hist_its)
        history = self.history_out
        losses = np.zeros((0, self.n_planes))
        if history is not None and f:
            if history.shape[0] != f:
                if isinstance(history, np.ndarray):
                    history = self.history_out = history[:f]
                else:
                    history.resize((f,) + tuple(history.shape[1:]))
            losses = self._hist_losses[:f]
        elif history is not None:
            history = None
        tiled = self.tiles is not None
        notes = list(self._notes)
        missing = self.n_planes - self.planes_written
        if missing:
            notes.append(f"{missing} of {self.n_planes} planes not reached: they hold 0 in the result")
        return DIPOutput(
            image=self.image_out,
            history=history,
            history_iterations=self._hist_its.copy(),
            history_losses=losses,
            stop_iterations=list(self._stops),
            iterations_run=list(self._runs),
            planes_done=self.planes_done,
            seed=self.seed,
            fits=list(self.fits),
            notes=notes,
            tiles=list(self.tiles) if tiled else None,
            tile_stop_iterations=[list(s) for s in self._tile_stops] if tiled else [],
            tile_iterations_run=[list(r) for r in self._tile_runs] if tiled else [],
            regions=self.regions,
            lanes=self.lanes,
        )


def _is_plane_mask(value, hw: tuple[int, ...]) -> bool:
    return not callable(value) and tuple(getattr(value, "shape", np.shape(value))) == tuple(hw)


def _lane_job(job) -> bool:
    """Whether ``job`` (one plane) is one small whole-plane fit, which runs in a lane."""
    from ..device import one_thread_fit

    return job.tiles is None and len(job.units()) <= 1 and one_thread_fit(job.lane_size()[1])


class _PlaneRun:
    """A plane's work in :meth:`StackJob._fit_in_lanes`: its job (run in a lane, or ``here``
    at its turn), or its input (nothing to restore), or the error its reading or fit raised."""

    def __init__(self, job=None, plane=None, error: BaseException | None = None, here: bool = False):
        self.job, self.plane, self.error, self.here = job, plane, error, here
        self.output: DIPOutput | None = None

    def steps(self):
        if self.job is None or self.error is not None or self.here:
            return self
        try:
            self.output = yield from self.job.steps()
        except Exception as exc:  # raised at its plane's turn (an earlier plane may still be running)
            self.error = exc
        return self
