"""``main.py predict``: a folder with a corrupt file, exports, outputs, usage and model errors."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import main  # noqa: E402
from tests.dicom_factory import make_dicom  # noqa: E402
from tests.tiny_bundle import make_tiny_bundle  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("cli") / "model", size=32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(0)
    cv2.imwrite(str(d / "a.png"), rng.integers(0, 256, (60, 50), dtype=np.uint8))
    cv2.imwrite(str(d / "b.jpg"), rng.integers(0, 256, (40, 70), dtype=np.uint8))
    (d / "sub").mkdir()
    make_dicom(d / "sub" / "c.dcm", rng.integers(0, 4096, (64, 64), dtype=np.uint16), bits_stored=12)
    (d / "sub" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (d / "notes.txt").write_text("not an image, not a candidate")
    (d / ".hidden.png").write_bytes((d / "a.png").read_bytes())
    (d / ".cache").mkdir()
    cv2.imwrite(str(d / ".cache" / "thumb.png"), rng.integers(0, 256, (8, 8), dtype=np.uint8))
    return d


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """The installation salt (and anything else per user) in a temporary folder."""
    monkeypatch.setenv("CXR_VIEWER_HOME", str(tmp_path / "home"))


@pytest.fixture(autouse=True)
def no_lung_model(monkeypatch):
    """Noise images are no chest films: without a lung model the lung gate stays open, so these
    tests see the command's mechanics (tests/test_abstain.py tests the gate itself)."""
    import inference.lungs

    def missing():
        raise inference.lungs.LungModelError("no lung model in this test")

    monkeypatch.setattr(inference.lungs, "shared_segmenter", missing)


def run(*args: str) -> int:
    return main.main(["predict", *args])


def test_folder_with_a_corrupt_file(folder, model_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    code = run(str(folder), "--model", str(model_dir), "--json", str(out), "--batch-size", "2")
    assert code == 1
    records = json.loads(out.read_text(encoding="utf-8"))
    names = [Path(r["file"]).name for r in records]
    assert names == ["a.png", "b.jpg", "c.dcm", "corrupt.png"]  # sorted, recursive, no hidden files, no .txt
    by_name = dict(zip(names, records))
    bad = by_name["corrupt.png"]
    assert bad["ok"] is False and "corrupt.png" in bad["error"] and bad["label"] is None
    assert bad["model"] == {"name": "tiny-test", "version": "0.0.1"} and bad["device"]
    for name in ("a.png", "b.jpg", "c.dcm"):
        r = by_name[name]
        assert r["ok"] is True and r["error"] is None
        assert list(r["probabilities"]) == ["COVID-19", "Normal", "Pneumonia"]
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)
        assert "gradcam" not in r and "exports" not in r and "patient" not in r
    assert by_name["c.dcm"]["image"]["format"] == "DICOM"
    err = capsys.readouterr().err
    assert "3 of 4 files predicted" in err and "1 failed" in err


def test_all_good_files_exit_zero_and_json_goes_to_stdout(folder, model_dir, capsys):
    code = run(str(folder / "a.png"), str(folder / "sub" / "c.dcm"), "--model", str(model_dir), "--gradcam")
    assert code == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["ok"] for r in records] == [True, True]
    for r in records:
        assert r["gradcam"]["method"] == "gradcam" and r["gradcam"]["class"] == r["label"]
        x, y = r["gradcam"]["peak"]
        assert 0 <= x < r["image"]["width"] and 0 <= y < r["image"]["height"]


def test_missing_file_is_reported_not_fatal(folder, model_dir, capsys):
    code = run(str(folder / "a.png"), str(folder / "gone.png"), "--model", str(model_dir), "--json", "-")
    assert code == 1
    records = json.loads(capsys.readouterr().out)
    assert [r["ok"] for r in records] == [True, False]


