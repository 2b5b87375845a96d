"""Reading and writing images for the command line: PNG, JPEG (8/16-bit) and TIFF (any dtype)."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "read_image",
    "write_image",
    "check_output",
    "write_history_tiff",
    "read_history_tiff",
    "atomic_output",
    "TIFF_SUFFIXES",
]

TIFF_SUFFIXES = {".tif", ".tiff"}
_PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg"}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_error(path: Path, exc: OSError) -> OSError:
    """An OSError re-worded for a user: what failed, why, and that ``path`` was not changed."""
    why = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EROFS: "the file system is read-only",
    }.get(exc.errno, exc.strerror or str(exc))
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


def _check_suffix(path: Path, writing: bool) -> str:
    suffix = path.suffix.lower()
    if suffix not in TIFF_SUFFIXES | _PLAIN_SUFFIXES:
        raise ValueError(
            f"{'cannot write' if writing else 'cannot read'} {path}: unsupported file type "
            f"{suffix or '(none)'}; use .png, .jpg, .jpeg, .tif or .tiff"
        )
    return suffix


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file into an array (grey (H, W), colour (H, W, 3|4) or a TIFF stack)."""
    path = Path(path)
    suffix = _check_suffix(path, writing=False)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            return np.asarray(tifffile.imread(path))
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except (OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"could not read {path} as an image: {exc}") from exc


def check_output(path: str | Path, dtype, shape: tuple[int, ...]) -> str:
    """Raise before any work is done if an image of this dtype and shape cannot be written to ``path``."""
    path = Path(path)
    suffix = _check_suffix(path, writing=True)
    dtype = np.dtype(dtype)
    if not path.parent.exists():
        raise FileNotFoundError(f"output folder {path.parent} does not exist")
    if suffix in TIFF_SUFFIXES:
        return suffix
    allowed = (np.uint8,) if suffix in (".jpg", ".jpeg") else (np.uint8, np.uint16)
    if dtype not in allowed:
        raise ValueError(
            f"cannot write a {dtype} image to {suffix}: "
            f"{'JPEG takes uint8' if suffix != '.png' else 'PNG takes uint8 or uint16'}; "
            "write a .tif to keep the data as it is"
        )
    if suffix == ".png" and dtype == np.uint16 and len(shape) == 3:
        raise ValueError("16-bit PNG output is supported for grey images only; write a .tif to keep 16-bit colour")
    if len(shape) not in (2, 3):
        raise ValueError(f"cannot write an image of shape {tuple(shape)} to {suffix}; use .tif for stacks")
    return suffix


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write ``image``; PNG takes uint8 (and uint16 grey), JPEG uint8, TIFF any dtype."""
    image = np.asarray(image)
    suffix = check_output(path, image.dtype, image.shape)
    if suffix in TIFF_SUFFIXES:
        import tifffile

        photometric = "rgb" if image.ndim >= 3 and image.shape[-1] in (3, 4) else "minisblack"
        tifffile.imwrite(path, image, photometric=photometric)
        return
    import imageio.v3 as iio

    iio.imwrite(path, image)


def write_history_tiff(path: str | Path, frames: np.ndarray, iterations, losses) -> None:
    """Write the iteration-history stack as a multi-page TIFF.

    The iteration number and loss of every frame are stored in the TIFF's JSON metadata
    (``tifffile.TiffFile(path).shaped_metadata[0]['iterations']``).
    """
    import tifffile

    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        raise ValueError(f"the history is written as a multi-page TIFF; give a .tif path, got {path}")
    frames = np.asarray(frames)
    photometric = "rgb" if frames.ndim >= 4 and frames.shape[-1] in (3, 4) else "minisblack"
    tifffile.imwrite(
        path,
        frames,
        photometric=photometric,
        metadata={
            "axes_first": "iteration",
            "iterations": [int(i) for i in iterations],
            "losses": np.asarray(losses, dtype=float).tolist(),
        },
    )


def read_history_tiff(path: str | Path) -> tuple[np.ndarray, list[int], list]:
    """Read a history TIFF written by :func:`write_history_tiff`: (frames, iterations, losses)."""
    import tifffile

    with tifffile.TiffFile(path) as tf:
        frames = tf.asarray()
        meta = tf.shaped_metadata[0] if tf.shaped_metadata else {}
    return frames, list(meta.get("iterations", [])), list(meta.get("losses", []))
