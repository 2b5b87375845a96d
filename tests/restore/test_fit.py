import numpy as np
import pytest
import torch

from fit_steps import drain as _drain
from napari_deep_prior.nets import padded_shape
from napari_deep_prior.restore.fit import (
    WHITENESS_SIGMA,
    DIPFit,
    autocast_dtype,
    history_iterations,
    make_adam,
)
from napari_deep_prior.restore.planning import estimate_fit_bytes
from napari_deep_prior.restore.stopping import (
    WindowVariance,
    _tail_variance,
    clipped_noise_variance,
    estimate_noise_sigma,
    residual_correlation,
)


def _fit(img, params, seed=0, **kw):
    """A fit of a grey (H, W) image, or of an (H, W, C) one as it is."""
    img = img[..., None] if img.ndim == 2 else img
    return DIPFit(img.astype(np.float32), params=params, device=torch.device("cpu"), seed=seed, **kw)


def test_steps_history_and_statistics(tiny_params, smooth_image):
    p = tiny_params.replace(early_stop=False)
    steps, res = _drain(_fit(smooth_image, p))
    assert [s.iteration for s in steps] == [5, 10, 15, 20, 25, 30]
    assert all(s.iterations == 30 for s in steps)
    assert steps[0].es_variance is None and steps[-1].es_variance is not None
    assert [s.preview is not None for s in steps] == [False, True, False, True, False, True]
    assert steps[1].preview.shape == (32, 32, 1)
    assert res.iterations_run == 30 and res.iteration == 30 and not res.stopped_early
    assert res.losses.shape == (30,) and np.isfinite(res.losses).all()
    assert np.isnan(res.es_variances[:9]).all() and np.isfinite(res.es_variances[9:]).all()
    # history_every=10, but a 30-iteration run saves every 3 (at least 10 frames)
    assert list(res.history.iterations) == list(range(3, 31, 3))
    assert res.history.frames.shape == (10, 32, 32, 1)
    # the last history frame is the returned estimate (output averaging on)
    np.testing.assert_array_equal(res.history.frames[-1], res.image)
    assert res.losses[-1] < res.losses[0]


def test_log_spaced_history(tiny_params):
    p = tiny_params.replace(iterations=1000, history_spacing="log", history_frames=12)
    its = history_iterations(p)
    assert its[0] == 1 and its[-1] == 1000 and np.all(np.diff(its) > 0) and len(its) <= 12
    assert history_iterations(tiny_params.replace(history_every=0)).size == 0


def test_early_stop_returns_the_estimate_at_the_variance_minimum(tiny_params, smooth_image):
    # strong input jitter keeps the outputs fluctuating, so the variance minimum settles
    p = tiny_params.replace(iterations=400, reg_noise_std=0.5, exp_weight=None, es_patience=20, history_every=1)
    steps, res = _drain(_fit(smooth_image, p))
    assert res.stopped_early
    assert res.iterations_run < 400
    assert res.iteration == steps[-1].es_best_iteration
    assert res.iterations_run - res.iteration >= 20
    assert res.iteration >= p.es_start
    best = np.nanargmin(res.es_variances[p.es_start - 1 :]) + p.es_start
    assert best == res.iteration
    np.testing.assert_array_equal(res.history.frames[res.iteration - 1], res.image)


def test_same_seed_same_result(tiny_params, smooth_image):
    a = _drain(_fit(smooth_image, tiny_params, seed=3))[1]
    b = _drain(_fit(smooth_image, tiny_params, seed=3))[1]
    c = _drain(_fit(smooth_image, tiny_params, seed=4))[1]
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize(
    "device",
    # on a GPU the step is a replayed CUDA graph: the rollback must restore in place what it reads
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))],
)
def test_backtracking_restores_weights_after_divergence(tiny_params, smooth_image, device):
    p = tiny_params.replace(iterations=40, early_stop=False, reg_noise_std=0.0)
    fit = DIPFit(smooth_image[..., None].astype(np.float32), params=p, device=torch.device(device), seed=0)
    gen = fit.steps()
    first = next(gen)
    second = next(gen)
    assert not first.backtracked and not second.backtracked
    with torch.no_grad():  # wreck the network, as a diverging step would
        for prm in fit._net.parameters():
            prm.add_(torch.randn_like(prm) * 50)
    third = next(gen)
    assert third.backtracked
    rest = list(gen)
    res = fit.result()
    assert res.iterations_run == 40 and not any(s.backtracked for s in rest)
    assert res.cuda_graph == (device == "cuda")
    # the fit is back on track: the data term is below the one seen before the damage
    assert res.losses[-1] < res.losses[second.iteration - 1] * 1.5


