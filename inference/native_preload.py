"""Map TensorFlow's shared libraries into the process without holding Python's GIL.

``import tensorflow`` loads about 850 MB of shared objects (``libtensorflow_cc.so.2`` alone
is 788 MB). CPython's import machinery calls ``dlopen`` while holding the GIL, and so does
``ctypes.CDLL``; mapping and relocating these libraries then stops every other Python thread,
the viewer's GUI thread included, for about 250 ms. A call through a ctypes *function* releases
the GIL, so calling the C library's own ``dlopen`` on the same files first (in the thread that is
about to import TensorFlow) does the expensive part while the GUI keeps running; the import that
follows finds the libraries already loaded.

Linux only (elsewhere, or when the files are not where a pip install puts them, nothing is done):
this is an optimisation, never a requirement.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import sys
import threading
from pathlib import Path

__all__ = [
    "TENSORFLOW_LIBRARIES",
    "NativePreload",
    "dlopen_without_gil",
    "import_gil_bound_extensions",
    "preload_tensorflow_libraries",
]

# The libraries every TensorFlow extension module links against, largest first-needed order;
# paths relative to the tensorflow package.
TENSORFLOW_LIBRARIES = (
    "libtensorflow_framework.so.2",
    "libtensorflow_cc.so.2",
    "python/lib_pywrap_tensorflow_common.so",
)

_handles: list[int] = []  # kept for the life of the process: the libraries are never unloaded
_preloaded: list[str] = []


def dlopen_without_gil(path: str | Path) -> bool:
    """``dlopen(path)`` with the interpreter's flags, the GIL released during the call; True if loaded."""
    try:
        libc = ctypes.CDLL(None)  # the process's global symbols: glibc's dlopen
        dlopen = libc.dlopen
    except (OSError, AttributeError):
        return False
    dlopen.restype = ctypes.c_void_p
    dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    handle = dlopen(str(path).encode(), sys.getdlopenflags())  # ctypes drops the GIL around the call
    if not handle:
        return False
    _handles.append(handle)
    return True


def preload_tensorflow_libraries() -> list[str]:
    """Load :data:`TENSORFLOW_LIBRARIES` ahead of ``import tensorflow``; returns the names loaded.

    Does nothing once TensorFlow is imported, off Linux, or when TensorFlow is not installed.
    """
    if _preloaded or not sys.platform.startswith("linux") or "tensorflow" in sys.modules:
        return []
    try:
        spec = importlib.util.find_spec("tensorflow")  # a top-level name: imports nothing
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(list(spec.submodule_search_locations)[0])
    loaded = []
    for name in TENSORFLOW_LIBRARIES:
        path = root / name
        if path.is_file() and dlopen_without_gil(path):
            loaded.append(name)
    _preloaded.extend(loaded)
    return loaded


def import_gil_bound_extensions() -> None:
    """Import the extension modules of TensorFlow's import whose initialisation holds the GIL longest.

    ``ml_dtypes`` registers NumPy ufunc loops for its dtypes in one C call that holds the GIL for
    about 0.47 s (NumPy 2.4, ml_dtypes 0.7). No thread can avoid that; a caller can only choose when
    it happens (the viewer: before its window is first painted, rather than while files open).
    """
    with contextlib.suppress(ImportError):
        import ml_dtypes  # noqa: F401


class NativePreload:
    """One short-lived thread that prepares TensorFlow's import: first the GIL-bound extension
    modules (:func:`import_gil_bound_extensions`), then the libraries (without the GIL).

    ``gil_bound_done`` is set once the GIL-bound part is over: a GUI waits for it before its first
    paint, so no window is ever frozen by it. ``wait()`` waits for the whole preparation.
    """

    def __init__(self) -> None:
        self.gil_bound_done = threading.Event()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cxr-preload", daemon=True)

    def start(self) -> None:
        if not self._thread.is_alive() and not self.done.is_set():
            self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def wait_gil_bound(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) for the GIL-bound imports; True at once when never started."""
        return not self.started or self.gil_bound_done.wait(timeout)

    def wait(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) for the whole preparation; True at once when never started."""
        return not self.started or self.done.wait(timeout)

    def _run(self) -> None:
        try:
            import_gil_bound_extensions()
        finally:
            self.gil_bound_done.set()
        try:
            preload_tensorflow_libraries()
        finally:
            self.done.set()
