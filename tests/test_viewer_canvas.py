"""The image canvas: fast windowing, mouse tools, and an overlay that follows every view change."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QImage, QMouseEvent
from PySide6.QtWidgets import QApplication

from inference.display import apply_window, window_image
from inference.image import Window
from tests.tiny_bundle import xray_from_array
from viewer.canvas import ImageCanvas
from viewer.render import Renderer


def deep_image(h: int = 300, w: int = 400):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 4096, size=(h, w)).astype(np.uint16)
    return xray_from_array(pixels, bits_stored=12)


@pytest.mark.parametrize(
    "pixels",
    [
        np.random.default_rng(0).integers(0, 65536, size=(70, 90)).astype(np.uint16),
        np.random.default_rng(1).integers(-1024, 3000, size=(70, 90)).astype(np.int16),
        np.random.default_rng(2).normal(0, 100, size=(70, 90)).astype(np.float32),
        np.random.default_rng(3).integers(0, 256, size=(70, 90)).astype(np.uint8),
    ],
)
@pytest.mark.parametrize("invert", [False, True])
def test_renderer_matches_apply_window_exactly(pixels, invert):
    window = Window(center=float(np.median(pixels)), width=float(np.ptp(pixels)) / 3 + 1)
    renderer = Renderer(pixels)
    assert np.array_equal(renderer.render(window, invert), apply_window(pixels, window, invert=invert))


def test_renderer_uses_a_table_for_integers_and_previews_large_images():
    pixels = np.random.default_rng(0).integers(0, 4096, size=(2400, 1800)).astype(np.uint16)
    renderer = Renderer(pixels, preview_side=512)
    assert renderer.uses_lut
    preview = renderer.render(Window(2000, 1000), preview=True)
    assert max(preview.shape) == 512 and preview.dtype == np.uint8
    assert renderer.render(Window(2000, 1000)).shape == pixels.shape


@pytest.fixture
def canvas(qtbot):
    view = ImageCanvas()
    qtbot.addWidget(view)
    view.resize(600, 500)
    view.show()
    qtbot.waitExposed(view)
    return view


def drag(qtbot, widget, start: QPoint, end: QPoint, button=Qt.MouseButton.LeftButton, modifier=None, steps=5):
    """A drag as the window system delivers it: press, moves with the button and modifiers held, release.

    (``qtbot.mouseMove`` cannot carry keyboard modifiers, so the moves are sent as real events.)
    """
    modifier = modifier or Qt.KeyboardModifier.NoModifier
    qtbot.mousePress(widget, button, modifier, start)
    for i in range(1, steps + 1):
        p = QPointF(start + (end - start) * (i / steps))
        event = QMouseEvent(QEvent.Type.MouseMove, p, widget.mapToGlobal(p), Qt.MouseButton.NoButton, button, modifier)
        QApplication.sendEvent(widget, event)
    qtbot.mouseRelease(widget, button, modifier, end)


def test_displayed_pixels_equal_window_image(canvas):
    image = deep_image()
    canvas.set_image(image)
    shown = canvas.image_item.pixmap().toImage()
    assert (shown.width(), shown.height()) == (400, 300)
    expected = window_image(image)
    for x, y in [(0, 0), (10, 20), (399, 299), (200, 150)]:
        assert shown.pixelColor(x, y).red() == expected[y, x]


def test_left_drag_changes_window_width_and_centre(canvas, qtbot):
    canvas.set_image(deep_image())
    before = canvas.window()
    vp = canvas.viewport()
    centre = vp.rect().center()
    # Right widens the window.
    drag(qtbot, vp, centre, centre + QPoint(100, 0))
    after_right = canvas.window()
    assert after_right.width > before.width
    assert after_right.center == pytest.approx(before.center)
    # Down raises the centre (darker image).
    drag(qtbot, vp, centre, centre + QPoint(0, 80))
    after_down = canvas.window()
    assert after_down.center > after_right.center
    assert after_down.width == pytest.approx(after_right.width)
    # Up and left go the other way.
    drag(qtbot, vp, centre, centre + QPoint(-100, -80))
    assert canvas.window().width == pytest.approx(before.width, rel=1e-6)
    assert canvas.window().center == pytest.approx(before.center, rel=1e-6)
    assert not canvas.showing_preview  # full resolution again after the release


def test_ctrl_drag_takes_fine_steps(canvas, qtbot):
    canvas.set_image(deep_image())
    vp = canvas.viewport()
    c = vp.rect().center()
    w0 = canvas.window().width
    drag(qtbot, vp, c, c + QPoint(100, 0))
    coarse = canvas.window().width - w0
    w1 = canvas.window().width
    drag(qtbot, vp, c, c + QPoint(100, 0), modifier=Qt.KeyboardModifier.ControlModifier)
    fine = canvas.window().width - w1
    assert coarse > 0 and fine > 0
    assert fine == pytest.approx(coarse / 10, rel=0.05)


def test_window_changed_signal_is_live_during_drag(canvas, qtbot):
    canvas.set_image(deep_image(1500, 1500))
    seen = []
    canvas.window_changed.connect(seen.append)
    vp = canvas.viewport()
    c = vp.rect().center()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=c)
    qtbot.mouseMove(vp, c + QPoint(30, 0))
    qtbot.mouseMove(vp, c + QPoint(60, 0))
    assert len(seen) >= 2 and canvas.showing_preview  # preview while dragging a large image
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=c + QPoint(60, 0))
    assert not canvas.showing_preview
    assert canvas.image_item.pixmap().width() == 1500


def test_middle_drag_pans_and_right_drag_zooms(canvas, qtbot):
    canvas.set_image(deep_image())
    vp = canvas.viewport()
    c = vp.rect().center()
    before = canvas.image_to_view(0, 0)
    drag(qtbot, vp, c, c + QPoint(40, 25), button=Qt.MouseButton.MiddleButton)
    after = canvas.image_to_view(0, 0)
    assert after.x() - before.x() == pytest.approx(40, abs=2)
    assert after.y() - before.y() == pytest.approx(25, abs=2)
    zoom = canvas.zoom()
    drag(qtbot, vp, c, c + QPoint(0, -100), button=Qt.MouseButton.RightButton)
    assert canvas.zoom() > zoom * 1.3
    drag(qtbot, vp, c, c + QPoint(0, 200), button=Qt.MouseButton.RightButton)
    assert canvas.zoom() < zoom


def test_wheel_zooms_at_the_cursor(canvas, qtbot):
    canvas.set_image(deep_image())
    vp = canvas.viewport()
    at = QPoint(150, 120)
    scene_before = canvas.mapToScene(at)
    zoom = canvas.zoom()
    canvas.set_zoom(zoom * 2, at=at)
    assert canvas.zoom() == pytest.approx(zoom * 2)
    scene_after = canvas.mapToScene(at)
    assert scene_after.x() == pytest.approx(scene_before.x(), abs=1.5 / canvas.zoom() + 0.5)
    assert scene_after.y() == pytest.approx(scene_before.y(), abs=1.5 / canvas.zoom() + 0.5)
    assert vp is canvas.viewport()


def test_fit_and_zoom_steps(canvas):
    canvas.set_image(deep_image())
    fitted = canvas.zoom()
    canvas.zoom_in()
    assert canvas.zoom() == pytest.approx(fitted * 1.25)
    canvas.zoom_out()
    canvas.zoom_out()
    assert canvas.zoom() < fitted
    canvas.fit()
    assert canvas.zoom() == pytest.approx(fitted)
    corner = canvas.image_to_view(400, 300)
    assert 0 <= corner.x() <= canvas.viewport().width() and 0 <= corner.y() <= canvas.viewport().height()


def _corner_positions(canvas):
    return {name: canvas.image_to_view(x, y) for name, (x, y) in {"tl": (0, 0), "br": (400, 300)}.items()}


def test_rotation_and_flips_change_the_view_only(canvas):
    image = deep_image()
    canvas.set_image(image)
    pixels_before = image.pixels.copy()
    canvas.rotate_right()
    pos = _corner_positions(canvas)
    # Clockwise: the image's top-left corner is now at the top-right of the screen.
    assert pos["tl"].x() > pos["br"].x() and pos["tl"].y() < pos["br"].y()
    assert canvas.rotation() == 90
    canvas.rotate_left()
    canvas.flip_horizontal()
    pos = _corner_positions(canvas)
    assert pos["tl"].x() > pos["br"].x() and pos["tl"].y() < pos["br"].y()
    assert canvas.is_mirrored()
    canvas.flip_vertical()
    pos = _corner_positions(canvas)
    assert pos["tl"].x() > pos["br"].x() and pos["tl"].y() > pos["br"].y()
    assert not canvas.is_mirrored() and canvas.rotation() == 180  # both flips = a half turn
    canvas.reset_view()
    pos = _corner_positions(canvas)
    assert pos["tl"].x() < pos["br"].x() and pos["tl"].y() < pos["br"].y()
    assert np.array_equal(image.pixels, pixels_before)


def test_overlay_follows_zoom_pan_rotation_and_flips(canvas, qtbot):
    image = deep_image()
    canvas.set_image(image)
    heat = np.zeros((30, 40, 3), np.uint8)  # a low-resolution overlay is stretched over the image
    canvas.set_overlay(heat)
    canvas.set_overlay_visible(True)
    image_item, overlay_item = canvas.image_item, canvas.overlay_item
    assert image_item.scene() is overlay_item.scene()
    assert overlay_item.zValue() > image_item.zValue()

    def check():
        assert overlay_item.sceneBoundingRect() == image_item.sceneBoundingRect()
        to_screen = canvas.viewportTransform()
        # Overlay pixel (u, v) covers image pixel (10u, 10v): both land on the same screen point,
        # whatever zoom, pan, rotation or flip the view has.
        for u, v in [(0, 0), (40, 0), (0, 30), (40, 30), (12.35, 7.725), (20, 15)]:
            via_overlay = to_screen.map(overlay_item.mapToScene(QPointF(u, v)))
            via_image = to_screen.map(image_item.mapToScene(QPointF(u * 10, v * 10)))
            assert via_overlay.x() == pytest.approx(via_image.x(), abs=1e-6)
            assert via_overlay.y() == pytest.approx(via_image.y(), abs=1e-6)

    check()
    canvas.set_zoom(3.0, at=QPoint(100, 100))
    check()
    canvas.pan_by(37, -12)
    check()
    canvas.rotate_right()
    check()
    canvas.flip_horizontal()
    check()
    canvas.flip_vertical()
    check()
    # While window/level drags show a preview pixmap, the overlay still matches.
    vp = canvas.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=QPoint(50, 50))
    qtbot.mouseMove(vp, QPoint(90, 60))
    check()
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=QPoint(90, 60))


def test_overlay_opacity_and_visibility(canvas):
    canvas.set_image(deep_image())
    canvas.set_overlay(np.full((10, 10, 3), 200, np.uint8))
    canvas.set_overlay_opacity(0.7)
    assert canvas.overlay_item.opacity() == pytest.approx(0.7)
    canvas.set_overlay_opacity(3)
    assert canvas.overlay_opacity() == 1.0
    canvas.set_overlay_visible(False)
    assert not canvas.overlay_item.isVisible()
    canvas.set_overlay_visible(True)
    assert canvas.overlay_item.isVisible() and canvas.has_overlay()


def test_pixel_value_under_the_cursor_in_stored_units(canvas, qtbot):
    image = deep_image()
    canvas.set_image(image)
    seen = []
    canvas.cursor_moved.connect(seen.append)
    target = canvas.image_to_view(123.5, 45.5).toPoint()
    qtbot.mouseMove(canvas.viewport(), target)
    info = seen[-1]
    assert info is not None
    assert abs(info.x - 123) <= 1 and abs(info.y - 45) <= 1
    assert info.value == image.pixels[info.y, info.x]
    canvas.rotate_right()
    target = canvas.image_to_view(10.5, 250.5).toPoint()
    qtbot.mouseMove(canvas.viewport(), target)
    info = seen[-1]
    assert abs(info.x - 10) <= 1 and abs(info.y - 250) <= 1


def test_monochrome1_is_shown_inverted_and_invert_toggles(canvas):
    pixels = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (10, 1))
    image = xray_from_array(pixels, photometric="MONOCHROME1")
    canvas.set_image(image)
    first = canvas.image_item.pixmap().toImage().pixelColor(0, 0).red()
    assert first == 255  # stored 0 is white in MONOCHROME1
    canvas.set_inverted(True)
    assert canvas.image_item.pixmap().toImage().pixelColor(0, 0).red() == 0


def test_overlay_fades_where_the_model_did_not_look(canvas):
    from inference.overlay import OVERLAY_FADE, heat_alpha
    from viewer.render import overlay_rgba

    heat = np.linspace(0.0, 1.0, 101, dtype=np.float32).reshape(1, 101)
    alpha = heat_alpha(heat)[0]
    lo, hi = OVERLAY_FADE
    assert alpha[0] == 0 and alpha[int(lo * 100)] == 0  # cold: the anatomy stays visible
    assert alpha[int(hi * 100)] == 255 and alpha[-1] == 255
    assert np.all(np.diff(alpha.astype(int)) >= 0)
    rgba = overlay_rgba(heat, "jet")
    assert rgba.shape == (1, 101, 4) and np.array_equal(rgba[0, :, 3], alpha)
    canvas.set_image(deep_image())
    canvas.set_overlay(rgba)
    assert canvas.overlay_item.pixmap().hasAlphaChannel()


def _shown_mean(canvas) -> float:
    shown = canvas.image_item.pixmap().toImage().convertToFormat(QImage.Format.Format_Grayscale8)
    data = np.frombuffer(shown.constBits(), np.uint8, shown.sizeInBytes()).reshape(shown.height(), -1)
    return float(data[:, : shown.width()].mean())


@pytest.mark.parametrize(
    ("photometric", "user_invert"), [("MONOCHROME2", False), ("MONOCHROME1", False), ("MONOCHROME2", True)]
)
def test_window_drag_does_the_same_visible_thing_on_every_film(canvas, qtbot, photometric, user_invert):
    """Issue 14: dragging down darkens and up brightens the screen, whatever the photometric or the invert."""
    pixels = np.tile(np.linspace(0, 4095, 400).astype(np.uint16), (300, 1))
    canvas.set_image(xray_from_array(pixels, bits_stored=12, photometric=photometric), invert=user_invert)
    canvas.set_window(Window(center=2048, width=4096))
    vp = canvas.viewport()
    c = vp.rect().center()
    before = _shown_mean(canvas)
    drag(qtbot, vp, c, c + QPoint(0, 100))
    darker = _shown_mean(canvas)
    assert darker < before - 10
    drag(qtbot, vp, c, c + QPoint(0, -200))
    assert _shown_mean(canvas) > before + 10


def _bright_near(canvas, point: QPointF, radius: int = 14) -> int:
    grab = canvas.viewport().grab().toImage().convertToFormat(QImage.Format.Format_Grayscale8)
    x0, y0 = int(point.x()), int(point.y())
    return max(
        grab.pixelColor(x, y).red()
        for x in range(max(0, x0 - 2), min(grab.width(), x0 + radius))
        for y in range(max(0, y0 - radius), min(grab.height(), y0 + 3))
    )


def _pa_film(orientation: str | None):
    tags = (("(0020,0020)", "PatientOrientation", "CS", orientation),) if orientation else ()
    return xray_from_array(np.zeros((300, 400), np.uint8), fmt="DICOM", tags=tags)


def test_orientation_markers_follow_rotation_and_flips_and_stay_on_the_edges(canvas):
    canvas.set_image(_pa_film("L\\F"))
    assert canvas.orientation_markers() == {"right": "L", "left": "R", "bottom": "F", "top": "H"}
    vp = canvas.viewport().rect()
    positions = canvas.marker_positions()
    text, left = positions["left"]
    assert text == "R" and left.x() < vp.left() + 20 and abs(left.y() - vp.center().y()) < 20
    assert positions["bottom"][1].y() > vp.bottom() - 20 and positions["top"][1].y() < vp.top() + 40
    assert _bright_near(canvas, left) > 150  # painted, over a black film
    canvas.set_zoom(7.0)  # zoom does not move or scale the markers
    assert canvas.marker_positions()["left"][1] == left
    canvas.rotate_right()
    assert canvas.orientation_markers() == {"right": "H", "left": "F", "bottom": "L", "top": "R"}
    canvas.reset_view()
    canvas.flip_horizontal()
    assert canvas.orientation_markers()["right"] == "R" and canvas.orientation_markers()["left"] == "L"


def test_no_orientation_marker_when_the_file_does_not_state_it(canvas):
    canvas.set_image(_pa_film(None))
    assert canvas.orientation_markers() == {} and canvas.marker_positions() == {}
    vp = canvas.viewport().rect()
    assert _bright_near(canvas, QPointF(vp.left() + 8, vp.center().y())) < 40


class StubTool:
    """The canvas's tool hook contract: left presses first (True = taken), moves, release, paint."""

    def __init__(self, take: bool) -> None:
        self.take = take
        self.calls: list[str] = []

    def press(self, event) -> bool:
        self.calls.append("press")
        return self.take

    def move(self, event) -> None:
        self.calls.append("move")

    def release(self, event) -> None:
        self.calls.append("release")

    def double_click(self, event) -> bool:
        return False

    def paint(self, painter) -> None:
        self.calls.append("paint")

    def hover_left(self) -> None:
        pass

    def restore_cursor(self) -> None:
        self.calls.append("cursor")


