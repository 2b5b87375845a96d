"""Seed ensembles (``DIPParams.ensemble``): K independently seeded fits run as one batched network.

Tiny images and few iterations.
"""

import numpy as np
import pytest
import torch
from test_reliability_core import NaNAt  # the same NaN-injecting operator as the rollback tests

from napari_deep_prior import device
from napari_deep_prior.arrays import drive
from napari_deep_prior.errors import ParameterError
from napari_deep_prior.nets import SkipNet
from napari_deep_prior.restore.api import denoise, inpaint, prepare_denoise, upscale
from napari_deep_prior.restore.ensemble import MemberStack, member_seeds
from napari_deep_prior.restore.fit import DIPFit
from napari_deep_prior.restore.planning import MemoryPlanError, estimate_fit_bytes
from napari_deep_prior.restore.presets import ENSEMBLE_MAX, DIPParams, get_preset


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


@pytest.fixture
def noisy(smooth_image):
    rng = np.random.default_rng(0)
    return np.clip(smooth_image + 0.1 * rng.standard_normal(smooth_image.shape), 0, 1).astype(np.float32)


def _fit(image, params, seed, **kw):
    fit = DIPFit(image[..., None], params=params, device=torch.device("cpu"), seed=seed, **kw)
    return fit, drive(fit.steps())


# -- (a) the members are the fits of their seeds ------------------------------------------------


