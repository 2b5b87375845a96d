"""Reading and writing image files: PNG, JPEG (8/16-bit), TIFF and OME-TIFF (any dtype), safely.

OME-Zarr folders (.zarr) are handed to :mod:`~napari_deep_prior.omezarr` (the ``zarr`` extra).
Every format's axes, pixel sizes and the provenance of a result are read by
:func:`read_image_meta` and written by :func:`write_image` (see its Notes for where they go).

Reading looks at the header first (:func:`read_header`: shape and dtype without decoding),
so an image too large for the memory, or a decompression bomb, is refused before a byte of
pixels is decoded.  Writing never destroys a file: :func:`atomic_output` writes beside the
target and renames into place only when complete; :func:`check_output` finds every problem
with an output (folder, permissions, format vs. shape/channels/dtype) before the work starts;
:func:`check_distinct` refuses an output that is one of the run's inputs, however spelled.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ImageHeader",
    "ImageMeta",
    "read_header",
    "read_image_meta",
    "read_image",
    "check_distinct",
    "check_output_path",
    "write_image",
    "check_output",
    "write_history_tiff",
    "read_history_tiff",
    "atomic_output",
    "TIFF_SUFFIXES",
    "ZARR_SUFFIX",
    "check_readable",
    "check_suffix",
    "IMAGE_SUFFIXES",
    "MAX_PLAIN_PIXELS",
]

TIFF_SUFFIXES = {".tif", ".tiff"}
_PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg"}
#: An OME-Zarr folder (the ``zarr`` extra: :mod:`~napari_deep_prior.omezarr`).
ZARR_SUFFIX = ".zarr"
#: Every suffix this module reads and writes (.zarr: a folder).
IMAGE_SUFFIXES = frozenset(TIFF_SUFFIXES | _PLAIN_SUFFIXES | {ZARR_SUFFIX})


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Why a file could not be written, in a user's words, by errno.
_WHY_NOT_WRITTEN = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
}


def _why_not_written(exc: OSError) -> str:
    return _WHY_NOT_WRITTEN.get(exc.errno, exc.strerror or str(exc))


def _write_error(path: Path, exc: OSError) -> OSError:
    """An OSError re-worded for a user: what failed, why, and that ``path`` was not changed."""
    why = _why_not_written(exc)
    if exc.errno is None:  # e.g. numpy's "2304 requested and 956 written": a short write
        import shutil

        with contextlib.suppress(OSError):
            free = shutil.disk_usage(path.parent if str(path.parent) else ".").free
            if free < (1 << 20):
                why = f"no space left on the device ({free:,} bytes free; {exc})"
    kept = "the existing file was not changed" if path.exists() else "nothing was written"
    return OSError(exc.errno, f"cannot write {path}: {why} ({kept}); free space or choose another folder")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, keep_mode: bool = True) -> Iterator[Path]:
    """Write a file all at once: yield a temporary path beside ``path``, rename it into place on success.

    The temporary file lies in the target's folder (so the rename is atomic) and keeps the
    target's suffix (so writers that pick the format from it still work). On success its data
    are flushed to disk and it replaces ``path`` in one step; on any failure or interruption
    (an exception, KeyboardInterrupt, SystemExit) it is removed and an existing ``path`` is left
    exactly as it was.  A file replaced keeps its permission bits; a new one gets the usual
    ``0o666 & ~umask``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_output(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=folder)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
            mode = path.stat().st_mode & 0o7777 if keep_mode and path.exists() else 0o666 & ~_umask()
            os.chmod(tmp, mode)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            if exc.filename is None and "cannot write" in str(exc):
                raise  # already worded by an inner atomic_output
            raise _write_error(path, exc) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG/JPEG images above this many pixels are refused as possible decompression bombs
#: (Pillow's own refusal threshold, twice ``PIL.Image.MAX_IMAGE_PIXELS``); TIFF is not limited
#: by a pixel count but, like every format, by the memory available.
MAX_PLAIN_PIXELS = 2 * 89_478_485
#: Bytes of working memory a restoration needs per decoded element beyond the decoded image
#: (a float32 normalised copy and a float32 estimate): the floor below which reading is refused.
WORKING_BYTES_PER_ELEMENT = 8


def check_suffix(path: str | os.PathLike, writing: bool = False) -> str:
    """The lower-case suffix of ``path``; ValueError (naming the supported types) when unsupported."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(
            f"{'cannot write' if writing else 'cannot read'} {path}: unsupported file type "
            f"{suffix or '(none)'}; use .png, .jpg, .jpeg, .tif, .tiff (.ome.tif for OME-TIFF) or .zarr (OME-Zarr)"
        )
    return suffix


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, before any pixel is decoded.

    Attributes
    ----------
    path : Path
    format : {"tiff", "png", "jpeg"}
    shape : tuple of int
        The array :func:`read_image` returns (for palette images, up to 4 channels).
    dtype : numpy dtype
    hw : (int, int)
        Height and width of one 2D plane (for a TIFF: a guess, the last two axes that are not
        a colour axis of 3 or 4).
    """

    path: Path
    format: str
    shape: tuple[int, ...]
    dtype: np.dtype
    hw: tuple[int, int] = (0, 0)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.float64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def describe(self) -> str:
        dims = "x".join(str(n) for n in self.shape)
        return f"{dims} {self.dtype} ({_gb(self.nbytes)} decoded)"


def _check_file(path: Path) -> str:
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an image file; give one image file")
    suffix = check_suffix(path, writing=False)
    if not path.exists():
        raise FileNotFoundError(f"no such image file: {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): not an image")
    return suffix


def _first_bytes(path: Path, n: int = 16) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


