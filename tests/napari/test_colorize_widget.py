"""End-to-end tests of the Colorize dock widget with a real napari viewer (Xvfb).

Tiny images (48x48 / 32x32) keep every colorization to milliseconds (levin) or about a
second (a small dip fit).  The pretrained networks are random networks with the published
layout (keys and shapes from tests/colorization/data), put in place of the weights loader; the
weights folders are isolated and the network is never touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from colorizer_layout import random_state_dict
from napari_deep_prior._napari import base as B
from napari_deep_prior._napari.colorize import ColorizeWidget
from napari_deep_prior._napari.colorize import hints_panel as HP
from napari_deep_prior._napari.colorize import runner as RN
from napari_deep_prior._napari.colorize import weights_panel as WP
from napari_deep_prior._napari.colorize import widget as CW
from napari_deep_prior.colorization import pretrained as PT
from napari_deep_prior.colorization import weights as W
from napari_deep_prior.colorization.dip import DIPColorParams
from napari_deep_prior.colorization.lab import rgb_to_lab

#: Waits: a levin update takes milliseconds after the 300 ms debounce.
WAIT_MS = 20_000
GRID = {"scale": (0.5, 2.0), "translate": (3.0, -4.0), "units": ("micrometer", "nanometer"), "axis_labels": ("y", "x")}
BLUE, ORANGE = "#3070c0", "#d08030"


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def notes(monkeypatch):
    """Record the notifications the widget shows."""
    rec: dict[str, list[str]] = {"error": [], "warning": [], "info": []}
    for mod in (CW, HP, WP):
        for kind in rec:
            if hasattr(mod, f"show_{kind}"):
                monkeypatch.setattr(mod, f"show_{kind}", lambda m, k=kind: rec[k].append(str(m)))
    return rec


@pytest.fixture(autouse=True)
def weights_dirs(tmp_path, monkeypatch):
    """Isolated weights folders (env var + torch hub cache), no network, no cached nets."""
    env = tmp_path / "weights"
    env.mkdir()
    monkeypatch.setenv(W.ENV_VAR, str(env))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(W, "_urlopen", no_network)
    PT.clear_model_cache()
    yield env
    PT.clear_model_cache()


def random_net(name: str):
    from napari_deep_prior.colorization.networks import build_colorizer

    with torch.device("meta"):
        net = build_colorizer(name)
    net = net.to_empty(device="cpu")
    net.load_state_dict(random_state_dict(name), strict=True)
    return net.eval()


def install_weights(monkeypatch, folder: Path, name: str, net) -> list:
    """A placeholder file where the widget looks, and the loader returning ``net``."""
    (folder / W.WEIGHTS[name].filename).write_bytes(b"placeholder")
    calls = []

    def load(n, weights=None, *, device="cpu", **kwargs):
        assert n == name
        calls.append((n, weights))
        return net.to(device)

    monkeypatch.setattr(W, "load_colorizer", load)
    return calls


class ConstantAB(torch.nn.Module):
    """A stand-in siggraph17: constant ab, a two-peak colour distribution."""

    def forward(self, L, ab_hint=None, mask=None):
        ab = torch.tensor([20.0, -40.0]).view(1, 2, 1, 1)
        return ab.expand(L.shape[0], 2, *L.shape[-2:]).clone()

    def class_distribution(self, L, ab_hint=None, mask=None):
        n, _, h, w = L.shape
        logits = torch.zeros(n, 529, h // 4, w // 4)
        logits[:, 23 * 13 + 5] = 5.0  # (a, b) = (20, -60): blue-ish
        logits[:, 23 * 15 + 17] = 4.0  # (40, 60): orange-ish
        return torch.softmax(logits, dim=1)


def two_region_image(size: int = 48) -> np.ndarray:
    """uint8 grey: a darker left half and a brighter right half, with mild texture."""
    yy, xx = np.mgrid[0:size, 0:size]
    g = np.where(xx < size // 2, 100.0, 185.0) + 8 * np.sin(yy / 3.0)
    return np.clip(g, 0, 255).astype(np.uint8)


def make_widget(viewer, **values) -> ColorizeWidget:
    w = ColorizeWidget(viewer)
    viewer.window.add_dock_widget(w, name="Colorize")
    for k, v in values.items():
        getattr(w, k).value = v
    return w


def add_point(points, row, col, colour) -> None:
    points.selected_data = set()
    points.current_face_color = colour
    points.add([[row, col]])


def ab_at(rgb: np.ndarray, r: int, c: int) -> np.ndarray:
    return rgb_to_lab(rgb[r, c].astype(np.float64) / 255.0)[1:]


def run_and_wait(qtbot, w, timeout=WAIT_MS):
    worker = w.run(start=False)
    assert worker is not None, "run() refused to start"
    with qtbot.waitSignal(worker.finished, timeout=timeout):
        worker.start()
    qtbot.wait(10)
    return worker


# --- manifest, hints layer ------------------------------------------------------------------


def test_manifest_and_plugin_dock(make_napari_viewer):
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    mf = pm.get_manifest("napari-deep-prior")
    assert "Colorize" in {wd.display_name for wd in mf.contributions.widgets}
    viewer = make_napari_viewer()
    img = viewer.add_image(two_region_image(), name="grey")
    _dock, w = viewer.window.add_plugin_dock_widget("napari-deep-prior", "Colorize")
    assert isinstance(w, ColorizeWidget)
    assert w.image.value == img
    assert w.mode.value == "hints" and w.method.value == "levin"  # no weights here
    assert w.method.choices == ("siggraph17", "levin", "dip")
    w.mode.value = "automatic"
    assert w.method.choices == ("eccv16", "siggraph17") and w.method.value == "eccv16"
    from napari_deep_prior._napari.widgets import make_colorize_widget

    assert isinstance(make_colorize_widget(viewer), ColorizeWidget)


def test_add_hints_layer_on_the_image_grid(make_napari_viewer, notes):
    viewer = make_napari_viewer()
    viewer.add_image(two_region_image(), name="grey", **GRID)
    w = make_widget(viewer)
    pts = w.add_hints_layer()
    assert pts.name == "grey [color hints]" and len(pts.data) == 0 and pts.ndim == 2
    np.testing.assert_allclose(pts.scale, GRID["scale"])
    np.testing.assert_allclose(pts.translate, GRID["translate"])
    assert tuple(str(u) for u in pts.units) == GRID["units"]
    assert tuple(pts.axis_labels) == GRID["axis_labels"]
    assert pts.mode == "add"
    assert viewer.layers.selection.active == pts
    assert w.hints_layer.value == pts
    # each point keeps its own colour; hints come back in the image's pixel coordinates
    add_point(pts, 10, 5, BLUE)
    add_point(pts, 30, 40, ORANGE)
    hints = w.hints()
    assert [(r, c) for r, c, _ in hints] == [(10, 5), (30, 40)]
    assert [HP.hex_of(rgb) for *_rc, rgb in hints] == [BLUE, ORANGE]
    # a hints layer on another grid lands on the same image pixels
    other = viewer.add_points([[3 + 10 * 0.5, -4 + 5 * 2.0]], name="world points")
    assert HP.hints_from_points(other, viewer.layers["grey"])[0][:2] == pytest.approx((10, 5))
    assert not notes["error"]


# --- live levin -----------------------------------------------------------------------------


def test_live_levin_follows_every_edit(make_napari_viewer, qtbot, notes):
    viewer = make_napari_viewer()
    grey = two_region_image()
    src = viewer.add_image(grey, name="grey", **GRID)
    w = make_widget(viewer, mode="hints", method="levin", hint_size=3)
    pts = w.add_hints_layer()
    seen = []
    w.colorized.connect(seen.append)

    with qtbot.waitSignal(w.colorized, timeout=WAIT_MS):
        add_point(pts, 20, 10, BLUE)  # in the dark left half
    res = viewer.layers["grey [colorized]"]
    assert res.rgb and res.data.shape == (48, 48, 3) and res.data.dtype == np.uint8
    np.testing.assert_allclose(res.scale, GRID["scale"])
    np.testing.assert_allclose(res.translate, GRID["translate"])
    assert tuple(res.axis_labels) == GRID["axis_labels"]
    assert res.metadata["method"] == "levin" and res.metadata["n_hints"] == 1
    # the hint's hue (blue: b < 0) near the point, the image's own lightness kept
    assert ab_at(res.data, 20, 12)[1] < -15
    L_in = rgb_to_lab(np.repeat(grey[..., None], 3, -1) / 255.0)[..., 0]
    L_out = rgb_to_lab(res.data / 255.0)[..., 0]
    assert np.abs(L_out - L_in).mean() < 1.5
    # layer order: image, result, hints on top; the hints layer stays active
    assert [lyr.name for lyr in viewer.layers] == ["grey", "grey [colorized]", "grey [color hints]"]
    assert viewer.layers.selection.active == pts

    # a second hint: the right half turns orange, in the same layer
    with qtbot.waitSignal(w.colorized, timeout=WAIT_MS):
        add_point(pts, 20, 40, ORANGE)
    assert viewer.layers["grey [colorized]"] is res and len(viewer.layers) == 3
    assert ab_at(res.data, 20, 38)[1] > 15 and ab_at(res.data, 20, 12)[1] < -8

    # recolour the first point
    with qtbot.waitSignal(w.colorized, timeout=WAIT_MS):
        fc = np.array(pts.face_color)
        fc[0, :3] = [0.8, 0.2, 0.2]
        pts.face_color = fc
    assert ab_at(res.data, 20, 10)[0] > 15  # reddish: a > 0

    # move it (data changed) and delete the second
    with qtbot.waitSignal(w.colorized, timeout=WAIT_MS):
        data = np.array(pts.data)
        data[0] = [40, 5]
        pts.data = data
    with qtbot.waitSignal(w.colorized, timeout=WAIT_MS):
        pts.remove([1])
    assert res.metadata["n_hints"] == 1
    # one red hint left: it colours the whole image (the orange is gone)
    red = rgb_to_lab(np.array([0.8, 0.2, 0.2]))[1:]
    for r, c in [(40, 5), (25, 40)]:
        ab = ab_at(res.data, r, c)
        assert ab[0] > 15 and np.dot(ab, red) / np.linalg.norm(ab) / np.linalg.norm(red) > 0.9
    np.testing.assert_array_equal(src.data, grey)  # input never modified
    assert len(seen) == 5 and not notes["error"]


def test_debounce_coalesces_a_burst_of_edits(make_napari_viewer, qtbot, notes):
    viewer = make_napari_viewer()
    viewer.add_image(two_region_image(), name="grey")
    w = make_widget(viewer, method="levin")
    pts = w.add_hints_layer()
    seen = []
    w.colorized.connect(seen.append)
    with qtbot.waitSignal(w.colorized, timeout=WAIT_MS):
        for k in range(5):  # faster than the debounce interval
            add_point(pts, 5 + 8 * k, 5 + 8 * k, BLUE if k % 2 else ORANGE)
            qtbot.wait(20)
    qtbot.wait(CW.DEBOUNCE_MS + 300)
    assert len(seen) == 1 and seen[0].metadata["n_hints"] == 5
    # nothing changed: selecting a point (current colour follows it) recomputes nothing
    pts.selected_data = {0}
    qtbot.wait(CW.DEBOUNCE_MS + 300)
    assert len(seen) == 1


def test_live_off_needs_run(make_napari_viewer, qtbot, notes):
    viewer = make_napari_viewer()
    viewer.add_image(two_region_image(), name="grey")
    w = make_widget(viewer, method="levin", live=False)
    pts = w.add_hints_layer()
    add_point(pts, 10, 10, BLUE)
    qtbot.wait(CW.DEBOUNCE_MS + 200)
    assert "grey [colorized]" not in viewer.layers
    out = []
    w.run_finished.connect(out.append)
    run_and_wait(qtbot, w)
    assert out and out[0] is viewer.layers["grey [colorized]"]


# --- automatic mode with the networks -------------------------------------------------------


def test_automatic_eccv16_with_random_weights(make_napari_viewer, qtbot, monkeypatch, weights_dirs, notes):
    calls = install_weights(monkeypatch, weights_dirs, "eccv16", random_net("eccv16"))
    monkeypatch.setattr(PT, "NET_SIZE", 64)  # the same code path on a quarter of the pixels
    viewer = make_napari_viewer()
    grey = two_region_image(40)
    viewer.add_image(grey, name="grey", scale=(2, 3))
    w = make_widget(viewer, mode="automatic", method="eccv16", device="cpu")
    assert "found" in w.weights_status.value and "eccv16" in w.weights_status.value
    assert not w.download_button.enabled
    run_and_wait(qtbot, w)
    assert not notes["error"], notes
    res = viewer.layers["grey [colorized]"]
    assert res.rgb and res.data.shape == (40, 40, 3) and res.data.dtype == np.uint8
    np.testing.assert_allclose(res.scale, (2, 3))
    assert res.metadata["mode"] == "automatic" and res.metadata["method"] == "eccv16"
    assert calls and calls[0][0] == "eccv16"
    # a second run updates the same layer
    run_and_wait(qtbot, w)
    assert [lyr.name for lyr in viewer.layers].count("grey [colorized]") == 1


def test_siggraph17_suggestions_recolour_the_point(make_napari_viewer, qtbot, monkeypatch, weights_dirs, notes):
    install_weights(monkeypatch, weights_dirs, "siggraph17", ConstantAB())
    viewer = make_napari_viewer()
    viewer.add_image(two_region_image(), name="grey")
    w = make_widget(viewer, device="cpu")
    assert w.method.value == "siggraph17"  # the default for hints once its weights exist
    assert w.is_fast() and w.suggest_button.enabled
    pts = w.add_hints_layer()
    with qtbot.waitSignal(w.colorized, timeout=WAIT_MS):  # live with siggraph17
        add_point(pts, 20, 30, "#808080")
    with qtbot.waitSignal(w.suggestions_ready, timeout=WAIT_MS):
        w.suggest()
    sugg = w.suggestions
    assert sugg is not None and 2 <= len(w.swatches) == len(sugg.rgb) <= HP.N_SUGGESTIONS
    assert sugg.ab[0][1] < -20  # the most probable (blue-ish) peak first
    with qtbot.waitSignal(w.colorized, timeout=WAIT_MS):
        w.swatches[0].clicked.emit()  # a swatch click recolours the point ...
    np.testing.assert_allclose(pts.face_color[0, :3], sugg.rgb[0], atol=1e-6)
    assert not notes["error"], notes  # ... and the live update followed


# --- weights: missing, chosen, downloaded ---------------------------------------------------


def test_missing_weights_are_explained(make_napari_viewer, weights_dirs, notes):
    viewer = make_napari_viewer()
    viewer.add_image(two_region_image(), name="grey")
    w = make_widget(viewer)
    info = W.WEIGHTS["siggraph17"]
    assert not w.suggest_button.enabled
    assert "siggraph17" in w.suggest_button.tooltip and info.filename in w.suggest_button.tooltip
    w.mode.value = "automatic"
    w.method.value = "eccv16"
    assert "missing" in w.weights_status.value and w.download_button.enabled
    n = len(viewer.layers)
    assert w.run() is None
    msg = notes["error"][0]
    ecc = W.WEIGHTS["eccv16"]
    assert ecc.filename in msg and f"{ecc.size:,}" in msg and str(weights_dirs) in msg
    assert len(viewer.layers) == n


def test_choose_a_weights_file(make_napari_viewer, tmp_path, monkeypatch, notes):
    viewer = make_napari_viewer()
    viewer.add_image(two_region_image(), name="grey")
    w = make_widget(viewer, mode="automatic", method="siggraph17")
    f = tmp_path / "elsewhere" / "my-siggraph17.pth"
    f.parent.mkdir()
    f.write_bytes(b"x")
    monkeypatch.setattr(B, "ask_open_file", lambda *a: str(f))
    assert w.choose_weights_file() == f
    assert w.weights_paths["siggraph17"] == f and "found (chosen)" in w.weights_status.value
    assert not w.suggest_button.enabled  # suggestions are for hints
    w.mode.value = "hints"
    assert w.suggest_button.enabled and w.method.value == "siggraph17" and w.is_fast()
    # a path that does not exist: the core's message
    assert w.set_weights_file(tmp_path / "nope.pth") is None
    assert "does not exist" in notes["error"][0]


def test_a_wrong_weights_file_is_reported_not_swallowed(make_napari_viewer, qtbot, tmp_path, notes):
    """The core's WeightsError (a RuntimeError) raised in the worker reaches the user:
    superqt's generator workers would otherwise swallow RuntimeErrors silently."""
    viewer = make_napari_viewer()
    viewer.add_image(two_region_image(), name="grey")
    w = make_widget(viewer, mode="automatic", method="eccv16", device="cpu")
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(b"not the weights")
    assert w.set_weights_file(wrong) == wrong
    ended = []
    w.run_finished.connect(ended.append)
    run_and_wait(qtbot, w)
    assert ended == [None] and len(notes["error"]) == 1
    assert "incomplete or not the right one" in notes["error"][0]
    assert "grey [colorized]" not in viewer.layers and not w.running


