"""Throughput of a stack's planes in this process (one fit at a time, or in lanes) and on dask.

Usage::

    python benchmarks/dip_batch.py --out results/batch-128.json

A stack of ``--planes`` (default 8) grey planes of ``--size`` px (default 128): crops of
scikit-image's bundled images with Gaussian noise of sigma 25 (seed 0), denoised with the
default preset (``--iterations`` steps each, default 200, the early stop off so that every
plane costs the same and the runs are comparable; ``--early-stop`` keeps the preset's stops).
Six ways, in this order, each timed from submission to the assembled output:

- ``in-process, one at a time``: ``denoise(stack)`` here with ``NAPARI_DEEP_PRIOR_LANES=1``
  (a 128 px fit runs on one thread: the thread policy);
- ``in-process, lanes``: ``denoise(stack)`` here as shipped: as many fits at once as torch has
  threads (``restore/lanes.py``);
- ``plane by plane, one at a time`` and ``plane by plane, lanes``: the stack read and written
  one plane at a time (``restore.stream.StackJob``: how the widget runs a dask / zarr layer and
  the command line an OME-Zarr), with lanes off and as shipped;
- ``1 worker``: ``denoise(stack, client=...)`` on a LocalCluster of one worker process with
  all the cores (its fits one at a time);
- ``N workers``: a LocalCluster of ``--workers`` (default 2) processes of cores / N threads.

Cluster start-up is not timed; every way first runs a small warm-up fit (torch's one-time
costs).  The ways run in turn ``--repeats`` times (default 2); the fastest run of each counts.
Printed: wall time, planes per minute, speed-up against one at a time, the overhead of
the distributed path on one worker, and whether the outputs are identical (they must be: the
same seed and the same single-threaded fits).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

SIGMA = 25 / 255


def make_stack(n: int, size: int) -> np.ndarray:
    """``n`` noisy grey ``size`` px crops of scikit-image's bundled images (float32 in [0, 1])."""
    from skimage import color, data
    from skimage.util import img_as_float

    sources = [data.camera(), data.astronaut(), data.coffee(), data.chelsea(), data.moon(), data.text()]
    planes = []
    k = 0
    while len(planes) < n:
        img = img_as_float(sources[k % len(sources)])
        if img.ndim == 3:
            img = color.rgb2gray(img)
        h, w = img.shape
        off = (k // len(sources)) * size // 2  # the next crop along when the sources repeat
        y0 = min(max(0, (h - size) // 2 + off), h - size)
        x0 = min(max(0, (w - size) // 2 + off), w - size)
        planes.append(img[y0 : y0 + size, x0 : x0 + size])
        k += 1
    clean = np.stack(planes)
    rng = np.random.default_rng(0)
    return np.clip(clean + rng.normal(0.0, SIGMA, clean.shape), 0, 1).astype(np.float32)


def warm_up() -> None:
    """torch's one-time costs (import, first kernels) before the clock starts."""
    from napari_deep_prior import denoise

    denoise(np.random.default_rng(0).random((64, 64)), iterations=5, seed=0, device="cpu")


def plane_by_plane(stack: np.ndarray, kw: dict) -> np.ndarray:
    """The stack through :class:`~napari_deep_prior.restore.stream.StackJob` (read and written
    one plane at a time)."""
    from napari_deep_prior.arrays import drive
    from napari_deep_prior.restore.degradations import Identity
    from napari_deep_prior.restore.stream import StackJob

    return np.asarray(drive(StackJob(Identity, stack, **kw).steps()).image)


def timed(
    stack: np.ndarray, kw: dict, client=None, lanes: int | None = None, stream: bool = False
) -> tuple[float, np.ndarray]:
    from napari_deep_prior import denoise
    from napari_deep_prior.restore.lanes import LANES_ENV

    warm_up()
    if client is not None:
        client.run(warm_up)  # on every worker
    before = os.environ.pop(LANES_ENV, None)
    if lanes is not None:
        os.environ[LANES_ENV] = str(lanes)
    try:
        t0 = time.perf_counter()
        out = plane_by_plane(stack, kw) if stream else denoise(stack, client=client, **kw)
        return time.perf_counter() - t0, out
    finally:
        os.environ.pop(LANES_ENV, None)
        if before is not None:
            os.environ[LANES_ENV] = before


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--planes", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--early-stop", action="store_true", help="keep the preset's early stop")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each way, in turn; the fastest counts")
    ap.add_argument("--no-cluster", action="store_true", help="only the ways in this process")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    from napari_deep_prior.restore.distributed import start_client

    stack = make_stack(args.planes, args.size)
    kw = dict(
        iterations=args.iterations, early_stop=None if args.early_stop else False, seed=0, device="cpu", history_every=0
    )
    cores = os.cpu_count() or 1
    local = [
        ("in-process, one at a time", 1, False),
        ("in-process, lanes", None, False),
        ("plane by plane, one at a time", 1, True),
        ("plane by plane, lanes", None, True),
    ]
    clusters = [] if args.no_cluster else [1, args.workers]
    ways = [w for w, _lanes, _stream in local] + [
        f"{n} worker{'s' if n > 1 else ''} ({max(1, cores // n)} threads each)" for n in clusters
    ]
    times: dict[str, list[float]] = {w: [] for w in ways}
    identical = {w: True for w in ways}
    ref = None
    for rep in range(args.repeats):  # the ways in turn, so that a slow spell of the machine hits all
        for way, lanes, stream in local:
            t, out = timed(stack, kw, lanes=lanes, stream=stream)
            ref = out if ref is None else ref
            times[way].append(t)
            identical[way] &= bool(np.array_equal(out, ref))
            print(f"[{rep + 1}] {way}: {t:.1f} s", flush=True)
        for way, n in zip(ways[len(local) :], clusters, strict=True):
            client = start_client(workers=n)
            try:
                t, out = timed(stack, kw, client)
            finally:
                client.close()
                client.cluster.close()
            times[way].append(t)
            identical[way] &= bool(np.array_equal(out, ref))
            print(f"[{rep + 1}] {way}: {t:.1f} s", flush=True)
    # the fastest of the repeats: the least disturbed by the rest of the machine
    rows = [{"way": w, "wall_s": min(times[w]), "runs_s": times[w], "identical": identical[w]} for w in ways]
    base = rows[0]["wall_s"]
    print(
        f"\n{args.planes} planes of {args.size} px, {args.iterations} steps each, {cores} cores, "
        f"fastest of {args.repeats} runs\n"
    )
    print("| way | wall s | planes/min | speed-up vs one at a time | identical output |")
    print("|---|---|---|---|---|")
    for r in rows:
        r["planes_per_min"] = 60 * args.planes / r["wall_s"]
        r["speedup"] = base / r["wall_s"]
        print(
            f"| {r['way']} | {r['wall_s']:.1f} | {r['planes_per_min']:.2f} | {r['speedup']:.2f} | "
            f"{'yes' if r['identical'] else 'NO'} |"
        )
    overhead = rows[len(local)]["wall_s"] / base - 1 if clusters else None
    if clusters:
        print(f"\noverhead of the distributed path on 1 worker: {100 * overhead:+.1f} %")
    if args.out:
        record = {
            "args": vars(args) | {"out": str(args.out)},
            "machine": platform.platform(),
            "cores": cores,
            "rows": rows,
            "overhead_1_worker": overhead,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2))
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
