"""F1: every shortcut and mouse binding, generated from the same tables the actions use."""

from __future__ import annotations

from html import escape

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget

from viewer.presets import PRESET_HELP
from viewer.results_panel import DISCLAIMER
from viewer.shortcuts import DISPLAY_HELP, MOUSE, SHORTCUTS, WINDOW_LEVEL_HELP

__all__ = ["HelpDialog", "help_html", "MEASURE_HELP"]

MEASURE_HELP = (
    "Choose a tool (Tools menu, the second toolbar or its key) and draw with the left button: a drag, or a "
    "click for each point. Lengths are in mm from Pixel Spacing, in mm at the detector from Imager Pixel "
    "Spacing (a radiograph magnifies what is far from the detector) and in pixels when the file states "
    "neither. ROI values are the stored pixel values. The cardiothoracic ratio is proposed from the lung "
    "model when it finds the lungs (adjust both calipers); on an AP film it says that the CTR overestimates "
    "heart size. A new mark is selected: drag its square handles to adjust it; with Select (S) click a mark "
    "to select it and drag it to move it. Esc cancels a drawing, then returns to Select, then resets the "
    "view. Marks are kept with the film (a file in the user data folder, keyed by the SOP Instance UID or "
    "the file content), come back when it is opened again, are listed in the Measurements panel and are "
    "burned into the PNG, PDF and Secondary Capture exports."
)


def _keys(keys: tuple[str, ...]) -> str:
    return " or ".join(f"<b>{escape(k)}</b>" for k in keys)


def help_html() -> str:
    rows: list[str] = []
    groups: dict[str, list[str]] = {}
    for s in SHORTCUTS:
        groups.setdefault(s.group, []).append(f"<tr><td>{_keys(s.keys)}</td><td>{escape(s.help)}</td></tr>")
    groups.setdefault("Window", [])
    groups["Window"] += [
        f"<tr><td><b>{key}</b></td><td>{escape(name)}: {escape(text)}</td></tr>" for key, name, text in PRESET_HELP[1:]
    ]
    for group, items in groups.items():
        rows.append(f"<h3>{escape(group)}</h3><table cellspacing='0' cellpadding='3'>{''.join(items)}</table>")
    mouse = "".join(f"<tr><td><b>{escape(a)}</b></td><td>{escape(b)}</td></tr>" for a, b in MOUSE)
    return (
        "<h2>CXR Viewer: keyboard and mouse</h2>"
        f"<p style='color:#f0b429'><b>{escape(DISCLAIMER)}.</b></p>"
        f"<h3>Mouse</h3><table cellspacing='0' cellpadding='3'>{mouse}</table>"
        f"<h3>Window/level</h3><p>{escape(WINDOW_LEVEL_HELP)}</p>"
        f"<h3>On the image</h3><p>{escape(DISPLAY_HELP)}</p>"
        f"<h3>Measuring and annotating</h3><p>{escape(MEASURE_HELP)}</p>"
        + "".join(rows)
        + "<h3>Grad-CAM</h3><p>The overlay shows which regions raised the score of the chosen class "
        "(Grad-CAM or Grad-CAM++ at the model's last convolution). It is not a lesion outline: use it to "
        "check that the model looks at the lungs, not at text markers or borders.</p>"
    )


class HelpDialog(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard and mouse")
        self.resize(640, 720)
        layout = QVBoxLayout(self)
        self.browser = QTextBrowser()
        self.browser.setHtml(help_html())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(self.browser)
        layout.addWidget(buttons)
