"""The reading tools of issue 15 wired into the main window: the verdict dock and keys, the
compare view, and the Reading menu (so that ``main_window.py`` only calls :func:`install_reading`)."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QMenu

from viewer.compare import install_compare
from viewer.verdict_panel import CLASS_ACTIONS, install_verdict

__all__ = ["install_reading"]


def install_reading(window: Any) -> None:
    install_verdict(window)
    compare = install_compare(window)
    hide = window.actions_by_id["hide_identifiers"]
    window.thumbnails.model.set_hide_identifiers(hide.isChecked())
    hide.toggled.connect(window.thumbnails.model.set_hide_identifiers)
    a = window.actions_by_id
    bar = window.menuBar()
    menu = QMenu("&Reading", bar)
    help_menu = next((action for action in bar.actions() if action.text() == "&Help"), None)
    if help_menu is None:
        bar.addMenu(menu)
    else:
        bar.insertMenu(help_menu, menu)
    menu.addActions([a["verdict_agree"], a["verdict_disagree"]])
    menu.addSeparator()
    menu.addActions([a[action_id] for action_id in CLASS_ACTIONS])
    menu.addSeparator()
    menu.addActions([a["impression"], a["next_unread"]])
    menu.addSeparator()
    menu.addActions([a["compare"], compare.sync_action])
    menu.addSeparator()
    menu.addAction(window.verdict_dock.toggleViewAction())
