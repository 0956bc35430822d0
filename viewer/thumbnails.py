"""Thumbnails and badges: a film's small picture for the worklist, and the class-and-probability
badge fitted to a width so that the class is shortened, never the number."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPixmap

from viewer.canvas import gray_to_pixmap

__all__ = ["badge_pixmap", "badge_text", "fit_badge", "thumbnail_pixmap"]

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


def thumbnail_pixmap(gray: np.ndarray, side: int) -> QPixmap:
    """A film's gray thumbnail as a pixmap at most ``side`` pixels on its longer side (the worklist's rows)."""
    return gray_to_pixmap(np.ascontiguousarray(gray)).scaled(
        side, side, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
    )
