"""Grad-CAM overlay controls: show/hide, class to explain, method, opacity, colour map, colour bar."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from viewer.qt_compat import emit

__all__ = ["ColourBar", "OverlayPanel", "METHOD_LABELS", "method_title"]

METHOD_LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}


def method_title(method: str) -> str:
    """What every label calls a heat-map method ("Grad-CAM++" while Grad-CAM++ is chosen)."""
    return METHOD_LABELS.get(method, method)


class ColourBar(QWidget):
    """The colour map from "low" to "high" model attention, drawn from its 256-entry table."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._lut: np.ndarray | None = None
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(34)

    def set_lut(self, lut: np.ndarray | None, alpha: np.ndarray | None = None) -> None:
        """The colour map's (256, 3) table and, optionally, the (256,) alpha the overlay fades with."""
        if lut is None:
            self._lut = None
        else:
            rgb = np.asarray(lut, dtype=np.uint8).reshape(256, 3)
            a = np.full(256, 255, np.uint8) if alpha is None else np.asarray(alpha, dtype=np.uint8).reshape(256)
            self._lut = np.ascontiguousarray(np.dstack([rgb[np.newaxis], a[np.newaxis]]))
        self.update()

    def lut(self) -> np.ndarray | None:
        return self._lut

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        return QSize(200, 34)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        bar = QRectF(0, 2, self.width() - 1, 14)
        if self._lut is not None:
            # Over a mid-gray, as the overlay lies over an X-ray: faded colours look faded here too.
            painter.fillRect(bar, QColor("#6b6b6b"))
            image = QImage(self._lut.data, 256, 1, 256 * 4, QImage.Format.Format_RGBA8888)
            painter.drawImage(bar, image)
        else:
            painter.fillRect(bar, QColor("#222c38"))
        painter.setPen(QColor("#2f3d4f"))
        painter.drawRect(bar)
        painter.setPen(QColor("#8b97a6"))
        text_rect = QRectF(0, 18, self.width(), 14)
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignLeft, "low")
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignHCenter, "model attention")
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignRight, "high")
        painter.end()


class OverlayPanel(QWidget):
    """The controls only: what the user picks is announced by signals, and what is shown is set by
    :class:`viewer.presenters.OverlayPresenter` from the session (the panel owns no overlay state)."""

    visibility_changed = Signal(bool)
    opacity_changed = Signal(float)
    colormap_changed = Signal(str)
    class_chosen = Signal(object)  # class index, or None for "the predicted class"
    method_chosen = Signal(str)

    def __init__(self, colormaps: Sequence[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 10)
        layout.setSpacing(6)
        self.show_box = QCheckBox("Show overlay  (G)")
        self.show_box.toggled.connect(self.visibility_changed)
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.class_combo = QComboBox()
        self.class_combo.setToolTip("Explain any class, not only the predicted one")
        self.class_combo.currentIndexChanged.connect(lambda _i: emit(self.class_chosen, self.class_combo.currentData()))
        self.method_combo = QComboBox()
        for key, label in METHOD_LABELS.items():
            self.method_combo.addItem(label, key)
        self.method_combo.currentIndexChanged.connect(
            lambda _i: emit(self.method_chosen, str(self.method_combo.currentData()))
        )
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(45)
        self.opacity_label = QLabel("45%")
        self.opacity_label.setMinimumWidth(36)
        self.opacity_slider.valueChanged.connect(self._on_opacity)
        opacity_row = QHBoxLayout()
        opacity_row.addWidget(self.opacity_slider, 1)
        opacity_row.addWidget(self.opacity_label)
        self.colormap_combo = QComboBox()
        self.colormap_combo.addItems(list(colormaps))
        self.colormap_combo.currentTextChanged.connect(self.colormap_changed)
        form.addRow("Explain", self.class_combo)
        form.addRow("Method", self.method_combo)
        form.addRow("Opacity", opacity_row)
        form.addRow("Colours", self.colormap_combo)
        self.colour_bar = ColourBar()
        self.status = QLabel("")
        self.status.setObjectName("muted")
        self.status.setWordWrap(True)
        hint = QLabel("Where the model looked, not a lesion outline. Check that it looks at the lungs.")
        hint.setObjectName("muted")
        hint.setWordWrap(True)
        layout.addWidget(self.show_box)
        layout.addLayout(form)
        layout.addWidget(self.colour_bar)
        layout.addWidget(self.status)
        layout.addWidget(hint)
        layout.addStretch(1)
        self._predicted: int | None = None

    def _on_opacity(self, value: int) -> None:
        self.opacity_label.setText(f"{value}%")
        emit(self.opacity_changed, value / 100.0)

    # -- state ------------------------------------------------------------------------------
    def set_classes(self, names: Sequence[str], predicted: int | None = None) -> None:
        """Fill the class selector; the first entry follows the predicted class of each image."""
        current = self.class_combo.currentData()
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        label = "Predicted class" if predicted is None else f"Predicted class ({names[predicted]})"
        self.class_combo.addItem(label, None)
        for i, name in enumerate(names):
            self.class_combo.addItem(name, i)
        index = self.class_combo.findData(current) if current is not None else 0
        self.class_combo.setCurrentIndex(max(0, index))
        self.class_combo.blockSignals(False)
        self._predicted = predicted

    def set_predicted(self, names: Sequence[str], predicted: int | None) -> None:
        if self.class_combo.count() != len(names) + 1:
            self.set_classes(names, predicted)
            return
        label = "Predicted class" if predicted is None else f"Predicted class ({names[predicted]})"
        self.class_combo.setItemText(0, label)
        self._predicted = predicted

    def set_class(self, class_index: int | None) -> None:
        """Show ``class_index`` (None: "the predicted class") as chosen, without announcing it."""
        index = self.class_combo.findData(class_index) if class_index is not None else 0
        self.class_combo.blockSignals(True)
        self.class_combo.setCurrentIndex(max(0, index))
        self.class_combo.blockSignals(False)

    def set_method(self, method: str) -> None:
        index = self.method_combo.findData(method)
        if index >= 0:
            self.method_combo.blockSignals(True)
            self.method_combo.setCurrentIndex(index)
            self.method_combo.blockSignals(False)

    def set_method_available(self, methods: Sequence[str]) -> None:
        for i in range(self.method_combo.count()):
            item = self.method_combo.model().item(i)
            item.setEnabled(self.method_combo.itemData(i) in methods)

    def set_opacity(self, value: float) -> None:
        """Move the slider (the user moving it announces ``opacity_changed``)."""
        self.opacity_slider.setValue(int(round(min(1.0, max(0.0, value)) * 100)))

    def set_colormaps(self, names: Sequence[str], current: str) -> None:
        """Replace the list of colour maps (once matplotlib's are known), keeping ``current``."""
        if [self.colormap_combo.itemText(i) for i in range(self.colormap_combo.count())] != list(names):
            self.colormap_combo.blockSignals(True)
            self.colormap_combo.clear()
            self.colormap_combo.addItems(list(names))
            self.colormap_combo.blockSignals(False)
        self.set_colormap(current)

    def set_colormap(self, name: str) -> None:
        index = self.colormap_combo.findText(name)
        if index >= 0 and index != self.colormap_combo.currentIndex():
            self.colormap_combo.setCurrentIndex(index)

    def set_overlay_checked(self, checked: bool) -> None:
        self.show_box.blockSignals(True)
        self.show_box.setChecked(checked)
        self.show_box.blockSignals(False)
