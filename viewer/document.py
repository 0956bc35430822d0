"""One opened image and everything the viewer knows about it (no widgets here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference.image import Window, XRayImage

__all__ = ["ImageDocument", "describe_image"]


@dataclass(eq=False)
class ImageDocument:
    """An opened image, its reading state (window, invert) and its AI results.

    ``prediction`` and ``explanations`` belong to the model generation in ``generation``;
    a model switch clears them.
    """

    doc_id: int
    path: Path
    image: XRayImage
    thumbnail: np.ndarray  # uint8 gray
    window: Window  # the window shown now
    default_window: Window  # key 0 / Esc: the file's or the automatic window
    renderer: Any = None  # viewer.render.Renderer, prepared in the loader thread
    invert: bool = False
    generation: int = -1
    prediction: Any = None  # inference.predictor.Prediction
    error: str = ""  # why the prediction failed, for the results panel
    explanations: dict[tuple[int, str], Any] = field(default_factory=dict)  # (class index, method) -> Explanation
    pending_explain: set[tuple[int, str]] = field(default_factory=set)
    presets: list | None = None  # viewer.presets.WindowPreset, computed on first use

    @property
    def name(self) -> str:
        return self.path.name

    def clear_results(self, generation: int) -> None:
        self.generation = generation
        self.prediction = None
        self.error = ""
        self.explanations.clear()
        self.pending_explain.clear()


def describe_image(image: XRayImage) -> str:
    """One line about the file for the corner annotation: format, size, depth, modality, view."""
    meta = image.meta
    parts = [meta.format, f"{meta.width}×{meta.height}", f"{meta.bits_stored}-bit"]
    if meta.modality:
        parts.append(meta.modality)
    if meta.view_position:
        parts.append(meta.view_position)
    if meta.photometric.upper() == "MONOCHROME1":
        parts.append("MONOCHROME1")
    return " · ".join(parts)
