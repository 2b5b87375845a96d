"""Stopping masked fits: record inpainting runs with a held-out set of known pixels, replay stop rules.

Usage::

    python benchmarks/dip_inpaint_stop.py --data ../shared/data --size 128 --iterations 1500 \\
        --out benchmarks/results/inpaint-stop-128.json
    python benchmarks/dip_inpaint_stop.py --summarise benchmarks/results/inpaint-stop-128.json

Per image (centred crops of ``--size``: the DIP inpainting images with their masks, and Set12
images with ``--missing`` of their pixels removed at random, numpy seed 1):

- **recorded**: the default inpainting preset with ``es_holdout`` (``--holdout``, a seeded
  fraction of the known pixels left out of the loss) and no stop, for ``--iterations`` steps;
  every 10 steps the raw output's PSNR over the holes (against the ground truth, data range 1)
  and its mean squared error on the held-out pixels.
- **default**: the shipped ``inpaint()`` (ES-WMV), capped at the same ``--iterations``: its
  holes' PSNR, stop and steps.
- **replays** of the held-out stop on the recording: for each patience P, the run ends at the
  first check where P steps have passed since the smallest held-out error (checks from
  ``--start``), and returns the output at that smallest error: its holes' PSNR and the steps
  run.  The **oracle** is the best holes' PSNR of the recording.

Replays are exact: the held-out stop reads only what the run computed up to that check.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from dip_quality import crop, load

DIP_IMAGES = ("kate", "vase", "library")
SET12 = ("02_House", "05_Monarch")
PATIENCES = (100, 200, 300, 500)


def hole_psnr(est: np.ndarray, clean: np.ndarray, holes: np.ndarray) -> float:
    d = (np.asarray(est, np.float64) - clean)[holes]
    return float(10 * np.log10(1.0 / max(float(np.mean(d**2)), 1e-20)))


def cases(data: Path, size: int, missing: float):
    for name in DIP_IMAGES:
        img = crop(load(data / "dip" / "inpainting" / f"{name}.png"), size)
        known = crop(load(data / "dip" / "inpainting" / f"{name}_mask.png", grey=True), size) > 0.5
        yield name, img, ~known
    rng = np.random.default_rng(1)
    for name in SET12:
        img = crop(load(data / "set12" / f"{name}.png", grey=True), size)
        yield f"{name} ({missing:.0%} missing)", img, rng.random(img.shape[:2]) < missing


def run_case(name, clean, holes, args) -> dict:
    from napari_deep_prior.arrays import drive
    from napari_deep_prior.restore.api import prepare_inpaint

    damaged = np.where(holes[..., None] if clean.ndim == 3 else holes, 0.0, clean).astype(np.float32)
    ca = -1 if clean.ndim == 3 else None
    hole_px = np.broadcast_to(holes[..., None], clean.shape) if clean.ndim == 3 else holes
    # (1) the recording: held-out pixels, no stop
    job = prepare_inpaint(damaged, holes, channel_axis=ca, iterations=args.iterations, history_every=10, seed=0)
    job.fit_params = job.fit_params.replace(
        es_holdout=args.holdout,
        es_patience=10**9,
        es_start=args.start,
        es_window=min(100, args.start),
        iterations_large=0,  # large holes recorded to the end too
    )
    t0 = time.perf_counter()
    out = drive(job.steps())
    rec_s = time.perf_counter() - t0
    fit = out.fits[0]
    frames = {int(i): hole_psnr(f, clean, hole_px) for i, f in zip(out.history_iterations, out.history, strict=True)}
    if fit.holdout_mse is None:
        raise SystemExit(f"{name}: too few known pixels to hold {args.holdout:.0%} of them out; use a larger --size")
    curve = fit.holdout_mse.tolist()
    # (2) the shipped default
    t0 = time.perf_counter()
    res = drive(prepare_inpaint(damaged, holes, channel_axis=ca, iterations=args.iterations, seed=0).steps())
    def_s = time.perf_counter() - t0
    dres = res.fits[0]
    return {
        "image": name,
        "size": list(clean.shape),
        "hole_fraction": float(holes.mean()),
        "holdout": args.holdout,
        "iterations": args.iterations,
        "recorded_seconds": rec_s,
        "frames": frames,
        "holdout_curve": curve,
        "default": {
            "psnr": hole_psnr(res.image, clean, hole_px),
            "stop": dres.iteration,
            "steps": dres.iterations_run,
            "reason": dres.stop_reason,
            "seconds": def_s,
        },
    }


def replay(row: dict, patience: int) -> tuple[float, int, int]:
    """(holes' PSNR at the best held-out error, steps run, best iteration) of the held-out stop."""
    curve = row["holdout_curve"]
    best_v, best_t = np.inf, None
    end = int(row["iterations"])
    for t, v in curve:
        if v < best_v:
            best_v, best_t = v, int(t)
        if t - best_t >= patience:
            end = int(t)
            break
    frames = {int(k): v for k, v in row["frames"].items()}
    return frames[best_t], end, best_t


def summarise(rows: list[dict]) -> None:
    pats = ", ".join(f"P={p}" for p in PATIENCES)
    print(f"holes' PSNR (dB) and steps; held-out stop replays at patience {pats}\n")
    head = "| image | holes | oracle (step) | default (steps) | " + " | ".join(f"P={p} (steps)" for p in PATIENCES)
    print(head + " |")
    print("|---" * (4 + len(PATIENCES)) + "|")
    gains = {p: [] for p in PATIENCES}
    for r in rows:
        frames = {int(k): v for k, v in r["frames"].items()}
        ob = max(frames, key=frames.get)
        d = r["default"]
        cells = []
        for p in PATIENCES:
            ps, end, _ = replay(r, p)
            gains[p].append((ps - frames[ob], ps - d["psnr"], end / max(d["steps"], 1)))
            cells.append(f"{ps:.2f} ({end})")
        print(
            f"| {r['image']} | {r['hole_fraction']:.1%} | {frames[ob]:.2f} ({ob}) | {d['psnr']:.2f} ({d['steps']}) | "
            + " | ".join(cells)
            + " |"
        )
    print("\nmean over images: held-out stop minus oracle / minus default (dB), steps relative to the default")
    for p in PATIENCES:
        g = np.array(gains[p])
        vs_oracle, vs_default, steps = g[:, 0].mean(), g[:, 1].mean(), g[:, 2].mean()
        print(f"  P={p}: {vs_oracle:+.2f} dB vs oracle, {vs_default:+.2f} dB vs default, {steps:.2f}x steps")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--holdout", type=float, default=0.05)
    ap.add_argument("--start", type=int, default=100, help="first held-out check (the replays' floor)")
    ap.add_argument("--missing", type=float, default=0.5)
    ap.add_argument("--images", default="", help="comma list of names to keep (prefix match)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--summarise", nargs="+", type=Path)
    args = ap.parse_args(argv)
    if args.summarise:
        summarise([r for f in args.summarise for r in json.loads(f.read_text())["rows"]])
        return
    if args.data is None or args.out is None:
        ap.error("--data and --out are needed (or --summarise)")
    import torch

    keep = [k for k in args.images.split(",") if k]
    rows = []
    for name, clean, holes in cases(args.data, args.size, args.missing):
        if keep and not any(name.startswith(k) for k in keep):
            continue
        row = run_case(name, clean, holes, args)
        rows.append(row)
        print(f"{name}: recorded {row['recorded_seconds']:.0f} s, default {row['default']}", flush=True)
        args.out.write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=1))
    summarise(rows)


if __name__ == "__main__":
    main()
