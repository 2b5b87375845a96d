"""The DIP restore dock widget: one widget for every registered degradation (denoise, inpaint, upscale...)."""

from .widget import DIPWidget, iterate_steps, wait_for_warm_up

__all__ = ["DIPWidget", "iterate_steps", "wait_for_warm_up"]
