"""StackJob: a stack read plane by plane, its results written plane by plane, equal bitwise to one
whole-stack job (prepare of the array in memory)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_deep_prior.arrays import drive
from napari_deep_prior.restore.api import prepare
from napari_deep_prior.restore.degradations import Downsample, Identity, Mask
from napari_deep_prior.restore.lanes import LANES_ENV
from napari_deep_prior.restore.stream import Scan, StackJob


class CountingArray:
    """A read-only array that counts which planes are read (a stand-in for a dask / zarr array)."""

    def __init__(self, data: np.ndarray):
        self._data = data
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.reads: list[int] = []

    def __getitem__(self, index):
        lead = index[0]
        assert isinstance(lead, slice) and lead.stop - lead.start == 1, "reads one plane at a time"
        self.reads.append(lead.start)
        return self._data[index].copy()


def _stack(n=4, dtype=np.uint16, seed=0, size=32):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / (size - 1.0)
    clean = 0.5 + 0.3 * np.sin(3 * x) * np.cos(2 * y)
    planes = [np.clip(clean * (0.6 + 0.2 * k) + 0.05 * rng.standard_normal(clean.shape), 0, None) for k in range(n)]
    return (np.stack(planes) * 1000).astype(dtype)


def _whole(deg, stack, params, **kw):
    return drive(prepare(deg, stack, params=params, seed=5, device="cpu", **kw).steps())


def _lazy(cls, stack, params, fields=None, **kw):
    src = CountingArray(stack)
    job = StackJob(cls, src, fields=fields, params=params, seed=5, device="cpu", **kw)
    items = []
    out = drive(job.steps(), items.append)
    return out, src, items


def test_denoise_stack_equals_the_whole_stack_job_and_reads_each_plane_once_per_pass(tiny_params):
    stack = _stack()
    params = tiny_params.replace(iterations=12, history_every=4)
    whole = _whole(Identity(), stack, params)
    out, src, items = _lazy(Identity, stack, params)
    np.testing.assert_array_equal(out.image, whole.image)
    assert out.image.dtype == whole.image.dtype == np.uint16
    np.testing.assert_array_equal(out.history, whole.history)
    np.testing.assert_array_equal(out.history_iterations, whole.history_iterations)
    np.testing.assert_array_equal(out.history_losses, whole.history_losses)
    assert out.stop_iterations == whole.stop_iterations and out.planes_done == 4
    # the scan reads every plane once (last first); the fit reads planes 1..3 again (plane 0 is kept)
    assert src.reads == [3, 2, 1, 0, 1, 2, 3]
    scans = [i for i in items if isinstance(i, Scan)]
    assert [s.plane for s in scans] == [3, 2, 1, 0]
    assert sorted({i.plane for i in items if not isinstance(i, Scan)}) == [0, 1, 2, 3]
    assert {i.n_planes for i in items} == {4}


def test_a_given_data_range_skips_the_scan(tiny_params):
    stack = _stack(n=3)
    params = tiny_params.replace(iterations=6, history_every=0)
    whole = _whole(Identity(), stack, params)
    rng = (float(stack.min()), float(stack.max()))
    out, src, items = _lazy(Identity, stack, params, data_range=rng)
    np.testing.assert_array_equal(out.image, whole.image)
    assert src.reads == [0, 1, 2] and not any(isinstance(i, Scan) for i in items)
    assert out.history is None


def test_poisson_stack_equals_the_whole_stack_job(tiny_params):
    stack = _stack(n=3)
    params = tiny_params.replace(iterations=6, history_every=0, loss="poisson")
    whole = _whole(Identity(), stack, params)
    out, _src, _items = _lazy(Identity, stack, params)
    np.testing.assert_array_equal(out.image, whole.image)
    assert out.image.dtype == np.float32


def test_inpaint_2d_mask_equals_the_whole_stack_job(tiny_params):
    stack = _stack(n=3).astype(np.float32)
    mask = np.zeros((32, 32), bool)
    mask[10:14, 8:20] = True
    params = tiny_params.replace(iterations=6, history_every=3)
    whole = _whole(Mask(mask), stack, params)
    out, _src, _items = _lazy(Mask, stack, params, fields={"mask": mask})
    np.testing.assert_array_equal(out.image, whole.image)
    np.testing.assert_array_equal(out.history, whole.history)


@pytest.mark.parametrize("tile_size", [0, 64])
def test_warm_start_equals_the_whole_stack_job(tiny_params, tile_size):
    """Every later plane (every tile) starts from the first fitted plane's (tile's) weights, passed
    from one plane's job to the next; whole planes and planes in tiles."""
    stack = _stack(n=3, size=96)
    params = tiny_params.replace(iterations=6, history_every=3)
    whole = _whole(Identity(), stack, params, warm_start=True, tile_size=tile_size)
    cold = _whole(Identity(), stack, params, tile_size=tile_size)
    assert not np.array_equal(whole.image[1:], cold.image[1:])  # the warm start changes planes 1 and 2
    out, _src, _items = _lazy(Identity, stack, params, warm_start=True, tile_size=tile_size)
    np.testing.assert_array_equal(out.image, whole.image)
    np.testing.assert_array_equal(out.history, whole.history)


