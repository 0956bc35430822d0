"""Is this film one the model may answer for? Rules read from the file itself, before any model runs.

The classifier was trained on frontal human chest radiographs only. A film that says otherwise in
its DICOM header (an animal, a lateral view, another body part, another modality) or whose pixels
carry no picture (a nearly constant image) gets "No AI result" with the reason instead of a class.
Each rule returns a sentence for the radiologist; an empty list means "in scope as far as the file
tells". The lung-field and out-of-distribution gates need a model and live with the predictor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np

from inference.image import ImageMeta, XRayImage

__all__ = [
    "RADIOGRAPH_MODALITIES",
    "tag_values",
    "dicom_scope_reasons",
    "pixel_scope_reasons",
    "scope_reasons",
]

# Projection radiographs (CR, DX, the retired DR), and the two a converted or scanned film
# often carries (OT, SC); an empty modality is a PNG or JPEG, which says nothing.
RADIOGRAPH_MODALITIES = frozenset({"", "CR", "DX", "DR", "OT", "SC"})
_LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL", "LLD", "RLD", "LLO", "RLO"})
_CHEST_PARTS = frozenset({"CHEST", "THORAX", "LUNG", "LUNGS", "TORSO", "CHEST_TO_PELVIS", "BREAST"})
# Tags that exist only for animals (PS3.3 C.7.1.1: Patient Species, Breed, Responsible Person).
_ANIMAL_TAGS = (
    "PatientSpeciesDescription",
    "PatientSpeciesCodeSequence",
    "PatientBreedDescription",
    "PatientBreedCodeSequence",
    "BreedRegistrationSequence",
    "ResponsiblePerson",
    "ResponsibleOrganization",
)
# Free-text tags in which a veterinary film names its species or view.
_DESCRIPTIVE_TAGS = (
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "AcquisitionDeviceProcessingDescription",
    "BodyPartExamined",
    "PerformedProcedureStepDescription",
)
_ANIMAL_WORDS = re.compile(r"\b(CANINE|FELINE|EQUINE|BOVINE|PORCINE|OVINE|VETERINAR\w*|DOG|CAT|HORSE)\b")
_LATERAL_WORDS = re.compile(r"\b(LAT|LATERAL)\b")
_EMPTY = {"", "<0 items>"}

# A film whose middle 98% of pixels spans less than this share of the values it can hold shows nothing.
_MIN_SPREAD = 0.01


def tag_values(meta: ImageMeta) -> dict[str, str]:
    """Keyword -> value text of the file's top-level DICOM elements (empty for PNG/JPEG)."""
    return {keyword: value.strip() for _tag, keyword, _vr, value in meta.tags if keyword}


def _upper(tags: Mapping[str, str], keyword: str) -> str:
    return tags.get(keyword, "").strip().upper()


def dicom_scope_reasons(meta: ImageMeta) -> list[str]:
    """Why the header says this is not a frontal human chest radiograph (empty: nothing says so)."""
    tags = tag_values(meta)
    reasons: list[str] = []

    animal = [k for k in _ANIMAL_TAGS if tags.get(k, "") not in _EMPTY]
    if animal:
        reasons.append(f"The file describes an animal ({animal[0]}); the model reads human chest films only.")
    else:
        words = _words_in(tags, _DESCRIPTIVE_TAGS, _ANIMAL_WORDS)
        if words:
            reasons.append(f"The file describes an animal ('{words[0]}'); the model reads human chest films only.")

    view = (meta.view_position or tags.get("ViewPosition", "")).strip().upper()
    if view in _LATERAL_VIEWS:
        reasons.append(f"Lateral view (View Position {view}); the model reads frontal (PA/AP) films only.")
    elif not view and _words_in(tags, _DESCRIPTIVE_TAGS, _LATERAL_WORDS):
        reasons.append("The file describes a lateral view; the model reads frontal (PA/AP) films only.")

    part = _upper(tags, "BodyPartExamined")
    if part and part not in _CHEST_PARTS:
        reasons.append(f"Body Part Examined is {part}, not the chest.")

    modality = (meta.modality or tags.get("Modality", "")).strip().upper()
    if modality not in RADIOGRAPH_MODALITIES:
        reasons.append(f"Modality {modality} is not a projection radiograph.")
    return reasons


def _words_in(tags: Mapping[str, str], keywords: Iterable[str], pattern: re.Pattern[str]) -> list[str]:
    found = []
    for keyword in keywords:
        found += [m.group(0) for m in pattern.finditer(_upper(tags, keyword).replace("_", " "))]
    return found


def pixel_scope_reasons(pixels: np.ndarray, bits_stored: int = 0) -> list[str]:
    """Why the pixels cannot be a radiograph: non-finite values, or a (nearly) constant image.

    "Nearly constant" means the middle 98% of the pixels span under 1% of the values the file can
    hold (``2**bits_stored``; the image's own range for float pixels): a flat field with noise, a
    blank page. Judged on the stored values, so a misleading display window cannot trigger it.
    """
    values = np.asarray(pixels)
    if values.size == 0:
        return ["The image is empty."]
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        return ["The image holds values that are not numbers (NaN or infinity)."]
    step = max(1, int(np.sqrt(values.size / 250_000)))  # a quarter-million-pixel sample is plenty
    sample = values[::step, ::step].astype(np.float64, copy=False)
    lo, hi = float(sample.min()), float(sample.max())
    if hi <= lo:
        return ["The image is a single flat value; there is nothing to read."]
    p1, p99 = np.percentile(sample, [1, 99])
    full = float(2**bits_stored) if values.dtype.kind in "iub" and bits_stored > 0 else hi - lo
    if (p99 - p1) < _MIN_SPREAD * full:
        return ["The image is nearly uniform (98% of its pixels lie within 1% of its value range); nothing to read."]
    return []


def scope_reasons(image: XRayImage) -> list[str]:
    """Every reason, from the header and the pixels, why no AI result should be given for ``image``."""
    return dicom_scope_reasons(image.meta) + pixel_scope_reasons(image.pixels, image.meta.bits_stored)
