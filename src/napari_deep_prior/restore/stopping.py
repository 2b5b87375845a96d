"""Early stopping and the noise level: what tells a Deep Image Prior fit when to stop.

- :class:`WindowVariance`: the ES-WMV statistic (Wang, Li, Zhuang, Sun, TMLR 2023), the
  windowed moving variance of the outputs, updated in O(pixels) per step on the device;
- :func:`estimate_noise_sigma`: the Gaussian noise level of an image (Immerkaer's operator
  on patches), for the discrepancy-principle stop;
- :func:`clipped_noise_variance`: the loss a given noise level leaves once the noisy image was
  clipped to its range (the level that stop aims at when the user gives the noise level);
- :func:`expected_poisson_deviance`: the deviance Poisson noise of a given rate leaves, the
  threshold of the Poisson loss's stop;
- :func:`residual_correlation`: the lag-1 autocorrelation of the residual, for the
  residual-whiteness stop (which needs no noise level).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "WindowVariance",
    "clipped_noise_variance",
    "estimate_noise_sigma",
    "expected_poisson_deviance",
    "residual_correlation",
]


#: Most patches read by the noise estimate (a regular subsample beyond).
_NOISE_MAX_PATCHES = 1 << 16


def _tail_variance(patches: np.ndarray) -> float:
    """The noise variance of flattened patches: the mean of their covariance's eigenvalue tail.

    The tail is the longest run of smallest eigenvalues whose mean is not above its median
    (Chen, Zhu and Heng 2015).
    """
    patches = patches - patches.mean(axis=0)
    cov = patches.T @ patches / len(patches)
    lam = np.clip(np.linalg.eigvalsh(cov), 0.0, None)  # ascending
    for k in range(len(lam), 0, -1):
        tail = lam[:k]
        if tail.mean() <= np.median(tail):
            return float(tail.mean())
    return float(lam[0])


#: Weak-texture patches: a patch whose texture strength (sum of its squared differences between
#: horizontal and vertical neighbours) is below this quantile of that of pure noise at the
#: current estimate counts as flat (Liu, Tanaka and Okutomi 2013).
_WEAK_TEXTURE_QUANTILE = 0.99
_WEAK_TEXTURE_ROUNDS = 5
_NOISE_STRENGTH_Q: dict[int, float] = {}


def _noise_strength_quantile(d: int) -> float:
    """The :data:`_WEAK_TEXTURE_QUANTILE` of the texture strength of a d x d patch of unit white noise."""
    if d not in _NOISE_STRENGTH_Q:
        r = np.random.default_rng(0).standard_normal((20000, d, d))
        strength = (np.diff(r, axis=1) ** 2).sum(axis=(1, 2)) + (np.diff(r, axis=2) ** 2).sum(axis=(1, 2))
        _NOISE_STRENGTH_Q[d] = float(np.quantile(strength, _WEAK_TEXTURE_QUANTILE))
    return _NOISE_STRENGTH_Q[d]


def estimate_noise_sigma(image: np.ndarray) -> float:
    """Noise standard deviation of an (H, W, C) image (white Gaussian noise model).

    Patch PCA (Chen, Zhu and Heng, *An Efficient Statistical Method for Image Noise Level
    Estimation*, ICCV 2015): the covariance of the image's 7x7xC patches has eigenvalues that
    hold the image structure plus a tail of eigenvalues that only the noise explains; the
    tail is the longest one whose mean is not above its median, and its mean is the noise
    variance.  Unlike the wavelet median absolute deviation (scikit-image's
    ``estimate_sigma``), fine texture does not read as noise: on Set9 at sigma 15/255 the
    wavelet estimate of the most textured image (kodim01) was 16.9, this one 14.7 (actual
    15.0).  Images too small for a 3x3 patch covariance use Immerkaer's (1996) Laplacian
    estimate.

    A single-channel image's 49 patch dimensions leave too few to the noise alone: structure
    leaks into the tail and the estimate comes out high, the more so the lower the noise
    (Set12 crops of 128 px: 1.19x the clipped noise's power at sigma 15/255, 1.08x at 25).
    For one channel the covariance is therefore taken over weak-texture patches only (Liu,
    Tanaka and Okutomi, *Single-Image Noise Level Estimation for Blind Denoising*, IEEE TIP
    2013): those whose sum of squared neighbour differences is below what pure noise at the
    current estimate stays under with 99 % probability, re-estimated a few rounds (Set12
    1.02x and 1.00x; colour images keep every patch, as the weak-texture choice read them
    4-6 % low at 128 px).
    """
    if image.ndim != 3:
        raise ValueError(f"image must have shape (H, W, C), got {image.shape}")
    x = np.asarray(image, dtype=np.float64)
    h, w, c = x.shape
    for d in (7, 5, 3):
        n = max(h - d + 1, 0) * max(w - d + 1, 0)
        if n >= 8 * d * d * c:
            break
    else:
        return _immerkaer_sigma(x)
    stride = max(1, math.ceil(math.sqrt(n / _NOISE_MAX_PATCHES)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (d, d), axis=(0, 1))[::stride, ::stride]
    patches = windows.reshape(-1, c * d * d)
    var = _tail_variance(patches)
    if c == 1 and var > 0:
        strength = (np.diff(windows, axis=-1) ** 2).sum(axis=(-2, -1)) + (np.diff(windows, axis=-2) ** 2).sum(
            axis=(-2, -1)
        )
        strength = strength.reshape(-1)
        q = _noise_strength_quantile(d)
        for _ in range(_WEAK_TEXTURE_ROUNDS):
            weak = strength < var * q
            if weak.sum() < 8 * d * d:  # too few flat patches for a covariance: keep the last
                break
            new = _tail_variance(patches[weak])
            done = abs(new - var) <= 1e-3 * var
            var = new
            if done or var == 0:
                break
    return float(math.sqrt(var))


def _clipped_moments(x: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """E[clip(x + n, 0, 1)] and E[(clip(x + n, 0, 1) - x)^2] for n ~ N(0, sigma^2), elementwise."""
    from scipy.special import ndtr

    a, b = -x / sigma, (1.0 - x) / sigma
    pdf_a, pdf_b = np.exp(-0.5 * a * a) / math.sqrt(2 * math.pi), np.exp(-0.5 * b * b) / math.sqrt(2 * math.pi)
    below, above, inside = ndtr(a), ndtr(-b), ndtr(b) - ndtr(a)
    mean = x * inside + sigma * (pdf_a - pdf_b) + above
    power = below * x * x + above * (1.0 - x) ** 2 + sigma * sigma * (inside + a * pdf_a - b * pdf_b)
    return mean, power


#: Side of the local mean that stands for the clean image in :func:`clipped_noise_variance`.
_CLIP_MEAN_SIZE = 5


def clipped_noise_variance(image: np.ndarray, sigma: float) -> float:
    """The mean squared residual that Gaussian noise of ``sigma`` leaves in an image clipped to [0, 1].

    Where an image is near black or white its noisy values were clipped (an 8-bit or 16-bit
    file cannot hold them), so the residual a fit of the clean image leaves there is smaller
    than ``sigma ** 2``: a noise-level stop aiming at ``sigma ** 2`` ends such fits late (on
    Set9 crops at sigma 25/255 the clipped power is about 0.95 sigma^2).  The clean image is
    stood for by the noisy one's local mean (5 x 5), mapped back through
    ``x -> E[clip(x + n, 0, 1)]``; the result is the mean over the pixels of
    ``E[(clip(x + n, 0, 1) - x)^2]`` (closed form).  An image away from 0 and 1 gives
    ``sigma ** 2``.

    Parameters
    ----------
    image : ndarray, shape (H, W, C)
        The noisy image in [0, 1] (the fit's units).
    sigma : float
        The noise's standard deviation in the same units, > 0.
    """
    from scipy.ndimage import uniform_filter

    if image.ndim != 3:
        raise ValueError(f"image must have shape (H, W, C), got {image.shape}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma}")
    k = _CLIP_MEAN_SIZE
    grid = np.linspace(-0.5, 1.5, 4001)
    mean_of_grid, _ = _clipped_moments(grid, float(sigma))  # increasing in the grid
    mu = uniform_filter(np.asarray(image, dtype=np.float64), (k, k, 1), mode="reflect")
    x = np.clip(np.interp(mu, mean_of_grid, grid), 0.0, 1.0)
    return float(_clipped_moments(x, float(sigma))[1].mean())


#: Rates of the table of expected Poisson deviances (log-spaced); above its end the
#: asymptotic 1 + 1/(6 lambda) is used, below it the deviance goes to 0 with the rate.
_DEV_LAM = np.geomspace(1e-4, 1e3, 281)
_DEV_TABLE: np.ndarray | None = None


def _deviance_table() -> np.ndarray:
    """E[D] at the rates ``_DEV_LAM``, by summing the Poisson probabilities (built once)."""
    global _DEV_TABLE
    if _DEV_TABLE is None:
        from scipy.stats import poisson

        k = np.arange(0, 1 + int(_DEV_LAM[-1] + 12 * math.sqrt(_DEV_LAM[-1])))[:, None]
        lam = _DEV_LAM[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            ylog = np.where(k > 0, k * np.log(np.maximum(k, 1) / lam), 0.0)
        _DEV_TABLE = (poisson.pmf(k, lam) * 2.0 * (ylog - (k - lam))).sum(axis=0)
    return _DEV_TABLE


def _expected_deviance(lam: torch.Tensor) -> torch.Tensor:
    """Elementwise :func:`expected_poisson_deviance` of a tensor, on its device and dtype."""
    table = torch.as_tensor(_deviance_table(), dtype=lam.dtype, device=lam.device)
    lo, hi = float(_DEV_LAM[0]), float(_DEV_LAM[-1])
    step = math.log(_DEV_LAM[1] / _DEV_LAM[0])
    pos = (torch.log(lam.clamp(lo, hi)) - math.log(lo)) / step  # linear in log(rate)
    i0 = pos.floor().clamp(0, len(table) - 2).long()
    frac = (pos - i0).clamp(0, 1)
    e = table[i0] * (1 - frac) + table[i0 + 1] * frac
    e = torch.where(lam < lo, table[0] * lam / lo, e)
    return torch.where(lam > hi, 1.0 + 1.0 / (6.0 * lam.clamp_min(hi)), e)


def expected_poisson_deviance(lam) -> np.ndarray:
    """E[D] of one pixel with Poisson counts of rate ``lam`` (array-like, >= 0).

    D(y, lam) = 2 (y log(y / lam) - (y - lam)) is the pixel's deviance: its expectation is
    close to 1 for rates of ~5 photons and more (1 + 1/(6 lam) asymptotically), about 1.15
    at 1-2 photons and falls to 0 as the rate does (a dark pixel is almost always 0, which
    the fit matches exactly).  Computed once by summing the Poisson probabilities on a
    log-spaced grid of rates, then interpolated in log(rate).
    """
    lam = torch.as_tensor(np.asarray(lam, dtype=np.float64))
    return _expected_deviance(lam).numpy()


def _immerkaer_sigma(x: np.ndarray) -> float:
    """Immerkaer's fast noise estimate: mean |Laplacian difference| over the channels."""
    h, w, c = x.shape
    if h < 3 or w < 3:
        return 0.0
    lap = (
        x[:-2, :-2]
        - 2 * x[:-2, 1:-1]
        + x[:-2, 2:]
        - 2 * x[1:-1, :-2]
        + 4 * x[1:-1, 1:-1]
        - 2 * x[1:-1, 2:]
        + x[2:, :-2]
        - 2 * x[2:, 1:-1]
        + x[2:, 2:]
    )
    return float(math.sqrt(math.pi / 2) * np.abs(lap).mean() / 6)


def residual_correlation(residual: torch.Tensor) -> torch.Tensor:
    """Lag-1 autocorrelation of a residual image (..., H, W), horizontal and vertical pooled.

    Each channel's mean is removed first; the result is a 0-dim tensor on the residual's
    device (no host read).  White noise gives about 0; image structure left in the residual
    (a fit still short of the image) makes it positive; a fit that has begun to reproduce
    the noise leaves a high-passed residual and makes it negative.
    """
    r = residual - residual.mean(dim=(-2, -1), keepdim=True)
    h, v = r[..., :, 1:], r[..., 1:, :]
    num = (h * r[..., :, :-1]).sum() + (v * r[..., :-1, :]).sum()
    den = (h * h).sum() + (v * v).sum()
    return num / den.clamp_min(torch.finfo(den.dtype).tiny)


class WindowVariance:
    """ES-WMV statistic: mean over pixels of the variance of the last ``window`` frames.

    Running sums of the window and of its squares make each update O(pixels) instead of
    O(window x pixels) (at 128 px the full recomputation cost a third of a small network's
    step).  The sums are recomputed exactly each time the ring wraps, so rounding cannot
    drift; they are float64 where the device has it.  Everything stays on the device.
    """

    def __init__(self, window: int, n: int, device: torch.device):
        self.window = int(window)
        self.ring = torch.zeros(self.window, n, device=device)
        self.acc = torch.float32 if device.type == "mps" else torch.float64
        self.s1 = torch.zeros(n, device=device, dtype=self.acc)
        self.s2 = torch.zeros(n, device=device, dtype=self.acc)
        self.count = 0

    def push(self, frame: torch.Tensor) -> None:
        """Add one frame (flattened, n values), dropping the oldest once the window is full."""
        k = self.count % self.window
        if k == 0 and self.count > 0:
            self.s1.copy_(self.ring.sum(dim=0, dtype=self.acc))
            self.s2.copy_((self.ring.to(self.acc) ** 2).sum(dim=0))
        old = self.ring[k].to(self.acc)
        new = frame.to(self.acc)
        self.s1.add_(new - old)
        self.s2.add_(new * new - old * old)
        self.ring[k] = frame
        self.count += 1

    def variance(self) -> torch.Tensor:
        """The statistic over the last ``window`` frames (a 0-d float32 tensor on the device)."""
        mean = self.s1 / self.window
        return (self.s2 / self.window - mean * mean).clamp_min_(0).mean().float()
