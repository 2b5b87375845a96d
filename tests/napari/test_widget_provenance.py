"""The widgets' result layers carry how they were made (metadata["napari_deep_prior"]) and the input's grid.

Real napari viewers under Xvfb; a tiny network on a 32x32 image, levin on 48x48.
"""

from __future__ import annotations

import json
import urllib.error

import numpy as np
import pytest
from widget_helpers import dock_widget, run_widget

from napari_deep_prior._napari.widgets import DenoiseWidget
from napari_deep_prior.provenance import LAYER_KEY, SOFTWARE

GRID = {"scale": (0.5, 2.0), "translate": (3.0, -4.0), "units": ("micrometer", "nanometer"), "axis_labels": ("y", "x")}


def _grid(layer) -> dict:
    return {
        "scale": tuple(float(s) for s in layer.scale),
        "translate": tuple(float(t) for t in layer.translate),
        "units": tuple(str(u) for u in layer.units),
        "axis_labels": tuple(layer.axis_labels),
    }


def test_dip_result_layer_carries_provenance_and_the_input_grid(make_napari_viewer, qtbot, tiny_params, grey_image):
    viewer = make_napari_viewer()
    src = viewer.add_image(grey_image, name="noisy", metadata={"mine": 1}, **GRID)
    before_meta, before_grid = dict(src.metadata), _grid(src)
    w = dock_widget(DenoiseWidget, viewer, tiny_params, early_stop=False)
    run_widget(qtbot, w)

    res = viewer.layers["noisy [DIP denoised]"]
    prov = res.metadata[LAYER_KEY]
    assert prov["software"] == SOFTWARE and prov["task"] == "denoise" and prov["input"] == "noisy"
    assert prov["preset"] == "denoise" and prov["seed"] == 0 and prov["interrupted"] is False
    # only what differs from the preset: the test's tiny network and its short run
    changed = prov["params_changed"]
    assert changed["iterations"] == 30 and changed["early_stop"] is False and changed["channels_down"] == [16] * 3
    assert "lr" not in changed and "loss" not in changed
    assert [p["stop_iteration"] for p in prov["planes"]] == [30]
    json.dumps(prov)  # plain JSON: a file writer can store it as it is
    # the result sits on the input's grid, with its units and axis labels
    assert _grid(res) == before_grid
    hist = viewer.layers["noisy [DIP history]"]
    assert hist.metadata[LAYER_KEY] == prov
    # the input layer is left alone
    assert dict(src.metadata) == before_meta and _grid(src) == before_grid
    np.testing.assert_array_equal(src.data, grey_image)

    # taking another history frame records which one
    step = list(viewer.dims.current_step)
    step[0] = 2
    viewer.dims.current_step = tuple(step)
    chosen = w.use_current_frame()
    frame_it = int(hist.metadata["iterations"][2])
    assert chosen.metadata[LAYER_KEY]["frame_iteration"] == frame_it
    assert hist.metadata[LAYER_KEY] == prov  # the history's record is not changed


@pytest.fixture
def offline_weights(tmp_path, monkeypatch):
    import torch

    from napari_deep_prior.colorization import weights as W

    monkeypatch.setenv(W.ENV_VAR, str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(W, "_urlopen", no_network)


def test_colorize_result_layer_carries_provenance(make_napari_viewer, qtbot, offline_weights):
    from napari_deep_prior._napari.colorize import ColorizeWidget

    viewer = make_napari_viewer()
    yy, xx = np.mgrid[0:48, 0:48]
    grey = np.clip(np.where(xx < 24, 100.0, 185.0) + 8 * np.sin(yy / 3.0), 0, 255).astype(np.uint8)
    viewer.add_image(grey, name="grey", **GRID)
    w = ColorizeWidget(viewer)
    viewer.window.add_dock_widget(w, name="Colorize")
    w.mode.value, w.method.value, w.hint_size.value = "hints", "levin", 3
    pts = w.add_hints_layer()
    with qtbot.waitSignal(w.colorized, timeout=20_000):
        pts.current_face_color = "#3070c0"
        pts.add([[20, 10]])
    res = viewer.layers["grey [colorized]"]
    prov = res.metadata[LAYER_KEY]
    assert (prov["task"], prov["method"], prov["input"], prov["hints"], prov["hint_size"]) == (
        "colorize",
        "levin",
        "grey",
        1,
        3,
    )
    assert prov["weights"] is None and prov["mode"] == "hints"
    np.testing.assert_allclose(res.scale, GRID["scale"])
