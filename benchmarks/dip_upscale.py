"""DIP super-resolution benchmark: Set9, x4 (64 -> 256 px crops), against bicubic interpolation.

Usage::

    python benchmarks/dip_upscale.py --data ../shared/data --out results/upscale.json

Per image: the centred ``--size`` crop of the image is the high-resolution truth; its
low-resolution input is made with PIL's Lanczos resampling (as the DIP paper's code makes its
inputs); the baseline is ``skimage.transform.resize(order=3)`` (bicubic) back to full size.  DIP
is :func:`napari_deep_prior.upscale` with ``--preset`` (default: the shipped default), seed
``--seed``; its history (every ``--history-every`` steps) gives the PSNR curve and the best
frame (an oracle, for reference).  PSNR over the whole image, data range 1, RGB in [0, 1].
The DIP paper's anchors (x4, its own test sets): DIP 29.90 dB (Set5) / 27.00 dB (Set14) against
bicubic 28.43 / 26.05.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import io
from skimage.metrics import peak_signal_noise_ratio
from skimage.transform import resize


def psnr(gt: np.ndarray, x: np.ndarray) -> float:
    return float(peak_signal_noise_ratio(gt, np.clip(x, 0, 1), data_range=1.0))


def load_crop(path: Path, size: int) -> np.ndarray:
    img = io.imread(path)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3]
    h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return img[top : top + size, left : left + size]


def lanczos_down(hr_u8: np.ndarray, factor: int) -> np.ndarray:
    h, w = hr_u8.shape[:2]
    lr = Image.fromarray(hr_u8).resize((w // factor, h // factor), Image.Resampling.LANCZOS)
    return np.asarray(lr).astype(np.float64) / 255.0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder with set9/ (../shared/data)")
    ap.add_argument("--size", type=int, default=256, help="side of the high-resolution crop (default 256)")
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--images", default="", help="comma-separated image names to keep (default all)")
    ap.add_argument("--preset", default="upscale")
    ap.add_argument("--iterations", type=int, default=None, help="override the preset's iterations")
    ap.add_argument("--history-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    from napari_deep_prior import upscale

    keep = [s for s in args.images.split(",") if s]
    paths = sorted((args.data / "set9").glob("*.png"))
    paths = [p for p in paths if not keep or p.stem in keep]
    out_path = args.out or Path(__file__).parent / "results" / f"upscale-x{args.factor}-{args.size}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "size": args.size,
        "factor": args.factor,
        "preset": args.preset,
        "seed": args.seed,
        "iterations": args.iterations,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "rows": [],
    }
    for path in paths:
        hr_u8 = load_crop(path, args.size)
        hr = hr_u8.astype(np.float64) / 255.0
        lr = lanczos_down(hr_u8, args.factor)
        bicubic = resize(lr, hr.shape, order=3, mode="edge", anti_aliasing=False)
        t0 = time.perf_counter()
        sr, out = upscale(
            lr.astype(np.float32),
            args.factor,
            channel_axis=-1,
            preset=args.preset,
            iterations=args.iterations,
            history_every=args.history_every,
            seed=args.seed,
            device="cpu",
            return_history=True,
        )
        wall = time.perf_counter() - t0
        curve = [psnr(hr, fr) for fr in out.history] if out.history is not None else []
        best = int(np.argmax(curve)) if curve else None
        row = {
            "image": path.stem,
            "bicubic": psnr(hr, bicubic),
            "dip": psnr(hr, sr),
            "dip_best_frame": curve[best] if curve else None,
            "dip_best_iteration": int(out.history_iterations[best]) if curve else None,
            "steps": int(out.iterations_run[0]),
            "stop": int(out.stop_iterations[0]),
            "seconds": wall,
            "s_per_step": wall / max(out.iterations_run[0], 1),
            "curve": {int(i): round(v, 3) for i, v in zip(out.history_iterations, curve, strict=True)},
        }
        result["rows"].append(row)
        out_path.write_text(json.dumps(result, indent=1))
        print(
            json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k != "curve"}),
            flush=True,
        )
    rows = result["rows"]
    print("\n| image | bicubic | DIP | DIP best frame (iteration) | steps | s |\n|---|---|---|---|---|---|")
    for r in rows:
        bf = f"{r['dip_best_frame']:.2f} ({r['dip_best_iteration']})" if r["dip_best_frame"] else "-"
        print(f"| {r['image']} | {r['bicubic']:.2f} | {r['dip']:.2f} | {bf} | {r['steps']} | {r['seconds']:.0f} |")
    if rows:
        m = {k: float(np.mean([r[k] for r in rows])) for k in ("bicubic", "dip", "steps", "seconds")}
        print(f"| **mean** | {m['bicubic']:.2f} | {m['dip']:.2f} | | {m['steps']:.0f} | {m['seconds']:.0f} |")
    print(f"\nwrote {out_path}")


if __name__ == "__main__":
    main()
