"""The residual-whiteness stop: the lag-1 autocorrelation of input minus estimate."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from fit_steps import drain
from napari_deep_prior.restore.fit import DIPFit
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


def _noisy(img, sigma, seed=0):
    return np.clip(img + np.random.default_rng(seed).normal(0.0, sigma, img.shape), 0, 1)


def _fit(img, params, **kw):
    return DIPFit(img[..., None].astype(np.float32), params=params, device=torch.device("cpu"), seed=0, **kw)


def test_the_stop_ends_the_run_where_the_residual_turns_negative(tiny_params, smooth_image):
    noisy = _noisy(smooth_image, 0.1)
    p = tiny_params.replace(
        iterations=1500,
        es_noise_factor=0.05,  # a level the loss never reaches: the whiteness stop alone
        es_whiteness=0.02,
        es_patience=5000,
        es_start=50,
        history_every=0,
        ema_warmup=True,
    )
    steps, res = drain(_fit(noisy, p))
    assert res.stopped_early and res.stop_reason == "residual whiteness"
    assert res.iterations_run < 1500 and res.iterations_run % p.yield_every == 0
    assert res.residual_correlation <= -0.02
    assert res.iteration == res.iterations_run  # the averaged estimate at the stop is returned
    # at the stop, recomputed from the returned estimate
    assert _rho((noisy - res.image[..., 0])[None]) == pytest.approx(res.residual_correlation, abs=1e-4)
    # one yield earlier the residual was not yet that negative: a run capped there did not stop
    _, before = drain(_fit(noisy, p.replace(iterations=res.iterations_run - p.yield_every)))
    assert not before.stopped_early and before.residual_correlation > -0.02
    # better than the input, and the run is shorter than without the stop
    assert np.mean((res.image[..., 0] - smooth_image) ** 2) < 0.5 * np.mean((noisy - smooth_image) ** 2)
    _, off = drain(_fit(noisy, p.replace(es_whiteness=0.0, iterations=res.iterations_run + 50)))
    assert not off.stopped_early and off.residual_correlation is None


def test_only_beside_an_estimated_gaussian_noise_level(tiny_params, smooth_image):
    p = tiny_params.replace(iterations=60, es_noise_factor=1.0, es_whiteness=0.5, es_start=10, history_every=0)
    noisy = _noisy(smooth_image, 0.1)
    assert drain(_fit(noisy, p))[1].residual_correlation is not None
    # a noise level given by the user is the stop's level: no whiteness stop
    assert drain(_fit(noisy, p, noise_sigma=0.1))[1].residual_correlation is None
    # masks (inpainting), the Poisson loss, the noise-level stop off: none either
    known = np.ones(smooth_image.shape, dtype=bool)
    known[8:16, 8:16] = False
    assert drain(_fit(noisy, p, known=known))[1].residual_correlation is None
    assert drain(_fit(noisy, p.replace(loss="poisson"), counts_scale=20.0))[1].residual_correlation is None
    assert drain(_fit(noisy, p.replace(es_noise_factor=0.0)))[1].residual_correlation is None


@pytest.mark.parametrize("bad", [-0.01, 1.0, float("nan")])
def test_bad_thresholds_are_refused(tiny_params, bad):
    with pytest.raises(ValueError, match="es_whiteness"):
        tiny_params.replace(es_whiteness=bad)
