"""The job runner: one validated restoration over the planes (and tiles) of an image.

A :class:`DIPJob` is made by :func:`~napari_deep_prior.restore.api.prepare` (all checks
happen there); its :meth:`DIPJob.steps` generator runs one :class:`~.fit.DIPFit` per plane
or tile (several at once on a multi-core CPU: :mod:`.lanes`), blending tiles without seams,
and returns a :class:`DIPOutput` in the input's dtype, range and layout.  After a cancel,
:meth:`DIPJob.result` returns what was computed.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace

import numpy as np

from ..arrays import Layout, denormalise, denormalise_frames, template_literal
from ..device import tune_cpu_allocator
from ..errors import ImageTooLargeError, is_out_of_memory
from ..nets import padded_shape
from .degradations import Degradation
from .fit import DIPFit, Step, history_iterations
from .lanes import Lanes, choose_lanes
from .planning import MemoryPlanError, estimate_fit_bytes
from .presets import PRESETS, DIPParams
from .tiles import TileBlender

__all__ = ["DIPJob", "DIPOutput"]


@dataclass
class DIPOutput:
    """Result of a DIP job, in the input's dtype and layout.

    Attributes
    ----------
    image : ndarray
        The restored image: the input's shape (its planes scaled by the degradation's factor
        when up-scaling), in the dtype of the dtype policy (float16 input gives float32;
        integer counts with the Poisson loss give float32 rates; ``output_dtype`` overrides it).
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
    regions : bool
        The tiles are regions around an inpainting's holes (pixels outside every box kept
        their input values) rather than a plan covering the image.
    lanes : int
        How many fits ran at once (:mod:`.lanes`; 1: one after the other).
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
    regions: bool = False
    lanes: int = 1


def _label(step: Step, preview: Callable | None, fields: dict) -> Step:
    """``step`` with ``fields`` (plane, tile...) set and its preview mapped by ``preview``
    (a tiled plane shows the whole plane blended)."""
    for name, value in fields.items():
        setattr(step, name, value)
    if preview is not None and step.preview is not None:
        step.preview = preview(step.preview)
    return step


def _relay(fit, *, preview: Callable | None = None, **fields):
    """Yield the Steps of one fit, labelled by :func:`_label`; return its FitResult."""
    gen = fit.steps()
    while True:
        try:
            step = next(gen)
        except StopIteration as stop:
            return stop.value
        yield _label(step, preview, fields)


def _fill_notes(weights) -> list[str]:
    """The note on a blended fill (``DIPParams.fill_blend``): the network's share of it."""
    weights = [w for w in weights if w is not None]
    if not weights:
        return []
    share = f"{weights[0]:.2f}"
    if len(weights) > 1:
        share = f"{min(weights):.2f}–{max(weights):.2f} over {len(weights)} fits"
    return [
        f"the holes' fill is the network's blended with a biharmonic fill: the network's share {share}, "
        "chosen on known pixels held out in the shape of the holes "
        "(fill_blend; the history frames are the network's own)"
    ]


def _large_notes(params, flags) -> list[str]:
    """The note on fits whose holes were large (``FitResult.large_holes``) where the preset limits
    their steps (``DIPParams.iterations_large``)."""
    n = sum(bool(f) for f in flags)
    limit = params.large_step_limit()
    if not n or not limit:
        return []
    fits = "one fit" if len(flags) == 1 else f"{n} of {len(flags)} fits"
    return [
        f"large holes in {fits}: at most {limit} steps (iterations_large), as the "
        "network's fill of a large hole peaks early"
    ]


