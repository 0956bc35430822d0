"""DICOM outputs a PACS can interpret: a TID 1500 Measurement Report (Comprehensive SR) of the AI
result, the reader's verdict and the measurements, built with highdicom.

The report joins the referenced image's study (its Study Instance UID and patient module, as the
caller built them: the source's own header when identifiers are kept, its pseudonymised copy
otherwise, so that SR, GSPS and Secondary Capture of one film always name one study) as a new
series. Content, each in its own measurement group so a PACS lists them apart:

* "AI result": the finding the model gave (or "No AI result", its reason as a comment), then
  one group per class with its probability, each carrying the algorithm identification (model
  name and version);
* "Reader verdict": the reader's class and agreement with the AI; the impression as text; the
  reader is the person observer of the document;
* one planar ROI group per measurement (distance, angle, Cobb angle, ROI statistics, CTR) with
  its image region as SCOORD in the image's pixel coordinates (0,0 = top left corner of the top
  left pixel, as in the annotation model) and its values in UCUM units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inference.annotations import Annotation, Measurement, Spacing
from inference.export.options import DISCLAIMER
from inference.loading import import_pydicom
from inference.verdict import Verdict

import_pydicom()

import highdicom as hd  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.sr.codedict import codes  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

__all__ = [
    "AiFinding",
    "CODES",
    "LOCAL_SCHEME",
    "class_code",
    "local_coding_scheme",
    "person_name",
    "structured_report",
]

LOCAL_SCHEME = "99CXRV"  # private coding scheme for concepts no standard vocabulary has
SR_SERIES_NUMBER = 9902
MANUFACTURER = "CXR Viewer"


def _code(value: str, scheme: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


CODES = {
    "COVID-19": _code("840539006", "SCT", "Disease caused by SARS-CoV-2"),
    "Normal": _code("17621005", "SCT", "Normal"),
    "Pneumonia": _code("233604007", "SCT", "Pneumonia"),
    "Other finding": _code("OTHER", LOCAL_SCHEME, "Other finding"),
    "Not assessable": _code("NOTASSESSABLE", LOCAL_SCHEME, "Not assessable"),
    "No AI result": _code("NOAIRESULT", LOCAL_SCHEME, "No AI result (out of scope)"),
    "agree": _code("AGREE", LOCAL_SCHEME, "Reader agrees with AI"),
    "disagree": _code("DISAGREE", LOCAL_SCHEME, "Reader disagrees with AI"),
    "agreement": _code("AGREEMENT", LOCAL_SCHEME, "Agreement with AI result"),
    "ctr": _code("CTR", LOCAL_SCHEME, "Cardiothoracic ratio"),
    "cardiac": _code("CARDIACWIDTH", LOCAL_SCHEME, "Maximal transverse cardiac diameter"),
    "thoracic": _code("THORACICWIDTH", LOCAL_SCHEME, "Maximal inner thoracic diameter"),
    "plain chest x-ray": _code("399208008", "SCT", "Plain chest X-ray"),
}
_UNITS = {
    "mm": codes.UCUM.Millimeter,
    "mm at detector": codes.UCUM.Millimeter,
    "mm²": codes.UCUM.SquareMillimeter,
    "mm² at detector": codes.UCUM.SquareMillimeter,
    "deg": codes.UCUM.Degree,
    "": codes.UCUM.NoUnits,
    "px": _code("{pixels}", "UCUM", "pixels"),
    "px²": _code("{pixels}", "UCUM", "pixels"),
}
_VALUE_NAMES = {
    "length": codes.SCT.Length,
    "angle": codes.SCT.Angle,
    "mean": codes.SCT.Mean,
    "sd": codes.SCT.StandardDeviation,
    "min": codes.SCT.Minimum,
    "max": codes.SCT.Maximum,
    "area": codes.SCT.Area,
    "ratio": CODES["ctr"],
    "cardiac": CODES["cardiac"],
    "thoracic": CODES["thoracic"],
}


def class_code(name: str) -> hd.sr.CodedConcept:
    """The coded concept of a class name; a model's own class outside the known ones gets a local code."""
    if name in CODES:
        return CODES[name]
    return _code("".join(c for c in name.upper() if c.isalnum())[:16] or "CLASS", LOCAL_SCHEME, name[:64])


@dataclass(frozen=True)
class AiFinding:
    """What the AI said about the film, as the report records it."""

    label: str | None  # None: the AI abstained
    probabilities: dict[str, float]
    model_name: str
    model_version: str
    abstain_reason: str = ""


def _algorithm(ai: AiFinding) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=ai.model_name[:64], version=ai.model_version[:64], family=codes.DCM.ArtificialIntelligence
    )


