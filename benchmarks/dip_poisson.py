"""Low-light (Poisson) denoising: the Poisson default against its own oracle stop, the Gaussian
default on the same counts, and Anscombe + non-local means with h chosen by the ground truth.

Usage::

    python benchmarks/dip_poisson.py --data ../shared/data --sizes 128,256 --peaks 5,10,30,100 \\
        --out benchmarks/results/poisson.json

Images are grey (colour images of Set9 through ``skimage.color.rgb2gray``), centred crops of
each size, scaled to ``peak`` photons at their brightest (clean intensity x peak is the
rate) and drawn from a Poisson distribution (numpy seed 1).  PSNR is in dB against the
rate with data range ``peak``.

Per case it reports:

- **default**: ``denoise(counts, loss="poisson")`` as shipped (the "denoise-poisson" preset,
  float32 output), its stop iteration, steps and wall time.  The fit is driven step by step
  with the noise-level stop's factor made unreachable, so the same run goes on past the stop
  (``--tail``) to give the **oracle**: the best frame of its history (every 10 steps, the
  returned averaged estimate) up to the end of the recording.  The default's own result is
  the frame at the step where the stop fired (exact: the stop reads only what the run
  computed up to there); ``--check N`` re-runs the first N cases through the public API and
  prints both results, which must agree.
- **gaussian**: ``denoise(counts)`` (the Gaussian default, noise-level stop) on the same counts.
- **anscombe+nlm**: Anscombe transform, ``skimage.restoration.denoise_nl_means`` (sigma=1,
  fast mode) with the best h of a grid by the ground truth (an oracle), exact unbiased inverse
  (Makitalo and Foi, IEEE TIP 2011, closed-form approximation).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from dip_quality import crop, load

IMAGES = ("set12/01_C.man", "set12/02_House", "set12/05_Monarch", "set9/F16", "set9/kodim03", "set9/Baboon")
NLM_H = tuple(np.round(np.arange(0.3, 1.61, 0.1), 2))


def psnr(rate: np.ndarray, est: np.ndarray, peak: float) -> float:
    mse = float(np.mean((np.asarray(est, np.float64) - rate) ** 2))
    return float(10 * np.log10(peak**2 / max(mse, 1e-20)))


def anscombe(y):
    return 2.0 * np.sqrt(y + 3.0 / 8.0)


def inverse_anscombe(d):
    """Exact unbiased inverse, closed-form approximation (Makitalo and Foi 2011)."""
    d = np.maximum(d, 1e-3)
    r = 0.25 * d**2 + 0.25 * np.sqrt(1.5) / d - 11.0 / 8.0 / d**2 + 0.625 * np.sqrt(1.5) / d**3 - 0.125
    return np.maximum(r, 0.0)


def nlm_oracle(counts, rate, peak):
    from skimage.restoration import denoise_nl_means

    a = anscombe(counts)
    best = (-np.inf, None)
    for h in NLM_H:
        est = inverse_anscombe(
            denoise_nl_means(a, h=float(h), sigma=1.0, patch_size=5, patch_distance=6, fast_mode=True)
        )
        best = max(best, (psnr(rate, est, peak), float(h)))
    return best


def grey(path: Path) -> np.ndarray:
    from skimage.color import rgb2gray

    img = load(path)
    return rgb2gray(img) if img.ndim == 3 else img


def default_with_oracle(counts, rate, peak, tail: float, seed: int):
    """Run the Poisson default past its stop; return its result, its stop and the oracle."""
    import torch

    from napari_deep_prior.restore.api import prepare_denoise
    from napari_deep_prior.restore.fit import DIPFit

    job = prepare_denoise(counts, loss="poisson", seed=seed, device="cpu")
    p = job.fit_params
    factor = p.es_noise_factor
    # the same fit, its stop made unreachable (it still computes the deviance), a frame every 10
    rec = p.replace(es_noise_factor=1e-9, history_every=p.yield_every, es_patience=p.iterations, preview_every=0)
    t0 = time.perf_counter()
    fit = DIPFit(job.planes[0], params=rec, device=torch.device("cpu"), seed=seed, counts_scale=job.layout.scale)
    stop_t, stop_wall, end = None, None, p.iterations
    for step in fit.steps():
        if stop_t is None and fit._deviance is not None and fit._deviance <= factor * fit._expected_deviance:
            stop_t, stop_wall = step.iteration, time.perf_counter() - t0
            end = min(p.iterations, max(int(stop_t * (1 + tail)), stop_t + 200))
        if step.iteration >= end:
            break
    res = fit.result()
    wall = time.perf_counter() - t0
    frames = res.history.frames[..., 0].astype(np.float64) * job.layout.scale
    its = res.history.iterations
    curve = [psnr(rate, f, peak) for f in frames]
    k = int(np.argmax(curve))
    if stop_t is None:  # never reached: ES-WMV or the iteration cap (not seen in the runs)
        stop_t, stop_wall = int(its[-1]), wall
    j = int(np.searchsorted(its, stop_t))
    return {
        "psnr": curve[j],
        "stop": int(stop_t),
        "wall_s": stop_wall,
        "oracle_psnr": curve[k],
        "oracle_iteration": int(its[k]),
        "recorded_to": int(its[-1]),
        "s_per_step": wall / max(int(its[-1]), 1),
        "curve": [round(c, 3) for c in curve],
        "iterations": its.tolist(),
    }


def cases(args):
    """(image name, size, peak, rate) of every case asked for on the command line."""
    for size in (int(s) for s in args.sizes.split(",")):
        for name in args.images.split(","):
            clean = crop(grey(Path(args.data) / f"{name}.png"), size)
            for peak in (float(p) for p in args.peaks.split(",")):
                yield name, size, peak, clean * peak


def camera_cases(args) -> None:
    """Poisson-Gaussian camera data (sCMOS-like ADU): the camera model against the alternatives."""
    from napari_deep_prior import denoise

    gain, offset, read = (float(v) for v in args.camera.split(","))
    rows = []
    for name, size, peak, rate in cases(args):
        rng = np.random.default_rng(1)
        electrons = rng.poisson(rate) + rng.normal(0.0, read, rate.shape)
        adu = np.clip(np.rint(gain * electrons + offset), 0, 65535).astype(np.uint16)
        to_photons = lambda v: (np.asarray(v, np.float64) - offset) / gain  # noqa: E731
        row = {
            "image": name,
            "size": size,
            "peak": peak,
            "gain": gain,
            "offset": offset,
            "read_noise": read,
            "noisy": psnr(rate, to_photons(adu), peak),
        }
        runs = {
            "camera": dict(loss="poisson", camera_offset=offset, gain=gain, read_noise=read),
            "offset+gain only": dict(loss="poisson", camera_offset=offset, gain=gain),
            "gaussian": {},
        }
        for key, kw in runs.items():
            t0 = time.perf_counter()
            est, out = denoise(adu, seed=args.seed, device="cpu", return_history=True, **kw)
            row[key] = {
                "psnr": psnr(rate, to_photons(est), peak),
                "stop": int(out.stop_iterations[0]),
                "wall_s": time.perf_counter() - t0,
            }
        rows.append(row)
        print(
            f"{name:16s} {size:4d} peak {peak:5g} gain {gain:g} offset {offset:g} read {read:g}: "
            f"noisy {row['noisy']:6.2f}  " + "  ".join(f"{k} {row[k]['psnr']:6.2f} @{row[k]['stop']}" for k in runs),
            flush=True,
        )
        Path(args.out).write_text(json.dumps({"camera": rows}))


def sample_case(args) -> None:
    """The plugin's own low-light sample (File > Open Sample), against its known rate."""
    from napari_deep_prior import denoise
    from napari_deep_prior import samples as sd

    counts, kwargs = sd.fluorescence_poisson()[0]
    if not kwargs["name"].startswith("nuclei"):
        raise SystemExit("the sample used scikit-image's mitosis image, whose clean rate is unknown")
    rate = sd.PEAK_PHOTONS * sd._synthetic_nuclei()  # the same clean image the sample draws from
    peak = float(rate.max())
    row = {"sample": kwargs["name"], "shape": list(counts.shape), "noisy": psnr(rate, counts, peak)}
    for key, kw in {"default": dict(loss="poisson"), "gaussian": {}}.items():
        t0 = time.perf_counter()
        est, out = denoise(counts, seed=args.seed, device="cpu", return_history=True, **kw)
        fit = out.fits[0]
        row[key] = {
            "psnr": psnr(rate, est, peak),
            "stop": int(out.stop_iterations[0]),
            "reason": fit.stop_reason,
            "wall_s": time.perf_counter() - t0,
            "dtype": str(est.dtype),
            "best_history": max(psnr(rate, f, peak) for f in out.history),
        }
        print(
            f"{kwargs['name']}: {key}: {row['noisy']:.2f} -> {row[key]['psnr']:.2f} dB, stop "
            f"{row[key]['stop']} ({fit.stop_reason}), {row[key]['wall_s']:.1f} s, best history frame "
            f"{row[key]['best_history']:.2f} dB",
            flush=True,
        )
    Path(args.out).write_text(json.dumps({"sample": row}))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data")
    ap.add_argument("--sizes", default="128,256")
    ap.add_argument("--peaks", default="5,10,30,100")
    ap.add_argument("--images", default=",".join(IMAGES))
    ap.add_argument(
        "--tail",
        type=float,
        default=0.5,
        help="record past the stop until max(stop*(1+tail), stop+200) steps (the oracle's range)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", type=int, default=0, help="re-run the first N cases through denoise() to check")
    ap.add_argument("--no-gaussian", action="store_true")
    ap.add_argument(
        "--camera",
        metavar="GAIN,OFFSET,READ",
        help="instead: Poisson-Gaussian camera data (ADU = gain*(photons + N(0, read^2)) + "
        "offset), denoised with the camera model, with offset and gain only, and "
        "with the Gaussian default",
    )
    ap.add_argument("--out", help="JSON file of the results (needed for every mode but --summarise)")
    ap.add_argument(
        "--summarise",
        nargs="+",
        metavar="JSON",
        help="instead: print the per-case and mean tables of earlier --out files",
    )
    ap.add_argument(
        "--sample", action="store_true", help="instead: the plugin's low-light sample, default vs the Gaussian default"
    )
    args = ap.parse_args(argv)
    if args.summarise:
        rows = [r for f in args.summarise for r in json.loads(Path(f).read_text())["rows"]]
        return summarise(rows, per_case=True)
    if not args.out or not args.data:
        ap.error("--data and --out are needed (except with --summarise)")
    if args.sample:
        return sample_case(args)
    if args.camera:
        return camera_cases(args)

    import torch

    from napari_deep_prior import denoise

    rows = []
    for name, size, peak, rate in cases(args):
        counts = np.random.default_rng(1).poisson(rate).astype(np.uint16)
        row = {
            "image": name,
            "size": size,
            "peak": peak,
            "noisy": psnr(rate, counts, peak),
            "threads": torch.get_num_threads(),
        }
        row["default"] = default_with_oracle(counts, rate, peak, args.tail, args.seed)
        if len(rows) < args.check:
            t0 = time.perf_counter()
            est, out = denoise(counts, loss="poisson", seed=args.seed, device="cpu", return_history=True)
            row["check"] = {
                "psnr": psnr(rate, est, peak),
                "stop": int(out.stop_iterations[0]),
                "wall_s": time.perf_counter() - t0,
                "dtype": str(est.dtype),
            }
        if not args.no_gaussian:
            t0 = time.perf_counter()
            est, out = denoise(counts, seed=args.seed, device="cpu", return_history=True)
            row["gaussian"] = {
                "psnr": psnr(rate, est, peak),
                "stop": int(out.stop_iterations[0]),
                "wall_s": time.perf_counter() - t0,
            }
        row["nlm"] = dict(zip(("psnr", "h"), nlm_oracle(counts, rate, peak), strict=True))
        rows.append(row)
        d = row["default"]
        g = row.get("gaussian", {})
        print(
            f"{name:16s} {size:4d} peak {peak:5g}: noisy {row['noisy']:6.2f}  default "
            f"{d['psnr']:6.2f} @{d['stop']:4d} ({d['wall_s']:5.1f} s)  oracle {d['oracle_psnr']:6.2f} "
            f"@{d['oracle_iteration']:4d}  gaussian {g.get('psnr', float('nan')):6.2f} "
            f"@{g.get('stop', 0):4d} ({g.get('wall_s', float('nan')):5.1f} s)  nlm "
            f"{row['nlm']['psnr']:6.2f} (h {row['nlm']['h']})"
            + (f"  check {row['check']['psnr']:.2f} @{row['check']['stop']}" if "check" in row else ""),
            flush=True,
        )
        Path(args.out).write_text(json.dumps({"rows": rows}))
    summarise(rows)


