"""Exports: every format written and read back, identifiers dropped by default, nothing overwritten."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import zlib
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from inference.export import (  # noqa: E402
    DISCLAIMER,
    ExportError,
    ExportOptions,
    atomic_write,
    parse_formats,
    records_to_csv,
    render_annotated,
    result_record,
    unique_path,
    write_csv,
    write_dicom_sc,
    write_json,
    write_pdf,
    write_png,
)
from inference.export.annotate import MIN_WIDTH  # noqa: E402
from inference.export.facts import input_facts, result_lines  # noqa: E402
from inference.loading import load_image  # noqa: E402
from inference.overlay import COLORMAPS, blend, colorize  # noqa: E402
from tests.dicom_factory import make_dicom  # noqa: E402
from tests.tiny_bundle import make_tiny_bundle  # noqa: E402

SC_UID = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """The installation salt (pseudonymous UIDs) in a temporary folder, never the user's."""
    monkeypatch.setenv("CXR_VIEWER_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from inference.predictor import Predictor

    # No lung model: these synthetic films have no lungs, and the abstain gate is tested in test_abstain.py.
    return Predictor(make_tiny_bundle(tmp_path_factory.mktemp("export") / "bundle", size=32), lungs=None)


@pytest.fixture(scope="module")
def dicom_case(tmp_path_factory, predictor):
    """A 12-bit DICOM with patient data, loaded, predicted and explained."""
    d = tmp_path_factory.mktemp("dicom")
    yy, xx = np.mgrid[0:120, 0:100]
    pixels = ((yy * 20 + xx * 10) % 4096).astype(np.uint16)
    source = make_dicom(d / "chest.dcm", pixels, bits_stored=12, window=(2048, 4096))
    image = load_image(d / "chest.dcm")
    prediction, explanation = predictor.predict_and_explain(image)
    return source, image, prediction, explanation


@pytest.fixture(scope="module")
def png_case(tmp_path_factory, predictor):
    d = tmp_path_factory.mktemp("png")
    cv2.imwrite(str(d / "plain.png"), np.random.default_rng(0).integers(0, 256, (90, 70), dtype=np.uint8))
    image = load_image(d / "plain.png")
    prediction, explanation = predictor.predict_and_explain(image)
    return image, prediction, explanation


# ------------------------------------------------------------------------------ overlay


def test_colorize_and_blend():
    heat = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    rgb = colorize(heat, "jet")
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 2] > 100 and rgb[-1, -1, 0] > 100  # jet: blue when cold, red when hot
    gray = np.full((8, 8), 100, np.uint8)
    assert np.array_equal(blend(gray, heat, opacity=0.0), np.dstack([gray] * 3))
    hot = heat >= 0.5  # fully faded in: the plain opacity mix
    np.testing.assert_allclose(blend(gray, heat, opacity=1.0)[hot].astype(int), rgb[hot].astype(int), atol=1)
    half = blend(gray, heat, opacity=0.5).astype(int)
    np.testing.assert_allclose(half[hot], (rgb[hot].astype(int) + 100) / 2, atol=1.5)
    cold = heat <= 0.15  # faded out: the anatomy is untouched even at full opacity
    assert np.array_equal(blend(gray, heat, opacity=1.0)[cold], np.dstack([gray] * 3)[cold])
    cut = blend(gray, heat, opacity=0.5, threshold=0.5)
    assert np.array_equal(cut[0, 0], [100, 100, 100]) and not np.array_equal(cut[-1, -1], [100, 100, 100])
    nan_heat = np.full((8, 8), np.nan, np.float32)
    assert np.isfinite(blend(gray, nan_heat).astype(float)).all()
    for name in COLORMAPS:
        assert colorize(heat, name).shape == (8, 8, 3)
    with pytest.raises(ValueError, match="colour map"):
        colorize(heat, "no-such-map")
    with pytest.raises(ValueError, match="differ"):
        blend(gray, heat[:4])


# ------------------------------------------------------------------------------ PNG


