"""Parameters of the Deep Image Prior fits, as frozen dataclasses, and named presets.

Every run is described by one :class:`DIPParams` (which holds a :class:`NetParams`).
Widgets and the command line fill these objects; the core never reads a widget.

Presets
-------
The presets named after rows of the reference table of Ulyanov et al. (2018) reproduce the
settings of the published code exactly ("denoise-paper" is the F16 row, "inpaint-text" the
kate row, ...).  ``paper`` resolves, per task, to the row the paper used for that task.
The presets without a suffix ("denoise", "inpaint") are the project's defaults: a lighter
network with automatic early stopping, tuned so a first run gives a good result quickly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Literal

import numpy as np

from ..arrays import template_literal
from ..errors import ParameterError
from ..nets import NetParams
from .degradations import DEGRADATIONS, get_degradation

__all__ = [
    "DENOISE_DEFAULTS",
    "ENSEMBLE_MAX",
    "PRESETS",
    "PRESET_DESCRIPTIONS",
    "DIPParams",
    "LR_MAX",
    "NetParams",
    "check_ensemble",
    "check_lr",
    "get_preset",
    "preset_names",
]


#: The largest learning rate accepted.  Adam moves every weight by about ``lr`` per step: the
#: presets use 0.01 (0.001 for the missing-pixels recipe); from about 0.1 the fit of the default
#: networks becomes erratic, and far above 1 the outputs saturate (an all-black or all-NaN result).
LR_MAX = 1.0


def check_lr(lr) -> float:
    """``lr`` as a float if it is a usable Adam learning rate (finite, in (0, LR_MAX])."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)):
        raise TypeError(f"lr (learning rate) must be a number, got {lr!r}")
    if not (math.isfinite(lr) and 0.0 < lr <= LR_MAX):
        raise ParameterError(
            f"{{lr}} (the learning rate) must be a finite number > 0 and <= {LR_MAX:g}, got {lr}; "
            "typical values are 0.001-0.01 (the presets use 0.01)"
        )
    return float(lr)


#: The largest seed ensemble (``DIPParams.ensemble``).
ENSEMBLE_MAX = 16


def check_ensemble(ensemble) -> int:
    """``ensemble`` as an int if it is a usable number of ensemble members (an integer, 1..ENSEMBLE_MAX)."""
    if isinstance(ensemble, bool) or not isinstance(ensemble, (int, np.integer)) or not 1 <= ensemble <= ENSEMBLE_MAX:
        raise ParameterError(
            f"{{ensemble}} (the number of seeds averaged) must be an integer from 1 to {ENSEMBLE_MAX}, "
            f"got {template_literal(repr(ensemble))}; 1 fits one network, 2-4 average that many "
            "independently seeded fits"
        )
    return int(ensemble)


