"""Widgets kept in step with the session: each presenter observes session events and calls its
widget's setters; user input on a widget goes back through the session's methods only.

None of them holds state of its own that the session also holds: the overlay check box, the
toolbar action and the canvas all read ``session.overlay``; the class to explain comes from the
session, never from the combo box.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PySide6.QtCore import QTimer
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QLabel, QStatusBar

from viewer.canvas import ImageCanvas, PixelInfo
from viewer.corners import ViewState, corner_text
from viewer.document import ImageDocument
from viewer.overlay_panel import OverlayPanel, method_title
from viewer.readout import pixel_readout
from viewer.reads import Reads
from viewer.results_panel import ResultsPanel
from viewer.session import FAILED, LOADING, READY, ModelStatus, OverlayHeat, OverlaySettings, Session
from viewer.tags_panel import TagsPanel
from viewer.worklist import WorklistEntry, entry_of
from viewer.worklist_view import WorklistPanel

__all__ = [
    "CanvasPresenter",
    "StatusPresenter",
    "OverlayPresenter",
    "ResultsPresenter",
    "ThumbnailsPresenter",
    "badge_percent",
    "describe_orientation",
    "percent",
]

_FLIP_H = ((-1, 0), (0, 1))
_FLIP_V = ((1, 0), (0, -1))


def _rotation_of(matrix: tuple) -> int:
    """Degrees clockwise of a rotation matrix of the canvas (``ImageCanvas.orientation``)."""
    (a, _b), (c, _d) = matrix
    return round(math.degrees(math.atan2(c, a))) % 360


def describe_orientation(matrix: tuple) -> str:
    """The view's orientation in words: a flip is "flipped vertically", never "rotated 180°, mirrored"."""
    matrix = tuple(tuple(int(v) for v in row) for row in matrix)
    if matrix == _FLIP_H:
        return "flipped horizontally"
    if matrix == _FLIP_V:
        return "flipped vertically"
    (a, b), (c, d) = matrix
    if a * d - b * c > 0:
        angle = _rotation_of(matrix)
        return f"rotated {angle}°" if angle else ""
    # A flip then a quarter turn: the horizontal flip first, then the rotation (M = R . F).
    (fa, fb), (fc, fd) = _FLIP_H
    rotation = ((a * fa + b * fc, a * fb + b * fd), (c * fa + d * fc, c * fb + d * fd))
    return f"flipped horizontally, rotated {_rotation_of(rotation)}°"


def percent(p: float) -> str:
    """Probabilities as the exports write them (">99.9%", never a certain "100%")."""
    from inference.export.facts import format_probability  # warmed up by the inference thread

    return format_probability(p)


def badge_percent(p: float) -> str:
    """Whole percent for the small thumbnail badge; the extremes keep their "<"/">" honesty."""
    pct = 100.0 * float(p)
    return ">99%" if pct >= 99.5 else "<1%" if pct < 0.5 else f"{pct:.0f}%"


