"""The blended fill and the hole-change stop, recorded without a stop and replayed offline.

Usage::

    # record: the default "inpaint" fit with the blend's held-out pixels left out of its loss
    python benchmarks/dip_inpaint_blend.py record --data ../shared/data --size 256 --steps 2000 \\
        --blobs set9/F16,set12/02_House --out benchmarks/results/blend-blobs.json
    python benchmarks/dip_inpaint_blend.py record --data ../shared/data --size 128 --steps 2500 \\
        --cases vase,library --out benchmarks/results/blend-dip.json
    # replay the hole-change stop at several fractions on the recordings (and a held-out stop)
    python benchmarks/dip_inpaint_blend.py replay benchmarks/results/blend-*.json --ratios 5,8,10,20 \\
        --patience 200,300
    # the shipped fit to its own stop: the blend's weight chosen, the best one, and floors under it
    python benchmarks/dip_inpaint_blend.py weights --data ../shared/data --size 256 \\
        --blobs set9/F16,set12/02_House --floors 0.3,0.5,0.7 --out benchmarks/results/weights.json

The cases are those of ``dip_inpaint_speed.py`` (``--cases`` kate,vase,library,strokes,missing;
``--set12`` Set12 images with 50 % missing; ``--blobs`` Set9 / Set12 crops with seeded ellipse
holes covering 8 %).  A recording holds, every 10 steps, the holes' PSNR of the estimate the fit
would return (the network's own), the network's PSNR on the held-out pixels, the blend's weight w
(``restore.fillblend.blend_weight`` on the held-out pixels, as ``blend_fill`` chooses it), the
blend's PSNR on the held-out pixels (what a stop on them could read) and the holes' PSNR of the
blend ``b + w (network - b)`` (b: scikit-image's biharmonic fill) and of the blend the fit returns
(``psnr_blend_floor``: for large holes ``w`` is at least ``fill_blend_large_min``), and the mean
absolute change of the estimate over the holes since 50 steps before (what the hole-change stop
reads: ``restore.fit``).  The held-out pixels are ``restore.fillblend.blend_pixels(known, 0.05,
0)``, as the shipped fit chooses them; the fit runs with ``fill_blend=0`` and those pixels unknown,
so the recorded network is the one the shipped fit trains.  Replays are exact for the stop (a
fraction maps the recorded changes to a step: the first yield from ``es_start`` on whose change is
at most the fraction of the change at step 100, or the hole-change floor) and for the blend at that
step; the shipped fit's ES-WMV safety net is not replayed.  ``--patience P`` also replays a stop
that the fit does not have: the estimate whose blend predicts the held-out pixels best is kept,
and the fit ends P steps after it without a better one (from step 100 on).

``weights`` runs the default fit (``restore.fit.DIPFit``, the preset as shipped but with
``fill_blend_large_min=0``) to its own stop and takes the network's estimate where the fit hands
it to ``blend_fill``; it reports the share ``w`` the held-out pixels choose, the share that would
be best on the holes themselves (the oracle, from the clean image), the number of held-out
pieces, and the holes' PSNR of the network alone, the biharmonic fill alone, the blend at ``w``,
at ``max(w, floor)`` for each ``--floors`` value (``DIPParams.fill_blend_large_min``) and at the
oracle share; the last line gives the means per kind of holes.  Cases the fit does not blend
(no holes, scattered holes such as the 50 % missing ones) are listed and skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from dip_inpaint_speed import _hole_psnr, _params, add_case_args, damage, todo_cases


def record_case(name, clean, holes, params, seed: int) -> dict:
    import torch
    from skimage.restoration import inpaint_biharmonic

    from napari_deep_prior.restore.fillblend import blend_pixels, blend_weight
    from napari_deep_prior.restore.fit import DIPFit
    from napari_deep_prior.restore.regions import hole_kind

    hold = blend_pixels(~holes, 0.05, 0)
    if hold is None:
        raise SystemExit(f"{name}: too few known pixels shaped like the holes to hold out (blend_pixels)")
    img, hole_px, damaged = damage(clean, holes)
    held_px = np.broadcast_to(hold[..., None], img.shape)
    bih = inpaint_biharmonic(np.where(held_px, 0.0, damaged), holes | hold, channel_axis=-1)
    bih_plain = inpaint_biharmonic(damaged, holes, channel_axis=-1)
    b_v, y_v, b_h, y_h = bih[held_px], img[held_px], bih_plain[hole_px], img[hole_px]
    fit = DIPFit(
        np.where(held_px, 0.0, damaged).astype(np.float32),
        known=~(holes | hold),
        params=params.replace(fill_blend=0.0),
        device=torch.device("cpu"),
        seed=seed,
    )
    keys = (
        "iterations",
        "psnr_holes",
        "psnr_held",
        "weight",
        "psnr_held_blend",
        "psnr_blend",
        "psnr_blend_floor",
        "hole_change",
    )
    # the least share the shipped fit keeps for large holes (DIPParams.fill_blend_large_min)
    floor = params.fill_blend_large_min if hole_kind(holes) == "large" else 0.0
    rows = {k: [] for k in keys}
    past: dict[int, np.ndarray] = {}
    t0 = time.perf_counter()
    for st in fit.steps():
        t, est = st.iteration, st.preview
        now = est[hole_px]
        past[t] = now
        then = past.pop(t - 50, None)
        for old in [k for k in past if k < t - 50]:
            del past[old]
        e_v = est[held_px]
        w = blend_weight(e_v, b_v, y_v)
        rows["iterations"].append(t)
        rows["psnr_holes"].append(_hole_psnr(now, y_h))
        rows["psnr_held"].append(_hole_psnr(e_v, y_v))
        rows["weight"].append(w)
        rows["psnr_held_blend"].append(_hole_psnr(b_v + w * (e_v - b_v), y_v))
        rows["psnr_blend"].append(_hole_psnr(b_h + w * (now - b_h), y_h))
        rows["psnr_blend_floor"].append(_hole_psnr(b_h + max(w, floor) * (now - b_h), y_h))
        rows["hole_change"].append(None if then is None else float(np.abs(now - then).mean()))
    return {
        "image": name,
        "hole_kind": hole_kind(holes),
        "hole_fraction": float(holes.mean()),
        "held_fraction": float(hold.mean()),
        "psnr_biharmonic": _hole_psnr(b_h, y_h),
        "wall": time.perf_counter() - t0,
        **rows,
    }


def record(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    params = _params(args.preset, args.set or [], args.steps)
    out = {"mode": "record", "size": args.size, "steps": args.steps, "preset": args.preset, "set": args.set or []}
    out["images"] = []
    for name, clean, holes, _ in todo_cases(args):
        row = record_case(name, clean, holes, params, args.seed)
        out["images"].append(row)
        Path(args.out).write_text(json.dumps(out))
        k = int(np.argmax(row["psnr_holes"]))
        print(
            f"{name} ({row['hole_kind'] or 'thin'} holes): biharmonic {row['psnr_biharmonic']:.2f} dB; network "
            f"best {row['psnr_holes'][k]:.2f} @ {row['iterations'][k]}; blend at the end {row['psnr_blend'][-1]:.2f}; "
            f"{row['wall']:.0f} s",
            flush=True,
        )


def replay_stop(row: dict, ratio: float, es_start: int = 200, floor: float = 0.0005) -> int:
    """The index of the recorded yield where the hole-change stop at ``ratio`` ends the fit (the
    last one if it never does)."""
    its, change = row["iterations"], row["hole_change"]
    if 100 not in its or change[its.index(100)] is None:
        raise SystemExit(
            f"{row['image']}: recorded to step {its[-1]}; the stop's reference is the holes' change at "
            "step 100: record at least es_start (200) steps"
        )
    ref = change[its.index(100)]
    for i, (t, c) in enumerate(zip(its, change, strict=True)):
        if t >= es_start and c is not None and c <= max(ratio * ref, floor):
            return i
    return len(its) - 1


def replay_held_stop(row: dict, patience: int, start: int = 100) -> tuple[int, int]:
    """(best, stop): the indices of the recorded yields where a stop on the blend's error on the
    held-out pixels would keep its estimate (the least error so far) and end the fit (``patience``
    steps without a smaller error, from ``start`` on; the last yield if never)."""
    its, val = row["iterations"], row.get("psnr_held_blend")
    if val is None:
        raise SystemExit(f"{row['image']}: recorded without psnr_held_blend; record it again to replay --patience")
    best = None
    for i, t in enumerate(its):
        if t < start:
            continue
        if best is None or val[i] > val[best]:
            best = i
        if t - its[best] >= patience:
            return best, i
    return (best if best is not None else len(its) - 1), len(its) - 1


def replay(args) -> None:
    ratios = [int(r) for r in args.ratios.split(",")]
    pats = [int(v) for v in args.patience.split(",") if v]
    head = " | ".join([f"1/{r}: blend (network) @ step" for r in ratios] + [f"held-out, patience {p}" for p in pats])
    print(f"| case (holes) | network best @ step | blend best @ step | {head} |")
    print("|---" * (3 + len(ratios) + len(pats)) + "|")
    sums: dict[str, dict[int, list]] = {}  # per kind of holes: per ratio, [blend dB, steps, cases]
    for path in args.recordings:
        for row in json.loads(Path(path).read_text())["images"]:
            its, ph, pb = row["iterations"], row["psnr_holes"], row["psnr_blend"]
            kn, kb = int(np.argmax(ph)), int(np.argmax(pb))
            kind = row.get("hole_kind") or "thin"
            cells = []
            for r in ratios:
                i = replay_stop(row, 1.0 / r)
                acc = sums.setdefault(kind, {}).setdefault(r, [0.0, 0, 0])
                acc[0] += pb[i]
                acc[1] += its[i]
                acc[2] += 1
                cells.append(f"{pb[i]:.2f} ({ph[i]:.2f}) @ {its[i]}")
            for pat in pats:
                i, j = replay_held_stop(row, pat)
                acc = sums.setdefault(kind, {}).setdefault(-pat, [0.0, 0, 0])
                acc[0] += pb[i]
                acc[1] += its[j]
                acc[2] += 1
                cells.append(f"{pb[i]:.2f} @ {its[i]}, ends {its[j]}")
            print(
                f"| {row['image']} ({kind}) | {ph[kn]:.2f} @ {its[kn]} | {pb[kb]:.2f} @ {its[kb]} | "
                + " | ".join(cells)
                + " |"
            )
    for kind, per in sums.items():
        cells = [f"{v[0] / v[2]:.2f} dB, {v[1]} steps" for v in per.values()]
        print(f"| {kind} holes: mean blend, total steps | | | " + " | ".join(cells) + " |")


def weights_case(name, clean, holes, params, seed: int, floors) -> dict | None:
    import torch
    from scipy import ndimage
    from skimage.restoration import inpaint_biharmonic

    import napari_deep_prior.restore.fit as fitmod
    from napari_deep_prior.restore.fillblend import blend_pixels, blend_weight
    from napari_deep_prior.restore.regions import hole_kind

    kind, frac = hole_kind(holes), params.fill_blend
    # DIPFit's own rule for blending (restore.fit): checked first, so that no fit runs for nothing
    if frac <= 0 or kind == "scattered" or blend_pixels(~holes, frac, seed) is None:
        return None  # the fit would not blend: nothing to weigh
    img, hole_px, damaged = damage(clean, holes)
    seen = {}
    blend = fitmod.blend_fill

    def spy(estimate, target, known, held, min_weight=0.0):  # the network's estimate at the stop
        seen.update(estimate=np.array(estimate), held=np.array(held), min_weight=min_weight)
        return blend(estimate, target, known, held, min_weight=min_weight)

    fitmod.blend_fill = spy
    try:
        fit = fitmod.DIPFit(damaged, known=~holes, params=params, device=torch.device("cpu"), seed=seed)
        t0 = time.perf_counter()
        for _ in fit.steps():
            pass
        res = fit.result()
        wall = time.perf_counter() - t0
    finally:
        fitmod.blend_fill = blend
    if not seen:
        raise SystemExit(f"{name}: the fit did not blend (scattered holes, or too few known pixels to hold out)")
    e, held = seen["estimate"], seen["held"]
    b = inpaint_biharmonic(damaged, holes, channel_axis=-1)
    e_h, b_h, y_h = e[hole_px], b[hole_px], img[hole_px]
    w = float(res.fill_weight)
    oracle = blend_weight(e_h, b_h, y_h)

    def q(share):
        return _hole_psnr(b_h + share * (e_h - b_h), y_h)

    return {
        "image": name,
        "hole_kind": kind,
        "stop": res.iteration,
        "wall": wall,
        "pieces": int(ndimage.label(held, np.ones((3, 3), bool))[1]),
        "weight": w,
        "oracle_weight": oracle,
        "psnr_network": q(1.0),
        "psnr_biharmonic": q(0.0),
        "psnr_blend": q(w),
        "psnr_floors": {str(f): q(max(w, f)) for f in floors},
        "psnr_oracle": q(oracle),
    }


def weights(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    floors = [float(f) for f in args.floors.split(",") if f]
    from napari_deep_prior.restore.presets import get_preset

    base = get_preset(args.preset, task="inpaint")  # as shipped: its stop, steps and cadences
    keep = ("iterations", "iterations_large", "early_stop", "history_every", "preview_every", "yield_every")
    params = _params(args.preset, args.set or [], base.iterations).replace(
        **{k: getattr(base, k) for k in keep}, fill_blend_large_min=0.0
    )
    out = {"mode": "weights", "size": args.size, "preset": args.preset, "set": args.set or [], "floors": floors}
    out["images"] = []
    fl = " | ".join(f"floor {f:g}" for f in floors)
    print(f"| case (holes) | stop | pieces | w (oracle) | network | biharmonic | blend at w | {fl} | oracle |")
    print("|---" * (8 + len(floors)) + "|")
    for name, clean, holes, _ in todo_cases(args):
        row = weights_case(name, clean, holes, params, args.seed, floors)
        if row is None:
            print(f"| {name} | not blended by the fit (no holes, scattered holes, or too few pixels to hold out) |")
            continue
        out["images"].append(row)
        Path(args.out).write_text(json.dumps(out))
        cells = " | ".join(f"{row['psnr_floors'][str(f)]:.2f}" for f in floors)
        print(
            f"| {row['image']} ({row['hole_kind'] or 'thin'}) | {row['stop']} | {row['pieces']} | "
            f"{row['weight']:.2f} ({row['oracle_weight']:.2f}) | {row['psnr_network']:.2f} | "
            f"{row['psnr_biharmonic']:.2f} | {row['psnr_blend']:.2f} | {cells} | {row['psnr_oracle']:.2f} |",
            flush=True,
        )
    for kind in sorted({r["hole_kind"] for r in out["images"]}):
        rows = [r for r in out["images"] if r["hole_kind"] == kind]

        def mean(key, rows=rows):
            return np.mean([r[key] for r in rows])

        cells = " | ".join(f"{np.mean([r['psnr_floors'][str(f)] for r in rows]):.2f}" for f in floors)
        print(
            f"| mean of {len(rows)} ({kind or 'thin'}) | | | {mean('weight'):.2f} ({mean('oracle_weight'):.2f}) | "
            f"{mean('psnr_network'):.2f} | {mean('psnr_biharmonic'):.2f} | {mean('psnr_blend'):.2f} | {cells} | "
            f"{mean('psnr_oracle'):.2f} |"
        )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("record")
    add_case_args(r)
    r.add_argument("--steps", type=int, default=2000)
    r.add_argument("--preset", default="inpaint")
    r.add_argument("--set", action="append", help="as dip_inpaint_speed.py record: channels=..., lr=...")
    p = sub.add_parser("replay")
    p.add_argument("recordings", nargs="+")
    p.add_argument("--ratios", default="5,8,10,20", help="hole-change fractions to replay: 1/N for each N")
    p.add_argument(
        "--patience",
        default="",
        help="also replay a stop on the blend's held-out error: steps without improvement, e.g. 200,300",
    )
    w = sub.add_parser("weights")
    add_case_args(w)
    w.add_argument("--preset", default="inpaint")
    w.add_argument("--set", action="append", help="as dip_inpaint_speed.py record: channels=..., lr=...")
    w.add_argument("--floors", default="0.3,0.5,0.7", help="least network shares to try under the chosen one")
    args = ap.parse_args(argv)
    {"record": record, "replay": replay, "weights": weights}[args.mode](args)


if __name__ == "__main__":
    main()
