"""Degradations: how the measured image was made from the one we want back.

Deep Image Prior fits a network's output ``x = g(z)`` so that ``A(x)`` matches the measured
image ``y``; the forward operator ``A`` is all that differs between restoration tasks:

========================  ==============  =========================================
degradation               task            A
========================  ==============  =========================================
:class:`Identity`         ``denoise``     x
:class:`Mask`             ``inpaint``     x on the known pixels only
:class:`Downsample`       ``upscale``     anti-aliased (Lanczos-2) down-sampling by ``factor``
========================  ==============  =========================================

A degradation validates its own inputs (:meth:`Degradation.bind`), gives the fit its operator
per plane or tile (:meth:`Degradation.operator`), says the shape of the result
(:meth:`Degradation.output_hw`) and how tiles map to it, and lists the extra inputs the
front ends must ask for (:attr:`Degradation.fields`: a mask layer / file, a factor).  The
fit loop, the job runner, the tiles, the command line and the widgets know only this
protocol; :data:`DEGRADATIONS` is the registry they iterate over.  A new degradation is one
class here, a registry entry and a preset.

References
----------
.. [1] D. Ulyanov, A. Vedaldi, V. Lempitsky, "Deep Image Prior", CVPR 2018.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import ParameterError

if TYPE_CHECKING:  # torch is imported when an operator is first applied
    import torch

__all__ = [
    "DEGRADATIONS",
    "Degradation",
    "Field",
    "Downsample",
    "Identity",
    "Mask",
    "Operator",
    "get_degradation",
]

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Field:
    """An extra input a degradation needs from the user, described for any front end.

    Attributes
    ----------
    name : str
        Keyword of the degradation's constructor (and of the API function).
    kind : {"mask", "choice"}
        "mask": an array painted over the image (a Labels/Shapes layer in napari, an image
        file on the command line); "choice": one of ``choices``.
    label, help : str
    choices : tuple
    default : object
    """

    name: str
    kind: str
    label: str
    help: str
    choices: tuple = ()
    default: Any = None

    @property
    def flag(self) -> str:
        """The command-line option of a "choice" field (``--factor``)."""
        return "--" + self.name.replace("_", "-")


# -- forward operators (torch side) ----------------------------------------------------------


class Operator:
    """The forward operator ``A`` of one fit (one plane or tile): the identity here.

    Attributes
    ----------
    scale : int
        Side of the estimate per side of the measurement (1 except for up-scaling).
    known : ndarray of bool, shape (h, w), or None
        Measured pixels (None: all); the loss is averaged over these.
    noise_stop : bool
        Every measured value is the image plus noise, so the fit may stop where its loss
        reaches the noise level (the discrepancy principle).
    """

    scale: int = 1
    noise_stop: bool = True

    def __init__(self, known: np.ndarray | None = None):
        self.known = None if known is None else np.asarray(known, dtype=bool)

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        """The estimate's height and width for a measurement of ``h`` x ``w``."""
        return h * self.scale, w * self.scale

    def to(self, device: torch.device, channels: int) -> Operator:
        """Build the operator's tensors on ``device`` (once, before the loop)."""
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``A(x)``: (1, C, H, W) estimate -> (1, C, h, w) prediction of the measurement."""
        return x


class MaskOperator(Operator):
    """Only the known pixels are measured: the loss ignores the holes."""

    noise_stop = False  # no noise estimate on a masked image


def lanczos2_kernel(factor: int) -> np.ndarray:
    """1D Lanczos-2 anti-aliasing kernel of a ``factor`` down-sampler (4 * factor taps, sum 1).

    Centred between samples (phase 1/2), as in the reference DIP super-resolution code: the
    down-sampled pixel ``k`` is centred on the ``factor`` x ``factor`` block it replaces.
    """
    n = 4 * factor
    d = np.abs(np.arange(n) + 0.5 - n / 2.0) / factor  # distance in low-resolution pixels
    k = np.sinc(d) * np.sinc(d / 2.0)
    return (k / k.sum()).astype(np.float32)


class DownsampleOperator(Operator):
    """Anti-aliased down-sampling by an integer ``factor``: separable Lanczos-2, replicated borders."""

    noise_stop = False

    def __init__(self, factor: int):
        super().__init__(None)
        self.scale = int(factor)
        self._kernel = None

    def to(self, device, channels: int) -> DownsampleOperator:
        import torch

        k = torch.from_numpy(lanczos2_kernel(self.scale)).to(device)
        self._kernel = (k[:, None] * k[None, :]).expand(channels, 1, -1, -1).contiguous()
        return self

    def __call__(self, x):
        import torch.nn.functional as F

        f = self.scale
        if self._kernel is None or self._kernel.device != x.device:
            self.to(x.device, x.shape[1])
        pad = (3 * f) // 2  # (4f - f) / 2: output pixel k is centred on input block k
        xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        return F.conv2d(xp, self._kernel.to(x.dtype), stride=f, groups=x.shape[1])


# -- degradations (numpy side, one per task) ------------------------------------------------


class Degradation:
    """How the measured image was made from the wanted one.

    Subclasses set the class attributes and override what differs; instances carry the
    task's extra inputs (a mask, a factor).
    """

    #: The task's name: the API function, the command-line subcommand, the widget's task.
    name: ClassVar[str] = ""
    #: A short title ("DIP Denoise") and the past participle for result layers ("denoised").
    title: ClassVar[str] = ""
    done: ClassVar[str] = ""
    #: One line for help texts.
    summary: ClassVar[str] = ""
    #: The presets offered for this task, the default first, and the paper's recipe.
    presets: ClassVar[tuple[str, ...]] = ()
    paper_preset: ClassVar[str] = ""
    #: Noise models (``DIPParams.loss``) the task supports; the first is the default.
    noise_models: ClassVar[tuple[str, ...]] = ("gaussian",)
    #: Extra inputs the front ends ask for (see :class:`Field`).
    fields: ClassVar[tuple[Field, ...]] = ()
    #: Whether the Gaussian fit stops at the input's noise level (the discrepancy principle),
    #: which a user may give (``noise_sigma``) instead of its estimate from the image.
    noise_level_stop: ClassVar[bool] = False

    @property
    def default_preset(self) -> str:
        return self.presets[0]

    @property
    def scale(self) -> int:
        """Side of the result per side of the input."""
        return 1

    def bind(self, image_shape: tuple[int, ...], spatial_shape: tuple[int, ...], n_planes: int) -> Degradation:
        """Validate the degradation's inputs against the image; return self.

        ``spatial_shape`` is the image's shape without the channel axis (stack axes + H, W).
        """
        return self

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        """The result's plane size for an input plane of ``h`` x ``w``."""
        return h * self.scale, w * self.scale

    def output_box(self, box: Box) -> Box:
        """The result's pixels of the input tile ``box`` = (y0, y1, x0, x1)."""
        s = self.scale
        return tuple(v * s for v in box)

    def operator(self, plane: int, box: Box | None = None) -> Operator:
        """The forward operator of plane ``plane`` (tile ``box`` of it, in input pixels)."""
        return Operator()

    def skip(self, plane: int, box: Box | None = None) -> bool:
        """True when there is nothing to restore in this plane or tile (it keeps the input)."""
        return False

    def kept(self) -> np.ndarray | None:
        """(P, H, W) bool: result pixels that keep the input's exact values (None: none)."""
        return None

    def check_tiles(self, tiles: list[Box], tile: int) -> None:
        """Refuse a tile plan the degradation cannot work with (before any fit)."""

    def holes(self) -> np.ndarray | None:
        """(H, W) bool: the input pixels to restore in any plane, when the others are returned
        as they are and only the neighbourhoods of these need a fit (None: every pixel is fitted)."""
        return None

    def initial(self, plane: np.ndarray) -> np.ndarray:
        """The result's stand-in for a plane not restored (yet): (H, W, C) float32."""
        return plane


