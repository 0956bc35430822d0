"""Identifiers in exports (issue 17): every output scanned for fake identifiers planted in a DICOM.

Also: CSV formula neutralisation, pseudonymous UIDs that still group a study, ages over 89,
and every derived image bounded by area (a 1 x 5000 PNG under a memory limit).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import main  # noqa: E402
from inference.annotations import Annotation  # noqa: E402
from inference.export import (  # noqa: E402
    ExportItem,
    ExportOptions,
    export_files,
    records_to_csv,
    report_figure,
)
from inference.export.privacy import age_text, csv_unsafe, pseudonymous_uid  # noqa: E402
from inference.loading import load_image  # noqa: E402
from inference.verdict import Verdict  # noqa: E402
from tests.dicom_factory import make_dicom  # noqa: E402
from tests.tiny_bundle import make_tiny_bundle  # noqa: E402

# Fake identifiers, each unlikely to occur by chance in any output.
NAME_FAMILY, NAME_GIVEN = "Zyxwvk", "Qutsrj"
PLANTED = {
    "PatientName": f"{NAME_FAMILY}^{NAME_GIVEN}",
    "PatientID": "PIDZ98765",
    "PatientBirthDate": "19230405",
    "StudyDate": "19990311",
    "StudyTime": "101112.5",
    "AccessionNumber": "ACCZ4242",
    "StudyID": "SIDZ77",
    "StudyDescription": "STUDYDESCXYZ",
    "InstitutionName": "INSTZHOSPITAL",
    "ReferringPhysicianName": "Refzq^Doctorq",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.77001",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.77002",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.77003",
    "PRIVATE": "PRIVZSECRET",
    "SEQUENCE": "SEQZSECRET",
}
# What may never appear with identifiers off (the file name is checked separately: it is the
# patient's name, shown only without --pseudonymous-names).
FORBIDDEN = [
    NAME_FAMILY,
    NAME_GIVEN,
    "PIDZ98765",
    "19230405",
    "1923-04-05",
    "19990311",
    "1999-03-11",
    "101112",
    "ACCZ4242",
    "SIDZ77",
    "STUDYDESCXYZ",
    "INSTZHOSPITAL",
    "Refzq",
    "Doctorq",
    "77001",
    "77002",
    "77003",
    "PRIVZSECRET",
    "SEQZSECRET",
    "092Y",
    "92 years",
]
FILE_STEM = f"{NAME_FAMILY}_{NAME_GIVEN}_PIDZ98765"
SALT = "privacy-test-salt"


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_VIEWER_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from inference.predictor import Predictor

    return Predictor(make_tiny_bundle(tmp_path_factory.mktemp("privacy") / "bundle", size=32))


def planted_dicom(folder: Path) -> Path:
    """A CR with every identifier planted, including a private tag and one inside a sequence."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(3).integers(0, 4096, (80, 70), dtype=np.uint16)
    ds = make_dicom(
        None,
        pixels,
        bits_stored=12,
        modality="CR",
        patient_name=PLANTED["PatientName"],
        patient_id=PLANTED["PatientID"],
        patient_birth_date=PLANTED["PatientBirthDate"],
        patient_age="092Y",
        study_description=PLANTED["StudyDescription"],
        accession_number=PLANTED["AccessionNumber"],
        institution_name=PLANTED["InstitutionName"],
        referring_physician=PLANTED["ReferringPhysicianName"],
        extra={k: PLANTED[k] for k in ("StudyDate", "StudyTime", "StudyID", "StudyInstanceUID", "SeriesInstanceUID")},
    )
    ds.SOPInstanceUID = PLANTED["SOPInstanceUID"]
    ds.file_meta.MediaStorageSOPInstanceUID = PLANTED["SOPInstanceUID"]
    block = ds.private_block(0x0011, "FAKE VENDOR", create=True)
    block.add_new(0x01, "LO", PLANTED["PRIVATE"])
    other = pydicom.Dataset()
    other.PatientID = PLANTED["SEQUENCE"]
    ds.OtherPatientIDsSequence = pydicom.Sequence([other])
    path = folder / f"{FILE_STEM}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


# ------------------------------------------------------------------------------ reading every output back


