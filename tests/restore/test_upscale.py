"""Super-resolution: the Downsample degradation, upscale() and the command line's upscale.

Tiny images (16-24 px inputs) and a tiny network; quality is measured in benchmarks/dip_upscale.py.
"""

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from skimage.transform import resize

from napari_deep_prior import upscale
from napari_deep_prior.cli import main
from napari_deep_prior.io import read_history_tiff
from napari_deep_prior.restore.api import prepare, prepare_upscale
from napari_deep_prior.restore.degradations import (
    DEGRADATIONS,
    Downsample,
    DownsampleOperator,
    lanczos2_kernel,
)


def _smooth(h, w, seed=0):
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(2, 5, 2)
    return (0.5 + 0.35 * np.sin(a * x + 1) * np.cos(b * y)).astype(np.float32)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_lanczos_kernel_is_normalised_symmetric_and_4f_long(factor):
    k = lanczos2_kernel(factor)
    assert k.shape == (4 * factor,)
    assert k.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(k, k[::-1])
    assert k.argmax() in (2 * factor - 1, 2 * factor)  # peak at the centre
    assert (k < 0).any()  # Lanczos lobes, not a box or a Gaussian


@pytest.mark.parametrize("factor", [2, 4])
def test_downsample_operator_shape_constants_and_centring(factor):
    op = DownsampleOperator(factor)
    x = torch.full((1, 3, 8 * factor, 6 * factor), 0.3)
    y = op(x)
    assert y.shape == (1, 3, 8, 6)
    np.testing.assert_allclose(y.numpy(), 0.3, atol=1e-6)  # constants pass unchanged
    # a linear ramp along x: the low-resolution pixel k takes the mean of its block k
    ramp = torch.arange(16 * factor, dtype=torch.float32).repeat(1, 1, 16 * factor, 1)
    low = op(ramp)[0, 0, 8]
    centres = torch.arange(16) * factor + (factor - 1) / 2
    np.testing.assert_allclose(low[3:-3].numpy(), centres[3:-3].numpy(), atol=1e-3)


def test_registry_has_upscale_with_its_factor_field():
    assert DEGRADATIONS["upscale"] is Downsample
    (field,) = Downsample.fields
    assert field.name == "factor" and field.kind == "choice" and field.default in field.choices
    assert Downsample(2).output_hw(10, 12) == (20, 24) and Downsample(4).output_box((0, 5, 2, 7)) == (0, 20, 8, 28)


@pytest.mark.parametrize("factor", [3, 0, 16])
def test_bad_factor_names_the_choices(factor):
    with pytest.raises(ValueError, match="factor must be one of 2, 4, 8"):
        upscale(np.zeros((16, 16), np.float32), factor)


def test_non_integer_factor_is_a_type_error():
    with pytest.raises(TypeError, match="factor must be an integer"):
        Downsample("4")
    with pytest.raises(TypeError, match="factor must be an integer"):
        Downsample(2.0)


def test_poisson_loss_is_refused_for_upscale():
    with pytest.raises(ValueError, match="loss 'poisson' is not available for upscale; choose one of: gaussian"):
        prepare(Downsample(2), np.ones((16, 16), np.float32), loss="poisson")


@pytest.mark.parametrize(
    ("dtype", "channel_axis", "shape", "out_shape"),
    [
        (np.uint8, None, (16, 20), (32, 40)),
        (np.float32, -1, (16, 12, 3), (32, 24, 3)),
        (np.uint16, 0, (2, 16, 16), (2, 32, 32)),
        (np.float16, None, (3, 16, 16), (3, 32, 32)),  # a stack of 3 grey planes
    ],
)
def test_upscale_shapes_and_dtypes(one_torch_thread, tiny_params, dtype, channel_axis, shape, out_shape):
    rng = np.random.default_rng(0)
    img = rng.random(shape)
    img = (img * (np.iinfo(dtype).max if np.dtype(dtype).kind == "u" else 1)).astype(dtype)
    before = img.copy()
    out, info = upscale(
        img, 2, params=tiny_params.replace(iterations=10), channel_axis=channel_axis, seed=0, return_history=True
    )
    np.testing.assert_array_equal(img, before)  # the input is never modified
    assert out.shape == out_shape
    assert out.dtype == (np.float32 if dtype == np.float16 else dtype)
    assert info.history.shape == (len(info.history_iterations),) + out_shape


