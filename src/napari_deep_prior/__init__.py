"""napari-deep-prior: Deep Image Prior restoration and deep colorization for napari.

Importing this package is cheap: torch and Qt are imported only when a function that needs
them is called.

It sets one thing before torch starts: ``OMP_WAIT_POLICY=PASSIVE`` (unless the variable is set
already, or torch was imported first), so OpenMP threads sleep at their barriers instead of
spinning. Measured on 2 cores with a second busy fit beside it (``benchmarks/contention.py``):
a 512x512 fit slows down 1.4x instead of 7.3x, at the same speed alone. Set
``NAPARI_DEEP_PRIOR_NO_THREAD_POLICY=1`` to leave the threads as torch sets them.
"""

import os as _os
import sys as _sys

if "torch" not in _sys.modules and not _os.environ.get("NAPARI_DEEP_PRIOR_NO_THREAD_POLICY"):
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

__all__ = ["denoise", "inpaint", "upscale", "colorize", "__version__"]

_LAZY = {
    "denoise": "napari_deep_prior.restore.api",
    "inpaint": "napari_deep_prior.restore.api",
    "upscale": "napari_deep_prior.restore.api",
    "colorize": "napari_deep_prior.colorization.api",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_deep_prior' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
