"""The pretrained networks of Zhang et al. as colorizers: ``eccv16`` and ``siggraph17``.

The networks see the lightness resized to :data:`NET_SIZE` x :data:`NET_SIZE` (their training
resolution); their ab output is resized bilinearly back to the image, whose own
full-resolution lightness is kept.  ``siggraph17`` hints are encoded as patches in that
grid.  Weights: :mod:`.weights` (loaded networks are kept in memory between calls).

References
----------
.. [1] R. Zhang, P. Isola, A. A. Efros, "Colorful Image Colorization", ECCV 2016.
.. [2] R. Zhang et al., "Real-Time User-Guided Image Colorization with Learned Deep
       Priors", ACM SIGGRAPH 2017.
"""

from __future__ import annotations

import os

import numpy as np

from .base import ABStep, Colorizer
from .hints import encode_hints, scale_hints
from .inputs import resize

__all__ = ["NET_SIZE", "ECCV16Colorizer", "Siggraph17Colorizer", "clear_model_cache", "get_net", "network_ab"]

#: Side of the square grid the pretrained networks see (their training resolution).
NET_SIZE = 256

_MODEL_CACHE: dict = {}


def clear_model_cache() -> None:
    """Forget the pretrained networks kept in memory between calls."""
    _MODEL_CACHE.clear()


def get_net(name: str, weights, device):
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


def network_ab(
    L: np.ndarray,
    model: str = "eccv16",
    *,
    ab_hint: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    weights=None,
    device="auto",
) -> np.ndarray:
    """ab predicted by a pretrained network for a lightness image, at the image's size.

    Parameters
    ----------
    L : ndarray, shape (H, W)
        Lightness, 0-100 (any size; the network sees it resized to NET_SIZE x NET_SIZE).
    model : {"eccv16", "siggraph17"}
    ab_hint, mask : ndarray, shape (NET_SIZE, NET_SIZE, 2) and (NET_SIZE, NET_SIZE), optional
        siggraph17 hints already encoded in the network's grid.
    weights : path, folder or nn.Module, optional
    device : str or torch.device

    Returns
    -------
    ab : ndarray, shape (H, W, 2), float32
    """
    import torch
    import torch.nn.functional as F

    from ..device import resolve_device

    if model not in ("eccv16", "siggraph17"):
        raise ValueError(f"model must be 'eccv16' or 'siggraph17', got {model!r}")
    if (ab_hint is not None or mask is not None) and model != "siggraph17":
        raise ValueError("hints can only be given to the 'siggraph17' model")
    dev = resolve_device(device)
    net = get_net(model, weights, dev)
    h, w = L.shape
    L_net = resize(L, (NET_SIZE, NET_SIZE))
    with torch.inference_mode():
        tL = torch.from_numpy(L_net.astype(np.float32))[None, None].to(dev)
        if model == "siggraph17":
            th = tm = None
            if ab_hint is not None:
                th = torch.from_numpy(np.ascontiguousarray(ab_hint, np.float32)).permute(2, 0, 1)[None].to(dev)
                tm = torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None, None].to(dev)
            ab = net(tL, th, tm)
        else:
            ab = net(tL)
        ab = F.interpolate(
            ab.float(),
            size=(h, w),
            mode="bilinear",
            align_corners=False,
            antialias=h < ab.shape[-2] or w < ab.shape[-1],
        )
        return ab[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)


def encode_net_hints(L: np.ndarray, hints, *, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Hints in the image's pixels encoded in the NET_SIZE x NET_SIZE grid the network sees."""
    grid = (NET_SIZE, NET_SIZE)
    return encode_hints(resize(L, grid), scale_hints(hints, L.shape, grid), size=size)


class ECCV16Colorizer(Colorizer):
    """``eccv16``: automatic colorization by the network of Zhang, Isola, Efros (2016)."""

    name = "eccv16"
    title = "eccv16 (network, Zhang 2016)"
    description = "eccv16: automatic, the pretrained network of Zhang et al. 2016 (weights ~130 MB)."
    automatic = True
    accepts_hints = False
    needs_weights = True
    live = True

    def ab_steps(self, L, hints, options):
        ab = network_ab(L, self.name, weights=options.weights, device=options.device)
        yield ABStep(1, 1)
        return ab


class Siggraph17Colorizer(Colorizer):
    """``siggraph17``: automatic or hint-guided, the network of Zhang et al. (2017)."""

    name = "siggraph17"
    title = "siggraph17 (network, Zhang 2017; live with its weights)"
    description = (
        "siggraph17: automatic or from hints, the pretrained network of Zhang et al. 2017 "
        "(weights ~130 MB); live once its weights are present."
    )
    automatic = True
    accepts_hints = True
    needs_weights = True
    live = True

    def ab_steps(self, L, hints, options):
        ab_hint = mask = None
        if hints:
            ab_hint, mask = encode_net_hints(L, hints, size=options.hint_size)
        ab = network_ab(L, self.name, ab_hint=ab_hint, mask=mask, weights=options.weights, device=options.device)
        yield ABStep(1, 1)
        return ab