_PIL_MODES = {
    "1": ((), np.bool_),
    "L": ((), np.uint8),
    "LA": ((2,), np.uint8),
    "La": ((2,), np.uint8),
    "P": ((4,), np.uint8),
    "PA": ((4,), np.uint8),
    "RGB": ((3,), np.uint8),
    "RGBA": ((4,), np.uint8),
    "RGBa": ((4,), np.uint8),
    "RGBX": ((4,), np.uint8),
    "CMYK": ((4,), np.uint8),
    "YCbCr": ((3,), np.uint8),
    "I;16": ((), np.uint16),
    "I;16B": ((), np.uint16),
    "I;16L": ((), np.uint16),
    "I": ((), np.int32),
    "F": ((), np.float32),
}


def read_header(path: str | os.PathLike) -> ImageHeader:
    """Shape and dtype of an image file from its header, without decoding the pixels.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        A folder, an empty file, or a file that is not an image of its kind (the message says
        what the file's first bytes are).
    """
    path = Path(path)
    if path.suffix.lower() == ZARR_SUFFIX:
        from .omezarr import read_zarr_header

        return read_zarr_header(path)[0]
    suffix = _check_file(path)
    if suffix in TIFF_SUFFIXES:
        import tifffile

        try:
            with tifffile.TiffFile(path) as tf:
                if not tf.series:
                    raise ValueError("it holds no image")
                series = tf.series[0]
                shape = tuple(int(n) for n in series.shape)
                spatial = shape[:-1] if len(shape) >= 3 and shape[-1] in (3, 4) else shape
                hw = tuple(spatial[-2:]) if len(spatial) >= 2 else (1, spatial[0] if spatial else 1)
                return ImageHeader(path, "tiff", shape, np.dtype(series.dtype), hw)
        except (tifffile.TiffFileError, ValueError, OSError, IndexError, struct.error) as exc:
            raise ValueError(f"{path} is not a readable TIFF file ({exc}; first bytes {_first_bytes(path)!r})") from exc
    from PIL import Image, UnidentifiedImageError

    kind = "PNG" if suffix == ".png" else "JPEG"
    try:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # our own limit follows, with the size in the message
        try:
            with Image.open(path) as im:
                width, height = im.size
                mode = im.mode
                n_frames = getattr(im, "n_frames", 1)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        head = _first_bytes(path)
        what = "a text file" if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "not an image"
        raise ValueError(
            f"{path} is not a {kind} image: it is {what} (its first bytes are {head!r}); "
            f"check the file, or save it again as {kind}"
        ) from exc
    extra, dtype = _PIL_MODES.get(mode, ((4,), np.uint8))
    shape = ((n_frames,) if n_frames > 1 else ()) + (height, width) + extra
    return ImageHeader(path, kind.lower(), shape, np.dtype(dtype), (height, width))


def check_readable(header: ImageHeader, available_bytes: int | None = None) -> None:
    """Refuse an image that cannot be decoded and worked on in memory, from its header alone.

    Raises
    ------
    ImageTooLargeError
        A PNG/JPEG above :data:`MAX_PLAIN_PIXELS` pixels (a possible decompression bomb), or any
        image whose decoded pixels plus the working copies of a restoration exceed
        ``available_bytes``.
    """
    from .errors import ImageTooLargeError

    if header.format in ("png", "jpeg"):
        h, w = header.hw
        if h * w > MAX_PLAIN_PIXELS:
            raise ImageTooLargeError(
                f"{header.path} claims {w}x{h} pixels ({h * w / 1e6:.0f} megapixels, {header.describe()}); "
                f"{header.format.upper()} files above {MAX_PLAIN_PIXELS / 1e6:.0f} megapixels are refused as a "
                "possible decompression bomb (a small file that decodes to gigabytes). If the image is real, "
                "save it as a TIFF, or crop it"
            )
    if available_bytes is None:
        return
    need = header.nbytes + WORKING_BYTES_PER_ELEMENT * header.size
    if need > available_bytes:
        raise ImageTooLargeError(
            f"{header.path} is {header.describe()}: reading it and restoring it needs at least "
            f"{_gb(need)} of memory, but {_gb(available_bytes)} is available; crop it or split it "
            "into smaller files first (or run on a machine with more memory)"
        )


def read_image(path: str | os.PathLike, *, available_bytes: int | None = None) -> np.ndarray:
    """Read an image file into an array (grey (H, W), colour (H, W, 3|4) or a TIFF stack).

    The header is read first and checked (:func:`check_readable`) before decoding.

    Parameters
    ----------
    path : path-like
    available_bytes : int, optional
        Memory available for the image and its working copies; None: no memory check.
    """
    from .errors import ImageTooLargeError

    header = read_header(path)
    check_readable(header, available_bytes)
    path = header.path
    try:
        if header.format == "zarr":
            from .omezarr import read_zarr

            return read_zarr(path)
        if header.format == "tiff":
            import tifffile

            return np.asarray(tifffile.imread(path))
        import warnings

        import imageio.v3 as iio
        from PIL import Image

        with warnings.catch_warnings():  # Pillow's bomb warning: check_readable has decided
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return np.asarray(iio.imread(path))
    except MemoryError as exc:
        raise ImageTooLargeError(
            f"not enough memory to decode {path} ({header.describe()}); crop it or split it first"
        ) from exc
    except (OSError, ValueError, RuntimeError, SyntaxError, KeyError) as exc:
        raise ValueError(
            f"{path} is damaged or truncated: its header says {header.describe()} but decoding failed ({exc})"
        ) from exc


# -- metadata: axes, pixel sizes, provenance ------------------------------------------------

