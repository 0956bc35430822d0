"""Measurement and annotation tools (issue 14), driven with real mouse events and keys on the canvas.

Films are made here (PNG, JPEG, DICOM with and without spacing, MONOCHROME1 and 2); the view is
set to 2 screen pixels per image pixel so that whole image coordinates land on whole viewport
pixels and every measured value can be asserted exactly.
"""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QImage

from inference.annotations import AP_CTR_NOTE, Annotation
from tests.conftest import write_png
from tests.dicom_factory import make_dicom
from tests.test_viewer_canvas import drag
from tests.test_viewer_window import open_and_wait

H, W = 160, 200
PATCH = (slice(40, 80), slice(60, 100))  # rows, cols of the known patch
CTRL = Qt.KeyboardModifier.ControlModifier
MARK = (255, 200, 0)


def film_pixels(seed: int = 0) -> np.ndarray:
    """A 12-bit film with structure (the loader refuses flat ones) and a checkerboard patch of
    1000/1200: its mean is 1100 and its sample SD 100 * sqrt(n / (n - 1))."""
    y, x = np.mgrid[0:H, 0:W]
    pixels = (300 + 6 * x + 4 * y + np.random.default_rng(seed).integers(0, 40, (H, W))).astype(np.uint16)
    rows, cols = PATCH
    pixels[rows, cols] = 1000 + 200 * ((y[rows, cols] + x[rows, cols]) % 2)
    return pixels


def make_film(tmp_path, kind: str, name: str = "film"):
    pixels = film_pixels()
    if kind == "png":
        return write_png(tmp_path / f"{name}.png", pixels)
    if kind == "jpeg":
        path = tmp_path / f"{name}.jpg"
        assert cv2.imwrite(str(path), (pixels // 16).astype(np.uint8))
        return path
    spacing = {
        "dicom_mm": {"pixel_spacing": (0.2, 0.2), "imager_pixel_spacing": None},
        "dicom_detector": {"pixel_spacing": None, "imager_pixel_spacing": (0.2, 0.2)},
        "dicom_none": {"pixel_spacing": None, "imager_pixel_spacing": None},
        "dicom_mono1": {"pixel_spacing": (0.2, 0.2), "imager_pixel_spacing": None, "photometric": "MONOCHROME1"},
        "dicom_ap": {"pixel_spacing": (0.2, 0.2), "imager_pixel_spacing": None, "view_position": "AP"},
    }[kind]
    path = tmp_path / f"{name}.dcm"
    make_dicom(path, pixels, bits_stored=12, window=(1000, 2000), **spacing)
    return path


@pytest.fixture
def reader(make_window, qtbot):
    """Opens a film in a fresh window at zoom 2 and returns (window, tools)."""

    def open_film(path, zoom: float = 2.0):
        window = make_window()
        window.activateWindow()
        open_and_wait(window, qtbot, path)
        window.canvas.set_zoom(zoom)
        window.canvas.setFocus()
        window.tools.ask_text = lambda title, initial: None
        return window, window.tools

    return open_film


def at(window, x: float, y: float) -> QPoint:
    """The viewport pixel showing image point (x, y)."""
    p = window.tools.to_view(x, y)
    assert p.x() == pytest.approx(round(p.x()), abs=1e-6) and p.y() == pytest.approx(round(p.y()), abs=1e-6)
    return QPoint(round(p.x()), round(p.y()))


def key(qtbot, window, k, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    qtbot.keyClick(window.canvas, k, modifier)


def draw(qtbot, window, *segments) -> None:
    """Left drags between image points: ``((x0, y0), (x1, y1)), ...``; a segment of one point is a click."""
    vp = window.canvas.viewport()
    for seg in segments:
        if len(seg) == 1:
            qtbot.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(window, *seg[0]))
        else:
            drag(qtbot, vp, at(window, *seg[0]), at(window, *seg[1]))


def marks(window) -> tuple[Annotation, ...]:
    return window.reads.annotations(window.session.current)


def screen_rgb(window, point) -> tuple[int, int, int]:
    image = window.canvas.viewport().grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    c = image.pixelColor(point)
    return c.red(), c.green(), c.blue()


def is_mark(rgb) -> bool:
    return all(abs(a - b) <= 40 for a, b in zip(rgb, MARK))


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("dicom_mm", "20.0 mm"),
        ("dicom_detector", "20.0 mm at detector"),
        ("dicom_none", "100.0 px"),
        ("dicom_mono1", "20.0 mm"),
        ("png", "100.0 px"),
        ("jpeg", "100.0 px"),
    ],
)
def test_a_100_pixel_line_reads_its_length(reader, qtbot, tmp_path, kind, expected):
    window, tools = reader(make_film(tmp_path, kind))
    key(qtbot, window, Qt.Key.Key_D)
    assert tools.tool == "distance" and window.actions_by_id["tool_distance"].isChecked()
    draw(qtbot, window, ((50, 120), (150, 120)))
    (line,) = marks(window)
    assert line.kind == "distance" and line.points == ((50.0, 120.0), (150.0, 120.0))
    assert tools.label(line) == expected
    assert window.annotations_panel.rows() == [(line.id, f"Distance: {expected}")]
    assert is_mark(screen_rgb(window, at(window, 100, 120)))  # drawn where it was drawn


