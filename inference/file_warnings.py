"""Decoder warnings collected per file, without touching the process's warning filters.

The loader decodes on several threads at once (the viewer's loader, the batch decode pool).
``warnings.catch_warnings`` is not thread-safe: it swaps the module-wide filters and
``showwarning`` hook, so two files decoded at once get each other's warnings, and another
thread's warnings are silenced or shown while either is open.

pydicom reports every problem twice: to its logger ("pydicom") and as a Python warning
(``pydicom.misc.warn_and_log``). The logger copy is what we collect: one
:class:`logging.Handler`, installed once, appends each record to the list of the thread
that emitted it, when that thread is inside :func:`collect`. Records of threads that
collect nothing are left alone. The Python-warning copy would only repeat the message
on stderr; it is silenced by one filter, added once (never toggled per call).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collect", "ignore_warnings", "install"]

_local = threading.local()
_install_lock = threading.Lock()
_handler_installed = False
_PYDICOM_MODULES = r"pydicom(\.|$)"


def ignore_warnings(category: type[Warning], module: str = "") -> None:
    """Make sure warnings of ``category`` (raised in modules matching ``module``) are ignored.

    Adds the filter only when it is missing: it is normally added once per process, and
    again only if a ``catch_warnings`` block elsewhere has since restored an older filter list.
    """
    for action, message, cat, mod, lineno in list(warnings.filters):
        text = getattr(mod, "pattern", mod) or ""  # a compiled pattern, a string or None
        if action == "ignore" and message is None and cat is category and text == module and not lineno:
            return
    warnings.filterwarnings("ignore", category=category, module=module)


class _PerThreadHandler(logging.Handler):
    """Routes a record to the collecting list of the thread that logged it."""

    def emit(self, record: logging.LogRecord) -> None:
        bucket = getattr(_local, "bucket", None)
        if bucket is None:
            return
        try:
            text = record.getMessage()
        except Exception:  # a malformed log call must not cost the image
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None and not text.strip():
            text = str(record.exc_info[1])
        bucket.append(text)


def install() -> None:
    """Install the per-thread handler on pydicom's logger (once) and silence its duplicate warnings."""
    global _handler_installed
    with _install_lock:
        if not _handler_installed:
            logging.getLogger("pydicom").addHandler(_PerThreadHandler(level=logging.WARNING))
            _handler_installed = True
    # The duplicate of each logged pydicom message as a Python warning (see above).
    ignore_warnings(UserWarning, _PYDICOM_MODULES)


@contextmanager
def collect() -> Iterator[list[str]]:
    """Collect the warnings (pydicom's logger, level WARNING and above) this thread emits inside the block.

    Nested blocks each get their own list; other threads are never affected.
    """
    install()
    previous = getattr(_local, "bucket", None)
    bucket: list[str] = []
    _local.bucket = bucket
    try:
        yield bucket
    finally:
        _local.bucket = previous
