"""The main window with a fake predictor: opening files, keyboard, overlay, settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from tests.bad_inputs import make_bad_inputs


def mime_for(*paths: Path) -> QMimeData:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    return mime


def drop_on(widget, *paths: Path) -> None:
    """Drag enter, then drop, on ``widget`` as the window system sends them (Qt delivers a drop
    only to the widget that accepted the drag)."""
    mime = mime_for(*paths)
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    enter = QDragEnterEvent(pos, *args)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted(), "the widget refused the drag"
    drop = QDropEvent(pos, *args)
    QApplication.sendEvent(widget, drop)
    assert drop.isAccepted()


def opened_names(window) -> list[str]:
    return [d.name for d in window.session.documents()]


def test_window_opens_before_the_model_and_says_it_is_loading(qtbot, viewer_env, fake_factory):
    from viewer.main_window import MainWindow
    from viewer.settings import ViewerSettings

    fake_factory.delay = 0.0
    window = MainWindow(settings=ViewerSettings(), model_dir="fake-model", predictor_factory=fake_factory)
    qtbot.addWidget(window)
    window.show()
    assert not window.controller.started  # nothing heavy before the window is up
    window.start_background()
    assert window.model_label.text() == "Loading model…"
    qtbot.waitUntil(lambda: window.session.model.state == "ready", timeout=5000)
    assert window.model_label.text() == "Model: fake-model 1.0.0 · CPU"
    assert "Research use only, not for clinical diagnosis" in window.disclaimer_label.text()
    assert "Research use only, not for clinical diagnosis" in window.results.disclaimer.text()
    window.close()


def test_drop_files_and_a_folder_with_a_bad_file_among_good_ones(make_window, qtbot, image_files, tmp_path):
    window = make_window()
    bad = make_bad_inputs(tmp_path / "bad")
    folder = image_files["deep"].parent  # a sub-folder: scanned recursively
    with qtbot.waitSignal(window.open_finished, timeout=10000) as blocker:
        drop_on(window.canvas.viewport(), image_files["dark"], bad["truncated_png"], folder, image_files["bright"])
    assert blocker.args == [3, 1]
    assert sorted(opened_names(window)) == ["bright.png", "dark.png", "deep16.png"]
    assert (
        window.session.current is not None and window.session.current.name == "dark.png"
    )  # the first good file is shown
    # The failure is reported without a modal dialog: status bar and the Messages panel.
    assert any("truncated" in m.lower() for m in window.messages.messages())
    assert "truncated" in window.statusBar().currentMessage().lower()
    assert QApplication.activeModalWidget() is None
    # Every good image gets its prediction and its badge.
    qtbot.waitUntil(lambda: all(d.prediction is not None for d in window.session.documents()), timeout=10000)
    docs = window.session.documents()  # badges are drawn a few per event-loop turn
    qtbot.waitUntil(lambda: all(window.thumbnails.badge(d.doc_id).startswith(d.prediction.label) for d in docs))


def test_drop_of_the_whole_bad_input_corpus_never_crashes(make_window, qtbot, tmp_path, image_files):
    window = make_window()
    bad = make_bad_inputs(tmp_path / "bad")
    with qtbot.waitSignal(window.open_finished, timeout=20000) as blocker:
        window.drop_mime(mime_for(*bad.values(), image_files["bright"]))
    assert blocker.args == [1, len(bad)]
    assert opened_names(window) == ["bright.png"]
    assert len(window.messages.messages()) == len(bad)


def test_drop_event_on_the_main_window_and_dock_area(make_window, qtbot, image_files):
    window = make_window()
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        drop_on(window, image_files["dark"])
    assert opened_names(window) == ["dark.png"]
    with qtbot.waitSignal(window.open_finished, timeout=10000) as blocker:
        drop_on(window, image_files["dark"])  # the same file again: not opened twice
    assert opened_names(window) == ["dark.png"]
    assert blocker.args[1] == 0


def test_recent_files_are_remembered(make_window, qtbot, image_files):
    window = make_window()
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(image_files["dark"])])
    assert window.settings.recent_files[0] == str(image_files["dark"].resolve())
    window._fill_recent_menu()
    texts = [a.text() for a in window.recent_menu.actions()]
    assert str(image_files["dark"].resolve()) in texts


def open_and_wait(window, qtbot, *paths) -> None:
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(p) for p in paths])
    qtbot.waitUntil(lambda: all(d.prediction is not None for d in window.session.documents()), timeout=10000)


def press(qtbot, window, key, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    qtbot.keyClick(window.canvas, key, modifier)


@pytest.fixture
def reading_window(make_window, qtbot, image_files):
    window = make_window()
    window.activateWindow()
    window.canvas.setFocus()
    open_and_wait(window, qtbot, image_files["deep"], image_files["dark"], image_files["bright"])
    assert window.session.current.name == "deep16.png"
    return window


def test_keyboard_shortcuts(reading_window, qtbot):
    w = reading_window
    canvas = w.canvas
    default = canvas.window()
    press(qtbot, w, Qt.Key.Key_2)  # lung preset
    lung = canvas.window()
    assert lung != default and lung.source == "preset"
    press(qtbot, w, Qt.Key.Key_3)  # bone preset: higher centre than lung for a MONOCHROME2 image
    assert canvas.window().center > lung.center
    press(qtbot, w, Qt.Key.Key_0)
    assert canvas.window() == default
    press(qtbot, w, Qt.Key.Key_I)
    assert canvas.inverted() and w.session.current.invert
    press(qtbot, w, Qt.Key.Key_I)
    assert not canvas.inverted()
    fitted = canvas.zoom()
    press(qtbot, w, Qt.Key.Key_Plus)
    assert canvas.zoom() > fitted
    press(qtbot, w, Qt.Key.Key_Minus)
    press(qtbot, w, Qt.Key.Key_Minus)
    assert canvas.zoom() < fitted
    press(qtbot, w, Qt.Key.Key_Equal)
    assert canvas.zoom() == pytest.approx(fitted)
    press(qtbot, w, Qt.Key.Key_BracketRight)
    assert canvas.rotation() == 90
    press(qtbot, w, Qt.Key.Key_BracketLeft)
    press(qtbot, w, Qt.Key.Key_BracketLeft)
    assert canvas.rotation() == 270
    press(qtbot, w, Qt.Key.Key_H)
    assert canvas.is_mirrored()
    press(qtbot, w, Qt.Key.Key_V)
    assert not canvas.is_mirrored()
    press(qtbot, w, Qt.Key.Key_I)
    canvas.set_zoom(5.0)
    press(qtbot, w, Qt.Key.Key_Escape)  # reset view: orientation, zoom, window, invert
    assert canvas.rotation() == 0 and not canvas.is_mirrored() and not canvas.inverted()
    assert canvas.zoom() == pytest.approx(fitted)
    assert canvas.window() == default


def test_keys_move_between_images(reading_window, qtbot):
    w = reading_window
    names = opened_names(w)
    press(qtbot, w, Qt.Key.Key_Down)
    assert w.session.current.name == names[1]
    press(qtbot, w, Qt.Key.Key_PageDown)
    assert w.session.current.name == names[2]
    press(qtbot, w, Qt.Key.Key_Down)  # stays on the last one
    assert w.session.current.name == names[2]
    press(qtbot, w, Qt.Key.Key_Up)
    assert w.session.current.name == names[1]
    press(qtbot, w, Qt.Key.Key_PageUp)
    assert w.session.current.name == names[0]
    press(qtbot, w, Qt.Key.Key_Right)
    assert w.session.current.name == names[1]
    press(qtbot, w, Qt.Key.Key_Left)
    assert w.session.current.name == names[0]


def test_each_image_keeps_its_own_window(reading_window, qtbot):
    w = reading_window
    press(qtbot, w, Qt.Key.Key_2)
    lung = w.canvas.window()
    press(qtbot, w, Qt.Key.Key_Down)
    assert w.canvas.window() != lung
    press(qtbot, w, Qt.Key.Key_Up)
    assert w.canvas.window() == lung


def test_window_level_drag_updates_the_status_bar(reading_window, qtbot):
    w = reading_window
    vp = w.canvas.viewport()
    c = vp.rect().center()
    before = w.wl_label.text()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=c)
    qtbot.mouseMove(vp, c + QPoint(60, 30))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=c + QPoint(60, 30))
    assert w.wl_label.text() != before
    window = w.canvas.window()
    assert w.wl_label.text() == f"C {window.center:.6g} / W {window.width:.6g}"
    qtbot.mouseMove(vp, w.canvas.image_to_view(5.5, 6.5).toPoint())
    assert w.pixel_label.text().startswith("x ")


def test_overlay_toggle_opacity_colormap_and_class(reading_window, qtbot):
    w = reading_window
    canvas = w.canvas
    assert not canvas.overlay_visible()
    with qtbot.waitSignal(w.overlay_shown, timeout=10000):
        press(qtbot, w, Qt.Key.Key_G)
    assert canvas.overlay_visible() and canvas.has_overlay()
    assert w.actions_by_id["overlay"].isChecked() and w.overlay_panel.show_box.isChecked()
    predicted = w.session.current.prediction.class_index
    assert (predicted, "gradcam") in w.session.current.explanations
    # Opacity slider drives the overlay item.
    w.overlay_panel.opacity_slider.setValue(80)
    assert canvas.overlay_opacity() == pytest.approx(0.8)
    # Another colour map recolours the same heat map.
    before = canvas.overlay_item.pixmap().toImage()
    w.overlay_panel.set_colormap("viridis")
    assert canvas.overlay_item.pixmap().toImage() != before
    # Explain another class than the predicted one.
    other = (predicted + 1) % 3
    with qtbot.waitSignal(w.overlay_shown, timeout=10000):
        w.overlay_panel.class_combo.setCurrentIndex(other + 1)
    assert (other, "gradcam") in w.session.current.explanations
    assert w.overlay_panel.status.text().endswith(w.session.model.info.class_names[other])
    # Grad-CAM++ on request.
    with qtbot.waitSignal(w.overlay_shown, timeout=10000):
        w.overlay_panel.method_combo.setCurrentIndex(1)
    assert (other, "gradcam++") in w.session.current.explanations
    # The toolbar action hides it again.
    w.actions_by_id["overlay"].trigger()
    assert not canvas.overlay_visible() and not w.overlay_panel.show_box.isChecked()


def test_results_panel_shows_the_current_prediction(reading_window, qtbot):
    w = reading_window
    p = w.session.current.prediction
    assert w.results.headline.text() == p.label
    assert w.results.bars.values() == pytest.approx(p.probabilities)
    assert "fake-model 1.0.0" in w.results.model_label.text()
    press(qtbot, w, Qt.Key.Key_Down)
    assert w.results.headline.text() == w.session.current.prediction.label


def test_tag_panel_search(make_window, qtbot, tmp_path):
    from tests.dicom_factory import make_dicom

    path = tmp_path / "chest.dcm"
    make_dicom(path, (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16), bits_stored=12)
    window = make_window()
    open_and_wait(window, qtbot, path)
    tags = window.tags
    total = tags.visible_rows()
    assert total > 5
    tags.search.setText("modality")
    assert 1 <= tags.visible_rows() < total
    tags.search.setText("no-such-tag-anywhere")
    assert tags.visible_rows() == 0
    tags.search.clear()
    assert tags.visible_rows() == total


def test_closing_an_image_cancels_its_queued_jobs(make_window, qtbot, image_files, fake_factory):
    fake_factory.delay = 0.3
    window = make_window()
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(p) for p in image_files.values()])
    last = window.document_ids()[-1]
    window.close_document(last)
    assert window.session.document(last) is None
    assert all(j.doc_id != last for j in list(window.controller.queue._jobs))
    qtbot.waitUntil(lambda: all(d.prediction is not None for d in window.session.documents()), timeout=10000)
    assert last not in window.thumbnails.document_ids()
    assert fake_factory.made[-1].calls.count("predict") == 2  # the closed one was never predicted


def test_settings_persist_between_runs(make_window, qtbot, image_files):
    window = make_window()
    window.overlay_panel.set_opacity(0.7)
    window.overlay_panel.set_colormap("inferno")
    window.settings.last_folder = str(image_files["dark"].parent)
    window.resize(760, 560)  # inside the offscreen screen (800x600): restoreGeometry clamps to it
    window.close()
    again = make_window()
    assert again.session.overlay.opacity == pytest.approx(0.7)
    assert again.overlay_panel.opacity_slider.value() == 70
    assert again.canvas.overlay_opacity() == pytest.approx(0.7)
    assert again.session.overlay.colormap == "inferno"
    assert again.overlay_panel.colormap_combo.currentText() == "inferno"
    assert again.settings.last_folder == str(image_files["dark"].parent)
    assert again.width() == 760  # the height is held up by the docks' minimum sizes


def test_help_dialog_lists_every_shortcut(make_window, qtbot):
    from viewer.help_dialog import help_html
    from viewer.shortcuts import SHORTCUTS

    html = help_html()
    for shortcut in SHORTCUTS:
        assert shortcut.help.split(" (")[0].replace("&", "&amp;") in html
    for word in ("Lung", "Bone", "Left drag", "Middle drag", "Right drag", "Wheel", "wider", "Research use only"):
        assert word in html
    window = make_window()
    press(qtbot, window, Qt.Key.Key_F1)
    assert window.dialogs.help_dialog.isVisible()


def test_missing_model_leaves_a_working_viewer(make_window, qtbot, image_files):
    window = make_window(model_dir="/nowhere/missing-model")
    assert window.session.model.state == "failed"
    open_and_wait_no_model(window, qtbot, image_files["dark"])
    assert window.session.current is not None and window.session.current.prediction is None
    assert window.results.headline.text() == "No model loaded"
    assert any("could not be loaded" in m for m in window.messages.messages())


def open_and_wait_no_model(window, qtbot, *paths) -> None:
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(p) for p in paths])


def test_sixteen_bit_png_keeps_its_depth(reading_window):
    doc = reading_window.session.documents()[0]
    assert doc.image.pixels.dtype == np.uint16 and doc.image.pixels.max() > 255


def test_active_model_is_remembered(qtbot, viewer_env, fake_factory):
    from viewer.main_window import MainWindow
    from viewer.settings import ViewerSettings

    model = viewer_env / "my-model"
    model.mkdir()
    settings = ViewerSettings()
    settings.active_model = str(model)
    window = MainWindow(settings=settings, model_dir=None, predictor_factory=fake_factory)
    qtbot.addWidget(window)
    window.show()
    window.start_background()
    qtbot.waitUntil(lambda: window.session.model.state == "ready", timeout=10000)
    assert window.session.model.path == str(model) and fake_factory.made[-1].path == str(model)
    window.close()


def test_full_screen_toggles(reading_window, qtbot):
    w = reading_window
    press(qtbot, w, Qt.Key.Key_F11)
    qtbot.waitUntil(w.isFullScreen, timeout=3000)
    assert w.actions_by_id["fullscreen"].isChecked()
    press(qtbot, w, Qt.Key.Key_F11)
    qtbot.waitUntil(lambda: not w.isFullScreen(), timeout=3000)


def test_a_remembered_model_that_fails_falls_back_to_the_bundled_one(qtbot, viewer_env, fake_factory):
    """Issue 17: a remembered model that no longer loads must not leave the viewer without AI."""
    from inference.paths import bundled_model_dir
    from viewer.main_window import MainWindow
    from viewer.settings import ViewerSettings

    settings = ViewerSettings()
    settings.active_model = str(viewer_env / "missing-model")  # deleted or broken since last time
    window = MainWindow(settings=settings, model_dir=None, predictor_factory=fake_factory)
    qtbot.addWidget(window)
    window.show()
    window.start_background()
    qtbot.waitUntil(lambda: window.session.model.state == "ready", timeout=10000)
    assert window.session.model.path == str(bundled_model_dir())
    assert settings.active_model == ""  # corrected: the next start goes straight to the bundled model
    assert any("missing-model could not be loaded; using the bundled model" in m for m in window.messages.messages())
    window.close()


def test_quitting_while_the_model_works_returns_within_the_timeout(make_window, qtbot, image_files, fake_factory):
    import time

    fake_factory.delay = 1.5  # every prediction is slow
    window = make_window()
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(p) for p in image_files.values()])
    qtbot.waitUntil(lambda: fake_factory.made[-1].busy.is_set(), timeout=10000)  # one is inside the network
    waiting = [h for h in window.scheduler._predicting.values() if h.state == "queued"]
    assert waiting
    t0 = time.monotonic()
    assert window.shutdown(timeout=0.5) in (True, False)
    assert time.monotonic() - t0 < 2.0  # never the 4.5 s the queued predictions would take
    assert all(h.state == "cancelled" for h in waiting)


def test_files_given_at_start_show_before_the_model_loads(qtbot, viewer_env, fake_factory, image_files):
    from viewer.main_window import MainWindow
    from viewer.settings import ViewerSettings

    window = MainWindow(settings=ViewerSettings(), model_dir="fake-model", predictor_factory=fake_factory)
    qtbot.addWidget(window)
    window.open_paths([str(image_files["dark"])])  # like ``main.py FILE``
    states: list[str] = []
    window.session.events.current_changed.connect(lambda _doc: states.append(window.session.model.state))
    window.show()
    window.start_background()
    assert window.session.model.state == "idle"  # TensorFlow's import waits for the first image
    qtbot.waitUntil(lambda: window.session.model.state == "ready", timeout=10000)
    assert states[0] == "idle"
    qtbot.waitUntil(lambda: window.session.current.prediction is not None, timeout=10000)
    window.close()


def test_the_overlay_names_the_predicted_class_of_the_film_on_screen(make_window, qtbot, tmp_path):
    """The Grad-CAM panel's "Predicted class (Normal)" stayed from the previous film when the next one's result
    was already there: on the NIH film the AI called COVID-19 (QA screenshot under Xvfb)."""
    from tests.conftest import write_png

    y, x = np.mgrid[0:48, 0:48]
    low = write_png(tmp_path / "low.png", (10 + (x + y) % 7 * 2 + (x == 0) * 200).astype(np.uint8))  # COVID-19
    high = write_png(tmp_path / "high.png", (200 + (x + y) % 9 * 5).astype(np.uint8))  # Pneumonia
    w = make_window()
    open_and_wait(w, qtbot, low, high)
    labels = {}
    for _ in range(2):
        doc = w.session.current
        labels[doc.prediction.label] = w.overlay_panel.class_combo.itemText(0)
        w.session.step(1)
    assert labels == {"COVID-19": "Predicted class (COVID-19)", "Pneumonia": "Predicted class (Pneumonia)"}
