"""Measurement and annotation tools on the canvas: the tool state machine, hit testing and drawing.

The marks themselves belong to :class:`viewer.reads.Reads` (one owner, saved after every
change, undo/redo); this module only turns mouse gestures into ``Reads`` calls and draws what
``Reads`` holds. Every mark is kept in *image* pixel coordinates and drawn through the canvas's
view transform at paint time, so it stays on the anatomy under zoom, pan, rotation and flips;
nothing is cached per film. The geometry is the exports' (:func:`inference.export.marks.shapes`):
a mark lands on the same anatomy on screen and in the PNG, PDF and Secondary Capture.

Gestures (left button):

* a drawing tool places points by click or drag: a press places a point and a drag releases
  the next one, so a distance is one drag or two clicks, an angle a drag and a click, a Cobb
  angle two drags, a CTR two horizontal drags (cardiac width, then inner thoracic width);
* on the selected mark's handles any tool drags that handle; with Select a press on a mark
  selects it and a drag moves it; a press on nothing keeps the canvas's window/level drag.

The canvas calls :meth:`ToolController.press`, ``move``, ``release``, ``double_click`` and
``paint`` (its ``tool`` attribute; the drawing is in :mod:`viewer.mark_painting`); the window
wires actions with :func:`install_tools`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import (
    QActionGroup,
    QFont,
    QFontMetrics,
    QMouseEvent,
    QPainter,
)
from PySide6.QtWidgets import QInputDialog, QLineEdit, QWidget

from inference.annotations import KINDS, Annotation, Measurement, measure
from viewer.events import Event

if TYPE_CHECKING:
    from viewer.canvas import ImageCanvas
    from viewer.document import ImageDocument
    from viewer.reads import Reads

__all__ = ["TOOLS", "KIND_TITLES", "ToolController", "install_tools", "mark_title"]

Point = tuple[float, float]

# Tool id -> the annotation kind it draws (None: select and the loupe draw nothing).
TOOLS: dict[str, str | None] = {
    "select": None,
    "distance": "distance",
    "angle": "angle",
    "cobb": "cobb",
    "rect": "rect",
    "ellipse": "ellipse",
    "arrow": "arrow",
    "text": "text",
    "ctr": "ctr",
}
KIND_TITLES = {
    "distance": "Distance",
    "angle": "Angle",
    "cobb": "Cobb angle",
    "rect": "Rectangle ROI",
    "ellipse": "Ellipse ROI",
    "arrow": "Arrow",
    "text": "Text",
    "ctr": "Cardiothoracic ratio",
}
MARK_RGB = (255, 200, 0)  # the exports' MARK_COLOUR (inference.export.marks), not imported at start-up
SELECTED_RGB = (255, 240, 120)
DRAFT_RGB = (120, 220, 255)
HANDLE_PX = 5  # half-side of a handle square, screen pixels
HIT_PX = 6  # how near (screen pixels) a press must be to a line or handle to take it
CLICK_SLOP = 4
LOUPE_RADIUS = 90
LOUPE_FACTOR = 3.0
_MEASURE_CACHE = 512


def mark_title(annotation: Annotation) -> str:
    return KIND_TITLES.get(annotation.kind, annotation.kind)


def _segment_distance(p: QPointF, a: QPointF, b: QPointF) -> float:
    dx, dy = b.x() - a.x(), b.y() - a.y()
    n = dx * dx + dy * dy
    t = 0.0 if n == 0 else max(0.0, min(1.0, ((p.x() - a.x()) * dx + (p.y() - a.y()) * dy) / n))
    return math.hypot(p.x() - a.x() - t * dx, p.y() - a.y() - t * dy)


def constrained(kind: str, points: list[Point]) -> list[Point]:
    """CTR calipers stay horizontal in image rows: each second point takes its partner's row."""
    if kind != "ctr":
        return points
    out = list(points)
    for i in (1, 3):
        if i < len(out):
            out[i] = (out[i][0], out[i - 1][1])
    return out


