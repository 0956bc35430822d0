"""The header of the image a DICOM export refers to, built one way for the SR, the GSPS and the SC.

A Structured Report and a Presentation State do not hold the film: they *point at* it (Study,
Series and SOP Instance UIDs) and repeat its patient and study modules, so that a PACS files
them in the film's study. :func:`reference_header` builds that header from what the loader
kept of the source DICOM (:class:`inference.image.ImageMeta`: its tags, patient and study):

* identifiers kept: the source's own UIDs, patient (name, ID, birth date, sex, age) and study
  (date, time, accession number, study ID, referring physician);
* identifiers off (the default): the same pseudonymised copy the Secondary Capture uses
  (:func:`inference.export.privacy.pseudonymous_uid` of every UID with the installation's salt,
  type 2 identifiers present but empty, an age over 89 removed), so that the SR, GSPS and SC of
  one film always name one study, and the same study on every export from this installation.

A PNG or JPEG has no DICOM object in any PACS to refer to: :func:`dicom_object_refusal` says so
and the SR and GSPS formats are refused for it (its marks and AI result still go into the PNG,
the PDF and the Secondary Capture, which carry them burned in).
"""

from __future__ import annotations

from pathlib import Path

from inference.export.options import ExportOptions
from inference.export.privacy import age_years, printable, pseudonymous_uid
from inference.image import XRayImage
from inference.loading import import_pydicom

import_pydicom()

from pydicom.dataset import Dataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402

__all__ = [
    "DEIDENTIFICATION_METHOD",
    "DICOM_OBJECT_FORMATS",
    "dicom_object_refusal",
    "mark_deidentified",
    "reference_header",
    "source_tag",
]

DICOM_OBJECT_FORMATS = ("sr", "gsps")  # formats that refer to the source DICOM instead of holding pixels
DEIDENTIFICATION_METHOD = "PS3.15 Basic Profile, Retain Patient Characteristics"
_NAMES = {"sr": "structured report (SR)", "gsps": "presentation state (GSPS)"}
# Study attributes that follow an export into the source's study when identifiers are kept;
# without identifiers the type 2 ones are present and empty (PS3.15 action Z).
_STUDY_KEPT = ("StudyID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName")


def source_tag(image: XRayImage, keyword: str) -> str:
    """The text value of a top-level tag of the source DICOM ("" when absent)."""
    for _tag, kw, _vr, value in image.meta.tags:
        if kw == keyword:
            return value.strip()
    return ""


def dicom_object_refusal(image: XRayImage, fmt: str) -> str:
    """Why ``fmt`` (sr/gsps) cannot be written for ``image``, or "" when it can."""
    if fmt not in DICOM_OBJECT_FORMATS:
        return ""
    name = printable(Path(image.meta.path).name) or "this image"
    what = _NAMES[fmt]
    if image.meta.format != "DICOM":
        return (
            f"{name} is a {image.meta.format} file: a {what} refers to a DICOM image in a PACS and there is none "
            "to refer to. Its marks and AI result go into the PNG, PDF and DICOM Secondary Capture (dcm) exports."
        )
    if not (source_tag(image, "SOPInstanceUID") and source_tag(image, "SOPClassUID")):
        return f"{name} has no SOP Instance UID or SOP Class UID, so a {what} could not refer to it."
    if not image.meta.study.get("StudyInstanceUID"):
        return f"{name} has no Study Instance UID, so a {what} could not be placed in its study."
    return ""


def reference_header(image: XRayImage, options: ExportOptions) -> Dataset:
    """The header SR and GSPS refer to (raises ValueError when :func:`dicom_object_refusal` says why)."""
    for fmt in DICOM_OBJECT_FORMATS:
        if why := dicom_object_refusal(image, fmt):
            raise ValueError(why)
    meta, study = image.meta, image.meta.study
    keep = options.keep_identifiers
    salt = "" if keep else options.effective_salt()

    def uid(value: str) -> str:
        return value if keep else pseudonymous_uid(value, salt)

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8, as every export writes it
    ds.SOPClassUID = source_tag(image, "SOPClassUID")
    ds.SOPInstanceUID = uid(source_tag(image, "SOPInstanceUID"))
    ds.StudyInstanceUID = uid(study["StudyInstanceUID"])
    series = study.get("SeriesInstanceUID", "")
    # A series UID is type 1 in any image; a broken source without one still gets a stable stand-in.
    ds.SeriesInstanceUID = uid(series) if series else pseudonymous_uid("series:" + study["StudyInstanceUID"], salt)
    ds.Modality = study.get("Modality") or meta.modality or "OT"
    ds.Rows, ds.Columns = int(meta.height), int(meta.width)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = meta.photometric or "MONOCHROME2"
    slope, intercept = source_tag(image, "RescaleSlope"), source_tag(image, "RescaleIntercept")
    if slope and intercept:  # the modality LUT a presentation state applies before its window
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept

    patient = meta.patient if keep else {}
    ds.PatientName = patient.get("PatientName", "")
    ds.PatientID = patient.get("PatientID", "")
    ds.PatientBirthDate = patient.get("PatientBirthDate", "")
    ds.PatientSex = meta.patient_sex if meta.patient_sex in ("M", "F", "O") else ""
    age = meta.patient_age.strip()
    years = age_years(age)
    if years is not None and (keep or years <= 89):
        ds.PatientAge = age
    for keyword in _STUDY_KEPT:
        setattr(ds, keyword, study.get(keyword, "") if keep else "")
    if keep and study.get("StudyDescription"):
        ds.StudyDescription = study["StudyDescription"]
    return ds


def mark_deidentified(ds: Dataset, options: ExportOptions) -> Dataset:
    """Say in ``ds`` that identifiers were removed (PS3.15), when they were; returns ``ds``."""
    if options.keep_identifiers:
        return ds
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    codes = []
    for value, meaning in (
        ("113100", "Basic Application Confidentiality Profile"),
        ("113108", "Retain Patient Characteristics Option"),
    ):
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, "DCM", meaning
        codes.append(code)
    ds.DeidentificationMethodCodeSequence = Sequence(codes)
    return ds
