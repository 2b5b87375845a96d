"""The colorization engine: automatic (eccv16, siggraph17) and hint-guided colorization.

One flow for every method: image in -> Lab lightness ``L`` at full resolution -> ab
chroma predicted by a method, at a working resolution -> ab resized back to the image ->
``lab2rgb(L, ab)`` with the ORIGINAL full-resolution L.  The input array is never modified.

Methods
-------
``eccv16``, ``siggraph17`` (automatic)
    The pretrained networks of Zhang et al. see L resized to 256 x 256; their ab output is
    resized bilinearly back to H x W.  Weights: :mod:`.weights`.
``siggraph17`` (with hints)
    Hints are encoded as patches in the 256 x 256 grid the network sees.
``levin``
    Levin, Lischinski, Weiss (2004): hint colours diffuse to neighbours of similar
    lightness (:func:`.color.levin`); needs no trained weights.
``dip``
    A Deep-Image-Prior colorizer, also without trained weights: a small skip
    encoder-decoder (16 channels, 4 levels, 31 k parameters) maps the lightness plus 4
    fixed noise channels to ab (sigmoid output mapped to +-110, starting from grey) and is
    fitted with Adam to the hint patches only (masked MSE, 200 steps); two such fits
    with different seeds are averaged.  The network carries hint colours to pixels of
    similar lightness and texture, also ones that are not connected to a hint.  Its ab
    then serves as the prior of a screened Levin propagation (weight 0.0003), which
    snaps the colours to the luminance edges near the hints.  About 15-25 s for
    256 x 256 on one CPU core; seeded and reproducible on the CPU.

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

import os
import time
from dataclasses import dataclass
from typing import Callable, Generator, NamedTuple

import numpy as np

from . import color as _color
from .color import AB_MAX, encode_hints, gamut_clip, lab_to_rgb

__all__ = [
    "colorize",
    "colorize_auto",
    "colorize_hints",
    "suggest_colors",
    "lightness",
    "DIPColorParams",
    "ColorizeStep",
    "Suggestions",
    "dip_ab",
    "dip_ab_steps",
    "levin_ab",
    "network_ab",
    "AUTO_METHODS",
    "HINT_METHODS",
    "METHODS",
    "NET_SIZE",
    "clear_model_cache",
]

#: Methods that need no hints, and methods that need them.
AUTO_METHODS = ("eccv16", "siggraph17")
HINT_METHODS = ("siggraph17", "levin", "dip")
METHODS = ("eccv16", "siggraph17", "levin", "dip")
#: Side of the square grid the pretrained networks see (their training resolution).
NET_SIZE = 256
#: Smallest accepted height and width.
MIN_SIDE = 8
#: Levin's sparse solve runs at most at this many pixels (about 2 s on a laptop core); larger
#: images are solved at a reduced size and the chroma is upsampled (L stays full size).
LEVIN_MAX_PIXELS = 512 * 512


# --------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------

def _to_unit_float(arr: np.ndarray) -> np.ndarray:
    """Values as float64 in [0, 1] following the module's dtype policy."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    work = arr.astype(np.float64)
    lo, hi = float(work.min()), float(work.max())
    if arr.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        return work
    if hi > lo:
        return (work - lo) / (hi - lo)
    return np.full_like(work, 0.5)


