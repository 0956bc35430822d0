"""Drawing the reader's marks, the mark being drawn and the loupe over the canvas (viewport coordinates).

Every point is mapped from image coordinates through the canvas's view transform at each paint
(:meth:`viewer.tools.ToolController.to_view`), so the marks stay on the anatomy under zoom, pan,
rotation and flips. Shapes come from :func:`inference.export.marks.shapes` and are drawn as the
exports burn them (plain lines in the mark colour, text outlined in black), so the screen and a
PNG, PDF or Secondary Capture show the same thing. That module is imported at the first mark
painted, not at start-up (the exports package is heavy); the inference thread has usually
imported it by then.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QPainterPath, QPen, QTransform

from inference.annotations import Annotation
from viewer.tools import DRAFT_RGB, HANDLE_PX, LOUPE_FACTOR, LOUPE_RADIUS, MARK_RGB, SELECTED_RGB, TOOLS

if TYPE_CHECKING:
    from viewer.canvas import ImageCanvas
    from viewer.tools import ToolController

__all__ = ["paint_tools", "paint_loupe"]


def paint_tools(tools: ToolController, painter: QPainter) -> None:
    """Draw the marks (viewport coordinates, the painter reset to them), the draft and the loupe."""
    if tools.current() is None or tools.canvas.image is None:
        return
    marks = tools.marks()
    if marks or tools.draft:
        from inference.export.marks import shapes  # one geometry with the exports (lazy: not at start-up)

        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        for mark in marks:
            # The exports' colour, selected or not (the handles show the selection).
            paint_mark(tools, painter, mark, shapes(mark), MARK_RGB)
            if mark.id == tools.selected:
                paint_handles(tools, painter, mark)
        paint_draft(tools, painter, shapes)
        painter.restore()
    if tools.loupe and tools.hover is not None:
        paint_loupe(tools.canvas, painter, tools.hover)


def pen(rgb: tuple[int, int, int], width: float = 2.0) -> QPen:
    result = QPen(QColor(*rgb), width)
    result.setCapStyle(Qt.PenCapStyle.RoundCap)
    result.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
    return result


def paint_mark(
    tools: ToolController, painter: QPainter, mark: Annotation, mark_shapes: list, rgb: tuple[int, int, int]
) -> None:
    # Drawn as the exports draw them (inference.export.marks.burn_marks): plain lines in the
    # mark colour, the text outlined in black; a text mark is its text alone.
    painter.setPen(pen(rgb))
    painter.setBrush(Qt.BrushStyle.NoBrush)
    for shape in mark_shapes:
        pts = [tools.to_view(x, y) for x, y in shape.points]
        if shape.kind == "ellipse":
            xs, ys = [p.x() for p in pts], [p.y() for p in pts]
            painter.drawEllipse(QRectF(min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)))
        else:
            painter.drawPolyline(pts)
    paint_labels(tools, painter, tools.labels(mark), rgb)


def paint_labels(
    tools: ToolController, painter: QPainter, labels: list[tuple[QPointF, str]], rgb: tuple[int, int, int]
) -> None:
    font = tools.label_font()
    for anchor, text in labels:
        path = QPainterPath()
        path.addText(anchor, font, text)
        painter.strokePath(path, QPen(QColor(0, 0, 0, 220), 3.0))  # legible on bone and on air
        painter.fillPath(path, QBrush(QColor(*rgb)))


def paint_handles(tools: ToolController, painter: QPainter, mark: Annotation) -> None:
    painter.setPen(pen((0, 0, 0), 1.0))
    painter.setBrush(QColor(*SELECTED_RGB))
    for x, y in mark.points:
        v = tools.to_view(x, y)
        painter.drawRect(QRectF(v.x() - HANDLE_PX, v.y() - HANDLE_PX, 2 * HANDLE_PX, 2 * HANDLE_PX))


def paint_draft(tools: ToolController, painter: QPainter, shapes: Callable[[Annotation], list]) -> None:
    if not tools.draft:
        return
    draft = tools.draft_annotation()
    if draft is not None:
        paint_mark(tools, painter, draft, shapes(draft), DRAFT_RGB)
        return
    kind = TOOLS[tools.tool] or ""
    points = [*tools.draft, tools.cursor] if tools.cursor is not None else list(tools.draft)
    pairs = [points[:2], points[2:]] if kind in ("cobb", "ctr") else [points]
    painter.setPen(pen(DRAFT_RGB))
    for pair in pairs:
        if len(pair) >= 2:
            painter.drawPolyline([tools.to_view(x, y) for x, y in pair])
    for x, y in tools.draft:
        painter.drawEllipse(tools.to_view(x, y), 3.0, 3.0)


def paint_loupe(canvas: ImageCanvas, painter: QPainter, centre: QPointF) -> None:
    """A circle around the cursor showing the film LOUPE_FACTOR times larger, pixel for pixel."""
    to_centre = QTransform.fromTranslate(-centre.x(), -centre.y())
    zoom = QTransform.fromScale(LOUPE_FACTOR, LOUPE_FACTOR) * QTransform.fromTranslate(centre.x(), centre.y())
    view = canvas.viewportTransform() * to_centre * zoom
    circle = QPainterPath()
    circle.addEllipse(centre, LOUPE_RADIUS, LOUPE_RADIUS)
    painter.save()
    painter.setClipPath(circle)
    painter.fillPath(circle, QColor(0, 0, 0))
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)  # show the pixels
    for item in (canvas.image_item, canvas.overlay_item):
        if item.isVisible() and not item.pixmap().isNull():
            painter.setOpacity(item.opacity())
            painter.setTransform(item.transform() * view)
            painter.drawPixmap(0, 0, item.pixmap())
    painter.restore()
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    painter.setPen(pen((230, 237, 245), 2.0))
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.drawEllipse(centre, LOUPE_RADIUS, LOUPE_RADIUS)
    painter.restore()
