"""Opening files: the loader thread decodes, this turns its results into session documents.

* Decoding, the display preparation (renderer, window, thumbnail) and folder scans happen in
  the :class:`~viewer.workers.ImageLoader` thread; the GUI thread only wraps the results.
* Documents reach the session in batches (every :data:`BATCH_MS` ms), so three hundred files
  mean a dozen list updates, not three hundred.
* Pixels go into the :class:`~viewer.pixel_cache.PixelCache`; when the image on screen was
  evicted, :meth:`DocumentOpener.ensure_pixels` loads it again, first in the loader's line.
* Back-pressure: while a model is loading or ready, at most :data:`AWAITING_BYTES` of opened
  films wait for their prediction with their pixels in memory; the loader holds the next film
  until there is room. Each film is thus decoded once, predicted from memory, then evicted,
  instead of three hundred decoded films either filling the memory or being decoded twice
  (small films all fit: 300 JPEGs of 224 px are 15 MB).
* Each request (a drop, File > Open) shows its first film as soon as it is loaded, and one film
  is one document: a film opened again, by the same or another path (same SOP Instance UID or
  content hash, :func:`inference.sidecar.film_key`), is not added twice; the existing one is
  shown and the summary says "already open".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from inference.image import XRayImage
from viewer.document import ImageDocument
from viewer.pixel_cache import PixelCache
from viewer.qt_compat import emit
from viewer.session import FAILED, ModelStatus, Session
from viewer.workers import ByteBudget, ImageLoader

__all__ = ["DocumentOpener", "AWAITING_BYTES", "BATCH_MS", "NEIGHBOURS", "open_summary"]

BATCH_MS = 80
NEIGHBOURS = 1  # films on each side of the current one whose pixels are kept
AWAITING_BYTES = 160 * 1024 * 1024  # decoded films waiting for their prediction (8 of 3000 px, 16-bit)


@dataclass
class _Request:
    paths: list[str]
    errors: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # names of films that were open already
    shown: bool = False  # its first film is on screen


class DocumentOpener(QObject):
    """Owns the loader thread and the pixel cache; adds what it opens to the session."""

    open_finished = Signal(int, int)  # files opened, files that failed (per request)

    def __init__(self, session: Session, cache: PixelCache | None = None, load_image: Any = None) -> None:
        super().__init__()
        self.session = session
        self.cache = cache or PixelCache()
        self.loader = ImageLoader(load_image)
        self.loader.loaded.connect(self._on_loaded)
        self.loader.failed.connect(self._on_failed)
        self.loader.batch_finished.connect(self._on_batch_finished)
        self._next_request = 1
        self._pending: dict[int, _Request] = {}
        self._batch: list[ImageDocument] = []
        self._batch_paths: dict[str, ImageDocument] = {}  # real path -> document not yet in the session
        self._batch_keys: dict[str, ImageDocument] = {}  # film identity -> document not yet in the session
        self.last_paths: list[str] = []
        self.last_errors: list[str] = []
        self.last_duplicates: list[str] = []
        self._reloading: set[str] = set()
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(BATCH_MS)
        self._flush_timer.timeout.connect(self.flush)
        self._started = False
        self._awaiting: dict[int, int] = {}  # doc id -> bytes it holds in the loader's budget
        self.loader.set_budget(ByteBudget(AWAITING_BYTES))
        ev = session.events
        ev.current_changed.connect(self._on_current_changed)
        ev.document_removed.connect(self._on_removed)
        ev.result_changed.connect(self._on_result)
        ev.model_changed.connect(self._on_model_changed)

    def start(self) -> None:
        if not self._started:
            self._started = True
            self.loader.start()

    def stop(self, timeout: float = 5.0) -> bool:
        self.loader.cancel_all()
        return self.loader.stop(timeout=timeout) if self._started else True

    # -- opening -----------------------------------------------------------------------------------
    def open_paths(self, paths: list[str]) -> int:
        """Open files and folders (searched recursively); returns the request id."""
        request = self._next_request
        self._next_request += 1
        self._pending[request] = _Request(list(paths))
        self.loader.load_paths(request, list(paths))
        return request

    def busy(self) -> bool:
        return bool(self._pending) or bool(self._batch)

    def _on_loaded(self, request: int, path: str, image: XRayImage, prep: Any) -> None:
        if request == ImageLoader.RELOAD:
            self._on_reloaded(path, image, prep)
            return
        session = self.session
        real = os.path.realpath(path)
        key = getattr(prep, "key", "")
        existing = (
            session.find_by_path(path)
            or self._batch_paths.get(real)
            or session.find_by_key(key)
            or self._batch_keys.get(key)
        )
        entry = self._pending.get(request)
        first = entry is not None and not entry.shown
        if entry is not None:
            entry.shown = True
        if existing is not None:  # opened twice (maybe by another path): show the one we have
            self.loader.release(int(image.pixels.nbytes))
            if entry is not None:
                entry.duplicates.append(Path(path).name)
            if first or session.current is None:
                if existing in self._batch:
                    self.flush()
                session.set_current(existing.doc_id)
            return
        doc = ImageDocument(
            doc_id=session.new_doc_id(),
            path=Path(path),
            meta=image.meta,
            shape=image.shape,
            thumbnail=prep.thumbnail,
            window=prep.window,
            default_window=prep.window,
            key=key,
        )
        if session.model.state != FAILED:
            self._awaiting[doc.doc_id] = int(image.pixels.nbytes)  # its pixels stay until it is predicted
        else:
            self.loader.release(int(image.pixels.nbytes))
        self.cache.put(doc, image, prep.renderer, pinned=self._pinned())
        for warning in image.extra.get("warnings", []) or []:
            session.message(f"{doc.name}: {warning}", "warning")
        self._batch.append(doc)
        self._batch_paths[real] = doc
        if key:
            self._batch_keys[key] = doc
        if session.current is None or first:
            self.flush()  # the first image of a request shows at once
            session.set_current(doc.doc_id)
        elif not self._flush_timer.isActive():
            self._flush_timer.start()

    def flush(self) -> None:
        """Hand the documents loaded since the last batch to the session."""
        self._flush_timer.stop()
        batch, self._batch = self._batch, []
        self._batch_paths.clear()
        self._batch_keys.clear()
        if batch:
            self.session.add_documents(batch)
            self.cache.trim(pinned=self._pinned())

    def _on_failed(self, request: int, path: str, message: str) -> None:
        if request == ImageLoader.RELOAD:
            self._reloading.discard(path)
            self.session.message(f"{Path(path).name} cannot be shown again: {message}", "error")
            return
        entry = self._pending.get(request)
        if entry is not None:
            entry.errors.append(message)
        self.session.message(message, "error")

    def _on_batch_finished(self, request: int, ok: int, bad: int) -> None:
        self.flush()
        entry = self._pending.pop(request, None) or _Request([])
        self.last_errors = entry.errors
        self.last_paths = entry.paths
        self.last_duplicates = entry.duplicates
        emit(self.open_finished, ok, bad)

    # -- pixels of evicted documents -----------------------------------------------------------------
    def _pinned(self) -> list[int]:
        return [*self.session.neighbours(NEIGHBOURS), *self._awaiting]

    def _release(self, doc_id: int) -> None:
        amount = self._awaiting.pop(doc_id, None)
        if amount is not None:
            self.loader.release(amount)

    def _on_result(self, doc: ImageDocument) -> None:
        if doc.prediction is not None or doc.error:
            self._release(doc.doc_id)
            self.cache.trim(pinned=self._pinned())

    def _on_removed(self, doc: ImageDocument) -> None:
        self._release(doc.doc_id)
        self.cache.forget(doc)

    def _on_model_changed(self, status: ModelStatus) -> None:
        if status.state == FAILED:  # no prediction is coming: nothing to wait for
            for doc_id in list(self._awaiting):
                self._release(doc_id)
            self.cache.trim(pinned=self._pinned())

    def _on_current_changed(self, doc: ImageDocument | None) -> None:
        if doc is not None:
            self.ensure_pixels(doc)

    def ensure_pixels(self, doc: ImageDocument) -> bool:
        """True when ``doc`` has its pixels; otherwise they are being loaded again (``pixels_changed`` follows)."""
        if doc.loaded:
            self.cache.touch(doc)
            self.cache.trim(pinned=self._pinned())
            return True
        path = str(doc.path)
        if path not in self._reloading:
            self._reloading.add(path)
            self.loader.reload(path)
        return False

    def _on_reloaded(self, path: str, image: XRayImage, prep: Any) -> None:
        self._reloading.discard(path)
        doc = self.session.find_by_path(path)
        if doc is None or doc.loaded:
            return
        self.cache.put(doc, image, prep.renderer, pinned=self._pinned())
        self.session.pixels_loaded(doc)


def open_summary(ok: int, bad: int, errors: list[str], duplicates: list[str] | None = None) -> str:
    """The status bar's line after a drop or File > Open (``ok`` counts the films already open too)."""
    duplicates = duplicates or []
    if duplicates:
        new = ok - len(duplicates)
        again = f"{duplicates[0]} is already open" if len(duplicates) == 1 else f"{len(duplicates)} already open"
        if new == 0 and not bad:
            return again + (" (shown)" if len(duplicates) == 1 else "")
        return f"{open_summary(new, bad, errors)}; {again}"
    images = f"Opened {ok} image{'s' if ok != 1 else ''}"
    if bad == 1 and errors:
        return f"{images}; {errors[0]}"
    if bad:
        return f"{images}; {bad} files could not be opened (see Messages)"
    return images if ok else "No supported images found (PNG, JPEG or DICOM)"
