"""Which model is active, and which one it replaced: the record behind "Roll back" (issue 16).

``<user data>/models/activations.json`` holds the active model's folder and a stack of the
models it replaced (newest last), each with the date it was replaced. Activating a model
pushes its predecessor; rolling back pops it and makes it active again, in one step.
No Qt and no TensorFlow here: the model manager and ``main.py adapt`` (its ``--init``
default) both read it. A damaged file is treated as empty, never as an error.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inference.paths import user_models_dir

__all__ = [
    "ACTIVATIONS_FILE",
    "active_model",
    "predecessor",
    "record_activation",
    "remember",
    "remembered",
    "roll_back",
]

ACTIVATIONS_FILE = "activations.json"
MAX_HISTORY = 50


def _file() -> Path:
    return user_models_dir() / ACTIVATIONS_FILE


def _load() -> dict[str, Any]:
    try:
        data = json.loads(_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"active": "", "history": []}
    if not isinstance(data, dict) or not isinstance(data.get("history"), list):
        return {"active": "", "history": []}
    history = [h for h in data["history"] if isinstance(h, dict) and isinstance(h.get("path"), str)]
    return {"active": str(data.get("active") or ""), "history": history[-MAX_HISTORY:]}


def _save(data: dict[str, Any]) -> None:
    path = _file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # never a half-written record


def _same(a: str, b: str) -> bool:
    try:
        return bool(a) and bool(b) and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def active_model() -> Path | None:
    """The folder last activated in the viewer, when it still exists."""
    active = _load()["active"]
    return Path(active) if active and Path(active).is_dir() else None


def remembered() -> str:
    """The active model's folder as recorded (empty: the bundled model), whether or not it still
    loads: the viewer tries it and falls back to the bundled model itself, saying why."""
    return _load()["active"]


def remember(path: str | os.PathLike[str]) -> None:
    """Record ``path`` as the active model without a rollback step (empty: the bundled model); the
    viewer's correction after a remembered model failed to load."""
    data = _load()
    data["active"] = str(path)
    _save(data)


def record_activation(new: str | os.PathLike[str], previous: str | os.PathLike[str] | None) -> None:
    """``new`` becomes active; ``previous`` (the model it replaces) is kept to roll back to."""
    data = _load()
    new, prev = str(new), str(previous or "")
    if prev and not _same(prev, new):
        data["history"].append(
            {"path": prev, "replaced_by": new, "date": datetime.now(UTC).isoformat(timespec="seconds")}
        )
    data["active"] = new
    data["history"] = data["history"][-MAX_HISTORY:]
    _save(data)


def predecessor(current: str | os.PathLike[str] | None) -> Path | None:
    """The model ``current`` replaced, when it was recorded and its folder still exists."""
    for entry in reversed(_load()["history"]):
        if _same(entry.get("replaced_by", ""), str(current or "")) and Path(entry["path"]).is_dir():
            return Path(entry["path"])
    return None


def roll_back(current: str | os.PathLike[str] | None) -> Path | None:
    """Make ``current``'s predecessor active again and forget that step; None when there is none."""
    data = _load()
    for i in range(len(data["history"]) - 1, -1, -1):
        entry = data["history"][i]
        if _same(entry.get("replaced_by", ""), str(current or "")) and Path(entry["path"]).is_dir():
            del data["history"][i]
            data["active"] = entry["path"]
            _save(data)
            return Path(entry["path"])
    return None
