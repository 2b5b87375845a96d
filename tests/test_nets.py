import pytest
import torch

from napari_deep_prior.nets import (
    SkipNet,
    make_input,
    min_padded_side,
    required_multiple,
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