def pdf_text(path: Path) -> str:
    """The PDF's text: pdftotext when installed, and always the decompressed streams and metadata."""
    data = path.read_bytes()
    parts = [data.decode("latin-1")]
    for match in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        with contextlib.suppress(zlib.error):
            parts.append(zlib.decompress(match.group(1)).decode("latin-1"))
    if shutil.which("pdftotext"):
        out = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
        assert "Chest X-ray AI assessment" in out  # the extraction works, so an absence means something
        parts.append(out)
    return "\n".join(parts)


def png_text(path: Path) -> str:
    with Image.open(path) as im:
        im.load()
        chunks = dict(im.text)
    assert chunks.get("Software") == "CXR Viewer"
    return "\n".join(f"{k}={v}" for k, v in chunks.items())


def dicom_text(path: Path) -> str:
    ds = pydicom.dcmread(path)
    assert not any(elem.tag.is_private for elem in ds.iterall()), "private tags in the export"
    values = [f"{elem.keyword}={elem.value}" for elem in ds.iterall() if elem.keyword != "PixelData"]
    values += [f"{elem.keyword}={elem.value}" for elem in ds.file_meta]
    text = "\n".join(values) + "\n" + path.read_bytes().decode("latin-1")
    # UIDs under 2.25 are random or salted (an SR holds dozens): their digits could contain a
    # planted number by chance. A leaked source UID keeps its own root, so it is still found.
    return re.sub(r"2\.25\.[0-9]+", "2.25.<uid>", text)


def all_output_text(files: list[Path]) -> dict[Path, str]:
    texts = {}
    for path in files:
        kind = path.suffix.lower()
        if kind == ".png":
            texts[path] = png_text(path)
        elif kind == ".pdf":
            texts[path] = pdf_text(path)
        elif kind == ".dcm":
            texts[path] = dicom_text(path)
        else:
            texts[path] = path.read_text(encoding="utf-8-sig")
        texts[path] += "\nFILENAME=" + path.name
    return texts


def leaks(texts: dict[Path, str], words: list[str]) -> list[tuple[str, str]]:
    return [(p.name, w) for p, text in texts.items() for w in words if w.lower() in text.lower()]


# ------------------------------------------------------------------------------ the scans


def test_identifiers_off_with_pseudonymous_names_leaves_nothing(tmp_path, predictor):
    source = planted_dicom(tmp_path / "in")
    image = load_image(source)
    prediction, explanation = predictor.predict_and_explain(image)
    out = tmp_path / "out"
    out.mkdir()
    options = ExportOptions(pseudonymous_names=True, salt=SALT)
    marks = (Annotation("distance", ((5, 5), (40, 5))), Annotation("arrow", ((10, 60), (30, 40)), "see"))
    verdict = Verdict().with_class("Pneumonia", prediction.label, reader="Ada Lovelace")
    report = export_files(
        [ExportItem(source, image, prediction, explanation, annotations=marks, verdict=verdict)],
        out,
        ["png", "pdf", "dcm", "sr", "gsps"],
        options,
        predictor.info,
        tables=["csv", "json"],
    )
    assert not report.errors and len(report.written) == 7
    texts = all_output_text(report.written)
    assert leaks(texts, FORBIDDEN + [FILE_STEM, str(tmp_path)]) == []
    names = sorted(p.name for p in report.written)
    pattern = r"(anon-[0-9a-f]{12}|results)\.cxr\.(png|pdf|dcm|sr\.dcm|gsps\.dcm|csv|json)"
    assert all(re.fullmatch(pattern, n) for n in names), names
    # SR, GSPS and Secondary Capture name one pseudonymous study and the same pseudonymous film.
    study = pseudonymous_uid(PLANTED["StudyInstanceUID"], SALT)
    film = pseudonymous_uid(PLANTED["SOPInstanceUID"], SALT)
    sr, pr = (pydicom.dcmread(next(p for p in report.written if p.name.endswith(f".{k}.dcm"))) for k in ("sr", "gsps"))
    assert sr.StudyInstanceUID == pr.StudyInstanceUID == study
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == film
    assert pr.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == film
    assert sr.PatientIdentityRemoved == pr.PatientIdentityRemoved == "YES" and "PatientAge" not in sr
    pdf = next(t for p, t in texts.items() if p.suffix == ".pdf")
    assert "anon-" in pdf and "90+ years" in pdf  # the File line is the pseudonym; the age is capped
    ds = pydicom.dcmread(next(p for p in report.written if p.name.endswith(".cxr.dcm")))
    assert ds.PatientIdentityRemoved == "YES" and "PatientAge" not in ds
    assert ds.StudyInstanceUID == pseudonymous_uid(PLANTED["StudyInstanceUID"], SALT)
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == pseudonymous_uid(PLANTED["SOPInstanceUID"], SALT)
    record = json.loads(next(p for p in report.written if p.suffix == ".json").read_text())[0]
    assert record["file"].startswith("anon-") and all(e.startswith("anon-") for e in record["exports"])


