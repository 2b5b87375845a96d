"""The network's fill of the holes, weighed against a classical fill on held-out known pixels.

A masked fit (inpainting) leaves out of its loss a few known pixels chosen in the shape of the
holes (:func:`blend_pixels`: the hole mask shifted by a third of the image, kept where it lands
on known pixels, whole connected pieces at a time).  After the fit, the network's estimate ``e``
and scikit-image's biharmonic fill ``b`` (computed with those pixels as holes too) are compared
on them: the weight ``w`` in ``b + w (e - b)`` that predicts them best (least squares, clipped to
[0, 1]) is the weight of the network's fill in the holes (:func:`blend_fill`; the classical fill
there is recomputed with the held-out pixels known).  Where the network fills better, ``w`` is
near 1; on thin strokes over a smooth photograph, where the biharmonic fill is the better one, it
falls; in between, the mix of the two beats both.  The fit (:class:`~.fit.DIPFit`) does not blend
scattered holes (half the pixels missing at random): known pixels taken from between them cost
fine texture more than the blend gains.  For large holes it keeps at least half of the
network's fill (``min_weight``): the held-out pieces are then few and large (1-10), and the share
they choose scatters (0.00-0.23 where 0.50-0.84 was best on three of 21 measured cases); where it
chose less than one half, the mean of the two fills was never the worse (README).  Pure numpy and
scikit-image.

References
----------
.. [1] D. Ulyanov, A. Vedaldi, V. Lempitsky, "Deep Image Prior", CVPR 2018.
.. [2] S. B. Damelin, N. S. Hoang, "On surface completion and image inpainting by biharmonic
   functions: numerical aspects", Int. J. Math. Math. Sci. 2018 (``skimage.restoration.inpaint_biharmonic``).
"""

from __future__ import annotations

import numpy as np

#: Fewest held-out pixels that make the weight meaningful; with fewer there is no blend.
MIN_BLEND_PIXELS = 64
#: Largest connected hole (pixels) the classical fill is computed for: its cost grows with the
#: largest hole (scikit-image solves one sparse system per hole; a 400 x 400 px hole took 8.6 s
#: and 0.4 GB on one CPU core), so an image with a larger one keeps the network's fill.
MAX_BLEND_HOLE_PIXELS = 2**18


def blend_pixels(known: np.ndarray, fraction: float, seed: int) -> np.ndarray | None:
    """Known pixels held out of the loss, shaped like the holes; None when too few.

    Parameters
    ----------
    known : ndarray of bool, shape (H, W)
        True where the pixel is known.
    fraction : float
        About this fraction of the known pixels is held out (whole pieces, so a little more).
    seed : int
        Seeds the order in which the pieces are taken.

    Returns
    -------
    held : ndarray of bool, shape (H, W), or None
        None when ``fraction`` is 0, there are no holes, a hole has more than
        :data:`MAX_BLEND_HOLE_PIXELS` pixels, or fewer than :data:`MIN_BLEND_PIXELS` pixels
        (or all the known ones) would be held out.
    """
    from scipy import ndimage

    known = np.asarray(known, dtype=bool)
    if known.ndim != 2:
        raise ValueError(f"known must be a 2D mask, got shape {known.shape}")
    n_known = int(known.sum())
    if fraction <= 0 or n_known == known.size:
        return None
    eight = np.ones((3, 3), bool)
    holes, n_holes = ndimage.label(~known, structure=eight)
    if n_holes and np.bincount(holes.ravel())[1:].max() > MAX_BLEND_HOLE_PIXELS:
        return None
    h, w = known.shape
    shifted = np.roll(~known, (h // 3, w // 3), axis=(0, 1)) & known
    labels, n = ndimage.label(shifted, structure=eight)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB1E4D])).permutation(np.arange(1, n + 1))
    total = np.cumsum(sizes[order])
    take = int(np.searchsorted(total, fraction * n_known)) + 1
    chosen = np.zeros(n + 1, dtype=bool)
    chosen[order[:take]] = True
    held = chosen[labels]
    n_held = int(held.sum())
    if n_held < MIN_BLEND_PIXELS or n_known - n_held < MIN_BLEND_PIXELS:
        return None
    return held


def _biharmonic(image: np.ndarray, holes: np.ndarray) -> np.ndarray:
    from skimage.restoration import inpaint_biharmonic

    return inpaint_biharmonic(image, holes, channel_axis=-1).astype(np.float32, copy=False)


def blend_weight(estimate: np.ndarray, classical: np.ndarray, target: np.ndarray) -> float:
    """The network's share ``w`` in [0, 1] of ``classical + w (estimate - classical)`` that predicts
    ``target`` best (least squares, clipped); the three are the held-out pixels' values.  1 when the
    two fills agree there (nothing to weigh: the network's fill is kept)."""
    d = np.asarray(estimate, dtype=np.float32) - classical
    den = float(np.sum(d.astype(np.float64) ** 2))
    if den <= 0:
        return 1.0
    return float(np.clip(np.sum(d * (target - classical), dtype=np.float64) / den, 0.0, 1.0))


def blend_fill(estimate: np.ndarray, target: np.ndarray, known: np.ndarray, held: np.ndarray, min_weight: float = 0.0):
    """The holes' fill ``b + w (estimate - b)``, ``w`` chosen on the held-out pixels.

    Parameters
    ----------
    estimate : ndarray, shape (H, W, C)
        The network's estimate (fitted without the ``held`` pixels).
    target : ndarray, shape (H, W, C)
        The input: its known pixels (those of ``known``, ``held`` included) are read.
    known : ndarray of bool, shape (H, W)
        True where the pixel is known (``held`` is a subset).
    held : ndarray of bool, shape (H, W)
        The known pixels the fit did not see (:func:`blend_pixels`).
    min_weight : float
        The least share the network keeps, in [0, 1]: ``w`` is ``max(min_weight, share chosen
        on the held-out pixels)`` (the fit passes ``DIPParams.fill_blend_large_min`` for large
        holes, 0 otherwise).

    Returns
    -------
    image : ndarray, shape (H, W, C), float32
        ``estimate`` with its holes replaced by the blend (known pixels as in ``estimate``).
    weight : float
        ``w`` in [0, 1]: the network's share of the fill.
    """
    if not (np.isfinite(min_weight) and 0.0 <= min_weight <= 1.0):
        raise ValueError(f"min_weight must be in [0, 1], got {min_weight}")
    holes = ~known
    y = np.asarray(target, dtype=np.float32)
    e = np.asarray(estimate, dtype=np.float32)
    # the classical fill with the held-out pixels as holes too: what it would predict there
    b_held = _biharmonic(np.where((holes | held)[..., None], 0.0, y), holes | held)[held]
    weight = max(float(min_weight), blend_weight(e[held], b_held, y[held]))
    out = e.copy()
    if weight < 1.0:
        b = _biharmonic(np.where(holes[..., None], 0.0, y), holes)[holes]
        out[holes] = b + weight * (e[holes] - b)
    return out, weight