def test_two_clicks_also_draw_a_line(reader, qtbot, tmp_path):
    window, tools = reader(make_film(tmp_path, "dicom_mm"))
    key(qtbot, window, Qt.Key.Key_D)
    draw(qtbot, window, ((20, 30),), ((20, 80),))
    (line,) = marks(window)
    assert line.points == ((20.0, 30.0), (20.0, 80.0)) and tools.label(line) == "10.0 mm"


@pytest.mark.parametrize("kind", ["png", "dicom_mm", "dicom_mono1"])
def test_rectangle_roi_over_the_known_patch(reader, qtbot, tmp_path, kind):
    window, tools = reader(make_film(tmp_path, kind))
    key(qtbot, window, Qt.Key.Key_R)
    draw(qtbot, window, ((60, 40), (100, 80)))
    (roi,) = marks(window)
    m = tools.measurement(roi)
    n = 40 * 40
    assert m.values["mean"] == pytest.approx(1100.0)
    assert m.values["sd"] == pytest.approx(100.0 * np.sqrt(n / (n - 1)))
    assert (m.values["min"], m.values["max"]) == (1000.0, 1200.0)
    assert m.values["area"] == pytest.approx(n * (0.04 if kind != "png" else 1.0))
    assert m.units["area"] == ("px²" if kind == "png" else "mm²")
    assert "mean 1100.0, sd 100.0" in tools.label(roi)


def test_ellipse_roi_counts_the_pixels_whose_centres_are_inside(reader, qtbot, tmp_path):
    window, tools = reader(make_film(tmp_path, "png"))
    key(qtbot, window, Qt.Key.Key_E)
    draw(qtbot, window, ((60, 40), (100, 80)))
    (roi,) = marks(window)
    y, x = np.mgrid[0:H, 0:W]
    inside = ((x + 0.5 - 80) / 20) ** 2 + ((y + 0.5 - 60) / 20) ** 2 <= 1
    values = film_pixels()[inside].astype(float)
    m = tools.measurement(roi)
    assert m.values["area"] == inside.sum() and m.values["mean"] == pytest.approx(values.mean())
    assert m.values["sd"] == pytest.approx(values.std(ddof=1))


def test_angle_cobb_and_arrow(reader, qtbot, tmp_path):
    window, tools = reader(make_film(tmp_path, "png"))
    key(qtbot, window, Qt.Key.Key_A)
    draw(qtbot, window, ((40, 100), (80, 100)), ((80, 60),))  # one arm dragged, the other clicked
    key(qtbot, window, Qt.Key.Key_B)
    draw(qtbot, window, ((20, 20), (60, 20)), ((20, 60), (60, 100)))
    key(qtbot, window, Qt.Key.Key_W)
    draw(qtbot, window, ((150, 30), (120, 60)))
    angle, cobb, arrow = marks(window)
    assert angle.points == ((40.0, 100.0), (80.0, 100.0), (80.0, 60.0)) and tools.label(angle) == "90.0 deg"
    assert cobb.kind == "cobb" and tools.label(cobb) == "45.0 deg"
    assert arrow.kind == "arrow" and arrow.points == ((150.0, 30.0), (120.0, 60.0)) and tools.label(arrow) == ""


