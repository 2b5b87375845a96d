"""The colorization engine end to end, on tiny synthetic images and random-weight networks."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from skimage import color as skcolor

from colorizer_layout import random_state_dict
from napari_deep_prior.colorization import api as CZ
from napari_deep_prior.colorization import levin as LV
from napari_deep_prior.colorization import pretrained as PT
from napari_deep_prior.colorization import weights as W
from napari_deep_prior.colorization.api import (
    DIPColorParams,
    colorize,
    colorize_auto,
    colorize_hints,
    lightness,
    suggest_colors,
)
from napari_deep_prior.colorization.hints import encode_hints
from napari_deep_prior.colorization.networks import ECCVGenerator, SIGGRAPHGenerator
from napari_deep_prior.device import resolve_device

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- random networks with the published layout ----------------------------------------


@pytest.fixture(scope="module")
def random_nets():
    nets = {}
    for name, cls in (("eccv16", ECCVGenerator), ("siggraph17", SIGGRAPHGenerator)):
        with torch.device("meta"):
            net = cls()
        net = net.to_empty(device="cpu")
        net.load_state_dict(random_state_dict(name), strict=True)
        nets[name] = net.eval()
    return nets


@pytest.fixture
def fake_loader(monkeypatch, random_nets):
    """Replace the weights loader (no files, no network); record the calls."""
    calls = []

    def load(name, weights=None, *, device="cpu", **kwargs):
        calls.append((name, weights, str(device)))
        return random_nets[name].to(device)

    CZ.clear_model_cache()
    monkeypatch.setattr(W, "load_colorizer", load)
    yield calls
    CZ.clear_model_cache()


class ConstantAB(torch.nn.Module):
    """Stand-in network returning the same ab everywhere (and a flat class distribution)."""

    def __init__(self, a=8.0, b=-6.0):
        super().__init__()
        self.ab = torch.nn.Parameter(torch.tensor([a, b]).view(1, 2, 1, 1), requires_grad=False)

    def forward(self, L, ab_hint=None, mask=None):
        return self.ab.expand(L.shape[0], 2, *L.shape[-2:]).clone()

    def class_distribution(self, L, ab_hint=None, mask=None):
        n, _, h, w = L.shape
        logits = torch.zeros(n, 529, h // 4, w // 4)
        logits[:, 23 * 13 + 5] = 5.0  # (a, b) = (20, -60): blue-ish
        logits[:, 23 * 15 + 17] = 4.0  # (40, 60): orange-ish
        return torch.softmax(logits, dim=1)


def grey_image(h=40, w=56, dtype=np.uint8):
    yy, xx = np.mgrid[0:h, 0:w]
    g = 0.25 + 0.5 * (xx / w) * (0.6 + 0.4 * np.cos(yy / 5.0))
    if dtype == np.uint8:
        return (g * 255).astype(np.uint8)
    if dtype == np.uint16:
        return (g * 4000 + 100).astype(np.uint16)
    return g.astype(dtype)


def two_colour_scene(size=32):
    """An RGB scene: a bluish left half and a reddish right half, with texture."""
    yy, xx = np.mgrid[0:size, 0:size]
    L = 45 + 12 * np.sin(xx / 3.0) * np.cos(yy / 4.0) + np.where(xx < size // 2, 10.0, -5.0)
    a = np.where(xx < size // 2, 5.0, 45.0)
    b = np.where(xx < size // 2, -40.0, 30.0)
    rgb = skcolor.lab2rgb(np.dstack([L, a, b]))
    return rgb, L


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2))


# --- automatic colorization -----------------------------------------------------------


def test_auto_eccv16_end_to_end_on_published_layout(fake_loader):
    img = grey_image(40, 56)
    before = img.copy()
    out = colorize(img, method="eccv16", device="cpu")
    assert out.shape == (40, 56, 3) and out.dtype == np.uint8
    assert fake_loader == [("eccv16", None, "cpu")]
    np.testing.assert_array_equal(img, before)  # input untouched
    colorize(img, method="eccv16", device="cpu")
    assert len(fake_loader) == 1  # the network is cached between calls


def test_auto_keeps_the_full_resolution_lightness():
    img = grey_image(37, 300, np.float32)  # not square, not a multiple of anything
    out = colorize_auto(img, method="siggraph17", weights=ConstantAB(), device="cpu")
    assert out.shape == (37, 300, 3) and out.dtype == np.float32
    lab = skcolor.rgb2lab(out)
    np.testing.assert_allclose(lab[..., 0], lightness(img), atol=0.3)
    np.testing.assert_allclose(lab[..., 1:].mean(axis=(0, 1)), [8.0, -6.0], atol=0.5)


def test_rgb_input_is_recoloured_from_its_lightness():
    rgb, L = two_colour_scene(32)
    chw = np.moveaxis(rgb, -1, 0).astype(np.float32)
    out = colorize(chw, method="eccv16", weights=ConstantAB(0.0, 0.0), channel_axis=0, device="cpu")
    assert out.shape == (32, 32, 3)
    np.testing.assert_allclose(skcolor.rgb2lab(out)[..., 0], L, atol=0.3)
    np.testing.assert_allclose(out[..., 0], out[..., 2], atol=2e-3)  # ab = 0: grey
    rgba = np.concatenate([rgb, np.ones((32, 32, 1))], axis=-1)
    out2 = colorize(rgba, method="eccv16", weights=ConstantAB(0.0, 0.0), device="cpu")
    np.testing.assert_allclose(out2, out, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint16, np.float64, np.float16])
def test_non_uint8_input_gives_float32(dtype):
    out = colorize(grey_image(16, 16, dtype), method="eccv16", weights=ConstantAB(), device="cpu")
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1


def test_missing_weights_offline_raise_weights_error(tmp_path, monkeypatch):
    CZ.clear_model_cache()
    monkeypatch.delenv(W.ENV_VAR, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*a, **k):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(W, "_urlopen", offline)
    with pytest.raises(W.WeightsError, match="siggraph17-df00044c.pth"):
        colorize(grey_image(16, 16), method="siggraph17", device="cpu")


# --- hints ----------------------------------------------------------------------------


def test_siggraph17_hints_end_to_end_on_published_layout(fake_loader):
    img = grey_image(40, 56)
    hints = [(5, 5, "#ff0000"), (30, 50, (0, 0.5, 1.0))]
    out = colorize(img, method="siggraph17", hints=hints, hint_size=3, device="cpu")
    assert out.shape == (40, 56, 3) and out.dtype == np.uint8
    assert fake_loader[0][0] == "siggraph17"


def test_siggraph17_hints_reach_the_network_in_the_256_grid(monkeypatch):
    seen = {}

    class Spy(ConstantAB):
        def forward(self, L, ab_hint=None, mask=None):
            seen.update(L=L, ab_hint=ab_hint, mask=mask)
            return super().forward(L)

    img = grey_image(64, 128)
    colorize_hints(img, [(32, 64, "#ff0000")], method="siggraph17", hint_size=5, weights=Spy(), device="cpu")
    assert seen["L"].shape == (1, 1, 256, 256)
    mask = seen["mask"][0, 0].numpy()
    assert mask.sum() == 25
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (128, 132, 127, 131)  # centre (130, 129)
    assert seen["ab_hint"][0, 0].numpy()[130, 130] > 30  # red: large a


def test_levin_reproduces_hint_colours():
    rgb, L = two_colour_scene(32)
    hints = [(16, 4, rgb[16, 4]), (16, 28, rgb[16, 28])]
    out = colorize(L / 100.0, method="levin", hints=hints)
    lab = skcolor.rgb2lab(out)
    np.testing.assert_allclose(lab[16, 4, 1:], skcolor.rgb2lab(rgb)[16, 4, 1:], atol=2.0)
    assert psnr(out, rgb) > psnr(skcolor.lab2rgb(np.dstack([L, 0 * L, 0 * L])), rgb) + 3


def test_dip_improves_over_grey_and_is_reproducible():
    rgb, L = two_colour_scene(32)
    grey = skcolor.lab2rgb(np.dstack([L, np.zeros_like(L), np.zeros_like(L)]))
    hints = [(8, 5, rgb[8, 5]), (24, 10, rgb[24, 10]), (8, 26, rgb[8, 26]), (24, 22, rgb[24, 22])]
    steps = []
    params = DIPColorParams(iterations=60, yield_every=20)
    out = colorize(
        grey, method="dip", hints=hints, hint_size=3, seed=1, params=params, device="cpu", callback=steps.append
    )
    assert [s.iteration for s in steps] == [20, 40, 60, 80, 100, 120]  # 2 fits
    assert steps[-1].loss < steps[0].loss
    mse_grey = np.mean((grey - rgb) ** 2)
    mse_dip = np.mean((out - rgb) ** 2)
    assert mse_dip < 0.5 * mse_grey
    again = colorize(grey, method="dip", hints=hints, hint_size=3, seed=1, params=params, device="cpu")
    np.testing.assert_array_equal(out, again)


def test_dip_seed_changes_result():
    _, L = two_colour_scene(16)
    params = DIPColorParams(iterations=5, depth=3)
    a = colorize(L / 100, method="dip", hints=[(3, 3, "#ff0000")], seed=0, params=params)
    b = colorize(L / 100, method="dip", hints=[(3, 3, "#ff0000")], seed=1, params=params)
    assert not np.array_equal(a, b)


def test_dip_refine_keeps_hints():
    rgb, L = two_colour_scene(16)
    hints = [(3, 3, rgb[3, 3]), (12, 12, rgb[12, 12])]
    ab_hint, mask = encode_hints(L, hints, size=3)
    params = DIPColorParams(iterations=5, depth=3, refine=0.01)
    ab = CZ.dip_ab(L, ab_hint, mask, params=params, seed=0, device="cpu")
    assert ab.shape == (16, 16, 2) and ab.dtype == np.float32
    # refinement keeps the hinted pixels exactly
    np.testing.assert_allclose(ab[mask > 0], ab_hint[mask > 0], atol=1e-3)


def test_dip_works_on_a_reduced_grid():
    _, L = two_colour_scene(32)
    params = DIPColorParams(iterations=5, depth=3, max_pixels=16 * 16)
    out = colorize(L / 100, method="dip", hints=[(3, 3, "#ff0000")], seed=0, params=params)
    assert out.shape == (32, 32, 3)


def test_levin_on_a_reduced_grid_keeps_full_lightness(monkeypatch):
    monkeypatch.setattr(LV, "LEVIN_MAX_PIXELS", 24 * 24)
    rgb, L = two_colour_scene(48)
    ab_hint, mask = encode_hints(L, [(20, 5, rgb[20, 5])], size=3)
    ab = CZ.levin_ab(L, ab_hint, mask, max_pixels=24 * 24)
    assert ab.shape == (48, 48, 2)
    np.testing.assert_allclose(ab[40, 5], ab_hint[20, 5], atol=3.0)


# --- suggestions ----------------------------------------------------------------------


def test_suggest_colors_from_the_class_distribution():
    L = np.full((40, 40), 60.0)
    s = suggest_colors(L, 20, 20, weights=ConstantAB(), device="cpu", k=2)
    assert s.rgb.shape == (2, 3) and s.ab.shape == (2, 2)
    np.testing.assert_allclose(s.probability.sum(), 1.0)
    assert s.probability[0] >= s.probability[1]
    # the most probable bin is (20, -60), pulled into gamut at L = 60
    assert s.ab[0][1] < -30 and s.ab[1][1] > 30
    assert (s.rgb >= 0).all() and (s.rgb <= 1).all()


def test_suggest_colors_on_published_layout(fake_loader, monkeypatch):
    monkeypatch.setattr(PT, "NET_SIZE", 64)  # same code path, a quarter of the pixels
    s = suggest_colors(lightness(grey_image(40, 56)), 10, 12, device="cpu", k=9, hints=[(5, 5, "#00ff00")])
    assert 1 <= len(s.rgb) <= 9
    assert np.all(np.diff(s.probability) <= 1e-12)


# --- errors ---------------------------------------------------------------------------


def test_error_no_hints_for_levin():
    with pytest.raises(ValueError, match="needs at least one hint"):
        colorize(grey_image(), method="levin")


def test_error_no_hints_for_dip():
    with pytest.raises(ValueError, match="needs at least one hint"):
        colorize(grey_image(), method="dip", hints=[])


def test_error_hints_for_eccv16():
    with pytest.raises(ValueError, match="eccv16 takes no hints"):
        colorize(grey_image(), method="eccv16", hints=[(1, 1, "#ffffff")])


def test_error_hint_outside():
    with pytest.raises(ValueError, match=r"outside the image of shape \(40, 56\)"):
        colorize(grey_image(), method="levin", hints=[(40, 3, "#ffffff")])


def test_error_hint_outside_from_a_csv_names_the_line(tmp_path):
    from napari_deep_prior.colorization.hints import read_hints_csv

    path = tmp_path / "hints.csv"
    path.write_text("row,col,color\n4,3,#3070c0\n40,3,#ffffff\n")
    with pytest.raises(ValueError, match=r"hints.csv, line 3 \('40,3,#ffffff'\): the hint at .* is outside the image"):
        colorize(grey_image(), method="levin", hints=read_hints_csv(path))


def test_error_bad_colour_string():
    with pytest.raises(ValueError, match="#rrggbb"):
        colorize(grey_image(), method="levin", hints=[(4, 3, "reddish")])


def test_error_malformed_hint():
    with pytest.raises(TypeError, match=r"\(row, col, colour\)"):
        colorize(grey_image(), method="levin", hints=[(4, 3)])


def test_error_stack_of_planes():
    with pytest.raises(ValueError, match="stack of 5 planes"):
        colorize(np.zeros((5, 32, 32), np.float32), method="levin", hints=[(1, 1, "#fff")])


def test_error_four_dimensions():
    with pytest.raises(ValueError, match="4 dimensions"):
        colorize(np.zeros((2, 32, 32, 3), np.float32))


def test_error_two_channels():
    with pytest.raises(ValueError, match="2 channels"):
        colorize(np.zeros((32, 32, 2), np.float32), channel_axis=-1)


def test_error_channel_axis_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        colorize(np.zeros((32, 32, 3), np.float32), channel_axis=3)


def test_error_unknown_method():
    with pytest.raises(ValueError, match="method must be one of"):
        colorize(grey_image(), method="pix2pix")


def test_error_bool_image():
    with pytest.raises(TypeError, match="dtype bool"):
        colorize(np.zeros((32, 32), bool))


def test_error_tiny_image():
    with pytest.raises(ValueError, match="at least 8x8"):
        colorize(np.zeros((4, 32), np.float32))


def test_error_nan():
    img = grey_image(16, 16, np.float32)
    img[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        colorize(img, method="levin", hints=[(1, 1, "#fff")])


def test_error_even_hint_size():
    with pytest.raises(ValueError, match="odd"):
        colorize(grey_image(), method="levin", hints=[(1, 1, "#fff")], hint_size=4)


def test_error_bad_dip_params():
    with pytest.raises(ValueError, match="iterations"):
        DIPColorParams(iterations=0)
    with pytest.raises(ValueError, match="ensemble"):
        DIPColorParams(ensemble=0)
    with pytest.raises(TypeError, match="DIPColorParams"):
        colorize(grey_image(), method="dip", hints=[(1, 1, "#fff")], params={"iterations": 5})


def test_error_suggest_colors_outside(fake_loader):
    with pytest.raises(ValueError, match="outside the image"):
        suggest_colors(np.zeros((16, 16)), 20, 3, weights=ConstantAB(), device="cpu")


def test_device_auto_resolves_here():
    dev = resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if expected == "cpu" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        expected = "mps"
    assert dev.type == expected


def test_error_dip_shapes():
    with pytest.raises(ValueError, match="ab_hint"):
        CZ.dip_ab(np.zeros((16, 16)), np.zeros((16, 15, 2)), np.ones((16, 16)), device="cpu")


def test_error_dip_empty_mask():
    with pytest.raises(ValueError, match="at least one hint"):
        CZ.dip_ab(np.zeros((16, 16)), np.zeros((16, 16, 2)), np.zeros((16, 16)), device="cpu")
