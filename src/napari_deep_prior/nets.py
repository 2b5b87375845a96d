"""The Deep Image Prior "skip" encoder-decoder (Ulyanov, Vedaldi, Lempitsky 2018).

Layer order follows the published architecture (REFERENCE.md section 1): per level a
strided down block, an optional 1x1 skip branch, and an up block; reflection padding;
a 1x1 output convolution and a sigmoid.  Written as an explicit loop over levels rather
than the nested ``Sequential`` of the reference code, with the same layers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NetParams",
    "SkipNet",
    "make_input",
    "min_padded_side",
    "nearest_up_conv3x3",
    "padded_shape",
    "required_multiple",
    "seeded_skip_net",
]


@dataclass(frozen=True)
class NetParams:
    """Architecture of the "skip" encoder-decoder of Ulyanov et al. (2018).

    Parameters
    ----------
    channels_down, channels_up, channels_skip : tuple of int
        Width of each level, from the finest (full resolution) to the coarsest.
        All three have one entry per level; a skip width of 0 means no skip connection.
    kernel_down, kernel_up, kernel_skip : int
        Convolution kernel sizes (odd).
    upsample : {"bilinear", "nearest", "mixed"}
        Up-sampling mode of the decoder; "mixed" up-samples by nearest neighbour at every
        level but the finest, which is bilinear (the last up-sampling decides whether 2x2
        blocks can show in the output; the coarser ones are smoothed by the finer levels'
        convolutions).
    need_1x1_up : bool
        Whether each decoder level ends with an extra 1x1 convolution.
    input_kind : {"noise", "meshgrid"}
        The fixed network input z: uniform noise U(0, 0.1) with ``input_depth`` channels,
        or a 2-channel coordinate grid.
    input_depth : int
        Channels of z (ignored for "meshgrid", which has 2).
    """

    channels_down: tuple[int, ...] = (128,) * 5
    channels_up: tuple[int, ...] = (128,) * 5
    channels_skip: tuple[int, ...] = (4,) * 5
    kernel_down: int = 3
    kernel_up: int = 3
    kernel_skip: int = 1
    upsample: Literal["bilinear", "nearest", "mixed"] = "bilinear"
    need_1x1_up: bool = True
    input_kind: Literal["noise", "meshgrid"] = "noise"
    input_depth: int = 32

    def __post_init__(self) -> None:
        n = len(self.channels_down)
        if n == 0:
            raise ValueError("NetParams needs at least one level (channels_down is empty)")
        if len(self.channels_up) != n or len(self.channels_skip) != n:
            raise ValueError(
                "channels_down, channels_up and channels_skip must have one entry per level; "
                f"got {len(self.channels_down)}, {len(self.channels_up)} and {len(self.channels_skip)}"
            )
        if any(c <= 0 for c in self.channels_down + self.channels_up):
            raise ValueError("every down/up width must be positive")
        if any(c < 0 for c in self.channels_skip):
            raise ValueError("skip widths must be >= 0 (0 disables the skip connection)")
        for name in ("kernel_down", "kernel_up", "kernel_skip"):
            k = getattr(self, name)
            if k < 1 or k % 2 == 0:
                raise ValueError(f"{name} must be a positive odd integer, got {k}")
        if self.upsample not in ("bilinear", "nearest", "mixed"):
            raise ValueError(f"upsample must be 'bilinear', 'nearest' or 'mixed', got {self.upsample!r}")
        if self.input_kind not in ("noise", "meshgrid"):
            raise ValueError(f"input_kind must be 'noise' or 'meshgrid', got {self.input_kind!r}")
        if self.input_kind == "noise" and self.input_depth < 1:
            raise ValueError(f"input_depth must be >= 1, got {self.input_depth}")

    @property
    def depth(self) -> int:
        """Number of levels (each halves the resolution)."""
        return len(self.channels_down)

    @property
    def in_channels(self) -> int:
        """Channels of the network input z."""
        return 2 if self.input_kind == "meshgrid" else self.input_depth


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    # Reflection padding inside the convolution: the same arithmetic as the reference's
    # ReflectionPad2d + Conv2d, one module fewer, and no no-op pad before 1x1 convs.
    pad = k // 2
    return nn.Conv2d(cin, cout, k, stride=stride, padding=pad, padding_mode="reflect" if pad else "zeros", bias=True)


def _cba(cin: int, cout: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [_conv(cin, cout, k, stride), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]


class SkipNet(nn.Module):
    """Encoder-decoder with skip connections, as in Deep Image Prior.

    Parameters
    ----------
    in_channels : int
        Channels of the input z.
    out_channels : int
        Channels of the image being fitted.
    net : NetParams
        Widths, kernels, up-sampling mode.

    Notes
    -----
    Spatial input sizes must be multiples of :func:`required_multiple` (the fit pads z
    and crops the output, so images of any size are handled without losing pixels).

    References
    ----------
    .. [1] D. Ulyanov, A. Vedaldi, V. Lempitsky, "Deep Image Prior", CVPR 2018.

    Examples
    --------
    >>> from napari_deep_prior.nets import NetParams
    >>> net = SkipNet(32, 3, NetParams((16,) * 3, (16,) * 3, (4,) * 3))
    >>> net(torch.rand(1, 32, 64, 64)).shape
    torch.Size([1, 3, 64, 64])
    """

    def __init__(self, in_channels: int, out_channels: int, net: NetParams):
        super().__init__()
        self.params = net
        n = net.depth
        self.down = nn.ModuleList()
        self.skip = nn.ModuleList()
        self.up = nn.ModuleList()
        cin = in_channels
        for i in range(n):
            d, s, u = net.channels_down[i], net.channels_skip[i], net.channels_up[i]
            self.down.append(
                nn.Sequential(
                    *_cba(cin, d, net.kernel_down, stride=2),
                    *_cba(d, d, net.kernel_down),
                )
            )
            self.skip.append(nn.Sequential(*_cba(cin, s, net.kernel_skip)) if s else nn.Identity())
            deeper = net.channels_up[i + 1] if i + 1 < n else d
            layers: list[nn.Module] = [nn.BatchNorm2d(s + deeper), *_cba(s + deeper, u, net.kernel_up)]
            if net.need_1x1_up:
                layers += _cba(u, u, 1)
            self.up.append(nn.Sequential(*layers))
            cin = d
        self.out = nn.Conv2d(net.channels_up[0], out_channels, 1)
        self.upsample_mode = net.upsample

    @classmethod
    def from_params(cls, net: NetParams, out_channels: int) -> SkipNet:
        """Build the network for ``out_channels`` image channels."""
        return cls(net.in_channels, out_channels, net)

    def _up2(self, x: torch.Tensor, level: int) -> torch.Tensor:
        if self.upsample_mode == "bilinear" or (self.upsample_mode == "mixed" and level == 0):
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def up_on_coarse_map(self, level: int) -> bool:
        """Whether this level's up block runs on the coarse map (:func:`_up_block_nearest`).

        Its convolution then runs outside its module: the memory planner counts that output itself.
        """
        mode = self.upsample_mode
        return self.params.kernel_up == 3 and (mode == "nearest" or (mode == "mixed" and level > 0))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        inputs = []
        x = z
        for down in self.down:
            inputs.append(x)
            x = down(x)
        # x: output of the deepest down block; walk back up.
        for i in reversed(range(len(self.down))):
            s = self.params.channels_skip[i]
            skip = self.skip[i](inputs[i]) if s else None
            if self.up_on_coarse_map(i):
                x = _up_block_nearest(self.up[i], x, skip)
                continue
            x = self._up2(x, i)
            if skip is not None:
                x = torch.cat([skip, x], dim=1)
            x = self.up[i](x)
        return torch.sigmoid(self.out(x))


def _up_block_nearest(block: nn.Sequential, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
    """``block(cat([skip, nearest_up2(x)]))`` computed without building the up-sampled map.

    The block starts with batch normalisation of the concatenation and a 3x3 convolution with
    reflection padding.  A nearest-neighbour up-sampled channel repeats every value of ``x``
    four times, so its batch mean and (biased) variance are those of ``x``: it is normalised on
    the coarse map.  The convolution splits into the skip channels' part (at full resolution)
    and the up-sampled channels' part, which :func:`nearest_up_conv3x3` evaluates on the coarse
    map (4 taps per output pixel instead of 9).  The result is the same function of the same
    parameters, equal to float rounding; the full-resolution up-sampled and concatenated maps
    are never stored (about a fifth less memory for the default network at 512-1024 px, and
    fewer operations: ``benchmarks/dip_speed.py --scaling``).  The network is always used in
    training mode (batch statistics), so the running statistics of the first normalisation are
    not updated.
    """
    bn, conv = block[0], block[1]
    s = 0 if skip is None else skip.shape[1]
    w, b = bn.weight, bn.bias
    x = F.batch_norm(x, None, None, w[s:], b[s:], training=True, eps=bn.eps)
    y = nearest_up_conv3x3(x, conv.weight[:, s:])
    if skip is not None:
        skip = F.batch_norm(skip, None, None, w[:s], b[:s], training=True, eps=bn.eps)
        y = y + conv._conv_forward(skip, conv.weight[:, :s], None)
    y = y + conv.bias[:, None, None]
    for layer in block[2:]:
        y = layer(y)
    return y


def _phase_kernel(weight: torch.Tensor) -> torch.Tensor:
    """The 4x4 transposed-convolution kernel, (in, out, 4, 4), of a 3x3 kernel (out, in, 3, 3).

    Along each axis the taps ``(a, b, c)`` become ``(c, b + c, a + b, a)``: with stride 2 and
    padding 3, even outputs take ``b + c`` and ``a``, odd outputs ``c`` and ``a + b``.
    """

    def axis(k: torch.Tensor, dim: int) -> torch.Tensor:
        a, b, c = k.unbind(dim)
        return torch.stack([c, b + c, a + b, a], dim)

    return axis(axis(weight, 2), 3).transpose(0, 1)


def nearest_up_conv3x3(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``conv2d(reflect_pad(nearest_up2(x), 1), weight)`` for a 3x3 ``weight``, without bias.

    Output pixel ``(2a + p, 2b + q)`` sees rows ``a - 1, a`` (p = 0) or ``a, a + 1`` (p = 1) of
    ``x`` (and the same for columns), the reflection padding of the up-sampled map being the
    replication padding of ``x``: two taps per axis, whose weights are sums of the 3x3 kernel's,
    i.e. a stride-2 transposed convolution of the replicate-padded ``x`` (4 taps per output
    pixel instead of 9, and no up-sampled map).
    """
    r = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.conv_transpose2d(r, _phase_kernel(weight), stride=2, padding=3)