class ToolController:
    """The active tool, the selected mark and the gesture in progress, for the current film.

    ``doc()`` gives the film on screen (the session's current document); ``status(text)``
    shows a short message; ``ask_text(title, initial)`` returns the text typed, or None when
    cancelled (a dialog in the app, a function in tests).
    """

    def __init__(
        self,
        canvas: ImageCanvas,
        reads: Reads,
        doc: Callable[[], ImageDocument | None],
        status: Callable[[str], Any] | None = None,
        ask_text: Callable[[str, str], str | None] | None = None,
    ) -> None:
        self.canvas = canvas
        self.reads = reads
        self.doc = doc
        self.status = status or (lambda text: None)
        self.ask_text = ask_text or self._dialog_text
        self.tool = "select"
        self.loupe = False
        self.selected: str | None = None
        self.tool_changed = Event("tool_changed")  # tool id
        self.selection_changed = Event("selection_changed")  # annotation id or None
        self.propose_ctr: Callable[[ImageDocument], None] | None = None  # set by install_tools
        self.draft: list[Point] = []  # points placed so far by a drawing tool
        self.cursor: Point | None = None  # where the next point would go (image coordinates)
        self.hover: QPointF | None = None  # viewport position of the cursor (loupe)
        self._press: QPointF | None = None  # viewport position of the left press being handled
        self._grab: tuple[Annotation, int | None, Point] | None = None  # (original, handle or None = move, start)
        self._preview: Annotation | None = None  # the grabbed mark as dragged, until the release saves it
        self._measures: dict[tuple[int, Annotation], Measurement | None] = {}
        reads.events.annotations_changed.connect(self._annotations_changed)

    # -- state -------------------------------------------------------------------------------
    @property
    def drawing(self) -> bool:
        return bool(self.draft)

    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}")
        self._cancel_gesture()
        self.tool = tool
        self.restore_cursor()
        self.tool_changed.notify(tool)
        if tool == "ctr" and self.propose_ctr is not None and self.current() is not None:
            self.propose_ctr(self.current())
        self.canvas.viewport().update()

    def restore_cursor(self) -> None:
        cursor = Qt.CursorShape.ArrowCursor if self.tool == "select" else Qt.CursorShape.CrossCursor
        self.canvas.viewport().setCursor(cursor)

    def set_loupe(self, on: bool) -> None:
        self.loupe = bool(on)
        self.canvas.viewport().update()

    def select(self, annotation_id: str | None) -> None:
        if annotation_id == self.selected:
            return
        self.selected = annotation_id
        self.selection_changed.notify(annotation_id)
        self.canvas.viewport().update()

    def marks(self) -> list[Annotation]:
        """The current film's marks as drawn now (the one being dragged in its dragged place)."""
        doc = self.current()
        if doc is None:
            return []
        marks = list(self.reads.annotations(doc))
        if self._preview is not None:
            marks = [self._preview if a.id == self._preview.id else a for a in marks]
        return marks

    def measurement(self, annotation: Annotation) -> Measurement | None:
        """What ``annotation`` measures on the film on screen (kept per film: ROIs read many pixels)."""
        image, doc = self.canvas.image, self.current()
        if image is None or doc is None:
            return None
        key = (doc.doc_id, annotation)
        if key not in self._measures:
            if len(self._measures) > _MEASURE_CACHE:
                self._measures.clear()
            self._measures[key] = measure(annotation, image.pixels, image.meta)
        return self._measures[key]

    def label(self, annotation: Annotation) -> str:
        """The text shown beside a mark and in the panel: its own text, then what it measures."""
        m = self.measurement(annotation)
        parts = [annotation.text] if annotation.text else []
        if m is not None:
            parts.append(m.text())
        return " · ".join(parts)

    # -- commands ------------------------------------------------------------------------------
    def escape(self) -> bool:
        """Esc: cancel a drawing in progress, else leave a drawing tool for Select; False when
        there was nothing to cancel (the view is then reset as before)."""
        if self.draft or self._grab is not None:
            self._cancel_gesture()
            self.canvas.viewport().update()
            return True
        if self.tool != "select":
            self.set_tool("select")
            return True
        return False

    def delete_selected(self) -> bool:
        doc = self.current()
        if doc is None or self.selected is None:
            return False
        self.reads.remove_annotation(doc, self.selected)
        self.select(None)
        return True

    def undo(self) -> bool:
        doc = self.current()
        self._cancel_gesture()
        return doc is not None and self.reads.undo(doc)

    def redo(self) -> bool:
        doc = self.current()
        self._cancel_gesture()
        return doc is not None and self.reads.redo(doc)

    def edit_text(self, annotation_id: str | None = None) -> bool:
        """F2 or a double click: type the text of a text mark or the label of any other mark."""
        doc = self.current()
        annotation_id = annotation_id or self.selected
        mark = None if doc is None or annotation_id is None else self.reads.annotation(doc, annotation_id)
        if mark is None:
            return False
        text = self.ask_text(f"{mark_title(mark)} text", mark.text)
        if text is None or text == mark.text or (mark.kind == "text" and not text.strip()):
            return False
        from dataclasses import replace

        self.reads.replace_annotation(doc, replace(mark, text=text))
        return True

    def add(self, annotation: Annotation) -> None:
        """Store a finished mark on the current film and select it (its handles can be dragged at once)."""
        doc = self.current()
        if doc is None:
            return
        self.reads.add_annotation(doc, annotation)
        self.select(annotation.id)

    # -- geometry --------------------------------------------------------------------------------
    def to_view(self, x: float, y: float) -> QPointF:
        """Image point -> viewport point, in floating point (the view transform of the canvas)."""
        return self.canvas.viewportTransform().map(QPointF(x, y))

    def to_image(self, pos: QPointF) -> Point:
        inverse, _ok = self.canvas.viewportTransform().inverted()
        p = inverse.map(QPointF(pos))
        return (p.x(), p.y())

    def _handle_at(self, pos: QPointF) -> tuple[Annotation, int] | None:
        if self.selected is None:
            return None
        mark = next((a for a in self.marks() if a.id == self.selected), None)
        if mark is None:
            return None
        for i, (x, y) in enumerate(mark.points):
            v = self.to_view(x, y)
            if abs(v.x() - pos.x()) <= HIT_PX and abs(v.y() - pos.y()) <= HIT_PX:
                return mark, i
        return None

    def mark_at(self, pos: QPointF) -> Annotation | None:
        """The topmost mark under viewport point ``pos`` (a line within a few pixels, inside an ROI,
        on a label)."""
        for mark in reversed(self.marks()):
            if self._hits(mark, pos):
                return mark
        return None

    def _hits(self, mark: Annotation, pos: QPointF) -> bool:
        pts = [self.to_view(x, y) for x, y in mark.points]
        if mark.kind in ("rect", "ellipse"):
            xs, ys = [p.x() for p in pts], [p.y() for p in pts]
            rect = QRectF(min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)).adjusted(
                -HIT_PX, -HIT_PX, HIT_PX, HIT_PX
            )
            if rect.contains(pos):
                return True
        else:
            pairs = (
                [(0, 1), (2, 3)] if mark.kind in ("cobb", "ctr") else list(zip(range(len(pts) - 1), range(1, len(pts))))
            )
            if any(_segment_distance(pos, pts[i], pts[j]) <= HIT_PX for i, j in pairs):
                return True
            if any(math.hypot(p.x() - pos.x(), p.y() - pos.y()) <= HIT_PX for p in pts):
                return True
        return any(rect.contains(pos) for rect in self._label_rects(mark))

    def label_font(self) -> QFont:
        font = QFont(self.canvas.font())
        font.setBold(True)
        return font

    def _label_rects(self, mark: Annotation) -> list[QRectF]:
        metrics = QFontMetrics(self.label_font())
        out = []
        for anchor, text in self.labels(mark):
            w, h = metrics.horizontalAdvance(text), metrics.height()
            out.append(QRectF(anchor.x(), anchor.y() - metrics.ascent(), w, h).adjusted(-2, -2, 2, 2))
        return out

    def _inside(self, anchor: QPointF, text: str) -> QPointF:
        """A label's origin moved back inside the viewport when it would run off an edge (as the exports do)."""
        metrics = QFontMetrics(self.label_font())
        vp = self.canvas.viewport().rect()
        x = max(4.0, min(anchor.x(), vp.width() - metrics.horizontalAdvance(text) - 4.0))
        y = max(metrics.ascent() + 4.0, min(anchor.y(), vp.height() - metrics.descent() - 4.0))
        return QPointF(x, y)

    def labels(self, mark: Annotation) -> list[tuple[QPointF, str]]:
        """(baseline origin in the viewport, text) of a mark's own text and of its measured value,
        beside the same points as in the exports (the first and the last point)."""
        out = []
        m = self.measurement(mark)
        offset = QPointF(8, -8)
        if mark.text:
            out.append((self._inside(self.to_view(*mark.points[0]) + offset, mark.text), mark.text))
        if m is not None:
            first_used = bool(mark.text) and len(mark.points) == 1
            anchor = self.to_view(*mark.points[-1]) + (QPointF(8, 18) if first_used else offset)
            out.append((self._inside(anchor, m.text()), m.text()))
        return out

    # -- canvas hooks --------------------------------------------------------------------------
    def press(self, event: QMouseEvent) -> bool:
        """A left press on the canvas: True when a tool takes it (else the canvas's window/level)."""
        if self.current() is None or self.canvas.image is None:
            return False
        pos = event.position()
        self._press = QPointF(pos)
        handle = self._handle_at(pos) if not self.draft else None
        if handle is not None:
            mark, index = handle
            self._grab = (mark, index, self.to_image(pos))
            return True
        kind = TOOLS[self.tool]
        if kind is None:  # select
            mark = self.mark_at(pos)
            self.select(mark.id if mark is not None else None)
            if mark is None:
                self._press = None
                return False
            self._grab = (mark, None, self.to_image(pos))
            return True
        point = self.to_image(pos)
        if kind == "text":  # typed on release: no dialog opens in the middle of a click
            return True
        if not self.draft:
            self.select(None)
        self.draft = constrained(kind, [*self.draft, point])
        self.cursor = point
        self._finish_if_complete()
        self.canvas.viewport().update()
        return True

    def move(self, event: QMouseEvent) -> None:
        """Any mouse move over the canvas (with or without a button)."""
        pos = event.position()
        self.hover = QPointF(pos)
        if self._grab is not None and self._press is not None:
            original, index, start = self._grab
            now = self.to_image(pos)
            if index is None:
                self._preview = original.moved(now[0] - start[0], now[1] - start[1])
            else:
                points = list(original.points)
                points[index] = now
                if original.kind == "ctr":  # the caliper stays horizontal: its partner follows the row
                    partner = index ^ 1
                    points[partner] = (points[partner][0], now[1])
                self._preview = Annotation(original.kind, tuple(points), original.text, original.id)
            self.canvas.viewport().update()
        elif self.draft:
            self.cursor = self.to_image(pos)
            self.canvas.viewport().update()
        elif self.loupe:
            self.canvas.viewport().update()

    def release(self, event: QMouseEvent) -> None:
        pos = event.position()
        press, self._press = self._press, None
        moved = press is not None and (pos - press).manhattanLength() >= CLICK_SLOP
        if self._grab is not None:
            preview, self._preview, self._grab = self._preview, None, None
            doc = self.current()
            if moved and preview is not None and doc is not None and not self._off_image(preview):
                self.reads.replace_annotation(doc, preview)
            self.canvas.viewport().update()
            return
        kind = TOOLS[self.tool]
        if kind == "text" and press is not None:
            text = self.ask_text("Text", "")
            if text and text.strip():
                self.add(Annotation("text", (self.to_image(press),), text=text.strip()))
            return
        if kind is not None and self.draft and moved:
            self.draft = constrained(kind, [*self.draft, self.to_image(pos)])
            self._finish_if_complete()
            self.canvas.viewport().update()

    def double_click(self, event: QMouseEvent) -> bool:
        if TOOLS[self.tool] is not None:  # a quick second click of a drawing: one more point
            return self.press(event)
        mark = self.mark_at(event.position())
        if mark is None:
            return False
        self.select(mark.id)
        self.edit_text(mark.id)
        return True

    def hover_left(self) -> None:
        self.hover = None
        if self.loupe:
            self.canvas.viewport().update()

    # -- internals -------------------------------------------------------------------------------
    def current(self) -> ImageDocument | None:
        doc = self.doc()
        return doc if doc is not None and doc.loaded else None

    def _finish_if_complete(self) -> None:
        kind = TOOLS[self.tool]
        if kind is None or len(self.draft) < KINDS[kind]:
            return
        points, self.draft, self.cursor = self.draft[: KINDS[kind]], [], None
        if kind in ("distance", "arrow", "rect", "ellipse") and self._too_small(points):
            return  # a click without a drag: nothing to measure
        annotation = Annotation(kind, tuple(points))
        if not self._off_image(annotation):
            self.add(annotation)

    def _off_image(self, annotation: Annotation) -> bool:
        """An ROI that covers no pixel of the film measures nothing ("mean nan"): refused, with a word why."""
        m = self.measurement(annotation) if annotation.kind in ("rect", "ellipse") else None
        if m is None or m.values.get("area", 0.0) > 0:
            return False
        self.status("The ROI covers no pixel of the image: draw it over the film")
        return True

    def _too_small(self, points: list[Point]) -> bool:
        a, b = (self.to_view(*p) for p in points[:2])
        return (a - b).manhattanLength() < CLICK_SLOP

    def _cancel_gesture(self) -> None:
        self.draft, self.cursor, self._grab, self._preview, self._press = [], None, None, None, None

    def _annotations_changed(self, doc: ImageDocument) -> None:
        current = self.current()
        if current is not doc:
            return
        if self.selected is not None and self.reads.annotation(doc, self.selected) is None:
            self.select(None)
        self.canvas.viewport().update()

    def current_changed(self, _doc: ImageDocument | None = None) -> None:
        """Another film on screen: what was being drawn or selected belonged to the previous one."""
        self._cancel_gesture()
        self._measures.clear()
        self.select(None)

    @staticmethod
    def _dialog_text(title: str, initial: str) -> str | None:
        from PySide6.QtWidgets import QApplication

        parent: QWidget | None = QApplication.activeWindow()
        text, ok = QInputDialog.getText(parent, title, "Text:", QLineEdit.EchoMode.Normal, initial)
        return text if ok else None

    def draft_annotation(self) -> Annotation | None:
        """The mark being drawn with its next point at the cursor, when that completes it (live value)."""
        kind = TOOLS[self.tool]
        if kind is None or not self.draft or self.cursor is None:
            return None
        points = constrained(kind, [*self.draft, self.cursor])
        if len(points) != KINDS[kind]:
            return None
        return Annotation(kind, tuple(points), id="draft")

    # -- painting (viewer/mark_painting.py) -------------------------------------------------------
    def paint(self, painter: QPainter) -> None:
        """Draw the marks (viewport coordinates, the painter reset to them), the draft and the loupe."""
        from viewer.mark_painting import paint_tools

        paint_tools(self, painter)


