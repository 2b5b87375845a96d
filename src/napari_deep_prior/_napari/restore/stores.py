"""Where a lazily computed run writes: a folder holding a zarr group with its result and history.

A run over a lazy layer (dask, zarr, multiscale: :func:`~napari_deep_prior._napari.layers.is_lazy`)
writes each finished plane into the zarr array ``image`` (and its history frames into
``history``) of a :class:`ResultStore`, and its result layer shows that array lazily (a dask
view): memory holds one plane at a time however large the stack.

- **temporary** (the default): a folder ``napari-deep-prior-*`` in the system's temporary
  directory, deleted as soon as no layer of the viewer shows it any more (the result and
  history layers removed, or the viewer closed) and, for what is left, when Python exits;
- **a folder the user chose** (``*.zarr``, which must not exist yet): kept; the provenance is
  written to the group's attributes at the end of the run (as :mod:`~napari_deep_prior.omezarr`
  does).  Open it later with ``zarr.open_group(path)["image"]`` or drag it into napari.

Arrays are chunked one plane per chunk (tiles of at most
:data:`~napari_deep_prior.omezarr.MAX_CHUNK_SIDE` pixels a side), so writing a plane writes
its own chunks only.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["STORE_KEY", "ResultStore", "release_unused"]

#: Metadata key of the layers that show a store (its folder, as a str).
STORE_KEY = "dip_store"
#: Prefix of the temporary folders.
TEMP_PREFIX = "napari-deep-prior-"

#: Temporary folders not deleted yet (deleted at exit at the latest).
_TEMPORARY: set[str] = set()


def _zarr():
    try:
        import zarr
    except ImportError:
        raise ValueError(
            "a layer that is not in memory (dask, zarr, multiscale) is restored into a zarr store, which "
            'needs the zarr package: pip install "zarr>=2.18" (the project\'s zarr extra)'
        ) from None
    return zarr


def _remove_all_temporary() -> None:
    for path in list(_TEMPORARY):
        shutil.rmtree(path, ignore_errors=True)
        _TEMPORARY.discard(path)


atexit.register(_remove_all_temporary)


class ResultStore:
    """A zarr group in a folder: arrays ``image`` and ``history`` of a lazily computed run.

    Call it as ``store(name, shape, dtype)`` to make an array (the ``store`` of
    :class:`~napari_deep_prior.restore.stream.StackJob`).

    Parameters
    ----------
    path : path-like
        The folder.
    temporary : bool
        Delete it when no layer shows it any more (:func:`release_unused`) or at exit.
    yx_axes : (int, int)
        The result's Y and X axes (tiled in chunks); every other axis but a channel axis has
        chunks of 1 (a history's leading frame axis too).
    channel_axis : int or None
        The result's channel axis (one chunk across it).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        temporary: bool,
        *,
        yx_axes: tuple[int, int] = (-2, -1),
        channel_axis: int | None = None,
    ):
        self.path = Path(path)
        self.temporary = temporary
        self.yx_axes = tuple(yx_axes)
        self.channel_axis = channel_axis
        zarr = _zarr()
        self._group = zarr.open_group(str(self.path), mode="w" if temporary else "w-")
        if temporary:
            _TEMPORARY.add(str(self.path))

    @classmethod
    def temporary_store(cls, **kw) -> ResultStore:
        """A new store in a new temporary folder (``kw``: ``yx_axes``, ``channel_axis``)."""
        _zarr()
        return cls(tempfile.mkdtemp(prefix=TEMP_PREFIX), temporary=True, **kw)

    @classmethod
    def at(cls, path: str | os.PathLike, *, inputs: tuple = (), **kw) -> ResultStore:
        """A new store at a folder the user chose (``*.zarr``, not existing, not an input).

        Raises
        ------
        ValueError
            The path exists, is one of ``inputs``, does not end in .zarr or its folder is missing.
        """
        _zarr()
        p = Path(path).expanduser()
        if not str(p).lower().rstrip("/\\").endswith(".zarr"):
            raise ValueError(f"the result store {str(p)!r} must be a folder name ending in .zarr")
        resolved = p.resolve()
        for src in inputs:
            if src and Path(str(src)).expanduser().resolve() == resolved:
                raise ValueError(f"the result store {str(p)!r} is the input's own file; choose another folder name")
        if p.exists():
            raise ValueError(
                f"the result store {str(p)!r} exists already; choose a new folder name (or delete it first)"
            )
        if not p.parent.is_dir():
            raise ValueError(f"the folder {str(p.parent)!r} of the result store does not exist; create it first")
        return cls(p, temporary=False, **kw)

    @property
    def key(self) -> str:
        """What the layers showing this store keep under :data:`STORE_KEY`."""
        return str(self.path)

    def __call__(self, name: str, shape: tuple[int, ...], dtype) -> Any:
        """A zero-filled zarr array ``name`` of ``shape`` and ``dtype``, one chunk per plane.

        "history" has a leading frame axis (chunks of 1).  Y and X are cut into tiles of at most
        :data:`~napari_deep_prior.omezarr.MAX_CHUNK_SIDE` pixels.
        """
        from ...omezarr import MAX_CHUNK_SIDE

        lead = 1 if name == "history" else 0
        n = len(shape) - lead
        yx = {lead + a % n for a in self.yx_axes}
        ca = None if self.channel_axis is None else lead + self.channel_axis % n
        chunks = tuple(
            max(1, min(size, MAX_CHUNK_SIDE)) if a in yx else (size if a == ca else 1) for a, size in enumerate(shape)
        )
        dtype = np.dtype(dtype)
        if hasattr(self._group, "create_array"):  # zarr-python 3
            return self._group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
        return self._group.create_dataset(
            name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0
        )  # pragma: no cover

    def array(self, name: str):
        """The zarr array ``name`` (None if it was not made)."""
        try:
            return self._group[name]
        except KeyError:
            return None

    def lazy(self, name: str, frames: int | None = None):
        """A dask view of the array ``name`` (its first ``frames`` along axis 0), or None."""
        import dask.array as da

        arr = self.array(name)
        if arr is None:
            return None
        view = da.from_zarr(arr)
        return view if frames is None else view[:frames]

    def write_attrs(self, attrs: dict) -> None:
        """Add JSON-serialisable attributes to the group (the provenance)."""
        self._group.attrs.update(attrs)

    def remove(self) -> None:
        """Delete a temporary store's folder (a chosen one is kept)."""
        if self.temporary:
            remove_temporary(self.key)


def remove_temporary(key: str) -> None:
    """Delete a temporary store's folder (only folders this module made)."""
    if key in _TEMPORARY:
        shutil.rmtree(key, ignore_errors=True)
        _TEMPORARY.discard(key)


def release_unused(viewer, keys) -> list[str]:
    """Delete the temporary stores among ``keys`` that no layer of ``viewer`` shows; returns them."""
    try:
        used = {str(layer.metadata.get(STORE_KEY)) for layer in viewer.layers}
    except RuntimeError:  # pragma: no cover - a viewer being torn down
        used = set()
    gone = [key for key in keys if key in _TEMPORARY and key not in used]
    for key in gone:
        remove_temporary(key)
    return gone
