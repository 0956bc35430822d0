"""Small, valid DICOM files for tests, generated with pydicom (no files are checked in).

``make_dicom`` covers what a chest X-ray reader meets: MONOCHROME1/2, 8-16 bits, signed
pixels, Rescale Slope/Intercept, Window Center/Width, VOI LUT, RLE or JPEG 2000 compression,
files without preamble and file meta, multi-frame and colour. Every identifying field has a
recognisable default (``Doe^Jane``, ``PID-0001``...) so that export tests can check it is
dropped. ``make_dicom_without_pixels`` writes a structured report (a DICOM with no image).

Example::

    ds = make_dicom(tmp_path / "a.dcm", np.zeros((32, 32), np.uint16), bits_stored=12,
                    photometric="MONOCHROME1", window=(2048, 4096))
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

__all__ = ["SOP_CLASSES", "make_dicom", "make_dicom_without_pixels", "save_dicom"]

# Storage SOP classes by modality; anything else is stored as Secondary Capture.
SOP_CLASSES = {
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "OT": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
}
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"

_UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


def _as_signedness(pixels: np.ndarray, signed: bool | None) -> np.ndarray:
    """Cast to the signed/unsigned integer type of the same size when ``signed`` asks for it."""
    if signed is None or (pixels.dtype.kind == "i") == signed:
        return pixels
    target = np.dtype(f"{'i' if signed else 'u'}{pixels.dtype.itemsize}")
    info = np.iinfo(target)
    if pixels.size and (pixels.min() < info.min or pixels.max() > info.max):
        raise ValueError(f"pixel values do not fit {target}")
    return pixels.astype(target)


def _voi_lut_item(first_mapped: int, lut: np.ndarray, bits: int | None) -> Dataset:
    lut = np.asarray(lut)
    item = Dataset()
    n = len(lut)
    bits = bits or (8 if lut.max(initial=0) < 256 else 16)
    # Descriptor: entries (0 means 65536), first stored value mapped, bits per entry.
    item.add_new(0x00283002, "SS" if first_mapped < 0 else "US", [n if n < 65536 else 0, int(first_mapped), bits])
    item.add_new(0x00283006, "US", [int(v) for v in lut])
    item.LUTExplanation = "TEST LUT"
    return item


def make_dicom(
    path: str | os.PathLike[str] | None,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    signed: bool | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | Sequence[tuple[float, float]] | None = None,
    voi_lut: tuple[int, np.ndarray] | None = None,
    voi_lut_bits: int | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    preamble: bool = True,
    modality: str = "DX",
    patient_name: str | None = "Doe^Jane",
    patient_id: str | None = "PID-0001",
    patient_birth_date: str | None = "19700101",
    patient_age: str | None = "054Y",
    patient_sex: str | None = "F",
    view_position: str | None = "PA",
    pixel_spacing: tuple[float, float] | None = None,
    imager_pixel_spacing: tuple[float, float] | None = (0.143, 0.143),
    study_description: str | None = "CHEST PA",
    accession_number: str | None = "ACC-0001",
    institution_name: str | None = "General Hospital",
    referring_physician: str | None = "Who^Doctor",
    extra: Mapping[str, Any] | None = None,
) -> Dataset:
    """Build a DICOM dataset around ``pixels`` and, when ``path`` is given, write it there.

    pixels: uint8/uint16/int8/int16 shaped (rows, cols), (frames, rows, cols), or with a
        trailing axis of 3 samples for ``photometric`` "RGB"/"YBR_FULL" (multi-frame colour:
        (frames, rows, cols, 3)). More than one frame writes Number of Frames.
    bits_stored: defaults to the dtype's size (8 or 16); values must fit.
    signed: force Pixel Representation (casts the array); ``None`` follows the dtype.
    slope, intercept: Rescale Slope/Intercept; written when either is given.
    window: one (center, width) pair, or several (written as multi-valued tags).
    voi_lut: (first stored value mapped, LUT values) written as a one-item VOI LUT Sequence.
    transfer_syntax: Explicit/Implicit VR Little Endian, or a compressed one pydicom can
        encode here (RLE Lossless, JPEG 2000 with pylibjpeg-openjpeg).
    preamble: False writes a bare data set: no 128-byte preamble, no "DICM", no file meta.
    patient_*/study fields: ``None`` leaves the element out.
    extra: further elements by keyword (e.g. ``{"PixelSpacing": [0.2, 0.2]}``), set last.
    """
    pixels = _as_signedness(np.ascontiguousarray(pixels), signed)
    if pixels.dtype.kind not in "iu" or pixels.dtype.itemsize > 2:
        raise ValueError(f"pixels must be 8- or 16-bit integers, not {pixels.dtype}")
    bits_stored = bits_stored or 8 * pixels.dtype.itemsize

    ds = Dataset()
    ds.SOPClassUID = SOP_CLASSES.get(modality, SOP_CLASSES["OT"])
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.StudyDate = "20200401"
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    optional = {
        "PatientName": patient_name,
        "PatientID": patient_id,
        "PatientBirthDate": patient_birth_date,
        "PatientAge": patient_age,
        "PatientSex": patient_sex,
        "ViewPosition": view_position,
        "StudyDescription": study_description,
        "AccessionNumber": accession_number,
        "InstitutionName": institution_name,
        "ReferringPhysicianName": referring_physician,
    }
    for keyword, value in optional.items():
        if value is not None:
            setattr(ds, keyword, value)
    if pixel_spacing is not None:
        ds.PixelSpacing = list(pixel_spacing)
    if imager_pixel_spacing is not None:
        ds.ImagerPixelSpacing = list(imager_pixel_spacing)

    # set_pixel_data fills Rows/Columns/Bits*/PixelRepresentation/NumberOfFrames consistently.
    file_meta = FileMetaDataset()
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = file_meta
    ds.set_pixel_data(pixels, photometric, bits_stored, generate_instance_uid=False)

    if slope is not None or intercept is not None:
        ds.RescaleSlope = slope if slope is not None else 1
        ds.RescaleIntercept = intercept if intercept is not None else 0
        ds.RescaleType = "US"
    if window is not None:
        pairs = [window] if np.isscalar(window[0]) else list(window)  # type: ignore[index]
        ds.WindowCenter = [float(c) for c, _ in pairs] if len(pairs) > 1 else float(pairs[0][0])
        ds.WindowWidth = [float(w) for _, w in pairs] if len(pairs) > 1 else float(pairs[0][1])
    if voi_lut is not None:
        ds.VOILUTSequence = DicomSequence([_voi_lut_item(voi_lut[0], voi_lut[1], voi_lut_bits)])
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)

    if transfer_syntax not in _UNCOMPRESSED:
        ds.compress(transfer_syntax, generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = transfer_syntax

    if path is not None:
        save_dicom(ds, path, preamble=preamble)
    return ds


def save_dicom(ds: Dataset, path: str | os.PathLike[str], *, preamble: bool = True) -> None:
    """Write ``ds`` (made by :func:`make_dicom`, possibly edited since) as a DICOM file.

    preamble=True: a standard Part 10 file (preamble, "DICM", file meta filled from the data
    set). False: the bare data set, as some old modalities and PACS exports write it.
    """
    path = Path(path)
    ts = ds.file_meta.TransferSyntaxUID
    if preamble:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        # An unknown (private) syntax UID needs the encoding spelled out; ours is explicit LE.
        known = UID(ts).is_transfer_syntax
        encoding = {} if known else {"implicit_vr": False, "little_endian": True}
        ds.save_as(path, enforce_file_format=True, **encoding)
        return
    if ts not in _UNCOMPRESSED:
        raise ValueError("a bare data set (no file meta) must use an uncompressed little-endian syntax")
    meta = ds.file_meta
    del ds.file_meta
    try:
        ds.save_as(path, implicit_vr=ts == ImplicitVRLittleEndian, little_endian=True, enforce_file_format=False)
    finally:
        ds.file_meta = meta


def make_dicom_without_pixels(path: str | os.PathLike[str]) -> Dataset:
    """A Basic Text SR (a structured report): valid DICOM, but no image in it."""
    ds = Dataset()
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PID-0001"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.save_as(Path(path), enforce_file_format=True)
    return ds
