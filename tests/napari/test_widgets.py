"""End-to-end tests of the DIP Denoise / DIP Inpaint dock widgets with a real napari viewer.

Tiny images (32x32) and a tiny network keep every run to a second or two; the
responsiveness test uses a 256x256 image.  Xvfb is started by pytest-xvfb.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from widget_helpers import RUN_TIMEOUT_MS
from widget_helpers import dock_widget as _widget
from widget_helpers import run_widget as _run

from napari_deep_prior._napari import layers as L
from napari_deep_prior._napari.widgets import DenoiseWidget, InpaintWidget

GRID = {"scale": (0.5, 2.0), "translate": (3.0, -4.0), "units": ("micrometer", "nanometer"), "axis_labels": ("y", "x")}


def _layers(viewer, role):
    return [lyr for lyr in viewer.layers if lyr.metadata.get("dip_role") == role]


def _check_grid(layer, history=False):
    lead = 1 if history else 0
    np.testing.assert_allclose(layer.scale[lead:], GRID["scale"])
    np.testing.assert_allclose(layer.translate[lead:], GRID["translate"])
    assert tuple(str(u) for u in layer.units[lead:]) == GRID["units"]
    assert tuple(layer.axis_labels[lead:]) == GRID["axis_labels"]
    if history:
        assert layer.axis_labels[0] == "iteration"
        assert layer.scale[0] == 1 and layer.translate[0] == 0


# --- manifest and sample data ---------------------------------------------------------------


def test_manifest_contributions():
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    mf = pm.get_manifest("napari-deep-prior")
    assert mf.display_name == "Deep Prior"
    assert {w.display_name for w in mf.contributions.widgets} >= {"DIP Denoise", "DIP Inpaint"}
    assert len(mf.contributions.sample_data) == 4


def test_sample_data_loads(make_napari_viewer):
    from napari_deep_prior import samples as sd

    for func in (sd.noisy_grey, sd.noisy_colour, sd.fluorescence_poisson, sd.damaged_with_mask):
        a = func()
        b = func()
        for (da, _ka, *_), (db, _kb, *_) in zip(a, b, strict=True):
            assert da.shape[:2] == (256, 256)
            np.testing.assert_array_equal(da, db)  # fixed seed
    viewer = make_napari_viewer()
    viewer.open_sample("napari-deep-prior", "damaged-with-mask")
    kinds = sorted(type(lyr).__name__ for lyr in viewer.layers)
    assert kinds == ["Image", "Labels"]


# --- denoise end to end ---------------------------------------------------------------------


def test_denoise_end_to_end_grey(make_napari_viewer, qtbot, tiny_params, grey_image, notes):
    viewer = make_napari_viewer()
    src = viewer.add_image(grey_image, name="noisy", **GRID)
    before = grey_image.copy()
    w = _widget(DenoiseWidget, viewer, tiny_params, early_stop=False)
    previews = []
    outputs = []
    w.run_finished.connect(outputs.append)
    _run(qtbot, w, on_yield=lambda s: previews.append(len(_layers(viewer, "preview"))))

    assert not notes["error"], notes
    assert any(previews), "a preview layer was shown during the run"
    assert not _layers(viewer, "preview"), "the preview layer is removed at the end"
    np.testing.assert_array_equal(src.data, before)  # input never modified
    res = viewer.layers["noisy [DIP denoised]"]
    hist = viewer.layers["noisy [DIP history]"]
    assert res.data.dtype == np.uint8 and res.data.shape == (32, 32)
    assert not np.array_equal(res.data, before)
    _check_grid(res)
    _check_grid(hist, history=True)
    assert tuple(res.contrast_limits) == tuple(src.contrast_limits)
    assert res.colormap.name == src.colormap.name and not res.rgb
    # history: iteration axis first, iterations and losses in the metadata
    # a short run saves at least 10 frames: every min(10, 30 // 10) = 3 iterations
    assert hist.data.shape == (10, 32, 32) and hist.data.dtype == np.uint8
    np.testing.assert_array_equal(hist.metadata["iterations"], np.arange(3, 31, 3))
    assert hist.metadata["losses"].shape == (10, 1)
    assert np.isfinite(hist.metadata["losses"]).all()
    assert res.metadata["seed"] == 0 and res.metadata["stop_iterations"] == [30]
    assert res.metadata["params"]["iterations"] == 30
    assert outputs and outputs[0] is not None
    # the last history frame is the returned estimate (no early stop, no averaging effects)
    np.testing.assert_array_equal(hist.data[-1], res.data)
    assert w.run_button.enabled and not w.cancel_button.enabled
    assert w.use_frame.enabled
    assert w.plot.n_points > 0 and w.plot.stop == 30


def test_use_this_frame(make_napari_viewer, qtbot, tiny_params, grey_image, notes):
    viewer = make_napari_viewer()
    viewer.add_image(grey_image, name="noisy", **GRID)
    w = _widget(DenoiseWidget, viewer, tiny_params, early_stop=False)
    _run(qtbot, w)
    hist = viewer.layers["noisy [DIP history]"]
    res = viewer.layers["noisy [DIP denoised]"]
    axis = viewer.dims.ndim - hist.ndim
    step = list(viewer.dims.current_step)
    step[axis] = 0  # the first frame (iteration 3: 30 iterations save a frame every 3)
    viewer.dims.current_step = tuple(step)
    out = w.use_current_frame()
    assert out is res
    np.testing.assert_array_equal(res.data, hist.data[0])
    assert res.metadata["frame_iteration"] == 3
    assert w.plot.stop == 3


def test_denoise_rgb_through_plugin_dock(make_napari_viewer, qtbot, tiny_params):
    """The widget as napari opens it (viewer behind napari's public-only proxy)."""
    viewer = make_napari_viewer()
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    src = viewer.add_image(rgb, name="rgb", rgb=True, scale=(2, 2))
    _dock, w = viewer.window.add_plugin_dock_widget("napari-deep-prior", "DIP Denoise")
    assert isinstance(w, DenoiseWidget)
    w.params_override = tiny_params
    w.iterations.value = 15
    w.history_every.value = 5
    w.seed.value = 3
    assert w.image.value == src and w.channel_axis.value == 2
    _run(qtbot, w)
    res = viewer.layers["rgb [DIP denoised]"]
    hist = viewer.layers["rgb [DIP history]"]
    assert res.rgb and res.data.shape == (32, 32, 3) and res.data.dtype == np.uint8
    assert hist.rgb and hist.data.shape == (15, 32, 32, 3)  # 15 iterations: a frame each
    np.testing.assert_allclose(hist.scale, (1, 2, 2))
    np.testing.assert_array_equal(src.data, rgb)


def test_poisson_loss_and_float_image(make_napari_viewer, qtbot, tiny_params):
    viewer = make_napari_viewer()
    counts = np.random.default_rng(2).poisson(5.0, (32, 32)).astype(np.float32)
    viewer.add_image(counts, name="photons")
    w = _widget(DenoiseWidget, viewer, tiny_params, loss="poisson", history_every=0)
    _run(qtbot, w)
    res = viewer.layers["photons [DIP denoised]"]
    assert res.data.dtype == np.float32 and res.metadata["params"]["loss"] == "poisson"
    assert "photons [DIP history]" not in viewer.layers  # history off
    assert res.data.min() >= 0


def test_ensemble_field_runs_a_seed_ensemble(make_napari_viewer, qtbot, tiny_params, grey_image):
    viewer = make_napari_viewer()
    viewer.add_image(grey_image, name="img")
    w = _widget(DenoiseWidget, viewer, tiny_params, iterations=10, history_every=0, ensemble=2)
    assert (w.ensemble.min, w.ensemble.max) == (1, 16) and w.field_labels()["ensemble"] == "ensemble (seeds)"
    assert "independently seeded" in w.ensemble.tooltip and "GPU" in w.ensemble.tooltip
    _run(qtbot, w)
    res = viewer.layers["img [DIP denoised]"]
    assert res.metadata["params"]["ensemble"] == 2 and res.data.shape == grey_image.shape
    w.preset.value = w.preset.choices[-1]  # a preset brings its own value (one network)
    assert w.ensemble.value == 1 and w.build_params().ensemble == 1


def test_poisson_sample_preselects_the_poisson_model(make_napari_viewer, qtbot, tiny_params):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-deep-prior", "fluorescence-poisson")
    layer = viewer.layers[0]
    w = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(w, name="DIP Denoise")
    assert w.image.value is layer
    assert w.loss.value == "poisson" and w.preset.value == "denoise-poisson"
    assert w.build_params().loss == "poisson" and w.build_params().net.upsample == "bilinear"
    # the model and the default preset follow each other both ways
    w.loss.value = "gaussian"
    assert w.preset.value == "denoise" and not w.gain.enabled
    w.preset.value = "denoise-poisson"
    assert w.loss.value == "poisson"
    assert w.gain.enabled and w.read_noise.enabled and w.camera_offset.enabled
    # a run (tiny net for speed): float32 rates, result and history, the input's contrast limits
    w.params_override = tiny_params.replace(loss="poisson")
    for k, v in {"iterations": 20, "history_every": 10, "seed": 0, "device": "cpu"}.items():
        getattr(w, k).value = v
    _run(qtbot, w)
    res = viewer.layers[f"{layer.name} [DIP denoised]"]
    hist = viewer.layers[f"{layer.name} [DIP history]"]
    assert layer.data.dtype == np.uint16
    assert res.data.dtype == np.float32 and hist.data.dtype == np.float32
    assert tuple(res.contrast_limits) == tuple(layer.contrast_limits)
    # "input's dtype" gives the rounded counts
    w.output.value = "input"
    _run(qtbot, w)
    results = _layers(viewer, "result")
    assert len(results) == 2 and results[-1].data.dtype == np.uint16


def test_poisson_camera_fields_convert_camera_values(make_napari_viewer, qtbot, tiny_params, notes):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(4)
    adu = np.rint(2.0 * (rng.poisson(6.0, (32, 32)) + rng.normal(0, 1.0, (32, 32))) + 100).astype(np.uint16)
    viewer.add_image(adu, name="adu")
    w = _widget(
        DenoiseWidget,
        viewer,
        tiny_params.replace(loss="poisson"),
        loss="poisson",
        camera_offset=100.0,
        gain=2.0,
        read_noise=1.0,
        history_every=0,
    )
    job = w._prepare()[0]
    assert job.layout.counts_scale == pytest.approx(np.maximum((adu.astype(float) - 100) / 2 + 1, 0).max())
    _run(qtbot, w)
    res = viewer.layers["adu [DIP denoised]"]
    # in the camera's units (~112 here), not photons (~6); the tiny 30-step fit is rough
    assert res.data.dtype == np.float32 and abs(res.data.mean() - adu.mean()) < 0.05 * adu.mean()
    # the same camera values without the camera model are still fitted as counts
    w.camera_offset.value, w.gain.value, w.read_noise.value = 0.0, 1.0, 0.0
    assert w._prepare()[0].layout.counts_scale == adu.max()
    assert not notes["error"]


def test_multichannel_layer_fitted_jointly(make_napari_viewer, qtbot, tiny_params, grey_image):
    """A (C, Y, X) layer with the channel axis chosen: one fit with C output channels."""
    viewer = make_napari_viewer()
    data = np.stack([grey_image, 255 - grey_image]).astype(np.uint16)
    viewer.add_image(data, name="two", scale=(1, 0.5, 0.5))
    w = _widget(DenoiseWidget, viewer, tiny_params, iterations=10, history_every=5)
    w.channel_axis.value = 0
    assert not w.scope.enabled  # (C, Y, X) has no stack axis once C is the channel axis
    _run(qtbot, w)
    res = viewer.layers["two [DIP denoised]"]
    hist = viewer.layers["two [DIP history]"]
    assert res.data.shape == (2, 32, 32) and res.data.dtype == np.uint16
    assert hist.data.shape == (10, 2, 32, 32)  # at least 10 frames
    assert res.metadata["planes_done"] == 1  # one joint fit, not two planes
    np.testing.assert_allclose(res.scale, (1, 0.5, 0.5))


# --- inpaint --------------------------------------------------------------------------------


def _damaged(grey_image):
    mask = np.zeros((32, 32), np.uint8)
    mask[10:16, 8:20] = 1
    img = grey_image.copy()
    img[mask > 0] = 255
    return img, mask


def test_inpaint_end_to_end_labels(make_napari_viewer, qtbot, tiny_params, grey_image, notes):
    viewer = make_napari_viewer()
    img, mask = _damaged(grey_image)
    src = viewer.add_image(img, name="damaged", **GRID)
    lab = viewer.add_labels(mask, name="holes", scale=GRID["scale"], translate=GRID["translate"])
    w = _widget(InpaintWidget, viewer, tiny_params)
    assert w.mask.value == lab
    _run(qtbot, w)
    assert not notes["error"], notes
    res = viewer.layers["damaged [DIP inpainted]"]
    hist = viewer.layers["damaged [DIP history]"]
    _check_grid(res)
    _check_grid(hist, history=True)
    known = mask == 0
    np.testing.assert_array_equal(res.data[known], img[known])  # known pixels kept
    assert not np.array_equal(res.data[~known], img[~known])  # holes filled
    np.testing.assert_array_equal(src.data, img)
    np.testing.assert_array_equal(lab.data, mask)  # mask layer untouched
    assert res.metadata["mask_layer"] == "holes"
    assert hist.data.shape[1:] == (32, 32) and hist.metadata["losses"].shape[1] == 1


def test_shapes_mask_rasterised_on_image_grid(make_napari_viewer):
    """A Shapes layer on another grid is rasterised in the image's data coordinates."""
    from napari.layers import Image, Shapes

    image = Image(np.zeros((32, 32)), scale=(2, 2), translate=(10, 10))
    # world rectangle y in [20, 40], x in [30, 50] -> image pixels y 5..15, x 10..20
    shapes = Shapes([np.array([[10, 15], [10, 25], [20, 25], [20, 15]])], shape_type="rectangle", scale=(2, 2))
    sel = L.select_image(image, None, plane_only=False)
    mask = L.mask_from_layer(shapes, image, sel)
    assert mask.shape == (32, 32)
    ys, xs = np.nonzero(mask)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) in {(5, 15, 10, 20), (5, 14, 10, 19)}
    # a Labels layer on a coarser grid is resampled the same way
    from napari.layers import Labels

    coarse = np.zeros((16, 16), np.uint8)
    coarse[5:8, 5:8] = 1  # world 20..35 (scale 4, translate 0 + pixel centres)
    lab = Labels(coarse, scale=(4, 4))
    m2 = L.mask_from_layer(lab, image, sel)
    assert m2.shape == (32, 32) and m2.any()
    ys, _ = np.nonzero(m2)
    assert ys.min() >= 4 and ys.max() <= 13


