"""denoise / inpaint / upscale of a dask array: a lazy result, each plane as in one job in memory."""

import threading

import numpy as np
import pytest

from napari_deep_prior import denoise, inpaint, upscale
from napari_deep_prior.arrays import drive
from napari_deep_prior.errors import ParameterError
from napari_deep_prior.restore.api import prepare
from napari_deep_prior.restore.degradations import Identity

da = pytest.importorskip("dask.array")

KW = dict(iterations=4, seed=2, device="cpu")


@pytest.fixture
def stack():
    rng = np.random.default_rng(0)
    return (rng.random((3, 24, 24)) * 255).astype(np.uint8)


def test_a_dask_stack_gives_a_lazy_result_equal_to_the_in_memory_one(stack):
    reads = []

    def counted(block):
        reads.append(block.shape)
        return block

    lazy_in = da.from_array(stack, chunks=(2, 12, 12)).map_blocks(counted, dtype=stack.dtype)
    out = denoise(lazy_in, **KW)
    assert isinstance(out, da.Array)
    assert out.shape == stack.shape and out.dtype == stack.dtype
    assert out.chunks == ((1, 1, 1), (24,), (24,))  # one task per plane
    n_range_reads = len(reads)  # the stack's value range: one pass, before any fit
    assert n_range_reads > 0
    # computed by dask's threaded scheduler (fits one at a time: they share torch's thread count)
    np.testing.assert_array_equal(out.compute(), denoise(stack, **KW))
    # a plane alone: only its own blocks are read again
    before = len(reads)
    np.testing.assert_array_equal(out[1].compute(), denoise(stack, **KW)[1])
    # plane 1 lies in the 2 x 2 blocks of 12 x 12 pixels holding planes 0 and 1: not in the others
    assert [r for r in reads[before:] if r != (0, 0, 0)] == [(2, 12, 12)] * 4


def test_float_channels_first_inpaint_and_upscale_equal_the_in_memory_results(stack):
    rng = np.random.default_rng(1)
    f = rng.random((2, 3, 20, 20)).astype(np.float32)
    lazy = denoise(da.from_array(f), channel_axis=1, **KW)
    np.testing.assert_array_equal(lazy.compute(), denoise(f, channel_axis=1, **KW))
    mask = np.zeros((24, 24), bool)
    mask[5:9, 5:15] = True
    np.testing.assert_array_equal(inpaint(da.from_array(stack), mask, **KW).compute(), inpaint(stack, mask, **KW))
    masks = np.zeros(stack.shape, bool)
    masks[:, 5:9, 5:15] = True
    masks[1] = False  # a plane without holes is its own result
    out = inpaint(da.from_array(stack), da.from_array(masks), **KW).compute()
    np.testing.assert_array_equal(out, inpaint(stack, masks, **KW))
    np.testing.assert_array_equal(out[1], stack[1])
    rgb = (rng.random((2, 20, 20, 3)) * 255).astype(np.uint8)
    big = upscale(da.from_array(rgb), 2, channel_axis=-1, **KW)
    assert big.shape == (2, 40, 40, 3)
    np.testing.assert_array_equal(big.compute(), upscale(rgb, 2, channel_axis=-1, **KW))


def test_fits_in_threads_keep_their_seeds_weights_while_jobs_are_prepared(stack):
    """A job prepared in another thread (the memory planner counts a network's weights) draws no
    random number: a fit being built at the same time gets the weights of its seed."""
    ref = drive(prepare(Identity(), stack[:1], **KW).steps()).image
    stop = threading.Event()

    def prepare_again_and_again():
        while not stop.is_set():
            prepare(Identity(), stack[:1], **KW)

    t = threading.Thread(target=prepare_again_and_again)
    t.start()
    try:
        outs = [drive(prepare(Identity(), stack[:1], **KW).steps()).image for _ in range(3)]
    finally:
        stop.set()
        t.join()
    for out in outs:
        np.testing.assert_array_equal(out, ref)


def test_what_a_lazy_result_cannot_do_is_refused(stack):
    lazy = da.from_array(stack)
    with pytest.raises(ParameterError, match="return_history needs the whole stack in memory"):
        denoise(lazy, return_history=True, **KW)
    with pytest.raises(ParameterError, match="callback is not called for a dask array"):
        denoise(lazy, callback=print, **KW)
    with pytest.raises(ParameterError, match="warm_start needs the planes fitted one after the other"):
        denoise(lazy, warm_start=True, **KW)
    with pytest.raises(ParameterError, match=r"mask has shape \(2, 24, 24\) but the image's non-channel shape"):
        inpaint(lazy, da.zeros((2, 24, 24), bool), **KW)
    with pytest.raises(ParameterError, match="iterations must be a positive integer"):
        denoise(lazy, iterations=0, device="cpu")
