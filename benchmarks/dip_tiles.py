"""Large-image benchmark: a noisy image too large for one fit, processed in blended tiles.

Usage::

    python benchmarks/dip_tiles.py --size 4096 --iterations 30
    python benchmarks/dip_tiles.py --size 512 --tile 192 --iterations 400   # seam check with a real fit

The image is scikit-image's astronaut, resized to ``--size`` squared, with Gaussian noise
(sigma = 25).  ``denoise`` runs with the default preset and automatic tiling (or ``--tile``);
reported: the memory a single fit would need (the estimate that triggers tiling), the tiles,
wall time, peak memory growth of the process, PSNR, and the **seam test**: the mean absolute
difference between neighbouring pixels of (output - clean) — the restoration error — on the
rows and columns inside the tile overlaps, divided by the same mean elsewhere.  Seams would
show as a ratio well above 1; the noisy input's ratio is given for reference.
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
from dip_quality import SIGMA, psnr
from dip_speed import PeakMemory


def seam_ratio(err: np.ndarray, tiles, h: int, w: int) -> dict:
    """Neighbour differences of an error image in the tile overlaps vs elsewhere."""
    rows = np.zeros(h - 1, bool)
    cols = np.zeros(w - 1, bool)
    # overlap bands: from the start of a tile to the end of the tile before it
    y_starts = sorted({b[0] for b in tiles})
    y_ends = sorted({b[1] for b in tiles})
    for s in y_starts[1:]:
        e = min(v for v in y_ends if v > s)
        rows[s : e - 1] = True
    x_starts = sorted({b[2] for b in tiles})
    x_ends = sorted({b[3] for b in tiles})
    for s in x_starts[1:]:
        e = min(v for v in x_ends if v > s)
        cols[s : e - 1] = True
    dy = np.abs(np.diff(err, axis=0)).mean(axis=tuple(range(1, err.ndim)))
    dx = np.abs(np.diff(err, axis=1)).mean(axis=tuple(i for i in range(err.ndim) if i != 1))
    res = {"overlap_rows": int(rows.sum()), "overlap_cols": int(cols.sum())}
    res["row_ratio"] = float(dy[rows].mean() / dy[~rows].mean()) if rows.any() and (~rows).any() else None
    res["col_ratio"] = float(dx[cols].mean() / dx[~cols].mean()) if cols.any() and (~cols).any() else None
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--iterations", type=int, default=30, help="maximum steps per tile")
    ap.add_argument("--tile", type=int, default=None, help="tile side (default: automatic)")
    ap.add_argument("--grey", action="store_true", help="grey instead of RGB")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch
    from skimage import data
    from skimage.transform import resize

    from napari_deep_prior import denoise
    from napari_deep_prior.restore.planning import estimate_fit_bytes
    from napari_deep_prior.restore.presets import get_preset

    clean = resize(data.astronaut() / 255.0, (args.size, args.size), order=1, anti_aliasing=True)
    if args.grey:
        clean = clean.mean(-1)
    clean = clean.astype(np.float32)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, SIGMA, clean.shape), 0, 1).astype(np.float32)
    c = 1 if args.grey else 3
    need = estimate_fit_bytes(get_preset("denoise"), args.size, args.size, c)
    print(f"{args.size}x{args.size}x{c}: one fit would need about {need / 2**30:.1f} GiB", flush=True)

    last = [None]

    def progress(step):
        key = (step.tile, step.n_tiles)
        if key != last[0]:
            last[0] = key
            print(f"  tile {step.tile + 1}/{step.n_tiles} ({time.perf_counter() - t0:.0f} s)", flush=True)

    with PeakMemory(torch.device("cpu")) as mem:
        t0 = time.perf_counter()
        out, full = denoise(
            noisy,
            channel_axis=None if args.grey else -1,
            seed=args.seed,
            iterations=args.iterations,
            tile_size=args.tile,
            history_every=0,
            return_history=True,
            callback=progress,
            device="cpu",
        )
        wall = time.perf_counter() - t0
    tiles = full.tiles or [(0, args.size, 0, args.size)]
    side = tiles[0][1] - tiles[0][0]
    rec = {
        "size": args.size,
        "channels": c,
        "iterations_per_tile": args.iterations,
        "single_fit_estimate_gib": need / 2**30,
        "tiles": len(tiles),
        "tile_side": side,
        "tile_estimate_gib": estimate_fit_bytes(get_preset("denoise"), side, side, c) / 2**30,
        "wall_s": wall,
        "peak_memory_gib": mem.peak / 2**30,
        "input_psnr": psnr(clean, noisy),
        "output_psnr": psnr(clean, out),
        "steps_per_tile": full.tile_iterations_run[0] if full.tile_iterations_run else full.iterations_run,
        "seam_output": seam_ratio(out - clean, tiles, args.size, args.size),
        "seam_input": seam_ratio(noisy - clean, tiles, args.size, args.size),
        "notes": full.notes,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(rec, indent=1))
    path = args.out or Path(__file__).parent / "results" / f"tiles-{args.size}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
