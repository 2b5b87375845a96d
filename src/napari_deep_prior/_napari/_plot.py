"""A small live plot of the loss and the early-stopping statistic, drawn with QPainter.

No matplotlib: a redraw costs well under a millisecond, so the plot can follow every Step
without taking time from the Qt event loop.  Both curves are drawn on a log scale (linear
when a curve has values <= 0, e.g. a Poisson negative log-likelihood), each normalised to
its own range; the iteration of the early-stopping candidate (or the final stop) is a
dashed vertical line.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["LossPlot"]

LOSS_COLOR = QColor(255, 160, 40)
ES_COLOR = QColor(60, 190, 255)
STOP_COLOR = QColor(120, 230, 120)


class LossPlot(QWidget):
    """Loss and ES-WMV variance against the iteration, with the stop marked."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip(
            "Orange: loss (data term) of the fit. Blue: ES-WMV statistic (windowed variance "
            "of the outputs); its minimum is the early-stopping candidate (green line).\n"
            "Each curve is scaled to its own range (log scale)."
        )
        self.clear()

    # -- data ----------------------------------------------------------------------------
    def clear(self, total: int = 1, title: str = "") -> None:
        """Forget all points; ``total`` is the x range (maximum iterations)."""
        self._its: list[int] = []
        self._loss: list[float] = []
        self._es_its: list[int] = []
        self._es: list[float] = []
        self._stop: int | None = None
        self._stop_label = "stop"
        self._total = max(int(total), 1)
        self._title = title
        self.update()

    def add_point(self, iteration: int, loss: float, es_variance: float | None = None, stop: int | None = None) -> None:
        """Append one Step's values (``stop`` is the current early-stopping candidate)."""
        if math.isfinite(loss):
            self._its.append(int(iteration))
            self._loss.append(float(loss))
        if es_variance is not None and math.isfinite(es_variance):
            self._es_its.append(int(iteration))
            self._es.append(float(es_variance))
        if stop is not None:
            self._stop = int(stop)
        self._total = max(self._total, int(iteration))
        self.update()

    def set_stop(self, iteration: int | None, label: str = "stop") -> None:
        """Mark ``iteration`` (the detected stop, or the frame in use)."""
        self._stop = None if iteration is None else int(iteration)
        self._stop_label = label
        self.update()

    @property
    def n_points(self) -> int:
        return len(self._its)

    @property
    def stop(self) -> int | None:
        return self._stop

    # -- drawing -------------------------------------------------------------------------
    @staticmethod
    def _scaled(values: list[float]) -> tuple[list[float], float, float, bool]:
        """Values mapped to [0, 1] (log10 when all are positive), with the original range."""
        lo, hi = min(values), max(values)
        use_log = lo > 0
        if use_log:
            vals = [math.log10(v) for v in values]
        else:
            vals = list(values)
        vlo, vhi = min(vals), max(vals)
        span = vhi - vlo if vhi > vlo else 1.0
        return [(v - vlo) / span for v in vals], lo, hi, use_log

    def _path(self, rect: QRectF, its: list[int], ys: list[float]) -> QPainterPath:
        path = QPainterPath()
        for k, (i, y) in enumerate(zip(its, ys, strict=True)):
            pt = QPointF(rect.left() + rect.width() * i / self._total, rect.bottom() - rect.height() * y)
            if k == 0:
                path.moveTo(pt)
            else:
                path.lineTo(pt)
        return path

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt name)
        p = QPainter(self)
        try:
            p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            pal = self.palette()
            fg = pal.color(pal.ColorRole.WindowText)
            font = QFont(p.font())
            font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
            p.setFont(font)
            fm = p.fontMetrics()
            th = fm.height()
            rect = QRectF(8, th + 6, self.width() - 16, self.height() - 2 * th - 14)
            if rect.width() < 20 or rect.height() < 20:
                return
            axis = QColor(fg)
            axis.setAlpha(120)
            p.setPen(QPen(axis, 1))
            p.drawRect(rect)
            # x labels
            p.setPen(fg)
            if self._loss:
                p.drawText(QPointF(rect.left(), rect.bottom() + th), "0")
                end = f"{self._total} iterations"
                p.drawText(QPointF(rect.right() - fm.horizontalAdvance(end), rect.bottom() + th), end)
            # legend
            x = rect.left()
            legend = []
            if self._loss:
                legend.append((LOSS_COLOR, f"loss {self._loss[-1]:.3g}"))
            if self._es:
                legend.append((ES_COLOR, f"ES var {self._es[-1]:.3g}"))
            if self._stop is not None:
                legend.append((STOP_COLOR, f"{self._stop_label} @ {self._stop}"))
            if self._title:
                legend.insert(0, (fg, self._title))
            for color, text in legend:
                p.setPen(color)
                p.drawText(QPointF(x, th), text)
                x += fm.horizontalAdvance(text) + 12
            if not self._loss:
                p.setPen(axis)
                msg = "loss and early-stopping statistic appear here during a run"
                p.drawText(rect, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, msg)
                return
            for its, vals, color in ((self._its, self._loss, LOSS_COLOR), (self._es_its, self._es, ES_COLOR)):
                if len(vals) < 1:
                    continue
                ys, _, _, _ = self._scaled(vals)
                p.setPen(QPen(color, 1.6))
                p.drawPath(self._path(rect, its, ys))
            if self._stop is not None:
                xs = rect.left() + rect.width() * min(self._stop, self._total) / self._total
                pen = QPen(STOP_COLOR, 1.5)
                pen.setStyle(Qt.PenStyle.DashLine)
                p.setPen(pen)
                p.drawLine(QPointF(xs, rect.top()), QPointF(xs, rect.bottom()))
        finally:
            p.end()