def _split_image(image, channel_axis: int | None) -> tuple[np.ndarray, bool]:
    """Validate the layout; return (array (H, W) grey or (H, W, 3) RGB, is_rgb)."""
    if not isinstance(image, np.ndarray):
        if hasattr(image, "__array__") or isinstance(image, (list, tuple)):
            image = np.asarray(image)
        else:
            raise TypeError(f"image must be a NumPy array, got {type(image).__name__}")
    if image.dtype.kind not in "uif":
        raise TypeError(
            f"image has dtype {image.dtype}, which is not supported; give an integer "
            "(uint8, uint16, ...) or float array"
        )
    if image.size == 0:
        raise ValueError(f"image is empty (shape {image.shape}); give an image with pixels")
    nd = image.ndim
    if channel_axis is not None:
        if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
            raise TypeError(f"channel_axis must be an int or None, got {channel_axis!r}")
        if not -nd <= channel_axis < nd:
            raise ValueError(
                f"channel_axis={channel_axis} is out of range for an image of shape {image.shape}"
            )
        if nd != 3:
            raise ValueError(
                f"image has shape {image.shape}: with channel_axis={channel_axis} colorize "
                "needs one 2-D image with a channel axis (3 dimensions); colorize the planes "
                "of a stack one at a time"
            )
        arr = np.moveaxis(image, channel_axis, -1)
    else:
        if nd == 2:
            arr = image
        elif nd == 3 and image.shape[-1] in (1, 3, 4):
            arr = image  # RGB(A) with channels last, the napari convention
        elif nd == 3:
            raise ValueError(
                f"image has shape {image.shape}, which looks like a stack of "
                f"{image.shape[0]} planes; colorize works on one 2-D image: pass one plane "
                "(image[i]), or channel_axis=... if an axis holds 1, 3 or 4 colour channels"
            )
        else:
            raise ValueError(
                f"image has shape {image.shape} ({nd} dimensions); colorize needs a 2-D grey "
                "image (H, W) or an RGB(A) image (H, W, 3|4); colorize the planes of a stack "
                "one at a time"
            )
    if arr.ndim == 3:
        c = arr.shape[-1]
        if c not in (1, 3, 4):
            raise ValueError(
                f"image has {c} channels (shape {image.shape}); colorize accepts 1 (grey), "
                "3 (RGB) or 4 (RGBA) channels"
            )
        if c == 1:
            arr = arr[..., 0]
        elif c == 4:
            arr = arr[..., :3]
    h, w = arr.shape[:2]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(
            f"image is {h}x{w} pixels (shape {image.shape}); colorize needs at least "
            f"{MIN_SIDE}x{MIN_SIDE}"
        )
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(
            "image contains NaN or infinite values; replace them first (e.g. np.nan_to_num)"
        )
    return arr, arr.ndim == 3


def lightness(image, *, channel_axis: int | None = None) -> np.ndarray:
    """Lab lightness L (0-100) of a grey or RGB image, float64 (H, W).

    A grey image is read as sRGB grey (the same L as ``rgb2lab`` of the grey tiled to
    RGB); an RGB(A) image gives its own L (alpha is ignored).

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 1|3|4)
    channel_axis : int, optional
        Axis of the colour channels; None for a grey image or channels last.

    Examples
    --------
    >>> float(lightness(np.full((8, 8), 255, np.uint8))[0, 0])
    100.0
    """
    arr, is_rgb = _split_image(image, channel_axis)
    unit = _to_unit_float(arr)
    if is_rgb:
        return _color.rgb_to_lab(unit)[..., 0]
    return _color.gray_to_lightness(unit)


def _finish(L: np.ndarray, ab: np.ndarray, as_uint8: bool) -> np.ndarray:
    rgb = lab_to_rgb(np.concatenate([L[..., None], ab.astype(np.float64)], axis=-1))
    if as_uint8:
        return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    return rgb.astype(np.float32)