#: Unit spellings met in files -> the unit kept (OME's symbols; the micro sign U+00B5 for micro).
_UNITS = {
    "µm": "µm",
    "μm": "µm",  # Greek mu
    "um": "µm",
    "micron": "µm",
    "microns": "µm",
    "micrometer": "µm",
    "micrometre": "µm",
    "\\u00b5m": "µm",  # ImageJ's escape
    "nm": "nm",
    "nanometer": "nm",
    "nanometre": "nm",
    "mm": "mm",
    "millimeter": "mm",
    "millimetre": "mm",
    "cm": "cm",
    "centimeter": "cm",
    "centimetre": "cm",
    "m": "m",
    "meter": "m",
    "metre": "m",
    "in": "in",
    "inch": "in",
    "inches": "in",
    "å": "Å",
    "angstrom": "Å",
    "s": "s",
    "sec": "s",
    "second": "s",
    "seconds": "s",
    "ms": "ms",
    "msec": "ms",
    "millisecond": "ms",
    "min": "min",
    "minute": "min",
    "h": "h",
    "hour": "h",
}
#: Length units in metres (to put all ImageJ axes in one unit, and resolution tags in cm).
_METRES = {"nm": 1e-9, "µm": 1e-6, "mm": 1e-3, "cm": 1e-2, "m": 1.0, "in": 0.0254, "Å": 1e-10}
_SECONDS = {"ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}
#: TIFF ResolutionUnit values.
_RES_INCH, _RES_CM = 2, 3
#: What ImageJ can hold: dtypes (RGB: uint8 only) and the order of its axes.
_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_IMAGEJ_ORDER = "TZCYXS"
#: Pixel types OME-TIFF can hold.
_OME_DTYPES = tuple(
    np.dtype(t) for t in (np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32, np.float32, np.float64, np.bool_)
)
_OME_SUFFIXES = (".ome.tif", ".ome.tiff")


def _unit(text) -> str | None:
    """A unit as kept here (``"µm"``, ``"nm"``, ``"s"``...), None for none or pixels."""
    if text is None:
        return None
    t = str(text).strip()
    if not t or t.lower() in ("pixel", "pixels", "px", "none"):
        return None
    return _UNITS.get(t.lower(), _UNITS.get(t, t))


def _convert(value: float, unit: str, to: str) -> float | None:
    """``value`` in ``unit`` expressed in ``to`` (None when they are not both lengths or times)."""
    if unit == to:
        return value
    for table in (_METRES, _SECONDS):
        if unit in table and to in table:
            return value * table[unit] / table[to]
    return None


def is_ome_path(path: str | os.PathLike) -> bool:
    """True for a path ending in .ome.tif or .ome.tiff (written as OME-TIFF)."""
    return str(path).lower().endswith(_OME_SUFFIXES)


@dataclass(frozen=True)
class ImageMeta:
    """What an image file says about its pixels besides their values.

    Attributes
    ----------
    axes : str
        One letter per axis of the array :func:`read_image` returns: ``T`` time, ``Z`` depth,
        ``C`` channel (colour samples too), ``Y``, ``X``, and tifffile's ``Q`` (unknown) or
        ``I`` (a sequence of images); "" when unknown.  E.g. "ZYX", "YXC", "TYX".
    pixel_sizes : mapping of str -> (float, str)
        Per axis letter, the size of one pixel (or the time between frames) and its unit
        (``{"Z": (0.5, "µm"), "Y": (0.1, "µm"), "X": (0.1, "µm")}``); axes without a
        calibration are absent.  Units are kept as OME writes them ("µm" with the micro
        sign, "nm", "mm", "cm", "in", "s"...).
    provenance : dict or None
        The record of how the file was made, when this package wrote it
        (:mod:`~napari_deep_prior.provenance`).
    kind : {"imagej", "ome", "tiff", "png", "jpeg", "ome-zarr", ""}
        The flavour of the file it was read from: an output keeps the ImageJ flavour when it
        can (:func:`write_image`).

    Examples
    --------
    >>> m = ImageMeta("ZYX", {"Z": (0.5, "µm"), "Y": (0.1, "µm"), "X": (0.1, "µm")})
    >>> m.zoomed(2).pixel_sizes["X"]
    (0.05, 'µm')
    """

    axes: str = ""
    pixel_sizes: Mapping[str, tuple[float, str]] = field(default_factory=dict)
    provenance: dict | None = None
    kind: str = ""

    def zoomed(self, factor: int) -> ImageMeta:
        """The metadata of a result with ``factor`` times the pixels along Y and X (up-scaling)."""
        if factor == 1:
            return self
        sizes = {a: ((v / factor, u) if a in ("Y", "X") else (v, u)) for a, (v, u) in self.pixel_sizes.items()}
        return replace(self, pixel_sizes=sizes)

    def axes_for(self, shape: tuple[int, ...], channel_axis: int | None) -> str | None:
        """The axes of an array of ``shape`` made from this file's image, or None if they cannot be told.

        The same axes when the dimensions match; otherwise the file's non-channel axes with a
        ``C`` where the array has its channels (a grey image colorized: "YX" -> "YXC").
        """
        if not self.axes:
            return None
        ndim = len(shape)
        ca = None if channel_axis is None else channel_axis % ndim
        if len(self.axes) == ndim and (ca is None or self.axes[ca] == "C"):
            return self.axes
        letters = [a for a in self.axes if a != "C"]
        if len(letters) != ndim - (ca is not None):
            return None
        if ca is not None:
            letters.insert(ca, "C")
        return "".join(letters)

    def describe(self) -> list[str]:
        """Readable lines: the axes and the pixel sizes."""
        lines = [f"axes: {self.axes or 'unknown'}"]
        if self.pixel_sizes:
            sizes = ", ".join(f"{a} {v:.6g} {u}" for a, (v, u) in self.pixel_sizes.items())
            lines.append(f"pixel sizes: {sizes}")
        else:
            lines.append("pixel sizes: none recorded")
        return lines

    def to_json(self) -> dict:
        """A JSON-serialisable dict of the axes and pixel sizes (no provenance)."""
        return {
            "axes": self.axes,
            "pixel_sizes": {a: [float(v), str(u)] for a, (v, u) in self.pixel_sizes.items()},
            "kind": self.kind,
        }


def _axes_letters(axes: str) -> str:
    """tifffile's axes with colour samples (``S``) called channels (``C``) unless both occur."""
    return axes if "C" in axes else axes.replace("S", "C")


def _rational(value) -> float | None:
    """A TIFF RATIONAL tag value ((num, den) or a number) as a float; None for 0 or missing."""
    try:
        if isinstance(value, tuple):
            num, den = value[0], value[1]
            return float(num) / float(den) if num and den else None
        return float(value) if value else None
    except (TypeError, ValueError, ZeroDivisionError, IndexError):
        return None


def _sizes_from_tags(page) -> dict[str, tuple[float, str]]:
    """X and Y pixel sizes from a TIFF page's XResolution/YResolution (pixels per ResolutionUnit)."""
    tags = page.tags
    unit_tag = tags.get("ResolutionUnit")
    unit_code = int(unit_tag.value) if unit_tag is not None else _RES_INCH
    unit = {_RES_INCH: "in", _RES_CM: "cm"}.get(unit_code)
    if unit is None:
        return {}
    per_unit = {}
    for axis, name in (("X", "XResolution"), ("Y", "YResolution")):
        tag = tags.get(name)
        value = _rational(tag.value) if tag is not None else None
        if value:
            per_unit[axis] = value
    if all(v == 1.0 for v in per_unit.values()):
        return {}  # 1 pixel per unit: the writers' "no resolution" default, not a calibration
    sizes = {a: (1.0 / v, unit) for a, v in per_unit.items()}
    if unit == "cm":  # micrometres read better at microscopy scales
        sizes = {a: ((v * 1e4, "µm") if v < 0.1 else (v, u)) for a, (v, u) in sizes.items()}
    return sizes


def _imagej_meta(tf, axes: str) -> tuple[dict, dict | None]:
    from .provenance import provenance_from_json

    md = tf.imagej_metadata or {}
    unit = _unit(md.get("unit"))
    sizes: dict[str, tuple[float, str]] = {}
    if unit is not None:
        page = tf.pages[0]
        for axis, name in (("X", "XResolution"), ("Y", "YResolution")):
            tag = page.tags.get(name)
            per_unit = _rational(tag.value) if tag is not None else None
            if per_unit:
                sizes[axis] = (1.0 / per_unit, _unit(md.get(f"{axis.lower()}unit")) or unit)
        if "Z" in axes and md.get("spacing"):
            sizes["Z"] = (float(md["spacing"]), _unit(md.get("zunit")) or unit)
    if "T" in axes and md.get("finterval"):
        sizes["T"] = (float(md["finterval"]), _unit(md.get("tunit")) or "s")
    ordered = {a: sizes[a] for a in axes if a in sizes}
    return ordered, provenance_from_json(md.get("Info"))


def _ome_meta(tf, axes: str) -> tuple[dict, dict | None]:
    import xml.etree.ElementTree as ET

    from .provenance import SOFTWARE, provenance_from_json

    root = ET.fromstring(tf.ome_metadata)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    image = root.find(f"{ns}Image")
    pixels = image.find(f"{ns}Pixels") if image is not None else None
    sizes: dict[str, tuple[float, str]] = {}
    if pixels is not None:
        for axis in ("X", "Y", "Z"):
            value = pixels.get(f"PhysicalSize{axis}")
            if value is not None and float(value) > 0:
                sizes[axis] = (float(value), _unit(pixels.get(f"PhysicalSize{axis}Unit", "µm")) or "µm")
        if pixels.get("TimeIncrement") is not None and float(pixels.get("TimeIncrement")) > 0:
            sizes["T"] = (float(pixels.get("TimeIncrement")), _unit(pixels.get("TimeIncrementUnit", "s")) or "s")
    provenance = None
    for ann in root.iter(f"{ns}MapAnnotation"):
        if ann.get("Namespace") != SOFTWARE:
            continue
        for m in ann.iter(f"{ns}M"):
            if m.get("K") == "provenance":
                provenance = provenance_from_json(m.text)
    return {a: sizes[a] for a in axes if a in sizes}, provenance


def _plain_tiff_meta(tf, axes: str) -> tuple[dict, dict | None]:
    from .provenance import LAYER_KEY, is_provenance

    shaped = tf.shaped_metadata[0] if tf.is_shaped and tf.shaped_metadata else {}
    sizes: dict[str, tuple[float, str]] = {}
    for axis, pair in (shaped.get("pixel_sizes") or {}).items():
        with contextlib.suppress(TypeError, ValueError, IndexError):
            sizes[str(axis)] = (float(pair[0]), _unit(pair[1]) or str(pair[1]))
    if not sizes:
        sizes = _sizes_from_tags(tf.pages[0])
    provenance = shaped.get(LAYER_KEY)
    return {a: sizes[a] for a in axes if a in sizes}, (provenance if is_provenance(provenance) else None)


#: What a damaged metadata block can raise while it is parsed.
_BAD_METADATA = (ValueError, TypeError, KeyError, AttributeError, IndexError, ZeroDivisionError, SyntaxError)


def read_image_meta(path: str | os.PathLike) -> ImageMeta:
    """The axes, pixel sizes and provenance of an image file, without decoding the pixels.

    Read with tifffile from ImageJ TIFFs (the series' axes; X/Y resolution tags as pixels per
    the ``unit`` of the ImageJ metadata, ``spacing`` for Z, ``finterval`` for T; the
    provenance from the ``Info`` entry), OME-TIFFs (``PhysicalSizeX/Y/Z`` with their units,
    ``TimeIncrement``; the provenance from a MapAnnotation of namespace
    ``napari-deep-prior``) and plain TIFFs (the pixel sizes and provenance this package
    writes into the JSON ImageDescription, else the XResolution/YResolution tags and their
    ResolutionUnit, centimetres reported in µm).  PNG and JPEG: the axes (and a PNG's
    provenance from its ``napari-deep-prior`` text chunk).  Damaged metadata is skipped:
    what can be read is returned.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`read_header`: no such file, not an image.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np, tifffile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "stack.tif"
    >>> tifffile.imwrite(p, np.zeros((2, 8, 8), np.uint16), imagej=True, resolution=(10, 10),
    ...                  metadata={"axes": "ZYX", "spacing": 0.5, "unit": "um"})
    >>> read_image_meta(p).pixel_sizes
    {'Z': (0.5, 'µm'), 'Y': (0.1, 'µm'), 'X': (0.1, 'µm')}
    """
    if Path(path).suffix.lower() == ZARR_SUFFIX:
        from .omezarr import read_zarr_header

        return read_zarr_header(path)[1]
    header = read_header(path)
    path = header.path
    if header.format == "tiff":
        import tifffile

        try:
            with tifffile.TiffFile(path) as tf:
                axes = _axes_letters(tf.series[0].axes)
                kind = "imagej" if tf.is_imagej else "ome" if tf.is_ome else "tiff"
                reader = {"imagej": _imagej_meta, "ome": _ome_meta, "tiff": _plain_tiff_meta}[kind]
                try:
                    sizes, provenance = reader(tf, axes)
                except _BAD_METADATA:  # damaged metadata: the axes are still worth having
                    sizes, provenance = {}, None
                return ImageMeta(axes, sizes, provenance, kind)
        except (tifffile.TiffFileError, OSError, IndexError, struct.error) as exc:
            raise ValueError(f"{path} is not a readable TIFF file ({exc})") from exc
    shape = header.shape
    channels = "" if tuple(shape[-2:]) == tuple(header.hw) else "C"
    frames = "T" * (len(shape) - 2 - len(channels))  # an animated PNG's frames
    provenance = None
    if header.format == "png":
        from PIL import Image

        from .provenance import SOFTWARE, provenance_from_json

        with contextlib.suppress(OSError, ValueError, SyntaxError), Image.open(path) as im:
            provenance = provenance_from_json((getattr(im, "text", None) or {}).get(SOFTWARE))
    return ImageMeta(frames + "YX" + channels, {}, provenance, header.format)


# -- outputs ---------------------------------------------------------------------------


def _identity(path: Path) -> tuple:
    """What makes two spellings the same file: the inode when it exists, else the real path."""
    try:
        st = path.stat()
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.normcase(os.path.realpath(path)))


