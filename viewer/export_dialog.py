"""Export the current image or all opened images through the inference exporters.

What is written, and how, is decided by ``inference.export`` (annotated PNG, PDF report,
DICOM Secondary Capture, CSV/JSON tables). This dialog only chooses: which images, which
formats, the folder, whether to keep patient identifiers (off by default), and what to do
about files that already exist: it always asks before replacing one.

The export itself runs in the inference thread (it may need a prediction or a Grad-CAM map
that has not been computed yet), so the window stays usable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from viewer.document import ImageDocument
from viewer.qt_compat import emit

__all__ = ["ExportDialog", "ExportPlan", "plan_exports", "run_export", "FORMAT_LABELS", "TABLE_NAME"]

# Per-image formats (inference.export.FORMATS keys) and the batch tables, with their labels.
FORMAT_LABELS = {
    "png": "Annotated PNG",
    "pdf": "PDF report",
    "dcm": "DICOM Secondary Capture",
    "csv": "CSV table of results",
    "json": "JSON table of results",
}
IMAGE_FORMATS = ("png", "pdf", "dcm")
TABLE_FORMATS = ("csv", "json")
TABLE_NAME = "cxr-results"
IMAGE_SUFFIX = {"png": ".png", "pdf": ".pdf", "dcm": ".dcm"}


def _safe_stem(name: str) -> str:
    stem = Path(name).stem or "image"
    return re.sub(r"[^\w.\- ]+", "_", stem).strip() or "image"


@dataclass
class ExportItem:
    doc: ImageDocument
    base: Path  # folder / stem; each format adds its suffix
    class_index: int | None  # class to explain; None = the predicted one
    targets: dict[str, Path] = field(default_factory=dict)  # format -> file


@dataclass
class ExportPlan:
    items: list[ExportItem]
    formats: list[str]
    tables: dict[str, Path]  # "csv"/"json" -> file

    def all_targets(self) -> list[Path]:
        return [p for item in self.items for p in item.targets.values()] + list(self.tables.values())

    def existing(self) -> list[Path]:
        return [p for p in self.all_targets() if p.exists()]

    def keep_existing(self) -> None:
        """Give every target that already exists a free name instead (``name (2).png``)."""
        from inference.export import unique_path

        taken: set[Path] = set()

        def free(path: Path) -> Path:
            candidate = unique_path(path)
            n = 2
            while candidate in taken:  # two targets of this plan may pick the same free name
                candidate = unique_path(path.with_name(f"{path.stem} ({n}){path.suffix}"))
                n += 1
            taken.add(candidate)
            return candidate

        for item in self.items:
            item.targets = {fmt: free(path) for fmt, path in item.targets.items()}
        self.tables = {fmt: free(path) for fmt, path in self.tables.items()}


def plan_exports(
    docs: Sequence[ImageDocument], folder: Path, formats: Sequence[str], class_index: int | None = None
) -> ExportPlan:
    """The files an export will write; images with the same name get distinct ones (``name-2``)."""
    image_formats = [f for f in formats if f in IMAGE_FORMATS]
    used: dict[str, int] = {}
    items = []
    for doc in docs:
        stem = _safe_stem(doc.name)
        n = used.get(stem.lower(), 0) + 1
        used[stem.lower()] = n
        base = folder / (stem if n == 1 else f"{stem}-{n}")
        item = ExportItem(doc=doc, base=base, class_index=class_index)
        item.targets = {fmt: base.with_name(base.name + IMAGE_SUFFIX[fmt]) for fmt in image_formats}
        items.append(item)
    tables = {fmt: folder / f"{TABLE_NAME}.{fmt}" for fmt in formats if fmt in TABLE_FORMATS}
    return ExportPlan(items=items, formats=list(formats), tables=tables)


def run_export(
    predictor: Any,
    plan: ExportPlan,
    options: Any,
    method: str = "gradcam",
    progress: Any = None,
) -> list[Path]:
    """Write every file of ``plan``; runs in the inference thread (``predictor`` may be None).

    Missing predictions or Grad-CAM maps are computed here. Returns the files written; raises
    the first error (files written before it stay, each complete).
    """
    from inference.export import result_record, write_csv, write_dicom_sc, write_json, write_pdf, write_png
    from inference.predictor import FileResult

    written: list[Path] = []
    records = []
    info = getattr(predictor, "info", None)
    for i, item in enumerate(plan.items):
        doc = item.doc
        prediction = doc.prediction
        if prediction is None:
            if predictor is None:
                raise RuntimeError(f"{doc.name} has no AI result and no model is loaded.")
            prediction = predictor.predict(doc.image)
        explanation = None
        if options.include_heatmap and any(f in item.targets for f in IMAGE_FORMATS):
            class_index = prediction.class_index if item.class_index is None else item.class_index
            explanation = doc.explanations.get((class_index, method))
            if explanation is None and predictor is not None:
                explanation = predictor.explain(doc.image, class_index=class_index, method=method)
        doc_options = _with_display(options, doc)
        for fmt, target in item.targets.items():
            if fmt == "png":
                written.append(write_png(target, doc.image, prediction, explanation, doc_options))
            elif fmt == "pdf":
                written.append(write_pdf(target, doc.image, prediction, explanation, doc_options, info))
            elif fmt == "dcm":
                written.append(write_dicom_sc(target, doc.image, prediction, explanation, doc_options))
        result = FileResult(str(doc.path), True, prediction=prediction, image=doc.image, explanation=explanation)
        records.append(
            result_record(result, keep_identifiers=options.keep_identifiers, exports=list(item.targets.values()))
        )
        if progress is not None:
            progress(i + 1, len(plan.items))
    if "csv" in plan.tables:
        written.append(write_csv(plan.tables["csv"], records, overwrite=options.overwrite))
    if "json" in plan.tables:
        written.append(write_json(plan.tables["json"], records, overwrite=options.overwrite))
    return written


def _with_display(options: Any, doc: ImageDocument) -> Any:
    """The export options with this image's own window/level when "as displayed" was chosen."""
    from dataclasses import replace

    if getattr(options, "window", None) is None and not getattr(options, "invert", False):
        return options
    return replace(options, window=doc.window, invert=doc.invert)


