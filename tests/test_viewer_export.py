"""The export dialog: the one export path, <stem>.cxr.<ext> names, never a source file, never a silent overwrite."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.dicom_factory import make_dicom
from viewer.export_dialog import ExportDialog, ReloadingImage, build_items, conflict_choices


@pytest.fixture
def export_window(make_window, qtbot, image_files, tmp_path):
    dicom = tmp_path / "in" / "chest.dcm"
    dicom.parent.mkdir()
    make_dicom(dicom, (np.arange(96 * 80).reshape(96, 80) % 4096).astype(np.uint16), bits_stored=12)
    window = make_window()
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(dicom), str(image_files["dark"]), str(image_files["bright"])])
    qtbot.waitUntil(lambda: all(d.prediction is not None for d in window.session.documents()), timeout=10000)
    assert window.session.current.name == "chest.dcm"
    return window


def make_dialog(window, folder: Path, formats, everything=False, answer="cancel") -> ExportDialog:
    dialog = window.export_dialog()
    dialog.folder_edit.setText(str(folder))
    for key, box in dialog.format_boxes.items():
        box.setChecked(key in formats)
    dialog.all_radio.setChecked(everything)
    dialog.current_radio.setChecked(not everything)
    asked = []

    def fake_ask(conflicts):
        asked.append(conflicts)
        return answer

    dialog.ask_existing = fake_ask
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
    assert names == ["chest.cxr.dcm", "chest.cxr.pdf", "chest.cxr.png", "results.cxr.csv", "results.cxr.json"]
    png = cv2.imread(str(out / "chest.cxr.png"))
    assert png is not None and png.shape[1] >= 80
    assert (out / "chest.cxr.pdf").read_bytes().startswith(b"%PDF")
    ds = pydicom.dcmread(out / "chest.cxr.dcm")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert not str(ds.get("PatientName", "")) and not str(ds.get("PatientID", ""))  # left out by default
    rows = list(csv.DictReader((out / "results.cxr.csv").open(encoding="utf-8-sig")))
    assert len(rows) == 1 and rows[0]["label"] == export_window.session.current.prediction.label
    assert "PatientName" not in rows[0]
    assert any("Exported 5 files" in m for m in export_window.messages.messages())


def test_keep_identifiers_is_an_explicit_choice(export_window, qtbot, tmp_path):
    dialog = make_dialog(export_window, tmp_path / "out", ["dcm", "csv"])
    assert not dialog.identifiers_box.isChecked()
    dialog.identifiers_box.setChecked(True)
    export(qtbot, dialog)
    ds = pydicom.dcmread(tmp_path / "out" / "chest.cxr.dcm")
    assert str(ds.PatientName) == "Doe^Jane"
    row = next(csv.DictReader((tmp_path / "out" / "results.cxr.csv").open(encoding="utf-8-sig")))
    assert row.get("PatientName") == "Doe^Jane"


def test_all_opened_images_with_progress(export_window, qtbot, tmp_path):
    out = tmp_path / "all"
    dialog = make_dialog(export_window, out, ["png", "csv"], everything=True)
    steps: list[tuple[int, int]] = []
    dialog.start_export()
    dialog.handle.progress.connect(lambda d, t: steps.append((d, t)))
    with qtbot.waitSignal(dialog.export_done, timeout=60000) as done:
        pass
    written = done.args[0]
    assert sorted(p.name for p in written) == ["bright.cxr.png", "chest.cxr.png", "dark.cxr.png", "results.cxr.csv"]
    rows = list(csv.DictReader((out / "results.cxr.csv").open(encoding="utf-8-sig")))
    assert [Path(r["file"]).name for r in rows] == ["chest.dcm", "dark.png", "bright.png"]
    labels = {Path(r["file"]).name: r["label"] for r in rows}
    for doc in export_window.session.documents():
        assert labels[doc.name] == doc.prediction.label
    assert steps and steps[-1] == (3, 3)


def test_existing_files_ours_may_be_replaced_foreign_ones_never(export_window, qtbot, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    foreign = out / "chest.cxr.png"
    foreign.write_bytes(b"keep me")  # our naming, but not our file
    # Cancel: nothing is written, the old file is untouched; "Replace" was not offered.
    dialog = make_dialog(export_window, out, ["png"], answer="cancel")
    assert not dialog.start_export()
    assert [t.path for t in dialog.asked[0]] == [foreign] and dialog.asked[0][0].status == "refused"
    assert "replace-ours" not in conflict_choices(dialog.asked[0])
    assert foreign.read_bytes() == b"keep me" and sorted(p.name for p in out.iterdir()) == ["chest.cxr.png"]
    # Even told to replace, a foreign file is skipped.
    dialog = make_dialog(export_window, out, ["png"], answer="replace-ours")
    assert export(qtbot, dialog) == [] and foreign.read_bytes() == b"keep me"
    assert dialog.report.skipped and dialog.report.skipped[0][0] == foreign
    # Keep both: a new name.
    dialog = make_dialog(export_window, out, ["png"], answer="keep-both")
    written = export(qtbot, dialog)
    assert [p.name for p in written] == ["chest (2).cxr.png"]
    assert foreign.read_bytes() == b"keep me"
    # A file we wrote may be replaced, after the user said so.
    ours = out / "chest.cxr.png"
    foreign.unlink()
    export(qtbot, make_dialog(export_window, out, ["png"]))
    first = ours.stat().st_mtime_ns
    dialog = make_dialog(export_window, out, ["png"], answer="replace-ours")
    written = export(qtbot, dialog)
    assert dialog.asked[0][0].status == "ours" and "replace-ours" in conflict_choices(dialog.asked[0])
    assert written == [ours] and ours.stat().st_mtime_ns >= first


def test_a_source_file_is_never_offered_for_replace(make_window, qtbot, tmp_path):
    """Issue 12's data loss: exporting a DICOM into its own folder replaced the original."""
    folder = tmp_path / "study"
    folder.mkdir()
    pixels = (np.arange(96 * 80).reshape(96, 80) % 4096).astype(np.uint16)
    source = folder / "scan.dcm"
    make_dicom(source, pixels, bits_stored=12)
    named_like_ours = folder / "other.cxr.dcm"  # an opened file that happens to carry our naming
    make_dicom(named_like_ours, pixels, bits_stored=12)
    originals = {p: p.read_bytes() for p in (source, named_like_ours)}
    window = make_window()
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(source), str(named_like_ours)])
    qtbot.waitUntil(lambda: all(d.prediction is not None for d in window.session.documents()), timeout=10000)
    # Same folder, same stem, a .dcm source and a DICOM export: the export is scan.cxr.dcm, beside it.
    dialog = make_dialog(window, folder, ["dcm"])
    written = export(qtbot, dialog)
    assert [p.name for p in written] == ["scan.cxr.dcm"] and not dialog.asked
    # The opened "other.cxr.dcm" is the target of its own export: refused, never offered for Replace.
    window.show_document(window.session.documents()[1].doc_id)
    dialog = make_dialog(window, folder, ["dcm"], answer="replace-ours")
    assert export(qtbot, dialog) == []
    conflict = dialog.asked[0][0]
    assert conflict.path == named_like_ours and conflict.status == "refused" and conflict.reason
    assert conflict_choices(dialog.asked[0]) == ["keep-both", "cancel"]
    # Keep both writes beside it.
    dialog = make_dialog(window, folder, ["dcm"], answer="keep-both")
    assert [p.name for p in export(qtbot, dialog)] == ["other (2).cxr.dcm"]
    for path, data in originals.items():
        assert path.read_bytes() == data  # the sources are untouched