def test_inpaint_with_shapes_mask(make_napari_viewer, qtbot, tiny_params, grey_image, notes):
    viewer = make_napari_viewer()
    img = grey_image.copy()
    viewer.add_image(img, name="img", scale=(2, 2), translate=(10, 10))
    viewer.add_shapes([np.array([[20, 30], [20, 50], [40, 50], [40, 30]])], shape_type="rectangle", name="roi")
    w = _widget(InpaintWidget, viewer, tiny_params, iterations=10, history_every=5)
    assert w.mask.value.name == "roi"
    _run(qtbot, w)
    assert not notes["error"], notes
    res = viewer.layers["img [DIP inpainted]"]
    changed = res.data != img
    ys, xs = np.nonzero(changed)
    assert changed.any() and ys.min() >= 5 and ys.max() <= 15 and xs.min() >= 10 and xs.max() <= 20
    np.testing.assert_allclose(res.scale, (2, 2))
    np.testing.assert_allclose(res.translate, (10, 10))


def test_new_mask_button(make_napari_viewer, grey_image):
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([grey_image] * 3), name="stack", scale=(5, 0.5, 2), axis_labels=("z", "y", "x"))
    w = InpaintWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.new_mask.clicked.emit()
    lab = viewer.layers["stack mask"]
    # a stack's new mask is a chunked (zarr) array, one chunk per plane (tests/napari/test_lazy.py paints it)
    assert lab.data.shape == (3, 32, 32) and not np.asarray(lab.data[...]).any()
    assert lab.mode == "paint" and lab.selected_label == 1
    np.testing.assert_allclose(lab.scale, (5, 0.5, 2))
    assert tuple(lab.axis_labels) == ("z", "y", "x")
    assert w.mask.value == lab
    assert viewer.layers.selection.active == lab


