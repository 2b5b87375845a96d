import numpy as np
import pytest
from skimage import data, transform
from skimage.metrics import peak_signal_noise_ratio as psnr

import napari_deep_prior
from napari_deep_prior import denoise, inpaint
from napari_deep_prior.arrays import denormalise
from napari_deep_prior.restore import api
from napari_deep_prior.restore.api import (
    ImageTooLargeError,
    prepare_denoise,
    prepare_inpaint,
)


def _run_fast(fn, *args, tiny, **kw):
    return fn(*args, params=tiny, seed=0, **kw)


# -- dtype policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, expected",
    [
        (np.uint8, np.uint8),
        (np.uint16, np.uint16),
        (np.int16, np.int16),
        (np.int32, np.int32),
        (np.float16, np.float32),
        (np.float32, np.float32),
        (np.float64, np.float64),
    ],
)
def test_dtype_policy(dtype, expected, tiny_params, smooth_image):
    if np.dtype(dtype).kind in "ui":
        info = np.iinfo(dtype)
        span = min(1000, int(info.max) // 2)
        lo = -span // 3 if info.min < 0 else 0
        img = (lo + smooth_image * span).astype(dtype)
    else:
        img = (smooth_image * 7.5 - 2).astype(dtype)  # floats keep their (any) range
    out = _run_fast(denoise, img, tiny=tiny_params)
    assert out.dtype == expected and out.shape == img.shape
    ref = img.astype(np.float64)
    assert ref.min() - 1e-3 <= out.min() and out.max() <= ref.max() + 1e-3
    # the result lives in the input's range, close to the input
    assert np.abs(out.astype(np.float64) - ref).mean() < 0.25 * (ref.max() - ref.min())


def test_integer_results_are_rounded_and_clipped(tiny_params):
    img = np.zeros((32, 32), np.uint8)
    img[:, 16:] = 255
    out = _run_fast(denoise, img, tiny=tiny_params)
    assert out.dtype == np.uint8 and out.min() >= 0 and out.max() <= 255


# -- layouts ----------------------------------------------------------------------------


def test_rgb_channel_last_and_first(tiny_params, smooth_image):
    rgb = np.stack([smooth_image, smooth_image[::-1], smooth_image.T], axis=-1)
    out = _run_fast(denoise, rgb, tiny=tiny_params, channel_axis=-1)
    assert out.shape == rgb.shape
    first = np.moveaxis(rgb, -1, 0)
    out0 = _run_fast(denoise, first, tiny=tiny_params, channel_axis=0)
    assert out0.shape == first.shape
    np.testing.assert_allclose(np.moveaxis(out0, 0, -1), out, atol=1e-6)


def test_many_channels(tiny_params, smooth_image):
    img = np.stack([smooth_image * k for k in range(1, 6)], axis=-1)
    assert _run_fast(denoise, img, tiny=tiny_params, channel_axis=-1).shape == (32, 32, 5)


def test_rgba_alpha_untouched(tiny_params, smooth_image):
    rgba = (np.stack([smooth_image] * 4, axis=-1) * 255).astype(np.uint8)
    rgba[..., 3] = np.arange(32, dtype=np.uint8)[None, :] * 7
    out = _run_fast(denoise, rgba, tiny=tiny_params, channel_axis=-1)
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3])
    # explicitly four colour channels: alpha is fitted too
    out4 = _run_fast(denoise, rgba, tiny=tiny_params, channel_axis=-1, has_alpha=False)
    assert not np.array_equal(out4[..., 3], rgba[..., 3])


def test_stack_is_processed_plane_by_plane(tiny_params, smooth_image):
    # the planes share one value range, so the stack's normalisation equals each plane's
    stack = np.stack([smooth_image, smooth_image[::-1], smooth_image.T])
    steps = []
    out, full = denoise(stack, params=tiny_params, seed=0, callback=steps.append, return_history=True)
    assert out.shape == stack.shape
    assert {s.plane for s in steps} == {0, 1, 2} and all(s.n_planes == 3 for s in steps)
    fr = [s.fraction for s in steps]
    assert fr == sorted(fr) and fr[-1] == pytest.approx(1.0)
    # 30 iterations: a frame every 3 (history_every=10 gives way to at least 10 frames)
    assert full.history.shape == (10,) + stack.shape
    assert full.history_losses.shape == (10, 3) and full.planes_done == 3
    # each plane is fitted on its own: the same as running it alone
    alone = denoise(stack[1], params=tiny_params, seed=0)
    np.testing.assert_allclose(out[1], alone, atol=1e-6)


def test_warm_start_changes_later_planes_only(tiny_params, smooth_image):
    stack = np.stack([smooth_image, smooth_image])
    cold = denoise(stack, params=tiny_params, seed=0)
    warm = denoise(stack, params=tiny_params, seed=0, warm_start=True)
    np.testing.assert_array_equal(cold[0], warm[0])
    assert not np.array_equal(cold[1], warm[1])


