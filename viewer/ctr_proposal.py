"""The cardiothoracic ratio tool's starting point: calipers proposed from the lung model's masks.

The lung model runs in the inference thread (it is TensorFlow); the proposal comes back on the
GUI thread and becomes a CTR mark the reader adjusts. Without a lung model, or when it finds
no plausible lungs, the reader places both calipers (cardiac width, then inner thoracic width).
"""

from __future__ import annotations

from typing import Any

from inference.annotations import Annotation, propose_ctr
from viewer.document import ImageDocument

__all__ = ["CtrProposer", "lung_ctr_points"]

NO_PROPOSAL = "CTR: drag the maximal cardiac width, then the maximal inner thoracic width (both stay horizontal)"
PROPOSED = "CTR proposed from the lung model: drag the handles to adjust both calipers"


def lung_ctr_points(predictor: Any, image: Any) -> tuple | None:
    """CTR points from the predictor's lung model (inference thread), None without plausible lungs."""
    lungs = getattr(predictor, "lungs", None)
    if lungs is None or image is None:
        return None
    result = lungs.segment(image)
    if not result.plausible:
        return None
    return propose_ctr(result.mask, result.whole_mask)


class CtrProposer:
    """Asks the inference thread for a CTR proposal when the CTR tool is chosen on a film."""

    def __init__(self, controller: Any, tools: Any) -> None:
        self.controller = controller
        self.tools = tools
        self.pending: Any = None  # the lung model's job while it runs

    def propose(self, doc: ImageDocument) -> None:
        existing = next((a for a in self.tools.reads.annotations(doc) if a.kind == "ctr"), None)
        if existing is not None:  # one CTR per film: adjust the one there
            self.tools.select(existing.id)
            return
        if self.pending is not None:
            self.pending.cancel()
        image = doc.image
        self.tools.status("CTR: looking for the lungs…")
        handle = self.controller.submit(
            lambda ctx: lung_ctr_points(ctx.predictor, image), kind="ctr", doc_id=doc.doc_id, front=True
        )
        handle.returned.connect(lambda points: self._returned(doc, points))
        handle.errored.connect(lambda _exc: self._returned(doc, None))
        self.pending = handle

    def _returned(self, doc: ImageDocument, points: tuple | None) -> None:
        self.pending = None
        tools = self.tools
        if tools.tool != "ctr" or tools.doc() is not doc or tools.drawing:
            return  # the reader moved on, or is already placing the calipers
        if any(a.kind == "ctr" for a in tools.reads.annotations(doc)):
            return  # placed by hand while the lung model ran
        if points is None:
            tools.status(NO_PROPOSAL)
            return
        tools.add(Annotation("ctr", points))
        tools.status(PROPOSED)
