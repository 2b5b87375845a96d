"""The registry of colorizers: its metadata, the one steps() form, and adding a method."""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import pytest
import torch

from napari_deep_prior.arrays import drive
from napari_deep_prior.colorization.api import REGISTRY, colorize, get_colorizer, method_names, register
from napari_deep_prior.colorization.base import ABStep, ColorizeOptions, Colorizer, ColorizeStep
from napari_deep_prior.colorization.dip import DIPColorParams
from napari_deep_prior.colorization.hints import encode_hints
from napari_deep_prior.colorization.lab import rgb_to_lab

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_DIP = DIPColorParams(iterations=6, width=8, depth=2, skip=2, noise_channels=2, yield_every=2, preview_every=4)
HINTS = [(6, 5, "#3070c0"), (20, 26, (208, 128, 48))]


class ConstantAB(torch.nn.Module):
    """Stand-in network (eccv16 or siggraph17 call signature): the same ab everywhere."""

    def forward(self, L, ab_hint=None, mask=None):
        return torch.tensor([12.0, -20.0]).view(1, 2, 1, 1).expand(L.shape[0], 2, *L.shape[-2:]).clone()


class Flat(Colorizer):
    """A new method for the tests: the mean hint colour everywhere."""

    name = "flat"
    title = "flat (mean hint colour)"
    description = "flat: the mean hint colour everywhere."
    live = True

    def ab_steps(self, L, hints, options):
        ab_hint, mask = encode_hints(L, hints, size=options.hint_size)
        yield ABStep(1, 1)
        return np.broadcast_to(ab_hint[mask > 0].mean(axis=0), L.shape + (2,)).astype(np.float32)


def grey(size=32):
    yy, xx = np.mgrid[0:size, 0:size]
    return np.clip(90 + 80 * (xx / size) + 10 * np.sin(yy / 3.0), 0, 255).astype(np.uint8)


def test_the_registered_methods_and_their_metadata():
    assert method_names() == ("eccv16", "siggraph17", "levin", "dip")
    assert method_names(automatic=True) == ("eccv16", "siggraph17")
    assert method_names(hints=True) == ("siggraph17", "levin", "dip")
    assert method_names(automatic=False) == ("levin", "dip")
    needs_weights = {n for n, c in REGISTRY.items() if c.needs_weights}
    assert needs_weights == {"eccv16", "siggraph17"}
    assert {n for n, c in REGISTRY.items() if c.iterative} == {"dip"}
    assert not REGISTRY["dip"].live and REGISTRY["levin"].live
    assert REGISTRY["dip"].params_type is DIPColorParams
    for name, c in REGISTRY.items():
        assert c.name == name and c.title.startswith(name) and c.description
        assert c.needs_hints == (not c.automatic)


def test_cli_method_choices_are_the_registry():
    from napari_deep_prior.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    method = next(a for a in sub.choices["colorize"]._actions if "--method" in a.option_strings)
    assert tuple(method.choices) == method_names()
    assert method.default in method_names()


@pytest.mark.parametrize("method", ["eccv16", "siggraph17", "levin", "dip"])
def test_steps_returns_what_colorize_returns(method):
    img = grey()
    c = REGISTRY[method]
    hints = HINTS if c.accepts_hints and method != "eccv16" else None
    opts = ColorizeOptions(hint_size=3, weights=ConstantAB(), device="cpu", seed=3, params=TINY_DIP)
    records = []
    gen = c.steps(img, hints, options=opts)
    out = drive(gen, records.append)
    expected = colorize(
        img, method=method, hints=hints, hint_size=3, weights=ConstantAB(), device="cpu", seed=3, params=TINY_DIP
    )
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)
    np.testing.assert_array_equal(out, expected)
    assert records and all(isinstance(r, ColorizeStep) for r in records)
    assert records[-1].iteration == records[-1].iterations
    assert all(b.elapsed >= a.elapsed for a, b in itertools.pairwise(records))
    if method == "dip":
        total = TINY_DIP.iterations * TINY_DIP.ensemble
        assert [r.iteration for r in records] == list(range(2, total + 1, 2))
        previews = [r.preview for r in records if r.preview is not None]
        assert len(previews) == total // 4 and previews[0].shape == (32, 32, 3)
        assert previews[0].dtype == np.uint8 and all(r.loss is not None for r in records)
    else:
        assert [(r.iteration, r.iterations, r.preview) for r in records] == [(1, 1, None)]


