"""Command line: ``napari-deep-prior denoise|inpaint|...|colorize|info|demo ...`` for batch and headless use.

One subcommand per registered degradation (:data:`~.restore.degradations.DEGRADATIONS`: its
fields become options) and one for colorization (its methods from the colorizer registry).
Every output keeps the input's axes and pixel sizes where its format can hold them and records
how it was made (:mod:`~.provenance`); ``info FILE`` shows both.

The restoration subcommands and ``colorize`` take one input and ``-o FILE``, or any number of
inputs (files, folders of images, quoted glob patterns such as ``'raw/*.tif'`` or
``'raw/**/*.tif'``, expanded here) and ``--out-dir DIR``, each result named by ``--name``
(default ``{stem}{suffix}``: the input's name).  ``-o`` replaces an existing file (all at once);
``--out-dir`` refuses existing results unless ``--skip-existing`` (keep them: a re-run resumes
an interrupted batch, redoing only a result that Ctrl-C cut short) or ``--overwrite``.  In the
batch form a file that fails (unreadable, wrong shape, out of memory, an error in the fit) is
reported as ``failed: FILE: MESSAGE`` and the batch goes on; a summary ends it.

Every check happens before the work: outputs that would overwrite an input, two inputs whose
results would share a file, folders that cannot be written, formats that cannot hold the result
(in the batch form, from the inputs' headers), images too large for the memory (from their
headers, before decoding).  Files are written all at once (a temporary file renamed into
place), so an interrupted or failed run never changes an existing file nor leaves a half file.

Each file goes through three steps: :func:`_plan_restore` / :func:`_plan_colorize` (read,
check, ``prepare``: a :class:`PlannedFile`), :meth:`PlannedFile.run` (the fit) and
:meth:`PlannedFile.finish` (write, report).  :func:`run_files` drives them over the files of a
run, lazily, with a runner: :func:`run_in_process`, or with ``--workers N`` / ``--scheduler
ADDRESS`` :func:`run_on_cluster` (a dask cluster runs the fits of a few files at once: every
plane and tile a task; each file assembled and written here, the same as in process).  An
OME-Zarr restored into an OME-Zarr runs plane by plane (:class:`PlannedStream`): memory holds
one plane whatever the stack's size.

Exit codes: 0 success (every file done or skipped), 1 some files of a batch failed, 2 bad
input or arguments (one-line message naming the option; in the batch form, found before any
work), 130 interrupted by Ctrl-C (the first Ctrl-C during a fit writes the estimate so far and
stops a batch; a second one exits at once), 143 terminated (SIGTERM: exits at once, writes
nothing more).
"""

from __future__ import annotations

import abc
import argparse
import glob
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import drive, format_duration, guess_channel_axis

PROG = "napari-deep-prior"


class UsageError(ValueError):
    """A command-line argument that cannot be used as given."""