@dataclass(frozen=True)
class DIPParams:
    """One Deep Image Prior fit.

    Parameters
    ----------
    net : NetParams
        The network.
    iterations : int
        Maximum number of optimisation steps (early stopping may end the run sooner).
    lr : float
        Adam learning rate, finite, in (0, :data:`LR_MAX`]; the presets use 0.01.
    reg_noise_std : float
        Standard deviation of the Gaussian jitter added to z at every step (0 disables).
    exp_weight : float or None
        Output averaging: ``avg = w * avg + (1 - w) * out`` (0.99 in the reference
        denoising code). ``None`` returns the raw output.
    ema_warmup : bool
        Use ``w_t = min(exp_weight, (1 + t) / (10 + t))`` at step t, so the average forgets
        the poor first outputs quickly instead of lagging ~1/(1-w) steps behind the fit
        (the reference code uses a constant weight: False in the paper presets).
    loss : {"gaussian", "poisson"}
        Data term: mean squared error, or the Poisson negative log-likelihood for
        photon-count data (the image must then be non-negative counts).
    early_stop : bool
        Automatic early stopping by the windowed moving variance of the outputs (ES-WMV,
        Wang et al. 2023).
    es_window, es_patience, es_start : int
        ES-WMV window, patience (steps without a new variance minimum before the stop is
        certain) and start floor (minima before this iteration are ignored).
    es_patience_ratio : float
        Patience grows with the iteration of the variance minimum: the stop is certain
        ``max(es_patience, es_patience_ratio * t_min)`` steps after the minimum at
        ``t_min``.  With output averaging the averaged estimate keeps improving for a while
        after the raw output's variance minimum, longer when the minimum comes late (at
        128 px the averaged estimate of the default network peaked 1.5-2x after ``t_min``).
        0 gives the fixed patience of ES-WMV.
    es_noise_factor : float
        Noise-level stop (the discrepancy principle), without a mask: the run also ends at
        the first yield, after ``es_start``, where a running mean (weight 0.95) of the
        training loss has fallen to ``es_noise_factor * sigma**2``, ``sigma`` being the
        noise level of the input estimated from the covariance of its patches
        (:func:`~.fit.estimate_noise_sigma`): the fit then reproduces the image as closely
        as its noise allows, and going on would fit the noise.  For the Poisson loss the
        running mean is that of the deviance per pixel of the fit against the counts, and
        the level is ``es_noise_factor`` times the deviance Poisson noise of the current
        estimate's rate would leave (:func:`~.fit.expected_poisson_deviance`, about 1 per
        pixel).  Whichever of the two stops comes first ends the run.  0 disables it
        (ES-WMV alone).
    es_whiteness : float
        Residual-whiteness stop, beside the Gaussian noise-level stop (``es_noise_factor`` > 0,
        every pixel measured, no noise level given by the user, an image of two or more
        channels): the run also ends at the
        first yield, after ``es_start``, where the lag-1 autocorrelation of the residual (the
        input minus the averaged estimate, :func:`~.stopping.residual_correlation`) has
        fallen to ``-es_whiteness * (25/255) / sigma`` (``sigma`` the estimated noise level:
        ``-es_whiteness`` at 25 grey levels of 255, lower for less noise, whose best stop
        comes at a more negative correlation), and the noise-level stop waits until that
        correlation is no longer positive.  It needs no noise level: the residual of a fit still short of the
        image holds image structure (positive correlation); once the fit reproduces the noise
        the residual is high-passed noise (negative).  It corrects the noise-level stop where
        the estimate of the noise is a few per cent off: too low, and the loss reaches the
        level late (the whiteness stop comes first); too high, and the level is reached while
        structure is left in the residual (the noise-level stop waits).  0 disables it.
        Single-channel images (grey, one microscopy channel) do without it: their noise
        estimate reads weak-texture patches only (:func:`~.stopping.estimate_noise_sigma`),
        and their residual's correlation at the best stop scatters far more (-0.005 to -0.14
        on Set9 and Set12 in grey): replayed on 45 recorded grey runs (sigma 15/25/50), the
        noise-level stop alone came 0.05-0.11 dB below the best stop on the mean, with this
        stop at 0.035 0.07-0.54 dB.
    es_holdout : float
        Held-out stop for masked fits (inpainting): this fraction of the known pixels (a
        seeded random choice) is left out of the loss and used as a validation set; the
        run's best estimate is the one with the smallest error on them (measured at every
        yield), and it ends ``max(es_patience, es_patience_ratio * t_best)`` steps after that
        best, in place of ES-WMV.  The held-out pixels are still returned exactly as given.
        0 disables it (ES-WMV); unmasked fits ignore it.
    es_hole_change : float
        Hole-change stop for masked fits (inpainting): the run ends at the first yield, after
        ``es_start``, where the estimate's mean absolute change over the holes during the last
        :data:`~.fit.HOLE_CHANGE_LAG` steps is at most this fraction of the same change
        measured at step ``2 * HOLE_CHANGE_LAG`` (how fast the holes moved at the start), or
        below :data:`~.fit.HOLE_CHANGE_FLOOR`; the estimate at that yield is returned.  The fill
        of the holes settles long before the known pixels are fitted to their last detail, and
        the known pixels are returned as given anyway.  ES-WMV stays as the safety net.  0
        disables it; unmasked fits (and fits with the held-out stop) ignore it.
    es_hole_change_scattered : float
        The hole-change stop's fraction for a fit whose holes are scattered pixels
        (:func:`~.regions.scattered_holes`: at least 20 % of the plane missing, a hole pixel on
        average at most 1.5 px from a known one, e.g. half the pixels missing at random), in
        place of ``es_hole_change``.  With every other pixel known the fill of such holes keeps
        improving long after its change has fallen to the fraction that suits scratches and
        text.  0: ``es_hole_change`` for every mask.
    es_hole_change_large : float
        The hole-change stop's fraction for a fit whose holes are large regions
        (:func:`~.regions.large_holes`: a hole pixel on average at least 4 px from a known one,
        e.g. blotches, a torn corner), in place of ``es_hole_change``.  The network's fill of a
        large hole peaks early and then drifts while the known pixels are fitted to their last
        detail.  0: ``es_hole_change`` for every mask.
    iterations_large : int
        The most steps a fit whose holes are large (:func:`~.regions.large_holes`) takes with
        early stopping on, a whole plane, a region or a tile alike (0: ``iterations``); the
        other stops still apply.  The fill of a large hole peaks within a few hundred steps,
        long before the change of the holes has fallen to ``es_hole_change_large``.  With
        ``early_stop`` off the fit runs ``iterations`` steps, as every fit does.
    fill_blend : float
        Blended fill for masked fits (inpainting): about this fraction of the known pixels,
        in the shape of the holes, is left out of the loss; after the fit the holes' fill is
        ``b + w (network - b)``, ``b`` scikit-image's biharmonic fill, with the weight ``w`` in
        [0, 1] that predicts the held-out pixels best (:mod:`.fillblend`;
        ``FitResult.fill_weight``).  The held-out pixels are still returned exactly as given;
        the history frames are the network's own.  0 disables it; unmasked fits and fits whose
        holes are scattered pixels (:func:`~.regions.scattered_holes`, e.g. half the pixels
        missing at random: the known pixels taken from between them cost fine texture more than
        the blend gains) ignore it.
    fill_blend_large_min : float
        With the blended fill, the least share ``w`` the network keeps when the holes are large
        regions (:func:`~.regions.large_holes`), in [0, 1]: the held-out pieces are then few and
        large (1-10), so the share they choose scatters.  0: the held-out share alone, as for
        other holes.
    backtrack : bool
        Restore the last good weights when the fit diverges (data-fit PSNR drops by more
        than ``backtrack_db``).
    history_every : int
        Save a history frame every N iterations (0 disables the history).  A short run
        saves more often, every ``max(1, iterations // 10)`` iterations when that is fewer,
        so any run of 20 iterations or more has at least 10 frames
        (:func:`~.fit.history_iterations`).
    history_spacing : {"linear", "log"}
        Linear cadence (every ``history_every`` steps) or log-spaced frames
        (``history_frames`` frames, denser at the start).
    history_frames : int
        Number of frames for log spacing.
    yield_every : int
        A Step record is yielded (and progress, cancel and preview handled) every N steps.
    preview_every : int
        A preview image is attached to the Step every N steps (0: never).
    amp : {"off", "bf16", "auto"}
        Mixed precision of the network's forward and backward: "bf16" runs them under
        bfloat16 autocast (weights, optimiser, loss and averages stay float32); "auto" uses
        bf16 on CUDA GPUs that support it and float32 elsewhere.  Off by default: on CPUs
        without native bf16 (AVX2 only) autocast is ~200x slower, and on an H200 GPU it made
        the default step slower too (512 px: 0.039 s against 0.022 s in float32).
    ensemble : int
        Seed ensemble, 1 to :data:`ENSEMBLE_MAX`: the fit trains this many networks at once,
        each from its own initial weights and input z (member 0 from the run's seed, member
        ``k`` from ``derive_seed(seed, k)``), in one batched forward pass, and its estimate
        at every step is the mean of the members' outputs (on Set9 at sigma 25 Ulyanov et
        al. 2018 report 31.00 dB averaging two runs, 30.43 dB for one).  Every member
        minimises its own data loss; the output averaging, the stops, backtracking and the
        history all follow the mean.  The memory of a step grows about K-fold
        (``benchmarks/dip_ensemble.py``, Set9 at 128 px, one thread: K = 2 gained 0.51 dB in
        2.0x the time, K = 4 0.83 dB in 3.9x).  On a CPU the members' passes run one after the
        other in each step (batched they took 3.7x / 5.9x the time); on a GPU
        as one batched network, side by side (an H200 at 512 px RGB: more than twice the time of
        one fit for K = 2).  1 (default): one network,
        exactly as without this field.
    tile_capacity : int
        The tile side this network restores a large plane best in, in pixels (0: no limit).
        With automatic tiles (``tile_size=None``) a CPU fits planes of at least 1.6x this side
        in overlapping tiles of this side (or somewhat larger ones, up to 1.5x, where this
        side's would overlap too much), and smaller planes of at least 256 x 256 pixels in
        2 x 2 tiles, even when the whole plane fits in memory
        (:func:`~.planning.capacity_tile`; ``tile_size=0`` fits them whole).  For inpainting
        only planes whose holes are thin (scratches, strokes, text) or scattered pixels (not
        large holes, :func:`~.regions.hole_kind`) and that no hole regions cover.
    tile_iterations : int
        The most steps the fit of one tile of a tiled plane takes (0: ``iterations``) when
        the tile has thin holes or none: a small tile's fill of thin holes peaks early and
        then declines as the known pixels are fitted ever more closely.  Tiles with large
        holes keep ``iterations``; regions around holes are not tiles.
    tile_iterations_scattered : int
        The same limit for a tile whose holes are scattered pixels (half of them missing at
        random, :func:`~.regions.hole_kind`; 0: ``iterations``).
    cuda_graph : bool
        On a CUDA GPU, record the optimisation step once as a CUDA graph after a few eager
        steps and replay it (:mod:`~.graphs`): the same arithmetic without the cost of launching
        a few hundred small kernels one by one, which is what a step of a thin network costs on
        a GPU.  No effect on other devices.  A step that cannot be recorded runs eagerly (with
        a warning).  True by default.
    """

    net: NetParams = field(default_factory=NetParams)
    iterations: int = 3000
    lr: float = 0.01
    reg_noise_std: float = 1.0 / 30.0
    exp_weight: float | None = 0.99
    ema_warmup: bool = False
    loss: Literal["gaussian", "poisson"] = "gaussian"
    early_stop: bool = True
    es_window: int = 100
    es_patience: int = 1000
    es_start: int = 200
    es_patience_ratio: float = 0.0
    es_noise_factor: float = 0.0
    es_whiteness: float = 0.0
    es_holdout: float = 0.0
    es_hole_change: float = 0.0
    es_hole_change_scattered: float = 0.0
    es_hole_change_large: float = 0.0
    iterations_large: int = 0
    fill_blend: float = 0.0
    fill_blend_large_min: float = 0.0
    backtrack: bool = True
    backtrack_db: float = 5.0
    history_every: int = 100
    history_spacing: Literal["linear", "log"] = "linear"
    history_frames: int = 40
    yield_every: int = 10
    preview_every: int = 50
    amp: Literal["off", "bf16", "auto"] = "off"
    ensemble: int = 1
    tile_capacity: int = 0
    tile_iterations: int = 0
    tile_iterations_scattered: int = 0
    cuda_graph: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.iterations, int) or isinstance(self.iterations, bool):
            raise TypeError(f"iterations must be an integer, got {type(self.iterations).__name__}")
        if self.iterations <= 0:
            raise ParameterError(f"{{iterations}} must be a positive integer, got {self.iterations}")
        check_lr(self.lr)
        if not (math.isfinite(self.reg_noise_std) and self.reg_noise_std >= 0):
            raise ParameterError(f"{{reg_noise_std}} must be a finite number >= 0, got {self.reg_noise_std}")
        if self.exp_weight is not None and not 0.0 <= self.exp_weight < 1.0:
            raise ParameterError(f"{{exp_weight}} must be in [0, 1) or None, got {self.exp_weight}")
        if self.loss not in ("gaussian", "poisson"):
            raise ParameterError(f"{{loss}} must be 'gaussian' or 'poisson', got {self.loss!r}")
        for name in ("es_window", "es_patience", "yield_every"):
            if getattr(self, name) < 1:
                raise ParameterError(f"{{{name}}} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.es_patience_ratio <= 10.0:
            raise ParameterError(f"{{es_patience_ratio}} must be in [0, 10], got {self.es_patience_ratio}")
        if not (math.isfinite(self.es_holdout) and 0.0 <= self.es_holdout <= 0.5):
            raise ParameterError(f"{{es_holdout}} must be in [0, 0.5] (0: off), got {self.es_holdout}")
        if not (math.isfinite(self.fill_blend) and 0.0 <= self.fill_blend <= 0.5):
            raise ParameterError(f"{{fill_blend}} must be in [0, 0.5] (0: off), got {self.fill_blend}")
        floor = self.fill_blend_large_min
        if not (math.isfinite(floor) and 0.0 <= floor <= 1.0):
            raise ParameterError(f"{{fill_blend_large_min}} must be in [0, 1] (0: the held-out share), got {floor}")
        for name, zero in (
            ("es_hole_change", "off"),
            ("es_hole_change_scattered", "es_hole_change's"),
            ("es_hole_change_large", "es_hole_change's"),
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ParameterError(f"{{{name}}} must be in [0, 1] (0: {zero}), got {value}")
        if not (math.isfinite(self.es_whiteness) and 0.0 <= self.es_whiteness < 1.0):
            raise ParameterError(f"{{es_whiteness}} must be in [0, 1) (0: off), got {self.es_whiteness}")
        if not 0.0 <= self.es_noise_factor <= 10.0:
            raise ParameterError(f"{{es_noise_factor}} must be in [0, 10] (0: off), got {self.es_noise_factor}")
        if not (math.isfinite(self.backtrack_db) and self.backtrack_db > 0):
            raise ParameterError(f"{{backtrack_db}} must be a finite number > 0, got {self.backtrack_db}")
        for name in ("es_start", "history_every", "preview_every", "history_frames"):
            if getattr(self, name) < 0:
                raise ParameterError(f"{{{name}}} must be >= 0 (0: off), got {getattr(self, name)}")
        if self.amp not in ("off", "bf16", "auto"):
            raise ParameterError(f"{{amp}} must be 'off', 'bf16' or 'auto', got {self.amp!r}")
        if self.history_spacing not in ("linear", "log"):
            raise ParameterError(f"{{history_spacing}} must be 'linear' or 'log', got {self.history_spacing!r}")
        check_ensemble(self.ensemble)
        for name, unit, zero in (
            ("tile_capacity", "pixels", "no limit"),
            ("tile_iterations", "steps", "iterations"),
            ("tile_iterations_scattered", "steps", "iterations"),
            ("iterations_large", "steps", "iterations"),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ParameterError(f"{{{name}}} must be a whole number of {unit}, got {value!r}")
            if value < 0:
                raise ParameterError(f"{{{name}}} must be >= 0 (0: {zero}), got {value}")
            object.__setattr__(self, name, int(value))
        if not isinstance(self.cuda_graph, (bool, np.bool_)):
            raise ParameterError(f"{{cuda_graph}} must be True or False, got {self.cuda_graph!r}")
        object.__setattr__(self, "cuda_graph", bool(self.cuda_graph))
        object.__setattr__(self, "ensemble", int(self.ensemble))  # a numpy integer as an int

    def tile_step_limit(self, holes_kind: str) -> int:
        """The most steps the fit of one tile of a tiled plane takes beside ``iterations`` (0: no
        other limit), by the kind of the tile's holes (:func:`~.regions.hole_kind`; "" for thin
        holes or none): ``tile_iterations``, ``tile_iterations_scattered``, none for large holes."""
        return {"": self.tile_iterations, "scattered": self.tile_iterations_scattered}.get(holes_kind, 0)

    def large_step_limit(self) -> int:
        """The most steps a fit whose holes are large takes where that limit is in force
        (``iterations_large`` with early stopping on, below ``iterations``); 0: no such limit."""
        return self.iterations_large if self.early_stop and 0 < self.iterations_large < self.iterations else 0

    def replace(self, **changes) -> DIPParams:
        """A copy with some fields changed (``net`` fields may be given by name too)."""
        net_names = {f.name for f in fields(NetParams)}
        net_changes = {k: changes.pop(k) for k in list(changes) if k in net_names}
        params = self
        if net_changes:
            params = replace(params, net=replace(params.net, **net_changes))
        return replace(params, **changes) if changes else params


# --- the reference table (REFERENCE.md section 1), one preset per row -----------------

_W128x5 = (128,) * 5

PRESETS: dict[str, DIPParams] = {
    # F16, sigma = 25. The published code runs 3000 steps; the paper reports 1800.
    "denoise-paper": DIPParams(
        net=NetParams(_W128x5, _W128x5, (4,) * 5, 3, 3, 1, "bilinear", True, "noise", 32),
        iterations=1800,
        lr=0.01,
        reg_noise_std=1.0 / 30.0,
        exp_weight=0.99,
        early_stop=False,
    ),
    # snail: real JPEG noise.
    "denoise-photo": DIPParams(
        net=NetParams(
            (8, 16, 32, 64, 128),
            (8, 16, 32, 64, 128),
            (0, 0, 0, 4, 4),
            3,
            3,
            1,
            "bilinear",
            True,
            "noise",
            3,
        ),
        iterations=2400,
        lr=0.01,
        reg_noise_std=1.0 / 30.0,
        exp_weight=0.99,
        early_stop=False,
    ),
    # kate: text overlay (many small holes).
    "inpaint-text": DIPParams(
        net=NetParams(_W128x5, _W128x5, _W128x5, 3, 3, 1, "nearest", True, "noise", 32),
        iterations=6001,
        lr=0.01,
        reg_noise_std=0.03,
        exp_weight=None,
        early_stop=False,
    ),
    # vase: one big hole, meshgrid input, no skips.
    "inpaint-large-hole": DIPParams(
        net=NetParams(_W128x5, _W128x5, (0,) * 5, 3, 3, 1, "nearest", True, "meshgrid", 2),
        iterations=5001,
        lr=0.01,
        reg_noise_std=0.03,
        exp_weight=None,
        early_stop=False,
    ),
    # library: large regions, 6 levels, 5x5 down kernels, no 1x1 up convs.
    "inpaint-large-regions": DIPParams(
        net=NetParams(
            (16, 32, 64, 128, 128, 128),
            (16, 32, 64, 128, 128, 128),
            (0,) * 6,
            5,
            3,
            1,
            "nearest",
            False,
            "noise",
            1,
        ),
        iterations=3001,
        lr=0.01,
        reg_noise_std=0.0,
        exp_weight=None,
        early_stop=False,
    ),
    # super-resolution (the paper's x4 recipe; x8 used 4000 steps and jitter 0.05).
    "upscale-paper": DIPParams(
        net=NetParams(_W128x5, _W128x5, (4,) * 5, 3, 3, 1, "bilinear", True, "noise", 32),
        iterations=2000,
        lr=0.01,
        reg_noise_std=0.03,
        exp_weight=None,
        early_stop=False,
    ),
    # barbara: 50 % of the pixels missing at random.
    "restore-missing-pixels": DIPParams(
        net=NetParams(_W128x5, _W128x5, (4,) * 5, 3, 3, 1, "bilinear", True, "noise", 32),
        iterations=11000,
        lr=0.001,
        reg_noise_std=0.03,
        exp_weight=None,
        early_stop=False,
    ),
}

# --- the project's defaults: lighter networks, early stopping on -----------------------

# Tapered widths: the full-resolution level, which dominates the cost of a step, is 16 wide
# and the coarser levels 32: at 128 px on the CPU a step costs ~1/10 of the paper's.
# Nearest-neighbour up-sampling: with it the averaged estimate peaks in about half the steps
# of bilinear up-sampling (Set9 at 128 px, sigma 25: mean peak step 550 vs 1250), 0.19 dB
# lower on the mean (benchmarks/dip_stoprules.py).
# The stop: the noise level (discrepancy principle, factor 1.00 of the estimated noise
# variance) found the averaged estimate's peak to within 0.09 dB on the mean of Set9 at 128 px
# (1.03 did as well there, but stopped 256 px images early: House 33.87 vs 34.60 dB); ES-WMV
# alone stopped the nearest-up-sampling net early (Baboon 27.30 dB at step 500, peak 28.15 at
# 940 with patience 300), so it stays only as a safety net (patience 600) for inputs whose
# noise level is underestimated.  Inputs without a noise estimate (masks, Poisson loss) use it.
# Capacity: at 512 px the whole-plane fit had not reached the noise level after 1600-2400 steps
# (F16, Lena, the astronaut; kodim02 and Baboon stopped at ~950 and 1140) and came out 0.31-0.73 dB
# below the same net in 4 overlapping tiles of 288 px, which stopped on their own in less or the
# same time (one thread, benchmarks/dip_tiles.py --compare; no seam: the error's change across the
# overlaps was no larger than the whole-plane result's on the same rows and columns).  At
# 256 px 4 tiles of 160 gained 0.05-0.48 dB (0.35 on the mean) on all nine Set9 images in less
# time; at 512 px 16 tiles of 160 against the 4 of 288 used until then (benchmarks/dip_tiles.py
# --size 512 --tile 144 / 288, 2 lanes on a 2-core CPU): F16 32.35 against 32.17 dB in 329
# against 417 s, kodim02 31.34 / 31.30 in 291 / 321 s, Lena 31.62 / 31.24 in 367 / 461 s, Peppers
# 30.47 / 30.09 in 482 / 648 s, Baboon 24.95 / 22.30 in 518 / 327 s (its 288 px tiles stopped far
# short of its texture): +0.73 dB on the mean in 0.91x the time (a 160 px tile stops after about
# half the steps of a 288 px one); 9 tiles of 192 fell between (F16 32.27 dB, 353 s; kodim02
# 31.23, 246 s).  So tile_capacity=160: planes from 256 px in tiles of 160 (README).
# Residual whiteness (es_whiteness): the noise estimate's scatter between images (3-5 % in
# variance) moves the noise-level stop early or late; the lag-1 autocorrelation of input minus
# estimate was -0.02 to -0.055 at the averaged estimate's peak (Set9, 128 and 160 px; House
# about 0).  Ending at -0.035, and counting the noise level as reached only once it is <= 0,
# took the stop from 0.09 to 0.05 dB below the oracle on the mean at 128 px, from 0.17 to 0.10
# at 160 px (Lena 0.75 -> 0.00); as shipped +0.03 dB on the mean of Set9 at 256 px (kodim03
# +0.23), +0.05 at 128 px (benchmarks/dip_stoprules.py, dip_speed.py; README).  Recorded at sigma
# 15 and 50 too, the threshold is scaled by (25/255) / sigma_hat (the best stop's correlation is
# more negative at less noise): Set9 at sigma 15 0.27 -> 0.14 dB below the best stop, at sigma 50
# 0.19 -> 0.10, at 25 the same.  Single-channel images have no whiteness stop (fit.py): with their
# weak-texture noise estimate the noise-level stop alone is 0.05-0.11 dB below the best stop on
# Set12 (sigma 15/25/50) and Set9 in grey.
_TAPER = (16, 32, 32, 32, 32)
PRESETS["denoise"] = DIPParams(
    net=NetParams(_TAPER, _TAPER, (4,) * 5, 3, 3, 1, "nearest", True, "noise", 32),
    iterations=3000,
    lr=0.01,
    reg_noise_std=1.0 / 30.0,
    exp_weight=0.99,
    ema_warmup=True,
    early_stop=True,
    es_window=100,
    es_patience=600,
    es_start=150,
    es_noise_factor=1.0,
    es_whiteness=0.035,
    tile_capacity=160,
)
# Photon counts (loss="poisson" with the default preset selects it): the Poisson likelihood,
# stopped by its deviance (see es_noise_factor), on the tapered net with bilinear up-sampling.
# Recorded without a stop (Set12 at 128 px, 5 photons, seed 0), the nearest-neighbour net's
# averaged estimate peaked at 150-280 steps and lost 2.3-8.8 dB by step 500; bilinear peaked
# 0.26-0.63 dB higher (C.man 20.61, House 24.77, Monarch 21.36, Lena 23.11 dB) at 210-570
# steps and lost 0.06-2.9 dB by step 500: a broad peak that a stop can find.  A lower learning
# rate (0.005, nearest, C.man and House) peaked lower and earlier.  Output averaging: House at
# 10 photons peaked at 26.13 dB averaged, 24.32 dB raw.  The start floor is lower than the
# Gaussian one's because the Poisson fit can peak early (House: step 150-210).
#: The default denoise preset of each noise model (``loss``): the API, the command line and the
#: widget switch between them when only the noise model is chosen.
DENOISE_DEFAULTS: dict[str, str] = {"gaussian": "denoise", "poisson": "denoise-poisson"}
# (tile_capacity: measured for the Gaussian default only; the Poisson preset fits planes whole.)
PRESETS["denoise-poisson"] = PRESETS["denoise"].replace(
    loss="poisson", upsample="bilinear", es_start=100, tile_capacity=0, es_whiteness=0.0
)
# Inpainting: the tapered net of denoising (16 channels at full resolution, 32 below, 4-wide
# skips, nearest-neighbour up-sampling) with output averaging, stopped when the fill of the
# holes has settled (es_hole_change: the holes' mean change over 50 steps has fallen to 1/20 of
# what it was at step 100).  Recorded without a stop at 128 px (benchmarks/dip_inpaint_speed.py,
# holes' PSNR of the returned estimate, 1 thread): kate 26.53 dB at step 1200 (the former
# 64-wide net without averaging, run to 1000 steps: 24.61 dB, oracle 25.47), House with 50 %
# of the pixels missing 33.07 at 930 (former 33.27 at 1000), Monarch 50 % 25.58 at 510 (former
# 25.87); a step costs about 1/3 of the former net's.  Large holes are its weak side: vase
# 14.54 at 1680 (former 15.43), library 13.10 at 1430 (former 14.67); the reference presets
# inpaint-large-hole and inpaint-large-regions are made for those.  ES-WMV (patience 500)
# stays as the safety net.  Scattered holes (e.g. half the pixels missing at random) stop at
# 1/50 instead (es_hole_change_scattered): with every other pixel known their fill keeps
# improving long after 1/20.  Set12 with 50 % missing, holes' PSNR, one thread: as a user calls
# inpaint() at full size (256 px), 1/20 -> 1/50: House 31.60 -> 33.25 dB (550 -> 1080 steps),
# Monarch 26.33 -> 27.86 (530 -> 1160); at 128 px House 33.38 -> 33.31, Monarch 25.33 -> 25.53.
# Recorded without a stop at full size and replayed (README): +1.06 dB on the mean of House,
# Peppers, C.man, Monarch and Barbara (512 px), but C.man -0.54 (it peaks at step 1040, then
# slowly declines).
# The fill is blended with scikit-image's biharmonic fill (fill_blend 0.05: about 5 % of the
# known pixels, in the shape of the holes, are left out of the loss and weigh the two fills;
# restore/fillblend.py).  As a user calls inpaint(), holes' PSNR, one thread, without -> with
# (benchmarks/dip_inpaint_speed.py shipped --set fill_blend=...): 128 px kate 25.45 -> 25.42,
# vase 14.16 -> 15.13, library 13.55 -> 13.51; Boat with 5 % painted strokes at 256 px 20.59 ->
# 21.44 (biharmonic alone 20.82), at 512 px 25.95 (the network alone 24.49, biharmonic 25.53).
# Scattered holes are not blended: on Set12 with half the pixels missing the blend gained
# 0.03-0.61 dB on seven cases but lost 0.65-1.0 dB on Barbara's stripes (seeds 0 and 1).
# Large holes (regions.large_holes: a hole pixel on average >= 4 px from a known one) stop at 1/8
# (es_hole_change_large): the network's fill of a large hole peaks early (steps 10-1690, six of
# ten at 200-490) and drifts while the known pixels are fitted.  Recorded without a stop with the
# held-out pixels left out, as this preset trains (benchmarks/dip_inpaint_blend.py: vase and
# library at 128 px, seeded ellipses covering 8 % of eight Set9 / Set12 crops at 256 px, one
# thread) and replayed, the blended fill's holes' PSNR against 1/20: 1/8 -0.06 dB on the mean
# (per case -0.99 ... +1.01) in 2.6x fewer steps (5790 against 15250); 1/5 -0.20 dB in 3.9x
# fewer; 1/10 -0.12 dB in 2x fewer.  Unblended at 1/5 (the held-out pixels back in the loss),
# as a user calls inpaint() on seven of them: -0.26 dB on the mean (README).
# A large hole's blend keeps at least half of the network's fill (fill_blend_large_min): its few
# large held-out pieces (1-10) chose shares that scatter, 0.00 on kodim03 where 0.84 was best
# (22.27 dB, the biharmonic fill, against the network's 25.29).  On 21 cases (vase, library and
# seeded ellipses covering 8 % of 19 Set9 / Set12 crops at 256 px; the fit to its own stop,
# benchmarks/dip_inpaint_blend.py weights) the floor 0.5 gained +0.17 dB on the mean of the
# holes' PSNR, 0 to +2.49 per case, and lost on none; 0.6 / 0.7 lost up to 0.35 / 0.93 dB (Man).
# Planes of thin holes that hole regions do not cover (strokes all over a scan) are fitted in
# tiles of 160 from 256 px, as in denoising, each tile for at most 800 steps: a small tile's
# fill of thin holes peaks early (two tiles of Boat at 512 px recorded without a stop: at
# steps 500 and 900-1000) and then loses about 2 dB by step 3000.  Boat at 512 px with 5 %
# painted strokes, holes' PSNR (benchmarks/dip_inpaint_regions.py, 2 threads): the whole
# plane 25.83 dB (one thread, 989 s); tiles with their own stops 26.22 dB in 1072 s; capped at 1000 steps 26.26 in
# 576 s, at 600 steps 26.13 in 384 s; 800 was chosen between the two.  Checked afterwards with
# 800, one thread, whole plane -> tiles: the plugin's sample (256 px RGB, scratches) 27.18 ->
# 28.09 dB in 0.91x the time; Man and Couple at 512 px with 5 % strokes 26.18 -> 26.57 (0.88x)
# and 23.80 -> 24.31 (0.65x); biharmonic 27.10 / 26.01 / 23.55.  Not on text: kate at 512 px
# 30.36 dB in 440 s whole (its holes settled at step 680) -> 30.39 in 693 s in tiles.
# Scattered holes (half the pixels missing) get the same tiles, each for at most 1200 steps
# (tile_iterations_scattered).  Centred 160 px crops with 50 % missing recorded without a stop
# (benchmarks/dip_inpaint_speed.py record --size 160 --cases missing --set12 09_Barbara,11_Man,
# one thread): the holes' PSNR peaks at steps 1070-1940 (House, Monarch, Barbara, Man; mean
# 29.26 dB); at step 1200 29.15, at the 1/50 stop 28.93 (steps 1280-2290), at 800 28.78.  As a
# user calls inpaint() (benchmarks/dip_inpaint_regions.py --missing 0.5, one thread, holes'
# PSNR), whole plane -> tiles capped at 1200: Barbara 512 px 24.76 dB, 779 s -> 29.61, 1180 s;
# Man 512 px 28.60, 1805 s -> 29.54, 1405 s; House 256 px 33.73, 219 s -> 34.41, 320 s;
# Monarch 256 px 27.77, 199 s -> 28.45, 326 s (biharmonic 23.73 / 29.94 / 32.89 / 27.40).
# The tiles to their own 1/50 stops: Barbara 29.64 in 1845 s, Man 29.01 in 2999 s.  Large holes
# keep the whole plane (planning.plan_tiles_for): a tile's edge cuts their context.
# Large holes take at most 300 steps (iterations_large), beside their 1/8 stop.  Recorded without
# a stop, as the shipped fit trains (benchmarks/dip_inpaint_blend.py record, one thread; the
# returned blend, w >= 0.5; vase and library at 128 px, seeded ellipses covering 8 % of Set9 /
# Set12 crops at 256 px), replayed: on the ten cases it was chosen on (vase, library, F16,
# kodim03, House, Peppers, C.man, Lena, Boat, Man) the 1/8 stop alone 19.75 dB on the mean in
# 6110 steps, with a limit of 200 / 300 / 400 / 500 steps 19.72 / 19.90 / 19.85 / 19.80 dB in
# 2000 / 3000 / 3920 / 4820; on eleven more, run to check it (kodim01, kodim02, kodim12, Baboon,
# Starfish, Monarch, Airplane, Parrot, Barbara, Couple, Lena from Set9), 19.58 dB in 7160 steps
# -> 19.72 in 3300 with 300.  Over the 21: +0.15 dB on the mean, per case -0.35 ... +0.98, 13
# better.  The paper's large-hole design on this net (a coordinate grid as input, no skips, 400
# steps) against the 1/8 stop: +0.67 dB on the first ten (House +4.2) but -0.08 on the eleven
# (kodim12 -2.3): not used.
PRESETS["inpaint"] = DIPParams(
    net=NetParams(_TAPER, _TAPER, (4,) * 5, 3, 3, 1, "nearest", True, "noise", 32),
    iterations=3000,
    lr=0.01,
    reg_noise_std=0.03,
    exp_weight=0.99,
    ema_warmup=True,
    early_stop=True,
    es_window=100,
    es_patience=500,
    es_start=200,
    es_hole_change=0.05,
    es_hole_change_scattered=0.02,
    es_hole_change_large=0.125,
    fill_blend=0.05,
    fill_blend_large_min=0.5,
    iterations_large=300,
    tile_capacity=160,
    tile_iterations=800,
    tile_iterations_scattered=1200,
)
# Super-resolution: the tapered net with bilinear up-sampling and output averaging, the paper's
# jitter and step count, no early stop (the fit of a noise-free image keeps improving).
# Set9 x4 (64 -> 256 px crops), PSNR at step 2000 (benchmarks/dip_upscale.py): this preset House
# 34.84, Baboon 24.65 dB, both still rising at 2500.  Variants measured: nearest-neighbour
# up-sampling (with a 10 % value-range headroom, since reverted) House 34.43, Baboon 24.20, F16
# 25.41, kodim01 21.79, kodim02 28.92, kodim03 30.06, peaking early on texture (kodim01 at 400,
# F16 at 800 steps) and then falling; bilinear with the headroom Baboon 24.28, F16 26.57, House
# 34.36, kodim01 22.30, kodim02 29.42.  At 600 steps (House) nearest led (33.32 vs 33.16 dB); a
# 64-wide bilinear net (32.82 dB, raw output) cost 3.6x per step; lr 0.02 did not help (33.19 dB).
PRESETS["upscale"] = DIPParams(
    net=NetParams(_TAPER, _TAPER, (4,) * 5, 3, 3, 1, "bilinear", True, "noise", 32),
    iterations=2000,
    lr=0.01,
    reg_noise_std=0.03,
    exp_weight=0.99,
    ema_warmup=True,
    early_stop=False,
)

PRESET_DESCRIPTIONS: dict[str, str] = {
    "denoise": ("Fast default: tapered 16/32-wide skip net, output averaging, stops at the estimated noise level."),
    "denoise-poisson": (
        "Photon counts (Poisson noise): tapered net with bilinear up-sampling, "
        "Poisson likelihood, stops where the deviance from the counts reaches the noise's."
    ),
    "inpaint": (
        "Fast default: tapered 16/32-wide skip net, output averaging, stops when the fill of the holes has settled "
        "(large holes: after at most 300 steps); the fill is blended with a biharmonic one, weighed on held-out "
        "known pixels."
    ),
    "paper": "The paper's settings for this task, fixed iterations, no early stop.",
    "denoise-paper": "Reference F16 recipe: 128-wide net, 1800 steps, output averaging.",
    "denoise-photo": "Reference real-photo (JPEG noise) recipe: small net, 2400 steps.",
    "inpaint-text": "Reference text-removal recipe (kate): 128-wide net with skips, 6001 steps.",
    "inpaint-large-hole": "Reference one-big-hole recipe (vase): meshgrid input, no skips.",
    "inpaint-large-regions": "Reference large-regions recipe (library): 6 levels, 5x5 kernels.",
    "restore-missing-pixels": "Reference 50 %-missing-pixels recipe (barbara): lr 0.001, 11000 steps.",
    "upscale": "Fast default: tapered 16/32-wide net, output averaging, 2000 steps (no early stop).",
    "upscale-paper": "Reference x4 super-resolution recipe: 128-wide net, 2000 steps, Lanczos down-sampler.",
}


def preset_names(task: str) -> tuple[str, ...]:
    """Names of the presets offered for a task, the default first (from its degradation)."""
    return get_degradation(task).presets


def get_preset(name: str, task: str | None = None) -> DIPParams:
    """Parameters of a named preset.

    Parameters
    ----------
    name : str
        A key of :data:`PRESETS`, or ``"paper"`` (needs ``task``).
    task : str, optional
        A task of :data:`~.degradations.DEGRADATIONS` ("denoise", "inpaint", ...): resolves
        ``"paper"`` to its recipe; any preset may be used for any task.

    Examples
    --------
    >>> get_preset("paper", task="denoise").iterations
    1800
    """
    if name == "paper":
        if task is None:
            raise ValueError("preset 'paper' needs a task: " + ", ".join(f"task={t!r}" for t in DEGRADATIONS))
        name = get_degradation(task).paper_preset
    try:
        return PRESETS[name]
    except KeyError:
        raise ParameterError(
            f"unknown {{preset}} {template_literal(repr(name))}; choose one of: paper, " + ", ".join(sorted(PRESETS))
        ) from None