def test_colorize_callback_sees_the_steps_records():
    seen = []
    colorize(grey(), method="levin", hints=HINTS, callback=seen.append)
    assert len(seen) == 1 and seen[0].iteration == seen[0].iterations == 1


def test_closing_steps_cancels_the_fit():
    gen = REGISTRY["dip"].steps(
        grey(),
        HINTS,
        options=ColorizeOptions(
            seed=0,
            device="cpu",
            params=DIPColorParams(iterations=100_000, width=8, depth=2, skip=2, noise_channels=2, yield_every=1),
        ),
    )
    first = next(gen)
    assert first.iteration == 1 and first.iterations == 200_000
    gen.close()  # what the widget's Cancel does at the next yield
    with pytest.raises(StopIteration):
        next(gen)


def test_a_new_colorizer_is_one_class_and_a_registry_entry(monkeypatch):
    monkeypatch.setitem(REGISTRY, "flat", Flat())
    assert method_names(hints=True)[-1] == "flat" and "flat" not in method_names(automatic=True)
    out = colorize(grey(), method="flat", hints=[(5, 5, "#3070c0")], hint_size=1)
    ab = rgb_to_lab(out[20, 20] / 255.0)[1:]
    np.testing.assert_allclose(ab, rgb_to_lab(out[5, 5] / 255.0)[1:], atol=2.5)
    assert ab[1] < -20  # blue everywhere
    with pytest.raises(ValueError, match="needs at least one hint"):
        colorize(grey(), method="flat")
    with pytest.raises(ValueError, match="'eccv16', 'siggraph17', 'levin', 'dip', 'flat'"):
        colorize(grey(), method="flat2")


def test_register_checks_what_it_gets(monkeypatch):
    monkeypatch.setattr("napari_deep_prior.colorization.api.REGISTRY", dict(REGISTRY))
    from napari_deep_prior.colorization import api

    assert register(Flat()).name == "flat" and "flat" in api.REGISTRY
    with pytest.raises(ValueError, match="already registered"):
        register(Flat())
    with pytest.raises(TypeError, match="Colorizer instance"):
        register(Flat)
    assert "flat" not in REGISTRY  # the real registry is untouched


def test_errors_name_the_method_and_the_fix():
    with pytest.raises(ValueError, match="method must be one of 'eccv16', 'siggraph17'; got 'levin'"):
        get_colorizer("levin", method_names(automatic=True))
    with pytest.raises(ValueError, match="eccv16 takes no hints; use method='siggraph17', 'levin' or 'dip'"):
        drive(REGISTRY["eccv16"].steps(grey(), HINTS))
    with pytest.raises(ValueError, match="use method='eccv16' or 'siggraph17' without hints"):
        drive(REGISTRY["levin"].steps(grey(), []))
    with pytest.raises(TypeError, match="ColorizeOptions"):
        drive(REGISTRY["levin"].steps(grey(), HINTS, options={"hint_size": 3}))
    with pytest.raises(TypeError, match="seed must be an integer"):
        colorize(grey(), method="dip", hints=HINTS, seed=1.5)


def test_parameter_errors_name_the_api_parameters_and_can_be_reworded():
    from napari_deep_prior.colorization.hints import check_hint_size
    from napari_deep_prior.errors import ParameterError

    with pytest.raises(ParameterError) as err:
        colorize(np.zeros((32, 32), np.float32), method="{nope}")
    assert str(err.value) == "method must be one of 'eccv16', 'siggraph17', 'levin', 'dip'; got '{nope}'"
    assert err.value.reword({"method": "--method"}).startswith("--method must be one of")
    with pytest.raises(ParameterError, match="^hint_size must be a positive odd number") as err:
        check_hint_size(4)
    assert err.value.reword({"hint_size": "hint size"}).startswith("hint size must be")
    with pytest.raises(ParameterError) as err:
        colorize(np.zeros((5, 32, 32), np.float32))
    assert "or set channel_axis if" in str(err.value)
