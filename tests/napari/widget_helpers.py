"""Helpers shared by the widget tests: dock a widget with test parameters, run it to the end."""

from __future__ import annotations

#: How long a widget run may take before the test fails (tiny networks finish in seconds).
RUN_TIMEOUT_MS = 180_000


def dock_widget(cls, viewer, params, **values):
    """A ``cls`` widget docked in ``viewer`` that runs ``params``; its fields set from ``values``.

    The iterations and history fields default to ``params``', the seed to 0, the device to the CPU.
    """
    w = cls(viewer)
    viewer.window.add_dock_widget(w, name=cls.__name__)
    w.params_override = params
    values.setdefault("iterations", params.iterations)
    values.setdefault("history_every", params.history_every)
    values.setdefault("seed", 0)
    values.setdefault("device", "cpu")
    for k, v in values.items():
        getattr(w, k).value = v
    return w


def run_widget(qtbot, w, on_yield=None, timeout_ms: int = RUN_TIMEOUT_MS):
    """Start ``w``'s run and wait until its worker has finished (``on_yield``: connected to every yield)."""
    worker = w.run(start=False)
    assert worker is not None, "run() refused to start"
    if on_yield is not None:
        worker.yielded.connect(on_yield)
    with qtbot.waitSignal(worker.finished, timeout=timeout_ms):
        worker.start()
    qtbot.wait(20)  # deferred callbacks (warnings, layer updates) run
    return worker
