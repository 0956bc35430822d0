"""Background workers: the job queue, worker signals, a responsive interface, model switching."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PySide6.QtCore import QTimer

from tests.conftest import FakePredictor
from tests.tiny_bundle import xray_from_array
from viewer.workers import ImageLoader, InferenceWorker, Job, JobQueue


def test_job_queue_cancel_and_prioritise():
    q = JobQueue()
    for doc in (1, 2, 3, 2):
        q.put(Job(kind="predict", generation=1, doc_id=doc))
    q.put(Job(kind="load", generation=2, path="m"), front=True)
    assert q.cancel_doc(2) == 2
    assert [j.doc_id for j in list(q._jobs)] == [None, 1, 3]
    q.prioritise(3)
    assert q.kinds() == ["load", "predict", "predict"]
    assert [j.doc_id for j in list(q._jobs)] == [None, 3, 1]  # a pending load stays first
    assert q.pop().kind == "load"
    assert q.pop().doc_id == 3
    q.clear()
    assert len(q) == 0 and q.pop() is None


@pytest.fixture
def worker(qtbot):
    made = []

    def start(factory):
        w = InferenceWorker(factory, name="test-inference")
        w.start()
        made.append(w)
        return w

    yield start
    for w in made:
        w.queue.clear()
        assert w.stop(timeout=30)


def image(level: int = 100):
    return xray_from_array(np.full((40, 40), level, np.uint8))


def test_worker_signals_and_thread(worker, qtbot):
    made = []

    def factory(path):
        made.append(FakePredictor(path))
        return made[-1]

    w = worker(factory)
    with qtbot.waitSignal(w.model_ready, timeout=5000) as ready:
        w.submit(Job(kind="load", generation=1, path="m"))
    generation, info, device = ready.args
    assert generation == 1 and info.class_names == ["COVID-19", "Normal", "Pneumonia"] and device == "CPU"
    with qtbot.waitSignal(w.predicted, timeout=5000) as predicted:
        w.submit(Job(kind="predict", generation=1, doc_id=7, image=image(250)))
    assert predicted.args[:2] == [1, 7]
    assert predicted.args[2].label == "Pneumonia"
    with qtbot.waitSignal(w.explained, timeout=5000) as explained:
        w.submit(Job(kind="explain", generation=1, doc_id=7, image=image(), class_index=1, method="gradcam++"))
    assert explained.args[2].class_index == 1 and explained.args[2].method == "gradcam++"
    # The network ran in the worker's one thread (TensorFlow keeps per-thread state), never in this one.
    assert made[0].threads == {"test-inference"} != {threading.current_thread().name}


def test_failures_are_signals_not_crashes(worker, qtbot):
    class Broken(FakePredictor):
        def predict(self, image):
            raise RuntimeError("the network exploded")

    w = worker(lambda path: Broken(path))
    with qtbot.waitSignal(w.model_failed, timeout=5000) as failed:
        w.submit(Job(kind="load", generation=1, path="/x/missing"))
    assert "not found" in failed.args[1]
    with qtbot.waitSignal(w.model_ready, timeout=5000):
        w.submit(Job(kind="load", generation=2, path="ok"))
    with qtbot.waitSignal(w.job_failed, timeout=5000) as job_failed:
        w.submit(Job(kind="predict", generation=2, doc_id=3, image=image()))
    assert job_failed.args == [2, 3, "predict", "the network exploded"]
    with qtbot.waitSignal(w.call_failed, timeout=5000) as call_failed:
        w.submit(Job(kind="call", generation=2, fn=lambda p: 1 / 0, token=9))
    assert call_failed.args[0] == 9


def test_jobs_of_an_old_model_are_dropped(worker, qtbot):
    w = worker(lambda path: FakePredictor(path))
    with qtbot.waitSignal(w.model_ready, timeout=5000):
        w.submit(Job(kind="load", generation=5, path="m"))
    seen = []
    w.predicted.connect(lambda generation, doc, prediction: seen.append(generation))
    with qtbot.waitSignal(w.idle, timeout=5000):
        w.submit(Job(kind="predict", generation=4, doc_id=1, image=image()))
        w.submit(Job(kind="predict", generation=5, doc_id=2, image=image()))
    qtbot.waitUntil(lambda: len(seen) >= 1, timeout=5000)
    assert seen == [5]  # only the current generation's job produced a result


def test_event_loop_keeps_running_while_inference_runs(worker, qtbot):
    """A QTimer on the GUI thread keeps ticking while a slow predictor is inside the network."""
    made = []
    w = worker(lambda path: made.append(FakePredictor(path, delay=0.5)) or made[-1])
    with qtbot.waitSignal(w.model_ready, timeout=5000):
        w.submit(Job(kind="load", generation=1, path="m"))
    busy_ticks: list[int] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: made[0].busy.is_set() and busy_ticks.append(1))
    timer.start()
    with qtbot.waitSignal(w.predicted, timeout=5000):
        w.submit(Job(kind="predict", generation=1, doc_id=1, image=image()))
    timer.stop()
    # Ticks counted only while the predictor was busy: a GUI thread running the network would have none.
    assert len(busy_ticks) >= 2


def test_window_stays_responsive_while_predicting(make_window, qtbot, image_files, fake_factory):
    fake_factory.delay = 0.3
    window = make_window()
    ticks: list[int] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: fake_factory.made[-1].busy.is_set() and ticks.append(1))
    timer.start()
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(p) for p in image_files.values()])
    qtbot.waitUntil(lambda: all(d.prediction is not None for d in window.docs.values()), timeout=10000)
    timer.stop()
    assert len(ticks) >= 2  # the loop ticked while the predictor was busy (three 0.3 s predictions)
    # Meanwhile the interface reacted: the first image was on screen before its prediction came.
    assert window.results.headline.text() == window.current.prediction.label


def test_image_loader_reports_each_file(qtbot, tmp_path, image_files):
    from tests.bad_inputs import make_bad_inputs

    bad = make_bad_inputs(tmp_path / "bad")
    loader = ImageLoader(name="test-loader")
    loader.start()
    loaded, failed = [], []
    loader.loaded.connect(lambda r, p, img, prep: loaded.append((p, prep.thumbnail.dtype, max(prep.thumbnail.shape))))
    loader.failed.connect(lambda r, p, msg: failed.append(msg))
    try:
        with qtbot.waitSignal(loader.batch_finished, timeout=10000) as done:
            loader.load_paths(1, [str(image_files["dark"].parent), str(bad["empty"])])
        assert done.args == [1, 3, 1]
        assert all(dtype == np.uint8 and side <= 160 for _, dtype, side in loaded)
        assert "empty" in failed[0].lower()
    finally:
        assert loader.stop(timeout=30)


def test_model_switch_refreshes_predictions(make_window, qtbot, image_files, fake_factory):
    window = make_window(model_dir="first")
    with qtbot.waitSignal(window.open_finished, timeout=10000):
        window.open_paths([str(image_files["dark"]), str(image_files["bright"])])
    qtbot.waitUntil(lambda: all(d.prediction is not None for d in window.docs.values()), timeout=10000)
    assert all(d.prediction.model_name == "first" for d in window.docs.values())
    with qtbot.waitSignal(window.model_changed, timeout=10000):
        window.activate_model("second")
    qtbot.waitUntil(
        lambda: all(d.prediction is not None and d.prediction.model_name == "second" for d in window.docs.values()),
        timeout=10000,
    )
    assert "second 1.0.0" in window.model_label.text()
    assert window.settings.active_model == "second"
    assert len(fake_factory.made) == 2
