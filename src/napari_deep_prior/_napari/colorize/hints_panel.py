"""The hints rows of the Colorize widget: the Points layer of hints, CSV files, colour suggestions.

Hints travel as ``(row, col, rgb)`` in the image's pixel coordinates (points are mapped
through world coordinates, so a hints layer on another grid works too).  The image layer is
only read; the hints layer is the user's and is only changed on request (Load hints, a
swatch click).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton, SpinBox
from napari.utils.notifications import show_error, show_info, show_warning

from .. import base
from .. import layers as L

if TYPE_CHECKING:  # pragma: no cover
    from .widget import ColorizeWidget

__all__ = [
    "DEFAULT_HINT_COLOR",
    "HINTS_TAG",
    "N_SUGGESTIONS",
    "ROLE_HINTS",
    "HintsPanel",
    "hex_of",
    "hints_from_points",
    "points_coords",
]

ROLE_HINTS = "color hints"
HINTS_TAG = "[color hints]"
#: Colour of the first hints (a warm orange, visible on grey).
DEFAULT_HINT_COLOR = "#e8803a"
#: Number of colour swatches offered by "Suggest colours".
N_SUGGESTIONS = 9
_POINT_EVENTS = ("data", "face_color", "current_face_color")


def hex_of(rgb) -> str:
    """``'#rrggbb'`` of an RGB(A) float colour (clipped to [0, 1], alpha ignored)."""
    from ...colorization.hints import color_to_hex

    return color_to_hex(np.clip(np.asarray(rgb, np.float64)[:3], 0.0, 1.0))


def grid_of(layer) -> tuple:
    """A layer's (scale, translate), rounded: equal grids compare equal."""
    return (
        tuple(np.round(np.asarray(layer.scale, float), 12)),
        tuple(np.round(np.asarray(layer.translate, float), 12)),
    )


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
    same = (
        grid_of(points) == grid_of(image)
        and points.ndim == image.ndim
        and L._simple_transform(points)
        and L._simple_transform(image)
    )
    out = []
    for pt, rgb in zip(data, colours, strict=True):
        if same:
            rc = pt[-2:]
        else:
            rc = np.asarray(image.world_to_data(points.data_to_world(pt)), dtype=float)[-2:]
        out.append((float(rc[0]), float(rc[1]), rgb.copy()))
    return out


def points_coords(points, image, rows_cols: np.ndarray) -> np.ndarray:
    """Image pixel (row, col) -> data coordinates of a Points layer (inverse of the above)."""
    if len(rows_cols) == 0:
        return np.empty((0, points.ndim))
    out = []
    for rc in rows_cols:
        idx = np.zeros(image.ndim)
        idx[-2:] = rc
        pt = np.asarray(points.world_to_data(image.data_to_world(idx)), dtype=float)
        out.append(pt[-points.ndim :])
    return np.asarray(out)


