"""The facts an export states about the input file, the model and the result, as text.

One place decides what is said and, above all, what is left out: patient name, ID and
birth date appear only with ``keep_identifiers``.
"""

from __future__ import annotations

from pathlib import Path

from inference.dicom_text import dicom_date, person_name
from inference.export.privacy import age_text, printable
from inference.image import XRayImage
from inference.predictor import NO_AI_RESULT, Explanation, Prediction

__all__ = ["IDENTIFIER_KEYWORDS", "caption", "input_facts", "identifiers", "result_lines", "format_probability"]

IDENTIFIER_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate")
_IDENTIFIER_LABELS = {"PatientName": "Patient name", "PatientID": "Patient ID", "PatientBirthDate": "Birth date"}


def format_probability(p: float) -> str:
    """``"87.3%"``; extreme values keep a "<"/">" so that 99.96% is not shown as a certain 100.0%."""
    pct = 100.0 * float(p)
    if pct >= 99.95:
        return ">99.9%"
    if 0.0 < pct < 0.05:
        return "<0.1%"
    return f"{pct:.1f}%"


def identifiers(image: XRayImage, keep_identifiers: bool) -> dict[str, str]:
    """Patient name, ID and birth date of ``image`` when they may be exported, else nothing."""
    if not keep_identifiers:
        return {}
    return {k: v for k in IDENTIFIER_KEYWORDS if (v := str(image.meta.patient.get(k, "")).strip())}


def input_facts(
    image: XRayImage, keep_identifiers: bool = False, file_label: str | None = None
) -> list[tuple[str, str]]:
    """(label, value) pairs describing the input file, in reading order; empty values left out.

    Without ``keep_identifiers`` the study date and description are left out and an age over
    89 reads "90+ years" (see :mod:`inference.export.privacy`). ``file_label`` replaces the
    file name (a pseudonym).
    """
    m = image.meta
    facts: list[tuple[str, str]] = [
        ("File", printable(file_label if file_label is not None else Path(m.path).name)),
        ("Format", m.format + (f" ({m.transfer_syntax})" if m.transfer_syntax else "")),
        ("Size", f"{m.width} x {m.height} px"),
        ("Bits stored", str(m.bits_stored)),
        ("Modality", m.modality),
        ("View", m.view_position),
        ("Photometric", m.photometric if m.format == "DICOM" else ""),
    ]
    if m.pixel_spacing:
        where = " at detector" if m.spacing_source == "ImagerPixelSpacing" else ""
        facts.append(("Pixel spacing", f"{m.pixel_spacing[0]:.3g} x {m.pixel_spacing[1]:.3g} mm{where}"))
    if m.number_of_frames > 1:
        facts.append(("Frame", f"{m.frame_index + 1} of {m.number_of_frames}"))
    if keep_identifiers:
        facts += [
            ("Study date", dicom_date(m.study.get("StudyDate", ""))),
            ("Study", m.study.get("StudyDescription", "")),
        ]
    sex = m.patient_sex if m.patient_sex in ("M", "F", "O") or keep_identifiers else ""
    facts.append(("Sex / age", " / ".join(v for v in (sex, age_text(m.patient_age, keep_identifiers)) if v)))
    for key, value in identifiers(image, keep_identifiers).items():
        readable = {"PatientName": person_name, "PatientBirthDate": dicom_date}.get(key, str)(value)
        facts.append((_IDENTIFIER_LABELS[key], readable))
    return [(k, v) for k, v in facts if v]


def caption(
    prediction: Prediction, explanation: Explanation | None, show_abstained_probabilities: bool = False
) -> list[tuple[str, str]]:
    """The result as (role, text) lines; roles: "title", "reason", "probabilities", "muted", "model", "warning".

    When the model abstained the title is "No AI result" and the reason follows in full; the
    probabilities are left out unless asked for, and then they are "muted" (shown greyed).
    """
    probabilities = "   ".join(f"{name} {format_probability(p)}" for name, p in prediction.probabilities.items())
    if prediction.abstained:
        lines = [("title", f"AI result: {NO_AI_RESULT}"), ("reason", f"Reason: {prediction.abstain_reason}")]
        if show_abstained_probabilities:
            lines.append(("muted", f"Not used for a result: {probabilities}"))
    else:
        lines = [("title", f"AI result: {prediction.label} ({format_probability(prediction.confidence)})")]
        lines.append(("probabilities", probabilities))
    model = f"Model {prediction.model_name} {prediction.model_version}"
    if explanation is not None:
        method = "Grad-CAM++" if explanation.method == "gradcam++" else "Grad-CAM"
        model += f"   |   {method} for {explanation.class_name}"
        if explanation.lung_heat_fraction is not None:
            model += f", {100 * explanation.lung_heat_fraction:.0f}% of heat in the lungs"
    lines.append(("model", model))
    if prediction.lung_warning:
        lines.append(("warning", f"Warning: {prediction.lung_warning}"))
    return lines


def result_lines(
    prediction: Prediction, explanation: Explanation | None, show_abstained_probabilities: bool = False
) -> list[str]:
    """The result in a few short lines: top class (or "No AI result" and why), probabilities, model, heat map."""
    return [text for _role, text in caption(prediction, explanation, show_abstained_probabilities)]
