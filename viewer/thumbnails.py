"""The list of opened images: thumbnails with the predicted class as a badge."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListView, QListWidget, QListWidgetItem, QWidget

from viewer.canvas import gray_to_pixmap
from viewer.qt_compat import emit
from viewer.theme import class_colour

__all__ = ["ThumbnailList", "badge_pixmap", "badge_text", "fit_badge"]

ICON = 132
DOC_ROLE = Qt.ItemDataRole.UserRole + 1
BADGE_ROLE = Qt.ItemDataRole.UserRole + 2


def fit_badge(text: str, metrics: QFontMetrics, width: int) -> str:
    """``text`` within ``width`` pixels; when it is too wide the class is shortened, never the number:
    "Pneumonia >99%" becomes "Pneum… >99%", not "Pneumonia >9…"."""
    if metrics.horizontalAdvance(text) <= width:
        return text
    head, _, tail = text.rpartition(" ")
    if not head or not any(ch.isdigit() for ch in tail):
        return metrics.elidedText(text, Qt.TextElideMode.ElideRight, width)
    room = width - metrics.horizontalAdvance(" " + tail)
    return f"{metrics.elidedText(head, Qt.TextElideMode.ElideRight, max(room, 0))} {tail}".strip()


def _badge_font(base: QFont) -> QFont:
    font = QFont(base)
    font.setBold(True)
    font.setPixelSize(12)
    return font


def badge_text(badge: str, side: int = ICON) -> str:
    """The text a badge of ``side`` px shows for ``badge`` (what :func:`badge_pixmap` draws)."""
    metrics = QFontMetrics(_badge_font(QFont()))
    return fit_badge(badge, metrics, int(min(side - 8, metrics.horizontalAdvance(badge) + 14) - 10))


def badge_pixmap(gray: np.ndarray, badge: str = "", colour: str = "#5f6b79", side: int = ICON) -> QPixmap:
    """The thumbnail centred on a square tile with ``badge`` drawn as a coloured chip at the bottom."""
    tile = QPixmap(side, side)
    tile.fill(QColor("#05070a"))
    painter = QPainter(tile)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    thumb = gray_to_pixmap(gray).scaled(
        side, side, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
    )
    painter.drawPixmap((side - thumb.width()) // 2, (side - thumb.height()) // 2, thumb)
    if badge:
        painter.setFont(_badge_font(painter.font()))
        metrics = painter.fontMetrics()
        w = min(side - 8, metrics.horizontalAdvance(badge) + 14)
        rect = QRectF(4, side - 24, w, 20)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(colour))
        painter.drawRoundedRect(rect, 6, 6)
        painter.setPen(QColor("#0b0f14"))
        text = fit_badge(badge, metrics, int(w - 10))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
    painter.end()
    return tile


def _icon(pixmap: QPixmap) -> QIcon:
    """The same pixmap for every mode: a selected X-ray must not be tinted blue."""
    result = QIcon()
    for mode in (QIcon.Mode.Normal, QIcon.Mode.Selected, QIcon.Mode.Active):
        result.addPixmap(pixmap, mode)
    return result


class ThumbnailList(QListWidget):
    """One item per opened image; item data holds the document id."""

    document_selected = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(True)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setIconSize(QSize(ICON, ICON))
        self.setGridSize(QSize(ICON + 16, ICON + 30))
        self.setUniformItemSizes(True)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setDragDropMode(QAbstractItemView.DragDropMode.NoDragDrop)
        self.setAcceptDrops(False)  # drops go to the main window
        self.setSpacing(4)
        self.setMinimumWidth(ICON + 40)
        self.currentItemChanged.connect(self._on_current)
        self._thumbs: dict[int, np.ndarray] = {}
        self._items: dict[int, QListWidgetItem] = {}

    def _on_current(self, current: QListWidgetItem | None, _previous: QListWidgetItem | None) -> None:
        if current is not None:
            emit(self.document_selected, int(current.data(DOC_ROLE)))

    def _item(self, doc_id: int) -> QListWidgetItem | None:
        return self._items.get(doc_id)

    def add_documents(self, entries: list[tuple[int, str, np.ndarray, str]]) -> None:
        """Add many (doc id, name, thumbnail, tooltip) at once: one layout pass for the batch."""
        self.setUpdatesEnabled(False)
        try:
            for doc_id, name, thumbnail, tooltip in entries:
                self.add_document(doc_id, name, thumbnail, tooltip)
        finally:
            self.setUpdatesEnabled(True)

    def add_document(self, doc_id: int, name: str, thumbnail: np.ndarray, tooltip: str = "") -> None:
        self._thumbs[doc_id] = thumbnail
        item = QListWidgetItem(_icon(badge_pixmap(thumbnail, "…")), name)
        item.setData(DOC_ROLE, doc_id)
        item.setToolTip(tooltip or name)
        item.setSizeHint(QSize(ICON + 16, ICON + 30))
        self._items[doc_id] = item
        self.addItem(item)

    def set_badge(self, doc_id: int, text: str, class_name: str | None = None) -> None:
        item = self._item(doc_id)
        if item is None:
            return
        colour = class_colour(class_name) if class_name else "#5f6b79"
        item.setIcon(_icon(badge_pixmap(self._thumbs[doc_id], text, colour)))
        item.setData(BADGE_ROLE, text)

    def badge(self, doc_id: int) -> str:
        item = self._item(doc_id)
        return "" if item is None else str(item.data(BADGE_ROLE) or "")

    def remove_document(self, doc_id: int) -> None:
        item = self._items.pop(doc_id, None)
        if item is not None:
            self.takeItem(self.row(item))
        self._thumbs.pop(doc_id, None)

    def select_document(self, doc_id: int) -> None:
        item = self._item(doc_id)
        if item is not None and self.currentItem() is not item:
            self.setCurrentItem(item)
            self.scrollToItem(item)

    def document_ids(self) -> list[int]:
        return [int(self.item(row).data(DOC_ROLE)) for row in range(self.count())]
