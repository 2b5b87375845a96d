"""The provenance record (napari_deep_prior.provenance): only what differs from the preset, JSON-safe."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from napari_deep_prior.provenance import (
    SOFTWARE,
    changed_fields,
    colorize_provenance,
    describe_provenance,
    dip_provenance,
    is_provenance,
    provenance_from_json,
    provenance_to_json,
)
from napari_deep_prior.restore.api import prepare_denoise, prepare_upscale
from napari_deep_prior.restore.presets import PRESETS, get_preset


def test_changed_fields_lists_only_the_differences():
    base = get_preset("denoise")
    assert changed_fields(base, base) == {}
    params = base.replace(iterations=5, lr=0.005, upsample="bilinear", channels_down=(8, 16, 16, 16, 16))
    changed = changed_fields(params, base)
    assert changed == {"iterations": 5, "lr": 0.005, "upsample": "bilinear", "channels_down": [8, 16, 16, 16, 16]}
    # flat names, as DIPParams.replace takes them: the preset plus the changes is the run's parameters
    back = base.replace(**{k: tuple(v) if isinstance(v, list) else v for k, v in changed.items()})
    assert back == params


def test_changed_fields_between_presets_and_types():
    diff = changed_fields(PRESETS["denoise-poisson"], PRESETS["denoise"])
    assert diff == {"loss": "poisson", "es_start": 100, "upsample": "bilinear", "tile_capacity": 0, "es_whiteness": 0.0}
    with pytest.raises(TypeError, match="cannot compare"):
        changed_fields(PRESETS["denoise"], PRESETS["denoise"].net)


def test_dip_provenance_of_a_prepared_job(smooth_image):
    job = prepare_denoise(smooth_image, iterations=7, seed=3, device="cpu")
    rec = dip_provenance(job, input_name=Path("/some/folder/noisy.tif"))
    assert rec["software"] == SOFTWARE and rec["task"] == "denoise" and rec["input"] == "noisy.tif"
    assert rec["preset"] == "denoise" and rec["params_changed"] == {"iterations": 7}
    assert rec["seed"] == 3 and rec["options"]["output_dtype"] == "float64"
    assert rec["created"].endswith("Z") and "planes" not in rec
    assert json.loads(json.dumps(rec)) == rec


def test_preset_names_are_resolved(smooth_image):
    assert prepare_denoise(smooth_image, preset="paper", device="cpu", seed=0).preset == "denoise-paper"
    counts = np.rint(smooth_image * 20).astype(np.uint16)
    job = prepare_denoise(counts, loss="poisson", device="cpu", seed=0)
    assert job.preset == "denoise-poisson"
    assert dip_provenance(job)["params_changed"] == {}  # the Poisson default, unchanged
    # params given with the preset they came from (the widget): the changes are against it
    params = get_preset("denoise").replace(iterations=9)
    job = prepare_denoise(smooth_image, preset="denoise", params=params, device="cpu", seed=0)
    assert dip_provenance(job)["params_changed"] == {"iterations": 9}


def test_dip_provenance_of_an_output(smooth_image):
    job = prepare_upscale(smooth_image[:16, :16], 2, iterations=5, device="cpu", seed=0)
    fit = SimpleNamespace(stop_reason="noise level", noise_sigma=np.float32(0.02), deviance=None)
    out = SimpleNamespace(
        stop_iterations=[4, 5], iterations_run=[5, 5], fits=[fit, None], planes_done=1, notes=["a note"]
    )
    rec = dip_provenance(job, out, interrupted=True, extra={"mask": "holes.png"})
    assert rec["options"]["factor"] == 2
    assert rec["planes"][0] == {
        "stop_iteration": 4,
        "iterations_run": 5,
        "stop_reason": "noise level",
        "noise_sigma": pytest.approx(0.02),
    }
    assert rec["planes"][1]["fitted"] is False and rec["planes_done"] == 1
    assert rec["noise_sigma"] == pytest.approx(0.02) and rec["interrupted"] is True
    assert rec["mask"] == "holes.png" and rec["notes"] == ["a note"]
    json.dumps(rec)  # plain JSON types only (the float32 became a float)
    text = "\n".join(describe_provenance(rec))
    assert "preset: upscale" in text and "iterations = 5" in text and "interrupted" in text
    assert "noise level" in text and "mask: holes.png" in text


def test_colorize_provenance():
    rec = colorize_provenance(
        "levin", input_name="grey layer", hints=[(1, 2, "#ff0000")] * 3, hint_size=5, seed=None, weights=None
    )
    assert (rec["task"], rec["method"], rec["hints"], rec["hint_size"], rec["weights"]) == (
        "colorize",
        "levin",
        3,
        5,
        None,
    )
    rec = colorize_provenance("eccv16", weights="/cache/colorization_release_v2-9b330a0b.pth")
    assert rec["weights"] == "colorization_release_v2-9b330a0b.pth" and rec["hints"] == 0 and rec["hint_size"] is None
    assert "weights colorization_release_v2-9b330a0b.pth" in "\n".join(describe_provenance(rec))


def test_json_round_trip_and_foreign_records():
    rec = colorize_provenance("dip", seed=4, hints=[(0, 0, "#00ff00")], hint_size=3)
    text = provenance_to_json(rec)
    assert text.isascii() and provenance_from_json(text) == rec and is_provenance(rec)
    assert provenance_from_json(text.encode()) == rec
    assert provenance_from_json('{"software": "other"}') is None
    assert provenance_from_json("not json") is None and provenance_from_json(None) is None
