"""The restore widget's results: the result and history layers, and "Use this frame"."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...arrays import format_duration
from ...provenance import LAYER_KEY, dip_provenance, jsonable
from ..base import ROLE_KEY
from . import _notify
from .stores import STORE_KEY

if TYPE_CHECKING:  # pragma: no cover
    from ...restore.job import DIPOutput
    from .widget import _Run

__all__ = ["ResultsMixin", "result_tag"]


def result_tag(task: str | None) -> str:
    """The name tag of a task's result layer ("[DIP denoised]"); "[DIP]" for an unknown task."""
    from ...restore.degradations import DEGRADATIONS

    deg = DEGRADATIONS.get(task) if task else None
    return f"[DIP {deg.done}]" if deg is not None else "[DIP]"


def _provenance(run: _Run, output: DIPOutput, cancelled: bool) -> dict | None:
    """How the run's result was made (:func:`~napari_deep_prior.provenance.dip_provenance`); None
    (with a warning) if it cannot be made: the result layer is shown all the same."""
    try:
        return _build_provenance(run, output, cancelled)
    except (AttributeError, TypeError, ValueError) as exc:
        _notify.show_warning(f"DIP: the result's provenance could not be recorded ({exc}).")
        return None


def _build_provenance(run: _Run, output: DIPOutput, cancelled: bool) -> dict:
    extra: dict = {}
    sel = run.selection
    if run.mask_name is not None:
        extra["mask_layer"] = run.mask_name
    if sel.plane_only:
        extra["plane"] = [int(o) for o in sel.offset]
    elif any(sel.offset):
        extra["offset"] = [int(o) for o in sel.offset]  # a plane range or a region
        extra["shape"] = [int(n) for n in sel.data.shape]
    if sel.region is not None:
        extra["region"] = list(sel.region)
    if run.store is not None:
        extra["store"] = None if run.store.temporary else str(run.store.path)
    source = getattr(getattr(run.layer, "source", None), "path", None)
    if source:
        extra["input_file"] = Path(str(source)).name
    return dip_provenance(run.job, output, input_name=run.name, interrupted=cancelled, extra=extra)


