"""A reading session exported for a PACS (issues 13, 14, 15): SR, GSPS, PDF and CSV carry the reader's work.

Twenty small synthetic films (DICOM with Pixel Spacing, with Imager Pixel Spacing, with
neither, MONOCHROME1 and 2, and PNGs), each with a verdict, an impression and measurements,
are exported through the one export path; every SR and GSPS is read back (coded content,
references, graphic coordinates) and validated with dciodvfy when it is installed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image

import main
from inference.annotations import Annotation
from inference.display import initial_window, window_image
from inference.export import (
    FORMAT_TITLES,
    FORMATS,
    ExportItem,
    ExportOptions,
    export_files,
    export_name,
    parse_formats,
    plan_exports,
    written_by_us,
)
from inference.export.annotate import MIN_WIDTH, render_annotated
from inference.export.marker import is_our_name
from inference.export.marks import MARK_COLOUR, burn_marks, measured
from inference.export.structured_report import class_code
from inference.loading import load_image
from inference.overlay import blend
from inference.verdict import READER_CLASSES, Verdict
from tests.dicom_factory import make_dicom
from tests.tiny_bundle import make_tiny_bundle, xray_from_array

SALT = "reading-session-salt"
REASON = (
    "The film is out of the model's scope: the DICOM header says this is a lateral view (View Position LL), "
    "and the model was only trained on frontal chest radiographs, so it gives no result for it."
)
GSPS_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_VIEWER_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from inference.predictor import Predictor

    # No lung model: the synthetic films have no lungs (the gate has its own tests in test_abstain.py).
    return Predictor(make_tiny_bundle(tmp_path_factory.mktemp("session") / "bundle", size=32), lungs=None)


def _film(folder: Path, i: int) -> Path:
    """Film ``i``: every fourth a PNG; DICOMs cycle through spacing kinds and both photometrics."""
    rng = np.random.default_rng(i)
    pixels = rng.integers(200, 3800, (60, 72), dtype=np.uint16)
    if i % 4 == 0:
        path = folder / f"film{i:02d}.png"
        Image.fromarray((pixels >> 4).astype(np.uint8)).save(path)
        return path
    spacing = [((0.2, 0.2), None), (None, (0.143, 0.143)), (None, None)][i % 3]
    path = folder / f"film{i:02d}.dcm"
    make_dicom(
        path,
        pixels,
        bits_stored=12,
        photometric="MONOCHROME1" if i % 2 else "MONOCHROME2",
        pixel_spacing=spacing[0],
        imager_pixel_spacing=spacing[1],
        view_position="AP" if i % 5 == 0 else "PA",
    )
    return path


def _marks(i: int) -> tuple[Annotation, ...]:
    return (
        Annotation("distance", ((5, 5 + i % 7), (55, 5 + i % 7))),
        Annotation("rect", ((10, 20), (30, 35))),
        Annotation("ellipse", ((40, 20), (60, 40))),
        Annotation("angle", ((10, 50), (20, 40), (30, 50))),
        Annotation("arrow", ((50, 50), (65, 55)), f"look {i}"),
    )


def _verdict(i: int, ai_label: str | None) -> Verdict:
    reader_class = READER_CLASSES[i % len(READER_CLASSES)]
    verdict = Verdict().with_class(reader_class, ai_label, reader="Ada Lovelace", ai_model="tiny 1")
    impression = f"Impression {i}: " + "consolidation in the right lower lobe " * (i % 3)
    return verdict.with_impression(impression.strip(), "")


@pytest.fixture(scope="module")
def session(tmp_path_factory, predictor):
    """20 films read and exported with identifiers kept: (items, report, out folder)."""
    folder = tmp_path_factory.mktemp("films")
    items = []
    for i in range(20):
        path = _film(folder, i)
        image = load_image(path)
        prediction, explanation = predictor.predict_and_explain(image)
        if i == 3:  # one abstained film (a DICOM) in the session
            prediction = dataclasses.replace(prediction, abstain_reason=REASON)
        ai_label = None if prediction.abstained else prediction.label
        items.append(
            ExportItem(path, image, prediction, explanation, annotations=_marks(i), verdict=_verdict(i, ai_label))
        )
    out = tmp_path_factory.mktemp("out")
    options = ExportOptions(keep_identifiers=True, salt=SALT)
    report = export_files(items, out, ["pdf", "sr", "gsps"], options, predictor.info, tables=["csv"])
    return items, report, out


def _dciodvfy_errors(path: Path) -> list[str]:
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def _dicom_items(items):
    return [item for item in items if item.image.meta.format == "DICOM"]


# ------------------------------------------------------------------------------ formats and names


def test_sr_and_gsps_are_export_formats_with_our_names():
    assert {"sr", "gsps"} <= set(FORMATS) and parse_formats("sr, GSPS") == ["sr", "gsps"]
    assert set(FORMAT_TITLES) == set(FORMATS) | {"csv", "json"}  # a dialog can name every format
    assert export_name(Path("a/scan.dcm"), "sr") == "scan.cxr.sr.dcm"
    assert export_name(Path("scan.cxr.gsps.dcm"), "gsps") == "scan.cxr.gsps.dcm"  # re-export aims at itself
    assert export_name(Path("scan.cxr.sr.dcm"), "png") == "scan.cxr.png"
    # predict skips our outputs when it searches a folder: the new names are recognised too.
    assert is_our_name("scan.cxr.sr.dcm") and is_our_name("scan (2).cxr.gsps.dcm") and not is_our_name("scan.sr.dcm")


def test_the_session_writes_pdf_sr_gsps_and_csv(session):
    items, report, out = session
    assert report.errors == [], report.errors
    dicoms, pngs = _dicom_items(items), [i for i in items if i.image.meta.format == "PNG"]
    assert (len(dicoms), len(pngs)) == (15, 5)
    written = sorted(p.name for p in report.written)
    assert len(written) == 20 + 15 + 15 + 1, written  # a PDF each, SR and GSPS per DICOM, the CSV
    assert all(written_by_us(p) for p in report.written)  # our names and markers: a re-export may replace them
    # A PNG has no DICOM image in a PACS to refer to: its SR and GSPS are refused, with the reason.
    assert len(report.skipped) == 10
    assert all("PNG file" in why and "Secondary Capture" in why for _, why in report.skipped)
    assert not any(p.exists() for p, _ in report.skipped)


def test_png_sr_and_gsps_are_refused_in_the_plan_and_never_written_beside(tmp_path, session):
    items, _report, _out = session
    png = next(i for i in items if i.image.meta.format == "PNG")
    plan = plan_exports([png], tmp_path, ["png", "sr", "gsps"])
    assert [(t.fmt, t.status) for t in plan] == [("png", "free"), ("sr", "refused"), ("gsps", "refused")]
    report = export_files([png], tmp_path, ["sr", "gsps"], ExportOptions(salt=SALT), on_existing="keep-both")
    assert report.written == [] and len(report.skipped) == 2 and list(tmp_path.iterdir()) == []


def test_every_sr_reads_back_with_its_coded_content_and_references(session):
    items, _report, out = session
    checked = 0
    for item in _dicom_items(items):
        source = pydicom.dcmread(item.source, stop_before_pixels=True)
        sr = hd.sr.srread(out / export_name(item.source, "sr"))
        assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
        assert evidence.StudyInstanceUID == source.StudyInstanceUID
        ref = evidence.ReferencedSeriesSequence[0]
        assert ref.SeriesInstanceUID == source.SeriesInstanceUID
        assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        groups = {g.tracking_identifier: g for g in sr.content.get_image_measurement_groups()}
        ai = groups["AI result"].finding_type
        if item.prediction.abstained:
            assert ai.meaning.startswith("No AI result")
            comments = [c.TextValue for c in sr.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == "121106"]
            assert comments == [f"No AI result: {REASON}"]
        else:
            assert ai.value == class_code(item.prediction.label).value
        for name, p in item.prediction.probabilities.items():
            [probability] = groups[f"AI probability {name}"].get_measurements()
            assert probability.value == pytest.approx(p, abs=1e-6)
        assert groups["Reader verdict"].finding_type.meaning == class_code(item.verdict.reader_class).meaning
        impressions = [c.TextValue for c in sr.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == "121073"]
        assert impressions == [item.verdict.impression]
        rois = sr.content.get_planar_roi_measurement_groups()
        assert len(rois) == 4  # distance, rectangle, ellipse, angle (the arrow measures nothing)
        distance = item.annotations[0]
        assert list(rois[0].roi.GraphicData) == [v for p in distance.points for v in p]
        [length] = rois[0].get_measurements()
        expected_mm = {"mm": 10.0, "mm at detector": 50 * 0.143, "px": 50.0}
        unit = {"PixelSpacing": "mm", "ImagerPixelSpacing": "mm at detector", "": "px"}[item.image.meta.spacing_source]
        assert length.value == pytest.approx(expected_mm[unit])
        checked += 1
    assert checked == 15


def test_every_gsps_carries_the_marks_window_and_polarity(session):
    items, _report, out = session
    for item in _dicom_items(items):
        source = pydicom.dcmread(item.source, stop_before_pixels=True)
        pr = pydicom.dcmread(out / export_name(item.source, "gsps"))
        assert pr.SOPClassUID == GSPS_CLASS and pr.Manufacturer == "CXR Viewer"
        assert pr.StudyInstanceUID == source.StudyInstanceUID and pr.PatientName == source.PatientName
        referenced = pr.ReferencedSeriesSequence[0]
        assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
        assert referenced.ReferencedImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        layers = {a.GraphicLayer: a for a in pr.GraphicAnnotationSequence}
        reader = layers["READER"].GraphicObjectSequence
        distance, rect, ellipse, _angle, arrow = item.annotations
        assert [float(v) for v in reader[0].GraphicData] == [v for p in distance.points for v in p]
        (x0, y0), (x1, y1) = rect.points
        assert [float(v) for v in reader[1].GraphicData] == [x0, y0, x1, y0, x1, y1, x0, y1, x0, y0]
        assert reader[2].GraphicType == "ELLIPSE"
        assert [float(v) for v in reader[4].GraphicData] == [v for p in arrow.points for v in p]  # the shaft
        assert len(reader[5].GraphicData) == 6  # the head: wing, tip, wing
        assert [t.UnformattedTextValue for t in layers["READER"].TextObjectSequence] == [arrow.text]
        values = [t.UnformattedTextValue for t in layers["MEASUREMENTS"].TextObjectSequence]
        assert [v for a, m in measured(item.image, item.annotations) if m is not None for v in [m.text()]] == values
        ai_text = layers["AI"].TextObjectSequence[0].UnformattedTextValue
        assert (
            ("No AI result" in ai_text and "lateral view" in ai_text)
            if item.prediction.abstained
            else (item.prediction.label in ai_text)
        )
        if item.prediction.abstained:  # no heat map is exported for a film without an AI result
            assert "GraphicObjectSequence" not in layers["AI"]
        else:
            assert layers["AI"].GraphicObjectSequence[0].GraphicType == "CIRCLE"  # the heat peak
        window = initial_window(item.image)
        voi = pr.SoftcopyVOILUTSequence[0]
        assert (float(voi.WindowCenter), float(voi.WindowWidth)) == pytest.approx((window.center, window.width))
        expected_shape = "INVERSE" if item.image.meta.inverted else "IDENTITY"
        assert pr.PresentationLUTShape == expected_shape
        assert pr.ContentCreatorName == "Lovelace^Ada"  # Family^Given, as in the SR


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) is not installed")
def test_sr_and_gsps_validate_with_dciodvfy(session):
    items, _report, out = session
    errors = {}
    for item in _dicom_items(items):
        for fmt in ("sr", "gsps"):
            path = out / export_name(item.source, fmt)
            if found := _dciodvfy_errors(path):
                errors[path.name] = found
    assert errors == {}


def test_the_csv_carries_the_verdicts_and_measurements(session):
    items, report, _out = session
    table = next(p for p in report.written if p.suffix == ".csv")
    rows = list(csv.DictReader(io.StringIO(table.read_text(encoding="utf-8-sig"))))
    assert len(rows) == 20
    for item, row in zip(items, rows):
        assert row["reader_class"] == item.verdict.reader_class
        assert row["agreement"] == (item.verdict.agreement or "")
        assert row["impression"] == item.verdict.impression and row["reader"] == "Ada Lovelace"
        assert row["read_time"] == item.verdict.time
        assert row["measurements"].startswith("Distance ") and "ROI mean" in row["measurements"]
        exports = row["exports"].split(";")
        assert len(exports) == (3 if item.image.meta.format == "DICOM" else 1)


def test_the_json_record_carries_the_verdict(tmp_path, session):
    items, _report, _out = session
    item = items[1]
    report = export_files([item], tmp_path, [], ExportOptions(salt=SALT), tables=["json"])
    [record] = json.loads(report.written[0].read_text())
    assert record["verdict"] == {
        k: v or None for k, v in item.verdict.to_dict().items() if k not in ("ai_label", "ai_model")
    }
    assert [m["kind"] for m in record["measurements"]] == ["distance", "rect", "ellipse", "angle"]
    assert record["measurements"][0]["points"] == [list(p) for p in item.annotations[0].points]
    assert list(record)[-1] == "software"


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext (poppler-utils) is not installed")
def test_the_pdf_has_a_reader_section_and_a_measurement_table(session):
    items, _report, out = session
    item = items[5]  # a DICOM with Pixel Spacing... (5 % 3 == 2: no spacing) and an impression
    text = subprocess.run(
        ["pdftotext", "-layout", str(out / export_name(item.source, "pdf")), "-"], capture_output=True, text=True
    ).stdout
    flat = " ".join(text.split())
    assert "AI result" in flat and "Reader (radiologist)" in flat
    assert "Reader's class" in flat and item.verdict.reader_class in flat
    assert " ".join(item.verdict.impression.split()) in flat
    assert "Measurements" in flat and "1. Distance" in flat and "4. Angle" in flat
    assert "50.0 px" in flat  # no spacing: pixels
    assert "Ada Lovelace" in flat


# ------------------------------------------------------------------------------ identifiers off


def test_identifiers_off_sr_gsps_and_sc_name_one_pseudonymous_study(tmp_path, session):
    from inference.export.privacy import pseudonymous_uid

    items, _report, _out = session
    item = items[1]
    source = pydicom.dcmread(item.source, stop_before_pixels=True)
    report = export_files([item], tmp_path, ["dcm", "sr", "gsps"], ExportOptions(salt=SALT))
    assert report.ok, report
    sc, sr, pr = (pydicom.dcmread(tmp_path / export_name(item.source, f)) for f in ("dcm", "sr", "gsps"))
    study = pseudonymous_uid(source.StudyInstanceUID, SALT)
    sop = pseudonymous_uid(source.SOPInstanceUID, SALT)
    assert sc.StudyInstanceUID == sr.StudyInstanceUID == pr.StudyInstanceUID == study
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == sop
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sop
    assert pr.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == sop
    for ds in (sc, sr, pr):
        assert ds.PatientIdentityRemoved == "YES" and ds.PatientName == "" and ds.PatientID == ""
        assert "Doe" not in str(ds) and "PID-0001" not in str(ds) and "ACC-0001" not in str(ds)
    if shutil.which("dciodvfy"):  # emptied type 2 attributes are warnings at most, never errors
        assert [_dciodvfy_errors(tmp_path / export_name(item.source, f)) for f in ("sr", "gsps")] == [[], []]


# ------------------------------------------------------------------------------ the screen's pixels


def test_the_exported_pixels_under_an_arrow_are_the_screens(tmp_path, predictor):
    """The picture part of the PNG is overlay.blend (the screen's blending) plus the marks' drawing."""
    pixels = np.random.default_rng(7).integers(0, 4000, (120, MIN_WIDTH), dtype=np.uint16)  # no resizing
    make_dicom(tmp_path / "a.dcm", pixels, bits_stored=12, pixel_spacing=(0.2, 0.2), imager_pixel_spacing=None)
    image = load_image(tmp_path / "a.dcm")
    prediction, explanation = predictor.predict_and_explain(image)
    options = ExportOptions(opacity=0.9, colormap="inferno")
    arrow = Annotation("arrow", ((100, 20), (300, 90)), "here")
    exported = render_annotated(image, prediction, explanation, options, [arrow])
    screen = blend(window_image(image), explanation.heatmap_original, 0.9, "inferno")
    expected = burn_marks(screen, measured(image, [arrow]))
    picture = exported[:120]
    np.testing.assert_array_equal(picture, expected)
    # Under the shaft's middle the mark's colour; far from it, the screen's blend untouched.
    assert tuple(picture[55, 200]) == MARK_COLOUR
    np.testing.assert_array_equal(picture[:, 500:], screen[:, 500:])
    assert not np.array_equal(picture, screen)


def test_marks_follow_the_enlargement_of_a_narrow_film(predictor):
    image = xray_from_array(np.random.default_rng(8).integers(0, 255, (40, 48), dtype=np.uint8))
    prediction = predictor.predict(image)
    line = Annotation("distance", ((0, 20), (48, 20)))
    out = render_annotated(image, prediction, None, ExportOptions(), [line])
    scale = MIN_WIDTH / 48
    row = int(20 * scale)
    assert tuple(out[row, MIN_WIDTH // 2]) == MARK_COLOUR  # the line runs across the enlarged picture


# ------------------------------------------------------------------------------ No AI result


def _abstained(prediction):
    return dataclasses.replace(prediction, abstain_reason=REASON)


def test_an_abstained_png_says_no_ai_result_with_the_reason(tmp_path, predictor):
    pixels = np.random.default_rng(9).integers(0, 4000, (60, 72), dtype=np.uint16)
    make_dicom(tmp_path / "lat.dcm", pixels, bits_stored=12)
    image = load_image(tmp_path / "lat.dcm")
    prediction = predictor.predict(image)
    out = tmp_path / "out"
    out.mkdir()
    export_files([ExportItem(tmp_path / "lat.dcm", image, prediction)], out, ["png"], ExportOptions(salt=SALT))
    plain_png = np.asarray(Image.open(out / "lat.cxr.png"))
    (out / "lat.cxr.png").rename(out / "plain.png")
    report = export_files([ExportItem(tmp_path / "lat.dcm", image, _abstained(prediction))], out, ["png"])
    with Image.open(report.written[0]) as im:
        description = im.text["Description"]
        abstained_png = np.asarray(im.convert("RGB"))
    assert description.startswith("AI result: No AI result\nReason: " + REASON)
    assert "%" not in description  # the probabilities are not given for an abstained result...
    # ...and the picture is the same while the caption differs (the reason, wrapped, makes it taller).
    h = 60 * MIN_WIDTH // 72
    np.testing.assert_array_equal(abstained_png[:h], plain_png[:h])
    assert abstained_png.shape[0] > plain_png.shape[0]
    assert not np.array_equal(abstained_png[h : h + 40], plain_png[h : h + 40])


def test_abstained_probabilities_only_on_request(predictor):
    from inference.export.facts import result_lines

    prediction = _abstained(predictor.predict(xray_from_array(np.zeros((40, 40), np.uint8))))
    assert not any("%" in line for line in result_lines(prediction, None)[:2])
    shown = result_lines(prediction, None, show_abstained_probabilities=True)
    assert shown[2].startswith("Not used for a result:") and "%" in shown[2]


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext (poppler-utils) is not installed")
def test_an_abstained_pdf_gives_the_whole_reason_and_the_whole_format_line(tmp_path, predictor):
    pixels = np.random.default_rng(10).integers(0, 4000, (60, 72), dtype=np.uint16)
    make_dicom(tmp_path / "lat.dcm", pixels, bits_stored=12)
    image = load_image(tmp_path / "lat.dcm")
    report = export_files(
        [ExportItem(tmp_path / "lat.dcm", image, _abstained(predictor.predict(image)))],
        tmp_path,
        ["pdf"],
        ExportOptions(salt=SALT),
    )
    text = subprocess.run(["pdftotext", str(report.written[0]), "-"], capture_output=True, text=True).stdout
    flat = " ".join(text.split())
    assert "No AI result" in flat and f"Reason: {REASON}" in flat  # wrapped, never cut
    assert image.meta.transfer_syntax in flat  # the format line in full


def test_predict_writes_ai_only_sr_and_gsps_for_dicom_inputs(tmp_path, predictor, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _film(folder, 1), _film(folder, 4)  # a DICOM and a PNG
    code = main.main(
        [
            "predict",
            str(folder),
            "--model",
            str(predictor.bundle_dir),
            "--gradcam",
            "--export-dir",
            str(tmp_path / "out"),
            "--formats",
            "sr,gsps",
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["film01.cxr.gsps.dcm", "film01.cxr.sr.dcm"]
    assert "sr,gsps written for DICOM inputs only" in err
    sr = hd.sr.srread(tmp_path / "out" / "film01.cxr.sr.dcm")
    assert [g.tracking_identifier for g in sr.content.get_image_measurement_groups()][0] == "AI result"
    assert sr.content.get_planar_roi_measurement_groups() == []  # AI-only: no reader, no measurements
    pr = pydicom.dcmread(tmp_path / "out" / "film01.cxr.gsps.dcm")
    [ai] = pr.GraphicAnnotationSequence
    assert ai.GraphicLayer == "AI"
    [record] = [r for r in json.loads((tmp_path / "r.json").read_text(encoding="utf-8")) if "film01" in r["file"]]
    if record["abstained"]:  # the synthetic film has no lungs: no AI result, so no heat peak
        assert "No AI result" in ai.TextObjectSequence[0].UnformattedTextValue
        assert "GraphicObjectSequence" not in ai
    else:
        assert ai.GraphicObjectSequence[0].GraphicType == "CIRCLE"


def test_the_pdf_measurement_table_stays_inside_the_reader_box(session):
    """An ROI's statistics ("mean ..., area 6.1 mm² at detector (300 pixels)") ran past the right
    edge of the reader's green box and of the page's margin in one line (QA: pdftoppm of the PDF)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.patches import FancyBboxPatch

    from inference.export.pdf import report_figure

    items, _report, _out = session
    item = items[1]  # Imager Pixel Spacing: the longest ROI lines ("mm² at detector")
    fig = report_figure(
        item.image, item.prediction, item.explanation, annotations=item.annotations, verdict=item.verdict
    )
    renderer = FigureCanvasAgg(fig).get_renderer()
    (box,) = [p for p in fig.patches if isinstance(p, FancyBboxPatch) and p.get_edgecolor()[1] > 0.3]
    inside = box.get_window_extent(renderer)
    values = [t for t in fig.texts if t.get_text().startswith(("mean ", "area ")) or "pixels)" in t.get_text()]
    assert values, "the ROI rows are in the table"
    for text in fig.texts:
        extent = text.get_window_extent(renderer)
        if inside.y0 <= extent.y0 <= inside.y1:
            assert extent.x1 <= inside.x1, text.get_text()


def test_a_long_impression_and_many_rois_stay_on_the_page(session):
    """Six lines of impression and 15 ROIs pushed the input file's facts over the footnote and off
    the page (QA: pdftoppm); the table now takes the lines that are left and says how many more."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from inference.export.pdf import FOOTNOTE, report_figure

    items, _report, _out = session
    item = items[1]
    note = "nodule {} in the right upper zone"
    rois = tuple(Annotation("ellipse", ((2 + i, 2), (30 + i, 40)), note.format(i)) for i in range(15))
    verdict = dataclasses.replace(item.verdict, impression="Multiple nodules in both lungs. " * 30)
    fig = report_figure(item.image, item.prediction, item.explanation, annotations=rois, verdict=verdict)
    renderer = FigureCanvasAgg(fig).get_renderer()
    (foot,) = [t for t in fig.texts if " ".join(t.get_text().split()) == FOOTNOTE]
    foot_top = foot.get_window_extent(renderer).y1
    texts = [t for t in fig.texts if t is not foot]
    assert any(t.get_text().startswith("... and ") and "more" in t.get_text() for t in texts)
    assert any(t.get_text() == "Input file" for t in texts)
    for text in texts:
        assert text.get_window_extent(renderer).y0 > foot_top, text.get_text()
