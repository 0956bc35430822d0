"""Start-up: nothing heavy is imported before the window shows, and --startup-time reports the first paint."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "keras", "matplotlib", "inference.predictor", "inference.export")


def test_building_the_window_imports_nothing_heavy(tmp_path):
    code = (
        "import sys\n"
        "from PySide6.QtWidgets import QApplication\n"
        "import viewer.app\n"
        "from viewer.main_window import MainWindow\n"
        "from viewer.theme import apply_theme\n"
        "app = QApplication([]); apply_theme(app)\n"
        "seen = []\n"
        "w = MainWindow()\n"
        f"w.first_painted.connect(lambda: seen.append(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
        "w.show()\n"
        "while not seen: app.processEvents()\n"
        "print(seen[0], flush=True)\n"
        "import os; os._exit(0)  # no need to wait for the model loading that starts after the paint\n"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CXR_VIEWER_SETTINGS=str(tmp_path / "s.ini"))
    env["CXR_VIEWER_HOME"] = str(tmp_path / "home")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_startup_time_flag_prints_the_first_paint_and_exits_when_asked(tmp_path):
    env = dict(
        os.environ,
        QT_QPA_PLATFORM="offscreen",
        CXR_VIEWER_EXIT_AFTER_PAINT="1",
        CXR_VIEWER_SETTINGS=str(tmp_path / "s.ini"),
        CXR_VIEWER_HOME=str(tmp_path / "home"),
    )
    out = subprocess.run(
        [sys.executable, "main.py", "--startup-time"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"^startup: first paint after \d+\.\d\d s$", out.stdout, re.MULTILINE), out.stdout


def test_sigterm_and_ctrl_c_close_the_viewer_cleanly(tmp_path):
    """The viewer ends cleanly on SIGTERM and Ctrl+C (issue 17): exit code 0, no traceback."""
    import signal
    import time

    env = dict(
        os.environ,
        QT_QPA_PLATFORM="offscreen",
        CXR_VIEWER_SETTINGS=str(tmp_path / "s.ini"),
        CXR_VIEWER_HOME=str(tmp_path / "home"),
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen(
            [sys.executable, "main.py", "--startup-time"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert "startup: first paint" in proc.stdout.readline()
        time.sleep(0.5)
        proc.send_signal(signum)
        started = time.monotonic()
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (signum, err[-2000:])
        assert "Traceback" not in err and "KeyboardInterrupt" not in err
        assert time.monotonic() - started < 30
