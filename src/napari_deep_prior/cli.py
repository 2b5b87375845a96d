"""Command line: ``napari-deep-prior denoise|inpaint|...|colorize|info|demo ...`` for batch and headless use.

One subcommand per registered degradation (:data:`~.restore.degradations.DEGRADATIONS`: its
fields become options) and one for colorization (its methods from the colorizer registry).
Every output keeps the input's axes and pixel sizes where its format can hold them and records
how it was made (:mod:`~.provenance`); ``info FILE`` shows both.

Every check happens before the work: outputs that would overwrite an input, folders that do
not exist or cannot be written, formats that cannot hold the result, images too large for the
memory (from their headers, before decoding).  Files are written all at once (a temporary file
renamed into place), so an interrupted or failed run never changes an existing file.

Exit codes: 0 success, 2 bad input or arguments (one-line message naming the option), 130
interrupted by Ctrl-C (the first Ctrl-C during a fit writes the estimate so far; a second one
exits at once), 143 terminated (SIGTERM: exits at once, writes nothing).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from pathlib import Path

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
        if self.tty:
            filled = int(self.width * frac)
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r[{bar}] {text}\033[K")
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


def _channel_axis(image: np.ndarray, arg: str) -> int | None:
    if arg == "auto":
        return guess_channel_axis(image.shape)
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


def _common_args(p: argparse.ArgumentParser, deg) -> None:
    from .restore.presets import PRESETS

    p.add_argument("input", type=Path, help="image file (.png, .jpg, .tif, .ome.tif) or OME-Zarr folder (.zarr)")
    p.add_argument("-o", "--output", type=Path, required=True, help="result (.png, .jpg, .tif, .ome.tif, .zarr)")
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
    p.add_argument("--history", type=Path, help="write the iteration-history stack to this .tif")
    p.add_argument(
        "--history-every",
        type=int,
        metavar="N",
        help="history cadence: at most N iterations between frames (default: the preset's); "
        "0 = no history. A run keeps at least 10 frames: 40 iterations give one every 4",
    )
    p.add_argument("--reference", type=Path, help="ground-truth image: print PSNR/SSIM before and after")
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
        help="process in overlapping N x N tiles blended without seams (0 = never; "
        "default: automatically, only when the image does not fit in memory)",
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


def _task_parser(sub, deg) -> None:
    """The subcommand of one registered degradation: common options + its fields + its noise models."""
    p = sub.add_parser(deg.name, help=deg.summary)
    _common_args(p, deg)
    for f in deg.fields:
        if f.kind == "mask":
            p.add_argument(f.flag, type=Path, required=True, help=f"{f.label} image file: {f.help}")
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
    c.add_argument("input", type=Path, help="grey (or colour, re-coloured from its lightness) image")
    c.add_argument("-o", "--output", type=Path, required=True, help="RGB result (.png, .jpg, .tif, .ome.tif, .zarr)")
    c.add_argument(
        "--method",
        default="eccv16",
        choices=method_names(),
        help=" ".join(col.description for col in REGISTRY.values())
        + f" Need --hints: {', '.join(method_names(automatic=False))}.",
    )
    c.add_argument("--hints", type=Path, help="CSV with a header 'row,col,color' (#rrggbb) or 'row,col,r,g,b'")
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


def _report(out, t0: float, noise_given: bool = False) -> None:
    stops = ", ".join(f"{s}/{r}" for s, r in zip(out.stop_iterations, out.iterations_run, strict=True))
    print(f"done in {time.perf_counter() - t0:.1f} s; result from iteration/steps run: {stops}; seed {out.seed}")
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


def _restore(args) -> int:
    from .io import (
        check_distinct,
        check_output,
        check_output_path,
        read_header,
        read_image_meta,
        write_history_tiff,
        write_image,
    )
    from .provenance import dip_provenance
    from .restore.api import prepare

    deg = args.degradation
    masks = {f.flag: getattr(args, f.name) for f in deg.fields if f.kind == "mask"}
    outputs = {"-o": args.output, "--history": args.history}
    check_distinct(outputs, {"the input": args.input, **masks, "--reference": args.reference})
    check_output_path(args.output, "-o")
    if args.history is not None:
        if args.history.suffix.lower() not in (".tif", ".tiff"):
            raise UsageError(f"--history is written as a multi-page TIFF; give a .tif path, got {args.history}")
        check_output_path(args.history, "--history")
    for name in ("offset", "gain", "read_noise"):
        _check_finite(f"--{name.replace('_', '-')}", getattr(args, name, None))
    _check_finite("--lr", args.lr)
    noise_sigma = getattr(args, "noise_sigma", None)
    _check_finite("--noise-sigma", noise_sigma)
    if noise_sigma is not None and noise_sigma <= 0:
        raise UsageError(f"--noise-sigma must be > 0 (a standard deviation), got {noise_sigma:g}")
    if args.reference is not None:
        read_header(args.reference)  # a missing or broken reference is found before the input is read
    # the result's size per input side, from the choice fields (masks are read after the image)
    scale = deg(**{f.name: None if f.kind == "mask" else getattr(args, f.name) for f in deg.fields}).scale
    image = _read_for_restore(args.input, scale, args.device)
    meta = read_image_meta(args.input).zoomed(scale)  # the result's axes and pixel sizes
    ca = _channel_axis(image, args.channel_axis)
    kw = dict(
        preset=args.preset,
        channel_axis=ca,
        iterations=args.iterations,
        lr=args.lr,
        ensemble=args.ensemble,
        early_stop=False if args.no_early_stop else None,
        device=args.device,
        seed=args.seed,
        history_every=args.history_every,
        warm_start=args.warm_start,
        tile_size=args.tile,
        tile_overlap=args.tile_overlap,
        output_dtype=None if args.dtype == "auto" else args.dtype,
    )
    if len(deg.noise_models) > 1:
        kw["loss"] = args.loss
    if "poisson" in deg.noise_models:
        kw.update(camera_offset=args.offset, gain=args.gain, read_noise=args.read_noise)
    if deg.noise_level_stop:
        kw["noise_sigma"] = args.noise_sigma
    fields = {}
    for f in deg.fields:
        value = getattr(args, f.name)
        if f.kind == "mask":
            value = _read_mask(value, image, getattr(args, f"invert_{f.name}"))
        fields[f.name] = value
    job = prepare(deg(**fields), image, **kw)
    result_shape = job.layout.result_shape(*job.out_shape[:2])
    result_ca = job.layout.channel_axis
    try:
        check_output(
            args.output,
            job.layout.result_dtype,
            result_shape,
            result_ca,
            label="-o",
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
    if args.reference is not None:
        reference = _read(args.reference)
        if reference.shape != tuple(result_shape):
            raise UsageError(
                f"--reference {args.reference} has shape {reference.shape} but the result will be "
                f"{tuple(result_shape)}; give the ground truth of the result (nothing was run)"
            )
    if job.regions:
        print(next((n for n in job.notes if n.startswith("fitting ")), f"fitting {len(job.tiles)} regions"))
    elif job.tiles is not None:
        th = max(b[1] - b[0] for b in job.tiles)
        tw = max(b[3] - b[2] for b in job.tiles)
        print(f"processing in {len(job.tiles)} tiles of {th}x{tw} pixels (overlap at least {job.tile_overlap})")
    t0 = time.perf_counter()
    out, interrupted = _run_job(job, args.quiet)
    mask_files = {f.name: Path(getattr(args, f.name)).name for f in deg.fields if f.kind == "mask"}
    provenance = _safe_provenance(
        dip_provenance, job, out, input_name=args.input, interrupted=interrupted, extra=mask_files
    )
    write_image(args.output, out.image, result_ca, meta=meta, provenance=provenance)
    print(f"wrote {args.output}" + (f": {_interrupted_note(out)}" if interrupted else ""))
    for note in out.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.history is not None:
        if out.history is None:
            if not out.notes:
                print("no history was recorded (history cadence 0)", file=sys.stderr)
        else:
            write_history_tiff(
                args.history,
                out.history,
                out.history_iterations,
                out.history_losses[:, 0] if out.history_losses.shape[1] == 1 else out.history_losses,
                channel_axis=result_ca,
                meta=meta,
                provenance=provenance,
            )
            print(f"wrote {args.history} ({len(out.history_iterations)} frames)")
    if interrupted:
        return 130
    _report(out, t0, noise_given=getattr(args, "noise_sigma", None) is not None)
    if reference is not None:
        p1, s1 = _quality(reference, out.image, ca)
        if reference.shape == image.shape:
            p0, s0 = _quality(reference, image, ca)
            print(f"PSNR {p0:.2f} dB -> {p1:.2f} dB, SSIM {s0:.4f} -> {s1:.4f} (vs {args.reference})")
        else:  # a result of another size than the input (up-scaling): no "before"
            print(f"PSNR {p1:.2f} dB, SSIM {s1:.4f} (vs {args.reference})")
    return 0


def _colorize(args) -> int:
    from .colorization.api import colorize, get_colorizer
    from .colorization.hints import read_hints_csv
    from .colorization.weights import weights_info
    from .io import check_distinct, check_output, check_output_path, read_image_meta
    from .provenance import colorize_provenance

    check_distinct({"-o": args.output}, {"the input": args.input, "--hints": args.hints, "--weights": args.weights})
    check_output_path(args.output, "-o")
    image = _read(args.input)
    meta = read_image_meta(args.input)
    ca = _channel_axis(image, args.channel_axis)
    hints = read_hints_csv(args.hints) if args.hints is not None else None
    out_dtype = np.uint8 if image.dtype == np.uint8 else np.float32
    spatial = image.shape if ca is None else tuple(n for i, n in enumerate(image.shape) if i != ca % image.ndim)
    check_output(
        args.output, out_dtype, spatial + (3,), -1, label="-o", probe=False, axes=meta.axes_for(spatial + (3,), -1)
    )
    t0 = time.perf_counter()
    rgb = colorize(
        image,
        method=args.method,
        hints=hints,
        hint_size=args.hint_size,
        weights=args.weights,
        device=args.device,
        seed=args.seed,
        channel_axis=ca,
    )
    from .io import write_image

    colorizer = get_colorizer(args.method)
    provenance = _safe_provenance(
        colorize_provenance,
        args.method,
        input_name=args.input,
        hints=hints,
        hint_size=args.hint_size,
        seed=args.seed if colorizer.iterative else None,
        weights=weights_info(args.method).filename if colorizer.needs_weights else None,
    )
    write_image(args.output, rgb, -1, meta=meta, provenance=provenance)
    n = f" from {len(hints)} hints" if hints else ""
    print(f"colorized with {args.method}{n} in {time.perf_counter() - t0:.1f} s; wrote {args.output}")
    return 0


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
    _report(out, t0)
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
        msg = " ".join(reword(exc, FLAGS).split())
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