class ExportDialog(QDialog):
    export_done = Signal(list)  # files written
    export_failed = Signal(str)

    def __init__(self, window: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent or window)
        self.main = window
        self.setWindowTitle("Export")
        self.setMinimumWidth(520)
        layout = QVBoxLayout(self)

        scope = QGroupBox("Images")
        scope_layout = QVBoxLayout(scope)
        current = window.current.name if window.current is not None else "none"
        self.current_radio = QRadioButton(f"Current image ({current})")
        self.all_radio = QRadioButton(f"All opened images ({len(window.docs)})")
        self.current_radio.setChecked(True)
        scope_layout.addWidget(self.current_radio)
        scope_layout.addWidget(self.all_radio)
        layout.addWidget(scope)

        formats = QGroupBox("Formats")
        formats_layout = QVBoxLayout(formats)
        self.format_boxes: dict[str, QCheckBox] = {}
        for key, label in FORMAT_LABELS.items():
            box = QCheckBox(label)
            box.setChecked(key in ("png", "pdf", "csv"))
            formats_layout.addWidget(box)
            self.format_boxes[key] = box
        layout.addWidget(formats)

        content = QGroupBox("Content")
        content_layout = QVBoxLayout(content)
        self.heatmap_box = QCheckBox("Include the Grad-CAM overlay (current colour map and opacity)")
        self.heatmap_box.setChecked(True)
        self.display_box = QCheckBox("Use the window/level as displayed (otherwise the default window)")
        self.display_box.setChecked(True)
        self.identifiers_box = QCheckBox("Keep patient identifiers (name, ID, birth date)")
        self.identifiers_box.setChecked(False)
        self.identifiers_box.setToolTip("Off by default: exports leave the workstation more easily than studies do.")
        for box in (self.heatmap_box, self.display_box, self.identifiers_box):
            content_layout.addWidget(box)
        layout.addWidget(content)

        folder_row = QHBoxLayout()
        folder_row.addWidget(QLabel("Folder"))
        default_folder = window.settings.last_export_folder or window.settings.last_folder or str(Path.home())
        self.folder_edit = QLineEdit(default_folder)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(browse)
        layout.addLayout(folder_row)

        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setObjectName("muted")
        layout.addWidget(self.status)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.export_button.setDefault(True)
        self.buttons.accepted.connect(self.start_export)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self._running = False
        self.written: list[Path] = []

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export to folder", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)

    # -- choices --------------------------------------------------------------------------------
    def selected_formats(self) -> list[str]:
        return [key for key, box in self.format_boxes.items() if box.isChecked()]

    def selected_docs(self) -> list[ImageDocument]:
        if self.all_radio.isChecked():
            return [self.main.docs[i] for i in self.main.document_ids() if i in self.main.docs]
        return [self.main.current] if self.main.current is not None else []

    def options(self, overwrite: bool) -> Any:
        from inference.export import ExportOptions

        panel = self.main.overlay_panel
        return ExportOptions(
            keep_identifiers=self.identifiers_box.isChecked(),
            overwrite=overwrite,
            colormap=panel.colormap(),
            opacity=panel.opacity(),
            include_heatmap=self.heatmap_box.isChecked(),
            # A marker only: run_export puts in each image's own window and invert.
            window=self.main.current.window if self.display_box.isChecked() and self.main.current else None,
            invert=False,
        )

    def ask_overwrite(self, existing: list[Path]) -> QMessageBox.StandardButton:
        """Yes: replace them; No: keep them and write new names; Cancel: stop. (Tests replace this.)"""
        names = "\n".join(p.name for p in existing[:8]) + ("\n…" if len(existing) > 8 else "")
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Files already exist",
            f"{len(existing)} file{'s' if len(existing) != 1 else ''} already exist{'s' if len(existing) == 1 else ''} "
            f"in the folder:\n\n{names}\n\nReplace them?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No | QMessageBox.StandardButton.Cancel,
            self,
        )
        box.button(QMessageBox.StandardButton.Yes).setText("Replace")
        box.button(QMessageBox.StandardButton.No).setText("Keep both")
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        return QMessageBox.StandardButton(box.exec())

    # -- running ------------------------------------------------------------------------------------
    def start_export(self) -> bool:
        """Check the choices, ask about existing files, then export in the inference thread."""
        if self._running:
            return False
        docs = self.selected_docs()
        formats = self.selected_formats()
        folder = Path(self.folder_edit.text()).expanduser()
        if not docs:
            self.status.setText("No image to export.")
            return False
        if not formats:
            self.status.setText("Choose at least one format.")
            return False
        if self.main.model_state != "ready" and any(d.prediction is None for d in docs):
            self.status.setText("No AI result yet: the model is not loaded.")
            return False
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.status.setText(f"Cannot use the folder {folder}: {exc}")
            return False
        class_index = self.main.overlay_panel.selected_class()
        plan = plan_exports(docs, folder, formats, class_index)
        overwrite = False
        existing = plan.existing()
        if existing:
            answer = self.ask_overwrite(existing)
            if answer == QMessageBox.StandardButton.Cancel:
                self.status.setText("Export cancelled: nothing was written.")
                return False
            if answer == QMessageBox.StandardButton.Yes:
                overwrite = True
            else:
                plan.keep_existing()
        options = self.options(overwrite)
        method = self.main.overlay_panel.method()
        self.main.settings.last_export_folder = str(folder)
        self._running = True
        self.export_button.setEnabled(False)
        self.status.setText(f"Exporting {len(docs)} image{'s' if len(docs) != 1 else ''}…")
        self.main.run_with_predictor(
            lambda predictor: run_export(predictor, plan, options, method), self._done, self._failed
        )
        return True

    def _done(self, written: list[Path]) -> None:
        self._running = False
        self.written = list(written)
        self.export_button.setEnabled(True)
        folder = written[0].parent if written else Path(self.folder_edit.text())
        text = f"Exported {len(written)} file{'s' if len(written) != 1 else ''} to {folder}"
        self.status.setText(text)
        self.main.statusBar().showMessage(text, 10000)
        self.main.messages.add(text, "info")
        self.buttons.button(QDialogButtonBox.StandardButton.Cancel).setText("Close")
        emit(self.export_done, self.written)

    def _failed(self, message: str) -> None:
        self._running = False
        self.export_button.setEnabled(True)
        self.status.setText(f"Export failed: {message}")
        self.main.messages.add(f"Export failed: {message}", "error")
        emit(self.export_failed, message)
