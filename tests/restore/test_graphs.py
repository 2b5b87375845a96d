"""The fit's step recorded as a CUDA graph (restore/graphs.py).

The CPU tests check what runs everywhere (the in-place optimiser restore that backtracking
uses, the parameter, that ``cuda_graph`` changes nothing off a GPU); the CUDA tests compare
graphed fits with eager ones and run where a GPU is (``benchmarks/gpu_check.sh`` runs them).
"""

import copy
import warnings

import numpy as np
import pytest
import torch

from fit_steps import drain as _drain
from napari_deep_prior.errors import ParameterError
from napari_deep_prior.restore.fit import DIPFit, make_adam
from napari_deep_prior.restore.graphs import GraphedStep, restore_optimiser, wants_graph

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _adam_steps(params, opt, n):
    for _ in range(n):
        opt.zero_grad(set_to_none=True)
        sum(((p - 1.0) ** 2).sum() for p in params).backward()
        opt.step()


def test_restore_optimiser_copies_the_saved_state_into_the_same_tensors():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))]
    opt = make_adam(params, 0.1, torch.device("cpu"))
    _adam_steps(params, opt, 3)
    saved = copy.deepcopy(opt.state_dict())
    before = {(i, k): v for i, p in enumerate(params) for k, v in opt.state[p].items()}
    _adam_steps(params, opt, 2)  # the state moves on
    assert not torch.equal(opt.state[params[0]]["exp_avg"], saved["state"][0]["exp_avg"])
    restore_optimiser(opt, saved)
    for i, p in enumerate(params):
        for k, v in opt.state[p].items():
            assert v is before[(i, k)], f"{k} of parameter {i} was replaced, not copied into"
            assert torch.equal(v, saved["state"][i][k])
    # the next update is the one load_state_dict would give
    twin = [torch.nn.Parameter(p.detach().clone()) for p in params]
    twin_opt = make_adam(twin, 0.1, torch.device("cpu"))
    twin_opt.load_state_dict(saved)
    _adam_steps(params, opt, 1)
    _adam_steps(twin, twin_opt, 1)
    for a, b in zip(params, twin, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_restore_optimiser_loads_a_state_of_another_layout():
    params = [torch.nn.Parameter(torch.ones(3))]
    opt = make_adam(params, 0.1, torch.device("cpu"))
    _adam_steps(params, opt, 2)
    saved = copy.deepcopy(opt.state_dict())
    fresh = make_adam(params, 0.1, torch.device("cpu"))  # no state yet: nothing to copy into
    restore_optimiser(fresh, saved)
    assert torch.equal(fresh.state[params[0]]["exp_avg_sq"], saved["state"][0]["exp_avg_sq"])


def test_cuda_graph_changes_nothing_off_a_gpu(tiny_params, smooth_image):
    assert not wants_graph(True, torch.device("cpu"))
    img = smooth_image[..., None].astype(np.float32)
    runs = [
        _drain(DIPFit(img, params=tiny_params.replace(cuda_graph=g), device=torch.device("cpu"), seed=1))[1]
        for g in (True, False)
    ]
    np.testing.assert_array_equal(runs[0].image, runs[1].image)
    np.testing.assert_array_equal(runs[0].losses, runs[1].losses)
    assert not runs[0].cuda_graph and not runs[1].cuda_graph


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_cuda_graph_must_be_a_bool(tiny_params, bad):
    with pytest.raises(ParameterError, match="cuda_graph"):
        tiny_params.replace(cuda_graph=bad)


# --- on a CUDA GPU -------------------------------------------------------------------------
#
# Two fits of the same seed on a GPU do not follow the same path step by step, graphed or not:
# some backward kernels add with atomics in no fixed order (nearest up-sampling's, cuDNN's), and
# Adam's first updates, about lr * sign(gradient) whatever the gradient's size, turn those
# rounding differences into full steps (measured on an H200: the losses of two such fits part
# at the second step).  So the graph is checked step by step from one state, where rounding
# stays rounding, and whole fits are compared by what they reach.


def _dip_step(net, opt, target):
    def step(zin):
        out = net(zin)
        loss = ((out - target) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return out, out, loss

    return step


@cuda
def test_a_replayed_step_computes_the_eager_step():
    from napari_deep_prior.nets import NetParams, make_input, seeded_skip_net

    dev = torch.device("cuda")
    netp = NetParams((16,) * 3, (16,) * 3, (4,) * 3, input_depth=8)
    net = seeded_skip_net(8, 3, netp, 0).to(dev).train()
    twin = seeded_skip_net(8, 3, netp, 0).to(dev).train()
    z = make_input(netp, 32, 32, generator=torch.Generator().manual_seed(0), device=dev)
    target = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(dev)
    opt = make_adam(net.parameters(), 0.01, dev, capturable=True)
    twin_opt = make_adam(twin.parameters(), 0.01, dev, capturable=True)
    graphed = GraphedStep(_dip_step(net, opt, target), z, 1.0 / 30)
    eager = _dip_step(twin, twin_opt, target)
    gen = torch.Generator(device=dev).manual_seed(3)
    probe = make_input(netp, 32, 32, generator=torch.Generator().manual_seed(4), device=dev)
    for k in range(8):  # 3 eager warm-up steps, the recording, then replays
        noise = torch.randn(z.shape, generator=gen, device=dev)
        # the twin starts every step from the graphed network's state
        twin.load_state_dict(net.state_dict())
        twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        with torch.no_grad():
            before = twin(probe)
        out_g, _, loss_g = graphed(noise)
        out_e, _, loss_e = eager(z + noise / 30)
        torch.cuda.synchronize()
        # the same forward pass on the same state and jitter
        torch.testing.assert_close(loss_g, loss_e, rtol=1e-4, atol=1e-7, msg=f"loss of step {k + 1}")
        torch.testing.assert_close(out_g, out_e, rtol=1e-4, atol=1e-5, msg=f"output of step {k + 1}")
        # the same update: what it changed in the output on another input (weights whose gradient
        # is rounding noise, such as a convolution's bias before a batch norm, may move apart
        # but change no output)
        with torch.no_grad():
            moved_g, moved_e = net(probe) - before, twin(probe) - before
        assert float(moved_e.abs().mean()) > 1e-4, "the eager step did not move the network"
        gap = float((moved_g - moved_e).norm() / moved_e.norm())
        assert gap < 0.05, f"step {k + 1}: the graphed update differs from the eager one by {gap:.1%}"
    assert graphed.replaying and graphed.error is None


GPU_CASES = {
    "denoise": {},
    "raw output, ES-WMV": {"exp_weight": None, "iterations": 80},
    "inpaint": {"mask": True},
    "poisson": {"loss": "poisson"},
    "ensemble of 2": {"ensemble": 2},
    "bf16": {"amp": "bf16"},
}


@cuda
@pytest.mark.parametrize("case", list(GPU_CASES))
def test_graphed_fit_reaches_what_the_eager_fit_reaches(tiny_params, smooth_image, case):
    changes = dict(GPU_CASES[case])
    mask = None
    if changes.pop("mask", False):
        mask = np.ones(smooth_image.shape, bool)
        mask[10:16, 5:25] = False
    params = tiny_params.replace(iterations=60, **changes)
    img = np.repeat(smooth_image[..., None], 3, axis=2).astype(np.float32)
    kw = {"counts_scale": 30.0} if params.loss == "poisson" else {}
    runs = {}
    for graph in (False, True):
        p = params.replace(cuda_graph=graph)
        runs[graph] = _drain(DIPFit(img, known=mask, params=p, device=torch.device("cuda"), seed=2, **kw))[1]
    eager, graphed = runs[False], runs[True]
    assert graphed.cuda_graph and not eager.cuda_graph
    assert graphed.iterations_run == eager.iterations_run
    # both fitted the image: the data term fell tenfold, to within a factor 3 of each other
    g, e = graphed.losses[-20:].mean(), eager.losses[-20:].mean()
    assert g < graphed.losses[:5].mean() / 10 and e < eager.losses[:5].mean() / 10
    assert e / 3 < g < 3 * e
    err_g = float(((graphed.image - img) ** 2).mean())
    err_e = float(((eager.image - img) ** 2).mean())
    assert err_g < 3 * err_e + 1e-4


@cuda
def test_a_step_that_cannot_be_recorded_runs_eagerly_with_a_warning():
    torch.manual_seed(0)
    dev = torch.device("cuda")
    net = torch.nn.Conv2d(2, 2, 3, padding=1).to(dev)
    twin = copy.deepcopy(net)
    z = torch.randn(1, 2, 8, 8, device=dev)
    target = torch.zeros(1, 2, 8, 8, device=dev)

    def make_step(model):
        opt = make_adam(model.parameters(), 0.01, dev, capturable=True)
        seen = []

        def step(zin):
            out = model(zin)
            loss = ((out - target) ** 2).mean()
            seen.append(float(loss))  # a host read: not allowed while a graph records
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return out, out, loss

        return step, seen

    step, seen = make_step(net)
    graphed = GraphedStep(step, z, 0.1, warmup=2)
    eager_step, eager_seen = make_step(twin)
    gen = torch.Generator(device=dev).manual_seed(5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(5):
            noise = torch.randn(z.shape, generator=gen, device=dev)
            graphed(noise)
            eager_step(z + 0.1 * noise)
    assert any("could not be recorded as a CUDA graph" in str(w.message) for w in caught)
    assert graphed.error is not None and not graphed.replaying
    # the recording stopped at the host read, before any update: five updates on each side
    assert len(seen) == len(eager_seen) == 5
    np.testing.assert_allclose(seen, eager_seen, rtol=1e-5)
    for a, b in zip(net.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b)


@cuda
def test_a_finished_fit_frees_its_graph(tiny_params):
    """A job keeps every plane's DIPFit: a kept fit must not keep its recorded step's memory."""
    img = np.random.default_rng(0).random((128, 128, 3)).astype(np.float32)
    p = tiny_params.replace(iterations=20, history_every=0)
    kept, reserved = [], []
    for seed in range(3):
        fit = DIPFit(img, params=p, device=torch.device("cuda"), seed=seed)
        assert _drain(fit)[1].cuda_graph and fit._graphed._graph is None  # the graph is dropped
        assert fit.result().cuda_graph  # still reported after the graph is gone
        kept.append(fit)
        torch.cuda.empty_cache()
        reserved.append(torch.cuda.memory_reserved())
    # a kept fit holds its weights and a few 128 px images (about 1 MB), not a step's
    # activations (tens of MB at 128 px)
    assert reserved[2] - reserved[1] < 8 * 2**20, reserved
