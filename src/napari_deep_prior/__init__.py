"""napari-deep-prior: Deep Image Prior restoration and deep colorization for napari.

Importing this package is cheap: torch and Qt are imported only when a function that needs
them is called.
"""

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
