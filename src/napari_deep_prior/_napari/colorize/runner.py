"""The live-job runner of the Colorize widget: one colorization at a time, newer ones supersede.

The worker body (:func:`colorize_job`) is a plain generator around a registered colorizer's
``steps()``; :class:`JobRunner` wraps it in a napari worker, asks a running job to stop when a
newer one comes (``worker.quit()`` acts at its next yield) and starts the newer one once the
old one has ended, so at most one computation runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._workers import relay

__all__ = ["ColorizeOutput", "Job", "JobRunner", "colorize_job"]


@dataclass
class ColorizeOutput:
    """What a colorization worker returns.

    Attributes
    ----------
    rgb : ndarray, shape (H, W, 3)
        uint8 for uint8 input, else float32 in [0, 1] (the colorizers' dtype policy).
    notes : list of str
        Warnings for the user (hint colours pulled into gamut).
    seconds : float
        Time the computation took.
    """

    rgb: np.ndarray
    notes: list[str]
    seconds: float


def colorize_job(colorizer, image, hints, options):
    """Worker body of one colorization: re-yields ``colorizer.steps()`` and returns a
    :class:`ColorizeOutput` with the gamut notes of the hints.

    Runs in the worker thread.  Errors are the core's ``ValueError`` / ``TypeError`` /
    ``WeightsError``, raised here and reported by the widget.
    """
    from ...colorization.hints import gamut_notes
    from ...colorization.inputs import lightness

    t0 = time.perf_counter()
    notes = gamut_notes(lightness(image), hints) if hints else []
    rgb = yield from colorizer.steps(image, hints or None, options=options)
    return ColorizeOutput(rgb, notes, time.perf_counter() - t0)


@dataclass
class Job:
    """One colorization and what the widget shows about it (its fields may change meanwhile)."""

    worker: Any
    gen: Any
    method: str
    mode: str
    name: str
    template: Any
    n_hints: int
    hint_size: int
    seed: int | None
    live: bool
    signature: tuple
    t0: float = field(default_factory=time.perf_counter)
    superseded: bool = False
    cancelled: bool = False
    failed: bool = False
    started: bool = False
    last: Any = None
    #: The newest preview (RGB) and its iteration; ``preview_dropped``: the user removed the preview layer.
    last_preview: np.ndarray | None = None
    preview_iteration: int | None = None
    preview_dropped: bool = False
    output: ColorizeOutput | None = None


class JobRunner:
    """Starts, supersedes and cancels colorization jobs.

    Parameters
    ----------
    alive : callable
        False once the widget is gone (then no callback is made).
    on_step, on_result, on_error, on_end : callable
        ``on_step(job, step)`` for each step of the newest job; ``on_result(job, output)`` when
        it returned; ``on_error(job, exc)`` when a job failed (superseded ones too, so the
        widget may forget its signature); ``on_end(job)`` when the newest job ended.
    """

    def __init__(self, *, alive: Callable[[], bool], on_step, on_result, on_error, on_end):
        self._alive = alive
        self._on_step, self._on_result, self._on_error, self._on_end = on_step, on_result, on_error, on_end
        self.jobs: list[Job] = []  # started and not yet finished
        self.current: Job | None = None  # the newest job (its result is the one shown)
        self.deferred: Job | None = None  # waits for the running job(s) to end

    @property
    def running(self) -> bool:
        return bool(self.jobs) or self.deferred is not None

    def make(self, gen, **fields) -> Job:
        """A job for the worker body ``gen`` (not started)."""
        from napari.qt.threading import create_worker

        worker = create_worker(relay, gen, _start_thread=False, _ignore_errors=True)
        job = Job(worker=worker, gen=gen, **fields)
        worker.started.connect(lambda: setattr(job, "started", True))
        worker.yielded.connect(lambda item: self._yielded(job, item))
        worker.returned.connect(lambda out: self._returned(job, out))
        worker.errored.connect(lambda exc: self._errored(job, exc))
        worker.finished.connect(lambda: self._finished(job))
        return job

    def submit(self, job: Job, *, start: bool = True) -> None:
        """Make ``job`` the newest: running jobs are asked to stop; it starts when they ended
        (``start=False``: the caller starts its worker)."""
        self.deferred = None
        for old in self.jobs:
            old.superseded = True
            old.worker.quit()
        self.current = job
        if not start:
            self.jobs.append(job)
        elif self.jobs:
            self.deferred = job
        else:
            self._start(job)

    def cancel(self) -> Job | None:
        """Stop the newest job; returns it (None if there is none)."""
        job = self.current
        if job is None:
            return None
        job.cancelled = True
        job.worker.quit()
        if self.deferred is job:  # never started: nothing to wait for
            self.deferred = None
        return job

    def stop_all(self) -> None:
        """Ask every job to stop (the widget is going away)."""
        self.deferred = None
        for job in list(self.jobs):
            job.cancelled = True
            job.worker.quit()

    def _start(self, job: Job) -> None:
        self.jobs.append(job)
        job.worker.start()

    def _yielded(self, job: Job, item) -> None:
        if job is not self.current or job.cancelled or not self._alive():
            return
        job.last = item
        self._on_step(job, item)

    def _returned(self, job: Job, out: ColorizeOutput) -> None:
        if job is not self.current or job.superseded or job.cancelled or not self._alive():
            return
        job.output = out
        self._on_result(job, out)

    def _errored(self, job: Job, exc: BaseException) -> None:
        job.failed = True
        self._on_error(job, exc)

    def _finished(self, job: Job) -> None:
        if job in self.jobs:
            self.jobs.remove(job)
        try:
            job.gen.close()
        except Exception:  # noqa: BLE001 - pragma: no cover, cleanup must never raise
            pass
        if not self._alive():
            return
        if self.deferred is not None and not self.jobs:
            nxt, self.deferred = self.deferred, None
            self._start(nxt)
            return
        if job is self.current:
            self._on_end(job)