def test_warm_start_takes_the_first_plane_with_holes(tiny_params):
    stack = _stack(n=3, size=64)
    mask = np.zeros((3, 64, 64), bool)
    mask[1:, 20:26, 10:30] = True  # plane 0 has no hole: plane 1 is the first fitted one
    params = tiny_params.replace(iterations=6, history_every=3)
    whole = _whole(Mask(mask), stack, params, warm_start=True, tile_size=0)
    out, _src, _items = _lazy(Mask, stack, params, fields={"mask": mask}, warm_start=True, tile_size=0)
    np.testing.assert_array_equal(out.image, whole.image)


@pytest.mark.parametrize("tile_size", [None, 0])
def test_inpaint_3d_mask_with_an_empty_plane_equals_the_whole_stack_job(monkeypatch, tiny_params, tile_size):
    """Regions around the holes of every plane (tile_size None) and whole planes (in two lanes);
    a plane without holes."""
    monkeypatch.setenv(LANES_ENV, "2")
    stack = _stack(n=3, size=64).astype(np.float32)
    mask = np.zeros((3, 64, 64), np.uint8)
    mask[0, 4:8, 4:10] = 1
    mask[2, 40:46, 50:56] = 2
    stack[0, 5, 5] = np.nan  # unknown values in a hole are allowed
    params = tiny_params.replace(iterations=6, history_every=3)
    whole = _whole(Mask(mask), stack, params, tile_size=tile_size)
    for fields in ({"mask": mask}, {"mask": lambda p: mask[p]}):
        out, _src, _items = _lazy(Mask, stack, params, fields=fields, tile_size=tile_size)
        np.testing.assert_array_equal(out.image, whole.image)
        np.testing.assert_array_equal(out.history, whole.history)
        assert out.regions == whole.regions and out.tiles == whole.tiles
        assert out.lanes == (1 if out.regions else 2)  # regions are several fits per plane: no plane lanes
        assert out.fits[1] is None  # the plane without holes is returned as it is
        np.testing.assert_array_equal(out.image[1], stack[1])


def test_upscale_rgba_stack_equals_the_whole_stack_job(tiny_params):
    rng = np.random.default_rng(2)
    stack = rng.integers(0, 255, size=(2, 16, 16, 4), dtype=np.uint8)
    params = tiny_params.replace(iterations=4, history_every=0)
    whole = _whole(Downsample(2), stack, params, channel_axis=-1)
    out, _src, _items = _lazy(Downsample, stack, params, fields={"factor": 2}, channel_axis=-1)
    assert out.image.shape == (2, 32, 32, 4)
    np.testing.assert_array_equal(out.image, whole.image)


def test_channels_first_multichannel_stack(tiny_params):
    stack = np.stack([_stack(n=2), _stack(n=2, seed=1)], axis=1)  # (T, C, Y, X)
    params = tiny_params.replace(iterations=4, history_every=0)
    whole = _whole(Identity(), stack, params, channel_axis=1)
    out, src, _items = _lazy(Identity, stack, params, channel_axis=1)
    np.testing.assert_array_equal(out.image, whole.image)


