"""The reads model (annotations and verdicts of opened films) without a display."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from inference.annotations import Annotation
from inference.image import Window
from inference.sidecar import SidecarStore
from inference.verdict import Verdict
from tests.tiny_bundle import xray_from_array
from viewer.document import ImageDocument
from viewer.reads import Reads

KEY = "sha256-" + "ab" * 32


def doc(doc_id: int = 1, key: str = KEY, name: str = "a.png") -> ImageDocument:
    img = xray_from_array(np.full((32, 32), 100, np.uint16), path=f"/films/{name}", bits_stored=12)
    w = Window(2048, 4096)
    return ImageDocument(doc_id, Path(f"/films/{name}"), img.meta, img.shape, np.zeros((4, 4), np.uint8), w, w, key=key)


def line(x: float = 10.0) -> Annotation:
    return Annotation("distance", ((0.0, 0.0), (x, 0.0)))


def test_changes_are_saved_at_once_and_come_back_for_the_same_film(tmp_path: Path) -> None:
    reads = Reads(SidecarStore(tmp_path))
    seen: list[str] = []
    reads.events.annotations_changed.connect(lambda d: seen.append("annotations"))
    reads.events.verdict_changed.connect(lambda d: seen.append("verdict"))
    a = doc()
    reads.add_annotation(a, line())
    reads.set_verdict(a, Verdict(reader_class="Normal", ai_label="Normal"))
    assert seen == ["annotations", "verdict"]
    saved = json.loads((tmp_path / f"{KEY}.json").read_text())
    assert saved["annotations"][0]["kind"] == "distance" and saved["verdict"]["reader_class"] == "Normal"
    # Another session, the same film opened from another path: its reads come back.
    again = Reads(SidecarStore(tmp_path))
    b = doc(doc_id=7, name="copy.png")
    assert [x.kind for x in again.annotations(b)] == ["distance"]
    assert again.verdict(b).reader_class == "Normal"


def test_undo_and_redo_restore_the_annotations_in_order(tmp_path: Path) -> None:
    reads = Reads(SidecarStore(tmp_path))
    a = doc()
    first, second = line(10), line(20)
    reads.add_annotation(a, first)
    reads.add_annotation(a, second)
    reads.replace_annotation(a, second.moved(5, 5))
    reads.remove_annotation(a, first.id)
    assert [x.points[0] for x in reads.annotations(a)] == [(5.0, 5.0)]
    assert reads.undo(a) and [x.id for x in reads.annotations(a)] == [first.id, second.id]
    assert reads.undo(a) and reads.annotation(a, second.id).points[0] == (0.0, 0.0)
    assert reads.redo(a) and reads.annotation(a, second.id).points[0] == (5.0, 5.0)
    reads.add_annotation(a, line(30))  # a new change drops the redo branch
    assert not reads.can_redo(a)
    assert reads.undo(a) and reads.undo(a) and reads.undo(a) and reads.undo(a)
    assert reads.annotations(a) == () and not reads.can_undo(a)
    assert not (tmp_path / f"{KEY}.json").exists()  # nothing left: no file


def test_a_film_without_identity_is_kept_in_memory_only(tmp_path: Path) -> None:
    reads = Reads(SidecarStore(tmp_path))
    a = doc(key="")
    reads.add_annotation(a, line())
    assert len(reads.annotations(a)) == 1 and list(tmp_path.iterdir()) == []


def test_a_save_that_fails_is_reported_and_the_change_kept(tmp_path: Path) -> None:
    blocker = tmp_path / "reads"
    blocker.write_text("a file where the folder should be")
    messages: list[tuple[str, str]] = []
    reads = Reads(SidecarStore(blocker), report=lambda text, level="info": messages.append((level, text)))
    a = doc()
    reads.add_annotation(a, line())
    assert len(reads.annotations(a)) == 1
    assert messages and messages[0][0] == "error" and "Could not save the annotations" in messages[0][1]


def test_a_damaged_sidecar_is_reported_and_set_aside(tmp_path: Path) -> None:
    (tmp_path / f"{KEY}.json").write_text("{not json")
    messages: list[tuple[str, str]] = []
    reads = Reads(SidecarStore(tmp_path), report=lambda text, level="info": messages.append((level, text)))
    assert reads.annotations(doc()) == ()
    assert messages[0][0] == "warning" and "could not be read" in messages[0][1]
    assert any(p.name.startswith(f"{KEY}.json.damaged-") for p in tmp_path.iterdir())