@pytest.mark.parametrize("take", [True, False])
def test_a_tool_gets_left_presses_first_and_what_it_leaves_is_window_level(canvas, qtbot, take):
    canvas.set_image(deep_image())
    tool = StubTool(take)
    canvas.tool = tool
    before = canvas.window()
    vp = canvas.viewport()
    centre = vp.rect().center()
    drag(qtbot, vp, centre, centre + QPoint(80, 40))
    assert tool.calls[0] == "press" and "move" in tool.calls
    assert ("release" in tool.calls) == take  # a press the tool took ends with the tool
    assert (canvas.window() == before) == take  # else the drag is window/level as always
    vp.grab()
    assert "paint" in tool.calls  # marks are painted at every paint, over the image
    drag(qtbot, vp, centre, centre + QPoint(30, 0), button=Qt.MouseButton.MiddleButton)
    assert tool.calls[-1] == "cursor"  # after a pan the tool's cursor comes back


def test_corner_text_of_a_narrow_view_is_never_drawn_over_itself(canvas):
    """In compare each side is narrow: "Pixel spacing not stated: lengths in px" was drawn over
    "Research use only", the file name over the AI result (QA screenshot under Xvfb)."""
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QFont, QFontMetrics

    canvas.set_image(deep_image())
    canvas.set_annotations(
        {
            "top_left": ["Covid0000", "14_nih-cxr14-gcp_DX_chest_8bit_ImplicitLE.dcm", "DICOM · 8-bit · DX"],
            "top_right": ["No Finding", "DX", "AI: COVID-19 66.4%"],
            "bottom_left": ["C 127.5  W 255", "Zoom 30%", "Pixel spacing not stated: lengths in px"],
            "bottom_right": ["Research use only"],
        }
    )
    metrics = QFontMetrics(QFont(canvas.font()))
    for width in (900, 300):
        canvas.resize(width, 500)
        boxes = [
            QRectF(p.x(), p.y() - metrics.ascent(), metrics.horizontalAdvance(t), metrics.height())
            for t, p in canvas.corner_positions(metrics)
        ]
        assert len(boxes) == 10
        for i, a in enumerate(boxes):
            assert all(not a.intersects(b) for b in boxes[i + 1 :]), width
