"""The Measurements panel: the current film's marks with what each measures; select or delete them.

The rows are a view of :class:`viewer.reads.Reads` for the film on screen; selecting a row
selects the mark on the canvas (and the other way round) through the
:class:`~viewer.tools.ToolController`; Delete removes it through ``Reads`` (undoable).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from inference.annotations import Annotation
from viewer.document import ImageDocument
from viewer.qt_compat import emit
from viewer.reads import Reads
from viewer.session import Session

__all__ = ["AnnotationPanel", "AnnotationPresenter"]

EMPTY_TEXT = "No marks on this film. Choose a tool (D distance, R ROI, C CTR…) and draw on the image."


class AnnotationPanel(QWidget):
    """A list of rows ``(annotation id, text)``, a Delete button and an empty-state hint."""

    row_selected = Signal(object)  # annotation id or None
    delete_requested = Signal(str)  # annotation id
    edit_requested = Signal(str)  # annotation id (a double-clicked row)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setWordWrap(True)
        self.list.setAlternatingRowColors(True)
        self.hint = QLabel(EMPTY_TEXT)
        self.hint.setWordWrap(True)
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("Delete the selected mark (Delete); Ctrl+Z undoes it")
        self.delete_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.delete_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.hint)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)
        self.list.currentItemChanged.connect(self._current_item)
        self.delete_button.clicked.connect(self._delete)
        self.list.itemDoubleClicked.connect(lambda item: emit(self.edit_requested, item.data(Qt.ItemDataRole.UserRole)))
        self._filling = False

    def set_rows(self, rows: list[tuple[str, str]], selected: str | None) -> None:
        self._filling = True
        self.list.clear()
        for annotation_id, text in rows:
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, annotation_id)
            item.setToolTip(text)
            self.list.addItem(item)
        self.hint.setVisible(not rows)
        self._filling = False
        self.select_row(selected)

    def rows(self) -> list[tuple[str, str]]:
        return [
            (self.list.item(i).data(Qt.ItemDataRole.UserRole), self.list.item(i).text())
            for i in range(self.list.count())
        ]

    def select_row(self, annotation_id: str | None) -> None:
        self._filling = True
        self.list.setCurrentRow(-1)
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) == annotation_id:
                self.list.setCurrentRow(i)
        self.delete_button.setEnabled(annotation_id is not None and self.list.currentRow() >= 0)
        self._filling = False

    def selected_id(self) -> str | None:
        item = self.list.currentItem()
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def _current_item(self, item: QListWidgetItem | None, _previous: QListWidgetItem | None) -> None:
        self.delete_button.setEnabled(item is not None)
        if not self._filling:
            emit(self.row_selected, None if item is None else item.data(Qt.ItemDataRole.UserRole))

    def _delete(self) -> None:
        annotation_id = self.selected_id()
        if annotation_id is not None:
            emit(self.delete_requested, annotation_id)


class AnnotationPresenter:
    """Keeps the panel on the current film's marks (``Reads``) and its selection on the tools'."""

    def __init__(self, session: Session, reads: Reads, tools, panel: AnnotationPanel) -> None:
        self.session = session
        self.reads = reads
        self.tools = tools
        self.panel = panel
        reads.events.annotations_changed.connect(lambda doc: doc is session.current and self.refresh())
        session.events.current_changed.connect(lambda _doc: self.refresh())
        session.events.pixels_changed.connect(lambda doc: doc is session.current and self.refresh())
        tools.selection_changed.connect(panel.select_row)
        panel.row_selected.connect(tools.select)
        panel.delete_requested.connect(self._delete)
        panel.edit_requested.connect(tools.edit_text)
        self.refresh()

    def row_text(self, annotation: Annotation) -> str:
        from viewer.tools import mark_title

        label = self.tools.label(annotation) if self.tools.canvas.image is not None else annotation.text
        return f"{mark_title(annotation)}: {label}" if label else mark_title(annotation)

    def refresh(self) -> None:
        doc: ImageDocument | None = self.session.current
        marks = self.reads.annotations(doc) if doc is not None else ()
        self.panel.set_rows([(a.id, self.row_text(a)) for a in marks], self.tools.selected)

    def _delete(self, annotation_id: str) -> None:
        doc = self.session.current
        if doc is not None:
            self.reads.remove_annotation(doc, annotation_id)