#: A network's weights are drawn from torch's global generator, seeded inside ``fork_rng``:
#: networks built at once in threads of one process (dask's threaded scheduler, two napari
#: workers, a restoration and a colorization) draw one at a time, so each gets its seed's weights.
_GLOBAL_RNG = threading.Lock()


def seeded_skip_net(in_channels: int, out_channels: int, net: NetParams, seed: int) -> SkipNet:
    """A :class:`SkipNet` whose initial weights are those of ``seed``, whatever other threads draw.

    Torch's global generator is forked (its state is restored afterwards) and held for the
    draw, so the same seed gives the same weights in any thread and the caller's own random
    stream does not move.
    """
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SkipNet(in_channels, out_channels, net)


def required_multiple(net: NetParams) -> int:
    """Spatial sizes the network accepts are multiples of this (2 ** depth)."""
    return 2**net.depth


def min_padded_side(net: NetParams) -> int:
    """Smallest padded side: reflection padding needs more pixels than the pad at the deepest level."""
    pad = max(net.kernel_down, net.kernel_up) // 2
    return required_multiple(net) * (pad + 1)


def make_input(
    net: NetParams, height: int, width: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The fixed network input z of shape (1, C, height, width).

    Uniform noise U(0, 0.1) with ``input_depth`` channels, or a 2-channel meshgrid in [0, 1].
    The noise is drawn on the CPU from ``generator`` so a seed gives the same z on every device.
    """
    if net.input_kind == "meshgrid":
        ys = torch.linspace(0, 1, height)
        xs = torch.linspace(0, 1, width)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        z = torch.stack([xx, yy])[None]
    else:
        z = torch.rand(1, net.input_depth, height, width, generator=generator) * 0.1
    return z.to(device)


def padded_shape(net: NetParams, height: int, width: int) -> tuple[int, int]:
    """Size of the network input for an image of ``height`` x ``width`` (no pixel is cropped away)."""
    mult = required_multiple(net)
    lo = min_padded_side(net)
    return (max(lo, -(-height // mult) * mult), max(lo, -(-width // mult) * mult))
