"""Compare with a prior: the film on screen and another film of the same patient, side by side.

A second :class:`~viewer.canvas.ImageCanvas` beside the main one (a splitter takes the central
widget's place), with its own AI result (a header line and the corner text) and its own
Grad-CAM overlay (the session's overlay settings, for its own predicted class). Zoom, pan and
window are synchronised both ways while "Synchronise" is on, in relative terms so that two films
of different sizes or bit depths line up: zoom as a multiple of each film's fitted zoom, pan as
the fraction of the image at the centre of the view, window as a shift and a scale of each
film's default window. Only the canvas's public methods and signals are used.

The prior is chosen by :func:`viewer.worklist.prior_of` (the most recent other study of the
same patient) unless the reader picks the film from the worklist's context menu.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSplitter, QVBoxLayout, QWidget

from inference.image import Window
from viewer.canvas import ImageCanvas
from viewer.corners import ViewState, corner_text
from viewer.document import ImageDocument
from viewer.worklist import prior_of

__all__ = ["ComparePane", "CompareView", "fit_zoom", "map_window", "install_compare"]


def fit_zoom(canvas: ImageCanvas) -> float:
    """The zoom at which the canvas's film fills its viewport (as :meth:`ImageCanvas.fit` computes it)."""
    image = canvas.image
    if image is None:
        return 1.0
    h, w = image.shape
    (a, _b), _ = canvas.orientation()
    shown_w, shown_h = (w, h) if a != 0 else (h, w)
    vp = canvas.viewport().rect()
    return max(min(vp.width() / shown_w, vp.height() / shown_h) * 0.98, 1e-6)


def map_window(window: Window, source_default: Window, target_default: Window) -> Window:
    """``window`` of one film as the same change of the other film's default window."""
    scale = abs(target_default.width) / max(abs(source_default.width), 1e-9)
    center = target_default.center + (window.center - source_default.center) * scale
    return Window(center=center, width=max(window.width * scale, 1e-3), source="user")


