"""Sample data for the plugin (File > Open Sample > Deep Prior).

Every sample is small (256 x 256), made from images bundled with scikit-image, and
corrupted with a fixed seed, so the same sample is the same array on every machine.
Only numpy, scipy and scikit-image are imported here (no torch, no Qt).
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["astronaut_pair", "noisy_grey", "noisy_colour", "fluorescence_poisson", "damaged_with_mask"]

#: Seed of every synthetic corruption.
SEED = 2018
#: Gaussian noise level of the noisy samples, in 8-bit grey levels (the paper's sigma = 25).
SIGMA = 25.0
#: Peak photon count of the fluorescence sample (low light: strong shot noise).
PEAK_PHOTONS = 12.0
#: Layer metadata key naming a layer's noise model ("gaussian" or "poisson"): the DIP Denoise
#: widget preselects that model when such a layer becomes its input.
NOISE_MODEL_KEY = "dip_noise_model"


def _add_gaussian(clean_u8: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    if not (isinstance(sigma, (int, float, np.integer, np.floating)) and np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma (the noise level in 0..255 grey levels) must be a finite number >= 0, got {sigma!r}")
    rng = np.random.default_rng(seed)
    noisy = clean_u8.astype(np.float64) + sigma * rng.standard_normal(clean_u8.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def noisy_grey():
    """Cameraman (256 x 256, grey, uint8) with Gaussian noise of sigma = 25."""
    from skimage import data

    clean = data.camera()[40:296, 150:406]
    noisy = _add_gaussian(clean, SIGMA, SEED)
    return [
        (
            noisy,
            {
                "name": "cameraman (noisy, σ=25)",
                "colormap": "gray",
                "contrast_limits": (0, 255),
                "metadata": {NOISE_MODEL_KEY: "gaussian"},
            },
        )
    ]


def astronaut_pair(
    size: int = 256, sigma: float = SIGMA, seed: int = SEED + 1, centre: tuple[int, int] = (148, 268)
) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) uint8 RGB crops of scikit-image's astronaut with Gaussian noise.

    The ``size`` x ``size`` crop around ``centre`` (clipped to the image); ``sigma`` in 8-bit
    grey levels.  The command line's demo uses it (a 128 px crop of the face), the napari
    sample :func:`noisy_colour` its 256 px default.
    """
    from skimage import data

    clean = data.astronaut()
    h, w = clean.shape[:2]
    size = int(min(max(size, 16), h, w))
    top = max(0, min(h - size, centre[0] - size // 2))
    left = max(0, min(w - size, centre[1] - size // 2))
    clean = clean[top : top + size, left : left + size]
    return clean, _add_gaussian(clean, sigma, seed)


def noisy_colour():
    """Astronaut (256 x 256, RGB, uint8) with Gaussian noise of sigma = 25 per channel."""
    _clean, noisy = astronaut_pair()
    return [(noisy, {"name": "astronaut (noisy, σ=25)", "rgb": True, "metadata": {NOISE_MODEL_KEY: "gaussian"}})]


def _cached_mitosis():
    """skimage's human_mitosis image if it is already downloaded (never downloads)."""
    try:
        from skimage.data._fetchers import _image_fetcher  # private, hence guarded

        path = os.path.join(str(_image_fetcher.abspath), "data", "mitosis.tif")
        if not os.path.exists(path):
            return None
        from skimage import data

        return data.human_mitosis()
    except Exception:  # noqa: BLE001 - any failure: fall back to the synthetic image
        return None


def _synthetic_nuclei(shape=(256, 256), seed: int = SEED) -> np.ndarray:
    """Fluorescent-nucleus-like ground truth in [0, 1]: textured blobs on a dim background."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros(shape)
    for _ in range(28):
        cy, cx = rng.uniform(10, h - 10), rng.uniform(10, w - 10)
        ry, rx = rng.uniform(7, 17), rng.uniform(7, 17)
        theta = rng.uniform(0, np.pi)
        c, s = np.cos(theta), np.sin(theta)
        u = ((yy - cy) * c + (xx - cx) * s) / ry
        v = (-(yy - cy) * s + (xx - cx) * c) / rx
        blob = np.clip(1.0 - (u**2 + v**2), 0, None) ** 0.3
        img = np.maximum(img, rng.uniform(0.45, 1.0) * blob)
    texture = ndi.gaussian_filter(rng.standard_normal(shape), 2.0)
    texture /= np.abs(texture).max()
    img = ndi.gaussian_filter(img * (1 + 0.35 * texture), 1.2)
    img = 0.06 + 0.94 * img / img.max()
    return img


def fluorescence_poisson():
    """Fluorescence-like nuclei at low light (peak ≈ 12 photons) with Poisson noise, uint16.

    Uses a 256 x 256 crop of scikit-image's ``human_mitosis`` when it has already been
    downloaded, and a synthetic nucleus image otherwise.  Pixels are 0.2 µm; fit it with
    the Poisson noise model.
    """
    mito = _cached_mitosis()
    if mito is not None:
        clean = mito[100:356, 100:356].astype(np.float64)
        clean = (clean - clean.min()) / max(float(np.ptp(clean)), 1e-12)
        clean = 0.04 + 0.96 * clean
        source = "mitosis"
    else:
        clean = _synthetic_nuclei()
        source = "nuclei"
    rng = np.random.default_rng(SEED + 2)
    counts = rng.poisson(PEAK_PHOTONS * clean).astype(np.uint16)
    kwargs = {
        "name": f"{source} (Poisson, ≈{PEAK_PHOTONS:g} photons)",
        "colormap": "magma",
        "contrast_limits": (0, int(PEAK_PHOTONS * 1.2)),
        "scale": (0.2, 0.2),
        "units": ("micrometer", "micrometer"),
        "axis_labels": ("y", "x"),
        "metadata": {NOISE_MODEL_KEY: "poisson"},
    }
    return [(counts, kwargs)]


def _scratches(shape, seed: int) -> np.ndarray:
    """A deterministic damage mask: thick random strokes plus a few blotches."""
    from scipy import ndimage as ndi
    from skimage.draw import disk, line

    rng = np.random.default_rng(seed)
    h, w = shape
    mask = np.zeros(shape, dtype=bool)
    for _ in range(9):
        r0, c0 = rng.integers(0, h), rng.integers(0, w)
        length = rng.uniform(40, 140)
        angle = rng.uniform(0, np.pi)
        r1 = int(np.clip(r0 + length * np.sin(angle), 0, h - 1))
        c1 = int(np.clip(c0 + length * np.cos(angle), 0, w - 1))
        rr, cc = line(int(r0), int(c0), r1, c1)
        mask[rr, cc] = True
    mask = ndi.binary_dilation(mask, iterations=2)
    for _ in range(3):
        rr, cc = disk((rng.integers(30, h - 30), rng.integers(30, w - 30)), rng.uniform(5, 9), shape=shape)
        mask[rr, cc] = True
    return mask


def damaged_with_mask():
    """Chelsea the cat (256 x 256, RGB) with scratches, plus the damage as a Labels layer.

    The damaged pixels are white; the Labels layer has 1 where pixels must be filled (the
    plugin's mask rule: nonzero = fill).
    """
    from skimage import data

    clean = data.chelsea()[20:276, 80:336]
    mask = _scratches(clean.shape[:2], SEED + 3)
    damaged = clean.copy()
    damaged[mask] = 255
    return [
        (damaged, {"name": "chelsea (damaged)", "rgb": True}),
        (mask.astype(np.uint8), {"name": "chelsea damage mask", "opacity": 0.6}, "labels"),
    ]
