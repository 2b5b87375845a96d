"""Stopping rules for DIP denoising, simulated on recorded trajectories.

Usage::

    # record: run each image for a fixed number of steps (no stop), save the trajectories
    python benchmarks/dip_stoprules.py record --data ../shared/data --size 128 --steps 2000 \
        --out benchmarks/results/traj-default.json
    python benchmarks/dip_stoprules.py record ... --set upsample=nearest --set lr=0.02
    # analyse: replay stopping rules on a recording (exact: every rule is a function of the
    # per-step ES variance, the data fit and the estimated noise level, all recorded)
    python benchmarks/dip_stoprules.py analyse benchmarks/results/traj-default.json \
        --paper benchmarks/results/speed-128-paper-1t.json

A recording holds, per image, every 10 steps: the PSNR of the returned estimate (the
averaged output) against the clean image, the mean squared difference between that estimate
and the noisy input, the ES-WMV variance of the raw outputs, and the measured seconds per
step.  A rule maps these (never the clean image) to a stop step; its quality is the PSNR
of the estimate at that step and its time ``start-up + steps * s/step``, so rules can be
compared with the oracle-stopped paper recipe of ``dip_speed.py`` without re-running fits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from dip_quality import SIGMA, crop, load, psnr

SET9 = ("F16", "House", "kodim02", "Lena", "Peppers", "kodim03", "kodim12", "kodim01", "Baboon")


def _params(preset: str, sets: list[str], steps: int):
    from napari_deep_prior.restore.presets import get_preset

    p = get_preset(preset, task="denoise")
    net_kw, kw = {}, {}
    for item in sets:
        key, _, val = item.partition("=")
        if key in ("channels", "channels_down", "channels_up"):
            widths = tuple(int(v) for v in val.split(","))
            if key in ("channels", "channels_down"):
                net_kw["channels_down"] = widths
            if key in ("channels", "channels_up"):
                net_kw["channels_up"] = widths
        elif key in ("upsample", "input_kind"):
            net_kw[key] = val
        elif key in ("input_depth",):
            net_kw[key] = int(val)
        elif key in ("need_1x1_up",):
            net_kw[key] = val.lower() in ("1", "true", "yes")
        elif key in ("lr", "reg_noise_std", "exp_weight"):
            kw[key] = float(val)
        elif key in ("es_window",):
            kw[key] = int(val)
        else:
            raise SystemExit(f"--set {key}: unknown key")
    net = replace(p.net, **net_kw)
    # the stop is replayed offline: no early stop, a frame every 10 steps
    return p.replace(
        net=net,
        iterations=steps,
        es_patience=steps,
        es_noise_factor=0.0,
        history_every=10,
        history_spacing="linear",
        preview_every=0,
        **kw,
    )


def noisy_crop(data: Path, name: str, size: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy): the centred ``size`` crop of an image and its Gaussian noise (seed 0), clipped.

    ``name`` is a Set9 image ("F16") or a path under ``data`` without ".png" ("set12/01_C.man",
    "set9/F16"), read as grey (a colour image by its luminance, ``skimage.color.rgb2gray``) and returned
    as (H, W, 1).
    """
    if "/" in name:
        from skimage.color import rgb2gray

        img = load(data / f"{name}.png")
        clean = crop(rgb2gray(img) if img.ndim == 3 else img, size)[..., None]
    else:
        clean = crop(load(data / "set9" / f"{name}.png"), size)
    rng = np.random.default_rng(0)
    return clean, np.clip(clean + rng.normal(0.0, sigma, clean.shape), 0, 1).astype(np.float32)


