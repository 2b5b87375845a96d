"""Colour suggestions at a pixel: the siggraph17 network's likely colours, as swatches.

References
----------
.. [1] R. Zhang et al., "Real-Time User-Guided Image Colorization with Learned Deep
       Priors", ACM SIGGRAPH 2017.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import pretrained
from .hints import normalize_hints
from .inputs import resize
from .lab import gamut_clip, lab_to_rgb

__all__ = ["SUGGEST_NETWORK", "Suggestions", "suggest_colors"]

#: The network whose class distribution gives the suggestions (its weights are needed).
SUGGEST_NETWORK = "siggraph17"


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


def _weighted_kmeans(
    points: np.ndarray, weights: np.ndarray, k: int, *, seed: int = 0, iterations: int = 30
) -> tuple[np.ndarray, np.ndarray]:
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


def suggest_colors(
    L: np.ndarray,
    row: float,
    col: float,
    *,
    weights=None,
    device="auto",
    k: int = 9,
    hints=None,
    hint_size: int = 5,
    min_probability: float = 1e-4,
) -> Suggestions:
    """Colours the siggraph17 network finds likely at a pixel, clustered into swatches.

    The softmax of the network's ``model_class`` head gives a distribution over 529 ab
    bins (a 23 x 23 grid, step 10) at the pixel; its bins are clustered by weighted
    k-means into ``k`` swatches, each pulled into gamut at the pixel's lightness.

    Parameters
    ----------
    L : ndarray, shape (H, W)
        Lightness 0-100 (see :func:`.inputs.lightness`).
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

    from ..device import resolve_device

    L = np.asarray(L, np.float64)
    if L.ndim != 2:
        raise ValueError(f"L must be a 2-D lightness image (H, W), got shape {L.shape}; use lightness(image)")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    h, w = L.shape
    ((r, c, _),) = normalize_hints([(row, col, (0, 0, 0))], (h, w))
    dev = resolve_device(device)
    net = pretrained.get_net(SUGGEST_NETWORK, weights, dev)
    L_net = resize(L, (pretrained.NET_SIZE, pretrained.NET_SIZE))
    ab_hint = mask = None
    if hints is not None and len(hints):
        ab_hint, mask = pretrained.encode_net_hints(L, hints, size=hint_size)
    with torch.inference_mode():
        tL = torch.from_numpy(L_net.astype(np.float32))[None, None].to(dev)
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
    from .networks import ab_grid

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
