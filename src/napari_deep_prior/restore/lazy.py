"""Restorations of dask arrays: a lazy result, one task per plane (optional: dask).

``denoise(dask_array)`` (and ``inpaint``, ``upscale``) returns a dask array whose every block
is one restored plane: nothing is fitted until it is computed (``.compute()``, ``to_zarr``,
napari showing it), by whatever dask scheduler computes it: threads here, or a
``distributed`` cluster (``client=``: the result is persisted there, computing at once).

Each block is the restoration of one plane exactly as in one job over the whole stack in
memory: the same seed for every plane, and the whole stack's value range (computed first, one
read of the data, in parallel) mapped to the fit's [0, 1] (``data_range`` of
:func:`~.api.prepare`).  Only the image is returned (no history) and a warm start is refused
(every plane is independent).  Fits in threads of one process run one at a time
(:data:`~.fit.FIT_LOCK`: torch's thread count is process-wide), so planes run in parallel
on a cluster of processes (``client=``, or dask's ``processes`` scheduler), not in threads.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import numpy as np

from ..arrays import (
    check_data_range,
    check_dtype,
    check_seed,
    drive,
    finite_range,
    new_seed,
    planes_of,
    resolve_output_dtype,
    split_channels,
)
from ..errors import ParameterError
from .fit import FIT_LOCK

__all__ = ["is_dask_array", "restore_lazily"]


def is_dask_array(image) -> bool:
    """Whether ``image`` is a dask array (without importing dask when it is not loaded)."""
    import sys

    da = sys.modules.get("dask.array")
    return da is not None and isinstance(image, da.Array)


def _plane_range(block: np.ndarray, channel_axis, has_alpha) -> tuple[float, float] | None:
    arr, _ca, alpha = split_channels(np.asarray(block), channel_axis, has_alpha)
    planes, _ = planes_of(arr, alpha)
    return finite_range(planes)


def _restore_block(block, mask_block, *, make, shared_mask, kwargs: dict, out_dtype) -> np.ndarray:
    """One plane (a block of the stack): prepared as a plane of the whole stack, fitted, returned."""
    from .api import prepare

    mask = shared_mask if mask_block is None else np.asarray(mask_block)
    if mask is not None and not mask.any():  # no hole in this plane: it is its own result
        return np.asarray(block).astype(out_dtype)
    job = prepare(make(mask), np.asarray(block), **kwargs)
    with FIT_LOCK:  # planes computed in threads of one process: one fit at a time (see FIT_LOCK)
        return drive(job.steps()).image


def restore_lazily(
    make: Callable,
    image,
    *,
    mask=None,
    channel_axis: int | None = None,
    has_alpha: bool | None = None,
    seed: int | None = None,
    warm_start: bool = False,
    output_dtype=None,
    scale: int = 1,
    poisson: bool = False,
    data_range=None,
    client=None,
    **kwargs,
):
    """The lazy restoration of a dask array, one task per plane.

    Parameters
    ----------
    make : callable
        ``make(mask_plane)`` -> the :class:`~.degradations.Degradation` of one plane
        (``mask_plane`` is None unless ``mask`` is given).
    image : dask.array.Array, shape (..., H, W) or (..., H, W, C)
    mask : ndarray or dask array, optional
        Inpainting: one (H, W) mask for every plane, or the image's non-channel shape.
    channel_axis, has_alpha, seed, output_dtype
        As for :func:`~.api.denoise`.
    warm_start : bool
        Refused (True): the planes of a lazy result are independent tasks.
    scale : int
        Result pixels per input pixel along Y and X (up-scaling).
    poisson : bool
        The Poisson loss (integer counts then give float32 rates).
    data_range : (float, float), optional
        The whole stack's value range, when known (saves the pass that computes it).
    client : distributed.Client, optional
        Persist the result on this cluster (its planes start computing there at once).
    **kwargs
        The other options of :func:`~.api.prepare` (preset, iterations, device, ...).

    Returns
    -------
    dask.array.Array
        The result: the input's shape (Y and X times ``scale``), one block per plane.
    """
    import dask
    import dask.array as da

    if warm_start:
        raise ParameterError(
            "{warm_start} needs the planes fitted one after the other in one job; a dask array is "
            "restored lazily, one independent task per plane: leave {warm_start} off, or pass "
            "np.asarray(image) to restore it in memory"
        )
    check_dtype(image)
    seed = check_seed(seed)
    if seed is None:
        seed = new_seed()  # one seed for every plane, as in one job
    arr, ca, alpha = split_channels(image, channel_axis, has_alpha)  # validates the shape only
    ndim = image.ndim
    ca_pos = None if ca is None else ca % ndim
    spatial = [i for i in range(ndim) if i != ca_pos]
    y_ax, x_ax = spatial[-2], spatial[-1]
    # one block per plane: the stack axes in ones, Y, X and the channels whole
    chunks = tuple(image.shape[i] if i in (y_ax, x_ax, ca_pos) else 1 for i in range(ndim))
    image = image.rechunk(chunks)
    data_range = check_data_range(data_range)
    if data_range is None:
        parts = [dask.delayed(_plane_range)(b, channel_axis, has_alpha) for b in image.to_delayed().ravel().tolist()]
        ranges = client.gather(client.compute(parts)) if client is not None else dask.compute(*parts)
        found = [r for r in ranges if r is not None]
        if not found:
            raise ParameterError("image has no finite value: nothing to restore")
        data_range = (min(r[0] for r in found), max(r[1] for r in found))
    out_dtype = resolve_output_dtype(output_dtype, image.dtype, poisson)
    if out_dtype is None:
        out_dtype = np.dtype(np.float32) if image.dtype == np.float16 else image.dtype
    out_chunks = tuple(
        tuple(c * scale for c in image.chunks[i]) if i in (y_ax, x_ax) else image.chunks[i] for i in range(ndim)
    )
    block_kwargs = dict(
        kwargs,
        channel_axis=channel_axis,
        has_alpha=has_alpha,
        seed=seed,
        output_dtype=output_dtype,
        data_range=data_range,
        history_every=0,  # a lazy result has no history: no frames kept per plane
    )
    shared = None
    args = [image]
    if mask is not None:
        if is_dask_array(mask) or np.ndim(mask) > 2:
            mask_shape = tuple(image.shape[i] for i in spatial)
            if tuple(np.shape(mask)) != mask_shape:
                raise ParameterError(
                    f"mask has shape {tuple(np.shape(mask))} but the image's non-channel shape is {mask_shape}; "
                    "give one (H, W) mask for every plane or a mask of that shape"
                )
            m = da.asarray(mask).rechunk(tuple(chunks[i] for i in spatial))
            if ca_pos is not None:
                m = da.expand_dims(m, ca_pos).rechunk(tuple(1 if i == ca_pos else c for i, c in enumerate(chunks)))
            args.append(m)
        else:
            shared = np.asarray(mask)
    if len(args) == 1:
        args.append(None)

    def block(img, msk):
        if msk is not None and ca_pos is not None:
            msk = np.take(msk, 0, axis=ca_pos)
        return _restore_block(img, msk, make=make, shared_mask=shared, kwargs=block_kwargs, out_dtype=out_dtype)

    # a name of its own: two restorations of one array with other options are other results
    name = f"napari-deep-prior-{uuid.uuid4().hex}"
    if args[1] is None:
        result = da.map_blocks(lambda img: block(img, None), image, dtype=out_dtype, chunks=out_chunks, name=name)
    else:
        result = da.map_blocks(block, image, args[1], dtype=out_dtype, chunks=out_chunks, name=name)
    if client is not None:
        result = client.persist(result)
    return result