def test_download_weights_in_a_worker(make_napari_viewer, qtbot, monkeypatch, weights_dirs, notes):
    payload = bytes(range(256)) * 4096  # 1 MiB: a few progress steps
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    fake = W.WeightsInfo(
        "siggraph17", f"siggraph17-{prefix}.pth", len(payload), "https://example.invalid/siggraph17.pth"
    )
    monkeypatch.setitem(W.WEIGHTS, "siggraph17", fake)
    monkeypatch.setattr(W, "_CHUNK", 1 << 16)

    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(payload))}

    monkeypatch.setattr(W, "_urlopen", lambda *a, **k: Response(payload))
    viewer = make_napari_viewer()
    viewer.add_image(two_region_image(), name="grey")
    w = make_widget(viewer)
    steps = []
    worker = w.download_weights(start=False)
    worker.yielded.connect(steps.append)
    assert w.download_button.text == "Cancel download"
    with qtbot.waitSignal(w.download_finished, timeout=WAIT_MS):
        worker.start()
    assert not notes["error"], notes
    assert (weights_dirs / fake.filename).read_bytes() == payload
    assert len(steps) >= 4 and steps[-1] == (len(payload), len(payload))
    assert "found" in w.weights_status.value and w.suggest_button.enabled
    assert any("downloaded" in m for m in notes["info"])
    assert w.download_button.text == "Download weights"


