"""Colorization by optimisation (Levin, Lischinski, Weiss 2004): a sparse solver and its colorizer.

Hint colours propagate to neighbouring pixels of similar lightness: each chroma channel
minimises ``sum_r (U(r) - sum_s w_rs U(s))^2`` with the hinted pixels fixed (:func:`levin`).
:func:`levin_ab` solves at most :data:`LEVIN_MAX_PIXELS` pixels (larger images on a reduced
grid); :class:`LevinColorizer` is the ``levin`` method.

References
----------
.. [1] A. Levin, D. Lischinski, Y. Weiss, "Colorization using Optimization",
       ACM SIGGRAPH 2004.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .base import ABStep, Colorizer
from .hints import encode_hints
from .inputs import resize, working_shape

__all__ = [
    "LEVIN_MAX_PIXELS",
    "LEVIN_OFFSETS",
    "LevinColorizer",
    "levin",
    "levin_ab",
    "levin_affinity",
    "levin_system",
    "levin_weights",
]

#: Levin's sparse solve runs at most at this many pixels (about 2 s on a laptop core); larger
#: images are solved at a reduced size and the chroma is upsampled (L stays full size).
LEVIN_MAX_PIXELS = 512 * 512

#: Levin et al.: sigma_r^2 = 0.6 * (luminance variance of the 3x3 window), floored.
_LEVIN_VAR_SCALE = 0.6
_LEVIN_VAR_FLOOR = 2e-6
#: The most similar neighbour keeps at least this (unnormalised) weight, so a pixel whose
#: neighbours all differ strongly from it is still tied to the closest one (as in the
#: authors' code) instead of getting an all-zero, undefined row.
_LEVIN_MIN_WEIGHT = 0.01

_LEVIN_WEIGHT_FLOOR = 1e-10
#: Blocks of the nested-dissection ordering at most this many pixels a side are left whole.
_ND_LEAF = 4

#: Neighbour offsets (drow, dcol) of the 3x3 window, in the order of levin_weights().
LEVIN_OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def levin_weights(Y: np.ndarray) -> np.ndarray:
    """Normalised 3x3-window affinities of Levin et al. (2004), one plane per neighbour.

    ``weights[k, r, c]`` is the weight of neighbour ``(r + dr_k, c + dc_k)`` of pixel
    ``(r, c)``, with the offsets ``(dr_k, dc_k)`` of :data:`LEVIN_OFFSETS`:
    ``exp(-(Y(r) - Y(s))^2 / (2 sigma_r^2))`` normalised to sum 1 over the neighbours,
    ``sigma_r^2 = 0.6 * var(window)`` (floored at 2e-6, and large enough that the closest
    neighbour has weight >= 0.01).  Neighbours outside the image have weight 0.

    Parameters
    ----------
    Y : ndarray, shape (H, W)
        Luminance in [0, 1] (e.g. L / 100).

    Returns
    -------
    weights : ndarray, shape (8, H, W), float64
    """
    Y = np.asarray(Y, dtype=np.float64)
    h, w = Y.shape
    pad = np.pad(Y, 1, constant_values=np.nan)
    neigh = np.stack([pad[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w] for dr, dc in LEVIN_OFFSETS])
    valid = ~np.isnan(neigh)
    window = np.concatenate([neigh, Y[None]], axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        var = np.nanvar(window, axis=0)
    d2 = np.where(valid, (neigh - Y[None]) ** 2, np.inf)
    two_sigma2 = 2.0 * np.maximum(_LEVIN_VAR_SCALE * var, _LEVIN_VAR_FLOOR)
    # Keep the closest neighbour's weight above _LEVIN_MIN_WEIGHT.
    two_sigma2 = np.maximum(two_sigma2, d2.min(axis=0) / -np.log(_LEVIN_MIN_WEIGHT))
    # The tiny floor keeps every pair of grid neighbours connected, so the system stays
    # non-singular even where the exponential underflows to 0 on an extreme edge.
    wts = np.where(valid, np.maximum(np.exp(-d2 / two_sigma2[None]), _LEVIN_WEIGHT_FLOOR), 0.0)
    wts /= wts.sum(axis=0, keepdims=True)
    return wts


def levin_affinity(Y: np.ndarray) -> sp.csr_matrix:
    """The normalised affinity matrix W of Levin et al. (2004) (see :func:`levin_weights`).

    Returns
    -------
    W : scipy.sparse.csr_matrix, shape (H*W, H*W)
        ``W[r, s]`` is the weight of neighbour s in the average of pixel r; rows sum to 1.
    """
    wts = levin_weights(Y)
    h, w = wts.shape[1:]
    idx = np.arange(h * w).reshape(h, w)
    pad_idx = np.pad(idx, 1, constant_values=-1)
    cols = np.stack([pad_idx[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w] for dr, dc in LEVIN_OFFSETS])
    rows = np.broadcast_to(idx[None], cols.shape)
    keep = (cols >= 0).ravel()
    return sp.csr_matrix((wts.ravel()[keep], (rows.ravel()[keep], cols.ravel()[keep])), shape=(h * w, h * w))


def _nested_dissection(h: int, w: int) -> np.ndarray:
    """A nested-dissection ordering of the pixels of an h x w grid (3x3 neighbourhoods).

    A single row or column separates the two halves of a block for the 9-point stencil;
    ordering each half before its separator, recursively, keeps the LU fill near
    O(n log n), much less than SuperLU's own orderings on this problem (1.4 s instead of
    2.4-10 s for 512 x 512).
    """
    idx = np.arange(h * w).reshape(h, w)
    out: list[np.ndarray] = []
    stack = [(idx, False)]
    # Iterative post-order: (block, separator_already_split)
    while stack:
        block, emit = stack.pop()
        if emit:
            out.append(block.ravel())
            continue
        bh, bw = block.shape
        if bh == 0 or bw == 0:
            continue
        if bh <= _ND_LEAF and bw <= _ND_LEAF:
            out.append(block.ravel())
            continue
        if bh >= bw:
            m = bh // 2
            parts = (block[:m], block[m + 1 :], block[m])
        else:
            m = bw // 2
            parts = (block[:, :m], block[:, m + 1 :], block[:, m])
        # push in reverse so that first half, second half, then separator are emitted
        stack.append((parts[2], True))
        stack.append((parts[1], False))
        stack.append((parts[0], False))
    return np.concatenate(out)


def levin_system(Y: np.ndarray, known: np.ndarray, *, screen: float = 0.0):
    """Factorise Levin's system for the unknown pixels once.

    Parameters
    ----------
    Y : ndarray, shape (H, W)
        Luminance in [0, 1].
    known : ndarray of bool, shape (H, W)
        Pixels whose colour is fixed.
    screen : float
        Weight mu of a pull towards a prior: each unknown pixel solves
        ``(1 + mu) U(r) - sum_s w_rs U(s) = mu P(r)`` (0: Levin's original system).

    Returns
    -------
    solve : callable
        ``solve(values, prior=None)`` takes the (H, W) channel with the known pixels set
        (and the (H, W) prior P when ``screen`` > 0) and returns the propagated channel.
    """
    h, w = Y.shape
    n = h * w
    known = np.asarray(known, bool).ravel()
    A = ((1.0 + screen) * sp.identity(n, format="csr") - levin_affinity(Y)).tocsr()
    order = _nested_dissection(h, w)
    unk = order[~known[order]]
    kn = np.flatnonzero(known)
    A_u = A[unk]
    A_uu = A_u[:, unk].tocsc()
    A_uk = A_u[:, kn].tocsr()
    lu = None
    if unk.size:
        # I - W is diagonally dominant: no pivoting needed, which keeps the ordering.
        lu = spla.splu(A_uu, permc_spec="NATURAL", diag_pivot_thresh=0.0, options=dict(SymmetricMode=True))

    def solve(values: np.ndarray, prior: np.ndarray | None = None) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64).ravel()
        out = v.copy()
        if lu is not None:
            rhs = -(A_uk @ v[kn]) if kn.size else np.zeros(unk.size)
            if screen and prior is not None:
                rhs = rhs + screen * np.asarray(prior, dtype=np.float64).ravel()[unk]
            out[unk] = lu.solve(rhs)
        return out.reshape(h, w)

    return solve


def levin(
    L: np.ndarray, ab_hint: np.ndarray, mask: np.ndarray, *, prior: np.ndarray | None = None, prior_weight: float = 0.0
) -> np.ndarray:
    """Propagate hint colours by the optimisation of Levin, Lischinski and Weiss (2004).

    Each chroma channel U minimises ``sum_r (U(r) - sum_s w_rs U(s))^2`` over the pixels
    without a hint, with the hinted pixels fixed; ``w_rs`` are the normalised 3x3-window
    luminance affinities (:func:`levin_affinity`).  One sparse system is factorised once
    and solved for a and b.  A 512 x 512 image takes about a second.

    Parameters
    ----------
    L : ndarray, shape (H, W)
        Lightness, 0-100.
    ab_hint : ndarray, shape (H, W, 2)
        Hint ab values (used where ``mask`` is set).
    mask : ndarray, shape (H, W)
        Non-zero where a hint is given.
    prior : ndarray, shape (H, W, 2), optional
        A chroma estimate to fall back on far from the hints (screened propagation):
        unknown pixels solve ``(1 + mu) U(r) - sum_s w_rs U(s) = mu P(r)``, so hint
        colours dominate within about ``1 / sqrt(mu)`` pixels and the prior beyond.
    prior_weight : float
        mu above (0: plain Levin; the prior is ignored).

    Returns
    -------
    ab : ndarray, shape (H, W, 2), float32

    Raises
    ------
    ValueError
        If there is no hint at all, or the shapes disagree.

    References
    ----------
    .. [1] A. Levin, D. Lischinski, Y. Weiss, "Colorization using Optimization",
           ACM SIGGRAPH 2004.

    Examples
    --------
    >>> L = np.full((32, 32), 60.0)
    >>> ab_hint, mask = encode_hints(L, [(4, 4, '#3060c0')], size=3)
    >>> ab = levin(L, ab_hint, mask)
    >>> bool(np.allclose(ab[30, 30], ab_hint[4, 4], atol=0.5))
    True
    """
    L = np.asarray(L, dtype=np.float64)
    ab_hint = np.asarray(ab_hint, dtype=np.float64)
    known = np.asarray(mask) > 0
    if L.ndim != 2 or ab_hint.shape != L.shape + (2,) or known.shape != L.shape:
        raise ValueError(
            f"levin needs L (H, W), ab_hint (H, W, 2) and mask (H, W); got shapes {L.shape}, "
            f"{ab_hint.shape} and {known.shape}"
        )
    mu = float(prior_weight) if prior is not None else 0.0
    if mu < 0:
        raise ValueError(f"prior_weight must be >= 0, got {prior_weight}")
    if mu > 0:
        prior = np.asarray(prior, dtype=np.float64)
        if prior.shape != L.shape + (2,):
            raise ValueError(f"prior must have shape {L.shape + (2,)}, got {prior.shape}")
    if not known.any() and mu == 0:
        raise ValueError("levin needs at least one hint (the mask is empty); add a hint")
    solve = levin_system(L / 100.0, known, screen=mu)
    out = np.empty(L.shape + (2,), np.float32)
    for ch in range(2):
        vals = np.where(known, ab_hint[..., ch], 0.0)
        out[..., ch] = solve(vals, prior[..., ch] if mu > 0 else None)
    return out


def levin_ab(
    L: np.ndarray,
    ab_hint: np.ndarray,
    mask: np.ndarray,
    *,
    max_pixels: int | None = None,
    prior: np.ndarray | None = None,
    prior_weight: float = 0.0,
) -> np.ndarray:
    """Levin propagation of encoded hints, solved at most at ``max_pixels`` pixels.

    Larger images are solved on a reduced grid (hints carried over as area averages) and
    the ab result is upsampled bilinearly; the lightness keeps its full resolution.
    ``max_pixels`` defaults to :data:`LEVIN_MAX_PIXELS`.  ``prior`` and ``prior_weight``:
    screened propagation, see :func:`levin`.

    Returns
    -------
    ab : ndarray, shape (H, W, 2), float32
    """
    h, w = L.shape
    ws = working_shape((h, w), LEVIN_MAX_PIXELS if max_pixels is None else max_pixels)
    if ws == (h, w):
        return levin(L, ab_hint, mask, prior=prior, prior_weight=prior_weight)
    m = (np.asarray(mask) > 0).astype(np.float64)
    Ls = resize(L, ws)
    ms = resize(m, ws)
    abs_ = resize(np.asarray(ab_hint, np.float64) * m[..., None], ws)
    known = ms > 0.25
    abs_ = np.where(known[..., None], abs_ / np.maximum(ms, 1e-6)[..., None], 0.0)
    if not known.any():  # hints smaller than a working pixel: keep the strongest ones
        known = ms >= ms.max() * 0.5
        abs_ = np.where(
            known[..., None],
            resize(np.asarray(ab_hint, np.float64) * m[..., None], ws) / np.maximum(ms, 1e-6)[..., None],
            0.0,
        )
    prior_s = None if prior is None else resize(np.asarray(prior, np.float64), ws)
    ab = levin(Ls, abs_, known, prior=prior_s, prior_weight=prior_weight)
    return resize(ab, (h, w)).astype(np.float32)


class LevinColorizer(Colorizer):
    """``levin``: hint colours spread to neighbours of similar lightness (Levin et al. 2004)."""

    name = "levin"
    title = "levin (propagation; live, no weights)"
    description = (
        "levin: hint colours spread to neighbours of similar brightness (Levin et al. 2004); instant, no weights."
    )
    automatic = False
    accepts_hints = True
    live = True

    def ab_steps(self, L, hints, options):
        ab_hint, mask = encode_hints(L, hints, size=options.hint_size)
        ab = levin_ab(L, ab_hint, mask)
        yield ABStep(1, 1)
        return ab