def test_ctr_by_hand_stays_horizontal_and_says_when_the_film_is_ap(reader, qtbot, tmp_path):
    window, tools = reader(make_film(tmp_path, "dicom_ap"))
    key(qtbot, window, Qt.Key.Key_C)
    # The fake model has no lung model: no proposal, the reader places both calipers.
    qtbot.waitUntil(lambda: window.ctr_proposer.pending is None, timeout=5000)
    assert "drag the maximal cardiac width" in window.statusBar().currentMessage()
    draw(qtbot, window, ((70, 100), (130, 104)), ((40, 60), (160, 50)))
    (ctr,) = marks(window)
    assert ctr.points == ((70.0, 100.0), (130.0, 100.0), (40.0, 60.0), (160.0, 60.0))
    m = tools.measurement(ctr)
    assert m.values["ratio"] == pytest.approx(0.5) and m.values["cardiac"] == pytest.approx(12.0)
    assert AP_CTR_NOTE in tools.label(ctr)


class FakeLungs:
    """A lung model that finds two lung fields with a 60-pixel heart gap between them."""

    def segment(self, image):
        from types import SimpleNamespace

        mask = np.zeros(image.pixels.shape, bool)
        mask[30:140, 30:70] = True
        mask[30:140, 130:170] = True
        return SimpleNamespace(mask=mask, whole_mask=None, plausible=True)


def test_ctr_is_proposed_from_the_lung_masks_and_adjustable(reader, qtbot, tmp_path):
    window, tools = reader(make_film(tmp_path, "dicom_mm"))
    window.controller.predictor.lungs = FakeLungs()
    key(qtbot, window, Qt.Key.Key_C)
    qtbot.waitUntil(lambda: len(marks(window)) == 1, timeout=5000)
    (ctr,) = marks(window)
    assert ctr.kind == "ctr" and tools.selected == ctr.id
    assert ctr.points[2][0] == 30.0 and ctr.points[3][0] == 170.0  # thoracic: the lungs' outer edges
    assert ctr.points[0][0] == 70.0 and ctr.points[1][0] == 130.0  # cardiac: the gap between them
    assert tools.measurement(ctr).values["ratio"] == pytest.approx(60 / 140)
    # Adjust the cardiac caliper's right end: it stays on its row.
    y = ctr.points[1][1]
    drag(qtbot, window.canvas.viewport(), at(window, 130, y), at(window, 140, y + 7))
    (ctr,) = marks(window)
    assert ctr.points[1] == (140.0, y + 7) and ctr.points[0][1] == y + 7
    assert tools.measurement(ctr).values["ratio"] == pytest.approx(70 / 140)


def test_text_is_typed_and_edited_with_f2_and_double_click(reader, qtbot, tmp_path):
    window, tools = reader(make_film(tmp_path, "png"))
    tools.ask_text = lambda title, initial: "effusion"
    key(qtbot, window, Qt.Key.Key_T)
    draw(qtbot, window, ((100, 30),))
    (note,) = marks(window)
    assert (note.kind, note.points, note.text) == ("text", ((100.0, 30.0),), "effusion")
    assert tools.selected == note.id
    tools.ask_text = lambda title, initial: initial + " (small)"
    key(qtbot, window, Qt.Key.Key_F2)
    assert marks(window)[0].text == "effusion (small)"
    key(qtbot, window, Qt.Key.Key_S)
    tools.ask_text = lambda title, initial: "left effusion"
    qtbot.mouseDClick(window.canvas.viewport(), Qt.MouseButton.LeftButton, pos=at(window, 100, 30))
    assert marks(window)[0].text == "left effusion"


