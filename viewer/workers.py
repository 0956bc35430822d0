"""Background work: workers in their own threads, talking to the GUI only through Qt signals.

Two long-lived workers, each with its own thread (the napari/superqt pattern, without the
dependency; see :class:`ThreadedWorker` for why the threads are Python threads):

* :class:`ImageLoader` reads files, so dropping fifty DICOMs never freezes the window.
* :class:`InferenceWorker` imports TensorFlow, loads the model and then serves a queue of
  jobs (predict, explain, any callable that needs the predictor such as an export). The
  GUI thread never runs the network.

The queue (:class:`JobQueue`) is plain Python with a lock, so the GUI can cancel the jobs of a
closed image or move the image on screen to the front without waiting for the worker. Every
job carries the *generation* of the model it was queued for; after a model switch, results of
the old generation are dropped on both sides.
"""

from __future__ import annotations

import logging
import queue
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot

from inference.image import ImageLoadError, XRayImage
from viewer.qt_compat import emit

__all__ = [
    "Job",
    "JobQueue",
    "ImageLoader",
    "InferenceWorker",
    "ThreadedWorker",
    "TaskHandle",
    "run_in_thread",
]

log = logging.getLogger(__name__)


class ThreadedWorker(QObject):
    """A QObject on the GUI thread that owns one Python thread working through a task queue.

    Its signals are emitted from that thread and reach GUI receivers queued, in order.

    Why a ``threading.Thread`` and not a QThread with an event loop: with PySide6 6.12 and
    TensorFlow 2.21, TensorFlow work spread over several slot calls of one QThread crashed
    (segmentation faults, "take_gil: PyMUTEX_LOCK failed"), reproducibly. A Python thread
    keeps one interpreter thread state for its whole life, which TensorFlow relies on.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def is_running(self) -> bool:
        return self._thread.is_alive()

    def post(self, task: Callable[[], None]) -> None:
        """Run ``task()`` in the worker's thread after the tasks already posted."""
        self._tasks.put(task)

    def stop(self, timeout: float | None = None) -> bool:
        """End after the tasks already posted; True once the thread has ended (``timeout`` None: wait for it)."""
        self._tasks.put(None)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            try:
                task()
            except Exception:  # a task reports its own failures; this only keeps the thread alive
                log.exception("unexpected error in %s", self.name)


class TaskHandle:
    """What :func:`run_in_thread` returns: wait for the task, ask whether it still runs."""

    def __init__(self, thread: threading.Thread, relay: QObject) -> None:
        self.thread = thread
        self.relay = relay

    def is_running(self) -> bool:
        return self.thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)
        return not self.thread.is_alive()


class _Relay(QObject):
    """Lives on the GUI thread: the worker emits, the callbacks run here (queued)."""

    returned = Signal(object)
    errored = Signal(object)

    def __init__(self, on_returned: Callable[[Any], None], on_errored: Callable[[BaseException], None], owner: QObject):
        super().__init__(owner)
        self._on_returned = on_returned
        self._on_errored = on_errored
        self.returned.connect(self._returned)
        self.errored.connect(self._errored)

    @Slot(object)
    def _returned(self, value: Any) -> None:
        self._on_returned(value)
        self.deleteLater()

    @Slot(object)
    def _errored(self, exc: Any) -> None:
        self._on_errored(exc)
        self.deleteLater()


def run_in_thread(
    fn: Callable[[], Any],
    on_returned: Callable[[Any], None],
    on_errored: Callable[[BaseException], None],
    owner: QObject,
    name: str = "cxr-task",
) -> TaskHandle:
    """Run ``fn()`` in a new thread; the callbacks are called on ``owner``'s (the GUI) thread."""
    relay = _Relay(on_returned, on_errored, owner)

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:  # reported to the GUI, which decides what to tell the user
            log.debug("background call failed:\n%s", traceback.format_exc())
            emit(relay.errored, exc)
        else:
            emit(relay.returned, result)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return TaskHandle(thread, relay)


# ---------------------------------------------------------------------------------------------
# Image loading