def test_cancel_keeps_partial_result(tiny_params, smooth_image):
    fit = _fit(smooth_image, tiny_params.replace(iterations=500))
    gen = fit.steps()
    next(gen), next(gen)
    gen.close()  # what a cancelled worker does
    res = fit.result()
    assert res.iterations_run == 10 and res.image.shape == (32, 32, 1)
    with pytest.raises(RuntimeError, match="not taken a step"):
        _fit(smooth_image, tiny_params).result()


def test_odd_sizes_are_padded_not_cropped(tiny_params):
    img = np.random.default_rng(0).random((37, 45))
    fit = _fit(img, tiny_params.replace(iterations=5, history_every=0))
    assert fit.padded[0] >= 37 and fit.padded[0] % 8 == 0 and fit.padded[1] % 8 == 0
    res = _drain(fit)[1]
    assert res.image.shape == (37, 45, 1) and res.history is None


def test_memory_estimate_grows_with_size(tiny_params):
    small = estimate_fit_bytes(tiny_params, 64, 64, 3)
    big = estimate_fit_bytes(tiny_params, 256, 256, 3)
    assert 10 * small < big < 20 * small
    assert padded_shape(tiny_params.net, 33, 8) == (40, 16)


def test_poisson_loss_runs(tiny_params, smooth_image):
    p = tiny_params.replace(loss="poisson", early_stop=False)
    res = _drain(_fit(smooth_image, p, counts_scale=20.0))[1]
    assert np.isfinite(res.losses).all() and res.losses[-1] < res.losses[0]


def test_expected_poisson_deviance_matches_a_simulation():
    from napari_deep_prior.restore.stopping import _expected_deviance, expected_poisson_deviance

    rng = np.random.default_rng(0)
    for lam in (0.05, 0.5, 1.0, 3.0, 10.0, 50.0):
        y = rng.poisson(lam, 400_000).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            ylog = np.where(y > 0, y * np.log(y / lam), 0.0)
        simulated = np.mean(2 * (ylog - (y - lam)))
        assert abs(float(expected_poisson_deviance(lam)) - simulated) < 0.01 * max(simulated, 0.1)
    # asymptotically 1 + 1/(6 lam); 0 for a dark pixel
    assert abs(float(expected_poisson_deviance(5000.0)) - 1.0) < 1e-3
    assert float(expected_poisson_deviance(0.0)) == 0.0
    lam = torch.tensor([0.0, 0.5, 2.0, 20.0, 3000.0])
    # the float32 tensor form the fit uses agrees with the float64 one
    np.testing.assert_allclose(
        _expected_deviance(lam).numpy(), expected_poisson_deviance(lam.numpy()), rtol=1e-4, atol=1e-7
    )


def test_poisson_noise_level_stop(tiny_params, smooth_image):
    counts = np.random.default_rng(0).poisson(smooth_image * 20).astype(np.float32)
    p = tiny_params.replace(loss="poisson", iterations=600, es_noise_factor=1.0, es_patience=600)
    steps, res = _drain(_fit(counts / counts.max(), p, counts_scale=float(counts.max())))
    assert res.stop_reason == "noise level" and res.iterations_run < 600
    assert res.deviance <= res.expected_deviance and res.noise_sigma is None
    # factor 0 turns it off: the same fit runs all its iterations
    n = res.iterations_run + 50
    steps, res = _drain(
        _fit(counts / counts.max(), p.replace(es_noise_factor=0.0, iterations=n), counts_scale=float(counts.max()))
    )
    assert res.stop_reason is None and res.deviance is None and res.iterations_run == n


def test_early_stop_with_averaging_returns_the_average_at_the_stop(tiny_params, smooth_image):
    p = tiny_params.replace(iterations=400, reg_noise_std=0.5, exp_weight=0.9, es_patience=20, history_every=1)
    steps, res = _drain(_fit(smooth_image, p))
    assert res.stopped_early and res.iterations_run < 400
    assert steps[-1].es_best_iteration <= res.iterations_run - 20
    assert res.iteration == res.iterations_run
    np.testing.assert_array_equal(res.history.frames[res.iterations_run - 1], res.image)