def test_warm_start_reuses_the_first_planes_weights_without_drift(tiny_params, smooth_image):
    # every later plane starts from the first plane's early-stopping weights (not from the
    # plane before it, which would add fitting steps plane after plane): identical planes
    # after the first give identical results
    stack = np.stack([smooth_image] * 3)
    warm = denoise(stack, params=tiny_params.replace(iterations=60), seed=0, warm_start=True)
    assert not np.array_equal(warm[0], warm[1])
    np.testing.assert_array_equal(warm[1], warm[2])


def test_input_is_never_modified(tiny_params, smooth_image):
    img = smooth_image.copy()
    mask = np.zeros(img.shape, bool)
    mask[10:14, 10:14] = True
    before, mbefore = img.copy(), mask.copy()
    _run_fast(denoise, img, tiny=tiny_params)
    _run_fast(inpaint, img, mask, tiny=tiny_params)
    np.testing.assert_array_equal(img, before)
    np.testing.assert_array_equal(mask, mbefore)


def test_history_is_returned_in_the_input_layout(tiny_params, smooth_image):
    img = (np.stack([smooth_image] * 3, -1) * 255).astype(np.uint8)
    out, full = denoise(img, params=tiny_params, channel_axis=-1, seed=0, return_history=True)
    assert full.history.shape == (10, 32, 32, 3) and full.history.dtype == np.uint8
    assert list(full.history_iterations) == list(range(3, 31, 3))
    assert full.seed == 0 and full.iterations_run == [30]


def test_seed_none_is_reported_and_reproducible(tiny_params, smooth_image):
    out, full = denoise(smooth_image, params=tiny_params, return_history=True)
    again = denoise(smooth_image, params=tiny_params, seed=full.seed)
    np.testing.assert_array_equal(out, again)


# -- real fits: quality must improve ----------------------------------------------------


def test_real_denoise_improves_psnr():
    clean = transform.resize(data.camera(), (64, 64), anti_aliasing=True)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.1, clean.shape), 0, 1)
    out = denoise(noisy, iterations=300, seed=0)  # the default preset
    p0, p1 = psnr(clean, noisy, data_range=1), psnr(clean, out, data_range=1)
    assert p1 > p0 + 3.0, (p0, p1)


def test_real_inpaint_improves_psnr_and_keeps_known_pixels():
    clean = data.camera()[100:164, 300:364].astype(np.float64) / 255
    mask = np.zeros(clean.shape, bool)
    mask[::8, :] = True  # scratches
    mask[20:28, 30:38] = True
    damaged = np.where(mask, 0.0, clean)
    out = inpaint(damaged, mask, iterations=300, seed=0)
    np.testing.assert_array_equal(out[~mask], damaged[~mask])
    err0 = np.mean((damaged - clean)[mask] ** 2)
    err1 = np.mean((out - clean)[mask] ** 2)
    assert err1 < 0.2 * err0, (err0, err1)


def test_inpaint_stack_with_2d_mask(tiny_params, smooth_image):
    stack = np.stack([smooth_image, smooth_image[::-1]])
    mask = np.zeros((32, 32), np.int32)
    mask[5:9, 5:9] = 3  # label values: nonzero = fill
    out = inpaint(stack, mask, params=tiny_params, seed=0)
    assert out.shape == stack.shape
    np.testing.assert_array_equal(out[:, mask == 0], stack[:, mask == 0])


def test_inpaint_per_plane_mask_skips_planes_without_holes(tiny_params, smooth_image):
    stack = np.stack([smooth_image, smooth_image])
    mask = np.zeros(stack.shape, bool)
    mask[0, 3:6, 3:6] = True
    out, full = inpaint(stack, mask, params=tiny_params, seed=0, return_history=True)
    np.testing.assert_array_equal(out[1], stack[1])
    assert full.iterations_run == [30, 0]


# -- bad input: each gets a clear error -------------------------------------------------


@pytest.fixture
def img():
    return np.random.default_rng(0).random((32, 32))


def test_wrong_mask_shape(img):
    with pytest.raises(ValueError, match=r"mask has shape \(31, 32\) but image is \(32, 32\)"):
        prepare_inpaint(img, np.ones((31, 32), bool))


def test_mask_without_holes(img):
    with pytest.raises(ValueError, match="marks no pixel to fill"):
        prepare_inpaint(img, np.zeros((32, 32), bool))


def test_mask_all_holes(img):
    with pytest.raises(ValueError, match="every pixel as a hole"):
        prepare_inpaint(img, np.ones((32, 32), bool))


