"""Emitting signals must not eat references to True/False (PySide6 6.12.0 defect, see viewer.qt_compat)."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal

from viewer.qt_compat import emit


class _Source(QObject):
    moved = Signal(object)
    nothing = Signal()


def test_many_emissions_keep_the_bool_singletons_alive(qapp):
    source = _Source()
    seen = []
    source.moved.connect(seen.append)
    before = sys.getrefcount(True) + sys.getrefcount(False)
    for i in range(5000):  # a minute of mouse movement over the canvas
        emit(source.moved, i)
        emit(source.nothing)
    after = sys.getrefcount(True) + sys.getrefcount(False)
    assert len(seen) == 5000
    assert abs(after - before) <= 5  # unchanged, give or take unrelated code; the defect loses 10,000


def test_many_void_calls_keep_none_alive(qapp):
    import viewer.qt_compat as compat

    widget = QObject()
    for _ in range(20000):  # more than None's references at start: the 6.12.0 defect aborts here
        widget.setObjectName("x")
    assert sys.getrefcount(None) > 20000 or not compat.VOID_CALL_DROPS_NONE
