"""Dock widgets of the plugin (the manifest points here).

The manifest names the classes :class:`RestoreWidget` (every registered restoration task: denoise,
inpaint, upscale...), :class:`DenoiseWidget`, :class:`InpaintWidget` (the same widget fixed to
one task) and :class:`ColorizeWidget`: napari inspects a widget's ``__init__`` for a ``napari_viewer``
parameter and passes the viewer (behind its public-only proxy).  ``make_denoise_widget`` / ``make_inpaint_widget`` /
``make_colorize_widget`` are conveniences for scripts (the viewer defaults to the current one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .colorize import ColorizeWidget
from .restore import DIPWidget

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = [
    "RestoreWidget",
    "DenoiseWidget",
    "InpaintWidget",
    "ColorizeWidget",
    "make_restore_widget",
    "make_denoise_widget",
    "make_inpaint_widget",
    "make_colorize_widget",
]


class RestoreWidget(DIPWidget):
    """Deep Image Prior restoration of an Image layer, any registered task (its ``task`` field).

    The tasks come from :data:`napari_deep_prior.restore.degradations.DEGRADATIONS`; each
    shows its own fields (a mask layer for inpainting, a factor for up-scaling, the noise
    model for denoising).  Results: "<input> [DIP <task done>]" and "<input> [DIP history]".
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer)


class DenoiseWidget(DIPWidget):
    """Deep Image Prior denoising of an Image layer.

    Fields (set ``.value``): ``image``, ``channel_axis``, ``scope``, ``preset``,
    ``iterations``, ``lr``, ``early_stop``, ``history_every``, ``seed`` (-1: random),
    ``ensemble`` (seeds averaged, 1-16), ``device``, ``loss`` ("gaussian" or "poisson").
    ``run()`` starts the fit and returns the napari worker; results are added as
    "<input> [DIP denoised]" and "<input> [DIP history]".

    Examples
    --------
    >>> w = DenoiseWidget(viewer)                      # doctest: +SKIP
    >>> w.image.value = viewer.layers["noisy"]         # doctest: +SKIP
    >>> w.iterations.value, w.seed.value = 300, 0      # doctest: +SKIP
    >>> worker = w.run()                               # doctest: +SKIP
    """

    fixed_task = "denoise"

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer)


class InpaintWidget(DIPWidget):
    """Deep Image Prior inpainting of an Image layer under a Labels or Shapes mask.

    Fields as for :class:`DenoiseWidget` (no ``loss``) plus ``mask`` (a Labels layer,
    nonzero = fill, or a Shapes layer) and the ``new_mask`` button
    (:meth:`new_mask_layer`).  Results: "<input> [DIP inpainted]" and
    "<input> [DIP history]".
    """

    fixed_task = "inpaint"

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer)


def _viewer_or_current(viewer):
    if viewer is None:
        import napari

        viewer = napari.current_viewer()
        if viewer is None:
            raise ValueError("no napari viewer is open; pass one: make_denoise_widget(viewer)")
    return viewer


def make_restore_widget(napari_viewer: napari.viewer.Viewer | None = None) -> RestoreWidget:
    """The "DIP Restore" widget for ``napari_viewer`` (default: the current viewer)."""
    return RestoreWidget(_viewer_or_current(napari_viewer))


def make_denoise_widget(napari_viewer: napari.viewer.Viewer | None = None) -> DenoiseWidget:
    """The "DIP Denoise" widget for ``napari_viewer`` (default: the current viewer)."""
    return DenoiseWidget(_viewer_or_current(napari_viewer))


def make_inpaint_widget(napari_viewer: napari.viewer.Viewer | None = None) -> InpaintWidget:
    """The "DIP Inpaint" widget for ``napari_viewer`` (default: the current viewer)."""
    return InpaintWidget(_viewer_or_current(napari_viewer))


def make_colorize_widget(napari_viewer: napari.viewer.Viewer | None = None) -> ColorizeWidget:
    """The "Colorize" widget for ``napari_viewer`` (default: the current viewer)."""
    return ColorizeWidget(_viewer_or_current(napari_viewer))