def test_download_offline_explains(make_napari_viewer, qtbot, weights_dirs, notes):
    viewer = make_napari_viewer()
    viewer.add_image(two_region_image(), name="grey")
    w = make_widget(viewer)
    with qtbot.waitSignal(w.download_finished, timeout=WAIT_MS):
        w.download_weights()
    info = W.WEIGHTS["siggraph17"]
    msg = notes["error"][0]
    assert "offline" in msg and info.url in msg and str(weights_dirs) in msg
    assert not list(weights_dirs.iterdir())  # no partial file left behind


# --- dip: Run, progress, Cancel -------------------------------------------------------------

TINY_DIP = DIPColorParams(iterations=30, width=8, depth=2, skip=2, noise_channels=2, yield_every=5, preview_every=10)


def test_dip_needs_run_and_shows_progress(make_napari_viewer, qtbot, notes):
    viewer = make_napari_viewer()
    viewer.add_image(two_region_image(32), name="grey")
    w = make_widget(viewer, method="dip", seed=0, device="cpu")
    w.params_override = TINY_DIP
    assert not w.is_fast() and not w.live.enabled and not w.iterations.native.isHidden()
    pts = w.add_hints_layer()
    add_point(pts, 16, 8, BLUE)
    add_point(pts, 16, 24, ORANGE)
    qtbot.wait(CW.DEBOUNCE_MS + 200)
    assert "grey [colorized]" not in viewer.layers  # dip waits for Run
    progress = []
    worker = w.run(start=False)
    worker.yielded.connect(lambda s: progress.append(s.iteration))
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        worker.start()
    qtbot.wait(10)
    assert not notes["error"], notes
    # every ensemble member's steps are counted one after the other
    total = TINY_DIP.iterations * TINY_DIP.ensemble
    assert progress == list(range(5, total + 1, 5)) and w.progress.value == 1000
    res = viewer.layers["grey [colorized]"]
    assert res.metadata["seed"] == 0 and res.metadata["method"] == "dip"
    assert res.data.shape == (32, 32, 3)