class Identity(Degradation):
    """Denoising: the measurement is the image plus noise (Gaussian or Poisson)."""

    name = "denoise"
    title = "DIP Denoise"
    done = "denoised"
    summary = "remove noise from an image"
    presets = ("denoise", "denoise-poisson", "paper", "denoise-paper", "denoise-photo")
    paper_preset = "denoise-paper"
    noise_models = ("gaussian", "poisson")
    noise_level_stop = True


class Mask(Degradation):
    """Inpainting: only the pixels outside the holes are measured.

    Parameters
    ----------
    mask : ndarray, shape (H, W) or the image's non-channel shape
        Boolean or label array: nonzero marks the pixels to fill.  A 2D mask applies to every
        plane of a stack.
    """

    name = "inpaint"
    title = "DIP Inpaint"
    done = "inpainted"
    summary = "fill the masked pixels of an image"
    presets = (
        "inpaint",
        "paper",
        "inpaint-text",
        "inpaint-large-hole",
        "inpaint-large-regions",
        "restore-missing-pixels",
    )
    paper_preset = "inpaint-text"
    fields = (
        Field(
            "mask",
            "mask",
            "mask",
            "nonzero pixels are filled (a Labels or Shapes layer; on the command line an "
            "image file of the image's size)",
        ),
    )

    def __init__(self, mask):
        self.mask = mask
        self.known: np.ndarray | None = None  # (P, H, W), after bind

    def bind(self, image_shape, spatial_shape, n_planes) -> Mask:
        self.known = _known_from_mask(self.mask, image_shape, spatial_shape, n_planes)
        return self

    def _known(self, plane: int, box: Box | None) -> np.ndarray:
        k = self.known[plane]
        if box is not None:
            y0, y1, x0, x1 = box
            k = k[y0:y1, x0:x1]
        return k

    def operator(self, plane, box=None) -> Operator:
        return MaskOperator(self._known(plane, box))

    def skip(self, plane, box=None) -> bool:
        return bool(self._known(plane, box).all())

    def kept(self) -> np.ndarray:
        return self.known

    def holes(self) -> np.ndarray:
        known = self.known
        if known.strides[0] == 0:  # one 2D mask for every plane
            return ~known[0]
        return ~known.all(axis=0)

    def check_tiles(self, tiles, tile) -> None:
        """Every tile that has a hole must also have known pixels to learn from."""
        known = self.known
        planes = range(1) if known.strides[0] == 0 else range(known.shape[0])
        for p in planes:
            kp = known[p]
            if kp.all():
                continue
            for y0, y1, x0, x1 in tiles:
                if not kp[y0:y1, x0:x1].any():
                    where = f" of plane {p}" if known.shape[0] > 1 and known.strides[0] != 0 else ""
                    raise ParameterError(
                        f"tile rows {y0}:{y1}, columns {x0}:{x1}{where} lies entirely inside the hole: "
                        f"it has no known pixel to learn from; use a larger {{tile_size}} (now {tile}) "
                        "so every tile reaches known pixels"
                    )