def test_stack_with_2d_mask_whole_and_current_plane(make_napari_viewer, qtbot, tiny_params, grey_image, notes):
    viewer = make_napari_viewer()
    stack = np.stack([grey_image, grey_image[::-1], grey_image[:, ::-1]])
    _img, mask = _damaged(grey_image)
    viewer.add_image(stack, name="stack", scale=(5, 0.5, 2), translate=(1, 0, 0))
    viewer.add_labels(mask, name="m2d", scale=(0.5, 2))
    w = _widget(InpaintWidget, viewer, tiny_params, iterations=10, history_every=5)
    assert w.scope.enabled
    _run(qtbot, w)
    assert not notes["error"], notes
    res = viewer.layers["stack [DIP inpainted]"]
    hist = viewer.layers["stack [DIP history]"]
    assert res.data.shape == (3, 32, 32) and hist.data.shape == (10, 3, 32, 32)
    assert res.metadata["planes_done"] == 3
    # current plane only: the plane on screen (z index 2), placed at its z position
    viewer.layers.selection.active = viewer.layers["stack"]
    w.image.value = viewer.layers["stack"]
    step = list(viewer.dims.current_step)
    zaxis = viewer.dims.ndim - 3
    step[zaxis] = 2
    viewer.dims.current_step = tuple(step)
    w.scope.value = "plane"
    w.history_every.value = 0
    _run(qtbot, w)
    assert not notes["error"], notes
    plane = viewer.layers["stack [DIP inpainted] (plane)"]
    assert plane.data.shape == (1, 32, 32)
    np.testing.assert_allclose(plane.translate, (1 + 2 * 5, 0, 0))
    np.testing.assert_allclose(plane.scale, (5, 0.5, 2))
    known = mask == 0
    np.testing.assert_array_equal(plane.data[0][known], stack[2][known])