@pytest.mark.parametrize("lanes", [1, 2])
def test_cancel_keeps_finished_planes_and_the_running_plane_estimate(monkeypatch, tiny_params, lanes, lane_threads):
    monkeypatch.setenv(LANES_ENV, str(lanes))
    stack = _stack(n=4)
    params = tiny_params.replace(iterations=10, history_every=0, yield_every=5)
    job = StackJob(Identity, CountingArray(stack), params=params, seed=5, device="cpu")
    gen = job.steps()
    for item in gen:
        if not isinstance(item, Scan) and item.plane == 2 and item.iteration >= 5:
            break
    gen.close()  # the cancel (the widget closes the generator, then reads the result)
    assert not lane_threads()
    out = job.result()
    assert out.planes_done == 2 and out.lanes == lanes
    whole = _whole(Identity(), stack, params)
    np.testing.assert_array_equal(out.image[:2], whole.image[:2])
    assert out.image[2].any() and not out.image[3].any()  # running plane written, the last not reached
    assert out.stop_iterations[3] == 0


def test_zarr_store(tiny_params, tmp_path):
    zarr = pytest.importorskip("zarr")
    stack = _stack(n=3)
    params = tiny_params.replace(iterations=6, history_every=3)
    made = {}

    def store(name, shape, dtype):
        made[name] = zarr.open_array(str(tmp_path / name), mode="w", shape=shape, dtype=dtype, chunks=(1,) + shape[1:])
        return made[name]

    whole = _whole(Identity(), stack, params)
    out, _src, _items = _lazy(Identity, stack, params, store=store)
    assert out.image is made["image"] and out.history is made["history"]
    np.testing.assert_array_equal(out.image[...], whole.image)
    np.testing.assert_array_equal(out.history[...], whole.history)


# --- refusals, before any plane is read -----------------------------------------------------


def test_a_mask_of_the_wrong_shape_is_refused(tiny_params):
    with pytest.raises(ValueError, match=r"mask has shape \(5, 5\) but image is \(4, 32, 32\)"):
        StackJob(Mask, _stack(), params=tiny_params, fields={"mask": np.zeros((5, 5))})


def test_a_missing_mask_is_refused(tiny_params):
    with pytest.raises(ValueError, match="inpaint needs a mask"):
        StackJob(Mask, _stack(), params=tiny_params)


def test_an_all_zero_mask_is_refused(tiny_params):
    job = StackJob(Mask, _stack(), params=tiny_params, fields={"mask": np.zeros((4, 32, 32))})
    with pytest.raises(ValueError, match="marks no pixel to restore in any plane"):
        drive(job.steps())


def test_a_degradation_instance_is_refused(tiny_params):
    with pytest.raises(TypeError, match="Degradation class"):
        StackJob(Identity(), _stack(), params=tiny_params)


def test_too_small_planes_are_refused_before_reading(tiny_params):
    src = CountingArray(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="at least 8x8"):
        StackJob(Identity, src, params=tiny_params)
    assert src.reads == []


def test_a_plane_error_names_the_plane(tiny_params):
    stack = _stack(n=3).astype(np.float32)
    stack[2, 3, 3] = np.nan
    job = StackJob(Identity, stack, params=tiny_params.replace(iterations=4), data_range=(0.0, 2000.0))
    with pytest.raises(ValueError, match="plane 2 of 3: image contains 1 NaN"):
        drive(job.steps())


# --- several small planes at once (lanes) -----------------------------------------------------


@pytest.mark.parametrize("warm_start", [False, True])
def test_small_planes_in_lanes_give_the_result_of_one_plane_at_a_time(
    monkeypatch, tiny_params, warm_start, lane_threads
):
    stack = _stack(n=5)
    params = tiny_params.replace(iterations=12, history_every=4)
    monkeypatch.setenv(LANES_ENV, "1")
    one, _src, _items = _lazy(Identity, stack, params, warm_start=warm_start)
    monkeypatch.setenv(LANES_ENV, "2")
    out, src, items = _lazy(Identity, stack, params, warm_start=warm_start)
    whole = _whole(Identity(), stack, params, warm_start=warm_start)
    assert one.lanes == 1 and out.lanes == 2 and whole.lanes == 2
    for ref in (one, whole):
        np.testing.assert_array_equal(out.image, ref.image)
        np.testing.assert_array_equal(out.history, ref.history)
        np.testing.assert_array_equal(out.history_losses, ref.history_losses)
        assert out.stop_iterations == ref.stop_iterations and out.iterations_run == ref.iterations_run
    if warm_start:
        cold = _whole(Identity(), stack, params)
        assert not np.array_equal(out.image[1:], cold.image[1:])  # the warm start reached the lanes
    # the scan, then every plane read once more, in order (plane 0 kept from the scan)
    assert src.reads == [4, 3, 2, 1, 0, 1, 2, 3, 4]
    # progress follows one plane at a time, in order, and reports every plane
    planes = [i.plane for i in items if not isinstance(i, Scan)]
    assert planes == sorted(planes) and set(planes) == set(range(5))
    assert not lane_threads()


