"""The analysis controller: the one inference thread, a queue of jobs, and a handle per job.

Everything that needs TensorFlow runs in one long-lived Python thread (see
:class:`viewer.workers.ThreadedWorker` for why it is not a QThread). Callers get a
:class:`JobHandle` for each job, in the spirit of superqt's workers: connect to ``returned``,
``errored(exception)``, ``progress(done, total)``, ``cancelled`` and ``finished``, and call
``cancel()``. The handle's signals arrive on the GUI thread. Exactly one of ``returned``,
``errored`` and ``cancelled`` fires for every job, then ``finished``: no job is ever dropped
silently, also when the queue is cleared by a model switch or by quitting.

Rules of the queue:

* a model load goes first; loading another model cancels the waiting analyses of the old one
  (their handles say ``cancelled``) but keeps other jobs such as exports, which then run
  with the new model;
* a cancelled job still waiting leaves the queue at once; a running one is told through
  ``JobContext.cancelled()`` (long jobs check it between files) and its result is dropped;
* :meth:`AnalysisController.shutdown` cancels everything and waits for the thread with a
  timeout, so quitting never hangs on a long export or a slow model load.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal

from inference.native_preload import NativePreload
from viewer.qt_compat import emit
from viewer.workers import ThreadedWorker

__all__ = [
    "AnalysisController",
    "AnalysisResult",
    "JobCancelled",
    "JobContext",
    "JobHandle",
    "JobQueue",
]

log = logging.getLogger(__name__)

QUEUED, RUNNING, RETURNED, ERRORED, CANCELLED = "queued", "running", "returned", "errored", "cancelled"


class JobCancelled(Exception):  # noqa: N818 - superqt's name for the same thing
    """Raised inside a job (by :meth:`JobContext.check`) to stop it between two steps."""


class JobHandle(QObject):
    """One job's outcome, reported on the GUI thread; ``cancel()`` may be called from anywhere."""

    returned = Signal(object)  # the job's result
    errored = Signal(object)  # the exception it raised
    cancelled = Signal()
    progress = Signal(int, int)  # done, total
    finished = Signal()  # after any of the three above

    def __init__(self, kind: str, doc_id: int | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.doc_id = doc_id
        self.state = QUEUED
        self.result: Any = None
        self.error: BaseException | None = None
        self._cancel = threading.Event()
        self._controller: AnalysisController | None = None

    def cancel(self) -> None:
        """Ask the job to stop: a waiting job leaves the queue, a running one stops at its next check."""
        if self.done:
            return
        self._cancel.set()
        if self._controller is not None:
            self._controller._withdraw(self)

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self.state in (RETURNED, ERRORED, CANCELLED)

    # -- reporting (by the controller) ------------------------------------------------------------
    def _report(self, state: str, value: Any = None) -> None:
        """Settle the outcome now (any thread); the signals follow on the GUI thread through the
        controller's queued relay, so a caller connecting right after ``submit`` never misses them."""
        if self.done:
            return
        self.state = state
        if state == RETURNED:
            self.result = value
        elif state == ERRORED:
            self.error = value
        controller = self._controller
        if controller is not None:
            emit(controller._relay_outcome, self)
        else:
            self._announce()

    def _announce(self) -> None:
        if self.state == RETURNED:
            emit(self.returned, self.result)
        elif self.state == ERRORED:
            emit(self.errored, self.error)
        else:
            emit(self.cancelled)
        emit(self.finished)


@dataclass
class JobContext:
    """What a job function gets: the predictor (None when no model is loaded), progress and cancel."""

    predictor: Any
    handle: JobHandle

    def progress(self, done: int, total: int) -> None:
        controller = self.handle._controller
        if controller is not None:
            emit(controller._relay_progress, self.handle, int(done), int(total))

    def cancelled(self) -> bool:
        return self.handle.is_cancelled()

    def check(self) -> None:
        """Raise :class:`JobCancelled` if the job was cancelled (call it between files)."""
        if self.handle.is_cancelled():
            raise JobCancelled()


@dataclass
class _Job:
    handle: JobHandle
    fn: Callable[[JobContext], Any]
    kind: str  # "load" | "analyse" | "call"
    doc_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class JobQueue:
    """A thread-safe FIFO of jobs with take-by-predicate and move-to-front."""

    def __init__(self) -> None:
        self._jobs: deque[_Job] = deque()
        self._lock = threading.Lock()

    # Jobs that stay ahead of everything else: a model load (nothing could run without it) and
    # the set-up after it (the imports the GUI thread will need for the first result).
    FIRST = ("load", "setup")

    def put(self, job: _Job, front: bool = False) -> None:
        with self._lock:
            if front:
                first = [j for j in self._jobs if j.kind in self.FIRST]
                if job.kind == "load":
                    first = [j for j in first if j.kind == "load"]
                rest = [j for j in self._jobs if j not in first]
                self._jobs = deque(first + [job] + rest)
            else:
                self._jobs.append(job)

    def pop(self) -> _Job | None:
        with self._lock:
            return self._jobs.popleft() if self._jobs else None

    def take_where(self, match: Callable[[_Job], bool]) -> list[_Job]:
        """Remove and return the waiting jobs for which ``match(job)`` is true."""
        with self._lock:
            taken = [j for j in self._jobs if match(j)]
            self._jobs = deque(j for j in self._jobs if not match(j))
            return taken

    def prioritise(self, doc_id: int) -> None:
        """Move the jobs of ``doc_id`` to the front (behind a pending model load and its set-up)."""
        with self._lock:
            mine = [j for j in self._jobs if j.doc_id == doc_id]
            if mine:
                rest = [j for j in self._jobs if j.doc_id != doc_id]
                first = [j for j in rest if j.kind in self.FIRST]
                rest = [j for j in rest if j.kind not in self.FIRST]
                self._jobs = deque(first + mine + rest)

    def kinds(self) -> list[str]:
        with self._lock:
            return [j.kind for j in self._jobs]

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)


