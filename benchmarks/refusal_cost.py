"""What refusing an impossible input costs: peak RSS and wall time of the CLI, against its baseline.

The input is a TIFF whose header claims 100000 x 100000 uint8 pixels (10 GB decoded) with no pixel
data.  The baseline is the same command on a missing file (the CLI starts, parses, and stops).
Each command runs in a fresh subprocess; peak RSS is the child's ``ru_maxrss``.

    python benchmarks/refusal_cost.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile


def run(argv: list[str]) -> tuple[float, float, int, str]:
    """(peak RSS in MB, wall seconds, exit code, stderr) of one fresh CLI process."""
    code = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "dt = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(rss, dt, p.returncode, p.stderr.strip().replace(chr(10), ' '), sep='\\t')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, sys.executable, "-m", "napari_deep_prior.cli", *argv],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    rss, dt, rc, err = out.split("\t", 3)
    return float(rss), float(dt), int(rc), err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp())
    huge = d / "huge.tif"
    tifffile.imwrite(huge, shape=(100_000, 100_000), dtype=np.uint8)
    with open(huge, "r+b") as fh:
        fh.truncate(512)
    print(f"huge.tif: {huge.stat().st_size} bytes on disk, header claims 100000x100000 uint8")
    rows = {"baseline (missing file)": [d / "missing.tif"], "100000^2 header-only TIFF": [huge]}
    results = {}
    for name, (path,) in rows.items():
        rs = [run(["denoise", str(path), "-o", str(d / "out.tif")]) for _ in range(args.repeat)]
        results[name] = rs
        rss = [r[0] for r in rs]
        dts = [r[1] for r in rs]
        print(
            f"{name}: peak RSS {min(rss):.0f}-{max(rss):.0f} MB, wall {min(dts):.2f}-{max(dts):.2f} s, "
            f"exit {rs[0][2]}: {rs[0][3]}"
        )
    base = min(r[0] for r in results["baseline (missing file)"])
    hug = max(r[0] for r in results["100000^2 header-only TIFF"])
    print(f"over the baseline: {hug - base:+.1f} MB peak RSS")
    # the refusal itself, in process (header read + check), without the CLI's start-up
    from napari_deep_prior.errors import ImageTooLargeError
    from napari_deep_prior.io import read_image

    t = time.perf_counter()
    try:
        read_image(huge, available_bytes=64 * 10**9)
    except ImageTooLargeError:
        pass
    print(
        f"read_header + refusal in process: {1e3 * (time.perf_counter() - t):.1f} ms, "
        f"process peak RSS now {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()
