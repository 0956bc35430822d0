"""Start the viewer: ``python main.py [--open FILE...] [--model DIR] [--startup-time]``.

Start-up is kept short by importing nothing heavy here: TensorFlow, Keras, matplotlib and
the predictor are imported by the inference thread after the window has painted.

``--startup-time`` prints the time from process start to the first paint of the main
window (``startup: first paint after 0.62 s``). Set ``CXR_VIEWER_EXIT_AFTER_PAINT=1`` to quit
right after that paint, which makes the figure easy to measure repeatedly::

    CXR_VIEWER_EXIT_AFTER_PAINT=1 python main.py --startup-time
"""

from __future__ import annotations

import os
import sys
import time

# Taken at import, as a fallback when the process start time cannot be read from the OS.
_IMPORTED_AT = time.perf_counter()

__all__ = ["run_viewer", "seconds_since_process_start"]


def seconds_since_process_start() -> float:
    """Seconds since this process started (Linux: from /proc; elsewhere: since this module's import)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            # The command name (field 2) may contain spaces; fields after the last ")" are fixed.
            fields = fh.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of the full line: start time in clock ticks after boot
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - _IMPORTED_AT


def run_viewer(files: list[str], model_dir: str | None, startup_time: bool) -> int:
    """Show the main window, open ``files`` and run the event loop; returns the exit code."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from viewer.main_window import APP_TITLE, MainWindow
    from viewer.settings import APPLICATION, ORGANISATION
    from viewer.theme import apply_theme

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORGANISATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName(APP_TITLE)
    apply_theme(app)
    window = MainWindow(model_dir=model_dir)
    exit_after_paint = os.environ.get("CXR_VIEWER_EXIT_AFTER_PAINT", "") not in ("", "0")

    def on_first_paint() -> None:
        if startup_time:
            print(f"startup: first paint after {seconds_since_process_start():.2f} s", flush=True)
        if exit_after_paint:
            QTimer.singleShot(0, window.close)

    window.first_painted.connect(on_first_paint)
    if files:
        window.open_paths(files)  # queued until the window has painted
    window.show()
    _close_on_signals(window)
    return int(app.exec())


def _close_on_signals(window) -> None:
    """Ctrl+C in the terminal and SIGTERM (logout, ``kill``) close the window the normal way:
    jobs are cancelled, the inference thread gets its timeout, and the exit code is 0.

    Python runs signal handlers only between bytecodes, so a short timer gives the interpreter
    a turn while Qt's event loop waits in C++.
    """
    import signal

    from PySide6.QtCore import QTimer

    def close(_signum, _frame) -> None:
        window.close()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, close)
    ticker = QTimer(window)
    ticker.timeout.connect(lambda: None)
    ticker.start(200)
