"""Inpainting speed and stop rules: record masked fits without a stop, replay stops offline.

Usage::

    # record one configuration (a preset plus overrides) on the benchmark cases, no stop
    python benchmarks/dip_inpaint_speed.py record --data ../shared/data --size 128 --steps 2000 \\
        --preset inpaint --out benchmarks/results/inpaint-traj-default.json
    python benchmarks/dip_inpaint_speed.py record ... --set channels=16,32,32,32,32 --set skip=4
    # the default as shipped (its own stop), against the recipe rows
    python benchmarks/dip_inpaint_speed.py shipped --data ../shared/data --size 128 --cases missing \\
        --set12 01_C.man,03_Peppers --recipe benchmarks/results/inpaint-recipe-128-missing.json
    # replay the hole-change stop (and the oracle) on recordings, against recipe rows of dip_speed.py
    python benchmarks/dip_inpaint_speed.py analyse benchmarks/results/inpaint-traj-*.json \\
        [--recipe benchmarks/results/inpaint-recipe-128.json]

Cases (centred crops of ``--size``; ``--cases`` picks): the three DIP inpainting images with
their masks (kate, vase, library), two Set12 images with 50 % of their pixels missing at random
(numpy seed 1), and ``strokes``: a Set12 image (10_Boat) at ``--strokes-size`` with seeded
painted strokes covering 5 % (the generator of ``dip_inpaint_regions.py``); ``--blobs`` adds
Set9 / Set12 crops with large holes (seeded ellipses covering 8 %).

A recording holds, per case, every 10 steps: the PSNR over the hole pixels of the estimate the
fit would return (the averaged output when the preset averages, else the raw output), and the
mean absolute change of that estimate over the holes since 50 and 100 steps before (data range
1), which is what the hole-change stop reads; plus the measured seconds per step.  Replays are
exact: a rule maps what the run had computed by a step to a stop step, and its quality is the
recorded PSNR at that step.

``shipped`` runs ``inpaint(damaged, holes, seed=...)`` exactly as a user calls it (the default
preset as ``prepare`` resolves it, its own stop, known pixels returned as given) and reports the
holes' PSNR of the result, the steps, the stop, the preset and the wall time of the call;
``--set12 NAMES`` adds Set12 images with 50 % of their pixels missing (numpy seed 100 + their
place in the list), ``--recipe`` files give the Δ and time-ratio columns, ``--set KEY=VALUE``
changes a number field of the default's DIPParams (e.g. ``fill_blend=0``: the network's fill
alone, without the biharmonic blend).

The recipe rows (``recipe`` mode) run the reference preset of each image (kate → inpaint-text,
vase → inpaint-large-hole, library → inpaint-large-regions, 50 %-missing → restore-missing-pixels)
recording the holes' PSNR every 10 steps; its oracle is the best of them and its time the time
to reach it (``--steps`` truncates the recipe: say so when quoting).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from dip_inpaint_regions import load_grey, stroke_mask
from dip_quality import crop, load

DIP_IMAGES = ("kate", "vase", "library")
SET12 = ("02_House", "05_Monarch")
RECIPES = {"kate": "inpaint-text", "vase": "inpaint-large-hole", "library": "inpaint-large-regions"}
LAGS = (50, 100)


def missing_case(data: Path, name: str, size: int, rng: np.random.Generator):
    """A Set12 image's centred grey crop with 50 % of its pixels missing at random (drawn from ``rng``)."""
    img = crop(load(data / "set12" / f"{name}.png", grey=True), size)
    return f"{name} (50% missing)", img, rng.random(img.shape[:2]) < 0.5, "restore-missing-pixels"


def damage(clean: np.ndarray, holes: np.ndarray):
    """(image (H, W, C), hole mask broadcast to it, the damaged float32 image with 0 in the holes)."""
    img = clean[..., None] if clean.ndim == 2 else clean
    hole_px = np.broadcast_to(holes[..., None], img.shape)
    return img, hole_px, np.where(hole_px, 0.0, img).astype(np.float32)


def cases(data: Path, size: int, keep: set[str], strokes_size: int):
    for name in DIP_IMAGES:
        if keep and name not in keep:
            continue
        img = crop(load(data / "dip" / "inpainting" / f"{name}.png"), size)
        known = crop(load(data / "dip" / "inpainting" / f"{name}_mask.png", grey=True), size) > 0.5
        yield name, img, ~known, RECIPES[name]
    rng = np.random.default_rng(1)
    for name in SET12:
        case = missing_case(data, name, size, rng)  # drawn whatever is kept: the masks stay the same
        if not keep or name in keep or "missing" in keep:
            yield case
    if not keep or "strokes" in keep:
        img = load_grey(data / "set12" / "10_Boat.png", strokes_size)
        yield f"10_Boat {strokes_size} strokes", img, stroke_mask(img.shape, 0.05, 0, 60.0), None


