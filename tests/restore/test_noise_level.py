"""A user-given noise level (noise_sigma) replaces the estimate the noise-level stop aims at."""

import numpy as np
import pytest

from napari_deep_prior import denoise
from napari_deep_prior.restore.api import prepare_denoise, prepare_inpaint


@pytest.fixture
def noisy_u8(smooth_image):
    rng = np.random.default_rng(0)
    return np.clip((smooth_image + rng.normal(0, 0.1, smooth_image.shape)) * 255, 0, 255).astype(np.uint8)


def test_given_level_is_used_in_the_images_units(noisy_u8, tiny_params, one_torch_thread):
    params = tiny_params.replace(iterations=200, es_noise_factor=1.0, es_start=10, es_patience=10**6)
    job = prepare_denoise(noisy_u8, params=params, seed=0, noise_sigma=20.0)
    scale = job.layout.scale  # input units per unit of the normalised planes
    _, out = denoise(noisy_u8, params=params, seed=0, noise_sigma=20.0, return_history=True)
    assert out.fits[0].noise_sigma == pytest.approx(20.0 / scale)
    _, est = denoise(noisy_u8, params=params, seed=0, return_history=True)
    assert est.fits[0].noise_sigma != pytest.approx(20.0 / scale)  # the estimate otherwise
    # a larger level is reached sooner: the stop comes earlier
    _, hi = denoise(noisy_u8, params=params, seed=0, noise_sigma=60.0, return_history=True)
    _, lo = denoise(noisy_u8, params=params, seed=0, noise_sigma=5.0, return_history=True)
    assert hi.fits[0].stop_reason == "noise level"
    assert hi.iterations_run[0] < lo.iterations_run[0]


@pytest.mark.parametrize("bad", [0.0, -3.0, float("nan"), float("inf")])
def test_bad_levels_are_refused(noisy_u8, bad):
    with pytest.raises(ValueError, match="noise_sigma"):
        prepare_denoise(noisy_u8, noise_sigma=bad)


def test_level_is_refused_where_no_stop_reads_it(noisy_u8):
    with pytest.raises(ValueError, match="noise_sigma.*Poisson"):
        prepare_denoise(noisy_u8, loss="poisson", noise_sigma=3.0)
    with pytest.raises(ValueError, match="noise_sigma.*off"):
        prepare_denoise(noisy_u8, early_stop=False, noise_sigma=3.0)
    from napari_deep_prior.restore.api import prepare
    from napari_deep_prior.restore.degradations import Mask

    mask = np.zeros(noisy_u8.shape, bool)
    mask[4:8, 4:8] = True
    with pytest.raises(ValueError, match="noise_sigma.*inpaint"):
        prepare(Mask(mask), noisy_u8, noise_sigma=3.0)
    prepare_inpaint(noisy_u8, mask)  # (without it inpainting is fine)


def test_cli_flag(tmp_path, noisy_u8, capsys):
    import imageio.v3 as iio

    from napari_deep_prior.cli import main

    iio.imwrite(tmp_path / "n.png", noisy_u8)
    args = ["denoise", str(tmp_path / "n.png"), "-o", str(tmp_path / "o.png"), "--iterations", "400", "-q"]
    # a level far above the noise: reached at the first check after the start floor (150 steps)
    assert main([*args, "--noise-sigma", "250", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "early stop: noise level; given noise level" in out and "150/150;" in out
    from napari_deep_prior.io import read_image_meta

    assert read_image_meta(tmp_path / "o.png").provenance["options"]["noise_sigma"] == pytest.approx(250.0)
    assert main([*args, "--noise-sigma", "-1"]) == 2
    assert "--noise-sigma" in capsys.readouterr().err
    assert main([*args, "--noise-sigma", "5", "--loss", "poisson"]) == 2
    assert "--noise-sigma" in capsys.readouterr().err


def test_clipped_noise_variance_against_sampled_noise():
    from napari_deep_prior.restore.stopping import clipped_noise_variance

    rng = np.random.default_rng(1)
    sigma = 0.1
    # mid-grey: nothing is clipped, the level is sigma^2
    mid = np.clip(0.5 + rng.normal(0, sigma, (64, 64, 1)), 0, 1)
    assert clipped_noise_variance(mid, sigma) == pytest.approx(sigma**2, rel=1e-3)
    # bands from black to white: the sampled mean squared residual of the clipped noise
    clean = np.repeat(np.linspace(0.0, 1.0, 16)[None, :, None], 16, axis=0).repeat(8, axis=1)
    draws = np.clip(clean[None] + rng.normal(0, sigma, (200, *clean.shape)), 0, 1)
    sampled = float(np.mean((draws - clean) ** 2))
    assert sampled < 0.9 * sigma**2  # the bands near 0 and 1 lost part of their noise
    assert clipped_noise_variance(draws[0], sigma) == pytest.approx(sampled, rel=0.05)
    with pytest.raises(ValueError, match="shape"):
        clipped_noise_variance(mid[..., 0], sigma)
    with pytest.raises(ValueError, match="sigma"):
        clipped_noise_variance(mid, 0.0)