class ThumbnailsPresenter:
    """The worklist (image list): one row per document, from its result and the reader's verdict.

    Changes are gathered and applied together from a short timer: three hundred results arriving
    together are one re-arrangement of the list, not three hundred. Up/Down/Home/End and "next
    unread" follow the order the list shows (:meth:`step`, :meth:`go_to_end`, :meth:`next_unread`).
    """

    BATCH_MS = 30

    def __init__(self, session: Session, thumbnails: WorklistPanel, reads: Reads | None = None) -> None:
        self.session = session
        self.view = thumbnails
        self.reads = reads
        self._dirty: dict[int, ImageDocument] = {}
        self._gone: list[int] = []  # closed films still to take out of the list
        self._position: dict[int, int] = {}
        self._timer = QTimer(thumbnails)
        self._timer.setInterval(self.BATCH_MS)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.flush)
        thumbnails.model._thumbnail = self._thumbnail
        ev = session.events
        ev.documents_added.connect(self._added)
        ev.document_removed.connect(self._removed)
        ev.current_changed.connect(lambda doc: thumbnails.select_document(None if doc is None else doc.doc_id))
        ev.result_changed.connect(self._changed)
        ev.model_changed.connect(self._model)
        if reads is not None:
            reads.events.verdict_changed.connect(self._changed)
        thumbnails.document_selected.connect(session.set_current)

    def _thumbnail(self, doc_id: int) -> np.ndarray | None:
        doc = self.session.document(doc_id)
        return None if doc is None else doc.thumbnail

    def _added(self, docs: list[ImageDocument]) -> None:
        for doc in docs:
            self._position.setdefault(doc.doc_id, len(self._position))
        self.view.model.update_entries(
            [self.entry(doc) for doc in docs], {d.doc_id: f"{d.path}\n{d.description}" for d in docs}
        )
        current = self.session.current
        if current is not None:
            self.view.select_document(current.doc_id)

    def _changed(self, doc: ImageDocument) -> None:
        self._dirty[doc.doc_id] = doc
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        """Apply every change still waiting (the timer does it; tests and screenshots call it)."""
        self._timer.stop()
        if self._gone:  # "Close all" on thousands of films: one re-arrangement, not thousands
            gone, self._gone = self._gone, []
            self.view.model.remove(gone)
        docs = [d for d in self._dirty.values() if self.session.document(d.doc_id) is not None]
        self._dirty.clear()
        if docs:
            self.view.model.update_entries([self.entry(doc) for doc in docs])

    def badge(self, doc: ImageDocument) -> str:
        p = doc.prediction
        if p is not None:
            # neutral: no class colour for a film the model gave no result for
            return p.shown_label if p.abstained else f"{p.label} {badge_percent(p.confidence)}"
        if doc.error:
            return "failed"
        if self.session.model.state == FAILED:
            return ""
        return "…"  # waiting for (a new model's) prediction

    def entry(self, doc: ImageDocument) -> WorklistEntry:
        verdict = self.reads.verdict(doc) if self.reads is not None else None
        return entry_of(doc, verdict, self._position.get(doc.doc_id, 0), self.badge(doc))

    def _removed(self, doc: ImageDocument) -> None:
        self._dirty.pop(doc.doc_id, None)
        self._position.pop(doc.doc_id, None)
        self._gone.append(doc.doc_id)
        if not self._timer.isActive():
            self._timer.start()

    def _model(self, status: ModelStatus) -> None:
        if status.state == FAILED:
            for doc in self.session.documents():
                self._changed(doc)

    # -- moving through the list in its order ----------------------------------------------------
    def _order(self) -> list[int]:
        self.flush()
        return self.view.document_ids() or self.session.document_ids()

    def step(self, step: int) -> None:
        """Up/Down: the previous or next film of the list as shown (sorted, filtered)."""
        order = self._order()
        current = self.session.current
        if not order:
            return
        if current is None or current.doc_id not in order:
            self.session.set_current(order[0])
            return
        index = order.index(current.doc_id) + step
        if 0 <= index < len(order):
            self.session.set_current(order[index])

    def go_to_end(self, first: bool) -> None:
        """Home/End: the first or the last film of the list."""
        order = self._order()
        if order:
            self.session.set_current(order[0] if first else order[-1])

    def next_unread(self) -> bool:
        """U: the next unread film after the one on screen (wrapping round); False when all are read."""
        self.flush()
        order = self._order()
        current = self.session.current
        start = order.index(current.doc_id) + 1 if current is not None and current.doc_id in order else 0
        for doc_id in order[start:] + order[:start]:
            entry = self.view.model.entry(doc_id)
            if entry is not None and not entry.read and (current is None or doc_id != current.doc_id):
                self.session.set_current(doc_id)
                return True
        return False


