"""Colour hints: parsing, validation, encoding as ab patches, CSV files, gamut notes.

A *hint* is a user-chosen colour at one pixel, ``(row, col, color)``, with the colour given
as a ``'#rrggbb'`` string or an RGB triple (integers 0-255 or floats 0-1).  Hints are
encoded as square patches of ab values (:func:`encode_hints`) at each covered pixel's own
lightness, pulled into the sRGB gamut there (:func:`~.lab.gamut_clip`), the convention of the
interactive colorization GUI of Zhang et al. (2017).

References
----------
.. [1] R. Zhang, J.-Y. Zhu, P. Isola, X. Geng, A. S. Lin, T. Yu, A. A. Efros, "Real-Time
       User-Guided Image Colorization with Learned Deep Priors", ACM SIGGRAPH 2017.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from ..errors import ParameterError
from .lab import gamut_clip, lab_to_rgb, rgb_to_lab

__all__ = [
    "GAMUT_WARN_AB",
    "ColorLike",
    "Hint",
    "CSVHint",
    "check_hint_size",
    "color_to_hex",
    "encode_hints",
    "gamut_notes",
    "normalize_hints",
    "parse_color",
    "read_hints_csv",
    "scale_hints",
    "write_hints_csv",
]

ColorLike = str | Sequence[float] | np.ndarray
#: A hint colour whose ab moves by more than this when pulled into gamut is noted (about a
#: clearly visible colour difference; smaller shifts are common and harmless).
GAMUT_WARN_AB = 12.0


class Hint(NamedTuple):
    """One colour hint: pixel (row, col) should have ``color``.

    ``color`` is a ``'#rrggbb'`` string or an RGB triple (integers 0-255 or floats 0-1).
    """

    row: float
    col: float
    color: ColorLike


class CSVHint(Hint):
    """A :class:`Hint` read from a CSV file, which remembers where: ``where`` is
    ``"hints.csv, line 5 ('60,20,#ff0000')"`` (lines numbered as a text editor shows them,
    the header being line 1).  Errors about it name that line."""

    where: str

    def __new__(cls, row, col, color, where: str = ""):
        self = super().__new__(cls, row, col, color)
        self.where = where
        return self

    def __reduce__(self):
        return (CSVHint, (self.row, self.col, self.color, self.where))


def _hint_label(i: int, hint) -> str:
    """How a message names hint ``i``: its CSV line when it came from a file, else ``hints[i]``."""
    where = getattr(hint, "where", "")
    return where if where else f"hints[{i}]"


_HEX = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$")


def parse_color(color: ColorLike) -> np.ndarray:
    """An sRGB colour as floats in [0, 1].

    Parameters
    ----------
    color : str or sequence of 3 numbers
        ``'#rrggbb'`` (or ``'#rgb'``), integers 0-255 (Python ints or an integer array),
        or floats 0-1.

    Returns
    -------
    rgb : ndarray, shape (3,), float64 in [0, 1]

    Raises
    ------
    ValueError
        For a malformed string or values out of range.
    TypeError
        For anything that is neither a string nor three numbers.

    Examples
    --------
    >>> parse_color('#ff8000')
    array([1.        , 0.50196078, 0.        ])
    >>> bool(parse_color((255, 128, 0))[1] == parse_color((1.0, 128 / 255, 0.0))[1])
    True
    """
    if isinstance(color, str):
        m = _HEX.match(color.strip())
        if not m:
            raise ValueError(
                f"colour {color!r} is not a hex colour; write it as '#rrggbb' "
                "(e.g. '#ff8000'), or give an RGB triple such as (255, 128, 0) or (1.0, 0.5, 0.0)"
            )
        h = m.group(1)
        if len(h) == 3:
            h = "".join(ch * 2 for ch in h)
        return np.array([int(h[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.float64) / 255.0
    if isinstance(color, (bytes, dict)) or not hasattr(color, "__len__"):
        raise TypeError(f"colour must be a '#rrggbb' string or an RGB triple, got {type(color).__name__} {color!r}")
    arr = np.asarray(color)
    if arr.shape != (3,) or arr.dtype.kind not in "uifb":
        raise TypeError(f"colour must be a '#rrggbb' string or three numbers (R, G, B), got {color!r}")
    # Integers 0-255 unless any value is a float (then all are read as floats 0-1).
    is_int = arr.dtype.kind in "uib" or all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in color)
    if is_int:
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError(f"integer colour {color!r} must have values in 0-255")
        return arr.astype(np.float64) / 255.0
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError(
            f"float colour {color!r} must have values in [0, 1]; for 0-255 values give integers, e.g. (255, 128, 0)"
        )
    return arr


def color_to_hex(color: ColorLike) -> str:
    """``'#rrggbb'`` for any accepted colour (see :func:`parse_color`)."""
    rgb = np.clip(np.rint(parse_color(color) * 255.0), 0, 255).astype(int)
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def normalize_hints(hints: Iterable, shape: tuple[int, int]) -> list[tuple[int, int, np.ndarray]]:
    """Validate hints against an image of ``shape`` (H, W).

    Returns
    -------
    list of (row, col, rgb)
        Integer pixel positions (rounded) and colours as floats in [0, 1].

    Raises
    ------
    TypeError, ValueError
        Naming the offending hint and how to fix it: ``hints[i]`` (0-based, as in Python),
        or its file and line for hints read by :func:`read_hints_csv`.
    """
    if hints is None:
        raise ValueError("no hints were given; pass a list of (row, col, colour) hints")
    if isinstance(hints, (str, bytes)):
        raise TypeError(
            "hints must be a list of (row, col, colour) tuples; to read a CSV file use read_hints_csv(path)"
        )
    h, w = shape
    out = []
    for i, hint in enumerate(hints):
        name = _hint_label(i, hint)
        try:
            row, col, colour = hint
        except (TypeError, ValueError):
            raise TypeError(
                f"{name} is {hint!r}; each hint must be (row, col, colour), e.g. (120, 64, '#ff8000')"
            ) from None
        try:
            r, c = float(row), float(col)
        except (TypeError, ValueError):
            raise TypeError(f"{name}: row and col must be numbers, got {row!r}, {col!r}") from None
        if not (np.isfinite(r) and np.isfinite(c)):
            raise ValueError(f"{name}: row and col must be finite, got {row!r}, {col!r}")
        ri, ci = int(np.floor(r + 0.5)), int(np.floor(c + 0.5))
        if not (0 <= ri < h and 0 <= ci < w):
            raise ValueError(
                f"{name}: the hint at (row, col) = ({row}, {col}) is outside the image of shape ({h}, {w}); "
                f"rows must be in 0..{h - 1} and columns in 0..{w - 1}"
            )
        try:
            rgb = parse_color(colour)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name}: {exc}") from None
        out.append((ri, ci, rgb))
    return out


def check_hint_size(size: int) -> int:
    """``size`` as an int when it is a positive odd number of pixels; TypeError/ValueError otherwise."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"hint_size must be an odd integer number of pixels, got {size!r}")
    if size < 1 or size % 2 == 0:
        raise ParameterError(f"{{hint_size}} must be a positive odd number of pixels (1, 3, 5, ...), got {size}")
    return int(size)


