"""The thin napari front end: dock widgets, workers, layer <-> array helpers, sample data.

Submodules are imported by the manifest (napari.yaml) only when needed; importing this
package imports neither torch nor Qt.
"""