# While a model loads (TensorFlow's import runs ~2 s of Python in this thread), the interpreter
# offers the GIL to other threads every 1 ms instead of 5 ms, so the GUI thread gets its turns.
LOAD_SWITCH_INTERVAL_S = 0.001


@dataclass(frozen=True)
class AnalysisResult:
    """What an analysis job returns: the prediction and, when asked, the explanation and its
    heat map at display size (never the full-resolution map)."""

    doc_id: int
    prediction: Any
    explanation: Any = None
    heat: np.ndarray | None = None


def default_predictor_factory(path: str) -> Any:
    from inference.native_preload import preload_tensorflow_libraries

    preload_tensorflow_libraries()  # the 850 MB of TensorFlow libraries mapped without the GIL
    from inference.predictor import Predictor

    return Predictor(path)


def default_load_image(path: str) -> Any:
    from inference.loading import load_image

    return load_image(path)


class AnalysisController(QObject):
    """Owns the inference thread and the predictor; hands out a :class:`JobHandle` per job."""

    colormaps_ready = Signal()
    _relay_outcome = Signal(object)  # JobHandle: announce its outcome on the GUI thread
    _relay_progress = Signal(object, int, int)  # JobHandle, done, total

    def __init__(
        self,
        predictor_factory: Callable[[str], Any] | None = None,
        load_image: Callable[[str], Any] | None = None,
        name: str = "cxr-inference",
    ) -> None:
        super().__init__()
        self.queue = JobQueue()
        self._factory = predictor_factory or default_predictor_factory
        self._load_image = load_image or default_load_image
        self._worker = ThreadedWorker(name)
        self._predictor: Any = None
        self._running: _Job | None = None
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False
        self._warmed = False
        queued = Qt.ConnectionType.QueuedConnection  # also when reported on the GUI thread: callers connect first
        self._relay_outcome.connect(self._announce, queued)
        self._relay_progress.connect(self._announce_progress, queued)
        # TensorFlow's import holds the GIL for ~0.7 s in two places (issue 12): prepared from now on,
        # the GIL-bound part before the window's first paint (see NativePreload); only for the real model.
        self.preload = NativePreload()
        if predictor_factory is None:
            self.preload.start()

    def _announce(self, handle: JobHandle) -> None:
        handle._announce()

    def _announce_progress(self, handle: JobHandle, done: int, total: int) -> None:
        if not handle.done:
            emit(handle.progress, done, total)

    # -- life cycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if not self._started:
            self._started = True
            self._worker.start()

    @property
    def started(self) -> bool:
        return self._started

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Cancel every job (waiting ones report ``cancelled`` now) and wait at most ``timeout`` s
        for the thread; True when it has ended. A job that cannot stop (a model still loading)
        is left to end with the process: the thread is a daemon."""
        self._stopped = True
        for job in self.queue.take_where(lambda _j: True):
            job.handle._cancel.set()
            job.handle._report(CANCELLED)
        with self._lock:
            running = self._running
        if running is not None:
            running.handle._cancel.set()
        if not self._started:
            return True
        return self._worker.stop(timeout=timeout)

    @property
    def load_image(self) -> Callable[[str], Any]:
        """How evicted films are read again (the loader's function; tests give a fake one)."""
        return self._load_image

    @property
    def predictor(self) -> Any:
        """The loaded predictor, or None (read its ``info`` and ``device`` only from other threads)."""
        return self._predictor

    def pending(self, kind: str | None = None) -> int:
        """Jobs waiting (of one kind)."""
        kinds = self.queue.kinds()
        return len(kinds) if kind is None else kinds.count(kind)

    def is_busy(self) -> bool:
        with self._lock:
            return self._running is not None or bool(len(self.queue))

    # -- submitting --------------------------------------------------------------------------------
    def submit(
        self,
        fn: Callable[[JobContext], Any],
        kind: str = "call",
        doc_id: int | None = None,
        front: bool = False,
    ) -> JobHandle:
        """Run ``fn(context)`` in the inference thread; its return value comes back as ``returned``."""
        handle = JobHandle(kind, doc_id)
        handle._controller = self
        job = _Job(handle=handle, fn=fn, kind=kind, doc_id=doc_id)
        if self._stopped:
            handle._cancel.set()
            handle._report(CANCELLED)
            return handle
        self.queue.put(job, front=front)
        self._worker.post(self._run_one)
        return handle

    def load_model(self, path: str) -> JobHandle:
        """Load ``path``; the waiting analyses of the previous model are cancelled, other jobs stay.

        ``returned`` gives ``(BundleInfo, device in words)``.
        """
        for job in self.queue.take_where(lambda j: j.kind in ("load", "analyse")):  # not the set-up
            job.handle._cancel.set()
            job.handle._report(CANCELLED)
        with self._lock:
            running = self._running
        if running is not None and running.kind == "analyse":
            running.handle._cancel.set()  # its result belongs to the old model: dropped

        def load(ctx: JobContext) -> tuple[Any, str]:
            switching = self._predictor is not None
            self._predictor = None
            gc.disable()  # no full collections in the middle of TensorFlow's import
            self.preload.wait(timeout=60.0)
            interval = sys.getswitchinterval()  # 5 ms: the GUI waits its turn behind up to two threads
            sys.setswitchinterval(min(interval, LOAD_SWITCH_INTERVAL_S))
            try:
                gc.unfreeze()
                if switching:
                    gc.collect()  # the previous model's cycles, once, while the new one loads
                predictor = self._factory(str(path))
                warm_up = getattr(predictor, "warm_up", None)
                if warm_up is not None:
                    warm_up(explain=False)  # TensorFlow builds its graph now, not on the first image
            except BaseException:
                # The analyses queued for this model cannot run: cancelled, not 300 errors.
                for job in self.queue.take_where(lambda j: j.kind == "analyse"):
                    job.handle._cancel.set()
                    job.handle._report(CANCELLED)
                raise
            finally:
                # Everything alive now (TensorFlow, Keras, the model: some 300,000 objects) is left
                # out of later collections; a full collection over them held the GIL, and with it
                # the GUI thread, for 0.6-1 s.
                gc.freeze()
                gc.enable()
                sys.setswitchinterval(interval)
            self._predictor = predictor
            return predictor.info, str(getattr(predictor, "device", ""))

        handle = self.submit(load, kind="load", front=True)
        if not self._warmed:  # right after the first model, before any analysis
            self._warmed = True
            self.submit(lambda _ctx: self._warm_colormaps(), kind="setup", front=True)
        return handle

    def analyse(
        self,
        doc: Any,
        explain: tuple[int | None, str] | None = None,
        heat_side: int = 0,
        front: bool = False,
    ) -> JobHandle:
        """Predict ``doc`` (a :class:`viewer.document.ImageDocument`); with ``explain`` = (class or
        None for the predicted one, method), predict and explain in one pass and return the heat
        map with its longest side ``heat_side``. Evicted pixels are read again from ``doc.path``."""
        path = str(doc.path)

        def run(ctx: JobContext) -> AnalysisResult:
            predictor = ctx.predictor
            if predictor is None:
                raise RuntimeError("No model is loaded.")
            image = doc.image  # read once: the GUI may evict it meanwhile
            if image is None:
                image = self._load_image(path)
            ctx.check()
            if explain is None:
                return AnalysisResult(doc.doc_id, predictor.predict(image))
            from viewer.render import display_heat

            prediction, explanation = predictor.predict_and_explain(image, explain[0], explain[1])
            return AnalysisResult(doc.doc_id, prediction, explanation, display_heat(explanation, heat_side))

        return self.submit(run, kind="analyse", doc_id=doc.doc_id, front=front)

    def render_heat(self, doc_id: int, explanation: Any, heat_side: int) -> JobHandle:
        """``explanation``'s heat map with its longest side ``heat_side`` (no network: from its
        feature-grid map), ahead of the other jobs; ``returned`` gives the float32 array."""

        def run(_ctx: JobContext) -> np.ndarray:
            from viewer.render import display_heat

            return display_heat(explanation, heat_side)

        return self.submit(run, kind="heat", doc_id=doc_id, front=True)

    def prioritise(self, doc_id: int) -> None:
        self.queue.prioritise(doc_id)

    def cancel_doc(self, doc_id: int) -> None:
        """Cancel every job of one document (a closed image)."""
        for job in self.queue.take_where(lambda j: j.doc_id == doc_id):
            job.handle._cancel.set()
            job.handle._report(CANCELLED)
        with self._lock:
            running = self._running
        if running is not None and running.doc_id == doc_id:
            running.handle._cancel.set()

    def _withdraw(self, handle: JobHandle) -> None:
        """``handle.cancel()``: take its job out of the queue if it still waits there."""
        for job in self.queue.take_where(lambda j: j.handle is handle):
            job.handle._report(CANCELLED)

    # -- the inference thread -----------------------------------------------------------------------
    def _warm_colormaps(self) -> None:
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
        handle = job.handle
        if handle.is_cancelled():
            handle._report(CANCELLED)
            return
        with self._lock:
            self._running = job
        handle.state = RUNNING
        try:
            result = job.fn(JobContext(self._predictor, handle))
        except JobCancelled:
            handle._report(CANCELLED)
        except Exception as exc:  # reported to the caller, never fatal to the thread
            log.debug("job %s failed:\n%s", job.kind, traceback.format_exc())
            handle._report(CANCELLED if handle.is_cancelled() and job.kind == "analyse" else ERRORED, exc)
        else:
            # A cancelled analysis or load is stale (closed image, replaced model): dropped. Other
            # jobs stop themselves between steps and return what they did (an export's report).
            stale = handle.is_cancelled() and job.kind in ("analyse", "load")
            handle._report(CANCELLED if stale else RETURNED, result)
        finally:
            with self._lock:
                self._running = None