# --- cancel, robustness ---------------------------------------------------------------------


def test_cancel_stops_within_one_yield_and_keeps_partial(make_napari_viewer, qtbot, tiny_params, grey_image, notes):
    viewer = make_napari_viewer()
    viewer.add_image(grey_image, name="noisy")
    w = _widget(DenoiseWidget, viewer, tiny_params, iterations=5000, early_stop=False, history_every=5)
    seen = []
    after = []

    def on_yield(step):
        if not seen:
            seen.append(step.iteration)
            w.cancel()
        else:
            after.append(step.iteration)

    t0 = time.perf_counter()
    _run(qtbot, w, on_yield=on_yield)
    took = time.perf_counter() - t0
    ye = tiny_params.yield_every
    res = viewer.layers["noisy [DIP denoised]"]
    hist = viewer.layers["noisy [DIP history]"]
    run_its = res.metadata["iterations_run"][0]
    # quit() acts at the worker's next yield: at most the chunk in flight is finished
    assert run_its <= seen[0] + 2 * ye, (seen, after, run_its)
    assert len(after) <= 2
    assert res.metadata["cancelled"] is True
    assert hist.data.shape[0] >= 1 and hist.metadata["iterations"][-1] <= run_its
    assert not _layers(viewer, "preview")
    assert took < 60
    assert w.run_button.enabled and w._run is None


