"""The worklist in the viewer (issue 15): the Qt model, the filter bar, grouping of DICOM patients and
studies, the current film in step with the session, and compare with a prior."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QTreeView

from inference.image import Window
from tests.dicom_factory import make_dicom
from viewer.worklist import WorklistEntry
from viewer.worklist_model import COLUMNS, WorklistModel


def _film(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:64, 0:64]
    return ((x * 20 + y * (10 + seed) + rng.integers(0, 200, (64, 64))) % 4000).astype(np.uint16)


@pytest.fixture
def dicom_patients(tmp_path: Path) -> dict[str, Path]:
    """Patient A: an old study (2019) and a new one (2021, two films); patient B: one study; a PNG."""
    from tests.conftest import gradient_image, write_png

    old, new, b = generate_uid(), generate_uid(), generate_uid()
    spec = {
        "a_2019.dcm": ("PID-A", "Alpha^Ann", old, "20190301", 1),
        "a_2021_pa.dcm": ("PID-A", "Alpha^Ann", new, "20210301", 2),
        "a_2021_lat.dcm": ("PID-A", "Alpha^Ann", new, "20210301", 3),
        "b_2020.dcm": ("PID-B", "Beta^Bob", b, "20200505", 4),
    }
    files = {}
    for name, (pid, pname, study, date, seed) in spec.items():
        files[name] = tmp_path / "dicom" / name
        files[name].parent.mkdir(exist_ok=True)
        make_dicom(
            files[name], _film(seed), bits_stored=12, patient_id=pid, patient_name=pname,
            extra={"StudyInstanceUID": study, "StudyDate": date},
        )  # fmt: skip
    files["loose.png"] = write_png(tmp_path / "dicom" / "loose.png", gradient_image(48, 200))
    return files


def _open(window, qtbot, *paths) -> None:
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(p) for p in paths])
    qtbot.waitUntil(lambda: all(d.prediction is not None for d in window.session.documents()), timeout=10000)
    window.thumbnails_presenter.flush()


def _ids_by_name(window) -> dict[str, int]:
    return {d.name: d.doc_id for d in window.session.documents()}


def _group_labels(model: WorklistModel, parent=None) -> list[str]:
    from PySide6.QtCore import QModelIndex

    parent = parent or QModelIndex()
    return [model.text_at(model.index(r, 0, parent)) for r in range(model.rowCount(parent))]


def test_dicom_films_are_grouped_by_patient_and_study(make_window, qtbot, dicom_patients):
    window = make_window()
    _open(window, qtbot, *dicom_patients.values())
    model = window.thumbnails.model
    assert model.grouped
    assert _group_labels(model) == ["PID-A (3)", "PID-B (1)", "Other files (1)"]
    patient_a = model.index(0, 0)
    assert _group_labels(model, patient_a) == ["2019-03-01 · CHEST PA (1)", "2021-03-01 · CHEST PA (2)"]
    study_2021 = model.index(1, 0, patient_a)
    names = [model.text_at(model.index(r, 0, study_2021)) for r in range(model.rowCount(study_2021))]
    assert names == ["a_2021_pa.dcm", "a_2021_lat.dcm"]
    ids = _ids_by_name(window)
    row = window.thumbnails.row_texts(ids["b_2020.dcm"])
    assert row["Patient"] == "PID-B" and row["Study date"] == "2020-05-05" and row["Read"] == "●"
    assert row["AI"] in ("COVID-19", "Normal", "Pneumonia") and row["Prob."].endswith("%")


def test_png_films_stay_a_flat_list(make_window, qtbot, image_files):
    window = make_window()
    _open(window, qtbot, *image_files.values())
    model = window.thumbnails.model
    assert not model.grouped
    assert model.rowCount() == 3 and all(not model.hasChildren(model.index(r, 0)) for r in range(3))


def test_filter_bar_and_column_sort(make_window, qtbot, dicom_patients):
    window = make_window()
    _open(window, qtbot, *dicom_patients.values())
    panel, ids = window.thumbnails, _ids_by_name(window)
    panel.search.setText("pid-b")
    assert panel.document_ids() == [ids["b_2020.dcm"]]
    panel.search.setText("")
    window.reads.set_verdict(window.session.document(ids["a_2019.dcm"]), _verdict("Normal"))
    window.thumbnails_presenter.flush()
    panel.read_box.setCurrentText("Unread")
    assert ids["a_2019.dcm"] not in panel.document_ids() and len(panel.document_ids()) == 4
    panel.read_box.setCurrentText("Read")
    assert panel.document_ids() == [ids["a_2019.dcm"]]
    panel.read_box.setCurrentText("Read: any")
    docs = window.session.documents()
    label = docs[0].prediction.label
    panel.class_box.setCurrentText(label)
    assert set(panel.document_ids()) == {d.doc_id for d in docs if d.prediction.label == label}
    panel.class_box.setCurrentIndex(0)
    # Sorting by a column header: probability, descending; then file name ascending.
    header = panel.view.header()
    prob = next(i for i, c in enumerate(COLUMNS) if c[0] == "Prob.")
    header.setSortIndicator(prob, Qt.SortOrder.DescendingOrder)
    probs = [window.session.document(i).prediction.confidence for i in panel.document_ids()]
    by_patient: dict[str, list[float]] = {}
    for i, p in zip(panel.document_ids(), probs):
        by_patient.setdefault(panel.model.entry(i).patient, []).append(p)
    assert all(v == sorted(v, reverse=True) for v in by_patient.values())  # within each group
    header.setSortIndicator(0, Qt.SortOrder.AscendingOrder)
    names = [window.session.document(i).name for i in panel.document_ids()]
    assert names == ["a_2019.dcm", "a_2021_lat.dcm", "a_2021_pa.dcm", "b_2020.dcm", "loose.png"]


def _verdict(reader_class: str):
    from inference.verdict import Verdict

    return Verdict().with_class(reader_class, None, "Dr Test")


def test_current_film_in_step_both_ways_and_keys_follow_the_list_order(make_window, qtbot, image_files):
    window = make_window()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    _open(window, qtbot, image_files["deep"], image_files["dark"], image_files["bright"])
    panel, session = window.thumbnails, window.session
    # session -> list
    ids = session.document_ids()
    session.set_current(ids[1])
    assert panel.model.doc_id_at(panel.view.currentIndex()) == ids[1]
    # list -> session
    panel.view.setCurrentIndex(panel.model.index_of(ids[2]))
    assert session.current.doc_id == ids[2]
    # Sorted by file name descending, Down and End follow the list, not the opening order.
    panel.view.header().setSortIndicator(0, Qt.SortOrder.DescendingOrder)
    shown = panel.document_ids()
    assert [session.document(i).name for i in shown] == ["deep16.png", "dark.png", "bright.png"]
    panel.view.setFocus()
    qtbot.keyClick(panel.view, Qt.Key.Key_Home)
    assert session.current.doc_id == shown[0]
    qtbot.keyClick(panel.view, Qt.Key.Key_Down)
    assert session.current.doc_id == shown[1]
    assert panel.model.doc_id_at(panel.view.currentIndex()) == shown[1]
    qtbot.keyClick(panel.view, Qt.Key.Key_PageDown)
    assert session.current.doc_id == shown[2]
    qtbot.keyClick(panel.view, Qt.Key.Key_Up)
    assert session.current.doc_id == shown[1]
    qtbot.keyClick(panel.view, Qt.Key.Key_End)
    assert session.current.doc_id == shown[2]
    panel.order_box.setCurrentText("As opened")
    assert panel.document_ids() == ids


def test_a_closed_group_stays_closed_and_opens_for_its_film(make_window, qtbot, dicom_patients):
    window = make_window()
    _open(window, qtbot, *dicom_patients.values())
    panel, ids = window.thumbnails, _ids_by_name(window)
    window.session.set_current(ids["loose.png"])
    patient_b = panel.model.index(1, 0)
    panel.view.collapse(patient_b)
    panel.search.setText("a")  # a re-arrangement (model reset) ...
    panel.search.setText("")
    patient_b = panel.model.index(1, 0)
    assert not panel.view.isExpanded(patient_b)  # ... keeps what the reader closed
    window.session.set_current(ids["b_2020.dcm"])
    assert panel.view.isExpanded(panel.model.index(1, 0))


def test_thumbnails_are_made_only_for_rows_on_screen(qtbot):
    asked: list[int] = []
    gray = np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))
    model = WorklistModel(lambda doc_id: asked.append(doc_id) or gray)
    model.set_entries([WorklistEntry(i, f"f{i:05d}.png", position=i) for i in range(3000)])
    view = QTreeView()
    qtbot.addWidget(view)
    view.setUniformRowHeights(True)
    view.setModel(model)
    view.resize(400, 300)
    view.show()
    qtbot.waitExposed(view)
    qtbot.waitUntil(lambda: bool(asked))
    view.viewport().repaint()
    assert 0 < len(set(asked)) < 60  # a screenful, not 3000
    assert model.rowCount() == 3000


def test_compare_with_the_prior_syncs_zoom_pan_and_window_until_switched_off(make_window, qtbot, dicom_patients):
    from viewer.compare import fit_zoom

    window = make_window()
    _open(window, qtbot, *dicom_patients.values())
    ids = _ids_by_name(window)
    window.session.set_current(ids["a_2021_pa.dcm"])
    qtbot.waitUntil(lambda: window.canvas.image is not None)
    menu = window.thumbnails.context_menu(window.thumbnails.model.index_of(ids["a_2021_pa.dcm"]))
    assert [a.text() for a in menu.actions()][0] == "Compare with prior"
    compare = window.compare
    assert compare.start()
    assert compare.prior.name == "a_2019.dcm"  # the most recent other study of this patient
    assert compare.pane.isVisible()
    qtbot.waitUntil(lambda: compare.pane.canvas.image is not None)
    assert "Prior" in compare.pane.header.text() and "AI: " in compare.pane.header.text()
    main, prior = window.canvas, compare.pane.canvas
    assert any(line.startswith("AI: ") for line in prior.annotations()["top_right"])
    main.set_zoom(fit_zoom(main) * 2.0)
    assert prior.zoom() / fit_zoom(prior) == pytest.approx(2.0, rel=1e-3)
    main.pan_by(40, 0)
    centre = lambda c: c.mapToScene(c.viewport().rect().center()).x() / c.image.shape[1]  # noqa: E731
    assert centre(prior) == pytest.approx(centre(main), abs=0.03)
    d_main, d_prior = window.session.current.default_window, compare.prior.default_window
    main.set_window(Window(center=d_main.center + 100, width=d_main.width / 2))
    scale = d_prior.width / d_main.width
    assert prior.window().center == pytest.approx(d_prior.center + 100 * scale)
    assert prior.window().width == pytest.approx(d_prior.width / 2)
    assert compare.prior.window == prior.window()  # the session keeps the prior's window too
    # Both ways: zooming the prior moves the main view.
    prior.set_zoom(fit_zoom(prior) * 3.0)
    assert main.zoom() / fit_zoom(main) == pytest.approx(3.0, rel=1e-3)
    # Switched off: each view on its own.
    compare.sync_action.setChecked(False)
    assert not compare.pane.sync_button.isChecked()
    main.set_zoom(fit_zoom(main) * 1.5)
    assert prior.zoom() / fit_zoom(prior) == pytest.approx(3.0, rel=1e-3)
    # Each side has its own overlay: the prior's heat map for its own class, computed for it.
    window.session.set_overlay_visible(True)
    qtbot.waitUntil(lambda: prior.has_overlay() and main.has_overlay(), timeout=10000)
    assert prior.overlay_visible()
    target = window.session.overlay_target(compare.prior)
    assert target in compare.prior.explanations
    assert target[0] == compare.prior.prediction.class_index
    window.session.set_overlay_visible(False)
    assert not prior.overlay_visible()
    compare.pane.close_button.click()
    assert not compare.active and not compare.pane.isVisible()


def test_compare_says_when_the_patient_has_no_other_film(make_window, qtbot, dicom_patients):
    window = make_window()
    _open(window, qtbot, *dicom_patients.values())
    ids = _ids_by_name(window)
    for name in ("b_2020.dcm", "loose.png"):
        window.session.set_current(ids[name])
        assert not window.compare.start()
        assert "no other film of this patient" in window.messages.messages()[-1]
    assert not window.compare.pane.isVisible()


def test_hide_identifiers_leaves_patients_and_file_names_out_of_the_list(make_window, qtbot, dicom_patients):
    window = make_window()
    _open(window, qtbot, *dicom_patients.values())
    ids, panel = _ids_by_name(window), window.thumbnails
    window.view.set_hide_identifiers(True)
    assert _group_labels(panel.model) == ["Patient 1 (3)", "Patient 2 (1)", "Other files (1)"]
    row = panel.row_texts(ids["b_2020.dcm"])
    assert row["Patient"] == "Patient 2" and row["File"].startswith("Film ")
    shown = " ".join(" ".join(panel.row_texts(i).values()) for i in ids.values())
    assert "PID-" not in shown and ".dcm" not in shown and "loose" not in shown
    assert panel.model.index_of(ids["a_2019.dcm"]).data(Qt.ItemDataRole.ToolTipRole).count("/") == 0
    window.view.set_hide_identifiers(False)
    assert panel.row_texts(ids["b_2020.dcm"])["Patient"] == "PID-B"
    assert _group_labels(panel.model)[0] == "PID-A (3)"


def test_a_result_that_moves_nothing_repaints_its_row_without_rearranging(qtbot):
    from dataclasses import replace

    model = WorklistModel(lambda _doc_id: None)
    entries = [WorklistEntry(i, f"f{i}.png", position=i, badge="…") for i in range(50)]
    model.set_entries(entries)
    resets, repainted = [], []
    model.modelReset.connect(lambda: resets.append(1))
    model.dataChanged.connect(lambda top, _bottom: repainted.append(model.doc_id_at(top)))
    result = replace(entries[7], ai_label="Normal", ai_probability=0.8, badge="Normal 80%")
    model.update_entries([result])  # "as opened", no filter: nothing moves
    assert resets == [] and repainted == [7] and model.entry(7).badge == "Normal 80%"
    model.set_sort("probability", descending=True)
    resets.clear()
    model.update_entries([replace(entries[9], ai_label="COVID-19", ai_probability=0.9)])
    assert resets == [1] and model.film_ids()[:2] == [9, 7]  # sorted by probability: it moved up


def test_closing_all_films_rearranges_the_list_once(make_window, qtbot, image_files):
    window = make_window()
    _open(window, qtbot, *image_files.values())
    resets = []
    window.thumbnails.model.modelReset.connect(lambda: resets.append(1))
    window.close_all()
    qtbot.waitUntil(lambda: window.thumbnails.model.rowCount() == 0)
    assert len(resets) == 1 and window.thumbnails.document_ids() == []
