"""A display that never misleads (issue 14): corner information, identifiers hidden on request,
the pixel readout, the window inside the screen, the font size, Home/End."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
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


def hover(qtbot, window, x: float, y: float):
    """Move the mouse over image point (x, y) (a step aside first: a move to where the cursor
    already is sends no event); returns the viewport point and the image pixel it maps to."""
    vp, spot = window.canvas.viewport(), window.canvas.image_to_view(x, y).toPoint()
    qtbot.mouseMove(vp, spot + QPoint(3, 3))
    qtbot.mouseMove(vp, spot)
    scene = window.canvas.mapToScene(spot)
    return spot, (int(np.floor(scene.x())), int(np.floor(scene.y())))


def test_corner_text_pure_layout():
    meta = xray_from_array(np.zeros((4, 4), np.uint8), fmt="DICOM", patient_age="007M", patient_sex="M").meta
    corners = corner_text(
        meta, "a.png", "desc", ViewState(Window(40, 400), 1.5, orientation="rotated 90°", inverted=True)
    )
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
    assert "chest.dcm" not in window.windowTitle()
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


def test_pixel_readout_gives_stored_and_modality_values_and_mm(make_window, qtbot, tmp_path):
    pixels = np.zeros((169, 211), np.uint16)
    pixels[80:90, 100:110] = 1500
    path = tmp_path / "rescaled.dcm"
    make_dicom(
        path, pixels, bits_stored=12, slope=2, intercept=-1000, pixel_spacing=(0.2, 0.2), imager_pixel_spacing=None
    )
    window = make_window()
    open_and_wait(window, qtbot, path)
    assert int(window.canvas.image.pixels[85, 105]) == 2000  # the loader stores modality values
    _spot, pixel = hover(qtbot, window, 105.5, 85.5)
    assert pixel == (105, 85)
    assert window.pixel_label.text() == "x 105, y 85 · 21.0, 17.0 mm · 2000 (stored 1500)"


def test_pixel_readout_says_at_detector_and_shows_one_value_without_rescale(make_window, qtbot, tmp_path):
    path = film_dicom(tmp_path / "plain.dcm")
    window = make_window()
    open_and_wait(window, qtbot, path)
    _spot, pixel = hover(qtbot, window, 105.5, 85.5)
    assert pixel == (105, 85)
    assert window.pixel_label.text() == "x 105, y 85 · 15.0, 12.2 mm at detector · 4000"


def test_pixel_readout_follows_keyboard_navigation_to_a_smaller_film(make_window, qtbot, tmp_path):
    big = tmp_path / "a_big.dcm"
    make_dicom(big, np.random.default_rng(0).integers(0, 4000, (1250, 1520)).astype(np.uint16), bits_stored=12)
    small = film_dicom(tmp_path / "b_small.dcm")
    window = make_window()
    window.canvas.setFocus()
    open_and_wait(window, qtbot, big, small)
    assert window.session.current.name == "a_big.dcm"
    spot, (bx, by) = hover(qtbot, window, 1500.5, 1240.5)
    assert bx > 1400 and by > 1200 and window.pixel_label.text().startswith(f"x {bx}, y {by} ")
    press(qtbot, window, Qt.Key.Key_Down)  # the cursor stays where it is; the film under it changes
    assert window.session.current.name == "b_small.dcm"
    text = window.pixel_label.text()
    scene = window.canvas.mapToScene(spot)
    x, y = int(np.floor(scene.x())), int(np.floor(scene.y()))
    if 0 <= x < 211 and 0 <= y < 169:
        assert text.startswith(f"x {x}, y {y} ")
    else:
        assert text == ""
    assert f"x {bx}," not in text


def test_readout_units_and_rescale_from_the_tags():
    from viewer.readout import pixel_readout, rescale_of

    def meta(*tags, **kw):
        rows = tuple(("(0000,0000)", kw_, "DS", v) for kw_, v in tags)
        return xray_from_array(np.zeros((4, 4), np.int16), fmt="DICOM", tags=rows, **kw).meta

    ct = meta(("RescaleSlope", "1"), ("RescaleIntercept", "-1024"), modality="CT")
    assert rescale_of(ct) == (1.0, -1024.0)
    assert pixel_readout(ct, 1, 2, -1000) == "x 1, y 2 · -1000 HU (stored 24)"
    assert rescale_of(meta(("RescaleSlope", "0"), ("RescaleIntercept", "0"))) is None  # as the loader
    assert (
        pixel_readout(meta(("RescaleSlope", "0.5"), ("RescaleType", "OD")), 0, 0, 1.25)
        == "x 0, y 0 · 1.25 OD (stored 2.5)"
    )
    lut = meta(("ModalityLUTSequence", "<1 items>"), ("RescaleSlope", "2"))
    assert rescale_of(lut) is None and pixel_readout(lut, 0, 0, 7).endswith("7 (Modality LUT applied)")
    assert pixel_readout(meta(), 3, 4, 12.0) == "x 3, y 4 · 12"


def test_corner_and_readout_modules_import_no_qt():
    import subprocess
    import sys

    code = "import sys, viewer.corners, viewer.readout\nprint(any(m.startswith('PySide6') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fit_rect_shrinks_and_moves_into_the_screen():
    from PySide6.QtCore import QRect

    from viewer.appearance import fit_rect

    available = QRect(0, 0, 1366, 728)  # a 1366 x 768 screen less a 40 px task bar
    assert fit_rect(QRect(300, 200, 1440, 900), available) == QRect(0, 0, 1366, 728)
    assert fit_rect(QRect(800, 500, 1000, 600), available) == QRect(366, 128, 1000, 600)
    assert fit_rect(QRect(10, 20, 300, 200), available) == QRect(10, 20, 300, 200)  # already inside


@pytest.mark.parametrize("screen", [(1366, 728), (1280, 680)])  # 1366x768 and 1080p at 150 %, less task bars
def test_window_opens_inside_a_small_screen(qtbot, viewer_env, fake_factory, monkeypatch, make_window, screen):
    from PySide6.QtCore import QRect

    import viewer.appearance
    from viewer.main_window import MainWindow
    from viewer.settings import ViewerSettings

    big = make_window(wait_model=False)
    big.setGeometry(100, 100, 1900, 1150)  # saved from a large monitor
    big.save_settings()
    available = QRect(0, 0, *screen)
    monkeypatch.setattr(viewer.appearance, "available_geometry", lambda _w: available)
    restored = MainWindow(settings=ViewerSettings(), model_dir="fake-model", predictor_factory=fake_factory)
    qtbot.addWidget(restored)
    restored.show()
    qtbot.waitExposed(restored)
    qtbot.waitUntil(lambda: available.contains(restored.frameGeometry()), timeout=2000)
    restored.close()

    monkeypatch.setenv("CXR_VIEWER_SETTINGS", str(viewer_env / "fresh.ini"))  # no saved geometry: 1440 x 900
    fresh = MainWindow(settings=ViewerSettings(), model_dir="fake-model", predictor_factory=fake_factory)
    qtbot.addWidget(fresh)
    fresh.show()
    qtbot.waitUntil(lambda: available.contains(fresh.frameGeometry()), timeout=2000)
    qtbot.wait(350)  # after the last re-fit, still inside
    assert available.contains(fresh.frameGeometry()), fresh.frameGeometry()
    fresh.close()


def test_font_size_setting_is_app_wide_and_remembered(make_window, qtbot):
    from PySide6.QtWidgets import QApplication

    from viewer.appearance import system_font_size

    base = system_font_size()
    window = make_window(wait_model=False)
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    window.canvas.setFocus()
    try:
        press(qtbot, window, Qt.Key.Key_Up, CTRL_SHIFT)
        press(qtbot, window, Qt.Key.Key_Up, CTRL_SHIFT)
        assert QApplication.font().pointSizeF() == pytest.approx(base + 2)
        # The corner text follows (widgets get the application's font through posted events).
        qtbot.waitUntil(lambda: window.canvas.font().pointSizeF() == pytest.approx(base + 2), timeout=2000)
        press(qtbot, window, Qt.Key.Key_Down, CTRL_SHIFT)
        assert window.settings.font_size == pytest.approx(base + 1)
        window.close()
        QApplication.setFont(QApplication.font())  # a new window applies the remembered size itself
        again = make_window(wait_model=False)
        assert QApplication.font().pointSizeF() == pytest.approx(base + 1)
        again.activateWindow()
        qtbot.waitUntil(again.isActiveWindow)
        again.canvas.setFocus()
        press(qtbot, again, Qt.Key.Key_N, CTRL_SHIFT)
        assert QApplication.font().pointSizeF() == pytest.approx(base) and again.settings.font_size == 0
    finally:
        from viewer.appearance import apply_font_size

        apply_font_size(0)


def test_home_and_end_go_to_the_first_and_last_film(make_window, qtbot, image_files):
    window = make_window()
    open_and_wait(window, qtbot, image_files["deep"], image_files["dark"], image_files["bright"])
    names = [d.name for d in window.session.documents()]
    window.thumbnails.setFocus()
    qtbot.keyClick(window.thumbnails, Qt.Key.Key_End)
    assert window.session.current.name == names[-1]
    qtbot.keyClick(window.thumbnails, Qt.Key.Key_Home)
    assert window.session.current.name == names[0]
    window.canvas.setFocus()
    press(qtbot, window, Qt.Key.Key_End)
    assert window.session.current.name == names[-1]
    press(qtbot, window, Qt.Key.Key_Home)
    assert window.session.current.name == names[0]


def test_help_explains_the_corners_markers_and_readout():
    from viewer.help_dialog import help_html

    html = help_html()
    for words in ("Hide identifiers on screen", "Patient Orientation", "Ctrl+I", "Home", "End", "down = darker"):
        assert words in html