def test_upscale_keeps_rgba_alpha_enlarged(one_torch_thread, tiny_params):
    rgba = (np.random.default_rng(1).random((12, 16, 4)) * 255).astype(np.uint8)
    out = upscale(rgba, 4, params=tiny_params.replace(iterations=5), channel_axis=-1, seed=0)
    assert out.shape == (48, 64, 4)
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3].repeat(4, 0).repeat(4, 1))


def test_upscale_recovers_the_image_and_is_consistent_with_the_input(one_torch_thread, tiny_params):
    y, x = np.mgrid[0:64, 0:64] / 64
    hr = (0.5 + 0.35 * np.sin(7 * x + 1) * np.cos(9 * y)).astype(np.float32)
    lr = DownsampleOperator(2)(torch.from_numpy(hr)[None, None])[0, 0].numpy()
    sr = upscale(lr, 2, params=tiny_params.replace(iterations=300, history_every=0, early_stop=False), seed=0)
    assert sr.shape == hr.shape
    # the structure is recovered (the tiny net after 300 steps: about 0.3 % of the variance left)
    assert float(np.mean((sr - hr) ** 2)) < 0.05 * float(np.var(hr))
    # the fit's own criterion: its down-sampled result reproduces the input
    back = DownsampleOperator(2)(torch.from_numpy(sr)[None, None])[0, 0].numpy()
    assert float(np.mean((back - lr) ** 2)) < 0.05 * float(np.var(lr))


def test_tiled_upscale_plans_tiles_on_the_input(one_torch_thread, tiny_params):
    lr = _smooth(40, 56)
    job = prepare_upscale(lr, 2, params=tiny_params.replace(iterations=5), tile_size=32, tile_overlap=8, seed=0)
    assert job.tiles is not None and len(job.tiles) > 1
    assert max(y1 for _y0, y1, _x0, _x1 in job.tiles) == 40 and max(x1 for *_r, x1 in job.tiles) == 56
    from napari_deep_prior.arrays import drive

    out = drive(job.steps())
    assert out.image.shape == (80, 112) and np.isfinite(out.image).all()
    assert out.history.shape[1:] == (80, 112)


def test_cancelled_upscale_returns_the_bicubic_stand_in_for_unreached_planes(one_torch_thread, tiny_params):
    stack = np.stack([_smooth(16, 16, s) for s in range(2)])
    job = prepare_upscale(stack, 2, params=tiny_params.replace(iterations=10, yield_every=5), seed=0)
    gen = job.steps()
    next(gen)  # plane 0 has started; plane 1 not
    out = job.result()
    gen.close()
    assert out.image.shape == (2, 32, 32)
    ref = resize(stack[1], (32, 32), order=3, mode="edge", anti_aliasing=False)
    np.testing.assert_allclose(out.image[1], ref, atol=1e-4)


def test_cli_upscale_writes_the_larger_image_and_history(tmp_path, capsys):
    lr = (255 * _smooth(16, 20)).astype(np.uint8)
    hr = (255 * resize(lr / 255.0, (32, 40), order=3)).astype(np.uint8)
    iio.imwrite(tmp_path / "lr.png", lr)
    iio.imwrite(tmp_path / "hr.png", hr)
    rc = main(
        [
            "upscale",
            str(tmp_path / "lr.png"),
            "-o",
            str(tmp_path / "sr.png"),
            "--factor",
            "2",
            "--iterations",
            "10",
            "--history-every",
            "5",
            "--history",
            str(tmp_path / "h.tif"),
            "--reference",
            str(tmp_path / "hr.png"),
            "-q",
        ]
    )
    assert rc == 0
    out = iio.imread(tmp_path / "sr.png")
    assert out.shape == (32, 40) and out.dtype == np.uint8
    frames, its, _losses = read_history_tiff(tmp_path / "h.tif")
    # --history-every 5 on a 10-iteration run: every iteration (the cadence is at most iterations // 10)
    assert frames.shape == (10, 32, 40) and its == list(range(1, 11))
    text = capsys.readouterr().out
    assert "PSNR" in text and "->" not in text.split("PSNR")[-1]  # no "before": the sizes differ


def test_cli_upscale_refuses_a_bad_factor(tmp_path, capsys):
    iio.imwrite(tmp_path / "lr.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(SystemExit) as exc:
        main(["upscale", str(tmp_path / "lr.png"), "-o", str(tmp_path / "sr.png"), "--factor", "3"])
    assert exc.value.code == 2
    assert "invalid choice: 3" in capsys.readouterr().err