def blob_mask(shape, coverage: float, seed: int) -> np.ndarray:
    """Seeded large holes: ellipses (semi-axes 4-10 % of the shorter side, the other 40-100 % of
    that, any orientation) anywhere in the image until ``coverage`` of the pixels is hit."""
    from skimage.draw import ellipse

    h, w = shape
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)
    while mask.mean() < coverage:
        r = rng.uniform(0.04, 0.10) * min(h, w)
        c = r * rng.uniform(0.4, 1.0)
        centre = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        rr, cc = ellipse(*centre, r, c, shape=shape, rotation=rng.uniform(0, np.pi))
        mask[rr, cc] = True
    return mask


def blob_case(data: Path, name: str, size: int):
    """``set9/NAME`` (colour) or ``set12/NAME`` (grey), centred crop, seeded ellipse holes covering 8 %
    (the seed: the CRC-32 of the name, so a case's mask does not depend on the others run)."""
    import zlib

    folder, _, stem = name.partition("/")
    if folder not in ("set9", "set12") or not stem:
        raise SystemExit(f"--blobs {name!r}: give set9/NAME or set12/NAME, e.g. set9/F16,set12/02_House")
    img = crop(load(data / folder / f"{stem}.png", grey=folder == "set12"), size)
    return f"{stem} 8% blobs", img, blob_mask(img.shape[:2], 0.08, zlib.crc32(name.encode())), None


def todo_cases(args) -> list:
    """The cases ``--cases`` keeps (all when none of it, ``--set12`` and ``--blobs`` is given), then
    each ``--set12`` image with 50 % of its pixels missing (numpy seed 100 + its place in the list),
    then each ``--blobs`` image with large holes (:func:`blob_case`)."""
    keep = set(args.cases.split(",")) if args.cases else set()
    more = args.set12 or args.blobs
    todo = list(cases(Path(args.data), args.size, keep, args.strokes_size)) if (keep or not more) else []
    for k, name in enumerate(n for n in args.set12.split(",") if n):
        todo.append(missing_case(Path(args.data), name, args.size, np.random.default_rng(100 + k)))
    todo += [blob_case(Path(args.data), n, args.size) for n in args.blobs.split(",") if n]
    return todo


def _params(preset: str, sets: list[str], steps: int):
    from dataclasses import replace

    from napari_deep_prior.restore.presets import get_preset

    p = get_preset(preset, task="inpaint")
    net_kw, kw = {}, {}
    for item in sets:
        key, _, val = item.partition("=")
        if key == "channels":
            w = tuple(int(v) for v in val.split(","))
            net_kw.update(channels_down=w, channels_up=w)
        elif key == "skip":
            net_kw["channels_skip"] = (int(val),) * len(p.net.channels_down)
        elif key in ("upsample", "input_kind"):
            net_kw[key] = val
        elif key == "input_depth":
            net_kw[key] = int(val)
        elif key in ("lr", "reg_noise_std"):
            kw[key] = float(val)
        elif key == "exp_weight":
            kw[key] = None if val == "none" else float(val)
        elif key == "ema_warmup":
            kw[key] = val.lower() in ("1", "true")
        else:
            raise SystemExit(f"--set {key}: unknown key")
    if "channels_skip" in net_kw or "channels_down" in net_kw:
        n = len(net_kw.get("channels_down", p.net.channels_down))
        net_kw.setdefault("channels_skip", p.net.channels_skip[:1] * n)
    return p.replace(
        net=replace(p.net, **net_kw),
        iterations=steps,
        early_stop=False,
        history_every=0,
        preview_every=10,
        yield_every=10,
        **kw,
    )


def _hole_psnr(est: np.ndarray, clean: np.ndarray) -> float:
    mse = float(np.mean((np.clip(est, 0, 1) - clean) ** 2))
    return float(10 * np.log10(1.0 / max(mse, 1e-20)))


