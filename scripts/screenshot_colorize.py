"""Screenshot of the Colorize widget at work, for the documentation.

Opens napari with the Colorize widget docked, puts six colour hints on a small grey
cameraman (skimage.data.camera at half size, 256 x 256) with the ``levin`` method, lets the live update
colour it, and saves the whole window:

    colorize_hints.png   left: the grey image with its hints layer (six coloured points);
                         right: "<image> [colorized]", the levin result

Usage (a display is needed; on a headless Linux machine use Xvfb)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshot_colorize.py [OUT_DIR]

OUT_DIR defaults to docs/images/.  The helpers (window size, toast hiding, palette-quantised
PNG) are those of scripts/screenshots.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from screenshots import NOTIFICATION_SECONDS, _new_viewer, _process, _save  # noqa: E402

#: (row, col, colour) on the 256 x 256 cameraman: sky, grass, face, coat.
HINTS = [
    (24, 200, "#8ab4e0"),  # sky, right
    (16, 40, "#9cc0e8"),  # sky, left
    (200, 210, "#7a9a48"),  # grass, right
    (236, 92, "#6e9040"),  # grass, left, under the coat
    (78, 122, "#d8a080"),  # face
    (150, 44, "#283450"),  # coat
]
#: A lower window than the other screenshots: the two images sit side by side.
WINDOW_SIZE = (1400, 720)


def colorize_shot(out: Path, app, timeout: float) -> None:
    from skimage import data

    from napari_deep_prior._napari.widgets import ColorizeWidget

    viewer = _new_viewer("Colorize")
    viewer.window._qt_window.resize(*WINDOW_SIZE)  # a script may use the private window
    grey = viewer.add_image(data.camera()[::2, ::2], name="cameraman")
    w = ColorizeWidget(viewer)
    viewer.window.add_dock_widget(w, name="Colorize", area="right")
    w.image.value = grey
    w.mode.value = "hints"
    w.method.value = "levin"
    w.hint_size.value = 5
    pts = w.add_hints_layer()
    done = []
    w.colorized.connect(lambda layer: done.append(layer))
    for r, c, colour in HINTS:
        pts.selected_data = set()
        pts.current_face_color = colour
        pts.add([[r, c]])
        _process(app, 0.05)
    t0 = time.perf_counter()
    while not done or w.running:  # the debounced live update
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError("the live colorization did not finish in time")
        _process(app, 0.05)
    pts.selected_data = set()
    # side by side: the grey image with its hints | the result
    result = viewer.layers["cameraman [colorized]"]
    # napari fills grid cells from the bottom of the layer list, `stride` layers each:
    # [grey, hints, result] gives (grey + hints) | (result)
    viewer.layers.move(viewer.layers.index(result), len(viewer.layers))
    viewer.grid.enabled = True
    viewer.grid.stride = 2
    viewer.reset_view()
    viewer.layers.selection.active = pts
    _save(viewer, out / "colorize_hints.png", app, settle=NOTIFICATION_SECONDS)
    viewer.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="docs/images", help="output folder")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="give up if the colorization takes longer (seconds)"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from napari.qt import get_qapp

    t0 = time.perf_counter()
    app = get_qapp()
    colorize_shot(out, app, args.timeout)
    print(f"done in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