def test_run_twice_is_ignored(make_napari_viewer, qtbot, tiny_params, grey_image, notes):
    viewer = make_napari_viewer()
    viewer.add_image(grey_image, name="noisy")
    w = _widget(DenoiseWidget, viewer, tiny_params, iterations=60, early_stop=False)
    worker = w.run(start=False)
    assert not w.run_button.enabled and w.cancel_button.enabled
    assert w.run() is None
    assert any("already" in m for m in notes["info"])
    with qtbot.waitSignal(worker.finished, timeout=RUN_TIMEOUT_MS):
        worker.start()
    assert len(_layers(viewer, "result")) == 1


@pytest.mark.parametrize("case", ["no_image", "no_mask", "wrong_size", "empty_mask", "too_small", "negative_poisson"])
def test_error_paths_show_a_message(make_napari_viewer, tiny_params, grey_image, notes, case):
    viewer = make_napari_viewer()
    cls = DenoiseWidget if case in ("no_image", "too_small", "negative_poisson") else InpaintWidget
    if case == "too_small":
        viewer.add_image(np.zeros((4, 4), np.uint8), name="tiny")
    elif case == "negative_poisson":
        viewer.add_image(np.linspace(-1, 1, 32 * 32).reshape(32, 32), name="neg")
    elif case != "no_image":
        viewer.add_image(grey_image, name="img")
    if case == "wrong_size":
        viewer.add_labels(np.ones((20, 20), np.uint8), name="small mask")
    if case == "empty_mask":
        viewer.add_labels(np.zeros((32, 32), np.uint8), name="empty")
    w = _widget(cls, viewer, tiny_params)
    if case == "negative_poisson":
        w.loss.value = "poisson"
    n_layers = len(viewer.layers)
    worker = w.run()
    assert worker is None
    assert len(notes["error"]) == 1
    msg = notes["error"][0]
    expected = {
        "no_image": "no image layer",
        "no_mask": "choose a mask",
        "wrong_size": "mask has shape (20, 20)",
        "empty_mask": "marks no pixel",
        "too_small": "at least",
        "negative_poisson": "non-negative",
    }[case]
    assert expected in msg, msg
    assert len(viewer.layers) == n_layers
    assert w.run_button.enabled and w._run is None


