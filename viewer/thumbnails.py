"""Thumbnails and badges: a film's small picture for the worklist, and the class-and-probability
badge fitted to a width so that the class is shortened, never the number."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QFontMetrics, QPixmap

from viewer.canvas import gray_to_pixmap

__all__ = ["badge_text", "fit_badge", "thumbnail_pixmap"]

ICON = 132


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
    """The text a chip ``side`` px wide shows for ``badge`` (bold 12 px, padded as a badge chip)."""
    metrics = QFontMetrics(_badge_font(QFont()))
    return fit_badge(badge, metrics, int(min(side - 8, metrics.horizontalAdvance(badge) + 14) - 10))


def thumbnail_pixmap(gray: np.ndarray, side: int) -> QPixmap:
    """A film's gray thumbnail as a pixmap at most ``side`` pixels on its longer side (the worklist's rows)."""
    return gray_to_pixmap(np.ascontiguousarray(gray)).scaled(
        side, side, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
    )
