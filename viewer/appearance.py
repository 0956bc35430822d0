"""How big things are on screen: the window kept inside the screen, and the application's font size.

A saved or default window size larger than the screen (a 1366 x 768 laptop, a 1080p screen at
150 % scaling is 1280 x 720 logical pixels) put the title bar or the status bar off screen;
:func:`fit_to_available` shrinks and moves the window into the screen's available geometry
(the screen less task bars). The font size is the user's View > Font size choice, in points,
applied to the whole application; 0 is the system's size.
"""

from __future__ import annotations

from PySide6.QtCore import QRect
from PySide6.QtGui import QFont, QGuiApplication
from PySide6.QtWidgets import QApplication, QWidget

from viewer.settings import MAX_FONT_SIZE, MIN_FONT_SIZE

__all__ = ["fit_rect", "available_geometry", "fit_to_available", "system_font_size", "apply_font_size"]

_system_point_size: float | None = None


def fit_rect(rect: QRect, available: QRect) -> QRect:
    """``rect`` shrunk to fit ``available`` and moved (as little as needed) inside it."""
    width = max(1, min(rect.width(), available.width()))
    height = max(1, min(rect.height(), available.height()))
    left = min(max(rect.left(), available.left()), available.left() + available.width() - width)
    top = min(max(rect.top(), available.top()), available.top() + available.height() - height)
    return QRect(left, top, width, height)


def available_geometry(widget: QWidget) -> QRect | None:
    """The available geometry of the screen the widget is on (or the primary screen)."""
    screen = widget.screen() or QGuiApplication.primaryScreen()
    return screen.availableGeometry() if screen is not None else None


def fit_to_available(widget: QWidget, available: QRect | None = None) -> bool:
    """Shrink and move a normal (not maximised or full-screen) window, title bar and borders included,
    into the screen's available geometry; True if it changed."""
    available = available if available is not None else available_geometry(widget)
    if available is None or available.isEmpty() or widget.isMaximized() or widget.isFullScreen():
        return False
    client, frame = widget.geometry(), widget.frameGeometry()  # the frame is known once shown
    left, top = client.left() - frame.left(), client.top() - frame.top()
    extra_w, extra_h = frame.width() - client.width(), frame.height() - client.height()
    new_frame = fit_rect(frame, available)
    if new_frame == frame:
        return False
    wanted = QRect(
        new_frame.left() + left, new_frame.top() + top, new_frame.width() - extra_w, new_frame.height() - extra_h
    )
    # A window cannot be smaller than its minimum size; the docks and the toolbar give way instead.
    widget.setMinimumSize(min(widget.minimumWidth(), wanted.width()), min(widget.minimumHeight(), wanted.height()))
    widget.setGeometry(wanted)
    return True


def system_font_size() -> float:
    """The application's font size in points before any View > Font size change."""
    global _system_point_size
    if _system_point_size is None:
        size = QApplication.font().pointSizeF()
        _system_point_size = size if size > 0 else 9.0
    return _system_point_size


def apply_font_size(points: float) -> float:
    """Set the whole application's font to ``points`` (0: the system's size); returns the size applied."""
    base = system_font_size()
    size = base if points <= 0 else min(MAX_FONT_SIZE, max(MIN_FONT_SIZE, float(points)))
    font = QFont(QApplication.font())
    font.setPointSizeF(size)
    QApplication.setFont(font)
    return size
