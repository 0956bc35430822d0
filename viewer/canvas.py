"""The image canvas: one QGraphicsScene holding the X-ray and, stacked on it, the Grad-CAM overlay.

Both pixmap items live in scene coordinates equal to original image pixels, and every view
operation (zoom, pan, rotation, flips) is a transform of the *view*. The overlay therefore
follows the image exactly whatever the user does, and the pixel under the cursor is simply
the scene position rounded down.

Mouse bindings follow Weasis/OHIF: left drag window/level, middle drag pan, right drag zoom,
wheel zoom at the cursor, a right click without a drag opens the context menu. A measuring
tool (``tool``, a :class:`viewer.tools.ToolController`) gets left presses first and paints the
reader's marks over the image; what it does not take stays window/level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QEvent, QMimeData, QPoint, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QMouseEvent, QPainter, QPixmap, QTransform, QWheelEvent
from PySide6.QtWidgets import QFrame, QGraphicsPixmapItem, QGraphicsScene, QGraphicsView, QMenu, QWidget

from inference.image import Window, XRayImage
from inference.orientation import edge_markers, patient_orientation
from viewer.qt_compat import emit
from viewer.render import Renderer, downsample

__all__ = ["ImageCanvas", "PixelInfo", "gray_to_pixmap", "rgb_to_pixmap", "mime_paths", "accept_file_drag"]

ZOOM_MIN, ZOOM_MAX = 0.02, 40.0
ZOOM_STEP = 1.25
CLICK_SLOP = 4  # pixels a right click may move and still count as a click (context menu)
WL_PIXELS_PER_WIDTH = 500.0  # dragging this far changes the window by one default-window width
FINE_FACTOR = 0.1
OVERLAY_SIDE = 1024  # the heat map is smooth; a display copy at this size is plenty

# Orientation of the view in screen space as a 2x2 signed permutation matrix ((a, b), (c, d)):
# x' = a x + b y, y' = c x + d y with y pointing down. Rotations and flips multiply on the left,
# so each acts on the image as currently shown: "flip horizontal" always mirrors left-right on screen.
_IDENTITY = ((1, 0), (0, 1))
_ROT_CW = ((0, -1), (1, 0))
_ROT_CCW = ((0, 1), (-1, 0))
_FLIP_H = ((-1, 0), (0, 1))
_FLIP_V = ((1, 0), (0, -1))


def _matmul(a: tuple, b: tuple) -> tuple:
    return tuple(tuple(sum(a[i][k] * b[k][j] for k in range(2)) for j in range(2)) for i in range(2))


@dataclass(frozen=True)
class PixelInfo:
    x: int
    y: int
    value: float


def gray_to_pixmap(gray: np.ndarray) -> QPixmap:
    gray = np.ascontiguousarray(gray, dtype=np.uint8)
    h, w = gray.shape
    image = QImage(gray.data, w, h, gray.strides[0], QImage.Format.Format_Grayscale8)
    return QPixmap.fromImage(image)  # copies the pixels, so ``gray`` may be freed


def rgb_to_pixmap(rgb: np.ndarray) -> QPixmap:
    """(H, W, 3) RGB or (H, W, 4) RGBA uint8 to a pixmap."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    fmt = QImage.Format.Format_RGBA8888 if rgb.shape[2] == 4 else QImage.Format.Format_RGB888
    image = QImage(rgb.data, w, h, rgb.strides[0], fmt)
    return QPixmap.fromImage(image)


def accept_file_drag(event) -> None:
    """Accept a drag that carries local files or folders, refuse anything else (text, URLs)."""
    if mime_paths(event.mimeData()):
        event.acceptProposedAction()
    else:
        event.ignore()


def mime_paths(mime: QMimeData) -> list[str]:
    """Local files and folders carried by a drag (URLs that are not local files are ignored)."""
    if not mime.hasUrls():
        return []
    return [url.toLocalFile() for url in mime.urls() if url.isLocalFile() and url.toLocalFile()]


