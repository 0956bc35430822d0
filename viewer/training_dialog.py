"""Train a model from a folder of labelled images, without leaving the viewer.

Scanning the folder (``training.datasets.discover``) and training (``training.train.train``)
both run in worker threads; progress arrives through :class:`QtTrainingProgress`, which
implements ``training.progress.TrainingProgress`` by emitting Qt signals. The viewer stays
usable throughout. A new model goes into the user models folder under a name no other
model has; cancelling leaves every existing model untouched (the training module writes
bundles atomically).

"Adapt to my reads" runs ``training.adapt.adapt`` (the code behind ``main.py adapt``) the same
way: on a worker thread, cancellable, with the same progress signals. It starts from the
active model, learns from the reader's verdicts, and shows parent and adapted model side by
side; "Activate" is enabled only when the gate passed (a refused model is never written).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from viewer.curves import CurvesPlot
from viewer.qt_compat import emit
from viewer.workers import run_in_thread

__all__ = ["TrainingDialog", "QtTrainingProgress"]

DEFAULT_EPOCHS = 10


class QtTrainingProgress(QObject):
    """``training.progress.TrainingProgress`` as Qt signals (emitted from the training thread)."""

    stage = Signal(str, str)
    train_begin = Signal(int, int)
    batch_end = Signal(int, int, object)
    epoch_end = Signal(int, object)
    message = Signal(str)

    def on_stage(self, name: str, detail: str = "") -> None:
        emit(self.stage, name, detail)

    def on_train_begin(self, epochs: int, steps_per_epoch: int) -> None:
        emit(self.train_begin, int(epochs), int(steps_per_epoch))

    def on_batch_end(self, epoch: int, step: int, logs: dict[str, float]) -> None:
        emit(self.batch_end, int(epoch), int(step), dict(logs))

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        emit(self.epoch_end, int(epoch), dict(logs))

    def on_message(self, text: str) -> None:
        emit(self.message, str(text))


class TrainingDialog(QDialog):
    """Folder, classes found, settings, live progress, evaluation and "activate"."""

    scan_finished = Signal(object)  # Dataset, or None when the scan failed
    training_finished = Signal(object)  # TrainResult, or None when it failed or was cancelled
    adaptation_finished = Signal(object)  # AdaptResult, or None when it failed or was cancelled

    def __init__(self, session: Any, activate: Any, parent: QWidget | None = None) -> None:
        """``session`` (a :class:`viewer.session.Session`) receives the messages; ``activate(folder)``
        makes the new model the active one."""
        super().__init__(parent)
        self.session = session
        self._activate = activate
        self.setWindowTitle("Train a model")
        self.setModal(False)
        self.resize(980, 720)
        self.dataset: Any = None
        self.result: Any = None
        self.adapt_result: Any = None
        self._cancel = threading.Event()
        self._running = False
        self._scanning = False
        self._train_thread = None
        self._steps = 0
        self._epochs = 0
        self._started_at = 0.0

        layout = QVBoxLayout(self)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        layout.addWidget(splitter, 1)
        splitter.addWidget(self._build_setup())
        splitter.addWidget(self._build_progress())
        splitter.setStretchFactor(1, 1)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start training")
        self.start_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel training")
        self.adapt_button = QPushButton("Adapt to my reads")
        self.adapt_button.setToolTip(
            "Fine-tune the active model on the classes you recorded in your reads; "
            "offered only if it is better on films held out to check and not worse elsewhere."
        )
        self.adapt_button.clicked.connect(lambda: self.start_adapt())
        self.activate_button = QPushButton("Activate this model")
        self.close_button = QPushButton("Close")
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.activate_button.clicked.connect(self.activate)
        self.close_button.clicked.connect(self.close)
        self.cancel_button.setEnabled(False)
        self.activate_button.setEnabled(False)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.adapt_button)
        buttons.addStretch(1)
        buttons.addWidget(self.activate_button)
        buttons.addWidget(self.close_button)
        layout.addLayout(buttons)
        self._update_buttons()

    # -- layout ------------------------------------------------------------------------------------
    def _build_setup(self) -> QWidget:
        from training.architectures import ARCHITECTURES

        panel = QWidget()
        col = QVBoxLayout(panel)
        col.setContentsMargins(0, 0, 6, 0)

        data = QGroupBox("Data: one subfolder per class (or train/val/test folders of classes)")
        data_layout = QVBoxLayout(data)
        row = QHBoxLayout()
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("Folder of labelled images…")
        self.folder_edit.returnPressed.connect(self.scan)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.scan_button = QPushButton("Scan")
        self.scan_button.clicked.connect(self.scan)
        row.addWidget(self.folder_edit, 1)
        row.addWidget(browse)
        row.addWidget(self.scan_button)
        data_layout.addLayout(row)
        self.classes_table = QTableWidget(0, 2)
        self.classes_table.setHorizontalHeaderLabels(["Class", "Images"])
        self.classes_table.verticalHeader().setVisible(False)
        self.classes_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.classes_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.classes_table.setMaximumHeight(150)
        data_layout.addWidget(self.classes_table)
        self.scan_label = QLabel("Choose a folder to see the classes and images found.")
        self.scan_label.setWordWrap(True)
        self.scan_label.setObjectName("muted")
        data_layout.addWidget(self.scan_label)
        self.skipped_view = QPlainTextEdit()
        self.skipped_view.setReadOnly(True)
        self.skipped_view.setPlaceholderText("Skipped files appear here.")
        self.skipped_view.setMaximumHeight(90)
        data_layout.addWidget(self.skipped_view)
        col.addWidget(data)

        settings = QGroupBox("Model")
        form = QFormLayout(settings)
        self.init_combo = QComboBox()
        self.init_combo.addItem("Fine-tune the bundled model (from scratch if it does not fit)", "auto")
        self.init_combo.addItem("From scratch", "scratch")
        for entry in self._user_models():
            self.init_combo.addItem(f"Fine-tune {entry.label}", str(entry.path))
        self.init_combo.addItem("ImageNet weights file…", "imagenet")
        self.init_combo.currentIndexChanged.connect(self._on_init_changed)
        self.arch_combo = QComboBox()
        self.arch_combo.addItem("As the starting model (custom-cnn from scratch)", None)
        for arch in ARCHITECTURES:
            self.arch_combo.addItem(arch, arch)
        self.size_spin = QSpinBox()
        self.size_spin.setRange(0, 512)
        self.size_spin.setSingleStep(32)
        self.size_spin.setSpecialValueText("As the starting model (224 from scratch)")
        self.size_spin.setSuffix(" px")
        self.size_spin.setValue(0)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 500)
        self.epochs_spin.setValue(DEFAULT_EPOCHS)
        self.name_edit = QLineEdit(time.strftime("my-model-%Y%m%d"))
        form.addRow("Start from", self.init_combo)
        form.addRow("Architecture", self.arch_combo)
        form.addRow("Image size", self.size_spin)
        form.addRow("Epochs", self.epochs_spin)
        form.addRow("Name", self.name_edit)
        col.addWidget(settings)
        col.addStretch(1)
        self._imagenet_file = ""
        return panel

    def _build_progress(self) -> QWidget:
        panel = QWidget()
        col = QVBoxLayout(panel)
        col.setContentsMargins(6, 0, 0, 0)
        self.stage_label = QLabel("Not started")
        font = self.stage_label.font()
        font.setBold(True)
        self.stage_label.setFont(font)
        col.addWidget(self.stage_label)
        form = QFormLayout()
        self.epoch_bar = QProgressBar()
        self.batch_bar = QProgressBar()
        for bar in (self.epoch_bar, self.batch_bar):
            bar.setRange(0, 1)
            bar.setValue(0)
            bar.setFormat("—")  # the counts appear when training starts
        form.addRow("Epochs", self.epoch_bar)
        form.addRow("Batches", self.batch_bar)
        col.addLayout(form)
        self.live_label = QLabel("")
        self.live_label.setObjectName("muted")
        col.addWidget(self.live_label)
        self.tabs = QTabWidget()
        curves = QWidget()
        curves_layout = QVBoxLayout(curves)
        self.loss_plot = CurvesPlot("Loss")
        self.accuracy_plot = CurvesPlot("Accuracy", y_range=(0.0, 1.0))
        curves_layout.addWidget(self.loss_plot)
        curves_layout.addWidget(self.accuracy_plot)
        self.tabs.addTab(curves, "Curves")
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.tabs.addTab(self.log_view, "Log")
        self.report_view = QTextBrowser()
        self.tabs.addTab(self.report_view, "Evaluation")
        col.addWidget(self.tabs, 1)
        return panel

    @staticmethod
    def _user_models() -> list[Any]:
        from viewer.model_store import list_models

        return [e for e in list_models() if not e.bundled and e.info is not None]

    # -- data -----------------------------------------------------------------------------------------
    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of labelled images", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)
            self.scan()

    def _on_init_changed(self) -> None:
        if self.init_combo.currentData() == "imagenet" and not self._imagenet_file:
            path, _ = QFileDialog.getOpenFileName(self, "ImageNet weights (.h5)", "", "Keras weights (*.h5 *.keras)")
            if path:
                self._imagenet_file = path
            else:
                self.init_combo.setCurrentIndex(0)

    def init_spec(self) -> str:
        data = self.init_combo.currentData()
        if data == "imagenet":
            return f"imagenet:{self._imagenet_file}"
        return str(data)

    def scan(self) -> None:
        """Look at the folder in a worker thread; shows classes, counts and skipped files."""
        folder = self.folder_edit.text().strip()
        if not folder or self._scanning:
            return
        from training.datasets import discover

        self._scanning = True
        self.dataset = None
        self.scan_label.setText(f"Scanning {folder}…")
        self.classes_table.setRowCount(0)
        self.skipped_view.clear()
        self._update_buttons()
        run_in_thread(lambda: discover(folder), self._on_scanned, self._on_scan_failed, self, "cxr-scan")

    def _on_scanned(self, dataset: Any) -> None:
        self._scanning = False
        self.dataset = dataset
        counts = dataset.counts()
        self.classes_table.setRowCount(len(counts))
        for row, (name, n) in enumerate(counts.items()):
            self.classes_table.setItem(row, 0, QTableWidgetItem(name))
            item = QTableWidgetItem(str(n))
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.classes_table.setItem(row, 1, item)
        splits = sorted({s.split for s in dataset.samples if s.split})
        split_text = f"; splits given: {', '.join(splits)}" if splits else "; split into train/validation by patient"
        self.scan_label.setText(
            f"{len(dataset.samples)} images in {len(counts)} classes ({dataset.origin}){split_text}. "
            f"{len(dataset.skipped)} file{'s' if len(dataset.skipped) != 1 else ''} skipped."
        )
        self.skipped_view.setPlainText("\n".join(f"{path}: {reason}" for path, reason in dataset.skipped))
        self._update_buttons()
        emit(self.scan_finished, dataset)

    def _on_scan_failed(self, exc: BaseException) -> None:
        self._scanning = False
        self.dataset = None
        self.scan_label.setText(f"Cannot train on this folder: {exc}")
        self._update_buttons()
        emit(self.scan_finished, None)

    # -- training ---------------------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self._running

    def _update_buttons(self) -> None:
        self.start_button.setEnabled(self.dataset is not None and not self._running and not self._scanning)
        self.cancel_button.setEnabled(self._running)
        self.scan_button.setEnabled(not self._running and not self._scanning)
        self.adapt_button.setEnabled(not self._running and not self._scanning)
        adapted = self.adapt_result is not None and self.adapt_result.accepted and self.adapt_result.bundle_dir
        self.activate_button.setEnabled(bool(self.result is not None or adapted) and not self._running)

    def make_config(self) -> Any:
        from training.train import TrainConfig
        from viewer.model_store import unique_model_dir

        name = self.name_edit.text().strip() or "my-model"
        out_dir = unique_model_dir(name)
        return TrainConfig(
            data=self.folder_edit.text().strip(),
            out_dir=out_dir,
            arch=self.arch_combo.currentData(),
            epochs=int(self.epochs_spin.value()),
            image_size=int(self.size_spin.value()) or None,
            init=self.init_spec(),
            name=out_dir.name,
            description=f"Trained in the viewer on {self.folder_edit.text().strip()}",
            command="viewer training dialog",
        )

    def start(self) -> bool:
        if self._running or self.dataset is None:
            return False
        from training.train import train

        config = self.make_config()
        self.config = config
        self.result = None
        self.adapt_result = None
        self._begin_run(f"Training {config.name} into {config.out_dir}")
        progress = self._connect_progress()
        cancel = self._cancel
        job = lambda: train(config, progress=progress, cancel=cancel)  # noqa: E731 - reads best inline
        self._train_thread = run_in_thread(job, self._on_trained, self._on_failed, self, "cxr-train")
        self._update_buttons()
        return True

    def _begin_run(self, title: str) -> None:
        """Reset the progress panel for a new run (training or adaptation)."""
        self._cancel = threading.Event()
        self._running = True
        self._started_at = time.monotonic()
        self.loss_plot.clear()
        self.accuracy_plot.clear()
        self.log_view.clear()
        self.report_view.clear()
        self.live_label.setText("")  # the last run's "Epoch n, batch m" line is not this run's
        for bar in (self.epoch_bar, self.batch_bar):
            bar.setRange(0, 1)
            bar.setValue(0)
            bar.setFormat("—")
        self.stage_label.setText("Starting…")
        self.tabs.setCurrentIndex(0)
        self._log(title)

    def _connect_progress(self) -> QtTrainingProgress:
        progress = QtTrainingProgress()
        progress.stage.connect(self._on_stage)
        progress.train_begin.connect(self._on_train_begin)
        progress.batch_end.connect(self._on_batch)
        progress.epoch_end.connect(self._on_epoch)
        progress.message.connect(self._log)
        self._progress = progress  # lives on this (GUI) thread; its signals are queued from the worker
        return progress

    def cancel(self) -> None:
        if self._running:
            self._cancel.set()
            self.stage_label.setText("Cancelling after the current batch…")
            self.cancel_button.setEnabled(False)

    def stop_for_quit(self) -> bool:
        """Before the viewer quits: ask whether to stop a running training; True when it may quit."""
        if not self.is_running():
            return True
        answer = QMessageBox.question(
            self,
            "Training in progress",
            "A model is being trained. Stop the training and quit?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return False
        self.cancel_and_wait()
        return True

    def cancel_and_wait(self) -> None:
        self.cancel()
        if self._train_thread is not None:
            self._train_thread.wait()  # TaskHandle.wait: joins the training thread

    def _log(self, text: str) -> None:
        self.log_view.appendPlainText(text)

    def _on_stage(self, name: str, detail: str) -> None:
        labels = {
            "scanning": "Scanning the data",
            "decoding": "Reading and resizing the images",
            "training": "Training",
            "evaluating": "Evaluating on the validation split",
            "saving": "Saving the model",
        }
        self.stage_label.setText(labels.get(name, name.capitalize()) + (f": {detail}" if detail else ""))
        self._log(f"[{name}] {detail}".rstrip())

    def _on_train_begin(self, epochs: int, steps: int) -> None:
        self._epochs, self._steps = epochs, steps
        self.epoch_bar.setFormat("epoch %v of %m")
        self.batch_bar.setFormat("batch %v of %m")
        self.epoch_bar.setRange(0, max(1, epochs))
        self.epoch_bar.setValue(0)
        self.batch_bar.setRange(0, max(1, steps))
        self.batch_bar.setValue(0)

    def _on_batch(self, epoch: int, step: int, logs: dict) -> None:
        self.batch_bar.setValue(min(step + 1, self.batch_bar.maximum()))
        parts = [f"{k} {logs[k]:.4f}" for k in ("loss", "accuracy") if k in logs]
        self.live_label.setText(f"Epoch {epoch + 1}, batch {step + 1}: " + ", ".join(parts))

    def _on_epoch(self, epoch: int, logs: dict) -> None:
        self.epoch_bar.setValue(min(epoch + 1, self.epoch_bar.maximum()))
        for key in ("loss", "val_loss"):
            if key in logs:
                self.loss_plot.add_point(key, logs[key])
        for key in ("accuracy", "val_accuracy"):
            if key in logs:
                self.accuracy_plot.add_point(key, logs[key])
        elapsed = time.monotonic() - self._started_at
        summary = ", ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "lr")
        self._log(f"Epoch {epoch + 1}: {summary} ({elapsed:.0f} s)")

    def _on_trained(self, result: Any) -> None:
        from viewer.model_card import metrics_html

        self._running = False
        self.result = result
        self.stage_label.setText(f"Done: {result.info.display_name} saved ({result.seconds:.0f} s)")
        parts = [
            f"<h2>{result.info.display_name}</h2>",
            f"<p>{result.epochs_run} epochs, {result.seconds:.0f} s. Initialisation: {result.init}.<br>"
            f"Saved in {result.bundle_dir}.</p>",
        ]
        names = {"val": "Validation split", "test": "Test split"}
        for split, metrics in (result.metrics or {}).items():
            parts.append(f"<h3>{names.get(split, split)}</h3>{metrics_html(metrics)}")
        if not result.metrics:
            parts.append("<p>No validation images: no evaluation.</p>")
        if result.skipped:
            parts.append(f"<p>{len(result.skipped)} files were skipped (listed in the model's report).</p>")
        self.report_view.setHtml("".join(parts))
        self.tabs.setCurrentWidget(self.report_view)
        self._log(f"Saved {result.bundle_dir}")
        self._update_buttons()
        emit(self.training_finished, result)

    def _on_failed(self, exc: BaseException) -> None:
        from training.progress import TrainingCancelled

        self._running = False
        if isinstance(exc, TrainingCancelled):
            self.stage_label.setText("Cancelled: no model was written, existing models are untouched.")
        else:
            self.stage_label.setText(f"Training failed: {exc}")
            self.session.message(f"Training failed: {exc}", "error")
        self._log(str(exc))
        self._update_buttons()
        emit(self.training_finished, None)

    def activate(self) -> None:
        from viewer.model_store import record_activation

        adapted = self.adapt_result
        if adapted is not None and adapted.accepted and adapted.bundle_dir is not None:
            folder, name = adapted.bundle_dir, f"{adapted.report['model']['name']} {adapted.report['model']['version']}"
        elif self.result is not None:
            folder, name = self.result.bundle_dir, self.result.info.display_name
        else:
            return
        record_activation(folder, getattr(self.session.model, "path", None) or None)  # "Roll back" returns here
        self._activate(str(folder))
        self.stage_label.setText(f"{name} is now the active model.")

    # -- adaptation -----------------------------------------------------------------------------------
    def adapt_parent(self) -> str:
        """The model to adapt: the active one when it is a model folder, else the bundled one."""
        from inference.bundle import is_bundle
        from inference.paths import bundled_model_dir

        active = getattr(self.session.model, "path", "") or ""
        return active if active and is_bundle(active) else str(bundled_model_dir())

    def start_adapt(self, parent: str | None = None, reads_dir: str | None = None) -> bool:
        """Adapt ``parent`` (default: :meth:`adapt_parent`) to the reads in ``reads_dir`` (default:
        the viewer's verdict store) on a worker thread."""
        if self._running:
            return False
        from inference.bundle import read_bundle_info
        from inference.sidecar import SidecarStore
        from training.adapt import AdaptConfig, adapt, adapted_version
        from viewer.model_store import unique_model_dir

        parent = parent or self.adapt_parent()
        try:
            info = read_bundle_info(parent)
        except Exception as exc:  # a broken model folder: say why, start nothing
            self.stage_label.setText(f"Cannot adapt {parent}: {exc}")
            return False
        config = AdaptConfig(
            parent=parent,
            out_dir=unique_model_dir(f"{info.name}-{adapted_version(info.version)}"),
            reads_dir=reads_dir or SidecarStore().root,
        )
        self.adapt_result = None
        self.result = None
        self._begin_run(f"Adapting {info.display_name} to your reads in {config.reads_dir}")
        progress = self._connect_progress()
        cancel = self._cancel
        job = lambda: adapt(config, progress=progress, cancel=cancel)  # noqa: E731 - reads best inline
        self._train_thread = run_in_thread(job, self._on_adapted, self._on_adapt_failed, self, "cxr-adapt")
        self._update_buttons()
        return True

    def _on_adapted(self, result: Any) -> None:
        from viewer.model_card import adaptation_html

        self._running = False
        self.adapt_result = result
        if result.accepted:
            self.stage_label.setText(f"Gate passed: the adapted model is saved in {result.bundle_dir}; activate it?")
        else:
            self.stage_label.setText(
                "Gate refused: the adapted model was not better beyond its uncertainty "
                "or lost too much elsewhere; nothing was saved."
            )
        self.report_view.setHtml(adaptation_html(result.report))
        self.tabs.setCurrentWidget(self.report_view)
        for reason in result.reasons:
            self._log(reason)
        self._update_buttons()
        emit(self.adaptation_finished, result)

    def _on_adapt_failed(self, exc: BaseException) -> None:
        from training.progress import TrainingCancelled

        self._running = False
        if isinstance(exc, TrainingCancelled):
            self.stage_label.setText("Cancelled: no model was written, existing models are untouched.")
        else:
            self.stage_label.setText(f"Adaptation failed: {exc}")
            self.session.message(f"Adaptation failed: {exc}", "error")
        self._log(str(exc))
        self._update_buttons()
        emit(self.adaptation_finished, None)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        # Closing only hides the dialog: training goes on and can be watched again from the menu.
        self.hide()
        event.ignore()
