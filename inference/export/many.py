"""Writing several export formats of one result at once (the ``predict`` command, the viewer's "export all")."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from inference.bundle import BundleInfo
from inference.export.dicom_sc import write_dicom_sc
from inference.export.options import ExportOptions
from inference.export.pdf import write_pdf
from inference.export.png import write_png
from inference.image import XRayImage
from inference.predictor import Explanation, Prediction

__all__ = ["FORMATS", "parse_formats", "export_all"]

# Format name -> file suffix.
FORMATS = {"png": ".png", "pdf": ".pdf", "dcm": ".dcm"}


def parse_formats(text: str | Iterable[str]) -> list[str]:
    """``"png,pdf"`` (or a list) to checked format names in the order given; ValueError names a bad one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [s.strip().lower().lstrip(".") for s in items if s.strip()]
    names = ["dcm" if n in ("dicom", "dcm") else n for n in names]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise ValueError(f"unknown export format {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def export_all(
    base: str | os.PathLike[str],
    image: XRayImage,
    prediction: Prediction,
    explanation: Explanation | None = None,
    formats: Iterable[str] = tuple(FORMATS),
    options: ExportOptions | None = None,
    model_info: BundleInfo | None = None,
) -> list[Path]:
    """Write ``base`` + ``.png``/``.pdf``/``.dcm`` for each format; returns the files written.

    Stops at the first failure (an :class:`~inference.export.files.ExportError`); files
    already written stay, each of them complete.
    """
    options = options or ExportOptions()
    base = Path(base)
    written = []
    for fmt in parse_formats(formats):
        target = base.with_name(base.name + FORMATS[fmt])
        if fmt == "png":
            written.append(write_png(target, image, prediction, explanation, options))
        elif fmt == "pdf":
            written.append(write_pdf(target, image, prediction, explanation, options, model_info))
        else:
            written.append(write_dicom_sc(target, image, prediction, explanation, options))
    return written