class Terminated(BaseException):
    """SIGTERM, or a second Ctrl-C: stop at once, write nothing (temporary files are removed)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminate(signum, _frame):
    raise Terminated(signum)


#: The command line's name of each API parameter, for re-worded messages (errors.ParameterError).
FLAGS = {
    "channel_axis": "--channel-axis",
    "tile_size": "--tile",
    "tile_overlap": "--tile-overlap",
    "history_every": "--history-every",
    "iterations": "--iterations",
    "lr": "--lr",
    "ensemble": "--ensemble",
    "seed": "--seed",
    "output_dtype": "--dtype",
    "dtype": "--dtype",
    "mask": "--mask",
    "factor": "--factor",
    "camera_offset": "--offset",
    "gain": "--gain",
    "read_noise": "--read-noise",
    "loss": "--loss",
    "preset": "--preset",
    "device": "--device",
    "early_stop": "--no-early-stop",
    "warm_start": "--warm-start",
    "hints": "--hints",
    "hint_size": "--hint-size",
    "weights": "--weights",
    "method": "--method",
    "sigma": "--sigma",
    "size": "--size",
    "noise_sigma": "--noise-sigma",
}


# -- progress --------------------------------------------------------------------------


class ProgressBar:
    """A one-line progress bar with ETA on stderr (plain lines every 10 % when not a terminal)."""

    def __init__(self, stream=None, width: int = 28):
        self.stream = stream or sys.stderr
        self.width = width
        self.t0 = time.perf_counter()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_decile = -1

    def __call__(self, step) -> None:
        if not hasattr(step, "iteration"):  # a StackJob's scan of the value range: no fit yet
            return
        frac = min(max(step.fraction, 0.0), 1.0)
        elapsed = time.perf_counter() - self.t0
        eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        n_tiles = getattr(step, "n_tiles", 1)
        plane = f" plane {step.plane + 1}/{step.n_planes}" if step.n_planes > 1 or n_tiles > 1 else ""
        if n_tiles > 1:
            plane += f" {getattr(step, 'tile_kind', 'tile')} {step.tile + 1}/{n_tiles}"
        stop = f" stop@{step.es_best_iteration}" if step.es_best_iteration else ""
        text = (
            f"it {step.iteration}/{step.iterations}{plane} loss {step.loss:.3g}{stop} "
            f"{format_duration(elapsed)} elapsed, ETA {format_duration(eta)} (at most)"
        )
        self._show(frac, text)

    def _show(self, frac: float, text: str, bar: bool = True) -> None:
        """Redraw the line on a terminal (with a bar of ``frac``), else a plain line every 10 %."""
        if self.tty:
            filled = int(self.width * frac)
            drawn = f"[{'#' * filled}{'.' * (self.width - filled)}] " if bar else ""
            self.stream.write(f"\r{drawn}{text}\033[K")
            self.stream.flush()
        else:
            decile = int(frac * 10)
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(text + "\n")
                self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# -- helpers ---------------------------------------------------------------------------


def _channel_axis(shape: tuple[int, ...], arg: str) -> int | None:
    if arg == "auto":
        return guess_channel_axis(tuple(shape))
    if arg == "none":
        return None
    try:
        return int(arg)
    except ValueError:
        raise UsageError(f"--channel-axis must be 'auto', 'none' or an integer, got {arg!r}") from None


def _data_range(ref: np.ndarray) -> float:
    if ref.dtype.kind in "ui":
        return float(np.iinfo(ref.dtype).max)
    rng = float(ref.max() - ref.min())
    return rng if rng > 0 else 1.0


def _quality(ref: np.ndarray, img: np.ndarray, channel_axis: int | None) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if ref.shape != img.shape:
        raise UsageError(f"--reference has shape {ref.shape} but the image has shape {img.shape}")
    dr = _data_range(ref)
    a, b = ref.astype(np.float64), img.astype(np.float64)
    psnr = peak_signal_noise_ratio(a, b, data_range=dr)
    min_side = min(ref.shape[:2]) if channel_axis is not None else min(ref.shape[-2:])
    win = min(7, min_side if min_side % 2 else min_side - 1)
    ssim = structural_similarity(a, b, data_range=dr, channel_axis=channel_axis, win_size=win)
    return float(psnr), float(ssim)


def _io_args(p: argparse.ArgumentParser, task: str, what: str = "images") -> None:
    """The inputs and outputs of a restoration or colorization subcommand (one file, or a batch)."""
    p.add_argument(
        "input",
        nargs="+",
        help=f"{what}: files (.png, .jpg, .tif, .ome.tif), OME-Zarr folders (.zarr), folders (their "
        "image files, hidden files left out) or quoted patterns ('raw/*.tif', 'raw/**/*.tif'); "
        "an image reached twice is processed once",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="the result of one input (.png, .jpg, .tif, .ome.tif, .zarr); an existing FILE is "
        "replaced, all at once when the result is complete (--skip-existing keeps it)",
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        metavar="DIR",
        help="folder for the results of any number of inputs, created (with its parents) if missing; "
        "each result is named by --name. Existing results are refused unless --skip-existing or "
        "--overwrite; a file that fails is reported and the others go on",
    )
    p.add_argument(
        "--name",
        metavar="PATTERN",
        help=f"with --out-dir: each result's file name (its suffix picks the format), from {{stem}} and "
        f"{{suffix}} of the input (a.ome.tif: a, .ome.tif), {{task}} ({task}), {{parent}} (the name of "
        f"the input's folder); default '{DEFAULT_NAME}', the input's own name (e.g. '{{stem}}_{task}.tif')",
    )
    exist = p.add_mutually_exclusive_group()
    exist.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave an input alone when its results exist (a re-run resumes a batch); a result that "
        "Ctrl-C cut short (its provenance says so) is redone",
    )
    exist.add_argument(
        "--overwrite", action="store_true", help="replace existing results (--out-dir refuses them otherwise)"
    )


def _common_args(p: argparse.ArgumentParser, deg) -> None:
    from .restore.presets import PRESETS

    _io_args(p, deg.name)
    default = deg.presets[0]
    p.add_argument(
        "--preset",
        default=default,
        choices=("paper",) + tuple(PRESETS),
        help=f"parameter preset (default {default!r}; 'paper' = the paper's recipe for this task; "
        f"offered for {deg.name}: {', '.join(deg.presets)})",
    )
    p.add_argument("--iterations", type=int, help="maximum iterations (default: the preset's)")
    p.add_argument("--lr", type=float, help="learning rate (default: the preset's)")
    p.add_argument(
        "--ensemble",
        type=int,
        metavar="K",
        help="average K independently seeded fits (1-16, default 1), run as one batched network: "
        "about K times the memory, and on a CPU K times the time or more",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--no-early-stop", action="store_true", help="run all iterations")
    p.add_argument(
        "--history",
        metavar="TIF",
        help="write the iteration-history stack to this .tif; several inputs need a pattern, "
        "e.g. 'history/{stem}.tif' (placeholders as --name; its folder must exist)",
    )
    p.add_argument(
        "--history-every",
        type=int,
        metavar="N",
        help="history cadence: at most N iterations between frames (default: the preset's); "
        "0 = no history. A run keeps at least 10 frames: 40 iterations give one every 4",
    )
    p.add_argument(
        "--reference",
        metavar="FILE",
        help="ground-truth image: print PSNR/SSIM before and after; several inputs need a pattern, "
        "e.g. 'truth/{stem}{suffix}' (placeholders as --name)",
    )
    p.add_argument(
        "--channel-axis",
        default="auto",
        help="'auto' (last axis of size 3 or 4 is colour), 'none' (grey or grey stack), or an axis",
    )
    p.add_argument(
        "--warm-start",
        action="store_true",
        help="stacks and tiles: start each plane (tile) from the previous one's weights",
    )
    p.add_argument(
        "--tile",
        type=int,
        metavar="N",
        help="process in overlapping N x N tiles blended without seams (0 = never; default: "
        "automatically, when the image does not fit in memory or, on a CPU, when the preset's "
        "network restores it better in tiles: denoise, and inpaint with thin or scattered holes "
        "spread over the plane, planes from 256 x 256 px)",
    )
    p.add_argument(
        "--tile-overlap",
        type=int,
        metavar="N",
        help="minimum overlap of neighbouring tiles in pixels (default max(16, N/8))",
    )
    p.add_argument(
        "--dtype",
        default="auto",
        help="result dtype: 'auto' (default: the input's, but float32 photon rates for "
        "integer counts with --loss poisson), 'input' (always the input's, rounded), "
        "or a numpy dtype name such as float32 or uint16",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    cluster = p.add_mutually_exclusive_group()
    cluster.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run the fits (every plane of a stack, tile of a plane, file of a batch) on a dask "
        "LocalCluster of N worker processes sharing this machine's cores; the same results as "
        'without it (needs dask.distributed: pip install "dask[distributed]>=2024.8")',
    )
    cluster.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the fits on a running dask cluster: its scheduler's address (tcp://host:8786) or "
        "scheduler file (.json), e.g. one started by dask-jobqueue on SLURM",
    )


def _task_parser(sub, deg) -> None:
    """The subcommand of one registered degradation: common options + its fields + its noise models."""
    p = sub.add_parser(deg.name, help=deg.summary)
    _common_args(p, deg)
    for f in deg.fields:
        if f.kind == "mask":
            p.add_argument(
                f.flag,
                required=True,
                metavar="FILE",
                help=f"{f.label} image file: {f.help}. One file for every input, or a pattern naming "
                f"each input's own, e.g. 'masks/{{stem}}_{f.name}.png' (placeholders as --name)",
            )
            p.add_argument(
                f"--invert-{f.name.replace('_', '-')}",
                action="store_true",
                help=f"the {f.label} marks known pixels instead (e.g. 255 = known, 0 = hole)",
            )
        elif f.kind == "choice":
            p.add_argument(
                f.flag,
                type=type(f.default),
                choices=f.choices,
                default=f.default,
                help=f"{f.help} (default {f.default})",
            )
        else:
            raise TypeError(f"field kind {f.kind!r} of {deg.name} has no command-line form")
    if len(deg.noise_models) > 1:
        p.add_argument(
            "--loss",
            choices=deg.noise_models,
            help=f"noise model: {deg.noise_models[0]} (default), or poisson for photon counts (the "
            "image must be counts, or give --offset, --gain and --read-noise of the camera); "
            "with the default preset poisson selects the 'denoise-poisson' preset",
        )
    if deg.noise_level_stop:
        p.add_argument(
            "--noise-sigma",
            type=float,
            help="the noise level (standard deviation, in the image's units, e.g. 25 for 8-bit values): "
            "the noise-level stop aims at it instead of estimating it from the image",
        )
    if "poisson" in deg.noise_models:
        p.add_argument("--offset", type=float, help="poisson: camera offset (value of zero photons)")
        p.add_argument(
            "--gain", type=float, help="poisson: camera units per photon (photons = (value - offset) / gain)"
        )
        p.add_argument("--read-noise", type=float, help="poisson: Gaussian read noise in photons rms (sCMOS)")
    p.set_defaults(func=_restore, degradation=deg)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Deep Image Prior restoration and colorization, headless.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    from .restore.degradations import DEGRADATIONS

    for deg in DEGRADATIONS.values():
        _task_parser(sub, deg)

    from .colorization.api import REGISTRY, method_names

    c = sub.add_parser("colorize", help="colour a grey image, automatically or from colour hints")
    _io_args(c, "colorize", what="grey (or colour, re-coloured from its lightness) images")
    c.add_argument(
        "--method",
        default="eccv16",
        choices=method_names(),
        help=" ".join(col.description for col in REGISTRY.values())
        + f" Need --hints: {', '.join(method_names(automatic=False))}.",
    )
    c.add_argument(
        "--hints",
        metavar="CSV",
        help="CSV with a header 'row,col,color' (#rrggbb) or 'row,col,r,g,b': one file for every input, "
        "or a pattern naming each input's own, e.g. 'hints/{stem}.csv' (placeholders as --name)",
    )
    c.add_argument("--hint-size", type=int, default=5, help="side of each hint's square patch (odd, default 5)")
    c.add_argument("--weights", type=Path, help="weights file of the network (default: cache, then download)")
    c.add_argument("--seed", type=int, default=0, help="random seed for dip (default 0)")
    c.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    c.add_argument(
        "--channel-axis", default="auto", help="'auto' (last axis of size 3 or 4 is colour), 'none' (grey), or an axis"
    )
    c.set_defaults(func=_colorize)

    info = sub.add_parser(
        "info", help="show an image file's shape, dtype, axes, pixel sizes and how napari-deep-prior made it"
    )
    info.add_argument("input", type=Path, help="image file (.png, .jpg, .tif, .ome.tif) or OME-Zarr folder (.zarr)")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    info.set_defaults(func=_info)

    demo = sub.add_parser("demo", help="denoise a built-in sample and report the PSNR gain")
    demo.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("dip_demo_denoised.png"),
        help="result file (default dip_demo_denoised.png); the noisy input is saved beside it",
    )
    demo.add_argument("--size", type=int, default=128, help="side of the sample crop (default 128)")
    demo.add_argument("--sigma", type=float, default=25.0, help="noise standard deviation in 0..255 units")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="auto")
    demo.add_argument("--iterations", type=int, help="maximum iterations (default: the preset's)")
    demo.add_argument("-q", "--quiet", action="store_true")
    demo.set_defaults(func=_demo)

    return parser


def _run_job(job, quiet: bool):
    """Run a job with a progress bar; return (output, interrupted).

    The first Ctrl-C stops the fit and returns the estimate computed so far (``interrupted``
    True); from then on a second Ctrl-C, like SIGTERM, raises :class:`Terminated`.
    """
    bar = None if quiet else ProgressBar()
    try:
        return drive(job.steps(), bar), False  # the job's output, assembled once
    except KeyboardInterrupt:
        _second_interrupt_terminates()
        if bar is not None:
            bar.close()
            bar = None
        print(f"{PROG}: interrupted: keeping the estimate computed so far", file=sys.stderr)
        return job.result(), True
    finally:
        if bar is not None:
            bar.close()


def _second_interrupt_terminates() -> None:
    try:
        signal.signal(signal.SIGINT, _terminate)
    except ValueError:  # not the main thread: leave the handlers alone
        pass


def _interrupted_note(out) -> str:
    runs = ", ".join(
        f"from iteration {s}, {r} steps run" for s, r in zip(out.stop_iterations, out.iterations_run, strict=True)
    )
    n = len(out.stop_iterations)
    left = n - out.planes_done
    planes = f"; {left} of {n} planes not finished (unfitted planes are the input)" if n > 1 and left else ""
    return f"the estimate when Ctrl-C came ({runs}{planes})"


def _report(out, seconds: float, noise_given: bool = False) -> None:
    stops = ", ".join(f"{s}/{r}" for s, r in zip(out.stop_iterations, out.iterations_run, strict=True))
    print(f"done in {seconds:.1f} s; result from iteration/steps run: {stops}; seed {out.seed}")
    fits = [f for f in out.fits if f is not None]
    reasons = sorted({f.stop_reason for f in fits if f.stop_reason})
    if reasons:
        sigmas = [f.noise_sigma for f in fits if f.noise_sigma is not None]
        how = "given" if noise_given else "estimated"
        noise = f"; {how} noise level {np.mean(sigmas):.4f} of the intensity range" if sigmas else ""
        devs = [(f.deviance, f.expected_deviance) for f in fits if f.expected_deviance is not None]
        if devs:
            noise += (
                f"; deviance from the counts {np.mean([d[0] for d in devs]):.3f} per pixel "
                f"(Poisson noise leaves {np.mean([d[1] for d in devs]):.3f})"
            )
        print(f"early stop: {', '.join(reasons)}{noise}")


def _safe_provenance(build, *args, **kwargs) -> dict | None:
    """The provenance record, or None with a warning: a result is never lost for want of its record."""
    try:
        return build(*args, **kwargs)
    except (AttributeError, TypeError, ValueError) as exc:
        print(f"{PROG}: warning: the result's provenance could not be recorded ({exc})", file=sys.stderr)
        return None


def _available_bytes() -> int | None:
    from .device import available_memory, resolve_device

    return available_memory(resolve_device("cpu"))


def _read(path: Path) -> np.ndarray:
    """An auxiliary image (mask, reference, colorize input): decoded only if it fits in memory."""
    from .io import read_image

    return read_image(path, available_bytes=_available_bytes())


def _read_for_restore(path: Path, scale: int, device: str) -> np.ndarray:
    """The image to restore: its header is checked against the memory plan before decoding."""
    from .io import check_readable, read_header, read_image
    from .restore.planning import check_image_bytes

    header = read_header(path)
    check_readable(header)  # decompression bombs
    check_image_bytes(header.shape, header.dtype, scale=scale, device=device)
    return read_image(path)


def _check_finite(name: str, value: float | None, minimum: float | None = None) -> None:
    if value is None:
        return
    if not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value}")
    if minimum is not None and value < minimum:
        raise UsageError(f"{name} must be >= {minimum:g}, got {value:g}")


def _read_mask(path: Path, image: np.ndarray, invert: bool) -> np.ndarray:
    mask = _read(path)
    if mask.ndim == 3 and mask.shape[-1] in (3, 4) and mask.shape[:2] == image.shape[:2]:
        mask = mask[..., 0]  # a grey mask saved as RGB(A)
    mask = mask != 0
    return ~mask if invert else mask


# -- the files of a run: inputs, results and per-file options -----------------------------------

#: The default of --name: the input's own file name (the results go to another folder).
DEFAULT_NAME = "{stem}{suffix}"
#: The placeholders of --name and of the per-file patterns (--mask, --history, --reference, --hints).
PLACEHOLDERS = ("stem", "suffix", "task", "parent", "dir")
_DOUBLE_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr")
_GLOB_CHARS = frozenset("*?[")
_SUFFIX_LIST = ".png, .jpg, .jpeg, .tif, .tiff, .zarr"
#: Examples of a per-file pattern, for the options that name one file per input.
_PATTERN_EXAMPLES = {"--history": "history/{stem}.tif", "--reference": "truth/{stem}{suffix}"}


def split_name(path: str | os.PathLike) -> tuple[str, str]:
    """An image file's name as (stem, suffix), the OME double suffixes kept whole.

    Examples
    --------
    >>> split_name("raw/a.ome.tif")
    ('a', '.ome.tif')
    >>> split_name("b.v2.png")
    ('b.v2', '.png')
    """
    name = Path(path).name
    low = name.lower()
    for double in _DOUBLE_SUFFIXES:
        if low.endswith(double) and len(name) > len(double):
            return name[: -len(double)], name[-len(double) :]
    return Path(name).stem, Path(name).suffix


def _placeholder_list() -> str:
    return ", ".join(f"{{{k}}}" for k in PLACEHOLDERS)


def fill_pattern(option: str, pattern: str, path: Path, task: str) -> str:
    """``pattern`` with the placeholders of the input ``path`` filled in.

    ``{stem}`` and ``{suffix}``: :func:`split_name` of the input; ``{task}``: the subcommand;
    ``{parent}``: the name of the input's folder; ``{dir}``: its folder as given.  A literal brace
    is doubled.

    Raises
    ------
    UsageError
        An unknown placeholder or a malformed pattern, naming ``option``.

    Examples
    --------
    >>> fill_pattern("--name", "{stem}_{task}.tif", Path("raw/a.ome.tif"), "denoise")
    'a_denoise.tif'
    """
    stem, suffix = split_name(path)
    values = {
        "stem": stem,
        "suffix": suffix,
        "task": task,
        "parent": Path(os.path.abspath(path)).parent.name,
        "dir": str(path.parent),
    }
    try:
        return pattern.format_map(values)
    except KeyError as exc:
        raise UsageError(
            f"{option} {pattern!r}: unknown placeholder {{{exc.args[0]}}}; the placeholders are {_placeholder_list()}"
        ) from None
    except (ValueError, IndexError, AttributeError) as exc:
        raise UsageError(
            f"{option} {pattern!r} is not a valid pattern ({exc}); the placeholders are {_placeholder_list()}, "
            "and a literal brace is doubled ({{ or }})"
        ) from None


def _is_pattern(value: str) -> bool:
    return "{" in value


def _is_image(path: Path) -> bool:
    """Whether a file found in a folder or by a pattern is an image this program reads, by its name."""
    from .io import IMAGE_SUFFIXES, ZARR_SUFFIX

    if path.name.startswith("."):
        return False
    suffix = path.suffix.lower()
    if suffix == ZARR_SUFFIX:
        return path.is_dir()  # an OME-Zarr image is a folder
    return suffix in IMAGE_SUFFIXES and path.is_file()


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(folder))
    except ValueError:
        return False
    return True


def _glob_base(pattern: str) -> Path:
    """The folder a glob pattern searches: its leading parts without wildcards."""
    parts = Path(pattern).parts
    fixed = list(parts[: next((i for i, p in enumerate(parts) if _GLOB_CHARS & set(p)), len(parts))])
    return Path(*fixed) if fixed else Path(".")


def _file_key(path: Path) -> tuple:
    """The same file however reached (links, ``..``): its inode, else its real path."""
    try:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.normcase(os.path.realpath(path)))


def _some(paths, n: int = 3) -> str:
    paths = [str(p) for p in paths]
    return ", ".join(paths[:n]) + (f" and {len(paths) - n} more" if len(paths) > n else "")


def expand_inputs(specs: Iterable[str], *, one: bool = False, exclude: Path | None = None) -> list[Path]:
    """The image files of the ``input`` arguments, in the order given, each file once.

    Parameters
    ----------
    specs : iterable of str
        Files (taken as given); folders (their image files by suffix, sorted, hidden files left
        out; a ``.zarr`` folder is one OME-Zarr image); glob patterns (``*``, ``?``, ``[...]``;
        ``**`` for any depth), expanded here, sorted, keeping the image files.
    one : bool
        The single-file form (``-o``): a folder is refused.
    exclude : Path, optional
        The results' folder: when it lies below a folder or a pattern's folder, the files in it
        are left out (the results of an earlier run are not inputs).  Results that would
        replace their inputs (``--out-dir`` the inputs' folder) are refused later.

    Raises
    ------
    UsageError
        A folder or a pattern without an image file; a folder with ``one``.
    FileNotFoundError
        A file that does not exist.
    ValueError
        A file of a type that is not read.
    """
    from .io import ZARR_SUFFIX, check_suffix

    files: list[Path] = []
    seen: set[tuple] = set()
    for spec in specs:
        path = Path(spec)
        if path.is_dir() and path.suffix.lower() != ZARR_SUFFIX:
            if one:
                raise UsageError(
                    f"{path} is a folder, not an image file; give one image file with -o, or process the "
                    "images in the folder with --out-dir DIR instead of -o"
                )
            skip = None if exclude is None or _inside(path, exclude) else exclude
            found = sorted(p for p in path.iterdir() if _is_image(p) and not _inside(p, skip))
            if not found:
                raise UsageError(
                    f"the folder {path} holds no image file ({_SUFFIX_LIST}; hidden files are left out); "
                    f"give image files, another folder, or a pattern such as '{path / '**' / '*.tif'}'"
                )
        elif path.exists():
            if not path.is_dir():
                check_suffix(path)
            found = [path]
        elif _GLOB_CHARS & set(spec):
            skip = None if exclude is None or _inside(_glob_base(spec), exclude) else exclude
            found = sorted(
                p for p in map(Path, glob.glob(spec, recursive=True)) if _is_image(p) and not _inside(p, skip)
            )
            if not found:
                raise UsageError(
                    f"the input pattern {spec!r} matches no image file ({_SUFFIX_LIST}; hidden files are left "
                    "out); check the pattern (quote it, so that the program expands it: '**' reaches any depth)"
                )
        else:
            raise FileNotFoundError(f"no such image file: {path}")
        for p in found:
            key = _file_key(p)
            if key not in seen:
                seen.add(key)
                files.append(p)
    return files


@dataclass
class FileTask:
    """One input of a run and where its results go: paths only, made before any work.

    Attributes
    ----------
    input : Path
    output : Path
    history : Path or None
        The iteration-history TIFF (``--history``).
    aux : dict of str to Path
        This input's auxiliary files by option (``--mask``, ``--reference``, ``--hints``).
    index, total : int
        Its place in the run (from 1), for the ``[index/total]`` line of the batch form.
    label : str
        The option that named the result, for messages: ``-o``, or ``--out-dir``.
    skip : bool
        Its results exist and ``--skip-existing`` keeps them.
    note : str or None
        Said before it is processed (e.g. why an existing result is redone).
    """

    input: Path
    output: Path
    history: Path | None = None
    aux: dict[str, Path] = field(default_factory=dict)
    index: int = 1
    total: int = 1
    label: str = "-o"
    skip: bool = False
    note: str | None = None

    @property
    def outputs(self) -> list[Path]:
        """Every file this input's run writes."""
        return [p for p in (self.output, self.history) if p is not None]


def _file_tasks(
    args, task: str, *, shared: dict[str, str | None], per_file: dict[str, str | None]
) -> tuple[list[FileTask], bool]:
    """The :class:`FileTask` of every input of a run, and whether it is the batch form (``--out-dir``).

    ``shared``: auxiliary inputs given as one file for every input, or a pattern (``--mask``,
    ``--hints``); ``per_file``: options that name one file per input, so that several inputs need
    a pattern (``--reference``, and ``--history``, the one output among them).
    """
    if args.output is not None and args.out_dir is not None:
        raise UsageError(
            "give -o FILE (the result of one input) or --out-dir DIR (the results of any number of inputs), not both"
        )
    if args.output is not None and args.name is not None:
        raise UsageError("--name names the results in --out-dir; with -o FILE the result's name is FILE itself")
    batch = args.out_dir is not None
    files = expand_inputs(args.input, one=args.output is not None, exclude=args.out_dir)
    if not batch:
        if args.output is None:
            if len(files) == 1:
                raise UsageError(
                    f"where should the result of {files[0]} go? give -o FILE, "
                    "or --out-dir DIR to name it after its input"
                )
            raise UsageError(
                f"{len(files)} inputs ({_some(files)}) need --out-dir DIR for their results "
                "(-o FILE names the result of one input)"
            )
        if len(files) > 1:
            raise UsageError(
                f"-o names the result of one input, but the inputs are {len(files)} images ({_some(files)}); "
                "give --out-dir DIR instead (each result named by --name, by default as its input)"
            )
    name = DEFAULT_NAME if args.name is None else args.name
    n = len(files)
    for flag, value in per_file.items():
        if value is not None and n > 1 and not _is_pattern(value):
            raise UsageError(
                f"{flag} {value} names one file, but this run has {n} inputs: give a pattern naming each "
                f"input's own, e.g. {flag} '{_PATTERN_EXAMPLES[flag]}'"
            )
    tasks = []
    for i, f in enumerate(files, 1):
        if batch:
            filled = fill_pattern("--name", name, f, task)
            seps = {os.sep} | ({os.altsep} if os.altsep else set())
            if filled in ("", ".", "..") or any(sep in filled for sep in seps):
                raise UsageError(
                    f"--name {name!r} gives {filled!r} for {f}: give a file name (the folder is --out-dir), "
                    "e.g. --name '{stem}_clean{suffix}'"
                )
            output = args.out_dir / filled
        else:
            output = args.output
        paths = {}
        for flag, value in {**shared, **per_file}.items():
            if value is not None:
                paths[flag] = Path(fill_pattern(flag, value, f, task) if _is_pattern(value) else value)
        history = paths.pop("--history", None)
        tasks.append(FileTask(f, output, history, paths, i, n, "--out-dir" if batch else "-o"))
    return tasks, batch


def _exists(path: Path) -> bool:
    """Whether a result is there: a file (an OME-Zarr result: a folder)."""
    from .io import ZARR_SUFFIX

    return path.is_dir() if path.suffix.lower() == ZARR_SUFFIX else path.is_file()


def _cut_short(path: Path) -> bool:
    """Whether an existing result is the estimate of a run that Ctrl-C stopped (its provenance says so)."""
    from .io import read_image_meta

    try:
        provenance = read_image_meta(path).provenance
    except Exception:  # unreadable, or not ours: it is not known to be cut short, so it is kept
        return False
    return bool(provenance and provenance.get("interrupted"))


def _apply_existing(tasks: list[FileTask], args, batch: bool) -> None:
    """Mark the inputs to skip (``--skip-existing``), or refuse existing results in the batch form."""
    existing = [t for t in tasks if any(_exists(p) for p in t.outputs)]
    if args.skip_existing:
        for t in existing:
            if not all(_exists(p) for p in t.outputs):
                missing = ", ".join(str(p) for p in t.outputs if not _exists(p))
                t.note = f"redone: {missing} missing"
            elif _cut_short(t.output):
                t.note = f"redone: {t.output} holds the estimate of a run stopped by Ctrl-C"
            else:
                t.skip = True
        return
    if args.overwrite or not batch or not existing:
        return  # -o FILE replaces an existing FILE, as it always has
    paths = [p for t in existing for p in t.outputs if _exists(p)]
    raise UsageError(
        f"{len(paths)} result file{'s' if len(paths) > 1 else ''} of this run exist{'' if len(paths) > 1 else 's'} "
        f"already ({_some(paths)}): give --skip-existing to keep them and process only the other inputs "
        "(resume), or --overwrite to replace them; nothing was run"
    )


def _check_history_path(path: Path) -> None:
    from .io import check_output_path

    if path.suffix.lower() not in (".tif", ".tiff"):
        raise UsageError(f"--history is written as a multi-page TIFF; give a .tif path, got {path}")
    check_output_path(path, "--history")


def _check_batch_paths(tasks: list[FileTask], inputs: dict[str, Path | None]) -> None:
    """Refuse a result that is an input of the run, or the result of another input, however spelled."""

    def keys(p: Path) -> list[tuple]:
        k = [("path", os.path.normcase(os.path.realpath(p)))]
        if p.exists():
            k.append(_file_key(p))
        return k

    known: dict[tuple, tuple[str, Path]] = {}
    for label, p in inputs.items():
        if p is not None:
            for k in keys(p):
                known.setdefault(k, (label, p))
    for t in tasks:
        for label, p in (("the input", t.input), *t.aux.items()):
            for k in keys(p):
                known.setdefault(k, (label, p))
    written: dict[tuple, tuple[str, Path]] = {}
    for t in tasks:
        for option, p in (("--out-dir/--name", t.output), ("--history", t.history)):
            if p is None:
                continue
            ks = keys(p)
            hit = next((known[k] for k in ks if k in known), None)
            if hit is not None:
                raise UsageError(
                    f"the {'result' if option != '--history' else 'history'} of {t.input} would be written to {p}, "
                    f"which is {hit[0]} {hit[1]}: writing there would destroy it; give {option} another "
                    "folder or pattern (nothing was run)"
                )
            other = next((written[k] for k in ks if k in written), None)
            if other is not None:
                fix = (
                    "--name a pattern that tells them apart, e.g. '{parent}_{stem}{suffix}'"
                    if option != "--history"
                    else "--history a pattern that tells them apart, e.g. 'history/{stem}.tif'"
                )
                which = f" ({other[0]} and {option})" if other[0] != option else ""
                raise UsageError(
                    f"{other[1]} and {t.input} would both be written to {p}{which}; give {fix} (nothing was run)"
                )
            for k in ks:
                written[k] = (option, t.input)


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` (--out-dir) with its parents; return the folders created, deepest first."""
    if folder.exists():
        if not folder.is_dir():
            raise UsageError(f"--out-dir {folder} exists and is not a folder; give a folder (it is created if missing)")
        return []
    created, p = [], folder
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create --out-dir {folder}: {exc.strerror or exc}; create it first or choose another folder"
        ) from None
    return created


def _check_outputs(
    tasks: list[FileTask],
    args,
    batch: bool,
    inputs: dict[str, Path | None],
    predict: Callable[[Any], tuple | None],
) -> None:
    """Every check of the run's results, before the first file is read (for all the files of a batch).

    Parameters
    ----------
    tasks : list of FileTask
        Marked ``skip`` here when ``--skip-existing`` keeps their results.
    inputs : dict
        The run's inputs shared by every file (``--weights``), by option.
    predict : callable
        ``predict(header)``: the result's (dtype, shape, channel axis) from an input's
        :class:`~.io.ImageHeader`, or None when the header cannot tell (batch form: results
        in PNG, JPEG or OME-TIFF are checked against it before any fit).
    """
    from .io import check_distinct, check_output_path

    if not batch:
        t = tasks[0]
        check_distinct({"-o": t.output, "--history": t.history}, {"the input": t.input, **t.aux, **inputs})
        check_output_path(t.output, "-o")
        if t.history is not None:
            _check_history_path(t.history)
        _apply_existing(tasks, args, batch)
        return
    _check_batch_paths(tasks, inputs)
    _apply_existing(tasks, args, batch)
    todo = [t for t in tasks if not t.skip]
    for label, p in inputs.items():
        if p is not None and not p.exists():
            raise UsageError(f"{label} {p} does not exist; nothing was run")
    for t in todo:
        for label, p in t.aux.items():
            if not p.exists():
                raise UsageError(f"{label} {p} (for {t.input}) does not exist; nothing was run")
    created = _make_folder(args.out_dir)
    try:
        for t in todo:
            try:
                check_output_path(t.output, t.label)
            except (ValueError, OSError) as exc:
                raise UsageError(f"{exc} (--name {args.name or DEFAULT_NAME!r}); nothing was run") from None
            if t.history is not None:
                _check_history_path(t.history)
        _check_formats(todo, predict)
    except BaseException:
        for folder in created:  # a refused run leaves no trace
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _check_formats(tasks: list[FileTask], predict: Callable[[Any], tuple | None]) -> None:
    """Refuse results whose format cannot hold them, from the inputs' headers (PNG, JPEG, OME-TIFF)."""
    from .io import check_output, is_ome_path, read_header

    for t in tasks:
        if t.output.suffix.lower() not in (".png", ".jpg", ".jpeg") and not is_ome_path(t.output):
            continue  # TIFF and OME-Zarr hold any result
        try:
            guess = predict(read_header(t.input))
        except Exception:  # an unreadable input fails on its turn, with its own message
            continue
        if guess is None:
            continue
        dtype, shape, ca = guess
        try:
            check_output(t.output, dtype, shape, ca, label=t.label, probe=False)
        except ValueError as exc:
            raise UsageError(
                f"{t.input}: {exc} (the result will be {'x'.join(map(str, shape))} {np.dtype(dtype)}); "
                "name the results in another format with --name, e.g. --name '{stem}.tif', or choose "
                "the inputs; nothing was run"
            ) from None


def _header_channel_axis(shape: tuple[int, ...], arg: str) -> int | None:
    """The channel axis --channel-axis gives an image of ``shape`` (normalised); ValueError if out of range."""
    ca = _channel_axis(shape, arg)
    if ca is None:
        return None
    if not -len(shape) <= ca < len(shape):
        raise ValueError(f"channel axis {ca} is out of range for shape {shape}")
    return ca % len(shape)


# -- one file: plan, run, finish ------------------------------------------------------------------


@dataclass
class RunResult:
    """What running a planned file gives back: its output, whether Ctrl-C cut it short, its duration."""

    output: Any
    interrupted: bool
    seconds: float


@dataclass
class RunFailure:
    """What a runner hands back for a file whose run raised: the driver reports it and goes on."""

    error: Exception


class PlannedFile(abc.ABC):
    """A file ready to run: read, checked and prepared by a command's ``plan`` (all its input checks done).

    :meth:`run` does the heavy part (the fit: the only step a runner may move to another
    process); :meth:`finish` writes the results and reports, in the process that planned it.
    """

    task: FileTask

    @abc.abstractmethod
    def run(self, quiet: bool) -> RunResult:
        """Run the work (with a progress bar unless ``quiet``)."""

    @abc.abstractmethod
    def finish(self, result: RunResult) -> str:
        """Write the results and print the report; return "done", or "interrupted" (cut short by Ctrl-C)."""


@dataclass
class PlannedRestore(PlannedFile):
    """A restoration ready to run: its :class:`~.restore.job.DIPJob` and what its results need."""

    task: FileTask
    job: Any
    image: np.ndarray
    meta: Any
    channel_axis: int | None
    reference: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    noise_given: bool = False

    def run(self, quiet: bool) -> RunResult:
        t0 = time.perf_counter()
        out, interrupted = _run_job(self.job, quiet)
        return RunResult(out, interrupted, time.perf_counter() - t0)

    def finish(self, result: RunResult) -> str:
        from .io import write_history_tiff, write_image
        from .provenance import dip_provenance

        t, job, out, interrupted = self.task, self.job, result.output, result.interrupted
        result_ca = job.layout.channel_axis
        provenance = _safe_provenance(
            dip_provenance, job, out, input_name=t.input, interrupted=interrupted, extra=self.extra
        )
        history = t.history if t.history is not None and out.history is not None else None
        # the history first (the larger file): when it cannot be written, neither is the result;
        # when the result cannot be written, a history this run created is removed with it
        history_was_there = history is not None and history.exists()
        if history is not None:
            write_history_tiff(
                history,
                out.history,
                out.history_iterations,
                out.history_losses[:, 0] if out.history_losses.shape[1] == 1 else out.history_losses,
                channel_axis=result_ca,
                meta=self.meta,
                provenance=provenance,
            )
        try:
            write_image(t.output, out.image, result_ca, meta=self.meta, provenance=provenance)
        except BaseException:
            if history is not None and not history_was_there:
                history.unlink(missing_ok=True)
            raise
        print(f"wrote {t.output}" + (f": {_interrupted_note(out)}" if interrupted else ""))
        for note in out.notes:
            print(f"note: {note}", file=sys.stderr)
        if history is not None:
            print(f"wrote {history} ({len(out.history_iterations)} frames)")
        elif t.history is not None and not out.notes:
            print("no history was recorded (history cadence 0)", file=sys.stderr)
        if interrupted:
            return "interrupted"
        _report(out, result.seconds, noise_given=self.noise_given)
        if self.reference is not None:
            ref, ca = self.reference, self.channel_axis
            p1, s1 = _quality(ref, out.image, ca)
            if ref.shape == self.image.shape:
                p0, s0 = _quality(ref, self.image, ca)
                print(f"PSNR {p0:.2f} dB -> {p1:.2f} dB, SSIM {s0:.4f} -> {s1:.4f} (vs {t.aux['--reference']})")
            else:  # a result of another size than the input (up-scaling): no "before"
                print(f"PSNR {p1:.2f} dB, SSIM {s1:.4f} (vs {t.aux['--reference']})")
        return "done"


@dataclass
class PlannedColorize(PlannedFile):
    """A colorization ready to run: the image, its hints and the method's options."""

    task: FileTask
    image: np.ndarray
    meta: Any
    channel_axis: int | None
    hints: Any
    method: str
    hint_size: int
    weights: Path | None
    device: str
    seed: int

    def run(self, quiet: bool) -> RunResult:
        from .colorization.api import colorize

        t0 = time.perf_counter()
        rgb = colorize(
            self.image,
            method=self.method,
            hints=self.hints,
            hint_size=self.hint_size,
            weights=self.weights,
            device=self.device,
            seed=self.seed,
            channel_axis=self.channel_axis,
        )
        return RunResult(rgb, False, time.perf_counter() - t0)

    def finish(self, result: RunResult) -> str:
        from .colorization.api import get_colorizer
        from .colorization.weights import weights_info
        from .io import write_image
        from .provenance import colorize_provenance

        colorizer = get_colorizer(self.method)
        provenance = _safe_provenance(
            colorize_provenance,
            self.method,
            input_name=self.task.input,
            hints=self.hints,
            hint_size=self.hint_size,
            seed=self.seed if colorizer.iterative else None,
            weights=weights_info(self.method).filename if colorizer.needs_weights else None,
        )
        write_image(self.task.output, result.output, -1, meta=self.meta, provenance=provenance)
        n = f" from {len(self.hints)} hints" if self.hints else ""
        print(f"colorized with {self.method}{n} in {result.seconds:.1f} s; wrote {self.task.output}")
        return "done"


def run_in_process(
    planned: Iterable[PlannedFile], quiet: bool = False
) -> Iterator[tuple[PlannedFile, RunResult | RunFailure]]:
    """The default runner: run each planned file here, one after the other.

    A runner takes the planned files lazily (``planned`` is an iterator that reads and prepares
    each file only when asked: a runner that runs several at once takes a few ahead, never all),
    runs them and yields ``(planned, result)`` pairs as they complete, a :class:`RunFailure`
    for a run that raised.  KeyboardInterrupt and :class:`Terminated` pass through.
    """
    for p in planned:
        try:
            result = p.run(quiet)
        except Exception as exc:  # reported by the driver; the batch goes on
            result = RunFailure(exc)
        yield p, result
        del p, result  # not held while the next file is read


def _text(exc: BaseException) -> str:
    """An exception's message for a user: options as the command line spells them; an OSError that
    names no file by its own words (``cannot write ...``), without the ``[Errno N]`` prefix."""
    from .errors import reword

    if isinstance(exc, OSError) and exc.filename is None and exc.strerror:
        return exc.strerror
    return reword(exc, FLAGS)


def _one_line(exc: BaseException) -> str:
    """A failed file's message on one line (an unexpected error says its type)."""
    msg = _memory_error(exc) if isinstance(exc, (MemoryError, RuntimeError)) else None
    if msg is None:
        msg = _text(exc)
        if not isinstance(exc, (ValueError, TypeError, OSError, MemoryError)):
            msg = f"{type(exc).__name__}: {msg}"
    return " ".join(msg.split()) or type(exc).__name__


@dataclass
class BatchSummary:
    """The counts of a batch so far, the files in progress, and why it stopped early (if it did)."""

    total: int
    done: int = 0
    skipped: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    in_progress: list[FileTask] = field(default_factory=list)
    stop: str | None = None
    t0: float = field(default_factory=time.perf_counter)

    def end(self, task: FileTask) -> None:
        """``task`` is counted: no longer in progress."""
        if task in self.in_progress:
            self.in_progress.remove(task)

    def fail(self, task: FileTask, exc: BaseException) -> None:
        self.end(task)
        msg = _one_line(exc)
        self.failed.append((task.input, msg))
        sys.stdout.flush()  # in order with the report lines when both go to one log
        print(f"failed: {task.input}: {msg}", file=sys.stderr, flush=True)

    def stopped(self, why: str, what_of_it: str) -> None:
        """Record why the batch stopped, naming the files in progress then."""
        where = ", ".join(str(t.input) for t in self.in_progress)
        self.stop = f"{why} at {where} ({what_of_it})" if where else why

    def print(self) -> None:
        left = self.total - self.done - self.skipped - len(self.failed) - len(self.in_progress)
        took = format_duration(time.perf_counter() - self.t0)
        line = f"{self.done} done, {self.skipped} skipped, {len(self.failed)} failed in {took}"
        if self.stop is not None:
            line += f"; {self.stop}"
            if left:
                line += f"; {left} not started"
        print(line, flush=True)
        for path, msg in self.failed:
            print(f"failed: {path}: {msg}", file=sys.stderr)


def run_files(
    tasks: list[FileTask],
    plan: Callable[[FileTask], PlannedFile],
    *,
    batch: bool,
    quiet: bool = False,
    runner: Callable[..., Iterator[tuple[PlannedFile, RunResult | RunFailure]]] = run_in_process,
) -> int:
    """Plan, run and finish the files of a run; return the exit code.

    Parameters
    ----------
    tasks : list of FileTask
        Checked (:func:`_check_outputs`); those marked ``skip`` are reported and left alone.
    plan : callable
        ``plan(task)``: read and prepare one file (raises on bad input).  Called lazily, when
        the runner asks for the next planned file.
    batch : bool
        The batch form: each file is announced (``[2/5] raw/b.tif``), a file that fails is
        reported (``failed: FILE: MESSAGE``) and the others go on, and a summary ends the run
        (``N done, M skipped, K failed in T``).  Otherwise (``-o``) an error propagates to
        :func:`main`, as before the batch form existed.
    quiet : bool
        No progress bar.
    runner : callable
        ``runner(planned_files, quiet=...)`` (see :func:`run_in_process`).

    Returns
    -------
    int
        0 every file done or skipped, 1 some failed, 130 Ctrl-C, 128 + the signal when terminated.
    """
    summary = BatchSummary(len(tasks))

    def planned() -> Iterator[PlannedFile]:
        for task in tasks:
            if batch:
                print(f"[{task.index}/{task.total}] {task.input}", flush=True)
            if task.note:
                print(task.note)
            if task.skip:
                print(f"skipped: {', '.join(map(str, task.outputs))} exist{'s' if len(task.outputs) == 1 else ''}")
                summary.skipped += 1
                continue
            summary.in_progress.append(task)
            try:
                p = plan(task)
            except Exception as exc:
                if not batch:
                    raise
                summary.fail(task, exc)
                continue
            yield p
            del p

    try:
        for p, result in runner(planned(), quiet=quiet):
            try:
                if isinstance(result, RunFailure):
                    raise result.error
                status = p.finish(result)
            except Exception as exc:
                if not batch:
                    raise
                summary.fail(p.task, exc)
                continue
            finally:
                del result
            if status == "interrupted":  # the first Ctrl-C: its estimate was written; the batch stops
                summary.stopped("stopped by Ctrl-C", "its estimate so far was written")
                break
            summary.end(p.task)
            summary.done += 1
            del p
    except KeyboardInterrupt:
        if not batch:
            raise
        print(f"{PROG}: interrupted: nothing was written for the file in progress", file=sys.stderr)
        summary.stopped("stopped by Ctrl-C", "nothing written for it")
    except Terminated as term:
        if not batch:
            raise
        what = "terminated" if term.signum == signal.SIGTERM else "interrupted twice"
        print(f"{PROG}: {what}: stopped at once; nothing was written for the file in progress", file=sys.stderr)
        summary.stopped(what, "nothing written for it")
        summary.print()
        return 128 + term.signum
    if batch:
        summary.print()
    if summary.stop is not None:
        return 130
    return 1 if summary.failed else 0


# -- the commands ---------------------------------------------------------------------------------


def _restore_options(args, deg) -> dict:
    """The options of :func:`~.restore.api.prepare` that do not depend on the image."""
    opts = dict(
        preset=args.preset,
        iterations=args.iterations,
        lr=args.lr,
        ensemble=args.ensemble,
        early_stop=False if args.no_early_stop else None,
        device=args.device,
        seed=args.seed,
        history_every=args.history_every,
        output_dtype=None if args.dtype == "auto" else args.dtype,
    )
    if len(deg.noise_models) > 1:
        opts["loss"] = args.loss
    if "poisson" in deg.noise_models:
        opts.update(camera_offset=args.offset, gain=args.gain, read_noise=args.read_noise)
    if deg.noise_level_stop:
        opts["noise_sigma"] = args.noise_sigma
    return opts


def _predict_restore(args, scale: int, poisson: bool, header) -> tuple | None:
    """The result's (dtype, shape, channel axis) from the input's header (None: cannot tell)."""
    from .arrays import resolve_output_dtype

    shape = tuple(header.shape)
    try:
        ca = _header_channel_axis(shape, args.channel_axis)
    except (ValueError, UsageError):
        return None
    rest = [i for i in range(len(shape)) if i != ca]
    if len(rest) < 2:
        return None
    dtype = resolve_output_dtype(None if args.dtype == "auto" else args.dtype, header.dtype, poisson)
    if dtype is None:
        dtype = np.dtype(np.float32) if header.dtype == np.float16 else header.dtype
    out = list(shape)
    for i in rest[-2:]:
        out[i] *= scale
    return dtype, tuple(out), ca


def _restore(args) -> int:
    from .restore.api import check_options

    deg = args.degradation
    masks = {f.flag: getattr(args, f.name) for f in deg.fields if f.kind == "mask"}
    tasks, batch = _file_tasks(
        args, deg.name, shared=masks, per_file={"--reference": args.reference, "--history": args.history}
    )
    for name in ("offset", "gain", "read_noise"):
        _check_finite(f"--{name.replace('_', '-')}", getattr(args, name, None))
    _check_finite("--lr", args.lr)
    noise_sigma = getattr(args, "noise_sigma", None)
    _check_finite("--noise-sigma", noise_sigma)
    if noise_sigma is not None and noise_sigma <= 0:
        raise UsageError(f"--noise-sigma must be > 0 (a standard deviation), got {noise_sigma:g}")
    # the degradation without its masks (read per image): its result size and its options' checks
    unbound = deg(**{f.name: None if f.kind == "mask" else getattr(args, f.name) for f in deg.fields})
    params = check_options(unbound, **_restore_options(args, deg))
    predict = partial(_predict_restore, args, unbound.scale, params.loss == "poisson")
    _check_outputs(tasks, args, batch, {}, predict)
    if args.workers is None and args.scheduler is None:
        return run_files(tasks, partial(_plan_restore, args), batch=batch, quiet=args.quiet)
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    client = _start_cluster(args)
    try:
        return run_files(
            tasks,
            partial(_plan_on_cluster, client, args),
            batch=batch,
            quiet=args.quiet,
            runner=partial(run_on_cluster, client, args.device),
        )
    finally:
        cluster = client.cluster if args.workers is not None else None
        client.close()
        if cluster is not None:
            cluster.close()


# -- on a dask cluster ------------------------------------------------------------------------------


def _start_cluster(args):
    """The client of ``--workers N`` (a new LocalCluster) or ``--scheduler ADDRESS`` (a running one)."""
    from .restore.distributed import cluster_workers, start_client

    try:
        client = start_client(args.workers, args.scheduler)
    except ImportError as exc:
        raise UsageError(f"{'--workers' if args.workers else '--scheduler'}: {exc}") from None
    except OSError as exc:  # no scheduler at that address
        raise UsageError(f"--scheduler {args.scheduler}: cannot reach a dask scheduler there ({exc})") from None
    workers = cluster_workers(client)
    threads = sorted({w.get("nthreads", 0) for w in workers.values()})
    where = "a local cluster" if args.workers is not None else f"the cluster at {args.scheduler}"
    print(
        f"dask: {len(workers)} worker(s) of {'/'.join(map(str, threads))} thread(s) on {where}",
        flush=True,
    )
    return client


def _plan_on_cluster(client, args, task: FileTask) -> PlannedRestore:
    """:func:`_plan_restore` with tiles planned for the smallest worker's memory."""
    from .device import memory_cap
    from .restore.distributed import worker_memory_cap

    with memory_cap(worker_memory_cap(client)):
        return _plan_restore(args, task)


class _ClusterBar(ProgressBar):
    """Progress of the fits on a cluster: units (planes, tiles) done of those submitted, files in progress."""

    def __call__(self, done: int, total: int, files_running: int) -> None:
        elapsed = format_duration(time.perf_counter() - self.t0)
        text = f"fits {done}/{total} done ({files_running} file(s) in progress), {elapsed} elapsed"
        if total:
            self._show(done / total, text, bar=False)


def run_on_cluster(
    client, device: str, planned: Iterable[PlannedFile], quiet: bool = False
) -> Iterator[tuple[PlannedFile, RunResult | RunFailure]]:
    """A runner (see :func:`run_in_process`) that runs the files' fits on a dask cluster.

    Keeps enough files in progress to give every worker a fit (one more file than there are
    workers; a file's planes and tiles are fits of their own), and hands each file back when
    all its fits are in, assembled exactly as in process.  A fit that fails twice fails its
    file (reported; the batch goes on).  Ctrl-C cancels every fit and writes nothing for the
    files in progress.
    """
    import distributed

    from .restore.distributed import ClusterJob, cluster_workers

    ahead = len(cluster_workers(client)) + 1
    source = iter(planned)
    running: dict[int, tuple[PlannedFile, ClusterJob]] = {}
    owner: dict = {}  # future -> id of its file
    done = distributed.as_completed(loop=client.loop)
    bar = None if quiet else _ClusterBar()
    counts = {"done": 0, "total": 0}

    def add(fid, futures):
        for f in futures:
            owner[f] = fid
        done.update(futures)

    def top_up():
        """Plan and submit files until ``ahead`` are in progress; yield those with nothing to fit."""
        while len(running) < ahead:
            p = next(source, None)
            if p is None:
                return
            try:
                run = ClusterJob(p.job, client, device)
                futures = run.start()
            except Exception as exc:
                yield p, RunFailure(exc)
                continue
            if run.finished:  # nothing to fit (constant planes, no holes)
                yield p, RunResult(run.output(), False, 0.0)
                continue
            running[id(p)] = (p, run)
            counts["total"] += len(run.units)
            add(id(p), futures)

    try:
        yield from top_up()
        while running:
            fut = next(done)
            fid = owner.pop(fut)
            if fid not in running:  # a file that failed already: its other fits were cancelled
                continue
            p, run = running[fid]
            try:
                _progress, new = run.take(fut)
            except Exception as exc:
                run.cancel()
                del running[fid]
                yield p, RunFailure(exc)
                yield from top_up()
                continue
            add(fid, new)
            counts["done"] += 1
            if bar is not None:
                bar(counts["done"], counts["total"], len(running))
            if run.finished:
                del running[fid]
                try:
                    result = RunResult(run.output(), False, time.perf_counter() - run.t0)
                except Exception as exc:
                    result = RunFailure(exc)
                yield p, result
                yield from top_up()
    finally:
        for _p, run in running.values():
            run.cancel()
        if bar is not None:
            bar.close()


def _streams(args, task: FileTask) -> bool:
    """Whether the file is restored plane by plane, OME-Zarr to OME-Zarr, with bounded memory.

    Yes for an OME-Zarr input and output, unless a history (a TIFF of every frame), a
    reference or a cluster needs the whole image here.
    """
    from .omezarr import is_zarr_path

    return (
        is_zarr_path(task.input)
        and is_zarr_path(task.output)
        and task.history is None
        and task.aux.get("--reference") is None
        and getattr(args, "workers", None) is None
        and getattr(args, "scheduler", None) is None
    )


@dataclass
class PlannedStream(PlannedFile):
    """An OME-Zarr restored plane by plane into an OME-Zarr (:class:`~.restore.stream.StackJob`).

    Each plane is read when its turn comes, fitted as in one job over the whole stack (its value
    range, its seed) and written into the output's full-resolution level; the pyramid and the
    metadata are written at the end, and the folder renamed into place.
    """

    task: FileTask
    job: Any  # StackJob
    meta: Any
    channel_axis: int | None
    extra: dict = field(default_factory=dict)
    noise_given: bool = False
    writer: Any = None

    def run(self, quiet: bool) -> RunResult:
        from .omezarr import ZarrStream

        t0 = time.perf_counter()
        job = self.job
        self.writer = ZarrStream(self.task.output, job.result_shape, job.result_dtype, job.channel_axis, meta=self.meta)
        job.store = self.writer.store
        try:
            out, interrupted = _run_job(job, quiet)
        except BaseException:
            self.writer.abort()
            raise
        return RunResult(out, interrupted, time.perf_counter() - t0)

    def finish(self, result: RunResult) -> str:
        from .provenance import dip_provenance

        out, interrupted = result.output, result.interrupted
        provenance = _safe_provenance(
            dip_provenance, self.job, out, input_name=self.task.input, interrupted=interrupted, extra=self.extra
        )
        self.writer.close(provenance)
        print(f"wrote {self.task.output} (plane by plane)" + (f": {_interrupted_note(out)}" if interrupted else ""))
        for note in out.notes:
            print(f"note: {note}", file=sys.stderr)
        if interrupted:
            return "interrupted"
        _report(out, result.seconds, noise_given=self.noise_given)
        return "done"


def _plan_stream(args, task: FileTask) -> PlannedStream:
    """Open an OME-Zarr lazily and prepare its plane-by-plane restoration (nothing read but its header)."""
    from .io import check_output, read_image_meta
    from .omezarr import open_zarr_lazily
    from .restore.stream import StackJob

    deg = args.degradation
    image = open_zarr_lazily(task.input)
    scale = deg(**{f.name: None if f.kind == "mask" else getattr(args, f.name) for f in deg.fields}).scale
    meta = read_image_meta(task.input).zoomed(scale)
    ca = _channel_axis(image.shape, args.channel_axis)
    fields = {}
    for f in deg.fields:
        value = getattr(args, f.name)
        if f.kind == "mask":
            value = _read_mask(task.aux[f.flag], image, getattr(args, f"invert_{f.name}"))
        fields[f.name] = value
    # no history here: it would hold every frame of the stack in memory (give --history for one)
    opts = dict(_restore_options(args, deg), history_every=0)
    job = StackJob(
        deg,
        image,
        fields=fields,
        channel_axis=ca,
        tile_size=args.tile,
        tile_overlap=args.tile_overlap,
        warm_start=args.warm_start,
        **opts,
    )
    check_output(
        task.output,
        job.result_dtype,
        job.result_shape,
        job.channel_axis,
        label=task.label,
        probe=False,
        axes=meta.axes_for(tuple(job.result_shape), job.channel_axis),
    )
    print(f"restoring {job.n_planes} plane(s) one at a time into {task.output}")
    extra = {f.name: task.aux[f.flag].name for f in deg.fields if f.kind == "mask"}
    return PlannedStream(task, job, meta, ca, extra, noise_given=getattr(args, "noise_sigma", None) is not None)


def _plan_restore(args, task: FileTask) -> PlannedRestore | PlannedStream:
    """Read one input and prepare its restoration: every check of the file, before its fit."""
    from .io import check_output, read_header, read_image_meta
    from .restore.api import prepare

    if _streams(args, task):
        return _plan_stream(args, task)
    deg = args.degradation
    reference_path = task.aux.get("--reference")
    if reference_path is not None:
        read_header(reference_path)  # a missing or broken reference is found before the input is read
    # the result's size per input side, from the choice fields (masks are read after the image)
    scale = deg(**{f.name: None if f.kind == "mask" else getattr(args, f.name) for f in deg.fields}).scale
    image = _read_for_restore(task.input, scale, args.device)
    meta = read_image_meta(task.input).zoomed(scale)  # the result's axes and pixel sizes
    ca = _channel_axis(image.shape, args.channel_axis)
    kw = dict(
        _restore_options(args, deg),
        channel_axis=ca,
        warm_start=args.warm_start,
        tile_size=args.tile,
        tile_overlap=args.tile_overlap,
    )
    fields = {}
    for f in deg.fields:
        value = getattr(args, f.name)
        if f.kind == "mask":
            value = _read_mask(task.aux[f.flag], image, getattr(args, f"invert_{f.name}"))
        fields[f.name] = value
    job = prepare(deg(**fields), image, **kw)
    result_shape = job.layout.result_shape(*job.out_shape[:2])
    result_ca = job.layout.channel_axis
    try:
        check_output(
            task.output,
            job.layout.result_dtype,
            result_shape,
            result_ca,
            label=task.label,
            probe=False,
            axes=meta.axes_for(tuple(result_shape), result_ca),
        )
    except ValueError as exc:
        if job.params.loss == "poisson" and job.layout.result_dtype.kind == "f":
            raise UsageError(
                f"{exc} (the Poisson model returns float32 photon rates; "
                "--dtype input gives rounded counts in the input's dtype)"
            ) from None
        if job.layout.result_dtype != image.dtype or args.dtype != "auto":
            raise UsageError(f"{exc}; or choose the result type with --dtype (now {job.layout.result_dtype})") from None
        raise
    reference = None
    if reference_path is not None:
        reference = _read(reference_path)
        if reference.shape != tuple(result_shape):
            raise UsageError(
                f"--reference {reference_path} has shape {reference.shape} but the result will be "
                f"{tuple(result_shape)}; give the ground truth of the result (nothing was run)"
            )
    if job.regions:
        print(next((n for n in job.notes if n.startswith("fitting ")), f"fitting {len(job.tiles)} regions"))
    elif job.tiles is not None:
        th = max(b[1] - b[0] for b in job.tiles)
        tw = max(b[3] - b[2] for b in job.tiles)
        print(f"processing in {len(job.tiles)} tiles of {th}x{tw} pixels (overlap at least {job.tile_overlap})")
    extra = {f.name: task.aux[f.flag].name for f in deg.fields if f.kind == "mask"}
    return PlannedRestore(
        task, job, image, meta, ca, reference, extra, noise_given=getattr(args, "noise_sigma", None) is not None
    )


def _predict_colorize(args, header) -> tuple | None:
    """The colorized result's (dtype, shape, channel axis) from the input's header (None: cannot tell)."""
    shape = tuple(header.shape)
    try:
        ca = _header_channel_axis(shape, args.channel_axis)
    except (ValueError, UsageError):
        return None
    spatial = tuple(n for i, n in enumerate(shape) if i != ca)
    return np.dtype(np.uint8 if header.dtype == np.uint8 else np.float32), spatial + (3,), -1


def _colorize(args) -> int:
    tasks, batch = _file_tasks(args, "colorize", shared={"--hints": args.hints}, per_file={})
    _check_outputs(tasks, args, batch, {"--weights": args.weights}, partial(_predict_colorize, args))
    return run_files(tasks, partial(_plan_colorize, args), batch=batch, quiet=True)


def _plan_colorize(args, task: FileTask) -> PlannedColorize:
    """Read one input (and its hints) for colorization: every check of the file, before the work."""
    from .colorization.hints import read_hints_csv
    from .io import check_output, read_image_meta

    image = _read(task.input)
    meta = read_image_meta(task.input)
    ca = _channel_axis(image.shape, args.channel_axis)
    hints_path = task.aux.get("--hints")
    hints = read_hints_csv(hints_path) if hints_path is not None else None
    out_dtype = np.uint8 if image.dtype == np.uint8 else np.float32
    spatial = image.shape if ca is None else tuple(n for i, n in enumerate(image.shape) if i != ca % image.ndim)
    check_output(
        task.output,
        out_dtype,
        spatial + (3,),
        -1,
        label=task.label,
        probe=False,
        axes=meta.axes_for(spatial + (3,), -1),
    )
    return PlannedColorize(
        task, image, meta, ca, hints, args.method, args.hint_size, args.weights, args.device, args.seed
    )


#: How ``info`` names the flavour of a file.
_KINDS = {
    "imagej": "TIFF (ImageJ hyperstack)",
    "ome": "OME-TIFF",
    "tiff": "TIFF",
    "png": "PNG",
    "jpeg": "JPEG",
    "ome-zarr": "OME-Zarr",
}


def _info(args) -> int:
    """Print what a file says about its pixels and, when this package wrote it, how it was made."""
    import json

    from .io import read_header, read_image_meta
    from .provenance import describe_provenance

    header = read_header(args.input)
    meta = read_image_meta(args.input)
    if args.json:
        record = {
            "path": str(header.path),
            "format": header.format,
            "shape": list(header.shape),
            "dtype": header.dtype.name,
            **meta.to_json(),
            "provenance": meta.provenance,
        }
        print(json.dumps(record, indent=2))
        return 0
    dims = " x ".join(str(n) for n in header.shape)
    axes = f" ({meta.axes})" if meta.axes else ""
    print(f"{header.path}")
    print(f"  format: {_KINDS.get(meta.kind, header.format)}")
    print(f"  shape: {dims}{axes}, {header.dtype.name}")
    if meta.pixel_sizes:
        sizes = ", ".join(f"{a} {v:.6g} {u}" for a, (v, u) in meta.pixel_sizes.items())
        print(f"  pixel sizes: {sizes}")
    else:
        print("  pixel sizes: none recorded")
    if meta.provenance is None:
        print(f"  provenance: none (not written by {PROG}, or written by a version that did not record it)")
    else:
        print("  provenance:")
        for line in describe_provenance(meta.provenance):
            print("  " + line)
    return 0


#: The demo's crop of scikit-image's astronaut: the face.
DEMO_CENTRE = (164, 214)


def _demo(args) -> int:
    from .arrays import MIN_SIDE
    from .io import check_distinct, check_output, write_image
    from .provenance import dip_provenance
    from .restore.api import prepare_denoise
    from .samples import astronaut_pair

    _check_finite("--sigma", args.sigma, 0.0)
    if not MIN_SIDE <= args.size <= 512:
        raise UsageError(f"--size must be between {MIN_SIDE} and 512 (the sample is 512x512), got {args.size}")
    out_path = args.output
    noisy_path = out_path.with_name(out_path.stem + "_noisy" + out_path.suffix)
    check_distinct({"-o": out_path, "the noisy copy": noisy_path}, {})
    for label, path in (("-o", out_path), ("the noisy copy", noisy_path)):
        check_output(path, np.uint8, (args.size, args.size, 3), -1, label=label)
    clean, noisy = astronaut_pair(args.size, args.sigma, args.seed, centre=DEMO_CENTRE)
    print(f"sample: scikit-image astronaut, {clean.shape[0]}x{clean.shape[1]} RGB, Gaussian noise sigma={args.sigma:g}")
    job = prepare_denoise(noisy, channel_axis=-1, device=args.device, seed=args.seed, iterations=args.iterations)
    print(
        f"device {job.device}, preset 'denoise', up to {job.params.iterations} iterations with automatic early stopping"
    )
    t0 = time.perf_counter()
    out, interrupted = _run_job(job, args.quiet)
    sample = {"sample": f"scikit-image astronaut, {args.size} px, Gaussian noise sigma {args.sigma:g}"}
    write_image(noisy_path, noisy, -1)
    provenance = _safe_provenance(
        dip_provenance, job, out, input_name=noisy_path, interrupted=interrupted, extra=sample
    )
    write_image(out_path, out.image, -1, provenance=provenance)
    if interrupted:
        print(f"wrote {noisy_path} and {out_path}: {_interrupted_note(out)}")
        return 130
    _report(out, time.perf_counter() - t0)
    p0, s0 = _quality(clean, noisy, -1)
    p1, s1 = _quality(clean, out.image, -1)
    print(f"PSNR {p0:.2f} dB -> {p1:.2f} dB, SSIM {s0:.4f} -> {s1:.4f}")
    print(f"wrote {noisy_path} and {out_path}")
    return 0


def _memory_error(exc: BaseException) -> str | None:
    """A user's message for running out of memory anywhere (host allocator, torch, CUDA)."""
    from .errors import ImageTooLargeError, is_out_of_memory, reword

    text = str(exc)
    if is_out_of_memory(exc):
        if isinstance(exc, ImageTooLargeError):  # the plan's refusal: it says what to do
            return " ".join(reword(exc, FLAGS).split())
        return (
            "ran out of memory"
            + (f" ({' '.join(text.split())[:200]})" if text else "")
            + "; process the image in smaller tiles (--tile 256), turn the history off (--history-every 0), "
            "choose a lighter --preset, or crop the image; nothing was written"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import ImageTooLargeError, WeightsError, reword

    handlers = {}
    for signum in (signal.SIGTERM,):
        try:
            handlers[signum] = signal.signal(signum, _terminate)
        except ValueError:  # not the main thread (e.g. called from a worker): leave them alone
            pass
    sigint = signal.getsignal(signal.SIGINT)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (nothing was written)", file=sys.stderr)
        return 130
    except Terminated as term:
        what = "terminated" if term.signum == signal.SIGTERM else "interrupted twice"
        print(f"{PROG}: {what}: stopped at once; no file was changed", file=sys.stderr)
        return 128 + term.signum
    except (MemoryError, RuntimeError) as exc:
        msg = _memory_error(exc)
        if msg is None:
            if not isinstance(exc, WeightsError):
                raise
            msg = " ".join(reword(exc, FLAGS).split())
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, ImageTooLargeError, OSError) as exc:
        msg = " ".join(_text(exc).split())
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        try:
            signal.signal(signal.SIGINT, sigint)
        except (ValueError, TypeError):
            pass


if __name__ == "__main__":
    sys.exit(main())
