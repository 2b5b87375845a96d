"""How far the noise-level stop's estimate is from what the stop needs, and what that costs.

Usage::

    python benchmarks/noise_estimate.py --data ../shared/data --sigmas 15,25,50
    python benchmarks/noise_estimate.py --data ../shared/data \\
        --replay benchmarks/results/traj-128-default.json --replay benchmarks/results/traj-256-default.json

The noise-level stop (``DIPParams.es_noise_factor``) ends a denoising fit when the running mean
of its loss falls to the factor times the estimated noise variance ``sigma_hat^2``
(:func:`napari_deep_prior.restore.stopping.estimate_noise_sigma`).  What the loss tends to at a
good stop is not sigma^2 but the mean squared residual of the *clipped* noise,
``m2 = mean E[(clip(x + n, 0, 1) - x)^2]`` (smaller than sigma^2 where the image is near black or
white), computed here in closed form from the clean image.

Part 1, the estimate: for the centred 128 / 256 / 512 px crops of the Set9 images with Gaussian
noise of each ``--sigmas`` level (numpy seed 0, as ``dip_stoprules.py record``), the ratios
``sigma_hat^2 / sigma^2`` and ``sigma_hat^2 / m2``, per size their mean and spread.

A variant is shown beside it: ``sigma_hat`` corrected for clipping (:func:`clip_corrected`).

Part 2, its cost (``--replay``, recordings of ``dip_stoprules.py record``): the shipped rule
(running-mean loss <= factor * sigma_hat^2, with ES-WMV patience 600 as the safety net) replayed
with the recorded estimate and with ``m2`` in its place (the best any estimate of the noise
could do), in dB below each image's oracle stop.  Numbers, not a test: nothing here reads the
clean image at run time in the plugin.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from dip_stoprules import SET9, at, noisy_crop, rule_es, rule_loss_discrepancy

SIZES = (128, 256, 512)


def clipped_noise_power(clean: np.ndarray, sigma: float) -> float:
    """``mean E[(clip(x + n, 0, 1) - x)^2]`` over the pixels of the clean image, n ~ N(0, sigma^2).

    The closed form the plugin uses for a given noise level (``stopping._clipped_moments``).
    """
    from napari_deep_prior.restore.stopping import _clipped_moments

    return float(_clipped_moments(np.asarray(clean, dtype=np.float64), float(sigma))[1].mean())


def clip_corrected(noisy: np.ndarray, sigma_hat: float) -> float:
    """The variant that did not help: m2 of the image estimated from the noisy one at sigma_hat.

    What the plugin aims a *given* noise level at
    (:func:`napari_deep_prior.restore.stopping.clipped_noise_variance`: the 5 x 5 local mean of
    the noisy image mapped back through ``x -> E[clip(x + n, 0, 1)]``, then its clipped noise
    power), here applied to the estimate.
    """
    from napari_deep_prior.restore.stopping import clipped_noise_variance

    return clipped_noise_variance(np.asarray(noisy, dtype=np.float64), float(sigma_hat))


def estimate_table(data: Path, sigmas: list[float]) -> None:
    from napari_deep_prior.restore.stopping import estimate_noise_sigma

    print(
        "| sigma | px | sigma_hat^2 / sigma^2: mean (sd) | sigma_hat^2 / m2: mean (sd), min–max | m2 / sigma^2 "
        "| clip-corrected / m2: mean (sd) |"
    )
    print("|---|---|---|---|---|---|")
    for s255 in sigmas:
        s = s255 / 255.0
        for size in SIZES:
            to_s2, to_m2, m2s, corr = [], [], [], []
            for name in SET9:
                clean, noisy = noisy_crop(data, name, size, s)
                s_hat = estimate_noise_sigma(noisy)
                s2 = s_hat**2
                m2 = clipped_noise_power(clean, s)
                corr.append(clip_corrected(noisy, s_hat) / m2)
                to_s2.append(s2 / s**2)
                to_m2.append(s2 / m2)
                m2s.append(m2 / s**2)
            a, b, c, d = np.array(to_s2), np.array(to_m2), np.array(m2s), np.array(corr)
            print(
                f"| {s255:g} | {size} | {a.mean():.3f} ({a.std():.3f}) | {b.mean():.3f} ({b.std():.3f}), "
                f"{b.min():.3f}–{b.max():.3f} | {c.mean():.3f} | {d.mean():.3f} ({d.std():.3f}) |",
                flush=True,
            )


def replay(data: Path, paths: list[str], factor: float, patience: int) -> None:
    def stop(rec, s2):
        r = dict(rec, sigma_hat=math.sqrt(s2))
        return min(rule_loss_discrepancy(r, factor), rule_es(r, patience))

    for path in paths:
        rec = json.loads(Path(path).read_text())
        cells, est, best = [], [], []
        for r in rec["images"]:
            clean, _ = noisy_crop(data, r["image"], rec["size"], rec["sigma"] / 255.0)
            m2 = clipped_noise_power(clean, rec["sigma"] / 255.0)
            peak = max(r["psnr"])
            t_est, t_m2 = stop(r, r["sigma_hat"] ** 2), stop(r, m2)
            est.append(at(r, t_est) - peak)
            best.append(at(r, t_m2) - peak)
            cells.append(
                f"{r['image']} {r['sigma_hat'] ** 2 / m2:.3f}: {est[-1]:+.2f} @{t_est} / {best[-1]:+.2f} @{t_m2}"
            )
        print(
            f"{Path(path).name} ({rec['size']} px, {len(cells)} images): dB vs oracle, estimate {np.mean(est):+.3f} "
            f"(worst {min(est):+.2f}), m2 {np.mean(best):+.3f} (worst {min(best):+.2f})"
        )
        print("   image sigma_hat^2/m2: estimate's dB @stop / m2's dB @stop: " + "; ".join(cells))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder with set9/")
    ap.add_argument("--sigmas", default="25", help="noise levels in 8-bit units, comma-separated")
    ap.add_argument("--replay", action="append", default=[], help="dip_stoprules.py recordings")
    ap.add_argument("--factor", type=float, default=None, help="the stop's factor (default: the preset's)")
    ap.add_argument("--no-table", action="store_true", help="only the replays")
    args = ap.parse_args(argv)
    if not args.no_table:
        estimate_table(args.data, [float(v) for v in args.sigmas.split(",")])
    if args.replay:
        from napari_deep_prior.restore.presets import get_preset

        p = get_preset("denoise")
        factor = args.factor if args.factor is not None else p.es_noise_factor
        replay(args.data, args.replay, factor, p.es_patience)


if __name__ == "__main__":
    main()