def _resize(arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (H, W) or (H, W, C) float arrays, anti-aliased when shrinking."""
    from skimage.transform import resize

    if arr.shape[:2] == tuple(shape):
        return arr.astype(np.float64, copy=True)
    shrink = shape[0] < arr.shape[0] or shape[1] < arr.shape[1]
    return resize(arr.astype(np.float64), shape, order=1, mode="edge",
                  anti_aliasing=shrink, preserve_range=True)


def _scale_hints(hints, src: tuple[int, int], dst: tuple[int, int]):
    """Hint positions moved from a ``src`` pixel grid to a ``dst`` grid (pixel centres)."""
    parsed = _color.normalize_hints(hints, src)
    sy, sx = dst[0] / src[0], dst[1] / src[1]
    out = []
    for r, c, rgb in parsed:
        rr = min(max((r + 0.5) * sy - 0.5, 0.0), dst[0] - 1)
        cc = min(max((c + 0.5) * sx - 0.5, 0.0), dst[1] - 1)
        out.append((rr, cc, rgb))
    return out


def _working_shape(shape: tuple[int, int], max_pixels: int | None) -> tuple[int, int]:
    h, w = shape
    if max_pixels is None or h * w <= max_pixels:
        return h, w
    f = (max_pixels / (h * w)) ** 0.5
    return max(MIN_SIDE, int(round(h * f))), max(MIN_SIDE, int(round(w * f)))


# --------------------------------------------------------------------------------------
# Pretrained networks
# --------------------------------------------------------------------------------------

_MODEL_CACHE: dict = {}


def clear_model_cache() -> None:
    """Forget the pretrained networks kept in memory between calls."""
    _MODEL_CACHE.clear()


def _get_net(name: str, weights, device):
    """A pretrained network on ``device``: ``weights`` may be a loaded nn.Module, a file or
    a folder (see :func:`.weights.find_weights`), or None to search / download."""
    import torch

    if isinstance(weights, torch.nn.Module):
        return weights.to(device).eval()
    from . import weights as _weights

    key = (name, None if weights is None else os.fspath(weights), str(device))
    net = _MODEL_CACHE.get(key)
    if net is None:
        net = _weights.load_colorizer(name, weights, device=device)
        # Keep at most one network per model name (they weigh 130 MB each).
        for k in [k for k in _MODEL_CACHE if k[0] == name]:
            del _MODEL_CACHE[k]
        _MODEL_CACHE[key] = net
    return net


def _resolve(device):
    from .device import resolve_device

    return resolve_device(device)


def network_ab(L: np.ndarray, model: str = "eccv16", *, ab_hint: np.ndarray | None = None,
               mask: np.ndarray | None = None, weights=None, device="auto") -> np.ndarray:
    """ab predicted by a pretrained network for a lightness image, at the image's size.

    Parameters
    ----------
    L : ndarray, shape (H, W)
        Lightness, 0-100 (any size; the network sees it resized to 256 x 256).
    model : {"eccv16", "siggraph17"}
    ab_hint, mask : ndarray, shape (256, 256, 2) and (256, 256), optional
        siggraph17 hints already encoded in the 256 x 256 grid.
    weights : path, folder or nn.Module, optional
    device : str or torch.device

    Returns
    -------
    ab : ndarray, shape (H, W, 2), float32
    """
    import torch
    import torch.nn.functional as F

    if model not in AUTO_METHODS:
        raise ValueError(f"model must be 'eccv16' or 'siggraph17', got {model!r}")
    if (ab_hint is not None or mask is not None) and model != "siggraph17":
        raise ValueError("hints can only be given to the 'siggraph17' model")
    dev = _resolve(device)
    net = _get_net(model, weights, dev)
    h, w = L.shape
    L256 = _resize(L, (NET_SIZE, NET_SIZE))
    with torch.inference_mode():
        tL = torch.from_numpy(L256.astype(np.float32))[None, None].to(dev)
        if model == "siggraph17":
            th = tm = None
            if ab_hint is not None:
                th = torch.from_numpy(np.ascontiguousarray(ab_hint, np.float32)).permute(2, 0, 1)[None].to(dev)
                tm = torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None, None].to(dev)
            ab = net(tL, th, tm)
        else:
            ab = net(tL)
        ab = F.interpolate(ab.float(), size=(h, w), mode="bilinear", align_corners=False,
                           antialias=h < ab.shape[-2] or w < ab.shape[-1])
        return ab[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)


# --------------------------------------------------------------------------------------
# Levin
# --------------------------------------------------------------------------------------

def levin_ab(L: np.ndarray, ab_hint: np.ndarray, mask: np.ndarray, *,
             max_pixels: int | None = None, prior: np.ndarray | None = None,
             prior_weight: float = 0.0) -> np.ndarray:
    """Levin propagation of encoded hints, solved at most at ``max_pixels`` pixels.

    Larger images are solved on a reduced grid (hints carried over as area averages) and
    the ab result is upsampled bilinearly; the lightness keeps its full resolution.
    ``max_pixels`` defaults to :data:`LEVIN_MAX_PIXELS`.  ``prior`` and ``prior_weight``:
    screened propagation, see :func:`.color.levin`.

    Returns
    -------
    ab : ndarray, shape (H, W, 2), float32
    """
    h, w = L.shape
    ws = _working_shape((h, w), LEVIN_MAX_PIXELS if max_pixels is None else max_pixels)
    if ws == (h, w):
        return _color.levin(L, ab_hint, mask, prior=prior, prior_weight=prior_weight)
    m = (np.asarray(mask) > 0).astype(np.float64)
    Ls = _resize(L, ws)
    ms = _resize(m, ws)
    abs_ = _resize(np.asarray(ab_hint, np.float64) * m[..., None], ws)
    known = ms > 0.25
    abs_ = np.where(known[..., None], abs_ / np.maximum(ms, 1e-6)[..., None], 0.0)
    if not known.any():  # hints smaller than a working pixel: keep the strongest ones
        known = ms >= ms.max() * 0.5
        abs_ = np.where(known[..., None], _resize(np.asarray(ab_hint, np.float64) * m[..., None], ws)
                        / np.maximum(ms, 1e-6)[..., None], 0.0)
    prior_s = None if prior is None else _resize(np.asarray(prior, np.float64), ws)
    ab = _color.levin(Ls, abs_, known, prior=prior_s, prior_weight=prior_weight)
    return _resize(ab, (h, w)).astype(np.float32)


# --------------------------------------------------------------------------------------
# Deep Image Prior colorizer
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DIPColorParams:
    """Settings of the Deep-Image-Prior colorizer.

    Parameters
    ----------
    iterations : int
        Adam steps per ensemble member.  The loss only sees the hint pixels; once they are fitted (100-200
        steps) the colours elsewhere stay put: on 15 image/hint-count cases at 256 x 256
        the PSNR at 100, 200, 300 and 400 steps agreed within 0.2 dB, so a fixed count
        is used instead of early stopping.
    lr : float
        Adam learning rate.
    width, depth, skip : int
        Channels per level, number of levels and skip-connection channels of the
        :class:`~.nets.SkipNet`.
    noise_channels : int
        Fixed uniform-noise channels U(0, 0.1) appended to the lightness input.
    smoothness : float
        Weight of a Levin-affinity smoothness term ``mean((ab - W ab)^2)`` (0: off; 3
        measured 0.8 dB worse than 0 on kodim01 with 10 hints, and 40 % slower).
    ensemble : int
        Independently seeded fits whose ab outputs are averaged.  Single fits vary a lot
        with the seed (up to 6 dB on one image, measured); the mean of 2 is steadier.
    refine : float
        After the fit, screened Levin propagation with the network's ab as prior
        (:func:`.color.levin` with ``prior_weight=refine``): hint colours follow the
        luminance edges near the hints, the network's colours hold far from them
        (about ``1 / sqrt(refine)`` pixels).  0 returns the network's output as it is.
        Measured (single fits, 15 cases: 5 images x 5, 20, 50 hints): 0.001 gave +0.7 dB
        over the raw network and +0.16 dB over plain Levin on average (0.004 and 0.02
        less); with the 2-fit ensemble, 0.0003 beat 0.001 on 3 of 4 cases tried.
    max_pixels : int or None
        The fit runs on a grid of at most this many pixels (the ab result is upsampled
        bilinearly; L keeps full resolution).  None: full resolution.
    yield_every : int
        A :class:`ColorizeStep` is yielded every this many iterations.
    preview_every : int
        The current ab estimate is attached to a yielded Step every this many iterations
        (0: never); a multiple of ``yield_every`` to be seen.
    """

    iterations: int = 200
    lr: float = 0.01
    width: int = 16
    depth: int = 4
    skip: int = 4
    noise_channels: int = 4
    smoothness: float = 0.0
    ensemble: int = 2
    refine: float = 0.0003
    max_pixels: int | None = 256 * 256
    yield_every: int = 10
    preview_every: int = 0

    def __post_init__(self) -> None:
        for name in ("iterations", "width", "depth", "yield_every", "ensemble"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"DIPColorParams.{name} must be a positive integer, got {v!r}")
        for name in ("skip", "noise_channels", "preview_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"DIPColorParams.{name} must be an integer >= 0, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"DIPColorParams.lr must be > 0, got {self.lr}")
        if self.smoothness < 0:
            raise ValueError(f"DIPColorParams.smoothness must be >= 0, got {self.smoothness}")
        if self.refine < 0:
            raise ValueError(f"DIPColorParams.refine must be >= 0, got {self.refine}")
        if self.max_pixels is not None and self.max_pixels < MIN_SIDE * MIN_SIDE:
            raise ValueError(
                f"DIPColorParams.max_pixels must be None or >= {MIN_SIDE * MIN_SIDE}, "
                f"got {self.max_pixels}"
            )


@dataclass
class ColorizeStep:
    """Progress of a DIP colorization, yielded every few iterations.

    Attributes
    ----------
    iteration, iterations : int
    loss : float
        Masked mean squared error on the hints, in (ab / 110)^2 units.
    elapsed : float
        Seconds since the fit started.
    preview : ndarray or None
        The current ab estimate, shape (H, W, 2), float32, every ``preview_every`` steps
        (the output of the step's forward pass, so it costs no extra forward).
    """

    iteration: int
    iterations: int
    loss: float
    elapsed: float
    preview: np.ndarray | None = None


def _new_seed() -> int:
    return int(np.random.SeedSequence().generate_state(1)[0])


def dip_ab_steps(L: np.ndarray, ab_hint: np.ndarray, mask: np.ndarray, *,
                 params: DIPColorParams | None = None, seed: int | None = None,
                 device="auto") -> Generator[ColorizeStep, None, np.ndarray]:
    """Fit the DIP colorizer to encoded hints, as a generator.

    Yields a :class:`ColorizeStep` every ``params.yield_every`` iterations and returns the
    ab image, shape (H, W, 2), float32.  Stop iterating to cancel.

    Parameters
    ----------
    L : ndarray, shape (H, W)
        Lightness 0-100.
    ab_hint : ndarray, shape (H, W, 2)
    mask : ndarray, shape (H, W)
        Non-zero where a hint is given (at least one pixel).
    params : DIPColorParams, optional
    seed : int, optional
        Seeds the network initialisation and the input noise; on the CPU a seed gives the
        same result every run.
    device : str or torch.device
    """
    import torch
    import torch.nn.functional as F

    from .nets import SkipNet, min_padded_side, required_multiple
    from .params import NetParams

    p = params if params is not None else DIPColorParams()
    if not isinstance(p, DIPColorParams):
        raise TypeError(f"params must be a DIPColorParams, got {type(p).__name__}")
    L = np.asarray(L, np.float64)
    m_full = np.asarray(mask) > 0
    if L.ndim != 2 or np.shape(ab_hint) != L.shape + (2,) or m_full.shape != L.shape:
        raise ValueError(
            f"dip needs L (H, W), ab_hint (H, W, 2) and mask (H, W); got shapes {L.shape}, "
            f"{np.shape(ab_hint)} and {m_full.shape}"
        )
    if not m_full.any():
        raise ValueError("the dip colorizer needs at least one hint (the mask is empty)")
    seed = _new_seed() if seed is None else int(seed)
    dev = _resolve(device)
    if dev.type == "cpu":
        from .device import tune_cpu_allocator

        tune_cpu_allocator()
    h, w = L.shape
    hs, ws_ = _working_shape((h, w), p.max_pixels)
    if (hs, ws_) != (h, w):
        mf = m_full.astype(np.float64)
        Lw = _resize(L, (hs, ws_))
        mw = _resize(mf, (hs, ws_))
        abw = _resize(np.asarray(ab_hint, np.float64) * mf[..., None], (hs, ws_))
        abw = abw / np.maximum(mw, 1e-6)[..., None]
        known = mw > 0.25 if (mw > 0.25).any() else mw >= 0.5 * mw.max()
    else:
        Lw, abw, known = L, np.asarray(ab_hint, np.float64), m_full

    net_p = NetParams(
        channels_down=(p.width,) * p.depth, channels_up=(p.width,) * p.depth,
        channels_skip=(p.skip,) * p.depth, kernel_down=3, kernel_up=3, kernel_skip=1,
        upsample="bilinear", need_1x1_up=True, input_kind="noise",
        input_depth=max(p.noise_channels, 1),
    )
    mult = required_multiple(net_p)
    min_side = min_padded_side(net_p)
    ph = max(-(-hs // mult) * mult, min_side)
    pw = max(-(-ws_ // mult) * mult, min_side)
    top, left = (ph - hs) // 2, (pw - ws_) // 2
    pads = ((top, ph - hs - top), (left, pw - ws_ - left))
    L_pad = np.pad(Lw, pads, mode="reflect")
    ab_pad = np.pad(abw, pads + ((0, 0),))
    m_pad = np.pad(known.astype(np.float32), pads)

    target = torch.from_numpy((ab_pad / AB_MAX).astype(np.float32)).permute(2, 0, 1)[None].to(dev)
    mk = torch.from_numpy(m_pad)[None, None].to(dev)
    n_known = mk.sum() * 2.0
    L_plane = torch.from_numpy(((L_pad - 50.0) / 100.0).astype(np.float32))[None, None]
    smooth = None
    if p.smoothness > 0:
        wts = np.pad(_color.levin_weights(Lw / 100.0), ((0, 0),) + pads)
        smooth = torch.from_numpy(wts.astype(np.float32)).to(dev)[:, None, None]
        crop = (slice(top, top + hs), slice(left, left + ws_))

    def member(k: int):
        """Network and input of ensemble member k (member 0 uses ``seed`` itself)."""
        s_k = seed if k == 0 else int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
        gen = torch.Generator().manual_seed(s_k)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s_k)
            net = SkipNet(1 + p.noise_channels, 2, net_p)
        with torch.no_grad():
            # Start from grey (ab = 0 everywhere): the fit adds colour where hints pull.
            net.out.weight.zero_()
            net.out.bias.zero_()
        planes = [L_plane]
        if p.noise_channels:
            planes.append(torch.rand(1, p.noise_channels, ph, pw, generator=gen) * 0.1)
        return net.to(dev), torch.cat(planes, dim=1).to(dev)

    def ab_of(out):
        return (out - 0.5) * 2.0  # sigmoid [0, 1] -> [-1, 1] (x 110 = ab)

    def to_image(pred) -> np.ndarray:
        out = pred[0, :, top:top + hs, left:left + ws_] * AB_MAX
        ab = out.permute(1, 2, 0).float().cpu().numpy()
        if (hs, ws_) != (h, w):
            ab = _resize(ab, (h, w))
        return ab.astype(np.float32)

    total = p.iterations * p.ensemble
    t0 = time.perf_counter()
    ab_sum = None
    for k in range(p.ensemble):
        net, z = member(k)
        opt = torch.optim.Adam(net.parameters(), lr=p.lr)
        for it in range(1, p.iterations + 1):
            pred = ab_of(net(z))
            loss = ((pred - target) ** 2 * mk).sum() / n_known
            if smooth is not None:
                padded = F.pad(pred, (1, 1, 1, 1), mode="replicate")
                avg = 0.0
                for j, (dr, dc) in enumerate(_color.LEVIN_OFFSETS):
                    avg = avg + smooth[j] * padded[:, :, 1 + dr:1 + dr + ph, 1 + dc:1 + dc + pw]
                resid = (pred - avg)[:, :, crop[0], crop[1]]
                loss = loss + p.smoothness * (resid ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done = k * p.iterations + it
            if done % p.yield_every == 0 or done == total:
                preview = None
                if p.preview_every and done % p.preview_every == 0:
                    preview = to_image(pred.detach())
                    if ab_sum is not None:  # show the running ensemble mean
                        preview = (ab_sum + preview) / (k + 1)
                yield ColorizeStep(done, total, float(loss.detach()),
                                   time.perf_counter() - t0, preview)
        # The output uses batch statistics, as during the fit (and as the reference DIP
        # code does): BatchNorm's running averages lag behind a net fitted to one image.
        with torch.no_grad():
            ab_k = to_image(ab_of(net(z)))
        ab_sum = ab_k if ab_sum is None else ab_sum + ab_k
        del net, opt
    ab = (ab_sum / p.ensemble).astype(np.float32)
    if p.refine > 0:
        ab = levin_ab(L, ab_hint, m_full, prior=ab, prior_weight=p.refine)
    return ab


def dip_ab(L: np.ndarray, ab_hint: np.ndarray, mask: np.ndarray, *,
           params: DIPColorParams | None = None, seed: int | None = None, device="auto",
           callback: Callable[[ColorizeStep], object] | None = None) -> np.ndarray:
    """Run :func:`dip_ab_steps` to the end; ``callback(step)`` is called on every Step."""
    gen = dip_ab_steps(L, ab_hint, mask, params=params, seed=seed, device=device)
    while True:
        try:
            step = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(step)


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------

def _check_method(method, allowed) -> str:
    if not isinstance(method, str) or method not in allowed:
        raise ValueError(f"method must be one of {', '.join(map(repr, allowed))}; got {method!r}")
    return method


def colorize_auto(image, *, method: str = "eccv16", weights=None, device="auto",
                  channel_axis: int | None = None) -> np.ndarray:
    """Colorize a grey (or re-colour an RGB) image automatically with a pretrained network.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3|4)
        Any size and dtype; an RGB image is re-coloured from its lightness.
    method : {"eccv16", "siggraph17"}
    weights : path, folder or nn.Module, optional
        Weight file (see :mod:`.weights`); default: search, then download.
    device : {"auto", "cpu", "cuda", "mps"} or torch.device
    channel_axis : int, optional

    Returns
    -------
    rgb : ndarray, shape (H, W, 3)
        uint8 if the input is uint8, else float32 in [0, 1].
    """
    method = _check_method(method, AUTO_METHODS)
    arr, _ = _split_image(image, channel_axis)
    L = lightness(arr)
    ab = network_ab(L, method, weights=weights, device=device)
    return _finish(L, ab, np.asarray(image).dtype == np.uint8)


def colorize_hints(image, hints, *, method: str = "siggraph17", hint_size: int = 5,
                   weights=None, device="auto", seed: int | None = None,
                   channel_axis: int | None = None, params: DIPColorParams | None = None,
                   callback: Callable[[ColorizeStep], object] | None = None) -> np.ndarray:
    """Colorize an image from colour hints.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3|4)
    hints : list of (row, col, colour)
        Colour as ``'#rrggbb'`` or an RGB triple (ints 0-255 or floats 0-1).
    method : {"siggraph17", "levin", "dip"}
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
        For ``dip``: called with each :class:`ColorizeStep`.

    Returns
    -------
    rgb : ndarray, shape (H, W, 3)
        uint8 if the input is uint8, else float32 in [0, 1].
    """
    method = _check_method(method, HINT_METHODS)
    arr, _ = _split_image(image, channel_axis)
    if hints is None or (hasattr(hints, "__len__") and len(hints) == 0):
        raise ValueError(
            f"method {method!r} needs at least one hint (row, col, colour); got none. "
            "Add hints, or use method='eccv16' or 'siggraph17' without hints for automatic "
            "colorization"
        )
    L = lightness(arr)
    h, w = L.shape
    _color._check_size(hint_size)
    if method == "siggraph17":
        scaled = _scale_hints(hints, (h, w), (NET_SIZE, NET_SIZE))
        L256 = _resize(L, (NET_SIZE, NET_SIZE))
        ab_hint, mask = encode_hints(L256, scaled, size=hint_size)
        ab = network_ab(L, "siggraph17", ab_hint=ab_hint, mask=mask, weights=weights,
                        device=device)
    else:
        ab_hint, mask = encode_hints(L, hints, size=hint_size)
        if method == "levin":
            ab = levin_ab(L, ab_hint, mask)
        else:
            ab = dip_ab(L, ab_hint, mask, params=params, seed=seed, device=device,
                        callback=callback)
    return _finish(L, ab, np.asarray(image).dtype == np.uint8)


def colorize(image, *, method: str = "eccv16", hints=None, hint_size: int = 5, weights=None,
             device="auto", seed: int | None = None, channel_axis: int | None = None,
             params: DIPColorParams | None = None,
             callback: Callable[[ColorizeStep], object] | None = None) -> np.ndarray:
    """Colorize a grey image, automatically or from colour hints.

    The result keeps the image's own full-resolution lightness; only the chroma (Lab a, b)
    is predicted.  The input array is never modified.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3|4)
        Grey image of any size and dtype (uint8, uint16, float ...), or an RGB(A) image,
        which is re-coloured from its lightness.
    method : {"eccv16", "siggraph17", "levin", "dip"}
        ``eccv16`` automatic (Zhang et al. 2016; no hints); ``siggraph17`` automatic or
        hint-guided (Zhang et al. 2017); ``levin`` propagation of hints (Levin et al.
        2004) and ``dip`` a Deep-Image-Prior colorizer fitted to the hints: both need
        hints and no trained weights.
    hints : list of (row, col, colour), optional
        Pixel position and colour (``'#rrggbb'`` or an RGB triple, integers 0-255 or
        floats 0-1).  Required for ``levin`` and ``dip``; see :func:`.color.read_hints_csv`.
    hint_size : int
        Side of each hint's square patch, odd (default 5).  For ``siggraph17`` it counts
        pixels of the 256 x 256 grid the network sees.
    weights : path, folder or torch.nn.Module, optional
        Pretrained weights for ``eccv16``/``siggraph17``: a file, a folder holding it,
        or a loaded network.  Default: ``$NAPARI_DEEP_PRIOR_WEIGHTS``, then the torch hub
        cache, then a download (see :mod:`napari_deep_prior.core.weights`).
    device : {"auto", "cpu", "cuda", "mps"} or torch.device
        ``"auto"`` picks cuda, then mps, then cpu.
    seed : int, optional
        Seed of the ``dip`` fit (reproducible on the CPU).
    channel_axis : int, optional
        Axis of the colour channels of an RGB(A) image; None for a grey image (an image
        of shape (H, W, 3|4) is taken as channels-last RGB(A)).
    params : DIPColorParams, optional
        Settings of the ``dip`` colorizer.
    callback : callable, optional
        ``dip`` only: called with a :class:`ColorizeStep` every few iterations.

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
    napari_deep_prior.core.weights.WeightsError
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
    method = _check_method(method, METHODS)
    has_hints = hints is not None and not (hasattr(hints, "__len__") and len(hints) == 0)
    if method == "eccv16" and has_hints:
        raise ValueError(
            "eccv16 takes no hints; use method='siggraph17', 'levin' or 'dip' to colorize "
            "from hints"
        )
    if method in ("levin", "dip") or (method == "siggraph17" and has_hints):
        return colorize_hints(image, hints, method=method, hint_size=hint_size,
                              weights=weights, device=device, seed=seed,
                              channel_axis=channel_axis, params=params, callback=callback)
    return colorize_auto(image, method=method, weights=weights, device=device,
                         channel_axis=channel_axis)


