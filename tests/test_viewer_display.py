"""A display that never misleads (issue 14): corner information, identifiers hidden on request,
the pixel readout, the window inside the screen, the font size, Home/End."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from inference.image import Window
from tests.dicom_factory import make_dicom
from tests.test_viewer_window import open_and_wait, press
from tests.tiny_bundle import xray_from_array
from viewer.corners import ViewState, corner_text, spacing_text

CTRL_SHIFT = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier


def film_dicom(path, **kwargs):
    """A 211 x 169 DX film, black but for a small bright block in the middle, with every corner field
    (see tests/dicom_factory.py for the defaults)."""
    kwargs.setdefault("extra", {"PatientOrientation": ["L", "F"]})
    kwargs.setdefault("window", (2048, 4096))
    pixels = np.zeros((169, 211), np.uint16)
    pixels[80:90, 100:110] = 4000
    make_dicom(path, pixels, bits_stored=12, **kwargs)
    return path


def corner_brightness(canvas, corner: str) -> int:
    grab = canvas.viewport().grab().toImage().convertToFormat(QImage.Format.Format_Grayscale8)
    w, h = grab.width(), grab.height()
    # Small regions: the orientation markers sit at the middle of each edge, outside them.
    xs = range(4, 54) if corner.endswith("left") else range(w - 54, w - 4)
    ys = range(4, 40) if corner.startswith("top") else range(h - 40, h - 4)
    return max(grab.pixelColor(x, y).red() for x in xs[::2] for y in ys[::2])


def test_corner_text_pure_layout():
    meta = xray_from_array(np.zeros((4, 4), np.uint8), fmt="DICOM", patient_age="007M", patient_sex="M").meta
    corners = corner_text(meta, "a.png", "desc", ViewState(Window(40, 400), 1.5, rotation=90, inverted=True))
    assert corners["top_left"] == ["7 M · M", "a.png", "desc"]
    assert corners["bottom_left"] == ["C 40  W 400", "Zoom 150%", "rotated 90°, inverted", spacing_text(meta)]
    assert spacing_text(meta) == "Pixel spacing not stated: lengths in px"
    hidden = corner_text(meta, "a.png", "desc", ViewState(Window(40, 400), 1.0), hide_identifiers=True)
    assert "a.png" not in hidden["top_left"]


def test_corners_show_patient_study_window_and_spacing(make_window, qtbot, tmp_path):
    path = film_dicom(tmp_path / "chest.dcm")
    window = make_window()
    open_and_wait(window, qtbot, path)
    corners = window.canvas.annotations()
    assert corners["top_left"][:4] == ["Doe, Jane", "ID PID-0001", "Born 1970-01-01", "54 Y · F"]
    assert corners["top_right"][:4] == ["2020-04-01", "CHEST PA", "PA DX", "General Hospital"]
    assert corners["bottom_left"][-1] == "Pixel 0.143 mm at detector"
    assert corners["bottom_left"][1] == f"Zoom {window.canvas.zoom() * 100:.0f}%"
    assert window.canvas.orientation_markers()["left"] == "R"


def test_hide_identifiers_is_remembered_and_corner_text_toggles(make_window, qtbot, tmp_path):
    path = film_dicom(tmp_path / "chest.dcm")
    window = make_window()
    window.canvas.setFocus()
    open_and_wait(window, qtbot, path)
    press(qtbot, window, Qt.Key.Key_I, CTRL_SHIFT)  # View > Hide identifiers on screen
    text = "\n".join(line for lines in window.canvas.annotations().values() for line in lines)
    assert "Doe" not in text and "PID-0001" not in text and "1970" not in text and "chest.dcm" not in text
    assert "54 Y · F" in text and "CHEST PA" in text
    assert window.actions_by_id["hide_identifiers"].isChecked()
    window.close()
    again = make_window()
    open_and_wait(again, qtbot, path)
    assert again.actions_by_id["hide_identifiers"].isChecked()
    assert "Doe, Jane" not in again.canvas.annotations()["top_left"]

    again.canvas.setFocus()
    assert corner_brightness(again.canvas, "top_right") > 150  # text drawn over a black film
    press(qtbot, again, Qt.Key.Key_I, Qt.KeyboardModifier.ControlModifier)  # hide all corner text
    assert not again.canvas.corner_text_visible()
    assert max(corner_brightness(again.canvas, c) for c in ("top_left", "top_right", "bottom_left")) < 40
    press(qtbot, again, Qt.Key.Key_I, Qt.KeyboardModifier.ControlModifier)
    assert again.canvas.corner_text_visible()


@pytest.fixture(autouse=True)
def _tmp(tmp_path):
    return tmp_path