def test_dip_cancel_stops_at_the_next_step(make_napari_viewer, qtbot, notes):
    viewer = make_napari_viewer()
    viewer.add_image(two_region_image(32), name="grey")
    w = make_widget(viewer, method="dip", seed=1, device="cpu")
    w.params_override = TINY_DIP.__class__(**{**TINY_DIP.__dict__, "iterations": 100_000})
    pts = w.add_hints_layer()
    add_point(pts, 16, 8, BLUE)
    seen, ended = [], []
    w.run_finished.connect(ended.append)
    worker = w.run(start=False)

    def on_step(step):
        seen.append(step.iteration)
        if len(seen) == 1:
            w.cancel_button.clicked.emit()

    worker.yielded.connect(on_step)
    t0 = time.perf_counter()
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        worker.start()
    qtbot.wait(10)
    assert time.perf_counter() - t0 < 15
    assert len(seen) <= 3 and ended == [None]
    assert "cancelled" in w.status.value and not w.cancel_button.enabled
    assert not w.running


def _snapshot(viewer) -> dict:
    """Every layer's identity, data (bytes), metadata and grid, by name."""
    return {
        lyr.name: (
            lyr,
            np.asarray(lyr.data).dtype,
            np.asarray(lyr.data).shape,
            np.asarray(lyr.data).tobytes(),
            dict(lyr.metadata),
            tuple(lyr.scale),
            tuple(lyr.translate),
        )
        for lyr in viewer.layers
    }


