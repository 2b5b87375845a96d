"""Several fits of one job at once on a multi-core CPU ("lanes").

A small fit runs on one intra-op thread (:func:`~..device.fit_threads`: as fast as two at that
size), and so does a tile of a tiled plane up to 288 px (a 512 px plane's tiles: faster one per
core than one after another on all of them), so a job of many small planes or tiles run one fit
at a time leaves cores idle.
:class:`Lanes` runs up to ``n`` of a job's units (plane, tile) at once, each in its own Python
thread on one intra-op thread (torch releases the GIL inside its operators), and hands their
results to the job in the job's order.  Only fits that run on one thread anyway get lanes: a
fit's result depends on its thread count (the order of its parallel reductions), and this way
every fit computes exactly what it computes alone, so the output is the one the same fits give
one after the other (and a plane of a stack run plane by plane equals the whole-stack run).
Every unit has its own seed-derived random generators, so which lane runs it, and when, does
not change its result.

:func:`choose_lanes` decides how many lanes a job gets (CPU only; bounded by the cores torch
uses, the units and the memory left); ``NAPARI_DEEP_PRIOR_LANES=1`` turns lanes off.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Generator

__all__ = ["LANES_ENV", "Lanes", "choose_lanes"]

#: Environment variable: a fixed number of lanes (1 turns them off).
LANES_ENV = "NAPARI_DEEP_PRIOR_LANES"

#: Seconds a lane thread is waited for after a cancel (it stops at its fit's next step).
_JOIN_TIMEOUT_S = 120.0


def choose_lanes(
    device,
    n_units: int,
    unit_bytes: int | None,
    available_bytes: int | None,
    unit_pixels: int = 0,
    tiles: bool = False,
) -> int:
    """How many fits of a job of ``n_units`` on ``device`` run at once (1: one after the other).

    On the CPU, for fits that run on one thread anyway (``unit_pixels``, the padded area of the
    largest fit times its ensemble, at most :data:`~..device.SMALL_FIT_PIXELS`, or for the tiles
    of tiled planes (``tiles``) at most :data:`~..device.TILE_FIT_PIXELS`; with the thread
    policy on): as many lanes as torch's intra-op threads and the units allow, fewer when
    ``lanes`` fits of ``unit_bytes`` each would not fit in ``available_bytes`` (with a quarter
    kept free), each lane on one thread.  Otherwise (larger fits, a GPU, a single unit): 1.
    :data:`LANES_ENV` overrides the count (still at most ``n_units``, still only for such fits).
    """
    import torch

    from ..device import one_thread_fit

    if getattr(device, "type", str(device)) != "cpu" or n_units < 2:
        return 1
    if not one_thread_fit(unit_pixels, tiles) or os.environ.get("NAPARI_DEEP_PRIOR_NO_THREAD_POLICY"):
        return 1  # such a fit runs on all the threads alone: in a lane it would compute otherwise
    env = os.environ.get(LANES_ENV, "").strip()
    if env:
        try:
            lanes = int(env)
        except ValueError:
            raise ValueError(f"{LANES_ENV} must be a whole number of lanes (1 turns lanes off), got {env!r}") from None
        if lanes < 1:
            raise ValueError(f"{LANES_ENV} must be >= 1 (1 turns lanes off), got {lanes}")
    else:
        lanes = max(1, torch.get_num_threads())
    lanes = min(lanes, n_units)
    if unit_bytes and available_bytes is not None:
        lanes = min(lanes, max(1, int(0.75 * available_bytes) // max(int(unit_bytes), 1)))
    return lanes


class Lanes:
    """Runs a job's units in up to ``n`` threads at once, one intra-op thread each; results are
    taken in the job's order.

    Parameters
    ----------
    units : list of (plane, tile)
        The job's units in its order (:meth:`~.job.DIPJob.units`).
    make_fit : callable (plane, tile, init_state) -> DIPFit
        Builds a unit's fit (on the caller's thread).
    n : int
        Lanes.
    warm_start : bool
        The units after the first start from the first unit's final weights (the job's warm
        start): the first runs alone, the others once it has finished.
    init_state : dict, optional
        Weights every unit starts from (a warm start given from outside: no wait).

    Use :meth:`fit` and :meth:`result` (a generator yielding the awaited unit's Steps, returning
    its FitResult) for each unit in the job's order, and :meth:`close` at the end or on a cancel.
    """

    def __init__(
        self,
        units,
        make_fit: Callable,
        n: int,
        *,
        warm_start: bool = False,
        init_state: dict | None = None,
    ):
        self.units = list(units)
        self.make_fit = make_fit
        self.n = int(n)
        self.warm_start = bool(warm_start)
        self.state = init_state
        self._next = 0  # index in units of the next unit to start
        self._running: dict = {}  # unit -> (DIPFit, thread)
        self._done: dict = {}  # unit -> FitResult, not yet taken
        self.fits: dict = {}  # unit -> DIPFit, started and not yet taken
        self._last_step: dict = {}  # unit -> its latest Step, while another unit is awaited
        self._q: queue.Queue = queue.Queue()
        self._stop = threading.Event()

    # -- scheduling --------------------------------------------------------------------
    def _may_start(self) -> bool:
        if self._next >= len(self.units) or len(self._running) >= self.n:
            return False
        # at most n results waiting for an earlier unit to finish (memory): the awaited unit,
        # the earliest not taken, has always started, so this never blocks the job
        if len(self._done) >= self.n:
            return False
        # a warm start without weights yet: the first unit runs alone, the rest wait for it
        return not (self.warm_start and self.state is None and self._next > 0)

    def _fill(self) -> None:
        while self._may_start():
            unit = self.units[self._next]
            self._next += 1
            fit = self.make_fit(*unit, self.state if self.warm_start else None)
            self.fits[unit] = fit
            t = threading.Thread(target=self._run, args=(unit, fit), name=f"dip-lane-{unit}", daemon=True)
            self._running[unit] = (fit, t)
            t.start()

    def _run(self, unit, fit) -> None:
        """A lane: drive ``fit`` to its end, passing its Steps and result to the queue."""
        import torch

        try:
            torch.set_num_threads(1)  # this thread's intra-op threads: as the fit alone (choose_lanes)
            gen = fit.steps()
            while True:
                if self._stop.is_set():
                    gen.close()
                    self._q.put(("stopped", unit, None))
                    return
                try:
                    step = next(gen)
                except StopIteration as stop:
                    self._q.put(("done", unit, stop.value))
                    return
                self._q.put(("step", unit, step))
        except BaseException as exc:  # handed to the job's thread, raised there
            self._q.put(("error", unit, exc))

    # -- the job's side ------------------------------------------------------------------
    def fit(self, unit):
        """The fit of ``unit``, started now if it has not been (the job is waiting for it)."""
        if unit not in self.fits:
            self._fill()
        if unit not in self.fits:  # the lanes are full of later units: cannot happen in order
            raise RuntimeError(f"unit {unit} cannot start: the lanes are running {list(self._running)}")
        return self.fits[unit]

    def result(self, unit, label: Callable) -> Generator:
        """Yield the Steps of ``unit`` (through ``label(step)``) until it has finished;
        return its FitResult.

        Only the awaited unit reports progress (the others run on, silently): progress,
        loss plot and preview follow one fit at a time, in the job's order, as without lanes.
        A unit that ran while an earlier one was awaited first reports its latest Step, so
        every unit with Steps is reported, even one that finished before its turn.
        """
        self._fill()
        if unit in self._last_step:
            yield label(self._last_step.pop(unit))
        while unit not in self._done:
            kind, u, payload = self._q.get()
            if kind == "step":
                if u == unit:
                    yield label(payload)
                else:
                    self._last_step[u] = payload
                continue
            self._running.pop(u, None)
            if kind == "error":
                raise payload
            if kind == "done":
                self._done[u] = payload
                if self.warm_start and self.state is None:
                    self.state = payload.state_dict
            self._fill()
        self.fits.pop(unit, None)  # the job holds what it keeps of a taken unit
        return self._done.pop(unit)

    def close(self) -> None:
        """Stop every running lane (each at its fit's next step) and wait for it."""
        self._stop.set()
        for _fit, t in list(self._running.values()):
            t.join(_JOIN_TIMEOUT_S)
        self._running.clear()
        self._done.clear()
        self._last_step.clear()
