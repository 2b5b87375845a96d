"""Layer <-> array helpers for the napari front end.

Everything here works on napari layer *models* (no Qt): reading the array a widget should
process, turning a Labels or Shapes layer into a hole mask on the image's pixel grid, and
building the keyword arguments of new layers so they keep the input's scale, translate,
units and axis labels.  The input and mask layers are only ever read.

Big data: a layer whose data is not a NumPy array in memory (a dask or zarr array, e.g. an
OME-Zarr opened in napari) or a multiscale layer is *lazy* (:func:`is_lazy`): its selection
stays a dask view (:attr:`ImageSelection.data`) and its masks are views or per-plane
callables (:func:`stack_mask`), so that nothing here reads its pixels; the widget's worker
reads them one plane at a time (:class:`~napari_deep_prior.restore.stream.StackJob`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = [
    "ImageSelection",
    "as_dask",
    "is_lazy",
    "layer_array",
    "new_mask_data",
    "region_from_shapes",
    "stack_mask",
    "channel_axis_choices",
    "non_channel_axes",
    "select_image",
    "mask_from_layer",
    "shapes_to_mask",
    "LayerTemplate",
    "display_kwargs",
    "new_mask_kwargs",
]

#: Unit given to the leading "iteration" axis of a history stack (napari's unit-less default).
ITERATION_UNIT = "pixel"


def layer_array(layer) -> np.ndarray | Any:
    """The layer's full-resolution data (level 0 of a multiscale layer), not yet loaded."""
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    return data


def is_lazy(layer) -> bool:
    """Whether the layer's pixels are not in memory: a multiscale layer, or data that is not NumPy
    (dask, zarr...).  Such a layer is read plane by plane in the worker, never on the GUI thread."""
    return bool(getattr(layer, "multiscale", False)) or not isinstance(layer_array(layer), np.ndarray)


def as_dask(data):
    """A dask view of an array (itself if it is one): indexing it reads nothing."""
    import dask.array as da

    if isinstance(data, da.Array):
        return data
    chunks = getattr(data, "chunks", None)
    if not (isinstance(chunks, tuple) and len(chunks) == data.ndim and all(isinstance(c, int) for c in chunks)):
        chunks = "auto"
    return da.from_array(data, chunks=chunks, asarray=False, fancy=False)


def non_channel_axes(ndim: int, channel_axis: int | None) -> list[int]:
    """Axes of an ``ndim`` array that are not the channel axis (the last two are Y, X)."""
    return [a for a in range(ndim) if a != channel_axis]


def channel_axis_choices(layer) -> list[tuple[str, int | None]]:
    """(label, channel_axis) choices for a layer, the automatic choice first.

    RGB(A) layers have their colour on the last array axis; any other layer may hold
    channels on one of its leading axes (the last two are always Y and X).
    """
    if layer is None:
        return [("none (grey)", None)]
    shape = tuple(layer_array(layer).shape)
    ndim = len(shape)
    if getattr(layer, "rgb", False):
        return [("RGB(A), last axis", ndim - 1)]
    labels = list(layer.axis_labels)
    choices: list[tuple[str, int | None]] = [("none (grey / stack of planes)", None)]
    for a in range(max(0, ndim - 2)):
        choices.append((f"axis {a} '{labels[a]}' ({shape[a]} channels)", a))
    return choices