def encode_hints(L: np.ndarray, hints: Iterable, *, size: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise hints into an ab image and a mask.

    Each hint covers a ``size`` x ``size`` square centred on its pixel (cut at the image
    border).  Every covered pixel gets the hint colour's ab, pulled into gamut at that
    pixel's own lightness (:func:`gamut_clip`).  Where squares overlap, later hints win.

    Parameters
    ----------
    L : ndarray, shape (H, W)
        Lightness (0-100) of the image.
    hints : iterable of (row, col, colour)
        See :class:`Hint`.  Positions are rounded to the nearest pixel.
    size : int
        Side of the square, odd (1 = single pixels; 5 is the GUI default of Zhang et al.).

    Returns
    -------
    ab_hint : ndarray, shape (H, W, 2), float32
        Hint ab values, 0 outside the hints.
    mask : ndarray, shape (H, W), float32
        1 where a hint is given, 0 elsewhere.

    Examples
    --------
    >>> L = np.full((16, 16), 50.0)
    >>> ab, mask = encode_hints(L, [(8, 8, '#ff0000')], size=3)
    >>> int(mask.sum()), bool(ab[8, 8, 0] > 40)
    (9, True)
    """
    L = np.asarray(L, dtype=np.float64)
    if L.ndim != 2:
        raise ValueError(f"L must be a 2-D lightness image (H, W), got shape {L.shape}")
    size = check_hint_size(size)
    parsed = normalize_hints(hints, L.shape)
    h, w = L.shape
    half = size // 2
    ab_hint = np.zeros((h, w, 2), np.float32)
    mask = np.zeros((h, w), np.float32)
    if not parsed:
        return ab_hint, mask
    colours_ab = rgb_to_lab(np.stack([p[2] for p in parsed]))[:, 1:]
    # Gather every covered pixel once, clip all of them in one vectorised call.
    boxes, idx_r, idx_c, owner = [], [], [], []
    for k, (r, c, _rgb) in enumerate(parsed):
        r0, r1 = max(r - half, 0), min(r + half + 1, h)
        c0, c1 = max(c - half, 0), min(c + half + 1, w)
        rr, cc = np.mgrid[r0:r1, c0:c1]
        boxes.append((r0, r1, c0, c1))
        idx_r.append(rr.ravel())
        idx_c.append(cc.ravel())
        owner.append(np.full(rr.size, k))
    idx_r_all = np.concatenate(idx_r)
    idx_c_all = np.concatenate(idx_c)
    owner_all = np.concatenate(owner)
    clipped = gamut_clip(colours_ab[owner_all], L[idx_r_all, idx_c_all])
    start = 0
    for r0, r1, c0, c1 in boxes:  # in order, so later hints overwrite earlier ones
        n = (r1 - r0) * (c1 - c0)
        ab_hint[r0:r1, c0:c1] = clipped[start : start + n].reshape(r1 - r0, c1 - c0, 2)
        mask[r0:r1, c0:c1] = 1.0
        start += n
    return ab_hint, mask


# --------------------------------------------------------------------------------------
# Hints CSV files
# --------------------------------------------------------------------------------------


def read_hints_csv(path: str | os.PathLike) -> list[Hint]:
    """Read hints from a CSV file.

    Two layouts are accepted, with a header line: ``row,col,color`` (colour ``#rrggbb``)
    or ``row,col,r,g,b`` (integers 0-255, or floats 0-1 when any value has a decimal point).
    Blank lines are skipped; a UTF-8 byte-order mark (as spreadsheets write) is allowed.

    Returns
    -------
    list of Hint
        :class:`CSVHint` objects: a hint later found outside the image (by
        :func:`normalize_hints`, i.e. by ``colorize``) is reported by its line of the file.

    Raises
    ------
    ValueError
        If the file is not UTF-8 text, or the header or a line is malformed: the message gives
        the line number as a text editor shows it (the header is line 1) and the line's text.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "hints.csv"
    >>> _ = p.write_text("row,col,color\\n10,12,#3070c0\\n")
    >>> read_hints_csv(p)
    [CSVHint(row=10, col=12, color='#3070c0')]
    """
    name = os.fspath(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"{name}, line {line}: the file is not UTF-8 text (byte {raw[exc.start]:#04x}); save it as "
            "UTF-8 CSV with a header 'row,col,color' or 'row,col,r,g,b'"
        ) from None
    lines = text.splitlines()

    def where(lineno: int) -> str:
        shown = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return f"{name}, line {lineno} ({shown!r})"

    reader = csv.reader(io.StringIO(text, newline=""))
    records: list[tuple[int, list[str]]] = []
    try:
        for rec in reader:
            if rec and any(x.strip() for x in rec):
                records.append((reader.line_num, [x.strip() for x in rec]))
    except csv.Error as exc:
        raise ValueError(f"{where(reader.line_num)}: not valid CSV ({exc})") from None
    if not records:
        raise ValueError(f"hints file {name!r} is empty; it needs a header 'row,col,color' or 'row,col,r,g,b'")
    head_line, head = records[0]
    header = [x.lower() for x in head]
    hex_layout = header == ["row", "col", "color"] or header == ["row", "col", "colour"]
    rgb_layout = header == ["row", "col", "r", "g", "b"]
    if not (hex_layout or rgb_layout):
        raise ValueError(
            f"{where(head_line)}: the header should be 'row,col,color' (with #rrggbb colours) or 'row,col,r,g,b'"
        )
    want = 3 if hex_layout else 5
    hints: list[Hint] = []
    for lineno, rec in records[1:]:
        if len(rec) != want:
            cols = "row,col,color" if hex_layout else "row,col,r,g,b"
            raise ValueError(f"{where(lineno)}: expected {want} values ({cols}), got {len(rec)}")
        try:
            row, col = (_csv_number(rec[0], "row"), _csv_number(rec[1], "col"))
            if hex_layout:
                colour: ColorLike = rec[2]
            else:
                vals = rec[2:]
                if any(("." in v or "e" in v.lower()) for v in vals):
                    colour = tuple(float(v) for v in vals)
                else:
                    colour = tuple(int(v) for v in vals)
            parse_color(colour)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where(lineno)}: {exc}") from None
        hints.append(CSVHint(row, col, colour, where(lineno)))
    return hints


def _csv_number(text: str, what: str) -> float | int:
    """A row or column of a CSV line: a finite number (an int when it is whole)."""
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not np.isfinite(v):
        raise ValueError(f"{what} {text!r} must be a finite number")
    return int(v) if v.is_integer() else v


def write_hints_csv(path: str | os.PathLike, hints: Iterable, *, layout: str = "hex") -> None:
    """Write hints to a CSV file readable by :func:`read_hints_csv`.

    Parameters
    ----------
    path : path-like
    hints : iterable of (row, col, colour)
    layout : {"hex", "rgb"}
        ``row,col,color`` with ``#rrggbb`` colours, or ``row,col,r,g,b`` with 0-255 integers.

    The file is written whole (a temporary file beside it, renamed into place): a bad hint, a
    full disk or an interruption leave an existing file as it was.

    Raises
    ------
    TypeError, ValueError
        For a malformed hint (``hints[i]``); nothing is written.
    OSError
        When the file cannot be written (the message says why; the old file is kept).
    """
    from ..io import atomic_output

    if layout not in ("hex", "rgb"):
        raise ValueError(f"layout must be 'hex' or 'rgb', got {layout!r}")
    rows = [["row", "col", "color"] if layout == "hex" else ["row", "col", "r", "g", "b"]]
    for i, hint in enumerate(hints):
        try:
            row, col, colour = hint
        except (TypeError, ValueError):
            raise TypeError(f"hints[{i}] is {hint!r}; each hint must be (row, col, colour)") from None
        try:
            rc = [_fmt_num(row), _fmt_num(col)]
            if layout == "hex":
                rows.append(rc + [color_to_hex(colour)])
            else:
                rgb = np.clip(np.rint(parse_color(colour) * 255.0), 0, 255).astype(int)
                rows.append(rc + [str(v) for v in rgb])
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"hints[{i}]: {exc}") from None
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)


def _fmt_num(v) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(f)


def scale_hints(hints, src: tuple[int, int], dst: tuple[int, int]) -> list[tuple[float, float, np.ndarray]]:
    """Hint positions moved from a ``src`` pixel grid to a ``dst`` grid (pixel centres).

    Returns
    -------
    list of (row, col, rgb)
        Float positions in ``dst`` (clipped to it) and colours as floats in [0, 1].
    """
    parsed = normalize_hints(hints, src)
    sy, sx = dst[0] / src[0], dst[1] / src[1]
    out = []
    for r, c, rgb in parsed:
        rr = min(max((r + 0.5) * sy - 0.5, 0.0), dst[0] - 1)
        cc = min(max((c + 0.5) * sx - 0.5, 0.0), dst[1] - 1)
        out.append((rr, cc, rgb))
    return out


def gamut_notes(L: np.ndarray, hints, *, tolerance: float = GAMUT_WARN_AB) -> list[str]:
    """Messages for the hints whose colour cannot be shown at their pixel's lightness.

    :func:`encode_hints` pulls such colours into the sRGB gamut (keeping lightness and hue,
    shrinking the chroma); this names each hint whose ab moves by more than ``tolerance``.

    Parameters
    ----------
    L : ndarray, shape (H, W)
        Lightness 0-100 of the image.
    hints : list of (row, col, colour)
    tolerance : float
        Largest ab shift that goes unmentioned.

    Returns
    -------
    list of str
        ``"hint 1 at (row 10, col 5): #ffff00 -> #3b3a00 (pixel lightness L = 10)"``, ...

    Examples
    --------
    >>> gamut_notes(np.full((16, 16), 10.0), [(3, 4, "#ffff00")])
    ['hint 1 at (row 3, col 4): #ffff00 -> #1f1c00 (pixel lightness L = 10)']
    """
    notes = []
    for i, (r, c, rgb) in enumerate(normalize_hints(hints, np.shape(L))):
        lum = float(L[r, c])
        ab = rgb_to_lab(rgb)[1:]
        clipped = gamut_clip(ab, lum)
        if float(np.hypot(*(ab - clipped))) > tolerance:
            shown = lab_to_rgb(np.array([lum, *clipped]))
            notes.append(
                f"hint {i + 1} at (row {r}, col {c}): {color_to_hex(rgb)} -> "
                f"{color_to_hex(np.clip(shown, 0, 1))} (pixel lightness L = {lum:.0f})"
            )
    return notes