def _assert_unchanged(viewer, before: dict, names: list[str]) -> None:
    for name in names:
        lyr, dtype, shape, data, meta, scale, translate = before[name]
        assert viewer.layers[name] is lyr, name
        now = np.asarray(lyr.data)
        assert (now.dtype, now.shape) == (dtype, shape), name
        assert now.tobytes() == data, f"{name}: data changed"
        assert dict(lyr.metadata) == meta, name
        assert (tuple(lyr.scale), tuple(lyr.translate)) == (scale, translate), name


def _preview_layers(viewer) -> list:
    return [
        lyr.name
        for lyr in viewer.layers
        if lyr.metadata.get(B.ROLE_KEY) == CW.ROLE_PREVIEW or CW.PREVIEW_TAG in lyr.name
    ]


def _dip_with_a_result(make_napari_viewer, qtbot):
    """A viewer with "grey", its hints and a finished dip result "grey [colorized]"."""
    viewer = make_napari_viewer()
    viewer.add_image(two_region_image(32), name="grey", **GRID)
    w = make_widget(viewer, method="dip", seed=0, device="cpu")
    w.params_override = TINY_DIP
    pts = w.add_hints_layer()
    add_point(pts, 16, 8, BLUE)
    add_point(pts, 16, 24, ORANGE)
    previews = []  # the preview layer's names at each step with a preview
    run_and_wait(qtbot, w)
    res = viewer.layers["grey [colorized]"]
    assert res.metadata["seed"] == 0 and res.metadata["method"] == "dip" and res is w.result_layer
    assert not _preview_layers(viewer), "the preview layer goes when the run has finished"
    assert [lyr.name for lyr in viewer.layers] == ["grey", "grey [colorized]", "grey [color hints]"]
    # a long second run: a different seed, so its previews differ from the first result
    w.seed.value = 7
    w.params_override = dataclasses.replace(TINY_DIP, iterations=100_000)
    return viewer, w, pts, res, previews


