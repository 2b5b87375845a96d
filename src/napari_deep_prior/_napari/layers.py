"""Layer <-> array helpers for the napari front end.

Everything here works on napari layer *models* (no Qt): reading the array a widget should
process, turning a Labels or Shapes layer into a hole mask on the image's pixel grid, and
building the keyword arguments of new layers so they keep the input's scale, translate,
units and axis labels.  The input and mask layers are only ever read.
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
    "layer_array",
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
    data : ndarray
        The array handed to the core (a copy-free view where possible; never written to).
    channel_axis : int or None
        Channel axis of ``data`` (``data`` keeps the layer's number of dimensions).
    stack_axes : list of int
        Layer axes that the core treats as a stack of planes (not channel, not Y/X).
    offset : tuple of int
        Index of ``data[0, 0, ...]`` in the layer's array (non-zero on the stack axes when a
        single plane was selected).
    plane_only : bool
        Only the plane on screen was selected.
    """

    data: np.ndarray
    channel_axis: int | None
    stack_axes: list[int]
    offset: tuple[int, ...]
    plane_only: bool

    @property
    def stack_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[a] for a in self.stack_axes)

    def plane_offset(self, plane: int) -> tuple[int, ...]:
        """Index in the layer's array of the first pixel of the core's plane ``plane``."""
        off = list(self.offset)
        if self.stack_axes:
            idx = np.unravel_index(int(plane), self.stack_shape)
            for a, i in zip(self.stack_axes, idx, strict=True):
                off[a] += int(i)
        return tuple(off)


def select_image(layer, channel_axis: int | None, *, plane_only: bool, world_point=None) -> ImageSelection:
    """Read the array to process from an Image layer.

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
    """
    data = layer_array(layer)
    ndim = data.ndim
    stack_axes = non_channel_axes(ndim, channel_axis)[:-2]
    offset = [0] * ndim
    if plane_only and stack_axes:
        point = np.zeros(layer.ndim) if world_point is None else world_point
        coords = np.asarray(layer.world_to_data(point), dtype=float)
        # an RGB layer's ndim excludes its colour axis; stack axes come first either way
        index: list[Any] = [slice(None)] * ndim
        for a in stack_axes:
            i = int(np.clip(np.round(coords[a]), 0, data.shape[a] - 1))
            index[a] = slice(i, i + 1)
            offset[a] = i
        data = data[tuple(index)]
    else:
        plane_only = False
    return ImageSelection(np.asarray(data), channel_axis, stack_axes, tuple(offset), plane_only)


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
    from napari.layers import Shapes

    hw = tuple(grid_shape[-2:])
    n_shapes = len(shapes_layer.data)
    if n_shapes == 0:
        return np.zeros(hw, dtype=bool)
    stack_shape = tuple(grid_shape[:-2])
    nd = shapes_layer.ndim > 2 and len(stack_shape) > 0
    mask = np.zeros(grid_shape if nd else hw, dtype=bool)
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
    for key, (verts, kinds) in groups.items():
        tmp = Shapes(verts, shape_type=kinds)
        plane = np.asarray(tmp.to_masks(mask_shape=hw)).any(axis=0)
        if nd:
            mask[key] |= plane
        else:
            mask |= plane
    return mask


def mask_from_layer(mask_layer, image_layer, selection: ImageSelection) -> np.ndarray:
    """The hole mask (nonzero = fill) of a Labels or Shapes layer for ``selection``.

    The result is (H, W) or the selected non-channel shape (..., H, W); a mask of any other
    shape is returned as it is, so the core's validation names the mismatch.
    """
    from napari.layers import Labels, Shapes

    full = layer_array(image_layer)
    ca = selection.channel_axis
    grid_axes = non_channel_axes(full.ndim, ca)
    grid_shape = tuple(full.shape[a] for a in grid_axes)
    if isinstance(mask_layer, Shapes):
        mask = shapes_to_mask(mask_layer, image_layer, grid_shape)
    elif isinstance(mask_layer, Labels):
        mask = np.asarray(layer_array(mask_layer))
        if (
            0 < mask.ndim <= len(grid_shape)
            and _simple_transform(mask_layer)
            and _simple_transform(image_layer)
            and not _same_grid(mask_layer, image_layer, grid_axes)
        ):
            # painted on a different grid: sample it at the image's pixel centres
            mask = _resample_labels(mask, mask_layer, image_layer, grid_shape, grid_axes)
    else:
        raise TypeError(
            f"the mask layer {mask_layer.name!r} is a {type(mask_layer).__name__} layer; "
            "use a Labels layer (nonzero = fill) or a Shapes layer"
        )
    # cut the selected plane out of a full-size mask
    if selection.plane_only and mask.ndim == len(grid_shape) and mask.shape == grid_shape:
        index = []
        for a in grid_axes:
            if a in selection.stack_axes:
                i = selection.offset[a]
                index.append(slice(i, i + 1))
            else:
                index.append(slice(None))
        mask = mask[tuple(index)]
    return mask


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
        return dataclasses.replace(self, scale=tuple(scale), translate=tuple(translate))

    def grid_kwargs(self, offset: tuple[int, ...] | None = None) -> dict:
        """scale, translate, units, axis_labels for a layer on the input's grid.

        ``offset`` (an index into the input's array) shifts the translate so that a cut-out
        whose first pixel is at ``offset`` lands where it was in the input.  The transform
        has one entry per layer dimension (an RGB layer's colour axis has none, and is last).
        """
        translate = list(self.translate)
        if offset is not None:
            for a in range(len(translate)):
                translate[a] += offset[a] * self.scale[a]
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
