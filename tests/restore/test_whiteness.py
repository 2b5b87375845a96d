"""The residual-whiteness statistic: the lag-1 autocorrelation of input minus estimate.

The stop that reads it: tests/restore/test_fit.py (test_whiteness_stop_*)."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from napari_deep_prior.restore.stopping import residual_correlation


def _rho(a: np.ndarray) -> float:
    return float(residual_correlation(torch.from_numpy(a.astype(np.float32))))


def test_white_noise_structure_and_high_passed_noise():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 0.1, (3, 128, 128))
    assert abs(_rho(noise)) < 0.01
    # a per-channel offset is not structure (each channel's mean is removed)
    assert _rho(noise + np.array([0.5, -0.2, 3.0])[:, None, None]) == pytest.approx(_rho(noise), abs=1e-5)
    # image structure left in the residual: positive
    y, x = np.mgrid[0:128, 0:128] / 127.0
    assert _rho(noise + 0.3 * np.sin(6 * x) * np.cos(4 * y)) > 0.5
    # noise with its low frequencies taken out (a fit that follows the noise): negative
    low = np.stack([gaussian_filter(c, 1.0) for c in noise])
    assert _rho(noise - low) < -0.1
    # a 0-dim tensor on the residual's device; a constant residual gives 0, not NaN
    assert residual_correlation(torch.zeros(1, 1, 8, 8)).item() == 0.0