class ImageLoader(ThreadedWorker):
    """Loads files (expanding folders) and reports each one; one bad file never stops the rest."""

    batch_started = Signal(int, int)  # request id, number of files found
    loaded = Signal(int, str, object, object)  # request id, path, XRayImage, viewer.render.DisplayPrep
    failed = Signal(int, str, str)  # request id, path, message for the user
    batch_finished = Signal(int, int, int)  # request id, files opened, files that failed

    def __init__(self, load: Callable[[str], XRayImage] | None = None, name: str = "cxr-image-loader") -> None:
        super().__init__(name)
        self._load = load
        self._cancelled: set[int] = set()
        self._lock = threading.Lock()

    def cancel(self, request_id: int) -> None:
        with self._lock:
            self._cancelled.add(request_id)

    def _is_cancelled(self, request_id: int) -> bool:
        with self._lock:
            return request_id in self._cancelled

    def load_paths(self, request_id: int, paths: list) -> None:
        """Queue a request (called from the GUI thread); results arrive as signals."""
        self.post(lambda: self.load_now(request_id, list(paths)))

    def load_now(self, request_id: int, paths: list) -> None:
        """Load in the calling thread (the worker's, or a test's)."""
        from viewer.files import expand_paths
        from viewer.render import prepare_display

        load = self._load
        if load is None:
            from inference.loading import load_image as load
        try:
            files = expand_paths(paths)
        except Exception as exc:  # a folder vanished or is unreadable mid-scan
            emit(self.failed, request_id, ", ".join(map(str, paths)), f"Cannot read the folder: {exc}")
            emit(self.batch_finished, request_id, 0, 1)
            return
        emit(self.batch_started, request_id, len(files))
        ok = bad = 0
        for path in files:
            if self._is_cancelled(request_id):
                break
            try:
                image = load(str(path))
                prep = prepare_display(image)
            except ImageLoadError as exc:
                bad += 1
                emit(self.failed, request_id, str(path), str(exc))
                continue
            except Exception as exc:  # the loader promises ImageLoadError only; never let a bug kill the thread
                bad += 1
                log.exception("unexpected error loading %s", path)
                emit(self.failed, request_id, str(path), f"Cannot open {Path(path).name}: {exc}")
                continue
            ok += 1
            emit(self.loaded, request_id, str(path), image, prep)
        emit(self.batch_finished, request_id, ok, bad)


# ---------------------------------------------------------------------------------------------
# Inference


@dataclass
class Job:
    kind: str  # "load", "predict", "explain" or "call"
    generation: int
    doc_id: int | None = None
    image: XRayImage | None = None
    class_index: int | None = None
    method: str = "gradcam"
    path: str = ""  # model folder, for "load"
    fn: Callable[[Any], Any] | None = None  # for "call": fn(predictor) -> result
    token: int = 0  # for "call": echoed back with the result
    extra: dict[str, Any] = field(default_factory=dict)


class JobQueue:
    """A thread-safe FIFO of :class:`Job` with cancel-by-image and move-to-front."""

    def __init__(self) -> None:
        self._jobs: deque[Job] = deque()
        self._lock = threading.Lock()

    def put(self, job: Job, front: bool = False) -> None:
        with self._lock:
            if front:
                self._jobs.appendleft(job)
            else:
                self._jobs.append(job)

    def pop(self) -> Job | None:
        with self._lock:
            return self._jobs.popleft() if self._jobs else None

    def cancel_doc(self, doc_id: int) -> int:
        """Drop the waiting jobs of one image; returns how many were dropped."""
        with self._lock:
            before = len(self._jobs)
            self._jobs = deque(j for j in self._jobs if j.doc_id != doc_id)
            return before - len(self._jobs)

    def cancel_where(self, keep: Callable[[Job], bool]) -> int:
        with self._lock:
            before = len(self._jobs)
            self._jobs = deque(j for j in self._jobs if keep(j))
            return before - len(self._jobs)

    def prioritise(self, doc_id: int) -> None:
        """Move the jobs of ``doc_id`` to the front (the image on screen goes first)."""
        with self._lock:
            mine = [j for j in self._jobs if j.doc_id == doc_id]
            if mine:
                rest = [j for j in self._jobs if j.doc_id != doc_id]
                # A pending model load always stays first: nothing can run before it.
                loads = [j for j in rest if j.kind == "load"]
                rest = [j for j in rest if j.kind != "load"]
                self._jobs = deque(loads + mine + rest)

    def clear(self) -> None:
        with self._lock:
            self._jobs.clear()

    def kinds(self) -> list[str]:
        with self._lock:
            return [j.kind for j in self._jobs]

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)


