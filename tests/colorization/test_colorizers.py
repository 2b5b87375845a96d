"""The eccv16 / siggraph17 networks: published state_dict layout and forward passes.

The published key/shape list (BSD-2 layout metadata of richzhang/colorization) is copied
in tests/colorization/data; random state dicts built from it must load with strict=True.
"""

from __future__ import annotations

import pytest
import torch

from colorizer_layout import published_layout, random_state_dict
from napari_deep_prior.colorization.networks import (
    AB_GRID_SIZE,
    ECCVGenerator,
    SIGGRAPHGenerator,
    ab_grid,
    build_colorizer,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def empty_net(cls):
    """The network without running its (slow, here useless) random initialisation."""
    with torch.device("meta"):
        net = cls()
    return net.to_empty(device="cpu").eval()


@pytest.fixture(scope="module")
def nets():
    return {"eccv16": empty_net(ECCVGenerator), "siggraph17": empty_net(SIGGRAPHGenerator)}


@pytest.mark.parametrize("name", ["eccv16", "siggraph17"])
def test_state_dict_layout_is_the_published_one(nets, name):
    published = published_layout()[name]
    sd = nets[name].state_dict()
    assert set(sd) == set(published) - {"__params__"}
    for key, tensor in sd.items():
        assert list(tensor.shape) == published[key], key
    n_params = sum(p.numel() for p in nets[name].parameters())
    assert n_params == published["__params__"][0]


@pytest.mark.parametrize("name", ["eccv16", "siggraph17"])
def test_random_published_state_dict_loads_strictly(nets, name):
    sd = random_state_dict(name)
    nets[name].load_state_dict(sd, strict=True)
    key = next(k for k in sd if k.endswith("weight"))
    assert torch.equal(nets[name].state_dict()[key], sd[key])


def test_eccv16_forward(nets):
    net = nets["eccv16"]
    net.load_state_dict(random_state_dict("eccv16", 1))
    L = torch.rand(1, 1, 32, 48) * 100
    with torch.no_grad():
        logits = net.logits(L)
        ab = net(L)
    assert ab.shape == (1, 2, 32, 48)
    assert logits.shape == (1, 313, 8, 12)
    # ab is 110 x a convex combination of the bias-free model_out columns
    bound = 110 * net.model_out.weight.abs().amax(dim=1).flatten()
    assert torch.all(ab.abs().amax(dim=(0, 2, 3)) <= bound + 1e-3)
    assert torch.isfinite(ab).all()


def test_siggraph17_forward_with_and_without_hints(nets):
    net = nets["siggraph17"]
    net.load_state_dict(random_state_dict("siggraph17", 2))
    L = torch.rand(1, 1, 32, 40) * 100
    hint = torch.zeros(1, 2, 32, 40)
    mask = torch.zeros(1, 1, 32, 40)
    hint[:, :, 10:13, 10:13] = 40.0
    mask[:, :, 10:13, 10:13] = 1.0
    with torch.no_grad():
        auto = net(L)
        guided = net(L, hint, mask)
        dist = net.class_distribution(L)
    assert auto.shape == (1, 2, 32, 40)
    assert not torch.allclose(auto, guided)
    assert auto.abs().max() <= 110 + 1e-4
    assert dist.shape == (1, AB_GRID_SIZE**2, 8, 10)
    torch.testing.assert_close(dist.sum(dim=1), torch.ones(1, 8, 10))


def test_siggraph17_needs_multiples_of_8(nets):
    with pytest.raises(ValueError, match="divisible by 8"):
        nets["siggraph17"](torch.zeros(1, 1, 30, 32))


def test_siggraph17_bad_input_shape(nets):
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        nets["siggraph17"](torch.zeros(1, 3, 32, 32))


def test_ab_grid_layout():
    grid = ab_grid()
    assert grid.shape == (529, 2)
    assert grid[0].tolist() == [-110.0, -110.0]
    assert grid[1].tolist() == [-110.0, -100.0]  # bin i * 23 + j: b varies fastest
    assert grid[23].tolist() == [-100.0, -110.0]
    assert grid[-1].tolist() == [110.0, 110.0]


def test_build_colorizer():
    with pytest.raises(ValueError, match="eccv16"):
        build_colorizer("resnet")
