"""What the canvas corners say, as reading viewers lay it out (no Qt here).

Top left: the patient (name, ID, birth date, age/sex) and the file; top right: the study
(date, description, view position, modality, institution) and the AI result; bottom left: the
window, zoom, view changes and pixel spacing; bottom right: the research-use notice.
"Hide identifiers on screen" drops the patient's name, ID and birth date, and the file name
(file names often carry them); age and sex stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from inference.annotations import spacing_of
from inference.dicom_text import dicom_date, person_name
from inference.image import ImageMeta, Window

__all__ = ["ViewState", "corner_text", "spacing_text", "person_name", "dicom_date", "age_sex"]

RESEARCH_NOTICE = "Research use only"


@dataclass(frozen=True)
class ViewState:
    """What the canvas shows now, for the bottom-left corner."""

    window: Window
    zoom: float  # screen pixels per image pixel
    orientation: str = ""  # the view's rotation/flips in words ("flipped vertically"), "" when none
    inverted: bool = False


def age_sex(meta: ImageMeta) -> str:
    """``045Y`` and ``F`` as ``45 Y · F``; empty when neither is stated."""
    age = meta.patient_age.strip()
    if len(age) == 4 and age[:3].isdigit() and age[3] in "DWMY":
        age = f"{int(age[:3])} {age[3]}"
    sex = meta.patient_sex.strip()
    return " · ".join(p for p in (age, sex) if p)


def spacing_text(meta: ImageMeta) -> str:
    """The pixel spacing as the corner shows it, saying when it is at the detector or not stated."""
    spacing = spacing_of(meta)
    if not spacing.known:
        return "Pixel spacing not stated: lengths in px"
    row, col = spacing.row_mm, spacing.col_mm
    size = f"{col:.4g} mm" if row == col else f"{col:.4g} × {row:.4g} mm"
    return f"Pixel {size}" + (" at detector" if "detector" in spacing.unit else "")


def corner_text(
    meta: ImageMeta,
    file_name: str,
    description: str,
    view: ViewState,
    *,
    hide_identifiers: bool = False,
    ai_lines: Sequence[str] = (),
) -> dict[str, list[str]]:
    """The four corners' lines (keys ``top_left``, ``top_right``, ``bottom_left``, ``bottom_right``)."""
    patient, study = meta.patient, meta.study
    top_left: list[str] = []
    if not hide_identifiers:
        name = person_name(patient.get("PatientName", ""))
        top_left += [name] if name else []
        top_left += [f"ID {patient['PatientID']}"] if patient.get("PatientID") else []
        birth = dicom_date(patient.get("PatientBirthDate", ""))
        top_left += [f"Born {birth}"] if birth else []
    top_left += [age_sex(meta)] if age_sex(meta) else []
    top_left += [] if hide_identifiers else [file_name]
    top_left.append(description)

    top_right: list[str] = []
    date = dicom_date(study.get("StudyDate", ""))
    top_right += [date] if date else []
    top_right += [study["StudyDescription"]] if study.get("StudyDescription") else []
    view_modality = " ".join(p for p in (meta.view_position, meta.modality) if p)
    top_right += [view_modality] if view_modality else []
    top_right += [study["InstitutionName"]] if study.get("InstitutionName") else []
    top_right += list(ai_lines)

    window = view.window
    changes = [view.orientation] if view.orientation else []
    changes += ["inverted"] * view.inverted
    bottom_left = [f"C {window.center:.5g}  W {window.width:.5g}", f"Zoom {view.zoom * 100:.0f}%"]
    bottom_left += [", ".join(changes)] if changes else []
    bottom_left.append(spacing_text(meta))
    return {"top_left": top_left, "top_right": top_right, "bottom_left": bottom_left, "bottom_right": [RESEARCH_NOTICE]}