@dataclass
class ImageSelection:
    """The part of an Image layer a run processes.

    Attributes
    ----------
    data : ndarray or dask array
        The array handed to the core (a copy-free view where possible; never written to).  A
        lazy layer's selection is a dask view: nothing is read until the worker reads a plane.
    channel_axis : int or None
        Channel axis of ``data`` (``data`` keeps the layer's number of dimensions).
    stack_axes : list of int
        Layer axes that the core treats as a stack of planes (not channel, not Y/X).
    offset : tuple of int
        Index of ``data[0, 0, ...]`` in the layer's array (non-zero on the stack axes when a
        single plane or a plane range was selected, on Y and X for a region).
    plane_only : bool
        Only the plane on screen was selected.
    index : tuple of slice
        ``data`` is ``layer_array(layer)[index]``.
    lazy : bool
        The layer is lazy (:func:`is_lazy`): ``data`` is a dask view, read plane by plane.
    """

    data: Any
    channel_axis: int | None
    stack_axes: list[int]
    offset: tuple[int, ...]
    plane_only: bool
    index: tuple = ()
    lazy: bool = False

    @property
    def stack_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[a] for a in self.stack_axes)

    @property
    def grid_axes(self) -> list[int]:
        """The layer-array axes that are not the channel axis (..., Y, X)."""
        return non_channel_axes(len(self.offset), self.channel_axis)

    @property
    def grid_index(self) -> tuple:
        """``index`` on the non-channel axes: cuts a mask of the image's grid to the selection."""
        index = self.index or (slice(None),) * len(self.offset)
        return tuple(index[a] for a in self.grid_axes)

    @property
    def region(self) -> tuple[int, int, int, int] | None:
        """(y0, y1, x0, x1) of a region in the layer's pixels, None for whole planes."""
        ys, xs = self.grid_index[-2:]
        if ys == slice(None) and xs == slice(None):
            return None
        ya, xa = self.grid_axes[-2:]
        return (
            self.offset[ya],
            self.offset[ya] + self.data.shape[ya],
            self.offset[xa],
            self.offset[xa] + self.data.shape[xa],
        )

    def plane_offset(self, plane: int) -> tuple[int, ...]:
        """Index in the layer's array of the first pixel of the core's plane ``plane``."""
        off = list(self.offset)
        if self.stack_axes:
            idx = np.unravel_index(int(plane), self.stack_shape)
            for a, i in zip(self.stack_axes, idx, strict=True):
                off[a] += int(i)
        return tuple(off)

    def plane_stack_index(self, plane: int) -> tuple[int, ...]:
        """The layer-array index of the core's plane ``plane`` on the stack axes."""
        off = self.plane_offset(plane)
        return tuple(off[a] for a in self.stack_axes)


def _check_plane_range(planes, n: int, label: str) -> tuple[int, int]:
    first, last = (int(v) for v in planes)
    last = n - 1 if last < 0 else last
    if not 0 <= first < n:
        raise ValueError(
            f"first plane {first} is outside the stack: its axis {label} has {n} planes (0 to {n - 1}); "
            "choose a first plane in that range"
        )
    if last >= n:
        raise ValueError(
            f"last plane {last} is outside the stack: its axis {label} has {n} planes (0 to {n - 1}); "
            "choose a last plane in that range (-1: the last one)"
        )
    if last < first:
        raise ValueError(f"last plane {last} is before first plane {first}; choose a last plane >= the first")
    return first, last


def select_image(
    layer,
    channel_axis: int | None,
    *,
    plane_only: bool,
    world_point=None,
    planes: tuple[int, int] | None = None,
    region: tuple[int, int, int, int] | None = None,
) -> ImageSelection:
    """The part of an Image layer to process (read into memory only for a layer in memory).

    Parameters
    ----------
    layer : napari.layers.Image
    channel_axis : int or None
        Channel axis of the layer's array (``ndim - 1`` for RGB layers).
    plane_only : bool
        Process only the plane on screen: every stack axis is cut to the index of
        ``world_point`` (the viewer's ``dims.point``), keeping it as a length-1 axis.
    world_point : sequence of float, optional
        The viewer's current position in world coordinates.
    planes : (int, int), optional
        First and last plane (inclusive; last -1: to the end) on the first stack axis, when
        not ``plane_only``.
    region : (y0, y1, x0, x1), optional
        A rectangle of the layer's pixels (:func:`region_from_shapes`), on every plane.

    Raises
    ------
    ValueError
        A plane range outside the stack, or an empty region.
    """
    data = layer_array(layer)
    ndim = data.ndim
    grid_axes = non_channel_axes(ndim, channel_axis)
    stack_axes = grid_axes[:-2]
    offset = [0] * ndim
    index: list[Any] = [slice(None)] * ndim
    if plane_only and stack_axes:
        point = np.zeros(layer.ndim) if world_point is None else world_point
        coords = np.asarray(layer.world_to_data(point), dtype=float)
        # an RGB layer's ndim excludes its colour axis; stack axes come first either way
        for a in stack_axes:
            i = int(np.clip(np.round(coords[a]), 0, data.shape[a] - 1))
            index[a] = slice(i, i + 1)
            offset[a] = i
    else:
        plane_only = False
        if planes is not None and stack_axes:
            a = stack_axes[0]
            label = f"{a} '{layer.axis_labels[a]}'" if a < len(layer.axis_labels) else str(a)
            first, last = _check_plane_range(planes, data.shape[a], label)
            index[a] = slice(first, last + 1)
            offset[a] = first
    if region is not None:
        ya, xa = grid_axes[-2:]
        y0, y1, x0, x1 = (int(v) for v in region)
        if not (0 <= y0 < y1 <= data.shape[ya] and 0 <= x0 < x1 <= data.shape[xa]):
            raise ValueError(
                f"the region rows {y0}:{y1}, columns {x0}:{x1} is not inside the image's "
                f"{data.shape[ya]}x{data.shape[xa]} pixels; draw the rectangle over the image"
            )
        index[ya], index[xa] = slice(y0, y1), slice(x0, x1)
        offset[ya], offset[xa] = y0, x0
    index_t = tuple(index)
    lazy = is_lazy(layer)
    view = as_dask(data)[index_t] if lazy else np.asarray(data)[index_t]
    return ImageSelection(view, channel_axis, stack_axes, tuple(offset), plane_only, index_t, lazy)


