"""What the reader adds to each film (annotations and verdict), without Qt: the one owner.

The session owns the documents; :class:`Reads` owns what the reader marked and decided on
them. Each film's :class:`~inference.sidecar.Sidecar` is loaded from the
:class:`~inference.sidecar.SidecarStore` the first time it is asked for (by the document's
``key``, so a film reopened from another path or copy comes back with its marks) and written
back, atomically, after every change: a crash or a power cut loses at most the change being
made. Widgets (canvas tools, the annotation panel, the verdict panel, the worklist) observe
:class:`ReadsEvents` and change reads only through these methods.

Undo and redo are per film and cover annotations only (a verdict is one deliberate keystroke,
changed by pressing another). A failed save or a damaged sidecar is reported through the
session's ``message`` event; the change stays in memory, so nothing the reader did is lost
while the app runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from inference.annotations import Annotation
from inference.sidecar import Sidecar, SidecarError, SidecarStore
from inference.verdict import Verdict
from viewer.document import ImageDocument
from viewer.events import Event

__all__ = ["Reads", "ReadsEvents"]

_UNDO_DEPTH = 100


class ReadsEvents:
    """Arguments are given in each comment."""

    def __init__(self) -> None:
        self.annotations_changed = Event("annotations_changed")  # ImageDocument
        self.verdict_changed = Event("verdict_changed")  # ImageDocument


@dataclass
class _History:
    undo: list[tuple[Annotation, ...]] = field(default_factory=list)
    redo: list[tuple[Annotation, ...]] = field(default_factory=list)


class Reads:
    """Annotations and verdicts of the opened films, persisted in the sidecar store.

    ``report(text, level)`` receives save/load problems (the session's ``message`` method in
    the app); documents without a ``key`` (not yet identified) are kept in memory only.
    """

    def __init__(self, store: SidecarStore | None = None, report: Callable[..., object] | None = None) -> None:
        self.events = ReadsEvents()
        self.store = store if store is not None else SidecarStore()
        self._report = report or (lambda text, level="info": None)
        self._sidecars: dict[str, Sidecar] = {}
        self._history: dict[str, _History] = {}

    # -- reading ------------------------------------------------------------------------------
    def sidecar(self, doc: ImageDocument) -> Sidecar:
        key = self._key(doc)
        sidecar = self._sidecars.get(key)
        if sidecar is None:
            sidecar = Sidecar(key, file=str(doc.path))
            if doc.key:
                try:
                    sidecar = self.store.load(doc.key)
                except SidecarError as exc:
                    self._report(str(exc), "warning")
            self._sidecars[key] = sidecar
        return sidecar

    def annotations(self, doc: ImageDocument) -> tuple[Annotation, ...]:
        return tuple(self.sidecar(doc).annotations)

    def annotation(self, doc: ImageDocument, annotation_id: str) -> Annotation | None:
        return next((a for a in self.sidecar(doc).annotations if a.id == annotation_id), None)

    def verdict(self, doc: ImageDocument) -> Verdict | None:
        return self.sidecar(doc).verdict

    # -- annotations (undoable) ---------------------------------------------------------------
    def add_annotation(self, doc: ImageDocument, annotation: Annotation) -> None:
        self._set_annotations(doc, (*self.annotations(doc), annotation))

    def replace_annotation(self, doc: ImageDocument, annotation: Annotation) -> None:
        """Put ``annotation`` in place of the one with the same id (moved, edited)."""
        current = self.annotations(doc)
        if not any(a.id == annotation.id for a in current):
            raise KeyError(annotation.id)
        self._set_annotations(doc, tuple(annotation if a.id == annotation.id else a for a in current))

    def remove_annotation(self, doc: ImageDocument, annotation_id: str) -> None:
        current = self.annotations(doc)
        kept = tuple(a for a in current if a.id != annotation_id)
        if len(kept) != len(current):
            self._set_annotations(doc, kept)

    def clear_annotations(self, doc: ImageDocument) -> None:
        if self.annotations(doc):
            self._set_annotations(doc, ())

    def can_undo(self, doc: ImageDocument) -> bool:
        return bool(self._history_of(doc).undo)

    def can_redo(self, doc: ImageDocument) -> bool:
        return bool(self._history_of(doc).redo)

    def undo(self, doc: ImageDocument) -> bool:
        history = self._history_of(doc)
        if not history.undo:
            return False
        history.redo.append(self.annotations(doc))
        self._apply(doc, history.undo.pop())
        return True

    def redo(self, doc: ImageDocument) -> bool:
        history = self._history_of(doc)
        if not history.redo:
            return False
        history.undo.append(self.annotations(doc))
        self._apply(doc, history.redo.pop())
        return True

    # -- verdict ------------------------------------------------------------------------------
    def set_verdict(self, doc: ImageDocument, verdict: Verdict | None) -> None:
        sidecar = self.sidecar(doc)
        if sidecar.verdict == verdict:
            return
        sidecar.verdict = verdict
        self._save(doc, sidecar)
        self.events.verdict_changed.notify(doc)

    # -- internals ----------------------------------------------------------------------------
    @staticmethod
    def _key(doc: ImageDocument) -> str:
        return doc.key or f"doc-{doc.doc_id}"

    def _history_of(self, doc: ImageDocument) -> _History:
        return self._history.setdefault(self._key(doc), _History())

    def _set_annotations(self, doc: ImageDocument, annotations: tuple[Annotation, ...]) -> None:
        history = self._history_of(doc)
        history.undo.append(self.annotations(doc))
        del history.undo[:-_UNDO_DEPTH]
        history.redo.clear()
        self._apply(doc, annotations)

    def _apply(self, doc: ImageDocument, annotations: tuple[Annotation, ...]) -> None:
        sidecar = self.sidecar(doc)
        sidecar.annotations = list(annotations)
        self._save(doc, sidecar)
        self.events.annotations_changed.notify(doc)

    def _save(self, doc: ImageDocument, sidecar: Sidecar) -> None:
        if not doc.key:
            return
        sidecar.file = str(doc.path)
        try:
            self.store.save(sidecar)
        except SidecarError as exc:
            self._report(str(exc), "error")
