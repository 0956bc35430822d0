"""Work-arounds for defects of specific Qt for Python releases. Every ``.emit()`` goes through :func:`emit`.

PySide6 6.12.0: ``SignalInstance.emit()`` returns ``True``/``False`` without taking a
reference to it, so each emission from Python removes one reference to the ``True``
singleton. After a few thousand emissions (mouse moves report the pixel under the
cursor through a signal) the interpreter frees ``True`` and aborts with
"bool_dealloc: deallocating True or False". 6.11.3 does not have the defect.

:func:`emit` gives the missing reference back, but only when a probe at import shows the
defect, so it is a no-op on fixed releases.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

from PySide6.QtCore import QObject, Signal

__all__ = ["emit", "EMIT_DROPS_A_REFERENCE"]

_PROBES = 8


class _Probe(QObject):
    ping = Signal()


def _emit_drops_a_reference() -> bool:
    probe = _Probe()
    before = sys.getrefcount(True) + sys.getrefcount(False)
    for _ in range(_PROBES):
        probe.ping.emit()
    after = sys.getrefcount(True) + sys.getrefcount(False)
    if after - before == -_PROBES:
        for _ in range(_PROBES):  # repay what the probe itself took
            _incref(True)
        return True
    return False


_py_incref = ctypes.pythonapi.Py_IncRef
_py_incref.argtypes = [ctypes.py_object]
_py_incref.restype = None


def _incref(obj: Any) -> None:
    _py_incref(obj)


EMIT_DROPS_A_REFERENCE = _emit_drops_a_reference()


def emit(signal: Any, *args: Any) -> None:
    """``signal.emit(*args)``, safe on every PySide6 release."""
    result = signal.emit(*args)
    if EMIT_DROPS_A_REFERENCE:
        _incref(result)
