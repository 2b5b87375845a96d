"""The project's own exception types (shared by both rooms and the front ends).

User input errors are ``ValueError`` / ``TypeError`` with the fix in the message; these
classes mark the failures a front end reports differently.

:class:`ParameterError` carries a message *template* that names parameters by placeholder
(``"{tile_size} must be at least 64"``): ``str(exc)`` spells them as the Python API does
(``tile_size``), and each front end re-words them in its own vocabulary with
:meth:`ParameterError.reword` (the command line: ``--tile``; the widget: its field labels).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ImageTooLargeError", "WeightsError", "ParameterError", "FitDivergedError", "reword", "is_out_of_memory"]


class ImageTooLargeError(MemoryError, ValueError):
    """The estimated memory of a fit (or of decoding an image) exceeds what is available."""


class WeightsError(RuntimeError):
    """Pretrained weights are missing, cannot be downloaded, or are damaged."""


class _Names(dict):
    """``format_map`` names: a parameter without a front-end name keeps its API name."""

    def __missing__(self, key: str) -> str:
        return key


class ParameterError(ValueError):
    """A bad value of one or more named parameters.

    Parameters
    ----------
    template : str
        The message; ``{name}`` stands for the parameter ``name`` (literal braces doubled).
    params : tuple of str, optional
        The parameters the message is about (default: every placeholder, in order).

    Examples
    --------
    >>> e = ParameterError("{tile_size} must be at least 64, got 8")
    >>> str(e)
    'tile_size must be at least 64, got 8'
    >>> e.reword({"tile_size": "--tile"})
    '--tile must be at least 64, got 8'
    """

    def __init__(self, template: str, params: tuple[str, ...] | None = None):
        import string

        self.template = template
        if params is None:
            params = tuple(f for _, f, _, _ in string.Formatter().parse(template) if f)
        self.params = tuple(params)
        super().__init__(self.reword({}))

    def reword(self, names: Mapping[str, str]) -> str:
        """The message with each parameter spelled as ``names`` says (else its API name)."""
        return self.template.format_map(_Names(names))


class FitDivergedError(ParameterError, ArithmeticError):
    """The loss of a fit became NaN or infinite (and a rollback did not cure it)."""


def reword(exc: BaseException, names: Mapping[str, str]) -> str:
    """The message of any exception, re-worded with ``names`` when it is a :class:`ParameterError`."""
    if isinstance(exc, ParameterError):
        return exc.reword(names)
    return str(exc)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure: a MemoryError, or torch's host ("can't allocate
    memory") or device ("out of memory") allocator error."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        k in text for k in ("out of memory", "can't allocate memory", "cannot allocate memory")
    )
