"""Contention: what a second busy process on the same cores costs a DIP fit, per thread policy.

One fit = the default denoising network on a 128x128 RGB image, a fixed number of steps (no
early stop).  For each policy the fit runs alone, then alongside a competitor (the same fit in
a second process, started first, kept busy for the whole measurement).  Each run is a fresh
process: the thread policy must be set before torch starts its OpenMP runtime.

Policies:

* ``default``: what torch does unconfigured (one intra-op thread per core, OpenMP's default
  wait policy: threads spin at every barrier);
* ``passive``: the same threads, ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at barriers);
* ``one``: one intra-op thread;
* ``package``: the shipped policy (``import napari_deep_prior`` sets ``OMP_WAIT_POLICY=PASSIVE``
  before torch starts; fits of at most ``device.SMALL_FIT_PIXELS`` pixels run on one thread).

The other rows set ``NAPARI_DEEP_PRIOR_NO_THREAD_POLICY=1`` so that they measure only what they name.

    python benchmarks/contention.py [--size 128] [--steps 40] [--policies default,passive,one,package]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

_FIT = r"""
import json, os, sys, time
policy, size, steps, forever = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
if policy == "package":
    import napari_deep_prior  # noqa: F401  (configures the thread policy before torch starts)
import numpy as np
import torch
if policy != "package":
    assert "OMP_WAIT_POLICY" not in os.environ or policy == "passive", "the package's policy leaked in"
if policy == "one":
    torch.set_num_threads(1)
from napari_deep_prior.restore.api import prepare_denoise
rng = np.random.default_rng(0)
img = (rng.random((size, size, 3)) * 255).astype(np.uint8)
def run(n):
    job = prepare_denoise(img, channel_axis=-1, iterations=n, early_stop=False, history_every=0, seed=0)
    t = time.perf_counter()
    for _ in job.steps():
        pass
    return time.perf_counter() - t
run(10)  # warm-up
if forever:
    print("READY", flush=True)
    while True:
        run(steps)
dt = run(steps)
print(json.dumps({"policy": policy, "threads": torch.get_num_threads(),
                  "wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"), "s_per_step": dt / steps}))
"""


def _env(policy: str) -> dict:
    drop = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NAPARI_DEEP_PRIOR_NO_THREAD_POLICY")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if policy != "package":  # the shipped policy off: the row measures only what it names
        env["NAPARI_DEEP_PRIOR_NO_THREAD_POLICY"] = "1"
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def measure(policy: str, size: int, steps: int, competitor: bool) -> dict:
    comp = None
    if competitor:
        comp = subprocess.Popen(
            [sys.executable, "-c", _FIT, policy, str(size), str(steps), "1"],
            stdout=subprocess.PIPE,
            text=True,
            env=_env(policy),
        )
        assert comp.stdout.readline().strip() == "READY"
    try:
        out = subprocess.run(
            [sys.executable, "-c", _FIT, policy, str(size), str(steps), "0"],
            capture_output=True,
            text=True,
            env=_env(policy),
            check=True,
            timeout=3600,
        ).stdout
    finally:
        if comp is not None:
            comp.kill()
            comp.wait()
    row = json.loads(out.strip().splitlines()[-1])
    row["competitor"] = competitor
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--policies", default="default,passive,one,package")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}; {args.size}x{args.size} RGB, default denoise net, {args.steps} steps\n")
    print("| policy | threads | OMP_WAIT_POLICY | s/step alone | s/step with a competitor | slow-down |")
    print("|---|---|---|---|---|---|")
    rows = []
    for policy in args.policies.split(","):
        t0 = time.perf_counter()
        alone = measure(policy, args.size, args.steps, False)
        busy = measure(policy, args.size, args.steps, True)
        rows += [alone, busy]
        print(
            f"| {policy} | {alone['threads']} | {alone['wait_policy']} | {alone['s_per_step']:.3f} | "
            f"{busy['s_per_step']:.3f} | {busy['s_per_step'] / alone['s_per_step']:.1f}x |"
            f"  <!-- {time.perf_counter() - t0:.0f} s -->",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
