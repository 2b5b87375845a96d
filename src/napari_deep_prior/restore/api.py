"""Public API: ``denoise``, ``inpaint`` (and every registered degradation), ndarray in, ndarray out.

One flow for every task: array in -> validated, normalised float planes -> a
:class:`~.job.DIPJob` whose ``steps()`` generator runs one :class:`~.fit.DIPFit` per plane,
fitting the network so that the degradation of its output (:mod:`.degradations`) matches the
input -> result back in the input's dtype, range and layout.  The napari widgets and the
command line are thin front ends over :func:`prepare`.

Planes whose fit does not fit in the device's memory are processed in overlapping tiles
blended without seams (:mod:`.tiles`, planned in :mod:`.planning`); ``tile_size`` controls it
(None: automatic, 0: never).

Dtype policy (tested): integer input is fitted as float in [0, 1] (scaled from its data
range) and comes back as the same integer dtype, rounded and clipped; float32/float64 keep
their dtype and range; float16 is computed and returned as float32.  With the Poisson loss
the result is an estimate of the photon rate, which is fractional: integer counts come back
as float32 in the counts' units (``output_dtype="input"`` restores the rounded integers).
The input array is never modified.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Literal

import numpy as np

from ..arrays import (
    MIN_SIDE,
    check_data_range,
    check_dtype,
    check_seed,
    drive,
    new_seed,
    normalise,
    resolve_output_dtype,
    split_channels,
    template_literal,
)
from ..device import resolve_device
from ..errors import ImageTooLargeError, ParameterError
from .camera import CameraModel, normalise_counts
from .degradations import Degradation, Downsample, Identity, Mask
from .job import DIPJob, DIPOutput
from .lazy import is_dask_array
from .planning import plan_regions_for, plan_tiles_for
from .presets import DENOISE_DEFAULTS, DIPParams, get_preset

__all__ = [
    "denoise",
    "inpaint",
    "prepare",
    "check_options",
    "prepare_denoise",
    "prepare_inpaint",
    "prepare_upscale",
    "upscale",
    "DIPJob",
    "DIPOutput",
    "ImageTooLargeError",
    "MIN_SIDE",
]


def _resolve_params(
    degradation: Degradation, preset: str | None, params: DIPParams | None, **overrides
) -> tuple[DIPParams, str]:
    """The run's parameters, and the name of the preset they start from ("paper" resolved)."""
    if params is not None and not isinstance(params, DIPParams):
        raise TypeError(f"params must be a DIPParams, got {type(params).__name__}")
    task = degradation.name
    name = preset or degradation.default_preset
    loss = overrides.get("loss")
    if loss is not None and loss not in degradation.noise_models:
        raise ParameterError(
            f"{{loss}} {template_literal(repr(loss))} is not available for {task}; choose one of: "
            + ", ".join(degradation.noise_models)
        )
    if params is None and name == DENOISE_DEFAULTS["gaussian"] and loss == "poisson":
        # the default for photon counts is its own preset (net, learning rate and stop)
        name = DENOISE_DEFAULTS["poisson"]
    if name == "paper":
        name = degradation.paper_preset
    p = params if params is not None else get_preset(name, task=task)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "iterations" in changes:
        it = changes["iterations"]
        if isinstance(it, bool) or not isinstance(it, (int, np.integer)):
            raise TypeError(f"iterations must be an integer, got {it!r}")
        if it <= 0:
            raise ParameterError(f"{{iterations}} must be a positive integer, got {it}")
        changes["iterations"] = int(it)
    return (p.replace(**changes) if changes else p), name


def _check_noise_sigma(noise_sigma, degradation: Degradation, p: DIPParams) -> float | None:
    """A user-given noise level: a finite number > 0, for a task and noise model that stop by it."""
    if noise_sigma is None:
        return None
    if isinstance(noise_sigma, bool) or not isinstance(noise_sigma, (int, float, np.integer, np.floating)):
        raise TypeError(f"noise_sigma must be a number, got {noise_sigma!r}")
    if not (np.isfinite(noise_sigma) and noise_sigma > 0):
        raise ParameterError(
            f"{{noise_sigma}} (the noise level, a standard deviation in the image's units) must be a finite "
            f"number > 0, got {noise_sigma}; leave it out to estimate it from the image"
        )
    if not degradation.noise_level_stop:
        raise ParameterError(
            f"{{noise_sigma}} is for denoising (the noise-level stop); {degradation.name} does not stop by it"
        )
    if p.loss == "poisson":
        raise ParameterError(
            "{noise_sigma} is for Gaussian noise: with the Poisson model the noise level follows from the counts"
        )
    if not (p.early_stop and p.es_noise_factor > 0):
        raise ParameterError(
            "{noise_sigma} sets the level the noise-level stop aims at, but this run has that stop off "
            "(early stopping off, or a preset without it: es_noise_factor = 0)"
        )
    return float(noise_sigma)