def install_tools(window: Any) -> ToolController:
    """Give ``window`` (a :class:`viewer.main_window.MainWindow`) its measuring tools: the canvas
    hook, the tool actions (exclusive), Delete, undo/redo, F2, the loupe, Esc that first cancels
    a drawing, the Tools menu and toolbar, the annotation panel and the CTR proposal."""
    from viewer.actions import add_dock, build_tools_menu_and_toolbar
    from viewer.annotation_panel import AnnotationPanel, AnnotationPresenter

    session, a = window.session, window.actions_by_id
    tools = ToolController(
        window.canvas,
        window.reads,
        lambda: session.current,
        status=lambda text: window.statusBar().showMessage(text, 8000),
    )
    window.canvas.tool = tools
    session.events.current_changed.connect(tools.current_changed)

    group = QActionGroup(window)
    group.setExclusive(True)
    for tool in TOOLS:
        action = a[f"tool_{tool}"]
        action.setCheckable(True)
        group.addAction(action)
        action.triggered.connect(lambda _checked=False, t=tool: tools.set_tool(t))
    a["tool_select"].setChecked(True)
    tools.tool_changed.connect(lambda tool: a[f"tool_{tool}"].setChecked(True))
    a["tool_loupe"].setCheckable(True)
    a["tool_loupe"].toggled.connect(tools.set_loupe)
    a["delete_mark"].triggered.connect(tools.delete_selected)
    a["undo"].triggered.connect(tools.undo)
    a["redo"].triggered.connect(tools.redo)
    a["edit_text"].triggered.connect(lambda: tools.edit_text())

    def history_enabled(*_args: Any) -> None:  # Undo/Redo greyed out when there is nothing to undo/redo
        doc = session.current
        a["undo"].setEnabled(doc is not None and window.reads.can_undo(doc))
        a["redo"].setEnabled(doc is not None and window.reads.can_redo(doc))

    window.reads.events.annotations_changed.connect(history_enabled)
    session.events.current_changed.connect(history_enabled)
    history_enabled()
    # Esc (and Space) first cancel what is being drawn, then leave the tool; only then reset the view.
    reset = a["reset_view"]
    reset.triggered.disconnect()
    reset.triggered.connect(lambda: tools.escape() or window.view.reset_view())
    menu, window.tools_toolbar = build_tools_menu_and_toolbar(window, a)

    panel = AnnotationPanel()
    window.annotations_panel = panel
    window.annotations_dock = add_dock(
        window, "Measurements", panel, Qt.DockWidgetArea.RightDockWidgetArea, "marks_dock"
    )
    window.tabifyDockWidget(window.tags_dock, window.annotations_dock)
    window.annotations_presenter = AnnotationPresenter(session, window.reads, tools, panel)
    menu.addSeparator()
    menu.addAction(window.annotations_dock.toggleViewAction())

    from viewer.ctr_proposal import CtrProposer

    window.ctr_proposer = CtrProposer(window.controller, tools)
    tools.propose_ctr = window.ctr_proposer.propose
    return tools