def test_missing_mask(img):
    with pytest.raises(ValueError, match="needs a mask"):
        prepare_inpaint(img, None)


def test_mask_bad_dtype(img):
    with pytest.raises(TypeError, match="mask has dtype"):
        prepare_inpaint(img, np.full((32, 32), "a"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf(img, bad):
    img = img.copy()
    img[3, 4] = bad
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        prepare_denoise(img)


@pytest.mark.parametrize("shape", [(0, 0), (0, 32), (1, 1), (32, 4), (1,), ()])
def test_empty_or_tiny(shape):
    with pytest.raises(ValueError, match="empty|pixels|dimensions"):
        prepare_denoise(np.zeros(shape))


@pytest.mark.parametrize("dtype", [bool, np.complex64, object])
def test_unsupported_dtype(dtype):
    with pytest.raises(TypeError, match="not supported"):
        prepare_denoise(np.zeros((32, 32), dtype=dtype))


@pytest.mark.parametrize("it, exc", [(0, ValueError), (-3, ValueError), (1.5, TypeError)])
def test_bad_iterations(img, it, exc):
    with pytest.raises(exc, match="iterations"):
        prepare_denoise(img, iterations=it)


def test_too_large_for_memory(monkeypatch):
    from napari_deep_prior import device

    monkeypatch.setattr(device, "memory_limit", lambda dev: device.MemoryLimit(512 * 2**20, "ram"))
    # a zero-stride view: no memory is taken by the test itself
    huge = np.broadcast_to(np.zeros((1, 1), np.float32), (8192, 8192))
    with pytest.raises(ImageTooLargeError, match=r"needs about .* GiB but only 0\.5 GiB"):
        prepare_denoise(huge)


def test_bad_device_and_seed(img):
    with pytest.raises(ValueError, match="device"):
        prepare_denoise(img, device="tpu")
    with pytest.raises(TypeError, match="seed"):
        prepare_denoise(img, seed="abc")


def test_bad_channel_axis(img):
    with pytest.raises(ValueError, match="out of range"):
        prepare_denoise(img, channel_axis=3)
    with pytest.raises(ValueError, match="needs at least 3 dimensions"):
        prepare_denoise(img, channel_axis=-1)


def test_poisson_needs_non_negative_counts(img):
    with pytest.raises(ValueError, match="non-negative photon counts"):
        prepare_denoise(img - 0.5, loss="poisson")


def test_poisson_denoise_on_counts_returns_float_rates(tiny_params, smooth_image):
    counts = np.random.default_rng(0).poisson(smooth_image * 30).astype(np.uint16)
    out, full = denoise(counts, params=tiny_params.replace(loss="poisson"), seed=0, return_history=True)
    # a rate estimate is fractional: float32 in the counts' units, history too
    assert out.dtype == np.float32 and out.shape == counts.shape
    assert full.history.dtype == np.float32
    assert not np.allclose(out, np.rint(out))
    assert 0.3 * counts.mean() < out.mean() < 3 * counts.mean()
    # the old output on request: the input's dtype, rounded
    rounded = denoise(counts, params=tiny_params.replace(loss="poisson"), seed=0, output_dtype="input")
    assert rounded.dtype == np.uint16
    np.testing.assert_array_equal(rounded, np.clip(np.rint(out.astype(np.float64)), 0, None))


def test_output_dtype_choices(tiny_params, smooth_image):
    img = (smooth_image * 255).astype(np.uint8)
    assert denoise(img, params=tiny_params, seed=0).dtype == np.uint8  # Gaussian: the input's
    assert denoise(img, params=tiny_params, seed=0, output_dtype="float64").dtype == np.float64
    assert denoise(img, params=tiny_params, seed=0, output_dtype=np.float16).dtype == np.float32
    mask = np.zeros(img.shape, bool)
    mask[10:14, 10:14] = True
    filled = inpaint(img, mask, params=tiny_params, seed=0, output_dtype="float32")
    assert filled.dtype == np.float32
    np.testing.assert_array_equal(filled[~mask], img[~mask])  # known pixels exact, in float32
    with pytest.raises(ValueError, match="output_dtype 'complex64' is not supported"):
        prepare_denoise(img, output_dtype="complex64")
    with pytest.raises(ValueError, match="output_dtype 'rounded' is not supported"):
        prepare_denoise(img, output_dtype="rounded")


def test_poisson_loss_selects_the_poisson_preset(img):
    counts = (img * 10).round().astype(np.uint16)
    assert prepare_denoise(counts, loss="poisson").params == api.get_preset("denoise-poisson")
    assert prepare_denoise(counts, preset="denoise-poisson").params.loss == "poisson"
    # an explicit other preset keeps its own settings, with the Poisson loss
    paper = prepare_denoise(counts, preset="denoise-paper", loss="poisson").params
    assert paper == api.get_preset("denoise-paper").replace(loss="poisson")


def test_camera_model_maps_camera_values_to_counts_and_back(one_torch_thread):
    rng = np.random.default_rng(0)
    rate = np.full((32, 32), 3.0)
    gain, offset, read = 2.5, 100.0, 1.5
    adu = np.rint(gain * (rng.poisson(rate) + rng.normal(0, read, rate.shape)) + offset).astype(np.uint16)
    job = prepare_denoise(adu, loss="poisson", camera_offset=offset, gain=gain, read_noise=read)
    # the fit sees shifted photon counts: (adu - offset) / gain + read**2, clipped at 0
    photons = np.maximum((adu - offset) / gain + read**2, 0)
    np.testing.assert_allclose(job.planes[0, ..., 0] * job.layout.counts_scale, photons, rtol=1e-5)
    # and the layout maps fitted values back to camera units exactly
    back = denormalise(job.planes, job.layout).reshape(adu.shape)
    np.testing.assert_allclose(back, np.maximum(adu, offset - read**2 * gain), atol=1e-3)
    est = denoise(
        adu, loss="poisson", iterations=60, early_stop=False, seed=0, camera_offset=offset, gain=gain, read_noise=read
    )
    # the rate comes back in the camera's units (rate * gain + offset), unbiased
    assert est.dtype == np.float32
    assert abs(est.mean() - adu.mean()) < 0.05 * gain * 3.0  # measured 0.035
    assert abs(est.mean() - (gain * 3.0 + offset)) < 0.1 * gain * 3.0


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(loss="poisson", gain=0), "gain must be > 0"),
        (dict(loss="poisson", read_noise=-1.0), "read_noise must be >= 0"),
        (dict(loss="poisson", camera_offset=float("nan")), "camera_offset must be a finite number"),
        (dict(gain=2.0, camera_offset=10.0), "camera_offset and gain describe how the image relates"),
    ],
)
def test_camera_model_errors(img, kw, msg):
    with pytest.raises(ValueError, match=msg):
        prepare_denoise((img * 50).astype(np.uint16), **kw)