def test_window_variance_matches_the_direct_computation():
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.random((57, 300)).astype(np.float32)) * 0.5 + 0.25
    wv = WindowVariance(10, 300, torch.device("cpu"))
    for t in range(frames.shape[0]):
        wv.push(frames[t])
        if t >= 9:
            direct = frames[t - 9 : t + 1].var(dim=0, unbiased=False).mean()
            assert float(wv.variance()) == pytest.approx(float(direct), rel=1e-5)


def test_patience_grows_with_the_iteration_of_the_minimum(tiny_params, smooth_image):
    p = tiny_params.replace(
        iterations=600, reg_noise_std=0.5, exp_weight=None, es_patience=10, es_patience_ratio=1.0, yield_every=1
    )
    _, res = _drain(_fit(smooth_image, p))
    assert res.stopped_early
    t_min = res.iteration
    # certain only once 1.0 * t_min steps passed without a new minimum (not after 10 steps)
    assert res.iterations_run - t_min == max(10, t_min)
    with pytest.raises(ValueError, match="es_patience_ratio"):
        tiny_params.replace(es_patience_ratio=-1.0)


def test_warm_start_needs_no_start_floor(tiny_params, smooth_image):
    cold = tiny_params.replace(iterations=40, es_start=1000, early_stop=False)
    _, first = _drain(_fit(smooth_image, cold))
    steps, _ = _drain(_fit(smooth_image, cold))
    assert steps[-1].es_best_iteration is None  # cold: no candidate before the start floor
    steps, _ = _drain(_fit(smooth_image, cold, init_state=first.state_dict))
    assert steps[-1].es_best_iteration is not None  # warm: candidates from the first full window


def test_fused_adam_takes_the_same_steps_as_the_default():
    torch.manual_seed(0)
    w0 = torch.randn(50, requires_grad=True)
    w1 = w0.detach().clone().requires_grad_(True)
    a = make_adam([w0], 0.01, torch.device("cpu"))
    b = torch.optim.Adam([w1], lr=0.01)
    for _ in range(20):
        for w, opt in ((w0, a), (w1, b)):
            opt.zero_grad()
            ((w - 1.0) ** 2).sum().backward()
            opt.step()
    torch.testing.assert_close(w0, w1, rtol=1e-5, atol=1e-6)


def test_mixed_precision_setting(tiny_params, smooth_image):
    cpu = torch.device("cpu")
    assert autocast_dtype("off", cpu) is None
    assert autocast_dtype("auto", cpu) is None  # auto: bf16 only on CUDA GPUs
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="amp"):
        tiny_params.replace(amp="fp8")
    # a bf16 fit runs and returns float32 in [0, 1]
    _, res = _drain(_fit(smooth_image, tiny_params.replace(amp="bf16", iterations=5, history_every=0)))
    assert res.image.dtype == np.float32 and 0.0 <= res.image.min() <= res.image.max() <= 1.0


def _noisy(image, sigma, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0.0, sigma, image.shape), 0, 1)


def test_noise_sigma_estimate():
    flat = np.full((64, 64, 2), 0.5)
    assert estimate_noise_sigma(_noisy(flat, 0.05)) == pytest.approx(0.05, rel=0.1)
    assert estimate_noise_sigma(flat) < 1e-3
    # too small for a patch covariance: the Laplacian fallback
    assert estimate_noise_sigma(_noisy(flat[:9, :9], 0.05)) == pytest.approx(0.05, rel=0.25)
    with pytest.raises(ValueError, match="shape"):
        estimate_noise_sigma(flat[..., 0])