def region_from_shapes(shapes_layer, image_layer, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The rectangle of the image's pixels under a Shapes layer's selected (else last) shape.

    The shape's vertices are taken to world coordinates and into the image's data coordinates
    (scale and translate of both layers are honoured); the bounding box's edges are rounded to
    the nearest pixel edge and clipped to the image.  Only Y and X are used: the region applies
    to every plane of a stack.

    Parameters
    ----------
    shapes_layer : napari.layers.Shapes
    image_layer : napari.layers.Image
    hw : (int, int)
        The image's height and width in pixels.

    Returns
    -------
    (y0, y1, x0, x1) : tuple of int
        Rows ``y0:y1`` and columns ``x0:x1``.

    Raises
    ------
    ValueError
        No shape, a shape outside the image, or a region thinner than the fit's smallest plane.
    """
    from ..arrays import MIN_SIDE

    name = shapes_layer.name
    n = len(shapes_layer.data)
    if n == 0:
        raise ValueError(f"the region layer {name!r} has no shape; draw a rectangle over the part to process")
    chosen = sorted(shapes_layer.selected_data)
    k = chosen[-1] if chosen else n - 1
    verts = np.asarray(shapes_layer.data[k], dtype=float)
    world = [shapes_layer.data_to_world(v) for v in verts]
    yx = np.array([image_layer.world_to_data(w) for w in world], dtype=float)[:, -2:]
    lo = np.floor(yx.min(axis=0) + 0.5).astype(int)
    hi = np.floor(yx.max(axis=0) + 0.5).astype(int)
    y0, x0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    y1, x1 = min(int(hi[0]), hw[0]), min(int(hi[1]), hw[1])
    if y1 <= y0 or x1 <= x0:
        raise ValueError(
            f"shape {k} of the region layer {name!r} lies outside the image {image_layer.name!r}; "
            "draw the rectangle over the image"
        )
    if y1 - y0 < MIN_SIDE or x1 - x0 < MIN_SIDE:
        raise ValueError(
            f"the region from {name!r} is {y1 - y0}x{x1 - x0} pixels of {image_layer.name!r}; a fit needs at "
            f"least {MIN_SIDE}x{MIN_SIDE}: draw a larger rectangle"
        )
    return y0, y1, x0, x1


# --- masks ---------------------------------------------------------------------------------


def _simple_transform(layer) -> bool:
    """True when the layer maps data to world with scale and translate only."""
    try:
        rot = np.asarray(layer.rotate)
        shear = np.asarray(layer.shear)
        aff = np.asarray(layer.affine.affine_matrix)
    except AttributeError:  # pragma: no cover - not a napari layer
        return True
    return np.allclose(rot, np.eye(rot.shape[0])) and np.allclose(shear, 0) and np.allclose(aff, np.eye(aff.shape[0]))


def _resample_labels(labels: np.ndarray, labels_layer, image_layer, grid_shape, grid_axes) -> np.ndarray:
    """Nearest-neighbour resampling of a Labels array onto the image's pixel grid.

    Only scale and translate are taken into account; the Labels axes are right-aligned with
    the image's non-channel axes (``grid_axes``, layer-array axes, which are also the
    layer's world-transform axes).  Pixels outside the Labels layer's extent are 0 (known).
    """
    n = labels.ndim
    img_scale = np.asarray(image_layer.scale, dtype=float)
    img_translate = np.asarray(image_layer.translate, dtype=float)
    lab_scale = np.asarray(labels_layer.scale, dtype=float)
    lab_translate = np.asarray(labels_layer.translate, dtype=float)
    axes = list(grid_axes)[-n:]
    sizes = tuple(grid_shape)[-n:]
    idx = []
    keep = None
    for k in range(n):
        wa = axes[k]
        world = np.arange(sizes[k]) * img_scale[wa] + img_translate[wa]
        j = np.round((world - lab_translate[k]) / lab_scale[k]).astype(np.int64)
        ok = (j >= 0) & (j < labels.shape[k])
        idx.append(np.clip(j, 0, labels.shape[k] - 1))
        keep = ok if keep is None else np.multiply.outer(keep, ok)
    out = labels[np.ix_(*idx)]
    return np.where(keep, out, 0)


def _same_grid(labels_layer, image_layer, grid_axes) -> bool:
    n = labels_layer.ndim
    axes = list(grid_axes)[-n:]
    si = np.asarray(image_layer.scale, dtype=float)[axes]
    ti = np.asarray(image_layer.translate, dtype=float)[axes]
    return np.allclose(np.asarray(labels_layer.scale, dtype=float), si) and np.allclose(
        np.asarray(labels_layer.translate, dtype=float), ti
    )


def _shape_planes(shapes_layer, image_layer, grid_shape: tuple[int, ...]) -> tuple[bool, dict]:
    """Rasterise a Shapes layer plane by plane: (nd, {stack index: (H, W) bool}).

    ``nd``: the shapes are drawn on planes of a stack (an nD Shapes layer over a stack); else
    the single key ``()`` holds the (H, W) mask of every plane.  Only planes with a shape
    get an entry.
    """
    from napari.layers import Shapes

    hw = tuple(grid_shape[-2:])
    stack_shape = tuple(grid_shape[:-2])
    nd = shapes_layer.ndim > 2 and len(stack_shape) > 0
    groups: dict[tuple[int, ...], tuple[list, list]] = {}
    for verts, kind in zip(shapes_layer.data, shapes_layer.shape_type, strict=True):
        world = np.array([shapes_layer.data_to_world(v) for v in np.asarray(verts, dtype=float)])
        img = np.array([image_layer.world_to_data(w) for w in world])
        key: tuple[int, ...] = ()
        if nd:
            # the image coordinates of the stack axes (right-aligned before Y, X)
            lead = img[:, :-2][:, -len(stack_shape) :] if img.shape[1] > 2 else np.zeros((len(img), 0))
            if lead.shape[1] < len(stack_shape):
                lead = np.concatenate([np.zeros((len(img), len(stack_shape) - lead.shape[1])), lead], 1)
            key = tuple(
                int(np.clip(np.round(np.median(lead[:, k])), 0, stack_shape[k] - 1)) for k in range(len(stack_shape))
            )
        groups.setdefault(key, ([], []))
        groups[key][0].append(img[:, -2:])
        groups[key][1].append(kind)
    planes = {}
    for key, (verts, kinds) in groups.items():
        tmp = Shapes(verts, shape_type=kinds)
        planes[key] = np.asarray(tmp.to_masks(mask_shape=hw)).any(axis=0)
    return nd, planes


def _on_another_grid(data, labels_layer, image_layer, grid_shape, grid_axes) -> bool:
    """Labels painted on another pixel grid than the image's (to be sampled at its pixel centres)."""
    return (
        0 < data.ndim <= len(grid_shape)
        and _simple_transform(labels_layer)
        and _simple_transform(image_layer)
        and not _same_grid(labels_layer, image_layer, grid_axes)
    )


def shapes_to_mask(shapes_layer, image_layer, grid_shape: tuple[int, ...]) -> np.ndarray:
    """Rasterise a Shapes layer onto an image's pixel grid (nonzero = inside a shape).

    Every vertex is taken from the Shapes layer's data coordinates to world coordinates and
    into the image layer's data coordinates, so differing scale and translate (and any
    affine) are accounted for.  A 2D Shapes layer gives a (H, W) mask, applied to every
    plane of a stack.  An nD Shapes layer gives a mask of ``grid_shape`` (the image's
    non-channel shape): each shape is drawn on the plane it was drawn on.

    Parameters
    ----------
    shapes_layer : napari.layers.Shapes
    image_layer : napari.layers.Image
    grid_shape : tuple of int
        The image's non-channel shape (..., H, W).
    """
    hw = tuple(grid_shape[-2:])
    if len(shapes_layer.data) == 0:
        return np.zeros(hw, dtype=bool)
    nd, planes = _shape_planes(shapes_layer, image_layer, grid_shape)
    mask = np.zeros(grid_shape if nd else hw, dtype=bool)
    for key, plane in planes.items():
        if nd:
            mask[key] |= plane
        else:
            mask |= plane
    return mask


def _grid(image_layer, selection: ImageSelection) -> tuple[list[int], tuple[int, ...]]:
    full = layer_array(image_layer)
    grid_axes = non_channel_axes(full.ndim, selection.channel_axis)
    return grid_axes, tuple(full.shape[a] for a in grid_axes)


def _cut(mask, selection: ImageSelection, grid_shape: tuple[int, ...]):
    """A full-grid or (H, W) mask cut to the selection (unread for a lazy array); others as they are."""
    shape = tuple(mask.shape)
    if shape == grid_shape:
        return mask[selection.grid_index]
    if len(grid_shape) > 2 and shape == grid_shape[-2:]:
        return mask[selection.grid_index[-2:]]
    return mask


def mask_from_layer(mask_layer, image_layer, selection: ImageSelection) -> np.ndarray:
    """The hole mask (nonzero = fill) of a Labels or Shapes layer for ``selection``.

    The result is (h, w) or the selected non-channel shape (..., h, w): the part of the mask
    under the selection (its plane, plane range and region); a mask of any other shape is
    returned as it is, so the core's validation names the mismatch.
    """
    from napari.layers import Labels, Shapes

    grid_axes, grid_shape = _grid(image_layer, selection)
    if isinstance(mask_layer, Shapes):
        mask = shapes_to_mask(mask_layer, image_layer, grid_shape)
    elif isinstance(mask_layer, Labels):
        data = layer_array(mask_layer)
        if _on_another_grid(data, mask_layer, image_layer, grid_shape, grid_axes):
            # painted on a different grid: sample it at the image's pixel centres
            mask = _resample_labels(np.asarray(data), mask_layer, image_layer, grid_shape, grid_axes)
        else:
            return np.asarray(_cut(data, selection, grid_shape))  # only the selection is read
    else:
        raise _not_a_mask(mask_layer)
    return np.asarray(_cut(mask, selection, grid_shape))


def _not_a_mask(mask_layer) -> TypeError:
    return TypeError(
        f"the mask layer {mask_layer.name!r} is a {type(mask_layer).__name__} layer; "
        "use a Labels layer (nonzero = fill) or a Shapes layer"
    )


def stack_mask(mask_layer, image_layer, selection: ImageSelection):
    """A mask for a lazily read stack, read plane by plane in the worker.

    The value of a "mask" field of :class:`~napari_deep_prior.restore.stream.StackJob`: an (h, w)
    array (one mask for every plane), a dask view of the selection's non-channel shape, or a
    callable ``plane -> (h, w)`` (nD Shapes, Labels on another grid).  Nothing of a lazy
    Labels layer is read here.
    """
    from napari.layers import Labels, Shapes

    grid_axes, grid_shape = _grid(image_layer, selection)
    hw_index = selection.grid_index[-2:]
    if isinstance(mask_layer, Shapes):
        hw = grid_shape[-2:]
        if len(mask_layer.data) == 0:
            return np.zeros(hw, dtype=bool)[hw_index]
        nd, planes = _shape_planes(mask_layer, image_layer, grid_shape)
        if not nd:
            return planes[()][hw_index]
        empty = np.zeros(hw, dtype=bool)[hw_index]

        def shapes_plane(p: int) -> np.ndarray:
            plane = planes.get(selection.plane_stack_index(p))
            return empty if plane is None else plane[hw_index]

        return shapes_plane
    if not isinstance(mask_layer, Labels):
        raise _not_a_mask(mask_layer)
    data = layer_array(mask_layer)
    if _on_another_grid(data, mask_layer, image_layer, grid_shape, grid_axes):
        return _labels_sampler(data, mask_layer, image_layer, selection, grid_axes)
    lazy = data if isinstance(data, np.ndarray) else as_dask(data)
    return _cut(lazy, selection, grid_shape)


def _labels_sampler(data, labels_layer, image_layer, selection: ImageSelection, grid_axes):
    """Nearest-neighbour sampling of a Labels layer on another grid, one plane at a time.

    As :func:`_resample_labels`, for the selection's pixels only: a 2D Labels layer gives one
    (h, w) mask (read here, one plane); an nD one a callable reading one Labels plane per call.
    """
    n = data.ndim
    img_scale = np.asarray(image_layer.scale, dtype=float)
    img_translate = np.asarray(image_layer.translate, dtype=float)
    lab_scale = np.asarray(labels_layer.scale, dtype=float)
    lab_translate = np.asarray(labels_layer.translate, dtype=float)
    axes = list(grid_axes)[-n:]
    maps = []
    for k in range(n):
        wa = axes[k]
        start = selection.offset[wa]
        size = selection.data.shape[wa]
        world = (start + np.arange(size)) * img_scale[wa] + img_translate[wa]
        j = np.round((world - lab_translate[k]) / lab_scale[k]).astype(np.int64)
        ok = (j >= 0) & (j < data.shape[k])
        maps.append((np.clip(j, 0, data.shape[k] - 1), ok))
    (jy, oky), (jx, okx) = maps[-2:]
    keep_yx = np.multiply.outer(oky, okx)

    def plane_of(labels_plane) -> np.ndarray:
        return np.where(keep_yx, np.asarray(labels_plane)[np.ix_(jy, jx)], 0)

    if n == 2:
        return plane_of(np.asarray(data))
    lead_axes = selection.stack_axes[-(n - 2) :]

    def labels_plane(p: int) -> np.ndarray:
        stack = dict(zip(selection.stack_axes, np.unravel_index(p, selection.stack_shape), strict=True))
        idx = []
        for k, a in enumerate(lead_axes):
            j, ok = maps[k]
            if not ok[stack[a]]:
                return np.zeros(keep_yx.shape, dtype=np.uint8)  # outside the Labels layer: known
            idx.append(int(j[stack[a]]))
        return plane_of(data[tuple(idx)])

    return labels_plane


# --- new layers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerTemplate:
    """Grid and colour settings of an Image layer, captured when a run starts.

    New layers (preview, result, history) are built from this snapshot, so they keep the
    input's scale, translate, units, axis labels and colours even if the input layer is
    changed or removed while a run is going on.
    """

    scale: tuple[float, ...]
    translate: tuple[float, ...]
    units: tuple[str, ...]
    axis_labels: tuple[str, ...]
    display: dict
    zoom: int = 1

    @classmethod
    def from_layer(cls, layer) -> LayerTemplate:
        return cls(
            scale=tuple(float(v) for v in layer.scale),
            translate=tuple(float(v) for v in layer.translate),
            units=tuple(str(u) for u in layer.units),
            axis_labels=tuple(str(a) for a in layer.axis_labels),
            display=display_kwargs(layer),
        )

    def zoomed(self, factor: int) -> LayerTemplate:
        """The template of a result whose last two (Y, X) axes have ``factor`` times the pixels.

        Its pixels are ``factor`` times smaller and the result covers the same area: pixel
        ``j`` of the result is centred at ``(j + 0.5) / factor - 0.5`` input pixels.
        """
        if factor == 1:
            return self
        scale = list(self.scale)
        translate = list(self.translate)
        for a in (-2, -1):
            translate[a] -= scale[a] * (factor - 1) / (2.0 * factor)
            scale[a] /= factor
        return dataclasses.replace(self, scale=tuple(scale), translate=tuple(translate), zoom=self.zoom * factor)

    def grid_kwargs(self, offset: tuple[int, ...] | None = None) -> dict:
        """scale, translate, units, axis_labels for a layer on the input's grid.

        ``offset`` (an index into the input's array) shifts the translate so that a cut-out
        whose first pixel is at ``offset`` lands where it was in the input (on Y and X in the
        input's pixels, also for a :meth:`zoomed` template).  The transform has one entry per
        layer dimension (an RGB layer's colour axis has none, and is last).
        """
        translate = list(self.translate)
        n = len(translate)
        if offset is not None:
            for a in range(n):
                translate[a] += offset[a] * self.scale[a] * (self.zoom if a >= n - 2 else 1)
        return {
            "scale": self.scale,
            "translate": tuple(translate),
            "units": self.units,
            "axis_labels": self.axis_labels,
        }

    def image_kwargs(self, offset: tuple[int, ...] | None = None) -> dict:
        """Keyword arguments of ``viewer.add_image`` for a result on the input's grid."""
        kw = self.grid_kwargs(offset)
        kw.update(self.display)
        return kw

    def history_kwargs(self, offset: tuple[int, ...] | None = None) -> dict:
        """Keyword arguments for a history stack: a leading "iteration" axis of scale 1."""
        kw = self.grid_kwargs(offset)
        kw["scale"] = (1.0,) + tuple(kw["scale"])
        kw["translate"] = (0.0,) + tuple(kw["translate"])
        kw["units"] = (ITERATION_UNIT,) + tuple(kw["units"])
        kw["axis_labels"] = ("iteration",) + tuple(kw["axis_labels"])
        kw.update(self.display)
        return kw


def display_kwargs(layer) -> dict:
    """Colour settings of an Image layer for a derived layer of the same dtype and range."""
    kw: dict[str, Any] = {
        "rgb": bool(getattr(layer, "rgb", False)),
        "contrast_limits": tuple(float(c) for c in layer.contrast_limits),
        "gamma": float(layer.gamma),
        "blending": str(layer.blending),
    }
    if not kw["rgb"]:
        from napari.utils.colormaps import AVAILABLE_COLORMAPS

        cmap = layer.colormap
        kw["colormap"] = cmap.name if cmap.name in AVAILABLE_COLORMAPS else cmap
    return kw


def new_mask_kwargs(image_layer, channel_axis: int | None) -> tuple[tuple[int, ...], dict]:
    """Shape and kwargs of an empty Labels mask on an image's grid (its non-channel axes)."""
    data = layer_array(image_layer)
    axes = non_channel_axes(data.ndim, channel_axis)
    shape = tuple(data.shape[a] for a in axes)
    kw = LayerTemplate.from_layer(image_layer).grid_kwargs()
    n_world = len(kw["scale"])
    if n_world == len(shape):  # RGB layers (no transform entry for colour) and grey layers
        world_axes = list(range(n_world))
    else:
        world_axes = [a for a in range(n_world) if a != channel_axis]
    kw = {k: tuple(v[a] for a in world_axes) for k, v in kw.items()}
    return shape, kw


#: A new mask of a stack is chunked one plane per chunk, at most this many pixels a side.
MASK_CHUNK_SIDE = 2048


def new_mask_data(shape: tuple[int, ...]):
    """The data of a new, empty mask: NumPy for one plane; for a stack a chunked zarr array in memory.

    A stack's mask is a zarr array in a memory store, one chunk per plane (tiles of at most
    :data:`MASK_CHUNK_SIDE` pixels): a chunk takes memory only once painted (empty chunks are
    not stored), so a mask of a big stack costs nothing until it is painted, and napari paints
    into it like into an array.  Without zarr installed a NumPy array of zeros is used (the
    system allocates its pages only as they are painted).
    """
    if len(shape) <= 2:
        return np.zeros(shape, dtype=np.uint8)
    try:
        import zarr
    except ImportError:  # pragma: no cover - zarr is an optional extra
        return np.zeros(shape, dtype=np.uint8)
    chunks = (1,) * (len(shape) - 2) + tuple(min(n, MASK_CHUNK_SIDE) for n in shape[-2:])
    return zarr.zeros(shape=shape, chunks=chunks, dtype=np.uint8)


def layer_list_callbacks(viewer, owner) -> tuple:
    """The (emitter, callback) pairs by which a dock widget follows the layer list."""
    ev = viewer.layers.events
    return (
        (ev.inserted, owner._on_layer_inserted),
        (ev.removed, owner._on_layer_removed),
        (ev.moved, owner._refresh_choices),
    )


def disconnect_quietly(pairs) -> None:
    """Disconnect (emitter, callback) pairs, skipping those already gone with a closed viewer."""
    for emitter, cb in pairs:
        try:
            emitter.disconnect(cb)
        except (RuntimeError, TypeError, ValueError):  # pragma: no cover
            pass
