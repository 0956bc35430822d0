"""The export dialog: each format through the inference exporters, identifiers, never overwriting silently."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PySide6.QtWidgets import QMessageBox

from tests.dicom_factory import make_dicom
from viewer.export_dialog import ExportDialog, plan_exports


@pytest.fixture
def export_window(make_window, qtbot, image_files, tmp_path):
    dicom = tmp_path / "in" / "chest.dcm"
    dicom.parent.mkdir()
    make_dicom(dicom, (np.arange(96 * 80).reshape(96, 80) % 4096).astype(np.uint16), bits_stored=12)
    window = make_window()
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(dicom), str(image_files["dark"]), str(image_files["bright"])])
    qtbot.waitUntil(lambda: all(d.prediction is not None for d in window.docs.values()), timeout=10000)
    assert window.current.name == "chest.dcm"
    return window


def make_dialog(window, folder: Path, formats, everything=False, answer=None) -> ExportDialog:
    dialog = ExportDialog(window)
    dialog.folder_edit.setText(str(folder))
    for key, box in dialog.format_boxes.items():
        box.setChecked(key in formats)
    dialog.all_radio.setChecked(everything)
    dialog.current_radio.setChecked(not everything)
    asked = []

    def fake_ask(existing):
        asked.append(existing)
        return answer

    dialog.ask_overwrite = fake_ask
    dialog.asked = asked
    return dialog


def export(qtbot, dialog) -> list[Path]:
    with qtbot.waitSignal(dialog.export_done, timeout=60000) as done:
        assert dialog.start_export()
    return done.args[0]


def test_each_format_for_the_current_image(export_window, qtbot, tmp_path):
    import cv2

    out = tmp_path / "out"
    dialog = make_dialog(export_window, out, ["png", "pdf", "dcm", "csv", "json"])
    written = export(qtbot, dialog)
    names = sorted(p.name for p in written)
    assert names == ["chest.dcm", "chest.pdf", "chest.png", "cxr-results.csv", "cxr-results.json"]
    png = cv2.imread(str(out / "chest.png"))
    assert png is not None and png.shape[1] >= 80
    assert (out / "chest.pdf").read_bytes().startswith(b"%PDF")
    ds = pydicom.dcmread(out / "chest.dcm")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert not str(ds.get("PatientName", "")) and not str(ds.get("PatientID", ""))  # left out by default
    rows = list(csv.DictReader((out / "cxr-results.csv").open(encoding="utf-8-sig")))
    assert len(rows) == 1 and rows[0]["label"] == export_window.current.prediction.label
    assert "PatientName" not in rows[0]
    assert "Exported 5 files" in export_window.statusBar().currentMessage()


def test_keep_identifiers_is_an_explicit_choice(export_window, qtbot, tmp_path):
    dialog = make_dialog(export_window, tmp_path / "out", ["dcm", "csv"])
    assert not dialog.identifiers_box.isChecked()
    dialog.identifiers_box.setChecked(True)
    export(qtbot, dialog)
    ds = pydicom.dcmread(tmp_path / "out" / "chest.dcm")
    assert str(ds.PatientName) == "Doe^Jane"
    row = next(csv.DictReader((tmp_path / "out" / "cxr-results.csv").open(encoding="utf-8-sig")))
    assert row.get("PatientName") == "Doe^Jane"


def test_all_opened_images(export_window, qtbot, tmp_path):
    out = tmp_path / "all"
    dialog = make_dialog(export_window, out, ["png", "csv"], everything=True)
    written = export(qtbot, dialog)
    assert sorted(p.name for p in written) == ["bright.png", "chest.png", "cxr-results.csv", "dark.png"]
    rows = list(csv.DictReader((out / "cxr-results.csv").open(encoding="utf-8-sig")))
    assert [Path(r["file"]).name for r in rows] == ["chest.dcm", "dark.png", "bright.png"]
    labels = {Path(r["file"]).name: r["label"] for r in rows}
    for doc in export_window.docs.values():
        assert labels[doc.name] == doc.prediction.label


def test_never_overwrites_without_asking(export_window, qtbot, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "chest.png"
    existing.write_bytes(b"keep me")
    # Cancel: nothing is written, the old file is untouched.
    dialog = make_dialog(export_window, out, ["png"], answer=QMessageBox.StandardButton.Cancel)
    assert not dialog.start_export()
    assert dialog.asked and dialog.asked[0] == [existing]
    assert existing.read_bytes() == b"keep me"
    assert sorted(p.name for p in out.iterdir()) == ["chest.png"]
    # Keep both: a new name.
    dialog = make_dialog(export_window, out, ["png"], answer=QMessageBox.StandardButton.No)
    written = export(qtbot, dialog)
    assert [p.name for p in written] == ["chest (2).png"]
    assert existing.read_bytes() == b"keep me"
    # Replace: only after the user said so.
    dialog = make_dialog(export_window, out, ["png"], answer=QMessageBox.StandardButton.Yes)
    written = export(qtbot, dialog)
    assert written == [existing]
    assert existing.read_bytes().startswith(b"\x89PNG")


def test_plan_gives_same_named_images_distinct_files(export_window, tmp_path):
    docs = list(export_window.docs.values())
    docs[1].path = docs[0].path.with_name("chest.png")  # two images called "chest"
    plan = plan_exports(docs[:2], tmp_path, ["png", "pdf", "csv"])
    targets = [p.name for p in plan.all_targets()]
    assert targets == ["chest.png", "chest.pdf", "chest-2.png", "chest-2.pdf", "cxr-results.csv"]
    assert len(set(targets)) == len(targets)