def test_remove_input_layer_during_run(make_napari_viewer, qtbot, tiny_params, grey_image, notes):
    viewer = make_napari_viewer()
    src = viewer.add_image(grey_image, name="noisy")
    w = _widget(DenoiseWidget, viewer, tiny_params, iterations=40, early_stop=False)

    def on_yield(step):
        if src in viewer.layers:
            viewer.layers.remove(src)

    _run(qtbot, w, on_yield=on_yield)
    assert any("removed" in m for m in notes["warning"]), notes
    assert not notes["error"]
    res = viewer.layers["noisy [DIP denoised]"]
    assert res.data.shape == (32, 32)
    assert w.run_button.enabled


def test_close_viewer_during_run(make_napari_viewer, qtbot, tiny_params, grey_image, notes):
    viewer = make_napari_viewer()
    viewer.add_image(grey_image, name="noisy")
    w = _widget(DenoiseWidget, viewer, tiny_params, iterations=3000, early_stop=False)
    closed = []

    def on_yield(step):
        if not closed:
            closed.append(step.iteration)
            viewer.close()

    t0 = time.perf_counter()
    worker = _run(qtbot, w, on_yield=on_yield)
    assert time.perf_counter() - t0 < 60  # quit, no hang
    assert w._run is None  # the run was released
    assert worker.abort_requested
    assert not notes["error"] and not notes["warning"], notes


def test_qt_event_loop_stays_responsive(make_napari_viewer, qtbot, tiny_params, capsys):
    """Longest gap between 10 ms QTimer ticks while a 256x256 fit runs (target < 100 ms)."""
    from qtpy.QtCore import QTimer

    viewer = make_napari_viewer()
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:256, 0:256] / 255.0
    img = np.clip(0.5 + 0.3 * np.sin(6 * x) * np.cos(4 * y) + 0.1 * rng.standard_normal((256, 256)), 0, 1).astype(
        np.float32
    )
    viewer.add_image(img, name="big")
    w = _widget(DenoiseWidget, viewer, tiny_params, iterations=30, early_stop=False, history_every=5)
    ticks: list[float] = []
    yields: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    from napari_deep_prior._napari.restore import wait_for_warm_up

    assert wait_for_warm_up(120)  # as when a user sets the widget up before pressing Run
    worker = w.run(start=False)  # the preview layer is created here, at the "click"
    worker.yielded.connect(lambda _s: yields.append(time.perf_counter()))
    timer.start()
    t0 = time.perf_counter()
    with qtbot.waitSignal(worker.finished, timeout=RUN_TIMEOUT_MS):
        worker.start()
    qtbot.wait(50)
    timer.stop()
    took = time.perf_counter() - t0
    t = np.asarray(ticks)
    gaps = np.diff(t) * 1000
    assert len(gaps) > 10 and len(yields) >= 6
    fit = gaps[t[1:] <= yields[-1] + 0.001]  # ticks up to the last Step (fit + live updates)
    end = gaps[t[1:] > yields[-1] + 0.001]  # result and history layers being added
    with capsys.disabled():
        print(
            f"\n[responsiveness] 256x256, 30 iterations in {took:.1f} s, {len(ticks)} ticks of "
            f"10 ms: during the fit max gap {fit.max():.1f} ms (p99 "
            f"{np.percentile(fit, 99):.1f}, median {np.median(fit):.1f}); adding the "
            f"result layers: max gap {end.max() if len(end) else 0:.1f} ms"
        )
    assert "big [DIP denoised]" in viewer.layers
    assert fit.max() < 1000 and gaps.max() < 1000