class ComparePane(QWidget):
    """The second viewport: a header (film, patient, study, AI result), the canvas and its buttons."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.header = QLabel("")
        self.header.setWordWrap(True)
        self.header.setTextFormat(Qt.TextFormat.PlainText)
        self.canvas = ImageCanvas()
        self.canvas.placeholder = "Loading the prior…"
        self.sync_button = QPushButton("Synchronised")
        self.sync_button.setCheckable(True)
        self.sync_button.setChecked(True)
        self.sync_button.setToolTip("Zoom, pan and window move both films together")
        self.close_button = QPushButton("Close")
        row = QHBoxLayout()
        row.addWidget(self.header, 1)
        row.addWidget(self.sync_button)
        row.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.canvas, 1)


class CompareView:
    """Owns the second viewport and the synchronisation; the session still owns the films."""

    def __init__(self, window: Any) -> None:
        self.window = window
        self.session = window.session
        self.main = window.canvas
        self.pane = ComparePane()
        self.prior: ImageDocument | None = None
        self._syncing = False
        self._asked: set[tuple] = set()  # (doc id, overlay target) explanations asked for the prior
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("compare_splitter")
        central = window.takeCentralWidget()
        self.splitter.addWidget(central)
        self.splitter.addWidget(self.pane)
        window.setCentralWidget(self.splitter)
        self.pane.hide()
        self.sync_action = QAction("&Synchronise zoom, pan and window", window)
        self.sync_action.setCheckable(True)
        self.sync_action.setChecked(True)
        self.sync_action.toggled.connect(self.set_sync)
        self.pane.sync_button.toggled.connect(self.set_sync)
        self.pane.close_button.clicked.connect(self.stop)
        prior = self.pane.canvas
        self.main.view_changed.connect(lambda: self._sync_view(self.main, prior))
        prior.view_changed.connect(lambda: self._sync_view(prior, self.main))
        self.main.window_changed.connect(lambda w: self._sync_window(w, from_main=True))
        prior.window_changed.connect(lambda w: self._sync_window(w, from_main=False))
        ev = self.session.events
        ev.current_changed.connect(self._current_changed)
        ev.pixels_changed.connect(lambda doc: doc is self.prior and self._show_prior())
        ev.result_changed.connect(self._result_changed)
        ev.overlay_changed.connect(lambda _o, _f: self.prior is not None and self._show_overlay())
        ev.document_removed.connect(lambda doc: doc is self.prior and self.stop())

    # -- state -----------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.prior is not None

    @property
    def synced(self) -> bool:
        return self.sync_action.isChecked()

    def set_sync(self, on: bool) -> None:
        for control in (self.sync_action, self.pane.sync_button):
            control.blockSignals(True)
            control.setChecked(bool(on))
            control.blockSignals(False)
        if on and self.active:
            self._sync_view(self.main, self.pane.canvas)
            window = self.main.window()
            if window is not None:
                self._sync_window(window, from_main=True)

    def _entries(self) -> list:
        return self.window.thumbnails.model.entries()

    def start(self, doc_id: int | None = None, other: int | None = None) -> bool:
        """Compare film ``doc_id`` (default: the one on screen) with ``other`` (default: its prior)."""
        if doc_id is not None and doc_id >= 0:
            self.session.set_current(doc_id)
        current = self.session.current
        if current is None:
            return False
        self.window.thumbnails_presenter.flush()
        other_id = other if other is not None and other >= 0 else prior_of(self._entries(), current.doc_id)
        prior = self.session.document(other_id)
        if prior is None or prior is current:
            self.session.message(f"{current.name}: no other film of this patient is open to compare with", "info")
            self.window.statusBar().showMessage("No other film of this patient is open to compare with", 8000)
            return False
        self.prior = prior
        self.pane.show()
        self.splitter.setSizes([1, 1])
        self._show_prior()
        return True

    def stop(self) -> None:
        self.prior = None
        self.pane.canvas.set_image(None)
        self.pane.hide()

    def _current_changed(self, doc: ImageDocument | None) -> None:
        """Moving to another film while comparing: keep the prior if it is that patient's, else pick its prior."""
        if not self.active:
            return
        if doc is None:
            self.stop()
            return
        entries = {e.doc_id: e for e in self._entries()}
        this, prior = entries.get(doc.doc_id), entries.get(self.prior.doc_id) if self.prior else None
        if doc is not self.prior and this and prior and this.patient and this.patient == prior.patient:
            return
        if not self.start():
            self.stop()

    # -- showing the prior ------------------------------------------------------------------------
    def _result_changed(self, doc: ImageDocument) -> None:
        if doc is self.prior:
            self._show_ai()
            self._show_overlay()

    def _show_prior(self) -> None:
        doc = self.prior
        if doc is None:
            return
        canvas = self.pane.canvas
        if not doc.loaded:
            canvas.placeholder = f"Loading {doc.name}…"
            canvas.set_image(None)
            self.window.opener.ensure_pixels(doc)  # pixels_changed brings it back here
            self._show_ai()
            return
        canvas.set_image(doc.image, doc.window, doc.invert, doc.default_window, doc.renderer)
        self._show_ai()
        self._show_overlay()
        if self.synced:
            self._sync_view(self.main, canvas)

    def _show_ai(self) -> None:
        doc = self.prior
        if doc is None:
            return
        from inference.dicom_text import dicom_date

        p = doc.prediction
        if p is None:
            ai = "AI: analysing…" if not doc.error else "AI: failed"
        elif p.abstained:
            ai = f"AI: {p.shown_label}"
        else:
            from viewer.presenters import percent

            ai = f"AI: {p.label} {percent(p.confidence)}"
        hide = self.window.settings.hide_identifiers
        study = dicom_date(doc.meta.study.get("StudyDate", ""))
        parts = ["Prior", "" if hide else doc.name, study, ai]
        self.pane.header.setText(" · ".join(p for p in parts if p))
        canvas = self.pane.canvas
        window = canvas.window()
        if window is not None:
            from viewer.presenters import describe_orientation

            view = ViewState(window, canvas.zoom(), describe_orientation(canvas.orientation()), canvas.inverted())
            canvas.set_annotations(
                corner_text(doc.meta, doc.name, doc.description, view, hide_identifiers=hide, ai_lines=[ai])
            )

    def _show_overlay(self) -> None:
        """The prior's own heat map, for its own class, when the overlay is on (computed if missing)."""
        doc, canvas, overlay = self.prior, self.pane.canvas, self.session.overlay
        canvas.set_overlay_visible(overlay.visible)
        canvas.set_overlay_opacity(overlay.opacity)
        if doc is None or not overlay.visible or doc.prediction is None or doc.prediction.abstained:
            canvas.clear_overlay()
            return
        target = self.session.overlay_target(doc)
        explanation = doc.explanations.get(target) if target is not None else None
        if explanation is None:
            wanted = (doc.doc_id, target)
            if self.session.model.state == "ready" and wanted not in self._asked:
                self._asked.add(wanted)  # once: a failed or different answer is not asked for again
                handle = self.window.controller.analyse(doc, explain=(target[0], target[1]), heat_side=512)
                handle.returned.connect(
                    lambda result: self.session.set_explanation(result.doc_id, result.explanation, None)
                )
            canvas.clear_overlay()
            return
        from viewer.render import display_heat, overlay_rgba

        canvas.set_overlay(overlay_rgba(display_heat(explanation), overlay.colormap))

    # -- synchronisation ------------------------------------------------------------------------------
    def _sync_view(self, source: ImageCanvas, target: ImageCanvas) -> None:
        if self._syncing or not self.active or not self.synced or source.image is None or target.image is None:
            return
        self._syncing = True
        try:
            sh, sw = source.image.shape
            th, tw = target.image.shape
            centre = source.mapToScene(source.viewport().rect().center())
            relative = source.zoom() / fit_zoom(source)
            target.set_zoom(relative * fit_zoom(target))
            target.centerOn(QPointF(centre.x() / sw * tw, centre.y() / sh * th))
        finally:
            self._syncing = False
        if target is self.pane.canvas:
            self._show_ai()  # the corner's zoom

    def _sync_window(self, window: Window | None, from_main: bool) -> None:
        prior, current = self.prior, self.session.current
        if window is None or prior is None or current is None or not prior.loaded:
            return
        if not from_main:
            self.session.set_window(prior.doc_id, window)  # the session keeps each film's window
        if self._syncing or not self.synced:
            return
        self._syncing = True
        try:
            if from_main:
                self.pane.canvas.set_window(map_window(window, current.default_window, prior.default_window))
            else:
                self.main.set_window(map_window(window, prior.default_window, current.default_window))
        finally:
            self._syncing = False
        self._show_ai()


def install_compare(window: Any) -> CompareView:
    """The compare view of ``window``: its action (Ctrl+Shift+P) and the worklist's context menu."""
    view = CompareView(window)
    window.compare = view
    window.actions_by_id["compare"].triggered.connect(lambda: view.start())
    window.thumbnails.compare_requested.connect(lambda doc_id, other: view.start(doc_id, other))
    return view