def test_annotated_png_small_image_is_enlarged_and_captioned(tmp_path, png_case):
    image, prediction, explanation = png_case
    out = write_png(tmp_path / "a.png", image, prediction, explanation)
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert back.shape[1] == MIN_WIDTH and back.shape[2] == 3
    image_h = round(image.shape[0] * MIN_WIDTH / image.shape[1])
    assert back.shape[0] > image_h  # the caption strip is below the image, not over it
    strip = back[image_h:]
    assert (strip > 200).any()  # there is text in the strip
    assert not list(tmp_path.glob(".*part"))  # no temporary left behind


def test_annotated_image_keeps_large_images_at_full_size(dicom_case, predictor):
    _, image, _, _ = dicom_case
    big = image.__class__(
        pixels=cv2.resize(image.pixels, (1500, 1800), interpolation=cv2.INTER_NEAREST), meta=image.meta
    )
    prediction, explanation = predictor.predict_and_explain(big)
    rgb = render_annotated(big, prediction, explanation)
    assert rgb.shape[1] == 1500 and rgb.shape[0] > 1800
    # Without the heat map the image part is gray.
    plain = render_annotated(big, prediction, explanation, ExportOptions(include_heatmap=False))
    top = plain[:1800].astype(int)
    assert np.array_equal(top[..., 0], top[..., 1])


def test_result_lines_carry_result_model_and_lung_fraction(png_case):
    _, prediction, explanation = png_case
    lines = result_lines(prediction, explanation)
    assert prediction.label in lines[0] and "tiny-test 0.0.1" in lines[2]
    for name in prediction.probabilities:
        assert name in lines[1]
    explanation.lung_heat_fraction = 0.83
    try:
        assert "83% of heat in the lungs" in result_lines(prediction, explanation)[2]
    finally:
        explanation.lung_heat_fraction = None


