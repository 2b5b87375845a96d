"""Colorization of grey images: the public functions and the registry of colorizers.

One flow for every method: image in -> Lab lightness ``L`` at full resolution -> ab
chroma predicted by a method, at a working resolution -> ab resized back to the image ->
``lab2rgb(L, ab)`` with the ORIGINAL full-resolution L.  The input array is never modified.

Every method is a :class:`~.base.Colorizer` in :data:`REGISTRY` (its metadata, one
``steps()`` generator); :func:`colorize` looks the method up and runs its steps.  The CLI's
``--method`` choices and the widget's method lists come from here.

Methods
-------
``eccv16``, ``siggraph17`` (automatic; :mod:`.pretrained`)
    The pretrained networks of Zhang et al. see L resized to 256 x 256; their ab output is
    resized bilinearly back to H x W.  siggraph17 also takes hints, encoded as patches in
    that grid.  Weights: :mod:`.weights`.
``levin`` (:mod:`.levin`)
    Levin, Lischinski, Weiss (2004): hint colours diffuse to neighbours of similar
    lightness; needs no trained weights.
``dip`` (:mod:`.dip`)
    A Deep-Image-Prior network fitted to the hints, refined by a screened Levin
    propagation; no trained weights, seeded and reproducible on the CPU.

A new method is one :class:`~.base.Colorizer` subclass and one :func:`register` call.

Dtype policy (tested): uint8 input -> uint8 RGB output; any other input -> float32 RGB in
[0, 1].  uint8 is read as value / 255; floats already in [0, 1] are used as they are;
other integer dtypes and floats outside [0, 1] are scaled from their data range.

References
----------
.. [1] R. Zhang, P. Isola, A. A. Efros, "Colorful Image Colorization", ECCV 2016.
.. [2] R. Zhang et al., "Real-Time User-Guided Image Colorization with Learned Deep
       Priors", ACM SIGGRAPH 2017.
.. [3] A. Levin, D. Lischinski, Y. Weiss, "Colorization using Optimization", SIGGRAPH 2004.
.. [4] D. Ulyanov, A. Vedaldi, V. Lempitsky, "Deep Image Prior", CVPR 2018.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..arrays import drive, template_literal
from ..errors import ParameterError
from .base import ColorizeOptions, Colorizer, ColorizeStep, has_hints, needs_hints_message
from .dip import DIPColorizer, DIPColorParams, dip_ab, dip_ab_steps
from .inputs import lightness, split_image
from .levin import LevinColorizer, levin_ab
from .pretrained import ECCV16Colorizer, Siggraph17Colorizer, clear_model_cache, network_ab
from .suggest import Suggestions, suggest_colors

__all__ = [
    "REGISTRY",
    "ColorizeOptions",
    "ColorizeStep",
    "Colorizer",
    "DIPColorParams",
    "Suggestions",
    "clear_model_cache",
    "colorize",
    "colorize_auto",
    "colorize_hints",
    "dip_ab",
    "dip_ab_steps",
    "get_colorizer",
    "levin_ab",
    "lightness",
    "method_names",
    "network_ab",
    "register",
    "suggest_colors",
]

#: The colorizers by method name, in the order user interfaces list them.
REGISTRY: dict[str, Colorizer] = {}


def register(colorizer: Colorizer) -> Colorizer:
    """Add a colorizer to :data:`REGISTRY` under its ``name``; returns it.

    Raises
    ------
    TypeError
        For anything but a :class:`~.base.Colorizer` instance.
    ValueError
        When the name is taken by another colorizer.
    """
    if not isinstance(colorizer, Colorizer):
        raise TypeError(f"register() needs a Colorizer instance, got {colorizer!r}")
    name = getattr(colorizer, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{type(colorizer).__name__} needs a non-empty str class attribute 'name'")
    if name in REGISTRY and REGISTRY[name] is not colorizer:
        raise ValueError(f"a colorizer named {name!r} is already registered ({REGISTRY[name]!r}); pick another name")
    REGISTRY[name] = colorizer
    return colorizer


for _c in (ECCV16Colorizer(), Siggraph17Colorizer(), LevinColorizer(), DIPColorizer()):
    register(_c)
del _c


def method_names(*, automatic: bool | None = None, hints: bool | None = None) -> tuple[str, ...]:
    """Names of the registered methods, optionally only those that run without hints
    (``automatic=True``) or accept hints (``hints=True``).

    Examples
    --------
    >>> method_names()
    ('eccv16', 'siggraph17', 'levin', 'dip')
    >>> method_names(hints=True)
    ('siggraph17', 'levin', 'dip')
    """
    return tuple(
        name
        for name, c in REGISTRY.items()
        if (automatic is None or c.automatic == automatic) and (hints is None or c.accepts_hints == hints)
    )


def get_colorizer(method, allowed: tuple[str, ...] | None = None) -> Colorizer:
    """The registered colorizer named ``method`` (among ``allowed``, default all); ValueError otherwise."""
    allowed = method_names() if allowed is None else allowed
    if not isinstance(method, str) or method not in allowed:
        raise ParameterError(
            f"{{method}} must be one of {template_literal(', '.join(map(repr, allowed)))}; "
            f"got {template_literal(repr(method))}"
        )
    return REGISTRY[method]


def colorize_auto(
    image, *, method: str = "eccv16", weights=None, device="auto", channel_axis: int | None = None
) -> np.ndarray:
    """Colorize a grey (or re-colour an RGB) image automatically with a pretrained network.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3|4)
        Any size and dtype; an RGB image is re-coloured from its lightness.
    method : str
        An automatic method (``method_names(automatic=True)``: eccv16, siggraph17).
    weights : path, folder or nn.Module, optional
        Weight file (see :mod:`.weights`); default: search, then download.
    device : {"auto", "cpu", "cuda", "mps"} or torch.device
    channel_axis : int, optional

    Returns
    -------
    rgb : ndarray, shape (H, W, 3)
        uint8 if the input is uint8, else float32 in [0, 1].
    """
    colorizer = get_colorizer(method, method_names(automatic=True))
    options = ColorizeOptions(weights=weights, device=device)
    return drive(colorizer.steps(image, None, options=options, channel_axis=channel_axis))


def colorize_hints(
    image,
    hints,
    *,
    method: str = "siggraph17",
    hint_size: int = 5,
    weights=None,
    device="auto",
    seed: int | None = None,
    channel_axis: int | None = None,
    params: DIPColorParams | None = None,
    callback: Callable[[ColorizeStep], object] | None = None,
) -> np.ndarray:
    """Colorize an image from colour hints.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3|4)
    hints : list of (row, col, colour)
        Colour as ``'#rrggbb'`` or an RGB triple (ints 0-255 or floats 0-1).
    method : str
        A method that takes hints (``method_names(hints=True)``: siggraph17, levin, dip).
    hint_size : int
        Side of each hint's square patch in pixels (odd).  For siggraph17 it is measured
        in the 256 x 256 grid the network sees; otherwise in image pixels.
    weights, device : see :func:`colorize_auto` (weights only for siggraph17).
    seed : int, optional
        For ``dip``.
    channel_axis : int, optional
    params : DIPColorParams, optional
        For ``dip``.
    callback : callable, optional
        Called with each :class:`~.base.ColorizeStep`.

    Returns
    -------
    rgb : ndarray, shape (H, W, 3)
        uint8 if the input is uint8, else float32 in [0, 1].
    """
    colorizer = get_colorizer(method, method_names(hints=True))
    if not has_hints(hints):
        split_image(image, channel_axis)  # a bad image is named first
        raise ValueError(needs_hints_message(method))
    options = ColorizeOptions(hint_size=hint_size, weights=weights, device=device, seed=seed, params=params)
    return drive(colorizer.steps(image, hints, options=options, channel_axis=channel_axis), callback)


def colorize(
    image,
    *,
    method: str = "eccv16",
    hints=None,
    hint_size: int = 5,
    weights=None,
    device="auto",
    seed: int | None = None,
    channel_axis: int | None = None,
    params: DIPColorParams | None = None,
    callback: Callable[[ColorizeStep], object] | None = None,
) -> np.ndarray:
    """Colorize a grey image, automatically or from colour hints.

    The result keeps the image's own full-resolution lightness; only the chroma (Lab a, b)
    is predicted.  The input array is never modified.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3|4)
        Grey image of any size and dtype (uint8, uint16, float ...), or an RGB(A) image,
        which is re-coloured from its lightness.
    method : str
        A name of the registry (:func:`method_names`): ``eccv16`` automatic (Zhang et
        al. 2016; no hints); ``siggraph17`` automatic or hint-guided (Zhang et al. 2017);
        ``levin`` propagation of hints (Levin et al. 2004) and ``dip`` a Deep-Image-Prior
        colorizer fitted to the hints: both need hints and no trained weights.
    hints : list of (row, col, colour), optional
        Pixel position and colour (``'#rrggbb'`` or an RGB triple, integers 0-255 or
        floats 0-1).  Required for ``levin`` and ``dip``; see :func:`.hints.read_hints_csv`.
    hint_size : int
        Side of each hint's square patch, odd (default 5).  For ``siggraph17`` it counts
        pixels of the 256 x 256 grid the network sees.
    weights : path, folder or torch.nn.Module, optional
        Pretrained weights for ``eccv16``/``siggraph17``: a file, a folder holding it,
        or a loaded network.  Default: ``$NAPARI_DEEP_PRIOR_WEIGHTS``, then the torch hub
        cache, then a download (see :mod:`.weights`).
    device : {"auto", "cpu", "cuda", "mps"} or torch.device
        ``"auto"`` picks cuda, then mps, then cpu.
    seed : int, optional
        Seed of the ``dip`` fit (reproducible on the CPU).
    channel_axis : int, optional
        Axis of the colour channels of an RGB(A) image; None for a grey image (an image
        of shape (H, W, 3|4) is taken as channels-last RGB(A)).
    params : DIPColorParams, optional
        Settings of the ``dip`` colorizer (a method's ``params_type``; ignored by methods
        without settings).
    callback : callable, optional
        Called with each :class:`~.base.ColorizeStep` (every few iterations for ``dip``, once
        at the end for the one-shot methods).

    Returns
    -------
    rgb : ndarray, shape (H, W, 3)
        uint8 if the input was uint8, else float32 in [0, 1].

    Raises
    ------
    ValueError
        Unknown method; no hints for ``levin``/``dip``; a hint outside the image; a
        malformed colour; a stack or an image with 2 or more than 4 channels.
    TypeError
        An array of an unsupported dtype, or hints that are not (row, col, colour).
    napari_deep_prior.errors.WeightsError
        When pretrained weights are needed and cannot be found or downloaded.

    References
    ----------
    .. [1] R. Zhang, P. Isola, A. A. Efros, "Colorful Image Colorization", ECCV 2016.
    .. [2] R. Zhang et al., "Real-Time User-Guided Image Colorization with Learned Deep
           Priors", ACM SIGGRAPH 2017.
    .. [3] A. Levin, D. Lischinski, Y. Weiss, "Colorization using Optimization",
           SIGGRAPH 2004.
    .. [4] D. Ulyanov, A. Vedaldi, V. Lempitsky, "Deep Image Prior", CVPR 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from skimage import data
    >>> grey = data.camera()[::8, ::8]                      # uint8, 64 x 64
    >>> rgb = colorize(grey, method="levin", hints=[(10, 10, "#3070c0"), (55, 40, (200, 160, 120))])
    >>> rgb.shape, rgb.dtype
    ((64, 64, 3), dtype('uint8'))
    """
    colorizer = get_colorizer(method)
    options = ColorizeOptions(hint_size=hint_size, weights=weights, device=device, seed=seed, params=params)
    return drive(colorizer.steps(image, hints, options=options, channel_axis=channel_axis), callback)
