"""How a result was made, as one JSON-serialisable dict (its provenance), built in one place.

Both front ends attach the same record: the command line writes it into its output files
(:func:`~.io.write_image`, :func:`~.io.write_history_tiff`), the napari widgets put it in the
result layer's ``metadata["napari_deep_prior"]``.  ``napari-deep-prior info FILE`` prints it.

A DIP record (:func:`dip_provenance`) names the preset and lists only the parameters that
differ from it (``params_changed``, flat names as :meth:`DIPParams.replace
<napari_deep_prior.restore.presets.DIPParams.replace>` takes them, so
``get_preset(preset).replace(**params_changed)`` gives the parameters of the run back), the
seed, the task's own options, and per plane the iteration the result comes from, the steps
run, why the fit stopped and the noise level it estimated.  A colorization record
(:func:`colorize_provenance`) names the method, the weight file, the hints and the seed.

Pure Python and numpy: no torch, no napari; the job and output objects are read by their
attributes only (see :func:`dip_provenance`), so this module sits on the shared floor.

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class P:
...     iterations: int = 3000
...     lr: float = 0.01
>>> changed_fields(P(iterations=5), P())
{'iterations': 5}
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LAYER_KEY",
    "SOFTWARE",
    "changed_fields",
    "colorize_provenance",
    "describe_provenance",
    "dip_provenance",
    "is_provenance",
    "jsonable",
    "provenance_from_json",
    "provenance_to_json",
]

#: The ``software`` entry of every record (and the key of a PNG text chunk, an OME namespace).
SOFTWARE = "napari-deep-prior"
#: The key of a napari layer's metadata (and of a plain TIFF's JSON description) holding the record.
LAYER_KEY = "napari_deep_prior"


def _version() -> str:
    from . import __version__

    return __version__


def _now() -> str:
    """The current time in UTC, ISO 8601 to the second (``2026-03-05T14:03:12Z``)."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return now.isoformat().replace("+00:00", "Z")


