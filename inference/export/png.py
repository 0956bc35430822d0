"""Annotated PNG export."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from inference.annotations import Annotation
from inference.export.annotate import render_annotated
from inference.export.facts import result_lines
from inference.export.files import atomic_write
from inference.export.marker import SOFTWARE
from inference.export.options import DISCLAIMER, ExportOptions
from inference.image import XRayImage
from inference.predictor import Explanation, Prediction

__all__ = ["write_png", "save_rgb_png"]


def save_rgb_png(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    text: dict[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an RGB (or gray) uint8 array as PNG, atomically, with optional text chunks."""
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_itxt(key, value)

    def write(tmp: Path) -> None:
        # Level 4 is within a few percent of level 9 in size on radiographs and several times faster.
        Image.fromarray(rgb).save(tmp, format="PNG", pnginfo=info, compress_level=4)

    return atomic_write(path, write, overwrite)


def write_png(
    path: str | os.PathLike[str],
    image: XRayImage,
    prediction: Prediction,
    explanation: Explanation | None = None,
    options: ExportOptions | None = None,
    annotations: Sequence[Annotation] = (),
) -> Path:
    """The annotated image (see :func:`inference.export.annotate.render_annotated`) as a PNG file.

    Its ``Description`` text chunk holds the result as text ("No AI result" and the reason when
    the model abstained), so a program can read what the picture says.
    """
    options = options or ExportOptions()
    rgb = render_annotated(image, prediction, explanation, options, annotations)
    text = {
        "Software": SOFTWARE,  # the marker that says this file may be replaced by a later export
        "Disclaimer": DISCLAIMER,
        "Description": "\n".join(result_lines(prediction, explanation, options.show_abstained_probabilities)),
    }
    return save_rgb_png(path, rgb, text, options.overwrite)