class ResultsPresenter:
    """The AI result panel for the current document."""

    def __init__(self, session: Session, panel: ResultsPanel) -> None:
        self.session = session
        self.panel = panel
        ev = session.events
        ev.current_changed.connect(lambda _doc: self.refresh())
        ev.result_changed.connect(lambda doc: doc is session.current and self.refresh())
        ev.model_changed.connect(self._model)
        ev.overlay_heat_changed.connect(self._heat)

    def _model(self, status: ModelStatus) -> None:
        if status.state == READY:
            info = status.info
            self.panel.set_classes(info.class_names)
            self.panel.set_model(f"Model: {info.display_name} ({info.architecture}) · {status.device}")
        elif status.state == LOADING:
            self.panel.set_model("Model: loading…")
        elif status.state == FAILED:
            self.panel.set_model(f"Model: none ({status.message})")
        self.refresh()

    def _heat(self, heat: OverlayHeat | None) -> None:
        if heat is not None:
            self.panel.show_lung_heat(heat.explanation)

    def refresh(self) -> None:
        doc = self.session.current
        state = self.session.model.state
        if doc is None:
            self.panel.show_state("No image")
        elif doc.prediction is not None:
            self.panel.show_prediction(doc.prediction)
        elif state == FAILED:
            self.panel.show_state("No model loaded", "Open the model manager (Ctrl+M) to choose one.")
        elif state != READY:
            self.panel.show_state("Loading model…", "The image is analysed as soon as the model is ready.")
        elif doc.error:
            self.panel.show_state("Prediction failed", doc.error)
        else:
            self.panel.show_state("Analysing…")


class OverlayPresenter:
    """The overlay panel, the toolbar's overlay action and the canvas's heat map, all from ``session.overlay``."""

    def __init__(self, session: Session, panel: OverlayPanel, action: QAction, canvas: ImageCanvas) -> None:
        self.session = session
        self.panel = panel
        self.action = action
        self.canvas = canvas
        self._action_tip = action.toolTip()
        # user input -> session
        panel.visibility_changed.connect(session.set_overlay_visible)
        action.toggled.connect(session.set_overlay_visible)
        panel.opacity_changed.connect(session.set_overlay_opacity)
        panel.colormap_changed.connect(lambda name: name and session.set_colormap(name))
        panel.class_chosen.connect(session.set_overlay_class)
        panel.method_chosen.connect(session.set_overlay_method)
        # session -> widgets
        ev = session.events
        ev.overlay_changed.connect(self._overlay)
        ev.overlay_heat_changed.connect(lambda _heat: self._show_heat())
        ev.model_changed.connect(self._model)
        ev.current_changed.connect(lambda _doc: self._status())
        ev.current_changed.connect(self._current)
        ev.result_changed.connect(self._result)
        self.sync()
        self.update_available()

    NO_RESULT_TIP = "No AI result for this image: there is no class for a heat map to explain."

    def update_available(self) -> None:
        """The overlay is not offered for a film the model abstained on (issue 13), and says why."""
        doc = self.session.current
        abstained = doc is not None and doc.prediction is not None and doc.prediction.abstained
        tip = self.NO_RESULT_TIP if abstained else ""
        self.panel.show_box.setEnabled(not abstained)
        self.panel.show_box.setToolTip(tip)
        self.action.setEnabled(not abstained)
        self.action.setToolTip(tip or self._action_tip)

    def sync(self) -> None:
        o = self.session.overlay
        self.panel.set_overlay_checked(o.visible)
        self.action.blockSignals(True)
        self.action.setChecked(o.visible)
        self.action.blockSignals(False)
        self.canvas.set_overlay_visible(o.visible)
        self.canvas.set_overlay_opacity(o.opacity)
        self.panel.set_opacity(o.opacity)
        self.panel.set_colormap(o.colormap)
        self.panel.set_method(o.method)
        self.panel.set_class(o.class_index)

    def _overlay(self, overlay: OverlaySettings, field_name: str) -> None:
        self.sync()
        if field_name == "colormap":
            self.update_colour_bar()  # matplotlib's tables: imported by then (the inference thread warms them)
            self._show_heat()
        self._status()

    def _model(self, status: ModelStatus) -> None:
        if status.state == READY:
            self.panel.set_classes(status.info.class_names)
            self.panel.set_class(self.session.overlay.class_index)
        self._status()

    def _current(self, doc: ImageDocument | None) -> None:
        """Another film on screen, or its result came: what the overlay offers and the class that
        "Predicted class (...)" names; it kept the previous film's class when the next one had its
        result already, and named a class for a film the model abstained on."""
        self.update_available()
        names = self.session.class_names
        if names:
            p = None if doc is None else doc.prediction
            self.panel.set_predicted(names, None if p is None or p.abstained else p.class_index)

    def _result(self, doc: ImageDocument) -> None:
        if doc is self.session.current:
            self._current(doc)
            self._status()

    def _show_heat(self) -> None:
        heat = self.session.overlay_heat
        if heat is None:
            self.canvas.clear_overlay()
        else:
            from viewer.render import overlay_rgba

            self.canvas.set_overlay(overlay_rgba(heat.heat, self.session.overlay.colormap))
        self._status()

    def _status(self) -> None:
        session = self.session
        heat = session.overlay_heat
        if heat is not None:
            e = heat.explanation
            method = method_title(e.method)
            empty = getattr(e, "is_empty", False)
            text = (
                f"{e.class_name}: the gradients vanished, no evidence to show"
                if empty
                else f"{method} for {e.class_name}"
            )
        elif not session.overlay.visible or session.current is None:
            text = ""
        elif session.model.state == FAILED:
            text = f"No model: no {method_title(session.overlay.method)}"
        elif session.current.prediction is None:
            text = "Waiting for the prediction…"
        elif session.current.prediction.abstained:
            text = self.NO_RESULT_TIP
        else:
            text = f"Computing {method_title(session.overlay.method)}…"
        self.panel.status.setText(text)

    def update_colour_bar(self) -> None:
        try:
            from inference.overlay import colormap_lut, heat_alpha

            lut = colormap_lut(self.session.overlay.colormap)
            self.panel.colour_bar.set_lut(lut, heat_alpha(np.linspace(0.0, 1.0, 256)))
        except (ValueError, ImportError):
            self.panel.colour_bar.set_lut(None)


