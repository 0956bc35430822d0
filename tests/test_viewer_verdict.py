"""The reader's verdict in the viewer (issue 15): keys, the panel, the sidecar, the worklist's marks."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from inference.sidecar import SidecarStore
from tests.test_viewer_abstain import AbstainingPredictor
from viewer.qt_compat import emit


def _open(window, qtbot, *paths) -> None:
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(p) for p in paths])
    qtbot.waitUntil(lambda: all(d.prediction is not None for d in window.session.documents()), timeout=10000)


def _press(qtbot, window, key, widget=None) -> None:
    qtbot.keyClick(widget or window.canvas, key)


@pytest.fixture
def reader_window(make_window, qtbot, image_files):
    window = make_window()
    window.settings.reader_name = "Dr Test"
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    window.canvas.setFocus()
    _open(window, qtbot, image_files["deep"], image_files["dark"], image_files["bright"])
    return window


def test_verdict_keys_store_the_verdict_in_the_sidecar_and_mark_the_list(reader_window, qtbot):
    w = reader_window
    doc = w.session.current
    ai = doc.prediction.label
    other = next(c for c in ("COVID-19", "Normal", "Pneumonia") if c != ai)
    w.thumbnails_presenter.flush()
    assert w.thumbnails.row_texts(doc.doc_id)["Read"] == "●"  # unread
    _press(qtbot, w, Qt.Key.Key_Y)
    v = w.reads.verdict(doc)
    assert (v.agreement, v.reader_class, v.reader, v.ai_label) == ("agree", ai, "Dr Test", ai)
    assert v.ai_model == "fake-model 1.0.0" and v.time
    stored = SidecarStore().load(doc.key).verdict  # saved at once, in the store the exports read
    assert stored == v
    w.thumbnails_presenter.flush()
    row = w.thumbnails.row_texts(doc.doc_id)
    assert row["Read"] == "✓" and row["Reader"] == f"✓ agree · {ai}"
    key = {"COVID-19": Qt.Key.Key_F5, "Normal": Qt.Key.Key_F6, "Pneumonia": Qt.Key.Key_F7}[other]
    _press(qtbot, w, key)
    v = SidecarStore().load(doc.key).verdict
    assert (v.reader_class, v.agreement) == (other, "disagree")
    _press(qtbot, w, Qt.Key.Key_F8)
    assert w.reads.verdict(doc).reader_class == "Other finding"
    _press(qtbot, w, Qt.Key.Key_F9)
    assert w.reads.verdict(doc).reader_class == "Not assessable"
    _press(qtbot, w, Qt.Key.Key_N)
    assert w.reads.verdict(doc).agreement == "disagree"
    w.thumbnails_presenter.flush()
    assert w.thumbnails.row_texts(doc.doc_id)["Reader"] == "✗ disagree · Not assessable"
    assert w.verdict_panel.state.text() == "Disagrees with the AI · Not assessable"
    assert w.verdict_panel.disagree_button.isChecked() and w.verdict_panel.class_buttons["Not assessable"].isChecked()
    # The other films are untouched and still unread.
    others = [d for d in w.session.documents() if d is not doc]
    assert all(w.reads.verdict(d) is None for d in others)
    assert all(w.thumbnails.row_texts(d.doc_id)["Read"] == "●" for d in others)


def test_keys_type_instead_of_acting_while_the_impression_has_the_focus(reader_window, qtbot):
    w = reader_window
    doc = w.session.current
    _press(qtbot, w, Qt.Key.Key_F4)
    field = w.verdict_panel.impression
    qtbot.waitUntil(field.hasFocus)
    qtbot.keyClicks(field, "Yes no")
    for key in (Qt.Key.Key_Y, Qt.Key.Key_N, Qt.Key.Key_U, Qt.Key.Key_F5, Qt.Key.Key_F9):
        qtbot.keyClick(field, key)
    assert w.reads.verdict(doc) is None  # no key acted
    assert w.session.current is doc  # U did not move on
    assert field.toPlainText() == "Yes noynu"
    qtbot.keyClick(field, Qt.Key.Key_Escape)  # done: stored, and the keyboard goes back to the image
    assert w.canvas.hasFocus()
    v = SidecarStore().load(doc.key).verdict
    assert v.impression == "Yes noynu" and v.reader == "Dr Test" and not v.is_read
    _press(qtbot, w, Qt.Key.Key_Y)  # keys act again
    assert w.reads.verdict(doc).agreement == "agree" and w.reads.verdict(doc).impression == "Yes noynu"


def test_impression_typed_then_moving_on_is_kept_for_its_own_film(reader_window, qtbot):
    w = reader_window
    first = w.session.current
    w.verdict_controller.focus_impression()
    field = w.verdict_panel.impression
    qtbot.waitUntil(field.hasFocus)
    qtbot.keyClicks(field, "clear lungs")
    w.session.step(1)  # e.g. a click in the list while typing
    second = w.session.current
    assert second is not first and field.toPlainText() == ""
    assert w.reads.verdict(first).impression == "clear lungs"
    assert w.reads.verdict(second) is None


def test_agreeing_with_a_film_the_ai_abstained_on_is_refused_and_said(make_window, qtbot, image_files):
    made = []
    window = make_window(factory=lambda path: made.append(AbstainingPredictor(path)) or made[-1])
    window.settings.reader_name = "Dr Test"
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    window.canvas.setFocus()
    _open(window, qtbot, image_files["bright"])
    doc = window.session.current
    for key in (Qt.Key.Key_Y, Qt.Key.Key_N):
        _press(qtbot, window, key)
        assert window.reads.verdict(doc) is None
    assert "nothing to disagree with" in window.verdict_panel.note.text()
    assert window.verdict_panel.ai_text.text().startswith("No AI result: ")
    _press(qtbot, window, Qt.Key.Key_F6)  # the reader's own class is always possible
    v = window.reads.verdict(doc)
    assert (v.reader_class, v.agreement, v.ai_label) == ("Normal", None, None)


def test_the_reader_name_is_asked_once_and_editable(make_window, qtbot, image_files):
    window = make_window()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    window.canvas.setFocus()
    _open(window, qtbot, image_files["dark"], image_files["bright"])
    asked = []
    window.verdict_controller._ask_name = lambda: asked.append(1) or "  Dr Who "
    _press(qtbot, window, Qt.Key.Key_Y)
    _press(qtbot, window, Qt.Key.Key_Down)
    _press(qtbot, window, Qt.Key.Key_Y)
    assert asked == [1]
    assert window.settings.reader_name == "Dr Who" and window.verdict_panel.reader_edit.text() == "Dr Who"
    assert all(window.reads.verdict(d).reader == "Dr Who" for d in window.session.documents())
    window.verdict_panel.reader_edit.setText("Dr No")
    emit(window.verdict_panel.reader_edit.editingFinished)  # as a user's edit ends
    assert window.settings.reader_name == "Dr No"


def test_u_goes_to_the_next_unread_film_in_the_list_order(reader_window, qtbot):
    w = reader_window
    ids = w.thumbnails.document_ids()
    assert w.session.current.doc_id == ids[0]
    _press(qtbot, w, Qt.Key.Key_F6)
    _press(qtbot, w, Qt.Key.Key_U)
    assert w.session.current.doc_id == ids[1]
    _press(qtbot, w, Qt.Key.Key_F6)
    _press(qtbot, w, Qt.Key.Key_U)
    assert w.session.current.doc_id == ids[2]
    _press(qtbot, w, Qt.Key.Key_F6)
    _press(qtbot, w, Qt.Key.Key_U)
    assert w.session.current.doc_id == ids[2]
    assert "Every film" in w.statusBar().currentMessage()
    w.thumbnails_presenter.flush()
    assert all(w.thumbnails.row_texts(i)["Read"] == "✓" for i in ids)


def test_f1_help_lists_the_verdict_keys():
    from viewer.help_dialog import help_html

    html = help_html()
    for key in ("Y", "N", "F4", "F5", "F6", "F7", "F8", "F9", "U"):
        assert f"<b>{key}</b>" in html
    assert "<h3>Reading</h3>" in html


def test_the_chosen_verdict_buttons_look_pressed(qtbot):
    """The theme gave every push button one background: a checked verdict class, agreement, or the
    compare view's "Synchronised" toggle looked exactly like an unchecked one (QA, Xvfb)."""
    from viewer.theme import STYLE_SHEET
    from viewer.verdict_panel import VerdictPanel

    panel = VerdictPanel()
    qtbot.addWidget(panel)
    panel.setStyleSheet(STYLE_SHEET)
    panel.show()
    panel.show_verdict("film", None)
    chosen, other = panel.class_buttons["Pneumonia"], panel.class_buttons["Normal"]
    chosen.setChecked(True)

    def background(button):
        image = button.grab().toImage()
        return image.pixelColor(6, image.height() // 2).name()

    assert background(chosen) != background(other)


def test_a_short_window_scrolls_the_verdict_panel_instead_of_drawing_it_over_its_neighbours(reader_window, qtbot):
    """On a 1000 px high screen the right column's docks asked for more height than there was and
    the verdict panel was drawn over the AI result and the overlay controls (QA, Xvfb)."""
    from PySide6.QtWidgets import QDockWidget

    window = reader_window
    window.resize(1250, 760)
    qtbot.wait(50)
    right_area = Qt.DockWidgetArea.RightDockWidgetArea
    shown = [d for d in window.findChildren(QDockWidget) if d.isVisible() and d.geometry().top() >= 0]
    right = [d.geometry() for d in shown if window.dockWidgetArea(d) == right_area]
    assert window.verdict_dock.geometry() in right and len(right) >= 3
    for i, a in enumerate(right):
        for b in right[i + 1 :]:
            assert not a.intersects(b), (a, b)


def test_a_class_given_before_the_ai_answered_gets_the_agreement_when_it_answers(reader_window, qtbot):
    from inference.verdict import Verdict

    w = reader_window
    doc = w.session.current
    ai = doc.prediction.label
    other = next(c for c in ("COVID-19", "Normal", "Pneumonia") if c != ai)
    # As the F-keys record it while the model is still loading: no AI class, no model, no agreement.
    early = Verdict().with_class(other, None, "Dr Test", "")
    w.reads.set_verdict(doc, early)
    prediction = doc.prediction
    w.session.set_prediction(doc.doc_id, prediction)  # the AI's answer arrives
    v = SidecarStore().load(doc.key).verdict
    assert (v.reader_class, v.ai_label, v.agreement, v.ai_model) == (other, ai, "disagree", "fake-model 1.0.0")
    assert v.time == early.time  # the reader's own time stays
    w.reads.set_verdict(doc, Verdict().with_class("Not assessable", None, "Dr Test", ""))
    w.session.set_prediction(doc.doc_id, prediction)
    assert w.reads.verdict(doc).agreement == "disagree"  # not one of the AI's classes
    w.reads.set_verdict(doc, Verdict().with_class(ai, None, "Dr Test", ""))
    w.session.set_prediction(doc.doc_id, prediction)
    assert w.reads.verdict(doc).agreement == "agree"
    settled = w.reads.verdict(doc)
    w.session.set_prediction(doc.doc_id, prediction)  # an answer already recorded is not overwritten
    assert w.reads.verdict(doc) is settled
