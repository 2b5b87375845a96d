"""Screenshots of the DIP Denoise and DIP Inpaint widgets at work, for the documentation.

Opens napari with each widget docked, runs it on a sample image with the widget's shipped
defaults (its default preset, run to its own stop; ``--iterations N`` caps the runs for a quick
look) and saves whole-window screenshots:

    denoise_running.png   the denoise widget mid-run: live preview, progress, loss plot
    denoise_result.png    input and result side by side (grid mode), history layer listed
    inpaint_result.png    the damaged image, its mask and the inpainted result
    inpaint_new_mask.png  the inpaint widget after "New mask": an empty Labels layer, brush on
    denoise_poisson.png   the low-light (Poisson) sample and its result side by side, with the
                          widget's defaults for it (Poisson model preselected, run to its stop)
    upscale_result.png    DIP Restore on the "upscale" task: a small crop, its x4 result and the
                          same crop enlarged by bicubic interpolation, side by side

Usage (a display is needed; on a headless Linux machine use Xvfb)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py [OUT_DIR]

OUT_DIR defaults to docs/images/.  PNGs are palette-quantised to stay small.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

WINDOW_SIZE = (1400, 860)
CROP = 128
#: Pause before a result screenshot (the notification pop-up is hidden explicitly).
NOTIFICATION_SECONDS = 1.0


def _process(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def _save(viewer, path: Path, app, settle: float = 0.5) -> None:
    from PIL import Image

    _process(app, settle)
    _hide_toasts(viewer)
    _process(app, 0.2)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    img = Image.fromarray(np.asarray(shot)[..., :3])
    img = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    img.save(path, optimize=True)
    print(f"saved {path} ({path.stat().st_size // 1024} KB)", flush=True)


def _hide_toasts(viewer) -> None:
    """Hide napari's notification pop-ups so they do not cover the images."""
    try:
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.hide()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


def _wait_for(app, worker, timeout: float, on_step=None) -> None:
    done = []
    worker.finished.connect(lambda: done.append(True))
    if on_step is not None:
        worker.yielded.connect(on_step)
    worker.start()
    t0 = time.perf_counter()
    while not done:
        if time.perf_counter() - t0 > timeout:
            worker.quit()
            timeout = float("inf")
        app.processEvents()
        time.sleep(0.005)
    _process(app, 0.3)


def _new_viewer(title: str):
    import napari

    viewer = napari.Viewer(title=title, show=True)
    viewer.window._qt_window.resize(*WINDOW_SIZE)  # a script may use the private window
    return viewer