def test_dip_previews_never_overwrite_the_earlier_result_cancel(make_napari_viewer, qtbot, notes):
    """Cancelling a dip run after previews leaves the earlier result byte for byte; the last
    preview is offered as a layer marked cancelled, below that result; no preview layer stays."""
    viewer, w, pts, res, previews = _dip_with_a_result(make_napari_viewer, qtbot)
    before = _snapshot(viewer)
    names = [lyr.name for lyr in viewer.layers]
    ended, checks = [], []
    w.run_finished.connect(ended.append)
    worker = w.run(start=False)

    def on_step(step):
        if step.preview is None or len(previews) == 2:  # (a step may still come after Cancel)
            return
        # the widget has shown this preview (it is connected first): in its own layer; recorded
        # here and checked below (an assert failing in a Qt slot would not stop the run)
        previews.append(_preview_layers(viewer))
        checks.append(
            (
                viewer.layers["grey [colorized]"] is res,
                np.asarray(res.data).tobytes() == before["grey [colorized]"][3],  # no preview in the result
                "grey [colorize preview]" not in [lyr.name for lyr in w.image.choices],
                viewer.layers.selection.active is pts,  # the hints stay active
            )
        )
        if len(previews) == 2:
            w.cancel_button.clicked.emit()

    worker.yielded.connect(on_step)
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        worker.start()
    qtbot.wait(10)
    assert previews == [["grey [colorize preview]"]] * 2, previews
    assert checks == [(True, True, True, True)] * 2, checks
    assert ended == [None] and not w.running and not notes["error"], notes
    _assert_unchanged(viewer, before, names)
    assert not _preview_layers(viewer)
    kept = viewer.layers["grey [colorized] (cancelled)"]
    assert kept.metadata["cancelled"] is True and kept.metadata["seed"] == 7
    assert kept.metadata[B.ROLE_KEY] == CW.ROLE_RESULT and kept.metadata["iteration"] == 20
    assert np.asarray(kept.data).tobytes() != before["grey [colorized]"][3]
    # below the earlier result (which the canvas shows again), above the image; hints on top
    assert [lyr.name for lyr in viewer.layers] == [
        "grey",
        "grey [colorized] (cancelled)",
        "grey [colorized]",
        "grey [color hints]",
    ]
    assert w.result_layer is res and viewer.layers.selection.active is pts
    assert "cancelled at iteration 20" in w.status.value and "grey [colorized] is unchanged" in w.status.value
    assert "grey [colorized] (cancelled)" not in [lyr.name for lyr in w.image.choices]

    # a run that finishes updates the result layer; the cancelled run's layer stays as it was
    kept_before = _snapshot(viewer)
    w.params_override = TINY_DIP
    run_and_wait(qtbot, w)
    assert not notes["error"], notes
    assert viewer.layers["grey [colorized]"] is res and res.metadata["seed"] == 7
    assert res.metadata.get("cancelled") is None
    _assert_unchanged(viewer, kept_before, ["grey", "grey [colorized] (cancelled)", "grey [color hints]"])
    assert not _preview_layers(viewer)
    assert [lyr.name for lyr in viewer.layers] == [
        "grey",
        "grey [colorized] (cancelled)",
        "grey [colorized]",
        "grey [color hints]",
    ]


def test_dip_previews_never_overwrite_the_earlier_result_failure(make_napari_viewer, qtbot, monkeypatch, notes):
    """A dip run failing mid-fit after previews leaves every earlier layer as it was and
    nothing partial behind (no preview, no cancelled layer)."""
    from napari_deep_prior.colorization.api import REGISTRY

    viewer, w, pts, res, previews = _dip_with_a_result(make_napari_viewer, qtbot)
    before = _snapshot(viewer)
    names = [lyr.name for lyr in viewer.layers]
    dip = REGISTRY["dip"]
    real_steps = dip.ab_steps

    def failing_steps(L, hints, options):
        gen = real_steps(L, hints, options)
        try:
            for step in gen:
                yield step
                if step.iteration >= 25:  # after two previews (every 10 iterations)
                    raise RuntimeError("the device was lost (simulated)")
        finally:
            gen.close()

    monkeypatch.setattr(dip, "ab_steps", failing_steps)
    ended = []
    w.run_finished.connect(ended.append)
    worker = w.run(start=False)
    worker.yielded.connect(lambda step: step.preview is not None and previews.append(_preview_layers(viewer)))
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        worker.start()
    qtbot.wait(10)
    assert previews == [["grey [colorize preview]"]] * 2, previews
    (msg,) = notes["error"]
    assert "device was lost (simulated)" in msg and "RuntimeError" in msg, msg
    assert ended == [None] and not w.running
    assert [lyr.name for lyr in viewer.layers] == names  # no preview, nothing partial
    _assert_unchanged(viewer, before, names)
    assert w.result_layer is res and viewer.layers.selection.active is pts


def test_a_preview_layer_the_user_removes_is_not_brought_back(make_napari_viewer, qtbot, notes):
    viewer, w, pts, res, previews = _dip_with_a_result(make_napari_viewer, qtbot)
    before = _snapshot(viewer)
    w.params_override = dataclasses.replace(TINY_DIP, iterations=60)
    worker = w.run(start=False)

    def on_step(step):
        if step.preview is not None:
            previews.append(_preview_layers(viewer))
            if "grey [colorize preview]" in viewer.layers:
                viewer.layers.remove("grey [colorize preview]")

    worker.yielded.connect(on_step)
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        worker.start()
    qtbot.wait(10)
    assert previews[0] == ["grey [colorize preview]"] and all(p == [] for p in previews[1:]), previews
    assert not notes["error"], notes
    assert viewer.layers["grey [colorized]"] is res and res.metadata["seed"] == 7  # the result still comes
    assert np.asarray(res.data).tobytes() != before["grey [colorized]"][3]
    assert [lyr.name for lyr in viewer.layers] == ["grey", "grey [colorized]", "grey [color hints]"]


