"""DICOM Secondary Capture of the annotated image, to send the AI result back to a PACS.

The capture joins the source's study (same Study Instance UID, accession number, study
date...) as a new series with new UIDs, so a PACS files it next to the original films and
nobody mistakes it for one: Image Type DERIVED\\SECONDARY, Conversion Type "WSD"
(workstation), burned-in annotation, and a series description that says what it is.
Patient name, ID and birth date stay empty unless the user keeps identifiers; these
attributes are present because DICOM requires them (type 2), but hold nothing.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import numpy as np

from inference.export.annotate import render_annotated
from inference.export.facts import identifiers, result_lines
from inference.export.files import atomic_write
from inference.export.options import DISCLAIMER, ExportOptions
from inference.image import XRayImage
from inference.loading import import_pydicom
from inference.predictor import Explanation, Prediction

import_pydicom()  # before the imports below: another thread may be importing pydicom right now

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid  # noqa: E402

__all__ = ["SECONDARY_CAPTURE", "SERIES_DESCRIPTION", "secondary_capture", "write_dicom_sc"]

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
SERIES_DESCRIPTION = "AI result (derived), research use only"
SERIES_NUMBER = 9901  # high, so that the capture sorts after the acquired series in a PACS
# Study-level attributes that follow the capture into the source's study.
_STUDY_KEYWORDS = ("StudyID", "StudyDate", "StudyTime", "AccessionNumber", "StudyDescription")


def _source_tag(image: XRayImage, keyword: str) -> str:
    for _tag, kw, _vr, value in image.meta.tags:
        if kw == keyword:
            return value
    return ""


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
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")

    # Patient: type 2, so present, but empty unless identifiers are kept.
    kept = identifiers(image, options.keep_identifiers)
    ds.PatientName = kept.get("PatientName", "")
    ds.PatientID = kept.get("PatientID", "")
    ds.PatientBirthDate = kept.get("PatientBirthDate", "")
    ds.PatientSex = image.meta.patient_sex if image.meta.patient_sex in ("M", "F", "O") else ""
    if image.meta.patient_age:
        ds.PatientAge = image.meta.patient_age

    # Study: the source's, or a new one for a PNG/JPEG that belongs to no study.
    ds.StudyInstanceUID = study.get("StudyInstanceUID") or generate_uid()
    for keyword in _STUDY_KEYWORDS:
        setattr(ds, keyword, study.get(keyword, ""))
    ds.ReferringPhysicianName = ""

    # Series and equipment: a new series made by this workstation.
    ds.Modality = (study.get("Modality") or image.meta.modality or "OT") if from_dicom else "OT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = SERIES_DESCRIPTION
    ds.Manufacturer = "CXR Viewer"
    ds.ConversionType = "WSD"
    ds.SecondaryCaptureDeviceManufacturer = "CXR Viewer"
    ds.SecondaryCaptureDeviceSoftwareVersions = f"{prediction.model_name} {prediction.model_version}"

    # Image.
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = ds.InstanceCreationDate
    ds.ContentTime = ds.InstanceCreationTime
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "YES"
    ds.DerivationDescription = f"{SERIES_DESCRIPTION}: AI classification with heat map overlay"[:1024]
    ds.ImageComments = ("; ".join(result_lines(prediction, explanation)) + f". {DISCLAIMER}.")[:10240]
    source_uid = _source_tag(image, "SOPInstanceUID") if from_dicom else ""
    source_class = _source_tag(image, "SOPClassUID") if from_dicom else ""
    if source_uid and source_class:
        ref = Dataset()
        ref.ReferencedSOPClassUID = source_class
        ref.ReferencedSOPInstanceUID = source_uid
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
) -> Path:
    """The annotated image as a DICOM Secondary Capture file (written atomically)."""
    options = options or ExportOptions()
    rgb = render_annotated(image, prediction, explanation, options)
    ds = secondary_capture(rgb, image, prediction, explanation, options)
    return atomic_write(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True), options.overwrite)
