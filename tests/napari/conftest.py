"""Fixtures of the napari widget tests (real viewers under Xvfb via pytest-xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread: the test machine's two cores are shared, and tiny nets do not scale."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def notes(monkeypatch):
    """Record the notifications the widget shows (error / warning / info)."""
    from napari_deep_prior._napari.restore import _notify

    rec: dict[str, list[str]] = {"error": [], "warning": [], "info": []}
    monkeypatch.setattr(_notify, "show_error", lambda m: rec["error"].append(str(m)))
    monkeypatch.setattr(_notify, "show_warning", lambda m: rec["warning"].append(str(m)))
    monkeypatch.setattr(_notify, "show_info", lambda m: rec["info"].append(str(m)))
    return rec


@pytest.fixture
def grey_image():
    """A noisy smooth 32x32 uint8 image."""
    y, x = np.mgrid[0:32, 0:32] / 31.0
    clean = 0.5 + 0.35 * np.sin(3 * x) * np.cos(2 * y)
    rng = np.random.default_rng(0)
    return np.clip(np.rint(255 * (clean + 0.08 * rng.standard_normal(clean.shape))), 0, 255).astype(np.uint8)