def test_runtime_error_in_the_fit_is_reported(make_napari_viewer, qtbot, tiny_params, grey_image, notes, monkeypatch):
    """A torch RuntimeError (e.g. out of memory) mid-run reaches the user; the widget recovers."""
    from napari_deep_prior.restore import fit as core_fit

    real_steps = core_fit.DIPFit.steps

    def failing_steps(self):
        gen = real_steps(self)
        yield next(gen)
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(core_fit.DIPFit, "steps", failing_steps)
    viewer = make_napari_viewer()
    src = viewer.add_image(grey_image, name="noisy")
    before = src.data.copy()
    w = _widget(DenoiseWidget, viewer, tiny_params, iterations=40, early_stop=False)
    worker = w.run(start=False)
    with qtbot.waitSignal(worker.finished, timeout=RUN_TIMEOUT_MS):
        worker.start()
    qtbot.wait(10)
    assert any("out of memory (simulated)" in m for m in notes["error"]), notes
    assert w.run_button.enabled and not w.cancel_button.enabled
    assert not _layers(viewer, "result") and not _layers(viewer, "preview")
    np.testing.assert_array_equal(src.data, before)


def test_parameter_errors_name_the_widget_fields(make_napari_viewer, grey_image, notes):
    """A ParameterError of the core is shown with the widget's field labels, not API names."""
    viewer = make_napari_viewer()
    viewer.add_image(np.linspace(-1, 1, 32 * 32).reshape(32, 32), name="neg")
    w = DenoiseWidget(viewer)
    labels = w.field_labels()
    assert labels["lr"] == "learning rate" and labels["history_every"] == "history every"
    assert labels["camera_offset"] == "camera offset" and labels["loss"] == "noise model"
    assert labels["output_dtype"] == "result type" and labels["early_stop"] == "automatic early stop"
    assert labels["channel_axis"] == "channels"
    w.loss.value = "poisson"  # negative values are no photon counts
    assert w.run() is None
    (msg,) = notes["error"]
    assert "camera offset" in msg and "read noise" in msg and "noise model" in msg, msg
    assert "camera_offset" not in msg and "read_noise" not in msg and "{" not in msg, msg


def test_a_failed_run_leaves_every_earlier_layer_intact(
    make_napari_viewer, qtbot, tiny_params, grey_image, notes, monkeypatch
):
    """An earlier result, the input and the mask are untouched by a run that fails mid-fit, and
    nothing partial is left; the user's layers are never modified in place."""
    from napari_deep_prior.restore import fit as core_fit

    viewer = make_napari_viewer()
    src = viewer.add_image(grey_image, name="img")
    mask = np.zeros((32, 32), np.uint8)
    mask[10:14, 8:20] = 1
    labels = viewer.add_labels(mask, name="mask")
    w = _widget(InpaintWidget, viewer, tiny_params, iterations=20, early_stop=False, history_every=5)
    w.mask.value = labels
    _run(qtbot, w)
    (first,) = _layers(viewer, "result")
    snapshot = {lyr.name: (np.array(lyr.data, copy=True), dict(lyr.metadata)) for lyr in viewer.layers}
    names = [lyr.name for lyr in viewer.layers]

    real_steps = core_fit.DIPFit.steps

    def failing_steps(self):
        gen = real_steps(self)
        yield next(gen)
        yield next(gen)
        raise RuntimeError("the device was lost (simulated)")

    monkeypatch.setattr(core_fit.DIPFit, "steps", failing_steps)
    _run(qtbot, w)
    assert any("device was lost (simulated)" in m for m in notes["error"]), notes
    assert [lyr.name for lyr in viewer.layers] == names  # no new layer, no preview left
    for lyr in viewer.layers:
        data, meta = snapshot[lyr.name]
        np.testing.assert_array_equal(lyr.data, data)
        assert set(lyr.metadata) == set(meta)
    assert viewer.layers["img"] is src and viewer.layers["mask"] is labels and first in viewer.layers
    assert "Failed" in w.status.value and w.run_button.enabled


# --- DIP Restore: every registered task in one widget ------------------------------------------


def _shown(widget) -> bool:
    """Not hidden explicitly (``visible`` also needs the dock on screen)."""
    return not widget.native.isHidden()


