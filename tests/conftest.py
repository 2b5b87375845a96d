import numpy as np
import pytest

from napari_deep_prior.nets import NetParams
from napari_deep_prior.restore.presets import DIPParams


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one thread avoids OpenMP barrier stalls on a busy shared CPU
    (measured here: 60 DIP-colorizer steps on 32x32 took 0.6 s with 1 thread, 28 s with 2)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_params():
    """A small, fast network for tests: 3 levels of 16 channels (a 32x32 image fits in a few ms per step).

    Shared by the core and the napari widget tests: a preview every 10 steps, a yield every 5."""
    return DIPParams(
        net=NetParams((16,) * 3, (16,) * 3, (4,) * 3, input_depth=8),
        iterations=30,
        es_window=10,
        es_patience=10,
        es_start=10,
        history_every=10,
        yield_every=5,
        preview_every=10,
    )


@pytest.fixture
def smooth_image():
    """A smooth 32x32 grey test image in [0.1, 0.9]."""
    y, x = np.mgrid[0:32, 0:32] / 31.0
    return (0.5 + 0.4 * np.sin(3 * x) * np.cos(2 * y)).astype(np.float64)


@pytest.fixture
def lane_threads():
    """A callable returning the lane threads (``restore.lanes``) still alive."""
    import threading

    return lambda: [t for t in threading.enumerate() if t.name.startswith("dip-lane") and t.is_alive()]