def test_negative_counts_message_says_how_to_convert(img):
    with pytest.raises(ValueError, match=r"non-negative photon counts.*\(camera_offset, gain, read_noise\)") as exc:
        prepare_denoise(img - 0.5, loss="poisson")
    # a front end names its own options
    assert "(--offset, --gain, --read-noise)" in exc.value.reword(
        {"camera_offset": "--offset", "gain": "--gain", "read_noise": "--read-noise"}
    )
    # with a camera model, values below the offset are read noise, not an error
    job = prepare_denoise(img - 0.5, loss="poisson", camera_offset=-0.5, gain=0.01)
    assert job.planes.min() >= 0


def _photon_counts(peak: float, size: int = 48, seed: int = 1):
    """Smooth blobs on a dim background, as photon counts at ``peak`` (rate, counts)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    img = np.zeros((size, size))
    for _ in range(6):
        y, x = rng.uniform(6, size - 6, 2)
        yy, xx = np.mgrid[0:size, 0:size]
        img += rng.uniform(0.5, 1.0) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * rng.uniform(3, 6) ** 2))
    img = ndi.gaussian_filter(img, 1.0)
    rate = peak * (0.05 + 0.95 * img / img.max())
    return rate, rng.poisson(rate).astype(np.uint16)


def test_poisson_default_stops_at_the_noise_level_and_beats_the_counts(one_torch_thread):
    """The Poisson default must remove most of the shot noise.  Before its deviance stop it was
    stopped by ES-WMV only, hundreds of steps after the fit had begun to follow the noise, and
    ran all 3000 steps here and returned the counts, rounded (MSE ratio 0.997)."""
    rate, counts = _photon_counts(peak=10.0)
    est, out = denoise(counts, loss="poisson", seed=0, return_history=True, device="cpu")
    fit = out.fits[0]
    assert fit.stop_reason == "noise level"
    assert fit.expected_deviance is not None and fit.deviance <= fit.expected_deviance
    assert 0.8 < fit.expected_deviance < 1.3  # ~1 per pixel at these rates
    assert est.dtype == np.float32
    mse_noisy = np.mean((counts - rate) ** 2)
    mse_est = np.mean((est - rate) ** 2)
    assert mse_est < 0.15 * mse_noisy, (mse_est, mse_noisy)  # measured 0.044; before: 0.997


def test_package_import_is_light():
    import subprocess
    import sys

    code = (
        "import sys, napari_deep_prior; "
        "assert 'torch' not in sys.modules and 'qtpy' not in sys.modules; "
        "print(napari_deep_prior.__version__)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert callable(napari_deep_prior.denoise) and napari_deep_prior.denoise is api.denoise
