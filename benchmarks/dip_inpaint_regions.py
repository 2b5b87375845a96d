"""Inpainting that costs what its holes cost: hole regions vs the whole-image fit vs biharmonic.

Usage::

    python benchmarks/dip_inpaint_regions.py --data /work/shared/data              # 512 px, default steps
    python benchmarks/dip_inpaint_regions.py --data /work/shared/data --size 128 --iterations 30  # smoke test

A grey Set12 image (``--image``, read from ``<data>/set12``; centre-cropped to ``--size``, or
resized when smaller) gets painted strokes from a seeded generator: random polylines of width
3-9 px (a few segments each, gently turning) drawn until they cover ``--coverage`` of the pixels
(default 5 %); or, with ``--missing F``, a fraction F of the pixels missing at random
(scattered holes, numpy seed ``--seed``).  Three fills of the same holes:

- ``regions``: :func:`napari_deep_prior.inpaint` with its defaults (``tile_size`` automatic: only
  boxes around the holes are fitted, see :mod:`napari_deep_prior.restore.regions`; where those would
  cover more than half of the image, thin holes on a plane from 256 px are fitted in tiles of 160,
  each for at most ``tile_iterations`` steps, and other holes whole: the plan column says which);
- ``whole``: the same with ``tile_size=0`` (the whole image is fitted, as before regions);
- ``biharmonic``: :func:`skimage.restoration.inpaint_biharmonic`.

``--tile N`` (repeatable) adds a row per tile side: the whole image in overlapping tiles of N
pixels (``tile_size=N``, as the denoising default's capacity tiles; tiles without a hole are not
fitted; a tile of thin holes for at most the preset's ``tile_iterations`` steps), with the steps
summed over the tiles.

Reported as a Markdown table: wall time, PSNR over the hole pixels only (the known pixels are
returned exactly by all three), and the region plan (the job's note).  ``--threads`` sets
torch's intra-op threads (default 1, the issue's measure).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

#: Stroke widths in pixels (inclusive range) and segments per stroke.
WIDTHS = (3, 9)
SEGMENTS = (2, 5)


def load_grey(path: Path, size: int) -> np.ndarray:
    """A grey image in [0, 1] float32 of ``size`` x ``size``: centre crop, or resize when smaller."""
    import imageio.v3 as iio
    from skimage.color import rgb2gray
    from skimage.transform import resize

    img = iio.imread(path)
    img = rgb2gray(img[..., :3]) if img.ndim == 3 else img / float(np.iinfo(img.dtype).max)
    h, w = img.shape
    if min(h, w) >= size:
        y0, x0 = (h - size) // 2, (w - size) // 2
        img = img[y0 : y0 + size, x0 : x0 + size]
    else:
        img = resize(img, (size, size), order=3, anti_aliasing=False)
    return np.clip(img, 0, 1).astype(np.float32)


def stroke_mask(shape, coverage: float, seed: int, length: float, spread: float = 1.0) -> np.ndarray:
    """Seeded painted strokes: polylines of width 3-9 px until ``coverage`` of the pixels is hit.

    Each stroke starts at a random point of the centred window of ``spread`` times the image's
    sides (1: anywhere) and has 2-5 segments of about ``length / 3`` pixels whose direction turns
    by up to 60 degrees at each vertex (a brush stroke, not a zig-zag).
    """
    from skimage.draw import disk

    h, w = shape
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)
    while mask.mean() < coverage:
        width = rng.integers(WIDTHS[0], WIDTHS[1] + 1)
        y = rng.uniform(0.5 - spread / 2, 0.5 + spread / 2) * h
        x = rng.uniform(0.5 - spread / 2, 0.5 + spread / 2) * w
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(rng.integers(SEGMENTS[0], SEGMENTS[1] + 1)):
            seg = rng.uniform(0.5, 1.5) * length / 3.0
            y1, x1 = y + seg * np.sin(angle), x + seg * np.cos(angle)
            for t in np.linspace(0.0, 1.0, max(2, int(seg))):
                rr, cc = disk((y + t * (y1 - y), x + t * (x1 - x)), width / 2.0, shape=shape)
                mask[rr, cc] = True
            y, x = float(np.clip(y1, 0, h - 1)), float(np.clip(x1, 0, w - 1))
            angle += rng.uniform(-np.pi / 3, np.pi / 3)
    return mask


def hole_psnr(clean: np.ndarray, out: np.ndarray, mask: np.ndarray) -> float:
    mse = float(np.mean((np.clip(out[mask], 0, 1) - clean[mask]) ** 2))
    return 10 * np.log10(1.0 / mse) if mse > 0 else float("inf")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder holding set12/ (never copied into the repo)")
    ap.add_argument("--image", default="10_Boat.png", help="file name in <data>/set12 (default 10_Boat.png)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--coverage", type=float, default=0.05, help="fraction of pixels painted over")
    ap.add_argument("--stroke-length", type=float, default=60.0, help="mean polyline length in pixels")
    ap.add_argument(
        "--spread",
        type=float,
        default=1.0,
        help="strokes start in the centred window of this fraction of the sides (1: anywhere; 0.3: one damaged area)",
    )
    ap.add_argument(
        "--missing",
        type=float,
        default=0.0,
        help="instead of strokes, this fraction of the pixels missing at random (numpy seed --seed; e.g. 0.5)",
    )
    ap.add_argument("--iterations", type=int, default=None, help="cap the steps (default: the preset's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-whole", action="store_true", help="do not run the whole-image fit")
    ap.add_argument("--tile", type=int, action="append", default=[], help="also fit in tiles of this side (repeatable)")
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)

    import torch
    from skimage.restoration import inpaint_biharmonic

    from napari_deep_prior import inpaint
    from napari_deep_prior.restore.api import prepare_inpaint

    torch.set_num_threads(args.threads)
    clean = load_grey(args.data / "set12" / args.image, args.size)
    if args.missing > 0:
        mask = np.random.default_rng(args.seed).random(clean.shape) < args.missing
    else:
        mask = stroke_mask(clean.shape, args.coverage, args.seed, args.stroke_length, args.spread)
    damaged = clean.copy()
    damaged[mask] = 0.0
    kw = {"seed": args.seed, "device": "cpu"}
    if args.iterations is not None:
        kw["iterations"] = args.iterations

    rows = []
    runs = [("regions", {}), ("whole", {"tile_size": 0})]
    if args.skip_whole:
        runs = runs[:1]
    runs += [(f"tiles of {t}", {"tile_size": t}) for t in args.tile]
    for name, extra in runs:
        job = prepare_inpaint(damaged, mask, **kw, **extra)
        plan = "; ".join(n for n in job.notes if n.startswith("fitting ")) or (
            f"{len(job.tiles)} tiles" if job.tiles else "whole image"
        )
        t0 = time.perf_counter()
        out, info = inpaint(damaged, mask, **kw, **extra, return_history=True)
        dt = time.perf_counter() - t0
        assert np.array_equal(out[~mask], damaged[~mask])
        rows.append(
            {
                "method": f"DIP {name}",
                "seconds": dt,
                "psnr_holes": hole_psnr(clean, out, mask),
                "steps": max(info.iterations_run) if info.iterations_run else 0,
                # tiled runs: every tile's steps (0: a tile without a hole, not fitted)
                "tile_steps": info.tile_iterations_run[0] if info.tile_iterations_run else [],
                "plan": plan,
            }
        )
    t0 = time.perf_counter()
    bih = inpaint_biharmonic(damaged, mask)
    rows.append(
        {
            "method": "biharmonic",
            "seconds": time.perf_counter() - t0,
            "psnr_holes": hole_psnr(clean, bih, mask),
            "steps": 0,
            "plan": "skimage.restoration.inpaint_biharmonic",
        }
    )

    holes = (
        f"{100 * mask.mean():.1f} % missing at random (seed {args.seed})"
        if args.missing > 0
        else f"strokes {100 * mask.mean():.1f} % (seed {args.seed}, spread {args.spread})"
    )
    print(
        f"\n### {args.image} {args.size}x{args.size}, {holes}, "
        f"{torch.get_num_threads()} thread(s), iterations {args.iterations or 'preset'}, {platform.processor()}\n"
    )
    print("| method | wall time (s) | PSNR holes (dB) | steps (max; sum over tiles) | plan |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        steps = f"{r['steps']}" + (f"; {sum(r['tile_steps'])}" if r.get("tile_steps") else "")
        print(f"| {r['method']} | {r['seconds']:.1f} | {r['psnr_holes']:.2f} | {steps} | {r['plan']} |")
    if args.out is not None:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