def test_exports_csv_and_no_overwrite(folder, model_dir, tmp_path, capsys):
    exports = tmp_path / "exports"
    table = tmp_path / "r.csv"
    args = [str(folder), "--model", str(model_dir), "--gradcam", "--method", "gradcam++"]
    code = run(*args, "--export-dir", str(exports), "--formats", "png,dcm", "--csv", str(table))
    assert code == 1  # the corrupt file
    written = sorted(p.relative_to(exports).as_posix() for p in exports.rglob("*") if p.is_file())
    assert written == ["a.cxr.dcm", "a.cxr.png", "b.cxr.dcm", "b.cxr.png", "sub/c.cxr.dcm", "sub/c.cxr.png"]
    sc = pydicom.dcmread(exports / "sub" / "c.cxr.dcm")
    source = pydicom.dcmread(folder / "sub" / "c.dcm")
    assert not str(sc.PatientName) and sc.StudyInstanceUID.startswith("2.25.")  # pseudonymous without identifiers
    assert sc.StudyInstanceUID != source.StudyInstanceUID
    rows = list(csv.DictReader(io.StringIO(table.read_text(encoding="utf-8-sig"))))
    assert [r["ok"] for r in rows] == ["True", "True", "True", "False"]
    assert rows[0]["gradcam_method"] == "gradcam++" and rows[0]["exports"].count(".cxr.") == 2
    capsys.readouterr()

    before = (exports / "a.cxr.png").read_bytes()
    # Again without --overwrite: the existing CSV stops the run before any work...
    assert run(*args, "--export-dir", str(exports), "--formats", "png", "--csv", str(table)) == 2
    assert "already exists" in capsys.readouterr().err
    # ...and existing exports make each file fail, untouched.
    out = tmp_path / "again.json"
    assert run(*args, "--export-dir", str(exports), "--formats", "png", "--json", str(out)) == 1
    again = json.loads(out.read_text())
    assert all(not r["ok"] for r in again)
    assert "earlier export" in again[0]["error"] and "--overwrite" in again[0]["error"]
    assert again[0]["label"]  # the prediction is still reported
    assert (exports / "a.cxr.png").read_bytes() == before
    code = run(str(folder / "a.png"), "--model", str(model_dir), "--export-dir", str(exports), "--formats", "png")
    assert code == 1
    code = run(str(folder / "a.png"), "--model", str(model_dir), "--export-dir", str(exports), "--overwrite")
    assert code == 0
    assert (exports / "a.cxr.png").read_bytes() != before  # now without a heat map


def test_keep_identifiers(folder, model_dir, capsys):
    assert run(str(folder / "sub" / "c.dcm"), "--model", str(model_dir)) == 0
    assert "Doe" not in capsys.readouterr().out
    assert run(str(folder / "sub" / "c.dcm"), "--model", str(model_dir), "--keep-identifiers") == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert record["patient"] == {"PatientName": "Doe^Jane", "PatientID": "PID-0001", "PatientBirthDate": "19700101"}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--formats", "png"], "--formats needs --export-dir"),
        (["--export-dir", "X", "--formats", "png,tiff"], "tiff"),
        (["--json", "-", "--csv", "-"], "standard output"),
        (["--colormap", "rainbow-ish"], "colour map"),
    ],
)
def test_usage_errors_exit_2(folder, model_dir, capsys, extra, message):
    assert run(str(folder / "a.png"), "--model", str(model_dir), *extra) == 2
    assert message in capsys.readouterr().err


def test_model_errors_exit_2(folder, tmp_path, capsys):
    assert run(str(folder / "a.png"), "--model", str(tmp_path / "absent")) == 2
    assert "Model folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run(str(tmp_path / "empty"), "--model", str(tmp_path)) == 2
    assert "no PNG, JPEG or DICOM files" in capsys.readouterr().err


def test_bad_argument_values_are_usage_errors(folder):
    with pytest.raises(SystemExit) as exc:
        run(str(folder), "--opacity", "1.5")
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        run(str(folder), "--batch-size", "0")
    assert exc.value.code == 2
