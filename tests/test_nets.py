import pytest
import torch

from napari_deep_prior.nets import (
    SkipNet,
    make_input,
    min_padded_side,
    nearest_up_conv3x3,
    required_multiple,
    seeded_skip_net,
)
from napari_deep_prior.restore.presets import PRESETS, NetParams, get_preset

# Parameter counts of the reference networks (REFERENCE.md, section 1), for RGB output.
REFERENCE_MPARAMS = {
    "denoise-paper": 2.22,
    "denoise-photo": 0.57,
    "inpaint-large-hole": 2.16,
    "inpaint-text": 3.00,
    "inpaint-large-regions": 3.00,
    "restore-missing-pixels": 2.22,
}


@pytest.mark.parametrize("name", sorted(REFERENCE_MPARAMS))
def test_reference_parameter_counts(name):
    net = SkipNet.from_params(PRESETS[name].net, 3)
    n = sum(p.numel() for p in net.parameters()) / 1e6
    assert n == pytest.approx(REFERENCE_MPARAMS[name], abs=0.005)


@pytest.mark.parametrize("upsample", ["bilinear", "nearest"])
@pytest.mark.parametrize("skip", [(0, 0, 0), (4, 0, 2)])
def test_forward_shape_and_range(upsample, skip):
    p = NetParams((8, 8, 8), (8, 8, 8), skip, upsample=upsample, input_depth=4)
    net = SkipNet.from_params(p, 2)
    side = min_padded_side(p)
    z = make_input(p, side, 2 * side, generator=torch.Generator().manual_seed(0))
    y = net(z)
    assert y.shape == (1, 2, side, 2 * side)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_meshgrid_input():
    p = get_preset("inpaint-large-hole").net
    z = make_input(p, 64, 96, generator=torch.Generator().manual_seed(0))
    assert z.shape == (1, 2, 64, 96)
    assert float(z.min()) == 0.0 and float(z.max()) == 1.0


def test_noise_input_is_seeded_and_small():
    p = NetParams(input_depth=3)
    a = make_input(p, 32, 32, generator=torch.Generator().manual_seed(1))
    b = make_input(p, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 0.1


def test_required_multiple():
    assert required_multiple(NetParams()) == 32
    assert min_padded_side(get_preset("inpaint-large-regions").net) == 64 * 3


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(channels_down=(8, 8), channels_up=(8,), channels_skip=(0, 0)), "one entry per level"),
        (dict(kernel_down=4), "odd"),
        (dict(upsample="cubic"), "upsample"),
        (dict(input_kind="image"), "input_kind"),
        (dict(channels_down=()), "at least one level"),
    ],
)
def test_netparams_validation(kw, msg):
    with pytest.raises(ValueError, match=msg):
        NetParams(**kw)


def test_nearest_up_conv3x3_is_the_convolution_of_the_up_sampled_map():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 7, 9, generator=g, dtype=torch.float64)
    w = torch.randn(4, 5, 3, 3, generator=g, dtype=torch.float64)
    up = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(up, (1, 1, 1, 1), mode="reflect"), w)
    got = nearest_up_conv3x3(x, w)
    assert got.shape == (2, 4, 14, 18)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def _forward_up_sampling_first(net: SkipNet, z: torch.Tensor) -> torch.Tensor:
    """The network's function written the plain way: up-sample, concatenate, then the up block."""
    inputs, x = [], z
    for down in net.down:
        inputs.append(x)
        x = down(x)
    for i in reversed(range(len(net.down))):
        x = net._up2(x, i)
        if net.params.channels_skip[i]:
            x = torch.cat([net.skip[i](inputs[i]), x], dim=1)
        x = net.up[i](x)
    return torch.sigmoid(net.out(x))


@pytest.mark.parametrize("upsample", ["nearest", "mixed"])
@pytest.mark.parametrize("skip", [(4, 4, 4), (0, 3, 0)])
@pytest.mark.parametrize("kernel_up", [3, 5])
def test_the_coarse_map_up_blocks_compute_the_same_function_and_gradients(upsample, skip, kernel_up):
    p = NetParams((6, 8, 8), (6, 8, 8), skip, kernel_up=kernel_up, upsample=upsample, input_depth=5)
    torch.manual_seed(3)
    net = SkipNet.from_params(p, 2).double()
    assert net.up_on_coarse_map(1) == (kernel_up == 3)
    side = min_padded_side(p)
    z = make_input(p, side, side + 8, generator=torch.Generator().manual_seed(0)).double()
    fast = net(z)
    plain = _forward_up_sampling_first(net, z)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-12)
    grads_fast = torch.autograd.grad(fast.square().sum(), list(net.parameters()))
    grads_plain = torch.autograd.grad(plain.square().sum(), list(net.parameters()))
    for a, b in zip(grads_fast, grads_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_seeded_networks_built_in_threads_at_once_get_their_seeds_weights():
    import threading

    p = NetParams((8, 8), (8, 8), (2, 2), input_depth=4)
    reference = {seed: seeded_skip_net(4, 2, p, seed).state_dict() for seed in (1, 2)}
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    mismatches = []
    start = threading.Barrier(2)

    def build(seed):
        start.wait()
        for _ in range(40):
            got = seeded_skip_net(4, 2, p, seed).state_dict()
            if any(not torch.equal(got[k], v) for k, v in reference[seed].items()):
                mismatches.append(seed)

    threads = [threading.Thread(target=build, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mismatches == []
    # the caller's own stream did not move
    assert torch.equal(torch.random.get_rng_state(), before)
