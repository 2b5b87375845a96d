"""The DIP dock widget: "DIP Restore" (every registered task), "DIP Denoise", "DIP Inpaint".

The widget is a thin front end: it reads layers into arrays (``layers.py``), fills a frozen
:class:`~napari_deep_prior.restore.presets.DIPParams`, builds the task's degradation from its
fields (:mod:`.fields`: one widget per :class:`~napari_deep_prior.restore.degradations.Field`),
validates the job with :func:`~napari_deep_prior.restore.api.prepare` (all user errors surface
there, before any heavy work) and wraps the job's ``steps()`` generator in a napari
``thread_worker``.  A layer that is not in memory (dask, zarr, multiscale), or a run with a
*result store*, becomes a :class:`~napari_deep_prior.restore.stream.StackJob` instead: the
worker reads the selection one plane at a time and writes each result plane into a zarr
store (:mod:`.stores`) that the result layer shows lazily; nothing of such a layer is read on
the GUI thread.  Every Step
updates the progress bar, the live plot and (every few iterations) a preview layer; Cancel
calls ``worker.quit()``, which acts at the next yield, and what was computed so far is kept.

Drive it from a script::

    w = DenoiseWidget(viewer)              # or InpaintWidget, or DIPWidget(viewer) + w.task.value
    w.image.value = viewer.layers["noisy"]
    w.iterations.value = 500
    w.seed.value = 0
    worker = w.run()                       # the napari worker, already started
    # (w.run(start=False) returns it unstarted: connect handlers, then worker.start())
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from psygnal import Signal

from ...arrays import denormalise, format_duration
from ...errors import reword
from ...samples import NOISE_MODEL_KEY
from .. import layers as L
from .._plot import LossPlot
from .._workers import WorkerError, unwrap
from ..base import ROLE_KEY, LayerListFollower, align_left, expanding, field_labels
from . import _notify
from .fields import CAMERA_COUNTS, CAMERA_FIELDS, NOISE_LEVEL_FIELD, field_names, field_widgets, noise_widgets
from .results import ResultsMixin
from .stores import ResultStore, release_unused

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from ...restore.fit import Step
    from ...restore.job import DIPOutput
    from ...restore.presets import DIPParams

__all__ = ["DIPWidget", "iterate_steps"]

#: Widget fields named otherwise than the API parameter they fill (widget name -> API name).
FIELD_ALIASES = {"output": "output_dtype"}
#: Aim for at least this many preview updates per run (short runs preview more often).
MIN_PREVIEWS = 10
SEED_RANDOM = -1


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
        if getattr(step, "preview", None) is not None:  # a StackJob's Scan records have none
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


@dataclass
class _Run:
    """Everything one run needs after it started (the widget's fields may change meanwhile)."""

    job: Any
    steps: Any
    worker: Any
    name: str
    task: str
    layer: Any
    template: L.LayerTemplate
    selection: L.ImageSelection
    params: Any
    mask_name: str | None
    store: ResultStore | None = None
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


class DIPWidget(LayerListFollower, ResultsMixin, Container):
    """Dock widget running a Deep Image Prior restoration on an Image layer.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
    task : str, optional
        A task of :data:`~napari_deep_prior.restore.degradations.DEGRADATIONS` ("denoise",
        "inpaint", "upscale", ...): the widget is fixed to it.  None (default): the ``task``
        field offers every registered task.

    Attributes
    ----------
    task : magicgui ComboBox
        The task (hidden when fixed); ``degradation`` is its class.
    image, channel_axis, scope, preset, iterations, lr, early_stop, history_every, seed, ensemble, device : widgets
        Set their ``.value`` to drive the widget from a script (``seed.value = -1`` draws a
        random seed).
    first_plane, last_plane, region, warm_start, tile_size, result_store : widgets
        The plane range on the stack's first axis (``last_plane`` -1: to the end), a Shapes
        layer whose selected (else last) shape's bounding rectangle is processed (None: whole
        planes), warm start, the tile side (0: automatic) and a new
        ``*.zarr`` folder to write the result to (empty: in memory, or a temporary store for
        a lazy layer).  The task's own fields (``mask`` and ``new_mask`` for inpainting,
        ``factor`` for up-scaling, the noise-model group ``loss``, ``camera_offset``, ``gain``,
        ``read_noise``, ``output`` for denoising) are attributes too, shown for their task only.
    params_override : DIPParams or None
        For scripts and tests: used instead of the preset's parameters; the widget's
        iterations, learning rate, early stop, history cadence, ensemble (and loss) still apply.
    run_finished : psygnal.Signal
        Emitted with the DIPOutput (or None) once a run has ended and its layers are added.
    """

    run_finished = Signal(object)

    #: The task a subclass is fixed to (None: the task field offers every registered task).
    fixed_task: str | None = None

    def __init__(self, napari_viewer: napari.viewer.Viewer, task: str | None = None):
        from ...device import available_devices
        from ...restore.degradations import DEGRADATIONS, get_degradation
        from ...restore.presets import ENSEMBLE_MAX, PRESET_DESCRIPTIONS

        task = task if task is not None else self.fixed_task
        first = get_degradation(task) if task is not None else next(iter(DEGRADATIONS.values()))
        self._viewer = napari_viewer
        self._descriptions = PRESET_DESCRIPTIONS
        self._run: _Run | None = None
        self._closed = False
        self._history_layer = None
        self._result_layer = None
        self._temp_stores: list[str] = []
        self.params_override: DIPParams | None = None
        degradations = list(DEGRADATIONS.values()) if task is None else [first]

        task_box = ComboBox(
            name="task",
            label="task",
            choices=[(d.title.removeprefix("DIP "), d.name) for d in degradations],
            value=first.name,
            visible=task is None,
            tooltip="\n".join(f"{d.title.removeprefix('DIP ')}: {d.summary}." for d in degradations),
        )
        image = ComboBox(
            name="image",
            label="image",
            choices=self._image_choices,
            tooltip="The Image layer to restore (grey, RGB, multichannel or an nD stack). "
            "It is never modified: results are added as new layers.",
        )
        channel_axis = ComboBox(
            name="channel_axis",
            label="channels",
            choices=self._channel_choices,
            tooltip="Where the channels are. RGB layers use their colour axis; for other layers "
            "choose a leading axis to fit its channels jointly, or 'none' to treat every "
            "2D plane separately.",
        )
        scope = ComboBox(
            name="scope",
            label="process",
            choices=[("whole image / stack", "stack"), ("current plane only", "plane")],
            tooltip="For nD stacks: fit every 2D plane in turn, or only the plane on screen.",
        )
        first_plane = SpinBox(
            name="first_plane",
            label="first plane",
            min=0,
            max=10**9,
            value=0,
            tooltip="Whole stack: the first plane to process, on the stack's first axis (0 = the first).",
        )
        last_plane = SpinBox(
            name="last_plane",
            label="last plane",
            min=-1,
            max=10**9,
            value=-1,
            tooltip="Whole stack: the last plane to process, included (-1 = to the end of the stack).",
        )
        region = ComboBox(
            name="region",
            label="region",
            choices=self._region_choices,
            tooltip="Try on a crop first: a Shapes layer whose selected (else last) shape's bounding "
            "rectangle is the part of every plane to process; the result is placed over it.",
        )
        widgets: list = [task_box, image, channel_axis, scope, first_plane, last_plane, region]
        widgets += field_widgets(degradations, self._mask_choices, self.new_mask_layer)

        self._task_name = first.name
        # a callable, so that reset_choices() (on every layer change) keeps the current task's presets
        preset = ComboBox(name="preset", label="preset", choices=self._preset_choices, value=first.presets[0])
        preset_info = Label(name="preset_info", label=" ", value="")
        iterations = SpinBox(
            name="iterations",
            label="iterations",
            min=1,
            max=1_000_000,
            step=100,
            tooltip="Maximum number of optimisation steps (early stopping may end sooner).",
        )
        lr = FloatSpinBox(
            name="lr",
            label="learning rate",
            min=1e-5,
            max=1.0,
            step=0.0005,
            tooltip="Adam learning rate of the network fit.",
        )
        early_stop = CheckBox(
            name="early_stop",
            text="automatic early stop",
            tooltip="Default denoise presets: stop once the fit has reached the noise level "
            "(Gaussian: the noise level field, or estimated from the image; Poisson: the deviance shot "
            "noise leaves). Default inpaint preset: stop once the fill of the holes has settled. "
            "Every task: stop once the windowed variance of the "
            "outputs has stopped decreasing (ES-WMV, Wang et al. 2023). Off: run all "
            "iterations and return the last estimate.",
        )
        history_every = SpinBox(
            name="history_every",
            label="history every",
            min=0,
            max=100_000,
            step=10,
            tooltip="Save the estimate every N iterations into a history layer (0: no history). "
            "Scrub it and press 'Use this frame' to stop early by eye.",
        )
        seed = SpinBox(
            name="seed",
            label="seed",
            min=SEED_RANDOM,
            max=2**31 - 2,
            value=SEED_RANDOM,
            tooltip="Random seed of the network input and weights: the same seed gives the same "
            "result on the CPU. -1 draws one (it is stored in the result's metadata).",
        )
        ensemble = SpinBox(
            name="ensemble",
            label="ensemble (seeds)",
            min=1,
            max=ENSEMBLE_MAX,
            value=1,
            tooltip="Average K independently seeded fits (1: one fit); 2 seeds gained 0.5 dB, 4 "
            "seeds 0.8 dB on Set9 crops. About K times the memory; on a CPU about K times the time "
            "(128 px: 2.0x for 2, 3.9x for 4), the members one after the other in each step; on a "
            "GPU one batched network, side by side (512 px on an H200: over 2x the time for 2).",
        )
        device = ComboBox(
            name="device",
            label="device",
            choices=["auto", *available_devices()],
            value="auto",
            tooltip="Where to compute: auto picks a GPU when there is one.",
        )
        warm_start = CheckBox(
            name="warm_start",
            text="warm start",
            value=False,
            tooltip="Stacks in memory: start every plane from the first plane's fitted weights (faster "
            "to converge on similar planes). Not available for layers read plane by plane (dask, zarr, "
            "multiscale) or written to a result store.",
        )
        tile_size = SpinBox(
            name="tile_size",
            label="tile size",
            min=0,
            max=65536,
            step=64,
            value=0,
            tooltip="Fit each plane in overlapping square tiles of this side, blended without seams. "
            "auto (0): tiles when the whole plane does not fit in memory or, on a CPU, when the "
            "preset's network restores it better in tiles (denoise: planes from 256 px a side, in "
            "tiles of 160 px, up to 224 where those would overlap too much; inpainting the same where "
            "thin or scattered holes are spread over the plane); for inpainting, only the "
            "neighbourhoods of the holes when they are small. A size at least the plane's fits it whole.",
        )
        result_store = FileEdit(
            name="result_store",
            label="result store",
            mode="w",
            filter="*.zarr",
            tooltip="Optional: a new folder ending in .zarr where the result (and history) are written "
            "plane by plane; the result layer then reads from it. Empty: layers in memory stay in "
            "memory, and layers that are not (dask, zarr, multiscale) are written to a temporary store "
            "deleted when their result layer is removed or napari quits.",
        )
        widgets += [preset, preset_info, iterations, lr, early_stop, history_every, seed, ensemble, device]
        widgets += [warm_start, tile_size, result_store]
        widgets += noise_widgets(degradations)

        run_button = PushButton(name="run_button", text="Run", tooltip="Start the fit.")
        cancel_button = PushButton(
            name="cancel_button",
            text="Cancel",
            enabled=False,
            tooltip="Stop at the next step and keep what was computed so far.",
        )
        buttons = Container(
            name="buttons", widgets=[run_button, cancel_button], layout="horizontal", labels=False, label=" "
        )
        buttons.margins = (0, 0, 0, 0)
        progress = ProgressBar(name="progress", label="progress", min=0, max=1000, value=0)
        status = Label(name="status", label=" ", value="Ready.")
        use_frame = PushButton(
            name="use_frame",
            text="Use this frame",
            enabled=False,
            tooltip="Manual early stopping: make the history frame on screen (iteration slider) the result layer.",
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
        tile_size.native.setSpecialValueText("auto")
        result_store.line_edit.native.setPlaceholderText("none: in memory, or a temporary store")
        status.native.setWordWrap(True)
        preset_info.native.setWordWrap(True)
        for lab in (status, preset_info):
            lab.native.setAlignment(align_left())
            lab.native.setSizePolicy(expanding(), lab.native.sizePolicy().verticalPolicy())
        run_button.changed.connect(self._on_run_clicked)
        cancel_button.changed.connect(self.cancel)
        use_frame.changed.connect(self.use_current_frame)
        preset.changed.connect(self._apply_preset)
        if self._has("loss"):
            self.loss.changed.connect(self._on_loss_changed)
        task_box.changed.connect(self._on_task_changed)
        image.changed.connect(self._on_image_changed)
        channel_axis.changed.connect(lambda _v: self._update_scope())
        scope.changed.connect(lambda _v: self._update_scope())
        self._on_task_changed(first.name)
        self._on_image_changed(image.value)
        self._follow_layers()
        _warm_up_torch()

    # ------------------------------------------------------------------------ choices
    def _image_choices(self, _widget=None):
        from napari.layers import Image

        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Image) and layer.metadata.get(ROLE_KEY) != "preview"
        ]

    def _preset_choices(self, _widget=None):
        from ...restore.degradations import get_degradation

        return list(get_degradation(self._task_name).presets)

    def _mask_choices(self, _widget=None):
        from napari.layers import Labels, Shapes

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, (Labels, Shapes))]

    def _region_choices(self, _widget=None):
        from napari.layers import Shapes

        shapes = [(f"rectangle in {layer.name!r}", layer) for layer in self._viewer.layers if isinstance(layer, Shapes)]
        return [("whole plane", None), *shapes]

    def _channel_choices(self, _widget=None):
        try:
            layer = self.image.value
        except AttributeError:  # during construction
            layer = None
        return L.channel_axis_choices(layer)

    # ------------------------------------------------------------------------ the layer list
    def _layer_added(self, layer) -> None:
        """A layer the user just added becomes the input (or the mask of a task that has one)."""
        from napari.layers import Image, Labels, Shapes

        if layer.metadata.get(ROLE_KEY) is not None:
            return
        if isinstance(layer, Image):
            self.image.value = layer
        elif isinstance(layer, (Labels, Shapes)):
            for f in self.degradation.fields:
                if f.kind == "mask":
                    getattr(self, f.name).value = layer

    def _layer_gone(self, layer) -> None:
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
        _call_soon(self._update_use_frame)
        if self._temp_stores:
            _call_soon(self._release_stores)

    def _release_stores(self) -> None:
        """Delete the temporary stores no layer shows any more (the running run's is kept)."""
        run = self._run
        busy = run.store.key if run is not None and run.store is not None else None
        keys = [k for k in self._temp_stores if k != busy]
        for key in release_unused(self._viewer, keys):
            self._temp_stores.remove(key)

    def _shutdown(self) -> None:
        """The viewer or the widget is gone: stop the run (its worker quits at the next step)."""
        run = self._run
        if run is not None and run.worker is not None:
            run.worker.quit()

    def _warn_input_removed(self, run: _Run) -> None:
        if self._run is run and self._alive():
            _notify.show_warning(
                f"DIP: the input layer {run.name!r} was removed while it is being processed. "
                "The run goes on and its result will be added as a new layer; press Cancel "
                "to stop it."
            )

    @property
    def degradation(self):
        """The degradation class of the current task (:mod:`napari_deep_prior.restore.degradations`)."""
        from ...restore.degradations import get_degradation

        return get_degradation(self.task.value)

    @property
    def _noise_models(self) -> tuple[str, ...]:
        return self.degradation.noise_models if self._has("loss") else ("gaussian",)

    def _has(self, name: str) -> bool:
        """Whether the widget has a field called ``name`` (task fields exist only where offered)."""
        return any(w.name == name for w in self)

    def _on_task_changed(self, task: str) -> None:
        """Show the task's own fields, offer its presets and select its default preset."""
        deg = self.degradation
        shown = field_names(deg)
        for name in self._task_field_names():
            getattr(self, name).visible = name in shown
        self._task_name = deg.name
        names = list(deg.presets)
        self.preset.choices = []  # magicgui keeps shared items in place: start afresh for the order
        self.preset.reset_choices()  # the callable: this task's presets, in order
        self.preset.value = names[0]
        for i, name in enumerate(names):
            self.preset.native.setItemData(i, self._descriptions.get(name, ""), _tooltip_role())
        self._apply_preset(names[0])
        if len(self._noise_models) > 1:
            self._on_loss_changed(self.loss.value)

    def _task_field_names(self) -> list[str]:
        from ...restore.degradations import DEGRADATIONS

        names: set[str] = set()
        for deg in DEGRADATIONS.values():
            names |= field_names(deg)
        return sorted(n for n in names if self._has(n))

    def _on_image_changed(self, layer) -> None:
        if self._closed:
            return
        self.channel_axis.reset_choices()
        self._update_scope()
        model = None if layer is None else layer.metadata.get(NOISE_MODEL_KEY)
        if len(self._noise_models) > 1 and model in self._noise_models:
            # a layer that says what its noise is (the plugin's samples do) preselects the model
            self.loss.value = model

    def _on_loss_changed(self, loss: str) -> None:
        """Camera fields on for the Poisson model; a default preset follows the noise model."""
        from ...restore.presets import DENOISE_DEFAULTS

        for name in CAMERA_FIELDS:
            getattr(self, name).enabled = loss == "poisson"
        if self._has(NOISE_LEVEL_FIELD):
            getattr(self, NOISE_LEVEL_FIELD).enabled = loss != "poisson"
        if self.preset.value in DENOISE_DEFAULTS.values() and loss in DENOISE_DEFAULTS:
            self.preset.value = DENOISE_DEFAULTS[loss]

    def _update_scope(self) -> None:
        layer = self.image.value
        stack = False
        if layer is not None:
            ca = self.channel_axis.value
            ndim = L.layer_array(layer).ndim
            stack = len(L.non_channel_axes(ndim, ca)) > 2
        self.scope.enabled = stack
        ranged = stack and self.scope.value == "stack"
        self.first_plane.enabled = ranged
        self.last_plane.enabled = ranged

    def _apply_preset(self, name: str) -> None:
        from ...restore.presets import get_preset

        if not name:
            return
        p = get_preset(name, task=self.task.value)
        desc = self._descriptions.get(name, "")
        self.preset_info.value = desc
        self.preset.tooltip = desc
        self.iterations.value = p.iterations
        self.lr.value = p.lr
        self.early_stop.value = p.early_stop
        self.history_every.value = p.history_every
        self.ensemble.value = p.ensemble
        if len(self._noise_models) > 1 and p.loss in self._noise_models:
            self.loss.value = p.loss

    # ------------------------------------------------------------------------ parameters
    def build_params(self) -> DIPParams:
        """The DIPParams for the current field values (raises ValueError/TypeError)."""
        from ...restore.presets import get_preset

        base = self.params_override or get_preset(self.preset.value, task=self.task.value)
        its = int(self.iterations.value)
        changes: dict[str, Any] = {
            "iterations": its,
            "lr": float(self.lr.value),
            "early_stop": bool(self.early_stop.value),
            "history_every": int(self.history_every.value),
            "ensemble": int(self.ensemble.value),
        }
        if len(self._noise_models) > 1:
            changes["loss"] = self.loss.value
        ye = base.yield_every
        if base.preview_every:
            # short runs get more frequent previews (a multiple of the yield cadence)
            often = max(ye, (its // MIN_PREVIEWS) // ye * ye)
            changes["preview_every"] = min(base.preview_every, often)
        return base.replace(**changes)

    # ------------------------------------------------------------------------ masks
    def new_mask_layer(self, field: str | None = None, *_args):
        """Add an empty Labels layer on the image's grid, ready to paint, and select it as ``field``.

        ``field``: the name of a mask field (default: the current task's first one).  For a
        stack the Labels data is a zarr array in memory chunked per plane
        (:func:`~napari_deep_prior._napari.layers.new_mask_data`).
        """
        if not isinstance(field, str):
            masks = [f.name for f in self.degradation.fields if f.kind == "mask"]
            field = masks[0] if masks else "mask"
        layer = self.image.value
        if layer is None:
            _notify.show_error("DIP: choose an image layer first; the new mask is made on its grid.")
            return None
        shape, kw = L.new_mask_kwargs(layer, self.channel_axis.value)
        # a stack's mask is a chunked zarr array in memory: a plane takes memory once painted
        labels = self._viewer.add_labels(L.new_mask_data(shape), name=f"{layer.name} mask", **kw)
        labels.selected_label = 1
        labels.brush_size = max(3, int(round(min(shape[-2:]) / 40)))
        labels.mode = "paint"
        self._viewer.layers.selection.active = labels
        getattr(self, field).value = labels
        _notify.show_info(f"DIP: paint over the damage in {labels.name!r} (label 1), then press Run.")
        return labels

    # ------------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        return self._run is not None

    def _on_run_clicked(self, *_args) -> None:
        self.run()

    def _store_path(self) -> str:
        """The result store folder the user typed or chose ("" for none)."""
        text = str(self.result_store.line_edit.value or "").strip()
        return "" if text in ("", ".") else text

    def _selection(self, layer, ca) -> L.ImageSelection:
        """The part of the layer to process: scope, plane range and region (nothing is read for a lazy layer)."""
        plane_only = self.scope.value == "plane"
        planes = None if plane_only else (int(self.first_plane.value), int(self.last_plane.value))
        region = None
        shapes = self.region.value
        if shapes is not None:
            data = L.layer_array(layer)
            ya, xa = L.non_channel_axes(data.ndim, ca)[-2:]
            region = L.region_from_shapes(shapes, layer, (data.shape[ya], data.shape[xa]))
        return L.select_image(
            layer, ca, plane_only=plane_only, world_point=self._viewer.dims.point, planes=planes, region=region
        )

    def _prepare(self):
        """Validate the fields and build the job; show_error and return None on bad input.

        A layer in memory gives a :class:`~napari_deep_prior.restore.job.DIPJob` over the
        selection; a lazy layer (dask, zarr, multiscale), or any layer with a result store,
        gives a :class:`~napari_deep_prior.restore.stream.StackJob` that reads the selection
        plane by plane in the worker and writes to a zarr store.
        """
        from ...restore.api import prepare

        deg = self.degradation
        layer = self.image.value
        if layer is None:
            _notify.show_error("DIP: there is no image layer to process; open an image first.")
            return None
        ca = self.channel_axis.value
        store = None
        try:
            params = self.build_params()
            sel = self._selection(layer, ca)
            streamed = sel.lazy or bool(self._store_path())
            seed = None if self.seed.value == SEED_RANDOM else int(self.seed.value)
            values: dict[str, Any] = {}
            mask_name = None
            for f in deg.fields:
                value = getattr(self, f.name).value
                if f.kind == "mask":
                    if value is None:
                        _notify.show_error(
                            f"DIP: choose a {f.label} layer (Labels or Shapes: nonzero = fill), "
                            "or press 'New mask' and paint over the damage."
                        )
                        return None
                    mask_name = value.name
                    value = L.stack_mask(value, layer, sel) if streamed else L.mask_from_layer(value, layer, sel)
                values[f.name] = value
            extra: dict[str, Any] = {}
            if len(self._noise_models) > 1:
                out = self.output.value
                extra["output_dtype"] = None if out == "auto" else out
                camera = {name: float(getattr(self, name).value) for name in CAMERA_FIELDS}
                if params.loss == "poisson" and camera != CAMERA_COUNTS:
                    extra.update(camera)  # plain counts (or no Poisson model): no camera conversion
            if deg.noise_level_stop and self._has(NOISE_LEVEL_FIELD) and params.loss != "poisson":
                level = float(getattr(self, NOISE_LEVEL_FIELD).value)
                if level > 0:
                    extra["noise_sigma"] = level
            common = dict(
                preset=self.preset.value,  # only named: the provenance lists what params change of it
                params=params,
                channel_axis=ca,
                device=self.device.value,
                seed=seed,
                warm_start=bool(self.warm_start.value),
                tile_size=int(self.tile_size.value) or None,
                **extra,
            )
            if streamed:
                job, store = self._prepare_stream(layer, sel, values, common)
            else:
                job = prepare(deg(**values), sel.data, **common)
        except (ValueError, TypeError, MemoryError) as exc:
            _notify.show_error(f"DIP {deg.name} of {layer.name!r}: {self.explain(exc)}")
            return None
        return job, sel, params, mask_name, store

    def _prepare_stream(self, layer, sel: L.ImageSelection, values: dict, common: dict):
        """A StackJob over the selection and the store it writes to (made once the job is valid)."""
        from ...restore.stream import StackJob

        job = StackJob(self.degradation, sel.data, fields=values, **common)
        data = L.layer_array(layer)
        kw = {"yx_axes": tuple(L.non_channel_axes(data.ndim, sel.channel_axis)[-2:]), "channel_axis": sel.channel_axis}
        path = self._store_path()
        if path:
            source = getattr(getattr(layer, "source", None), "path", None)
            store = ResultStore.at(path, inputs=(source,), **kw)
        else:
            store = ResultStore.temporary_store(**kw)
            self._temp_stores.append(store.key)
        job.store = store
        return job, store

    def field_labels(self) -> dict[str, str]:
        """API parameter names -> this widget's field labels (``lr`` -> "learning rate")."""
        return field_labels(self, FIELD_ALIASES)

    def explain(self, exc: BaseException) -> str:
        """The message of ``exc`` in the widget's words: a parameter is named by its field's label."""
        return reword(exc, self.field_labels())

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
            _notify.show_info("DIP: a run is already going on; press Cancel to stop it first.")
            return None
        prepared = self._prepare()
        if prepared is None:
            return None
        job, sel, params, mask_name, store = prepared
        layer = self.image.value
        steps = job.steps()
        worker = create_worker(iterate_steps, steps, _start_thread=False, _ignore_errors=True)
        template = L.LayerTemplate.from_layer(layer).zoomed(job.degradation.scale)
        self._run = _Run(
            job=job,
            steps=steps,
            worker=worker,
            name=layer.name,
            task=job.task,
            layer=layer,
            template=template,
            selection=sel,
            params=params,
            mask_name=mask_name,
            store=store,
        )
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(self._on_returned)
        worker.aborted.connect(self._on_aborted)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        planes = f" ({job.n_planes} planes)" if job.n_planes > 1 else ""
        if store is not None:
            planes += ", read plane by plane"
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
    def _on_yielded(self, step: Step) -> None:
        from ...restore.stream import Scan

        run = self._run
        if run is None or not self._alive():
            return
        if isinstance(step, Scan):
            self.status.value = f"Reading the stack's value range: plane {step.done}/{step.n_planes}..."
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
            plane += f" · {getattr(step, 'tile_kind', 'tile')} {step.tile + 1}/{tile}"
        cand = "" if step.es_best_iteration is None else f" · ES min @ {step.es_best_iteration}"
        more = " ≤" if run.params.early_stop else ""
        self.status.value = (
            f"iteration {step.iteration}/{step.iterations}{plane} · "
            f"{format_duration(elapsed)} elapsed ·{more} {format_duration(left)} left{cand}"
        )
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
        if run.store is not None:  # a StackJob: each plane has its own layout (the stack's range)
            lay, k = run.job.plane_layout(plane), 0
        else:
            lay, k = run.job.layout, plane
        one = dataclasses.replace(
            lay,
            stack_shape=(1,) * len(run.selection.stack_axes),
            alpha=None if lay.alpha is None else lay.alpha[k : k + 1],
        )
        return denormalise(hwc[None], one)

    def _add_preview_layer(self, run: _Run) -> None:
        """Add the preview layer when the run starts (showing the input's first plane).

        Creating a layer is the most expensive thing napari does on the main thread (a
        tenth of a second or more without a GPU), so it happens once, at the click; during
        the run the preview only gets new data, and at the end it becomes the result.
        """
        sel = run.selection
        index = tuple(slice(0, 1) if a in sel.stack_axes else slice(None) for a in range(sel.data.ndim))
        if run.store is not None:
            # read plane by plane in the worker: nothing of the input is read here
            shape = tuple(1 if a in sel.stack_axes else n for a, n in enumerate(sel.data.shape))
            first = np.zeros(shape, dtype=run.job.result_dtype)
        else:
            first = np.array(sel.data[index], copy=True)
        f = run.job.degradation.scale
        if f > 1:  # a larger result: the input's plane enlarged until the first preview arrives
            ys, xs = L.non_channel_axes(first.ndim, sel.channel_axis)[-2:]
            first = first.repeat(f, axis=ys).repeat(f, axis=xs)
        run.preview_layer = self._viewer.add_image(
            first,
            name=f"{run.name} [DIP preview]",
            metadata={ROLE_KEY: "preview"},
            **run.template.image_kwargs(sel.plane_offset(0)),
        )

    def _show_preview(self, run: _Run, step: Step) -> None:
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

    def _on_returned(self, output: DIPOutput) -> None:
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
        # the worker stopped between two steps without closing the core's generator: close it,
        # so fits running in lane threads stop now and the running fit's estimate is read after
        # its last step, not while a lane thread takes the next
        try:
            run.steps.close()
        except ValueError:  # pragma: no cover - still executing: the worker never stops mid-step
            pass
        if not self._alive():
            return
        started = run.job.started if run.store is not None else bool(run.job.fits)
        if run.n_steps == 0 and not started:
            self._remove_preview(run)
            _notify.show_info(f"DIP {run.task} of {run.name!r} cancelled before the first step: nothing to keep.")
            return
        try:
            output = run.job.result()
        except RuntimeError:  # no step was taken in the running plane
            output = None
        if output is not None and run.store is not None and run.job.planes_written == 0:
            output = None
        run.output = output
        if output is None:
            self._remove_preview(run)
            _notify.show_info(f"DIP {run.task} of {run.name!r} cancelled: nothing to keep.")
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
        msg = self.explain(unwrap(exc))
        self.status.value = f"Failed: {msg}"
        _notify.show_error(f"DIP {run.task}: {msg}")

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
        if run.store is not None and run.store.temporary:
            self._release_stores()  # no layer shows it (a failed or empty run): delete it now
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


def _call_soon(func) -> None:
    from qtpy.QtCore import QTimer

    QTimer.singleShot(0, func)


def _tooltip_role():
    from qtpy.QtCore import Qt

    return Qt.ItemDataRole.ToolTipRole