def jsonable(value: Any) -> Any:
    """``value`` made of plain JSON types: numpy scalars and arrays, tuples, paths, dtypes and
    dataclasses converted; NaN and infinity become None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return str(value)


def changed_fields(params, base) -> dict[str, Any]:
    """The fields of the dataclass ``params`` whose values differ from ``base``'s, as JSON values.

    Nested dataclasses (``DIPParams.net``) are compared field by field and their fields named
    flat (``upsample``, not ``net.upsample``), as ``DIPParams.replace`` takes them.

    Parameters
    ----------
    params, base : dataclass instances of the same type

    Returns
    -------
    dict
        Field name -> the value in ``params``; empty when they are equal.
    """
    if type(params) is not type(base):
        raise TypeError(f"cannot compare a {type(params).__name__} with a {type(base).__name__}")
    out: dict[str, Any] = {}
    for f in dataclasses.fields(params):
        a, b = getattr(params, f.name), getattr(base, f.name)
        if dataclasses.is_dataclass(a) and not isinstance(a, type) and type(a) is type(b):
            out.update(changed_fields(a, b))
        elif jsonable(a) != jsonable(b):
            out[f.name] = jsonable(a)
    return out


def _base_record(task: str, input_name: str | os.PathLike | None) -> dict[str, Any]:
    return {
        "software": SOFTWARE,
        "version": _version(),
        "created": _now(),
        "task": task,
        "input": Path(input_name).name if isinstance(input_name, os.PathLike) else input_name,
    }


def _plane_record(fit, stop: int, runs: int) -> dict[str, Any]:
    rec: dict[str, Any] = {"stop_iteration": int(stop), "iterations_run": int(runs)}
    if fit is None:
        rec.update(stop_reason=None, noise_sigma=None, fitted=False)
        return rec
    rec["stop_reason"] = getattr(fit, "stop_reason", None)
    rec["noise_sigma"] = jsonable(getattr(fit, "noise_sigma", None))
    deviance = getattr(fit, "deviance", None)
    if deviance is not None:
        rec["deviance"] = jsonable(deviance)
        rec["expected_deviance"] = jsonable(getattr(fit, "expected_deviance", None))
    return rec


def dip_provenance(
    job,
    output=None,
    *,
    input_name: str | os.PathLike | None = None,
    interrupted: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance of a Deep Image Prior restoration.

    Parameters
    ----------
    job : DIPJob
        The job (:func:`~napari_deep_prior.restore.api.prepare`); read: ``task``, ``preset``
        and ``preset_params`` (the preset's name and its parameters), ``params``, ``seed``,
        ``warm_start``, ``tiles``, ``regions``, ``camera``, ``noise_sigma``, ``layout.result_dtype`` and the
        "choice" fields of ``degradation`` (e.g. the up-scaling ``factor``).
    output : DIPOutput, optional
        The finished (or interrupted) run; read: ``stop_iterations``, ``iterations_run``,
        ``fits`` (per plane ``stop_reason``, ``noise_sigma``, ``deviance``), ``planes_done``,
        ``notes``.  None: a record of the settings only.
    input_name : path or str, optional
        The input file (a path: only its name is kept) or the input layer's name (a str, kept).
    interrupted : bool
        The run was stopped before its end (Ctrl-C, Cancel).
    extra : mapping, optional
        Front-end facts added as they are (e.g. ``{"mask": "holes.png"}``).

    Returns
    -------
    dict
        JSON-serialisable: ``software``, ``version``, ``created`` (UTC, ISO 8601), ``task``,
        ``input``, ``preset``, ``params_changed``, ``seed``, ``options``, ``planes`` (per
        plane ``stop_iteration``, ``iterations_run``, ``stop_reason``, ``noise_sigma``: the
        noise level estimated for the noise-level stop, as a fraction of the intensity
        range), ``noise_sigma`` (their mean, or None), ``interrupted``, ``notes``.
    """
    rec = _base_record(str(getattr(job, "task", "restore")), input_name)
    params = job.params
    preset = getattr(job, "preset", None)
    base = getattr(job, "preset_params", None)
    rec["preset"] = preset
    rec["params_changed"] = changed_fields(params, base) if base is not None else jsonable(params)
    rec["seed"] = jsonable(job.seed)
    options: dict[str, Any] = {}
    deg = getattr(job, "degradation", None)
    for f in getattr(deg, "fields", ()):
        if getattr(f, "kind", None) == "choice":
            options[f.name] = jsonable(getattr(deg, f.name, None))
    options["warm_start"] = bool(getattr(job, "warm_start", False))
    tiles = getattr(job, "tiles", None)
    if tiles:
        options["regions" if getattr(job, "regions", False) else "tiles"] = len(tiles)
    layout = getattr(job, "layout", None)
    if layout is not None:
        options["output_dtype"] = jsonable(np.dtype(layout.result_dtype))
    camera = getattr(job, "camera", None)
    if camera is not None:
        options["camera"] = jsonable(camera)
    if getattr(job, "noise_sigma", None) is not None:  # a noise level given by the user (input units)
        options["noise_sigma"] = float(job.noise_sigma * job.layout.scale)
    rec["options"] = options
    if output is not None:
        fits = list(getattr(output, "fits", []) or [])
        stops, runs = list(output.stop_iterations), list(output.iterations_run)
        fits += [None] * (len(stops) - len(fits))
        rec["planes"] = [_plane_record(f, s, r) for f, s, r in zip(fits, stops, runs, strict=False)]
        sigmas = [p["noise_sigma"] for p in rec["planes"] if p.get("noise_sigma") is not None]
        rec["noise_sigma"] = float(np.mean(sigmas)) if sigmas else None
        rec["planes_done"] = int(getattr(output, "planes_done", len(stops)))
        rec["notes"] = [str(n) for n in getattr(output, "notes", [])]
    rec["interrupted"] = bool(interrupted)
    if extra:
        rec.update(jsonable(dict(extra)))
    return rec