class CanvasPresenter:
    """The canvas shows the current document (or says it is loading it again) with its window and invert."""

    LOADING_TEXT = "Loading {name}…"

    def __init__(self, session: Session, canvas: ImageCanvas, tags: TagsPanel, invert_action: QAction) -> None:
        self.session = session
        self.canvas = canvas
        self.tags = tags
        self.invert_action = invert_action
        self._default_placeholder = canvas.placeholder
        self._shown: ImageDocument | None = None
        ev = session.events
        ev.current_changed.connect(self._show)
        ev.pixels_changed.connect(lambda doc: doc is session.current and self._show(doc))
        ev.view_changed.connect(self._view)
        canvas.window_changed.connect(self._window_dragged)

    def _show(self, doc: ImageDocument | None) -> None:
        canvas = self.canvas
        if doc is None or not doc.loaded:
            self._shown = None
            canvas.placeholder = self._default_placeholder if doc is None else self.LOADING_TEXT.format(name=doc.name)
            canvas.set_image(None)
            self.tags.set_image(None)
            return
        self._shown = doc
        canvas.set_image(doc.image, doc.window, doc.invert, doc.default_window, doc.renderer)
        canvas.set_overlay_visible(self.session.overlay.visible)
        heat = self.session.overlay_heat
        if heat is not None and heat.doc_id == doc.doc_id:
            from viewer.render import overlay_rgba

            canvas.set_overlay(overlay_rgba(heat.heat, self.session.overlay.colormap))
        self.invert_action.setChecked(doc.invert)
        self.tags.set_image(doc.image)

    def _view(self, doc: ImageDocument) -> None:
        if doc is not self._shown:
            return
        if self.canvas.inverted() != doc.invert:
            self.canvas.set_inverted(doc.invert)
        if self.canvas.window() != doc.window:
            self.canvas.set_window(doc.window)
        self.invert_action.setChecked(doc.invert)

    def _window_dragged(self, window: Any) -> None:
        if window is not None and self._shown is not None:
            self.session.set_window(self._shown.doc_id, window)

    def pixel_text(self, info: PixelInfo | None) -> str:
        doc = self._shown
        if info is None or doc is None:
            return ""
        return pixel_readout(doc.meta, info.x, info.y, info.value)


