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

import numpy as np
from PySide6.QtCore import QAbstractItemModel, QModelIndex, QObject, QPersistentModelIndex, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPixmap

from inference.dicom_text import dicom_date
from viewer.qt_compat import emit
from viewer.theme import class_colour
from viewer.thumbnails import thumbnail_pixmap
from viewer.worklist import SORT_KEYS, WorklistEntry, WorklistFilter, arrange, film_order

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
_GROUP_FLAGS = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
_FILM_FLAGS = _GROUP_FLAGS | Qt.ItemFlag.ItemNeverHasChildren
_NCOL = len(COLUMNS)
_ROOT = QModelIndex()


class _Layout:
    """The arranged tree as parallel lists indexed by node id (one pass, no object per row):
    parent node (-1: top level), row under it, children (None for a film), group key, label and
    film count, film doc id (None for a group)."""

    def __init__(self, groups: list, grouped: bool) -> None:
        self.parent: list[int] = []
        self.row: list[int] = []
        self.children: list[list[int] | None] = []
        self.key: list[str] = []
        self.label: list[str] = []
        self.count: list[int] = []
        self.doc: list[int | None] = []
        self.top: list[int] = []
        self.film_node: dict[int, int] = {}
        self.group_node: dict[str, int] = {}
        if grouped:
            self._groups(groups, -1, self.top, "")
        else:
            for e in groups[0].entries if groups else []:
                self._film(e.doc_id, -1, self.top)
        self.shape = (tuple(self.doc), tuple(self.key), tuple(self.parent), tuple(self.label))

    def _node(self, parent: int, siblings: list[int], key: str, label: str, doc: int | None) -> int:
        node = len(self.parent)
        self.parent.append(parent)
        self.row.append(len(siblings))
        self.children.append(None if doc is not None else [])
        self.key.append(key)
        self.label.append(label)
        self.count.append(0)
        self.doc.append(doc)
        siblings.append(node)
        return node

    def _film(self, doc_id: int, parent: int, siblings: list[int]) -> None:
        self.film_node[doc_id] = self._node(parent, siblings, "", "", doc_id)

    def _groups(self, groups: list, parent: int, siblings: list[int], prefix: str) -> int:
        total = 0
        for g in groups:
            key = f"{prefix}/{g.key}" if prefix else (g.key or "other")  # a study's key: patient/study
            node = self._node(parent, siblings, key, g.label, None)
            self.group_node[key] = node
            kids = self.children[node]
            n = self._groups(g.children, node, kids, key)
            for e in g.entries:
                self._film(e.doc_id, node, kids)
            self.count[node] = n + len(g.entries)
            total += self.count[node]
        return total


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
        self._layout = _Layout([], False)
        self._order: list[int] = []
        self._pixmaps: OrderedDict[int, QPixmap] = OrderedDict()
        self.grouped = False
        self.hide_identifiers = False  # View > Hide identifiers on screen: no patient ID or file name
        self._aliases: dict[str, str] = {}

    # -- feeding -------------------------------------------------------------------------------
    def set_entries(self, entries: Iterable[WorklistEntry], tooltips: dict[int, str] | None = None) -> None:
        self._entries = {e.doc_id: e for e in entries}
        self._tooltips = dict(tooltips or {})
        self._pixmaps.clear()
        self._rearrange(force=True)

    def update_entries(self, entries: Iterable[WorklistEntry], tooltips: dict[int, str] | None = None) -> None:
        """Add or replace entries (a batch: one arrangement for all of them).

        When no entry moves (the filter, the sort value and the group of each are what they were:
        a result arriving while the list is "as opened"), only the changed rows are repainted and
        nothing is re-arranged."""
        changed, moved = [], False
        for e in entries:
            old = self._entries.get(e.doc_id)
            if old != e:
                changed.append(e.doc_id)
                moved = moved or old is None or self._placement(old) != self._placement(e)
            self._entries[e.doc_id] = e
        self._tooltips.update(tooltips or {})
        if moved:
            self._rearrange(changed=changed)
        else:
            self._repaint(changed)

    def _placement(self, e: WorklistEntry) -> tuple:
        """What decides where ``e`` goes in the list."""
        return (self.rule.accepts(e), SORT_KEYS[self.sort_key](e), e.patient, e.study, e.study_label, e.study_date)

    def _repaint(self, doc_ids: Iterable[int]) -> None:
        for doc_id in doc_ids:
            index = self.index_of(doc_id)
            if index.isValid():
                emit(self.dataChanged, index, self.index_of(doc_id, _NCOL - 1))

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
        node = self._layout.film_node.get(doc_id)
        if node is None:
            return QModelIndex()
        return self.createIndex(self._layout.row[node], column, node)

    def group_index(self, key: str) -> QModelIndex:
        node = self._layout.group_node.get(key)
        return QModelIndex() if node is None else self.createIndex(self._layout.row[node], 0, node)

    # Python reads rows through these, never through ``QModelIndex.data()``: with PySide6 6.12 a
    # ``data()`` call from Python that yields no value hands back None without its reference, and a
    # few thousand such calls free None and abort the interpreter (as ``emit`` does with True,
    # see viewer.qt_compat). The view's own calls from C++ are not affected.
    def doc_id_at(self, index: QModelIndex | QPersistentModelIndex) -> int | None:
        """The film's doc id on ``index``'s row; None on a group row or an invalid index."""
        return self._layout.doc[index.internalId()] if index.isValid() else None

    def group_key_at(self, index: QModelIndex | QPersistentModelIndex) -> str | None:
        if not index.isValid() or self._layout.doc[index.internalId()] is not None:
            return None
        return self._layout.key[index.internalId()]

    def text_at(self, index: QModelIndex | QPersistentModelIndex) -> str:
        """What ``index`` shows (DisplayRole), as a string."""
        if not index.isValid():
            return ""
        layout, node = self._layout, index.internalId()
        if layout.doc[node] is None:
            return self._group_label(node) if index.column() == 0 else ""
        e = self._entries.get(layout.doc[node])
        return "" if e is None else self._text(e, index.column())

    def group_keys(self) -> list[str]:
        return list(self._layout.group_node)

    # -- arrangement ---------------------------------------------------------------------------
    def _rearrange(self, force: bool = False, changed: Iterable[int] = ()) -> None:
        groups = arrange(list(self._entries.values()), self.rule, self.sort_key, self.descending)
        grouped = any(g.key for g in groups)
        layout = _Layout(groups, grouped)
        if not force and layout.shape == self._layout.shape:
            self._repaint(changed)  # the same rows in the same places
            return
        self.beginResetModel()
        if self.hide_identifiers:
            patients = dict.fromkeys(e.patient for e in sorted(self._entries.values(), key=lambda e: e.position))
            self._aliases = {p: f"Patient {i}" for i, p in enumerate((p for p in patients if p), start=1)}
        self.grouped = grouped
        self._layout = layout
        self._order = film_order(groups)
        self.endResetModel()

    # -- QAbstractItemModel --------------------------------------------------------------------
    # These run once per row when the view lays out (5,000 Python calls for 5,000 films): kept lean.
    def index(self, row: int, column: int, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> QModelIndex:
        layout = self._layout
        children = layout.top if not parent.isValid() else layout.children[parent.internalId()]
        if children is not None and 0 <= row < len(children) and 0 <= column < _NCOL:
            return self.createIndex(row, column, children[row])
        return QModelIndex()

    def parent(self, index: QModelIndex | QPersistentModelIndex = _ROOT) -> QModelIndex:
        if not index.isValid():
            return QModelIndex()
        parent = self._layout.parent[index.internalId()]
        if parent < 0:
            return QModelIndex()
        return self.createIndex(self._layout.row[parent], 0, parent)

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:  # noqa: N802
        if not parent.isValid():
            return len(self._layout.top)
        if parent.column() != 0:
            return 0
        return len(self._layout.children[parent.internalId()] or ())

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:  # noqa: N802
        return _NCOL

    def hasChildren(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> bool:  # noqa: N802
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
        # A film never has children: the tree view then does not ask (one call less per row).
        return _GROUP_FLAGS if self._layout.doc[index.internalId()] is None else _FILM_FLAGS

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        node = index.internalId()
        doc_id = self._layout.doc[node]
        if doc_id is None:
            return self._group_data(node, index.column(), role)
        e = self._entries.get(doc_id)
        return None if e is None else self._film_data(e, index.column(), role)

    def _group_data(self, node: int, column: int, role: int):
        if role == Qt.ItemDataRole.DisplayRole and column == 0:
            return self._group_label(node)
        if role == GROUP_ROLE:
            return self._layout.key[node]
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
            tip = self._tooltips.get(e.doc_id) or e.file_name
            return tip.splitlines()[-1] if self.hide_identifiers else tip  # the path's line left out
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

    def _group_label(self, node: int) -> str:
        layout = self._layout
        label = layout.label[node]
        if self.hide_identifiers and layout.parent[node] < 0 and layout.key[node] != "other":
            label = self._aliases.get(layout.key[node], "Patient")
        return f"{label} ({layout.count[node]})"

    def set_hide_identifiers(self, hide: bool) -> None:
        """Patients shown as "Patient 1, 2..." (in the order opened) and films as "Film N" when ``hide``."""
        if bool(hide) == self.hide_identifiers:
            return
        self.hide_identifiers = bool(hide)
        self._rearrange(force=True)

    def _text(self, e: WorklistEntry, column: int) -> str:
        if column == 0:
            return f"Film {e.position + 1}" if self.hide_identifiers else e.file_name
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
            return self._aliases.get(e.patient, "Patient") if self.hide_identifiers and e.patient else e.patient
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
