"""The Colorize dock widget (:class:`~.widget.ColorizeWidget`) and its parts."""

from .widget import ColorizeWidget

__all__ = ["ColorizeWidget"]
