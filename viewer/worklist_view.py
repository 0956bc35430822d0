"""The image list as a worklist: a filter bar over a tree of patients, studies and films.

A :class:`QTreeView` over :class:`~viewer.worklist_model.WorklistModel` (no widget per film).
Column headers sort; the bar filters by AI class, read/unread, agreement, flagged (abstained
or warned) and text (file name or patient), and orders "as opened" or "most urgent first".
The panel says which film the reader picked (``document_selected``) and shows the one the
session has on screen (:meth:`WorklistPanel.select_document`); it keeps no reading state.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QModelIndex, QPoint, QSize, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QMenu,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from viewer.qt_compat import emit
from viewer.worklist import NO_AI_RESULT, WorklistFilter
from viewer.worklist_model import COLUMNS, THUMB, WorklistModel

__all__ = ["WorklistPanel", "CLASS_CHOICES", "ORDERS"]

CLASS_CHOICES = ("AI: any", "COVID-19", "Normal", "Pneumonia", NO_AI_RESULT)
READ_CHOICES = {"Read: any": None, "Unread": False, "Read": True}
AGREEMENT_CHOICES = {"Verdict: any": None, "Agrees with AI": "agree", "Disagrees with AI": "disagree"}
ORDERS = {"As opened": "opened", "Most urgent first": "attention"}
# Up to this many patient and study groups the tree opens them all; a longer worklist shows the
# patients closed (opening thousands of groups costs a stall on every re-arrangement).
EXPAND_ALL_LIMIT = 300


class WorklistPanel(QWidget):
    """Signals: ``document_selected(doc_id)``; ``compare_requested(doc_id, other)`` from the
    context menu (``other`` -1: the film's prior)."""

    document_selected = Signal(int)
    compare_requested = Signal(int, int)

    def __init__(self, thumbnail: Callable[[int], np.ndarray | None] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = WorklistModel(thumbnail or (lambda _doc_id: None), self)
        self._collapsed: set[str] = set()  # groups the reader closed
        self._opened: set[str] = set()  # groups the reader opened
        self._current: int | None = None
        self._syncing = False
        self._restoring = False  # expansion set by the panel itself, not by the reader

        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter: file name or patient")
        self.search.setClearButtonEnabled(True)
        self.class_box = QComboBox()
        self.class_box.addItems(CLASS_CHOICES)
        self.read_box = QComboBox()
        self.read_box.addItems(list(READ_CHOICES))
        self.agreement_box = QComboBox()
        self.agreement_box.addItems(list(AGREEMENT_CHOICES))
        self.class_box.setToolTip("The AI's class")
        self.read_box.setToolTip("Read (the reader gave a verdict) or not")
        self.agreement_box.setToolTip("The reader's agreement with the AI")
        self.flagged_box = QCheckBox("Flagged")
        self.flagged_box.setToolTip("Only films the AI abstained on or warned about")
        self.order_box = QComboBox()
        self.order_box.addItems(list(ORDERS))
        self.order_box.setToolTip("The order of the list (a column header sorts by that column)")
        for box in (self.class_box, self.read_box, self.agreement_box):
            box.currentIndexChanged.connect(self._filter_changed)
        self.flagged_box.toggled.connect(self._filter_changed)
        self.search.textChanged.connect(self._filter_changed)
        self.order_box.currentIndexChanged.connect(self._order_changed)

        self.view = QTreeView()
        self.view.setModel(self.model)
        self.view.setUniformRowHeights(True)
        self.view.setIconSize(QSize(THUMB, THUMB))
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setAcceptDrops(False)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._context_menu)
        header = self.view.header()
        header.setSectionsClickable(True)
        header.setSortIndicatorShown(True)
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        header.sortIndicatorChanged.connect(self._header_sort)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.resizeSection(0, 170)
        for column in range(1, len(COLUMNS)):
            header.resizeSection(column, {1: 84, 5: 120, 6: 90, 7: 84}.get(column, 44))
        self.view.selectionModel().currentChanged.connect(self._on_current)
        self.view.expanded.connect(
            lambda index: self._restoring or self._collapsed.discard(self.model.group_key_at(index))
        )
        self.view.collapsed.connect(
            lambda index: self._restoring or self._collapsed.add(self.model.group_key_at(index))
        )
        self.model.modelReset.connect(self._restore)

        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self.search, 2)
        bar.addWidget(self.order_box, 1)
        bar2 = QHBoxLayout()
        bar2.setContentsMargins(0, 0, 0, 0)
        for w in (self.class_box, self.read_box, self.agreement_box, self.flagged_box):
            bar2.addWidget(w)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(3)
        layout.addLayout(bar)
        layout.addLayout(bar2)
        layout.addWidget(self.view, 1)
        self.setMinimumWidth(THUMB + 160)
        self.setFocusProxy(self.view)

    # -- filter and order ----------------------------------------------------------------------
    def current_filter(self) -> WorklistFilter:
        chosen = self.class_box.currentText()
        return WorklistFilter(
            ai_classes=None if self.class_box.currentIndex() == 0 else frozenset({chosen}),
            read=READ_CHOICES[self.read_box.currentText()],
            agreement=AGREEMENT_CHOICES[self.agreement_box.currentText()],
            flagged_only=self.flagged_box.isChecked(),
            text=self.search.text(),
        )

    def _filter_changed(self, *_args: object) -> None:
        self.model.set_rule(self.current_filter())

    def _order_changed(self, *_args: object) -> None:
        self.view.header().blockSignals(True)
        self.view.header().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.view.header().blockSignals(False)
        self.model.set_sort(ORDERS[self.order_box.currentText()])

    def _header_sort(self, column: int, order: Qt.SortOrder) -> None:
        if column >= 0:
            self.model.sort(column, order)

    # -- current film ---------------------------------------------------------------------------
    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        doc_id = self.model.doc_id_at(current)
        if doc_id is None or self._syncing:
            return
        self._current = int(doc_id)
        emit(self.document_selected, int(doc_id))

    def select_document(self, doc_id: int | None) -> None:
        """Show ``doc_id`` as the current row (no ``document_selected`` back)."""
        self._current = doc_id
        index = self.model.index_of(doc_id) if doc_id is not None else QModelIndex()
        if index == self.view.currentIndex():
            return
        self._syncing = True
        try:
            if index.isValid():
                parent = index.parent()
                while parent.isValid():  # a film in a collapsed group is shown by opening it
                    self.view.expand(parent)
                    parent = parent.parent()
                self.view.setCurrentIndex(index)
                self.view.scrollTo(index)
            else:
                self.view.selectionModel().clearSelection()
        finally:
            self._syncing = False

    def _group_toggled(self, index: QModelIndex, expanded: bool) -> None:
        key = self.model.group_key_at(index)
        if self._restoring or key is None:
            return
        (self._opened if expanded else self._collapsed).add(key)
        (self._collapsed if expanded else self._opened).discard(key)

    def _restore(self) -> None:
        """After a re-arrangement: groups open unless the reader closed them (or, beyond
        :data:`EXPAND_ALL_LIMIT` groups, closed unless the reader opened them); the film on screen
        selected, its groups open."""
        if self.model.grouped:
            self._restoring = True
            try:
                if len(self.model.group_keys()) <= EXPAND_ALL_LIMIT:
                    self.view.expandAll()
                    for key in self._collapsed:
                        self.view.collapse(self.model.group_index(key))
                else:
                    for key in self._opened:
                        self.view.expand(self.model.group_index(key))
            finally:
                self._restoring = False
        current, self._current = self._current, None
        self.select_document(current)

    # -- what tests and the presenter read ------------------------------------------------------
    def document_ids(self) -> list[int]:
        return self.model.film_ids()

    def badge(self, doc_id: int) -> str:
        entry = self.model.entry(doc_id)
        return "" if entry is None else entry.badge

    def row_texts(self, doc_id: int) -> dict[str, str]:
        """The film's row as shown, by column title."""
        return {
            title: self.model.text_at(self.model.index_of(doc_id, column))
            for column, (title, _key, _tip) in enumerate(COLUMNS)
        }

    # -- context menu ---------------------------------------------------------------------------
    def _context_menu(self, pos: QPoint) -> None:
        menu = self.context_menu(self.view.indexAt(pos))
        if menu is not None:
            menu.exec(self.view.viewport().mapToGlobal(pos))

    def context_menu(self, index: QModelIndex) -> QMenu | None:
        doc_id = self.model.doc_id_at(index)
        if doc_id is None:
            return None
        menu = QMenu(self)
        menu.addAction("Compare with prior").triggered.connect(lambda: emit(self.compare_requested, int(doc_id), -1))
        if self._current is not None and self._current != doc_id:
            menu.addAction("Compare with the film on screen").triggered.connect(
                lambda: emit(self.compare_requested, int(self._current or 0), int(doc_id))
            )
        return menu
