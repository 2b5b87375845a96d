"""The thread policy: OpenMP threads sleep at barriers, small CPU fits run on one thread."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_deep_prior.device import SMALL_FIT_PIXELS, fit_threads
from napari_deep_prior.restore.fit import DIPFit


def _child_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "NAPARI_DEEP_PRIOR_NO_THREAD_POLICY")}
    env.update(extra)
    return env


@pytest.mark.parametrize(
    "env, first, expected",
    [
        ({}, "napari_deep_prior", "PASSIVE"),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, "napari_deep_prior", "ACTIVE"),  # the user's choice wins
        ({"NAPARI_DEEP_PRIOR_NO_THREAD_POLICY": "1"}, "napari_deep_prior", None),
        ({}, "torch", None),  # torch started first: its OpenMP runtime has read the environment already
    ],
)
def test_import_sets_the_wait_policy_before_torch(env, first, expected):
    code = f"import os, {first}, napari_deep_prior; print(os.environ.get('OMP_WAIT_POLICY'))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_child_env(**env), check=True
    )
    assert out.stdout.strip() == str(expected)


@pytest.fixture
def two_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def test_small_cpu_fit_runs_on_one_thread_and_restores(two_threads, tiny_params, smooth_image, monkeypatch):
    monkeypatch.delenv("NAPARI_DEEP_PRIOR_NO_THREAD_POLICY", raising=False)
    fit = DIPFit(
        smooth_image[..., None].astype(np.float32),
        params=tiny_params.replace(iterations=10),
        device=torch.device("cpu"),
        seed=0,
    )
    seen = {torch.get_num_threads() for _ in fit.steps()}
    assert seen == {1}
    assert torch.get_num_threads() == 2
    # closed early (a cancel): restored too
    gen = DIPFit(
        smooth_image[..., None].astype(np.float32), params=tiny_params, device=torch.device("cpu"), seed=0
    ).steps()
    next(gen)
    assert torch.get_num_threads() == 1
    gen.close()
    assert torch.get_num_threads() == 2


def test_tiles_up_to_the_tile_limit_run_on_one_thread(two_threads, monkeypatch):
    from napari_deep_prior.device import TILE_FIT_PIXELS

    monkeypatch.delenv("NAPARI_DEEP_PRIOR_NO_THREAD_POLICY", raising=False)
    side = int(TILE_FIT_PIXELS**0.5)
    with fit_threads(torch.device("cpu"), side, side, tile=True) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with fit_threads(torch.device("cpu"), side, side) as n:  # not a tile: a plane of that size
        assert n == 2 and torch.get_num_threads() == 2
    with fit_threads(torch.device("cpu"), side + 1, side, tile=True) as n:
        assert n == 2 and torch.get_num_threads() == 2


def test_large_fits_gpu_fits_and_the_opt_out_keep_the_threads(two_threads, monkeypatch):
    side = int(SMALL_FIT_PIXELS**0.5) + 1
    with fit_threads(torch.device("cpu"), side, side) as n:
        assert n == 2 and torch.get_num_threads() == 2
    with fit_threads(torch.device("cuda"), 32, 32) as n:
        assert n == 2 and torch.get_num_threads() == 2
    monkeypatch.setenv("NAPARI_DEEP_PRIOR_NO_THREAD_POLICY", "1")
    with fit_threads(torch.device("cpu"), 32, 32) as n:
        assert n == 2 and torch.get_num_threads() == 2
