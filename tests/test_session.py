"""The Qt-free session and pixel cache (no display, no Qt import), and eviction seen from the window."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference.image import Window
from tests.tiny_bundle import xray_from_array
from viewer.document import ImageDocument
from viewer.pixel_cache import PixelCache
from viewer.session import OverlaySettings, Session


def make_doc(session: Session, name: str = "a.png", side: int = 32, loaded: bool = True) -> ImageDocument:
    img = xray_from_array(np.full((side, side), 100, np.uint16), path=f"/films/{name}", bits_stored=12)
    w = Window(2048, 4096)
    doc = ImageDocument(
        session.new_doc_id(), Path(f"/films/{name}"), img.meta, img.shape, np.zeros((4, 4), np.uint8), w, w
    )
    if loaded:
        doc.image = img
    return doc


class Recorder:
    def __init__(self, session: Session) -> None:
        self.seen: list[tuple] = []
        for name in vars(session.events):
            getattr(session.events, name).connect(lambda *args, n=name: self.seen.append((n, *args)))

    def names(self) -> list[str]:
        return [s[0] for s in self.seen]


def fake_prediction(class_index: int = 1):
    class P:
        pass

    p = P()
    p.class_index, p.label = class_index, "Normal"
    return p


def test_session_module_imports_no_qt():
    code = (
        "import sys, viewer.session, viewer.pixel_cache, viewer.events\n"
        "print(any(m.startswith('PySide6') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_documents_current_and_order():
    session = Session()
    rec = Recorder(session)
    a, b, c = (make_doc(session, n) for n in ("a.png", "b.png", "c.png"))
    session.add_documents([a, b, c])
    assert rec.names()[:2] == ["documents_added", "current_changed"]  # one event for the batch
    assert session.current is a and session.document_ids() == [a.doc_id, b.doc_id, c.doc_id]
    assert session.find_by_path("/films/b.png") is b
    session.step(1)
    session.step(1)
    session.step(1)  # nothing past the end
    assert session.current is c
    assert session.neighbours(1) == [b.doc_id, c.doc_id]
    assert [d.name for d in session.analysis_order()] == ["c.png", "a.png", "b.png"]
    session.remove_document(c.doc_id)  # the current one: its neighbour takes its place
    assert session.current is b and session.find_by_path("/films/c.png") is None
    session.clear()
    assert session.current is None and len(session) == 0 and rec.seen[-1] == ("current_changed", None)


def test_overlay_state_has_one_owner_and_events_say_what_changed():
    session = Session(OverlaySettings(opacity=0.3, colormap="inferno"))
    rec = Recorder(session)
    session.set_overlay_visible(True)
    session.set_overlay_visible(True)  # no change, no event
    session.set_overlay_opacity(1.7)  # clamped
    session.set_overlay_class(2)
    session.set_overlay_method("gradcam++")
    changes = [s[2] for s in rec.seen if s[0] == "overlay_changed"]
    assert changes == ["visible", "opacity", "class_index", "method"]
    assert session.overlay == OverlaySettings(True, 2, "gradcam++", 1.0, "inferno")
    with pytest.raises(ValueError):
        session.set_overlay_method("lime")
    # The class to explain comes from the session: the chosen one, else each image's predicted one.
    doc = make_doc(session)
    session.add_documents([doc])
    assert session.overlay_target(doc) is None  # no prediction yet
    doc.prediction = fake_prediction(1)
    assert session.overlay_target(doc) == (2, "gradcam++")
    session.set_overlay_class(None)
    assert session.overlay_target(doc) == (1, "gradcam++")


def test_results_heat_and_a_model_switch():
    session = Session(OverlaySettings(visible=True))
    a, b = make_doc(session, "a.png"), make_doc(session, "b.png")
    session.add_documents([a, b])
    session.set_model_loading("m1")
    session.set_prediction(a.doc_id, fake_prediction(1))

    class E:
        class_index, method, class_name = 1, "gradcam", "Normal"

    heat = np.zeros((8, 8), np.float32)
    session.set_explanation(a.doc_id, E(), heat)
    assert session.overlay_heat is not None and session.overlay_heat.target == (1, "gradcam")
    session.set_overlay_class(0)  # another class: the shown heat map no longer applies
    assert session.overlay_heat is None
    session.set_overlay_class(None)
    session.set_explanation(a.doc_id, E(), heat)
    session.set_current(b.doc_id)  # only the image on screen keeps a display heat map
    assert session.overlay_heat is None
    rec = Recorder(session)
    session.set_model_loading("m2")  # every result of the old model goes
    assert a.prediction is None and not a.explanations and session.model.state == "loading"
    assert rec.names().count("result_changed") == 2
    session.set_prediction_failed(b.doc_id, "boom")
    assert b.error == "boom" and ("message", "b.png: the analysis failed: boom", "error") in rec.seen


def test_pixel_cache_keeps_the_pinned_and_the_most_recent():
    session = Session()
    docs = [make_doc(session, f"{i}.png", loaded=False) for i in range(6)]
    cache = PixelCache(capacity=3)
    for doc in docs:
        img = xray_from_array(np.zeros((32, 32), np.uint16))
        cache.put(doc, img, None, pinned=[docs[0].doc_id])
    assert cache.resident() == [docs[0].doc_id, docs[4].doc_id, docs[5].doc_id]
    assert [d.loaded for d in docs] == [True, False, False, False, True, True]
    assert docs[1].thumbnail is not None and docs[1].window is not None  # what stays for every document
    cache.touch(docs[4])
    cache.put(docs[2], xray_from_array(np.zeros((32, 32), np.uint16)), None)  # docs[0] is no longer pinned
    assert cache.resident() == [docs[5].doc_id, docs[4].doc_id, docs[2].doc_id] and not docs[0].loaded
    by_bytes = PixelCache(capacity=10, max_bytes=3 * 32 * 32 * 2)
    for doc in docs:
        by_bytes.put(doc, xray_from_array(np.zeros((32, 32), np.uint16)), None)
    assert len(by_bytes) == 3 and by_bytes.bytes() <= by_bytes.max_bytes
    cache.forget(docs[2])
    assert not docs[2].loaded and docs[2].doc_id not in cache


def test_window_evicts_pixels_and_reloads_them_transparently(make_window, qtbot, tmp_path):
    import cv2

    folder = tmp_path / "films"
    folder.mkdir()
    for i in range(8):
        cv2.imwrite(
            str(folder / f"film{i}.png"), (np.arange(64 * 64).reshape(64, 64) % 50 + 20 * i + 10).astype(np.uint16)
        )
    window = make_window()
    window.opener.cache.capacity = 2
    with qtbot.waitSignal(window.open_finished, timeout=20000):
        window.open_paths([str(folder)])
    session = window.session
    qtbot.waitUntil(lambda: all(d.prediction is not None for d in session.documents()), timeout=20000)
    assert len(session) == 8
    resident = [d for d in session.documents() if d.loaded]
    assert len(resident) <= 3 and session.current.loaded  # the capacity, plus the pinned one on screen
    assert all(d.thumbnail is not None and d.prediction is not None for d in session.documents())
    last = session.documents()[4]
    assert not last.loaded
    window.show_document(last.doc_id)
    assert window.canvas.image is None and "Loading film4.png" in window.canvas.placeholder
    qtbot.waitUntil(lambda: window.canvas.image is not None, timeout=10000)
    assert last.loaded and window.canvas.image is last.image
    assert int(last.image.pixels[0, 0]) == 90  # the right film came back
    assert len([d for d in session.documents() if d.loaded]) <= 3


def test_byte_budget_lets_one_film_through_and_blocks_beyond_the_limit():
    from viewer.workers import ByteBudget

    budget = ByteBudget(100)
    assert budget.acquire(500, timeout=0.01)  # alone, a film larger than the budget passes
    assert not budget.acquire(1, timeout=0.01)
    budget.release(500)
    assert budget.acquire(60, timeout=0.01) and not budget.acquire(60, timeout=0.01)
    assert budget.acquire(40, timeout=0.01) and budget.used == 100


def test_opening_waits_for_predictions_instead_of_holding_every_film(make_window, qtbot, tmp_path, fake_factory):
    """Back-pressure: decoded films wait for their prediction within the budget, each is decoded once."""
    import cv2

    from viewer.workers import ByteBudget

    folder = tmp_path / "films"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"film{i}.png"), (np.arange(4096).reshape(64, 64) % 90 + i).astype(np.uint16))
    fake_factory.delay = 0.1
    loads: list[str] = []

    def load_image(path):
        from inference.loading import load_image as real

        loads.append(Path(path).name)
        return real(path)

    window = make_window(load_image=load_image)
    window.opener.loader.set_budget(ByteBudget(2 * 64 * 64 * 2))  # two films
    window.opener.cache.capacity = 1
    held: list[int] = []
    window.session.events.result_changed.connect(lambda _d: held.append(len(window.opener._awaiting)))
    with qtbot.waitSignal(window.open_finished, timeout=20000):
        window.open_paths([str(folder)])
    qtbot.waitUntil(lambda: all(d.prediction is not None for d in window.session.documents()), timeout=20000)
    assert len(window.session) == 6 and max(held) <= 2
    assert sorted(loads) == sorted(f"film{i}.png" for i in range(6))  # decoded once: predicted from memory