def test_grey_noise_estimate_reads_weak_texture_patches():
    # a photograph in grey at low noise: its structure leaks into the tail of the covariance of
    # all its 7x7 patches (49 dimensions), which reads the noise high; the flat patches do not
    from skimage import data

    clean = data.camera()[128:256, 192:320].astype(np.float64) / 255.0
    sigma = 10 / 255
    noisy = _noisy(clean, sigma)[..., None]
    power = np.mean((noisy[..., 0] - clean) ** 2)  # the (clipped) noise actually added
    estimate = estimate_noise_sigma(noisy) ** 2
    assert estimate == pytest.approx(power, rel=0.08)
    every_patch = _tail_variance(np.lib.stride_tricks.sliding_window_view(noisy, (7, 7), axis=(0, 1)).reshape(-1, 49))
    assert every_patch > 1.15 * power  # what the estimate read before it kept weak-texture patches
    # colour images keep every patch: the three channels' estimate is that of all patches
    rgb = np.repeat(noisy, 3, axis=2) + np.random.default_rng(1).normal(0, sigma, (128, 128, 3))
    all_rgb = np.lib.stride_tricks.sliding_window_view(rgb, (7, 7), axis=(0, 1)).reshape(-1, 147)
    assert estimate_noise_sigma(rgb) ** 2 == pytest.approx(_tail_variance(all_rgb), rel=1e-9)


def test_noise_sigma_estimate_is_not_fooled_by_texture():
    # fine periodic texture: a wavelet MAD estimate reads it as noise (0.080 here)
    y, x = np.mgrid[0:96, 0:96]
    tex = 0.5 + 0.2 * np.sin(1.3 * x + 0.7 * y) + 0.15 * np.sin(0.9 * x - 1.9 * y)
    noisy = tex[..., None] + np.random.default_rng(0).normal(0.0, 0.03, (96, 96, 1))
    assert estimate_noise_sigma(noisy) == pytest.approx(0.03, rel=0.1)


def _stop_params(tiny_params, **changes):
    """1500 steps at most, ES-WMV out of the way (patience 5000), checks from step 50."""
    return tiny_params.replace(
        iterations=1500, es_patience=5000, es_start=50, history_every=0, ema_warmup=True, **changes
    )


def _assert_crossed_at_the_stop(res, level, p):
    """The running mean of the loss (weight 0.95) is <= level at the stop, above it at every earlier yield."""
    ema, at_yield = None, {}
    for t, v in enumerate(res.losses, 1):
        ema = v if ema is None else 0.95 * ema + 0.05 * v
        if t % p.yield_every == 0:
            at_yield[t] = ema
    assert at_yield[res.iterations_run] <= level * (1 + 1e-5)
    assert all(v > level for t, v in at_yield.items() if p.es_start <= t < res.iterations_run)


def test_noise_level_stop_ends_at_the_discrepancy(tiny_params, smooth_image):
    noisy = _noisy(smooth_image, 0.1)
    p = _stop_params(tiny_params, es_noise_factor=1.05, yield_every=5)
    steps, res = _drain(_fit(noisy, p))
    assert res.stopped_early and res.stop_reason == "noise level"
    assert res.iterations_run < 1500 and res.iterations_run % 5 == 0
    assert res.noise_sigma == pytest.approx(0.1, rel=0.25)
    # the running mean of the loss crossed the level at this yield, not at an earlier one
    _assert_crossed_at_the_stop(res, 1.05 * res.noise_sigma**2, p)
    # the estimate is closer to the clean image than the input was
    err_in = np.mean((noisy - smooth_image) ** 2)
    err_out = np.mean((res.image[..., 0] - smooth_image) ** 2)
    assert err_out < 0.5 * err_in
    # the warm start of a next plane is the state at this stop
    assert res.state_dict is not None


def test_given_noise_level_is_aimed_at_less_what_clipping_took(tiny_params, smooth_image):
    # a dark image: much of its noise was clipped at 0, so the loss cannot reach sigma^2
    dark = 0.5 * np.clip(smooth_image - 0.4, 0.0, None)
    noisy = _noisy(dark, 0.1)
    level = clipped_noise_variance(noisy[..., None], 0.1)
    assert level < 0.8 * 0.1**2
    p = _stop_params(tiny_params, es_noise_factor=1.0, yield_every=5)
    steps, res = _drain(_fit(noisy, p, noise_sigma=0.1))
    assert res.stopped_early and res.stop_reason == "noise level" and res.noise_sigma == 0.1
    _assert_crossed_at_the_stop(res, level, p)
    assert np.mean((res.image[..., 0] - dark) ** 2) < 0.5 * np.mean((noisy - dark) ** 2)


