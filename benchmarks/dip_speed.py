"""DIP speed benchmark: the paper's recipe (oracle-stopped) against the default pipeline.

Usage::

    python benchmarks/dip_speed.py --data ../shared/data --size 128 --cases denoise
    python benchmarks/dip_speed.py --data ../shared/data --full --device cuda     # on a GPU
    python benchmarks/dip_speed.py --scaling 128,256,512,1024,2048 --scaling-steps 6
    python benchmarks/dip_speed.py --data ../shared/data --full --device cuda --default-only --tile-size 288

``--default-only`` runs (b) alone (``--paper-only`` (a) alone); ``--tile-size`` gives (b) a tile side
(0: each plane whole; by default a CPU fits large planes in tiles, a GPU whole).

Per image, in one process and on the same corrupted input:

(a) **paper**: the paper's preset run as the published code runs it: a plain eager fp32
    loop over a fixed number of iterations (F16 recipe for denoising: 128-wide skip net,
    Adam 0.01, input jitter 1/30, output averaging 0.99, 1800 steps; for inpainting the
    reference row of each image: kate → inpaint-text, vase → inpaint-large-hole, library →
    inpaint-large-regions).  It is credited with an **oracle stop**: its quality is the best
    PSNR against the ground truth along its run (measured every ``--eval-every`` steps) and
    its time the training time to reach that step (evaluation time excluded).
    ``--paper-guard N`` ends a run once the PSNR has stayed 1 dB or more below its best for
    N steps (the best cannot be beaten any more in practice; 0 runs every step).
(b) **default**: ``denoise(noisy)`` / ``inpaint(damaged, holes)`` exactly as a user calls
    them (default preset, automatic early stop, history on); its time is the whole call,
    start-up included, and its quality the returned image.

Reported per image and as a mean: seconds per step, wall time, peak memory (growth of the
resident set during the run on the CPU, measured by a sampling thread after returning
freed memory to the OS; torch.cuda.max_memory_allocated on a GPU), PSNR curve, final PSNR,
and the time-to-quality ratio (b)/(a).

``--scaling`` measures the default pipeline's seconds per step and peak memory against the
image size (a few steps on a synthetic image per size), and the memory estimate used to
decide on tiling.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import math
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from dip_quality import SIGMA, crop, load, psnr

INPAINT_PAPER = {"kate": "inpaint-text", "vase": "inpaint-large-hole", "library": "inpaint-large-regions"}


# --- memory -------------------------------------------------------------------------------
def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory growth of a block: CUDA allocator peak, or sampled RSS growth on the CPU."""

    def __init__(self, device):
        self.device = device
        self.peak = 0

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        _trim()
        self._base = _rss()
        self._max = self._base
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._max = max(self._max, _rss())
                self._stop.wait(0.005)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._max, _rss()) - self._base
        return False


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# --- (a) the reference loop ---------------------------------------------------------------
def run_paper(
    gt, target, known, params, device, *, seed, eval_every, guard, log_every=0, max_seconds=0.0, keep_best=False
):
    """The published optimisation loop, eager fp32, fixed iterations; PSNR every eval_every.

    ``keep_best``: also return the oracle-stopped estimate itself (``"best_image"``, H x W x C float32).
    """
    import torch

    from napari_deep_prior.nets import SkipNet, make_input, padded_shape

    h, w, c = target.shape
    hp, wp = padded_shape(params.net, h, w)
    top, left = (hp - h) // 2, (wp - w) // 2
    t_start = time.perf_counter()
    torch.manual_seed(seed)
    net = SkipNet.from_params(params.net, c).to(device)
    z = make_input(params.net, hp, wp, generator=torch.Generator().manual_seed(seed), device=device)
    x = torch.from_numpy(np.ascontiguousarray(target, np.float32)).permute(2, 0, 1)[None].to(device)
    m = None
    if known is not None:
        m = torch.from_numpy(known.astype(np.float32))[None, None].to(device)
    opt = torch.optim.Adam(net.parameters(), lr=params.lr)
    avg = None
    train_s = time.perf_counter() - t_start
    curve, best, best_it, best_t, best_img = [], -math.inf, 0, 0.0, None
    last_good = None
    last_psnr_noisy = None
    truncated = False
    it = 0
    for it in range(1, params.iterations + 1):
        t0 = time.perf_counter()
        zin = z + params.reg_noise_std * torch.randn_like(z) if params.reg_noise_std > 0 else z
        out = net(zin)[:, :, top : top + h, left : left + w]
        loss = ((out - x) ** 2 * m).mean() if m is not None else ((out - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if params.exp_weight is not None:
            o = out.detach()
            avg = o.clone() if avg is None else avg * params.exp_weight + o * (1 - params.exp_weight)
        # the reference's backtracking check (every 100 steps, denoising only)
        if params.exp_weight is not None and params.backtrack and it % 100 == 0:
            p_noisy = -10 * math.log10(max(float(((out.detach() - x) ** 2).mean()), 1e-12))
            if last_psnr_noisy is not None and p_noisy < last_psnr_noisy - 5:
                net.load_state_dict(last_good)
            else:
                last_good = {k: v.detach().clone() for k, v in net.state_dict().items()}
                last_psnr_noisy = p_noisy
        _sync(device)
        train_s += time.perf_counter() - t0
        if it % eval_every == 0 or it == params.iterations:
            est = avg if avg is not None else out.detach()
            img = est[0].permute(1, 2, 0).float().cpu().numpy()
            if known is not None:
                img = np.where(known[..., None], target, img)
            q = psnr(gt, img)
            curve.append((it, round(train_s, 3), round(q, 3)))
            if q > best:
                best, best_it, best_t = q, it, train_s
                if keep_best:
                    best_img = np.asarray(img, np.float32).copy()
            if log_every and it % log_every == 0:
                print(f"    paper step {it}: {q:.2f} dB (best {best:.2f} @ {best_it}) {train_s:.0f} s", flush=True)
            if guard and it - best_it >= guard and q <= best - 1.0:
                break
            if max_seconds and train_s > max_seconds:
                truncated = True
                break
    extra = {"best_image": best_img} if keep_best else {}
    return {
        **extra,
        "steps": it,
        "truncated": truncated,
        "train_s": train_s,
        "s_per_step": train_s / it,
        "peak_psnr": best,
        "peak_iteration": best_it,
        "time_to_peak_s": best_t,
        "final_psnr": curve[-1][2],
        "curve": curve,
    }


# --- (b) the default pipeline -------------------------------------------------------------
def run_default(
    gt, target, holes, device, *, seed, preset=None, amp=None, max_iterations=0, tile_size=None, cuda_graph=True
):
    from napari_deep_prior import denoise, inpaint
    from napari_deep_prior.restore.presets import get_preset

    kw = {"seed": seed, "device": device, "return_history": True}
    if max_iterations:
        kw["iterations"] = max_iterations
    if preset:
        kw["preset"] = preset
    if tile_size is not None:
        kw["tile_size"] = tile_size
    changes = {"amp": amp} if amp else {}
    if not cuda_graph:
        changes["cuda_graph"] = False
    if changes:
        task = "denoise" if holes is None else "inpaint"
        kw["params"] = get_preset(preset or task, task=task).replace(**changes)
    t0 = time.perf_counter()
    if holes is None:
        out, full = denoise(target, channel_axis=-1, **kw)
    else:
        out, full = inpaint(target, holes, channel_axis=-1, **kw)
    _sync(device)
    wall = time.perf_counter() - t0
    # a tiled plane reports its largest tile's steps in iterations_run: count every tile's
    steps = int(sum(sum(r) for r in full.tile_iterations_run) if full.tile_iterations_run else sum(full.iterations_run))
    curve = []
    if full.history is not None:
        curve = [(int(i), round(psnr(gt, f), 3)) for i, f in zip(full.history_iterations, full.history, strict=True)]
    return {
        "steps": steps,
        "wall_s": wall,
        "s_per_step": wall / max(steps, 1),
        "psnr": psnr(gt, out),
        "stop_iteration": int(full.stop_iterations[0]),
        "tiles": len(full.tile_iterations_run[0]) if full.tile_iterations_run else 0,
        "curve": curve,
    }


# --- cases ----------------------------------------------------------------------------------
def denoise_inputs(data: Path, size: int, keep):
    files = sorted((data / "set9").glob("*.png"))
    if keep:  # in the order given
        files = [data / "set9" / f"{k}.png" for k in keep if (data / "set9" / f"{k}.png").exists()]
    for f in files:
        gt = crop(load(f), size)
        rng = np.random.default_rng(0)
        noisy = np.clip(gt + rng.normal(0.0, SIGMA, gt.shape), 0, 1).astype(np.float32)
        yield f.stem, gt, noisy, None


def inpaint_inputs(data: Path, size: int, keep):
    d = data / "dip" / "inpainting"
    for name in ("kate", "vase", "library"):
        if keep and name not in keep:
            continue
        gt = crop(load(d / f"{name}.png"), size)
        known = crop(load(d / f"{name}_mask.png", grey=True) > 0.5, size)
        damaged = (gt * known[..., None]).astype(np.float32)
        yield name, gt, damaged, known


def bench_case(case, inputs, args, device, log, on_row=lambda rows: None):
    import torch

    from napari_deep_prior.restore.presets import get_preset

    reuse = {}
    if args.reuse_paper:
        old = json.loads(Path(args.reuse_paper).read_text())
        if old.get("size") != (0 if args.full else args.size):
            raise SystemExit(f"{args.reuse_paper} was measured at size {old.get('size')}")
        reuse = {r["image"]: r["paper"] for r in old.get(case, [])}

    rows = []
    for name, gt, target, known in inputs:
        paper = get_preset("denoise-paper" if case == "denoise" else INPAINT_PAPER[name])
        if args.paper_iterations:
            paper = paper.replace(iterations=args.paper_iterations)
        rec = {"image": name, "shape": list(gt.shape), "case": case, "input_psnr": psnr(gt, target)}
        if args.default_only:
            a = None
        elif name in reuse:
            a = reuse[name]
            print(f"{case} {name} {gt.shape}: paper recipe taken from {args.reuse_paper}", flush=True)
        else:
            print(f"{case} {name} {gt.shape}: paper recipe ({paper.iterations} steps)...", flush=True)
            with PeakMemory(device) as mem:
                a = run_paper(
                    gt,
                    target,
                    known,
                    paper,
                    device,
                    seed=args.seed,
                    eval_every=args.eval_every,
                    guard=args.paper_guard,
                    log_every=args.log_every,
                    max_seconds=args.paper_max_seconds,
                )
            a["peak_memory_mb"] = mem.peak / 2**20
            a["threads"] = torch.get_num_threads()
        if a is not None:
            rec["paper"] = a
        if not args.paper_only:
            print("  default pipeline...", flush=True)
            with PeakMemory(device) as mem:
                b = run_default(
                    gt,
                    target,
                    None if known is None else ~known,
                    device,
                    seed=args.seed,
                    preset=args.preset,
                    amp=args.amp,
                    max_iterations=args.max_iterations,
                    tile_size=args.tile_size,
                    cuda_graph=not args.no_cuda_graph,
                )
            b["peak_memory_mb"] = mem.peak / 2**20
            rec["default"] = b
        if "paper" in rec and "default" in rec:
            rec["time_ratio"] = b["wall_s"] / max(a["time_to_peak_s"], 1e-9)
            rec["psnr_gap"] = b["psnr"] - a["peak_psnr"]
        rows.append(rec)
        on_row(rows)
        log(rec)
    return rows


def default_table(rows):
    """The default pipeline alone (``--default-only``)."""
    lines = [
        "| image | shape | input dB | default dB | steps | s/step | wall s | peak MB |",
        "|" + "---|" * 8,
    ]
    for r in rows:
        b = r["default"]
        lines.append(
            f"| {r['image']} | {'x'.join(map(str, r['shape']))} | {r['input_psnr']:.2f} | {b['psnr']:.2f} "
            f"| {b['steps']} | {b['s_per_step']:.4f} | {b['wall_s']:.1f} | {b['peak_memory_mb']:.0f} |"
        )
    if rows:
        bs = [r["default"] for r in rows]
        lines.append(
            f"| **mean** | | {np.mean([r['input_psnr'] for r in rows]):.2f} | {np.mean([b['psnr'] for b in bs]):.2f} "
            f"| {np.mean([b['steps'] for b in bs]):.0f} | {np.mean([b['s_per_step'] for b in bs]):.4f} "
            f"| {np.mean([b['wall_s'] for b in bs]):.1f} | {np.mean([b['peak_memory_mb'] for b in bs]):.0f} |"
        )
    return "\n".join(lines)


def summary_table(rows):
    head = (
        "| image | paper peak dB | @step | paper s/step | paper time-to-peak s | paper peak MB "
        "| default dB | Δ dB | default steps | default s/step | default wall s | default peak MB "
        "| time ratio |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        a, b = r["paper"], r["default"]
        lines.append(
            f"| {r['image']} | {a['peak_psnr']:.2f} | {a['peak_iteration']} | {a['s_per_step']:.3f} "
            f"| {a['time_to_peak_s']:.1f} | {a['peak_memory_mb']:.0f} | {b['psnr']:.2f} "
            f"| {r['psnr_gap']:+.2f} | {b['steps']} | {b['s_per_step']:.3f} | {b['wall_s']:.1f} "
            f"| {b['peak_memory_mb']:.0f} | {r['time_ratio']:.3f} |"
        )
    if rows:

        def m(f):
            return float(np.mean([f(r) for r in rows]))

        t_a = sum(r["paper"]["time_to_peak_s"] for r in rows)
        t_b = sum(r["default"]["wall_s"] for r in rows)
        lines.append(
            f"| **mean** | {m(lambda r: r['paper']['peak_psnr']):.2f} "
            f"| {m(lambda r: r['paper']['peak_iteration']):.0f} "
            f"| {m(lambda r: r['paper']['s_per_step']):.3f} | {t_a / len(rows):.1f} "
            f"| {m(lambda r: r['paper']['peak_memory_mb']):.0f} | {m(lambda r: r['default']['psnr']):.2f} "
            f"| {m(lambda r: r['psnr_gap']):+.2f} | {m(lambda r: r['default']['steps']):.0f} "
            f"| {m(lambda r: r['default']['s_per_step']):.3f} | {t_b / len(rows):.1f} "
            f"| {m(lambda r: r['default']['peak_memory_mb']):.0f} | {t_b / t_a:.3f} (total) |"
        )
    return "\n".join(lines)


def scaling(sizes, steps, device, log, amp=None, cuda_graph=True):
    """Default pipeline: s/step and peak memory vs size (synthetic smooth RGB image + noise)."""
    from napari_deep_prior.restore.api import prepare_denoise
    from napari_deep_prior.restore.planning import estimate_fit_bytes
    from napari_deep_prior.restore.presets import get_preset

    params = get_preset("denoise").replace(cuda_graph=cuda_graph)
    if amp:
        params = params.replace(amp=amp)

    rows = []
    for s in sizes:
        yy, xx = np.mgrid[0:s, 0:s] / s
        img = np.stack([np.sin(6 * xx + 3 * yy), np.cos(5 * yy), xx * yy], -1) * 0.4 + 0.5
        noisy = np.clip(img + np.random.default_rng(0).normal(0, SIGMA, img.shape), 0, 1).astype(np.float32)
        with PeakMemory(device) as mem:
            job = prepare_denoise(
                noisy,
                params=params,
                channel_axis=-1,
                iterations=steps,
                early_stop=False,
                device=device,
                seed=0,
                tile_size=0,
            )
            times = []
            t_prev = time.perf_counter()
            for st in job.steps():
                _sync(device)
                now = time.perf_counter()
                times.append((st.iteration, now - t_prev))
                t_prev = now
        # the first yield includes start-up; per-step time from the later yields
        per = [dt / (it - prev) for (prev, _), (it, dt) in itertools.pairwise(times)]
        per = per or [times[0][1] / times[0][0]]
        est = estimate_fit_bytes(job.params, s, s, 3)
        rec = {
            "size": s,
            "s_per_step": float(np.median(per)),
            "peak_memory_mb": mem.peak / 2**20,
            "estimate_mb": est / 2**20,
            "steps": steps,
        }
        rows.append(rec)
        log(rec)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="folder with set9/ and dip/ (../shared/data)")
    ap.add_argument("--size", type=int, default=128, help="centred crop size (default 128)")
    ap.add_argument("--full", action="store_true", help="full-size images (for a GPU)")
    ap.add_argument("--cases", default="denoise", help="comma list of denoise, inpaint")
    ap.add_argument("--images", default="", help="comma-separated image names to keep")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default=None, help="preset for (b) (default: the task's default)")
    ap.add_argument("--eval-every", type=int, default=10, help="PSNR of (a) every N steps")
    ap.add_argument(
        "--paper-guard",
        type=int,
        default=0,
        help="end (a) once it stayed >= 1 dB below its best for N steps (0: never)",
    )
    ap.add_argument("--paper-iterations", type=int, default=0, help="override (a)'s iterations")
    ap.add_argument(
        "--paper-max-seconds",
        type=float,
        default=0.0,
        help="end (a) after this much training time (marked truncated; 0: no limit)",
    )
    ap.add_argument(
        "--max-iterations",
        type=int,
        default=0,
        help="cap (b)'s iterations (smoke runs of the script only; 0: the preset's)",
    )
    ap.add_argument(
        "--amp", choices=("off", "bf16", "auto"), default=None, help="mixed precision for (b) (default: the preset's)"
    )
    ap.add_argument(
        "--tile-size",
        type=int,
        default=None,
        help="tile side for (b) (0: each plane whole; default: automatic, which tiles large planes on a CPU only)",
    )
    ap.add_argument("--log-every", type=int, default=200)
    ap.add_argument("--paper-only", action="store_true", help="run (a) only")
    ap.add_argument(
        "--default-only",
        action="store_true",
        help="run (b) only (on a GPU after a few warm-up steps, so that CUDA's start-up is not in image 1's time)",
    )
    ap.add_argument(
        "--reuse-paper",
        default="",
        help="take (a) from this earlier JSON (same size, machine and threads) instead of running it again",
    )
    ap.add_argument("--scaling", default="", help="comma list of sizes for the s/step-vs-size table")
    ap.add_argument("--scaling-steps", type=int, default=6)
    ap.add_argument(
        "--no-cuda-graph",
        action="store_true",
        help="the default pipeline without its CUDA graph (DIPParams.cuda_graph=False): to compare",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.paper_only and args.default_only:
        ap.error("--paper-only and --default-only exclude each other")

    import torch

    from napari_deep_prior.device import resolve_device, tune_cpu_allocator

    device = resolve_device(args.device)
    if device.type == "cpu":
        tune_cpu_allocator()  # process-wide: both (a) and (b) get it
    size = 0 if args.full else args.size
    keep = [s for s in args.images.split(",") if s]
    tag = "scaling" if args.scaling else f"{'full' if args.full else size}-{device.type}"
    out_path = args.out or Path(__file__).parent / "results" / f"speed-{tag}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "size": size,
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "paper_guard": args.paper_guard,
        "eval_every": args.eval_every,
        "paper_reused_from": args.reuse_paper or None,
        "amp": args.amp,
        "default_only": args.default_only,
        "tile_size": args.tile_size,
        "cuda_graph": not args.no_cuda_graph,
    }

    def log(rec):
        short = {
            k: (round(v, 3) if isinstance(v, float) else v) for k, v in rec.items() if k not in ("paper", "default")
        }
        for k in ("paper", "default"):
            if k in rec:
                short[k] = {
                    kk: (round(v, 3) if isinstance(v, float) else v) for kk, v in rec[k].items() if kk != "curve"
                }
        print(json.dumps(short), flush=True)

    def save():
        out_path.write_text(json.dumps(result, indent=1))

    if args.scaling:
        sizes = [int(s) for s in args.scaling.split(",")]
        result["scaling"] = scaling(
            sizes, args.scaling_steps, device, log, amp=args.amp, cuda_graph=not args.no_cuda_graph
        )
        save()
        print("\n| size | s/step | peak MB | estimate MB |\n|---|---|---|---|")
        for r in result["scaling"]:
            print(f"| {r['size']} | {r['s_per_step']:.3f} | {r['peak_memory_mb']:.0f} | {r['estimate_mb']:.0f} |")
        print(f"\nwrote {out_path}")
        return
    if args.data is None:
        ap.error("--data is required (the folder with set9/ and dip/)")
    if args.default_only and device.type == "cuda":  # CUDA context, cuDNN and allocator start-up, once
        from napari_deep_prior import denoise

        denoise(np.zeros((64, 64), np.float32) + 0.5, iterations=5, device=device)
        _sync(device)
    for case in args.cases.split(","):
        if case == "denoise":
            inputs = denoise_inputs(args.data, size, keep)
        elif case == "inpaint":
            inputs = inpaint_inputs(args.data, size, keep)
        else:
            ap.error(f"unknown case {case!r}; use denoise and/or inpaint")

        def partial(rows, case=case):
            result[case] = rows
            save()

        result[case] = bench_case(case, inputs, args, device, log, partial)
        save()
        if args.paper_only:
            continue
        print(f"\n### {case} (size {'full' if args.full else size}, {device}, {torch.get_num_threads()} threads)\n")
        print(default_table(result[case]) if args.default_only else summary_table(result[case]))
    print(f"\nwrote {out_path}")


if __name__ == "__main__":
    main()