def test_select_move_handle_delete_undo_redo(reader, qtbot, tmp_path):
    window, tools = reader(make_film(tmp_path, "dicom_mm"))
    vp = window.canvas.viewport()
    key(qtbot, window, Qt.Key.Key_D)
    draw(qtbot, window, ((40, 40), (90, 40)))
    key(qtbot, window, Qt.Key.Key_S)
    tools.select(None)
    drag(qtbot, vp, at(window, 60, 40), at(window, 70, 50))  # grab the line in its middle: moved
    (line,) = marks(window)
    assert line.points == ((50.0, 50.0), (100.0, 50.0)) and tools.selected == line.id
    drag(qtbot, vp, at(window, 100, 50), at(window, 150, 50))  # its handle: one end moves
    (line,) = marks(window)
    assert line.points == ((50.0, 50.0), (150.0, 50.0)) and tools.label(line) == "20.0 mm"
    assert not window.actions_by_id["redo"].isEnabled() and window.actions_by_id["undo"].isEnabled()
    key(qtbot, window, Qt.Key.Key_Delete)
    assert marks(window) == ()
    key(qtbot, window, Qt.Key.Key_Z, CTRL)
    assert window.actions_by_id["redo"].isEnabled()
    assert marks(window)[0].points == ((50.0, 50.0), (150.0, 50.0))
    key(qtbot, window, Qt.Key.Key_Z, CTRL)
    assert marks(window)[0].points == ((50.0, 50.0), (100.0, 50.0))
    key(qtbot, window, Qt.Key.Key_Y, CTRL)
    key(qtbot, window, Qt.Key.Key_Z, CTRL | Qt.KeyboardModifier.ShiftModifier)
    assert marks(window) == ()
    key(qtbot, window, Qt.Key.Key_Z, CTRL)
    tools.select(marks(window)[0].id)
    key(qtbot, window, Qt.Key.Key_Backspace)
    assert marks(window) == ()


def test_esc_cancels_then_leaves_the_tool_then_resets_the_view(reader, qtbot, tmp_path):
    window, tools = reader(make_film(tmp_path, "png"))
    key(qtbot, window, Qt.Key.Key_D)
    draw(qtbot, window, ((40, 40),))  # one end placed
    assert tools.drawing
    key(qtbot, window, Qt.Key.Key_Escape)
    assert not tools.drawing and tools.tool == "distance" and window.canvas.zoom() == 2.0
    key(qtbot, window, Qt.Key.Key_Escape)
    assert tools.tool == "select" and window.actions_by_id["tool_select"].isChecked()
    assert window.canvas.zoom() == 2.0
    key(qtbot, window, Qt.Key.Key_Escape)
    assert window.canvas.zoom() != 2.0  # fitted again
    assert marks(window) == ()


def test_select_tool_on_nothing_keeps_the_window_level_drag(reader, qtbot, tmp_path):
    window, tools = reader(make_film(tmp_path, "png"))
    key(qtbot, window, Qt.Key.Key_D)
    draw(qtbot, window, ((40, 40), (90, 40)))
    key(qtbot, window, Qt.Key.Key_S)
    before = window.canvas.window()
    drag(qtbot, window.canvas.viewport(), at(window, 120, 120), at(window, 150, 140))
    after = window.canvas.window()
    assert after.width > before.width and after.center != before.center
    assert marks(window)[0].points == ((40.0, 40.0), (90.0, 40.0)) and tools.selected is None


def test_marks_follow_rotation_and_flips_and_can_be_edited_there(reader, qtbot, tmp_path):
    window, tools = reader(make_film(tmp_path, "dicom_mm"))
    canvas = window.canvas
    key(qtbot, window, Qt.Key.Key_D)
    draw(qtbot, window, ((40, 30), (140, 30)))
    (line,) = marks(window)
    key(qtbot, window, Qt.Key.Key_BracketRight)
    key(qtbot, window, Qt.Key.Key_H)
    canvas.set_zoom(2.0)
    assert canvas.rotation() != 0 or canvas.is_mirrored()
    assert marks(window) == (line,)  # the same image coordinates
    mid = at(window, 90, 30)
    assert mid == canvas.mapFromScene(90.0, 30.0)
    assert is_mark(screen_rgb(window, mid))  # drawn on the anatomy, wherever it is now on screen
    key(qtbot, window, Qt.Key.Key_S)
    qtbot.mouseClick(canvas.viewport(), Qt.MouseButton.LeftButton, pos=mid)
    assert tools.selected == line.id
    drag(qtbot, canvas.viewport(), at(window, 140, 30), at(window, 140, 80))
    (line,) = marks(window)
    assert line.points == ((40.0, 30.0), (140.0, 80.0))


