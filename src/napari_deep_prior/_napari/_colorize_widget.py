"""The "Colorize" dock widget: automatic and point-and-click colorization of a grey image.

A thin front end over :mod:`napari_deep_prior.core.colorize`.  The user picks a 2D image
and a mode:

* **automatic**: a pretrained network (``eccv16`` or ``siggraph17``) colours the whole image;
* **colour hints**: "Add hints layer" makes a Points layer "<image> [color hints]" on the
  image's grid, in *add* mode.  Every point is a hint; its face colour (set with the layer's
  colour control, or a suggested swatch) is the colour the pixel should have.  With a fast
  method (``levin``; ``siggraph17`` once its weights are present) the result layer
  "<image> [colorized]" follows every add / move / recolour / delete a moment later
  (debounced with a QTimer, computed in a napari worker; a newer edit supersedes a running
  computation).  The slow ``dip`` method waits for Run, shows its progress and can be
  cancelled.

Hints travel as ``(row, col, rgb)`` in the image's pixel coordinates (points are mapped
through world coordinates, so a hints layer on another grid works too); the image layer
is only read.  Every user error is a napari notification, never an exception.

Drive it from a script::

    w = ColorizeWidget(viewer)
    w.image.value = viewer.layers["grey"]
    w.mode.value = "hints"                 # set the mode first: it sets the method choices
    w.method.value = "levin"
    pts = w.add_hints_layer()              # "grey [color hints]", in add mode
    pts.current_face_color = "#3070c0"
    pts.add([[10, 12]])                    # live update follows (debounced, ~300 ms) ...
    worker = w.run()                       # ... or run now; returns the napari worker
    # w.colorized (psygnal) is emitted with the result layer after every update;
    # w.run_finished with the result layer (or None) when a requested run has ended.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal

from . import layers as L
from ._dip_widget import ROLE_KEY, _align_left, _expanding, _fmt_time
from ._workers import WorkerError, relay, unwrap

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from ..core.colorize import DIPColorParams

__all__ = [
    "ColorizeWidget",
    "ColorizeOutput",
    "WorkerError",
    "DIPProgress",
    "colorize_steps",
    "download_steps",
    "hints_from_points",
    "gamut_notes",
]

#: ``metadata[ROLE_KEY]`` of the layers this widget makes.
ROLE_RESULT = "colorized"
ROLE_HINTS = "color hints"
RESULT_TAG = "[colorized]"
HINTS_TAG = "[color hints]"
#: Quiet time after the last hint edit before a live re-colorization starts.
DEBOUNCE_MS = 300
#: Colour of the first hints (a warm orange, visible on grey).
DEFAULT_HINT_COLOR = "#e8803a"
#: A hint colour whose ab moves by more than this when pulled into gamut gets a warning
#: (about a clearly visible colour difference; smaller shifts are common and harmless).
GAMUT_WARN_AB = 12.0
#: Number of colour swatches offered by "Suggest colours".
N_SUGGESTIONS = 9
SEED_RANDOM = -1

AUTO_CHOICES = [("eccv16 (Zhang 2016)", "eccv16"), ("siggraph17 (Zhang 2017)", "siggraph17")]
HINT_CHOICES = [
    ("siggraph17 (network; live with its weights)", "siggraph17"),
    ("levin (propagation; live, no weights)", "levin"),
    ("dip (Deep Image Prior; slow, no weights)", "dip"),
]
NETWORKS = ("eccv16", "siggraph17")


# ============================================================================ worker bodies
# Plain generators (the widget wraps them in napari workers; they never decorate themselves).

@dataclass
class ColorizeOutput:
    """What a colorization worker returns.

    Attributes
    ----------
    rgb : ndarray, shape (H, W, 3)
        uint8 for uint8 input, else float32 in [0, 1] (the core's dtype policy).
    notes : list of str
        Warnings for the user (hint colours pulled into gamut).
    seconds : float
        Time the computation took.
    """

    rgb: np.ndarray
    notes: list[str]
    seconds: float


@dataclass
class DIPProgress:
    """Yielded by the ``dip`` worker every few iterations (``rgb``: a preview, or None)."""

    iteration: int
    iterations: int
    loss: float
    elapsed: float
    rgb: np.ndarray | None = None


def _lab_image(L: np.ndarray, ab: np.ndarray, as_uint8: bool) -> np.ndarray:
    """RGB of a full-resolution lightness and an ab image (the core's output dtype policy)."""
    from ..core.color import lab_to_rgb

    rgb = lab_to_rgb(np.concatenate([L[..., None], np.asarray(ab, np.float64)], axis=-1))
    if as_uint8:
        return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    return rgb.astype(np.float32)


def gamut_notes(lum_image: np.ndarray, hints, *, tolerance: float = GAMUT_WARN_AB) -> list[str]:
    """Messages for the hints whose colour cannot be shown at their pixel's lightness.

    The core pulls such colours into the sRGB gamut (keeping lightness and hue, shrinking
    the chroma); this names each hint whose ab moves by more than ``tolerance``.

    Parameters
    ----------
    lum_image : ndarray, shape (H, W)
        Lightness 0-100 of the image.
    hints : list of (row, col, colour)
    """
    from ..core.color import (
        color_to_hex,
        gamut_clip,
        lab_to_rgb,
        normalize_hints,
        rgb_to_lab,
    )

    notes = []
    for i, (r, c, rgb) in enumerate(normalize_hints(hints, lum_image.shape)):
        lum = float(lum_image[r, c])
        ab = rgb_to_lab(rgb)[1:]
        clipped = gamut_clip(ab, lum)
        if float(np.hypot(*(ab - clipped))) > tolerance:
            shown = lab_to_rgb(np.array([lum, *clipped]))
            notes.append(
                f"hint {i + 1} at (row {r}, col {c}): {color_to_hex(rgb)} -> "
                f"{color_to_hex(np.clip(shown, 0, 1))} (pixel lightness L = {lum:.0f})"
            )
    return notes


def colorize_steps(image, hints, *, method: str, hint_size: int = 5, weights=None,
                   device="auto", seed: int | None = None,
                   params: "DIPColorParams | None" = None):
    """Worker body of one colorization: yields :class:`DIPProgress` (``dip`` only) and
    returns a :class:`ColorizeOutput`.

    Runs in the worker thread.  ``hints`` is a list of ``(row, col, colour)`` (empty or
    None for the automatic methods).  Errors are the core's ``ValueError`` / ``TypeError``
    / ``WeightsError``, raised here and reported by the widget.
    """
    from ..core.color import encode_hints
    from ..core.colorize import colorize, dip_ab_steps, lightness

    t0 = time.perf_counter()
    arr = np.asarray(image)
    as_uint8 = arr.dtype == np.uint8
    notes: list[str] = []
    if hints:
        L = lightness(arr)  # validates the image, as colorize() would
        notes = gamut_notes(L, hints)
    if method != "dip":
        rgb = colorize(arr, method=method, hints=hints or None, hint_size=hint_size,
                       weights=weights, device=device, seed=seed)
        return ColorizeOutput(rgb, notes, time.perf_counter() - t0)
    if not hints:
        # the core's message (needs at least one hint)
        colorize(arr, method="dip", hints=None)
    ab_hint, mask = encode_hints(L, hints, size=hint_size)
    steps = dip_ab_steps(L, ab_hint, mask, params=params, seed=seed, device=device)
    try:
        while True:
            try:
                step = next(steps)
            except StopIteration as stop:
                ab = stop.value
                break
            preview = None if step.preview is None else _lab_image(L, step.preview, as_uint8)
            yield DIPProgress(step.iteration, step.iterations, step.loss, step.elapsed, preview)
    finally:
        steps.close()  # releases the network at once when the worker is cancelled
    return ColorizeOutput(_lab_image(L, ab, as_uint8), notes, time.perf_counter() - t0)


class _DownloadCancelled(Exception):
    pass


def download_steps(name: str, cancel: threading.Event, folder=None):
    """Worker body of a weights download: yields ``(bytes_done, bytes_total)`` and returns
    the path of the verified file.

    :func:`~napari_deep_prior.core.weights.download_weights` runs in a helper thread and
    reports through a queue; setting ``cancel`` stops it at its next chunk (its temporary
    file is removed by the core).
    """
    from ..core.weights import download_weights

    q: queue.Queue = queue.Queue()
    out: dict[str, Any] = {}

    def progress(done, total):
        if cancel.is_set():
            raise _DownloadCancelled()
        q.put((int(done), int(total)))

    def target():
        try:
            out["path"] = download_weights(name, folder, progress=progress)
        except BaseException as exc:  # noqa: BLE001 - handed to the worker thread
            out["error"] = exc
        finally:
            q.put(None)

    th = threading.Thread(target=target, name=f"download-{name}", daemon=True)
    th.start()
    last = -1
    try:
        while True:
            item = q.get()
            if item is None:
                break
            done, total = item
            permille = int(1000 * done / total) if total else 0
            if permille != last:  # at most 1001 yields, whatever the chunk size
                last = permille
                yield done, total
    finally:
        cancel.set()  # worker aborted: stop the helper thread too
    th.join()
    err = out.get("error")
    if isinstance(err, _DownloadCancelled):
        return None
    if err is not None:
        raise err
    return out["path"]


# ============================================================================ layer helpers

def hints_from_points(points, image) -> list[tuple[float, float, np.ndarray]]:
    """Hints ``(row, col, rgb)`` in ``image``'s pixel coordinates from a Points layer.

    Each point goes data -> world -> the image's data coordinates (the last two are row and
    column), so a hints layer on another grid still lands on the right pixel; its face
    colour (RGB floats in [0, 1]) is the hint colour.
    """
    data = np.asarray(points.data, dtype=float)
    if len(data) == 0:
        return []
    colours = np.clip(np.asarray(points.face_color, dtype=np.float64)[:, :3], 0.0, 1.0)
    same = (_grid_of(points) == _grid_of(image) and points.ndim == image.ndim
            and L._simple_transform(points) and L._simple_transform(image))
    out = []
    for pt, rgb in zip(data, colours):
        if same:
            rc = pt[-2:]
        else:
            rc = np.asarray(image.world_to_data(points.data_to_world(pt)), dtype=float)[-2:]
        out.append((float(rc[0]), float(rc[1]), rgb.copy()))
    return out


def _grid_of(layer) -> tuple:
    return (tuple(np.round(np.asarray(layer.scale, float), 12)),
            tuple(np.round(np.asarray(layer.translate, float), 12)))


def _points_coords(points, image, rows_cols: np.ndarray) -> np.ndarray:
    """Image pixel (row, col) -> data coordinates of a Points layer (inverse of the above)."""
    if len(rows_cols) == 0:
        return np.empty((0, points.ndim))
    out = []
    for rc in rows_cols:
        idx = np.zeros(image.ndim)
        idx[-2:] = rc
        pt = np.asarray(points.world_to_data(image.data_to_world(idx)), dtype=float)
        out.append(pt[-points.ndim:])
    return np.asarray(out)


def _hex(rgb) -> str:
    from ..core.color import color_to_hex

    return color_to_hex(np.clip(np.asarray(rgb, np.float64)[:3], 0.0, 1.0))


def _ask_open_file(parent, caption: str, start: str, filters: str) -> str:
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getOpenFileName(parent, caption, start, filters)
    return path


def _ask_save_file(parent, caption: str, start: str, filters: str) -> str:
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getSaveFileName(parent, caption, start, filters)
    return path


# ============================================================================ the widget

@dataclass
class _Job:
    """One colorization (the widget's fields may change while it runs)."""

    worker: Any
    gen: Any
    method: str
    mode: str
    name: str
    template: L.LayerTemplate
    n_hints: int
    hint_size: int
    seed: int | None
    live: bool
    signature: tuple
    t0: float = field(default_factory=time.perf_counter)
    superseded: bool = False
    cancelled: bool = False
    failed: bool = False
    started: bool = False
    last: Any = None
    output: ColorizeOutput | None = None


class ColorizeWidget(Container):
    """Dock widget colorizing a grey 2D Image layer, automatically or from colour hints.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer

    Attributes
    ----------
    image, mode, method, hints_layer, hint_size, live, iterations, seed, device : magicgui widgets
        Set their ``.value`` to drive the widget from a script.  ``mode`` is
        ``"automatic"`` or ``"hints"`` (set it before ``method``: automatic offers
        ``eccv16``/``siggraph17``, hints ``siggraph17``/``levin``/``dip``); ``hint_size``
        is the odd side of each hint's square (pixels of the 256 x 256 network grid for
        siggraph17, image pixels otherwise); ``live`` re-colorizes after each hint edit
        with a fast method; ``iterations`` is for ``dip``; ``seed = -1`` draws one.
    params_override : DIPColorParams or None
        For scripts and tests: the ``dip`` settings (instead of the iterations field).
    weights_paths : dict
        Weight files chosen by the user, per network (see :meth:`set_weights_file`).
    suggestions : Suggestions or None
        The swatches on show (see :meth:`suggest`, :meth:`apply_suggestion`).
    colorized : psygnal.Signal
        Emitted with the result layer each time it is updated.
    run_finished : psygnal.Signal
        Emitted with the result layer (or None: failed / cancelled) when a colorization
        ended that no newer one superseded.
    """

    colorized = Signal(object)
    run_finished = Signal(object)
    suggestions_ready = Signal(object)
    download_finished = Signal(object)

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        from qtpy.QtCore import QTimer

        from ..core.device import available_devices

        self._viewer = napari_viewer
        self._closed = False
        self._jobs: list[_Job] = []  # started and not yet finished
        self._current: _Job | None = None  # the newest job (its result is the one shown)
        self._deferred: _Job | None = None  # waits for the running job(s) to end
        self._connected_points = None
        self._last_signature: tuple | None = None
        self._warned: set[str] = set()
        self._download = None  # (worker, cancel event, name)
        self._suggest_worker = None
        self._suggest_index: int | None = None
        self.params_override: DIPColorParams | None = None
        self.weights_paths: dict[str, Path] = {}
        self.suggestions = None

        image = ComboBox(
            name="image", label="image", choices=self._image_choices,
            tooltip="The grey 2D image to colorize (an RGB image is re-coloured from its "
                    "lightness). It is never modified: the result is a new RGB layer.",
        )
        mode = ComboBox(
            name="mode", label="mode", value="hints",
            choices=[("automatic", "automatic"), ("colour hints", "hints")],
            tooltip="automatic: a pretrained network colours the whole image. colour hints: "
                    "click points on a hints layer and give each the colour it should have.",
        )
        method = ComboBox(name="method", label="method", choices=self._method_choices,
                          tooltip=self._method_tooltip())
        hints_layer = ComboBox(
            name="hints_layer", label="hints layer", choices=self._points_choices,
            tooltip="The Points layer holding the hints: each point's face colour is its hint.",
        )
        add_hints = PushButton(
            name="add_hints_button", text="Add hints layer",
            tooltip="Add a Points layer on the image's grid, in add mode: click where a colour "
                    "belongs; choose the colour of new points with the layer's face colour.",
        )
        suggest = PushButton(
            name="suggest_button", text="Suggest colours",
            tooltip="Colours the siggraph17 network finds likely at the selected point.",
        )
        hint_row = Container(name="hint_row", widgets=[add_hints, suggest], layout="horizontal",
                             labels=False, label=" ")
        swatches = Container(name="swatches", widgets=[], layout="horizontal", labels=False,
                             label=" ")
        hint_size = SpinBox(
            name="hint_size", label="hint size", min=1, max=15, step=2, value=5,
            tooltip="Side of each hint's square patch, odd. siggraph17: pixels of the 256 x 256 "
                    "grid the network sees; levin and dip: image pixels.",
        )
        live = CheckBox(
            name="live", text="update automatically", value=True,
            tooltip="With a fast method (levin; siggraph17 with its weights) re-colorize a "
                    "moment after every added, moved, recoloured or deleted hint.",
        )
        from ..core.colorize import DIPColorParams

        iterations = SpinBox(
            name="iterations", label="iterations", min=10, max=100_000, step=50,
            value=DIPColorParams().iterations,
            tooltip="dip only: optimisation steps of the Deep-Image-Prior colorizer.",
        )
        seed = SpinBox(
            name="seed", label="seed", min=SEED_RANDOM, max=2**31 - 2, value=SEED_RANDOM,
            tooltip="dip only: random seed (the same seed gives the same result on the CPU); "
                    "-1 draws one (stored in the result's metadata).",
        )
        device = ComboBox(name="device", label="device", choices=["auto", *available_devices()],
                          value="auto", tooltip="Where to compute: auto picks a GPU if any.")
        weights_status = Label(name="weights_status", label="weights", value="")
        download = PushButton(
            name="download_button", text="Download weights",
            tooltip="Download the selected network's published weights (about 130 MB) "
                    "into the folder searched for them.",
        )
        choose = PushButton(
            name="choose_weights_button", text="Choose file...",
            tooltip="Use a weights file you already have (e.g. downloaded on another machine).",
        )
        weights_row = Container(name="weights_row", widgets=[download, choose],
                                layout="horizontal", labels=False, label=" ")
        download_progress = ProgressBar(name="download_progress", label="download", min=0,
                                        max=1000, value=0)
        save = PushButton(name="save_hints_button", text="Save hints...",
                          tooltip="Write the hints (row, col, #rrggbb) to a CSV file.")
        load = PushButton(name="load_hints_button", text="Load hints...",
                          tooltip="Read hints from a CSV file (row,col,color or row,col,r,g,b) "
                                  "into the hints layer, replacing its points.")
        csv_row = Container(name="csv_row", widgets=[save, load], layout="horizontal",
                            labels=False, label=" ")
        run_button = PushButton(name="run_button", text="Run", tooltip="Colorize now.")
        cancel_button = PushButton(name="cancel_button", text="Cancel", enabled=False,
                                   tooltip="Stop the running colorization.")
        buttons = Container(name="buttons", widgets=[run_button, cancel_button],
                            layout="horizontal", labels=False, label=" ")
        progress = ProgressBar(name="progress", label="progress", min=0, max=1000, value=0)
        status = Label(name="status", label=" ", value="Ready.")
        super().__init__(widgets=[
            image, mode, method, hints_layer, hint_row, swatches, hint_size, live, iterations,
            seed, device, weights_status, weights_row, download_progress, csv_row, buttons,
            progress, status,
        ], labels=True)
        for row in (hint_row, swatches, weights_row, csv_row, buttons):
            row.margins = (0, 0, 0, 0)
        self.add_hints_button = add_hints
        self.suggest_button = suggest
        self.download_button = download
        self.choose_weights_button = choose
        self.save_hints_button = save
        self.load_hints_button = load
        self.run_button = run_button
        self.cancel_button = cancel_button
        progress.native.setFormat("%p%")
        download_progress.native.setFormat("%p%")
        download_progress.visible = False
        for lab in (status, weights_status):
            lab.native.setWordWrap(True)
            lab.native.setAlignment(_align_left())
            lab.native.setSizePolicy(_expanding(), lab.native.sizePolicy().verticalPolicy())
        weights_status.native.setTextInteractionFlags(_selectable_text())

        self._timer = QTimer(self.native)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self._on_debounce)

        add_hints.changed.connect(lambda *_: self.add_hints_layer())
        suggest.changed.connect(lambda *_: self.suggest())
        download.changed.connect(lambda *_: self._on_download_clicked())
        choose.changed.connect(lambda *_: self.choose_weights_file())
        save.changed.connect(lambda *_: self.save_hints())
        load.changed.connect(lambda *_: self.load_hints())
        run_button.changed.connect(lambda *_: self.run())
        cancel_button.changed.connect(lambda *_: self.cancel())
        mode.changed.connect(self._on_mode_changed)
        method.changed.connect(self._on_method_changed)
        image.changed.connect(self._on_image_changed)
        hints_layer.changed.connect(self._on_hints_layer_changed)
        hint_size.changed.connect(lambda *_: self._schedule())
        live.changed.connect(lambda *_: self._schedule())

        for emitter, cb in L.layer_list_callbacks(self._viewer, self):
            emitter.connect(cb)
        for layer in self._viewer.layers:
            layer.events.name.connect(self._refresh_choices)
        self.native.destroyed.connect(self._on_destroyed)
        self._on_mode_changed(self.mode.value)
        self._on_image_changed(self.image.value)

    # ------------------------------------------------------------------------ choices
    def _image_choices(self, _widget=None):
        from napari.layers import Image

        return [(layer.name, layer) for layer in self._viewer.layers
                if isinstance(layer, Image) and layer.metadata.get(ROLE_KEY) != ROLE_RESULT]

    def _points_choices(self, _widget=None):
        from napari.layers import Points

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Points)]

    def _method_choices(self, _widget=None):
        try:
            mode = self.mode.value
        except AttributeError:  # during construction
            mode = "hints"
        return AUTO_CHOICES if mode == "automatic" else HINT_CHOICES

    @staticmethod
    def _method_tooltip() -> str:
        return ("eccv16 / siggraph17: the pretrained networks of Zhang et al. (need their "
                "weights, ~130 MB each). levin: hint colours spread to neighbours of similar "
                "brightness (Levin et al. 2004), instant, no weights. dip: a Deep Image Prior "
                "network fitted to the hints, no weights, tens of seconds: press Run.")

    def _refresh_choices(self, event=None) -> None:
        if self._closed:
            return
        try:
            self.reset_choices()
        except RuntimeError:  # Qt widgets already deleted
            self._closed = True

    # ------------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        """A colorization is being computed."""
        return bool(self._jobs) or self._deferred is not None

    @property
    def last_worker(self):
        """The napari worker of the newest colorization (None before the first)."""
        return None if self._current is None else self._current.worker

    @property
    def result_layer(self):
        """The "<image> [colorized]" layer of the selected image, if there is one."""
        layer = self.image.value
        return None if layer is None else self._find_result(layer.name)

    def network(self) -> str:
        """The network the weights row is about: the method if it is one, else siggraph17
        (whose weights give the colour suggestions)."""
        m = self.method.value
        return m if m in NETWORKS else "siggraph17"

    def weights_for(self, name: str) -> Path | None:
        """The weight file that will be used for network ``name``, or None if missing."""
        from ..core.weights import WeightsError, find_weights

        chosen = self.weights_paths.get(name)
        if chosen is not None:
            return Path(chosen) if Path(chosen).is_file() else None
        try:
            return find_weights(name)
        except WeightsError:  # pragma: no cover - only raised for explicit paths
            return None

    def is_fast(self, method: str | None = None) -> bool:
        """True for the methods that update live (levin; siggraph17 with its weights)."""
        method = self.method.value if method is None else method
        if self.mode.value != "hints":
            return False
        return method == "levin" or (method == "siggraph17"
                                     and self.weights_for("siggraph17") is not None)

    def _alive(self) -> bool:
        if self._closed:
            return False
        try:
            from napari.viewer import Viewer

            viewer = getattr(self._viewer, "__wrapped__", self._viewer)
            if isinstance(viewer, Viewer) and viewer not in Viewer._instances:
                self._closed = True
        except Exception:  # noqa: BLE001 - a napari without the registry: assume open
            pass
        if self._closed:
            self._stop_all()
        return not self._closed

    def _stop_all(self) -> None:
        try:
            self._timer.stop()
        except RuntimeError:  # the QTimer went with the widget
            pass
        self._deferred = None
        for job in list(self._jobs):
            job.cancelled = True
            job.worker.quit()
        if self._download is not None:
            self._download[1].set()
            self._download[0].quit()

    # ------------------------------------------------------------------------ field events
    def _on_mode_changed(self, mode) -> None:
        if self._closed:
            return
        self.method.reset_choices()
        if mode == "hints":
            self.method.value = ("siggraph17" if self.weights_for("siggraph17") is not None
                                 else "levin")
        else:
            self.method.value = "eccv16"
        hints = mode == "hints"
        for w in (self.hints_layer, self.add_hints_button, self.hint_size, self.live,
                  self.save_hints_button, self.load_hints_button):
            w.enabled = hints
        self._on_method_changed(self.method.value)

    def _on_method_changed(self, method) -> None:
        if self._closed:
            return
        self.iterations.visible = method == "dip"
        self.seed.visible = method == "dip"
        self.live.enabled = self.mode.value == "hints" and method != "dip"
        self._update_weights_status()
        self._clear_swatches()
        self._schedule()

    def _on_image_changed(self, layer) -> None:
        if self._closed or layer is None:
            return
        # the image's own hints layer, if it has one, becomes the hints layer
        for cand in self._viewer.layers:
            if (cand.metadata.get(ROLE_KEY) == ROLE_HINTS
                    and cand.metadata.get("source_layer") == layer.name):
                self.hints_layer.value = cand
                break
        self._schedule()

    def _on_hints_layer_changed(self, points) -> None:
        if self._closed:
            return
        old = self._connected_points
        if old is not None and old is not points:
            for emitter in (old.events.data, old.events.face_color, old.events.current_face_color):
                try:
                    emitter.disconnect(self._on_hints_edited)
                except (RuntimeError, TypeError, ValueError):  # pragma: no cover
                    pass
            self._connected_points = None
        if points is not None and points is not old:
            points.events.data.connect(self._on_hints_edited)
            points.events.face_color.connect(self._on_hints_edited)
            # recolouring the selected points with the layer's colour control
            points.events.current_face_color.connect(self._on_hints_edited)
            self._connected_points = points
        self._clear_swatches()
        self._schedule()

    def _on_hints_edited(self, event=None) -> None:
        self._schedule()

    def _on_layer_inserted(self, event) -> None:
        from napari.layers import Image, Points

        layer = event.value
        layer.events.name.connect(self._refresh_choices)
        self._refresh_choices()
        if self._closed:
            return
        role = layer.metadata.get(ROLE_KEY)
        if isinstance(layer, Image) and role is None:
            self.image.value = layer
        elif isinstance(layer, Points) and (role == ROLE_HINTS or self.hints_layer.value is None):
            self.hints_layer.value = layer

    def _on_layer_removed(self, event) -> None:
        if self._connected_points is not None and event.value is self._connected_points:
            self._on_hints_layer_changed(None)
        self._refresh_choices()

    def _on_destroyed(self, *_args) -> None:
        """The dock widget (or the viewer) is gone: stop the workers, touch no widget."""
        self._closed = True
        self._stop_all()
        L.disconnect_quietly(L.layer_list_callbacks(self._viewer, self))
        pts = self._connected_points
        if pts is not None:
            for emitter in (pts.events.data, pts.events.face_color, pts.events.current_face_color):
                try:
                    emitter.disconnect(self._on_hints_edited)
                except (RuntimeError, TypeError, ValueError):  # pragma: no cover
                    pass

    # ------------------------------------------------------------------------ weights
    def _update_weights_status(self) -> None:
        from ..core.weights import weights_info

        if self._closed:
            return
        name = self.network()
        info = weights_info(name)
        purpose = "" if self.method.value in NETWORKS else " (only for 'Suggest colours')"
        path = self.weights_for(name)
        downloading = self._download is not None
        if path is not None:
            chosen = " (chosen)" if name in self.weights_paths else ""
            self.weights_status.value = f"{name}{purpose}: found{chosen}, {path}"
            self.weights_status.tooltip = str(path)
        else:
            self.weights_status.value = (
                f"{name}{purpose}: missing. It needs {info.describe()}; press Download "
                f"weights, or Choose file if you have it.")
            self.weights_status.tooltip = info.url
        self.download_button.enabled = downloading or path is None
        self.download_button.text = "Cancel download" if downloading else "Download weights"
        self.choose_weights_button.enabled = not downloading
        have_sig = self.weights_for("siggraph17") is not None
        hints = self.mode.value == "hints"
        busy = self._suggest_worker is not None
        self.suggest_button.enabled = hints and have_sig and not busy
        if not have_sig:
            sig = weights_info("siggraph17")
            self.suggest_button.tooltip = (
                f"Needs the siggraph17 weights, {sig.describe()}, which are missing: choose "
                "method siggraph17 and press Download weights (or Choose file).")
        elif not hints:
            self.suggest_button.tooltip = "Suggestions are for hints: switch the mode to colour hints."
        else:
            self.suggest_button.tooltip = ("Colours the siggraph17 network finds likely at the "
                                           "selected point; click a swatch to use it.")

    def set_weights_file(self, path, name: str | None = None) -> Path | None:
        """Use ``path`` (a weight file, or a folder holding it) for network ``name``
        (default: :meth:`network`).  Returns the file, or None after an error message."""
        from ..core.weights import WeightsError, find_weights

        name = name or self.network()
        try:
            found = find_weights(name, path)
        except WeightsError as exc:
            show_error(f"Colorize: {exc}")
            return None
        self.weights_paths[name] = Path(found)
        self._update_weights_status()
        self._schedule()
        return Path(found)

    def choose_weights_file(self) -> Path | None:
        """Ask for a weights file (file dialog) for the selected network."""
        from ..core.weights import search_folders, weights_info

        name = self.network()
        info = weights_info(name)
        path = _ask_open_file(self.native, f"Choose the {name} weights ({info.filename})",
                              str(search_folders()[0]),
                              "PyTorch weights (*.pth *.pt);;All files (*)")
        if not path:
            return None
        return self.set_weights_file(path, name)

    def _on_download_clicked(self) -> None:
        if self._download is not None:
            self.cancel_download()
        else:
            self.download_weights()

    def download_weights(self, name: str | None = None, *, start: bool = True):
        """Download the published weights of ``name`` (default: :meth:`network`) in a
        worker, with progress; returns the worker (None if one is already running)."""
        from napari.qt.threading import create_worker

        from ..core.weights import weights_info

        if self._download is not None:
            show_info("Colorize: a download is already going on.")
            return None
        name = name or self.network()
        info = weights_info(name)
        cancel = threading.Event()
        worker = create_worker(relay, download_steps(name, cancel), _start_thread=False,
                               _ignore_errors=True)
        self._download = (worker, cancel, name)

        def on_progress(item):
            done, total = item
            if self._alive():
                self.download_progress.value = int(1000 * done / max(total, 1))
                self.download_progress.tooltip = f"{done / 1e6:.0f} / {total / 1e6:.0f} MB"

        def on_returned(path):
            if path is not None and self._alive():
                show_info(f"Colorize: {info.filename} downloaded to {path}.")

        def on_errored(exc):
            if self._alive():
                show_error(f"Colorize: {unwrap(exc)}")

        def on_finished():
            self._download = None
            if not self._alive():
                return
            self.download_progress.visible = False
            self._update_weights_status()
            self._schedule()
            self.download_finished.emit(self.weights_for(name))

        worker.yielded.connect(on_progress)
        worker.returned.connect(on_returned)
        worker.errored.connect(on_errored)
        worker.finished.connect(on_finished)
        self.download_progress.value = 0
        self.download_progress.visible = True
        self._update_weights_status()
        self.status.value = f"Downloading {info.describe()} from {info.url} ..."
        if start:
            worker.start()
        return worker

    def cancel_download(self) -> None:
        if self._download is not None:
            worker, cancel, _name = self._download
            cancel.set()
            worker.quit()

    # ------------------------------------------------------------------------ hints layer
    def _check_image(self, layer, what: str = "colorize") -> np.ndarray | None:
        """The layer's 2D array (H, W) or (H, W, 3|4), or None after an error message."""
        if layer is None:
            show_error("Colorize: there is no image layer; open a grey image first.")
            return None
        data = L.layer_array(layer)
        spatial = data.ndim - (1 if getattr(layer, "rgb", False) else 0)
        if spatial != 2:
            show_error(
                f"Colorize: {layer.name!r} has shape {tuple(data.shape)}, a {spatial}D stack; "
                f"{what} works on one 2D image. Pick a 2D image, or put a single plane in a "
                "layer of its own (e.g. viewer.add_image(layer.data[i]))."
            )
            return None
        return data

    def add_hints_layer(self):
        """Add "<image> [color hints]": an empty Points layer on the image's grid, in add
        mode, selected; returns it (None after an error message)."""
        layer = self.image.value
        data = self._check_image(layer, "a hints layer")
        if data is None:
            return None
        h, w = data.shape[:2]
        kw = L.LayerTemplate.from_layer(layer).grid_kwargs()
        size = max(3, int(round(min(h, w) / 25)))
        points = self._viewer.add_points(
            np.empty((0, 2)), ndim=2, name=f"{layer.name} {HINTS_TAG}", size=size,
            face_color=DEFAULT_HINT_COLOR, border_color="white", border_width=0.15,
            metadata={ROLE_KEY: ROLE_HINTS, "source_layer": layer.name}, **kw,
        )
        points.current_face_color = DEFAULT_HINT_COLOR
        points.mode = "add"
        self._viewer.layers.selection.active = points
        self.hints_layer.value = points
        if self.mode.value != "hints":
            self.mode.value = "hints"
        show_info(f"Colorize: click in {points.name!r} where a colour belongs; set the colour "
                  "of new (or selected) points with the layer's face colour.")
        return points

    def hints(self) -> list[tuple[float, float, np.ndarray]]:
        """The hints ``(row, col, rgb)`` of the hints layer, in the image's pixels."""
        points, image = self.hints_layer.value, self.image.value
        if points is None or image is None:
            return []
        return hints_from_points(points, image)

    # ------------------------------------------------------------------------ CSV
    def save_hints(self, path=None) -> Path | None:
        """Write the hints to a CSV file (``row,col,color``); asks for a path if none."""
        from ..core.color import write_hints_csv

        hints = self.hints()
        if not hints:
            show_warning("Colorize: there are no hints to save; add points to the hints layer.")
            return None
        if path is None:
            path = _ask_save_file(self.native, "Save colour hints",
                                  f"{self.image.value.name} hints.csv", "CSV files (*.csv)")
            if not path:
                return None
        try:
            write_hints_csv(path, [(round(r, 3), round(c, 3), _hex(rgb)) for r, c, rgb in hints])
        except (OSError, ValueError, TypeError) as exc:
            show_error(f"Colorize: cannot write the hints to {path}: {exc}")
            return None
        self.status.value = f"Saved {len(hints)} hints to {path}."
        return Path(path)

    def load_hints(self, path=None):
        """Read hints from a CSV file into the hints layer (made if needed), replacing its
        points; returns the Points layer (None after an error message)."""
        from ..core.color import parse_color, read_hints_csv

        if path is None:
            path = _ask_open_file(self.native, "Load colour hints", "",
                                  "CSV files (*.csv);;All files (*)")
            if not path:
                return None
        try:
            hints = read_hints_csv(path)
        except (OSError, ValueError) as exc:
            show_error(f"Colorize: cannot read hints from {path}: {exc}")
            return None
        points = self.hints_layer.value
        if points is None:
            points = self.add_hints_layer()
        image = self.image.value
        if points is None or image is None:
            return None
        rc = np.array([[float(h.row), float(h.col)] for h in hints]).reshape(-1, 2)
        colours = np.array([[*parse_color(h.color), 1.0] for h in hints]).reshape(-1, 4)
        points.selected_data = set()
        points.data = _points_coords(points, image, rc)
        if len(colours):
            points.face_color = colours
        self.status.value = f"Loaded {len(hints)} hints from {path}."
        return points

    # ------------------------------------------------------------------------ suggestions
    def _clear_swatches(self) -> None:
        if self._closed:
            return
        self.suggestions = None
        self._suggest_index = None
        self.swatches.clear()
        self.swatches.visible = False

    def _target_point(self) -> int | None:
        points = self.hints_layer.value
        if points is None or len(points.data) == 0:
            show_warning("Colorize: add a hint point first, then select it to get suggestions.")
            return None
        sel = sorted(points.selected_data)
        if len(sel) > 1:
            show_warning("Colorize: select a single hint point for suggestions.")
            return None
        return sel[0] if sel else len(points.data) - 1

    def suggest(self, index: int | None = None):
        """Compute colour suggestions for a hint point (default: the selected one, else the
        last); returns the worker.  The swatches appear when it returns."""
        from napari.qt.threading import create_worker

        from ..core.colorize import lightness, suggest_colors

        if self.weights_for("siggraph17") is None:
            show_error("Colorize: suggestions need the siggraph17 weights; "
                       + self.suggest_button.tooltip)
            return None
        if self._suggest_worker is not None:
            return None
        data = self._check_image(self.image.value, "suggest colours")
        if data is None:
            return None
        index = self._target_point() if index is None else int(index)
        if index is None:
            return None
        hints = self.hints()
        r, c, _rgb = hints[index]
        others = [h for k, h in enumerate(hints) if k != index]
        weights = self.weights_paths.get("siggraph17")
        device, hint_size = self.device.value, int(self.hint_size.value)

        def work():  # in the worker thread: no widget access here
            Lum = lightness(np.asarray(data))
            return suggest_colors(Lum, r, c, weights=weights, device=device,
                                  k=N_SUGGESTIONS, hints=others or None, hint_size=hint_size)

        worker = create_worker(work, _start_thread=False, _ignore_errors=True)
        self._suggest_worker = worker

        def on_returned(sugg):
            if self._alive():
                self._show_swatches(sugg, index)

        def on_errored(exc):
            if self._alive():
                show_error(f"Colorize: no suggestions: {exc}")

        def on_finished():
            self._suggest_worker = None
            if self._alive():
                self._update_weights_status()
                self.suggestions_ready.emit(self.suggestions)

        worker.returned.connect(on_returned)
        worker.errored.connect(on_errored)
        worker.finished.connect(on_finished)
        self._update_weights_status()
        self.status.value = f"Suggesting colours for hint {index + 1}..."
        worker.start()
        return worker

    def _show_swatches(self, sugg, index: int) -> None:
        self._clear_swatches()
        self.suggestions = sugg
        self._suggest_index = index
        for k, (rgb, p) in enumerate(zip(sugg.rgb, sugg.probability)):
            hx = _hex(rgb)
            btn = PushButton(name=f"swatch_{k}", text="", tooltip=f"{hx} ({p:.0%})")
            btn.native.setStyleSheet(f"background-color: {hx}; min-width: 14px; "
                                     "min-height: 18px; border: 1px solid #888;")
            btn.changed.connect(lambda *_a, k=k: self.apply_suggestion(k))
            self.swatches.append(btn)
        self.swatches.visible = True
        self.status.value = (f"{len(sugg.rgb)} suggestions for hint {index + 1}: click a swatch "
                             "to use it.")

    def apply_suggestion(self, k: int) -> None:
        """Recolour the point the suggestions were made for with swatch ``k``."""
        points = self.hints_layer.value
        if self.suggestions is None or points is None or self._suggest_index is None:
            return
        i = self._suggest_index
        if i >= len(points.data):
            show_warning("Colorize: that hint point is gone; ask for new suggestions.")
            return
        colours = np.array(points.face_color, copy=True)
        colours[i, :3] = np.clip(self.suggestions.rgb[k], 0.0, 1.0)
        colours[i, 3] = 1.0
        points.face_color = colours

    # ------------------------------------------------------------------------ live updates
    def _schedule(self) -> None:
        """Restart the debounce timer when a live update applies."""
        if self._closed:
            return
        if self.live.value and self.is_fast():
            self._timer.start()

    def _on_debounce(self) -> None:
        if not self._alive() or not (self.live.value and self.is_fast()):
            return
        self.run(live=True)

    # ------------------------------------------------------------------------ running
    def _signature(self, layer, method, hints, hint_size, weights, device) -> tuple:
        hs = tuple((round(r, 2), round(c, 2), _hex(rgb)) for r, c, rgb in hints)
        return (id(layer), layer.name, method, hs, hint_size, str(weights), device,
                _grid_of(layer))

    def _prepare(self, live: bool):
        """Everything a run needs, or None after a message (silent for live no-ops)."""
        from ..core.color import normalize_hints
        from ..core.colorize import DIPColorParams
        from ..core.weights import WeightsError, get_weights

        layer = self.image.value
        method = self.method.value
        mode = self.mode.value
        if live and (layer is None or not self.hints()):
            # nothing to do yet; errors are for explicit runs and actual hints
            if layer is not None:
                self.status.value = "Add a hint: click in the hints layer (add mode)."
            return None
        owner = self.hints_layer.value.metadata.get("source_layer") if live else None
        if live and owner is not None and owner != layer.name:
            # the hints were made for another image: no live run on this one
            self.status.value = (f"The hints layer belongs to {owner!r}; press 'Add hints "
                                 f"layer' for {layer.name!r}, or Run to use these hints.")
            return None
        data = self._check_image(layer)
        if data is None:
            return None
        hints: list = []
        if mode == "hints":
            hints = self.hints()
            if not hints:
                where = ("press 'Add hints layer' and click on the image"
                         if self.hints_layer.value is None
                         else f"click in {self.hints_layer.value.name!r} (add mode)")
                show_error(f"Colorize: method {method!r} needs at least one colour hint; "
                           f"{where}, or switch the mode to automatic.")
                return None
            h, w = data.shape[:2]
            for i, (r, c, _rgb) in enumerate(hints):
                if not (-0.5 <= r < h - 0.5 and -0.5 <= c < w - 0.5):
                    show_error(f"Colorize: hint point {i + 1} is at (row {r:.0f}, col {c:.0f}), "
                               f"outside the {h} x {w} image {layer.name!r}; move it onto "
                               "the image or delete it.")
                    return None
            try:
                normalize_hints(hints, data.shape[:2])
            except (TypeError, ValueError) as exc:
                show_error(f"Colorize: {exc}. Move or delete that point.")
                return None
        hint_size = int(self.hint_size.value)
        if hint_size % 2 == 0:
            show_error(f"Colorize: hint size must be odd (1, 3, 5, ...), got {hint_size}.")
            return None
        weights = None
        if method in NETWORKS:
            weights = self.weights_paths.get(method)
            if self.weights_for(method) is None:
                try:
                    get_weights(method, weights, download=False)
                    msg = f"the {method} weights are missing."
                except WeightsError as exc:
                    msg = str(exc)
                show_error(f"Colorize: {msg}\nOr press 'Download weights' / 'Choose file' in "
                           "the Colorize widget.")
                return None
        device = self.device.value
        sig = self._signature(layer, method, hints, hint_size, weights, device)
        if live and sig == self._last_signature:
            return None
        seed = None
        params = None
        if method == "dip":
            seed = (int(np.random.SeedSequence().generate_state(1)[0])
                    if self.seed.value == SEED_RANDOM else int(self.seed.value))
            params = self.params_override
            if params is None:
                its = int(self.iterations.value)
                ye = 10
                params = DIPColorParams(iterations=its, yield_every=ye,
                                        preview_every=max(ye, (its // 10) // ye * ye))
        return dict(layer=layer, data=data, method=method, mode=mode, hints=hints,
                    hint_size=hint_size, weights=weights, device=device, seed=seed,
                    params=params, signature=sig)

    def run(self, *, start: bool = True, live: bool = False):
        """Colorize with the current fields; returns the napari worker (None if refused).

        A running colorization is superseded: it is asked to stop and its result is
        dropped; the new one starts when it has ended.  With ``start=False`` the worker is
        returned unstarted (connect to it, then call ``worker.start()``).
        """
        from napari.qt.threading import create_worker

        if self._closed:
            return None
        self._timer.stop()
        prep = self._prepare(live)
        if prep is None:
            return None
        gen = colorize_steps(prep["data"], prep["hints"], method=prep["method"],
                             hint_size=prep["hint_size"], weights=prep["weights"],
                             device=prep["device"], seed=prep["seed"], params=prep["params"])
        worker = create_worker(relay, gen, _start_thread=False, _ignore_errors=True)
        layer = prep["layer"]
        job = _Job(worker=worker, gen=gen, method=prep["method"], mode=prep["mode"],
                   name=layer.name, template=L.LayerTemplate.from_layer(layer),
                   n_hints=len(prep["hints"]), hint_size=prep["hint_size"], seed=prep["seed"],
                   live=live, signature=prep["signature"])
        worker.started.connect(lambda: setattr(job, "started", True))
        worker.yielded.connect(lambda item: self._on_yielded(job, item))
        worker.returned.connect(lambda out: self._on_returned(job, out))
        worker.errored.connect(lambda exc: self._on_errored(job, exc))
        worker.finished.connect(lambda: self._on_finished(job))
        # supersede what is running or waiting
        if self._deferred is not None:
            self._deferred = None
        for old in self._jobs:
            old.superseded = True
            old.worker.quit()
        self._current = job
        self._last_signature = job.signature
        self.cancel_button.enabled = True
        self.progress.value = 0
        what = f"{job.method} ({job.n_hints} hints)" if job.mode == "hints" else job.method
        self.status.value = f"Colorizing {job.name!r} with {what}..."
        if not start:
            self._jobs.append(job)  # the caller starts it
        elif self._jobs:
            self._deferred = job
        else:
            self._start(job)
        return worker

    def _start(self, job: _Job) -> None:
        self._jobs.append(job)
        job.worker.start()

    def cancel(self, *_args) -> None:
        """Stop the newest colorization (dip stops at its next step)."""
        job = self._current
        if job is None:
            return
        job.cancelled = True
        job.worker.quit()
        if self._closed:
            return
        self.cancel_button.enabled = False
        if self._deferred is job:  # never started: nothing to wait for
            self._deferred = None
            self.status.value = f"{job.method} cancelled."
            self._last_signature = None
        else:
            self.status.value = "Cancelling..."

    def _on_yielded(self, job: _Job, item: DIPProgress) -> None:
        if job is not self._current or job.cancelled or not self._alive():
            return
        job.last = item
        frac = item.iteration / max(item.iterations, 1)
        self.progress.value = int(round(1000 * frac))
        left = item.elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        self.status.value = (f"dip: iteration {item.iteration}/{item.iterations} · loss "
                             f"{item.loss:.4f} · {_fmt_time(item.elapsed)} elapsed · "
                             f"{_fmt_time(left)} left")
        if item.rgb is not None:
            self._show_result(job, item.rgb, preview=True)

    def _on_returned(self, job: _Job, out: ColorizeOutput) -> None:
        if job is not self._current or job.superseded or job.cancelled or not self._alive():
            return
        job.output = out
        new = [n for n in out.notes if n not in self._warned]
        if new:
            self._warned.update(new)
            one = len(new) == 1
            show_warning(
                "Colorize: " + ("a hint colour cannot be shown at the lightness of its "
                                "pixel; it was" if one else
                                f"{len(new)} hint colours cannot be shown at the lightness of "
                                "their pixels; they were")
                + " pulled into the sRGB gamut (same lightness and hue, less saturated): "
                + "; ".join(new) + ". For a colour as chosen, pick one closer to the "
                "pixel's brightness.")
        self._show_result(job, out.rgb, preview=False)
        self.progress.value = 1000
        what = f"{job.n_hints} hints, " if job.mode == "hints" else ""
        seed = f", seed {job.seed}" if job.seed is not None else ""
        self.status.value = (f"{job.method}: {what}{out.seconds:.2f} s{seed} -> "
                             f"{job.name} {RESULT_TAG}")

    def _on_errored(self, job: _Job, exc: BaseException) -> None:
        exc = unwrap(exc)
        job.failed = True
        self._last_signature = None  # the same hints may be retried
        if job.superseded or not self._alive():
            return
        from ..core.weights import WeightsError

        if isinstance(exc, WeightsError):
            msg = f"Colorize: {exc}"
        elif isinstance(exc, (ValueError, TypeError, MemoryError)):
            msg = f"Colorize {job.method} of {job.name!r}: {exc}"
        else:
            msg = f"Colorize {job.method} of {job.name!r} failed ({type(exc).__name__}): {exc}"
        self.status.value = msg
        show_error(msg)

    def _on_finished(self, job: _Job) -> None:
        if job in self._jobs:
            self._jobs.remove(job)
        try:
            job.gen.close()
        except Exception:  # noqa: BLE001 - pragma: no cover, cleanup must never raise
            pass
        if not self._alive():
            return
        if self._deferred is not None and not self._jobs:
            nxt, self._deferred = self._deferred, None
            self._start(nxt)
            return
        if job is not self._current:
            return
        self.cancel_button.enabled = False
        if job.cancelled:
            kept = " (the result layer keeps the last preview)" if job.last is not None and \
                job.last.rgb is not None else ""
            self.status.value = f"{job.method} cancelled{kept}."
            self._last_signature = None
        result = self._find_result(job.name) if job.output is not None else None
        self.run_finished.emit(result)

    # ------------------------------------------------------------------------ result layer
    def _find_result(self, source: str):
        for layer in self._viewer.layers:
            if (layer.metadata.get(ROLE_KEY) == ROLE_RESULT
                    and layer.metadata.get("source_layer") == source):
                return layer
        return None

    def _show_result(self, job: _Job, rgb: np.ndarray, *, preview: bool) -> None:
        meta = {
            ROLE_KEY: ROLE_RESULT,
            "source_layer": job.name,
            "method": job.method,
            "mode": job.mode,
            "n_hints": job.n_hints,
            "hint_size": job.hint_size,
            "seed": job.seed,
            "preview": preview,
        }
        kw = job.template.grid_kwargs()
        limits = (0, 255) if rgb.dtype == np.uint8 else (0.0, 1.0)
        layer = self._find_result(job.name)
        if layer is not None and layer.rgb and layer.data.shape == rgb.shape:
            layer.data = rgb
            layer.metadata.update(meta)
            if not np.allclose(layer.scale, kw["scale"]):
                layer.scale = kw["scale"]
            if not np.allclose(layer.translate, kw["translate"]):
                layer.translate = kw["translate"]
            if tuple(layer.contrast_limits) != tuple(limits):
                layer.contrast_limits = limits
        else:
            if layer is not None:  # another shape (the image changed): replace it
                self._viewer.layers.remove(layer)
            active = self._viewer.layers.selection.active
            layer = self._viewer.add_image(rgb, name=f"{job.name} {RESULT_TAG}", rgb=True,
                                           contrast_limits=limits, metadata=meta, **kw)
            # just above its image, so the hints stay on top; the hints layer stays active
            src = [i for i, lyr in enumerate(self._viewer.layers) if lyr.name == job.name]
            if src:
                here = self._viewer.layers.index(layer)
                dest = src[0] + 1
                if here != dest:
                    self._viewer.layers.move(here, dest)
            if active is not None and active in self._viewer.layers:
                self._viewer.layers.selection.active = active
        if not preview:
            self.colorized.emit(layer)


def _selectable_text():
    from qtpy.QtCore import Qt

    return Qt.TextInteractionFlag.TextSelectableByMouse