def test_identifiers_off_shows_only_the_file_name(tmp_path, predictor):
    source = planted_dicom(tmp_path / "in")
    image = load_image(source)
    prediction, explanation = predictor.predict_and_explain(image)
    out = tmp_path / "out"
    out.mkdir()
    report = export_files(
        [ExportItem(source, image, prediction, explanation)],
        out,
        ["png", "pdf", "dcm"],
        ExportOptions(salt=SALT),
        tables=["csv", "json"],
    )
    texts = all_output_text(report.written)
    # The file name (here the patient's name) is kept in this mode, as the README says...
    assert FILE_STEM in texts[next(p for p in report.written if p.suffix == ".pdf")]
    # ...and nothing else: with the file name blanked out, no identifier is left.
    assert leaks({p: t.replace(FILE_STEM, "<file>") for p, t in texts.items()}, FORBIDDEN) == []


def test_identifiers_kept_when_asked(tmp_path, predictor):
    """The scan can find what it looks for: with identifiers kept they are there."""
    source = planted_dicom(tmp_path / "in")
    image = load_image(source)
    prediction, explanation = predictor.predict_and_explain(image)
    out = tmp_path / "out"
    out.mkdir()
    report = export_files(
        [ExportItem(source, image, prediction, explanation)],
        out,
        ["pdf", "dcm", "sr", "gsps"],
        ExportOptions(keep_identifiers=True, salt=SALT),
        tables=["json"],
    )
    texts = all_output_text(report.written)
    by_suffix = {"".join(p.suffixes[-2:]) if ".cxr" not in p.suffixes[-2:] else p.suffix: t for p, t in texts.items()}
    for kind in (".dcm", ".sr.dcm", ".gsps.dcm"):  # the capture, the report and the presentation state
        for word in (NAME_FAMILY, "PIDZ98765", "ACCZ4242", "77001", "19990311"):
            assert word in by_suffix[kind], (kind, word)
        assert "PRIVZSECRET" not in by_suffix[kind]
    for word in (NAME_FAMILY, "1999-03-11", "92 years"):
        assert word in by_suffix[".pdf"], word
    assert "PIDZ98765" in by_suffix[".json"]
    assert "PRIVZSECRET" not in by_suffix[".dcm"]  # a capture never carries the source's private tags


def test_predict_pseudonymous_scans_clean(tmp_path, predictor, capsys):
    source = planted_dicom(tmp_path / "in")
    exports, out, table = tmp_path / "exports", tmp_path / "r.json", tmp_path / "r.csv"
    code = main.main(
        [
            "predict",
            str(source.parent),
            "--model",
            str(predictor.bundle_dir),
            "--gradcam",
            "--export-dir",
            str(exports),
            "--json",
            str(out),
            "--csv",
            str(table),
            "--pseudonymous-names",
        ]
    )
    assert code == 0, capsys.readouterr().err
    files = [*exports.iterdir(), out, table]
    assert len(files) == 5
    texts = all_output_text(files)
    texts[Path("stdout+stderr")] = "\n".join(capsys.readouterr())
    assert leaks(texts, FORBIDDEN + [FILE_STEM]) == []
    record = json.loads(out.read_text())[0]
    assert sorted(record["exports"]) == sorted(p.name for p in exports.iterdir())  # relative to DIR


