"""Which analyses to ask for, and where their results go: the session's documents meet the controller.

The :class:`AnalysisScheduler` observes the session and asks the controller for jobs:

* every opened document is predicted once per model, the one on screen first;
* with the overlay on, the image on screen gets one ``predict_and_explain`` job (one
  preprocessing, one forward and one backward pass) that returns the heat map at the size the
  canvas draws the film (:func:`viewer.render.heat_side_for`); a waiting plain prediction for
  that image is replaced by it;
* an explanation already computed (same class, same method) is shown again without the
  network: a ``heat`` job rebuilds its display map from the small feature-grid map;
* after a large zoom or resize (the canvas draws the film 1.5 times larger or smaller than its
  map), once the view has been still for :data:`HEAT_RESIZE_DELAY_MS`, the map is rebuilt at
  the new size, one job in flight per film. Only the map on screen is kept, never a
  full-resolution one.

It writes results into the session through its methods; it keeps one handle per document so
that nothing is asked twice, and forgets it when the handle finishes (returned, errored or
cancelled).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QTimer

from viewer.controller import AnalysisController, AnalysisResult, JobHandle
from viewer.document import ImageDocument
from viewer.render import HEAT_DISPLAY_SIDE, heat_side_for, heat_side_is_stale
from viewer.session import FAILED, LOADING, READY, ModelStatus, OverlayHeat, OverlaySettings, Session

__all__ = ["AnalysisScheduler", "HEAT_RESIZE_DELAY_MS", "canvas_shown_side"]

log = logging.getLogger(__name__)

HEAT_RESIZE_DELAY_MS = 250  # a zoom by wheel or a window drag settles before the map is rebuilt


def canvas_shown_side(canvas: Any) -> float:
    """Device pixels of the longest side of the film as ``canvas`` (a :class:`viewer.canvas.ImageCanvas`)
    draws it now; 0 when it shows none."""
    image = canvas.image
    if image is None:
        return 0.0
    return float(canvas.zoom()) * max(image.shape[:2]) * float(canvas.devicePixelRatioF())


class AnalysisScheduler:
    def __init__(self, session: Session, controller: AnalysisController, heat_side: int = HEAT_DISPLAY_SIDE) -> None:
        self.session = session
        self.controller = controller
        self.heat_side = heat_side  # used until follow_canvas() tells how large the film is drawn
        self._shown_side: Callable[[], float] | None = None
        self._resize_timer: QTimer | None = None
        self._predicting: dict[int, JobHandle] = {}  # doc id -> its plain prediction job
        self._explaining: dict[int, tuple[tuple[int | None, str], JobHandle]] = {}  # doc id -> (target, job)
        self._resizing: dict[int, JobHandle] = {}  # doc id -> its heat-map job, until announced (one per film)
        self.model_handle: JobHandle | None = None
        ev = session.events
        ev.documents_added.connect(self._on_documents_added)
        ev.document_removed.connect(self._on_document_removed)
        ev.current_changed.connect(self._on_current_changed)
        ev.overlay_changed.connect(self._on_overlay_changed)
        ev.model_changed.connect(self._on_model_changed)

    # -- the model ---------------------------------------------------------------------------------
    def load_model(self, path: str) -> JobHandle:
        """Make ``path`` the active model: the session forgets the old results, every image is analysed again."""
        self._predicting.clear()  # the controller cancels their jobs; their handles are stale
        self._explaining.clear()
        self.session.set_model_loading(path)
        handle = self.controller.load_model(path)
        self.model_handle = handle
        handle.returned.connect(lambda value, h=handle: self._on_model_loaded(h, value))
        handle.errored.connect(lambda exc, h=handle: self._on_model_failed(h, exc))
        self._queue_all()
        return handle

    def _on_model_loaded(self, handle: JobHandle, value: tuple[Any, str]) -> None:
        if handle is self.model_handle:
            info, device = value
            self.session.set_model_ready(info, device)

    def _on_model_failed(self, handle: JobHandle, exc: BaseException) -> None:
        if handle is self.model_handle:
            self.session.set_model_failed(str(exc) or type(exc).__name__)

    def _on_model_changed(self, status: ModelStatus) -> None:
        if status.state == READY:
            self.request_overlay()

    # -- predictions ------------------------------------------------------------------------------
    def _can_queue(self) -> bool:
        return self.controller.started and self.session.model.state in (LOADING, READY)

    def _queue_all(self) -> None:
        for doc in self.session.analysis_order():
            self.queue_prediction(doc)
        self.request_overlay()

    def queue_prediction(self, doc: ImageDocument) -> None:
        if not self._can_queue() or doc.prediction is not None or doc.error:
            return
        if doc.doc_id in self._predicting or doc.doc_id in self._explaining:
            return
        handle = self.controller.analyse(doc)
        self._predicting[doc.doc_id] = handle
        self._watch(handle, doc.doc_id)

    def pending(self) -> int:
        """Analyses asked for and not finished (a handle whose result is being delivered counts as done)."""
        handles = [*self._predicting.values(), *(h for _t, h in self._explaining.values())]
        return sum(1 for h in handles if not h.done)

    def _watch(self, handle: JobHandle, doc_id: int) -> None:
        handle.returned.connect(self._on_returned)
        handle.errored.connect(lambda exc, d=doc_id, h=handle: self._on_errored(d, h, exc))
        handle.finished.connect(lambda d=doc_id, h=handle: self._forget(d, h))

    def _forget(self, doc_id: int, handle: JobHandle) -> None:
        if self._predicting.get(doc_id) is handle:
            del self._predicting[doc_id]
        entry = self._explaining.get(doc_id)
        if entry is not None and entry[1] is handle:
            del self._explaining[doc_id]

    def _on_returned(self, result: AnalysisResult) -> None:
        session = self.session
        session.set_prediction(result.doc_id, result.prediction)
        if result.explanation is not None:
            session.set_explanation(result.doc_id, result.explanation, result.heat)
        # The explanation was for "the predicted class" or another one the user picked meanwhile:
        # ask again if what the overlay wants now differs.
        doc = session.document(result.doc_id)
        if doc is session.current:
            self.request_overlay()

    def _on_errored(self, doc_id: int, handle: JobHandle, exc: BaseException) -> None:
        doc = self.session.document(doc_id)
        if doc is None:
            return
        message = str(exc) or type(exc).__name__
        entry = self._explaining.get(doc_id)
        if entry is not None and entry[1] is handle and doc.prediction is not None:
            self.session.message(f"{doc.name}: Grad-CAM failed: {message}", "error")
            return
        self.session.set_prediction_failed(doc_id, message)

    # -- the overlay -------------------------------------------------------------------------------
    def request_overlay(self) -> None:
        """Make sure the overlay of the image on screen is shown or being computed (when it is on)."""
        session = self.session
        doc = session.current
        if doc is None or not session.overlay.visible or session.model.state == FAILED:
            return
        if getattr(doc.prediction, "abstained", False):
            return  # no AI result: no heat map to offer as evidence of a class (issue 13)
        target = session.overlay_target(doc)
        heat = session.overlay_heat
        if target is not None and heat is not None and heat.doc_id == doc.doc_id and heat.target == target:
            return
        if target is not None and target in doc.explanations:
            self._render_heat(doc, target, doc.explanations[target])
            return
        if not self._can_queue():
            return
        wanted: tuple[int | None, str] = (
            target if target is not None else (session.overlay.class_index, session.overlay.method)
        )
        entry = self._explaining.get(doc.doc_id)
        if entry is not None and entry[0] == wanted:
            return
        if entry is not None:
            entry[1].cancel()
        waiting = self._predicting.get(doc.doc_id)
        if waiting is not None and waiting.state == "queued":
            waiting.cancel()  # one job does both: predict_and_explain
        handle = self.controller.analyse(doc, explain=wanted, heat_side=self.heat_side_for(doc), front=True)
        self._explaining[doc.doc_id] = (wanted, handle)
        self._watch(handle, doc.doc_id)

    # -- the heat map's size ---------------------------------------------------------------------------
    def follow_canvas(self, canvas: Any) -> None:
        """Ask for heat maps at the size ``canvas`` (a :class:`viewer.canvas.ImageCanvas`) draws the
        film, and again once a zoom, resize, rotation or flip has settled (its ``view_changed``)."""
        self._shown_side = lambda: canvas_shown_side(canvas)
        timer = QTimer(canvas)  # ends with the canvas
        timer.setSingleShot(True)
        timer.setInterval(HEAT_RESIZE_DELAY_MS)
        timer.timeout.connect(self.refresh_heat_size)
        canvas.view_changed.connect(timer.start)  # restarted by each change: one refresh at the end
        self._resize_timer = timer

    def heat_side_for(self, doc: ImageDocument) -> int:
        """The side of the heat map to build for ``doc`` now."""
        if self._shown_side is None:
            return self.heat_side
        shown = self._shown_side()
        return heat_side_for(shown, max(doc.shape)) if shown > 0 else self.heat_side

    def refresh_heat_size(self) -> None:
        """Rebuild the map on screen if the canvas now draws the film at a very different size."""
        session, doc = self.session, self.session.current
        heat = session.overlay_heat
        if doc is None or heat is None or heat.doc_id != doc.doc_id or not session.overlay.visible:
            return
        if heat_side_is_stale(max(heat.heat.shape), self.heat_side_for(doc)):
            self._render_heat(doc, heat.target, heat.explanation)

    def _render_heat(self, doc: ImageDocument, target: tuple[int, str], explanation: Any) -> None:
        """Build ``explanation``'s display map in the inference thread; one job per film at a time
        (the map wanted when it ends is checked again then)."""
        if doc.doc_id in self._resizing:  # until its outcome has reached this thread (``finished``)
            return
        side = self.heat_side_for(doc)
        handle = self.controller.render_heat(doc.doc_id, explanation, side)
        self._resizing[doc.doc_id] = handle

        def show(heat: Any, doc_id: int = doc.doc_id) -> None:
            current = self.session.current
            if current is None or current.doc_id != doc_id or self.session.overlay_target(current) != target:
                return  # another film or another class by now
            if current.explanations.get(target) is not explanation:
                return  # another model by now (its results were cleared)
            self.session.set_overlay_heat(OverlayHeat(doc_id, target, heat, explanation))

        def finished(doc_id: int = doc.doc_id, h: JobHandle = handle) -> None:
            if self._resizing.get(doc_id) is h:
                del self._resizing[doc_id]
            self.request_overlay()  # another class may be wanted by now
            self.refresh_heat_size()  # or another size: the view may have changed meanwhile

        handle.returned.connect(show)
        handle.finished.connect(finished)

    # -- session events ------------------------------------------------------------------------------
    def _on_documents_added(self, docs: list[ImageDocument]) -> None:
        for doc in docs:
            self.queue_prediction(doc)

    def _on_document_removed(self, doc: ImageDocument) -> None:
        self.controller.cancel_doc(doc.doc_id)

    def _on_current_changed(self, doc: ImageDocument | None) -> None:
        if doc is None:
            return
        self.controller.prioritise(doc.doc_id)
        self.request_overlay()

    def _on_overlay_changed(self, overlay: OverlaySettings, field_name: str) -> None:
        if field_name in ("visible", "class_index", "method"):
            self.request_overlay()