def run(name, clean, holes, params, seed: int) -> dict:
    import torch

    from napari_deep_prior.restore.fit import DIPFit

    img, hole_px, damaged = damage(clean, holes)
    target = img[hole_px]
    fit = DIPFit(damaged, known=~holes, params=params, device=torch.device("cpu"), seed=seed)
    its, ps, changes = [], [], {lag: [] for lag in LAGS}
    past: deque = deque(maxlen=max(LAGS) // 10 + 1)
    t0 = time.perf_counter()
    first = None
    for step in fit.steps():
        if first is None:
            first = (step.iteration, time.perf_counter() - t0)
        est = step.preview[hole_px]  # the estimate the fit would return now
        past.append(est)
        its.append(step.iteration)
        ps.append(round(_hole_psnr(est, target), 4))
        for lag in LAGS:
            k = lag // 10
            changes[lag].append(float(np.mean(np.abs(est - past[-1 - k]))) if len(past) > k else None)
    wall = time.perf_counter() - t0
    n = params.iterations
    s_step = (wall - first[1]) / max(n - first[0], 1)
    k = int(np.argmax(ps))
    print(f"{name}: peak {ps[k]:.2f} dB at {its[k]}, {s_step:.4f} s/step, wall {wall:.0f} s", flush=True)
    return {
        "image": name,
        "shape": list(clean.shape),
        "hole_fraction": float(holes.mean()),
        "s_per_step": s_step,
        "startup_s": first[1] - first[0] * s_step,
        "iterations": its,
        "psnr": ps,
        "change": {str(lag): v for lag, v in changes.items()},
    }


def record(args, recipe: bool = False) -> None:
    import torch

    torch.set_num_threads(args.threads)
    out = {
        "mode": "recipe" if recipe else "record",
        "size": args.size,
        "steps": args.steps,
        "preset": args.preset,
        "set": args.set or [],
        "threads": args.threads,
        "torch": torch.__version__,
        "images": [],
    }
    for name, clean, holes, recipe_name in todo_cases(args):
        if recipe:
            if recipe_name is None:
                continue
            from napari_deep_prior.restore.presets import get_preset

            steps = (
                min(args.steps, get_preset(recipe_name).iterations)
                if args.steps
                else get_preset(recipe_name).iterations
            )
            params = get_preset(recipe_name).replace(
                iterations=steps, history_every=0, preview_every=10, yield_every=10
            )
        else:
            params = _params(args.preset, args.set or [], args.steps)
        row = run(name, clean, holes, params, args.seed)
        if recipe:
            row["recipe"] = recipe_name
        out["images"].append(row)
        Path(args.out).write_text(json.dumps(out))


def rule_change(row, ratio: float, lag: int = 50, start: int = 200, floor: float = 0.0005) -> int:
    """The shipped hole-change stop (``DIPParams.es_hole_change``), replayed.

    The first step (from ``start``) where the holes' mean change over ``lag`` steps is at most
    ``ratio`` times that change at step ``2 * lag``, or at most ``floor``.
    """
    its, ch = row["iterations"], row["change"][str(lag)]
    ref = next((c for it, c in zip(its, ch, strict=True) if it >= 2 * lag and c is not None), None)
    for it, c in zip(its, ch, strict=True):
        if it >= start and c is not None and ref is not None and c <= max(ratio * ref, floor):
            return it
    return its[-1]


def at(row, t: int) -> float:
    its = row["iterations"]
    return row["psnr"][min(range(len(its)), key=lambda i: abs(its[i] - t))]


def analyse(args) -> None:
    recipe = _recipe_rows(args.recipe)
    for path in args.recordings:
        rec = json.loads(Path(path).read_text())
        rows = rec["images"]
        print(f"\n## {path}: preset {rec['preset']} {rec['set']}, {rec['steps']} steps, {rec['threads']} thread(s)\n")
        rules = {"oracle": lambda r: r["iterations"][int(np.argmax(r["psnr"]))]}
        for ratio in (1 / float(d) for d in args.ratios.split(",")):
            rules[f"holes settled 1/{round(1 / ratio)}"] = lambda r, q=ratio: rule_change(r, q)
        rules["end"] = lambda r: r["iterations"][-1]
        print("| rule | " + " | ".join(r["image"] for r in rows) + " | mean dB | Δrecipe | time ratio |")
        print("|---" * (len(rows) + 4) + "|")
        for name, rule in rules.items():
            cells, dbs, gaps, t_ours, t_rec = [], [], [], [], []
            for r in rows:
                t = rule(r)
                q = at(r, t)
                cells.append(f"{q:.2f} @{t}")
                dbs.append(q)
                if r["image"] in recipe:
                    gaps.append(q - recipe[r["image"]]["peak"])
                    t_ours.append(r["startup_s"] + t * r["s_per_step"])
                    t_rec.append(recipe[r["image"]]["time"])
            gap = f"{np.mean(gaps):+.2f}" if gaps else "-"
            ratio = f"{np.mean(np.array(t_ours) / np.array(t_rec)):.3f}" if t_rec else "-"
            print(f"| {name} | " + " | ".join(cells) + f" | {np.mean(dbs):.2f} | {gap} | {ratio} |")
        print("\ns/step: " + ", ".join(f"{r['image']} {r['s_per_step']:.4f}" for r in rows))
    if recipe:
        print(
            "\nrecipe (oracle): "
            + ", ".join(
                f"{k} {v['peak']:.2f} dB @{v['step']}/{v['steps']} ({v['time']:.0f} s)" for k, v in recipe.items()
            )
        )


def _recipe_rows(paths) -> dict:
    """Per image of ``recipe`` recordings: the oracle (best) PSNR, its step, the time to it, steps run."""
    rows = {}
    for p in paths or []:
        for r in json.loads(Path(p).read_text())["images"]:
            k = int(np.argmax(r["psnr"]))
            rows[r["image"]] = {
                "peak": r["psnr"][k],
                "step": r["iterations"][k],
                "time": r["startup_s"] + r["iterations"][k] * r["s_per_step"],
                "steps": r["iterations"][-1],
            }
    return rows


def shipped(args) -> None:
    import torch

    from napari_deep_prior.arrays import drive
    from napari_deep_prior.restore.api import prepare_inpaint

    torch.set_num_threads(args.threads)
    todo = todo_cases(args)
    recipe = _recipe_rows(args.recipe)
    params = None  # the default preset as prepare resolves it
    if args.set:
        from napari_deep_prior.restore.presets import get_preset

        changes = {key: float(val) for key, _, val in (item.partition("=") for item in args.set)}
        params = get_preset("inpaint", task="inpaint").replace(**changes)
    out = {"mode": "shipped", "size": args.size, "threads": args.threads, "torch": torch.__version__, "images": []}
    out["set"] = args.set or []
    print("| image | default: holes dB @ step (steps run, stop) | s | preset | recipe oracle dB | Δ dB | time ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, clean, holes, _ in todo:
        img, hole_px, damaged = damage(clean, holes)
        grey = clean.ndim == 2
        t0 = time.perf_counter()  # as inpaint() runs it: prepare (the default's choice), then the fit
        job = prepare_inpaint(
            damaged[..., 0] if grey else damaged,
            holes,
            params=params,
            seed=args.seed,
            channel_axis=None if grey else -1,
        )
        o = drive(job.steps())
        wall = time.perf_counter() - t0
        result = o.image[..., None] if grey else o.image
        q = _hole_psnr(result[hole_px], img[hole_px])
        fit = o.fits[0]
        preset = job.preset
        row = {"image": name, "psnr": q, "iteration": fit.iteration, "steps": fit.iterations_run}
        row.update(stop=fit.stop_reason, wall=wall, preset=preset, notes=list(o.notes), fill_weight=fit.fill_weight)
        out["images"].append(row)
        r = recipe.get(name)
        cells = ["–"] * 3
        if r is not None:
            cells = [f"{r['peak']:.2f}", f"{q - r['peak']:+.2f}", f"{wall / r['time']:.2f}"]
        print(
            f"| {name} | {q:.2f} @ {fit.iteration} ({fit.iterations_run}, {fit.stop_reason}"
            + ("" if fit.fill_weight is None else f", w {fit.fill_weight:.2f}")
            + f") | {wall:.0f} | {preset} | "
            + " | ".join(cells)
            + " |",
            flush=True,
        )
        Path(args.out).write_text(json.dumps(out))


def add_case_args(r: argparse.ArgumentParser) -> None:
    """The options that pick the cases (:func:`todo_cases`), the seed, the threads and the output."""
    r.add_argument("--data", required=True)
    r.add_argument("--size", type=int, default=128, help="centred crop (0: the whole image)")
    r.add_argument("--strokes-size", type=int, default=512)
    r.add_argument("--cases", default="", help="comma list: kate,vase,library,missing,strokes (default all)")
    r.add_argument("--set12", default="", help="more Set12 images with 50 %% missing, e.g. 01_C.man,03_Peppers")
    r.add_argument("--blobs", default="", help="images with large elliptic holes (8 %%): set9/F16,set12/02_House")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--out", required=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for mode in ("record", "recipe", "shipped"):
        r = sub.add_parser(mode)
        add_case_args(r)
        if mode == "shipped":
            r.add_argument("--recipe", action="append", help="recipe-mode recordings for the Δ and ratio columns")
            r.add_argument(
                "--set", action="append", help="a number field of the default's DIPParams, e.g. fill_blend=0"
            )
            continue
        r.add_argument(
            "--steps",
            type=int,
            default=2000 if mode == "record" else 0,
            help="steps (recipe: truncate the reference preset's steps; 0 = all)",
        )
        r.add_argument("--preset", default="inpaint")
        r.add_argument("--set", action="append", help="channels=16,32,.. skip=4 upsample=bilinear exp_weight=0.99 ...")
    a = sub.add_parser("analyse")
    a.add_argument("recordings", nargs="+")
    a.add_argument("--recipe", action="append")
    a.add_argument("--ratios", default="12,16,20,24", help="hole-change stops to replay: 1/N for each N")
    args = ap.parse_args(argv)
    if args.cmd == "record":
        record(args)
    elif args.cmd == "recipe":
        record(args, recipe=True)
    elif args.cmd == "shipped":
        shipped(args)
    else:
        analyse(args)


if __name__ == "__main__":
    main()