class ResultsMixin:
    """Adds a finished (or cancelled) run's layers; the history frame on screen can become the result.

    Used by :class:`~.widget.DIPWidget`: needs ``self._viewer``, ``self.plot``, ``self.status``,
    ``self.use_frame``, ``self._preview_alive()``, ``self._history_layer`` and ``self._result_layer``.
    """

    def _add_results(self, run: _Run, output: DIPOutput, *, cancelled: bool) -> None:
        viewer = self._viewer
        sel = run.selection
        stop = [int(s) for s in output.stop_iterations]
        meta = {
            ROLE_KEY: "result",
            "task": run.task,
            "source_layer": run.name,
            "mask_layer": run.mask_name,
            "stop_iterations": stop,
            "iterations_run": [int(i) for i in output.iterations_run],
            "planes_done": int(output.planes_done),
            "seed": int(output.seed),
            "cancelled": cancelled,
            "params": asdict(run.params),
            "offset": tuple(int(o) for o in sel.offset),
            LAYER_KEY: _provenance(run, output, cancelled),
        }
        name = f"{run.name} {result_tag(run.task)}"
        if sel.plane_only:
            name += " (plane)"
        elif sel.region is not None:
            name += " (region)"
        kw = run.template.image_kwargs(sel.offset)
        store = run.store
        image, history = output.image, output.history
        if store is not None:
            # the result lives in the zarr store: the layers read it lazily, plane by plane
            meta[STORE_KEY] = store.key
            image = store.lazy("image")
            if history is not None:
                history = store.lazy("history", len(output.history_iterations))
            if meta[LAYER_KEY] is not None:
                store.write_attrs({LAYER_KEY: jsonable(meta[LAYER_KEY])})
        result = self._preview_alive(run)
        run.preview_layer = None
        if result is not None:
            # the preview layer becomes the result (no new layer to build)
            result.metadata.clear()
            result.metadata.update(meta)
            result.data = image
            result.translate = kw["translate"]
            result.contrast_limits = kw["contrast_limits"]
            result.name = name  # napari makes it unique if needed
        else:
            result = viewer.add_image(image, name=name, metadata=meta, **kw)
        hist = None
        if history is not None and len(output.history_iterations):
            hmeta = dict(meta)
            hmeta.update(
                {
                    ROLE_KEY: "history",
                    "iterations": np.asarray(output.history_iterations).copy(),
                    "losses": np.asarray(output.history_losses).copy(),
                    "result_layer": result.name,
                }
            )
            hist = viewer.add_image(
                history,
                name=f"{run.name} [DIP history]",
                metadata=hmeta,
                visible=False,
                **run.template.history_kwargs(sel.offset),
            )
            self._show_frame(hist, stop)
        viewer.layers.selection.active = result
        self._history_layer = hist
        self._result_layer = result
        # the plot shows the whole run of the last plane and its stop
        fits = [f for f in output.fits if f is not None]
        if fits:
            last = fits[-1]
            self.plot.clear(
                total=max(int(last.iterations_run), 1),
                title=f"plane {len(fits)}/{len(output.fits)}" if len(output.fits) > 1 else "",
            )
            every = max(1, len(last.losses) // 400)
            for k in range(0, len(last.losses), every):
                var = last.es_variances[k] if k < len(last.es_variances) else None
                self.plot.add_point(
                    k + 1, float(last.losses[k]), None if var is None or not np.isfinite(var) else float(var)
                )
            if last.stopped_early:
                label = {
                    "noise level": "noise-level stop",
                    "residual whiteness": "whiteness stop",
                    "holes settled": "holes-settled stop",
                }.get(last.stop_reason, "ES stop")
            elif run.params.early_stop and int(last.iteration) != int(last.iterations_run):
                label = "ES min"
            else:
                label = "returned"
            self.plot.set_stop(int(last.iteration), label)
        elapsed = time.perf_counter() - run.t0
        runs = output.iterations_run
        how = "cancelled" if cancelled else "done"
        stops = stop[0] if len(stop) == 1 else f"{min(stop)}-{max(stop)}"
        msg = (
            f"DIP {run.task} of {run.name!r} {how} in {format_duration(elapsed)}: result from "
            f"iteration {stops} ({max(runs) if runs else 0} run"
            + (f", {output.planes_done}/{len(output.fits)} planes" if len(output.fits) > 1 else "")
            + f"), seed {output.seed}."
        )
        if output.tiles and not output.regions:  # regions are described by a note
            msg += f" Processed in {len(output.tiles)} tiles per plane."
        for note in output.notes:
            msg += f" {note}"
        if store is not None:
            where = "a temporary store, deleted when its layers are removed" if store.temporary else str(store.path)
            msg += f" Read plane by plane; the result is in {where}."
        if run.input_removed:
            msg += " (The input layer had been removed.)"
        self.status.value = msg
        _notify.show_info(msg)

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
            _notify.show_warning("DIP: no history layer to take a frame from; run with 'history every' > 0.")
            return None
        coords = hist.world_to_data(self._viewer.dims.point)
        n = hist.data.shape[0]
        frame = int(np.clip(np.round(coords[0]), 0, n - 1))
        its = np.asarray(hist.metadata.get("iterations", np.arange(n)))
        it = int(its[frame]) if frame < len(its) else frame
        data = hist.data[frame]
        if isinstance(data, np.ndarray):
            data = data.copy()  # a lazy (zarr-backed) history frame stays lazy: nothing is read here
        target_name = hist.metadata.get("result_layer")
        result = None
        if target_name is not None and target_name in self._viewer.layers:
            cand = self._viewer.layers[target_name]
            if cand.metadata.get(ROLE_KEY) == "result" and cand.data.shape == data.shape:
                result = cand
        if result is None:
            meta = {k: v for k, v in hist.metadata.items() if k not in ("iterations", "losses", "result_layer")}
            meta[ROLE_KEY] = "result"
            kw = {
                "scale": tuple(hist.scale)[1:],
                "translate": tuple(hist.translate)[1:],
                "units": tuple(str(u) for u in hist.units)[1:],
                "axis_labels": tuple(hist.axis_labels)[1:],
                "rgb": hist.rgb,
                "contrast_limits": hist.contrast_limits,
            }
            if not hist.rgb:
                kw["colormap"] = hist.colormap
            source = meta.get("source_layer", hist.name)
            tag = result_tag(meta.get("task"))
            result = self._viewer.add_image(data, name=f"{source} {tag}", metadata=meta, **kw)
            hist.metadata["result_layer"] = result.name
        else:
            result.data = data
        result.metadata["frame_iteration"] = it
        result.metadata["stop_iterations"] = [it]
        if isinstance(result.metadata.get(LAYER_KEY), dict):  # the record says which frame was chosen
            result.metadata[LAYER_KEY] = {**result.metadata[LAYER_KEY], "frame_iteration": it}
        result.visible = True
        self._result_layer = result
        self.plot.set_stop(it, "frame in use")
        _notify.show_info(f"DIP: {result.name!r} now holds the estimate at iteration {it}.")
        return result