class ImageCanvas(QGraphicsView):
    """Shows one :class:`XRayImage` with window/level, zoom, pan, rotation, flips and an overlay."""

    window_changed = Signal(object)  # Window, live while dragging
    view_changed = Signal()  # zoom, pan, rotation or flip changed
    cursor_moved = Signal(object)  # PixelInfo, or None when the cursor leaves the image
    files_dropped = Signal(list)  # local paths dropped on the canvas

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._scene = QGraphicsScene(self)
        self.setScene(self._scene)
        self._image_item = QGraphicsPixmapItem()
        self._image_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self._image_item.setShapeMode(QGraphicsPixmapItem.ShapeMode.BoundingRectShape)
        self._overlay_item = QGraphicsPixmapItem()
        self._overlay_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self._overlay_item.setZValue(1.0)
        self._overlay_item.setVisible(False)
        self._overlay_item.setOpacity(0.45)
        self._scene.addItem(self._image_item)
        self._scene.addItem(self._overlay_item)

        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setBackgroundBrush(QColor("#000000"))
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.setDragMode(QGraphicsView.DragMode.NoDrag)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.FullViewportUpdate)
        self.setMouseTracking(True)
        self.viewport().setMouseTracking(True)
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(200, 200)

        self._image: XRayImage | None = None
        self._renderer: Renderer | None = None
        self._window: Window | None = None
        self._base_width = 1.0  # the default window's width: sets the drag sensitivity
        self._invert = False
        self._zoom = 1.0
        self._orientation = _IDENTITY
        self._fit_mode = True  # refit on resize until the user zooms or pans
        self._drag_button: Qt.MouseButton | None = None
        self._drag_start = QPoint()
        self._drag_last = QPoint()
        self._drag_zoom = 1.0
        self._drag_anchor_scene = QPointF()
        self._drag_moved = False
        self._previewing = False
        self._mouse_pos: QPoint | None = None  # where the cursor is over the viewport; None when outside
        self._annotations: dict[str, list[str]] = {}
        self._corner_text_visible = True
        self._patient_orientation: tuple[str, str] | None = None
        self.placeholder = "Drop chest X-rays or folders here, or press Ctrl+O"
        self.tool = None  # viewer.tools.ToolController: left presses first, marks painted on top
        self._tool_drag = False

    # -- items, for callers and tests --------------------------------------------------------
    @property
    def image_item(self) -> QGraphicsPixmapItem:
        return self._image_item

    @property
    def overlay_item(self) -> QGraphicsPixmapItem:
        return self._overlay_item

    @property
    def image(self) -> XRayImage | None:
        return self._image

    # -- image and window ----------------------------------------------------------------------
    def set_image(
        self,
        image: XRayImage | None,
        window: Window | None = None,
        invert: bool = False,
        default_window: Window | None = None,
        renderer: Renderer | None = None,
    ) -> None:
        """Show ``image`` (``None`` clears) through ``window``; the view is fitted.

        ``default_window`` (it sets the drag sensitivity) and ``renderer`` may come prepared
        from the loader thread; otherwise they are computed here.
        """
        self._image = image
        self._drag_button = None
        self._tool_drag = False
        self._previewing = False
        self.clear_overlay()
        if image is None:
            self._renderer = None
            self._patient_orientation = None
            self._window = None
            self._image_item.setPixmap(QPixmap())
            self._scene.setSceneRect(QRectF(-1000, -1000, 2000, 2000))
            self.viewport().update()
            emit(self.cursor_moved, None)
            return
        from inference.display import initial_window  # cheap; keeps the canvas usable alone

        self._renderer = renderer if renderer is not None else Renderer(image.pixels)
        self._patient_orientation = patient_orientation(image.meta)
        base = default_window or initial_window(image)
        self._window = window or base
        self._base_width = max(abs(base.width), 1e-3)
        self._invert = bool(invert)
        h, w = image.shape
        margin = 4.0 * max(h, w)
        # A scene much larger than the image lets the user pan it anywhere, even off-centre.
        self._scene.setSceneRect(QRectF(-margin, -margin, w + 2 * margin, h + 2 * margin))
        self._render(preview=False)
        self.reset_view()  # also gives the readout the pixel now under the cursor

    def window(self) -> Window | None:  # noqa: A003 - the radiological "window", not a QWidget window
        return self._window

    def set_window(self, window: Window) -> None:
        if self._image is None:
            return
        self._window = window
        self._render(preview=False)
        emit(self.window_changed, window)

    def inverted(self) -> bool:
        return self._invert

    def set_inverted(self, invert: bool) -> None:
        if self._image is None or bool(invert) == self._invert:
            self._invert = bool(invert)
            return
        self._invert = bool(invert)
        self._render(preview=False)
        emit(self.window_changed, self._window)

    def _min_width(self) -> float:
        integer = self._image is not None and np.issubdtype(self._image.pixels.dtype, np.integer)
        return 1.0 if integer else 1e-3

    def _display_invert(self) -> bool:
        # The user's toggle on top of the photometric interpretation (MONOCHROME1 shown inverted).
        return self._invert != (self._image is not None and self._image.meta.inverted)

    def _render(self, preview: bool) -> None:
        if self._renderer is None or self._window is None or self._image is None:
            return
        gray = self._renderer.render(self._window, self._display_invert(), preview=preview)
        self._image_item.setPixmap(gray_to_pixmap(gray))
        h, w = self._image.shape
        # A preview pixmap is smaller than the image: scale it to cover exactly the same scene rect.
        self._image_item.setTransform(QTransform.fromScale(w / gray.shape[1], h / gray.shape[0]))
        self._previewing = preview
        self.viewport().update()

    @property
    def showing_preview(self) -> bool:
        return self._previewing

    # -- overlay ------------------------------------------------------------------------------------
    def set_overlay(self, rgb: np.ndarray | None) -> None:
        """Show ``rgb`` (H x W x 3 or 4 uint8, any resolution) stretched over the whole image."""
        if rgb is None or self._image is None:
            self.clear_overlay()
            return
        if max(rgb.shape[:2]) > OVERLAY_SIDE:
            rgb, _ = downsample(rgb, OVERLAY_SIDE)
        self._overlay_item.setPixmap(rgb_to_pixmap(rgb))
        h, w = self._image.shape
        self._overlay_item.setTransform(QTransform.fromScale(w / rgb.shape[1], h / rgb.shape[0]))
        self.viewport().update()

    def clear_overlay(self) -> None:
        self._overlay_item.setPixmap(QPixmap())
        self.viewport().update()

    def has_overlay(self) -> bool:
        return not self._overlay_item.pixmap().isNull()

    def set_overlay_visible(self, visible: bool) -> None:
        self._overlay_item.setVisible(bool(visible))

    def overlay_visible(self) -> bool:
        return self._overlay_item.isVisible()

    def set_overlay_opacity(self, opacity: float) -> None:
        self._overlay_item.setOpacity(min(1.0, max(0.0, float(opacity))))

    def overlay_opacity(self) -> float:
        return float(self._overlay_item.opacity())

    # -- view: zoom, pan, rotation, flips --------------------------------------------------------
    def zoom(self) -> float:
        """Screen pixels per image pixel."""
        return self._zoom

    def orientation(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return self._orientation

    def rotation(self) -> int:
        """Rotation of the view in degrees clockwise (0, 90, 180, 270), flips aside."""
        (a, b), (c, d) = self._orientation
        det = a * d - b * c  # -1 when the view is mirrored
        angle = math.degrees(math.atan2(c, a)) if det > 0 else math.degrees(math.atan2(-c, -a))
        return int(round(angle)) % 360

    def is_mirrored(self) -> bool:
        (a, b), (c, d) = self._orientation
        return a * d - b * c < 0

    def _apply_transform(self, keep: QPointF | None = None, at: QPoint | None = None) -> None:
        """Set zoom x orientation; keep scene point ``keep`` under view point ``at`` (default: centre)."""
        if at is None:
            at = self.viewport().rect().center()
        if keep is None:
            keep = self.mapToScene(at)
        (a, b), (c, d) = self._orientation
        z = self._zoom
        self.setTransform(QTransform(a * z, c * z, b * z, d * z, 0.0, 0.0))
        self._scroll_to(keep, at)
        emit(self.view_changed)
        self.viewport().update()
        self._refresh_cursor()

    def _scroll_to(self, scene_point: QPointF, view_point: QPoint) -> None:
        delta = self.mapFromScene(scene_point) - view_point
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() + delta.x())
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() + delta.y())

    def set_zoom(self, zoom: float, at: QPoint | None = None) -> None:
        """Zoom to ``zoom`` keeping the image point under view point ``at`` (default: centre) still."""
        self._fit_mode = False
        self._zoom = min(ZOOM_MAX, max(ZOOM_MIN, float(zoom)))
        at = at if at is not None else self.viewport().rect().center()
        self._apply_transform(keep=self.mapToScene(at), at=at)

    def zoom_in(self) -> None:
        self.set_zoom(self._zoom * ZOOM_STEP)

    def zoom_out(self) -> None:
        self.set_zoom(self._zoom / ZOOM_STEP)

    def fit(self) -> None:
        """Whole image in the viewport, centred; stays fitted when the window is resized."""
        if self._image is None:
            return
        h, w = self._image.shape
        (a, b), _ = self._orientation
        shown_w, shown_h = (w, h) if a != 0 else (h, w)
        vp = self.viewport().rect()
        zoom = min(vp.width() / shown_w, vp.height() / shown_h) * 0.98
        self._zoom = min(ZOOM_MAX, max(ZOOM_MIN, zoom))
        self._fit_mode = True
        self._apply_transform(keep=QPointF(w / 2.0, h / 2.0))

    def reset_view(self) -> None:
        """Esc: no rotation or flip, fitted (the window is reset by the caller if wanted)."""
        self._orientation = _IDENTITY
        self.fit()

    def _reorient(self, op: tuple) -> None:
        self._orientation = _matmul(op, self._orientation)
        if self._fit_mode:
            self.fit()
        else:
            self._apply_transform()

    def rotate_right(self) -> None:
        self._reorient(_ROT_CW)

    def rotate_left(self) -> None:
        self._reorient(_ROT_CCW)

    def flip_horizontal(self) -> None:
        self._reorient(_FLIP_H)

    def flip_vertical(self) -> None:
        self._reorient(_FLIP_V)

    def pan_by(self, dx: int, dy: int) -> None:
        """Move the image by (dx, dy) screen pixels."""
        self._fit_mode = False
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - dx)
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() - dy)
        emit(self.view_changed)
        self._refresh_cursor()

    def image_to_view(self, x: float, y: float) -> QPointF:
        """Where image pixel coordinate (x, y) appears in the viewport."""
        return QPointF(self.mapFromScene(QPointF(x, y)))

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        if self._fit_mode and self._image is not None:
            self.fit()

    # -- corner annotations ---------------------------------------------------------------------
    def set_annotations(self, corners: dict[str, list[str]]) -> None:
        """Text in the viewport corners: keys ``top_left``, ``top_right``, ``bottom_left``, ``bottom_right``."""
        self._annotations = {k: list(v) for k, v in corners.items()}
        self.viewport().update()

    def set_corner_text_visible(self, visible: bool) -> None:
        """Show or hide all the corner text (the orientation markers stay: they are never misleading)."""
        self._corner_text_visible = bool(visible)
        self.viewport().update()

    def corner_text_visible(self) -> bool:
        return self._corner_text_visible

    def annotations(self) -> dict[str, list[str]]:
        """The corner text as set (shown only while :meth:`corner_text_visible`)."""
        return {k: list(v) for k, v in self._annotations.items()}

    def orientation_markers(self) -> dict[str, str]:
        """Patient-direction letters at the ``left``/``right``/``top``/``bottom`` viewport edges for the
        current rotation and flips; empty when the file does not state its Patient Orientation."""
        if self._image is None:
            return {}
        return edge_markers(self._patient_orientation, self._orientation)

    def marker_positions(self, metrics: QFontMetrics | None = None) -> dict[str, tuple[str, QPointF]]:
        """Where each orientation marker is drawn (text baseline origin, viewport pixels): centred on
        its edge, independent of zoom and pan."""
        metrics = metrics or QFontMetrics(self._marker_font())
        vp = self.viewport().rect()
        pad = 8
        out: dict[str, tuple[str, QPointF]] = {}
        for edge, text in self.orientation_markers().items():
            w, ascent = metrics.horizontalAdvance(text), metrics.ascent()
            cx, cy = vp.center().x() - w / 2.0, vp.center().y() + ascent / 2.0
            point = {
                "left": QPointF(vp.left() + pad, cy),
                "right": QPointF(vp.right() - pad - w, cy),
                "top": QPointF(cx, vp.top() + pad + ascent),
                "bottom": QPointF(cx, vp.bottom() - pad - metrics.descent()),
            }[edge]
            out[edge] = (text, point)
        return out

    def _marker_font(self) -> QFont:
        font = QFont(self.font())
        font.setPointSizeF(max(font.pointSizeF(), 8.0) * 1.4)
        font.setBold(True)
        return font

    def _draw_shadowed(self, painter: QPainter, point: QPointF, text: str) -> None:
        painter.setPen(QColor(0, 0, 0, 200))  # a shadow keeps text readable on bright bone
        painter.drawText(QPointF(point.x() + 1, point.y() + 1), text)
        painter.setPen(QColor("#e6edf5"))
        painter.drawText(point, text)

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:  # noqa: N802 - Qt override
        painter.save()
        painter.resetTransform()
        vp = self.viewport().rect()
        if self._image is None:
            painter.setPen(QColor("#6f7c8c"))
            font = QFont(painter.font())
            font.setPointSizeF(font.pointSizeF() * 1.3)
            painter.setFont(font)
            painter.drawText(vp, Qt.AlignmentFlag.AlignCenter, self.placeholder)
            painter.restore()
            return
        if self.tool is not None:  # the reader's marks, mapped through the view at every paint
            self.tool.paint(painter)
        # Painted in viewport coordinates, so markers and text stay put and unscaled at any zoom.
        painter.setFont(self._marker_font())
        for text, point in self.marker_positions(painter.fontMetrics()).values():
            self._draw_shadowed(painter, point, text)
        painter.setFont(QFont(self.font()))
        if self._corner_text_visible:
            for text, point in self.corner_positions(painter.fontMetrics()):
                self._draw_shadowed(painter, point, text)
        painter.restore()

    def corner_positions(self, metrics: QFontMetrics | None = None) -> list[tuple[str, QPointF]]:
        """Where each corner line is drawn (text baseline origin, viewport pixels). When a right
        corner's line would run into the left one's on the same row (a narrow viewport, as in
        compare), the right corner moves past the left block instead of being drawn over it."""
        metrics = metrics or QFontMetrics(QFont(self.font()))
        vp = self.viewport().rect()
        line, pad = metrics.height(), 10
        room = vp.width() - 2 * pad - metrics.horizontalAdvance("  ")
        shift: dict[str, int] = {}
        for edge in ("top", "bottom"):
            left, right = self._annotations.get(f"{edge}_left", []), self._annotations.get(f"{edge}_right", [])
            pairs = zip(left, right) if edge == "top" else zip(reversed(left), reversed(right))
            clash = any(metrics.horizontalAdvance(a) + metrics.horizontalAdvance(b) > room for a, b in pairs)
            shift[f"{edge}_right"] = len(left) if clash else 0
        out: list[tuple[str, QPointF]] = []
        for corner, lines in self._annotations.items():
            right, bottom = corner.endswith("right"), corner.startswith("bottom")
            for i, text in enumerate(lines):
                row = ((len(lines) - 1 - i) if bottom else i) + shift.get(corner, 0)
                y = vp.bottom() - pad - row * line - metrics.descent() if bottom else vp.top() + pad + (row + 1) * line
                x = vp.right() - pad - metrics.horizontalAdvance(text) if right else vp.left() + pad
                out.append((text, QPointF(x, y)))
        return out

    # -- mouse ----------------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if self._image is None or self._drag_button is not None:
            super().mousePressEvent(event)
            return
        button = event.button()
        if button not in (Qt.MouseButton.LeftButton, Qt.MouseButton.MiddleButton, Qt.MouseButton.RightButton):
            super().mousePressEvent(event)
            return
        self._tool_drag = False  # a release lost to a dialog the tool opened must not linger
        if button == Qt.MouseButton.LeftButton and self.tool is not None and self.tool.press(event):
            self._tool_drag = True
            event.accept()
            return
        pos = event.position().toPoint()
        self._drag_button = button
        self._drag_start = pos
        self._drag_last = pos
        self._drag_moved = False
        self._drag_zoom = self._zoom
        self._drag_anchor_scene = self.mapToScene(pos)
        if button == Qt.MouseButton.MiddleButton:
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        pos = event.position().toPoint()
        self._mouse_pos = pos
        self._emit_cursor(pos)
        if self.tool is not None and self._image is not None:
            self.tool.move(event)
            if self._tool_drag:
                event.accept()
                return
        if self._drag_button is None or self._image is None:
            super().mouseMoveEvent(event)
            return
        delta = pos - self._drag_start
        if abs(delta.x()) + abs(delta.y()) >= CLICK_SLOP:
            self._drag_moved = True
        if self._drag_button == Qt.MouseButton.LeftButton and self._window is not None:
            # Incremental, so pressing or releasing Ctrl mid-drag changes the speed without a jump.
            fine = bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
            step = self._base_width / WL_PIXELS_PER_WIDTH * (FINE_FACTOR if fine else 1.0)
            step_delta = pos - self._drag_last
            if step_delta.x() or step_delta.y():
                width = max(self._window.width + step_delta.x() * step, self._min_width())
                # Down always darkens what is on screen: on a display shown inverted (MONOCHROME1,
                # or the user's invert) a darker picture means a lower centre, not a higher one.
                sign = -1.0 if self._display_invert() else 1.0
                center = self._window.center + sign * step_delta.y() * step
                self._window = Window(center=center, width=width, source="user")
                self._render(preview=True)
                emit(self.window_changed, self._window)
        elif self._drag_button == Qt.MouseButton.MiddleButton:
            step_delta = pos - self._drag_last
            self.pan_by(step_delta.x(), step_delta.y())
        elif self._drag_button == Qt.MouseButton.RightButton and self._drag_moved:
            # Up zooms in; a 200-pixel drag doubles or halves the zoom.
            factor = 2.0 ** (-delta.y() / 200.0)
            self._fit_mode = False
            self._zoom = min(ZOOM_MAX, max(ZOOM_MIN, self._drag_zoom * factor))
            self._apply_transform(keep=self._drag_anchor_scene, at=self._drag_start)
        self._drag_last = pos
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if self._tool_drag and event.button() == Qt.MouseButton.LeftButton:
            self._tool_drag = False
            self.tool.release(event)
            event.accept()
            return
        if self._drag_button is None or event.button() != self._drag_button:
            super().mouseReleaseEvent(event)
            return
        button, moved = self._drag_button, self._drag_moved
        self._drag_button = None
        self.viewport().unsetCursor()
        if self.tool is not None:
            self.tool.restore_cursor()  # a drawing tool's cross hair after a pan
        if button == Qt.MouseButton.LeftButton and self._previewing:
            self._render(preview=False)  # full resolution once the drag ends
            emit(self.window_changed, self._window)
        elif button == Qt.MouseButton.RightButton and not moved and self.actions():
            QMenu.exec(self.actions(), event.globalPosition().toPoint(), None, self)
        event.accept()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if event.button() == Qt.MouseButton.LeftButton and self.tool is not None and self.tool.double_click(event):
            self._tool_drag = True  # its release belongs to the tool too
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 - Qt override
        if self._image is None:
            return
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.set_zoom(self._zoom * (1.15**steps), at=event.position().toPoint())
        event.accept()

    def contextMenuEvent(self, event) -> None:  # noqa: N802 - the right-click menu is opened on release
        event.accept()

    def _emit_cursor(self, pos: QPoint) -> None:
        if self._image is None:
            return
        scene = self.mapToScene(pos)
        x, y = math.floor(scene.x()), math.floor(scene.y())
        h, w = self._image.shape
        if 0 <= x < w and 0 <= y < h:
            emit(self.cursor_moved, PixelInfo(x, y, float(self._image.pixels[y, x])))
        else:
            emit(self.cursor_moved, None)

    def _refresh_cursor(self) -> None:
        """The image or the view changed under a still cursor (keys, zoom, another film): the
        readout follows, so it never shows a pixel of the previous film or view."""
        if self._mouse_pos is not None and self._image is not None:
            self._emit_cursor(self._mouse_pos)
        else:
            emit(self.cursor_moved, None)

    def leaveEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt override
        self._mouse_pos = None
        if self.tool is not None:
            self.tool.hover_left()
        emit(self.cursor_moved, None)
        super().leaveEvent(event)

    # -- drag and drop of files ------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt override
        accept_file_drag(event)

    def dragMoveEvent(self, event) -> None:  # noqa: N802 - Qt override
        accept_file_drag(event)

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt override
        paths = mime_paths(event.mimeData())
        if paths:
            event.acceptProposedAction()
            emit(self.files_dropped, paths)
        else:
            event.ignore()