def _known_from_mask(mask, image_shape, spatial_shape, n_planes) -> np.ndarray:
    """Known-pixel masks (P, H, W) from a hole mask (nonzero = fill)."""
    if mask is None:
        raise ParameterError("inpaint needs a {mask}: nonzero where pixels must be filled")
    mask = np.asarray(mask)
    if mask.dtype.kind not in "buif":
        raise TypeError(f"mask has dtype {mask.dtype}; give a boolean or label (integer) array")
    hw = tuple(spatial_shape[-2:])
    if mask.shape == hw:
        holes = np.broadcast_to(mask != 0, (n_planes,) + hw)
    elif mask.shape == tuple(spatial_shape):
        holes = (mask != 0).reshape((n_planes,) + hw)
    else:
        raise ParameterError(
            f"{{mask}} has shape {mask.shape} but image is {tuple(image_shape)} "
            f"(spatial shape {hw}); paint the mask on a layer of the image's size"
        )
    if mask.dtype.kind == "f" and not np.isfinite(mask).all():
        raise ParameterError("{mask} contains NaN or infinite values; use a boolean or label array")
    if not holes.any():
        raise ParameterError(
            "{mask} marks no pixel to fill (it is all zero); paint the damaged pixels with a "
            "nonzero label (or invert a mask where 0 marks the holes)"
        )
    full = holes.reshape(n_planes, -1).all(axis=1)
    if full.any():
        raise ParameterError(
            "{mask} marks every pixel as a hole"
            + (f" in plane {int(np.argmax(full))}" if n_planes > 1 else "")
            + "; nothing is left to learn from: mark only the damaged pixels (or invert the mask)"
        )
    return ~holes


class Downsample(Degradation):
    """Super-resolution: the measurement is the image down-sampled by ``factor``.

    The forward operator is the anti-aliased Lanczos-2 down-sampler of the DIP paper's
    super-resolution experiments (:func:`lanczos2_kernel`); the result has ``factor`` times
    the input's height and width.

    Parameters
    ----------
    factor : {2, 4, 8}
    """

    name = "upscale"
    title = "DIP Upscale"
    done = "upscaled"
    summary = "increase the resolution of an image (super-resolution)"
    presets = ("upscale", "paper", "upscale-paper")
    paper_preset = "upscale-paper"
    FACTORS: ClassVar[tuple[int, ...]] = (2, 4, 8)
    fields = (Field("factor", "choice", "factor", "scale factor of the height and width", FACTORS, 4),)

    def __init__(self, factor: int = 4):
        self.factor = check_factor(factor, self.FACTORS)

    @property
    def scale(self) -> int:
        return self.factor

    def operator(self, plane, box=None) -> Operator:
        return DownsampleOperator(self.factor)

    def initial(self, plane: np.ndarray) -> np.ndarray:
        """Bicubic interpolation: the stand-in for a plane not fitted (yet)."""
        from skimage.transform import resize

        h, w, c = plane.shape
        return resize(plane, (h * self.factor, w * self.factor, c), order=3, mode="edge", anti_aliasing=False).astype(
            np.float32
        )


#: Every degradation by task name: the front ends iterate over this.
DEGRADATIONS: dict[str, type[Degradation]] = {
    Identity.name: Identity,
    Mask.name: Mask,
    Downsample.name: Downsample,
}


def get_degradation(task: str) -> type[Degradation]:
    """The degradation class of a task name ("denoise", "inpaint", ...)."""
    try:
        return DEGRADATIONS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(DEGRADATIONS)}") from None


def check_factor(factor, choices: tuple[int, ...]) -> int:
    """An integer scale factor among ``choices``, with a clear error otherwise."""
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)):
        raise TypeError(f"factor must be an integer ({', '.join(map(str, choices))}), got {factor!r}")
    if int(factor) not in choices:
        raise ParameterError(f"{{factor}} must be one of {', '.join(map(str, choices))}, got {factor}")
    return int(factor)