def test_marks_come_back_when_the_film_is_reopened_from_a_copy(reader, make_window, qtbot, tmp_path):
    for kind in ("png", "dicom_mm"):
        path = make_film(tmp_path, kind, name=f"first-{kind}")
        window, tools = reader(path)
        key(qtbot, window, Qt.Key.Key_D)
        draw(qtbot, window, ((40, 30), (140, 30)))
        (line,) = marks(window)
        window.close_current()
        assert window.session.current is None and window.annotations_panel.rows() == []
        copy = tmp_path / "elsewhere" / f"copy-{path.name}"
        copy.parent.mkdir(exist_ok=True)
        shutil.copy(path, copy)
        open_and_wait(window, qtbot, copy)
        assert marks(window) == (line,) and window.annotations_panel.rows()[0][0] == line.id
        again = make_window()  # another session: from the sidecar file
        open_and_wait(again, qtbot, copy)
        again.canvas.set_zoom(2.0)
        assert again.reads.annotations(again.session.current) == (line,)
        assert is_mark(screen_rgb(again, at(again, 90, 30)))


def test_panel_rows_select_and_delete(reader, qtbot, tmp_path):
    window, tools = reader(make_film(tmp_path, "dicom_mm"))
    panel = window.annotations_panel
    key(qtbot, window, Qt.Key.Key_D)
    draw(qtbot, window, ((40, 30), (140, 30)))
    key(qtbot, window, Qt.Key.Key_R)
    draw(qtbot, window, ((60, 40), (100, 80)))
    line, roi = marks(window)
    assert [r[0] for r in panel.rows()] == [line.id, roi.id]
    assert panel.rows()[1][1].startswith("Rectangle ROI: mean 1100.0")
    assert panel.selected_id() == roi.id  # the new mark is selected, in the list too
    panel.list.setCurrentRow(0)
    assert tools.selected == line.id
    tools.ask_text = lambda title, initial: "apex"
    rect = panel.list.visualItemRect(panel.list.item(0))
    qtbot.mouseClick(panel.list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(panel.list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert marks(window)[0].text == "apex" and panel.rows()[0][1] == "Distance: apex · 20.0 mm"
    qtbot.mouseClick(panel.delete_button, Qt.MouseButton.LeftButton)
    assert [a.id for a in marks(window)] == [roi.id] and [r[0] for r in panel.rows()] == [roi.id]


def test_loupe_magnifies_around_the_cursor(reader, qtbot, tmp_path):
    window, tools = reader(make_film(tmp_path, "png"), zoom=1.0)
    vp = window.canvas.viewport()
    centre = window.canvas.image_to_view(80, 60).toPoint()  # the patch's upper left quarter
    ring = centre + QPoint(90, 0)
    qtbot.mouseMove(vp, centre + QPoint(2, 2))
    qtbot.mouseMove(vp, centre)
    without = screen_rgb(window, ring)
    key(qtbot, window, Qt.Key.Key_Z)
    assert tools.loupe and window.actions_by_id["tool_loupe"].isChecked()
    qtbot.mouseMove(vp, centre + QPoint(2, 2))
    qtbot.mouseMove(vp, centre)
    assert screen_rgb(window, ring) != without  # the loupe's rim
    # 3x: the patch's checkerboard (1 image px = 1 screen px) becomes 3-pixel squares in the loupe.
    gray = vp.grab().toImage().convertToFormat(QImage.Format.Format_Grayscale8)
    row = [gray.pixelColor(centre.x() + dx, centre.y() + 10).red() for dx in range(-30, 30)]
    runs = np.diff(np.flatnonzero(np.diff(np.array(row) > np.median(row))))
    assert len(runs) > 3 and np.median(runs) == 3
    key(qtbot, window, Qt.Key.Key_Z)
    assert not tools.loupe


def test_the_exported_png_shows_the_arrow_where_the_screen_does(reader, qtbot, tmp_path):
    from inference.export.annotate import picture_scale, render_annotated
    from inference.export.options import ExportOptions

    window, tools = reader(make_film(tmp_path, "dicom_mm"))
    key(qtbot, window, Qt.Key.Key_W)
    draw(qtbot, window, ((40, 120), (100, 120)))
    (arrow,) = marks(window)
    doc = window.session.current
    picture = render_annotated(
        doc.image, doc.prediction, None, ExportOptions(window=doc.window, invert=doc.invert), marks(window)
    )
    scale = picture_scale(H, W)

    def exported(x: float, y: float) -> tuple[int, int, int]:
        return tuple(int(v) for v in picture[int(y * scale), int(x * scale)])

    shaft, off = (70.0, 120.0), (70.0, 140.0)
    assert is_mark(screen_rgb(window, at(window, *shaft))) and is_mark(exported(*shaft))
    screen_gray, export_gray = screen_rgb(window, at(window, *off)), exported(*off)
    assert all(abs(a - b) <= 6 for a, b in zip(screen_gray, export_gray)), (screen_gray, export_gray)
    # The anatomy around it too (rows beside the arrow head): the same window and gray on screen and in the file.
    inside = window.canvas.viewport().rect().adjusted(10, 10, -10, -10)
    pairs = [
        (screen_rgb(window, at(window, x + 0.5, y + 0.5))[0], exported(x + 0.5, y + 0.5)[0])
        for y in range(88, 118, 3)
        for x in range(0, W, 5)
        if inside.contains(at(window, x + 0.5, y + 0.5))
    ]
    assert len(pairs) > 50 and max(abs(a - b) for a, b in pairs) <= 3


def test_a_release_lost_to_a_dialog_does_not_break_the_next_window_level_drag(reader, qtbot, tmp_path):
    window, tools = reader(make_film(tmp_path, "png"))
    vp = window.canvas.viewport()
    key(qtbot, window, Qt.Key.Key_D)
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=at(window, 40, 40))  # its release never comes
    key(qtbot, window, Qt.Key.Key_Escape)
    key(qtbot, window, Qt.Key.Key_S)
    before = window.canvas.window()
    drag(qtbot, vp, at(window, 120, 120), at(window, 150, 140))
    assert window.canvas.window().width > before.width and marks(window) == ()


def test_another_film_cancels_a_drawing_and_the_selection(reader, qtbot, tmp_path):
    first = make_film(tmp_path, "png", name="one")
    second = write_png(tmp_path / "two.png", film_pixels(seed=5))
    window, tools = reader(first)
    open_and_wait(window, qtbot, second)
    window.show_document(window.session.document_ids()[0])
    window.canvas.set_zoom(2.0)
    key(qtbot, window, Qt.Key.Key_D)
    draw(qtbot, window, ((40, 40), (90, 40)), ((20, 20),))  # a line, then the first end of another
    assert tools.drawing and tools.selected is None
    key(qtbot, window, Qt.Key.Key_Down)  # the next film
    assert window.session.current.name == "two.png"
    assert not tools.drawing and tools.selected is None and marks(window) == ()
    assert window.annotations_panel.rows() == []
    key(qtbot, window, Qt.Key.Key_Up)
    assert len(marks(window)) == 1 and len(window.annotations_panel.rows()) == 1


def test_a_late_proposal_never_adds_a_second_ctr(reader, qtbot, tmp_path):
    window, tools = reader(make_film(tmp_path, "dicom_mm"))
    key(qtbot, window, Qt.Key.Key_C)
    draw(qtbot, window, ((70, 100), (130, 100)), ((40, 60), (160, 60)))
    proposal = ((60.0, 90.0), (140.0, 90.0), (30.0, 50.0), (170.0, 50.0))
    window.ctr_proposer._returned(window.session.current, proposal)  # the lung model answers late
    assert [a.kind for a in marks(window)] == ["ctr"] and marks(window)[0].points[0] == (70.0, 100.0)


def test_an_roi_covering_no_pixel_of_the_film_is_refused_not_shown_as_nan(reader, qtbot, tmp_path):
    """Drawn or moved off the film, an ROI measured nothing and read "mean nan, sd nan" (QA, Xvfb)."""
    window, tools = reader(make_film(tmp_path, "dicom_mm"))
    said = []
    tools.status = said.append
    key(qtbot, window, Qt.Key.Key_R)
    draw(qtbot, window, ((-20, -20), (-5, -5)))  # beside the film, above its top left corner
    assert marks(window) == () and "covers no pixel" in said[-1]
    draw(qtbot, window, ((10, 10), (30, 30)))
    (roi,) = marks(window)
    key(qtbot, window, Qt.Key.Key_S)
    drag(qtbot, window.canvas.viewport(), at(window, 10, 20), at(window, -30, 20))  # its left edge, 40 px left
    assert marks(window) == (roi,)  # kept where it measured something
    assert all("nan" not in tools.label(m) for m in marks(window))
