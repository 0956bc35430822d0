"""The viewer's state, without Qt: opened documents, the current one, the model, the overlay.

In the spirit of napari's ``ViewerModel``: the :class:`Session` is the one owner of this
state. Widgets observe its :class:`SessionEvents` and change it only through its methods;
nothing here knows about widgets, threads or TensorFlow, so it is tested without a display
(``tests/test_session.py``).

Who decides what:

* the documents and their order, the current document, each document's window/invert and AI
  results: the session (results are written by the analysis scheduler, through its methods);
* the active model's state (idle / loading / ready / failed, its info and device): the session,
  told by the analysis controller's handles;
* the overlay (visible, class to explain, method, opacity, colour map): the session only. The
  check box, the toolbar action and the canvas all follow ``overlay_changed``;
* the display-size heat map of the current image: the session (``overlay_heat``), one at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from inference.image import Window
from viewer.document import ImageDocument
from viewer.events import Event

__all__ = ["ModelStatus", "OverlaySettings", "OverlayHeat", "Session", "SessionEvents"]

IDLE, LOADING, READY, FAILED = "idle", "loading", "ready", "failed"
METHODS = ("gradcam", "gradcam++")


@dataclass(frozen=True)
class ModelStatus:
    state: str = IDLE  # "idle" | "loading" | "ready" | "failed"
    path: str = ""
    info: Any = None  # inference.bundle.BundleInfo once ready
    device: str = ""
    message: str = ""  # why it failed


@dataclass(frozen=True)
class OverlaySettings:
    visible: bool = False
    class_index: int | None = None  # None: explain the predicted class of each image
    method: str = "gradcam"
    opacity: float = 0.45
    colormap: str = "jet"


@dataclass(frozen=True)
class OverlayHeat:
    """The heat map of one document at display size (float32 in [0, 1]), and what it explains."""

    doc_id: int
    target: tuple[int, str]  # (class index, method)
    heat: np.ndarray
    explanation: Any  # inference.predictor.Explanation (small: feature-grid map and facts)


class SessionEvents:
    """Everything a widget may observe. Arguments are given in each comment."""

    def __init__(self) -> None:
        self.documents_added = Event("documents_added")  # list[ImageDocument]
        self.document_removed = Event("document_removed")  # ImageDocument
        self.current_changed = Event("current_changed")  # ImageDocument | None
        self.pixels_changed = Event("pixels_changed")  # ImageDocument (loaded again after eviction)
        self.result_changed = Event("result_changed")  # ImageDocument (prediction, error or explanation)
        self.view_changed = Event("view_changed")  # ImageDocument (window or invert)
        self.model_changed = Event("model_changed")  # ModelStatus
        self.overlay_changed = Event("overlay_changed")  # OverlaySettings, name of the field that changed
        self.overlay_heat_changed = Event("overlay_heat_changed")  # OverlayHeat | None
        self.message = Event("message")  # text, level ("info" | "warning" | "error")


class Session:
    """The opened documents and the reading state; see the module docstring for the rules."""

    def __init__(self, overlay: OverlaySettings | None = None) -> None:
        self.events = SessionEvents()
        self._docs: dict[int, ImageDocument] = {}
        self._order: list[int] = []
        self._by_path: dict[str, int] = {}  # real path -> doc id
        self._by_key: dict[str, int] = {}  # film identity (SOP Instance UID or content hash) -> doc id
        self._current: int | None = None
        self._next_id = 1
        self._model = ModelStatus()
        self._overlay = overlay or OverlaySettings()
        self._heat: OverlayHeat | None = None

    # -- documents --------------------------------------------------------------------------
    def new_doc_id(self) -> int:
        doc_id = self._next_id
        self._next_id += 1
        return doc_id

    def documents(self) -> list[ImageDocument]:
        """Every opened document, in the order of the image list."""
        return [self._docs[i] for i in self._order]

    def document_ids(self) -> list[int]:
        return list(self._order)

    def document(self, doc_id: int | None) -> ImageDocument | None:
        return None if doc_id is None else self._docs.get(doc_id)

    def __len__(self) -> int:
        return len(self._order)

    def find_by_path(self, path: str | os.PathLike[str]) -> ImageDocument | None:
        return self.document(self._by_path.get(os.path.realpath(path)))

    def find_by_key(self, key: str) -> ImageDocument | None:
        """The open document of the film with identity ``key`` (``ImageDocument.key``), if any."""
        return self.document(self._by_key.get(key)) if key else None

    def source_paths(self) -> list[str]:
        """Every opened file: exports must never write over one of them."""
        return [str(d.path) for d in self.documents()]

    def add_documents(self, docs: Iterable[ImageDocument]) -> list[ImageDocument]:
        """Add documents (one event for a batch); the first becomes current if none is."""
        added = []
        for doc in docs:
            if doc.doc_id in self._docs:
                continue
            self._docs[doc.doc_id] = doc
            self._order.append(doc.doc_id)
            self._by_path[os.path.realpath(doc.path)] = doc.doc_id
            if doc.key:
                self._by_key.setdefault(doc.key, doc.doc_id)
            self._next_id = max(self._next_id, doc.doc_id + 1)
            added.append(doc)
        if added:
            self.events.documents_added.notify(added)
            if self._current is None:
                self.set_current(added[0].doc_id)
        return added

    def remove_document(self, doc_id: int) -> None:
        doc = self._docs.pop(doc_id, None)
        if doc is None:
            return
        index = self._order.index(doc_id)
        self._order.remove(doc_id)
        self._by_path.pop(os.path.realpath(doc.path), None)
        if self._by_key.get(doc.key) == doc_id:
            del self._by_key[doc.key]
        if self._heat is not None and self._heat.doc_id == doc_id:
            self._set_heat(None)
        self.events.document_removed.notify(doc)
        if self._current == doc_id:
            self._current = None
            if self._order:
                self.set_current(self._order[min(index, len(self._order) - 1)])
            else:
                self.events.current_changed.notify(None)

    def clear(self) -> None:
        for doc_id in list(self._order):
            self.remove_document(doc_id)

    # -- the current document ------------------------------------------------------------------
    @property
    def current(self) -> ImageDocument | None:
        return self.document(self._current)

    def set_current(self, doc_id: int | None) -> None:
        if doc_id == self._current or (doc_id is not None and doc_id not in self._docs):
            return
        self._current = doc_id
        if self._heat is not None and self._heat.doc_id != doc_id:
            self._set_heat(None)  # only the image on screen keeps a display heat map
        self.events.current_changed.notify(self.current)

    def step(self, step: int) -> None:
        """Show the previous (-1) or next (+1) document; nothing past either end."""
        if not self._order:
            return
        if self._current is None:
            self.set_current(self._order[0])
            return
        index = self._order.index(self._current) + step
        if 0 <= index < len(self._order):
            self.set_current(self._order[index])

    def neighbours(self, count: int) -> list[int]:
        """The current document and up to ``count`` on each side: the pixels worth keeping."""
        if self._current is None:
            return []
        i = self._order.index(self._current)
        return self._order[max(0, i - count) : i + count + 1]

    def analysis_order(self) -> list[ImageDocument]:
        """Documents with the one on screen first, then in list order."""
        docs = self.documents()
        current = self.current
        if current is not None:
            docs.remove(current)
            docs.insert(0, current)
        return docs

    # -- view state of a document ---------------------------------------------------------------
    def set_window(self, doc_id: int, window: Window) -> None:
        doc = self._docs.get(doc_id)
        if doc is None or doc.window == window:
            return
        doc.window = window
        self.events.view_changed.notify(doc)

    def set_invert(self, doc_id: int, invert: bool) -> None:
        doc = self._docs.get(doc_id)
        if doc is None or doc.invert == bool(invert):
            return
        doc.invert = bool(invert)
        self.events.view_changed.notify(doc)

    def pixels_loaded(self, doc: ImageDocument) -> None:
        """A document's pixels came back after an eviction (called by whoever loaded them)."""
        if doc.doc_id in self._docs:
            self.events.pixels_changed.notify(doc)

    # -- the model ---------------------------------------------------------------------------------
    @property
    def model(self) -> ModelStatus:
        return self._model

    def set_model_loading(self, path: str) -> None:
        """A new model is on its way: every result of the previous one is cleared."""
        self._model = ModelStatus(state=LOADING, path=str(path))
        for doc in self.documents():
            doc.clear_results()
        self._set_heat(None)
        self.events.model_changed.notify(self._model)
        for doc in self.documents():
            self.events.result_changed.notify(doc)

    def set_model_ready(self, info: Any, device: str) -> None:
        self._model = replace(self._model, state=READY, info=info, device=str(device), message="")
        if self._overlay.class_index is not None and self._overlay.class_index >= len(info.class_names):
            self._overlay = replace(self._overlay, class_index=None)
        self.events.model_changed.notify(self._model)

    def set_model_failed(self, message: str) -> None:
        self._model = replace(self._model, state=FAILED, info=None, device="", message=str(message))
        self.events.model_changed.notify(self._model)

    @property
    def class_names(self) -> list[str]:
        info = self._model.info
        return list(info.class_names) if info is not None else []

    # -- AI results (written by the analysis scheduler) ------------------------------------------
    def set_prediction(self, doc_id: int, prediction: Any) -> None:
        doc = self._docs.get(doc_id)
        if doc is None:
            return
        doc.prediction = prediction
        doc.error = ""
        self.events.result_changed.notify(doc)

    def set_prediction_failed(self, doc_id: int, message: str) -> None:
        doc = self._docs.get(doc_id)
        if doc is None:
            return
        doc.error = str(message)
        self.events.result_changed.notify(doc)
        self.message(f"{doc.name}: the analysis failed: {message}", "error")

    def set_explanation(self, doc_id: int, explanation: Any, heat: np.ndarray | None = None) -> None:
        """Store an explanation; with ``heat`` (display size) it becomes the overlay if it is wanted now."""
        doc = self._docs.get(doc_id)
        if doc is None:
            return
        target = (int(explanation.class_index), str(explanation.method))
        doc.explanations[target] = explanation
        self.events.result_changed.notify(doc)
        if heat is not None and doc_id == self._current and self.overlay_target(doc) == target:
            self._set_heat(OverlayHeat(doc_id, target, heat, explanation))

    def set_overlay_heat(self, heat: OverlayHeat | None) -> None:
        self._set_heat(heat)

    @property
    def overlay_heat(self) -> OverlayHeat | None:
        return self._heat

    def _set_heat(self, heat: OverlayHeat | None) -> None:
        if heat is not None:
            doc = self._docs.get(heat.doc_id)
            if doc is not None and getattr(doc.prediction, "abstained", False):
                heat = None  # issue 13: no heat map is offered as evidence for a film with no AI result
        if heat is self._heat:
            return
        self._heat = heat
        self.events.overlay_heat_changed.notify(heat)

    # -- overlay settings --------------------------------------------------------------------------
    @property
    def overlay(self) -> OverlaySettings:
        return self._overlay

    def _set_overlay(self, field_name: str, value: Any) -> None:
        if getattr(self._overlay, field_name) == value:
            return
        self._overlay = replace(self._overlay, **{field_name: value})
        if field_name in ("class_index", "method") and self._heat is not None:
            current = self.current
            if current is None or self.overlay_target(current) != self._heat.target:
                self._set_heat(None)
        self.events.overlay_changed.notify(self._overlay, field_name)

    def set_overlay_visible(self, visible: bool) -> None:
        self._set_overlay("visible", bool(visible))

    def toggle_overlay(self) -> None:
        self.set_overlay_visible(not self._overlay.visible)

    def set_overlay_class(self, class_index: int | None) -> None:
        self._set_overlay("class_index", None if class_index is None else int(class_index))

    def set_overlay_method(self, method: str) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown explanation method {method!r}; choose from {', '.join(METHODS)}")
        self._set_overlay("method", method)

    def set_overlay_opacity(self, opacity: float) -> None:
        self._set_overlay("opacity", min(1.0, max(0.0, float(opacity))))

    def set_colormap(self, name: str) -> None:
        self._set_overlay("colormap", str(name))

    def overlay_target(self, doc: ImageDocument | None) -> tuple[int, str] | None:
        """(class index, method) the overlay explains for ``doc``; None until its prediction is known."""
        if doc is None or doc.prediction is None:
            return None
        chosen = self._overlay.class_index
        class_index = doc.prediction.class_index if chosen is None else chosen
        return int(class_index), self._overlay.method

    # -- messages ---------------------------------------------------------------------------------------
    def message(self, text: str, level: str = "info") -> None:
        """Something the user should read (the Messages panel and the status bar show it)."""
        self.events.message.notify(str(text), level)
