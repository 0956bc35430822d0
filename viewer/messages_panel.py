"""A log of what went wrong (files that could not be opened, failed predictions), never modal."""

from __future__ import annotations

import time

from PySide6.QtGui import QColor
from PySide6.QtWidgets import QHBoxLayout, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from viewer.theme import ERROR, MUTED, WARNING

__all__ = ["MessagesPanel"]

_COLOURS = {"error": ERROR, "warning": WARNING, "info": MUTED}


class MessagesPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        self.list = QListWidget()
        self.list.setWordWrap(True)
        self.list.setAlternatingRowColors(True)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.list.clear)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(clear)
        layout.addWidget(self.list, 1)
        layout.addLayout(row)

    def add(self, text: str, level: str = "error") -> None:
        item = QListWidgetItem(f"{time.strftime('%H:%M:%S')}  {text}")
        item.setForeground(QColor(_COLOURS.get(level, MUTED)))
        item.setToolTip(text)
        self.list.addItem(item)
        self.list.scrollToBottom()

    def messages(self) -> list[str]:
        return [self.list.item(i).toolTip() for i in range(self.list.count())]
