"""The "Colorize" dock widget: automatic and point-and-click colorization of a grey image.

A thin front end over the colorizer registry (:mod:`napari_deep_prior.colorization.api`): the
method lists, what each method needs (hints, weights) and whether it can follow hint edits
live all come from there, and a run is the colorizer's own ``steps()`` in a napari worker
(:mod:`.runner`).  The user picks a 2D image and a mode:

* **automatic**: a pretrained network (``eccv16`` or ``siggraph17``) colours the whole image;
* **colour hints**: "Add hints layer" makes a Points layer "<image> [color hints]" on the
  image's grid, in *add* mode (:mod:`.hints_panel`).  Every point is a hint; its face colour
  is the colour the pixel should have.  With a live method (``levin``; ``siggraph17`` once
  its weights are present) the result layer "<image> [colorized]" follows every add / move /
  recolour / delete a moment later (debounced with a QTimer; a newer edit supersedes a
  running computation).  The slow ``dip`` method waits for Run, shows its progress and can
  be cancelled.  Its previews go to a transient layer "<image> [colorize preview]" just above
  the result layer, so an earlier result is never overwritten by a run that does not finish:
  on success the result layer gets the new image (the preview layer becomes the result layer
  when there is none yet) and the preview layer goes; a failed run only removes the preview
  layer; a cancelled run keeps its last preview as "<image> [colorized] (cancelled)" (metadata
  ``cancelled: True``), put below the earlier result, which stays as it was.

The image layer is only read.  Every user error is a napari notification, never an exception.

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

import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, ProgressBar, PushButton, SpinBox
from napari.utils.notifications import show_error, show_warning
from psygnal import Signal

from ...arrays import format_duration, new_seed
from ...colorization.api import REGISTRY
from ...colorization.suggest import SUGGEST_NETWORK
from ...errors import reword
from .. import base
from .. import layers as L
from .._workers import unwrap
from .hints_panel import ROLE_HINTS, HintsPanel, grid_of, hex_of
from .runner import ColorizeOutput, Job, JobRunner, colorize_job
from .weights_panel import WeightsPanel

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = [
    "CANCELLED_SUFFIX",
    "ColorizeWidget",
    "DEBOUNCE_MS",
    "PREVIEW_TAG",
    "RESULT_TAG",
    "ROLE_PREVIEW",
    "ROLE_RESULT",
]

#: ``metadata[ROLE_KEY]`` of the result layers (and of the layers keeping a cancelled run's last preview).
ROLE_RESULT = "colorized"
RESULT_TAG = "[colorized]"
#: ``metadata[ROLE_KEY]`` of the transient preview layer of a run (the restore widget's preview role).
ROLE_PREVIEW = "preview"
PREVIEW_TAG = "[colorize preview]"
#: Name suffix of the layer keeping a cancelled run's last preview.
CANCELLED_SUFFIX = "(cancelled)"
#: Quiet time after the last hint edit before a live re-colorization starts.
DEBOUNCE_MS = 300
SEED_RANDOM = -1
#: dip (iterative methods): a progress step every this many iterations.
YIELD_EVERY = 10
#: Widget fields named otherwise than the API parameter they fill (widget name -> API name).
FIELD_ALIASES = {"hints_layer": "hints"}


class ColorizeWidget(base.LayerListFollower, Container):
    """Dock widget colorizing a grey 2D Image layer, automatically or from colour hints.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer

    Attributes
    ----------
    image, mode, method, hints_layer, hint_size, live, iterations, seed, device : magicgui widgets
        Set their ``.value`` to drive the widget from a script.  ``mode`` is
        ``"automatic"`` or ``"hints"`` (set it before ``method``: automatic offers the
        registry's automatic methods, hints those that take hints); ``hint_size``
        is the odd side of each hint's square (pixels of the 256 x 256 network grid for
        siggraph17, image pixels otherwise); ``live`` re-colorizes after each hint edit
        with a live method; ``iterations`` and ``seed`` are for the iterative ``dip``
        (``seed = -1`` draws one).
    params_override : dataclass or None
        For scripts and tests: the iterative method's settings (instead of the iterations field).
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

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        from qtpy.QtCore import QTimer

        from ...device import available_devices

        self._viewer = napari_viewer
        self._closed = False
        self._last_signature: tuple | None = None
        self._warned: set[str] = set()
        self._preview_layer = None  # the transient preview layer of the newest run (see _show_preview)
        self.params_override = None
        self._runner = JobRunner(
            alive=self._alive,
            on_step=self._on_step,
            on_result=self._on_result,
            on_error=self._on_error,
            on_end=self._on_end,
        )

        self.image = ComboBox(
            name="image",
            label="image",
            choices=self._image_choices,
            tooltip="The grey 2D image to colorize (an RGB image is re-coloured from its "
            "lightness). It is never modified: the result is a new RGB layer.",
        )
        self.mode = ComboBox(
            name="mode",
            label="mode",
            value="hints",
            choices=[("automatic", "automatic"), ("colour hints", "hints")],
            tooltip="automatic: a pretrained network colours the whole image. colour hints: "
            "click points on a hints layer and give each the colour it should have.",
        )
        self.method = ComboBox(
            name="method",
            label="method",
            choices=self._method_choices,
            tooltip=" ".join(c.description for c in REGISTRY.values()),
        )
        self._hints = HintsPanel(self)
        self.live = CheckBox(
            name="live",
            text="update automatically",
            value=True,
            tooltip="With a live method ("
            + ", ".join(c.name for c in REGISTRY.values() if c.live)
            + "; the networks once their weights are present) re-colorize a moment after "
            "every added, moved, recoloured or deleted hint.",
        )
        self.iterations = SpinBox(
            name="iterations",
            label="iterations",
            min=10,
            max=100_000,
            step=50,
            value=200,
            tooltip="dip only: optimisation steps of the fit.",
        )
        self.seed = SpinBox(
            name="seed",
            label="seed",
            min=SEED_RANDOM,
            max=2**31 - 2,
            value=SEED_RANDOM,
            tooltip="dip only: random seed (the same seed gives the same result on the CPU); "
            "-1 draws one (stored in the result's metadata).",
        )
        self.device = ComboBox(
            name="device",
            label="device",
            choices=["auto", *available_devices()],
            value="auto",
            tooltip="Where to compute: auto picks a GPU if any.",
        )
        self._weights = WeightsPanel(
            None,
            alive=self._alive,
            on_change=self._on_weights_changed,
            on_download_finished=self.download_finished.emit,
        )
        self.run_button = PushButton(name="run_button", text="Run", tooltip="Colorize now.")
        self.cancel_button = PushButton(
            name="cancel_button", text="Cancel", enabled=False, tooltip="Stop the running colorization."
        )
        buttons = Container(
            name="buttons", widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False, label=" "
        )
        buttons.margins = (0, 0, 0, 0)
        self.progress = ProgressBar(name="progress", label="progress", min=0, max=1000, value=0)
        self.status = Label(name="status", label=" ", value="Ready.")
        hp, wp = self._hints, self._weights
        super().__init__(
            widgets=[
                self.image,
                self.mode,
                self.method,
                hp.layer,
                hp.row,
                hp.swatches,
                hp.size,
                self.live,
                self.iterations,
                self.seed,
                self.device,
                *wp.widgets(),
                hp.csv_row,
                buttons,
                self.progress,
                self.status,
            ],
            labels=True,
        )
        wp._parent = self.native
        wp.setup_native()
        # the parts' buttons and labels, under the names scripts and tests know
        self.add_hints_button, self.suggest_button = hp.add_button, hp.suggest_button
        self.save_hints_button, self.load_hints_button = hp.save_button, hp.load_button
        self.download_button, self.choose_weights_button = wp.download_button, wp.choose_button
        # (weights_status and download_progress are rows of this container: found by name)
        self.progress.native.setFormat("%p%")
        self.status.native.setWordWrap(True)
        self.status.native.setAlignment(base.align_left())
        self.status.native.setSizePolicy(base.expanding(), self.status.native.sizePolicy().verticalPolicy())

        self._timer = QTimer(self.native)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self._on_debounce)

        wp.download_button.changed.connect(lambda *_: self._on_download_clicked())
        wp.choose_button.changed.connect(lambda *_: self.choose_weights_file())
        self.run_button.changed.connect(lambda *_: self.run())
        self.cancel_button.changed.connect(lambda *_: self.cancel())
        self.mode.changed.connect(self._on_mode_changed)
        self.method.changed.connect(self._on_method_changed)
        self.image.changed.connect(self._on_image_changed)
        hp.layer.changed.connect(self._on_hints_layer_changed)
        hp.size.changed.connect(self._schedule)
        self.live.changed.connect(self._schedule)
        self._follow_layers()
        self._on_mode_changed(self.mode.value)
        self._on_image_changed(self.image.value)

    # ------------------------------------------------------------------------ parts
    @property
    def hints_layer(self) -> ComboBox:
        return self._hints.layer

    @property
    def hint_size(self) -> SpinBox:
        return self._hints.size

    @property
    def swatches(self) -> Container:
        return self._hints.swatches

    @property
    def suggestions(self):
        return self._hints.suggestions

    @property
    def weights_paths(self) -> dict:
        return self._weights.paths

    # ------------------------------------------------------------------------ choices
    def _image_choices(self, _widget=None):
        from napari.layers import Image

        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Image) and layer.metadata.get(base.ROLE_KEY) not in (ROLE_RESULT, ROLE_PREVIEW)
        ]

    def _method_choices(self, _widget=None):
        try:
            mode = self.mode.value
        except AttributeError:  # during construction
            mode = "hints"
        return [
            (c.title, c.name) for c in REGISTRY.values() if (c.automatic if mode == "automatic" else c.accepts_hints)
        ]

    # ------------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        """A colorization is being computed."""
        return self._runner.running

    @property
    def last_worker(self):
        """The napari worker of the newest colorization (None before the first)."""
        job = self._runner.current
        return None if job is None else job.worker

    @property
    def result_layer(self):
        """The "<image> [colorized]" layer of the selected image, if there is one (never a cancelled run's)."""
        layer = self.image.value
        return None if layer is None else self._find_result(layer.name)

    def colorizer(self, method: str | None = None):
        """The registered colorizer of ``method`` (default: the selected one)."""
        return REGISTRY[self.method.value if method is None else method]

    def network(self) -> str:
        """The network the weights row is about: the method if it needs weights, else the
        one giving the colour suggestions."""
        m = self.method.value
        return m if m is not None and REGISTRY[m].needs_weights else SUGGEST_NETWORK

    def weights_for(self, name: str) -> Path | None:
        """The weight file that will be used for network ``name``, or None if missing."""
        return self._weights.weights_for(name)

    def _usable(self, colorizer) -> bool:
        return not colorizer.needs_weights or self.weights_for(colorizer.name) is not None

    def is_fast(self, method: str | None = None) -> bool:
        """True for the methods that update live (levin; siggraph17 with its weights)."""
        c = self.colorizer(method)
        return self.mode.value == "hints" and c.live and self._usable(c)

    def _shutdown(self) -> None:
        try:
            self._timer.stop()
        except RuntimeError:  # the QTimer went with the widget
            pass
        self._runner.stop_all()
        self._weights.cancel_download()
        self._hints.disconnect()

    # ------------------------------------------------------------------------ field events
    def _on_mode_changed(self, mode) -> None:
        if self._closed:
            return
        # refill in the registry's order (a plain reset keeps the items both modes share in place)
        with self.method.changed.blocked():
            blocked = self.method.native.blockSignals(True)
            self.method.native.clear()
            self.method.native.blockSignals(blocked)
        self.method.reset_choices()
        names = [value for _title, value in self._method_choices()]
        if mode == "hints":
            live = [n for n in names if REGISTRY[n].live and self._usable(REGISTRY[n])]
            self.method.value = (live or names)[0]
        else:
            self.method.value = names[0]
        for w in (*self._hints.mode_widgets(), self.live):
            w.enabled = mode == "hints"
        self._on_method_changed(self.method.value)

    def _on_method_changed(self, method) -> None:
        if self._closed or method is None:
            return
        c = self.colorizer(method)
        self.iterations.visible = c.iterative
        self.seed.visible = c.iterative
        self.live.enabled = self.mode.value == "hints" and c.live
        self._update_weights_status()
        self._hints.clear_swatches()
        self._schedule()

    def _on_image_changed(self, layer) -> None:
        if self._closed or layer is None:
            return
        # the image's own hints layer, if it has one, becomes the hints layer
        for cand in self._viewer.layers:
            if cand.metadata.get(base.ROLE_KEY) == ROLE_HINTS and cand.metadata.get("source_layer") == layer.name:
                self.hints_layer.value = cand
                break
        self._schedule()

    def _on_hints_layer_changed(self, points) -> None:
        if self._closed:
            return
        self._hints.follow(points)
        self._schedule()

    def _layer_added(self, layer) -> None:
        from napari.layers import Image, Points

        role = layer.metadata.get(base.ROLE_KEY)
        if isinstance(layer, Image) and role is None:
            self.image.value = layer
        elif isinstance(layer, Points) and (role == ROLE_HINTS or self.hints_layer.value is None):
            self.hints_layer.value = layer

    def _layer_gone(self, layer) -> None:
        if self._preview_layer is not None and layer is self._preview_layer:
            # the user removed the preview layer: the running job shows no more previews
            self._preview_layer = None
            job = self._runner.current
            if job is not None:
                job.preview_dropped = True
        if self._hints.followed is not None and layer is self._hints.followed:
            self._on_hints_layer_changed(None)

    # ------------------------------------------------------------------------ weights
    def _update_weights_status(self) -> None:
        from ...colorization.weights import weights_info

        if self._closed:
            return
        name = self.network()
        self._weights.update(name, for_method=self.method.value == name)
        self._hints.update_suggest_button(
            have_weights=self.weights_for(SUGGEST_NETWORK) is not None,
            hints_mode=self.mode.value == "hints",
            describe=weights_info(SUGGEST_NETWORK).describe(),
        )

    def _on_weights_changed(self) -> None:
        self._update_weights_status()
        self._schedule()

    def set_weights_file(self, path, name: str | None = None) -> Path | None:
        """Use ``path`` (a weight file, or a folder holding it) for network ``name``
        (default: :meth:`network`).  Returns the file, or None after an error message."""
        return self._weights.set_file(path, name or self.network())

    def choose_weights_file(self) -> Path | None:
        """Ask for a weights file (file dialog) for the selected network."""
        return self._weights.choose_file(self.network())

    def _on_download_clicked(self) -> None:
        if self._weights.downloading:
            self.cancel_download()
        else:
            self.download_weights()

    def download_weights(self, name: str | None = None, *, start: bool = True):
        """Download the published weights of ``name`` (default: :meth:`network`) in a
        worker, with progress; returns the worker (None if one is already running)."""
        from ...colorization.weights import weights_info

        name = name or self.network()
        worker = self._weights.download(name, start=start)
        if worker is not None:
            info = weights_info(name)
            self.status.value = f"Downloading {info.describe()} from {info.url} ..."
        return worker

    def cancel_download(self) -> None:
        """Stop the running download."""
        self._weights.cancel_download()

    # ------------------------------------------------------------------------ hints
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
        """Add "<image> [color hints]" on the image's grid, in add mode (see :class:`.HintsPanel`)."""
        return self._hints.add_layer()

    def hints(self) -> list[tuple[float, float, np.ndarray]]:
        """The hints ``(row, col, rgb)`` of the hints layer, in the image's pixels."""
        return self._hints.hints()

    def save_hints(self, path=None) -> Path | None:
        """Write the hints to a CSV file (``row,col,color``); asks for a path if none."""
        return self._hints.save(path)

    def load_hints(self, path=None):
        """Read hints from a CSV file into the hints layer (made if needed); returns it."""
        return self._hints.load(path)

    def suggest(self, index: int | None = None):
        """Colour suggestions for a hint point in a worker; returns the worker."""
        return self._hints.suggest(index)

    def apply_suggestion(self, k: int) -> None:
        """Recolour the point the suggestions were made for with swatch ``k``."""
        self._hints.apply_suggestion(k)

    # ------------------------------------------------------------------------ live updates
    def _schedule(self, *_args) -> None:
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
        hs = tuple((round(r, 2), round(c, 2), hex_of(rgb)) for r, c, rgb in hints)
        return (id(layer), layer.name, method, hs, hint_size, str(weights), device, grid_of(layer))

    def _check_hints(self, layer, data, method) -> list | None:
        """The hints of a hints-mode run, or None after an error message."""
        from ...colorization.hints import CSVHint, normalize_hints

        hints = self.hints()
        if not hints:
            where = (
                "press 'Add hints layer' and click on the image"
                if self.hints_layer.value is None
                else f"click in {self.hints_layer.value.name!r} (add mode)"
            )
            show_error(
                f"Colorize: method {method!r} needs at least one colour hint; {where}, or switch the mode to automatic."
            )
            return None
        h, w = data.shape[:2]
        for i, (r, c, _rgb) in enumerate(hints):
            if not (-0.5 <= r < h - 0.5 and -0.5 <= c < w - 0.5):
                show_error(
                    f"Colorize: {_point_name(i)} is at (row {r:.0f}, col {c:.0f}), "
                    f"outside the {h} x {w} image {layer.name!r}; move it onto "
                    "the image or delete it."
                )
                return None
        try:
            # the core names a hint by its ``where`` (else "hints[i]", a Python index): give it the
            # widget's own name for the point, as in the message above
            normalize_hints([CSVHint(r, c, rgb, where=_point_name(i)) for i, (r, c, rgb) in enumerate(hints)], (h, w))
        except (TypeError, ValueError) as exc:
            show_error(f"Colorize: {exc}. Move or delete that point.")
            return None
        return hints

    def _check_weights(self, colorizer) -> bool:
        from ...colorization.weights import WeightsError, get_weights

        if self._usable(colorizer):
            return True
        try:
            get_weights(colorizer.name, self.weights_paths.get(colorizer.name), download=False)
            msg = f"the {colorizer.name} weights are missing."
        except WeightsError as exc:
            msg = str(exc)
        show_error(f"Colorize: {msg}\nOr press 'Download weights' / 'Choose file' in the Colorize widget.")
        return False

    def _params(self, colorizer):
        """The iterative method's settings from the iterations field (or params_override)."""
        if self.params_override is not None:
            return self.params_override
        its = int(self.iterations.value)
        return dataclasses.replace(
            colorizer.params_type(),
            iterations=its,
            yield_every=YIELD_EVERY,
            preview_every=max(YIELD_EVERY, (its // 10) // YIELD_EVERY * YIELD_EVERY),
        )

    def _prepare(self, live: bool):
        """Everything a run needs, or None after a message (silent for live no-ops)."""
        from ...colorization.base import ColorizeOptions

        layer = self.image.value
        colorizer = self.colorizer()
        mode = self.mode.value
        if live and (layer is None or not self.hints()):
            # nothing to do yet; errors are for explicit runs and actual hints
            if layer is not None:
                self.status.value = "Add a hint: click in the hints layer (add mode)."
            return None
        owner = self.hints_layer.value.metadata.get("source_layer") if live else None
        if live and owner is not None and owner != layer.name:
            # the hints were made for another image: no live run on this one
            self.status.value = (
                f"The hints layer belongs to {owner!r}; press 'Add hints "
                f"layer' for {layer.name!r}, or Run to use these hints."
            )
            return None
        data = self._check_image(layer)
        if data is None:
            return None
        hints: list = []
        if mode == "hints":
            hints = self._check_hints(layer, data, colorizer.name)
            if hints is None:
                return None
        hint_size = int(self.hint_size.value)
        if hint_size % 2 == 0:
            show_error(f"Colorize: hint size must be odd (1, 3, 5, ...), got {hint_size}.")
            return None
        if not self._check_weights(colorizer):
            return None
        weights = self.weights_paths.get(colorizer.name) if colorizer.needs_weights else None
        device = self.device.value
        sig = self._signature(layer, colorizer.name, hints, hint_size, weights, device)
        if live and sig == self._last_signature:
            return None
        seed = params = None
        if colorizer.iterative:
            seed = new_seed() if self.seed.value == SEED_RANDOM else int(self.seed.value)
            params = self._params(colorizer)
        options = ColorizeOptions(hint_size=hint_size, weights=weights, device=device, seed=seed, params=params)
        return dict(layer=layer, data=data, colorizer=colorizer, mode=mode, hints=hints, options=options, signature=sig)

    def run(self, *, start: bool = True, live: bool = False):
        """Colorize with the current fields; returns the napari worker (None if refused).

        A running colorization is superseded: it is asked to stop and its result is
        dropped; the new one starts when it has ended.  With ``start=False`` the worker is
        returned unstarted (connect to it, then call ``worker.start()``).
        """
        if self._closed:
            return None
        self._timer.stop()
        prep = self._prepare(live)
        if prep is None:
            return None
        opts, layer = prep["options"], prep["layer"]
        gen = colorize_job(prep["colorizer"], prep["data"], prep["hints"], opts)
        job = self._runner.make(
            gen,
            method=prep["colorizer"].name,
            mode=prep["mode"],
            name=layer.name,
            template=L.LayerTemplate.from_layer(layer),
            n_hints=len(prep["hints"]),
            hint_size=opts.hint_size,
            seed=opts.seed,
            live=live,
            signature=prep["signature"],
        )
        self._last_signature = job.signature
        self.cancel_button.enabled = True
        self.progress.value = 0
        what = f"{job.method} ({job.n_hints} hints)" if job.mode == "hints" else job.method
        self.status.value = f"Colorizing {job.name!r} with {what}..."
        self._runner.submit(job, start=start)
        return job.worker

    def cancel(self, *_args) -> None:
        """Stop the newest colorization (dip stops at its next step)."""
        never_started = self._runner.deferred is not None and self._runner.deferred is self._runner.current
        job = self._runner.cancel()
        if job is None or self._closed:
            return
        self.cancel_button.enabled = False
        if never_started:
            self._drop_preview()  # a superseded run's preview: the run meant to follow it never started
            self.status.value = f"{job.method} cancelled."
            self._last_signature = None
        else:
            self.status.value = "Cancelling..."

    def _on_step(self, job: Job, step) -> None:
        frac = step.iteration / max(step.iterations, 1)
        self.progress.value = int(round(1000 * frac))
        if step.iterations > 1:
            left = step.elapsed * (1 - frac) / frac if frac > 0 else float("nan")
            loss = "" if step.loss is None else f" · loss {step.loss:.4f}"
            self.status.value = (
                f"{job.method}: iteration {step.iteration}/{step.iterations}{loss} · "
                f"{format_duration(step.elapsed)} elapsed · {format_duration(left)} left"
            )
        if step.preview is not None:
            job.last_preview, job.preview_iteration = step.preview, step.iteration
            if not job.preview_dropped:
                self._show_preview(job, step.preview)

    def _on_result(self, job: Job, out: ColorizeOutput) -> None:
        new = [n for n in out.notes if n not in self._warned]
        if new:
            self._warned.update(new)
            one = len(new) == 1
            show_warning(
                "Colorize: "
                + (
                    "a hint colour cannot be shown at the lightness of its pixel; it was"
                    if one
                    else f"{len(new)} hint colours cannot be shown at the lightness of their pixels; they were"
                )
                + " pulled into the sRGB gamut (same lightness and hue, less saturated): "
                + "; ".join(new)
                + ". For a colour as chosen, pick one closer to the "
                "pixel's brightness."
            )
        self._show_result(job, out.rgb)
        self.progress.value = 1000
        what = f"{job.n_hints} hints, " if job.mode == "hints" else ""
        seed = f", seed {job.seed}" if job.seed is not None else ""
        self.status.value = f"{job.method}: {what}{out.seconds:.2f} s{seed} -> {job.name} {RESULT_TAG}"

    def _on_error(self, job: Job, exc: BaseException) -> None:
        from ...colorization.weights import WeightsError

        exc = unwrap(exc)
        self._last_signature = None  # the same hints may be retried
        if job.superseded or not self._alive():
            return
        if isinstance(exc, WeightsError):
            msg = f"Colorize: {exc}"
        elif isinstance(exc, (ValueError, TypeError, MemoryError)):
            msg = f"Colorize {job.method} of {job.name!r}: {self.explain(exc)}"
        else:
            msg = f"Colorize {job.method} of {job.name!r} failed ({type(exc).__name__}): {self.explain(exc)}"
        self.status.value = msg
        show_error(msg)

    def _on_end(self, job: Job) -> None:
        self.cancel_button.enabled = False
        if job.cancelled:
            kept = self._keep_cancelled(job)
            msg = f"{job.method} cancelled"
            if kept is not None:
                msg += f" at iteration {job.preview_iteration}; its last preview is kept as {kept.name!r}"
            if self._find_result(job.name) is not None:
                msg += f"; {job.name} {RESULT_TAG} is unchanged"
            self.status.value = msg + "."
            self._last_signature = None
        self._drop_preview()  # a failed run (or a cancelled one without a preview) leaves none behind
        result = self._find_result(job.name) if job.output is not None else None
        self.run_finished.emit(result)

    def field_labels(self) -> dict[str, str]:
        """API parameter names -> this widget's field labels (``hint_size`` -> "hint size")."""
        return base.field_labels(self, FIELD_ALIASES)

    def explain(self, exc: BaseException) -> str:
        """The message of ``exc`` in the widget's words: a parameter is named by its field's label."""
        return reword(exc, self.field_labels())

    # ------------------------------------------------------------------------ result layer
    def _find_result(self, source: str):
        """The result layer of ``source`` (a cancelled run's kept preview is not one)."""
        for layer in self._viewer.layers:
            meta = layer.metadata
            if (
                meta.get(base.ROLE_KEY) == ROLE_RESULT
                and meta.get("source_layer") == source
                and not meta.get("cancelled", False)
            ):
                return layer
        return None

    @staticmethod
    def _meta(job: Job) -> dict:
        from ...colorization.api import get_colorizer
        from ...colorization.weights import weights_info
        from ...provenance import LAYER_KEY, colorize_provenance

        colorizer = get_colorizer(job.method)
        return {
            base.ROLE_KEY: ROLE_RESULT,
            "source_layer": job.name,
            "method": job.method,
            "mode": job.mode,
            "n_hints": job.n_hints,
            "hint_size": job.hint_size,
            "seed": job.seed,
            LAYER_KEY: colorize_provenance(
                job.method,
                input_name=job.name,
                hints=range(job.n_hints),
                hint_size=job.hint_size,
                seed=job.seed if colorizer.iterative else None,
                weights=weights_info(job.method).filename if colorizer.needs_weights else None,
                extra={"mode": job.mode},
            ),
        }

    @contextmanager
    def _keeping_active(self):
        """Adding, moving or removing layers leaves the active layer (usually the hints) as it was."""
        layers = self._viewer.layers
        active = layers.selection.active
        try:
            yield
        finally:
            if active is not None and active in layers and layers.selection.active is not active:
                layers.selection.active = active

    def _add_layer(self, job: Job, rgb: np.ndarray, name: str, meta: dict):
        """A new RGB layer on the image's grid, just above the image and its colorize layers
        (so the hints stay on top)."""
        layers = self._viewer.layers
        below = [
            i
            for i, lyr in enumerate(layers)
            if lyr.name == job.name
            or (lyr.metadata.get(base.ROLE_KEY) == ROLE_RESULT and lyr.metadata.get("source_layer") == job.name)
        ]
        layer = self._viewer.add_image(
            rgb, name=name, rgb=True, contrast_limits=_limits(rgb), metadata=meta, **job.template.grid_kwargs()
        )
        if below:
            here, dest = layers.index(layer), max(below) + 1
            if here != dest:
                layers.move(here, dest)
        return layer

    @staticmethod
    def _refill(layer, job: Job, rgb: np.ndarray, meta: dict, *, replace_meta: bool) -> None:
        """New data (and metadata, grid, limits) in one of the plugin's own layers."""
        kw = job.template.grid_kwargs()
        layer.data = rgb
        if replace_meta:
            layer.metadata.clear()
        layer.metadata.update(meta)
        if not np.allclose(layer.scale, kw["scale"]):
            layer.scale = kw["scale"]
        if not np.allclose(layer.translate, kw["translate"]):
            layer.translate = kw["translate"]
        limits = _limits(rgb)
        if tuple(layer.contrast_limits) != tuple(limits):
            layer.contrast_limits = limits

    def _preview_alive(self):
        layer = self._preview_layer
        if layer is not None and layer not in self._viewer.layers:
            self._preview_layer = layer = None
        return layer

    def _drop_preview(self) -> None:
        """Remove the preview layer, if any."""
        layer, self._preview_layer = self._preview_alive(), None
        if layer is not None:
            with self._keeping_active():
                self._viewer.layers.remove(layer)

    def _show_preview(self, job: Job, rgb: np.ndarray) -> None:
        """Show a step's estimate in the preview layer (made at the first preview; the result
        layer is not touched until the run has finished)."""
        meta = {**self._meta(job), base.ROLE_KEY: ROLE_PREVIEW, "iteration": job.preview_iteration}
        name = f"{job.name} {PREVIEW_TAG}"
        layer = self._preview_alive()
        if (
            layer is not None
            and layer.rgb
            and layer.data.shape == rgb.shape
            and layer.metadata.get("source_layer") == job.name  # not left by a run on another image
        ):
            self._refill(layer, job, rgb, meta, replace_meta=True)
            return
        with self._keeping_active():
            if layer is not None:
                self._drop_preview()
            self._preview_layer = self._add_layer(job, rgb, name, meta)

    def _show_result(self, job: Job, rgb: np.ndarray) -> None:
        """A finished run: its image goes to the result layer (made if needed); the preview goes."""
        meta = self._meta(job)
        preview, self._preview_layer = self._preview_alive(), None
        layers = self._viewer.layers
        with self._keeping_active():
            layer = self._find_result(job.name)
            if layer is not None and layer.rgb and layer.data.shape == rgb.shape:
                # the plugin's own result layer: updated in place (never the user's layers)
                self._refill(layer, job, rgb, meta, replace_meta=False)
                if preview is not None:
                    layers.remove(preview)
            else:
                if layer is not None:  # another shape (the image changed): replace it
                    layers.remove(layer)
                if preview is not None and preview.rgb and preview.data.shape == rgb.shape:
                    # the preview layer becomes the result (no new layer to build)
                    layer = preview
                    self._refill(layer, job, rgb, meta, replace_meta=True)
                    layer.name = f"{job.name} {RESULT_TAG}"
                else:
                    if preview is not None:
                        layers.remove(preview)
                    layer = self._add_layer(job, rgb, f"{job.name} {RESULT_TAG}", meta)
        self.colorized.emit(layer)

    def _keep_cancelled(self, job: Job):
        """A cancelled run's last preview as its own layer (None without one).  It goes below
        the earlier result, which is left as it was, so the canvas shows that result again."""
        rgb = job.last_preview
        if rgb is None:
            return None
        meta = {**self._meta(job), "cancelled": True, "iteration": job.preview_iteration}
        name = f"{job.name} {RESULT_TAG} {CANCELLED_SUFFIX}"
        preview, self._preview_layer = self._preview_alive(), None
        layers = self._viewer.layers
        with self._keeping_active():
            if preview is not None and preview.rgb and preview.data.shape == rgb.shape:
                layer = preview
                self._refill(layer, job, rgb, meta, replace_meta=True)
                layer.name = name
            else:
                if preview is not None:
                    layers.remove(preview)
                layer = self._add_layer(job, rgb, name, meta)
            earlier = self._find_result(job.name)
            if earlier is not None:
                here, dest = layers.index(layer), layers.index(earlier)
                if here > dest:
                    layers.move(here, dest)
        return layer


def _point_name(i: int) -> str:
    """How the widget names the ``i``-th point of the hints layer (0-based ``i``): "hint point 1" for the first."""
    return f"hint point {i + 1}"


def _limits(rgb: np.ndarray) -> tuple:
    return (0, 255) if rgb.dtype == np.uint8 else (0.0, 1.0)