@pytest.fixture
def float64():
    """Fits in float64 (weights, z, loss): see the test below."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("jitter", [0.0, 1.0 / 30.0])
def test_the_ensemble_is_the_mean_of_its_members_fitted_separately(tiny_params, noisy, jitter, float64):
    """Each member of a batched ensemble follows its own fit of its own seed, step by step.

    In float64: in float32 the batched (grouped) convolutions round differently from single
    ones, and Adam's first step, ``lr * g / |g|``, flips the sign of the update of the few
    weights whose gradient nearly cancels (measured: member and separate fit 2 * lr apart after
    one step, images up to 5e-3 apart after two): a one-network fit is as sensitive to rounding.
    """
    p = tiny_params.replace(iterations=20, early_stop=False, exp_weight=None, reg_noise_std=jitter)
    _, ens = _fit(noisy, p.replace(ensemble=2), seed=5)
    members = [_fit(noisy, p, seed=s)[1] for s in member_seeds(5, 2)]
    mean = np.mean([m.image for m in members], axis=0)
    # measured max |difference| 6.0e-8 (the float32 rounding of the returned image) after 20
    # steps, with and without jitter, seeds 0-4; the members themselves differ by 0.11-0.16
    np.testing.assert_allclose(ens.image, mean, rtol=0, atol=1e-4)
    assert np.abs(members[0].image - members[1].image).max() > 0.05  # a test that can fail
    # the recorded loss is the mean of the members' own losses
    np.testing.assert_allclose(ens.losses, np.mean([m.losses for m in members], axis=0), rtol=1e-6)
    # the state is the members' weights stacked; member 0 is the one-network fit of the run's seed
    assert ens.state_dict["out.weight"].shape[0] == 2 and ens.seed == 5
    np.testing.assert_allclose(ens.state_dict["out.weight"][0], members[0].state_dict["out.weight"], atol=1e-8)


def test_member_seeds_start_with_the_run_seed_and_do_not_overlap_neighbours():
    assert member_seeds(9, 1) == [9]
    a, b = member_seeds(0, 4), member_seeds(1, 4)
    assert a[0] == 0 and len(set(a)) == 4 and not set(a) & set(b)


def test_the_stack_leaves_the_networks_and_their_batch_norm_unchanged(tiny_params):
    torch.manual_seed(0)
    nets = [SkipNet.from_params(tiny_params.net, 1) for _ in range(2)]
    before = {k: v.clone() for k, v in nets[0].state_dict().items()}
    stack = MemberStack(nets)
    # the stack works on copies: the networks keep their weights and BatchNorm running statistics
    assert all(torch.equal(before[k], v) for k, v in nets[0].state_dict().items())
    assert nets[0].down[0][1].running_mean is not None and nets[0].down[0][1].track_running_stats
    assert set(stack.state_dict()) == {n for n, _ in nets[0].named_parameters()}
    # each member's output is its network's in training mode (BatchNorm on the batch statistics)
    z = torch.rand(2, tiny_params.net.in_channels, 32, 32)
    out = stack(z).detach().numpy()
    for k, net in enumerate(nets):
        np.testing.assert_allclose(out[k], net.train()(z[k : k + 1])[0].detach().numpy(), rtol=0, atol=1e-5)


def test_batched_and_member_by_member_give_the_same_outputs_and_gradients(tiny_params, float64):
    """The GPU's vmap path and the CPU's loop over members compute the same thing (float64)."""
    torch.manual_seed(0)
    nets = [SkipNet.from_params(tiny_params.net, 1) for _ in range(3)]
    z = torch.rand(3, tiny_params.net.in_channels, 32, 32)
    outs, grads = [], []
    for batched in (True, False):
        stack = MemberStack(nets, batched=batched)
        out = stack(z)
        (out**2).sum().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in stack.stacked])
    assert MemberStack(nets).batched is None  # automatic: vmap on a GPU, the loop on the CPU
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-10)
    for g0, g1 in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(g0, g1, rtol=1e-8, atol=1e-10)


# -- (b) K = 1 is the one-network fit -------------------------------------------------------------


def test_one_member_is_the_one_network_fit_bit_for_bit(tiny_params, noisy):
    fit, one = _fit(noisy, tiny_params.replace(ensemble=1), seed=3)
    _, plain = _fit(noisy, tiny_params, seed=3)
    assert type(fit._net) is SkipNet  # not a MemberStack: the code path of a fit without ensembles
    np.testing.assert_array_equal(one.image, plain.image)
    np.testing.assert_array_equal(one.losses, plain.losses)
    a = denoise(noisy, params=tiny_params, seed=1, device="cpu")
    np.testing.assert_array_equal(denoise(noisy, params=tiny_params, seed=1, device="cpu", ensemble=1), a)


# -- (c) validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, ENSEMBLE_MAX + 1, 2.5, True, "2", -1])
def test_bad_ensemble_sizes_are_parameter_errors(bad):
    with pytest.raises(ParameterError) as exc:
        DIPParams(ensemble=bad)
    assert exc.value.params == ("ensemble",)
    assert exc.value.reword({"ensemble": "--ensemble"}).startswith("--ensemble (the number of seeds averaged)")
    assert "from 1 to 16" in str(exc.value)


def test_ensemble_accepts_numpy_integers_and_api_overrides(tiny_params, noisy):
    assert DIPParams(ensemble=np.int64(3)).ensemble == 3 and type(DIPParams(ensemble=np.int64(3)).ensemble) is int
    assert prepare_denoise(noisy, ensemble=4, seed=0).params.ensemble == 4
    assert prepare_denoise(noisy, seed=0).params.ensemble == 1
    with pytest.raises(ParameterError, match="ensemble"):
        prepare_denoise(noisy, ensemble=17)


# -- (d) every task, masks and the Poisson loss ---------------------------------------------------


def test_inpaint_with_two_members_keeps_the_known_pixels_exactly(tiny_params, smooth_image):
    img = (smooth_image * 255).astype(np.uint8)
    holes = np.zeros(img.shape, bool)
    holes[10:18, 6:20] = True
    out = inpaint(img, holes, params=tiny_params, ensemble=2, seed=0, device="cpu", tile_size=0)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~holes], img[~holes])
    # the held-out stop (a masked fit's own stop) follows the ensemble's estimate
    p = tiny_params.replace(es_holdout=0.2, iterations=25, ensemble=2)
    _, res = _fit(smooth_image.astype(np.float32), p, seed=0, known=~holes)
    assert res.holdout_mse is not None and res.holdout_mse[0, 0] == p.es_window
    assert res.iteration == int(res.holdout_mse[np.argmin(res.holdout_mse[:, 1]), 0])


def test_poisson_and_upscale_with_two_members(tiny_params, smooth_image):
    tiny_params = tiny_params.replace(iterations=10)
    counts = np.random.default_rng(1).poisson(smooth_image * 20).astype(np.uint16)
    rates = denoise(counts, params=tiny_params.replace(loss="poisson"), ensemble=2, seed=0, device="cpu")
    assert rates.shape == counts.shape and rates.dtype == np.float32 and np.isfinite(rates).all()
    up = upscale(smooth_image[:16, :16].astype(np.float32), 2, params=tiny_params, ensemble=2, seed=0, device="cpu")
    assert up.shape == (32, 32) and up.dtype == np.float32


def test_a_stack_warm_starts_from_the_stacked_weights(tiny_params, noisy):
    stack = np.stack([noisy, noisy[::-1]])
    tiny_params = tiny_params.replace(iterations=10)
    cold = denoise(stack, params=tiny_params, ensemble=2, seed=0, device="cpu")
    warm = denoise(stack, params=tiny_params, ensemble=2, seed=0, device="cpu", warm_start=True)
    np.testing.assert_array_equal(warm[0], cold[0])
    assert not np.array_equal(warm[1], cold[1])


def test_a_nan_loss_rolls_the_whole_ensemble_back(tiny_params, noisy):
    p = tiny_params.replace(early_stop=False, ensemble=3)
    steps = []
    fit = DIPFit(noisy[..., None], operator=NaNAt({13}), params=p, device=torch.device("cpu"), seed=0)
    res = drive(fit.steps(), steps.append)
    assert [s.backtracked for s in steps] == [False, False, True, False, False, False]
    assert res.iterations_run == 30 and np.isfinite(res.image).all() and np.isfinite(res.history.frames).all()
    assert np.isnan(res.losses[12]) and np.isfinite(res.losses[15:]).all()


# -- (f) the memory plan counts every member -----------------------------------------------------


def test_the_memory_estimate_grows_with_the_members():
    p = get_preset("denoise").replace(history_every=0)
    one, two, four = (estimate_fit_bytes(p.replace(ensemble=k), 256, 256, 3) for k in (1, 2, 4))
    # each member adds its activations, weights and input (not the image-sized buffers: the
    # target, the averages, the ES-WMV window), most of what one fit needs
    member = two - one
    assert 0.5 * one < member < one and four - one == pytest.approx(3 * member, rel=1e-6)


def test_the_planner_tiles_or_refuses_an_ensemble_that_does_not_fit(monkeypatch, smooth_image):
    img = np.kron(smooth_image, np.ones((8, 8)))  # 256 x 256
    p = get_preset("denoise").replace(history_every=0, tile_capacity=0)  # memory alone decides
    one = estimate_fit_bytes(p, 256, 256, 1)
    avail = int(2.0 * one / 0.9)  # room for two networks, not four
    monkeypatch.setattr(device, "cpu_memory_limit", lambda *a: device.MemoryLimit(avail, "cgroup", 2 * avail))
    assert prepare_denoise(img, device="cpu", params=p, ensemble=2, seed=0).tiles is None
    assert prepare_denoise(img, device="cpu", params=p, ensemble=4, seed=0).tiles is not None
    with pytest.raises(MemoryPlanError, match="tile_size"):
        prepare_denoise(img, device="cpu", params=p, ensemble=4, seed=0, tile_size=0)