# --------------------------------------------------------------------------------------
# Colour suggestions
# --------------------------------------------------------------------------------------

class Suggestions(NamedTuple):
    """Colour suggestions at a pixel, most probable first.

    Attributes
    ----------
    rgb : ndarray, shape (k, 3), float64 in [0, 1]
        The swatches, pulled into gamut at the pixel's lightness.
    ab : ndarray, shape (k, 2)
    probability : ndarray, shape (k,)
        Share of the predicted distribution each swatch stands for.
    """

    rgb: np.ndarray
    ab: np.ndarray
    probability: np.ndarray


def _weighted_kmeans(points: np.ndarray, weights: np.ndarray, k: int, *, seed: int = 0,
                     iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Weighted k-means (k-means++ start, deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    w = weights / weights.sum()
    centers = [points[int(np.argmax(w))]]
    for _ in range(1, k):
        d2 = np.min(((points[:, None] - np.array(centers)[None]) ** 2).sum(-1), axis=1)
        prob = w * d2
        if prob.sum() <= 0:
            break
        centers.append(points[rng.choice(len(points), p=prob / prob.sum())])
    c = np.array(centers, dtype=np.float64)
    for _ in range(iterations):
        lab = np.argmin(((points[:, None] - c[None]) ** 2).sum(-1), axis=1)
        new = c.copy()
        for j in range(len(c)):
            sel = lab == j
            if w[sel].sum() > 0:
                new[j] = (points[sel] * w[sel, None]).sum(0) / w[sel].sum()
        if np.allclose(new, c):
            break
        c = new
    lab = np.argmin(((points[:, None] - c[None]) ** 2).sum(-1), axis=1)
    mass = np.array([w[lab == j].sum() for j in range(len(c))])
    return c, mass


def suggest_colors(L: np.ndarray, row: float, col: float, *, weights=None, device="auto",
                   k: int = 9, hints=None, hint_size: int = 5,
                   min_probability: float = 1e-4) -> Suggestions:
    """Colours the siggraph17 network finds likely at a pixel, clustered into swatches.

    The softmax of the network's ``model_class`` head gives a distribution over 529 ab
    bins (a 23 x 23 grid, step 10) at the pixel; its bins are clustered by weighted
    k-means into ``k`` swatches, each pulled into gamut at the pixel's lightness.

    Parameters
    ----------
    L : ndarray, shape (H, W)
        Lightness 0-100 (see :func:`lightness`).
    row, col : float
        The pixel.
    weights, device : see :func:`colorize`.
    k : int
        Number of swatches (fewer when the distribution has fewer distinct bins).
    hints : list of (row, col, colour), optional
        Hints already placed: the distribution is conditioned on them.
    hint_size : int
    min_probability : float
        Bins below this probability are ignored.

    Returns
    -------
    Suggestions
        ``rgb`` (k, 3), ``ab`` (k, 2) and ``probability`` (k,), most probable first.
    """
    import torch
    import torch.nn.functional as F

    L = np.asarray(L, np.float64)
    if L.ndim != 2:
        raise ValueError(
            f"L must be a 2-D lightness image (H, W), got shape {L.shape}; use lightness(image)"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    h, w = L.shape
    (r, c, _), = _color.normalize_hints([(row, col, (0, 0, 0))], (h, w))
    dev = _resolve(device)
    net = _get_net("siggraph17", weights, dev)
    L256 = _resize(L, (NET_SIZE, NET_SIZE))
    ab_hint = mask = None
    if hints is not None and len(hints):
        ab_hint, mask = encode_hints(L256, _scale_hints(hints, (h, w), (NET_SIZE, NET_SIZE)),
                                     size=hint_size)
    with torch.inference_mode():
        tL = torch.from_numpy(L256.astype(np.float32))[None, None].to(dev)
        th = tm = None
        if ab_hint is not None:
            th = torch.from_numpy(ab_hint).permute(2, 0, 1)[None].to(dev)
            tm = torch.from_numpy(mask)[None, None].to(dev)
        dist = net.class_distribution(tL, th, tm)  # (1, 529, 64, 64)
        # Sample the distribution map at the pixel's position (bilinear, normalised coords).
        gy = (r + 0.5) / h * 2 - 1
        gx = (c + 0.5) / w * 2 - 1
        grid = torch.tensor([[[[gx, gy]]]], dtype=dist.dtype, device=dist.device)
        p = F.grid_sample(dist, grid, mode="bilinear", align_corners=False)[0, :, 0, 0]
        p = p.float().cpu().numpy().astype(np.float64)
    from .colorizers import ab_grid

    bins = ab_grid().numpy().astype(np.float64)
    keep = p >= min_probability
    if not keep.any():
        keep = p >= p.max()
    pts, wts = bins[keep], p[keep]
    centers, mass = _weighted_kmeans(pts, wts, min(int(k), len(pts)))
    order = np.argsort(-mass)
    centers, mass = centers[order], mass[order]
    ab = gamut_clip(centers, L[r, c])
    lab = np.concatenate([np.full((len(ab), 1), L[r, c]), ab], axis=1)
    rgb = lab_to_rgb(lab)
    return Suggestions(rgb, ab, mass / mass.sum())