def test_noise_level_stop_only_on_every_pixel(tiny_params, smooth_image):
    p = tiny_params.replace(iterations=20, es_noise_factor=1.0, history_every=0)
    res = _drain(_fit(smooth_image, p))[1]
    assert res.noise_sigma is not None
    known = np.ones(smooth_image.shape, dtype=bool)
    known[8:16, 8:16] = False
    res = _drain(_fit(smooth_image, p, known=known))[1]
    assert res.noise_sigma is None and res.stop_reason != "noise level"
    # the Poisson loss reads its deviance instead of an estimated sigma
    res = _drain(_fit(smooth_image, p.replace(loss="poisson"), counts_scale=20.0))[1]
    assert res.noise_sigma is None and res.expected_deviance is not None
    res = _drain(_fit(smooth_image, p.replace(loss="poisson"), counts_scale=20.0, known=known))[1]
    assert res.expected_deviance is None and res.stop_reason != "noise level"
    res = _drain(_fit(smooth_image, p.replace(early_stop=False)))[1]
    assert res.noise_sigma is None and res.stop_reason is None
    with pytest.raises(ValueError, match="es_noise_factor"):
        tiny_params.replace(es_noise_factor=-0.5)


def _two_channels(image):
    """A 2-channel image from a grey one (the whiteness stop is for images of several channels)."""
    return np.stack([image, image[::-1]], axis=-1)


def test_whiteness_stop_ends_the_run_where_the_residual_turns_negative(tiny_params, smooth_image):
    clean = _two_channels(smooth_image)
    noisy = _noisy(clean, 0.1)
    # a noise level the loss never reaches: the whiteness stop alone
    p = _stop_params(tiny_params, es_noise_factor=0.05, es_whiteness=0.1)
    steps, res = _drain(_fit(noisy, p))
    assert res.stopped_early and res.stop_reason == "residual whiteness"
    assert res.iterations_run < 1500 and res.iterations_run % p.yield_every == 0
    # the threshold scales with the estimated noise level: -0.1 at 25/255
    level = -0.1 * WHITENESS_SIGMA / res.noise_sigma
    assert res.residual_correlation <= level
    assert res.iteration == res.iterations_run  # the averaged estimate at the stop is returned
    # at the stop, recomputed from the returned estimate
    rho = float(residual_correlation(torch.from_numpy((noisy - res.image).transpose(2, 0, 1).astype(np.float32))))
    assert rho == pytest.approx(res.residual_correlation, abs=1e-4)
    # one yield earlier the residual was not yet that negative: a run capped there did not stop
    _, before = _drain(_fit(noisy, p.replace(iterations=res.iterations_run - p.yield_every)))
    assert not before.stopped_early and before.residual_correlation > level
    # better than the input; without the stop the run goes on
    assert np.mean((res.image - clean) ** 2) < 0.5 * np.mean((noisy - clean) ** 2)
    _, off = _drain(_fit(noisy, p.replace(es_whiteness=0.0, iterations=res.iterations_run + 50)))
    assert not off.stopped_early and off.residual_correlation is None
    # at half the noise the threshold is twice as far from 0: the run goes on past -es_whiteness
    _, low = _drain(_fit(_noisy(clean, 0.05), p.replace(es_whiteness=0.05)))
    assert low.stop_reason == "residual whiteness"
    assert low.residual_correlation <= -0.05 * WHITENESS_SIGMA / low.noise_sigma < -0.08


def test_whiteness_stop_only_beside_an_estimated_gaussian_noise_level(tiny_params, smooth_image):
    p = tiny_params.replace(iterations=60, es_noise_factor=1.0, es_whiteness=0.5, es_start=10, history_every=0)
    noisy = _noisy(_two_channels(smooth_image), 0.1)
    assert _drain(_fit(noisy, p))[1].residual_correlation is not None
    # a noise level given by the user is the stop's level: no whiteness stop
    assert _drain(_fit(noisy, p, noise_sigma=0.1))[1].residual_correlation is None
    # a single-channel image: none (its weak-texture noise estimate is the stop's level)
    assert _drain(_fit(noisy[..., 0], p))[1].residual_correlation is None
    # masks (inpainting), the Poisson loss, the noise-level stop off: none either
    known = np.ones(smooth_image.shape, dtype=bool)
    known[8:16, 8:16] = False
    assert _drain(_fit(noisy, p, known=known))[1].residual_correlation is None
    assert _drain(_fit(noisy, p.replace(loss="poisson"), counts_scale=20.0))[1].residual_correlation is None
    assert _drain(_fit(noisy, p.replace(es_noise_factor=0.0)))[1].residual_correlation is None