def test_format_choices_persist(export_window, qtbot, tmp_path):
    dialog = make_dialog(export_window, tmp_path / "out", ["pdf", "json"])
    export(qtbot, dialog)
    again = export_window.export_dialog()
    assert [k for k, box in again.format_boxes.items() if box.isChecked()] == ["pdf", "json"]
    assert export_window.settings.export_formats == ["pdf", "json"]


def test_export_of_evicted_films_reads_them_again(export_window, qtbot, tmp_path):
    window = export_window
    cache = window.opener.cache
    cache.capacity = 1
    cache.trim(pinned=[window.session.current.doc_id])
    evicted = [d for d in window.session.documents() if not d.loaded]
    assert len(evicted) == 2
    dialog = make_dialog(window, tmp_path / "out", ["png"], everything=True)
    written = export(qtbot, dialog)
    assert sorted(p.name for p in written) == ["bright.cxr.png", "chest.cxr.png", "dark.cxr.png"]
    assert all(not d.loaded for d in evicted)  # read for the export only
    assert all(isinstance(i.image, ReloadingImage) for i in build_items(evicted, window.session, False, print))


def test_same_named_images_get_distinct_files(export_window, tmp_path):
    from inference.export import plan_exports

    docs = export_window.session.documents()
    twin = tmp_path / "elsewhere" / "chest.png"
    twin.parent.mkdir()
    shutil.copy(docs[1].path, twin)
    docs[1].path = twin  # two images called "chest"
    items = build_items(docs[:2], export_window.session, True, print)
    plan = plan_exports(items, tmp_path, ["png", "pdf"], ["csv"])
    targets = [t.path.name for t in plan]
    assert targets == ["chest.cxr.png", "chest.cxr.pdf", "chest (2).cxr.png", "chest (2).cxr.pdf", "results.cxr.csv"]


