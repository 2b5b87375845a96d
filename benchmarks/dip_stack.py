"""Warm start on a stack: N correlated noisy planes, each plane fitted from scratch vs each
plane starting from the previous plane's weights.

Usage::

    python benchmarks/dip_stack.py --data ../shared/data --image House --planes 8 --size 128

The stack is a slow pan over one Set9 image (plane k is the crop shifted by ``--shift`` * k
pixels, like a drifting time series), each plane with its own Gaussian noise (sigma = 25).
Both runs use the default denoising preset and the same seed; reported: total wall time,
steps per plane, and the PSNR of every plane against its clean crop.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from dip_quality import SIGMA, load, psnr


def make_stack(img, planes, size, shift, seed=0):
    h, w = img.shape[:2]
    span = shift * (planes - 1)
    if size + span > w or size > h:
        raise SystemExit(f"image {h}x{w} too small for {planes} planes of {size} px shifted by {shift}")
    top, left = (h - size) // 2, (w - size - span) // 2
    clean = np.stack([img[top : top + size, left + k * shift : left + k * shift + size] for k in range(planes)])
    rng = np.random.default_rng(seed)
    noisy = np.clip(clean + rng.normal(0, SIGMA, clean.shape), 0, 1).astype(np.float32)
    return clean, noisy


def run(noisy, clean, warm, seed, preset):
    from napari_deep_prior import denoise

    t0 = time.perf_counter()
    out, full = denoise(
        noisy, preset=preset, channel_axis=-1, seed=seed, warm_start=warm, return_history=True, history_every=0
    )
    wall = time.perf_counter() - t0
    ps = [psnr(c, o) for c, o in zip(clean, out, strict=True)]
    return {
        "warm_start": warm,
        "wall_s": wall,
        "steps": list(full.iterations_run),
        "psnr": ps,
        "mean_psnr": float(np.mean(ps)),
        "total_steps": int(sum(full.iterations_run)),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--image", default="House")
    ap.add_argument("--planes", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--shift", type=int, default=2, help="pixels of pan between planes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="denoise")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--reuse-cold", type=Path, default=None, help="take the independent runs from an earlier JSON of the same stack"
    )
    args = ap.parse_args(argv)

    import torch

    img = load(args.data / "set9" / f"{args.image}.png")
    clean, noisy = make_stack(img, args.planes, args.size, args.shift)
    res = {
        "image": args.image,
        "planes": args.planes,
        "size": args.size,
        "shift": args.shift,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "input_psnr": [psnr(c, n) for c, n in zip(clean, noisy, strict=True)],
    }
    for warm in (False, True):
        if not warm and args.reuse_cold is not None:
            res["cold"] = json.loads(args.reuse_cold.read_text())["cold"]
            res["cold_reused_from"] = str(args.reuse_cold)
            continue
        r = run(noisy, clean, warm, args.seed, args.preset)
        res["warm" if warm else "cold"] = r
        print(
            json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "psnr"}),
            flush=True,
        )
    c, w = res["cold"], res["warm"]
    res["speedup"] = c["wall_s"] / w["wall_s"]
    print("\n| run | total s | steps per plane | mean PSNR dB |\n|---|---|---|---|")
    for name, r in (("independent", c), ("warm start", w)):
        print(f"| {name} | {r['wall_s']:.1f} | {r['steps']} | {r['mean_psnr']:.2f} |")
    print(
        f"\nwarm start: {res['speedup']:.2f}x faster, "
        f"{w['mean_psnr'] - c['mean_psnr']:+.2f} dB (input {np.mean(res['input_psnr']):.2f} dB)"
    )
    out = args.out or Path(__file__).parent / "results" / f"stack-{args.image}-{args.size}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
