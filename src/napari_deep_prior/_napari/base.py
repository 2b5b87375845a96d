"""What the plugin's dock widgets share: following the viewer's layer list, small Qt helpers.

:class:`LayerListFollower` is a mixin for a magicgui ``Container`` dock widget that keeps its
layer choices in step with ``viewer.layers`` (inserted, removed, moved, renamed layers), and
stops touching Qt once the viewer or the widget is gone.  A subclass sets ``self._viewer``
and ``self._closed = False``, calls :meth:`LayerListFollower._follow_layers` at the end of
its ``__init__``, and overrides the hooks it needs:

- :meth:`~LayerListFollower._layer_added`: a layer the user just added (pick it as input...);
- :meth:`~LayerListFollower._layer_gone`: a layer was removed (forget references to it);
- :meth:`~LayerListFollower._shutdown`: the viewer or the widget is gone (stop workers,
  disconnect your own signals; touch no widget).
"""

from __future__ import annotations

from . import layers as L

__all__ = [
    "ROLE_KEY",
    "LayerListFollower",
    "align_left",
    "ask_open_file",
    "ask_save_file",
    "expanding",
    "field_labels",
    "selectable_text",
]

#: Metadata key marking the layers this plugin creates (its value names the layer's role).
ROLE_KEY = "dip_role"


class LayerListFollower:
    """Mixin: a dock widget whose choices follow ``self._viewer.layers`` (see the module docstring)."""

    _viewer: object
    _closed: bool = False
    _shut_down: bool = False

    def _follow_layers(self) -> None:
        """Connect to the layer list, every layer's name and the widget's destruction."""
        for emitter, cb in L.layer_list_callbacks(self._viewer, self):
            emitter.connect(cb)
        for layer in self._viewer.layers:
            layer.events.name.connect(self._refresh_choices)
        self.native.destroyed.connect(self._on_destroyed)

    # -- hooks -----------------------------------------------------------------------------
    def _layer_added(self, layer) -> None:
        """A layer was inserted (the widget is alive and its choices are refreshed)."""

    def _layer_gone(self, layer) -> None:
        """A layer was removed (called before the choices are refreshed)."""

    def _shutdown(self) -> None:
        """The viewer or this widget is gone: stop workers and timers; touch no widget."""

    # -- the machinery -----------------------------------------------------------------------
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
        if self._closed:
            self._shutdown_once()
        return not self._closed

    def _shutdown_once(self) -> None:
        if not self._shut_down:
            self._shut_down = True
            self._shutdown()

    def _refresh_choices(self, event=None) -> None:
        if self._closed:
            return
        try:
            self.reset_choices()
        except RuntimeError:  # Qt widgets already deleted
            self._closed = True

    def _on_layer_inserted(self, event) -> None:
        layer = event.value
        layer.events.name.connect(self._refresh_choices)
        self._refresh_choices()
        if not self._closed:
            self._layer_added(layer)

    def _on_layer_removed(self, event) -> None:
        self._layer_gone(event.value)
        self._refresh_choices()

    def _on_destroyed(self, *_args) -> None:
        """The dock widget (or the whole viewer) is gone: stop, disconnect, touch no widget."""
        self._closed = True
        self._shutdown_once()
        L.disconnect_quietly(L.layer_list_callbacks(self._viewer, self))


# -- messages in the widget's words -----------------------------------------------------------


def field_labels(container, aliases: dict[str, str] | None = None) -> dict[str, str]:
    """API parameter names -> the labels the user sees on ``container``'s fields.

    For :meth:`napari_deep_prior.errors.ParameterError.reword`: a message about ``lr`` names
    the field "learning rate".  A field is named after its API parameter unless ``aliases``
    says otherwise (``{"output": "output_dtype"}``: widget name -> API name); a check box is
    known by its text.  Buttons, labels and progress bars are not fields.
    """
    from magicgui.widgets import CheckBox, Container, Label, ProgressBar, PushButton

    aliases = aliases or {}
    out: dict[str, str] = {}
    stack = list(container)
    while stack:
        w = stack.pop(0)
        if isinstance(w, Container):
            stack.extend(w)
            continue
        if isinstance(w, (PushButton, Label, ProgressBar)) or not w.name:
            continue
        label = w.text if isinstance(w, CheckBox) and w.text else w.label
        out.setdefault(aliases.get(w.name, w.name), label or w.name)
    return out


# -- small Qt helpers ------------------------------------------------------------------------


def expanding():
    """``QSizePolicy.Policy.Expanding``."""
    from qtpy.QtWidgets import QSizePolicy

    return QSizePolicy.Policy.Expanding


def align_left():
    """Left, vertically centred alignment of a label."""
    from qtpy.QtCore import Qt

    return Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter


def selectable_text():
    """Text interaction flag of a label whose text can be selected (and copied)."""
    from qtpy.QtCore import Qt

    return Qt.TextInteractionFlag.TextSelectableByMouse


def ask_open_file(parent, caption: str, start: str, filters: str) -> str:
    """A file-open dialog; the chosen path or "" (tests replace this function)."""
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getOpenFileName(parent, caption, start, filters)
    return path


def ask_save_file(parent, caption: str, start: str, filters: str) -> str:
    """A file-save dialog; the chosen path or "" (tests replace this function)."""
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getSaveFileName(parent, caption, start, filters)
    return path
