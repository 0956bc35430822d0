"""Toolbar icons: the SVGs in ``resources/icons``, with a Qt standard icon as fallback."""

from __future__ import annotations

from functools import cache

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QStyle

from inference.paths import resources_dir

__all__ = ["icon"]

_FALLBACK = {
    "open": QStyle.StandardPixmap.SP_DialogOpenButton,
    "export": QStyle.StandardPixmap.SP_DialogSaveButton,
    "help": QStyle.StandardPixmap.SP_DialogHelpButton,
    "close": QStyle.StandardPixmap.SP_DialogCloseButton,
    "reset": QStyle.StandardPixmap.SP_BrowserReload,
}


@cache
def icon(name: str) -> QIcon:
    path = resources_dir() / "icons" / f"{name}.svg"
    if path.is_file():
        result = QIcon(str(path))
        if not result.isNull():
            return result
    app = QApplication.instance()
    if app is not None and name in _FALLBACK:
        return app.style().standardIcon(_FALLBACK[name])
    return QIcon()