def check_distinct(
    outputs: Mapping[str, os.PathLike | str | None], inputs: Mapping[str, os.PathLike | str | None]
) -> None:
    """Refuse an output that is one of the inputs, or another output, however the path is spelled.

    Parameters
    ----------
    outputs, inputs : mapping of label -> path
        The labels are the front end's words for each path (``"-o"``, ``"--mask"``, ...);
        None values are ignored.  Symbolic links, ``..`` and hard links are seen through.

    Raises
    ------
    ValueError
        Naming both labels and the path.
    """
    seen: dict[tuple, tuple[str, Path, str]] = {}
    for label, p in inputs.items():
        if p is not None:
            p = Path(p)
            seen.setdefault(_identity(p), (label, p, "input"))
    for label, p in outputs.items():
        if p is None:
            continue
        p = Path(p)
        ident = _identity(p)
        # a not-yet-existing output is compared by real path with the inputs' real paths too
        idents = {ident, ("path", os.path.normcase(os.path.realpath(p)))}
        for other in list(seen):
            if other[0] == "inode":
                rp = os.path.normcase(os.path.realpath(seen[other][1]))
                if ("path", rp) in idents:
                    idents.add(other)
        hit = next((seen[i] for i in idents if i in seen), None)
        if hit is not None:
            other_label, other_path, kind = hit
            why = (
                "an input of this run: writing there would destroy it"
                if kind == "input"
                else "another output of this run: two outputs cannot share a file"
            )
            raise ValueError(
                f"{label} {p} is the same file as {other_label} {other_path}, {why}; "
                "choose another path (nothing was written)"
            )
        seen[ident] = (label, p, "output")


