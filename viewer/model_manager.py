"""Model manager: list the installed models with their cards (lineage included), switch, roll back,
import, delete. Every switch records the model it replaces (``inference.activations``), so
"Roll back" re-activates the predecessor in one step."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from viewer.model_card import error_card_html, model_card_html
from viewer.model_store import (
    ModelEntry,
    delete_user_model,
    import_bundle,
    is_user_model,
    list_models,
    predecessor,
    record_activation,
    roll_back,
)
from viewer.qt_compat import emit
from viewer.session import Session

__all__ = ["ModelManagerDialog"]

PATH_ROLE = Qt.ItemDataRole.UserRole + 1


def _same(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


class ModelManagerDialog(QDialog):
    model_activated = Signal(str)

    def __init__(self, session: Session, activate: Callable[[str], None], parent: QWidget | None = None) -> None:
        """``session`` tells which model is active; ``activate(folder)`` switches to another one."""
        super().__init__(parent)
        self.session = session
        self._activate = activate
        self.setWindowTitle("Models")
        self.resize(900, 600)
        layout = QVBoxLayout(self)
        splitter = QSplitter()
        self.list = QListWidget()
        self.list.setMinimumWidth(240)
        self.card = QTextBrowser()
        self.card.setOpenExternalLinks(False)
        splitter.addWidget(self.list)
        splitter.addWidget(self.card)
        splitter.setStretchFactor(1, 1)
        layout.addWidget(splitter, 1)
        self.note = QLabel("")
        self.note.setObjectName("muted")
        self.note.setWordWrap(True)
        self.note.setTextFormat(Qt.TextFormat.PlainText)  # messages quote model folders: never markup
        layout.addWidget(self.note)
        buttons = QHBoxLayout()
        self.activate_button = QPushButton("Use this model")
        self.rollback_button = QPushButton("Roll back")
        self.rollback_button.clicked.connect(self.roll_back)
        self.import_button = QPushButton("Import folder…")
        self.delete_button = QPushButton("Delete…")
        close = QPushButton("Close")
        self.activate_button.clicked.connect(self.activate_selected)
        self.import_button.clicked.connect(self._import_dialog)
        self.delete_button.clicked.connect(self.delete_selected)
        close.clicked.connect(self.accept)
        for b in (self.activate_button, self.rollback_button, self.import_button, self.delete_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(close)
        layout.addLayout(buttons)
        self.list.currentItemChanged.connect(self._on_select)
        self.entries: list[ModelEntry] = []
        self.refresh()

    # -- list -------------------------------------------------------------------------------------
    def refresh(self, select: str | Path | None = None) -> None:
        from viewer.model_store import model_entry

        self.entries = list_models()
        active = self.session.model.path
        if active and Path(active).is_dir() and not any(_same(e.path, active) for e in self.entries):
            # Opened with --model from elsewhere: listed so that its card can be read; not deletable here.
            self.entries.insert(0, model_entry(Path(active)))
        self.list.clear()
        chosen = None
        for entry in self.entries:
            label = entry.label
            is_active = bool(active) and _same(entry.path, active)
            if is_active:
                label = f"● {label}"
            if entry.info is None:
                label += " (unreadable)"
            item = QListWidgetItem(label)
            item.setData(PATH_ROLE, str(entry.path))
            item.setToolTip(str(entry.path) if not entry.error else entry.error)
            if entry.info is None:
                item.setForeground(QColor("#ef5b5b"))
            self.list.addItem(item)
            if (select is not None and _same(entry.path, select)) or (select is None and is_active):
                chosen = item
        if not self.entries:
            self.card.setHtml("<p>No model is installed. Import a model folder or train one (AI &gt; Train).</p>")
        self.list.setCurrentItem(chosen or self.list.item(0))
        self._update_buttons()

    def model_paths(self) -> list[str]:
        return [str(e.path) for e in self.entries]

    def selected(self) -> ModelEntry | None:
        item = self.list.currentItem()
        if item is None:
            return None
        path = item.data(PATH_ROLE)
        return next((e for e in self.entries if str(e.path) == path), None)

    def select_path(self, path: str | Path) -> None:
        for row in range(self.list.count()):
            if _same(self.list.item(row).data(PATH_ROLE), path):
                self.list.setCurrentRow(row)
                return

    def _on_select(self, *_args) -> None:
        entry = self.selected()
        if entry is None:
            return
        if entry.info is None:
            self.card.setHtml(error_card_html(entry.path.name, entry.error))  # the error quotes model.json
        else:
            active = bool(self.session.model.path) and _same(entry.path, self.session.model.path)
            self.card.setHtml(model_card_html(entry.info, str(entry.path), entry.bundled, active))
        self._update_buttons()

    def _update_buttons(self) -> None:
        entry = self.selected()
        previous = predecessor(self.session.model.path) if self.session.model.path else None
        self.rollback_button.setEnabled(previous is not None)
        self.rollback_button.setToolTip(
            f"Use the model this one replaced again: {previous}" if previous else "No earlier model to go back to."
        )
        self.activate_button.setEnabled(entry is not None and entry.info is not None)
        self.delete_button.setEnabled(entry is not None and not entry.bundled and is_user_model(entry.path))
        if entry is not None and entry.bundled:
            self.delete_button.setToolTip("The bundled model is part of the app and cannot be deleted.")
        else:
            self.delete_button.setToolTip("Delete this model folder")

    # -- actions -------------------------------------------------------------------------------------
    def activate_selected(self) -> None:
        entry = self.selected()
        if entry is None or entry.info is None:
            return
        record_activation(entry.path, self.session.model.path)
        self._activate(str(entry.path))
        self.note.setText(f"Active model: {entry.info.display_name}. Opened images are analysed again.")
        emit(self.model_activated, str(entry.path))
        self.refresh(select=entry.path)

    def roll_back(self) -> Path | None:
        """Re-activate the model the active one replaced (one step back in the record)."""
        previous = roll_back(self.session.model.path)
        if previous is None:
            self.note.setText("No earlier model to roll back to.")
            self._update_buttons()
            return None
        self._activate(str(previous))
        self.note.setText(f"Rolled back to {previous}. Opened images are analysed again.")
        emit(self.model_activated, str(previous))
        self.refresh(select=previous)
        return previous

    def _import_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Import a model folder (model.keras + model.json)")
        if folder:
            self.import_folder(folder)

    def import_folder(self, folder: str) -> Path | None:
        from inference.bundle import BundleError

        try:
            dest = import_bundle(folder)
        except (BundleError, OSError) as exc:
            self.note.setText(f"Not imported: {exc}")
            return None
        self.note.setText(f"Imported into {dest}. Select it and press \u201cUse this model\u201d to switch.")
        self.refresh(select=dest)
        return dest

    def confirm_delete(self, entry: ModelEntry) -> bool:
        """Ask before deleting (tests replace this)."""
        answer = QMessageBox.question(
            self,
            "Delete model",
            f"Delete the model {entry.label}?\n\n{entry.path}\n\nThis cannot be undone.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def delete_selected(self) -> bool:
        entry = self.selected()
        if entry is None or entry.bundled or not is_user_model(entry.path):
            return False
        if not self.confirm_delete(entry):
            return False
        was_active = bool(self.session.model.path) and _same(entry.path, self.session.model.path)
        try:
            delete_user_model(entry.path)
        except (OSError, ValueError) as exc:
            self.note.setText(f"Not deleted: {exc}")
            return False
        self.note.setText(f"Deleted {entry.label}.")
        if was_active:  # fall back to the bundled model
            from inference.paths import bundled_model_dir

            self._activate(str(bundled_model_dir()))
        self.refresh()
        return True