def record(args) -> None:
    import torch

    from napari_deep_prior.restore.fit import DIPFit
    from napari_deep_prior.restore.stopping import estimate_noise_sigma, residual_correlation

    params = _params(args.preset, args.set or [], args.steps)
    names = args.images.split(",") if args.images else list(SET9)
    out = {
        "size": args.size,
        "steps": args.steps,
        "sigma": args.sigma,
        "preset": args.preset,
        "set": args.set or [],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "images": [],
    }
    for name in names:
        gt, noisy = noisy_crop(Path(args.data), name, args.size, args.sigma / 255.0)
        sigma_hat = estimate_noise_sigma(noisy)  # the estimate the noise-level stop uses
        t0 = time.perf_counter()
        fit = DIPFit(noisy, params=params, device=torch.device("cpu"), seed=args.seed)
        gen = fit.steps()
        first = None
        for step in gen:
            if first is None:
                first = (step.iteration, time.perf_counter() - t0)
        res = fit.result()
        wall = time.perf_counter() - t0
        its = res.history.iterations
        frames = res.history.frames
        rec = {
            "image": name,
            "channels": int(noisy.shape[-1]),
            "sigma_hat": sigma_hat,
            "sigma": args.sigma / 255.0,
            "wall_s": wall,
            "s_per_step": (wall - first[1]) / max(len(res.losses) - first[0], 1),
            "startup_s": first[1] - first[0] * (wall - first[1]) / max(len(res.losses) - first[0], 1),
            "iterations": its.tolist(),
            "psnr": [round(psnr(gt, f), 4) for f in frames],
            "fit_mse": [float(np.mean((f - noisy) ** 2)) for f in frames],
            # the residual-whiteness stop's statistic of the returned estimate
            "residual_corr": [
                float(residual_correlation(torch.from_numpy(noisy - f).permute(2, 0, 1))) for f in frames
            ],
            "loss_all": [float(v) for v in res.losses],
            "es_var": [
                None if not np.isfinite(res.es_variances[i - 1]) else float(res.es_variances[i - 1]) for i in its
            ],
            "es_var_all": [None if not np.isfinite(v) else float(v) for v in res.es_variances],
        }
        k = int(np.argmax(rec["psnr"]))
        print(
            f"{name}: peak {rec['psnr'][k]:.2f} dB at {its[k]}, {rec['s_per_step']:.4f} s/step, "
            f"sigma_hat {sigma_hat * 255:.1f}/255",
            flush=True,
        )
        out["images"].append(rec)
        Path(args.out).write_text(json.dumps(out))


# --- rules -----------------------------------------------------------------------------------
def rule_es(rec, patience, start=150, window_check=10):
    """ES-WMV: the stop is at the first yield ``patience`` steps after the variance minimum."""
    v = rec["es_var_all"]
    best, best_t = np.inf, None
    for t in range(1, len(v) + 1):
        x = v[t - 1]
        if x is not None and t >= start and x < best:
            best, best_t = x, t
        if t % window_check == 0 and best_t is not None and t - best_t >= patience:
            return t
    return len(v)


def rule_discrepancy(rec, factor, start=150, confirm=1):
    """Stop once the estimate's mean squared distance to the input falls to factor * sigma_hat^2."""
    s2 = rec["sigma_hat"] ** 2
    below = 0
    for it, m in zip(rec["iterations"], rec["fit_mse"], strict=True):
        if it >= start and m <= factor * s2:
            below += 1
            if below >= confirm:
                return it
        else:
            below = 0
    return rec["iterations"][-1]


def running_loss(rec, beta=0.95):
    """The fit's running mean of the training loss after each step (index t - 1 for step t)."""
    out, ema = [], None
    for v in rec["loss_all"]:
        ema = v if ema is None else beta * ema + (1 - beta) * v
        out.append(ema)
    return out


def rule_loss_discrepancy(rec, factor, start=150, beta=0.95, every=10, fallback=None):
    """Stop at the first yield where a running mean of the training loss is <= factor * sigma_hat^2.

    The training loss is the raw output's distance to the input (with the input jitter); its
    running mean (weight ``beta``) smooths the step-to-step noise.  Never reached: ``fallback``.
    """
    s2 = rec["sigma_hat"] ** 2
    for t, ema in enumerate(running_loss(rec, beta), 1):
        if t % every == 0 and t >= start and ema <= factor * s2:
            return t
    return fallback(rec) if fallback else len(rec["loss_all"])


