"""Reading and writing images for the command line: PNG, JPEG (8/16-bit) and TIFF (any dtype)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["read_image", "write_image", "check_output", "write_history_tiff", "read_history_tiff", "TIFF_SUFFIXES"]

TIFF_SUFFIXES = {".tif", ".tiff"}
_PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg"}


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
