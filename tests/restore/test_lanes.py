"""Lanes: several fits of one job at once on the CPU give what the same fits give one by one."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_deep_prior.arrays import drive
from napari_deep_prior.restore.api import prepare_denoise, prepare_inpaint
from napari_deep_prior.restore.lanes import LANES_ENV, choose_lanes

CPU = torch.device("cpu")


def _stack(n=5, h=32, w=32, seed=0):
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    rng = np.random.default_rng(seed)
    planes = [0.5 + 0.3 * np.sin((3 + z) * x) * np.cos(2 * y) + 0.08 * rng.standard_normal((h, w)) for z in range(n)]
    return np.clip(np.stack(planes), 0, 1).astype(np.float32)


def _run(monkeypatch, lanes: int, make_job):
    monkeypatch.setenv(LANES_ENV, str(lanes))
    job = make_job()
    steps = []
    out = drive(job.steps(), steps.append)
    return job, out, steps


def _same(a, b):
    np.testing.assert_array_equal(a.image, b.image)
    assert a.stop_iterations == b.stop_iterations and a.iterations_run == b.iterations_run
    if a.history is None:
        assert b.history is None
    else:
        np.testing.assert_array_equal(a.history, b.history)
        np.testing.assert_array_equal(a.history_losses, b.history_losses)


@pytest.mark.parametrize("warm_start", [False, True])
def test_a_stack_in_two_lanes_equals_one_plane_at_a_time(monkeypatch, tiny_params, warm_start, lane_threads):
    img = _stack()
    p = tiny_params.replace(iterations=40)

    def make():
        return prepare_denoise(img, params=p, seed=3, device="cpu", warm_start=warm_start)

    job1, one, _ = _run(monkeypatch, 1, make)
    job2, two, steps = _run(monkeypatch, 2, make)
    assert job1.lanes == one.lanes == 1 and job2.lanes == two.lanes == 2
    _same(one, two)
    # progress follows one plane at a time, in order, every plane (one finished while an earlier
    # one ran reports its latest Step), labelled with its plane
    planes = [s.plane for s in steps]
    assert planes == sorted(planes) and set(planes) == set(range(5)) and all(s.n_planes == 5 for s in steps)
    assert not lane_threads()


def test_tiles_in_lanes_equal_tiles_one_by_one(monkeypatch, tiny_params):
    img = _stack(n=1, h=80, w=80)[0]
    p = tiny_params.replace(iterations=30, preview_every=5)

    def make():
        return prepare_denoise(img, params=p, seed=1, device="cpu", tile_size=48, tile_overlap=16)

    job1, one, _ = _run(monkeypatch, 1, make)
    job2, two, steps = _run(monkeypatch, 3, make)
    assert len(job2.tiles) == 4 and job2.lanes == 3
    _same(one, two)
    assert one.tile_stop_iterations == two.tile_stop_iterations
    tiles = [s.tile for s in steps]
    assert tiles == sorted(tiles) and set(tiles) == set(range(4))
    # a preview is the whole plane (blended so far), or absent
    assert all(s.preview is None or s.preview.shape[:2] == (80, 80) for s in steps)
    assert any(s.preview is not None for s in steps)


def test_inpaint_regions_in_lanes(monkeypatch, tiny_params):
    img = _stack(n=1, h=128, w=128)[0]
    mask = np.zeros(img.shape, bool)
    mask[10:14, 10:20] = True
    mask[100:106, 90:96] = True

    def make():
        return prepare_inpaint(img, mask, params=tiny_params.replace(iterations=20), seed=0, device="cpu")

    job1, one, _ = _run(monkeypatch, 1, make)
    job2, two, _ = _run(monkeypatch, 2, make)
    assert job2.regions and len(job2.tiles) == 2 and job2.lanes == 2
    _same(one, two)


def test_a_cancel_stops_every_lane_and_keeps_what_was_done(monkeypatch, tiny_params, lane_threads):
    monkeypatch.setenv(LANES_ENV, "2")
    img = _stack(n=6)
    job = prepare_denoise(img, params=tiny_params.replace(iterations=400, early_stop=False), seed=0, device="cpu")
    gen = job.steps()
    seen = set()
    for step in gen:
        seen.add(step.plane)
        if step.plane >= 2:  # the third plane is running: planes 0 and 1 are done
            break
    gen.close()  # the napari worker's quit()
    assert not lane_threads()
    out = job.result()
    assert job.lanes == 2
    assert out.planes_done >= 2 and out.planes_done < 6
    assert out.stop_iterations[0] > 0 and out.stop_iterations[-1] == 0
    # planes not reached keep their input
    np.testing.assert_array_equal(out.image[-1], img[-1])
    assert torch.get_num_threads() >= 1


def test_an_error_in_a_lane_is_raised_and_stops_the_others(monkeypatch, tiny_params, lane_threads):
    from napari_deep_prior.restore import fit as fit_module

    monkeypatch.setenv(LANES_ENV, "2")
    img = _stack(n=4)
    real = fit_module.DIPFit._steps
    started = []

    def failing(self):
        started.append(self)
        if len(started) == 2:  # the second fit to start (in the second lane)
            raise RuntimeError("lane failure for the test")
        return (yield from real(self))

    monkeypatch.setattr(fit_module.DIPFit, "_steps", failing)
    job = prepare_denoise(img, params=tiny_params.replace(iterations=200, early_stop=False), seed=0, device="cpu")
    with pytest.raises(RuntimeError, match="lane failure for the test"):
        drive(job.steps())
    assert not lane_threads()
    assert len(started) == 2  # the first fit was stopped, no later one started


def test_choose_lanes():
    n = torch.get_num_threads()
    assert choose_lanes(torch.device("meta"), 8, None, None) == 1  # not the CPU
    assert choose_lanes(CPU, 1, None, None) == 1  # one unit
    torch.set_num_threads(4)
    try:
        assert choose_lanes(CPU, 8, None, None) == 4
        assert choose_lanes(CPU, 2, None, None) == 2
        # memory for three fits of 100 MB (a quarter kept free): three lanes
        assert choose_lanes(CPU, 8, 100 * 2**20, 400 * 2**20) == 3
        assert choose_lanes(CPU, 8, 100 * 2**20, 150 * 2**20) == 1
    finally:
        torch.set_num_threads(n)


def test_only_fits_that_run_on_one_thread_alone_get_lanes(monkeypatch, tiny_params):
    """A larger fit runs on all the threads alone, and its result depends on its thread count:
    in a lane it would compute otherwise than in a job of one plane, so it gets no lane."""
    from napari_deep_prior.device import SMALL_FIT_PIXELS

    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert choose_lanes(CPU, 8, None, None, unit_pixels=SMALL_FIT_PIXELS) == 2
        assert choose_lanes(CPU, 8, None, None, unit_pixels=SMALL_FIT_PIXELS + 1) == 1
        monkeypatch.setenv("NAPARI_DEEP_PRIOR_NO_THREAD_POLICY", "1")  # small fits use every thread too
        assert choose_lanes(CPU, 8, None, None) == 1
        monkeypatch.delenv("NAPARI_DEEP_PRIOR_NO_THREAD_POLICY")
        monkeypatch.setenv(LANES_ENV, "2")
        job = prepare_denoise(_stack(n=2, h=200, w=200), params=tiny_params.replace(iterations=2), seed=0, device="cpu")
        drive(job.steps())
        assert job.lanes == 1  # 200 x 200 planes (224 x 224 padded): one at a time, on 2 threads each
    finally:
        torch.set_num_threads(n)


def test_the_tiles_of_a_plane_run_in_lanes_on_one_thread_each(monkeypatch, tiny_params, lane_threads):
    """Tiles of a tiled plane up to TILE_FIT_PIXELS run on one thread each, side by side: the
    output equals the same tiles run one after another (each on one thread there too)."""
    from napari_deep_prior.device import SMALL_FIT_PIXELS, TILE_FIT_PIXELS

    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert choose_lanes(CPU, 4, None, None, unit_pixels=TILE_FIT_PIXELS, tiles=True) == 2
        assert choose_lanes(CPU, 4, None, None, unit_pixels=TILE_FIT_PIXELS + 1, tiles=True) == 1
        assert choose_lanes(CPU, 4, None, None, unit_pixels=TILE_FIT_PIXELS) == 1  # whole planes: no
        img = _stack(n=1, h=400, w=400)[0]
        p = tiny_params.replace(iterations=6, early_stop=False, history_every=0)

        def make():
            return prepare_denoise(img, params=p, seed=1, device="cpu", tile_size=224)

        job1, one, _ = _run(monkeypatch, 1, make)
        job2, two, _ = _run(monkeypatch, 2, make)
        assert job2.tiles is not None and len(job2.tiles) == 4
        assert SMALL_FIT_PIXELS < job2.lane_size()[1] <= TILE_FIT_PIXELS  # 224 x 224: above the small fits
        assert job1.lanes == 1 and job2.lanes == 2
        _same(one, two)
        assert torch.get_num_threads() == 2  # restored after the lanes
        assert not lane_threads()
    finally:
        torch.set_num_threads(n)


def test_the_lanes_variable(monkeypatch):
    monkeypatch.setenv(LANES_ENV, "3")
    assert choose_lanes(CPU, 8, None, None) == 3
    assert choose_lanes(CPU, 2, None, None) == 2  # never more than the units
    monkeypatch.setenv(LANES_ENV, "1")
    assert choose_lanes(CPU, 8, None, None) == 1
    for bad in ("two", "0"):
        monkeypatch.setenv(LANES_ENV, bad)
        with pytest.raises(ValueError, match=LANES_ENV):
            choose_lanes(CPU, 8, None, None)


def test_finished_units_waiting_for_an_earlier_one_are_bounded(lane_threads):
    """While the awaited unit runs on, at most n later results wait (memory); then it is taken first."""
    from types import SimpleNamespace

    from napari_deep_prior.restore.lanes import Lanes

    gate = threading.Event()

    class Fit:
        def __init__(self, i, k, state):
            self.unit = (i, k)

        def steps(self):
            threads[self.unit] = torch.get_num_threads()  # one thread a fit, as alone
            if self.unit == (0, None):
                assert gate.wait(30), "the test did not release the first unit"
            yield SimpleNamespace(unit=self.unit)
            return SimpleNamespace(unit=self.unit, state_dict=None)

    units = [(i, None) for i in range(6)]
    threads = {}
    lanes = Lanes(units, Fit, 2)
    seen = {}

    def release():
        seen["done"], seen["started"] = sorted(lanes._done), lanes._next
        gate.set()

    timer = threading.Timer(1.0, release)
    timer.start()
    try:
        got = []
        for u in units:
            gen = lanes.result(u, lambda s: s)
            while True:
                try:
                    next(gen)
                except StopIteration as stop:
                    got.append(stop.value.unit)
                    break
    finally:
        timer.cancel()
        gate.set()
        lanes.close()
    assert seen == {"done": [(1, None), (2, None)], "started": 3}  # units 3-5 waited
    assert got == units
    assert threads == {u: 1 for u in units}
    assert not lane_threads()
