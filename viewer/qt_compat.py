"""Work-arounds for defects of specific Qt for Python releases. Every ``.emit()`` goes through :func:`emit`.

PySide6's ``__feature__`` support hooks every import in the process and reads the *source*
of each new module (``inspect.getsource``) to see whether it mentions PySide6. Importing
TensorFlow and Keras in the inference thread loads thousands of modules, and that scan made
the model load several seconds longer, all of it competing with the GUI thread for the GIL.
:func:`skip_feature_scan` tells the hook that the big numerical packages do not use PySide6.

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

__all__ = ["emit", "EMIT_DROPS_A_REFERENCE", "VOID_CALL_DROPS_NONE", "skip_feature_scan", "NO_PYSIDE_PACKAGES"]

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


def _void_call_drops_none() -> bool:
    """PySide6 6.12.0 (Python 3.11): every call of a C++ method returning void hands back None without
    a reference to it, so a few thousand ``update()``/``setText()`` calls free None and abort the
    interpreter ("none_dealloc"). When a probe shows it, None is given 2**40 references (what
    Python 3.12 does by making it immortal); a fixed release leaves it alone."""
    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(_PROBES):
        probe.setObjectName("probe")
    if sys.getrefcount(None) - before == -_PROBES:
        ctypes.c_ssize_t.from_address(id(None)).value += 1 << 40  # ob_refcnt, the object's first field
        return True
    return False


VOID_CALL_DROPS_NONE = _void_call_drops_none()


def emit(signal: Any, *args: Any) -> None:
    """``signal.emit(*args)``, safe on every PySide6 release."""
    result = signal.emit(*args)
    if EMIT_DROPS_A_REFERENCE:
        _incref(result)


# Top-level packages that never use PySide6 (nor its __feature__ switches) and import many modules.
NO_PYSIDE_PACKAGES = frozenset(
    [
        "tensorflow",
        "keras",
        "tf_keras",
        "ml_dtypes",
        "h5py",
        "google",
        "absl",
        "numpy",
        "scipy",
        "matplotlib",
        "PIL",
        "cv2",
        "pydicom",
        "optree",
        "rich",
        "urllib3",
        "requests",
        "jax",
        "tensorboard",
        "wrapt",
        "opt_einsum",
        "gast",
        "astunparse",
        "flatbuffers",
        "termcolor",
        "namex",
        "grpc",
        "markdown_it",
        "pygments",
        "packaging",
        "pyparsing",
        "kiwisolver",
        "fontTools",
        "dateutil",
        "cycler",
        "contourpy",
        "six",
        "typing_extensions",
        "charset_normalizer",
        "idna",
        "certifi",
        "pylibjpeg",
        "openjpeg",
        "libjpeg",
    ]
)


def skip_feature_scan(packages: frozenset[str] = NO_PYSIDE_PACKAGES) -> bool:
    """Make PySide6's per-import source scan skip ``packages``; False when this release has no such hook."""
    feature = sys.modules.get("shibokensupport.feature")
    original = getattr(feature, "_mod_uses_pyside", None)
    if original is None or getattr(original, "_cxr_quick", False):
        return original is not None

    def mod_uses_pyside(module: Any) -> bool:
        name = getattr(module, "__name__", "") or ""
        if name.split(".", 1)[0] in packages:
            return False
        return bool(original(module))

    mod_uses_pyside._cxr_quick = True  # type: ignore[attr-defined]
    feature._mod_uses_pyside = mod_uses_pyside  # type: ignore[union-attr]
    return True


skip_feature_scan()
