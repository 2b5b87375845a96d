"""Large-image benchmark: blended tiles against the whole-image fit, with a seam test.

Usage::

    python benchmarks/dip_tiles.py --size 4096 --iterations 30
    python benchmarks/dip_tiles.py --size 512 --tile 288 --compare            # seam check, with control
    python benchmarks/dip_tiles.py --data PATH --size 512 --tile 288 --compare --images F16,kodim02
    python benchmarks/dip_tiles.py --data PATH --size 512 --warm-start      # tiles 2.. from tile 1

Without ``--data`` the image is scikit-image's astronaut, resized to ``--size`` squared; with
``--data`` the centred ``--size`` crops of the Set9 images (``--images``; ``--set12``: of the
Set12 images, grey).  Gaussian noise, sigma = 25, seed 0; or with ``--poisson PEAK`` photon
counts (the clean image times PEAK, Poisson-drawn, seed 0) denoised with ``loss="poisson"``
(PSNR of the returned rate divided by PEAK).  ``denoise`` runs with the default preset and
automatic tiling (or ``--tile``); ``--compare`` also runs the same image as one whole-image
fit (``tile_size=0``, the control).
Reported per image: the memory a single fit would need (the estimate that triggers tiling),
the tiles, wall time, steps (per tile), peak memory growth of the process, PSNR, and the
**seam test**: the mean absolute difference between neighbouring pixels of (output - clean) —
the restoration error — on the rows and columns inside the tile overlaps, divided by the same
mean elsewhere.  That ratio also depends on where the image's detail lies (a DIP error is
larger on detail), so it is computed on the same bands for the noisy input and, with
``--compare``, for the whole-image result: seams show as a tiled ratio well above the whole
image's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from dip_quality import SIGMA, crop, load, psnr
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


def inputs(args):
    """(name, clean, noisy) of each benchmark image."""
    if args.data is None:
        from skimage import data
        from skimage.transform import resize

        clean = resize(data.astronaut() / 255.0, (args.size, args.size), order=1, anti_aliasing=True)
        items = [("astronaut", clean)]
    else:
        names = args.images.split(",")
        folder = "set12" if args.set12 else "set9"
        items = [(n, crop(load(Path(args.data) / folder / f"{n}.png"), args.size)) for n in names]
    for name, clean in items:
        if args.grey and clean.ndim == 3:
            clean = clean.mean(-1)
        clean = clean.astype(np.float32)
        rng = np.random.default_rng(0)
        if args.poisson:
            noisy = rng.poisson(clean * args.poisson).astype(np.float32)
        else:
            noisy = np.clip(clean + rng.normal(0, SIGMA, clean.shape), 0, 1).astype(np.float32)
        yield name, clean, noisy


def run(noisy, args, tile_size):
    """One ``denoise`` of ``noisy``: (output, full result, wall s, peak bytes)."""
    import torch

    from napari_deep_prior import denoise

    last = [None]
    t0 = time.perf_counter()

    def progress(step):
        key = (step.tile, step.n_tiles)
        if key != last[0]:
            last[0] = key
            print(f"  tile {step.tile + 1}/{step.n_tiles} ({time.perf_counter() - t0:.0f} s)", flush=True)

    with PeakMemory(torch.device("cpu")) as mem:
        t0 = time.perf_counter()
        out, full = denoise(
            noisy,
            channel_axis=None if noisy.ndim == 2 else -1,
            seed=args.seed,
            iterations=args.iterations,
            loss="poisson" if args.poisson else None,
            tile_size=tile_size,
            history_every=0,
            return_history=True,
            callback=progress,
            device="cpu",
            warm_start=args.warm_start,
        )
        wall = time.perf_counter() - t0
    return out, full, wall, mem.peak


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--iterations", type=int, default=None, help="maximum steps per fit (default: the preset's)")
    ap.add_argument("--tile", type=int, default=None, help="tile side (default: automatic)")
    ap.add_argument("--compare", action="store_true", help="also run the whole image as one fit (the control)")
    ap.add_argument("--data", type=Path, default=None, help="folder with set9/ (default: the astronaut)")
    ap.add_argument("--images", default="F16,kodim02", help="Set9 images, comma-separated (with --data)")
    ap.add_argument("--grey", action="store_true", help="grey instead of RGB")
    ap.add_argument("--set12", action="store_true", help="--images are Set12 images (grey)")
    ap.add_argument("--poisson", type=float, default=None, help="photon counts of this peak instead of sigma 25")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--warm-start", action="store_true", help="tiles after the first start from its weights (warm_start=True)"
    )
    ap.add_argument("--lanes", type=int, default=None, help="fits at once (default: automatic; 1: one at a time)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.lanes is not None:
        from napari_deep_prior.restore.lanes import LANES_ENV

        os.environ[LANES_ENV] = str(args.lanes)

    import torch

    from napari_deep_prior.restore.planning import estimate_fit_bytes
    from napari_deep_prior.restore.presets import get_preset

    records = []
    path = args.out or Path(__file__).parent / "results" / f"tiles-{args.size}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    for name, clean, noisy in inputs(args):
        h, w = clean.shape[:2]
        c = 1 if clean.ndim == 2 else clean.shape[-1]
        preset = get_preset("denoise-poisson" if args.poisson else "denoise")
        need = estimate_fit_bytes(preset, h, w, c)
        print(f"{name} {h}x{w}x{c}: one fit would need about {need / 2**30:.2f} GiB", flush=True)
        out, full, wall, peak = run(noisy, args, args.tile)
        scale = args.poisson or 1.0  # counts -> the clean image's range
        out, noisy = out / scale, noisy / scale
        tiles = full.tiles or [(0, h, 0, w)]
        side = tiles[0][1] - tiles[0][0]
        rec = {
            "image": name,
            "size": [h, w],
            "channels": c,
            "single_fit_estimate_gib": need / 2**30,
            "tiles": len(tiles),
            "tile_side": side,
            "tile_estimate_gib": estimate_fit_bytes(preset, side, side, c) / 2**30,
            "wall_s": wall,
            "peak_memory_gib": peak / 2**30,
            "input_psnr": psnr(clean, noisy),
            "output_psnr": psnr(clean, out),
            "steps_per_tile": full.tile_iterations_run[0] if full.tile_iterations_run else full.iterations_run,
            "seam_output": seam_ratio(out - clean, tiles, h, w),
            "seam_input": seam_ratio(noisy - clean, tiles, h, w),
            "notes": full.notes,
            "lanes": full.lanes,
        }
        print(
            f"{name}: tiled {rec['output_psnr']:.2f} dB in {wall:.0f} s, steps {rec['steps_per_tile']}, "
            f"seams rows/cols {rec['seam_output']['row_ratio']} / {rec['seam_output']['col_ratio']}",
            flush=True,
        )
        if args.compare:
            w_out, w_full, w_wall, w_peak = run(noisy * scale, args, 0)
            w_out = w_out / scale
            if w_full.tiles:
                raise SystemExit(f"the control of {name} was tiled by the planner ({len(w_full.tiles)} tiles)")
            rec["whole"] = {
                "wall_s": w_wall,
                "peak_memory_gib": w_peak / 2**30,
                "output_psnr": psnr(clean, w_out),
                "steps": w_full.iterations_run,
                "stop_iterations": w_full.stop_iterations,
                "seam": seam_ratio(w_out - clean, tiles, h, w),
            }
            wh = rec["whole"]
            print(
                f"{name}: whole {wh['output_psnr']:.2f} dB in {w_wall:.0f} s, steps {wh['steps']}, "
                f"same bands rows/cols {wh['seam']['row_ratio']} / {wh['seam']['col_ratio']}",
                flush=True,
            )
        records.append(rec)
        meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "lanes": args.lanes}
        meta["warm_start"] = args.warm_start
        meta["machine"] = platform.processor() or platform.machine()
        record = {"meta": meta, "iterations": args.iterations, "poisson_peak": args.poisson, "images": records}
        path.write_text(json.dumps(record, indent=1))
    print(json.dumps(records, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