class HintsPanel:
    """The hints layer, its buttons (add, suggest, save, load), the hint size and the swatches.

    Parameters
    ----------
    owner : ColorizeWidget
        Gives the viewer, the image, mode, device and status fields, the weights panel, the
        ``suggestions_ready`` signal and the live-update schedule.
    """

    def __init__(self, owner: ColorizeWidget):
        self._owner = owner
        self._connected = None
        self._suggest_worker = None
        self._suggest_index: int | None = None
        self.suggestions = None
        self.layer = ComboBox(
            name="hints_layer",
            label="hints layer",
            choices=self._points_choices,
            tooltip="The Points layer holding the hints: each point's face colour is its hint.",
        )
        self.add_button = PushButton(
            name="add_hints_button",
            text="Add hints layer",
            tooltip="Add a Points layer on the image's grid, in add mode: click where a colour "
            "belongs; choose the colour of new points with the layer's face colour.",
        )
        self.suggest_button = PushButton(
            name="suggest_button",
            text="Suggest colours",
            tooltip="Colours the siggraph17 network finds likely at the selected point.",
        )
        self.row = Container(
            name="hint_row",
            widgets=[self.add_button, self.suggest_button],
            layout="horizontal",
            labels=False,
            label=" ",
        )
        self.swatches = Container(name="swatches", widgets=[], layout="horizontal", labels=False, label=" ")
        self.size = SpinBox(
            name="hint_size",
            label="hint size",
            min=1,
            max=15,
            step=2,
            value=5,
            tooltip="Side of each hint's square patch, odd. siggraph17: pixels of the 256 x 256 "
            "grid the network sees; levin and dip: image pixels.",
        )
        self.save_button = PushButton(
            name="save_hints_button", text="Save hints...", tooltip="Write the hints (row, col, #rrggbb) to a CSV file."
        )
        self.load_button = PushButton(
            name="load_hints_button",
            text="Load hints...",
            tooltip="Read hints from a CSV file (row,col,color or row,col,r,g,b) "
            "into the hints layer, replacing its points.",
        )
        self.csv_row = Container(
            name="csv_row", widgets=[self.save_button, self.load_button], layout="horizontal", labels=False, label=" "
        )
        for row in (self.row, self.swatches, self.csv_row):
            row.margins = (0, 0, 0, 0)
        self.add_button.changed.connect(lambda *_: self.add_layer())
        self.suggest_button.changed.connect(lambda *_: self.suggest())
        self.save_button.changed.connect(lambda *_: self.save())
        self.load_button.changed.connect(lambda *_: self.load())

    def mode_widgets(self) -> list:
        """The widgets enabled only in hints mode."""
        return [self.layer, self.add_button, self.size, self.save_button, self.load_button]

    def _points_choices(self, _widget=None):
        from napari.layers import Points

        return [(layer.name, layer) for layer in self._owner._viewer.layers if isinstance(layer, Points)]

    # -- the hints layer ---------------------------------------------------------------------
    def hints(self) -> list[tuple[float, float, np.ndarray]]:
        """The hints ``(row, col, rgb)`` of the hints layer, in the image's pixels."""
        points, image = self.layer.value, self._owner.image.value
        if points is None or image is None:
            return []
        return hints_from_points(points, image)

    def follow(self, points) -> None:
        """Listen to the edits of ``points`` (the selected hints layer; None: stop listening)."""
        old = self._connected
        if old is not None and old is not points:
            self.disconnect()
        if points is not None and points is not old:
            for name in _POINT_EVENTS:  # current_face_color: recolouring with the layer's control
                getattr(points.events, name).connect(self._owner._schedule)
            self._connected = points
        self.clear_swatches()

    def disconnect(self) -> None:
        pts, self._connected = self._connected, None
        if pts is not None:
            for name in _POINT_EVENTS:
                try:
                    getattr(pts.events, name).disconnect(self._owner._schedule)
                except (RuntimeError, TypeError, ValueError):  # pragma: no cover
                    pass

    @property
    def followed(self):
        """The Points layer whose edits are followed."""
        return self._connected

    def add_layer(self):
        """Add "<image> [color hints]": an empty Points layer on the image's grid, in add
        mode, selected; returns it (None after an error message)."""
        owner = self._owner
        image = owner.image.value
        data = owner._check_image(image, "a hints layer")
        if data is None:
            return None
        h, w = data.shape[:2]
        kw = L.LayerTemplate.from_layer(image).grid_kwargs()
        size = max(3, int(round(min(h, w) / 25)))
        points = owner._viewer.add_points(
            np.empty((0, 2)),
            ndim=2,
            name=f"{image.name} {HINTS_TAG}",
            size=size,
            face_color=DEFAULT_HINT_COLOR,
            border_color="white",
            border_width=0.15,
            metadata={base.ROLE_KEY: ROLE_HINTS, "source_layer": image.name},
            **kw,
        )
        points.current_face_color = DEFAULT_HINT_COLOR
        points.mode = "add"
        owner._viewer.layers.selection.active = points
        self.layer.value = points
        if owner.mode.value != "hints":
            owner.mode.value = "hints"
        show_info(
            f"Colorize: click in {points.name!r} where a colour belongs; set the colour "
            "of new (or selected) points with the layer's face colour."
        )
        return points

    # -- CSV -----------------------------------------------------------------------------------
    def save(self, path=None) -> Path | None:
        """Write the hints to a CSV file (``row,col,color``); asks for a path if none."""
        from ...colorization.hints import write_hints_csv

        hints = self.hints()
        if not hints:
            show_warning("Colorize: there are no hints to save; add points to the hints layer.")
            return None
        if path is None:
            path = base.ask_save_file(
                self._owner.native,
                "Save colour hints",
                f"{self._owner.image.value.name} hints.csv",
                "CSV files (*.csv)",
            )
            if not path:
                return None
        try:
            write_hints_csv(path, [(round(r, 3), round(c, 3), hex_of(rgb)) for r, c, rgb in hints])
        except (OSError, ValueError, TypeError) as exc:
            # an OSError is worded by atomic_output: what, why, and that an existing file was kept
            msg = (
                f"Colorize: the hints were not saved: {exc}"
                if isinstance(exc, OSError)
                else (f"Colorize: cannot write the hints to {path}: {exc}")
            )
            self._owner.status.value = msg
            show_error(msg)
            return None
        self._owner.status.value = f"Saved {len(hints)} hints to {path}."
        return Path(path)

    def load(self, path=None):
        """Read hints from a CSV file into the hints layer (made if needed), replacing its
        points; returns the Points layer (None after an error message)."""
        from ...colorization.hints import parse_color, read_hints_csv

        if path is None:
            path = base.ask_open_file(self._owner.native, "Load colour hints", "", "CSV files (*.csv);;All files (*)")
            if not path:
                return None
        try:
            hints = read_hints_csv(path)
        except (OSError, ValueError) as exc:
            show_error(f"Colorize: cannot read hints from {path}: {exc}")
            return None
        points = self.layer.value
        if points is None:
            points = self.add_layer()
        image = self._owner.image.value
        if points is None or image is None:
            return None
        rc = np.array([[float(h.row), float(h.col)] for h in hints]).reshape(-1, 2)
        colours = np.array([[*parse_color(h.color), 1.0] for h in hints]).reshape(-1, 4)
        points.selected_data = set()
        points.data = points_coords(points, image, rc)
        if len(colours):
            points.face_color = colours
        self._owner.status.value = f"Loaded {len(hints)} hints from {path}."
        return points

    # -- suggestions -------------------------------------------------------------------------
    def update_suggest_button(self, *, have_weights: bool, hints_mode: bool, describe: str) -> None:
        """Enable "Suggest colours" when its network's weights are present, in hints mode."""
        self.suggest_button.enabled = hints_mode and have_weights and self._suggest_worker is None
        if not have_weights:
            self.suggest_button.tooltip = (
                f"Needs the siggraph17 weights, {describe}, which are missing: choose method "
                "siggraph17 and press Download weights (or Choose file)."
            )
        elif not hints_mode:
            self.suggest_button.tooltip = "Suggestions are for hints: switch the mode to colour hints."
        else:
            self.suggest_button.tooltip = (
                "Colours the siggraph17 network finds likely at the selected point; click a swatch to use it."
            )

    def clear_swatches(self) -> None:
        self.suggestions = None
        self._suggest_index = None
        self.swatches.clear()
        self.swatches.visible = False

    def _target_point(self) -> int | None:
        points = self.layer.value
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

        from ...colorization.inputs import lightness
        from ...colorization.suggest import SUGGEST_NETWORK, suggest_colors

        owner = self._owner
        if owner.weights_for(SUGGEST_NETWORK) is None:
            show_error(f"Colorize: suggestions need the {SUGGEST_NETWORK} weights; " + self.suggest_button.tooltip)
            return None
        if self._suggest_worker is not None:
            return None
        data = owner._check_image(owner.image.value, "suggest colours")
        if data is None:
            return None
        index = self._target_point() if index is None else int(index)
        if index is None:
            return None
        hints = self.hints()
        r, c, _rgb = hints[index]
        others = [h for k, h in enumerate(hints) if k != index]
        weights = owner.weights_paths.get(SUGGEST_NETWORK)
        device, hint_size = owner.device.value, int(self.size.value)

        def work():  # in the worker thread: no widget access here
            return suggest_colors(
                lightness(np.asarray(data)),
                r,
                c,
                weights=weights,
                device=device,
                k=N_SUGGESTIONS,
                hints=others or None,
                hint_size=hint_size,
            )

        worker = create_worker(work, _start_thread=False, _ignore_errors=True)
        self._suggest_worker = worker

        def on_returned(sugg):
            if owner._alive():
                self._show_swatches(sugg, index)

        def on_errored(exc):
            if owner._alive():
                show_error(f"Colorize: no suggestions: {exc}")

        def on_finished():
            self._suggest_worker = None
            if owner._alive():
                owner._update_weights_status()
                owner.suggestions_ready.emit(self.suggestions)

        worker.returned.connect(on_returned)
        worker.errored.connect(on_errored)
        worker.finished.connect(on_finished)
        owner._update_weights_status()
        owner.status.value = f"Suggesting colours for hint {index + 1}..."
        worker.start()
        return worker

    def _show_swatches(self, sugg, index: int) -> None:
        self.clear_swatches()
        self.suggestions = sugg
        self._suggest_index = index
        for k, (rgb, p) in enumerate(zip(sugg.rgb, sugg.probability, strict=True)):
            hx = hex_of(rgb)
            btn = PushButton(name=f"swatch_{k}", text="", tooltip=f"{hx} ({p:.0%})")
            btn.native.setStyleSheet(
                f"background-color: {hx}; min-width: 14px; min-height: 18px; border: 1px solid #888;"
            )
            btn.changed.connect(lambda *_a, k=k: self.apply_suggestion(k))
            self.swatches.append(btn)
        self.swatches.visible = True
        self._owner.status.value = f"{len(sugg.rgb)} suggestions for hint {index + 1}: click a swatch to use it."

    def apply_suggestion(self, k: int) -> None:
        """Recolour the point the suggestions were made for with swatch ``k``."""
        points = self.layer.value
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