def rule_whiteness(rec, whiteness, factor=1.0, start=150, beta=0.95, patience=600, reference_sigma=None):
    """The shipped Gaussian stop: noise level and residual whiteness, ES-WMV as the safety net.

    At each recorded yield from ``start``: the run ends when the residual's lag-1
    autocorrelation (``residual_corr``, of the returned estimate) is <= ``-whiteness``, or when
    the running mean of the loss is <= ``factor * sigma_hat^2`` while that correlation is <= 0;
    ES-WMV with ``patience`` otherwise.  None for a recording without ``residual_corr``.
    With ``reference_sigma`` the threshold is ``whiteness * reference_sigma / sigma_hat`` (the
    shipped scaling: ``fit.WHITENESS_SIGMA``).
    """
    if "residual_corr" not in rec:
        return None
    s2 = rec["sigma_hat"] ** 2
    if reference_sigma is not None:
        whiteness = whiteness * reference_sigma / rec["sigma_hat"]
    loss = running_loss(rec, beta)
    es = rule_es(rec, patience)
    for t, rho in zip(rec["iterations"], rec["residual_corr"], strict=True):
        if t >= es:
            return es
        if t >= start and (rho <= -whiteness or (rho <= 0.0 and loss[t - 1] <= factor * s2)):
            return t
    return min(es, rec["iterations"][-1])


def at(rec, t):
    its = rec["iterations"]
    k = min(range(len(its)), key=lambda i: abs(its[i] - t))
    return rec["psnr"][k]


def analyse(args) -> None:
    rec = json.loads(Path(args.recording).read_text())
    paper = {}
    if args.paper:
        for p in args.paper:
            for row in json.loads(Path(p).read_text())["denoise"]:
                if row.get("paper"):
                    paper.setdefault(row["image"], row["paper"])
    imgs = rec["images"]
    print(f"recording {args.recording}: preset {rec['preset']} {rec['set']}, {len(imgs)} images")
    print(
        "image     peak dB @step  s/step  sigma_hat*255  at the peak: estimate's mse to input / sigma^2, "
        "/ sigma_hat^2, running-mean loss / sigma_hat^2"
    )
    for r in imgs:
        k = int(np.argmax(r["psnr"]))
        t = r["iterations"][k]
        ema = running_loss(r)[t - 1]
        print(
            f"{r['image']:9s} {r['psnr'][k]:6.2f} {t:5d}  {r['s_per_step']:.4f}  "
            f"{r['sigma_hat'] * 255:5.1f}  {r['fit_mse'][k] / r.get('sigma', SIGMA) ** 2:6.3f}  "
            f"{r['fit_mse'][k] / r['sigma_hat'] ** 2:6.3f}  {ema / r['sigma_hat'] ** 2:6.3f}"
        )
    rules = {}
    for pat in (100, 150, 200, 250, 300):
        rules[f"es p{pat}"] = lambda r, pat=pat: rule_es(r, pat)
    for f in (0.80, 0.85, 0.9, 0.95, 1.0, 1.05):
        rules[f"disc {f:.2f}"] = lambda r, f=f: rule_discrepancy(r, f)
    for f in (1.0, 1.02, 1.04, 1.05, 1.06, 1.08, 1.10):
        rules[f"loss {f:.2f}"] = lambda r, f=f: rule_loss_discrepancy(r, f)
        rules[f"min(loss {f:.2f}, es p300)"] = lambda r, f=f: min(rule_loss_discrepancy(r, f), rule_es(r, 300))
    for f in (1.02, 1.03, 1.04):
        for pat in (400, 500, 600, 800):
            rules[f"min(loss {f:.2f}, es p{pat})"] = lambda r, f=f, pat=pat: min(
                rule_loss_discrepancy(r, f), rule_es(r, pat)
            )
    from napari_deep_prior.restore.presets import get_preset

    shipped = get_preset("denoise")
    f, pat = shipped.es_noise_factor, shipped.es_patience

    def noise_level_alone(r):
        return min(rule_loss_discrepancy(r, f), rule_es(r, pat))

    # the shipped noise-level stop without the whiteness stop (the default before it)
    rules["noise level alone"] = noise_level_alone
    if all("residual_corr" in r for r in imgs):  # recorded with the whiteness statistic
        for w in (0.02, 0.025, 0.03, 0.035, 0.04):
            rules[f"white {w:.3f} (+loss {f:.2f})"] = lambda r, w=w: rule_whiteness(r, w, f, patience=pat)
        from napari_deep_prior.restore.fit import WHITENESS_SIGMA

        def rule_shipped(r):
            if r.get("channels", 1 if "/" in r["image"] else 3) == 1:  # one channel: no whiteness stop
                return noise_level_alone(r)
            return rule_whiteness(r, shipped.es_whiteness, f, patience=pat, reference_sigma=WHITENESS_SIGMA)

        rules["shipped"] = rule_shipped
    else:
        rules["shipped"] = noise_level_alone
    rules["oracle"] = lambda r: r["iterations"][int(np.argmax(r["psnr"]))]
    print()
    head = "rule                     " + " ".join(f"{r['image'][:7]:>13s}" for r in imgs) + "   mean dB  Δpaper  ratio"
    print(head)
    for name, rule in rules.items():
        cells, dbs, times, ptimes, gaps = [], [], [], [], []
        for r in imgs:
            t = rule(r)
            q = at(r, t)
            sec = r["startup_s"] + t * r["s_per_step"]
            cells.append(f"{q:6.2f}@{t:5d}")
            dbs.append(q)
            times.append(sec)
            if r["image"] in paper:
                ptimes.append(paper[r["image"]]["time_to_peak_s"])
                gaps.append(q - paper[r["image"]]["peak_psnr"])
        ratio = sum(times) / sum(ptimes) if len(ptimes) == len(imgs) else float("nan")
        gap = float(np.mean(gaps)) if gaps else float("nan")
        print(f"{name:24s} " + " ".join(cells) + f"   {np.mean(dbs):6.2f}  {gap:+.2f}  {ratio:.3f}")


