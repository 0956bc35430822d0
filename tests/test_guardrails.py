"""Code rules that reviews keep missing, checked on the source tree itself."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("viewer", "inference", "training", "tools", "benchmarks", "tests", "main.py")
EMIT_HOME = ROOT / "viewer" / "qt_compat.py"


def _python_files() -> list[Path]:
    files: list[Path] = []
    for name in CHECKED:
        path = ROOT / name
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return files


def raw_emits(source: str) -> list[int]:
    """Line numbers of ``something.emit(...)`` calls in ``source``."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "emit"
    ]


def test_raw_emits_are_found() -> None:
    assert raw_emits("self.done.emit(1)\nemit(self.done, 1)\n") == [1]


def test_signals_are_emitted_only_through_qt_compat() -> None:
    # PySide6 6.12's SignalInstance.emit() drops a reference to True; qt_compat.emit repays it.
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _python_files()
        if path != EMIT_HOME
        for line in raw_emits(path.read_text(encoding="utf-8"))
    ]
    hint = "use viewer.qt_compat.emit(signal, ...) instead of signal.emit(...): "
    assert offenders == [], hint + ", ".join(offenders)