@pytest.mark.parametrize("bad", [-0.01, 1.0, float("nan")])
def test_bad_whiteness_thresholds_are_refused(tiny_params, bad):
    with pytest.raises(ValueError, match="es_whiteness"):
        tiny_params.replace(es_whiteness=bad)


def test_held_out_stop_for_masked_fits(tiny_params, smooth_image, one_torch_thread):
    """es_holdout: a fraction of the known pixels leaves the loss and chooses the best estimate."""
    known = np.ones(smooth_image.shape, bool)
    known[10:16, 8:24] = False
    params = tiny_params.replace(iterations=200, es_holdout=0.1, es_patience=40, es_start=10)
    steps, res = _drain(_fit(smooth_image, params, known=known))
    assert res.holdout_mse is not None and res.holdout_mse.shape[1] == 2
    its, val = res.holdout_mse[:, 0], res.holdout_mse[:, 1]
    assert (np.diff(its) > 0).all() and np.isfinite(val).all()
    best = int(its[np.argmin(val)])
    assert res.iteration == best  # the estimate with the smallest held-out error
    if res.stop_reason is not None:
        assert res.stop_reason == "held-out minimum" and res.iterations_run - best >= 40
    # the same fit without the hold-out keeps ES-WMV and records nothing
    _, plain = _drain(_fit(smooth_image, params.replace(es_holdout=0.0), known=known))
    assert plain.holdout_mse is None and plain.stop_reason != "held-out minimum"
    # unmasked fits ignore it
    _, unmasked = _drain(_fit(smooth_image, params.replace(iterations=20)))
    assert unmasked.holdout_mse is None


def test_held_out_pixels_are_returned_exactly(smooth_image, one_torch_thread):
    from napari_deep_prior.arrays import drive
    from napari_deep_prior.restore.api import prepare_inpaint

    mask = np.zeros(smooth_image.shape, bool)
    mask[10:16, 8:24] = True
    job = prepare_inpaint(smooth_image, mask, iterations=30, seed=0)
    job.fit_params = job.fit_params.replace(es_holdout=0.2, es_start=10, es_window=10)
    out = drive(job.steps())
    assert out.fits[0].holdout_mse is not None
    np.testing.assert_array_equal(out.image[~mask], smooth_image[~mask])


@pytest.mark.parametrize("bad", [-0.1, 0.6, float("nan")])
def test_held_out_fraction_bounds(tiny_params, bad):
    with pytest.raises(ValueError, match="es_holdout"):
        tiny_params.replace(es_holdout=bad)


def test_hole_change_stop(tiny_params, smooth_image, one_torch_thread):
    """es_hole_change: the run ends when the estimate over the holes stops moving."""
    from napari_deep_prior.restore.fit import HOLE_CHANGE_FLOOR, HOLE_CHANGE_LAG

    known = np.ones(smooth_image.shape, bool)
    known[10:16, 8:24] = False
    params = tiny_params.replace(
        iterations=400, es_patience=10**6, es_start=20, es_hole_change=0.5, yield_every=10, preview_every=10
    )
    steps, res = _drain(_fit(smooth_image, params, known=known))
    assert res.stop_reason == "holes settled" and res.stopped_early
    # never before the start floor and one lag of history, and the returned estimate is the last
    assert HOLE_CHANGE_LAG <= res.iterations_run < 400 and res.iterations_run >= 20
    assert res.iteration == res.iterations_run
    # the recorded previews prove the rule: the holes moved less than the threshold over the lag
    frames = {s.iteration: s.preview for s in steps if s.preview is not None}
    t = res.iterations_run
    lag = HOLE_CHANGE_LAG

    def change(t):
        return np.abs(frames[t] - frames[t - lag])[~known].mean()

    ref = change(2 * lag)  # how fast the holes moved at the start
    limit = max(0.5 * ref, HOLE_CHANGE_FLOOR)
    assert change(t) <= limit * (1 + 1e-5)
    assert all(change(u) > limit * (1 - 1e-5) for u in range(2 * lag, t, 10))  # the first yield that met it
    # a threshold no fit reaches: the run goes to its end
    _, full = _drain(_fit(smooth_image, params.replace(iterations=120, es_hole_change=1e-9), known=known))
    assert full.stop_reason is None and full.iterations_run == 120
    # unmasked fits ignore it
    _, unmasked = _drain(_fit(smooth_image, params.replace(iterations=120)))
    assert unmasked.stop_reason != "holes settled"