def test_pseudonymous_uids_group_a_study():
    a = pseudonymous_uid("1.2.3", "s1")
    assert a == pseudonymous_uid("1.2.3", "s1") and a != pseudonymous_uid("1.2.4", "s1")
    assert a != pseudonymous_uid("1.2.3", "s2") and a.startswith("2.25.") and len(a) <= 64
    assert re.fullmatch(r"2\.25\.[1-9][0-9]*", a)


def test_ages_over_89():
    assert age_text("092Y", False) == "90+ years" and age_text("092Y", True) == "92 years"
    assert age_text("089Y", False) == "89 years" and age_text("030M", False) == "30 months"
    assert age_text("1100W", False) == ""  # not an Age String: not exported without identifiers


def test_csv_cells_that_look_like_formulas_are_neutralised():
    record = {
        "file": '=HYPERLINK("http://x")',
        "ok": True,
        "error": "+cmd",
        "label": "-2+3",
        "probabilities": {"@SUM(A1)": 0.5, "\tTab": -0.25},
        "model": {"name": "\rmodel", "version": "1"},
        "device": "CPU",
        "patient": {"PatientName": "=Doe"},
    }
    text = records_to_csv([record])
    rows = list(csv.reader(io.StringIO(text, newline="")))
    cells = [c for row in rows for c in row]
    assert [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")] == ["-0.25"]
    assert '\'=HYPERLINK("http://x")' in cells and "'@SUM(A1)" not in cells  # headers start with p_
    assert "-0.25" in cells  # a number is not a formula
    assert rows[0][-1] == "software" and rows[1][-1] == "CXR Viewer"
    assert csv_unsafe("'=x") == "=x" and csv_unsafe("'plain") == "'plain"


# ------------------------------------------------------------------------------ size bombs


def test_export_of_a_1_by_5000_png_stays_small_under_a_memory_limit(tmp_path):
    """Before: 768 x 3,840,000 (killed at 24 GB). Now bounded by area, checked under a 2 GB address-space cap."""
    import cv2

    png = tmp_path / "thin.png"
    cv2.imwrite(
        str(png), (np.arange(5000) % 200).astype(np.uint8).reshape(5000, 1)
    )  # not blank: the loader refuses those
    script = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        import numpy as np
        from inference.export import ExportItem, export_files, ExportOptions
        from inference.export.annotate import render_annotated
        from inference.export.pdf import report_figure
        from inference.loading import load_image
        from inference.predictor import Explanation, Prediction
        from inference.preprocess import Geometry
        from inference.sizing import MAX_DERIVED_PIXELS
        image = load_image({str(png)!r})
        geom = Geometry(original_shape=image.pixels.shape[:2], crop_box=(0, 0, 1, 5000), size=32)
        probs = np.array([0.2, 0.7, 0.1], np.float32)
        pred = Prediction(dict(zip(["A", "B", "C"], map(float, probs))), probs, "B", 1, "m", "1", "CPU", geom)
        cam = np.random.default_rng(0).random((4, 4)).astype(np.float32)
        expl = Explanation(cam, np.zeros((32, 32), np.float32), 1, "B", "gradcam", geom)
        rgb = render_annotated(image, pred, expl)
        assert rgb.shape[0] * rgb.shape[1] <= MAX_DERIVED_PIXELS, rgb.shape
        report = export_files([ExportItem(image.meta.path, image, pred, expl)], {str(tmp_path)!r},
                              ["png", "pdf", "dcm"], ExportOptions(salt="s"))
        assert not report.errors, report.errors
        print(rgb.shape, len(report.written))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), CXR_VIEWER_HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    h, w = (int(v) for v in re.findall(r"\d+", done.stdout)[:2])
    assert w == 768 and h <= 12_000 + 1000  # the caption's width; the picture at most MAX_DERIVED_SIDE tall
    assert done.stdout.strip().endswith("3")


def test_report_figure_of_a_thin_image(tmp_path, predictor):
    import cv2

    png = tmp_path / "thin.png"
    cv2.imwrite(str(png), (np.arange(6000) % 200).astype(np.uint8).reshape(3000, 2))
    image = load_image(png)
    prediction, explanation = predictor.predict_and_explain(image)
    fig = report_figure(image, prediction, explanation)
    shapes = [im.get_array().shape for ax in fig.axes for im in ax.get_images()]
    assert all(s[0] * s[1] <= 1400 * 1400 for s in shapes)