def test_a_first_dip_result_takes_over_the_preview_layer(make_napari_viewer, qtbot, notes):
    """With no earlier result, the preview layer becomes the result layer (no layer to rebuild)."""
    viewer = make_napari_viewer()
    viewer.add_image(two_region_image(32), name="grey")
    w = make_widget(viewer, method="dip", seed=0, device="cpu")
    w.params_override = TINY_DIP
    pts = w.add_hints_layer()
    add_point(pts, 16, 8, BLUE)
    seen = []
    worker = w.run(start=False)
    worker.yielded.connect(
        lambda step: step.preview is not None and seen.append(viewer.layers["grey [colorize preview]"])
    )
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        worker.start()
    qtbot.wait(10)
    assert seen and all(lyr is seen[0] for lyr in seen)
    res = viewer.layers["grey [colorized]"]
    assert res is seen[0] and res.metadata[B.ROLE_KEY] == CW.ROLE_RESULT and "iteration" not in res.metadata
    assert [lyr.name for lyr in viewer.layers] == ["grey", "grey [colorized]", "grey [color hints]"]
    assert not notes["error"], notes


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["no_image", "no_hints", "outside", "stack", "even_size"])
def test_bad_input_gives_a_message(make_napari_viewer, qtbot, notes, case):
    viewer = make_napari_viewer()
    if case == "stack":
        viewer.add_image(np.stack([two_region_image()] * 3), name="stack")
    elif case != "no_image":
        viewer.add_image(two_region_image(), name="grey")
    w = make_widget(viewer, method="levin", live=False)
    if case in ("no_hints", "outside", "even_size"):
        pts = w.add_hints_layer()
        if case == "outside":
            add_point(pts, 10, 10, BLUE)
            add_point(pts, 60, 20, ORANGE)
        elif case == "even_size":
            add_point(pts, 10, 10, BLUE)
            w.hint_size.value = 4
    n = len(viewer.layers)
    assert w.run() is None
    assert len(notes["error"]) == 1, notes
    expected = {
        "no_image": "no image layer",
        "no_hints": "needs at least one colour hint",
        "outside": "hint point 2 is at (row 60, col 20), outside the 48 x 48 image",
        "stack": "Pick a 2D image",
        "even_size": "must be odd",
    }[case]
    assert expected in notes["error"][0], notes["error"][0]
    assert len(viewer.layers) == n
    if case == "stack":
        assert w.add_hints_layer() is None and "2D" in notes["error"][1]


def test_an_invalid_hint_is_named_as_the_widget_numbers_it(make_napari_viewer, monkeypatch, notes):
    """A hint the core rejects is named "hint point N" (the widget's numbering), not hints[i]."""
    viewer = make_napari_viewer()
    viewer.add_image(two_region_image(), name="grey")
    w = make_widget(viewer, method="levin", live=False)
    pts = w.add_hints_layer()
    add_point(pts, 10, 10, BLUE)
    add_point(pts, 20, 30, ORANGE)
    real = HP.hints_from_points

    def with_a_bad_colour(points, image):
        hints = real(points, image)
        r, c, _rgb = hints[1]
        hints[1] = (r, c, np.array([np.nan, 0.5, 0.5]))  # no colour napari would give, but the core check's case
        return hints

    monkeypatch.setattr(HP, "hints_from_points", with_a_bad_colour)
    n = len(viewer.layers)
    assert w.run() is None
    (msg,) = notes["error"]
    assert msg.startswith("Colorize: hint point 2: ") and "colour" in msg and "Move or delete that point" in msg, msg
    assert "hints[" not in msg, msg
    assert len(viewer.layers) == n


def test_out_of_gamut_colour_is_warned_once(make_napari_viewer, qtbot, notes):
    viewer = make_napari_viewer()
    dark = np.full((32, 32), 25, np.uint8)
    dark[:, 16:] = 200
    viewer.add_image(dark, name="dark")
    w = make_widget(viewer, method="levin")
    pts = w.add_hints_layer()
    with qtbot.waitSignal(w.colorized, timeout=WAIT_MS):
        add_point(pts, 10, 5, "#ffff00")  # bright yellow on a near-black pixel
    assert len(notes["warning"]) == 1, notes
    msg = notes["warning"][0]
    assert "#ffff00 ->" in msg and "gamut" in msg and "hint 1 at (row 10, col 5)" in msg
    with qtbot.waitSignal(w.colorized, timeout=WAIT_MS):
        add_point(pts, 10, 25, "#f0b050")  # in gamut on the bright half
    assert len(notes["warning"]) == 1  # not repeated for the same hint
    assert not notes["error"]


# --- CSV ------------------------------------------------------------------------------------


def test_save_and_load_hints_csv(make_napari_viewer, qtbot, tmp_path, monkeypatch, notes):
    viewer = make_napari_viewer()
    viewer.add_image(two_region_image(), name="grey", scale=(2, 2), translate=(5, 7))
    w = make_widget(viewer, method="levin", live=False)
    pts = w.add_hints_layer()
    for r, c, col in [(3, 4, BLUE), (20, 30, ORANGE), (40, 12, "#20a040")]:
        add_point(pts, r, c, col)
    path = tmp_path / "hints.csv"
    assert w.save_hints(path) == path
    lines = path.read_text().splitlines()
    assert lines == ["row,col,color", f"3,4,{BLUE}", f"20,30,{ORANGE}", "40,12,#20a040"]
    pts.data = np.empty((0, 2))
    assert w.hints() == []
    monkeypatch.setattr(B, "ask_open_file", lambda *a: str(path))  # the "Load" dialog
    w.load_hints_button.clicked.emit()
    got = [(r, c, HP.hex_of(rgb)) for r, c, rgb in w.hints()]
    assert got == [(3, 4, BLUE), (20, 30, ORANGE), (40, 12, "#20a040")]
    np.testing.assert_allclose(pts.data, [[3, 4], [20, 30], [40, 12]])  # same grid
    # with no hints layer, loading makes one on the image's grid
    viewer.layers.remove(pts)
    assert w.hints_layer.value is None
    new = w.load_hints(path)
    assert new.name == "grey [color hints]" and new is not pts
    np.testing.assert_allclose(new.scale, (2, 2))
    assert [(r, c, HP.hex_of(rgb)) for r, c, rgb in w.hints()] == got
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    assert w.load_hints(bad) is None and "header" in notes["error"][-1]
    assert len(notes["error"]) == 1


