"""The worklist as a Qt item model: patients, studies and films in a tree (or films alone).

The rules (filter, sort, group) are :func:`viewer.worklist.arrange`; this model only lays its
result out for a :class:`QTreeView`. No widget per film: the view asks for the rows it paints,
and a film's thumbnail becomes a pixmap only when its row is painted (a small cache keeps the
last few hundred).

Changes come in batches (:meth:`WorklistModel.set_entries`, :meth:`update_entries`): when
the arrangement (which films, in which order and groups) stays the same, only the changed rows
are repainted; otherwise the model is reset and the view restores its expansion and selection.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import QAbstractItemModel, QModelIndex, QObject, QPersistentModelIndex, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPixmap

from inference.dicom_text import dicom_date
from viewer.qt_compat import emit
from viewer.theme import class_colour
from viewer.thumbnails import thumbnail_pixmap
from viewer.worklist import WorklistEntry, WorklistFilter, arrange, film_order

__all__ = ["COLUMNS", "DOC_ROLE", "GROUP_ROLE", "WorklistModel"]

DOC_ROLE = Qt.ItemDataRole.UserRole + 1  # the film's doc id (None on a group row)
GROUP_ROLE = Qt.ItemDataRole.UserRole + 2  # a group row's key
THUMB = 48
_THUMB_CACHE = 400

# (title, sort key of viewer.worklist.SORT_KEYS, tooltip)
COLUMNS = (
    ("File", "file", "File name (the thumbnail beside it)"),
    ("AI", "ai_class", "The AI's class and probability; 'No AI result' when it abstained"),
    ("Prob.", "probability", "Probability of the AI's class"),
    ("Flag", "abstained", "! the AI abstained; ⚠ the lung check warned"),
    ("Read", "read", "● unread; ✓ read (the reader gave a verdict)"),
    ("Reader", "agreement", "The reader's verdict: agreement with the AI and the reader's class"),
    ("Patient", "patient", "Patient ID (or name) from DICOM"),
    ("Study date", "study_date", "Study date from DICOM"),
)
AGREE_COLOUR, DISAGREE_COLOUR = "#3fb950", "#f85149"


@dataclass
class _Node:
    parent: int  # node id of the parent; -1 for top-level rows
    row: int
    children: list[int] = field(default_factory=list)
    label: str = ""  # group rows
    key: str = ""
    count: int = 0
    doc_id: int | None = None  # film rows


def _probability(p: float | None) -> str:
    if p is None:
        return ""
    pct = 100.0 * p
    return ">99%" if pct >= 99.5 else "<1%" if pct < 0.5 else f"{pct:.0f}%"


class WorklistModel(QAbstractItemModel):
    """``thumbnail(doc_id)`` gives a film's small gray thumbnail (uint8) when its row is painted."""

    def __init__(self, thumbnail: Callable[[int], np.ndarray | None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thumbnail = thumbnail
        self._entries: dict[int, WorklistEntry] = {}
        self._tooltips: dict[int, str] = {}
        self.rule = WorklistFilter()
        self.sort_key = "opened"
        self.descending = False
        self._nodes: list[_Node] = []
        self._top: list[int] = []
        self._film_node: dict[int, int] = {}  # doc id -> node id
        self._order: list[int] = []
        self._shape: tuple = ()
        self._pixmaps: OrderedDict[int, QPixmap] = OrderedDict()
        self.grouped = False

    # -- feeding -------------------------------------------------------------------------------
    def set_entries(self, entries: Iterable[WorklistEntry], tooltips: dict[int, str] | None = None) -> None:
        self._entries = {e.doc_id: e for e in entries}
        self._tooltips = dict(tooltips or {})
        self._pixmaps.clear()
        self._rearrange(force=True)

    def update_entries(self, entries: Iterable[WorklistEntry], tooltips: dict[int, str] | None = None) -> None:
        """Add or replace entries (a batch: one arrangement for all of them)."""
        changed = []
        for e in entries:
            if self._entries.get(e.doc_id) != e:
                changed.append(e.doc_id)
            self._entries[e.doc_id] = e
        self._tooltips.update(tooltips or {})
        if changed:
            self._rearrange(changed=changed)

    def remove(self, doc_ids: Iterable[int]) -> None:
        gone = [i for i in doc_ids if self._entries.pop(i, None) is not None]
        for i in gone:
            self._tooltips.pop(i, None)
            self._pixmaps.pop(i, None)
        if gone:
            self._rearrange(force=True)

    def set_rule(self, rule: WorklistFilter) -> None:
        if rule != self.rule:
            self.rule = rule
            self._rearrange()

    def set_sort(self, key: str, descending: bool = False) -> None:
        if (key, descending) != (self.sort_key, self.descending):
            self.sort_key, self.descending = key, descending
            self._rearrange()

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:  # Qt override
        if 0 <= column < len(COLUMNS):
            self.set_sort(COLUMNS[column][1], order == Qt.SortOrder.DescendingOrder)

    # -- reading -------------------------------------------------------------------------------
    def entry(self, doc_id: int) -> WorklistEntry | None:
        return self._entries.get(doc_id)

    def entries(self) -> list[WorklistEntry]:
        return list(self._entries.values())

    def film_ids(self) -> list[int]:
        """The shown films (filtered), in the order of the list."""
        return list(self._order)

    def index_of(self, doc_id: int, column: int = 0) -> QModelIndex:
        node_id = self._film_node.get(doc_id)
        if node_id is None:
            return QModelIndex()
        return self.createIndex(self._nodes[node_id].row, column, node_id)

    def group_keys(self) -> list[str]:
        return [n.key for n in self._nodes if n.doc_id is None]

    # -- arrangement ---------------------------------------------------------------------------
    def _rearrange(self, force: bool = False, changed: Iterable[int] = ()) -> None:
        groups = arrange(list(self._entries.values()), self.rule, self.sort_key, self.descending)
        grouped = any(g.key for g in groups)
        shape = (grouped, self._shape_of(groups, grouped))
        if not force and shape == self._shape:
            for doc_id in changed:  # the same rows in the same places: repaint the changed ones
                index = self.index_of(doc_id)
                if index.isValid():
                    emit(self.dataChanged, index, self.index_of(doc_id, len(COLUMNS) - 1))
            return
        self.beginResetModel()
        self.grouped = grouped
        self._shape = shape
        self._nodes, self._top, self._film_node = [], [], {}
        self._order = film_order(groups)
        if grouped:
            self._add_groups(groups, -1, self._top)
        else:
            for e in groups[0].entries if groups else []:
                self._add_film(e.doc_id, -1, self._top)
        self.endResetModel()

    @staticmethod
    def _shape_of(groups: list, grouped: bool) -> tuple:
        def walk(gs: list) -> tuple:
            return tuple((g.key, g.label, walk(g.children), tuple(e.doc_id for e in g.entries)) for g in gs)

        return walk(groups)

    def _add_groups(self, groups: list, parent: int, siblings: list[int]) -> None:
        for g in groups:
            node_id = len(self._nodes)
            self._nodes.append(_Node(parent, len(siblings), label=g.label, key=g.key or "other", count=g.count()))
            siblings.append(node_id)
            children = self._nodes[node_id].children
            self._add_groups(g.children, node_id, children)
            for e in g.entries:
                self._add_film(e.doc_id, node_id, children)

    def _add_film(self, doc_id: int, parent: int, siblings: list[int]) -> None:
        node_id = len(self._nodes)
        self._nodes.append(_Node(parent, len(siblings), doc_id=doc_id))
        siblings.append(node_id)
        self._film_node[doc_id] = node_id

    # -- QAbstractItemModel --------------------------------------------------------------------
    def _children(self, parent: QModelIndex | QPersistentModelIndex) -> list[int]:
        if not parent.isValid():
            return self._top
        return self._nodes[parent.internalId()].children

    def index(self, row: int, column: int, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> QModelIndex:  # noqa: B008
        children = self._children(parent)
        if 0 <= row < len(children) and 0 <= column < len(COLUMNS):
            return self.createIndex(row, column, children[row])
        return QModelIndex()

    def parent(self, index: QModelIndex | QPersistentModelIndex = QModelIndex()) -> QModelIndex:  # noqa: B008
        if not index.isValid():
            return QModelIndex()
        parent = self._nodes[index.internalId()].parent
        if parent < 0:
            return QModelIndex()
        return self.createIndex(self._nodes[parent].row, 0, parent)

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        if parent.isValid() and parent.column() != 0:
            return 0
        return len(self._children(parent))

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return len(COLUMNS)

    def hasChildren(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> bool:  # noqa: B008, N802
        return self.rowCount(parent) > 0

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(COLUMNS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][0]
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMNS[section][2]
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        node = self._nodes[index.internalId()]
        if node.doc_id is None:
            return self._group_data(node, index.column(), role)
        e = self._entries.get(node.doc_id)
        return None if e is None else self._film_data(e, index.column(), role)

    def _group_data(self, node: _Node, column: int, role: int):
        if role == Qt.ItemDataRole.DisplayRole and column == 0:
            return f"{node.label} ({node.count})"
        if role == GROUP_ROLE:
            return node.key
        if role == Qt.ItemDataRole.FontRole:
            font = QFont()
            font.setBold(True)
            return font
        return None

    def _film_data(self, e: WorklistEntry, column: int, role: int):
        if role == DOC_ROLE:
            return e.doc_id
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(e, column)
        if role == Qt.ItemDataRole.DecorationRole and column == 0:
            return self._pixmap(e.doc_id)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltips.get(e.doc_id) or e.file_name
        if role == Qt.ItemDataRole.ForegroundRole:
            if column == 1 and e.ai_label:
                return QColor(class_colour(e.ai_label))
            if column == 5 and e.agreement:
                return QColor(AGREE_COLOUR if e.agreement == "agree" else DISAGREE_COLOUR)
            if column == 3 and (e.abstained or e.warning):
                return QColor("#f0b429")
            return None
        if role == Qt.ItemDataRole.FontRole and not e.read and column == 0:
            font = QFont()
            font.setBold(True)  # unread films stand out, as unread mail does
            return font
        if role == Qt.ItemDataRole.SizeHintRole and column == 0:
            return QSize(THUMB + 8, THUMB + 4)
        return None

    @staticmethod
    def _text(e: WorklistEntry, column: int) -> str:
        if column == 0:
            return e.file_name
        if column == 1:  # the class; the probability has its own column (the badge text has both)
            return e.ai_label or e.badge
        if column == 2:
            return _probability(e.ai_probability)
        if column == 3:
            return " ".join(m for m, on in (("!", e.abstained), ("⚠", e.warning)) if on)
        if column == 4:
            return "✓" if e.read else "●"
        if column == 5:
            mark = {"agree": "✓ agree", "disagree": "✗ disagree"}.get(e.agreement or "", "")
            return " · ".join(p for p in (mark, e.reader_class or "") if p)
        if column == 6:
            return e.patient
        if column == 7:
            return dicom_date(e.study_date)
        return ""

    def _pixmap(self, doc_id: int) -> QPixmap | None:
        pixmap = self._pixmaps.get(doc_id)
        if pixmap is not None:
            self._pixmaps.move_to_end(doc_id)
            return pixmap
        gray = self._thumbnail(doc_id)
        if gray is None:
            return None
        pixmap = thumbnail_pixmap(gray, THUMB)
        self._pixmaps[doc_id] = pixmap
        while len(self._pixmaps) > _THUMB_CACHE:
            self._pixmaps.popitem(last=False)
        return pixmap
