"""The Deep Image Prior optimisation loop, as a generator of :class:`Step` records.

One :class:`DIPFit` fits a freshly initialised :class:`~.nets.SkipNet` to one 2D image
(with any number of channels).  ``DIPFit.steps()`` is a generator: it yields a
:class:`Step` every ``params.yield_every`` iterations and returns a :class:`FitResult`.
A consumer that stops iterating (a cancelled napari worker) can still call
:meth:`DIPFit.result` to get what was computed so far.

Early stopping is ES-WMV (Wang, Li, Zhuang, Sun, TMLR 2023): the windowed moving variance
of the last ``es_window`` raw outputs; its running minimum (after a start floor) is the
candidate stop, and the run ends once no new minimum appeared for ``es_patience`` steps.
With ``es_noise_factor`` the run also ends by the discrepancy principle: once a running mean
of the training loss has fallen to the input's (estimated) noise variance times that factor,
or, for the Poisson loss, once the running mean deviance of the fit against the counts has
fallen to the deviance that Poisson noise of the current estimate's rate would leave.
With ``es_whiteness`` (Gaussian loss, estimated noise level, two or more channels) the residual's lag-1
autocorrelation corrects that stop for a noise estimate a few per cent off: the run ends
once it has fallen to ``-es_whiteness`` (at a noise level of 25/255; in proportion to 1/sigma
at others), and the noise level counts as reached only once it is no longer positive.
All per-step statistics stay on the device and are read only when a Step is yielded, so
the loop never synchronises with a GPU between yields.

A seed ensemble (``DIPParams.ensemble = K > 1``) trains K networks (:mod:`.ensemble`) in one
batched forward pass; the loss is the sum of the members' own data losses, so each member is
updated exactly as its own fit would be, and everything after the step (output averaging,
ES-WMV, the stops, backtracking, history, previews, the result) sees the mean of the members'
outputs, and the mean of their losses, as it sees the output of one network.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..device import fit_threads
from ..nets import SkipNet, make_input, padded_shape, seeded_skip_net
from .degradations import MaskOperator, Operator
from .ensemble import MemberStack, member_seeds
from .fillblend import blend_fill, blend_pixels
from .graphs import GraphedStep, restore_optimiser, wants_graph
from .presets import DIPParams
from .regions import hole_kind
from .stopping import (
    WindowVariance,
    _expected_deviance,
    clipped_noise_variance,
    estimate_noise_sigma,
    residual_correlation,
)

#: Held by front ends that run fits from threads of one process (dask's threaded scheduler,
#: a dask worker's threads): torch's intra-op thread count is process-wide, so a fit that
#: changed it (:func:`~..device.fit_threads`) would change another one's arithmetic; fits
#: run one at a time then (each on its threads), and give the results of a fit run alone.
FIT_LOCK = threading.RLock()

__all__ = [
    "DIPFit",
    "FitResult",
    "History",
    "Step",
    "autocast_dtype",
    "history_cadence",
    "history_iterations",
    "make_adam",
]

#: Frames above this many elements are subsampled (strided) for the ES-WMV statistic.
_ES_MAX_ELEMENTS = 1 << 18
_POISSON_EPS = 1e-6
#: Weight of the running mean of the training loss read by the noise-level stop.
_LOSS_EMA = 0.95
#: The noise level at which the residual-whiteness stop ends at ``-es_whiteness``; at an estimated
#: level sigma it ends at ``-es_whiteness * WHITENESS_SIGMA / sigma`` (at its best stop the residual
#: is more negatively correlated the lower the noise: Set9 RGB -0.015 to -0.067 at sigma 15/255).
WHITENESS_SIGMA = 25.0 / 255.0
#: Steps over which the hole-change stop (``DIPParams.es_hole_change``) measures the change of
#: the estimate over the holes.
HOLE_CHANGE_LAG = 50
#: The hole-change stop also ends a run whose holes move less than this (mean absolute change
#: over :data:`HOLE_CHANGE_LAG` steps, image values in [0, 1]: 1/8 of an 8-bit grey level): a
#: warm-started fit whose holes hardly move from the start.
HOLE_CHANGE_FLOOR = 0.0005
#: The held-out stop needs at least this many held-out (and this many training) known pixels.
_HOLDOUT_MIN_PIXELS = 64


@dataclass
class Step:
    """Progress of a fit, yielded every few iterations.

    Attributes
    ----------
    iteration : int
        Iterations done in the current plane.
    iterations : int
        Maximum iterations of the current plane.
    loss : float
        Data-term loss at ``iteration``.
    es_variance : float or None
        ES-WMV statistic (windowed variance of the outputs), once the window is full.
    es_best_iteration : int or None
        Iteration of the current early-stopping candidate (running variance minimum).
    preview : ndarray or None
        Current estimate, shape (H, W, C), float32, normalised to [0, 1]; only every
        ``params.preview_every`` iterations.
    elapsed : float
        Seconds since the plane's fit started.
    plane, n_planes : int
        Index of the plane being fitted and number of planes (nD stacks).
    tile, n_tiles : int
        Index of the tile being fitted and number of tiles of the plane (large images
        processed in overlapping tiles; 0 and 1 otherwise).
    tile_kind : {"tile", "region"}
        What the tiles are: a plan covering the plane, or regions around an inpainting's holes.
    backtracked : bool
        The fit diverged since the last Step and the last good weights were restored.
    """

    iteration: int
    iterations: int
    loss: float
    es_variance: float | None = None
    es_best_iteration: int | None = None
    preview: np.ndarray | None = None
    elapsed: float = 0.0
    plane: int = 0
    n_planes: int = 1
    backtracked: bool = False
    tile: int = 0
    n_tiles: int = 1
    tile_kind: str = "tile"

    @property
    def fraction(self) -> float:
        """Overall progress in [0, 1] across all planes and tiles (assuming full iteration counts)."""
        in_plane = (self.tile + self.iteration / max(self.iterations, 1)) / max(self.n_tiles, 1)
        return (self.plane + in_plane) / max(self.n_planes, 1)


@dataclass
class History:
    """Snapshots of the estimate during a fit.

    Attributes
    ----------
    frames : ndarray, shape (F, H, W, C), float32 in [0, 1]
    iterations : ndarray, shape (F,), int
    losses : ndarray, shape (F,), float
    """

    frames: np.ndarray
    iterations: np.ndarray
    losses: np.ndarray


@dataclass
class FitResult:
    """Outcome of one fit.

    Attributes
    ----------
    image : ndarray, shape (H, W, C), float32 in [0, 1]
        The estimate at ``iteration``: with early stopping and no output averaging, the
        output at the variance minimum; with output averaging, the average at the stop.
    iteration : int
        Iteration the returned image comes from.
    iterations_run : int
        Steps actually taken.
    stopped_early : bool
        The run ended because the early stop was certain.
    losses : ndarray, shape (iterations_run,)
        Loss of every step (a seed ensemble: the mean of its members' losses).
    es_variances : ndarray, shape (iterations_run,)
        ES-WMV statistic of every step (NaN until the window is full).
    history : History or None
    seed : int
    state_dict : dict or None
        Network weights (on the CPU) for a warm start of the next plane: with early stopping
        the weights at the noise-level stop, or near the variance minimum, before the fit
        began to reproduce the noise; otherwise the weights at the end.  A seed ensemble's
        (``DIPParams.ensemble > 1``) is :meth:`.ensemble.MemberStack.state_dict`: each
        parameter stacked over the members.
    stop_reason : {"noise level", "residual whiteness", "holes settled", "variance minimum", "held-out minimum"} or None
        Which early stop ended the run (None: it ran all its iterations or was cancelled).
    noise_sigma : float or None
        The input's noise level (standard deviation, in the [0, 1] units of the fit) the
        noise-level stop aimed at: given by the user, or estimated from the image; None when
        that stop was off or the loss is Poisson (whose noise level follows from the counts).
    deviance : float or None
        Poisson loss with the noise-level stop: the running mean deviance per pixel of the
        fit against the counts at the last check, and ``expected_deviance`` the value Poisson
        noise of the estimated rate leaves (the stop's threshold before its factor).
    holdout_mse : ndarray of shape (n, 2) or None
        With the held-out stop (``DIPParams.es_holdout``): (iteration, mean squared error of
        the estimate on the held-out known pixels) at every check.
    residual_correlation : float or None
        With the residual-whiteness stop (``DIPParams.es_whiteness``): the lag-1
        autocorrelation of the residual (input minus estimate) at the last check; None when
        that stop was off.
    hole_change_ratio : float or None
        The fraction the hole-change stop read: ``DIPParams.es_hole_change``, or
        ``es_hole_change_scattered`` when the holes were scattered pixels,
        ``es_hole_change_large`` when they were large regions; None when that stop
        was off (no holes, no ``es_hole_change``, early stopping off, or the held-out stop).
    cuda_graph : bool
        The fit's steps (after the first few) replayed a CUDA graph (``DIPParams.cuda_graph``
        on a CUDA device, :mod:`.graphs`); False on other devices, or when the step could not be
        recorded (a RuntimeWarning said why).
    fill_weight : float or None
        With the blended fill (``DIPParams.fill_blend``): the network's share ``w`` of the
        holes' fill ``b + w (network - b)``, ``b`` the biharmonic fill, chosen on known pixels
        held out in the shape of the holes (:mod:`.fillblend`; for large holes at least
        ``DIPParams.fill_blend_large_min``); None when there was no blend.
    large_holes : bool
        The fit's holes were large (:func:`~.regions.large_holes`): with early stopping on it took
        at most ``DIPParams.iterations_large`` steps, where that is set.
    """

    image: np.ndarray
    iteration: int
    iterations_run: int
    stopped_early: bool
    losses: np.ndarray
    es_variances: np.ndarray
    history: History | None
    seed: int
    state_dict: dict | None = field(default=None, repr=False)
    stop_reason: str | None = None
    noise_sigma: float | None = None
    deviance: float | None = None
    expected_deviance: float | None = None
    holdout_mse: np.ndarray | None = None
    residual_correlation: float | None = None
    hole_change_ratio: float | None = None
    cuda_graph: bool = False
    fill_weight: float | None = None
    large_holes: bool = False


#: A linear history has at least this many frames when the run has twice as many iterations.
MIN_HISTORY_FRAMES = 10


def history_cadence(params: DIPParams) -> int:
    """Iterations between linear history frames (0: no history).

    ``params.history_every``, or ``max(1, iterations // MIN_HISTORY_FRAMES)`` when that is
    smaller: a short run (40 iterations with the presets' cadence of 100) still gets a useful
    history, and any run of 20 iterations or more has at least 10 frames.
    """
    if params.history_every <= 0:
        return 0
    return min(params.history_every, max(1, params.iterations // MIN_HISTORY_FRAMES))


def history_iterations(params: DIPParams) -> np.ndarray:
    """The iterations at which history frames are saved (empty when the history is off).

    Linear spacing: every :func:`history_cadence` iterations, and the last one; log spacing:
    ``params.history_frames`` log-spaced iterations.  The fit, the job and the memory plan
    all read the frames from here.
    """
    t = params.iterations
    if params.history_every <= 0 or (params.history_spacing == "log" and params.history_frames <= 0):
        return np.zeros(0, dtype=np.int64)
    if params.history_spacing == "log":
        its = np.unique(np.round(np.geomspace(1, t, params.history_frames)).astype(np.int64))
    else:
        every = history_cadence(params)
        its = np.arange(every, t + 1, every, dtype=np.int64)
        if its.size == 0 or its[-1] != t:
            its = np.append(its, t)
    return its


def make_adam(parameters, lr: float, device: torch.device, capturable: bool = False) -> torch.optim.Adam:
    """Adam with the fused kernel where torch has one for ``device`` (the same update rule).

    On the CPU the fused step is ~10 % of a small network's step faster than the default
    per-tensor loop (measured at 128 px); devices without a fused kernel get the default.
    ``capturable``: the step counts live on the device, so that a CUDA graph can record the
    update (:mod:`.graphs`).
    """
    parameters = list(parameters)
    extra = {"capturable": True} if capturable else {}
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.Adam(parameters, lr=lr, fused=True, **extra)
        except (RuntimeError, ValueError, TypeError):
            pass
    return torch.optim.Adam(parameters, lr=lr, **extra)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``DIPParams.amp`` on ``device`` (None: plain float32)."""
    if amp == "bf16":
        return torch.bfloat16
    if amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


@dataclass
class _Checkpoint:
    """The last good state of a fit, restored when it diverges."""

    iteration: int
    loss: float
    weights: dict
    optimiser: dict
    avg: torch.Tensor | None  # the output average (a copy), or None without averaging
    cand: torch.Tensor  # the estimate at ``iteration`` (not updated in place)


def _checkpoint(t: int, loss: float, net, opt, avg, cand) -> _Checkpoint:
    avg_copy = None if avg is None else avg.clone()
    return _Checkpoint(
        t,
        loss,
        {k: v.detach().clone() for k, v in net.state_dict().items()},
        copy.deepcopy(opt.state_dict()),
        avg_copy,
        avg_copy if cand is avg else cand,
    )


class DIPFit:
    """One Deep Image Prior fit of a 2D image.

    Parameters
    ----------
    target : ndarray, shape (h, w, C), float32
        The measured (corrupted) image, normalised to [0, 1].
    known : ndarray of bool, shape (h, w), optional
        True where the pixel is known (inpainting); holes are False. None: all known.
        A shorthand for ``operator=MaskOperator(known)``.
    operator : Operator, optional
        The forward operator ``A`` of the degradation (:mod:`.degradations`): the loss
        compares ``A(output)`` with ``target``; the estimate has ``operator.output_hw(h, w)``
        pixels.  None: the identity (denoising), or the mask ``known``.
    params : DIPParams
    device : torch.device
    seed : int
        Seeds z, the weights and the jitter: the same seed gives the same result on the CPU.
        A seed ensemble's member ``k`` is seeded with ``member_seeds(seed, K)[k]``
        (:func:`.ensemble.member_seeds`: member 0 with ``seed`` itself).
    counts_scale : float
        For the Poisson loss: counts per unit of ``target`` (target * counts_scale are the
        photon counts).
    noise_sigma : float, optional
        The input's noise level (standard deviation, in the [0, 1] units of ``target``) for the
        noise-level stop; None: estimated from the image (:func:`.stopping.estimate_noise_sigma`).
        The stop aims at what a given level leaves where the image was clipped to [0, 1]
        (:func:`.stopping.clipped_noise_variance`), the estimate at its square.
        A given level also turns the residual-whiteness stop (``es_whiteness``) off: that stop
        makes up for an estimate's error.  It is off for single-channel images too.
    init_state : dict, optional
        Network weights to start from (warm start from a neighbouring plane); for a seed
        ensemble the ``state_dict`` of a fit with the same ``ensemble``.
    tile : bool
        The fit is one tile of a tiled plane: on a CPU a tile of at most
        :data:`~..device.TILE_FIT_PIXELS` runs on one intra-op thread, as a small fit does
        (:func:`~..device.fit_threads`), so the tiles of a plane run side by side in lanes and
        compute the same in a lane, one after another, or on a dask worker; with thin holes or
        none it takes at most ``params.tile_iterations`` steps when that is set, with scattered
        holes ``params.tile_iterations_scattered`` (:attr:`max_iterations`).
    """

    def __init__(
        self,
        target: np.ndarray,
        *,
        known: np.ndarray | None = None,
        operator: Operator | None = None,
        params: DIPParams,
        device: torch.device,
        seed: int,
        counts_scale: float = 1.0,
        init_state: dict | None = None,
        noise_sigma: float | None = None,
        tile: bool = False,
    ):
        if target.ndim != 3:
            raise ValueError(f"target must have shape (H, W, C), got {target.shape}")
        if operator is not None and known is not None:
            raise ValueError("give known (a mask) or operator, not both")
        self.target = np.ascontiguousarray(target, dtype=np.float32)
        if operator is None:
            operator = Operator() if known is None else MaskOperator(known)
        self.operator = operator
        self.known = operator.known
        self.params = params
        self.device = torch.device(device)
        self.seed = int(seed)
        self.counts_scale = float(counts_scale)
        self.init_state = init_state
        self.given_noise_sigma = None if noise_sigma is None else float(noise_sigma)
        self.tile = bool(tile)
        h, w, _ = self.target.shape
        self.out_hw = operator.output_hw(h, w)
        self.padded = padded_shape(params.net, *self.out_hw)
        self.offset = ((self.padded[0] - self.out_hw[0]) // 2, (self.padded[1] - self.out_hw[1]) // 2)
        self.history_its = history_iterations(params)
        # state shared with result()
        self._t = 0
        self._cand: torch.Tensor | None = None
        self._best: torch.Tensor | None = None
        self._best_iter: torch.Tensor | None = None
        self._losses: list[np.ndarray] = []
        self._vars: list[np.ndarray] = []
        self._frames: np.ndarray | None = None
        self._n_frames = 0
        self._frame_losses = np.zeros(len(self.history_its), dtype=np.float64)
        self._stopped_early = False
        self._net: SkipNet | None = None
        self._warm_state: dict | None = None
        self._warm_iter: int | None = None
        self._stop_reason: str | None = None
        self._holdout_mse: list[tuple[int, float]] = []  # (iteration, error on the held-out pixels)
        self._blend_held: np.ndarray | None = None  # pixels held out to weigh the fill (fillblend)
        self._blended: tuple[int, np.ndarray, float] | None = None  # (iteration, image, weight)
        self._kind: str | None = None  # regions.hole_kind of the mask, once read
        self._noise_sigma: float | None = None
        self._deviance: float | None = None
        self._expected_deviance: float | None = None
        self._hole_change: float | None = None
        self._residual_corr: float | None = None
        self.hole_change_ratio: float | None = None  # FitResult.hole_change_ratio
        self._graphed: GraphedStep | None = None  # a fit on a CUDA device (released at its end)

    # -- helpers ---------------------------------------------------------------------
    def _to_hwc(self, t: torch.Tensor) -> np.ndarray:
        # a copy: the estimate tensors are updated in place while the fit runs
        return t[0].detach().float().permute(1, 2, 0).cpu().numpy().copy()

    def _jitter_generator(self, seed: int | None = None) -> torch.Generator | None:
        seed = self.seed if seed is None else seed
        try:
            return torch.Generator(device=self.device).manual_seed(seed + 1)
        except (RuntimeError, TypeError):  # a backend without device generators
            return None

    def _members(self, c: int):
        """A seed ensemble's members: (MemberStack, z of shape (K, C, H, W), jitter draws).

        Member ``k`` is built exactly as a one-network fit with ``member_seeds(seed, K)[k]``
        builds its network, input and jitter; ``jitter()`` draws the K jitters at once.
        """
        p = self.params
        nets, zs, draws = [], [], []
        for s_k in member_seeds(self.seed, p.ensemble):
            gen = torch.Generator().manual_seed(s_k)
            nets.append(seeded_skip_net(p.net.in_channels, c, p.net, s_k))
            zs.append(make_input(p.net, *self.padded, generator=gen, device=self.device))
            draws.append((self._jitter_generator(s_k), gen))
        shape = zs[0].shape
        dev = self.device

        def jitter() -> torch.Tensor:
            return torch.cat(
                [
                    torch.randn(shape, generator=jit, device=dev)
                    if jit is not None
                    else torch.randn(shape, generator=gen).to(dev)
                    for jit, gen in draws
                ]
            )

        return MemberStack(nets), torch.cat(zs), jitter

    @property
    def max_iterations(self) -> int:
        """The steps this fit takes at most: ``params.iterations``, or the smallest of it and,
        where they are set, ``params.iterations_large`` for large holes (with early stopping on)
        and, for one tile of a tiled plane, ``params.tile_iterations`` (thin holes or none) or
        ``params.tile_iterations_scattered`` (scattered holes)."""
        p = self.params
        kind = "" if self.known is None else self._hole_kind()
        caps = (p.tile_step_limit(kind) if self.tile else 0, p.large_step_limit() if kind == "large" else 0)
        return min([p.iterations, *(c for c in caps if c)])

    def _hole_kind(self) -> str:
        """The kind of the mask's holes (:func:`.regions.hole_kind`: "scattered", "large" or ""):
        read by the hole-change stop and the blended fill, computed once (a distance transform)."""
        if self._kind is None:
            self._kind = hole_kind(~self.known)
        return self._kind

    def _holdout_pixels(self) -> np.ndarray | None:
        """The known pixels held out of the loss for the held-out stop (None: off, or too few)."""
        frac = self.params.es_holdout
        if frac <= 0:
            return None
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x401D]))
        hold = self.known & (rng.random(self.known.shape) < frac)
        if hold.sum() < _HOLDOUT_MIN_PIXELS or (self.known & ~hold).sum() < _HOLDOUT_MIN_PIXELS:
            return None
        return hold

    def _replace_frames_after(self, iteration: int, cand: torch.Tensor, loss: float) -> None:
        """History frames saved after ``iteration`` (a diverging stretch) show ``cand`` instead."""
        if self._frames is None:
            return
        later = [k for k in range(self._n_frames) if self.history_its[k] > iteration]
        if later:
            image = self._to_hwc(cand)
            for k in later:
                self._frames[k] = image
                self._frame_losses[k] = loss

    def _diverged(self, t: int, loss: float, ckpt, rolled_back_at: int | None):
        """The FitDivergedError of a NaN or infinite loss at iteration ``t``."""
        from ..errors import FitDivergedError

        p = self.params
        if rolled_back_at is not None:
            how = (
                f" again (it first diverged at iteration {rolled_back_at} and was rolled back "
                f"to the weights of iteration {ckpt.iteration})"
            )
        elif ckpt is None:
            how = " before any good weights were saved to roll back to" if p.backtrack else ""
        else:
            how = ""
        fixes = [f"lower {{lr}} (it is {p.lr:g}; the presets use 0.01)"]
        if autocast_dtype(p.amp, self.device) is not None:
            fixes.append("turn {amp} off (bfloat16 may overflow)")
        if not p.backtrack:
            fixes.append("turn {backtrack} on (it rolls a diverging fit back once)")
        fixes.append("try another {seed}")
        return FitDivergedError(
            f"the fit diverged at iteration {t} (loss {loss:g}){how}; " + ", ".join(fixes[:-1]) + f" or {fixes[-1]}"
        )

    # -- the loop --------------------------------------------------------------------
    def steps(self) -> Generator[Step, None, FitResult]:
        """Run the fit, yielding a :class:`Step` every ``params.yield_every`` iterations.

        A small fit on the CPU runs on one intra-op thread (:func:`~..device.fit_threads`).
        """
        hp, wp = self.padded
        # a seed ensemble's step does the work of K fits of the size: thread it as such
        with fit_threads(self.device, hp * self.params.ensemble, wp, tile=self.tile):
            try:
                return (yield from self._steps())
            finally:
                # a finished or closed fit frees its recorded step (the graph's memory holds a
                # step's activations), also while the job keeps this DIPFit for its result
                if self._graphed is not None:
                    self._graphed.release()

    def _steps(self) -> Generator[Step, None, FitResult]:
        p = self.params
        dev = self.device
        h, w, c = self.target.shape  # the measurement
        oh, ow = self.out_hw  # the estimate
        top, left = self.offset
        op = self.operator.to(dev, c)
        t0 = time.perf_counter()

        K = p.ensemble  # members of a seed ensemble (1: one network)
        cpu_gen = torch.Generator().manual_seed(self.seed)
        if K == 1:
            net = seeded_skip_net(p.net.in_channels, c, p.net, self.seed)
        else:
            net, z, member_jitter = self._members(c)
        if self.init_state is not None:
            net.load_state_dict(self.init_state)
        net = net.to(dev)
        net.train()
        self._net = net
        if K == 1:
            z = make_input(p.net, *self.padded, generator=cpu_gen, device=dev)
            jit_gen = self._jitter_generator()

        x = torch.from_numpy(self.target).permute(2, 0, 1)[None].to(dev)
        hold = self._holdout_pixels() if self.known is not None and p.early_stop else None
        if self.known is not None and p.fill_blend > 0 and self._hole_kind() != "scattered":
            # known pixels in the shape of the holes, left out to weigh the fill (fillblend);
            # not for scattered holes (half the pixels missing at random): taking known pixels
            # from between them cost Barbara's fine stripes 0.65-1.0 dB (README)
            self._blend_held = blend_pixels(self.known, p.fill_blend, self.seed)
        if self.known is not None:
            train = self.known if hold is None else self.known & ~hold
            if self._blend_held is not None:
                train = train & ~self._blend_held
            m = torch.from_numpy(train.astype(np.float32))[None, None].to(dev)
            n_known = float(train.sum()) * c
        else:
            m = None
            n_known = float(h * w * c)
        poisson = p.loss == "poisson"
        s = self.counts_scale
        y_counts = x * s if poisson else None

        use_graph = wants_graph(p.cuda_graph, dev)
        opt = make_adam(net.parameters(), p.lr, dev, capturable=use_graph)
        amp_dtype = autocast_dtype(p.amp, dev)

        T = self.max_iterations
        losses = torch.zeros(T, device=dev)
        variances = torch.full((T,), float("nan"), device=dev)
        # ES-WMV ring buffer on a strided view of the output
        stride = max(1, math.ceil(math.sqrt(oh * ow * c / _ES_MAX_ELEMENTS)))
        es_n = len(range(0, oh, stride)) * len(range(0, ow, stride)) * c
        wvar = WindowVariance(p.es_window, es_n, dev)
        best_var = torch.tensor(float("inf"), device=dev)
        self._best_iter = torch.tensor(0, device=dev, dtype=torch.long)
        # A warm start begins near the previous plane's fit: the start floor, which guards
        # against the false early minimum of a fit from random weights, is not needed.
        es_from = max(p.es_window, 1) if self.init_state is not None else max(p.es_window, p.es_start, 1)
        # Noise-level stop (discrepancy principle), on every pixel (no mask): the Gaussian
        # loss against the estimated noise variance; the Poisson loss by its deviance
        # against the deviance Poisson noise of the estimated rate leaves.
        noise_stop = p.early_stop and p.es_noise_factor > 0 and op.noise_stop and m is None
        noise_level = None
        dev_offset = 0.0
        if noise_stop and poisson:
            # deviance = 2 (nll - (y - y log y)): the mean of the second term, once
            dev_offset = float((y_counts - torch.xlogy(y_counts, y_counts)).mean())
        elif noise_stop and self.given_noise_sigma is None:
            self._noise_sigma = estimate_noise_sigma(self.target)  # it reads the clipped noise
            noise_level = p.es_noise_factor * self._noise_sigma**2
        elif noise_stop:
            # a given level is the noise's own: what it leaves once the image was clipped
            self._noise_sigma = self.given_noise_sigma
            noise_level = p.es_noise_factor * clipped_noise_variance(self.target, self._noise_sigma)
        loss_mean = None
        # Residual-whiteness stop: beside the Gaussian noise-level stop on an estimated level, for
        # images of several channels (one channel: the weak-texture noise estimate needs no help)
        white_stop = noise_stop and not poisson and p.es_whiteness > 0 and self.given_noise_sigma is None and c > 1
        if white_stop:
            sigma = self._noise_sigma
            white_level = -p.es_whiteness * WHITENESS_SIGMA / sigma if sigma > 0 else -math.inf

        # Hole-change stop: the estimate over the holes, kept at the yields of the last lag steps
        hole_stop = p.early_stop and p.es_hole_change > 0 and self.known is not None and hold is None
        hole_stop = hole_stop and bool((~self.known).any())  # (a mask without holes: nothing to watch)
        if hole_stop:
            hole_sel = torch.from_numpy(~self.known).to(dev)
            hole_past: list[tuple[int, torch.Tensor]] = []
            hole_ref: float | None = None
            self.hole_change_ratio = p.es_hole_change
            if p.es_hole_change_scattered > 0 and self._hole_kind() == "scattered":
                self.hole_change_ratio = p.es_hole_change_scattered
            elif p.es_hole_change_large > 0 and self._hole_kind() == "large":
                self.hole_change_ratio = p.es_hole_change_large

        if hold is not None:  # the held-out stop replaces ES-WMV's choice of the best estimate
            mv = torch.from_numpy(hold.astype(np.float32))[None, None].to(dev)
            n_hold = float(hold.sum()) * c
            best_val = math.inf

        if len(self.history_its):
            self._frames = np.zeros((len(self.history_its), oh, ow, c), dtype=np.float32)
        hist_set = {int(i): k for k, i in enumerate(self.history_its)}

        avg = None
        ckpt: _Checkpoint | None = None
        diverged_at: int | None = None  # iteration of a NaN / inf loss rolled back
        last_fit_psnr = None
        backtracked = False

        def train_step(zin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """One optimisation step on the input zin: (output, prediction, loss) before it."""
            if amp_dtype is None:
                out = net(zin)[:, :, top : top + oh, left : left + ow]
            else:
                # no cast cache: a recorded graph must not keep casts made outside it
                with torch.autocast(device_type=dev.type, dtype=amp_dtype, cache_enabled=not use_graph):
                    out = net(zin)[:, :, top : top + oh, left : left + ow]
                out = out.float()
            pred = op(out)  # A(x): the prediction of the measurement (of each member: K images)
            if K > 1:
                # the sum of the members' own data losses: each member's gradient is that of its fit
                if poisson:
                    lam = pred * s + _POISSON_EPS
                    nll = lam - y_counts * torch.log(lam)
                    loss = ((nll * m).sum() if m is not None else nll.sum()) / n_known / s
                else:
                    sq = (pred - x) ** 2
                    loss = ((sq * m).sum() if m is not None else sq.sum()) / n_known
            elif poisson:
                lam = pred * s + _POISSON_EPS
                nll = lam - y_counts * torch.log(lam)
                loss = ((nll * m).sum() / n_known if m is not None else nll.mean()) / s
            else:
                sq = (pred - x) ** 2
                loss = (sq * m).sum() / n_known if m is not None else sq.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return out, pred, loss

        # on a GPU the step is recorded once as a CUDA graph and replayed (.graphs)
        graphed = GraphedStep(train_step, z, p.reg_noise_std) if use_graph else None
        self._graphed = graphed

        for t in range(1, T + 1):
            noise = None
            if p.reg_noise_std > 0:
                if K > 1:
                    noise = member_jitter()
                else:
                    noise = (
                        torch.randn(z.shape, generator=jit_gen, device=dev)
                        if jit_gen is not None
                        else torch.randn(z.shape, generator=cpu_gen).to(dev)
                    )
            if graphed is not None:  # the graph's output buffers: overwritten by the next step
                out, pred, loss = graphed(noise)
            else:
                out, pred, loss = train_step(z if noise is None else z + p.reg_noise_std * noise)

            with torch.no_grad():
                if K > 1:
                    # from here on the fit is the members' mean: its output, prediction and loss
                    o = out.detach().mean(0, keepdim=True)
                    pred = pred.detach().mean(0, keepdim=True)
                    loss = loss.detach() / K
                else:
                    # a graph's output buffer is overwritten by the next step: keep a copy
                    o = out.detach().clone() if graphed is not None and p.exp_weight is None else out.detach()
                losses[t - 1] = loss.detach()
                if noise_stop:
                    if loss_mean is None:
                        loss_mean = loss.detach().clone()
                    else:
                        loss_mean.mul_(_LOSS_EMA).add_(loss.detach(), alpha=1.0 - _LOSS_EMA)
                if p.exp_weight is not None:
                    if avg is None:
                        avg = o.clone()
                    else:
                        decay = p.exp_weight
                        if p.ema_warmup:
                            decay = min(decay, (1.0 + t) / (10.0 + t))
                        avg.mul_(decay).add_(o, alpha=1.0 - decay)
                    cand = avg
                else:
                    cand = o
                self._cand = cand
                wvar.push(o[:, :, ::stride, ::stride].reshape(-1))
                if t >= p.es_window:
                    var = wvar.variance()
                    variances[t - 1] = var
                    if t >= es_from and hold is None:
                        better = var < best_var
                        best_var = torch.where(better, var, best_var)
                        self._best_iter = torch.where(better, torch.tensor(t, device=dev), self._best_iter)
                        if self._best is None:
                            self._best = cand.clone()
                        else:
                            self._best = torch.where(better, cand, self._best)
                if t in hist_set:
                    k = hist_set[t]
                    self._frames[k] = self._to_hwc(cand)
                    self._frame_losses[k] = float(loss)
                    self._n_frames = k + 1
            self._t = t

            if t % p.yield_every == 0 or t == T:
                lo = len(self._losses) and sum(len(a) for a in self._losses)
                seg = losses[lo:t].cpu().numpy()
                self._losses.append(seg)
                self._vars.append(variances[lo:t].cpu().numpy())
                with torch.no_grad():
                    po = pred.detach()
                    if m is not None:
                        fit_mse = float((((po - x) ** 2) * m).sum() / n_known)
                    else:
                        fit_mse = float(((po - x) ** 2).mean())
                fit_psnr = -10.0 * math.log10(max(fit_mse, 1e-12))
                step_loss = float(seg[-1])
                if not (math.isfinite(fit_mse) and np.isfinite(seg).all()):
                    # NaN or inf: the weights are lost.  Roll back once to the last good state;
                    # a second divergence (or none to roll back to) ends the fit.
                    bad = np.flatnonzero(~np.isfinite(seg))
                    bad_t, bad_loss = (lo + int(bad[0]) + 1, float(seg[bad[0]])) if bad.size else (t, fit_mse)
                    if ckpt is None or diverged_at is not None:
                        raise self._diverged(bad_t, bad_loss, ckpt, diverged_at)
                    diverged_at = bad_t
                    net.load_state_dict(ckpt.weights)
                    restore_optimiser(opt, ckpt.optimiser)  # in place (a graph reads it)
                    avg = None if ckpt.avg is None else ckpt.avg.clone()
                    self._cand = avg if avg is not None else ckpt.cand
                    loss_mean = None  # the noise-level stop's running mean restarts
                    self._replace_frames_after(ckpt.iteration, self._cand, ckpt.loss)
                    step_loss = ckpt.loss
                    backtracked = True
                elif (
                    p.backtrack
                    and last_fit_psnr is not None
                    and ckpt is not None
                    and fit_psnr < last_fit_psnr - p.backtrack_db
                ):
                    net.load_state_dict(ckpt.weights)
                    restore_optimiser(opt, ckpt.optimiser)  # in place (a graph reads it)
                    if ckpt.avg is not None:
                        avg = ckpt.avg.clone()
                        self._cand = avg
                    backtracked = True
                else:
                    last_fit_psnr = fit_psnr
                    if p.backtrack:
                        ckpt = _checkpoint(t, step_loss, net, opt, avg, self._cand)
                if hold is not None and t >= es_from and not backtracked:
                    with torch.no_grad():  # the estimate's error on the held-out known pixels
                        val = float((((op(self._cand) - x) ** 2) * mv).sum() / n_hold)
                    self._holdout_mse.append((t, val))
                    if val < best_val:
                        best_val = val
                        self._best = self._cand.clone()
                        self._best_iter = torch.tensor(t, device=dev)
                best_it = int(self._best_iter) if self._best is not None else None
                if p.early_stop and best_it is not None and best_it != self._warm_iter:
                    # weights near the variance minimum (to within yield_every steps): the
                    # warm start of the next plane, before this fit began to follow the noise
                    self._warm_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                    self._warm_iter = best_it
                stop = None
                if noise_stop and t >= es_from and poisson and loss_mean is not None:
                    # per pixel: the running mean deviance, and its expectation at the estimate
                    self._deviance = 2.0 * (s * float(loss_mean) - dev_offset)
                    self._expected_deviance = float(_expected_deviance(self._cand * s).mean())
                    noise_level = p.es_noise_factor * self._expected_deviance
                    reached = self._deviance <= noise_level
                else:
                    reached = noise_stop and t >= es_from and loss_mean is not None and float(loss_mean) <= noise_level
                white = False
                if white_stop and t >= es_from and not backtracked:
                    with torch.no_grad():
                        self._residual_corr = float(residual_correlation(x - op(self._cand)))
                    white = self._residual_corr <= white_level
                    # the noise level is not reached while the residual still holds image structure
                    reached = reached and self._residual_corr <= 0.0
                if hole_stop and not backtracked:
                    with torch.no_grad():
                        now = self._cand[0][:, hole_sel].clone()
                    hole_past.append((t, now))
                    while len(hole_past) > 1 and hole_past[1][0] <= t - HOLE_CHANGE_LAG:
                        hole_past.pop(0)
                    then_t, then = hole_past[0]
                    if t - then_t >= HOLE_CHANGE_LAG:
                        self._hole_change = float((now - then).abs().mean())
                        if hole_ref is None and t >= 2 * HOLE_CHANGE_LAG:
                            hole_ref = self._hole_change  # how fast the holes moved at the start
                        if (
                            t >= es_from
                            and hole_ref is not None
                            and self._hole_change <= max(self.hole_change_ratio * hole_ref, HOLE_CHANGE_FLOOR)
                        ):
                            stop = "holes settled"
                if stop is None and (reached or white):
                    stop = "noise level" if reached else "residual whiteness"
                    # the returned state: the next plane starts from the weights at this stop
                    self._warm_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                    self._warm_iter = t
                elif stop is not None:  # holes settled: the next plane starts from here too
                    self._warm_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                    self._warm_iter = t
                elif (
                    p.early_stop
                    and best_it is not None
                    and t - best_it >= max(p.es_patience, p.es_patience_ratio * best_it)
                ):
                    stop = "variance minimum" if hold is None else "held-out minimum"
                var_now = float(variances[t - 1]) if t >= p.es_window else None
                preview = None
                if p.preview_every and (t // p.yield_every) % max(1, p.preview_every // p.yield_every) == 0:
                    preview = self._to_hwc(self._cand)
                yield Step(
                    iteration=t,
                    iterations=T,
                    loss=step_loss,
                    es_variance=var_now,
                    es_best_iteration=best_it,
                    preview=preview,
                    elapsed=time.perf_counter() - t0,
                    backtracked=backtracked,
                )
                backtracked = False
                if stop is not None:
                    self._stopped_early, self._stop_reason = True, stop
                    break
        return self.result()

    def result(self) -> FitResult:
        """What has been computed so far (callable after a cancelled run too)."""
        if self._cand is None:
            raise RuntimeError("the fit has not taken a step yet: nothing to return")
        p = self.params
        if self._holdout_mse and self._best is not None:
            # the held-out stop: the estimate with the smallest error on the held-out pixels
            image, it = self._best, int(self._best_iter)
        elif (
            p.early_stop
            and self._best is not None
            and p.exp_weight is None
            and self._stop_reason not in ("noise level", "residual whiteness", "holes settled")
        ):
            # the raw output at the variance minimum (ES-WMV)
            image, it = self._best, int(self._best_iter)
        else:
            # With output averaging the average at the stop is returned: it keeps improving
            # through the patience window after the variance minimum (Set9 at 128 px: 0.04 dB
            # below the best history frame on average, against 0.67 dB for the average taken
            # at the minimum itself).
            image, it = self._cand, self._t
        history = None
        if self._frames is not None:
            n = self._n_frames
            history = History(self._frames[:n].copy(), self.history_its[:n].copy(), self._frame_losses[:n].copy())
        losses = np.concatenate(self._losses) if self._losses else np.zeros(0)
        variances = np.concatenate(self._vars) if self._vars else np.zeros(0)
        state = None
        if self._warm_state is not None:
            state = {k: v.to("cpu", copy=True) for k, v in self._warm_state.items()}
        elif self._net is not None:
            state = {k: v.detach().to("cpu", copy=True) for k, v in self._net.state_dict().items()}
        out, fill_weight = self._to_hwc(image), None
        if self._blend_held is not None:
            if self._blended is None or self._blended[0] != it:
                floor = self.params.fill_blend_large_min if self._hole_kind() == "large" else 0.0
                blended, weight = blend_fill(out, self.target, self.known, self._blend_held, min_weight=floor)
                self._blended = (it, blended, weight)
            out, fill_weight = self._blended[1].copy(), self._blended[2]
        return FitResult(
            image=out,
            iteration=it,
            iterations_run=self._t,
            stopped_early=self._stopped_early,
            losses=losses,
            es_variances=variances,
            history=history,
            seed=self.seed,
            state_dict=state,
            stop_reason=self._stop_reason,
            noise_sigma=self._noise_sigma,
            deviance=self._deviance,
            expected_deviance=self._expected_deviance,
            holdout_mse=np.asarray(self._holdout_mse, dtype=np.float64).reshape(-1, 2) if self._holdout_mse else None,
            residual_correlation=self._residual_corr,
            hole_change_ratio=self.hole_change_ratio,
            cuda_graph=self._graphed is not None and self._graphed.replaying,
            fill_weight=fill_weight,
            large_holes=self.known is not None and self._hole_kind() == "large",
        )
