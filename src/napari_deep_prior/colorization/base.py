"""The one form every colorizer takes: metadata plus a ``steps()`` generator.

A colorizer predicts the chroma (Lab a, b) of an image from its lightness, automatically
and/or from colour hints.  :class:`Colorizer` does what all of them share (validate the
image and the hints, compute the lightness, turn ab into RGB in the output dtype policy);
a subclass sets its metadata and writes one generator, :meth:`Colorizer.ab_steps`, that
yields :class:`ABStep` records and returns the ab image.  :meth:`Colorizer.steps` is what
callers run: it yields :class:`ColorizeStep` records (with an RGB preview when the method
has one) and returns the RGB image.  The registry of colorizers is in :mod:`.api`.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..arrays import check_seed
from .hints import check_hint_size, normalize_hints
from .inputs import lightness_of, split_image
from .lab import lab_image

__all__ = ["ABStep", "ColorizeOptions", "ColorizeStep", "Colorizer", "has_hints", "needs_hints_message"]


@dataclass(frozen=True)
class ColorizeOptions:
    """The settings of one colorization that are not the image or the hints.

    Parameters
    ----------
    hint_size : int
        Side of each hint's square patch, odd.
    weights : path, folder or torch.nn.Module, optional
        Pretrained weights (colorizers with ``needs_weights``); None: search, then download.
    device : str or torch.device
        ``"auto"`` picks cuda, then mps, then cpu.
    seed : int, optional
        Seed of a random method (None: a fresh one).
    params : dataclass, optional
        The method's own settings (an instance of its ``params_type``); None: its defaults.
    """

    hint_size: int = 5
    weights: Any = None
    device: Any = "auto"
    seed: int | None = None
    params: Any = None


@dataclass
class ABStep:
    """Progress of :meth:`Colorizer.ab_steps`: ``ab`` is a preview chroma (H, W, 2) or None."""

    iteration: int
    iterations: int
    loss: float | None = None
    ab: np.ndarray | None = None


@dataclass
class ColorizeStep:
    """Progress of a colorization, yielded by :meth:`Colorizer.steps`.

    Attributes
    ----------
    iteration, iterations : int
        Steps done and planned (1 of 1 for the one-shot methods).
    elapsed : float
        Seconds since the colorization started.
    loss : float or None
        The method's fitting loss, if it has one (``dip``: masked MSE on the hints, in
        (ab / 110)^2 units).
    preview : ndarray or None
        The current estimate as RGB (H, W, 3) in the output dtype, when the method has one.
    """

    iteration: int
    iterations: int
    elapsed: float
    loss: float | None = None
    preview: np.ndarray | None = None


def has_hints(hints) -> bool:
    """True unless ``hints`` is None or empty."""
    return hints is not None and not (hasattr(hints, "__len__") and len(hints) == 0)


def _or_list(names) -> str:
    """``'a', 'b' or 'c'``."""
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def needs_hints_message(name: str) -> str:
    """The error message of a hint-guided run of method ``name`` without hints."""
    from .api import method_names

    return (
        f"method {name!r} needs at least one hint (row, col, colour); got none. Add hints, or "
        f"use method={_or_list(method_names(automatic=True))} without hints for automatic colorization"
    )


class Colorizer:
    """Base class of the colorization methods (one subclass per method, one instance registered).

    Class attributes
    ----------------
    name : str
        The ``method`` name (``colorize(method=name)``, the CLI's ``--method``).
    title : str
        Short label for a user interface.
    description : str
        One or two sentences: what it does, what it needs, how fast it is.
    automatic : bool
        Colorizes without hints.
    accepts_hints : bool
        Takes colour hints (required when not ``automatic``).
    needs_weights : bool
        Needs the pretrained weights named ``name`` (see :mod:`.weights`).
    live : bool
        Fast enough to follow every hint edit in a live preview.
    iterative : bool
        An iterative fit: seeded, with many steps and previews.
    params_type : type or None
        Dataclass of the method's own settings (``ColorizeOptions.params``).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str] = ""
    automatic: ClassVar[bool] = False
    accepts_hints: ClassVar[bool] = True
    needs_weights: ClassVar[bool] = False
    live: ClassVar[bool] = False
    iterative: ClassVar[bool] = False
    params_type: ClassVar[type | None] = None

    @property
    def needs_hints(self) -> bool:
        """True when the method cannot run without hints."""
        return not self.automatic

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def ab_steps(self, L: np.ndarray, hints: list, options: ColorizeOptions) -> Generator[ABStep, None, np.ndarray]:
        """The method itself: yield :class:`ABStep` records, return ab (H, W, 2).

        Parameters
        ----------
        L : ndarray, shape (H, W)
            Lightness 0-100 at full resolution.
        hints : list of (row, col, rgb)
            Validated hints (integer pixel positions, colours as floats in [0, 1]); empty for
            an automatic run.
        options : ColorizeOptions
        """
        raise NotImplementedError(f"{type(self).__name__} must define ab_steps()")

    def check_hints(self, given: bool) -> None:
        """ValueError when hints are given to a method without them, or missing for one that needs them."""
        from .api import method_names

        if given and not self.accepts_hints:
            raise ValueError(
                f"{self.name} takes no hints; use method={_or_list(method_names(hints=True))} to colorize from hints"
            )
        if not given and self.needs_hints:
            raise ValueError(needs_hints_message(self.name))

    def steps(
        self, image, hints=None, *, options: ColorizeOptions | None = None, channel_axis: int | None = None
    ) -> Generator[ColorizeStep, None, np.ndarray]:
        """Colorize ``image``, as a generator: yields :class:`ColorizeStep`, returns the RGB image.

        Parameters
        ----------
        image : ndarray, shape (H, W) or (H, W, 3|4)
            Any dtype; an RGB(A) image is re-coloured from its lightness.  Never modified.
        hints : list of (row, col, colour), optional
        options : ColorizeOptions, optional
        channel_axis : int, optional
            Axis of the colour channels of an RGB(A) image; None for grey or channels last.

        Returns
        -------
        rgb : ndarray, shape (H, W, 3)
            uint8 if the input was uint8, else float32 in [0, 1].

        Stop iterating (``close()``) to cancel: what the method holds is released.
        """
        opts = ColorizeOptions() if options is None else options
        if not isinstance(opts, ColorizeOptions):
            raise TypeError(f"options must be a ColorizeOptions, got {type(opts).__name__}")
        given = has_hints(hints)
        if given and not self.accepts_hints:
            self.check_hints(given)
        arr, is_rgb = split_image(image, channel_axis)
        self.check_hints(given)
        check_seed(opts.seed)
        t0 = time.perf_counter()
        as_uint8 = np.asarray(image).dtype == np.uint8
        L = lightness_of(arr, is_rgb)
        parsed: list = []
        if given:
            check_hint_size(opts.hint_size)
            parsed = normalize_hints(hints, L.shape)
        gen = self.ab_steps(L, parsed, opts)
        try:
            while True:
                try:
                    step = next(gen)
                except StopIteration as stop:
                    ab = stop.value
                    break
                preview = None if step.ab is None else lab_image(L, step.ab, as_uint8=as_uint8)
                yield ColorizeStep(step.iteration, step.iterations, time.perf_counter() - t0, step.loss, preview)
        finally:
            gen.close()  # a cancelled fit releases its network at once
        return lab_image(L, ab, as_uint8=as_uint8)