def check_options(
    degradation: Degradation,
    *,
    preset: str | None = None,
    device="auto",
    seed: int | None = None,
    output_dtype=None,
    camera_offset: float | None = None,
    gain: float | None = None,
    read_noise: float | None = None,
    noise_sigma: float | None = None,
    **overrides,
) -> DIPParams:
    """Check the options of a job that do not depend on its image, before there is one.

    A front end that runs many images with the same options (the command line's batch form)
    calls it once before the first image, so that a bad option is reported once instead of
    failing every image; :func:`prepare` checks the same again with the image.

    Parameters
    ----------
    degradation : Degradation
        Unbound (its mask, if any, may be None).
    preset, device, seed, output_dtype, camera_offset, gain, read_noise, noise_sigma, **overrides
        As for :func:`prepare`.

    Returns
    -------
    DIPParams
        The parameters the jobs will run with.

    Raises
    ------
    ParameterError, TypeError, ValueError
        As :func:`prepare` for the same options.
    """
    p, _ = _resolve_params(degradation, preset, None, **overrides)
    check_seed(seed)
    _check_noise_sigma(noise_sigma, degradation, p)
    poisson = p.loss == "poisson"
    resolve_output_dtype(output_dtype, np.dtype(np.uint8), poisson)
    CameraModel.from_args(camera_offset, gain, read_noise, poisson)
    resolve_device(device)
    return p


