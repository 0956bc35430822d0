"""The AI results panel: one bar per class, the predicted class, the model, and the disclaimer."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPainter
from PySide6.QtWidgets import QCheckBox, QLabel, QSizePolicy, QVBoxLayout, QWidget

from viewer.qt_compat import emit
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
    """What the model says about the current image, with who said it and the disclaimer.

    When the model abstained (issue 13) the headline is "No AI result" with the reason in full
    (wrapped, never cut); the probabilities stay hidden unless the reader ticks "Show
    probabilities anyway", and are then drawn muted, with no class in its colour.
    """

    show_probabilities_changed = Signal(bool)  # the "Show probabilities anyway" box (remembered)

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
        self.show_probs_box = QCheckBox("Show probabilities anyway")
        self.show_probs_box.setToolTip(
            "The model gave no result for this image; its probabilities are not evidence of a class."
        )
        self.show_probs_box.hide()
        self.show_probs_box.toggled.connect(self._on_show_probabilities)
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
        layout.addWidget(self.show_probs_box)
        layout.addWidget(self.bars)
        layout.addWidget(self.lungs_label)
        layout.addWidget(self.model_label)
        layout.addWidget(self.disclaimer)
        layout.addStretch(1)
        self._class_names: list[str] = []
        self._warning: str | None = None
        self._prediction = None

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
        self.bars.show()
        self.show_probs_box.hide()
        self._prediction = None
        self._set_lungs("")

    def set_show_abstained_probabilities(self, show: bool) -> None:
        """The remembered choice (no signal: the caller already knows it)."""
        self.show_probs_box.blockSignals(True)
        self.show_probs_box.setChecked(bool(show))
        self.show_probs_box.blockSignals(False)
        if self._prediction is not None:
            self.show_prediction(self._prediction)

    def _on_show_probabilities(self, show: bool) -> None:
        if self._prediction is not None:
            self.show_prediction(self._prediction)
        emit(self.show_probabilities_changed, bool(show))

    def show_prediction(self, prediction) -> None:
        self._prediction = prediction
        names = list(prediction.probabilities.keys())
        probs = [prediction.probabilities[n] for n in names]
        abstained = bool(getattr(prediction, "abstained", False))
        self.show_probs_box.setVisible(abstained)
        if abstained:
            self.headline.setText(prediction.shown_label)
            self.headline.setStyleSheet(f"color: {MUTED};")
            self.detail.setText(str(prediction.abstain_reason))
            self.bars.set_values(names, probs, None)  # muted: no class drawn as the answer
            self.bars.setVisible(self.show_probs_box.isChecked())
            self._warning = prediction.lung_warning
            self._set_lungs(f"⚠ {self._warning}" if self._warning else "", warn=bool(self._warning))
            return
        self.bars.show()
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
            from viewer.overlay_panel import method_title

            method = method_title(explanation.method)
            self._set_lungs(f"{100 * fraction:.0f}% of the {method} heat lies inside the lung fields")
        else:
            self._set_lungs("")

    def _set_lungs(self, text: str, warn: bool = False) -> None:
        self.lungs_label.setText(text)
        self.lungs_label.setObjectName("warning" if warn else "muted")
        self.lungs_label.setStyleSheet("color: #f0b429;" if warn else "")
        self.lungs_label.setVisible(bool(text))
