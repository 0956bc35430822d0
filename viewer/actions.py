"""The window's actions (from :data:`viewer.shortcuts.SHORTCUTS`), its menus and its toolbar."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDockWidget, QFrame, QMainWindow, QMenu, QScrollArea, QToolBar, QWidget

from viewer.icons import icon
from viewer.presets import PRESET_HELP
from viewer.settings import ViewerSettings
from viewer.shortcuts import SHORTCUTS

__all__ = [
    "TOOLBAR",
    "TOOLBAR_LABELS",
    "IMAGE_ACTIONS",
    "add_dock",
    "build_actions",
    "build_menus",
    "build_toolbar",
    "build_tools_menu_and_toolbar",
    "fill_recent_menu",
]

# Toolbar: action ids (None = separator) and the icon each uses.
TOOLBAR = (
    ("open", "open"),
    ("export", "export"),
    None,
    ("fit", "fit"),
    ("zoom_in", "zoom-in"),
    ("zoom_out", "zoom-out"),
    ("rotate_left", "rotate-left"),
    ("rotate_right", "rotate-right"),
    ("flip_h", "flip-h"),
    ("flip_v", "flip-v"),
    ("invert", "invert"),
    ("reset_view", "reset"),
    None,
    ("overlay", "overlay"),
    None,
    ("models", "models"),
    ("train", "train"),
    None,
    ("help", "help"),
)
TOOLBAR_LABELS = {"overlay": "Grad-CAM", "models": "Models", "train": "Train", "open": "Open", "export": "Export"}
# Enabled only while an image is shown.
IMAGE_ACTIONS = (
    "export", "close_image", "default_window", "invert", "fit", "zoom_in", "zoom_out", "actual_size",
    "reset_view", "rotate_left", "rotate_right", "flip_h", "flip_v", "prev_image", "next_image",
    "first_image", "last_image",
)  # fmt: skip
CHECKABLE = ("overlay", "fullscreen", "invert", "corner_text", "hide_identifiers")


def build_actions(
    window: QMainWindow, handlers: dict[str, Callable[[], None]], preset: Callable[[str], None]
) -> tuple[dict[str, QAction], list[QAction]]:
    """One QAction per shortcut (added to the window, so shortcuts work in full screen too) and
    the window presets 1-9; returns (actions by id, preset actions)."""
    actions: dict[str, QAction] = {}
    for shortcut in SHORTCUTS:
        action = QAction(shortcut.text, window)
        action.setObjectName(shortcut.action)
        action.setShortcuts([QKeySequence(k) for k in shortcut.keys])
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.setToolTip(f"{shortcut.help} ({shortcut.keys[0]})")
        action.setStatusTip(shortcut.help)
        action.setCheckable(shortcut.action in CHECKABLE)
        handler = handlers.get(shortcut.action)
        if handler is not None:
            action.triggered.connect(handler)
        window.addAction(action)
        actions[shortcut.action] = action
    presets: list[QAction] = []
    for key, name, text in PRESET_HELP[1:]:  # the names are the same for every image
        action = QAction(name, window)
        action.setShortcut(QKeySequence(key))
        action.setStatusTip(text)
        action.setToolTip(f"{name}: {text} ({key})")
        action.triggered.connect(lambda _checked=False, k=key: preset(k))
        window.addAction(action)
        presets.append(action)
    return actions, presets


def build_menus(
    window: QMainWindow,
    a: dict[str, QAction],
    presets: list[QAction],
    docks: list[QDockWidget],
    close_all: Callable[[], None],
    about: Callable[[], None],
) -> QMenu:
    """The menu bar; returns the "Open recent" menu (filled when it is about to show)."""
    bar = window.menuBar()
    file_menu = bar.addMenu("&File")
    file_menu.addActions([a["open"], a["open_folder"]])
    recent = file_menu.addMenu("Open &recent")
    file_menu.addSeparator()
    file_menu.addActions([a["export"], a["close_image"]])
    file_menu.addAction("Close &all images").triggered.connect(close_all)
    file_menu.addSeparator()
    file_menu.addAction(a["quit"])

    view = bar.addMenu("&View")
    view.addActions([a["fit"], a["zoom_in"], a["zoom_out"], a["actual_size"], a["reset_view"]])
    view.addSeparator()
    view.addActions([a["rotate_left"], a["rotate_right"], a["flip_h"], a["flip_v"]])
    view.addSeparator()
    view.addActions([a["prev_image"], a["next_image"], a["first_image"], a["last_image"]])
    view.addSeparator()
    view.addActions([a["corner_text"], a["hide_identifiers"]])
    font = view.addMenu("&Font size")
    font.addActions([a["font_smaller"], a["font_larger"], a["font_reset"]])
    view.addSeparator()
    view.addAction(a["fullscreen"])
    panels = view.addMenu("&Panels")
    for dock in docks:
        panels.addAction(dock.toggleViewAction())

    levels = bar.addMenu("&Window/Level")
    levels.addActions([a["default_window"], *presets])
    levels.addSeparator()
    levels.addAction(a["invert"])

    ai = bar.addMenu("&AI")
    ai.addAction(a["overlay"])
    ai.addSeparator()
    ai.addActions([a["models"], a["train"]])

    help_menu = bar.addMenu("&Help")
    help_menu.addAction(a["help"])
    help_menu.addAction("&About CXR Viewer").triggered.connect(about)
    return recent


def build_toolbar(window: QMainWindow, a: dict[str, QAction]) -> QToolBar:
    bar = window.addToolBar("Tools")
    bar.setObjectName("main_toolbar")
    bar.setMovable(False)
    bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    bar.setIconSize(QSize(20, 20))
    for entry in TOOLBAR:
        if entry is None:
            bar.addSeparator()
            continue
        action_id, icon_name = entry
        action = a[action_id]
        action.setIcon(icon(icon_name))
        bar.addAction(action)
        button = bar.widgetForAction(action)
        if action_id in TOOLBAR_LABELS:
            action.setIconText(TOOLBAR_LABELS[action_id])
        elif button is not None:
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
    a["close_image"].setIcon(icon("close"))
    a["fullscreen"].setIcon(icon("fullscreen"))
    return bar


# The measuring tools (viewer/tools.py): exclusive tools, then the loupe; short toolbar labels.
TOOL_BAR = (
    ("tool_select", "Select"),
    ("tool_distance", "Distance"),
    ("tool_angle", "Angle"),
    ("tool_cobb", "Cobb"),
    ("tool_rect", "Rect ROI"),
    ("tool_ellipse", "Ellipse ROI"),
    ("tool_arrow", "Arrow"),
    ("tool_text", "Text"),
    ("tool_ctr", "CTR"),
    ("tool_loupe", "Loupe"),
)


def build_tools_menu_and_toolbar(window: QMainWindow, a: dict[str, QAction]) -> tuple[QMenu, QToolBar]:
    """The Tools menu (before Help) and the measuring toolbar (a row under the main one)."""
    bar = window.menuBar()
    help_action = next((m for m in bar.actions() if m.text().replace("&", "") == "Help"), None)
    menu = QMenu("&Tools", window)
    menu.addActions([a[action_id] for action_id, _ in TOOL_BAR])
    menu.addSeparator()
    menu.addActions([a["edit_text"], a["delete_mark"], a["undo"], a["redo"]])
    if help_action is not None:
        bar.insertMenu(help_action, menu)
    else:
        bar.addMenu(menu)
    window.addToolBarBreak()
    tools = window.addToolBar("Measure")
    tools.setObjectName("tools_toolbar")
    tools.setMovable(False)
    tools.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
    for action_id, label in TOOL_BAR:
        a[action_id].setIconText(label)
        tools.addAction(a[action_id])
    tools.addSeparator()
    for action_id, label in (("undo", "Undo"), ("redo", "Redo"), ("delete_mark", "Delete")):
        a[action_id].setIconText(label)
        tools.addAction(a[action_id])
    return menu, tools


def add_dock(window: QMainWindow, title: str, widget: QWidget, area: Qt.DockWidgetArea, name: str) -> QDockWidget:
    """A movable, closable, floatable dock holding ``widget`` (``name`` keys its saved position).

    The widget is in a scroll area: when the docks of a column ask for more height than the
    screen has (a 1000 px or shorter screen), Qt drew them over each other, the verdict panel
    over the AI result and the overlay controls; now each one scrolls instead.
    """
    dock = QDockWidget(title, window)
    dock.setObjectName(name)
    scroll = QScrollArea()
    scroll.setWidget(widget)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    dock.setWidget(scroll)
    features = QDockWidget.DockWidgetFeature
    dock.setFeatures(features.DockWidgetMovable | features.DockWidgetClosable | features.DockWidgetFloatable)
    window.addDockWidget(area, dock)
    return dock


def fill_recent_menu(menu: QMenu, settings: ViewerSettings, open_path: Callable[[str], object]) -> None:
    """File > Open recent: one entry per remembered file (greyed out when it is gone), then "Clear list"."""
    menu.clear()
    recent = settings.recent_files
    for path in recent:
        action = menu.addAction(path)
        action.triggered.connect(lambda _checked=False, p=path: open_path(p))
        action.setEnabled(Path(path).exists())
    if not recent:
        menu.addAction("(none)").setEnabled(False)
    else:
        menu.addSeparator()
        menu.addAction("Clear list").triggered.connect(settings.clear_recent)