def prepare(
    degradation: Degradation,
    image,
    *,
    preset: str | None = None,
    params: DIPParams | None = None,
    channel_axis: int | None = None,
    has_alpha: bool | None = None,
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
    init_state: dict | None = None,
    **overrides,
) -> DIPJob:
    """Validate a restoration job without running it; every check happens here.

    Parameters
    ----------
    degradation : Degradation
        How ``image`` was made from the wanted one (:mod:`.degradations`): ``Identity()``
        to denoise, ``Mask(mask)`` to inpaint, ...; it is bound to the image here.
    image, preset, params, channel_axis, has_alpha, device, seed, warm_start, tile_size,
    tile_overlap, output_dtype, camera_offset, gain, read_noise, noise_sigma
        As for :func:`denoise` (``preset`` None: the degradation's default).
    data_range : (float, float), optional
        The value range ``(lo, hi)`` mapped to the fit's [0, 1] instead of the image's own
        minimum and maximum (of its finite values; for the Poisson loss, the camera values
        converted to counts); the image's values must lie within it.  Give the whole
        stack's range when preparing its planes one at a time
        (:class:`~napari_deep_prior.restore.stream.StackJob` does): each plane is then
        normalised, fitted and returned exactly as in one job over the whole stack.
    init_state : dict, optional
        With ``warm_start``: the weights every fit starts from, the ``warm_state`` of the job of
        the stack's first plane when its planes are prepared one at a time (a whole-stack job
        starts every later plane from its first fitted plane's weights).
    **overrides
        ``iterations``, ``lr``, ``early_stop``, ``loss``, ``history_every``, ``ensemble``:
        override the preset.

    Returns
    -------
    DIPJob
        Iterate its ``steps()`` to run it.
    """
    if not isinstance(degradation, Degradation):
        raise TypeError(f"degradation must be a Degradation (Identity(), Mask(mask), ...), got {degradation!r}")
    p, preset_name = _resolve_params(degradation, preset, params, **overrides)
    seed = check_seed(seed)
    noise_sigma = _check_noise_sigma(noise_sigma, degradation, p)
    data_range = check_data_range(data_range)
    image = np.asarray(image)
    check_dtype(image)
    poisson = p.loss == "poisson"
    out_dtype = resolve_output_dtype(output_dtype, image.dtype, poisson)
    camera = CameraModel.from_args(camera_offset, gain, read_noise, poisson)
    arr, ca, alpha = split_channels(image, channel_axis, has_alpha)
    h, w, c = arr.shape[-3:]
    c_fit = c - 1 if alpha else c
    n_planes = int(np.prod(arr.shape[:-3], dtype=np.int64))
    degradation.bind(image.shape, arr.shape[:-1], n_planes)
    dev = resolve_device(device)
    tiles, overlap, fit_params, notes = plan_tiles_for(
        p, degradation, h, w, c_fit, n_planes, dev, tile_size, tile_overlap
    )
    regions = None
    if tile_size is None and degradation.holes() is not None:
        # regions around the holes are planned on memory alone: the capacity's tiles are a way
        # to fit a whole plane, which regions replace
        mem_tiles, mem_params, mem_notes = tiles, fit_params, notes
        if p.tile_capacity:
            mem_tiles, _, mem_params, mem_notes = plan_tiles_for(
                p, degradation, h, w, c_fit, n_planes, dev, None, tile_overlap, capacity=False
            )
        regions = plan_regions_for(p, degradation, h, w, c_fit, n_planes, dev, mem_tiles, mem_params)
        if regions is not None:  # fit only the neighbourhoods of the holes
            tiles, overlap, fit_params, notes = regions[0], None, mem_params, regions[1] + mem_notes
    if poisson:
        planes, layout = normalise_counts(arr, alpha, image.shape, ca, camera, data_range=data_range)
    else:
        # an inpainting's holes may hold NaN or inf (unknown values): they are not fitted
        planes, layout = normalise(arr, alpha, image.shape, ca, known=degradation.kept(), data_range=data_range)
    layout.out_dtype = out_dtype
    if seed is None:
        seed = new_seed()
    return DIPJob(
        degradation,
        planes,
        layout,
        p,
        dev,
        seed,
        warm_start=warm_start,
        tiles=tiles,
        tile_overlap=overlap,
        fit_params=fit_params,
        notes=notes,
        regions=regions is not None,
        noise_sigma=noise_sigma,
        preset=preset_name,
        camera=camera,
        init_state=init_state,
    )


def prepare_denoise(
    image,
    *,
    preset: str | None = "denoise",
    params: DIPParams | None = None,
    channel_axis: int | None = None,
    has_alpha: bool | None = None,
    iterations: int | None = None,
    lr: float | None = None,
    early_stop: bool | None = None,
    loss: Literal["gaussian", "poisson"] | None = None,
    history_every: int | None = None,
    ensemble: int | None = None,
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
) -> DIPJob:
    """Validate a denoising job without running it (see :func:`denoise` for the parameters)."""
    return prepare(
        Identity(),
        image,
        preset=preset,
        params=params,
        channel_axis=channel_axis,
        has_alpha=has_alpha,
        device=device,
        seed=seed,
        warm_start=warm_start,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        output_dtype=output_dtype,
        camera_offset=camera_offset,
        gain=gain,
        read_noise=read_noise,
        noise_sigma=noise_sigma,
        iterations=iterations,
        lr=lr,
        early_stop=early_stop,
        loss=loss,
        history_every=history_every,
        ensemble=ensemble,
    )


def prepare_inpaint(
    image,
    mask,
    *,
    preset: str | None = "inpaint",
    params: DIPParams | None = None,
    channel_axis: int | None = None,
    has_alpha: bool | None = None,
    iterations: int | None = None,
    lr: float | None = None,
    early_stop: bool | None = None,
    history_every: int | None = None,
    ensemble: int | None = None,
    device="auto",
    seed: int | None = None,
    warm_start: bool = False,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    output_dtype=None,
) -> DIPJob:
    """Validate an inpainting job without running it (see :func:`inpaint` for the parameters)."""
    return prepare(
        Mask(mask),
        image,
        preset=preset,
        params=params,
        channel_axis=channel_axis,
        has_alpha=has_alpha,
        device=device,
        seed=seed,
        warm_start=warm_start,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        output_dtype=output_dtype,
        iterations=iterations,
        lr=lr,
        early_stop=early_stop,
        history_every=history_every,
        ensemble=ensemble,
    )


