"""Deep Image Prior restoration: one randomly initialised network fitted to one image.

The degradation (:mod:`.degradations`: identity for denoising, a mask for inpainting, a
down-sampler for super-resolution) says how the measured image was made from the wanted one;
the fit (:mod:`.fit`) minimises the distance between the degradation of the network's output
and the measurement, and stops early (:mod:`.stopping`).  Public functions live in
:mod:`.api`; this package never imports :mod:`napari_deep_prior.colorization`, napari or Qt.
"""
