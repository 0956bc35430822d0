"""What the viewer remembers between runs, through QSettings (organisation "CXRViewer").

``CXR_VIEWER_SETTINGS`` names an INI file to use instead of the platform's location: tests
and the screenshot tool point it at a temporary file so they never touch a user's settings.
"""

from __future__ import annotations

import os
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

__all__ = ["ORGANISATION", "APPLICATION", "MAX_RECENT", "MIN_FONT_SIZE", "MAX_FONT_SIZE", "ViewerSettings"]

ORGANISATION = "CXRViewer"
APPLICATION = "CXR Viewer"
MAX_RECENT = 10
DEFAULT_OPACITY = 0.45
DEFAULT_COLORMAP = "jet"
MIN_FONT_SIZE, MAX_FONT_SIZE = 7.0, 24.0  # points, for View > Font size


class ViewerSettings:
    """Typed access to the stored settings; every getter has a safe default."""

    def __init__(self, path: str | None = None) -> None:
        path = path or os.environ.get("CXR_VIEWER_SETTINGS")
        if path:
            self._qs = QSettings(path, QSettings.Format.IniFormat)
        else:
            self._qs = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANISATION, APPLICATION)

    @property
    def file_name(self) -> str:
        return self._qs.fileName()

    def _get(self, key: str, default: Any, kind: type) -> Any:
        value = self._qs.value(key, default)
        if value is None:
            return default
        try:
            if kind is bool:
                return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
            return kind(value)
        except (TypeError, ValueError):
            return default

    def sync(self) -> None:
        self._qs.sync()

    # -- simple values -------------------------------------------------------------------
    @property
    def last_folder(self) -> str:
        return self._get("files/last_folder", "", str)

    @last_folder.setter
    def last_folder(self, value: str) -> None:
        self._qs.setValue("files/last_folder", str(value))

    @property
    def last_export_folder(self) -> str:
        return self._get("files/last_export_folder", "", str)

    @last_export_folder.setter
    def last_export_folder(self, value: str) -> None:
        self._qs.setValue("files/last_export_folder", str(value))

    @property
    def export_formats(self) -> list[str]:
        """The formats ticked at the last export (empty: the defaults)."""
        value = self._qs.value("export/formats", [])
        if isinstance(value, str):  # QSettings returns a lone string for a one-item list
            value = [value]
        return [str(v) for v in (value or []) if v]

    @export_formats.setter
    def export_formats(self, value: list[str]) -> None:
        self._qs.setValue("export/formats", [str(v) for v in value])

    @property
    def overlay_opacity(self) -> float:
        return min(1.0, max(0.0, self._get("overlay/opacity", DEFAULT_OPACITY, float)))

    @overlay_opacity.setter
    def overlay_opacity(self, value: float) -> None:
        self._qs.setValue("overlay/opacity", float(value))

    @property
    def colormap(self) -> str:
        return self._get("overlay/colormap", DEFAULT_COLORMAP, str)

    @colormap.setter
    def colormap(self, value: str) -> None:
        self._qs.setValue("overlay/colormap", str(value))

    @property
    def overlay_visible(self) -> bool:
        return self._get("overlay/visible", False, bool)

    @overlay_visible.setter
    def overlay_visible(self, value: bool) -> None:
        self._qs.setValue("overlay/visible", bool(value))

    @property
    def show_abstained_probabilities(self) -> bool:
        """ "Show probabilities anyway" for a film the model gave no result for (off by default)."""
        return self._get("results/show_abstained_probabilities", False, bool)

    @show_abstained_probabilities.setter
    def show_abstained_probabilities(self, value: bool) -> None:
        self._qs.setValue("results/show_abstained_probabilities", bool(value))

    @property
    def active_model(self) -> str:
        """Folder of the model to load at start; empty means the bundled model.

        Kept in one place, ``inference.activations`` (``<user data>/models/activations.json``), which
        the model manager's roll back and ``main.py adapt`` read too; a value from an older version's
        settings file is still honoured until the next activation.
        """
        from inference.activations import remembered

        return remembered() or self._get("models/active", "", str)

    @active_model.setter
    def active_model(self, value: str) -> None:
        from inference.activations import remember

        remember(str(value))
        self._qs.remove("models/active")

    @property
    def reader_name(self) -> str:
        """The reader's name, stamped on each verdict (asked once when empty; editable in the verdict panel)."""
        return self._get("reading/reader_name", "", str).strip()[:200]

    @reader_name.setter
    def reader_name(self, value: str) -> None:
        self._qs.setValue("reading/reader_name", str(value).strip()[:200])

    # -- display -----------------------------------------------------------------------------
    @property
    def hide_identifiers(self) -> bool:
        """View > Hide identifiers on screen: no patient name, ID, birth date or file name in the corners."""
        return self._get("display/hide_identifiers", False, bool)

    @hide_identifiers.setter
    def hide_identifiers(self, value: bool) -> None:
        self._qs.setValue("display/hide_identifiers", bool(value))

    @property
    def corner_text_visible(self) -> bool:
        return self._get("display/corner_text", True, bool)

    @corner_text_visible.setter
    def corner_text_visible(self, value: bool) -> None:
        self._qs.setValue("display/corner_text", bool(value))

    @property
    def font_size(self) -> float:
        """The application's font size in points; 0 means the system's own."""
        size = self._get("display/font_size", 0.0, float)
        return size if MIN_FONT_SIZE <= size <= MAX_FONT_SIZE else 0.0

    @font_size.setter
    def font_size(self, value: float) -> None:
        self._qs.setValue("display/font_size", float(value))

    # -- window layout ---------------------------------------------------------------------
    def geometry(self) -> QByteArray | None:
        value = self._qs.value("window/geometry")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_geometry(self, value: QByteArray) -> None:
        self._qs.setValue("window/geometry", value)

    def window_state(self) -> QByteArray | None:
        value = self._qs.value("window/state")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_window_state(self, value: QByteArray) -> None:
        self._qs.setValue("window/state", value)

    # -- recent files ------------------------------------------------------------------------
    @property
    def recent_files(self) -> list[str]:
        value = self._qs.value("files/recent", [])
        if isinstance(value, str):  # QSettings returns a lone string for a one-item list
            value = [value]
        return [str(v) for v in (value or []) if v][:MAX_RECENT]

    def add_recent(self, path: str) -> list[str]:
        items = [p for p in self.recent_files if p != path]
        items.insert(0, path)
        items = items[:MAX_RECENT]
        self._qs.setValue("files/recent", items)
        return items

    def clear_recent(self) -> None:
        self._qs.setValue("files/recent", [])