def test_hole_change_stop_reads_its_own_fraction_for_scattered_holes(tiny_params, smooth_image, one_torch_thread):
    """es_hole_change_scattered: missing pixels at random are read with their own fraction."""
    scattered = np.random.default_rng(0).random(smooth_image.shape) >= 0.5  # known: half the pixels
    box = np.ones(smooth_image.shape, bool)
    box[10:16, 8:24] = False
    params = tiny_params.replace(
        iterations=400, es_patience=10**6, es_start=20, es_hole_change=0.5, yield_every=10, preview_every=10
    )
    # without a fraction of their own, scattered holes stop as any holes do
    _, early = _drain(_fit(smooth_image, params, known=scattered))
    assert early.stop_reason == "holes settled" and early.iterations_run < 400
    assert early.hole_change_ratio == 0.5
    # with a fraction no fit reaches, the same fit runs to its end ...
    late_params = params.replace(es_hole_change_scattered=1e-9)
    _, late = _drain(_fit(smooth_image, late_params, known=scattered))
    assert late.stop_reason is None and late.iterations_run == 400 and late.hole_change_ratio == 1e-9
    np.testing.assert_array_equal(late.losses[: early.iterations_run], early.losses[: early.iterations_run])
    # ... while holes that are a shape keep es_hole_change
    _, shape = _drain(_fit(smooth_image, late_params, known=box))
    assert shape.stop_reason == "holes settled" and shape.hole_change_ratio == 0.5
    # no stop of that kind, no fraction
    _, off = _drain(_fit(smooth_image, late_params.replace(early_stop=False, iterations=30), known=scattered))
    assert off.hole_change_ratio is None


def _blotch_and_scratch():
    """A smooth 64 px grey image and two masks of known pixels: all but a 30 px square (large
    holes), all but a 3 px line (thin holes)."""
    y, x = np.mgrid[0:64, 0:64] / 63.0
    image = (0.5 + 0.4 * np.sin(3 * x) * np.cos(2 * y)).astype(np.float64)
    blotch = np.ones(image.shape, bool)
    blotch[16:46, 20:50] = False
    scratch = np.ones(image.shape, bool)
    scratch[30:33, 5:60] = False
    return image, blotch, scratch


def test_hole_change_stop_reads_its_own_fraction_for_large_holes(tiny_params, one_torch_thread):
    """es_hole_change_large: a blotch is read with its own fraction, a scratch with es_hole_change."""
    image, blotch, scratch = _blotch_and_scratch()
    params = tiny_params.replace(
        iterations=300, es_patience=10**6, es_start=20, es_hole_change=1e-9, yield_every=10, preview_every=10
    )
    # a fraction no fit reaches: the blotch runs to the end as any holes would ...
    _, late = _drain(_fit(image, params, known=blotch))
    assert late.stop_reason is None and late.iterations_run == 300 and late.hole_change_ratio == 1e-9
    # ... with a fraction of its own for large holes it stops, on the same path
    early_params = params.replace(es_hole_change_large=0.9)
    _, early = _drain(_fit(image, early_params, known=blotch))
    assert early.stop_reason == "holes settled" and early.iterations_run < 300
    assert early.hole_change_ratio == 0.9
    np.testing.assert_array_equal(late.losses[: early.iterations_run], early.losses[: early.iterations_run])
    # the scratch keeps es_hole_change
    _, thin = _drain(_fit(image, early_params, known=scratch))
    assert thin.stop_reason is None and thin.hole_change_ratio == 1e-9