def _cap(w, iterations: int | None) -> None:
    """Cap a run's iterations for a quick look (None: the shipped preset's own)."""
    if iterations:
        w.iterations.value = iterations
        w.history_every.value = max(10, iterations // 10)


def denoise_shots(out: Path, app, iterations: int | None, timeout: float) -> None:
    from napari_deep_prior._napari.widgets import DenoiseWidget
    from napari_deep_prior.samples import noisy_grey

    viewer = _new_viewer("DIP Denoise")
    data, kwargs = noisy_grey()[0]
    y0, x0 = 40, 64
    noisy = viewer.add_image(data[y0 : y0 + CROP, x0 : x0 + CROP], **kwargs)
    w = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(w, name="DIP Denoise", area="right")
    w.image.value = noisy
    _cap(w, iterations)
    w.seed.value = 0
    _process(app, 1.0)
    viewer.reset_view()
    worker = w.run(start=False)
    shot_at = min(300, (w.iterations.value * 6) // 10)  # mid-run for the noise-level stop (~500 steps)
    taken = []

    def on_step(step):
        if not taken and step.iteration >= shot_at:
            taken.append(step.iteration)
            _save(viewer, out / "denoise_running.png", app)

    _wait_for(app, worker, timeout, on_step)
    viewer.canvas.grid.enabled = True
    viewer.canvas.grid.stride = 1
    viewer.reset_view()
    _save(viewer, out / "denoise_result.png", app, settle=NOTIFICATION_SECONDS)
    viewer.close()


def inpaint_shots(out: Path, app, iterations: int | None, timeout: float) -> None:
    from napari_deep_prior._napari.widgets import InpaintWidget
    from napari_deep_prior.samples import damaged_with_mask

    viewer = _new_viewer("DIP Inpaint")
    (img, ikw), (mask, mkw, _kind) = damaged_with_mask()
    y0, x0 = 60, 70
    damaged = viewer.add_image(img[y0 : y0 + CROP, x0 : x0 + CROP], **ikw)
    holes = viewer.add_labels(mask[y0 : y0 + CROP, x0 : x0 + CROP], **mkw)
    w = InpaintWidget(viewer)
    viewer.window.add_dock_widget(w, name="DIP Inpaint", area="right")
    w.image.value = damaged
    w.mask.value = holes
    _cap(w, iterations)
    w.seed.value = 0
    _process(app, 1.0)
    worker = w.run(start=False)
    _wait_for(app, worker, timeout)
    holes.visible = False
    viewer.layers["chelsea (damaged)"].visible = True
    viewer.canvas.grid.enabled = True
    viewer.canvas.grid.stride = 1
    viewer.reset_view()
    _save(viewer, out / "inpaint_result.png", app, settle=NOTIFICATION_SECONDS)
    # "New mask": a fresh Labels layer on the image's grid, paint brush selected
    viewer.canvas.grid.enabled = False
    for layer in list(viewer.layers):
        if layer.name != "chelsea (damaged)":
            layer.visible = False
    w.image.value = damaged
    lab = w.new_mask_layer()
    yy, xx = np.mgrid[0:CROP, 0:CROP]
    lab.data[((yy - 50) ** 2 + (xx - 80) ** 2) < 60] = 1  # a painted stroke
    lab.data[70:74, 20:90] = 1
    lab.refresh()
    viewer.reset_view()
    _save(viewer, out / "inpaint_new_mask.png", app)
    viewer.close()


def poisson_shots(out: Path, app, timeout: float) -> None:
    """The Poisson sample with the shipped defaults, run to their own stop (whole 256 x 256)."""
    from napari_deep_prior._napari.widgets import DenoiseWidget

    viewer = _new_viewer("DIP Denoise (Poisson)")
    viewer.open_sample("napari-deep-prior", "fluorescence-poisson")
    counts = viewer.layers[0]
    w = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(w, name="DIP Denoise", area="right")
    w.image.value = counts  # preselects the Poisson model and its preset
    w.seed.value = 0
    print(
        f"poisson: model {w.loss.value!r}, preset {w.preset.value!r}, up to {w.iterations.value} iterations", flush=True
    )
    _process(app, 1.0)
    worker = w.run(start=False)
    outputs = []
    w.run_finished.connect(outputs.append)
    _wait_for(app, worker, timeout)
    _process(app, 0.5)
    if outputs and outputs[0] is not None:
        fit = outputs[0].fits[0]
        print(
            f"poisson: stopped at {outputs[0].stop_iterations[0]} ({fit.stop_reason}), "
            f"deviance {fit.deviance} vs {fit.expected_deviance}",
            flush=True,
        )
    for layer in viewer.layers:
        layer.visible = layer.metadata.get("dip_role") != "history"
    viewer.canvas.grid.enabled = True
    viewer.canvas.grid.stride = 1
    viewer.reset_view()
    _save(viewer, out / "denoise_poisson.png", app, settle=NOTIFICATION_SECONDS)
    viewer.close()


def upscale_shots(out: Path, app, iterations: int | None, timeout: float) -> None:
    """DIP Restore, task "upscale" with its defaults (x4), on a 64 x 64 crop of the astronaut."""
    from skimage.transform import resize

    from napari_deep_prior._napari.widgets import RestoreWidget
    from napari_deep_prior.samples import astronaut_pair

    viewer = _new_viewer("DIP Restore (upscale)")
    clean, _noisy = astronaut_pair(64, 0.0, 0, centre=(110, 230))
    small = viewer.add_image(clean, name="astronaut 64 px", rgb=True)
    w = RestoreWidget(viewer)
    viewer.window.add_dock_widget(w, name="DIP Restore", area="right")
    w.task.value = "upscale"
    w.image.value = small
    _cap(w, iterations)
    w.seed.value = 0
    print(f"upscale: x{w.factor.value}, preset {w.preset.value!r}, up to {w.iterations.value} iterations", flush=True)
    _process(app, 1.0)
    worker = w.run(start=False)
    _wait_for(app, worker, timeout)
    f = w.factor.value
    bicubic = resize(clean / 255.0, (64 * f, 64 * f, 3), order=3, mode="edge")
    viewer.add_image(
        (np.clip(bicubic, 0, 1) * 255).round().astype(np.uint8),
        name="bicubic (for comparison)",
        rgb=True,
        scale=(1 / f, 1 / f),
        translate=(-(f - 1) / (2 * f),) * 2,
    )
    w.image.value = small  # the added layer became the input; show the one that was processed
    for layer in viewer.layers:
        layer.visible = layer.metadata.get("dip_role") != "history"
    viewer.canvas.grid.enabled = True
    viewer.canvas.grid.stride = 1
    viewer.reset_view()
    _save(viewer, out / "upscale_result.png", app, settle=NOTIFICATION_SECONDS)
    viewer.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="docs/images", help="output folder")
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="cap the iterations of the denoise, inpaint and upscale runs (default: the presets' own)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="cancel a run after this many seconds (its partial result is kept)"
    )
    parser.add_argument("--only", choices=["denoise", "inpaint", "poisson", "upscale"], help="one set only")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from napari.qt import get_qapp

    from napari_deep_prior._napari.restore import wait_for_warm_up

    t0 = time.perf_counter()
    app = get_qapp()
    if args.only in (None, "denoise"):
        denoise_shots(out, app, args.iterations, args.timeout)
    wait_for_warm_up(60)
    if args.only in (None, "inpaint"):
        inpaint_shots(out, app, args.iterations, args.timeout)
    if args.only in (None, "poisson"):
        wait_for_warm_up(60)
        poisson_shots(out, app, max(args.timeout, 900.0))
    if args.only in (None, "upscale"):
        wait_for_warm_up(60)
        upscale_shots(out, app, args.iterations, max(args.timeout, 1800.0))
    print(f"done in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
