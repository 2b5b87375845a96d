"""``prepare(..., data_range=(lo, hi))``: the planes of a stack prepared one at a time with the
whole stack's range are normalised, fitted and returned exactly as by one whole-stack job."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deep_prior.arrays import drive, finite_range
from napari_deep_prior.restore.api import prepare
from napari_deep_prior.restore.degradations import Identity


def _stack(dtype=np.uint16, n=3, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32] / 31.0
    clean = 0.5 + 0.3 * np.sin(3 * x) * np.cos(2 * y)
    planes = [np.clip(clean * (1 + 0.3 * k) + 0.05 * rng.standard_normal(clean.shape), 0, None) for k in range(n)]
    return (np.stack(planes) * 1000).astype(dtype)


def _stack_range(stack):
    ranges = [finite_range(p) for p in stack]
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


@pytest.mark.parametrize("loss", ["gaussian", "poisson"])
def test_planes_with_the_stack_range_equal_the_whole_stack_run(tiny_params, loss):
    stack = _stack()
    params = tiny_params.replace(iterations=10, loss=loss, history_every=0)
    whole = drive(prepare(Identity(), stack, params=params, seed=3, device="cpu").steps())
    rng = _stack_range(stack)
    for i in range(len(stack)):
        job = prepare(Identity(), stack[i : i + 1], params=params, seed=3, device="cpu", data_range=rng)
        np.testing.assert_array_equal(job.layout.scale, prepare(Identity(), stack, params=params, seed=3).layout.scale)
        out = drive(job.steps())
        np.testing.assert_array_equal(out.image, whole.image[i : i + 1])  # bitwise


def test_prepare_refuses_an_image_outside_its_data_range(tiny_params):
    stack = _stack()
    with pytest.raises(ValueError, match="outside the data_range"):
        prepare(Identity(), stack, params=tiny_params, data_range=(0, 10))


def test_prepare_refuses_a_poisson_image_outside_its_data_range(tiny_params):
    stack = _stack()
    with pytest.raises(ValueError, match="outside the data_range"):
        prepare(Identity(), stack, params=tiny_params.replace(loss="poisson"), data_range=(0, 10))


@pytest.mark.parametrize(("bad", "exc"), [((5, 1), ValueError), ("x", TypeError), ((0, np.nan), ValueError)])
def test_prepare_validates_the_data_range(tiny_params, bad, exc):
    with pytest.raises(exc, match="data_range"):
        prepare(Identity(), _stack(), params=tiny_params, data_range=bad)
