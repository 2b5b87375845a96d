"""Camera values to photon counts, for the Poisson loss.

``photons = (value - offset) / gain`` plus Gaussian read noise by the shifted-Poisson
approximation; :func:`normalise_counts` scales the counts to the [0, 1] planes a fit works on
and returns the :class:`~napari_deep_prior.arrays.Layout` that maps the fitted rate back to
the camera's units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arrays import Layout, check_data_range, check_finite, check_values_in_range, planes_of, template_literal
from ..errors import ParameterError

__all__ = ["CameraModel", "normalise_counts"]


@dataclass(frozen=True)
class CameraModel:
    """How a camera's values relate to photon counts (the Poisson loss only).

    ``photons = (value - offset) / gain``, plus Gaussian read noise of ``read_noise``
    photons (electrons) rms, handled by the shifted-Poisson approximation: ``photons +
    read_noise**2`` is fitted as Poisson counts of rate ``rate + read_noise**2`` (its
    variance is right), and the rate is returned in the input's units, ``rate * gain +
    offset``.
    """

    offset: float = 0.0
    gain: float = 1.0
    read_noise: float = 0.0

    @classmethod
    def from_args(cls, offset, gain, read_noise, poisson: bool) -> CameraModel | None:
        given = {
            k: v for k, v in (("camera_offset", offset), ("gain", gain), ("read_noise", read_noise)) if v is not None
        }
        if not given:
            return None
        if not poisson:
            names = " and ".join(f"{{{k}}}" for k in given)
            raise ParameterError(
                f"{names} describe{'s' if len(given) == 1 else ''} how the image relates to photon "
                "counts, which only the Poisson loss uses; give {loss} 'poisson' as well, or leave them out"
            )
        for name, v in given.items():
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
                raise ParameterError(f"{{{name}}} must be a finite number, got {template_literal(repr(v))}")
        if "gain" in given and not given["gain"] > 0:
            raise ParameterError(f"{{gain}} must be > 0 (camera units per photon), got {given['gain']}")
        if "read_noise" in given and given["read_noise"] < 0:
            raise ParameterError(f"{{read_noise}} must be >= 0 (photons rms), got {given['read_noise']}")
        return cls(float(offset or 0.0), float(1.0 if gain is None else gain), float(read_noise or 0.0))


def normalise_counts(
    arr: np.ndarray,
    has_alpha: bool,
    shape,
    channel_axis,
    camera: CameraModel | None,
    data_range: tuple[float, float] | None = None,
) -> tuple[np.ndarray, Layout]:
    """(..., H, W, C) camera values -> (photon counts scaled to [0, 1] planes, the Layout back).

    ``data_range`` ``(lo, hi)``: the camera values' range over the whole stack (see
    :func:`~napari_deep_prior.arrays.normalise`); the counts are then scaled by the counts of
    ``hi`` and checked at ``lo``, as for the whole stack at once.
    """
    planes, alpha = planes_of(arr, has_alpha)
    check_finite(planes)
    dtype, ca, stack_shape = arr.dtype, channel_axis, arr.shape[:-3]
    cam = camera or CameraModel()
    photons = (planes.astype(np.float64) - cam.offset) / cam.gain + cam.read_noise**2
    data_range = check_data_range(data_range)
    if data_range is not None:
        check_values_in_range(float(planes.min()), float(planes.max()), data_range)
        ends = (np.array(data_range, dtype=np.float64) - cam.offset) / cam.gain + cam.read_noise**2
        low, high = float(ends[0]), float(ends[1])
    else:
        low, high = float(photons.min()), None
    if low < 0:
        if camera is None:
            raise ParameterError(
                f"the Poisson loss needs non-negative photon counts, but the image has minimum "
                f"{low:g}; say how camera values convert to counts ({{camera_offset}}, {{gain}}, "
                "{read_noise}) or use {loss} 'gaussian'"
            )
        # values below the offset are read noise: the shifted counts are clipped at 0
        np.maximum(photons, 0.0, out=photons)
    counts_scale = (float(photons.max()) if high is None else max(high, 0.0)) or 1.0
    # value = work * scale + lo inverts photons = (value - offset) / gain + read_noise**2
    layout = Layout(
        np.dtype(dtype),
        tuple(shape),
        ca,
        tuple(stack_shape),
        cam.offset - cam.read_noise**2 * cam.gain,
        counts_scale * cam.gain,
        alpha,
        planes,
        counts_scale=counts_scale,
    )
    return (photons / counts_scale).astype(np.float32), layout
