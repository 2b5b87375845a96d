"""Zoomed crops of denoising results, side by side, to look at what PSNR does not see.

Usage::

    python benchmarks/dip_crops.py --data ../shared/data --size 256 --images House,F16 \\
        --variant default --variant upsample=nearest --out benchmarks/results/crops-256.png

Each Set9 image (centred crop of ``--size``, sigma 25, numpy seed 0 as in ``dip_speed.py``) is
denoised with the default preset and with each ``--variant`` (``default`` or ``key=value``
overrides of the preset's network: ``upsample=nearest``, ``upsample=mixed``, ..., or
``tile_size=N``: the default with that tile size, 0 for one whole-plane fit), each run to its
own stop.  A ``--zoom``-times enlarged (nearest-neighbour, so every pixel is a block) window
of ``--window`` pixels at the crop's centre is cut from the noisy input, every result and the
clean image, and the rows (one per image) are written as one PNG with a label strip; PSNR and
stop of every result are printed, with its 2x2-block ratio (:func:`block_ratio`: 1 = no grid;
the clean image's for comparison).  Stair edges from 2x2 nearest-neighbour up-sampling inside the
network show as 2-pixel steps along edges and as a faint grid in flat regions.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from dip_quality import SIGMA, crop, load, psnr


def block_ratio(img: np.ndarray) -> float:
    """2x2-block signature: mean |difference| between neighbours across even boundaries / odd ones.

    Nearest-neighbour 2x up-sampling makes pixel pairs (2i, 2i+1) alike, so differences across
    the pair boundaries (2i+1, 2i+2) are larger than inside the pairs: the ratio of the mean
    absolute neighbour difference across boundaries to that inside pairs (rows and columns
    together) is 1 for an image without the grid and grows with the stair edges.
    """
    a = np.asarray(img, np.float64)
    dy, dx = np.abs(np.diff(a, axis=0)), np.abs(np.diff(a, axis=1))
    inside = dy[0::2].mean() + dx[:, 0::2].mean()
    across = dy[1::2].mean() + dx[:, 1::2].mean()
    return float(across / inside)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.fromarray(tile)
    strip = Image.new("RGB", (im.width, 18), (0, 0, 0))
    ImageDraw.Draw(strip).text((4, 3), text, fill=(255, 255, 255))
    out = Image.new("RGB", (im.width, im.height + 18))
    out.paste(strip, (0, 0))
    out.paste(im, (0, 18))
    return np.asarray(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--images", default="House,F16")
    ap.add_argument("--variant", action="append", help="'default' or key=value net overrides (repeatable)")
    ap.add_argument("--window", type=int, default=48, help="side of the zoomed window in pixels")
    ap.add_argument("--zoom", type=int, default=4)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--save", type=Path, help="folder for every result (full size, float32 .npy)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    import imageio.v3 as iio

    from napari_deep_prior import denoise
    from napari_deep_prior.restore.presets import get_preset

    variants = args.variant or ["default"]
    rows = []
    for name in args.images.split(","):
        gt = crop(load(args.data / "set9" / f"{name}.png"), args.size)
        rng = np.random.default_rng(0)
        noisy = np.clip(gt + rng.normal(0.0, SIGMA, gt.shape), 0, 1).astype(np.float32)
        tiles = [("noisy", noisy)]
        for v in variants:
            params = get_preset("denoise")
            job = {}
            if v != "default":
                key, _, val = v.partition("=")
                if key == "tile_size":
                    job["tile_size"] = int(val)
                else:
                    params = params.replace(net=replace(params.net, **{key: val}))
            t0 = time.perf_counter()
            out, res = denoise(noisy, channel_axis=-1, params=params, seed=0, return_history=True, **job)
            fit = res.fits[0]
            stops = f"tiles {res.tile_stop_iterations[0]}" if res.tiles else f"stop {fit.iteration} ({fit.stop_reason})"
            print(
                f"{name} {v}: {psnr(gt, out):.2f} dB, {stops}, "
                f"{time.perf_counter() - t0:.0f} s, block ratio {block_ratio(out):.3f} "
                f"(clean {block_ratio(gt):.3f}, noisy {block_ratio(noisy):.3f})",
                flush=True,
            )
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                tag = v.replace("=", "-")
                np.save(args.save / f"{name}-{tag}.npy", np.asarray(out, np.float32))
                if v == variants[0]:
                    np.save(args.save / f"{name}-noisy.npy", noisy)
            label = "whole plane" if v == "tile_size=0" else v.split("=")[-1]
            tiles.append((f"{label} {psnr(gt, out):.2f} dB", out))
        tiles.append(("clean", gt))
        c, w = args.size // 2, args.window // 2
        row = []
        for label, img in tiles:
            win = np.clip(np.asarray(img)[c - w : c + w, c - w : c + w], 0, 1)
            big = np.kron(win, np.ones((args.zoom, args.zoom, 1)))
            row.append(_label((big * 255 + 0.5).astype(np.uint8), f"{name} {label}"))
        rows.append(np.concatenate(row, axis=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(args.out, np.concatenate(rows, axis=0))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
