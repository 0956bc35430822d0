"""``main.py models``: activate, show lineage and roll back through the viewer's own record."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference import activations
from inference.paths import bundled_model_dir
from main import main
from tests.tiny_bundle import edited_bundle, make_tiny_bundle


@pytest.fixture
def models(viewer_env: Path, tmp_path: Path) -> tuple[Path, Path]:
    parent = make_tiny_bundle(tmp_path / "parent", name="site-model", version="1.0.0")

    def adapted(data: dict) -> None:
        data["version"] = "1.0.0-adapted.1"
        data.setdefault("training", {})["adaptation"] = {
            "parent": {"name": "site-model", "version": "1.0.0", "content_hash": "abc"},
            "local_films": 80,
            "date": "2026-12-01T10:00:00+00:00",
        }

    return parent, edited_bundle(parent, tmp_path / "adapted", adapted)


def test_activate_then_roll_back_restores_the_predecessor(models, capsys) -> None:
    parent, child = models
    assert main(["models", "--activate", str(parent)]) == 0
    assert main(["models", "--activate", str(child)]) == 0
    assert activations.active_model() == child.resolve()

    assert main(["models"]) == 0
    shown = capsys.readouterr().out
    assert "site-model 1.0.0-adapted.1" in shown
    assert "fine-tuned from site-model 1.0.0 on 80 local films" in shown
    assert f"A roll back would restore: site-model 1.0.0 ({parent.resolve()})" in shown

    assert main(["models", "--roll-back"]) == 0
    assert activations.active_model() == parent.resolve()
    # the bundled model was active before the parent: one more step goes back to it
    assert main(["models", "--roll-back"]) == 0
    assert Path(activations.remembered()).resolve() == bundled_model_dir().resolve()
    assert main(["models", "--roll-back"]) == 1
    assert "No earlier model to roll back to." in capsys.readouterr().err


def test_a_folder_that_is_not_a_model_is_refused_and_nothing_changes(models, tmp_path: Path, capsys) -> None:
    parent, _ = models
    assert main(["models", "--activate", str(parent)]) == 0
    broken = edited_bundle(parent, tmp_path / "broken", lambda data: b"{ not json")
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (broken, empty, tmp_path / "missing"):
        assert main(["models", "--activate", str(folder)]) == 2
        assert "Not activated" in capsys.readouterr().err
    assert activations.active_model() == parent.resolve()
