"""The AI results panel: one bar per class, the predicted class, the model, and the disclaimer."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from viewer.theme import MUTED, class_colour

__all__ = ["DISCLAIMER", "ProbabilityBars", "ResultsPanel"]

DISCLAIMER = "Research use only, not for clinical diagnosis"


class ProbabilityBars(QWidget):
    """Per-class probability bars; the predicted class drawn in its colour, the others muted."""

    ROW = 30

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._names: list[str] = []
        self._probs: list[float] | None = None
        self._top: int | None = None
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

    def set_values(self, names: Sequence[str], probs: Sequence[float] | None, top: int | None = None) -> None:
        self._names = list(names)
        self._probs = None if probs is None else [float(p) for p in probs]
        self._top = top
        self.setFixedHeight(max(1, len(self._names)) * self.ROW + 4)
        self.update()

    def values(self) -> dict[str, float]:
        return dict(zip(self._names, self._probs or []))

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        return QSize(240, max(1, len(self._names)) * self.ROW + 4)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        width = self.width()
        name_w = min(110, int(width * 0.38))
        pct_w = 52
        bar_x = name_w + 6
        bar_w = max(10, width - bar_x - pct_w - 4)
        for i, name in enumerate(self._names):
            y = i * self.ROW + 4
            is_top = self._top == i
            colour = QColor(class_colour(name)) if is_top else QColor("#7f8b99")
            font = QFont(self.font())
            font.setBold(is_top)
            painter.setFont(font)
            painter.setPen(QColor("#e6edf5") if is_top else QColor("#aab6c4"))
            painter.drawText(QRectF(0, y, name_w, 20), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, name)
            track = QRectF(bar_x, y + 5, bar_w, 10)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor("#222c38"))
            painter.drawRoundedRect(track, 4, 4)
            if self._probs is not None and i < len(self._probs):
                p = min(1.0, max(0.0, self._probs[i]))
                if p > 0:
                    painter.setBrush(colour)
                    painter.drawRoundedRect(QRectF(bar_x, y + 5, max(3.0, bar_w * p), 10), 4, 4)
                from inference.export.facts import format_probability

                text = format_probability(p)
            else:
                text = "—"
            painter.setPen(QColor("#e6edf5") if is_top else QColor("#aab6c4"))
            right = Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight
            painter.drawText(QRectF(bar_x + bar_w + 4, y, pct_w, 20), right, text)
        painter.end()


class ResultsPanel(QWidget):
    """What the model says about the current image, with who said it and the disclaimer."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 10)
        layout.setSpacing(6)
        self.headline = QLabel("No image")
        font = QFont(self.headline.font())
        font.setPointSizeF(font.pointSizeF() * 1.45)
        font.setBold(True)
        self.headline.setFont(font)
        self.headline.setWordWrap(True)
        self.detail = QLabel("")
        self.detail.setObjectName("muted")
        self.detail.setWordWrap(True)
        self.bars = ProbabilityBars()
        # Lung check (issue 7): how much of the Grad-CAM heat lies on the lungs, or a warning
        # when the lung model finds no plausible lung fields on this image.
        self.lungs_label = QLabel("")
        self.lungs_label.setObjectName("muted")
        self.lungs_label.setWordWrap(True)
        self.lungs_label.hide()
        self.model_label = QLabel("Model: loading…")
        self.model_label.setObjectName("muted")
        self.model_label.setWordWrap(True)
        self.model_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.disclaimer = QLabel(DISCLAIMER)
        self.disclaimer.setObjectName("disclaimer")
        self.disclaimer.setWordWrap(True)
        layout.addWidget(self.headline)
        layout.addWidget(self.detail)
        layout.addWidget(self.bars)
        layout.addWidget(self.lungs_label)
        layout.addWidget(self.model_label)
        layout.addWidget(self.disclaimer)
        layout.addStretch(1)
        self._class_names: list[str] = []
        self._warning: str | None = None

    def set_model(self, text: str) -> None:
        self.model_label.setText(text)

    def set_classes(self, names: Sequence[str]) -> None:
        self._class_names = list(names)
        self.bars.set_values(self._class_names, None)

    def show_state(self, headline: str, detail: str = "") -> None:
        """No result to show (no image, analysing, model loading or failed): say why."""
        self.headline.setText(headline)
        self.headline.setStyleSheet(f"color: {MUTED};")
        self.detail.setText(detail)
        self.bars.set_values(self._class_names, None)
        self._set_lungs("")

    def show_prediction(self, prediction) -> None:
        names = list(prediction.probabilities.keys())
        probs = [prediction.probabilities[n] for n in names]
        top = names.index(prediction.label) if prediction.label in names else None
        self.headline.setText(prediction.label)
        self.headline.setStyleSheet(f"color: {class_colour(prediction.label)};")
        from inference.export.facts import format_probability

        self.detail.setText(f"Predicted class · {format_probability(prediction.confidence)}")
        self.bars.set_values(names, probs, top)
        self._warning = prediction.lung_warning
        self._set_lungs(f"⚠ {self._warning}" if self._warning else "", warn=bool(self._warning))

    def show_lung_heat(self, explanation) -> None:
        """The heat-in-lungs figure of the Grad-CAM on screen (the warning wins when there is one)."""
        warning = explanation.lung_warning or self._warning
        fraction = explanation.lung_heat_fraction
        if warning:
            self._set_lungs(f"⚠ {warning}", warn=True)
        elif fraction is not None:
            method = "Grad-CAM++" if explanation.method == "gradcam++" else "Grad-CAM"
            self._set_lungs(f"{100 * fraction:.0f}% of the {method} heat lies inside the lung fields")
        else:
            self._set_lungs("")

    def _set_lungs(self, text: str, warn: bool = False) -> None:
        self.lungs_label.setText(text)
        self.lungs_label.setObjectName("warning" if warn else "muted")
        self.lungs_label.setStyleSheet("color: #f0b429;" if warn else "")
        self.lungs_label.setVisible(bool(text))
