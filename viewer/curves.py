"""A small line plot for training curves, painted with QPainter (no matplotlib import on the GUI thread)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

__all__ = ["CurvesPlot"]


class CurvesPlot(QWidget):
    """Named series of values per epoch; dashed lines for validation series."""

    COLOURS = ("#4ea1ff", "#f0b429", "#3ecf8e", "#ef5b5b")

    def __init__(self, title: str, parent: QWidget | None = None, y_range: tuple[float, float] | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.y_range = y_range
        self._series: dict[str, list[float]] = {}
        self.setMinimumSize(240, 150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        return QSize(320, 180)

    def clear(self) -> None:
        self._series.clear()
        self.update()

    def add_point(self, name: str, value: float) -> None:
        if value is None or not math.isfinite(float(value)):
            return
        self._series.setdefault(name, []).append(float(value))
        self.update()

    def series(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in self._series.items()}

    def set_series(self, series: dict[str, Sequence[float]]) -> None:
        self._series = {k: [float(x) for x in v] for k, v in series.items()}
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor("#121820"))
        painter.setPen(QColor("#aab6c4"))
        painter.drawText(QRectF(8, 4, self.width() - 16, 18), Qt.AlignmentFlag.AlignLeft, self.title)
        plot = QRectF(44, 26, max(10, self.width() - 56), max(10, self.height() - 50))
        values = [v for s in self._series.values() for v in s]
        n = max((len(s) for s in self._series.values()), default=0)
        if self.y_range is not None:
            lo, hi = self.y_range
        elif values:
            lo, hi = min(values), max(values)
            pad = (hi - lo) * 0.1 or max(abs(hi) * 0.1, 0.05)
            lo, hi = max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad
        else:
            lo, hi = 0.0, 1.0
        painter.setPen(QPen(QColor("#2a3542"), 1))
        for i in range(5):
            y = plot.top() + plot.height() * i / 4
            painter.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            painter.setPen(QColor("#6f7c8c"))
            value = hi - (hi - lo) * i / 4
            painter.drawText(QRectF(0, y - 8, 40, 16), Qt.AlignmentFlag.AlignRight, f"{value:.3g}")
            painter.setPen(QPen(QColor("#2a3542"), 1))
        painter.setPen(QColor("#6f7c8c"))
        painter.drawText(
            QRectF(plot.left(), plot.bottom() + 4, plot.width(), 16), Qt.AlignmentFlag.AlignHCenter, "epoch"
        )
        if n == 0:
            painter.drawText(plot, Qt.AlignmentFlag.AlignCenter, "waiting for the first epoch…")
            painter.end()
            return

        def point(i: int, v: float) -> QPointF:
            x = plot.left() + (plot.width() * (i / (n - 1)) if n > 1 else plot.width() / 2)
            y = plot.bottom() - (v - lo) / ((hi - lo) or 1.0) * plot.height()
            return QPointF(x, min(plot.bottom(), max(plot.top(), y)))

        legend_x = plot.left() + 6
        for k, (name, data) in enumerate(self._series.items()):
            colour = QColor(self.COLOURS[k % len(self.COLOURS)])
            pen = QPen(colour, 2)
            if name.startswith("val"):
                pen.setStyle(Qt.PenStyle.DashLine)
            painter.setPen(pen)
            path = QPainterPath()
            for i, v in enumerate(data):
                p = point(i, v)
                if i == 0:
                    path.moveTo(p)
                else:
                    path.lineTo(p)
                painter.drawEllipse(p, 2.5, 2.5)
            painter.drawPath(path)
            painter.drawLine(QPointF(legend_x, plot.top() + 8), QPointF(legend_x + 16, plot.top() + 8))
            painter.setPen(QColor("#c9d3de"))
            label = f"{name} {data[-1]:.3f}" if data else name
            painter.drawText(QPointF(legend_x + 20, plot.top() + 12), label)
            legend_x += 28 + painter.fontMetrics().horizontalAdvance(label)
        painter.end()
