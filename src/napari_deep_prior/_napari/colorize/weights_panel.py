"""The weights rows of the Colorize widget: status, Download / Choose file, download progress."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from magicgui.widgets import Container, Label, ProgressBar, PushButton
from napari.utils.notifications import show_error, show_info

from .. import base
from .._workers import relay, unwrap

__all__ = ["WeightsPanel", "download_steps"]


class _DownloadCancelled(Exception):
    pass


def download_steps(name: str, cancel: threading.Event, folder=None):
    """Worker body of a weights download: yields ``(bytes_done, bytes_total)`` and returns
    the path of the verified file (None when cancelled).

    :func:`~napari_deep_prior.colorization.weights.download_weights` runs in a helper thread and
    reports through a queue; setting ``cancel`` stops it at its next chunk (its temporary
    file is removed by the core).
    """
    from ...colorization.weights import download_weights

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


class WeightsPanel:
    """Where the pretrained weights come from, with a download in a napari worker.

    Parameters
    ----------
    parent_native : QWidget
        Parent of the file dialog.
    alive : callable
        ``alive()`` is False once the widget is gone (then nothing is touched).
    on_change : callable
        Called after a weights file was chosen or a download ended (refresh, re-run).
    on_download_finished : callable
        ``on_download_finished(path_or_None)`` after a download ended.

    Attributes
    ----------
    status : Label
    download_button, choose_button : PushButton
    progress : ProgressBar
    paths : dict
        Weight files chosen by the user, per network.
    """

    def __init__(
        self,
        parent_native,
        *,
        alive: Callable[[], bool],
        on_change: Callable[[], None],
        on_download_finished: Callable[[Any], None],
    ):
        self._parent = parent_native
        self._alive = alive
        self._on_change = on_change
        self._on_download_finished = on_download_finished
        self._download = None  # (worker, cancel event, name)
        self.paths: dict[str, Path] = {}
        self.status = Label(name="weights_status", label="weights", value="")
        self.download_button = PushButton(
            name="download_button",
            text="Download weights",
            tooltip="Download the selected network's published weights (about 130 MB) "
            "into the folder searched for them.",
        )
        self.choose_button = PushButton(
            name="choose_weights_button",
            text="Choose file...",
            tooltip="Use a weights file you already have (e.g. downloaded on another machine).",
        )
        self.row = Container(
            name="weights_row",
            widgets=[self.download_button, self.choose_button],
            layout="horizontal",
            labels=False,
            label=" ",
        )
        self.row.margins = (0, 0, 0, 0)
        self.progress = ProgressBar(name="download_progress", label="download", min=0, max=1000, value=0)
        self.progress.visible = False
        self.network = "siggraph17"  # the network the status is about (set by update())

    def widgets(self) -> list:
        """The rows, in form order."""
        return [self.status, self.row, self.progress]

    def setup_native(self) -> None:
        """Qt settings that need the widgets shown in their container."""
        self.progress.native.setFormat("%p%")
        self.status.native.setWordWrap(True)
        self.status.native.setAlignment(base.align_left())
        self.status.native.setSizePolicy(base.expanding(), self.status.native.sizePolicy().verticalPolicy())
        self.status.native.setTextInteractionFlags(base.selectable_text())

    @property
    def downloading(self) -> bool:
        return self._download is not None

    def weights_for(self, name: str) -> Path | None:
        """The weight file that will be used for network ``name``, or None if missing."""
        from ...colorization.weights import WeightsError, find_weights

        chosen = self.paths.get(name)
        if chosen is not None:
            return Path(chosen) if Path(chosen).is_file() else None
        try:
            return find_weights(name)
        except WeightsError:  # pragma: no cover - only raised for explicit paths
            return None

    def update(self, name: str, *, for_method: bool) -> None:
        """Show the state of network ``name``'s weights (``for_method``: the method uses it;
        else only the colour suggestions do)."""
        from ...colorization.weights import weights_info

        self.network = name
        info = weights_info(name)
        purpose = "" if for_method else " (only for 'Suggest colours')"
        path = self.weights_for(name)
        if path is not None:
            chosen = " (chosen)" if name in self.paths else ""
            self.status.value = f"{name}{purpose}: found{chosen}, {path}"
            self.status.tooltip = str(path)
        else:
            self.status.value = (
                f"{name}{purpose}: missing. It needs {info.describe()}; press Download "
                "weights, or Choose file if you have it."
            )
            self.status.tooltip = info.url
        self.download_button.enabled = self.downloading or path is None
        self.download_button.text = "Cancel download" if self.downloading else "Download weights"
        self.choose_button.enabled = not self.downloading

    def set_file(self, path, name: str) -> Path | None:
        """Use ``path`` (a weight file, or a folder holding it) for network ``name``.
        Returns the file, or None after an error message."""
        from ...colorization.weights import WeightsError, find_weights

        try:
            found = find_weights(name, path)
        except WeightsError as exc:
            show_error(f"Colorize: {exc}")
            return None
        self.paths[name] = Path(found)
        self._on_change()
        return Path(found)

    def choose_file(self, name: str) -> Path | None:
        """Ask for a weights file (file dialog) for network ``name``."""
        from ...colorization.weights import search_folders, weights_info

        info = weights_info(name)
        path = base.ask_open_file(
            self._parent,
            f"Choose the {name} weights ({info.filename})",
            str(search_folders()[0]),
            "PyTorch weights (*.pth *.pt);;All files (*)",
        )
        if not path:
            return None
        return self.set_file(path, name)

    def toggle_download(self) -> None:
        """The Download / Cancel download button."""
        if self._download is not None:
            self.cancel_download()
        else:
            self.download(self.network)

    def download(self, name: str, *, start: bool = True):
        """Download the published weights of ``name`` in a worker, with progress; returns the
        worker (None if one is already running)."""
        from napari.qt.threading import create_worker

        from ...colorization.weights import weights_info

        if self._download is not None:
            show_info("Colorize: a download is already going on.")
            return None
        info = weights_info(name)
        cancel = threading.Event()
        worker = create_worker(relay, download_steps(name, cancel), _start_thread=False, _ignore_errors=True)
        self._download = (worker, cancel, name)

        def on_progress(item):
            done, total = item
            if self._alive():
                self.progress.value = int(1000 * done / max(total, 1))
                self.progress.tooltip = f"{done / 1e6:.0f} / {total / 1e6:.0f} MB"

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
            self.progress.visible = False
            self._on_change()
            self._on_download_finished(self.weights_for(name))

        worker.yielded.connect(on_progress)
        worker.returned.connect(on_returned)
        worker.errored.connect(on_errored)
        worker.finished.connect(on_finished)
        self.progress.value = 0
        self.progress.visible = True
        self._on_change()  # the button turns into "Cancel download"
        if start:
            worker.start()
        return worker

    def cancel_download(self) -> None:
        """Stop the running download at its next chunk (its partial file is removed)."""
        if self._download is not None:
            worker, cancel, _name = self._download
            cancel.set()
            worker.quit()
