"""DICOM SR (TID 1500) and GSPS read back: coded content, references, graphic coordinates (issue 15)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from inference.annotations import Annotation, measure, spacing_of
from inference.export.presentation_state import presentation_state
from inference.export.structured_report import AiFinding, structured_report
from inference.image import Window
from inference.loading import load_image
from inference.verdict import Verdict
from tests.dicom_factory import make_dicom

AI = AiFinding("COVID-19", {"COVID-19": 0.81, "Normal": 0.07, "Pneumonia": 0.12}, "cxr-default", "1.1.0")


@pytest.fixture
def film(tmp_path: Path):
    pixels = (np.arange(80 * 100).reshape(80, 100) % 4000).astype(np.uint16)
    make_dicom(tmp_path / "src.dcm", pixels, bits_stored=12, pixel_spacing=(0.2, 0.2), imager_pixel_spacing=None)
    image = load_image(tmp_path / "src.dcm")
    reference = pydicom.dcmread(tmp_path / "src.dcm", stop_before_pixels=True)
    marks = [
        Annotation("distance", ((10, 10), (60, 10))),
        Annotation("rect", ((20, 20), (40, 30))),
        Annotation("arrow", ((70, 60), (80, 70)), "look here"),
    ]
    return image, reference, [(a, measure(a, image.pixels, image.meta)) for a in marks]


def _dciodvfy_errors(path: Path) -> list[str]:
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def test_the_structured_report_round_trips(tmp_path: Path, film) -> None:
    image, reference, marks = film
    verdict = Verdict().with_class("Pneumonia", "COVID-19", reader="Ada Lovelace").with_impression("RLL", "Ada")
    measured = [(a, m) for a, m in marks if m is not None]
    sr = structured_report(reference, AI, verdict, measured, spacing_of(image.meta))
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)

    back = hd.sr.srread(tmp_path / "sr.dcm")
    assert back.StudyInstanceUID == reference.StudyInstanceUID
    assert back.PatientID == reference.PatientID  # the caller's header decides what identifies
    evidence = back.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == reference.SOPInstanceUID

    groups = {g.tracking_identifier: g for g in back.content.get_image_measurement_groups()}
    assert groups["AI result"].finding_type.value == "840539006"  # SCT: disease caused by SARS-CoV-2
    probability = groups["AI probability Pneumonia"].get_measurements()[0]
    assert (probability.name.value, probability.value) == ("122157", pytest.approx(0.12))
    reader = groups["Reader verdict"]
    assert reader.finding_type.value == "233604007"  # SCT: pneumonia
    assert reader.get_qualitative_evaluations()[-1].value.meaning == "Reader disagrees with AI"
    impressions = [i for i in back.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121073"]
    assert impressions[0].TextValue == "RLL"

    [distance, roi] = back.content.get_planar_roi_measurement_groups()
    [length] = distance.get_measurements()
    assert (length.value, length.unit.value) == (pytest.approx(10.0), "mm")
    assert list(distance.roi.GraphicData) == [10.0, 10.0, 60.0, 10.0]
    assert {m.name.meaning: m.value for m in roi.get_measurements()}["Area"] == pytest.approx(200 * 0.04)
    if shutil.which("dciodvfy"):
        assert _dciodvfy_errors(tmp_path / "sr.dcm") == []


def test_an_abstained_ai_result_is_coded_as_no_result(film) -> None:
    _image, reference, _marks = film
    ai = AiFinding(None, {"COVID-19": 0.4, "Normal": 0.3, "Pneumonia": 0.3}, "cxr-default", "1.1.0", "lateral view")
    sr = structured_report(reference, ai)
    [result] = [g for g in hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_image_measurement_groups()][:1]
    assert result.finding_type.meaning.startswith("No AI result")


def test_the_presentation_state_carries_the_marks_and_the_window(tmp_path: Path, film) -> None:
    _image, reference, marks = film
    state = presentation_state(reference, marks, Window(1500, 3000), reader="Ada Lovelace")
    state.save_as(tmp_path / "pr.dcm", enforce_file_format=True)
    back = pydicom.dcmread(tmp_path / "pr.dcm")
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.11.1"
    assert back.StudyInstanceUID == reference.StudyInstanceUID
    assert back.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == (
        reference.SOPInstanceUID
    )
    layers = {a.GraphicLayer: a for a in back.GraphicAnnotationSequence}
    lines = [list(g.GraphicData) for g in layers["READER"].GraphicObjectSequence]
    assert lines[0] == [10.0, 10.0, 60.0, 10.0]
    assert lines[1] == [20.0, 20.0, 40.0, 20.0, 40.0, 30.0, 20.0, 30.0, 20.0, 20.0]
    assert [t.UnformattedTextValue for t in layers["READER"].TextObjectSequence] == ["look here"]
    values = [t.UnformattedTextValue for t in layers["MEASUREMENTS"].TextObjectSequence]
    assert values[0] == "10.0 mm" and "mm²" in values[1]
    voi = back.SoftcopyVOILUTSequence[0]
    assert (float(voi.WindowCenter), float(voi.WindowWidth)) == (1500.0, 3000.0)
    if shutil.which("dciodvfy"):
        assert _dciodvfy_errors(tmp_path / "pr.dcm") == []
