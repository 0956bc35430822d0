"""The training dialog on tiny generated data: scan, train 2 epochs at 32 px, report, activate, cancel."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QTimer

from tests.training_data import make_class_folder
from viewer.model_store import user_models_dir

pytestmark = pytest.mark.slow


@pytest.fixture
def data_folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    make_class_folder(root, {"Normal": 8, "Pneumonia": 8}, size=32)
    (root / "Normal" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def dialog(make_window, qtbot):
    from viewer.training_dialog import TrainingDialog

    window = make_window()
    dlg = TrainingDialog(window.session, window.activate_model, window)
    qtbot.addWidget(dlg)
    dlg.show()
    yield dlg
    dlg.cancel_and_wait()


def set_tiny(dlg, folder: Path, qtbot) -> None:
    dlg.folder_edit.setText(str(folder))
    with qtbot.waitSignal(dlg.scan_finished, timeout=20000):
        dlg.scan()
    dlg.init_combo.setCurrentIndex(dlg.init_combo.findData("scratch"))
    dlg.arch_combo.setCurrentIndex(dlg.arch_combo.findData("custom-cnn"))
    dlg.size_spin.setValue(32)
    dlg.epochs_spin.setValue(2)
    dlg.name_edit.setText("tiny trained")


def test_scan_shows_classes_counts_and_skipped_files(dialog, qtbot, data_folder):
    assert not dialog.start_button.isEnabled()  # nothing to train on yet
    set_tiny(dialog, data_folder, qtbot)
    rows = {dialog.classes_table.item(r, 0).text(): dialog.classes_table.item(r, 1).text() for r in range(2)}
    assert rows == {"Normal": "8", "Pneumonia": "8"}
    assert "notes.txt" in dialog.skipped_view.toPlainText()
    assert "1 file skipped" in dialog.scan_label.text()
    assert dialog.start_button.isEnabled()


def test_scan_of_an_unusable_folder_says_why(dialog, qtbot, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    dialog.folder_edit.setText(str(empty))
    with qtbot.waitSignal(dialog.scan_finished, timeout=20000) as done:
        dialog.scan()
    assert done.args == [None]
    assert "empty" in dialog.scan_label.text().lower()
    assert not dialog.start_button.isEnabled()


def test_train_two_epochs_then_activate(dialog, qtbot, data_folder):
    set_tiny(dialog, data_folder, qtbot)
    ticks: list[int] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(50)
    with qtbot.waitSignal(dialog.training_finished, timeout=180000) as done:
        assert dialog.start()
        assert dialog.cancel_button.isEnabled() and not dialog.start_button.isEnabled()
    timer.stop()
    result = done.args[0]
    assert result is not None, dialog.stage_label.text() + "\n" + dialog.log_view.toPlainText()
    assert ticks  # the viewer's event loop ran during training
    assert result.bundle_dir.parent == user_models_dir() and result.bundle_dir.name == "tiny-trained"
    assert (result.bundle_dir / "model.json").is_file()
    assert dialog.epoch_bar.value() == 2 and dialog.epoch_bar.maximum() == 2
    assert len(dialog.loss_plot.series().get("loss", [])) == 2
    report = dialog.report_view.toPlainText()
    assert "tiny-trained" in report and ("Accuracy" in report or "No validation" in report)
    assert dialog.activate_button.isEnabled()
    with qtbot.waitSignal(dialog.parent().model_changed, timeout=10000):
        dialog.activate()
    assert dialog.session.model.path == str(result.bundle_dir)
    # A second run with the same name gets a new folder: nothing is overwritten.
    assert dialog.make_config().out_dir.name == "tiny-trained-2"


def test_cancel_writes_nothing(dialog, qtbot, data_folder, monkeypatch):
    from viewer.training_dialog import QtTrainingProgress

    set_tiny(dialog, data_folder, qtbot)
    before = sorted(user_models_dir().glob("*")) if user_models_dir().exists() else []
    # The user presses Cancel as training begins (set from the training thread itself: deterministic).
    monkeypatch.setattr(QtTrainingProgress, "on_train_begin", lambda self, epochs, steps: dialog._cancel.set())
    with qtbot.waitSignal(dialog.training_finished, timeout=180000) as done:
        dialog.start()
    assert done.args == [None]
    assert "Cancelled" in dialog.stage_label.text()
    after = sorted(user_models_dir().glob("*")) if user_models_dir().exists() else []
    assert after == before
    assert dialog.start_button.isEnabled() and not dialog.activate_button.isEnabled()


def test_a_new_run_clears_the_last_runs_epoch_line(dialog, qtbot, data_folder, monkeypatch):
    from viewer.training_dialog import QtTrainingProgress

    set_tiny(dialog, data_folder, qtbot)
    dialog.live_label.setText("Epoch 2, batch 4: loss 0.1234, accuracy 0.9000")  # the previous run's last line
    monkeypatch.setattr(QtTrainingProgress, "on_train_begin", lambda self, epochs, steps: dialog._cancel.set())
    with qtbot.waitSignal(dialog.training_finished, timeout=180000):
        assert dialog.start()
        assert dialog.live_label.text() == ""
    assert "Epoch 2, batch 4" not in dialog.live_label.text()


# -- "Adapt to my reads" ------------------------------------------------------------------------------
ADAPT_CLASSES = ("COVID-19", "Normal", "Pneumonia")


@pytest.fixture(scope="module")
def adapt_parent(tmp_path_factory) -> Path:
    from tests.tiny_bundle import make_tiny_bundle

    # Untrained, flattened features: only the classification layer has to learn where the blob is.
    return make_tiny_bundle(tmp_path_factory.mktemp("parent") / "parent", head="flatten", version="1.1.1")


def _reads_store(root: Path, shuffle: bool = False) -> Path:
    """A verdict store of 90 generated films whose reader's class is the folder's (or random)."""
    import hashlib

    import numpy as np

    from inference.sidecar import Sidecar, SidecarStore
    from inference.verdict import Verdict

    films = make_class_folder(root / "films", dict.fromkeys(ADAPT_CLASSES, 30), size=48)
    store = SidecarStore(root / "reads")
    rng = np.random.default_rng(0)
    for p in films:
        reader = ADAPT_CLASSES[int(rng.integers(0, 3))] if shuffle else p.parent.name
        key = "sha256-" + hashlib.sha256(p.read_bytes()).hexdigest()
        store.save(Sidecar(key, file=str(p), verdict=Verdict().with_class(reader, "Normal", reader="Dr A")))
    return store.root


def test_adapt_to_my_reads_shows_the_comparison_and_activates(dialog, qtbot, adapt_parent, tmp_path):
    reads = _reads_store(tmp_path)
    with qtbot.waitSignal(dialog.adaptation_finished, timeout=180000) as done:
        assert dialog.start_adapt(str(adapt_parent), str(reads))
        assert dialog.cancel_button.isEnabled() and not dialog.activate_button.isEnabled()
    result = done.args[0]
    assert result is not None, dialog.stage_label.text() + "\n" + dialog.log_view.toPlainText()
    assert result.accepted and result.bundle_dir.parent == user_models_dir()
    assert result.bundle_dir.name == "tiny-test-1.1.1-adapted.1"
    report = dialog.report_view.toPlainText()
    assert "Gate passed" in report and "Parent" in report and "Adapted" in report and "Balanced accuracy" in report
    assert "Confusion matrix" in report
    assert dialog.epoch_bar.value() > 0  # progress arrived from the worker thread
    assert dialog.activate_button.isEnabled()
    with qtbot.waitSignal(dialog.parent().model_changed, timeout=10000):
        dialog.activate()
    assert dialog.session.model.path == str(result.bundle_dir)
    from inference.activations import active_model

    assert active_model() == result.bundle_dir


def test_a_refused_adaptation_says_why_and_cannot_be_activated(dialog, qtbot, adapt_parent, tmp_path):
    reads = _reads_store(tmp_path, shuffle=True)  # labels unrelated to the films: nothing to gain
    before = sorted(user_models_dir().glob("*")) if user_models_dir().exists() else []
    with qtbot.waitSignal(dialog.adaptation_finished, timeout=180000) as done:
        assert dialog.start_adapt(str(adapt_parent), str(reads))
    result = done.args[0]
    assert result is not None and not result.accepted and result.bundle_dir is None
    assert "Gate refused" in dialog.stage_label.text()
    assert "not better beyond its uncertainty" in dialog.report_view.toPlainText()
    assert not dialog.activate_button.isEnabled()
    after = sorted(user_models_dir().glob("*")) if user_models_dir().exists() else []
    assert after == before  # a refused model is never written


def test_cancelling_an_adaptation_writes_nothing(dialog, qtbot, adapt_parent, tmp_path, monkeypatch):
    from viewer.training_dialog import QtTrainingProgress

    reads = _reads_store(tmp_path)
    monkeypatch.setattr(QtTrainingProgress, "on_train_begin", lambda self, epochs, steps: dialog._cancel.set())
    with qtbot.waitSignal(dialog.adaptation_finished, timeout=180000) as done:
        assert dialog.start_adapt(str(adapt_parent), str(reads))
    assert done.args == [None]
    assert "Cancelled" in dialog.stage_label.text()
    assert not user_models_dir().exists() or not any(user_models_dir().glob("tiny-test-*"))
    assert not dialog.activate_button.isEnabled()
