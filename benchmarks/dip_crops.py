"""Zoomed crops of denoising results, side by side, to look at what PSNR does not see.

Usage::

    python benchmarks/dip_crops.py --data ../shared/data --size 256 --images House,F16 \\
        --variant default --variant upsample=nearest --out benchmarks/results/crops-256.png
    # full size (--size 0), default vs the paper's recipe (oracle stop) fitted on the centred 160 px
    python benchmarks/dip_crops.py --data ../shared/data --size 0 --images F16,kodim02 --window 64 \\
        --variant default --variant recipe --recipe-region 160 --threads 1 --out crops-full.png

Each Set9 image (centred crop of ``--size``, sigma 25, numpy seed 0 as in ``dip_speed.py``) is
denoised with the default preset and with each ``--variant`` (``default`` or ``key=value``
overrides of the preset's network: ``upsample=nearest``, ``upsample=mixed``, ..., or
``tile_size=N``: the default with that tile size, 0 for one whole-plane fit), each run to its
own stop; ``recipe`` is the paper's recipe (the ``denoise-paper`` preset, run as
``dip_speed.py`` runs it) with an oracle stop: its best frame by PSNR against the clean image
(every 10 steps), fitted on the whole image or, with ``--recipe-region R``, on the centred R x R
pixels only (the recipe costs 2-3 s a step at 256 px on one CPU thread: a full-size fit takes
hours there; the region is stated in the output, and every result's PSNR on that region is
printed beside its whole-image PSNR).  A ``--zoom``-times enlarged (nearest-neighbour, so every pixel is a block) window
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
from dip_speed import run_paper


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
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--recipe-region", type=int, default=0, help="fit the recipe on the centred R px only (0: whole)")
    ap.add_argument("--recipe-iterations", type=int, default=0, help="override the recipe's 1800 steps")
    ap.add_argument("--recipe-max-seconds", type=float, default=0.0, help="cut the recipe after this long")
    args = ap.parse_args(argv)
    if args.recipe_region and args.recipe_region < args.window:
        ap.error(f"--recipe-region {args.recipe_region} is smaller than the --window {args.window} it must hold")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")

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
        h, w = gt.shape[:2]
        r = min(args.recipe_region, h, w)  # 0: no region, the whole image
        ry, rx = (h - r) // 2, (w - r) // 2
        region = (slice(ry, ry + r), slice(rx, rx + r)) if r else (slice(None),) * 2
        for v in variants:
            t0 = time.perf_counter()
            if v == "recipe":
                paper = get_preset("denoise-paper")
                if args.recipe_iterations:
                    paper = paper.replace(iterations=args.recipe_iterations)
                a = run_paper(
                    gt[region],
                    noisy[region],
                    None,
                    paper,
                    device,
                    seed=0,
                    eval_every=10,
                    guard=300,
                    max_seconds=args.recipe_max_seconds,
                    keep_best=True,
                )
                out = noisy.copy()  # outside the region (when there is one) the panel shows the input
                out[region] = a["best_image"]
                where = f"on the centred {r} px" if args.recipe_region else "whole"
                desc = (
                    f"recipe ({where}): {a['peak_psnr']:.2f} dB on its region at step {a['peak_iteration']} of "
                    f"{a['steps']}{' (cut)' if a['truncated'] else ''} ({a['s_per_step']:.2f} s/step)"
                )
                label = f"recipe ({r} px) " if args.recipe_region else "recipe "
                label += f"{a['peak_psnr']:.2f} dB"
                kept, tag = a["best_image"], "recipe"
            else:
                params = get_preset("denoise")
                job = {"device": args.device}
                if v != "default":
                    key, _, val = v.partition("=")
                    if key == "tile_size":
                        job["tile_size"] = int(val)
                    else:
                        params = params.replace(net=replace(params.net, **{key: val}))
                out, res = denoise(noisy, channel_axis=-1, params=params, seed=0, return_history=True, **job)
                fit = res.fits[0]
                stops = (
                    f"tiles {res.tile_stop_iterations[0]}" if res.tiles else f"stop {fit.iteration} ({fit.stop_reason})"
                )
                on_region = ""
                if args.recipe_region:
                    on_region = f" ({psnr(gt[region], out[region]):.2f} dB on the centred {r} px)"
                desc = f"{v}: {psnr(gt, out):.2f} dB{on_region}, {stops}"
                label = f"{'whole plane' if v == 'tile_size=0' else v.split('=')[-1]} {psnr(gt, out):.2f} dB"
                kept, tag = np.asarray(out, np.float32), v.replace("=", "-")
            print(
                f"{name} {desc}, {time.perf_counter() - t0:.0f} s, block ratio {block_ratio(kept):.3f} "
                f"(clean {block_ratio(gt[region] if v == 'recipe' else gt):.3f}, noisy {block_ratio(noisy):.3f})",
                flush=True,
            )
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                np.save(args.save / f"{name}-{tag}.npy", kept)
                if v == variants[0]:
                    np.save(args.save / f"{name}-noisy.npy", noisy)
            tiles.append((label, out))
        tiles.append(("clean", gt))
        cy, cx, half = h // 2, w // 2, args.window // 2
        row = []
        for label, img in tiles:
            win = np.clip(np.asarray(img)[cy - half : cy + half, cx - half : cx + half], 0, 1)
            big = np.kron(win, np.ones((args.zoom, args.zoom, 1)))
            row.append(_label((big * 255 + 0.5).astype(np.uint8), f"{name} {label}"))
        rows.append(np.concatenate(row, axis=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(args.out, np.concatenate(rows, axis=0))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