def _planning_for(client):
    """Plan tiles for the memory of ``client``'s workers (nothing to do without a client)."""
    if client is None:
        return contextlib.nullcontext()
    from ..device import memory_cap
    from .distributed import worker_memory_cap

    return memory_cap(worker_memory_cap(client))


def _restore(make, image, mask, *, callback, return_history: bool, client, **kw):
    """One restoration: of a dask array lazily (:func:`_lazy`), else a job run here or on ``client``.

    ``make(mask)`` is the task's :class:`Degradation`; ``kw`` the options of :func:`prepare`.
    """
    if is_dask_array(image):
        return _lazy(make, image, mask, kw, callback=callback, return_history=return_history, client=client)
    with _planning_for(client):
        job = prepare(make(mask), image, **kw)
    return _run(job, callback, return_history, client, kw.get("device", "auto"))


def _lazy(make, image, mask, kw: dict, *, callback, return_history: bool, client):
    """A dask array's lazy restoration (:func:`~.lazy.restore_lazily`), its options checked first."""
    from .lazy import restore_lazily

    if return_history:
        raise ParameterError(
            "{return_history} needs the whole stack in memory, but image is a dask array (restored "
            "lazily, one task per plane, without history); pass np.asarray(image) for a history"
        )
    if callback is not None:
        raise ParameterError(
            "{callback} is not called for a dask array: its planes are restored later, when the "
            "result is computed; pass np.asarray(image) to follow the fit step by step"
        )
    if kw.get("device") is not None and not isinstance(kw["device"], str):
        kw["device"] = str(kw["device"])  # resolved by each task, where it runs
    unbound = make(None)
    overrides = {k: kw.get(k) for k in ("iterations", "lr", "early_stop", "loss", "ensemble")}
    p, _ = _resolve_params(unbound, kw.get("preset"), kw.get("params"), **overrides)
    _check_noise_sigma(kw.get("noise_sigma"), unbound, p)
    return restore_lazily(make, image, mask=mask, scale=unbound.scale, poisson=p.loss == "poisson", client=client, **kw)


def _run(job: DIPJob, callback: Callable | None, return_history: bool, client=None, device="auto"):
    if client is None:
        out = drive(job.steps(), callback)  # steps() assembles the result once; no second copy
    else:
        from .distributed import run_on_client

        out = drive(run_on_client(job, client, device=device if isinstance(device, str) else None), callback)
    return (out.image, out) if return_history else out.image