def check_output_path(path: str | os.PathLike, label: str = "the output") -> str:
    """Check that a file can be written at ``path`` (before any work); return its suffix.

    The suffix must be a supported image type, ``path`` must not be a folder, its folder must
    exist, be a folder, and accept a new file (tried for real, so permissions, read-only file
    systems and quotas are all seen).
    """
    path = Path(path)
    if path.suffix.lower() == ZARR_SUFFIX:
        from .omezarr import check_zarr_path

        check_zarr_path(path, label)
    elif path.is_dir():
        raise ValueError(f"{label} {path} is a folder; give a file name in it, e.g. {path / 'result.tif'}")
    suffix = check_suffix(path, writing=True)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.exists():
        raise FileNotFoundError(f"the folder of {label} {path} does not exist: create {folder} first")
    if not folder.is_dir():
        raise ValueError(f"{label} {path}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".probe", dir=folder)
    except OSError as exc:
        why = _why_not_written(exc)
        raise OSError(exc.errno, f"cannot write {label} {path}: {why} in {folder}; choose another folder") from None
    os.close(fd)
    os.unlink(probe)
    if path.exists() and not os.access(path, os.W_OK) and os.geteuid() != 0:
        raise OSError(errno.EACCES, f"{label} {path} exists and is read-only; choose another path or make it writable")
    return suffix


def _guess_channels(shape: tuple[int, ...]) -> int | None:
    return -1 if len(shape) >= 3 and shape[-1] in (3, 4) else None


def check_output(
    path: str | os.PathLike,
    dtype,
    shape: tuple[int, ...],
    channel_axis: int | None | str = "auto",
    *,
    label: str = "the output",
    probe: bool = True,
    axes: str | None = None,
) -> str:
    """Raise before any work is done if an image of this dtype and shape cannot be written to ``path``.

    Parameters
    ----------
    path : path-like
    dtype, shape
        Of the array that will be written.
    channel_axis : int, None or "auto"
        Where the colour channels of the array are ("auto": a last axis of 3 or 4).
    label : str
        The front end's name of this output, for messages (e.g. "-o").
    probe : bool
        Also check the folder (exists, writable: :func:`check_output_path`).
    axes : str, optional
        The array's axes (:meth:`ImageMeta.axes_for`), for the formats that need them
        (OME-Zarr orders its axes time, channel, space).

    Returns
    -------
    suffix : str
    """
    path = Path(path)
    suffix = check_output_path(path, label) if probe else check_suffix(path, writing=True)
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in shape)
    if suffix == ZARR_SUFFIX:
        from .omezarr import check_zarr_output

        ca = _guess_channels(shape) if channel_axis == "auto" else channel_axis
        check_zarr_output(path, dtype, shape, ca, axes, label)
        return suffix
    if suffix in TIFF_SUFFIXES:
        if is_ome_path(path) and dtype not in _OME_DTYPES:
            raise ValueError(
                f"{label} {path}: OME-TIFF cannot hold {dtype} pixels (it takes 8-32 bit integers, "
                f"float32 and float64); write a plain .tif ({str(path)[: -len('.ome' + suffix)]}.tif) "
                "or choose the result type"
            )
        return suffix
    kind = "JPEG" if suffix in (".jpg", ".jpeg") else "PNG"
    tif = f"write a .tif instead ({path.with_suffix('.tif')})"
    if channel_axis == "auto":
        channel_axis = _guess_channels(shape)
    if channel_axis is not None:
        ca = channel_axis % len(shape)
        if ca != len(shape) - 1:
            raise ValueError(f"{kind} stores colour last; this result has its channels on axis {ca}: {tif}")
        planes, channels = shape[:-1], shape[-1]
    else:
        planes, channels = shape, None
    if len(planes) != 2:
        raise ValueError(
            f"{label} {path}: the result is a stack of shape {shape} and {kind} holds one 2D image "
            f"(a stack would become {'an animated PNG' if kind == 'PNG' else 'an error'}); {tif}"
        )
    allowed_channels = (None, 1, 3) if kind == "JPEG" else (None, 1, 2, 3, 4)
    if channels not in allowed_channels:
        what = "with alpha (RGBA)" if channels == 4 else f"of {channels} channels"
        takes = "grey or RGB" if kind == "JPEG" else "grey, grey+alpha, RGB or RGBA"
        raise ValueError(f"{label} {path}: {kind} cannot hold an image {what} ({kind} takes {takes}); {tif}")
    allowed = (np.uint8,) if kind == "JPEG" else (np.uint8, np.uint16)
    if dtype not in allowed:
        raise ValueError(
            f"cannot write a {dtype} image to {suffix} ({label} {path}): "
            f"{'JPEG takes uint8' if kind == 'JPEG' else 'PNG takes uint8 or uint16'}; "
            "write a .tif to keep the data as it is"
        )
    if kind == "PNG" and dtype == np.uint16 and channels not in (None, 1):
        raise ValueError("16-bit PNG output is supported for grey images only; write a .tif to keep 16-bit colour")
    return suffix


