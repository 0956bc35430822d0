"""Export the current image or all opened images through the one export path, ``inference.export``.

What is written, how it is named (``<stem>.cxr.<ext>``) and which files may never be touched
is decided by :func:`inference.export.plan_exports` / :func:`inference.export.export_files`.
This dialog only chooses: which images, which formats (remembered), the folder, whether to
keep patient identifiers (off by default), and what to do about targets that already exist:

* a file the user opened, a source of the export or an existing file this app did not write
  is *refused*: it is listed with the reason and never offered for "Replace";
* "Keep both" writes beside any existing file (``name (2).cxr.png``);
* "Replace" is offered only for files this app wrote itself.

The formats and their titles come from :mod:`inference.export` (``FORMATS``, ``TABLE_FORMATS``,
``FORMAT_TITLES``, ``DEFAULT_FORMATS``): the dialog lists what the exporters can write. A DICOM
structured report or presentation state refers to a DICOM image in a PACS; for a PNG/JPEG film
the plan refuses it (:func:`inference.export.dicom_object_refusal`) and the dialog shows the
sentence at once, and after the export among what was not written.

Each film's marks and verdict (its sidecar, :mod:`inference.sidecar`) go into the export; a
sidecar that cannot be read is reported and the film is exported without it.

The export is one cancellable job on the analysis controller (it may need predictions or
Grad-CAM maps not computed yet); it reports progress after each image, and an image whose
pixels were evicted from memory is read again from its file just before it is written.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
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
    QProgressBar,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from inference.image import XRayImage
from viewer.controller import AnalysisController, JobContext, JobHandle
from viewer.document import ImageDocument
from viewer.qt_compat import emit
from viewer.session import READY, Session
from viewer.settings import ViewerSettings

__all__ = [
    "ExportDialog",
    "ExportRequest",
    "ReloadingImage",
    "attach_marks",
    "build_items",
    "conflict_choices",
    "format_refusals",
    "run_export",
]


class ReloadingImage(XRayImage):
    """An evicted film for an export: its pixels are read again from its file on first use and
    dropped by :meth:`release` once the image is written, so an export of three hundred films
    never holds more than one of them."""

    def __init__(self, doc: ImageDocument, load: Callable[[str], XRayImage]) -> None:
        object.__setattr__(self, "meta", doc.meta)
        object.__setattr__(self, "extra", {})
        object.__setattr__(self, "_path", str(doc.path))
        object.__setattr__(self, "_load", load)
        object.__setattr__(self, "_pixels", None)

    @property
    def pixels(self):  # type: ignore[override]
        if self._pixels is None:
            object.__setattr__(self, "_pixels", self._load(self._path).pixels)
        return self._pixels

    def release(self) -> None:
        object.__setattr__(self, "_pixels", None)


class ExportRequest:
    """Everything one export needs, captured on the GUI thread (the job reads nothing the GUI owns)."""

    def __init__(self, items: list, folder: Path, formats: list[str], tables: list[str], options: Any,
                 protected: list[str], method: str) -> None:  # fmt: skip
        self.items = items
        self.folder = folder
        self.formats = formats
        self.tables = tables
        self.options = options
        self.protected = protected
        self.method = method
        self.messages: list[str] = []  # sidecars that could not be read (filled by the job)
        self.keys: list[str] = []  # the films' identities where the loader computed them


def build_items(
    docs: Sequence[ImageDocument], session: Session, as_displayed: bool, load: Callable[[str], XRayImage]
) -> list:
    """One :class:`inference.export.ExportItem` per document, with the results already computed."""
    from inference.export import ExportItem

    items = []
    for doc in docs:
        target = session.overlay_target(doc)
        explanation = doc.explanations.get(target) if target is not None else None
        items.append(
            ExportItem(
                source=Path(doc.path),
                image=doc.image if doc.image is not None else ReloadingImage(doc, load),
                prediction=doc.prediction,
                # A copy: the full-resolution map the writer builds must not stay on the document.
                explanation=copy.copy(explanation) if explanation is not None else None,
                window=doc.window if as_displayed else None,
                invert=doc.invert if as_displayed else False,
                class_index=session.overlay.class_index,
            )
        )
    return items


def attach_marks(
    items: Sequence[Any], store: Any = None, keys: Sequence[str] | None = None
) -> tuple[list[Any], list[str]]:
    """The items with each film's annotations and verdict from its sidecar, and what could not be read.

    ``keys`` are the films' identities when known (``ImageDocument.key``, from the loader);
    otherwise :func:`inference.sidecar.film_key` computes them here, in the inference thread
    (a film without a SOP Instance UID is identified by the hash of its file).
    """
    from inference.sidecar import SidecarError, SidecarStore, film_key

    store = store if store is not None else SidecarStore()
    out, messages = [], []
    for i, item in enumerate(items):
        known = keys[i] if keys is not None and i < len(keys) else ""
        try:
            sidecar = store.load(known or film_key(item.image.meta, item.source))
        except SidecarError as exc:
            messages.append(f"{item.source.name}: {exc}")
        except OSError as exc:  # the film itself could not be read for its hash
            messages.append(f"{item.source.name}: its annotations could not be looked up ({exc.strerror or exc})")
        else:
            if sidecar.annotations or sidecar.verdict is not None:
                item = dataclasses.replace(item, annotations=tuple(sidecar.annotations), verdict=sidecar.verdict)
        out.append(item)
    return out, messages


def format_refusals(docs: Sequence[ImageDocument], formats: Sequence[str]) -> list[str]:
    """Why some chosen formats cannot be written for some of ``docs`` (SR/GSPS of a PNG: one sentence each)."""
    from inference.export import dicom_object_refusal

    reasons: list[str] = []
    for fmt in formats:
        for doc in docs:
            why = dicom_object_refusal(doc.image if doc.image is not None else _MetaOnly(doc), fmt)
            if why:
                reasons.append(why)
    return reasons


class _MetaOnly:
    """What :func:`inference.export.dicom_object_refusal` reads of an image: its metadata."""

    def __init__(self, doc: ImageDocument) -> None:
        self.meta = doc.meta


def run_export(request: ExportRequest, on_existing: str, ctx: JobContext) -> Any:
    """The export job (inference thread): :func:`inference.export.export_files`, with progress and cancel."""
    from inference.export import export_files

    request.items, messages = attach_marks(request.items, keys=request.keys)
    request.messages.extend(messages)

    def progress(done: int, total: int) -> None:
        image = request.items[done - 1].image
        if isinstance(image, ReloadingImage):
            image.release()
        ctx.progress(done, total)

    predictor = ctx.predictor
    return export_files(
        request.items,
        request.folder,
        request.formats,
        request.options,
        getattr(predictor, "info", None),
        tables=request.tables,
        protected=request.protected,
        on_existing=on_existing,
        predictor=predictor,
        method=request.method,
        progress=progress,
        cancelled=ctx.cancelled,
    )


def conflict_choices(conflicts: Sequence[Any]) -> list[str]:
    """What the user may do about targets that exist: "Replace" only when some are ours."""
    choices = ["keep-both"]
    if any(t.status == "ours" for t in conflicts):
        choices.insert(0, "replace-ours")
    return choices + ["cancel"]


class ExportDialog(QDialog):
    export_done = Signal(list)  # files written
    export_failed = Signal(str)

    def __init__(
        self, session: Session, controller: AnalysisController, settings: ViewerSettings, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.controller = controller
        self.settings = settings
        self.handle: JobHandle | None = None
        self.report: Any = None
        self._request_messages: list[str] = []
        self.written: list[Path] = []
        self.setWindowTitle("Export")
        self.setMinimumWidth(520)
        layout = QVBoxLayout(self)

        scope = QGroupBox("Images")
        scope_layout = QVBoxLayout(scope)
        current = session.current.name if session.current is not None else "none"
        self.current_radio = QRadioButton(f"Current image ({current})")
        self.all_radio = QRadioButton(f"All opened images ({len(session)})")
        self.current_radio.setChecked(True)
        scope_layout.addWidget(self.current_radio)
        scope_layout.addWidget(self.all_radio)
        layout.addWidget(scope)

        from inference.export import DEFAULT_FORMATS, FORMAT_TITLES, FORMATS, TABLE_FORMATS

        formats = QGroupBox("Formats")
        formats_layout = QVBoxLayout(formats)
        chosen = settings.export_formats or list(DEFAULT_FORMATS)
        self.format_boxes: dict[str, QCheckBox] = {}
        self._image_formats, self._table_formats = tuple(FORMATS), tuple(TABLE_FORMATS)
        for key, suffix in {**FORMATS, **TABLE_FORMATS}.items():
            box = QCheckBox(f"{FORMAT_TITLES.get(key, key)}  (*.cxr{suffix})")
            box.setChecked(key in chosen)
            box.toggled.connect(lambda _on: self.update_refusals())
            formats_layout.addWidget(box)
            self.format_boxes[key] = box
        # Why a chosen format will not be written for the chosen images (SR/GSPS of a PNG).
        self.refusal_label = QLabel("")
        self.refusal_label.setWordWrap(True)
        self.refusal_label.setStyleSheet("color: #f0b429;")
        self.refusal_label.hide()
        formats_layout.addWidget(self.refusal_label)
        layout.addWidget(formats)
        self.current_radio.toggled.connect(lambda _on: self.update_refusals())

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
        default_folder = settings.last_export_folder or settings.last_folder or str(Path.home())
        self.folder_edit = QLineEdit(default_folder)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(browse)
        layout.addLayout(folder_row)

        self.progress = QProgressBar()
        self.progress.setVisible(False)
        layout.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setObjectName("muted")
        layout.addWidget(self.status)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.export_button.setDefault(True)
        self.cancel_button = self.buttons.addButton("Stop export", QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel_export)
        self.buttons.accepted.connect(self.start_export)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

        self.update_refusals()

    def update_refusals(self) -> None:
        """Say now which chosen formats the chosen images cannot have, and why (the plan refuses them)."""
        reasons = format_refusals(self.selected_docs(), self.selected_formats())
        unique = list(dict.fromkeys(reasons))
        more = len(unique) - 2
        text = "\n".join(unique[:2]) + (f"\n(and {more} more like this)" if more > 0 else "")
        self.refusal_label.setText(text)
        self.refusal_label.setVisible(bool(unique))

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export to folder", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)

    # -- choices --------------------------------------------------------------------------------
    def selected_formats(self) -> list[str]:
        return [key for key, box in self.format_boxes.items() if box.isChecked()]

    def selected_docs(self) -> list[ImageDocument]:
        if self.all_radio.isChecked():
            return self.session.documents()
        return [self.session.current] if self.session.current is not None else []

    def options(self) -> Any:
        from inference.export import ExportOptions

        overlay = self.session.overlay
        return ExportOptions(
            keep_identifiers=self.identifiers_box.isChecked(),
            colormap=overlay.colormap,
            opacity=overlay.opacity,
            include_heatmap=self.heatmap_box.isChecked(),
            # The reader's "Show probabilities anyway" for a film with no AI result applies to exports too.
            show_abstained_probabilities=self.settings.show_abstained_probabilities,
        )

    def ask_existing(self, conflicts: list[Any]) -> str:
        """ "replace-ours", "keep-both" or "cancel" (tests replace this). Refused targets are listed with
        their reason and never offered for replacement."""
        choices = conflict_choices(conflicts)
        lines = [f"{t.path.name}: {t.reason}" for t in conflicts[:8]] + (["…"] if len(conflicts) > 8 else [])
        n = len(conflicts)
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Files already exist",
            f"{n} target file{'s' if n != 1 else ''} already exist{'s' if n == 1 else ''}:\n\n" + "\n".join(lines),
            QMessageBox.StandardButton.Cancel,
            self,
        )
        buttons = {"keep-both": box.addButton("Keep both", QMessageBox.ButtonRole.AcceptRole)}
        if "replace-ours" in choices:
            buttons["replace-ours"] = box.addButton(
                "Replace files made by CXR Viewer", QMessageBox.ButtonRole.DestructiveRole
            )
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        clicked = box.clickedButton()
        return next((choice for choice, button in buttons.items() if button is clicked), "cancel")

    # -- running ------------------------------------------------------------------------------------
    def start_export(self) -> bool:
        """Check the choices, plan the targets, ask about existing ones, then export in the inference thread."""
        from inference.export import plan_exports

        if self.handle is not None and not self.handle.done:
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
        if self.session.model.state != READY and any(d.prediction is None for d in docs):
            self.status.setText("No AI result yet: the model is not loaded.")
            return False
        refusals = format_refusals(docs, formats)
        cannot = set(refusals)
        if len(refusals) == len(docs) * len(formats):  # every chosen file refused: nothing to write
            self.status.setText("Nothing to write: " + " ".join(dict.fromkeys(refusals)))
            return False
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.status.setText(f"Cannot use the folder {folder}: {exc}")
            return False
        self.settings.export_formats = formats
        self.settings.last_export_folder = str(folder)
        request = ExportRequest(
            build_items(docs, self.session, self.display_box.isChecked(), self.controller.load_image),
            folder,
            [f for f in formats if f in self._image_formats],
            [f for f in formats if f in self._table_formats],
            self.options(),
            self.session.source_paths(),
            self.session.overlay.method,
        )
        plan = plan_exports(request.items, folder, request.formats, request.tables, request.protected,
                            options=request.options)  # fmt: skip
        # A format the film cannot have (SR/GSPS of a PNG) is not a conflict to ask about: the
        # sentence is on screen already and the export reports it among what was not written.
        conflicts = [t for t in plan if t.status != "free" and t.reason not in cannot]
        on_existing = "refuse"
        if conflicts:
            on_existing = self.ask_existing(conflicts)
            if on_existing == "cancel":
                self.status.setText("Export cancelled: nothing was written.")
                return False
        request.keys = [doc.key for doc in docs]
        self._request_messages = request.messages  # the job fills it before it returns
        self.handle = self.controller.submit(lambda ctx: run_export(request, on_existing, ctx), kind="export")
        self.handle.progress.connect(self._progress)
        self.handle.returned.connect(self._done)
        self.handle.errored.connect(lambda exc: self._failed(str(exc) or type(exc).__name__))
        self.handle.cancelled.connect(lambda: self._failed("the export was stopped before it began"))
        self.export_button.setEnabled(False)
        self.cancel_button.setVisible(True)
        self.progress.setRange(0, len(docs))
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.status.setText(f"Exporting {len(docs)} image{'s' if len(docs) != 1 else ''}…")
        return True

    def cancel_export(self) -> None:
        """Stop after the image being written (files already written stay, each complete)."""
        if self.handle is not None and not self.handle.done:
            self.handle.cancel()
            self.status.setText("Stopping after the current image…")

    def reject(self) -> None:
        self.cancel_export()
        super().reject()

    def _progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _finish(self) -> None:
        self.export_button.setEnabled(True)
        self.cancel_button.setVisible(False)
        self.progress.setVisible(False)

    def _done(self, report: Any) -> None:
        self._finish()
        self.report = report
        self.written = list(report.written)
        n = len(self.written)
        text = f"Exported {n} file{'s' if n != 1 else ''} to {self.folder_edit.text()}"
        if report.cancelled:
            text += " (stopped before the end)"
        problems = [f"{Path(p).name}: {why}" for p, why in report.skipped + report.errors]
        for line in self._request_messages:
            self.session.message(f"Export: {line}", "warning")
        if problems:
            text += f"; {len(problems)} not written (see Messages)"
            for line in problems:
                self.session.message(f"Export: {line}", "warning")
        self.status.setText(text)
        self.session.message(text, "info")
        emit(self.export_done, self.written)

    def _failed(self, message: str) -> None:
        self._finish()
        self.status.setText(f"Export failed: {message}")
        self.session.message(f"Export failed: {message}", "error")
        emit(self.export_failed, message)
