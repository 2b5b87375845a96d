"""napari notifications of the restore widget, in one place (tests record them by patching here)."""

from __future__ import annotations

from napari.utils.notifications import show_error, show_info, show_warning

__all__ = ["show_error", "show_info", "show_warning"]