def test_restore_widget_offers_every_registered_task(make_napari_viewer):
    from napari_deep_prior._napari.restore.fields import field_names
    from napari_deep_prior._napari.widgets import RestoreWidget
    from napari_deep_prior.restore.degradations import DEGRADATIONS

    viewer = make_napari_viewer()
    w = RestoreWidget(viewer)
    assert list(w.task.choices) == list(DEGRADATIONS)
    assert _shown(w.task)
    every = set().union(*(field_names(d) for d in DEGRADATIONS.values()))
    for name, deg in DEGRADATIONS.items():
        w.task.value = name
        assert w.degradation is deg
        assert list(w.preset.choices) == list(deg.presets) and w.preset.value == deg.presets[0]
        shown = field_names(deg)
        for field in every:
            assert _shown(getattr(w, field)) == (field in shown), (name, field)
        # a layer change resets every choice: the task's presets (and the chosen one) stay
        w.preset.value = deg.presets[-1]
        viewer.add_image(np.zeros((16, 16), np.uint8), name=f"added while {name}")
        assert list(w.preset.choices) == list(deg.presets) and w.preset.value == deg.presets[-1]
    # the fixed-task widgets hide the task choice and offer only their task's fields
    d = DenoiseWidget(viewer)
    assert not _shown(d.task) and d.task.value == "denoise" and d._has("loss") and not d._has("mask")
    i = InpaintWidget(viewer)
    assert i.task.value == "inpaint" and i._has("mask") and not i._has("loss")


def test_restore_widget_runs_the_chosen_task(make_napari_viewer, qtbot, tiny_params, grey_image):
    from napari_deep_prior._napari.widgets import RestoreWidget

    viewer = make_napari_viewer()
    img = viewer.add_image(grey_image, name="scan", **GRID)
    holes = np.zeros(grey_image.shape, np.uint8)
    holes[10:16, 12:20] = 1
    lab = viewer.add_labels(holes, name="holes", scale=GRID["scale"], translate=GRID["translate"])
    w = _widget(RestoreWidget, viewer, tiny_params, task="inpaint", history_every=10)
    w.image.value = img
    w.mask.value = lab
    _run(qtbot, w)
    res = viewer.layers["scan [DIP inpainted]"]
    assert res.metadata["task"] == "inpaint" and res.metadata["mask_layer"] == "holes"
    known = holes == 0
    np.testing.assert_array_equal(res.data[known], grey_image[known])  # known pixels kept exactly
    _check_grid(res)
    assert res.data.shape == grey_image.shape and res.data.dtype == grey_image.dtype


def test_restore_widget_upscale_puts_the_larger_result_on_the_same_area(
    make_napari_viewer, qtbot, tiny_params, grey_image
):
    from napari_deep_prior._napari.widgets import RestoreWidget

    viewer = make_napari_viewer()
    img = viewer.add_image(grey_image, name="small", **GRID)
    w = _widget(RestoreWidget, viewer, tiny_params, task="upscale", history_every=10)
    assert _shown(w.factor) and not _shown(w.mask)
    w.factor.value = 2
    w.image.value = img
    _run(qtbot, w)
    res = viewer.layers["small [DIP upscaled]"]
    assert res.data.shape == (64, 64) and res.data.dtype == grey_image.dtype
    assert res.metadata["task"] == "upscale"
    np.testing.assert_allclose(res.scale, np.asarray(GRID["scale"]) / 2)
    # pixel j of the result is centred at (j + 0.5) / 2 - 0.5 input pixels: the same area
    np.testing.assert_allclose(res.translate, np.asarray(GRID["translate"]) - np.asarray(GRID["scale"]) / 4)
    # the outer edges of the first pixels coincide: the result covers the input's area
    np.testing.assert_allclose(
        np.asarray(res.translate) - np.asarray(res.scale) / 2, np.asarray(img.translate) - np.asarray(img.scale) / 2
    )
    hist = viewer.layers["small [DIP history]"]
    assert hist.data.shape[1:] == (64, 64)


def test_noise_level_field(make_napari_viewer, tiny_params, grey_image):
    """'noise level' (0 = estimate) reaches the job in the image's units; off for Poisson and inpainting."""
    viewer = make_napari_viewer()
    viewer.add_image(grey_image, name="img")
    w = _widget(DenoiseWidget, viewer, tiny_params.replace(es_noise_factor=1.0))
    assert w.field_labels()["noise_sigma"] == "noise level" and w.noise_sigma.value == 0
    assert w._prepare()[0].noise_sigma is None  # 0: estimated from the image
    w.noise_sigma.value = 25.0
    job = w._prepare()[0]
    assert job.noise_sigma == pytest.approx(25.0 / job.layout.scale)
    w.loss.value = "poisson"
    assert not w.noise_sigma.enabled
    w.loss.value = "gaussian"
    assert w.noise_sigma.enabled
    inpaint = InpaintWidget(viewer)
    assert not inpaint._has("noise_sigma")  # inpainting has no noise-level stop