def test_lung_warning_is_burned_into_the_annotated_image(png_case):
    import dataclasses

    image, prediction, explanation = png_case
    plain = render_annotated(image, dataclasses.replace(prediction, lung_warning=None), explanation)
    warned = dataclasses.replace(prediction, lung_warning="no plausible lung fields were found")
    assert "Warning: no plausible lung fields" in result_lines(warned, explanation)[3]
    with_warning = render_annotated(image, warned, explanation)
    # The image part is the same; the caption below it has one more (amber) line.
    assert with_warning.shape[1] == plain.shape[1] and with_warning.shape[0] > plain.shape[0]
    np.testing.assert_array_equal(with_warning[: plain.shape[0] // 2], plain[: plain.shape[0] // 2])


# ------------------------------------------------------------------------------ PDF


def _pdf_text(data: bytes) -> str:
    """The text drawn on the page: matplotlib writes each line as a TJ array in a deflated stream."""
    lines = []
    for stream in re.finditer(rb"stream\r?\n(.*?)endstream", data, re.S):
        try:
            content = zlib.decompress(stream.group(1))
        except zlib.error:
            continue
        if b"TJ" not in content:  # images and fonts
            continue
        for array in re.finditer(rb"\[([^\]]*)\]\s*TJ", content):
            pieces = re.findall(rb"\(((?:\\.|[^\\)])*)\)", array.group(1), re.S)
            lines.append(b"".join(pieces).replace(b"\x00", b"").decode("latin-1"))
    return "\n".join(lines)


def test_pdf_report_has_one_page(tmp_path, dicom_case, predictor):
    _, image, prediction, explanation = dicom_case
    out = write_pdf(tmp_path / "r.pdf", image, prediction, explanation, model_info=predictor.info)
    data = out.read_bytes()
    assert data.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) == 1
    text = _pdf_text(data)
    assert DISCLAIMER.upper() in text and prediction.label in text and "tiny-test 0.0.1" in text
    assert "Doe" not in text and "PID-0001" not in text and b"Doe" not in data
    kept = write_pdf(tmp_path / "kept.pdf", image, prediction, explanation, ExportOptions(keep_identifiers=True))
    assert "Doe, Jane" in _pdf_text(kept.read_bytes())
    no_heat = write_pdf(tmp_path / "plain.pdf", image, prediction, None)
    assert len(re.findall(rb"/Type\s*/Page\b", no_heat.read_bytes())) == 1


def test_input_facts_leave_identifiers_out_by_default(dicom_case):
    _, image, _, _ = dicom_case
    facts = dict(input_facts(image))
    assert facts["Format"].startswith("DICOM") and facts["Size"] == "100 x 120 px"
    assert facts["Modality"] == "DX" and facts["View"] == "PA"
    text = " ".join(f"{k} {v}" for k, v in facts.items())
    assert "Doe" not in text and "PID-0001" not in text and "1970" not in text
    kept = dict(input_facts(image, keep_identifiers=True))
    assert kept["Patient name"] == "Doe, Jane" and kept["Patient ID"] == "PID-0001"
    assert kept["Birth date"] == "1970-01-01" and kept["Sex / age"] == "F / 54 years"


# ------------------------------------------------------------------------------ DICOM SC


def test_dicom_sc_joins_the_source_study_without_patient_identity(tmp_path, dicom_case):
    source, image, prediction, explanation = dicom_case
    out = write_dicom_sc(tmp_path / "sc.dcm", image, prediction, explanation)
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == SC_UID and ds.file_meta.MediaStorageSOPClassUID == SC_UID
    # Identifiers off: a pseudonymous study UID, the same for every export of the study.
    assert ds.StudyInstanceUID != source.StudyInstanceUID and ds.StudyInstanceUID.startswith("2.25.")
    again = pydicom.dcmread(write_dicom_sc(tmp_path / "sc2.dcm", image, prediction, None))
    assert again.StudyInstanceUID == ds.StudyInstanceUID and again.SOPInstanceUID != ds.SOPInstanceUID
    assert ds.AccessionNumber == "" and "StudyDescription" not in ds and ds.PatientIdentityRemoved == "YES"
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID and ds.SOPInstanceUID != source.SOPInstanceUID
    assert ds.ConversionType == "WSD" and list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert "research use only" in ds.SeriesDescription.lower()
    assert DISCLAIMER in ds.ImageComments
    for keyword in ("PatientName", "PatientID", "PatientBirthDate"):
        assert not str(ds.get(keyword, "")), keyword
    assert "Doe" not in out.read_bytes().decode("latin-1")
    ref = ds.SourceImageSequence[0].ReferencedSOPInstanceUID
    assert ref.startswith("2.25.") and ref != source.SOPInstanceUID
    rgb = ds.pixel_array
    assert ds.PhotometricInterpretation == "RGB" and rgb.shape == (ds.Rows, ds.Columns, 3)
    expected = render_annotated(image, prediction, explanation)
    assert rgb.shape == expected.shape


def test_dicom_sc_keeps_identifiers_when_asked(tmp_path, dicom_case):
    _, image, prediction, explanation = dicom_case
    out = write_dicom_sc(tmp_path / "sc.dcm", image, prediction, explanation, ExportOptions(keep_identifiers=True))
    ds = pydicom.dcmread(out)
    assert str(ds.PatientName) == "Doe^Jane" and ds.PatientID == "PID-0001" and ds.PatientBirthDate == "19700101"
    source = dicom_case[0]
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.AccessionNumber == source.AccessionNumber
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_dicom_sc_of_a_png_starts_a_new_study(tmp_path, png_case):
    image, prediction, explanation = png_case
    a = pydicom.dcmread(write_dicom_sc(tmp_path / "a.dcm", image, prediction, explanation))
    b = pydicom.dcmread(write_dicom_sc(tmp_path / "b.dcm", image, prediction, None))
    assert a.StudyInstanceUID and a.StudyInstanceUID != b.StudyInstanceUID
    assert a.Modality == "OT" and "SourceImageSequence" not in a


# ------------------------------------------------------------------------------ files


def test_nothing_is_overwritten_without_permission(tmp_path, png_case):
    image, prediction, explanation = png_case
    target = tmp_path / "x.png"
    target.write_bytes(b"precious")
    for writer in (write_png, write_pdf, write_dicom_sc):
        with pytest.raises(ExportError, match="already exists"):
            writer(target, image, prediction, explanation)
        assert target.read_bytes() == b"precious"
        with pytest.raises(ExportError, match="never replaced"):  # not even when asked: it is not ours
            writer(target, image, prediction, explanation, ExportOptions(overwrite=True))
        assert target.read_bytes() == b"precious"
    with pytest.raises(FileExistsError):  # callers may catch the standard exception
        write_json(target, [])
    ours = write_png(tmp_path / "y.png", image, prediction, explanation)
    first = ours.read_bytes()
    write_png(ours, image, prediction, None, ExportOptions(overwrite=True))  # ours: may be replaced when asked
    assert ours.read_bytes() != first and ours.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png", "y.png"]


def test_failed_write_leaves_no_file(tmp_path):
    def explode(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(ExportError, match="No space left"):
        atomic_write(tmp_path / "out.pdf", explode)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ExportError, match="does not exist"):
        atomic_write(tmp_path / "missing" / "out.pdf", lambda tmp: None)


def test_unique_path(tmp_path):
    assert unique_path(tmp_path / "a.png") == tmp_path / "a.png"
    (tmp_path / "a.png").touch()
    assert unique_path(tmp_path / "a.png") == tmp_path / "a (2).png"
    (tmp_path / "a (2).png").touch()
    assert unique_path(tmp_path / "a.png") == tmp_path / "a (3).png"


def test_parse_formats():
    assert parse_formats("PNG, dicom,png") == ["png", "dcm"]
    with pytest.raises(ValueError, match="tiff"):
        parse_formats("png,tiff")


# ------------------------------------------------------------------------------ tables


def _results(predictor, dicom_case, png_case):
    from inference.predictor import FileResult

    _, dimage, dpred, dexpl = dicom_case
    pimage, ppred, _ = png_case
    return [
        FileResult(dimage.meta.path, True, "", dpred, dimage, dexpl),
        FileResult("broken.png", False, "Cannot open broken.png: damaged"),
        FileResult(pimage.meta.path, True, "", ppred, pimage, None),
    ]


def test_json_and_csv_summaries(tmp_path, predictor, dicom_case, png_case):
    model = (predictor.info.name, predictor.info.version)
    records = [result_record(r, model, predictor.device) for r in _results(predictor, dicom_case, png_case)]
    back = json.loads(write_json(tmp_path / "s.json", records).read_text(encoding="utf-8"))
    assert [r["ok"] for r in back] == [True, False, True]
    assert back[1]["error"].startswith("Cannot open") and back[1]["label"] is None
    assert back[1]["model"] == {"name": "tiny-test", "version": "0.0.1"}
    assert list(back[0]["probabilities"]) == predictor.class_names
    assert sum(back[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    # The map explains the model's class, also when the gate kept it from being shown (label null).
    assert back[0]["gradcam"]["class"] == dicom_case[2].label and len(back[0]["gradcam"]["peak"]) == 2
    assert "gradcam" not in back[2]
    assert "patient" not in back[0] and "Doe" not in json.dumps(back)

    text = write_csv(tmp_path / "s.csv", records).read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["ok"] for r in rows] == ["True", "False", "True"]
    assert {f"p_{c}" for c in predictor.class_names} <= set(rows[0])
    assert rows[1]["p_Normal"] == "" and rows[1]["error"].startswith("Cannot open")
    assert "Doe" not in text

    kept = [result_record(r, model, keep_identifiers=True) for r in _results(predictor, dicom_case, png_case)]
    assert kept[0]["patient"]["PatientName"] == "Doe^Jane"
    assert "Doe^Jane" in records_to_csv(kept)