def denoise(
    image,
    *,
    preset: str | None = "denoise",
    params: DIPParams | None = None,
    channel_axis: int | None = None,
    has_alpha: bool | None = None,
    iterations: int | None = None,
    lr: float | None = None,
    early_stop: bool | None = None,
    loss: Literal["gaussian", "poisson"] | None = None,
    history_every: int | None = None,
    ensemble: int | None = None,
    device="auto",
    seed: int | None = None,
    callback: Callable | None = None,
    return_history: bool = False,
    warm_start: bool = False,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    output_dtype=None,
    camera_offset: float | None = None,
    gain: float | None = None,
    read_noise: float | None = None,
    noise_sigma: float | None = None,
    client=None,
):
    """Denoise an image with Deep Image Prior.

    A randomly initialised encoder-decoder is fitted to the noisy image; its architecture
    reproduces image structure long before noise, so the fit is stopped early (ES-WMV,
    automatically by default).

    Parameters
    ----------
    image : ndarray or dask array, shape (..., H, W) or (..., H, W, C)
        Grey image, image with channels (``channel_axis``), or an nD stack whose leading axes
        (time, z, ...) are processed plane by plane.  Integer or float dtype.  A dask array
        gives a lazy dask array: one task per plane, each restored as in one job over the
        whole stack (the stack's value range, the same seed), computed when the result is
        (:mod:`~.lazy`; no ``callback``, ``return_history`` or ``warm_start``).
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
    ensemble : int, optional
        Seed ensemble (1 to 16; default: the preset's, 1): fit this many independently seeded
        networks in one batched pass and return the mean of their estimates
        (:attr:`DIPParams.ensemble <napari_deep_prior.restore.presets.DIPParams>`).  Each
        step needs about this many times the memory, and on a CPU at least as many times
        the time.
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
        so images too large for one fit still run.  None (default): automatic, when the
        whole-plane fit would not fit in the device's available memory (the largest tile
        that fits is used) or, on a CPU, when the preset's network restores the plane better
        in tiles (``DIPParams.tile_capacity``: the "denoise" default fits planes from 256 px
        a side in tiles of 160 px, or up to 224 px where those would overlap too much, see
        ``DIPOutput.notes``); 0:
        never (raise :class:`ImageTooLargeError` instead); a positive
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
    noise_sigma : float, optional
        The noise level (standard deviation of the Gaussian noise) in the image's own units
        (e.g. 25 for 8-bit values with noise of 25 grey levels): the noise-level stop aims at
        it instead of its estimate from the image (default), less what clipping to the image's
        range took off the noise where the image is near black or white.  Give it when it is known, e.g.
        from a dark frame, or when the estimate is off (structured images, noise that is not
        white).
    client : distributed.Client, optional
        Run the fits on this dask cluster (``pip install "dask[distributed]>=2024.8"``, the ``distributed`` extra):
        every plane of a stack, or tile of a plane, is a task; the output is the one computed
        here for the same seed (bit for bit on CPUs with the same threads per fit). The tiles
        are planned for the smallest worker's memory limit; ``device`` is resolved on each
        worker ("auto": its GPU). ``callback`` then receives a
        :class:`~.distributed.UnitsProgress` per finished plane or tile.

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
    return _restore(
        lambda _mask: Identity(),
        image,
        None,
        callback=callback,
        return_history=return_history,
        client=client,
        preset=preset,
        params=params,
        channel_axis=channel_axis,
        has_alpha=has_alpha,
        iterations=iterations,
        lr=lr,
        early_stop=early_stop,
        loss=loss,
        history_every=history_every,
        ensemble=ensemble,
        device=device,
        seed=seed,
        warm_start=warm_start,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        output_dtype=output_dtype,
        camera_offset=camera_offset,
        gain=gain,
        read_noise=read_noise,
        noise_sigma=noise_sigma,
    )


def inpaint(
    image,
    mask,
    *,
    preset: str | None = "inpaint",
    params: DIPParams | None = None,
    channel_axis: int | None = None,
    has_alpha: bool | None = None,
    iterations: int | None = None,
    lr: float | None = None,
    early_stop: bool | None = None,
    history_every: int | None = None,
    ensemble: int | None = None,
    device="auto",
    seed: int | None = None,
    callback: Callable | None = None,
    return_history: bool = False,
    warm_start: bool = False,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    output_dtype=None,
    client=None,
):
    """Fill the masked pixels of an image with Deep Image Prior.

    The network is fitted to the known pixels only; its output in the holes is the fill.
    Known pixels of the result keep their input values.  The default preset blends that fill
    with scikit-image's biharmonic one, weighed on known pixels held out of the fit in the shape
    of the holes (``DIPParams.fill_blend``, :mod:`.fillblend`; ``DIPOutput.notes`` gives the
    network's share; not for scattered missing pixels);
    ``params=presets.get_preset("inpaint").replace(fill_blend=0)``
    (:mod:`napari_deep_prior.restore.presets`) keeps the network's fill alone.  Large holes
    (:func:`~.regions.large_holes`: blotches, a torn corner) take at most the preset's
    ``DIPParams.iterations_large`` steps with early stopping on (300 in the default, whatever
    ``iterations`` is; ``.replace(iterations_large=0)`` or ``early_stop=False`` lifts it): their
    fill peaks early.

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
    params, channel_axis, has_alpha, iterations, lr, early_stop, history_every, ensemble, device,
    seed, callback, return_history, warm_start, tile_size, tile_overlap, output_dtype, client
        As for :func:`denoise`.  In tiles, a tile without holes is not fitted and a tile
        entirely inside a hole is refused at once (use a larger ``tile_size``).  With
        ``tile_size=None`` (the default) only the neighbourhoods of the holes are fitted when
        they are a small part of the image: boxes around the holes with a margin of known
        pixels (:func:`~.regions.plan_hole_regions`), blended as tiles are; where those would
        cover most of the image (strokes all over it, scattered missing pixels), a plane from
        256 px whose holes are thin or scattered is fitted in the preset's capacity tiles
        (``DIPParams.tile_capacity``) and other planes whole; ``tile_size=0`` always fits the
        whole image (``DIPOutput.notes`` says which).

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
    return _restore(
        Mask,
        image,
        mask,
        callback=callback,
        return_history=return_history,
        client=client,
        preset=preset,
        params=params,
        channel_axis=channel_axis,
        has_alpha=has_alpha,
        iterations=iterations,
        lr=lr,
        early_stop=early_stop,
        history_every=history_every,
        ensemble=ensemble,
        device=device,
        seed=seed,
        warm_start=warm_start,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        output_dtype=output_dtype,
    )


def prepare_upscale(
    image,
    factor: int = 4,
    *,
    preset: str | None = "upscale",
    params: DIPParams | None = None,
    channel_axis: int | None = None,
    has_alpha: bool | None = None,
    iterations: int | None = None,
    lr: float | None = None,
    early_stop: bool | None = None,
    history_every: int | None = None,
    ensemble: int | None = None,
    device="auto",
    seed: int | None = None,
    warm_start: bool = False,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    output_dtype=None,
) -> DIPJob:
    """Validate a super-resolution job without running it (see :func:`upscale` for the parameters)."""
    return prepare(
        Downsample(factor),
        image,
        preset=preset,
        params=params,
        channel_axis=channel_axis,
        has_alpha=has_alpha,
        device=device,
        seed=seed,
        warm_start=warm_start,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        output_dtype=output_dtype,
        iterations=iterations,
        lr=lr,
        early_stop=early_stop,
        history_every=history_every,
        ensemble=ensemble,
    )


def upscale(
    image,
    factor: int = 4,
    *,
    preset: str | None = "upscale",
    params: DIPParams | None = None,
    channel_axis: int | None = None,
    has_alpha: bool | None = None,
    iterations: int | None = None,
    lr: float | None = None,
    early_stop: bool | None = None,
    history_every: int | None = None,
    ensemble: int | None = None,
    device="auto",
    seed: int | None = None,
    callback: Callable | None = None,
    return_history: bool = False,
    warm_start: bool = False,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    output_dtype=None,
    client=None,
):
    """Increase the resolution of an image by ``factor`` with Deep Image Prior (super-resolution).

    The network's output, ``factor`` times larger, is fitted so that its anti-aliased
    (Lanczos-2) down-sampling matches the image; the network's bias towards natural structure
    fills in the detail.

    Parameters
    ----------
    image : ndarray, shape (..., h, w) or (..., h, w, C)
        As for :func:`denoise`.
    factor : {2, 4, 8}
        Scale factor of the height and width.
    preset : str, optional
        Default "upscale"; "paper" is the reference x4 recipe (2000 steps of the 128-wide net).
    params, channel_axis, has_alpha, iterations, lr, early_stop, history_every, ensemble, device,
    seed, callback, return_history, warm_start, tile_size, tile_overlap, output_dtype, client
        As for :func:`denoise`; ``tile_size`` and ``tile_overlap`` are in the input's pixels.

    Returns
    -------
    upscaled : ndarray
        Shape of ``image`` with its height and width multiplied by ``factor``; dtype as for
        :func:`denoise` (an alpha channel is enlarged by repetition).
    output : DIPOutput
        Only with ``return_history=True``; its history frames are up-scaled too.

    References
    ----------
    .. [1] D. Ulyanov, A. Vedaldi, V. Lempitsky, "Deep Image Prior", CVPR 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_deep_prior import upscale
    >>> img = np.tile(np.linspace(0, 1, 16), (16, 1))
    >>> upscale(img, 2, iterations=10, seed=0).shape
    (32, 32)
    """
    return _restore(
        lambda _mask: Downsample(factor),
        image,
        None,
        callback=callback,
        return_history=return_history,
        client=client,
        preset=preset,
        params=params,
        channel_axis=channel_axis,
        has_alpha=has_alpha,
        iterations=iterations,
        lr=lr,
        early_stop=early_stop,
        history_every=history_every,
        ensemble=ensemble,
        device=device,
        seed=seed,
        warm_start=warm_start,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        output_dtype=output_dtype,
    )
