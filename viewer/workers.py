"""Background threads that talk to the GUI only through Qt signals.

* :class:`ThreadedWorker`: a QObject owning one long-lived Python thread and a task queue. The
  inference thread of :class:`viewer.controller.AnalysisController` is one.
* :class:`ImageLoader`: decodes files and prepares their display (renderer, window, thumbnail)
  one file per task, so that reloading an evicted film (``reload``, first in line) never waits
  behind a folder of three hundred.
* :func:`run_in_thread`: one call in a short-lived thread (scanning a training folder).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot

from inference.image import ImageLoadError, XRayImage
from viewer.qt_compat import emit

__all__ = ["ByteBudget", "ImageLoader", "ThreadedWorker", "TaskHandle", "run_in_thread"]

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


class ByteBudget:
    """How many bytes of decoded films may wait for their consumer; the producer blocks beyond it.

    One film is always let through when nothing is held, so a film larger than the whole budget
    still passes (alone).
    """

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, amount: int, timeout: float) -> bool:
        with self._cond:
            fits = lambda: self.used == 0 or self.used + amount <= self.limit  # noqa: E731
            if not self._cond.wait_for(fits, timeout):
                return False
            self.used += amount
            return True

    def release(self, amount: int) -> None:
        with self._cond:
            self.used = max(0, self.used - int(amount))
            self._cond.notify_all()


# ---------------------------------------------------------------------------------------------
# Image loading


def film_identity(image: XRayImage, path: str) -> str:
    """The film's identity (SOP Instance UID, else the hash of its file: the same film opened by
    two paths is one film); "" when the file cannot be read again for its hash."""
    from inference.sidecar import film_key

    try:
        return film_key(image.meta, path)
    except OSError:
        return ""


class ImageLoader(ThreadedWorker):
    """Loads files (expanding folders) and reports each one; one bad file never stops the rest.

    Requests are split into one task per file. ``reload`` (a film shown again after its pixels
    were evicted) goes before every waiting file.
    """

    batch_started = Signal(int, int)  # request id, number of files found
    loaded = Signal(int, str, object, object)  # request id, path, XRayImage, viewer.render.DisplayPrep
    failed = Signal(int, str, str)  # request id, path, message for the user
    batch_finished = Signal(int, int, int)  # request id, files opened, files that failed

    RELOAD = -1  # the request id of reloads

    def __init__(self, load: Callable[[str], XRayImage] | None = None, name: str = "cxr-image-loader") -> None:
        super().__init__(name)
        self._load = load
        self._lock = threading.Lock()
        self._files: deque[tuple[int, str]] = deque()
        self._cancelled: set[int] = set()
        self._counts: dict[int, list[int]] = {}  # request -> [remaining, ok, bad]
        self._budget: ByteBudget | None = None
        self._stopping = threading.Event()

    def set_budget(self, budget: ByteBudget | None) -> None:
        """Hold each decoded film (not reloads) until ``budget`` has room for its pixels; whoever
        consumes the film releases its ``image.pixels.nbytes``. None: no limit."""
        self._budget = budget

    def cancel(self, request_id: int) -> None:
        with self._lock:
            self._cancelled.add(request_id)
            self._files = deque(f for f in self._files if f[0] != request_id)

    def cancel_all(self) -> None:
        self._stopping.set()  # also ends a film waiting for room in the budget
        with self._lock:
            self._cancelled.update(r for r, _ in self._files)
            self._files.clear()

    def pending(self) -> int:
        with self._lock:
            return len(self._files)

    def load_paths(self, request_id: int, paths: list) -> None:
        """Queue a request (called from the GUI thread); results arrive as signals."""
        self.post(lambda: self._expand(request_id, list(paths)))

    def reload(self, path: str) -> None:
        """Load one file again, before anything else waiting (its ``loaded`` has request id RELOAD)."""
        with self._lock:
            self._files.appendleft((self.RELOAD, str(path)))
        self.post(self._load_one)

    def load_now(self, request_id: int, paths: list) -> None:
        """Load in the calling thread (a test's): expand, then every file."""
        self._expand(request_id, list(paths), post=False)
        while self._load_one():
            pass

    # -- the loader's thread ---------------------------------------------------------------------
    def _loader(self) -> Callable[[str], XRayImage]:
        if self._load is None:
            from inference.loading import load_image

            self._load = load_image
        return self._load

    def _expand(self, request_id: int, paths: list, post: bool = True) -> None:
        from viewer.files import expand_paths

        try:
            files = expand_paths(paths)
        except Exception as exc:  # a folder vanished or is unreadable mid-scan
            emit(self.failed, request_id, ", ".join(map(str, paths)), f"Cannot read the folder: {exc}")
            emit(self.batch_finished, request_id, 0, 1)
            return
        emit(self.batch_started, request_id, len(files))
        if not files:
            emit(self.batch_finished, request_id, 0, 0)
            return
        with self._lock:
            self._counts[request_id] = [len(files), 0, 0]
            self._files.extend((request_id, str(f)) for f in files)
        if post:
            for _ in files:
                self.post(self._load_one)

    def _load_one(self) -> bool:
        """Load the next waiting file; False when there was none."""
        from viewer.render import prepare_display

        with self._lock:
            if not self._files:
                return False
            request_id, path = self._files.popleft()
        ok = False
        try:
            image = self._loader()(path)
            prep = prepare_display(image)
            ok = True
        except ImageLoadError as exc:
            emit(self.failed, request_id, path, str(exc))
        except Exception as exc:  # the loader promises ImageLoadError only; never let a bug kill the thread
            log.exception("unexpected error loading %s", path)
            emit(self.failed, request_id, path, f"Cannot open {Path(path).name}: {exc}")
        if ok and request_id != self.RELOAD:
            prep = dataclasses.replace(prep, key=film_identity(image, path))
            if not self._wait_for_room(int(image.pixels.nbytes)):
                return True  # stopping
        if ok:
            emit(self.loaded, request_id, path, image, prep)
        self._count(request_id, ok)
        return True

    def _wait_for_room(self, amount: int) -> bool:
        """Wait until the consumer has room for a decoded film of ``amount`` bytes; False when stopping."""
        while True:
            budget = self._budget
            if budget is None or budget.acquire(amount, timeout=0.1):
                return True
            if self._stopping.is_set():
                return False

    def release(self, amount: int) -> None:
        """A decoded film no longer waits for its consumer."""
        budget = self._budget
        if budget is not None:
            budget.release(amount)

    def _count(self, request_id: int, ok: bool) -> None:
        with self._lock:
            counts = self._counts.get(request_id)
            if counts is None:
                return
            counts[0] -= 1
            counts[1 if ok else 2] += 1
            remaining = counts[0] if request_id not in self._cancelled else 0
            if remaining > 0:
                return
            del self._counts[request_id]
        emit(self.batch_finished, request_id, counts[1], counts[2])
