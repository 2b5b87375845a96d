"""The project's own exception types (shared by both rooms and the front ends).

User input errors are plain ``ValueError`` / ``TypeError`` with the fix in the message; these
classes mark the failures a front end reports differently.
"""

from __future__ import annotations

__all__ = ["ImageTooLargeError", "WeightsError"]


class ImageTooLargeError(MemoryError, ValueError):
    """The estimated memory of a fit exceeds what the device has available."""


class WeightsError(RuntimeError):
    """Pretrained weights are missing, cannot be downloaded, or are damaged."""
