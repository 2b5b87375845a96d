"""OME-Zarr images (OME-NGFF 0.4): read the full-resolution level, write a multiscale pyramid.

Optional: needs the ``zarr`` extra (``pip install ".[zarr]"`` in the project's folder, or
``pip install "zarr>=2.18"``: zarr-python 2.18 or 3).  :mod:`.io` hands every path ending in
``.zarr`` to this module, so the command line and :func:`~.io.read_image` /
:func:`~.io.write_image` take OME-Zarr folders like files.

Written (NGFF 0.4, Zarr format 2, "/" chunk keys, as napari-ome-zarr, Fiji/MoBIE and OMERO
read it):

- the image at full resolution as array ``0`` and a pyramid ``1``, ``2``... each halving Y
  and X (2 x 2 means) while the largest side exceeds :data:`PYRAMID_SIDE` pixels;
- chunks of one plane: 1 along every axis but Y and X (at most :data:`MAX_CHUNK_SIDE` each);
- ``multiscales`` metadata: the axes with their types and units (``micrometer``...), per level
  a ``scale`` (the pixel sizes, doubled along Y and X per level) and the ``translation`` that
  keeps the levels' pixel centres on the image;
- the provenance in the group's attributes under ``napari_deep_prior``
  (:mod:`~napari_deep_prior.provenance`).

NGFF orders axes time, channel, space (Z, Y, X).  A result with its channels last (RGB,
"YXC") is stored channels first ("CYX"), as the format requires, and the group's attribute
``napari_deep_prior_axes`` keeps the array's own order, so that this package reads it back
channels last; other readers see a valid CYX image.

Read: OME-NGFF 0.4 (Zarr 2) and 0.5 (Zarr 3, with zarr-python 3): the first multiscale's
first (full-resolution) dataset, its axes, scale and units; only metadata are read for the
header.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .io import ImageHeader, ImageMeta, _umask, _unit, _write_error

__all__ = [
    "MAX_CHUNK_SIDE",
    "NGFF_VERSION",
    "PYRAMID_SIDE",
    "check_zarr_output",
    "is_zarr_path",
    "ngff_axes",
    "read_zarr",
    "read_zarr_header",
    "write_zarr",
]

NGFF_VERSION = "0.4"
#: Pyramid levels are added while the largest side of the last one exceeds this.
PYRAMID_SIDE = 256
#: ... and while its smallest side is at least this (no level thinner than half of it).
PYRAMID_MIN_SIDE = 64
#: Chunks hold one plane, cut into squares of at most this side.
MAX_CHUNK_SIDE = 2048
#: The group attribute with the array's axes in this package's order (channels last).
AXES_KEY = "napari_deep_prior_axes"

#: Units as kept by :mod:`.io` -> the UDUNITS-2 names NGFF uses.
_UDUNITS = {
    "µm": "micrometer",
    "nm": "nanometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
    "in": "inch",
    "Å": "angstrom",
    "s": "second",
    "ms": "millisecond",
    "min": "minute",
    "h": "hour",
}
#: NGFF's order: time, then channel (or one custom axis), then space.
_RANK = {"T": 0, "C": 1, "Z": 2, "Y": 3, "X": 4}
_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}


def is_zarr_path(path: str | os.PathLike) -> bool:
    """True for a path ending in .zarr (an OME-Zarr folder)."""
    return str(path).rstrip("/\\").lower().endswith(".zarr")


def _zarr():
    try:
        import zarr
    except ImportError:
        raise ValueError(
            'OME-Zarr (.zarr) needs the zarr package: pip install "zarr>=2.18" (the project\'s zarr extra) '
            "(or write a .tif / .ome.tif)"
        ) from None
    return zarr


def _zarr3() -> bool:
    return int(_zarr().__version__.split(".")[0]) >= 3


def _default_axes(ndim: int, channel_axis: int | None) -> str:
    """The axes of an array without metadata: planes are the last two non-channel axes (T, Z before)."""
    lead = ndim - 2 - (channel_axis is not None)
    axes = ("TZ"[-lead:] if 0 < lead <= 2 else "Q" * lead) + "YX"
    if channel_axis is not None:
        ca = channel_axis % ndim
        axes = axes[:ca] + "C" + axes[ca:]
    return axes


def ngff_axes(shape: tuple[int, ...], channel_axis: int | None, axes: str | None = None) -> tuple[str, list[int]]:
    """The NGFF axes of an array and the permutation that puts it in NGFF's order.

    Parameters
    ----------
    shape : tuple of int
    channel_axis : int or None
    axes : str, optional
        The array's axes (:meth:`~.io.ImageMeta.axes_for`); None: T/Z for leading axes.

    Returns
    -------
    ngff : str
        The axes in NGFF's order, e.g. "CZYX".
    order : list of int
        ``np.transpose(array, order)`` is the array stored.

    Raises
    ------
    ValueError
        An array NGFF 0.4 cannot hold: more than 5 axes, more than one axis that is not time
        or space, or a repeated axis.
    """
    ndim = len(shape)
    if axes is None or len(axes) != ndim:
        axes = _default_axes(ndim, channel_axis)
    extra = [a for a in axes if a not in _RANK]
    order = sorted(range(ndim), key=lambda i: (_RANK.get(axes[i], 1), i))
    ngff = "".join(axes[i] for i in order)
    if len(set(axes)) != ndim or not 2 <= ndim <= 5 or len(extra) + ("C" in axes) > 1 or not ngff.endswith("YX"):
        raise ValueError(
            f"OME-Zarr (NGFF {NGFF_VERSION}) cannot hold an image of shape {shape} with axes {axes}: it takes 2 to "
            "5 axes, at most one time, one channel (or one other) and three space axes; write a .tif instead"
        )
    return ngff, order


def check_zarr_output(path: Path, dtype: np.dtype, shape: tuple[int, ...], channel_axis, axes=None, label="the output"):
    """Raise before any work if the image cannot be written as OME-Zarr at ``path``."""
    _zarr()
    if np.dtype(dtype).kind not in "biuf":
        raise ValueError(f"{label} {path}: OME-Zarr takes integer, float or bool pixels, not {np.dtype(dtype)}")
    ngff_axes(tuple(shape), channel_axis, axes)


def _looks_like_zarr(path: Path) -> bool:
    return any((path / name).exists() for name in (".zgroup", ".zattrs", "zarr.json", ".zarray"))


def check_zarr_path(path: Path, label: str = "the output") -> None:
    """An existing ``path`` must be a Zarr folder or an empty folder (it is replaced); anything else is refused."""
    if path.exists() and not (path.is_dir() and (_looks_like_zarr(path) or not any(path.iterdir()))):
        what = "a folder that is not a Zarr image" if path.is_dir() else "a file"
        raise ValueError(f"{label} {path} exists and is {what}; writing would replace it: choose another name")


# -- reading ------------------------------------------------------------------------------


def _open(path: Path):
    zarr = _zarr()
    if not path.exists():
        raise FileNotFoundError(f"no such image file: {path}")
    if not path.is_dir():
        raise ValueError(f"{path} is not an OME-Zarr folder (a .zarr path must be a folder)")
    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises its own errors for a folder that is not a group
        raise ValueError(f"{path} is not a readable OME-Zarr image ({type(exc).__name__}: {exc})") from exc


def _multiscale(group, path: Path) -> dict:
    attrs = dict(group.attrs)
    ms = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    if not ms or not ms[0].get("datasets"):
        raise ValueError(f"{path} is a Zarr folder without OME-NGFF 'multiscales' metadata: not an OME-Zarr image")
    return ms[0]


def _scale_of(transforms) -> list[float] | None:
    scale = None
    for t in transforms or []:
        if t.get("type") == "scale" and "scale" in t:
            s = [float(v) for v in t["scale"]]
            scale = s if scale is None else [a * b for a, b in zip(scale, s, strict=False)]
    return scale


def _letter(axis: Mapping) -> str:
    name = str(axis.get("name", "")).upper()
    if name in _RANK:
        return name
    return {"time": "T", "channel": "C"}.get(axis.get("type"), "Q")


def _read(path: Path) -> tuple[Any, str, dict, dict | None, list[int] | None]:
    """(level-0 array, its axes in our order, pixel sizes, provenance, permutation back or None)."""
    from .provenance import LAYER_KEY, is_provenance

    group = _open(path)
    ms = _multiscale(group, path)
    level0 = ms["datasets"][0]
    array = group[level0["path"]]
    axes_meta = ms.get("axes") or []
    if axes_meta and isinstance(axes_meta[0], str):  # NGFF 0.3: names only
        axes_meta = [{"name": a} for a in axes_meta]
    ngff = "".join(_letter(a) for a in axes_meta) if len(axes_meta) == array.ndim else ""
    sizes: dict[str, tuple[float, str]] = {}
    scale = _scale_of(level0.get("coordinateTransformations"))
    outer = _scale_of(ms.get("coordinateTransformations"))
    if scale is not None and outer is not None:
        scale = [a * b for a, b in zip(scale, outer, strict=False)]
    if ngff and scale is not None and len(scale) == len(ngff):
        for letter, value, axis in zip(ngff, scale, axes_meta, strict=True):
            unit = _unit(axis.get("unit"))
            if letter != "C" and (unit is not None or value != 1.0):
                sizes[letter] = (value, unit or "")
    attrs = dict(group.attrs)
    ours = attrs.get(AXES_KEY)
    back = None
    if ngff and isinstance(ours, str) and sorted(ours) == sorted(ngff) and ours != ngff:
        back = [ngff.index(a) for a in ours]
        ngff = ours
    provenance = attrs.get(LAYER_KEY)
    sizes = {a: sizes[a] for a in ngff if a in sizes}
    return array, ngff, sizes, (provenance if is_provenance(provenance) else None), back


def read_zarr_header(path: str | os.PathLike) -> tuple[ImageHeader, ImageMeta]:
    """The header (shape, dtype of the full-resolution level) and metadata of an OME-Zarr, without its pixels."""
    path = Path(path)
    array, axes, sizes, provenance, back = _read(path)
    shape = tuple(int(n) for n in array.shape)
    if back is not None:
        shape = tuple(shape[i] for i in back)
    spatial = [n for a, n in zip(axes, shape, strict=False) if a not in "CT"] if axes else list(shape)
    hw = (spatial[-2], spatial[-1]) if len(spatial) >= 2 else (1, shape[-1])
    header = ImageHeader(path, "zarr", shape, np.dtype(array.dtype), hw)
    return header, ImageMeta(axes, sizes, provenance, "ome-zarr")


def read_zarr(path: str | os.PathLike) -> np.ndarray:
    """The full-resolution level of an OME-Zarr as an array (channels last when this package wrote it so)."""
    array, _axes, _sizes, _prov, back = _read(Path(path))
    data = np.asarray(array[...])
    return np.ascontiguousarray(np.transpose(data, back)) if back is not None else data


# -- writing ------------------------------------------------------------------------------


def _half(data: np.ndarray, ny: int, nx: int) -> np.ndarray:
    """2 x 2 means over the axes ``ny`` and ``nx`` (an odd last row / column dropped), in the input dtype."""
    h, w = data.shape[ny] // 2, data.shape[nx] // 2
    cut = [slice(None)] * data.ndim
    cut[ny], cut[nx] = slice(0, 2 * h), slice(0, 2 * w)
    x = data[tuple(cut)].astype(np.float64)
    shape = list(x.shape)
    shape[nx : nx + 1] = [w, 2]
    shape[ny : ny + 1] = [h, 2]
    mean = x.reshape(shape).mean(axis=(ny + 1, nx + 2))
    if data.dtype == np.bool_:
        return mean >= 0.5
    if data.dtype.kind in "iu":
        info = np.iinfo(data.dtype)
        return np.clip(np.rint(mean), info.min, info.max).astype(data.dtype)
    return mean.astype(data.dtype)


def _levels(data: np.ndarray, ny: int, nx: int) -> list[np.ndarray]:
    levels = [data]
    while (
        max(levels[-1].shape[ny], levels[-1].shape[nx]) > PYRAMID_SIDE
        and min(levels[-1].shape[ny], levels[-1].shape[nx]) >= 2 * PYRAMID_MIN_SIDE
    ):
        levels.append(_half(levels[-1], ny, nx))
    return levels


def _empty_array(group, name: str, shape: tuple[int, ...], dtype, chunks: tuple[int, ...]):
    if hasattr(group, "create_array"):  # zarr-python 3
        return group.create_array(
            name, shape=shape, chunks=chunks, dtype=dtype, chunk_key_encoding={"name": "v2", "separator": "/"}
        )
    return group.create_dataset(name, shape=shape, chunks=chunks, dtype=dtype, dimension_separator="/")  # zarr 2


def _create_array(group, name: str, data: np.ndarray, chunks: tuple[int, ...]):
    arr = _empty_array(group, name, data.shape, data.dtype, chunks)
    arr[...] = data
    return arr


def _plane_chunks(shape: tuple[int, ...], ny: int, nx: int) -> tuple[int, ...]:
    """One chunk per plane (Y and X in tiles of at most MAX_CHUNK_SIDE)."""
    return tuple(min(n, MAX_CHUNK_SIDE) if i in (ny, nx) else 1 for i, n in enumerate(shape))


def _level_shapes(shape: tuple[int, ...], ny: int, nx: int) -> list[tuple[int, ...]]:
    """The shapes of the pyramid :func:`_levels` makes from an array of ``shape``."""
    shapes = [tuple(shape)]
    while (
        max(shapes[-1][ny], shapes[-1][nx]) > PYRAMID_SIDE
        and min(shapes[-1][ny], shapes[-1][nx]) >= 2 * PYRAMID_MIN_SIDE
    ):
        nxt = list(shapes[-1])
        nxt[ny] //= 2
        nxt[nx] //= 2
        shapes.append(tuple(nxt))
    return shapes


def _group_attrs(path: Path, ngff: str, axes: str, meta, n_levels: int, provenance) -> dict:
    """The group's attributes: NGFF ``multiscales`` (axes, units, scales of every level), our axes, provenance."""
    from .provenance import LAYER_KEY, jsonable

    sizes = {} if meta is None else {a: v for a, v in meta.pixel_sizes.items() if a in ngff}
    ny, nx = ngff.index("Y"), ngff.index("X")
    axes_meta = []
    for a in ngff:
        entry: dict[str, Any] = {"name": a.lower()}
        if a in _TYPES:
            entry["type"] = _TYPES[a]
        unit = sizes.get(a, (None, None))[1]
        if unit in _UDUNITS:
            entry["unit"] = _UDUNITS[unit]
        axes_meta.append(entry)
    base = [float(sizes[a][0]) if a in sizes else 1.0 for a in ngff]
    datasets = []
    for k in range(n_levels):
        scale = list(base)
        translation = [0.0] * len(ngff)
        for i in (ny, nx):
            scale[i] = base[i] * 2**k
            translation[i] = base[i] * (2**k - 1) / 2.0
        transforms: list[dict] = [{"type": "scale", "scale": scale}]
        if k:
            transforms.append({"type": "translation", "translation": translation})
        datasets.append({"path": str(k), "coordinateTransformations": transforms})
    multiscales = [
        {
            "version": NGFF_VERSION,
            "name": path.stem,
            "axes": axes_meta,
            "datasets": datasets,
            "type": "mean",
            "metadata": {"description": "2 x 2 means of the level above", "method": "napari_deep_prior.omezarr"},
        }
    ]
    attrs: dict[str, Any] = {"multiscales": multiscales, AXES_KEY: axes}
    if provenance is not None:
        attrs[LAYER_KEY] = jsonable(provenance)
    return attrs


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Write a folder all at once: yield a temporary folder beside ``path``, put it in place on success.

    An existing ``path`` is moved aside, the new folder renamed into place, then the old one
    deleted: a failure or interruption before that leaves ``path`` as it was (and removes the
    temporary folder); a crash between the two renames leaves the old folder as
    ``.<name>.old-<pid>`` beside it.
    """
    folder = path.parent if str(path.parent) else Path(".")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=folder))
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        try:
            yield tmp
            for root, _dirs, files in os.walk(tmp):
                for name in files:
                    with open(os.path.join(root, name), "rb+") as fh:
                        os.fsync(fh.fileno())
            os.chmod(tmp, 0o777 & ~_umask())
            old = None
            if path.exists():
                old = folder / f".{path.name}.old-{os.getpid()}"
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            raise _write_error(path, exc) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_zarr(
    path: str | os.PathLike,
    image: np.ndarray,
    channel_axis: int | None,
    *,
    meta: ImageMeta | None = None,
    provenance: Mapping | None = None,
) -> None:
    """Write ``image`` as an OME-Zarr (NGFF 0.4) multiscale pyramid, all at once (:func:`atomic_folder`).

    Parameters
    ----------
    path : path-like
        A folder name ending in .zarr; an existing OME-Zarr there is replaced.
    image : ndarray
    channel_axis : int or None
    meta : ImageMeta, optional
        The axes and pixel sizes to record (:func:`~.io.read_image_meta`).
    provenance : dict, optional
        Stored in the group's attributes under ``napari_deep_prior``.
    """
    zarr = _zarr()
    path = Path(path)
    check_zarr_path(path)  # never replace a folder that is not an image
    image = np.asarray(image)
    axes = meta.axes_for(image.shape, channel_axis) if meta is not None else None
    if axes is None:
        axes = _default_axes(image.ndim, channel_axis)
    ngff, order = ngff_axes(image.shape, channel_axis, axes)
    data = np.transpose(image, order)
    ny, nx = ngff.index("Y"), ngff.index("X")
    levels = _levels(data, ny, nx)
    attrs = _group_attrs(path, ngff, axes, meta, len(levels), provenance)
    with atomic_folder(path) as tmp:
        if _zarr3():
            group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        else:
            group = zarr.open_group(str(tmp), mode="w")
        for k, level in enumerate(levels):
            _create_array(group, str(k), level, _plane_chunks(level.shape, ny, nx))
        group.attrs.update(attrs)


# -- plane by plane ---------------------------------------------------------------------------


def open_zarr_lazily(path: str | os.PathLike):
    """The full-resolution level of an OME-Zarr, read only where it is indexed, in our axis order.

    The zarr array itself, or a view of it that re-orders the axes (:class:`_Permuted`): no
    scheduler is involved, so it reads the same wherever it is indexed.
    """
    array, _axes, _sizes, _prov, back = _read(Path(path))
    if back is None:
        return array
    return _Permuted(array, [int(i) for i in np.argsort(back)])


class _Permuted:
    """A writable view of an array in NGFF order, indexed in our order (``ngff axis j = ours[order[j]]``)."""

    def __init__(self, array, order: list[int]):
        self.array = array
        self.order = list(order)
        self.shape = tuple(array.shape[order.index(i)] for i in range(len(order)))
        self.dtype = np.dtype(array.dtype)

    def _index(self, index) -> tuple[tuple, list[int], list[int]]:
        index = index if isinstance(index, tuple) else (index,)
        index = tuple(index) + (slice(None),) * (len(self.order) - len(index))
        kept = [i for i, ix in enumerate(index) if not isinstance(ix, (int, np.integer))]
        return tuple(index[i] for i in self.order), [i for i in self.order if i in kept], kept

    def __setitem__(self, index, value) -> None:
        ngff_index, ngff_kept, kept = self._index(index)
        value = np.asarray(value)
        if value.ndim == len(kept):
            value = np.transpose(value, [kept.index(i) for i in ngff_kept])
        self.array[ngff_index] = value

    def __getitem__(self, index):
        ngff_index, ngff_kept, kept = self._index(index)
        value = np.asarray(self.array[ngff_index])
        return np.transpose(value, [ngff_kept.index(i) for i in kept])


class ZarrStream:
    """An OME-Zarr written plane by plane, put in place all at once (a temporary folder renamed).

    The full-resolution level is created at once (one chunk per plane) and written as the
    planes come (:meth:`store` gives it to :class:`~napari_deep_prior.restore.stream.StackJob`
    in the result's own axis order); :meth:`close` builds the pyramid of 2 x 2 means from it
    one plane at a time, writes the metadata and renames the folder into place; :meth:`abort`
    removes it, leaving an existing ``path`` as it was.  Memory holds one plane at a time.

    Parameters
    ----------
    path : path-like
        A folder name ending in .zarr.
    shape, dtype, channel_axis
        Of the result, in our axis order.
    meta : ImageMeta, optional
        Axes and pixel sizes to record.
    """

    def __init__(self, path, shape: tuple[int, ...], dtype, channel_axis: int | None, *, meta: ImageMeta | None = None):
        zarr = _zarr()
        self.path = Path(path)
        check_zarr_path(self.path)
        self.meta = meta
        axes = meta.axes_for(tuple(shape), channel_axis) if meta is not None else None
        self.axes = axes if axes is not None else _default_axes(len(shape), channel_axis)
        self.ngff, self.order = ngff_axes(tuple(shape), channel_axis, self.axes)
        self.ny, self.nx = self.ngff.index("Y"), self.ngff.index("X")
        self._folder = atomic_folder(self.path)
        tmp = self._folder.__enter__()
        try:
            self.group = zarr.open_group(str(tmp), mode="w", **({"zarr_format": 2} if _zarr3() else {}))
            ngff_shape = tuple(int(shape[i]) for i in self.order)
            self.level0 = _empty_array(
                self.group, "0", ngff_shape, np.dtype(dtype), _plane_chunks(ngff_shape, self.ny, self.nx)
            )
        except BaseException:
            self.abort()
            raise
        self.image = _Permuted(self.level0, self.order)

    def store(self, name: str, shape: tuple[int, ...], dtype):
        """A StackJob's ``store``: the full-resolution level for "image", memory for anything else."""
        if name == "image":
            if tuple(shape) != self.image.shape:
                raise ValueError(f"the result has shape {tuple(shape)}, not the {self.image.shape} this store holds")
            return self.image
        return np.zeros(shape, dtype=dtype)

    def close(self, provenance: Mapping | None = None) -> None:
        """Write the pyramid and the metadata, and put the folder in place."""
        try:
            shapes = _level_shapes(tuple(self.level0.shape), self.ny, self.nx)
            above = self.level0
            for k, shape in enumerate(shapes[1:], start=1):
                level = _empty_array(self.group, str(k), shape, above.dtype, _plane_chunks(shape, self.ny, self.nx))
                lead = [i for i in range(len(shape)) if i not in (self.ny, self.nx)]
                for idx in np.ndindex(*(shape[i] for i in lead)):
                    sel: list = [slice(None)] * len(shape)
                    for i, v in zip(lead, idx, strict=True):
                        sel[i] = v
                    plane = np.asarray(above[tuple(sel)])  # (Y, X) of one plane: NGFF puts Y before X
                    level[tuple(sel)] = _half(plane, 0, 1)
                above = level
            self.group.attrs.update(_group_attrs(self.path, self.ngff, self.axes, self.meta, len(shapes), provenance))
        except BaseException:
            self.abort()
            raise
        self._folder.__exit__(None, None, None)
        self._folder = None

    def abort(self) -> None:
        """Remove the temporary folder (an existing ``path`` stays as it was)."""
        if self._folder is None:
            return
        folder, self._folder = self._folder, None
        try:
            err = RuntimeError("aborted")
            folder.__exit__(type(err), err, None)
        except RuntimeError:
            pass