def _tiff_axes(axes: str | None, rgb: bool) -> str | None:
    """Our axes as tifffile writes them: the colour samples of an RGB image are ``S``."""
    if axes is None:
        return None
    return axes[:-1] + "S" if rgb and axes.endswith("C") else axes


def _resolution(sizes: Mapping[str, tuple[float, str]]) -> dict:
    """tifffile's ``resolution``/``resolutionunit`` for the X/Y sizes (pixels per cm or inch), or {}."""
    if "X" not in sizes or "Y" not in sizes:
        return {}
    (xs, xu), (ys, yu) = sizes["X"], sizes["Y"]
    if xu == "in" and yu == "in":
        return {"resolution": (1.0 / xs, 1.0 / ys), "resolutionunit": _RES_INCH}
    x_cm, y_cm = _convert(xs, xu, "cm"), _convert(ys, yu, "cm")
    if x_cm and y_cm and xu in _METRES and yu in _METRES:
        return {"resolution": (1.0 / x_cm, 1.0 / y_cm), "resolutionunit": _RES_CM}
    return {}


def _imagej_unit(unit: str) -> str:
    """A unit as ImageJ writes it (micrometres: "micron"; other non-ASCII: ImageJ's \\uXXXX)."""
    if unit == "µm":
        return "micron"
    return "".join(c if ord(c) < 128 else f"\\u{ord(c):04X}" for c in unit)


