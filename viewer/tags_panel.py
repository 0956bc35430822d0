"""The DICOM tag panel: every header element of the current file, filtered by a search box."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QSortFilterProxyModel, Qt
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QLineEdit, QTableView, QVBoxLayout, QWidget

from inference.image import XRayImage

__all__ = ["TagsPanel", "file_facts"]

COLUMNS = ("Tag", "Keyword", "VR", "Value")


def file_facts(image: XRayImage) -> list[tuple[str, str, str, str]]:
    """Rows describing a file that has no DICOM header (PNG, JPEG), in the tag table's shape."""
    meta = image.meta
    rows = [
        ("", "File", "", meta.path),
        ("", "Format", "", meta.format),
        ("", "Size", "", f"{meta.width} × {meta.height}"),
        ("", "Bits stored", "", str(meta.bits_stored)),
        ("", "Channels in file", "", str(meta.original_channels)),
    ]
    return rows


class TagsPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search tags (name, number or value)…")
        self.search.setClearButtonEnabled(True)
        self.model = QStandardItemModel(0, len(COLUMNS), self)
        self.model.setHorizontalHeaderLabels(list(COLUMNS))
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.proxy.setFilterKeyColumn(-1)  # search every column
        self.search.textChanged.connect(self.proxy.setFilterFixedString)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        font = self.table.font()
        font.setPointSizeF(font.pointSizeF() * 0.92)
        self.table.setFont(font)
        header = self.table.horizontalHeader()
        for column in (0, 1, 2):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        self.note = QLabel("")
        self.note.setObjectName("muted")
        self.note.setWordWrap(True)
        layout.addWidget(self.search)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.note)

    def set_rows(self, rows: Sequence[tuple[str, str, str, str]], note: str = "") -> None:
        self.model.removeRows(0, self.model.rowCount())
        for row in rows:
            items = []
            for value in row:
                item = QStandardItem(str(value))
                item.setToolTip(str(value))
                items.append(item)
            self.model.appendRow(items)
        # Fixed widths: long keywords (FileMetaInformationGroupLength) must not push the values out of sight.
        metrics = self.table.fontMetrics()
        self.table.setColumnWidth(0, metrics.horizontalAdvance("(0000,0000)") + 12)
        keyword = max((metrics.horizontalAdvance(r[1]) + 12 for r in rows), default=60)
        self.table.setColumnWidth(1, min(150, max(60, keyword)))
        self.table.setColumnWidth(2, metrics.horizontalAdvance("VRW") + 8)
        self.note.setText(note)

    def set_image(self, image: XRayImage | None) -> None:
        if image is None:
            self.set_rows([], "")
            return
        # A stored window that could not be used is said here, where the reader checks the header.
        window_note = f"\n{image.meta.window_note}" if image.meta.window_note else ""
        if image.meta.tags:
            self.set_rows(image.meta.tags, f"{len(image.meta.tags)} DICOM elements{window_note}")
        else:
            self.set_rows(file_facts(image), f"{image.meta.format} file: no DICOM header{window_note}")

    def visible_rows(self) -> int:
        return self.proxy.rowCount()
