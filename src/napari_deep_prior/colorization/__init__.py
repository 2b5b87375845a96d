"""Colorization of grey images: automatic (pretrained networks) and guided by colour hints.

Public functions live in :mod:`.api`; this package never imports
:mod:`napari_deep_prior.restore`, napari or Qt.
"""
