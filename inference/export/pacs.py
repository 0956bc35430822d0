"""Writing the DICOM objects a PACS interprets: the Structured Report and the Presentation State.

Both refer to the source film through :func:`inference.export.reference.reference_header` (its
own UIDs and patient/study modules with identifiers kept, the Secondary Capture's pseudonymous
ones without), carry this application's marker (Manufacturer "CXR Viewer") and are written
atomically like every export. Only DICOM sources have them (see ``dicom_object_refusal``).

* SR (:func:`write_sr`): the AI result (finding, each class's probability, the model as the
  algorithm), the reader's verdict and impression, and each measurement with its region.
* GSPS (:func:`write_gsps`): the reader's marks and values, the AI result as text and the
  heat map's peak (when a heat map was computed), the displayed window and polarity.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from inference.annotations import Annotation, spacing_of
from inference.display import initial_window
from inference.export.facts import result_lines
from inference.export.files import atomic_write
from inference.export.marks import measured
from inference.export.options import DISCLAIMER, ExportOptions
from inference.export.presentation_state import presentation_state
from inference.export.reference import mark_deidentified, reference_header
from inference.export.structured_report import AiFinding, structured_report
from inference.image import XRayImage
from inference.predictor import Explanation, Prediction
from inference.verdict import Verdict

__all__ = ["ai_finding", "write_gsps", "write_sr"]


def ai_finding(prediction: Prediction) -> AiFinding:
    """What the SR records of the AI: its class, or none with the reason when it abstained."""
    return AiFinding(
        label=None if prediction.abstained else prediction.label,
        probabilities=dict(prediction.probabilities),
        model_name=prediction.model_name,
        model_version=prediction.model_version,
        abstain_reason=prediction.abstain_reason or "",
    )


def _save(path: str | os.PathLike[str], ds, options: ExportOptions) -> Path:
    mark_deidentified(ds, options)
    return atomic_write(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True), options.overwrite)


def write_sr(
    path: str | os.PathLike[str],
    image: XRayImage,
    prediction: Prediction | None,
    options: ExportOptions,
    annotations: Sequence[Annotation] = (),
    verdict: Verdict | None = None,
) -> Path:
    """The film's TID 1500 Comprehensive SR (AI result, reader's verdict, measurements)."""
    reference = reference_header(image, options)
    marks = [(a, m) for a, m in measured(image, annotations) if m is not None]
    sr = structured_report(
        reference,
        None if prediction is None else ai_finding(prediction),
        verdict,
        marks,
        spacing_of(image.meta),
    )
    return _save(path, sr, options)


def write_gsps(
    path: str | os.PathLike[str],
    image: XRayImage,
    prediction: Prediction | None,
    explanation: Explanation | None,
    options: ExportOptions,
    annotations: Sequence[Annotation] = (),
    verdict: Verdict | None = None,
) -> Path:
    """The film's GSPS: the reader's marks and values, the AI result as text, the window shown."""
    reference = reference_header(image, options)
    ai_text = ""
    if prediction is not None:
        said = result_lines(prediction, explanation)[: 2 if prediction.abstained else 1]  # and the reason
        ai_text = f"{'; '.join(said)} ({DISCLAIMER.lower()})"
    peak = explanation.peak() if explanation is not None and options.include_heatmap else None
    state = presentation_state(
        reference,
        measured(image, annotations),
        options.window or initial_window(image),
        reader=verdict.reader if verdict is not None else "",
        ai_text=ai_text,
        ai_peak=None if peak is None else (float(peak[0]), float(peak[1])),
        inverse=options.invert != image.meta.inverted,
    )
    return _save(path, state, options)
