"""Which documents keep their decoded pixels: the current film and the few seen last (no Qt here).

A 3000 px 16-bit film costs about 19 MB decoded (pixels plus the renderer's preview); three
hundred of them would not fit in a laptop's memory. The cache keeps at most ``capacity``
documents' pixels (and no more than ``max_bytes``), least recently used first out; the
documents named in ``pinned`` (the current one and its neighbours) are never dropped.
Evicting only clears ``doc.image`` and ``doc.renderer``: metadata, thumbnail, window and
results stay, and the window loads the pixels again from ``doc.path`` when it needs them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from inference.image import XRayImage
from viewer.document import ImageDocument

__all__ = ["PixelCache", "DEFAULT_CAPACITY", "DEFAULT_MAX_BYTES"]

DEFAULT_CAPACITY = 64  # small films: browsing them never waits for a reload
DEFAULT_MAX_BYTES = 256 * 1024 * 1024  # about twelve 3000 px 16-bit films


def _nbytes(doc: ImageDocument) -> int:
    total = 0
    if doc.image is not None:
        total += int(doc.image.pixels.nbytes)
    renderer = doc.renderer
    preview = getattr(renderer, "preview", None)
    if preview is not None and preview is not getattr(renderer, "pixels", None):
        total += int(preview.nbytes)
    return total


class PixelCache:
    """Least-recently-used owner of decoded pixels; see the module docstring."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.capacity = max(1, int(capacity))
        self.max_bytes = int(max_bytes)
        self._docs: OrderedDict[int, ImageDocument] = OrderedDict()
        self.evictions = 0

    def put(self, doc: ImageDocument, image: XRayImage, renderer: Any, pinned: Iterable[int] = ()) -> list[int]:
        """Give ``doc`` its pixels, make it the most recent one; returns the doc ids evicted."""
        doc.image = image
        doc.renderer = renderer
        self._docs[doc.doc_id] = doc
        self._docs.move_to_end(doc.doc_id)
        return self.trim(pinned=(doc.doc_id, *pinned))

    def touch(self, doc: ImageDocument) -> None:
        if doc.doc_id in self._docs:
            self._docs.move_to_end(doc.doc_id)

    def forget(self, doc: ImageDocument) -> None:
        """A closed document: drop its pixels now."""
        self._docs.pop(doc.doc_id, None)
        doc.image = None
        doc.renderer = None

    def trim(self, pinned: Iterable[int] = ()) -> list[int]:
        """Evict the least recently used unpinned documents until within capacity and bytes."""
        count, total = len(self._docs), self.bytes()
        if count <= self.capacity and total <= self.max_bytes:
            return []  # the common case, in O(resident documents)
        keep = set(pinned)
        evicted: list[int] = []
        for doc_id in list(self._docs):
            if count <= self.capacity and total <= self.max_bytes:
                break
            if doc_id in keep:
                continue
            doc = self._docs.pop(doc_id)
            total -= _nbytes(doc)
            count -= 1
            doc.image = None
            doc.renderer = None
            evicted.append(doc_id)
        self.evictions += len(evicted)
        return evicted

    def resident(self) -> list[int]:
        """Doc ids holding pixels, least recently used first."""
        return list(self._docs)

    def bytes(self) -> int:
        return sum(_nbytes(d) for d in self._docs.values())

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._docs

    def __len__(self) -> int:
        return len(self._docs)
