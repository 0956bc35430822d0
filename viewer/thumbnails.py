"""Thumbnails: a film's small picture for the worklist's rows (the AI class and its probability have
columns of their own there, so the number is never cut to fit a badge)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap

from viewer.canvas import gray_to_pixmap

__all__ = ["thumbnail_pixmap"]


def thumbnail_pixmap(gray: np.ndarray, side: int) -> QPixmap:
    """A film's gray thumbnail as a pixmap at most ``side`` pixels on its longer side (the worklist's rows)."""
    return gray_to_pixmap(np.ascontiguousarray(gray)).scaled(
        side, side, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
    )
