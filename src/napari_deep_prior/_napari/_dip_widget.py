"""The DIP dock widget shared by "DIP Denoise" and "DIP Inpaint".

The widget is a thin front end: it reads layers into arrays (``layers.py``), fills a frozen
:class:`~napari_deep_prior.core.params.DIPParams`, validates the job with the core's
``prepare_denoise`` / ``prepare_inpaint`` (all user errors surface there, before any heavy
work) and wraps the job's ``steps()`` generator in a napari ``thread_worker``.  Every Step
updates the progress bar, the live plot and (every few iterations) a preview layer; Cancel
calls ``worker.quit()``, which acts at the next yield, and what was computed so far is kept.

Drive it from a script::

    w = DenoiseWidget(viewer)              # or InpaintWidget
    w.image.value = viewer.layers["noisy"]
    w.iterations.value = 500
    w.seed.value = 0
    worker = w.run()                       # the napari worker, already started
    # (w.run(start=False) returns it unstarted: connect handlers, then worker.start())
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal

from . import layers as L
from ._plot import LossPlot
from ._workers import WorkerError, unwrap
from ..samples import NOISE_MODEL_KEY

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from ..core.api import DIPOutput
    from ..core.fit import Step
    from ..core.params import DIPParams

__all__ = ["DIPWidget", "iterate_steps"]

#: Metadata key marking the layers this plugin creates (value: "preview", "result", "history").
ROLE_KEY = "dip_role"
#: Aim for at least this many preview updates per run (short runs preview more often).
MIN_PREVIEWS = 10
SEED_RANDOM = -1
#: The Poisson model's camera fields and their values for plain photon counts.
CAMERA_FIELDS = ("camera_offset", "gain", "read_noise")
CAMERA_COUNTS = {"camera_offset": 0.0, "gain": 1.0, "read_noise": 0.0}


def iterate_steps(steps):
    """Worker body: re-yield the core's Step records, returning the core's DIPOutput.

    Runs in the worker thread.  The preview array is copied here (the core may hand out a
    view of a tensor it keeps updating), so the main thread always gets a stable snapshot.
    A plain generator: the napari layer wraps it in a worker, it never decorates itself.
    """
    while True:
        try:
            step = next(steps)
        except StopIteration as stop:
            return stop.value
        except RuntimeError as exc:  # torch errors; superqt would swallow them silently
            raise WorkerError(exc) from exc
        if step.preview is not None:
            step.preview = np.array(step.preview, dtype=np.float32, copy=True)
        yield step


_WARM_THREAD = None


def wait_for_warm_up(timeout: float | None = None) -> bool:
    """Wait for the background warm-up (see :func:`_warm_up_torch`); True once it is done."""
    th = _WARM_THREAD
    if th is not None:
        th.join(timeout)
        return not th.is_alive()
    return True


def _warm_up_torch() -> None:
    """Take one tiny optimiser step in a background thread, once per process.

    The first ``Adam.step`` makes torch import ``torch._dynamo`` and hundreds of modules
    (about 2 s here); imports hold the GIL for up to ~0.2 s at a time, which would freeze
    the event loop during the first run.  Doing it while the user sets up the widget keeps
    the run itself smooth.
    """
    global _WARM_THREAD
    if _WARM_THREAD is not None:
        return

    def work():
        try:
            import torch

            p = torch.zeros(1, requires_grad=True)
            opt = torch.optim.Adam([p], lr=0.1)
            (p * 2).sum().backward()
            opt.step()
        except Exception:  # noqa: BLE001 - a warm-up must never fail loudly
            pass

    import threading

    _WARM_THREAD = threading.Thread(target=work, name="napari-deep-prior-warm-up", daemon=True)
    _WARM_THREAD.start()


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class _Run:
    """Everything one run needs after it started (the widget's fields may change meanwhile)."""

    job: Any
    steps: Any
    worker: Any
    name: str
    layer: Any
    template: L.LayerTemplate
    selection: L.ImageSelection
    params: Any
    mask_name: str | None
    t0: float = field(default_factory=time.perf_counter)
    preview_layer: Any = None
    preview_dropped: bool = False
    plot_plane: tuple = (-1, -1)
    n_steps: int = 0
    last_step: Any = None
    output: Any = None
    cancelled: bool = False
    failed: bool = False
    input_removed: bool = False


class DIPWidget(Container):
    """Dock widget running a Deep Image Prior fit on an Image layer.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
    task : {"denoise", "inpaint"}

    Attributes
    ----------
    image, mask, channel_axis, scope, preset, iterations, lr, early_stop, history_every,
    seed, device, loss : magicgui widgets
        Set their ``.value`` to drive the widget from a script (``mask`` only for inpaint,
        ``loss`` only for denoise; ``seed.value = -1`` draws a random seed).
    params_override : DIPParams or None
        For scripts and tests: used instead of the preset's parameters; the widget's
        iterations, learning rate, early stop, history cadence (and loss) still apply.
    run_finished : psygnal.Signal
        Emitted with the DIPOutput (or None) once a run has ended and its layers are added.
    """

    run_finished = Signal(object)

    task = "denoise"
    result_tag = "[DIP denoised]"

    def __init__(self, napari_viewer: "napari.viewer.Viewer", task: str | None = None):
        from ..core.device import available_devices
        from ..core.params import PRESET_DESCRIPTIONS, preset_names

        if task is not None:
            self.task = task
            self.result_tag = "[DIP denoised]" if task == "denoise" else "[DIP inpainted]"
        self._viewer = napari_viewer
        self._descriptions = PRESET_DESCRIPTIONS
        self._run: _Run | None = None
        self._closed = False
        self._history_layer = None
        self._result_layer = None
        self.params_override: DIPParams | None = None
        inpaint = self.task == "inpaint"

        image = ComboBox(
            name="image", label="image", choices=self._image_choices,
            tooltip="The Image layer to restore (grey, RGB, multichannel or an nD stack). "
                    "It is never modified: results are added as new layers.",
        )
        channel_axis = ComboBox(
            name="channel_axis", label="channels", choices=self._channel_choices,
            tooltip="Where the channels are. RGB layers use their colour axis; for other layers "
                    "choose a leading axis to fit its channels jointly, or 'none' to treat every "
                    "2D plane separately.",
        )
        scope = ComboBox(
            name="scope", label="process",
            choices=[("whole image / stack", "stack"), ("current plane only", "plane")],
            tooltip="For nD stacks: fit every 2D plane in turn, or only the plane on screen.",
        )
        widgets: list = [image, channel_axis, scope]
        if inpaint:
            mask = ComboBox(
                name="mask", label="mask", choices=self._mask_choices,
                tooltip="Pixels to fill: a Labels layer (nonzero = fill) or a Shapes layer "
                        "(inside a shape = fill). A 2D mask applies to every plane of a stack.",
            )
            new_mask = PushButton(
                name="new_mask", text="New mask",
                tooltip="Add an empty Labels layer on the image's grid with the paint brush "
                        "selected: paint over the damage, then press Run.",
            )
            new_mask.changed.connect(self.new_mask_layer)
            widgets += [mask, new_mask]

        names = preset_names(self.task)
        preset = ComboBox(name="preset", label="preset", choices=list(names), value=names[0])
        preset_info = Label(name="preset_info", label=" ", value="")
        iterations = SpinBox(
            name="iterations", label="iterations", min=1, max=1_000_000, step=100,
            tooltip="Maximum number of optimisation steps (early stopping may end sooner).",
        )
        lr = FloatSpinBox(
            name="lr", label="learning rate", min=1e-5, max=1.0, step=0.0005,
            tooltip="Adam learning rate of the network fit.",
        )
        early_stop = CheckBox(
            name="early_stop", text="automatic early stop",
            tooltip="Default denoise presets: stop once the fit has reached the noise level "
                    "(Gaussian: estimated from the image; Poisson: the deviance shot noise leaves). "
                    "Every task: stop once the windowed variance of the "
                    "outputs has stopped decreasing (ES-WMV, Wang et al. 2023). Off: run all "
                    "iterations and return the last estimate.",
        )
        history_every = SpinBox(
            name="history_every", label="history every", min=0, max=100_000, step=10,
            tooltip="Save the estimate every N iterations into a history layer (0: no history). "
                    "Scrub it and press 'Use this frame' to stop early by eye.",
        )
        seed = SpinBox(
            name="seed", label="seed", min=SEED_RANDOM, max=2**31 - 2, value=SEED_RANDOM,
            tooltip="Random seed of the network input and weights: the same seed gives the same "
                    "result on the CPU. -1 draws one (it is stored in the result's metadata).",
        )
        device = ComboBox(
            name="device", label="device", choices=["auto", *available_devices()], value="auto",
            tooltip="Where to compute: auto picks a GPU when there is one.",
        )
        widgets += [preset, preset_info, iterations, lr, early_stop, history_every, seed, device]
        if not inpaint:
            loss = ComboBox(
                name="loss", label="noise model",
                choices=[("Gaussian (MSE)", "gaussian"), ("Poisson (photon counts)", "poisson")],
                tooltip="Gaussian: for photographs, scans and any image whose noise has about the "
                        "same strength everywhere (fits by mean squared error).\n"
                        "Poisson: for low-light images whose pixel values are photon counts "
                        "(fluorescence, cameras in photon-counting units): the noise grows with the "
                        "brightness, and the fit uses the Poisson likelihood and stops where its "
                        "deviance from the counts reaches what shot noise leaves. For camera values "
                        "that are not counts, set the camera offset, gain and read noise below. "
                        "Choosing it with the 'denoise' preset selects 'denoise-poisson'.",
            )
            output = ComboBox(
                name="output", label="result type",
                choices=[("auto (float rates for counts)", "auto"), ("input's dtype", "input")],
                tooltip="auto: the input's dtype, except that the Poisson model returns float32 "
                        "photon rates for integer counts (a rate is fractional; rounding it to "
                        "whole photons loses precision at low light).\n"
                        "input's dtype: always the input's dtype, rounded (the older behaviour).",
            )
            offset = FloatSpinBox(
                name="camera_offset", label="camera offset", min=-1e6, max=1e6, step=1.0, value=0.0,
                tooltip="Poisson model, camera values that are not photon counts (sCMOS/CCD in ADU): "
                        "the value of zero photons.",
            )
            gain = FloatSpinBox(
                name="gain", label="gain", min=1e-4, max=1e6, step=0.1, value=1.0,
                tooltip="Poisson model: camera units per photon (photons = (value - offset) / gain). "
                        "The result is returned in the camera's units.",
            )
            read_noise = FloatSpinBox(
                name="read_noise", label="read noise", min=0.0, max=1e4, step=0.1, value=0.0,
                tooltip="Poisson model: Gaussian read noise of the camera in photons (electrons) rms.",
            )
            widgets += [loss, offset, gain, read_noise, output]

        run_button = PushButton(name="run_button", text="Run", tooltip="Start the fit.")
        cancel_button = PushButton(
            name="cancel_button", text="Cancel", enabled=False,
            tooltip="Stop at the next step and keep what was computed so far.",
        )
        buttons = Container(name="buttons", widgets=[run_button, cancel_button],
                            layout="horizontal", labels=False, label=" ")
        buttons.margins = (0, 0, 0, 0)
        progress = ProgressBar(name="progress", label="progress", min=0, max=1000, value=0)
        status = Label(name="status", label=" ", value="Ready.")
        use_frame = PushButton(
            name="use_frame", text="Use this frame", enabled=False,
            tooltip="Manual early stopping: make the history frame on screen (iteration slider) "
                    "the result layer.",
        )
        widgets += [buttons, progress, status, use_frame]
        super().__init__(widgets=widgets, labels=True)

        self._unify_label_widths()  # magicgui aligns labels only on later inserts
        self.run_button = run_button
        self.cancel_button = cancel_button
        self.plot = LossPlot()
        layout = self.native.layout()
        layout.insertWidget(layout.count() - 1, self.plot)  # between status and use_frame

        progress.native.setFormat("%p%")
        status.native.setWordWrap(True)
        preset_info.native.setWordWrap(True)
        for lab in (status, preset_info):
            lab.native.setAlignment(_align_left())
            lab.native.setSizePolicy(_expanding(), lab.native.sizePolicy().verticalPolicy())
        run_button.changed.connect(self._on_run_clicked)
        cancel_button.changed.connect(self.cancel)
        use_frame.changed.connect(self.use_current_frame)
        preset.changed.connect(self._apply_preset)
        if not inpaint:
            loss.changed.connect(self._on_loss_changed)
        image.changed.connect(self._on_image_changed)
        channel_axis.changed.connect(lambda _v: self._update_scope())
        for i, name in enumerate(names):
            preset.native.setItemData(i, self._descriptions.get(name, ""), _tooltip_role())
        self._apply_preset(preset.value)
        if not inpaint:
            self._on_loss_changed(loss.value)
        self._on_image_changed(image.value)

        for emitter, cb in L.layer_list_callbacks(self._viewer, self):
            emitter.connect(cb)
        for layer in self._viewer.layers:
            layer.events.name.connect(self._refresh_choices)
        self.native.destroyed.connect(self._on_destroyed)
        _warm_up_torch()

    # ------------------------------------------------------------------------ choices
    def _image_choices(self, _widget=None):
        from napari.layers import Image

        return [(layer.name, layer) for layer in self._viewer.layers
                if isinstance(layer, Image) and layer.metadata.get(ROLE_KEY) != "preview"]

    def _mask_choices(self, _widget=None):
        from napari.layers import Labels, Shapes

        return [(layer.name, layer) for layer in self._viewer.layers
                if isinstance(layer, (Labels, Shapes))]

    def _channel_choices(self, _widget=None):
        try:
            layer = self.image.value
        except AttributeError:  # during construction
            layer = None
        return L.channel_axis_choices(layer)

    def _alive(self) -> bool:
        """False once the viewer was closed or this widget deleted (then touch nothing)."""
        if self._closed:
            return False
        try:
            from napari.viewer import Viewer

            viewer = getattr(self._viewer, "__wrapped__", self._viewer)  # plugin proxy
            if isinstance(viewer, Viewer) and viewer not in Viewer._instances:
                self._closed = True
        except Exception:  # noqa: BLE001 - a napari without the registry: assume open
            pass
        if self._closed and self._run is not None and self._run.worker is not None:
            self._run.worker.quit()
        return not self._closed

    def _refresh_choices(self, event=None) -> None:
        if self._closed:
            return
        try:
            self.reset_choices()
        except RuntimeError:  # Qt widgets already deleted
            self._closed = True

    def _on_layer_inserted(self, event) -> None:
        from napari.layers import Image, Labels, Shapes

        layer = event.value
        layer.events.name.connect(self._refresh_choices)
        self._refresh_choices()
        if self._closed or layer.metadata.get(ROLE_KEY) is not None:
            return
        # a layer the user just added becomes the input (or the mask)
        if isinstance(layer, Image):
            self.image.value = layer
        elif self.task == "inpaint" and isinstance(layer, (Labels, Shapes)):
            self.mask.value = layer

    def _on_layer_removed(self, event) -> None:
        layer = event.value
        run = self._run
        if run is not None:
            if run.preview_layer is not None and layer == run.preview_layer:
                run.preview_layer = None
                run.preview_dropped = True
            elif layer == run.layer and not run.input_removed:
                run.input_removed = True
                # deferred: closing the viewer removes every layer first, then the window
                _call_soon(lambda: self._warn_input_removed(run))
        if self._history_layer is not None and layer == self._history_layer:
            self._history_layer = None
        if self._result_layer is not None and layer == self._result_layer:
            self._result_layer = None
        self._refresh_choices()
        self._update_use_frame()

    def _warn_input_removed(self, run: _Run) -> None:
        if self._run is run and self._alive():
            show_warning(
                f"DIP: the input layer {run.name!r} was removed while it is being processed. "
                "The run goes on and its result will be added as a new layer; press Cancel "
                "to stop it."
            )

    def _on_image_changed(self, layer) -> None:
        if self._closed:
            return
        self.channel_axis.reset_choices()
        self._update_scope()
        model = None if layer is None else layer.metadata.get(NOISE_MODEL_KEY)
        if self.task == "denoise" and model in ("gaussian", "poisson"):
            # a layer that says what its noise is (the plugin's samples do) preselects the model
            self.loss.value = model

    def _on_loss_changed(self, loss: str) -> None:
        """Camera fields on for the Poisson model; a default preset follows the noise model."""
        from ..core.params import DENOISE_DEFAULTS

        for name in CAMERA_FIELDS:
            getattr(self, name).enabled = loss == "poisson"
        if self.preset.value in DENOISE_DEFAULTS.values():
            self.preset.value = DENOISE_DEFAULTS[loss]

    def _update_scope(self) -> None:
        layer = self.image.value
        stack = False
        if layer is not None:
            ca = self.channel_axis.value
            ndim = L.layer_array(layer).ndim
            stack = len(L.non_channel_axes(ndim, ca)) > 2
        self.scope.enabled = stack

    def _apply_preset(self, name: str) -> None:
        from ..core.params import get_preset

        p = get_preset(name, task=self.task)
        desc = self._descriptions.get(name, "")
        self.preset_info.value = desc
        self.preset.tooltip = desc
        self.iterations.value = p.iterations
        self.lr.value = p.lr
        self.early_stop.value = p.early_stop
        self.history_every.value = p.history_every
        if self.task == "denoise":
            self.loss.value = p.loss

    def _on_destroyed(self, *_args) -> None:
        """The dock widget (or the whole viewer) is gone: stop the run, touch no widget."""
        self._closed = True
        run = self._run
        if run is not None and run.worker is not None:
            run.worker.quit()
        L.disconnect_quietly(L.layer_list_callbacks(self._viewer, self))

    # ------------------------------------------------------------------------ parameters
    def build_params(self) -> "DIPParams":
        """The DIPParams for the current field values (raises ValueError/TypeError)."""
        from ..core.params import get_preset

        base = self.params_override or get_preset(self.preset.value, task=self.task)
        its = int(self.iterations.value)
        changes: dict[str, Any] = {
            "iterations": its,
            "lr": float(self.lr.value),
            "early_stop": bool(self.early_stop.value),
            "history_every": int(self.history_every.value),
        }
        if self.task == "denoise":
            changes["loss"] = self.loss.value
        ye = base.yield_every
        if base.preview_every:
            # short runs get more frequent previews (a multiple of the yield cadence)
            often = max(ye, (its // MIN_PREVIEWS) // ye * ye)
            changes["preview_every"] = min(base.preview_every, often)
        return base.replace(**changes)

    # ------------------------------------------------------------------------ masks
    def new_mask_layer(self, *_args):
        """Add an empty Labels layer on the image's grid, ready to paint, and select it."""
        layer = self.image.value
        if layer is None:
            show_error("DIP: choose an image layer first; the new mask is made on its grid.")
            return None
        shape, kw = L.new_mask_kwargs(layer, self.channel_axis.value)
        labels = self._viewer.add_labels(np.zeros(shape, dtype=np.uint8),
                                         name=f"{layer.name} mask", **kw)
        labels.selected_label = 1
        labels.brush_size = max(3, int(round(min(shape[-2:]) / 40)))
        labels.mode = "paint"
        self._viewer.layers.selection.active = labels
        self.mask.value = labels
        show_info(f"DIP: paint over the damage in {labels.name!r} (label 1), then press Run.")
        return labels

    # ------------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        return self._run is not None

    def _on_run_clicked(self, *_args) -> None:
        self.run()

    def _prepare(self):
        """Validate the fields and build the job; show_error and return None on bad input."""
        from ..core.api import prepare_denoise, prepare_inpaint

        layer = self.image.value
        if layer is None:
            show_error("DIP: there is no image layer to process; open an image first.")
            return None
        ca = self.channel_axis.value
        try:
            params = self.build_params()
            sel = L.select_image(layer, ca, plane_only=self.scope.value == "plane",
                                 world_point=self._viewer.dims.point)
            seed = None if self.seed.value == SEED_RANDOM else int(self.seed.value)
            mask_name = None
            if self.task == "inpaint":
                mask_layer = self.mask.value
                if mask_layer is None:
                    show_error("DIP: choose a mask layer (Labels or Shapes: nonzero = fill), or "
                               "press 'New mask' and paint over the damage.")
                    return None
                mask_name = mask_layer.name
                mask = L.mask_from_layer(mask_layer, layer, sel)
                job = prepare_inpaint(sel.data, mask, params=params, channel_axis=ca,
                                      device=self.device.value, seed=seed)
            else:
                out = self.output.value
                camera = {name: float(getattr(self, name).value) for name in CAMERA_FIELDS}
                if params.loss != "poisson" or camera == CAMERA_COUNTS:
                    camera = {}  # plain counts (or no Poisson model): no camera conversion
                job = prepare_denoise(sel.data, params=params, channel_axis=ca,
                                      device=self.device.value, seed=seed,
                                      output_dtype=None if out == "auto" else out, **camera)
        except (ValueError, TypeError, MemoryError) as exc:
            show_error(f"DIP {self.task} of {layer.name!r}: {exc}")
            return None
        return job, sel, params, mask_name

    def run(self, *, start: bool = True):
        """Start a fit with the current fields; return the napari worker (None if refused).

        A second call while a run is going on is ignored (the Run button is disabled too).
        With ``start=False`` the worker is returned unstarted: connect to its signals, then
        call ``worker.start()``.
        """
        from napari.qt.threading import create_worker

        if self._closed:
            return None
        if self._run is not None:
            show_info("DIP: a run is already going on; press Cancel to stop it first.")
            return None
        prepared = self._prepare()
        if prepared is None:
            return None
        job, sel, params, mask_name = prepared
        layer = self.image.value
        steps = job.steps()
        worker = create_worker(iterate_steps, steps, _start_thread=False, _ignore_errors=True)
        self._run = _Run(job=job, steps=steps, worker=worker, name=layer.name, layer=layer,
                         template=L.LayerTemplate.from_layer(layer), selection=sel,
                         params=params, mask_name=mask_name)
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(self._on_returned)
        worker.aborted.connect(self._on_aborted)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        planes = f" ({job.n_planes} planes)" if job.n_planes > 1 else ""
        self.status.value = f"Starting on {job.device}{planes}, seed {job.seed}..."
        self.plot.clear(total=params.iterations)
        if params.preview_every:
            self._add_preview_layer(self._run)
        if start:
            worker.start()
        return worker

    def cancel(self, *_args) -> None:
        """Stop the run at its next yield; what was computed so far is kept."""
        run = self._run
        if run is None:
            return
        run.cancelled = True
        run.worker.quit()
        if not self._closed:
            self.cancel_button.enabled = False
            self.status.value = "Cancelling at the next step..."

    # ------------------------------------------------------------------------ worker signals
    def _on_yielded(self, step: "Step") -> None:
        run = self._run
        if run is None or not self._alive():
            return
        run.n_steps += 1
        run.last_step = step
        frac = step.fraction
        self.progress.value = int(round(1000 * frac))
        elapsed = time.perf_counter() - run.t0
        left = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        plane = f" · plane {step.plane + 1}/{step.n_planes}" if step.n_planes > 1 else ""
        tile = getattr(step, "n_tiles", 1)
        if tile > 1:
            plane += f" · tile {step.tile + 1}/{tile}"
        cand = "" if step.es_best_iteration is None else f" · ES min @ {step.es_best_iteration}"
        more = " ≤" if run.params.early_stop else ""
        self.status.value = (f"iteration {step.iteration}/{step.iterations}{plane} · "
                             f"{_fmt_time(elapsed)} elapsed ·{more} {_fmt_time(left)} left{cand}")
        self.progress.tooltip = self.status.value
        if (step.plane, step.tile) != run.plot_plane:
            run.plot_plane = (step.plane, step.tile)
            title = plane.lstrip(" ·")
            self.plot.clear(total=step.iterations, title=title)
        self.plot.add_point(step.iteration, step.loss, step.es_variance, step.es_best_iteration)
        if step.preview is not None and not run.preview_dropped:
            self._show_preview(run, step)

    def _plane_to_layer(self, run: _Run, hwc: np.ndarray, plane: int) -> np.ndarray:
        """A normalised (H, W, C) plane -> the input's value range, dtype and axis layout."""
        lay = run.job.layout
        vals = hwc.astype(np.float64) * lay.scale + lay.lo
        dt = lay.result_dtype
        if dt.kind in "ui":
            info = np.iinfo(dt)
            vals = np.clip(np.rint(vals), info.min, info.max).astype(dt)
        else:
            vals = vals.astype(np.float32)
        if lay.alpha is not None:
            vals = np.concatenate([vals, lay.alpha[plane].astype(vals.dtype)], axis=-1)
        n_stack = len(run.selection.stack_axes)
        vals = vals.reshape((1,) * n_stack + vals.shape)
        if lay.channel_axis is None:
            return vals[..., 0]
        return np.moveaxis(vals, -1, lay.channel_axis)

    def _add_preview_layer(self, run: _Run) -> None:
        """Add the preview layer when the run starts (showing the input's first plane).

        Creating a layer is the most expensive thing napari does on the main thread (a
        tenth of a second or more without a GPU), so it happens once, at the click; during
        the run the preview only gets new data, and at the end it becomes the result.
        """
        sel = run.selection
        index = tuple(slice(0, 1) if a in sel.stack_axes else slice(None)
                      for a in range(sel.data.ndim))
        first = np.array(sel.data[index], copy=True)
        run.preview_layer = self._viewer.add_image(
            first, name=f"{run.name} [DIP preview]", metadata={ROLE_KEY: "preview"},
            **run.template.image_kwargs(sel.plane_offset(0)))

    def _show_preview(self, run: _Run, step: "Step") -> None:
        layer = run.preview_layer
        if layer is None:
            return
        data = self._plane_to_layer(run, step.preview, step.plane)
        translate = run.template.grid_kwargs(run.selection.plane_offset(step.plane))["translate"]
        layer.data = data
        if not np.allclose(layer.translate, translate):
            layer.translate = translate

    def _preview_alive(self, run: _Run):
        layer = run.preview_layer
        if layer is None or layer not in self._viewer.layers:
            run.preview_layer = None
            return None
        return layer

    def _remove_preview(self, run: _Run) -> None:
        layer = self._preview_alive(run)
        run.preview_layer = None
        if layer is not None:
            self._viewer.layers.remove(layer)

    def _on_returned(self, output: "DIPOutput") -> None:
        run = self._run
        if run is None or not self._alive():
            return
        run.output = output
        self._add_results(run, output, cancelled=False)

    def _on_aborted(self) -> None:
        run = self._run
        if run is None:
            return
        run.cancelled = True
        if not self._alive():
            return
        if run.n_steps == 0 and not run.job.fits:
            self._remove_preview(run)
            show_info(f"DIP {self.task} of {run.name!r} cancelled before the first step: "
                      "nothing to keep.")
            return
        try:
            output = run.job.result()
        except RuntimeError:  # no step was taken in the running plane
            output = None
        run.output = output
        if output is None:
            self._remove_preview(run)
            show_info(f"DIP {self.task} of {run.name!r} cancelled: nothing to keep.")
            return
        self._add_results(run, output, cancelled=True)

    def _on_errored(self, exc: BaseException) -> None:
        run = self._run
        if run is None:
            return
        run.failed = True
        if not self._alive():
            return
        self._remove_preview(run)
        exc = unwrap(exc)
        self.status.value = f"Failed: {exc}"
        show_error(f"DIP {self.task}: {exc}")

    def _on_finished(self) -> None:
        run = self._run
        self._run = None
        if run is None:
            return
        # release the network (and GPU memory) of a cancelled run: closing the generator
        # runs the core's cleanup; a finished run has already released it
        try:
            run.steps.close()
        except Exception:  # pragma: no cover - cleanup must never raise here
            pass
        output = run.output
        run.job = run.steps = None
        if not self._alive():
            return
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        if run.failed:
            self.progress.value = 0
        elif not run.cancelled:
            self.progress.value = 1000
        self._update_use_frame()
        self.run_finished.emit(output)

    # ------------------------------------------------------------------------ results
    def _add_results(self, run: _Run, output: "DIPOutput", *, cancelled: bool) -> None:
        viewer = self._viewer
        sel = run.selection
        stop = [int(s) for s in output.stop_iterations]
        meta = {
            ROLE_KEY: "result",
            "task": self.task,
            "source_layer": run.name,
            "mask_layer": run.mask_name,
            "stop_iterations": stop,
            "iterations_run": [int(i) for i in output.iterations_run],
            "planes_done": int(output.planes_done),
            "seed": int(output.seed),
            "cancelled": cancelled,
            "params": asdict(run.params),
            "offset": tuple(int(o) for o in sel.offset),
        }
        name = f"{run.name} {self.result_tag}"
        if sel.plane_only:
            name += " (plane)"
        kw = run.template.image_kwargs(sel.offset)
        result = self._preview_alive(run)
        run.preview_layer = None
        if result is not None:
            # the preview layer becomes the result (no new layer to build)
            result.metadata.clear()
            result.metadata.update(meta)
            result.data = output.image
            result.translate = kw["translate"]
            result.contrast_limits = kw["contrast_limits"]
            result.name = name  # napari makes it unique if needed
        else:
            result = viewer.add_image(output.image, name=name, metadata=meta, **kw)
        hist = None
        if output.history is not None and len(output.history_iterations):
            hmeta = dict(meta)
            hmeta.update({
                ROLE_KEY: "history",
                "iterations": np.asarray(output.history_iterations).copy(),
                "losses": np.asarray(output.history_losses).copy(),
                "result_layer": result.name,
            })
            hist = viewer.add_image(output.history, name=f"{run.name} [DIP history]",
                                    metadata=hmeta, visible=False,
                                    **run.template.history_kwargs(sel.offset))
            self._show_frame(hist, stop)
        viewer.layers.selection.active = result
        self._history_layer = hist
        self._result_layer = result
        # the plot shows the whole run of the last plane and its stop
        fits = [f for f in output.fits if f is not None]
        if fits:
            last = fits[-1]
            self.plot.clear(total=max(int(last.iterations_run), 1),
                            title=f"plane {len(fits)}/{len(output.fits)}" if len(output.fits) > 1 else "")
            every = max(1, len(last.losses) // 400)
            for k in range(0, len(last.losses), every):
                var = last.es_variances[k] if k < len(last.es_variances) else None
                self.plot.add_point(k + 1, float(last.losses[k]),
                                    None if var is None or not np.isfinite(var) else float(var))
            if last.stopped_early:
                label = "noise-level stop" if last.stop_reason == "noise level" else "ES stop"
            elif run.params.early_stop and int(last.iteration) != int(last.iterations_run):
                label = "ES min"
            else:
                label = "returned"
            self.plot.set_stop(int(last.iteration), label)
        elapsed = time.perf_counter() - run.t0
        runs = output.iterations_run
        how = "cancelled" if cancelled else "done"
        stops = stop[0] if len(stop) == 1 else f"{min(stop)}-{max(stop)}"
        msg = (f"DIP {self.task} of {run.name!r} {how} in {_fmt_time(elapsed)}: result from "
               f"iteration {stops} ({max(runs) if runs else 0} run"
               + (f", {output.planes_done}/{len(output.fits)} planes" if len(output.fits) > 1 else "")
               + f"), seed {output.seed}.")
        if output.tiles:
            msg += f" Processed in {len(output.tiles)} tiles per plane."
        for note in output.notes:
            msg += f" {note}"
        if run.input_removed:
            msg += " (The input layer had been removed.)"
        self.status.value = msg
        show_info(msg)

    def _show_frame(self, hist, stop: list[int]) -> None:
        """Put the history's iteration slider on the frame nearest the returned estimate."""
        its = np.asarray(hist.metadata["iterations"])
        target = min(stop) if stop else int(its[-1])
        frame = int(np.argmin(np.abs(its - target)))
        axis = self._viewer.dims.ndim - hist.ndim
        if axis >= 0:
            step = list(self._viewer.dims.current_step)
            step[axis] = frame
            self._viewer.dims.current_step = tuple(step)

    def _current_history(self):
        layer = self._history_layer
        if layer is not None and layer in self._viewer.layers:
            return layer
        active = self._viewer.layers.selection.active
        if active is not None and active.metadata.get(ROLE_KEY) == "history":
            return active
        return None

    def _update_use_frame(self) -> None:
        if not self._closed:
            self.use_frame.enabled = self._current_history() is not None

    def use_current_frame(self, *_args):
        """Make the history frame on screen the result layer (manual early stopping)."""
        hist = self._current_history()
        if hist is None:
            show_warning("DIP: no history layer to take a frame from; run with 'history every' > 0.")
            return None
        coords = hist.world_to_data(self._viewer.dims.point)
        n = hist.data.shape[0]
        frame = int(np.clip(np.round(coords[0]), 0, n - 1))
        its = np.asarray(hist.metadata.get("iterations", np.arange(n)))
        it = int(its[frame]) if frame < len(its) else frame
        data = np.array(hist.data[frame], copy=True)
        target_name = hist.metadata.get("result_layer")
        result = None
        if target_name is not None and target_name in self._viewer.layers:
            cand = self._viewer.layers[target_name]
            if cand.metadata.get(ROLE_KEY) == "result" and cand.data.shape == data.shape:
                result = cand
        if result is None:
            meta = {k: v for k, v in hist.metadata.items()
                    if k not in ("iterations", "losses", "result_layer")}
            meta[ROLE_KEY] = "result"
            kw = {"scale": tuple(hist.scale)[1:], "translate": tuple(hist.translate)[1:],
                  "units": tuple(str(u) for u in hist.units)[1:],
                  "axis_labels": tuple(hist.axis_labels)[1:],
                  "rgb": hist.rgb, "contrast_limits": hist.contrast_limits}
            if not hist.rgb:
                kw["colormap"] = hist.colormap
            source = meta.get("source_layer", hist.name)
            tag = self.result_tag if meta.get("task", self.task) == self.task else "[DIP]"
            result = self._viewer.add_image(data, name=f"{source} {tag}", metadata=meta, **kw)
            hist.metadata["result_layer"] = result.name
        else:
            result.data = data
        result.metadata["frame_iteration"] = it
        result.metadata["stop_iterations"] = [it]
        result.visible = True
        self._result_layer = result
        self.plot.set_stop(it, "frame in use")
        show_info(f"DIP: {result.name!r} now holds the estimate at iteration {it}.")
        return result


def _call_soon(func) -> None:
    from qtpy.QtCore import QTimer

    QTimer.singleShot(0, func)


def _expanding():
    from qtpy.QtWidgets import QSizePolicy

    return QSizePolicy.Policy.Expanding


def _align_left():
    from qtpy.QtCore import Qt

    return Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter


def _tooltip_role():
    from qtpy.QtCore import Qt

    return Qt.ItemDataRole.ToolTipRole
