"""DIP quality benchmark: denoising (Set9, sigma = 25), inpainting (kate, vase, library) and
50 %-missing-pixel restoration (barbara; ``set12-50``: the paper's Table-1 protocol on the
eight Table-1 images of Set12, full size with ``--size 0``), against scikit-image's classical baselines.

Usage::

    python benchmarks/dip_quality.py --data ../shared/data --size 128 --out results/quality-128.json

``--size S`` takes the centred S x S crop of every image (0 = full size). Per image it reports
the PSNR of the corrupted input, of the DIP result (the returned, early-stopped estimate), of
the best frame in the iteration history, the stop iteration, the steps run, wall time and
seconds per step, and, on the same inputs, scikit-image's baselines: denoise_nl_means
(estimate_sigma, fast_mode=True, h = 0.8 * sigma as in scikit-image's gallery),
denoise_tv_chambolle (the gallery's weight 0.1, and the best of a small weight grid chosen
with the ground truth, an oracle) and inpaint_biharmonic.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from skimage import io
from skimage.metrics import peak_signal_noise_ratio
from skimage.restoration import (
    denoise_nl_means,
    denoise_tv_chambolle,
    estimate_sigma,
    inpaint_biharmonic,
)

SIGMA = 25.0 / 255.0
TV_GRID = (0.04, 0.06, 0.08, 0.1, 0.13, 0.17, 0.22)
#: The images of the paper's Table 1 (50 % missing pixels) found in Set12, and the paper's DIP
#: PSNR on each (mean 33.52 dB).
TABLE1_SET12 = {
    "09_Barbara": 32.22,
    "10_Boat": 33.06,
    "02_House": 39.16,
    "08_Lena": 36.16,
    "03_Peppers": 33.05,
    "01_C.man": 29.80,
    "12_Couple": 32.52,
    "11_Man": 32.20,
}


def psnr(gt, x):
    return float(peak_signal_noise_ratio(gt, np.clip(x, 0, 1), data_range=1.0))


def load(path: Path, grey: bool = False) -> np.ndarray:
    img = io.imread(path)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if grey and img.ndim == 3:
        img = img[..., 0]
    return img.astype(np.float64) / (65535.0 if img.dtype == np.uint16 else 255.0)


def crop(img: np.ndarray, size: int) -> np.ndarray:
    if size <= 0:
        return img
    h, w = img.shape[:2]
    s_h, s_w = min(size, h), min(size, w)
    top, left = (h - s_h) // 2, (w - s_w) // 2
    return img[top : top + s_h, left : left + s_w]


#: cap on the DIP iterations (``--max-iterations``, smoke runs of the script only; 0: none)
MAX_ITERATIONS = 0


def run_dip(fn, *args, history_every, **kw):
    if MAX_ITERATIONS:
        kw["iterations"] = MAX_ITERATIONS
    t0 = time.perf_counter()
    out, full = fn(*args, seed=0, history_every=history_every, return_history=True, **kw)
    wall = time.perf_counter() - t0
    return out, full, wall


def dip_record(gt, out, full, wall):
    hist_psnr = [psnr(gt, f) for f in full.history] if full.history is not None else []
    k = int(np.argmax(hist_psnr)) if hist_psnr else None
    steps = full.iterations_run[0]
    return {
        "dip": psnr(gt, out),
        "dip_best_frame": hist_psnr[k] if k is not None else None,
        "dip_best_frame_iteration": int(full.history_iterations[k]) if k is not None else None,
        "dip_stop_iteration": full.stop_iterations[0],
        "dip_steps": steps,
        "dip_wall_s": wall,
        "dip_s_per_step": wall / max(steps, 1),
        "psnr_curve": list(zip([int(i) for i in full.history_iterations], hist_psnr, strict=True)),
    }


def bench_denoise(files, size, preset, history_every, log):
    from napari_deep_prior import denoise

    rows = []
    for f in files:
        gt = crop(load(f), size)
        rng = np.random.default_rng(0)
        noisy = np.clip(gt + rng.normal(0.0, SIGMA, gt.shape), 0, 1).astype(np.float32)
        rec = {"image": f.stem, "shape": list(gt.shape), "input": psnr(gt, noisy)}
        sig = float(np.mean(estimate_sigma(noisy, channel_axis=-1)))
        t0 = time.perf_counter()
        nlm = denoise_nl_means(
            noisy, h=0.8 * sig, sigma=sig, fast_mode=True, patch_size=5, patch_distance=6, channel_axis=-1
        )
        rec["nl_means"], rec["nl_means_s"] = psnr(gt, nlm), time.perf_counter() - t0
        rec["tv_chambolle"] = psnr(gt, denoise_tv_chambolle(noisy, weight=0.1, channel_axis=-1))
        rec["tv_chambolle_oracle"] = max(
            psnr(gt, denoise_tv_chambolle(noisy, weight=w, channel_axis=-1)) for w in TV_GRID
        )
        out, full, wall = run_dip(denoise, noisy, preset=preset, channel_axis=-1, history_every=history_every)
        rec.update(dip_record(gt, out, full, wall))
        rows.append(rec)
        log(rec)
    return rows


def bench_inpaint(pairs, size, preset, history_every, log, grey=False):
    from napari_deep_prior import inpaint

    rows = []
    for name, gt, known in pairs:
        gt, known = crop(gt, size), crop(known, size)
        holes = ~known
        ch = None if gt.ndim == 2 else -1
        damaged = (gt * (known if ch is None else known[..., None])).astype(np.float32)
        rec = {"image": name, "shape": list(gt.shape), "holes": float(holes.mean()), "input": psnr(gt, damaged)}
        t0 = time.perf_counter()
        bh = inpaint_biharmonic(damaged, holes, channel_axis=ch)
        rec["biharmonic"], rec["biharmonic_s"] = psnr(gt, bh), time.perf_counter() - t0
        out, full, wall = run_dip(inpaint, damaged, holes, preset=preset, channel_axis=ch, history_every=history_every)
        rec.update(dip_record(gt, out, full, wall))
        rows.append(rec)
        log(rec)
    return rows


def table(rows, cols):
    head = "| " + " | ".join(["image"] + cols) + " |"
    sep = "|" + "---|" * (len(cols) + 1)
    lines = [head, sep]
    for r in rows:
        cells = [r["image"]] + [(f"{r[c]:.2f}" if isinstance(r.get(c), float) else str(r.get(c, ""))) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    means = ["**mean**"] + [
        (
            f"{np.mean([r[c] for r in rows]):.2f}"
            if all(isinstance(r.get(c), (int, float)) and r.get(c) is not None for r in rows)
            else ""
        )
        for c in cols
    ]
    lines.append("| " + " | ".join(means) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder with set9/ and dip/ (../shared/data)")
    ap.add_argument("--size", type=int, default=128, help="centred crop size; 0 = full size")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default results/quality-SIZE.json)")
    ap.add_argument("--cases", default="denoise,inpaint,barbara")
    ap.add_argument("--images", default="", help="comma-separated image names to keep (default all)")
    ap.add_argument("--denoise-preset", default="denoise")
    ap.add_argument("--inpaint-preset", default="inpaint")
    ap.add_argument("--history-every", type=int, default=25)
    ap.add_argument(
        "--max-iterations",
        type=int,
        default=0,
        help="cap the DIP iterations (smoke runs of the script only; 0: the preset's)",
    )
    args = ap.parse_args(argv)
    global MAX_ITERATIONS
    MAX_ITERATIONS = args.max_iterations

    import torch

    keep = {s for s in args.images.split(",") if s}
    out_path = args.out or Path(__file__).parent / "results" / f"quality-{args.size}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "size": args.size,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "presets": {"denoise": args.denoise_preset, "inpaint": args.inpaint_preset},
    }

    def log(rec):
        short = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in rec.items() if k != "psnr_curve"}
        print(json.dumps(short), flush=True)

    def save():
        out_path.write_text(json.dumps(result, indent=1))

    cases = args.cases.split(",")
    if "denoise" in cases:
        files = sorted((args.data / "set9").glob("*.png"))
        files = [f for f in files if not keep or f.stem in keep]
        result["denoise"] = bench_denoise(files, args.size, args.denoise_preset, args.history_every, log)
        save()
    if "inpaint" in cases:
        pairs = []
        for name in ("kate", "vase", "library"):
            if keep and name not in keep:
                continue
            d = args.data / "dip" / "inpainting"
            gt = load(d / f"{name}.png")
            known = load(d / f"{name}_mask.png", grey=True) > 0.5  # 255 = known pixel
            pairs.append((name, gt, known))
        result["inpaint"] = bench_inpaint(pairs, args.size, args.inpaint_preset, args.history_every, log)
        save()
    if "barbara" in cases:
        gt = load(args.data / "dip" / "restoration" / "barbara.png", grey=True)
        rng = np.random.default_rng(0)
        known = rng.random(gt.shape) < 0.5
        result["barbara"] = bench_inpaint(
            [("barbara-50%", gt, known)], args.size, args.inpaint_preset, args.history_every, log
        )
        save()

    if "set12-50" in cases:
        pairs = []
        for name in TABLE1_SET12:
            if keep and name not in keep:
                continue
            gt = load(args.data / "set12" / f"{name}.png", grey=True)
            rng = np.random.default_rng(0)
            pairs.append((name, gt, rng.random(gt.shape) < 0.5))
        rows = bench_inpaint(pairs, args.size, args.inpaint_preset, args.history_every, log)
        for r in rows:
            r["paper_dip"] = TABLE1_SET12[r["image"]]
        result["set12-50"] = rows
        save()

    cols_d = [
        "input",
        "nl_means",
        "tv_chambolle",
        "tv_chambolle_oracle",
        "dip",
        "dip_best_frame",
        "dip_stop_iteration",
        "dip_steps",
        "dip_wall_s",
        "dip_s_per_step",
    ]
    cols_i = [
        "holes",
        "input",
        "biharmonic",
        "dip",
        "dip_best_frame",
        "dip_stop_iteration",
        "dip_steps",
        "dip_wall_s",
        "dip_s_per_step",
    ]
    for key, cols in (
        ("denoise", cols_d),
        ("inpaint", cols_i),
        ("barbara", cols_i),
        ("set12-50", cols_i + ["paper_dip"]),
    ):
        if key in result:
            print(f"\n### {key} (size {args.size}, PSNR dB)\n")
            print(table(result[key], cols))
    print(f"\nwrote {out_path}")


if __name__ == "__main__":
    main()
