"""The colorization networks of Zhang et al., with the published state_dict layout.

:class:`ECCVGenerator` ("eccv16", automatic colorization) and :class:`SIGGRAPHGenerator`
("siggraph17", user-guided colorization) are written from the published layer
descriptions so that the authors' weight files load with ``load_state_dict(strict=True)``:
module names ``model1`` ... ``model10``, ``model3short8``, ``model2short9``,
``model1short10``, ``model8up``, ``model9up``, ``model10up``, ``model_out``,
``model_class``, with the same ``nn.Sequential`` indices.

Both networks take Lab lightness ``L`` in [0, 100] and return ``ab`` in about
[-110, 110]; normalisation is inside the model (``(L - 50) / 100``, ``ab / 110``).

References
----------
.. [1] R. Zhang, P. Isola, A. A. Efros, "Colorful Image Colorization", ECCV 2016.
.. [2] R. Zhang, J.-Y. Zhu, P. Isola, X. Geng, A. S. Lin, T. Yu, A. A. Efros, "Real-Time
       User-Guided Image Colorization with Learned Deep Priors", ACM SIGGRAPH 2017.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .lab import AB_MAX

__all__ = [
    "ECCVGenerator",
    "SIGGRAPHGenerator",
    "build_colorizer",
    "COLORIZERS",
    "L_CENT",
    "L_NORM",
    "AB_GRID_STEP",
    "AB_GRID_SIZE",
    "ab_grid",
]

#: Normalisation constants of the published models (ab is divided by :data:`.lab.AB_MAX`).
L_CENT = 50.0
L_NORM = 100.0
#: The siggraph17 ``model_class`` head: a 23 x 23 grid of ab bins, step 10 over [-110, 110].
AB_GRID_STEP = 10.0
AB_GRID_SIZE = 23
#: Number of quantised ab bins predicted by eccv16 (the in-gamut bins of the 10-step grid).
ECCV_BINS = 313


def ab_grid() -> torch.Tensor:
    """ab values of the 529 ``model_class`` bins, shape (529, 2); bin ``i * 23 + j`` is
    ``(a, b) = (-110 + 10 i, -110 + 10 j)``."""
    vals = torch.arange(AB_GRID_SIZE, dtype=torch.float32) * AB_GRID_STEP - AB_MAX
    a, b = torch.meshgrid(vals, vals, indexing="ij")
    return torch.stack([a.reshape(-1), b.reshape(-1)], dim=1)


def _block(widths: list[int], *, stride_last: int = 1, dilation: int = 1, bn: bool = True) -> nn.Sequential:
    """conv-ReLU pairs along ``widths`` (in, out1, out2, ...), then BatchNorm.

    Indices: conv at 0, 2, 4, ...; ReLU at 1, 3, 5, ...; BatchNorm last.
    """
    layers: list[nn.Module] = []
    n = len(widths) - 1
    for i in range(n):
        stride = stride_last if i == n - 1 else 1
        layers += [
            nn.Conv2d(widths[i], widths[i + 1], 3, stride=stride, padding=dilation, dilation=dilation, bias=True),
            nn.ReLU(True),
        ]
    if bn:
        layers.append(nn.BatchNorm2d(widths[-1]))
    return nn.Sequential(*layers)


class ECCVGenerator(nn.Module):
    """Automatic colorization network of Zhang, Isola, Efros (ECCV 2016), "eccv16".

    Predicts a distribution over 313 quantised ab bins at 1/4 resolution, takes its
    expectation through the bias-free 1x1 ``model_out`` (313 -> 2) and upsamples x4.

    Input ``L`` : tensor (N, 1, H, W), Lab lightness 0-100, H and W multiples of 8
    (the reference pipeline feeds 256 x 256).  Output: ab, (N, 2, H, W), about +-110.

    Examples
    --------
    >>> net = ECCVGenerator().eval()
    >>> with torch.no_grad():
    ...     net(torch.full((1, 1, 32, 32), 50.0)).shape
    torch.Size([1, 2, 32, 32])
    """

    def __init__(self) -> None:
        super().__init__()
        self.model1 = _block([1, 64, 64], stride_last=2)
        self.model2 = _block([64, 128, 128], stride_last=2)
        self.model3 = _block([128, 256, 256, 256], stride_last=2)
        self.model4 = _block([256, 512, 512, 512])
        self.model5 = _block([512, 512, 512, 512], dilation=2)
        self.model6 = _block([512, 512, 512, 512], dilation=2)
        self.model7 = _block([512, 512, 512, 512])
        self.model8 = nn.Sequential(
            nn.ConvTranspose2d(512, 256, 4, stride=2, padding=1, bias=True),
            nn.ReLU(True),
            nn.Conv2d(256, 256, 3, padding=1, bias=True),
            nn.ReLU(True),
            nn.Conv2d(256, 256, 3, padding=1, bias=True),
            nn.ReLU(True),
            nn.Conv2d(256, ECCV_BINS, 1, bias=True),
        )
        self.softmax = nn.Softmax(dim=1)
        self.model_out = nn.Conv2d(ECCV_BINS, 2, 1, bias=False)

    def logits(self, L: torch.Tensor) -> torch.Tensor:
        """The 313-bin logits at 1/4 resolution, (N, 313, H/4, W/4)."""
        x = (L - L_CENT) / L_NORM
        for block in (
            self.model1,
            self.model2,
            self.model3,
            self.model4,
            self.model5,
            self.model6,
            self.model7,
            self.model8,
        ):
            x = block(x)
        return x

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        ab = self.model_out(self.softmax(self.logits(L)))
        ab = F.interpolate(ab, scale_factor=4, mode="bilinear", align_corners=False)
        return ab * AB_MAX


class SIGGRAPHGenerator(nn.Module):
    """User-guided colorization network of Zhang et al. (SIGGRAPH 2017), "siggraph17".

    Inputs: ``L`` (N, 1, H, W) lightness 0-100; ``ab_hint`` (N, 2, H, W) hint ab values
    (0 where no hint); ``mask`` (N, 1, H, W), 1 where a hint is given.  H and W must be
    multiples of 8.  Output: ab (N, 2, H, W) in [-110, 110] (tanh x 110), full resolution.

    With no hints (``ab_hint`` and ``mask`` None) it colorizes automatically.
    :meth:`class_distribution` gives the softmax of the extra ``model_class`` head, a
    distribution over 529 ab bins (:func:`ab_grid`) at 1/4 resolution, used to suggest
    colours.

    Examples
    --------
    >>> net = SIGGRAPHGenerator().eval()
    >>> L = torch.full((1, 1, 32, 32), 50.0)
    >>> with torch.no_grad():
    ...     net(L).shape, net.class_distribution(L).shape
    (torch.Size([1, 2, 32, 32]), torch.Size([1, 529, 8, 8]))
    """

    def __init__(self) -> None:
        super().__init__()
        self.model1 = _block([4, 64, 64])
        self.model2 = _block([64, 128, 128])
        self.model3 = _block([128, 256, 256, 256])
        self.model4 = _block([256, 512, 512, 512])
        self.model5 = _block([512, 512, 512, 512], dilation=2)
        self.model6 = _block([512, 512, 512, 512], dilation=2)
        self.model7 = _block([512, 512, 512, 512])
        self.model8up = nn.Sequential(nn.ConvTranspose2d(512, 256, 4, stride=2, padding=1))
        self.model3short8 = nn.Sequential(nn.Conv2d(256, 256, 3, padding=1))
        self.model8 = nn.Sequential(
            nn.ReLU(True),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(True),
            nn.BatchNorm2d(256),
        )
        self.model9up = nn.Sequential(nn.ConvTranspose2d(256, 128, 4, stride=2, padding=1))
        self.model2short9 = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1))
        self.model9 = nn.Sequential(
            nn.ReLU(True),
            nn.Conv2d(128, 128, 3, padding=1),
            nn.ReLU(True),
            nn.BatchNorm2d(128),
        )
        self.model10up = nn.Sequential(nn.ConvTranspose2d(128, 128, 4, stride=2, padding=1))
        self.model1short10 = nn.Sequential(nn.Conv2d(64, 128, 3, padding=1))
        self.model10 = nn.Sequential(
            nn.ReLU(True),
            nn.Conv2d(128, 128, 3, padding=1),
            nn.LeakyReLU(0.2),
        )
        self.model_class = nn.Sequential(nn.Conv2d(256, AB_GRID_SIZE**2, 1))
        self.model_out = nn.Sequential(nn.Conv2d(128, 2, 1), nn.Tanh())

    @staticmethod
    def _check(L: torch.Tensor) -> None:
        if L.ndim != 4 or L.shape[1] != 1:
            raise ValueError(f"L must have shape (N, 1, H, W), got {tuple(L.shape)}")
        h, w = L.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError(
                f"siggraph17 needs H and W divisible by 8, got {h}x{w}; resize or pad the "
                "lightness first (the colorize() pipeline resizes to 256x256)"
            )

    def _encode(self, L, ab_hint, mask):
        self._check(L)
        if ab_hint is None:
            ab_hint = torch.zeros_like(L).expand(-1, 2, -1, -1)
        if mask is None:
            mask = torch.zeros_like(L)
        x = torch.cat([(L - L_CENT) / L_NORM, ab_hint / AB_MAX, mask], dim=1)
        c1 = self.model1(x)
        c2 = self.model2(c1[:, :, ::2, ::2])
        c3 = self.model3(c2[:, :, ::2, ::2])
        c4 = self.model4(c3[:, :, ::2, ::2])
        c7 = self.model7(self.model6(self.model5(c4)))
        c8 = self.model8(self.model8up(c7) + self.model3short8(c3))
        return c1, c2, c8

    def forward(
        self, L: torch.Tensor, ab_hint: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        c1, c2, c8 = self._encode(L, ab_hint, mask)
        c9 = self.model9(self.model9up(c8) + self.model2short9(c2))
        c10 = self.model10(self.model10up(c9) + self.model1short10(c1))
        return self.model_out(c10) * AB_MAX

    def class_distribution(
        self, L: torch.Tensor, ab_hint: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Softmax of the ``model_class`` head: (N, 529, H/4, W/4) probabilities over
        the ab bins of :func:`ab_grid`."""
        _c1, _c2, c8 = self._encode(L, ab_hint, mask)
        return torch.softmax(self.model_class(c8), dim=1)


#: Model names and their classes.
COLORIZERS: dict[str, type[nn.Module]] = {
    "eccv16": ECCVGenerator,
    "siggraph17": SIGGRAPHGenerator,
}


def build_colorizer(name: str) -> nn.Module:
    """A freshly initialised (untrained) colorizer by name, ``"eccv16"`` or ``"siggraph17"``."""
    try:
        return COLORIZERS[name]()
    except KeyError:
        raise ValueError(
            f"unknown colorizer network {name!r}; choose one of {', '.join(map(repr, COLORIZERS))}"
        ) from None
