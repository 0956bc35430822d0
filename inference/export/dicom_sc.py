"""DICOM Secondary Capture of the annotated image, to send the AI result back to a PACS.

The capture joins the source's study as a new series with new UIDs, so a PACS files it next
to the original films and nobody mistakes it for one: Image Type DERIVED\\SECONDARY,
Conversion Type "WSD" (workstation), burned-in annotation, and a series description that
says what it is.

With identifiers kept, the study attributes are the source's (Study Instance UID, accession
number, study date...). With identifiers off (the default) the capture follows the DICOM
PS3.15 Basic Application Level Confidentiality Profile with Retain Patient Characteristics:
patient name/ID/birth date, study date/time, accession number, study ID and referring
physician are present but empty (type 2), study description and institution are absent,
the study UID and the referenced source UIDs are pseudonymous (salted, consistent: the
exports of one study still group), an age over 89 is removed, no private tags, and Patient
Identity Removed / De-identification Method say so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence as SequenceOf
from datetime import datetime
from pathlib import Path

import numpy as np

from inference.annotations import Annotation
from inference.export.annotate import render_annotated
from inference.export.facts import identifiers, result_lines
from inference.export.files import atomic_write
from inference.export.marker import SOFTWARE
from inference.export.options import DISCLAIMER, ExportOptions
from inference.export.privacy import age_years, pseudonymous_uid
from inference.export.reference import DEIDENTIFICATION_METHOD, mark_deidentified, source_tag
from inference.image import XRayImage
from inference.loading import import_pydicom
from inference.predictor import Explanation, Prediction

import_pydicom()  # before the imports below: another thread may be importing pydicom right now

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid  # noqa: E402

__all__ = ["DEIDENTIFICATION_METHOD", "SECONDARY_CAPTURE", "SERIES_DESCRIPTION", "secondary_capture", "write_dicom_sc"]

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
SERIES_DESCRIPTION = "AI result (derived), research use only"
SERIES_NUMBER = 9901  # high, so that the capture sorts after the acquired series in a PACS
# Study-level attributes that follow the capture into the source's study (identifiers kept).
_STUDY_KEYWORDS = ("StudyID", "StudyDate", "StudyTime", "AccessionNumber", "StudyDescription")
# Type 2 study attributes: present and empty when identifiers are off (PS3.15 action Z).
_STUDY_TYPE2 = ("StudyID", "StudyDate", "StudyTime", "AccessionNumber")


def secondary_capture(
    rgb: np.ndarray,
    image: XRayImage,
    prediction: Prediction,
    explanation: Explanation | None = None,
    options: ExportOptions | None = None,
    now: datetime | None = None,
) -> Dataset:
    """The Secondary Capture data set holding ``rgb`` (uint8 ``(H, W, 3)``) for ``image``'s study."""
    options = options or ExportOptions()
    now = now or datetime.now()
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image, got shape {rgb.shape}")
    sop_uid = generate_uid()
    study = image.meta.study
    from_dicom = image.meta.format == "DICOM"
    keep = options.keep_identifiers

    def uid(value: str) -> str:
        return value if keep else pseudonymous_uid(value, options.effective_salt())

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "CXRVIEWER"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names and descriptions may not be ASCII
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = sop_uid
    if keep:  # the export's own time: harmless, but PS3.15 removes instance creation dates
        ds.InstanceCreationDate = now.strftime("%Y%m%d")
        ds.InstanceCreationTime = now.strftime("%H%M%S")

    # Patient: type 2, so present, but empty unless identifiers are kept.
    kept = identifiers(image, keep)
    ds.PatientName = kept.get("PatientName", "")
    ds.PatientID = kept.get("PatientID", "")
    ds.PatientBirthDate = kept.get("PatientBirthDate", "")
    ds.PatientSex = image.meta.patient_sex if image.meta.patient_sex in ("M", "F", "O") else ""
    age = image.meta.patient_age.strip()
    years = age_years(age)
    if age and (keep or (years is not None and years <= 89)):
        ds.PatientAge = age

    # Study: the source's (pseudonymous UID without identifiers: the one the SR and GSPS of this
    # film name too, see inference.export.reference), or a new one for a PNG/JPEG.
    source_study = study.get("StudyInstanceUID", "")
    ds.StudyInstanceUID = uid(source_study) if source_study else generate_uid()
    for keyword in _STUDY_KEYWORDS if keep else _STUDY_TYPE2:
        setattr(ds, keyword, study.get(keyword, "") if keep else "")
    ds.ReferringPhysicianName = study.get("ReferringPhysicianName", "") if keep else ""
    mark_deidentified(ds, options)

    # Series and equipment: a new series made by this workstation.
    ds.Modality = (study.get("Modality") or image.meta.modality or "OT") if from_dicom else "OT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = SERIES_DESCRIPTION
    ds.Manufacturer = SOFTWARE  # also the marker that lets a later export replace this file
    ds.ConversionType = "WSD"
    ds.SecondaryCaptureDeviceManufacturer = SOFTWARE
    ds.SecondaryCaptureDeviceSoftwareVersions = f"{prediction.model_name} {prediction.model_version}"

    # Image.
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = now.strftime("%Y%m%d") if keep else ""
    ds.ContentTime = now.strftime("%H%M%S") if keep else ""
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "YES"
    ds.DerivationDescription = f"{SERIES_DESCRIPTION}: AI classification with heat map overlay"[:1024]
    ds.ImageComments = (
        "; ".join(result_lines(prediction, explanation, options.show_abstained_probabilities)) + f". {DISCLAIMER}."
    )[:10240]
    source_uid = source_tag(image, "SOPInstanceUID") if from_dicom else ""
    source_class = source_tag(image, "SOPClassUID") if from_dicom else ""
    if source_uid and source_class:
        ref = Dataset()
        ref.ReferencedSOPClassUID = source_class
        ref.ReferencedSOPInstanceUID = uid(source_uid)
        ds.SourceImageSequence = Sequence([ref])

    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(rgb.shape[0]), int(rgb.shape[1])
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = rgb.tobytes()
    return ds


def write_dicom_sc(
    path: str | os.PathLike[str],
    image: XRayImage,
    prediction: Prediction,
    explanation: Explanation | None = None,
    options: ExportOptions | None = None,
    annotations: SequenceOf[Annotation] = (),
) -> Path:
    """The annotated image (reader's marks burned in) as a DICOM Secondary Capture file (written atomically)."""
    options = options or ExportOptions()
    rgb = render_annotated(image, prediction, explanation, options, annotations)
    ds = secondary_capture(rgb, image, prediction, explanation, options)
    return atomic_write(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True), options.overwrite)
