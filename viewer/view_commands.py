"""The View menu's commands over the current image, and what of the window follows the current image.

Window presets, inversion, reset, first/last image, hidden identifiers, corner text, font size and
full screen; the window title and which image actions are enabled. The session owns the state
these change; this object only turns menu commands into session and canvas calls. It reads the
window's actions when a command runs (the actions are built after the commands they trigger).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from viewer.actions import IMAGE_ACTIONS
from viewer.appearance import apply_font_size, system_font_size
from viewer.presets import window_presets
from viewer.settings import MAX_FONT_SIZE, MIN_FONT_SIZE

if TYPE_CHECKING:
    from viewer.main_window import MainWindow

__all__ = ["ViewCommands"]


class ViewCommands:
    """The commands of the View and Go menus for ``window`` (a :class:`~viewer.main_window.MainWindow`)."""

    def __init__(self, window: MainWindow, title: str) -> None:
        self.window = window
        self.title = title
        self.session, self.canvas, self.settings = window.session, window.canvas, window.settings
        self._was_maximized = False

    def connect(self) -> None:
        """Follow the session: the title and the enabled actions track the current image."""
        ev = self.session.events
        ev.current_changed.connect(lambda _doc: (self.update_title(), self.update_enabled()))
        ev.documents_added.connect(lambda _docs: self.update_enabled())
        ev.document_removed.connect(lambda _doc: self.update_enabled())

    def _status(self, text: str, timeout_ms: int) -> None:
        self.window.statusBar().showMessage(text, timeout_ms)

    def apply_preset(self, key: str) -> None:
        """Window preset ``key`` ("0" is the image's own window) on the current image."""
        doc = self.session.current
        if doc is None or not doc.loaded:
            return
        if doc.presets is None:
            doc.presets = window_presets(doc.image)
        preset = next((p for p in doc.presets if p.key == key), None)
        if preset is not None:
            self.canvas.set_window(preset.window)  # the canvas reports it; the session stores it
            self._status(f"Window preset {key}: {preset.name}", 4000)

    def toggle_invert(self) -> None:
        doc = self.session.current
        if doc is not None:
            self.session.set_invert(doc.doc_id, not doc.invert)

    def reset_view(self) -> None:
        """Esc: fitted, no rotation or flips, the default window and no inversion."""
        doc = self.session.current
        if doc is None:
            return
        self.canvas.reset_view()
        self.session.set_invert(doc.doc_id, False)
        self.canvas.set_window(doc.default_window)

    def set_hide_identifiers(self, hide: bool) -> None:
        """View > Hide identifiers on screen (remembered); exports follow their own "keep identifiers" choice."""
        self.settings.hide_identifiers = bool(hide)
        self.window.actions_by_id["hide_identifiers"].setChecked(bool(hide))
        status = self.window.status_presenter
        status.hide_identifiers = bool(hide)
        status.annotate()
        self.update_title()

    def set_corner_text_visible(self, visible: bool) -> None:
        self.settings.corner_text_visible = bool(visible)
        self.window.actions_by_id["corner_text"].setChecked(bool(visible))
        self.canvas.set_corner_text_visible(bool(visible))

    def change_font_size(self, step: int) -> None:
        """View > Font size: ``step`` points larger (+) or smaller (-), 0 back to the system's size; remembered."""
        current = self.settings.font_size or system_font_size()
        size = 0.0 if step == 0 else min(MAX_FONT_SIZE, max(MIN_FONT_SIZE, current + step))
        self.settings.font_size = size
        applied = apply_font_size(size)
        self._status(f"Text size {applied:g} pt", 3000)

    def toggle_full_screen(self) -> None:
        window = self.window
        if window.isFullScreen():
            window.showNormal()
            if self._was_maximized:
                window.showMaximized()
        else:
            self._was_maximized = window.isMaximized()
            window.showFullScreen()
        window.actions_by_id["fullscreen"].setChecked(window.isFullScreen())

    def update_enabled(self) -> None:
        has = self.session.current is not None
        for name in IMAGE_ACTIONS:
            self.window.actions_by_id[name].setEnabled(has)
        for action in self.window.preset_actions:
            action.setEnabled(has)

    def update_title(self) -> None:
        doc = self.session.current
        # File names often carry the patient's name: hidden with the other identifiers.
        shown = doc is not None and not self.settings.hide_identifiers
        self.window.setWindowTitle(f"{doc.name} — {self.title}" if shown else self.title)