def _imagej_kwargs(image: np.ndarray, axes: str | None, rgb: bool, sizes: Mapping, provenance) -> dict | None:
    """tifffile's keywords for an ImageJ hyperstack of ``image``, or None when ImageJ cannot hold it."""
    from .provenance import provenance_to_json

    tiff_axes = _tiff_axes(axes, rgb)
    if tiff_axes is None or image.dtype not in _IMAGEJ_DTYPES or (rgb and image.dtype != np.uint8):
        return None
    if len(set(tiff_axes)) != len(tiff_axes) or any(a not in _IMAGEJ_ORDER for a in tiff_axes):
        return None
    order = [_IMAGEJ_ORDER.index(a) for a in tiff_axes]
    if order != sorted(order) or not tiff_axes.endswith(("YX", "YXS")) or (("S" in tiff_axes) != rgb):
        return None
    metadata: dict[str, Any] = {"axes": tiff_axes}
    kw: dict[str, Any] = {"imagej": True, "photometric": "rgb" if rgb else "minisblack", "metadata": metadata}
    lengths = {a: sizes[a] for a in ("X", "Y", "Z") if a in sizes and sizes[a][1] in _METRES}
    if lengths:
        unit = lengths.get("X", next(iter(lengths.values())))[1]
        in_unit = {a: _convert(v, u, unit) for a, (v, u) in lengths.items()}
        metadata["unit"] = _imagej_unit(unit)
        if "X" in in_unit and "Y" in in_unit:
            kw["resolution"] = (1.0 / in_unit["X"], 1.0 / in_unit["Y"])
        if "Z" in in_unit:
            metadata["spacing"] = in_unit["Z"]
    if "T" in sizes:
        seconds = _convert(*sizes["T"], "s")
        if seconds is not None:
            metadata["finterval"] = seconds
    if provenance is not None:
        metadata["Info"] = provenance_to_json(provenance)
    return kw


def _ome_kwargs(image: np.ndarray, axes: str | None, channel_axis: int | None, rgb: bool, sizes, provenance) -> dict:
    """tifffile's keywords for an OME-TIFF of ``image``."""
    from .provenance import SOFTWARE, provenance_to_json

    ca = None if channel_axis is None else channel_axis % image.ndim
    channels_last = ca is not None and ca == image.ndim - 1
    if axes is None:  # no metadata: the package's own convention (planes are the last two non-channel axes)
        lead = image.ndim - 2 - (ca is not None)
        axes = ("TZ"[-lead:] if 0 < lead <= 2 else "Q" * lead) + "YX"
        if ca is not None:
            axes = axes[:ca] + "C" + axes[ca:]
    # channels last are stored as interleaved samples (OME keeps them as its C dimension)
    tiff_axes = axes[:-1] + "S" if channels_last and axes.endswith("C") else axes
    metadata: dict[str, Any] = {"axes": tiff_axes}
    for axis in ("X", "Y", "Z"):
        if axis in sizes:
            metadata[f"PhysicalSize{axis}"] = float(sizes[axis][0])
            metadata[f"PhysicalSize{axis}Unit"] = sizes[axis][1]
    if "T" in sizes:
        metadata["TimeIncrement"] = float(sizes["T"][0])
        metadata["TimeIncrementUnit"] = sizes["T"][1]
    if provenance is not None:
        metadata["MapAnnotation"] = {"Namespace": SOFTWARE, "Value": {"provenance": provenance_to_json(provenance)}}
    kw: dict[str, Any] = {"ome": True, "metadata": metadata, "photometric": "rgb" if rgb else "minisblack"}
    if channels_last:
        kw["planarconfig"] = "contig"
    return kw


def _plain_kwargs(axes: str | None, rgb: bool, sizes: Mapping, provenance) -> dict:
    """tifffile's keywords for a plain TIFF: resolution tags and the JSON ImageDescription."""
    from .provenance import LAYER_KEY

    metadata: dict[str, Any] = {}
    if axes is not None:
        metadata["axes"] = _tiff_axes(axes, rgb)
    if sizes:
        metadata["pixel_sizes"] = {a: [float(v), str(u)] for a, (v, u) in sizes.items()}
    if provenance is not None:
        metadata[LAYER_KEY] = provenance
    return {"photometric": "rgb" if rgb else "minisblack", "metadata": metadata, **_resolution(sizes)}


def _output_sizes(meta: ImageMeta | None, axes: str | None) -> dict[str, tuple[float, str]]:
    """The pixel sizes of ``meta`` for the axes of an output (Y and X at least: planes are the last two)."""
    if meta is None:
        return {}
    keep = axes if axes is not None else "YX"
    return {a: meta.pixel_sizes[a] for a in keep if a in meta.pixel_sizes}