def test_formats_come_from_inference_export_with_sr_and_gsps(export_window, tmp_path):
    from inference.export import FORMAT_TITLES, FORMATS, TABLE_FORMATS

    dialog = make_dialog(export_window, tmp_path / "out", [])
    assert list(dialog.format_boxes) == [*FORMATS, *TABLE_FORMATS]
    assert {"sr", "gsps"} <= set(dialog.format_boxes)
    for key, box in dialog.format_boxes.items():
        assert box.text().startswith(FORMAT_TITLES[key])


def test_sr_of_a_png_film_is_refused_with_the_sentence_on_screen(export_window, qtbot, tmp_path):
    from inference.export import dicom_object_refusal

    window = export_window
    window.session.step(1)  # dark.png
    doc = window.session.current
    assert doc.meta.format != "DICOM"
    out = tmp_path / "out"
    dialog = make_dialog(window, out, ["sr"])
    why = dicom_object_refusal(doc.image, "sr")
    assert why and dialog.refusal_label.text() == why and not dialog.refusal_label.isHidden()
    assert not dialog.start_export()  # nothing else to write: the sentence says why
    assert why in dialog.status.text() and not out.exists()
    dialog.format_boxes["png"].setChecked(True)
    written = export(qtbot, dialog)
    assert [p.name for p in written] == ["dark.cxr.png"] and dialog.asked == []  # not asked about the SR
    dialog.format_boxes["sr"].setChecked(False)
    assert dialog.refusal_label.isHidden()


def test_the_films_marks_from_its_sidecar_go_into_the_export(export_window, tmp_path):
    from inference.annotations import Annotation
    from inference.sidecar import Sidecar, SidecarStore, film_key
    from viewer.export_dialog import attach_marks

    window = export_window
    docs = window.session.documents()
    chest, dark, bright = docs
    store = SidecarStore()
    mark = Annotation("distance", ((1.0, 2.0), (30.0, 40.0)))
    store.save(Sidecar(film_key(chest.meta, chest.path), annotations=[mark]))
    broken = store.path_for(film_key(dark.meta, dark.path))
    broken.write_text("{not json", encoding="utf-8")
    items = build_items(docs, window.session, True, window.controller.load_image)
    assert all(item.annotations == () for item in items)
    marked, messages = attach_marks(items, store)
    assert [m.points for m in marked[0].annotations] == [mark.points]
    assert marked[1].annotations == () and marked[2].annotations == ()
    assert len(messages) == 1
    # The identities the loader computed are used as they are (no second hash of the file).
    keys = [d.key for d in docs]
    assert keys[0] == film_key(chest.meta, chest.path) and all(keys)
    again, _ = attach_marks(items, store, keys=["", "", keys[0]])
    assert [m.points for m in again[2].annotations] == [mark.points]  # bright.png given chest's key
    assert messages[0].startswith("dark.png: The saved annotations of this film could not be read")
