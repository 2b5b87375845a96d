"""Helpers shared by the widgets' thread workers."""

from __future__ import annotations

__all__ = ["WorkerError", "relay", "unwrap"]


class WorkerError(Exception):
    """Carries a ``RuntimeError`` raised in a generator worker to its ``errored`` signal.

    superqt's GeneratorWorker takes any RuntimeError from the generator for "the worker
    was deleted" and swallows it: neither ``errored`` nor ``finished`` is emitted.  The
    core's :class:`~napari_deep_prior.core.weights.WeightsError` and torch's errors (out of
    memory, ...) are RuntimeErrors, so they travel wrapped in this (``.original``).
    """

    def __init__(self, original: BaseException):
        super().__init__(str(original))
        self.original = original


def relay(gen):
    """Worker body re-yielding ``gen``; RuntimeErrors are wrapped in :class:`WorkerError`."""
    try:
        return (yield from gen)
    except RuntimeError as exc:
        raise WorkerError(exc) from exc


def unwrap(exc: BaseException) -> BaseException:
    """The original exception behind a :class:`WorkerError`."""
    return exc.original if isinstance(exc, WorkerError) else exc