def test_a_failed_hints_save_keeps_the_old_file(make_napari_viewer, tmp_path, monkeypatch, notes):
    """The CSV is written whole: a full disk leaves the previous file as it was, and says so."""
    import errno
    import os

    viewer = make_napari_viewer()
    viewer.add_image(two_region_image(), name="grey")
    w = make_widget(viewer, method="levin", live=False)
    pts = w.add_hints_layer()
    add_point(pts, 3, 4, BLUE)
    (tmp_path / "out").mkdir()
    path = tmp_path / "out" / "hints.csv"
    assert w.save_hints(path) == path
    before = path.read_bytes()
    add_point(pts, 20, 30, ORANGE)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert w.save_hints(path) is None
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["hints.csv"]  # no temporary file left
    (msg,) = notes["error"]
    assert "no space left on the device" in msg and "the existing file was not changed" in msg, msg
    assert "not saved" in w.status.value


def test_parameter_errors_name_the_widget_fields_colorize(make_napari_viewer, qtbot, monkeypatch, notes):
    """A colorizer's ParameterError is shown with the widget's labels ("hint size", not hint_size)."""
    from napari_deep_prior.colorization.api import REGISTRY
    from napari_deep_prior.colorization.base import Colorizer
    from napari_deep_prior.errors import ParameterError

    class Picky(Colorizer):
        name = "picky"
        title = "picky (hint size 1 only)"

        def ab_steps(self, L, hints, options):
            if options.hint_size != 1:
                raise ParameterError(f"{{hint_size}} must be 1 for picky, got {options.hint_size}")
            yield from ()
            return np.zeros(L.shape + (2,), np.float32)

    monkeypatch.setitem(REGISTRY, "picky", Picky())
    viewer = make_napari_viewer()
    viewer.add_image(two_region_image(), name="grey")
    w = make_widget(viewer, method="picky", live=False)
    assert w.field_labels()["hint_size"] == "hint size" and w.field_labels()["hints"] == "hints layer"
    add_point(w.add_hints_layer(), 10, 10, BLUE)
    w.hint_size.value = 3
    run_and_wait(qtbot, w)
    (msg,) = notes["error"]
    assert "hint size must be 1 for picky, got 3" in msg and "hint_size" not in msg, msg
    assert "grey [colorized]" not in viewer.layers  # nothing partial left


# --- the registry drives the widget -----------------------------------------------------------


def test_worker_body_returns_what_colorize_returns():
    """The worker body is the registry's steps() plus the gamut notes: same image as colorize()."""
    from napari_deep_prior.arrays import drive
    from napari_deep_prior.colorization.api import REGISTRY, colorize
    from napari_deep_prior.colorization.base import ColorizeOptions

    img = two_region_image(32)
    img[:, :8] = 20  # a near-black strip: a bright yellow hint there is out of gamut
    hints = [(10, 20, BLUE), (5, 3, "#ffff00")]
    steps = []
    out = drive(RN.colorize_job(REGISTRY["levin"], img, hints, ColorizeOptions(hint_size=3)), steps.append)
    np.testing.assert_array_equal(out.rgb, colorize(img, method="levin", hints=hints, hint_size=3))
    assert [s.iteration for s in steps] == [1] and out.seconds > 0
    assert len(out.notes) == 1 and out.notes[0].startswith("hint 2 at (row 5, col 3): #ffff00 ->")


def test_a_registered_colorizer_appears_and_runs_live(make_napari_viewer, qtbot, monkeypatch, notes):
    from napari_deep_prior.colorization.api import REGISTRY
    from napari_deep_prior.colorization.base import ABStep, Colorizer

    class Flat(Colorizer):
        name = "flat"
        title = "flat (mean hint colour)"
        live = True

        def ab_steps(self, L, hints, options):
            yield ABStep(1, 1)
            return np.broadcast_to(np.float32([10.0, -40.0]), L.shape + (2,))

    monkeypatch.setitem(REGISTRY, "flat", Flat())
    viewer = make_napari_viewer()
    viewer.add_image(two_region_image(), name="grey")
    w = make_widget(viewer)
    assert w.method.choices == ("siggraph17", "levin", "dip", "flat")
    w.method.value = "flat"
    assert w.is_fast() and w.live.enabled and not w.iterations.visible
    pts = w.add_hints_layer()
    with qtbot.waitSignal(w.colorized, timeout=WAIT_MS):
        add_point(pts, 10, 10, ORANGE)
    res = viewer.layers["grey [colorized]"]
    assert res.metadata["method"] == "flat" and ab_at(res.data, 40, 40)[1] < -25
    w.mode.value = "automatic"
    assert w.method.choices == ("eccv16", "siggraph17")  # flat needs hints
    assert not notes["error"], notes
