"""The eccv16 / siggraph17 networks: published state_dict layout and forward passes.

The published key/shape list (BSD-2 layout metadata of richzhang/colorization) is copied
in tests/core/data; random state dicts built from it must load with strict=True.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from napari_deep_prior.core.colorizers import (
    AB_GRID_SIZE, ECCVGenerator, SIGGRAPHGenerator, ab_grid, build_colorizer,
)

KEYS_FILE = Path(__file__).parent / "data" / "colorizer_state_dict_keys.txt"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread avoids OpenMP barrier stalls on a busy shared CPU
    (measured here: 60 DIP steps on 32x32 took 0.6 s with 1 thread, 28 s with 2)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def published_layout() -> dict[str, dict[str, list[int]]]:
    """{model: {key: shape}} and the parameter counts, parsed from the key file."""
    layout: dict[str, dict[str, list[int]]] = {}
    section = None
    for line in KEYS_FILE.read_text().splitlines():
        m = re.match(r"== (\w+)", line)
        if m:
            section = m.group(1)
            layout[section] = {}
            continue
        m = re.match(r"\s+(\S+)\s+\[([\d, ]*)\]$", line)
        if m and section:
            layout[section][m.group(1)] = [int(x) for x in m.group(2).split(",") if x.strip()]
        m = re.match(r"\s+params (\d+)", line)
        if m and section:
            layout[section]["__params__"] = [int(m.group(1))]
    return layout


def random_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the published keys and shapes and well-scaled random values."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in published_layout()[name].items():
        if key == "__params__":
            continue
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(100, dtype=torch.long)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean") or (key.endswith("bias") and len(shape) == 1):
            sd[key] = 0.01 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # BatchNorm weight
            sd[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = max(1, torch.Size(shape).numel() // shape[0])
            sd[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    return sd


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
    assert dist.shape == (1, AB_GRID_SIZE ** 2, 8, 10)
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
