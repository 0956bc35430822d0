"""The analysis controller: one inference thread, a handle per job, cancel, model switches, quitting."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QTimer

from tests.conftest import FakePredictor
from tests.tiny_bundle import xray_from_array
from viewer.controller import AnalysisController, JobQueue, _Job
from viewer.document import ImageDocument


def image(level: int = 100, size: int = 40):
    return xray_from_array(np.full((size, size), level, np.uint8))


def doc_for(img, doc_id: int = 7, path: str = "/nowhere/x.png") -> ImageDocument:
    from inference.image import Window

    w = Window(128, 256)
    return ImageDocument(doc_id, Path(path), img.meta, img.shape, np.zeros((4, 4), np.uint8), w, w, image=img)


@pytest.fixture
def controller(qtbot):
    made: list[AnalysisController] = []

    def start(factory, load_image=None) -> AnalysisController:
        c = AnalysisController(factory, load_image, name="test-inference")
        c.start()
        made.append(c)
        return c

    yield start
    for c in made:
        assert c.shutdown(timeout=30)


def loaded(controller, qtbot, factory=None, path="m") -> AnalysisController:
    c = controller(factory or (lambda p: FakePredictor(p)))
    with qtbot.waitSignal(c.load_model(path).returned, timeout=15000):
        pass
    return c


def test_job_queue_take_and_prioritise():
    def job(kind, doc):
        return _Job(handle=None, fn=lambda ctx: None, kind=kind, doc_id=doc)  # type: ignore[arg-type]

    q = JobQueue()
    for doc in (1, 2, 3, 2):
        q.put(job("analyse", doc))
    q.put(job("load", None), front=True)
    q.put(job("setup", None), front=True)
    q.put(job("analyse", 9), front=True)  # "front" still goes behind a pending model load and its set-up
    taken = q.take_where(lambda j: j.doc_id == 2)  # takes what matches (the old cancel_where kept it)
    assert [j.doc_id for j in taken] == [2, 2]
    assert [j.doc_id for j in list(q._jobs)] == [None, None, 9, 1, 3]
    q.prioritise(3)  # the image on screen: first, but after the load and the set-up
    assert [(j.kind, j.doc_id) for j in list(q._jobs)][:3] == [("load", None), ("setup", None), ("analyse", 3)]
    assert q.pop().kind == "load" and q.pop().kind == "setup" and q.pop().doc_id == 3


def test_handles_return_results_from_the_one_inference_thread(controller, qtbot):
    made = []
    c = controller(lambda p: made.append(FakePredictor(p)) or made[-1])
    with qtbot.waitSignal(c.load_model("m").returned, timeout=15000) as ready:
        pass
    info, device = ready.args[0]
    assert info.class_names == ["COVID-19", "Normal", "Pneumonia"] and device == "CPU"
    handle = c.analyse(doc_for(image(250)))
    with qtbot.waitSignal(handle.finished, timeout=15000):
        pass
    assert handle.state == "returned" and handle.result.prediction.label == "Pneumonia"
    assert handle.result.explanation is None and handle.result.heat is None
    # The overlay of the image on screen: one job, one predict_and_explain, a heat map at display size.
    big = doc_for(image(100, size=900), doc_id=8)
    handle = c.analyse(big, explain=(1, "gradcam++"), heat_side=256)
    with qtbot.waitSignal(handle.returned, timeout=15000) as got:
        pass
    result = got.args[0]
    assert result.explanation.class_index == 1 and result.explanation.method == "gradcam++"
    assert result.heat.shape == (256, 256) and result.heat.dtype == np.float32
    assert "heatmap_original" not in vars(result.explanation)  # no full-resolution map was built
    assert made[0].calls[-1] == "predict_and_explain:1:gradcam++"
    assert made[0].calls.count("explain:1:gradcam++") == 0 and made[0].calls.count("predict") == 1
    # The network ran in the controller's one thread (TensorFlow keeps per-thread state), never in this one.
    assert made[0].threads == {"test-inference"} != {threading.current_thread().name}


def test_errors_reach_the_handle_and_never_kill_the_thread(controller, qtbot):
    class Broken(FakePredictor):
        def predict(self, image):
            raise RuntimeError("the network exploded")

    c = controller(lambda path: Broken(path))
    with qtbot.waitSignal(c.load_model("/x/missing").errored, timeout=15000) as failed:
        pass
    assert "not found" in str(failed.args[0])
    with qtbot.waitSignal(c.load_model("ok").returned, timeout=15000):
        pass
    with qtbot.waitSignal(c.analyse(doc_for(image())).errored, timeout=15000) as job_failed:
        pass
    assert str(job_failed.args[0]) == "the network exploded"
    with qtbot.waitSignal(c.submit(lambda ctx: 1 / 0).errored, timeout=15000) as call_failed:
        pass
    assert isinstance(call_failed.args[0], ZeroDivisionError)
    with qtbot.waitSignal(c.submit(lambda ctx: 42).returned, timeout=15000) as fine:
        pass
    assert fine.args == [42]


def test_evicted_pixels_are_read_again_in_the_inference_thread(controller, qtbot):
    reads = []

    def load_image(path):
        reads.append((path, threading.current_thread().name))
        return image(250)

    c = controller(lambda p: FakePredictor(p), load_image)
    with qtbot.waitSignal(c.load_model("m").returned, timeout=15000):
        pass
    doc = doc_for(image(250), path="/films/a.png")
    doc.image = None  # evicted
    with qtbot.waitSignal(c.analyse(doc).returned, timeout=15000) as got:
        pass
    assert got.args[0].prediction.label == "Pneumonia"
    assert reads == [("/films/a.png", "test-inference")]
    assert doc.image is None  # read for the job only: the cache decides what stays


def test_cancel_a_waiting_job_and_a_running_long_job_between_files(controller, qtbot):
    c = loaded(controller, qtbot)
    gate = threading.Event()
    done_files: list[int] = []

    def long_job(ctx):
        gate.wait(5)
        for i in range(100):
            ctx.check()  # between two files
            done_files.append(i)
            ctx.progress(i + 1, 100)
            time.sleep(0.01)
        return "all"

    running = c.submit(long_job, kind="export")
    qtbot.waitUntil(lambda: running.state == "running", timeout=15000)
    waiting = c.analyse(doc_for(image()))
    progress: list[tuple[int, int]] = []
    running.progress.connect(lambda d, t: progress.append((d, t)))
    with qtbot.waitSignal(waiting.cancelled, timeout=15000):
        waiting.cancel()  # still in the queue: leaves it at once
    assert waiting.state == "cancelled" and c.pending() == 0
    gate.set()
    qtbot.waitUntil(lambda: len(progress) >= 3, timeout=15000)
    with qtbot.waitSignal(running.cancelled, timeout=15000):
        running.cancel()
    assert 3 <= len(done_files) < 100  # stopped between two files
    assert progress[0] == (1, 100)


def test_model_switch_cancels_old_analyses_but_keeps_exports(controller, qtbot):
    c = loaded(controller, qtbot, factory=lambda p: FakePredictor(p, delay=0.2), path="first")
    gate = threading.Event()
    blocker = c.submit(lambda ctx: gate.wait(10), kind="export")  # keeps the thread busy meanwhile
    old = [c.analyse(doc_for(image(), doc_id=i)) for i in range(3)]
    export = c.submit(lambda ctx: ctx.predictor.path, kind="export")
    outcomes: list[str] = []
    for h in old + [export]:
        h.cancelled.connect(lambda h=h: outcomes.append(f"cancelled {h.kind}"))
        h.returned.connect(lambda _v, h=h: outcomes.append(f"returned {h.kind}"))
    new_model = c.load_model("second")
    gate.set()
    with qtbot.waitSignal(export.returned, timeout=10000) as got:
        pass
    assert got.args == ["second"]  # the export ran, with the new model
    assert new_model.state == "returned" and blocker.state == "returned"
    assert outcomes.count("cancelled analyse") == 3 and "returned export" in outcomes  # nobody left waiting


def test_a_failed_model_cancels_its_analyses_quietly(controller, qtbot):
    gate = threading.Event()

    def factory(path):
        gate.wait(10)  # the analyses below are queued while the model loads
        return FakePredictor(path)

    c = controller(factory)
    load = c.load_model("/x/missing")
    jobs = [c.analyse(doc_for(image(), doc_id=i)) for i in range(5)]
    gate.set()
    with qtbot.waitSignal(load.errored, timeout=15000):
        pass
    qtbot.waitUntil(lambda: all(h.state == "cancelled" for h in jobs), timeout=15000)


def test_shutdown_while_a_job_runs_never_hangs(qtbot):
    c = AnalysisController(lambda p: FakePredictor(p), name="test-inference")
    c.start()
    started = threading.Event()
    release = threading.Event()

    def stuck(ctx):  # a model load or a network call that cannot be interrupted
        started.set()
        release.wait(20)

    running = c.submit(stuck, kind="load")
    queued = c.submit(lambda ctx: 1, kind="export")
    assert started.wait(5)
    t0 = time.monotonic()
    assert c.shutdown(timeout=0.5) is False  # could not end in time, but returned
    assert time.monotonic() - t0 < 2.0
    assert running.is_cancelled() and queued.state == "cancelled"
    qtbot.waitUntil(lambda: queued.state == "cancelled", timeout=1000)
    late = c.submit(lambda ctx: 1)  # after shutdown: cancelled, never run
    qtbot.waitUntil(lambda: late.state == "cancelled", timeout=1000)
    release.set()


def test_event_loop_keeps_running_while_inference_runs(controller, qtbot):
    """A QTimer on the GUI thread keeps ticking while a slow predictor is inside the network."""
    made = []
    c = controller(lambda path: made.append(FakePredictor(path, delay=0.5)) or made[-1])
    with qtbot.waitSignal(c.load_model("m").returned, timeout=15000):
        pass
    busy_ticks: list[int] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: made[0].busy.is_set() and busy_ticks.append(1))
    timer.start()
    with qtbot.waitSignal(c.analyse(doc_for(image())).returned, timeout=15000):
        pass
    timer.stop()
    # Ticks counted only while the predictor was busy: a GUI thread running the network would have none.
    assert len(busy_ticks) >= 2