def calibrate(args) -> None:
    """What the noise-level stop's factor should be, per image, across recordings of several sizes.

    For each image: the running-mean loss over sigma_hat^2 at the averaged estimate's peak
    (the factor that would stop there), and the holes in PSNR (vs the oracle) of a grid of
    factors; then per recording the mean loss of each factor, so a factor per size (and the
    function of size that gives it) can be read off.
    """
    grid = (0.90, 0.92, 0.94, 0.96, 0.97, 0.98, 0.99, 1.00, 1.01, 1.02, 1.03)
    print(
        "| recording | image | px | sigma_hat*255 | peak dB @step | factor at peak | "
        + " | ".join(f"{f:.2f}" for f in grid)
        + " |"
    )
    print("|---" * (6 + len(grid)) + "|")
    summary = []
    for path in args.recordings:
        rec = json.loads(Path(path).read_text())
        losses = []
        for r in rec["images"]:
            k = int(np.argmax(r["psnr"]))
            t = r["iterations"][k]
            ema = running_loss(r)[t - 1]
            row = []
            for f in grid:
                stop = min(rule_loss_discrepancy(r, f), rule_es(r, 600))
                row.append(at(r, stop) - r["psnr"][k])
            losses.append(row)
            print(
                f"| {Path(path).stem} | {r['image']} | {rec['size']} | {r['sigma_hat'] * 255:.1f} | "
                f"{r['psnr'][k]:.2f} @{t} | {ema / r['sigma_hat'] ** 2:.3f} | "
                + " | ".join(f"{v:+.2f}" for v in row)
                + " |"
            )
        m = np.mean(losses, axis=0)
        w = np.min(losses, axis=0)
        summary.append((Path(path).stem, rec["size"], m, w))
    print("\nmean (worst) dB vs the oracle, per factor")
    for name, size, m, w in summary:
        print(
            f"{name} ({size} px): "
            + ", ".join(f"{f:.2f}: {a:+.2f} ({b:+.2f})" for f, a, b in zip(grid, m, w, strict=True))
        )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--data", required=True)
    r.add_argument("--size", type=int, default=128)
    r.add_argument("--steps", type=int, default=2000)
    r.add_argument("--preset", default="denoise")
    r.add_argument("--set", action="append", help="override: channels=16,32,.. upsample=nearest lr=0.02 ...")
    r.add_argument("--images", default="")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--sigma", type=float, default=SIGMA * 255, help="noise level in 8-bit units (25)")
    r.add_argument("--out", required=True)
    a = sub.add_parser("analyse")
    a.add_argument("recording")
    a.add_argument("--paper", action="append", help="dip_speed.py JSON with the paper rows")
    c = sub.add_parser("calibrate", help="the noise-level factor per image and size, from recordings")
    c.add_argument("recordings", nargs="+")
    args = ap.parse_args(argv)
    {"record": record, "analyse": analyse, "calibrate": calibrate}[args.cmd](args)


if __name__ == "__main__":
    main()
