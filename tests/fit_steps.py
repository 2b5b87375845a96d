"""Run a fit's step generator to its end (shared by the fit tests)."""


def drain(fit):
    """All Step records of ``fit.steps()`` and the FitResult it returns: (steps, result)."""
    steps = []
    gen = fit.steps()
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            return steps, stop.value