def summarise(rows, per_case: bool = False) -> None:
    if per_case:
        print(
            "| image | px | peak | noisy | default (steps, s) | oracle (step) | gaussian (steps, s) | "
            "Anscombe+NLM (h) |\n|---|---|---|---|---|---|---|---|"
        )
        for r in sorted(rows, key=lambda r: (r["size"], r["peak"], r["image"])):
            d, g, n = r["default"], r.get("gaussian", {}), r["nlm"]
            print(
                f"| {r['image'].split('/')[-1]} | {r['size']} | {r['peak']:g} | {r['noisy']:.2f} | "
                f"{d['psnr']:.2f} ({d['stop']}, {d['wall_s']:.0f}) | {d['oracle_psnr']:.2f} "
                f"({d['oracle_iteration']}) | {g.get('psnr', float('nan')):.2f} ({g.get('stop', 0)}, "
                f"{g.get('wall_s', float('nan')):.0f}) | {n['psnr']:.2f} ({n['h']}) |"
            )
    print(
        "\nmean over images      noisy  default  oracle  gaussian  nlm   default-oracle  default-nlm  "
        "steps  s(default)  s(gaussian)"
    )
    for size in sorted({r["size"] for r in rows}):
        for peak in sorted({r["peak"] for r in rows}):
            rs = [r for r in rows if r["size"] == size and r["peak"] == peak]
            if not rs:
                continue
            print(f"({len(rs)} images)", end=" ")

            def m(f, rs=rs):
                vals = [f(r) for r in rs]
                return float(np.mean(vals)) if vals else float("nan")

            d, o = m(lambda r: r["default"]["psnr"]), m(lambda r: r["default"]["oracle_psnr"])
            g = m(lambda r: r["gaussian"]["psnr"]) if all("gaussian" in r for r in rs) else float("nan")
            gs = m(lambda r: r["gaussian"]["wall_s"]) if all("gaussian" in r for r in rs) else float("nan")
            n = m(lambda r: r["nlm"]["psnr"])
            print(
                f"{size:4d} px peak {peak:5g} {m(lambda r: r['noisy']):7.2f} {d:8.2f} {o:7.2f} {g:8.2f} "
                f"{n:6.2f}   {d - o:+6.2f}          {d - n:+6.2f}     {m(lambda r: r['default']['stop']):5.0f}"
                f"   {m(lambda r: r['default']['wall_s']):7.1f}   {gs:7.1f}"
            )


if __name__ == "__main__":
    main()