def test_inpaint_default_reads_scattered_and_large_holes_with_their_own_fractions(one_torch_thread):
    """The default as a user calls it: half the pixels missing get the later stop, a blotch the earlier
    one and a step limit of its own, a scratch neither."""
    from napari_deep_prior import inpaint
    from napari_deep_prior.restore.presets import get_preset

    p = get_preset("inpaint")
    assert 0 < p.es_hole_change_scattered < p.es_hole_change < p.es_hole_change_large
    assert 0 < p.iterations_large < p.iterations
    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    scattered = np.random.default_rng(1).random((64, 64)) < 0.5
    scratch = np.zeros((64, 64), bool)
    scratch[30:33, 5:60] = True
    blotch = np.zeros((64, 64), bool)
    blotch[16:48, 16:48] = True
    cases = ((scattered, p.es_hole_change_scattered), (scratch, p.es_hole_change), (blotch, p.es_hole_change_large))
    for holes, ratio in cases:
        _, out = inpaint(img, holes, iterations=3, seed=0, return_history=True)
        assert [f.hole_change_ratio for f in out.fits] == [ratio] * len(out.fits)
        assert [f.large_holes for f in out.fits] == [holes is blotch] * len(out.fits)
        assert not any("large holes" in n for n in out.notes)  # 3 steps: the limit is not reached
    # the blotch's own limit (made short here), and the note that says so
    _, out = inpaint(img, blotch, params=p.replace(iterations_large=6), seed=0, return_history=True)
    assert [(f.iterations_run, f.stop_reason) for f in out.fits] == [(6, None)]
    assert [n for n in out.notes if n.startswith("large holes")] == [
        "large holes in one fit: at most 6 steps (iterations_large), as the network's fill of a large hole peaks early"
    ]
    _, out = inpaint(img, scratch, params=p.replace(iterations_large=6, iterations=9), seed=0, return_history=True)
    assert [f.iterations_run for f in out.fits] == [9]
    # early stopping off: every step the user asked for, and no note
    off = p.replace(iterations_large=6, iterations=9)
    _, out = inpaint(img, blotch, params=off, early_stop=False, seed=0, return_history=True)
    assert [f.iterations_run for f in out.fits] == [9] and not any("large holes" in n for n in out.notes)


def test_iterations_large_limits_the_fits_of_large_holes(tiny_params, one_torch_thread):
    """iterations_large: the most steps of a fit whose holes are large, a tile or not; the stops
    still apply; thin holes keep iterations."""
    image, blotch, scratch = _blotch_and_scratch()
    # a fraction no fit reaches: every fit runs to its limit
    params = tiny_params.replace(
        iterations_large=12, iterations=150, es_start=10, es_patience=10**6, es_hole_change=1e-9, yield_every=5
    )
    for tile in (False, True):
        fit = _fit(image, params, known=blotch, tile=tile)
        assert fit.max_iterations == 12
    _, res = _drain(_fit(image, params, known=blotch))
    assert res.iterations_run == 12 and res.stop_reason is None and res.large_holes
    thin = _fit(image, params, known=scratch)
    assert thin.max_iterations == 150
    _, thin_res = _drain(thin)
    assert thin_res.iterations_run == 150 and not thin_res.large_holes
    assert _fit(image, params).max_iterations == 150  # no mask
    assert _fit(image, params.replace(iterations_large=0), known=blotch).max_iterations == 150
    assert _fit(image, params.replace(iterations_large=500), known=blotch).max_iterations == 150
    # a stop: with early stopping off the blotch runs its iterations too
    assert _fit(image, params.replace(early_stop=False), known=blotch).max_iterations == 150
    # the stops still apply: the hole-change stop at a fraction every fit reaches ends it first
    _, early = _drain(_fit(image, params.replace(iterations_large=140, es_hole_change_large=0.99), known=blotch))
    assert early.stop_reason == "holes settled" and early.iterations_run < 140
    # the same steps as without the limit, up to it
    _, free = _drain(_fit(image, params.replace(iterations=30, iterations_large=0), known=blotch))
    np.testing.assert_array_equal(free.losses[:12], res.losses)


@pytest.mark.parametrize("bad", [-1, True, 2.5])
def test_iterations_large_is_checked(tiny_params, bad):
    with pytest.raises((ValueError, TypeError), match="iterations_large"):
        tiny_params.replace(iterations_large=bad)


@pytest.mark.parametrize("name", ["es_hole_change", "es_hole_change_scattered", "es_hole_change_large"])
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_hole_change_bounds(tiny_params, name, bad):
    with pytest.raises(ValueError, match=name):
        tiny_params.replace(**{name: bad})
