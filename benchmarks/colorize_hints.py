"""Hint-sweep colorization benchmark, after the protocol of Zhang et al. (SIGGRAPH 2017).

Grey versions of the Set9 images (DIR/set9/*.png) and the Deep Image Prior images
(DIR/dip/**/*.png, masks excluded) are resized to 256 x 256; for each number of hints N,
N random 6 x 6 patches (positions from N(centre, side/4), clipped, seeded) are given the
ground truth's mean ab over the patch; each method colorizes the grey image from those
hints and the RGB result is scored by PSNR against the ground truth (both as uint8, as in
the reference evaluation).  Grey ground truths (no colour to recover) and duplicate
images are skipped.

Methods: ``grey`` (ab = 0 baseline), ``levin``, ``dip``, and ``siggraph17`` / ``eccv16``
when their weight files are found (eccv16 takes no hints: scored at N = 0 only).

Usage::

    python benchmarks/colorize_hints.py --data ../shared/data --out results.json \\
        [--methods grey,levin,dip,siggraph17,eccv16] [--hints 0,1,2,5,10,20,50,100] \\
        [--images N] [--names kodim02,kodim03] [--dip-iterations 200] [--threads 1]

Prints a markdown table of mean PSNR per N and method, and the mean seconds per image.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

#: SIGGRAPH 2017 paper, hint sweep on 1000 ImageNet validation images (siggraph17 network).
PAPER_SIGGRAPH17 = {0: 24.43, 1: 25.37, 2: 26.20, 5: 27.39, 10: 28.42, 20: 29.34, 50: 30.42, 100: 31.13, 200: 31.70}
SIZE = 256
#: The reference sweep's hint patch side (sample_Ps = [6]).
PATCH = 6
#: Ground truths whose ab spread is below this are grey and skipped (as the reference does).
GREY_AB_THRESHOLD = 5.0


def find_images(data: Path) -> list[Path]:
    paths = sorted((data / "set9").glob("*.png"))
    paths += sorted(p for p in (data / "dip").rglob("*.png") if not p.stem.endswith("_mask"))
    return paths


def load_ground_truths(paths: list[Path], limit: int | None) -> list[tuple[str, np.ndarray]]:
    from skimage import io, transform
    from skimage.color import rgb2lab

    out, seen = [], set()
    for p in paths:
        img = io.imread(p)
        if img.ndim == 2 or img.shape[-1] == 1:
            continue  # grey ground truth: nothing to colorize
        img = img[..., :3]
        rgb = transform.resize(img.astype(np.float64) / 255.0, (SIZE, SIZE), order=1, anti_aliasing=True)
        rgb = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
        digest = hashlib.sha1(rgb.tobytes()).hexdigest()
        if digest in seen:
            continue
        ab = rgb2lab(rgb)[..., 1:]
        if np.ptp(ab, axis=(0, 1)).sum() < GREY_AB_THRESHOLD:
            continue
        seen.add(digest)
        out.append((str(p.relative_to(p.parents[1]) if p.parent.name != "set9" else p.name), rgb))
        if limit is not None and len(out) >= limit:
            break
    return out


def random_hints(ab_true: np.ndarray, n: int, rng: np.random.Generator):
    """N patches at positions ~ N(centre, (side - P + 1) / 4), each the patch's mean ab."""
    h, w = ab_true.shape[:2]
    ab_hint = np.zeros((h, w, 2))
    mask = np.zeros((h, w), np.float32)
    for _ in range(n):
        r = int(np.clip(rng.normal((h - PATCH + 1) / 2, (h - PATCH + 1) / 4), 0, h - PATCH))
        c = int(np.clip(rng.normal((w - PATCH + 1) / 2, (w - PATCH + 1) / 4), 0, w - PATCH))
        ab_hint[r : r + PATCH, c : c + PATCH] = ab_true[r : r + PATCH, c : c + PATCH].mean(axis=(0, 1))
        mask[r : r + PATCH, c : c + PATCH] = 1.0
    return ab_hint.astype(np.float32), mask


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="folder holding set9/ and dip/")
    ap.add_argument("--out", type=Path, default=None, help="write the results here (JSON)")
    ap.add_argument("--methods", default="grey,levin,dip,siggraph17,eccv16")
    ap.add_argument("--hints", default="0,1,2,5,10,20,50,100")
    ap.add_argument("--images", type=int, default=None, help="use only the first N images")
    ap.add_argument("--names", default=None, help="comma-separated name fragments: use only images whose path has one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dip-iterations", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--weights", type=Path, default=None, help="folder with the .pth files")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    import torch
    from skimage.color import rgb2lab

    from napari_deep_prior.colorization import weights as W
    from napari_deep_prior.colorization.dip import DIPColorParams, dip_ab
    from napari_deep_prior.colorization.lab import lab_image
    from napari_deep_prior.colorization.levin import levin_ab
    from napari_deep_prior.colorization.pretrained import network_ab

    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    counts = [int(x) for x in args.hints.split(",")]
    dip_params = DIPColorParams() if args.dip_iterations is None else DIPColorParams(iterations=args.dip_iterations)
    skipped = {}
    for m in ("siggraph17", "eccv16"):
        if m in methods:
            try:
                found = W.find_weights(m, args.weights)
            except W.WeightsError as exc:
                found, skipped[m] = None, str(exc).splitlines()[0]
            if found is None:
                skipped.setdefault(m, f"weights {W.WEIGHTS[m].filename} not found")
                methods.remove(m)
    for m, why in skipped.items():
        print(f"skipping {m}: {why}", file=sys.stderr)

    paths = find_images(args.data)
    if args.names:
        frags = [f.strip() for f in args.names.split(",") if f.strip()]
        paths = [p for p in paths if any(f in str(p) for f in frags)]
    images = load_ground_truths(paths, args.images)
    print(f"{len(images)} images at {SIZE}x{SIZE}: {', '.join(n for n, _ in images)}", file=sys.stderr)
    records = []
    for idx, (name, rgb) in enumerate(images):
        lab = rgb2lab(rgb)
        L, ab_true = lab[..., 0], lab[..., 1:]
        for n in counts:
            rng = np.random.default_rng([args.seed, idx, n])
            ab_hint, mask = random_hints(ab_true, n, rng)
            for m in methods:
                if m in ("levin", "dip") and n == 0:
                    continue
                if m == "eccv16" and n != 0:
                    continue
                t0 = time.perf_counter()
                if m == "grey":
                    ab = np.zeros_like(ab_true)
                elif m == "levin":
                    ab = levin_ab(L, ab_hint, mask)
                elif m == "dip":
                    ab = dip_ab(L, ab_hint, mask, params=dip_params, seed=args.seed + idx, device=args.device)
                elif m == "siggraph17":
                    ab = network_ab(
                        L,
                        "siggraph17",
                        ab_hint=ab_hint if n else None,
                        mask=mask if n else None,
                        weights=args.weights,
                        device=args.device,
                    )
                else:
                    ab = network_ab(L, "eccv16", weights=args.weights, device=args.device)
                secs = time.perf_counter() - t0
                out = lab_image(L, ab, as_uint8=True)
                rec = dict(image=name, hints=n, method=m, psnr=psnr_uint8(out, rgb), seconds=secs)
                records.append(rec)
                print(f"{name:28s} N={n:4d} {m:10s} {rec['psnr']:6.2f} dB {secs:7.2f} s", file=sys.stderr, flush=True)

    table = summarise(records, methods, counts)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                dict(
                    protocol=dict(
                        size=SIZE,
                        patch=PATCH,
                        placement="normal(centre, side/4)",
                        seed=args.seed,
                        dip=dip_params.__dict__,
                        threads=torch.get_num_threads(),
                    ),
                    images=[n for n, _ in images],
                    skipped=skipped,
                    records=records,
                    table=table,
                ),
                indent=1,
            )
        )
    return 0


def summarise(records, methods, counts) -> str:
    def mean(vals):
        return float(np.mean(vals)) if vals else float("nan")

    cols = [m for m in methods]
    lines = ["| hints | " + " | ".join(cols) + " | paper siggraph17 (ImageNet) |", "|---|" + "---|" * (len(cols) + 1)]
    for n in counts:
        row = []
        for m in cols:
            v = [r["psnr"] for r in records if r["method"] == m and r["hints"] == n]
            row.append(f"{mean(v):.2f}" if v else "–")
        paper = PAPER_SIGGRAPH17.get(n)
        lines.append(f"| {n} | " + " | ".join(row) + f" | {paper if paper else '–'} |")
    secs = [f"{mean([r['seconds'] for r in records if r['method'] == m]):.2f}" for m in cols]
    lines.append("| s / image | " + " | ".join(secs) + " | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