def write_image(
    path: str | os.PathLike,
    image: np.ndarray,
    channel_axis: int | None | str = "auto",
    *,
    meta: ImageMeta | None = None,
    provenance: Mapping | None = None,
) -> None:
    """Write ``image`` all at once (:func:`atomic_output`), with its axes, pixel sizes and provenance.

    PNG takes uint8 (and uint16 grey), JPEG uint8, TIFF any dtype.  The format is checked
    first: an existing file is never touched by a refused write.

    Parameters
    ----------
    path : path-like
        .png, .jpg/.jpeg, .tif/.tiff; .ome.tif/.ome.tiff writes an OME-TIFF.
    image : ndarray
    channel_axis : int, None or "auto"
        Where the channels of ``image`` are ("auto": a last axis of 3 or 4).
    meta : ImageMeta, optional
        The input's metadata (:func:`read_image_meta`, ``.zoomed(f)`` for an up-scaled
        result): its axes (adapted to ``image`` by :meth:`ImageMeta.axes_for`) and pixel
        sizes are written to a TIFF.
    provenance : dict, optional
        How the result was made (:mod:`~napari_deep_prior.provenance`).

    Notes
    -----
    Where the metadata go:

    - **OME-TIFF** (the path ends in .ome.tif): axes (DimensionOrder), ``PhysicalSizeX/Y/Z``
      with their units, ``TimeIncrement``; the provenance as JSON in a MapAnnotation of
      namespace ``napari-deep-prior`` (key ``provenance``).
    - **ImageJ hyperstack**, when ``meta`` was read from an ImageJ TIFF and ImageJ can hold
      the result (uint8, uint16 or float32; RGB uint8; axes in ImageJ's order TZCYXS): the
      axes, X/Y resolution in pixels per ``unit`` (all lengths in the X axis' unit),
      ``spacing`` (Z), ``finterval`` (T, seconds); the provenance as JSON in the ``Info``
      entry (ImageJ's *Image > Show Info*).
    - **Plain TIFF** otherwise: XResolution/YResolution in pixels per centimetre (lengths)
      or per inch, and a JSON ImageDescription holding the axes, every axis' size and unit
      (``pixel_sizes``) and the provenance (key ``napari_deep_prior``).
    - **PNG**: the provenance as JSON in a ``tEXt`` chunk of keyword ``napari-deep-prior``;
      no pixel sizes.
    - **JPEG**: nothing: the format has no place this package writes metadata to.
    - **OME-Zarr** (the path ends in .zarr, a folder; the ``zarr`` extra): a multiscale
      pyramid with the axes, units and scales in its ``multiscales`` metadata and the
      provenance in the group's attributes (:mod:`~napari_deep_prior.omezarr`).
    """
    image = np.asarray(image)
    ca = _guess_channels(image.shape) if channel_axis == "auto" else channel_axis
    axes = meta.axes_for(image.shape, ca) if meta is not None else None
    suffix = check_output(path, image.dtype, image.shape, channel_axis, probe=False, axes=axes)
    if suffix == ZARR_SUFFIX:
        from .omezarr import write_zarr

        write_zarr(path, image, ca, meta=meta, provenance=provenance)
        return
    with atomic_output(path) as tmp:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            rgb = ca is not None and ca % image.ndim == image.ndim - 1 and image.shape[-1] in (3, 4)
            sizes = _output_sizes(meta, axes)
            if meta is None and provenance is None:
                kw: dict[str, Any] = {"photometric": "rgb" if rgb else "minisblack"}
            elif is_ome_path(path):
                kw = _ome_kwargs(image, axes, ca, rgb, sizes, provenance)
            else:
                kw = None
                if meta is not None and meta.kind == "imagej":
                    kw = _imagej_kwargs(image, axes, rgb, sizes, provenance)
                if kw is None:
                    kw = _plain_kwargs(axes, rgb, sizes, provenance)
            tifffile.imwrite(tmp, image, **kw)
        else:
            import imageio.v3 as iio

            extra: dict[str, Any] = {}
            if provenance is not None and suffix == ".png":
                from PIL.PngImagePlugin import PngInfo

                from .provenance import SOFTWARE, provenance_to_json

                info = PngInfo()
                info.add_text(SOFTWARE, provenance_to_json(provenance))
                extra["pnginfo"] = info
            iio.imwrite(tmp, image if image.ndim == 2 or image.shape[-1] != 1 else image[..., 0], **extra)


def write_history_tiff(
    path: str | os.PathLike,
    frames: np.ndarray,
    iterations,
    losses,
    *,
    channel_axis: int | None | str = "auto",
    meta: ImageMeta | None = None,
    provenance: Mapping | None = None,
) -> None:
    """Write the iteration-history stack as a multi-page TIFF, all at once (:func:`atomic_output`).

    The iteration number and loss of every frame are stored in the TIFF's JSON metadata
    (``tifffile.TiffFile(path).shaped_metadata[0]['iterations']``), with the axes (``I``, the
    iteration, then the result's), the pixel sizes of ``meta`` and the ``provenance`` as in a
    plain TIFF of :func:`write_image`.

    Parameters
    ----------
    frames : ndarray, shape (F, *result.shape)
    iterations, losses : sequences of length F
    channel_axis : int, None or "auto"
        The channel axis of one frame (of the result), as for :func:`write_image`.
    meta : ImageMeta, optional
        The result's metadata (the input's, ``.zoomed(f)`` when up-scaling).
    provenance : dict, optional
    """
    import tifffile

    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        raise ValueError(f"the history is written as a multi-page TIFF; give a .tif path, got {path}")
    frames = np.asarray(frames)
    frame_shape = frames.shape[1:]
    ca = _guess_channels(frame_shape) if channel_axis == "auto" else channel_axis
    rgb = frames.ndim >= 4 and frames.shape[-1] in (3, 4)
    if channel_axis != "auto":
        rgb = rgb and ca is not None and ca % len(frame_shape) == len(frame_shape) - 1
    axes = meta.axes_for(frame_shape, ca) if meta is not None else None
    sizes = _output_sizes(meta, axes)
    kw = _plain_kwargs(None if axes is None else "I" + axes, rgb, sizes, provenance)
    kw["metadata"] = {
        "axes_first": "iteration",
        "iterations": [int(i) for i in iterations],
        "losses": np.asarray(losses, dtype=float).tolist(),
        **kw["metadata"],
    }
    with atomic_output(path) as tmp:
        tifffile.imwrite(tmp, frames, **kw)


def read_history_tiff(path: str | os.PathLike) -> tuple[np.ndarray, list[int], list]:
    """Read a history TIFF written by :func:`write_history_tiff`: (frames, iterations, losses)."""
    import tifffile

    with tifffile.TiffFile(path) as tf:
        frames = tf.asarray()
        meta = tf.shaped_metadata[0] if tf.shaped_metadata else {}
    return frames, list(meta.get("iterations", [])), list(meta.get("losses", []))
