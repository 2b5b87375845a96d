"""Reading and writing image files: PNG, JPEG (8/16-bit) and TIFF (any dtype), safely.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "ImageHeader",
    "read_header",
    "read_image",
    "check_distinct",
    "check_output_path",
    "write_image",
    "check_output",
    "write_history_tiff",
    "read_history_tiff",
    "atomic_output",
    "TIFF_SUFFIXES",
    "check_readable",
    "MAX_PLAIN_PIXELS",
]

TIFF_SUFFIXES = {".tif", ".tiff"}
_PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg"}


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
    err = OSError(exc.errno, f"cannot write {path}: {why} ({kept}); free space or choose another folder")
    err.filename = None
    return err


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


def _check_suffix(path: Path, writing: bool) -> str:
    suffix = path.suffix.lower()
    if suffix not in TIFF_SUFFIXES | _PLAIN_SUFFIXES:
        raise ValueError(
            f"{'cannot write' if writing else 'cannot read'} {path}: unsupported file type "
            f"{suffix or '(none)'}; use .png, .jpg, .jpeg, .tif or .tiff"
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
    suffix = _check_suffix(path, writing=False)
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

    if header.format != "tiff":
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
    if path.is_dir():
        raise ValueError(f"{label} {path} is a folder; give a file name in it, e.g. {path / 'result.tif'}")
    suffix = _check_suffix(path, writing=True)
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

    Returns
    -------
    suffix : str
    """
    path = Path(path)
    suffix = check_output_path(path, label) if probe else _check_suffix(path, writing=True)
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in shape)
    if suffix in TIFF_SUFFIXES:
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


def write_image(path: str | os.PathLike, image: np.ndarray, channel_axis: int | None | str = "auto") -> None:
    """Write ``image`` all at once (:func:`atomic_output`); PNG takes uint8 (and uint16 grey), JPEG uint8,
    TIFF any dtype.  The format is checked first: an existing file is never touched by a refused write."""
    image = np.asarray(image)
    suffix = check_output(path, image.dtype, image.shape, channel_axis, probe=False)
    with atomic_output(path) as tmp:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            ca = _guess_channels(image.shape) if channel_axis == "auto" else channel_axis
            rgb = ca is not None and ca % image.ndim == image.ndim - 1 and image.shape[-1] in (3, 4)
            tifffile.imwrite(tmp, image, photometric="rgb" if rgb else "minisblack")
        else:
            import imageio.v3 as iio

            iio.imwrite(tmp, image if image.ndim == 2 or image.shape[-1] != 1 else image[..., 0])


def write_history_tiff(path: str | os.PathLike, frames: np.ndarray, iterations, losses) -> None:
    """Write the iteration-history stack as a multi-page TIFF, all at once (:func:`atomic_output`).

    The iteration number and loss of every frame are stored in the TIFF's JSON metadata
    (``tifffile.TiffFile(path).shaped_metadata[0]['iterations']``).
    """
    import tifffile

    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        raise ValueError(f"the history is written as a multi-page TIFF; give a .tif path, got {path}")
    frames = np.asarray(frames)
    photometric = "rgb" if frames.ndim >= 4 and frames.shape[-1] in (3, 4) else "minisblack"
    with atomic_output(path) as tmp:
        tifffile.imwrite(
            tmp,
            frames,
            photometric=photometric,
            metadata={
                "axes_first": "iteration",
                "iterations": [int(i) for i in iterations],
                "losses": np.asarray(losses, dtype=float).tolist(),
            },
        )


def read_history_tiff(path: str | os.PathLike) -> tuple[np.ndarray, list[int], list]:
    """Read a history TIFF written by :func:`write_history_tiff`: (frames, iterations, losses)."""
    import tifffile

    with tifffile.TiffFile(path) as tf:
        frames = tf.asarray()
        meta = tf.shaped_metadata[0] if tf.shaped_metadata else {}
    return frames, list(meta.get("iterations", [])), list(meta.get("losses", []))
