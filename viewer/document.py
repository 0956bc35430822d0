"""One opened image and everything the viewer knows about it (no widgets here).

A document outlives its pixels: ``image`` and ``renderer`` are dropped by the
:class:`~viewer.pixel_cache.PixelCache` when the film is not among the recently shown ones,
and loaded again from ``path`` (off the GUI thread) when it is shown again. What stays for
every document is small: metadata, thumbnail, window, results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference.image import ImageMeta, Window, XRayImage

__all__ = ["ImageDocument", "describe_meta"]


@dataclass(eq=False)
class ImageDocument:
    """An opened image, its reading state (window, invert) and its AI results.

    ``prediction`` and ``explanations`` belong to the active model; a model switch clears them
    (through :meth:`viewer.session.Session.set_model_loading`).
    """

    doc_id: int
    path: Path
    meta: ImageMeta
    shape: tuple[int, int]  # (height, width) of the pixels, known even when they are evicted
    thumbnail: np.ndarray  # uint8 gray
    window: Window  # the window shown now
    default_window: Window  # key 0 / Esc: the file's or the automatic window
    image: XRayImage | None = None  # None while evicted (see PixelCache)
    renderer: Any = None  # viewer.render.Renderer, prepared in the loader thread; None while evicted
    invert: bool = False
    prediction: Any = None  # inference.predictor.Prediction
    error: str = ""  # why the prediction failed, for the results panel
    explanations: dict[tuple[int, str], Any] = field(default_factory=dict)  # (class, method) -> Explanation
    key: str = ""  # the film's identity (inference.sidecar.film_key): one document per film
    presets: list | None = None  # viewer.presets.WindowPreset, computed on first use

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def loaded(self) -> bool:
        return self.image is not None

    @property
    def description(self) -> str:
        return describe_meta(self.meta, self.shape)

    def clear_results(self) -> None:
        self.prediction = None
        self.error = ""
        self.explanations.clear()


def describe_meta(meta: ImageMeta, shape: tuple[int, int] | None = None) -> str:
    """One line about the file for the corner annotation: format, size, depth, modality, view."""
    height, width = shape if shape is not None else (meta.height, meta.width)
    parts = [meta.format, f"{width}×{height}", f"{meta.bits_stored}-bit"]
    if meta.modality:
        parts.append(meta.modality)
    if meta.view_position:
        parts.append(meta.view_position)
    if meta.photometric.upper() == "MONOCHROME1":
        parts.append("MONOCHROME1")
    return " · ".join(parts)