def colorize_provenance(
    method: str,
    *,
    input_name: str | os.PathLike | None = None,
    hints: Sequence | None = None,
    hint_size: int | None = None,
    seed: int | None = None,
    weights: str | None = None,
    params=None,
    default_params=None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance of a colorization.

    Parameters
    ----------
    method : str
        The colorizer (``eccv16``, ``siggraph17``, ``levin``, ``dip``).
    input_name : path or str, optional
        As for :func:`dip_provenance`.
    hints : sequence, optional
        The colour hints used: their number is recorded, and ``hint_size`` with them.
    seed : int, optional
        For a seeded method (``dip``).
    weights : str, optional
        The name of the weight file of a pretrained method (its published name carries a
        prefix of its sha256).
    params, default_params : dataclass, optional
        The method's own settings and its defaults: only the fields that differ are kept.
    extra : mapping, optional

    Returns
    -------
    dict
        ``software``, ``version``, ``created``, ``task`` ("colorize"), ``input``, ``method``,
        ``weights``, ``hints`` (count), ``hint_size``, ``seed``, ``params_changed``.
    """
    rec = _base_record("colorize", input_name)
    rec["method"] = str(method)
    rec["weights"] = None if weights is None else Path(str(weights)).name
    n = 0 if hints is None else len(hints)
    rec["hints"] = n
    rec["hint_size"] = int(hint_size) if n and hint_size is not None else None
    rec["seed"] = jsonable(seed)
    if params is None:
        rec["params_changed"] = {}
    elif default_params is None:
        rec["params_changed"] = jsonable(params)
    else:
        rec["params_changed"] = changed_fields(params, default_params)
    if extra:
        rec.update(jsonable(dict(extra)))
    return rec


def is_provenance(value: Any) -> bool:
    """True for a record made by this module (a dict whose ``software`` is napari-deep-prior)."""
    return isinstance(value, Mapping) and value.get("software") == SOFTWARE


def provenance_to_json(record: Mapping[str, Any]) -> str:
    """The record as compact ASCII JSON (non-ASCII characters escaped: safe in any TIFF tag)."""
    return json.dumps(jsonable(record), separators=(",", ":"), sort_keys=False)


def provenance_from_json(text: str | bytes | None) -> dict[str, Any] | None:
    """A record from its JSON text; None when ``text`` is not a record of this package."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return None
    return value if is_provenance(value) else None


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    return str(value)


def _planes_summary(planes: list) -> list[str]:
    if not planes:
        return []
    if len(planes) == 1:
        p = planes[0]
        line = f"iteration {p.get('stop_iteration')} of {p.get('iterations_run')} run"
        line += f", stopped by {p['stop_reason']}" if p.get("stop_reason") else ", no early stop"
        if p.get("noise_sigma") is not None:
            line += f", noise level {p['noise_sigma']:.4g}"
        return [f"  result from: {line}"]
    lines = [f"  planes: {len(planes)}"]
    for i, p in enumerate(planes[:20]):
        reason = p.get("stop_reason") or "no early stop"
        sigma = f", noise {p['noise_sigma']:.4g}" if p.get("noise_sigma") is not None else ""
        lines.append(f"    {i}: iteration {p.get('stop_iteration')}/{p.get('iterations_run')}, {reason}{sigma}")
    if len(planes) > 20:
        lines.append(f"    ... {len(planes) - 20} more (--json shows all)")
    return lines


def describe_provenance(record: Mapping[str, Any]) -> list[str]:
    """The record as readable lines (what ``napari-deep-prior info`` prints)."""
    r = dict(record)
    lines = [f"  made by: {r.get('software')} {r.get('version')}, {r.get('created')}"]
    lines.append(f"  task: {r.get('task')}" + (f" of {r['input']}" if r.get("input") else ""))
    if r.get("task") == "colorize":
        lines.append(f"  method: {r.get('method')}" + (f" (weights {r['weights']})" if r.get("weights") else ""))
        if r.get("hints"):
            lines.append(f"  hints: {r['hints']} (patch size {r.get('hint_size')})")
    else:
        lines.append(f"  preset: {r.get('preset')}")
    changed = r.get("params_changed") or {}
    if changed:
        lines.append("  changed from the preset:" if r.get("task") != "colorize" else "  changed from the defaults:")
        lines += [f"    {k} = {_fmt(v)}" for k, v in changed.items()]
    elif "params_changed" in r:
        lines.append("  parameters: the preset's" if r.get("task") != "colorize" else "  parameters: the defaults")
    if r.get("seed") is not None:
        lines.append(f"  seed: {r['seed']}")
    options = r.get("options") or {}
    if options:
        lines.append("  options: " + ", ".join(f"{k.replace('_', ' ')} {_fmt(v)}" for k, v in options.items()))
    lines += _planes_summary(r.get("planes") or [])
    if r.get("noise_sigma") is not None and len(r.get("planes") or []) > 1:
        lines.append(f"  estimated noise level (mean): {r['noise_sigma']:.4g} of the intensity range")
    if r.get("interrupted"):
        lines.append("  interrupted: the estimate when the run was stopped")
    known = {
        "software",
        "version",
        "created",
        "task",
        "input",
        "method",
        "weights",
        "hints",
        "hint_size",
        "preset",
        "params_changed",
        "seed",
        "options",
        "planes",
        "noise_sigma",
        "interrupted",
        "planes_done",
        "notes",
    }
    for k, v in r.items():
        if k not in known and v is not None:
            lines.append(f"  {k}: {_fmt(v)}")
    for note in r.get("notes") or []:
        lines.append(f"  note: {note}")
    return lines