def test_an_error_in_a_lane_is_raised_at_its_plane_after_the_planes_before_it(monkeypatch, tiny_params, lane_threads):
    """Plane 2's fit fails while plane 1 still runs: planes 0 and 1 are written first, and the
    other lanes are stopped."""
    from napari_deep_prior.restore import fit as fit_module

    monkeypatch.setenv(LANES_ENV, "2")
    real = fit_module.DIPFit._steps
    started = []

    def failing(self):
        started.append(self)
        if len(started) == 3:  # fits start in plane order: the third is plane 2's
            raise RuntimeError("lane failure for the test")
        return (yield from real(self))

    monkeypatch.setattr(fit_module.DIPFit, "_steps", failing)
    stack = _stack(n=5)
    params = tiny_params.replace(iterations=60, early_stop=False, history_every=0)
    job = StackJob(Identity, stack, params=params, seed=5, device="cpu")
    with pytest.raises(RuntimeError, match="lane failure for the test"):
        drive(job.steps())
    assert job.lanes == 2 and job.planes_written == 2 and job._written == [True, True, False, False, False]
    assert not lane_threads()


def test_a_plane_error_in_lanes_names_the_plane_after_the_planes_before_it(monkeypatch, tiny_params, lane_threads):
    monkeypatch.setenv(LANES_ENV, "2")
    stack = _stack(n=4).astype(np.float32)
    stack[3, 3, 3] = np.nan
    params = tiny_params.replace(iterations=30, early_stop=False, history_every=0)
    job = StackJob(Identity, stack, params=params, data_range=(0.0, 2000.0), seed=5, device="cpu")
    with pytest.raises(ValueError, match="plane 3 of 4: image contains 1 NaN"):
        drive(job.steps())
    assert job.lanes == 2 and job.planes_written == 3
    assert not lane_threads()


def test_a_plane_that_cannot_run_in_a_lane_is_fitted_at_its_turn(monkeypatch, tiny_params, lane_threads):
    """A plane whose plan is not one small fit (here: declared so) runs on the caller's thread
    at its turn, while the lanes go on; the result is still that of one plane at a time."""
    from napari_deep_prior.restore import stream

    stack = _stack(n=5)
    params = tiny_params.replace(iterations=12, history_every=4)
    monkeypatch.setenv(LANES_ENV, "1")
    one, _src, _items = _lazy(Identity, stack, params)
    monkeypatch.setenv(LANES_ENV, "2")
    real, calls, here = stream._lane_job, [], []

    def lane_job(job):
        calls.append(job)
        if len(calls) == 3:  # the lanes' choice, then planes 1 and 2 as they are prepared
            here.append(job)
            return False
        return real(job)

    monkeypatch.setattr(stream, "_lane_job", lane_job)
    threads = []
    monkeypatch.setattr(stream.StackJob, "_fit_job", _recording(stream.StackJob._fit_job, threads))
    out, _src, items = _lazy(Identity, stack, params)
    assert out.lanes == 2 and len(here) == 1
    assert threads == [(2, threading.get_ident())]  # plane 2 alone was fitted here, on this thread
    np.testing.assert_array_equal(out.image, one.image)
    np.testing.assert_array_equal(out.history, one.history)
    planes = [i.plane for i in items if not isinstance(i, Scan)]
    assert planes == sorted(planes) and set(planes) == set(range(5))
    assert not lane_threads()


def _recording(method, calls: list):
    def wrapper(self, p, job):
        calls.append((p, threading.get_ident()))
        return (yield from method(self, p, job))

    return wrapper