class DIPJob:
    """A validated restoration job over one or more 2D planes.

    Create it with :func:`~.api.prepare` (or ``prepare_denoise`` / ``prepare_inpaint`` /
    ``prepare_upscale``: all input checks happen there, before any heavy work); iterate
    :meth:`steps` to run it; call :meth:`result` at the end, or after a cancel to get what was
    computed so far (planes not reached keep the degradation's stand-in: the input itself, or
    the input up-scaled by interpolation).

    Attributes
    ----------
    degradation : Degradation
        The bound degradation (:mod:`.degradations`): its operator per plane and tile.
    tiles : list of (y0, y1, x0, x1) or None
        The tile plan applied to every plane (None: each plane is fitted whole).
    tile_overlap : int or None
        Minimum overlap of neighbouring tiles (None for regions).
    regions : bool
        ``tiles`` are boxes around the holes (:func:`~.regions.plan_hole_regions`) that need
        not cover the planes: pixels outside them keep their input values.
    fit_params : DIPParams
        The parameters of each fit (``params``, with the history turned off when a tiled
        history would not fit in memory).
    notes : list of str
        Remarks passed on to :attr:`DIPOutput.notes`.
    noise_sigma : float, optional
        The input's noise level (standard deviation in the input's units) for the noise-level
        stop, instead of its estimate from each plane.
    preset : str or None
        The name of the preset ``params`` start from ("paper" resolved to its recipe);
        :attr:`preset_params` are its parameters (for the provenance's list of changes).
    camera : CameraModel or None
        The camera's offset, gain and read noise (Poisson loss with camera values).
    init_state : dict or None
        With ``warm_start``: the weights every fit starts from (the first fitted plane of
        another job over the same stack); None: the first fit here starts cold and gives them.
    warm_state : dict or None
        After :meth:`steps`: the weights a warm start carries on (``init_state``, or the first
        fitted plane's or tile's), for the next job of a stack run plane by plane.
    lanes : int
        How many fits the last :meth:`steps` ran at once: on a multi-core CPU a job of several
        planes or tiles runs them in lanes (:mod:`.lanes`), with the same result as one at a
        time; progress is reported for one fit at a time, in the job's order.
    """

    def __init__(
        self,
        degradation: Degradation,
        planes: np.ndarray,
        layout: Layout,
        params: DIPParams,
        device,
        seed: int,
        warm_start: bool = False,
        *,
        tiles: list | None = None,
        tile_overlap: int | None = None,
        fit_params: DIPParams | None = None,
        notes: list[str] | None = None,
        regions: bool = False,
        noise_sigma: float | None = None,
        preset: str | None = None,
        camera=None,
        init_state: dict | None = None,
    ):
        self.degradation = degradation
        self.regions = bool(regions) and tiles is not None
        self.planes = planes  # (P, h, w, C) the measured planes, normalised
        h, w, c = planes.shape[1:]
        self.out_shape = degradation.output_hw(h, w) + (c,)  # (H, W, C) of a result plane
        self.layout = layout
        self.params = params
        self.device = device
        self.seed = seed
        self.warm_start = warm_start
        # a warm start's weights from another job (the first plane of a stack run plane by plane)
        self.init_state = init_state if warm_start else None
        self.warm_state: dict | None = None  # after steps(): the weights a warm start carries on
        self.tiles = None if tiles is None else [tuple(int(v) for v in b) for b in tiles]
        self.tile_overlap = tile_overlap
        self.fit_params = params if fit_params is None else fit_params
        self.preset = preset
        self.camera = camera
        self.notes = list(notes or [])
        # a noise level given in the input's units, in the normalised planes' units
        self.noise_sigma = None if noise_sigma is None else float(noise_sigma) / float(layout.scale)
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
        self._tile_fill: list[float] = []  # FitResult.fill_weight of every finished tile that blended
        self._tile_large: list[bool] = []  # FitResult.large_holes of every finished tile
        self._hist_num: np.ndarray | None = None  # (F, P, H, W, C) tiled history
        self._hist_loss_sum: np.ndarray | None = None
        self._hist_loss_n: np.ndarray | None = None
        self._hist_len = np.zeros(self.n_planes, dtype=np.int64)
        self._done: dict | None = None  # unit results computed elsewhere (assemble)
        self._lanes: Lanes | None = None  # while steps() runs several fits at once
        self.lanes = 1  # fits run at once by the last steps() (see lanes.choose_lanes)
        # planes whose known pixels are all equal: nothing to fit, the result is that constant
        self._constant: dict[int, np.ndarray] = {}
        for i in range(self.n_planes):
            if not degradation.skip(i):
                self._check_constant(i)

    def _check_constant(self, i: int) -> None:
        """Record plane ``i`` (and note it) when its known pixels are all equal, per channel."""
        known = self.degradation.operator(i).known
        plane = self.planes[i]
        values = plane.reshape(-1, plane.shape[-1]) if known is None else plane[known]
        if values.size == 0:
            return
        first = values[0]
        if not (values == first).all():
            return
        self._constant[i] = first.copy()
        source = self.layout.source[i].reshape(-1, plane.shape[-1])
        raw = source[0] if known is None else source[int(np.flatnonzero(known.reshape(-1))[0])]
        value = ", ".join(str(v.item()) if raw.dtype.kind in "ui" else f"{v.item():g}" for v in raw)
        what = "the image" if self.n_planes == 1 else f"plane {i}"
        if self.out_shape[:2] != plane.shape[:2]:
            how = "the result is that constant at the output size"
        elif known is not None:
            how = "its holes are filled with that constant"
        else:
            how = "returned unchanged"
        self.notes.append(f"{what} is constant (value{'s' if len(raw) > 1 else ''} {value}): nothing to fit, {how}")

    @property
    def preset_params(self) -> DIPParams | None:
        """The parameters of :attr:`preset` (None when there is no such preset)."""
        return PRESETS.get(self.preset) if self.preset else None

    @property
    def task(self) -> str:
        """The task's name ("denoise", "inpaint", ...): the degradation's."""
        return self.degradation.name

    @property
    def n_planes(self) -> int:
        return self.planes.shape[0]

    @property
    def n_tiles(self) -> int:
        """Tiles per plane (1 when planes are fitted whole)."""
        return 1 if self.tiles is None else len(self.tiles)

    def steps(self) -> Generator[Step, None, DIPOutput]:  # noqa: F821
        """Fit every plane (and tile) in turn, yielding Step records.

        ``plane``/``n_planes`` and ``tile``/``n_tiles`` are set on every Step; a tiled
        plane's preview is the whole plane blended so far.
        """
        if self.device.type == "cpu":
            tune_cpu_allocator()
        elif self.device.type == "cuda":
            import torch

            # every step of a fit has the same shapes: let cuDNN pick its fastest kernels once
            torch.backends.cudnn.benchmark = True
        state = self.init_state
        self._lanes = self._start_lanes()
        try:
            deg = self.degradation
            for i in range(self.n_planes):
                if deg.skip(i) or i in self._constant:
                    # nothing to restore in this plane (no hole, or a constant image): its
                    # result is the input, or the constant
                    self.fits.append(None)
                    self.results.append(None)
                    continue
                if self.tiles is not None:
                    state = yield from self._fit_tiles(i, state)
                    continue
                if self._done is not None:  # computed elsewhere (assemble): no fit here
                    self.fits.append(None)
                    res = self._done.pop((i, None))
                else:
                    fit = self._start_unit(i, None, state)
                    self.fits.append(fit)
                    res = yield from self._run_unit(fit, i, None, plane=i, n_planes=self.n_planes)
                self.results.append(res)
                if state is None:
                    # The warm start of every later plane: the first fitted plane's weights at
                    # its early-stopping point.  Chaining each plane's weights on to the next
                    # kept adding fitting steps and lost up to 1 dB by the 8th plane of a
                    # 128 px stack (benchmarks/dip_stack.py); the first cold fit does not drift.
                    state = res.state_dict
        except MemoryError as exc:
            if isinstance(exc, ImageTooLargeError):
                raise
            raise self._out_of_memory(exc) from exc
        except RuntimeError as exc:  # torch's allocators
            if not is_out_of_memory(exc):
                raise
            raise self._out_of_memory(exc) from exc
        finally:
            self._stop_lanes()
            self._release()
        self.warm_state = state
        return self.result()

    # -- several fits at once on a multi-core CPU --------------------------------------------
    def _unit_size(self) -> tuple[int, int]:
        """(height, width) of this job's largest fit (its estimate's size)."""
        if self.tiles is None:
            return self.out_shape[:2]
        boxes = [self.degradation.output_box(b) for b in self.tiles]
        return max(b[1] - b[0] for b in boxes), max(b[3] - b[2] for b in boxes)

    def lane_size(self) -> tuple[int, int]:
        """(bytes, pixels) of this job's largest fit, as :func:`~.lanes.choose_lanes` takes them:
        its memory estimate, and its padded area times its ensemble."""
        h, w = self._unit_size()
        hp, wp = padded_shape(self.fit_params.net, h, w)
        return estimate_fit_bytes(self.fit_params, h, w, self.planes.shape[-1]), hp * wp * self.fit_params.ensemble

    def _start_lanes(self) -> Lanes | None:
        """The lanes of this run (None: one fit at a time), chosen by :func:`~.lanes.choose_lanes`."""
        self.lanes = 1
        if self._done is not None:
            return None
        units = self.units()
        if len(units) < 2 or self.device.type != "cpu":
            return None
        from ..device import available_memory

        unit_bytes, unit_pixels = self.lane_size()
        n = choose_lanes(
            self.device,
            len(units),
            unit_bytes,
            available_memory(self.device),
            unit_pixels=unit_pixels,
            tiles=self._plane_tiles(),
        )
        if n < 2:
            return None
        import torch

        self._threads_before = torch.get_num_threads()
        self.lanes = n
        return Lanes(units, self.unit_fit, n, warm_start=self.warm_start, init_state=self.init_state)

    def _stop_lanes(self) -> None:
        if self._lanes is None:
            return
        import torch

        self._lanes.close()
        self._lanes = None
        torch.set_num_threads(self._threads_before)  # the lanes set their own count

    def _start_unit(self, i: int, k: int | None, state) -> DIPFit:
        """Unit ``(i, k)``'s fit: the lanes' (started there, maybe finished) or a new one to run here."""
        if self._lanes is not None:
            return self._lanes.fit((i, k))
        return self.unit_fit(i, k, state if self.warm_start else None)

    def _run_unit(self, fit: DIPFit, i: int, k: int | None, *, preview: Callable | None = None, **fields):
        """Yield ``fit``'s Steps labelled with ``fields`` (:func:`_label`); return its FitResult.

        In lanes the fit runs in its own thread and only its Steps are relayed here.
        """
        if self._lanes is not None:
            return (yield from self._lanes.result((i, k), lambda step: _label(step, preview, fields)))
        return (yield from _relay(fit, preview=preview, **fields))

    # -- units of work: one fit per plane (or per tile of a plane) ------------------------

    @property
    def counts_scale(self) -> float:
        """Photons per normalised unit of the Poisson loss (1 for the other losses)."""
        return self.layout.counts_scale if self.params.loss == "poisson" else 1.0

    def units(self) -> list[tuple[int, int | None]]:
        """The fits this job runs, in its order: ``(plane, tile)`` (tile None: the plane whole).

        Planes and tiles with nothing to restore (no hole, a constant plane) are not units.
        Every unit is independent of the others (the same seed, its own data), except that a
        warm start takes the first unit's weights: :meth:`unit_fit` of any unit, run anywhere,
        gives what :meth:`steps` gives for it.
        """
        deg = self.degradation
        out: list[tuple[int, int | None]] = []
        for i in range(self.n_planes):
            if deg.skip(i) or i in self._constant:
                continue
            if self.tiles is None:
                out.append((i, None))
            else:
                out.extend((i, k) for k, box in enumerate(self.tiles) if not deg.skip(i, box))
        return out

    def unit_args(self, i: int, k: int | None, init_state: dict | None = None) -> dict:
        """The keyword arguments of :class:`~.fit.DIPFit` for unit ``(i, k)`` (its own data only)."""
        box = None if k is None else self.tiles[k]
        target = self.planes[i]
        if box is not None:
            y0, y1, x0, x1 = box
            target = self.planes[i, y0:y1, x0:x1]
        return dict(
            target=target,
            operator=self.degradation.operator(i, box),
            params=self.fit_params,
            seed=self.seed,
            counts_scale=self.counts_scale,
            init_state=init_state,
            noise_sigma=self.noise_sigma,
            tile=box is not None and self._plane_tiles(),
        )

    def _plane_tiles(self) -> bool:
        """Whether this job's units are the tiles of tiled planes (not regions around holes):
        such fits up to :data:`~..device.TILE_FIT_PIXELS` run on one thread, in lanes."""
        return self.tiles is not None and not self.regions and len(self.tiles) > 1

    def unit_fit(self, i: int, k: int | None, init_state: dict | None = None) -> DIPFit:
        """The fit of unit ``(i, k)`` on this job's device (``init_state``: a warm start)."""
        return DIPFit(device=self.device, **self.unit_args(i, k, init_state))

    def assemble(self, results: dict) -> DIPOutput:
        """The output from unit results computed elsewhere (e.g. on a dask cluster).

        ``results`` maps every unit of :meth:`units` to its :class:`~.fit.FitResult`; they are
        blended and assembled in the job's order, exactly as :meth:`steps` does after its own
        fits, so the output is the one :meth:`steps` gives for the same results.
        """
        missing = [u for u in self.units() if u not in results]
        if missing:
            raise ValueError(f"assemble needs the result of every unit; missing {missing[:5]}")
        self._done = dict(results)
        try:
            gen = self.steps()
            while True:
                try:
                    next(gen)
                except StopIteration as stop:
                    return stop.value
        finally:
            self._done = None

    def _out_of_memory(self, exc: BaseException) -> MemoryPlanError:
        """The error of an allocation that failed during the run, with the way out."""
        from ..device import memory_limit

        limit = memory_limit(self.device)
        bound = f"; {limit.describe()} leaves {limit.available / 2**30:.1f} GiB" if limit is not None else ""
        first = template_literal(str(exc).strip().splitlines()[0][:200]) if str(exc).strip() else type(exc).__name__
        return MemoryPlanError(
            f"the restoration ran out of memory on {self.device} ({first}){bound}; give a smaller "
            "{tile_size} (or leave it automatic), crop or downscale the image, choose a lighter "
            "preset or turn the history off ({history_every} 0)"
        )

    def _fit_tiles(self, i: int, state):
        """Fit plane ``i`` tile by tile, blending each tile as it finishes."""
        deg = self.degradation
        h, w, c = self.out_shape
        n_frames = len(history_iterations(self.fit_params))
        if n_frames and self._hist_num is None:
            self._hist_num = np.zeros((n_frames, self.n_planes, h, w, c), dtype=np.float32)
            self._hist_loss_sum = np.zeros((n_frames, self.n_planes))
            self._hist_loss_n = np.zeros((n_frames, self.n_planes), dtype=np.int64)
        blender = TileBlender(
            h,
            w,
            c,
            [deg.output_box(b) for b in self.tiles],
            n_frames=n_frames,
            frames=None if not n_frames else self._hist_num[:, i],
        )
        self._blender, self._blend_plane = blender, i
        self.fits.append(None)
        last = None
        n_tiles = len(self.tiles)
        initial = deg.initial(self.planes[i])
        for k, box in enumerate(self.tiles):
            if deg.skip(i, box):
                continue  # nothing to restore in this tile (no hole): it keeps its input values
            if self._done is not None:  # computed elsewhere (assemble): no fit here
                fit, res = None, self._done.pop((i, k))
            else:
                fit = self._start_unit(i, k, state)
                self.fits[i], self._tile = fit, k
                res = yield from self._run_unit(
                    fit,
                    i,
                    k,
                    plane=i,
                    n_planes=self.n_planes,
                    tile=k,
                    n_tiles=n_tiles,
                    tile_kind="region" if self.regions else "tile",
                    preview=lambda prev, k=k: blender.image(initial, extra=(k, prev)),
                )
            hist = res.history
            blender.add(k, res.image, None if hist is None else hist.frames)
            if hist is not None and len(hist.losses):
                m = len(hist.losses)
                self._hist_loss_sum[:m, i] += hist.losses
                self._hist_loss_n[:m, i] += 1
                self._hist_len[i] = max(self._hist_len[i], m)
            self._tile_stops[i][k] = int(res.iteration)
            self._tile_runs[i][k] = int(res.iterations_run)
            if res.fill_weight is not None:
                self._tile_fill.append(res.fill_weight)
            self._tile_large.append(res.large_holes)
            if self.warm_start and state is None:
                state = res.state_dict  # the first fitted tile's, as for planes
            # keep small metadata only: no tile image history or weights stay alive
            last = replace(res, history=None, state_dict=None)
            if fit is not None:
                fit._net = None
            self.fits[i] = None
            del fit, res, hist
        self._tiled_images[i] = blender.image(initial)
        blender.finalise_frames(initial)
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

    def _initial_planes(self) -> np.ndarray:
        """(P, H, W, C) float32: the result of planes not restored (a new array); constant planes filled."""
        deg = self.degradation
        if self.out_shape == self.planes.shape[1:]:
            out = self.planes.copy()
        else:
            out = np.stack([deg.initial(p) for p in self.planes]).astype(np.float32, copy=False)
        for i, value in self._constant.items():
            out[i] = value
        return out

    def _stand_in(self, i: int) -> np.ndarray:
        """(H, W, C) float32: the result of plane ``i`` while it is not restored."""
        if i in self._constant:
            return np.broadcast_to(self._constant[i], self.out_shape)
        return self.degradation.initial(self.planes[i])

    def _keep(self):
        """``(kept, source)`` for :func:`~napari_deep_prior.arrays.denormalise`, or None.

        Constant planes of the input's size keep their input values exactly.
        """
        kept = self.degradation.kept()
        if kept is None and self._constant and self.out_shape == self.planes.shape[1:]:
            kept = np.zeros(self.planes.shape[:3], dtype=bool)
            kept[list(self._constant)] = True
        return None if kept is None else (kept, self.layout.source)

    def result(self) -> DIPOutput:
        """Assemble the output from the planes fitted so far (a running plane gives its current estimate)."""
        if self.tiles is not None:
            return self._tiled_result()
        p_count = self.n_planes
        out = self._initial_planes()
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
        keep = self._keep()
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
            history = denormalise_frames(frames, f, self.layout, keep) if f else denormalise(frames, self.layout, keep)
        return DIPOutput(
            image=denormalise(out, self.layout, keep),
            history=history,
            history_iterations=np.asarray(its),
            history_losses=hl,
            stop_iterations=[r.iteration if r is not None else 0 for r in fit_results],
            iterations_run=[r.iterations_run if r is not None else 0 for r in fit_results],
            planes_done=len(self.results),
            seed=self.seed,
            fits=fit_results,
            notes=self.notes
            + _fill_notes([r.fill_weight for r in fit_results if r is not None])
            + _large_notes(self.fit_params, [r.large_holes for r in fit_results if r is not None]),
            lanes=self.lanes,
        )

    def _tiled_result(self) -> DIPOutput:
        from dataclasses import replace

        p_count = self.n_planes
        out = self._initial_planes()
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
                out[i] = self._blender.image(out[i], extra=extra)
            fit_results.append(res)
        keep = self._keep()
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
                history = denormalise_frames(self._tiled_frames(f, running, run_hist), f, self.layout, keep)
        return DIPOutput(
            image=denormalise(out, self.layout, keep),
            history=history,
            history_iterations=np.asarray(its),
            history_losses=hl,
            stop_iterations=[max(s) if s else 0 for s in stops],
            iterations_run=[max(r) if r else 0 for r in runs],
            planes_done=len(self.results),
            seed=self.seed,
            fits=fit_results,
            notes=self.notes
            + _fill_notes(self._tile_fill + ([] if running is None else [running[2].fill_weight]))
            + _large_notes(self.fit_params, self._tile_large + ([] if running is None else [running[2].large_holes])),
            tiles=list(self.tiles),
            tile_stop_iterations=stops,
            tile_iterations_run=runs,
            regions=self.regions,
            lanes=self.lanes,
        )

    def _tiled_frames(self, f: int, running, run_hist):
        """Yield the first ``f`` normalised history frames, each (P, H, W, C)."""
        # the stand-in of every plane not finished (no copy: the input planes themselves when the
        # result has the input's size); finished planes take their frames from the history sums
        initial = {i: self._stand_in(i) for i in range(self.n_planes) if i not in self._tiled_images}
        live = None
        if self._blender is not None:
            i = self._blend_plane
            extra = None
            if running is not None:
                _i, k, cur = running
                extra = (k, cur.image, None if run_hist is None else run_hist.frames)
            live = (i, self._blender.frame_images(initial[i], extra=extra))
        for k in range(f):
            frame = np.empty((self.n_planes,) + self.out_shape, dtype=np.float32)
            for i in range(self.n_planes):
                if i in self._tiled_images:
                    frame[i] = self._hist_num[k, i]  # normalised when the plane finished
                else:
                    frame[i] = initial[i]
            if live is not None:
                frame[live[0]] = next(live[1])
            yield frame
