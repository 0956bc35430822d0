"""The dark reading-room theme: Fusion style, a neutral dark palette and a few style rules.

Reading rooms are dim; a dark, low-saturation frame keeps the eye adapted to the image and
leaves colour for what matters (the predicted class, the overlay, warnings).
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

__all__ = ["apply_theme", "CLASS_COLOURS", "class_colour", "ACCENT", "WARNING", "ERROR", "MUTED"]

ACCENT = "#4ea1ff"
WARNING = "#f0b429"
ERROR = "#ef5b5b"
MUTED = "#8b97a6"

# Colours for the usual classes; other class names get a stable colour from a small palette.
CLASS_COLOURS = {"covid-19": "#ef5b5b", "pneumonia": "#f0b429", "normal": "#3ecf8e"}
_PALETTE = ("#4ea1ff", "#b18cff", "#ff8fa3", "#5ed4e6", "#c6d65a")

STYLE_SHEET = f"""
QMainWindow::separator {{ background: #10151b; width: 3px; height: 3px; }}
QDockWidget {{ color: #c9d3de; font-weight: 600; }}
QDockWidget::title {{ background: #18202a; padding: 5px 8px; border-bottom: 1px solid #0c1015; }}
QToolBar {{ background: #161d25; border: none; border-bottom: 1px solid #0c1015; spacing: 2px; padding: 3px; }}
QToolButton {{ color: #d6dde6; padding: 4px 6px; border-radius: 4px; }}
QToolButton:hover {{ background: #243040; }}
QToolButton:checked {{ background: #21466e; }}
QStatusBar {{ background: #121820; color: #b7c2cf; border-top: 1px solid #0c1015; }}
QStatusBar QLabel {{ color: #b7c2cf; padding: 0 6px; }}
QStatusBar::item {{ border: none; }}
QListWidget, QTableView, QTextBrowser, QPlainTextEdit, QTreeWidget {{ background: #121820; border: 1px solid #232d39; }}
QHeaderView::section {{ background: #1b232d; color: #aab6c4; border: none; padding: 3px 6px; }}
QLineEdit, QComboBox {{
    background: #121820; border: 1px solid #2a3542; border-radius: 3px; padding: 3px 5px;
}}
QSpinBox {{ padding: 2px 4px; }}  /* bordered spin boxes lose Fusion's arrows: keep the native frame */
QRadioButton::indicator {{
    width: 12px; height: 12px; border-radius: 7px; border: 1px solid #6b7888; background: #121820;
}}
QRadioButton::indicator:checked {{
    background: qradialgradient(cx:0.5, cy:0.5, radius:0.5, fx:0.5, fy:0.5,
                                stop:0 {ACCENT}, stop:0.55 {ACCENT}, stop:0.65 #121820, stop:1 #121820);
    border-color: {ACCENT};
}}
QPushButton {{ background: #243040; border: 1px solid #2f3d4f; border-radius: 4px; padding: 5px 12px; }}
QPushButton:hover {{ background: #2c3b4f; }}
QPushButton:default {{ border-color: {ACCENT}; }}
QPushButton:checked {{ background: #21466e; border-color: {ACCENT}; }}  /* a toggle (verdict, sync) shows its state */
QPushButton:disabled {{ color: #5f6b79; }}
QProgressBar {{ background: #121820; border: 1px solid #2a3542; border-radius: 3px; text-align: center; }}
QProgressBar::chunk {{ background: {ACCENT}; border-radius: 2px; }}
QLabel#disclaimer {{ color: {WARNING}; font-weight: 600; }}
QLabel#sectionTitle {{ color: {MUTED}; font-size: 11px; font-weight: 600; letter-spacing: 1px; }}
QLabel#muted {{ color: {MUTED}; }}
"""


def class_colour(name: str) -> str:
    key = name.strip().lower()
    if key in CLASS_COLOURS:
        return CLASS_COLOURS[key]
    return _PALETTE[sum(key.encode()) % len(_PALETTE)]


def apply_theme(app: QApplication) -> None:
    app.setStyle("Fusion")
    palette = QPalette()
    base, window, text = QColor("#121820"), QColor("#1a222c"), QColor("#dce3ec")
    palette.setColor(QPalette.ColorRole.Window, window)
    palette.setColor(QPalette.ColorRole.WindowText, text)
    palette.setColor(QPalette.ColorRole.Base, base)
    palette.setColor(QPalette.ColorRole.AlternateBase, QColor("#17202a"))
    palette.setColor(QPalette.ColorRole.ToolTipBase, QColor("#243040"))
    palette.setColor(QPalette.ColorRole.ToolTipText, text)
    palette.setColor(QPalette.ColorRole.Text, text)
    palette.setColor(QPalette.ColorRole.Button, QColor("#222c38"))
    palette.setColor(QPalette.ColorRole.ButtonText, text)
    palette.setColor(QPalette.ColorRole.BrightText, QColor(ERROR))
    palette.setColor(QPalette.ColorRole.Link, QColor(ACCENT))
    palette.setColor(QPalette.ColorRole.Highlight, QColor("#2f6db3"))
    palette.setColor(QPalette.ColorRole.HighlightedText, QColor("#ffffff"))
    palette.setColor(QPalette.ColorRole.PlaceholderText, QColor(MUTED))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText, QPalette.ColorRole.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#5f6b79"))
    app.setPalette(palette)
    app.setStyleSheet(STYLE_SHEET)