def default_predictor_factory(path: str) -> Any:
    from inference.predictor import Predictor

    return Predictor(path)


class InferenceWorker(ThreadedWorker):
    """Owns the predictor; runs one job per event so a quit or a new job is never stuck behind a long queue."""

    model_loading = Signal(int, str)  # generation, model folder
    model_ready = Signal(int, object, str)  # generation, BundleInfo, device in words
    model_failed = Signal(int, str)  # generation, message
    predicted = Signal(int, int, object)  # generation, doc id, Prediction
    explained = Signal(int, int, object)  # generation, doc id, Explanation
    job_failed = Signal(int, int, str, str)  # generation, doc id (-1: none), job kind, message
    call_done = Signal(int, object)  # token, result
    call_failed = Signal(int, str)  # token, message
    job_started = Signal(str, int)  # kind, doc id (-1: none)
    idle = Signal()  # the queue ran empty
    colormaps_ready = Signal()

    def __init__(self, predictor_factory: Callable[[str], Any] | None = None, name: str = "cxr-inference") -> None:
        super().__init__(name)
        self.queue = JobQueue()
        self._factory = predictor_factory or default_predictor_factory
        self._predictor: Any = None
        self._generation = 0

    # -- called from the GUI thread ------------------------------------------------------------
    def submit(self, job: Job, front: bool = False) -> None:
        self.queue.put(job, front=front)
        self.post(self._run_one)

    def submit_many(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            self.queue.put(job)
        self.post(self._run_one)

    @property
    def predictor(self) -> Any:
        """The loaded predictor (read-only use from other threads: ``info`` and ``device``)."""
        return self._predictor

    # -- the worker's thread --------------------------------------------------------------------
    def warm_colormaps(self) -> None:
        """Sample the overlay colour maps and import the exporters here, so the GUI thread never pays
        for matplotlib's import (both are cached; the GUI uses them once results arrive)."""
        try:
            import inference.export.facts  # noqa: F401 - imports matplotlib, PIL and pydicom once
            from inference.overlay import COLORMAPS, colormap_lut

            for name in COLORMAPS:
                colormap_lut(name)
        except Exception:  # cosmetic; the overlay still works, the colour bar draws later
            log.exception("colour maps could not be prepared")
        emit(self.colormaps_ready)

    def _run_one(self) -> None:
        job = self.queue.pop()
        if job is None:
            return
        doc = -1 if job.doc_id is None else job.doc_id
        emit(self.job_started, job.kind, doc)
        try:
            self._run(job)
        except Exception as exc:  # a failed job is reported, never fatal to the thread
            log.debug("job %s failed:\n%s", job.kind, traceback.format_exc())
            message = str(exc) or type(exc).__name__
            if job.kind == "call":
                emit(self.call_failed, job.token, message)
            elif job.kind == "load":
                self._predictor = None
                # The jobs queued for this model cannot run; the GUI shows "no model" instead.
                self.queue.cancel_where(lambda j: j.kind in ("load", "call") or j.generation != job.generation)
                emit(self.model_failed, job.generation, message)
            else:
                emit(self.job_failed, job.generation, doc, job.kind, message)
        if len(self.queue):
            self.post(self._run_one)  # one job per task: a stop() posted meanwhile is not stuck behind the queue
        else:
            emit(self.idle)

    def _run(self, job: Job) -> None:
        if job.kind == "load":
            self._generation = job.generation
            self._predictor = None
            emit(self.model_loading, job.generation, job.path)
            predictor = self._factory(job.path)
            self._predictor = predictor
            emit(self.model_ready, job.generation, predictor.info, str(predictor.device))
            return
        if job.kind == "call":
            if job.fn is None:
                raise ValueError("nothing to run")
            emit(self.call_done, job.token, job.fn(self._predictor))
            return
        if job.generation != self._generation:
            return  # queued for a model that has since been replaced
        if self._predictor is None:
            raise RuntimeError("No model is loaded.")
        if job.kind == "predict":
            emit(self.predicted, job.generation, job.doc_id, self._predictor.predict(job.image))
        elif job.kind == "explain":
            result = self._predictor.explain(job.image, class_index=job.class_index, method=job.method)
            emit(self.explained, job.generation, job.doc_id, result)
        else:
            raise ValueError(f"unknown job kind {job.kind!r}")