class StatusPresenter:
    """The status bar's permanent labels (pixel, window, zoom, model) and the canvas's corner annotations."""

    def __init__(
        self, session: Session, canvas: ImageCanvas, status: QStatusBar, pending: Any, disclaimer: str
    ) -> None:
        """``pending()`` says how many analyses are still to come (for "analysing N more")."""
        self.session = session
        self.canvas = canvas
        self.pending = pending
        self.hide_identifiers = False  # "Hide identifiers on screen" (View menu); the window sets it
        self.pixel_label = QLabel("")
        self.wl_label = QLabel("")
        self.zoom_label = QLabel("")
        self.model_label = QLabel("Model: not loaded")
        self.disclaimer_label = QLabel(disclaimer)
        self.disclaimer_label.setObjectName("disclaimer")
        for label, tip in (
            (self.pixel_label, "Pixel under the cursor: position (mm when the spacing is known) and value"),
            (self.wl_label, "Window centre / width in stored pixel values"),
            (self.zoom_label, "Zoom: screen pixels per image pixel"),
            (self.model_label, "Active model and the device it runs on"),
        ):
            label.setToolTip(tip)
            status.addPermanentWidget(label)
        status.addPermanentWidget(self.disclaimer_label)
        ev = session.events
        ev.current_changed.connect(lambda _doc: self.annotate())
        ev.view_changed.connect(lambda doc: doc is session.current and self.annotate())
        ev.result_changed.connect(self._result)
        ev.overlay_changed.connect(lambda _o, _f: self.annotate())
        ev.overlay_heat_changed.connect(lambda _h: self.annotate())
        ev.model_changed.connect(self._model)
        canvas.view_changed.connect(self.annotate)

    def _result(self, doc: ImageDocument) -> None:
        self.update_model_label()
        if doc is self.session.current:
            self.annotate()

    def _model(self, status: ModelStatus) -> None:
        if status.state == FAILED:
            self.model_label.setText("No model")
        elif status.state == LOADING:
            self.model_label.setText("Loading model…")
        self.update_model_label()

    def update_model_label(self) -> None:
        status = self.session.model
        if status.state == READY and status.info is not None:
            pending = self.pending()
            busy = f" · analysing {pending} more" if pending else ""
            self.model_label.setText(f"Model: {status.info.display_name} · {status.device}{busy}")

    def annotate(self) -> None:
        doc, canvas = self.session.current, self.canvas
        window = canvas.window()
        if doc is None or window is None:
            canvas.set_annotations({})
            self.wl_label.setText("")
            self.zoom_label.setText("")
            return
        self.wl_label.setText(f"C {window.center:.6g} / W {window.width:.6g}")
        self.zoom_label.setText(f"Zoom {canvas.zoom() * 100:.0f}%")
        ai_lines: list[str] = []
        if doc.prediction is not None and doc.prediction.abstained:
            ai_lines.append(f"AI: {doc.prediction.shown_label}")
        elif doc.prediction is not None:
            ai_lines.append(f"AI: {doc.prediction.label} {percent(doc.prediction.confidence)}")
            heat = self.session.overlay_heat
            if self.session.overlay.visible and heat is not None and heat.doc_id == doc.doc_id:
                ai_lines.append(f"{method_title(heat.explanation.method)}: {heat.explanation.class_name}")
        view = ViewState(window, canvas.zoom(), describe_orientation(canvas.orientation()), canvas.inverted())
        corners = corner_text(
            doc.meta, doc.name, doc.description, view, hide_identifiers=self.hide_identifiers, ai_lines=ai_lines
        )
        canvas.set_annotations(corners)