def _region(annotation: Annotation, reference: Dataset) -> hd.sr.ImageRegion:
    pts = np.asarray(annotation.points, dtype=float)
    if annotation.kind == "rect":
        (x0, y0), (x1, y1) = pts
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])
        kind = hd.sr.GraphicTypeValues.POLYLINE
    elif annotation.kind == "ellipse":
        (x0, y0), (x1, y1) = pts
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        pts = np.array([[x0, cy], [x1, cy], [cx, y0], [cx, y1]])
        kind = hd.sr.GraphicTypeValues.ELLIPSE
    else:
        kind = hd.sr.GraphicTypeValues.POLYLINE
    source = hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=reference.SOPClassUID, referenced_sop_instance_uid=reference.SOPInstanceUID
    )
    return hd.sr.ImageRegion(graphic_type=kind, graphic_data=pts, source_image=source)


def _measurement_group(
    annotation: Annotation, measurement: Measurement, reference: Dataset, spacing: Spacing
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    items = []
    for name, value in measurement.values.items():
        if not np.isfinite(value):
            continue
        items.append(
            hd.sr.Measurement(name=_VALUE_NAMES[name], value=float(value), unit=_UNITS[measurement.units.get(name, "")])
        )
    label = measurement.label + (f" ({spacing.unit})" if "detector" in spacing.unit else "")
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"{label} {annotation.id}"[:64]),
        referenced_region=_region(annotation, reference),
        measurements=items,
    )


def structured_report(
    reference: Dataset,
    ai: AiFinding | None,
    verdict: Verdict | None = None,
    measurements: Sequence[tuple[Annotation, Measurement]] = (),
    spacing: Spacing | None = None,
    series_uid: str | None = None,
) -> Dataset:
    """The Comprehensive SR (TID 1500) of ``reference`` (the header of the image it reports on)."""
    spacing = spacing or Spacing(None, None, "px")
    groups: list = []
    source = hd.sr.SourceImageForMeasurementGroup(
        referenced_sop_class_uid=reference.SOPClassUID, referenced_sop_instance_uid=reference.SOPInstanceUID
    )
    if ai is not None:
        algorithm = _algorithm(ai)
        finding = CODES["No AI result"] if ai.label is None else class_code(ai.label)
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="AI result"),
                finding_type=finding,
                algorithm_id=algorithm,
                source_images=[source],
            )
        )
        for name, p in ai.probabilities.items():
            groups.append(
                hd.sr.MeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(
                        uid=generate_uid(), identifier=f"AI probability {name}"[:64]
                    ),
                    finding_type=class_code(name),
                    algorithm_id=algorithm,
                    measurements=[
                        hd.sr.Measurement(name=codes.DCM.Probability, value=float(p), unit=codes.UCUM.NoUnits)
                    ],
                    source_images=[source],
                )
            )
    if verdict is not None and verdict.is_read:
        evaluations = []
        if verdict.agreement is not None:
            evaluations.append(hd.sr.QualitativeEvaluation(name=CODES["agreement"], value=CODES[verdict.agreement]))
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="Reader verdict"),
                finding_type=None if verdict.reader_class is None else CODES[verdict.reader_class],
                qualitative_evaluations=evaluations or None,
                source_images=[source],
            )
        )
    for annotation, measurement in measurements:
        groups.append(_measurement_group(annotation, measurement, reference, spacing))

    person = None
    if verdict is not None and verdict.reader:
        person = hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=person_name(verdict.reader)),
        )
    device = None
    if ai is not None:
        device = hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=generate_uid(), name=ai.model_name[:64], manufacturer_name=MANUFACTURER, model_name=ai.model_version
            ),
        )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=person, observer_device_context=device),
        procedure_reported=CODES["plain chest x-ray"],
        imaging_measurements=groups,
    )
    if ai is not None and ai.label is None and ai.abstain_reason:
        report[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=codes.DCM.Comment,
                value=f"No AI result: {ai.abstain_reason}"[:4000],
                relationship_type="CONTAINS",
            )
        )
    if verdict is not None and verdict.impression:
        report[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=codes.DCM.Impression, value=verdict.impression[:4000], relationship_type="CONTAINS"
            )
        )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[reference],
        content=report[0],
        series_instance_uid=series_uid or generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    sr.SeriesDescription = f"AI result and reading, {DISCLAIMER.lower()}"[:64]
    sr.CodingSchemeIdentificationSequence = [local_coding_scheme()]
    return sr


def local_coding_scheme() -> Dataset:
    """The declaration of the private coding scheme, so that a reader of the file can look it up."""
    item = Dataset()
    item.CodingSchemeDesignator = LOCAL_SCHEME
    item.CodingSchemeName = "CXR Viewer local concepts"
    item.CodingSchemeResponsibleOrganization = MANUFACTURER
    return item


def person_name(text: str) -> str:
    """A DICOM person name (``Family^Given``) from what the reader typed in the settings."""
    text = " ".join(text.replace("^", " ").split())[:60]
    if not text:
        return "Reader"
    parts = text.split(" ")
    return f"{parts[-1]}^{' '.join(parts[:-1])}" if len(parts) > 1 else parts[0] + "^"
