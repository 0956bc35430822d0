"""One progress interface for training and evaluation, shared by the CLI and the viewer.

The training code only talks to a :class:`TrainingProgress`; the CLI passes a
:class:`ConsoleProgress` (tqdm bars), the viewer its own object that turns the calls into
Qt signals, and tests a :class:`NullProgress` or a recorder. Cancellation is cooperative:
the caller sets a :class:`threading.Event` and the work stops at the next batch or file.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any, Protocol, TextIO, runtime_checkable

__all__ = [
    "TrainingCancelled",
    "TrainingProgress",
    "NullProgress",
    "ConsoleProgress",
    "KerasProgressCallback",
    "check_cancel",
]


class TrainingCancelled(Exception):  # noqa: N818 - the name the project agreed on
    """The user cancelled; nothing was written and any existing model is untouched."""


@runtime_checkable
class TrainingProgress(Protocol):
    def on_stage(self, name: str, detail: str = "") -> None:
        """A coarse step: "scanning", "decoding", "training", "evaluating", "saving"."""

    def on_train_begin(self, epochs: int, steps_per_epoch: int) -> None: ...

    def on_batch_end(self, epoch: int, step: int, logs: dict[str, float]) -> None:
        """``epoch`` and ``step`` count from 0."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """``logs`` holds loss, accuracy, val_loss, val_accuracy and lr when known."""

    def on_message(self, text: str) -> None:
        """Something the user should read (skipped files, duplicates, which initialisation)."""


class NullProgress:
    """Ignores everything."""

    def on_stage(self, name: str, detail: str = "") -> None:
        pass

    def on_train_begin(self, epochs: int, steps_per_epoch: int) -> None:
        pass

    def on_batch_end(self, epoch: int, step: int, logs: dict[str, float]) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        pass

    def on_message(self, text: str) -> None:
        pass


def check_cancel(cancel: threading.Event | None) -> None:
    """Raise :class:`TrainingCancelled` when ``cancel`` is set (for loops outside Keras)."""
    if cancel is not None and cancel.is_set():
        raise TrainingCancelled("Training was cancelled.")


def _fmt(logs: dict[str, Any], keys: tuple[str, ...]) -> dict[str, str]:
    return {k: f"{float(logs[k]):.4g}" for k in keys if logs.get(k) is not None}


class ConsoleProgress:
    """Progress on stderr for the CLI.

    On a terminal: tqdm bars (one per epoch with loss, accuracy and ETA; one for decoding).
    Redirected to a file or a CI log, bars would be disabled or garbled, so each epoch and
    each finished stage becomes one plain line instead.
    """

    def __init__(self, stream: TextIO | None = None, bars: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        if bars is None:
            isatty = getattr(self.stream, "isatty", None)
            bars = bool(isatty and isatty())
        self.bars = bars
        self._bar: Any = None
        self._epochs = 0
        self._steps = 0
        self._stage_bar: Any = None
        self._stage = ""
        self._epoch_started = 0.0

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _close_stage_bar(self) -> None:
        if self._stage_bar is not None:
            self._stage_bar.close()
            self._stage_bar = None

    def on_stage(self, name: str, detail: str = "") -> None:
        # "decoding 120/500" style details drive a bar; anything else is a line.
        done_total = detail.split(" ")[0].split("/") if detail else []
        if len(done_total) == 2 and all(p.isdigit() for p in done_total):
            done, total = (int(p) for p in done_total)
            if not self.bars:
                if done == total:
                    self._print(f"[{name}] {done}/{total} done")
                return
            from tqdm import tqdm

            if self._stage_bar is None or self._stage != name:
                self._close_stage_bar()
                self._stage = name
                self._stage_bar = tqdm(total=total, desc=name, file=self.stream, leave=False)
            self._stage_bar.update(done - self._stage_bar.n)
            return
        self._close_stage_bar()
        self._stage = name
        self._print(f"[{name}] {detail}".rstrip())

    def on_train_begin(self, epochs: int, steps_per_epoch: int) -> None:
        self._close_stage_bar()
        self._epochs, self._steps = epochs, steps_per_epoch
        self._epoch_started = time.monotonic()

    def on_batch_end(self, epoch: int, step: int, logs: dict[str, float]) -> None:
        if not self.bars:
            return
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(
                total=self._steps or None, desc=f"epoch {epoch + 1}/{self._epochs}", unit="batch", file=self.stream
            )
        self._bar.update(1)
        self._bar.set_postfix(_fmt(logs, ("loss", "accuracy")), refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        keys = ("loss", "accuracy", "val_loss", "val_accuracy", "val_dice", "lr")
        if self.bars and self._bar is not None:
            self._bar.set_postfix(_fmt(logs, keys))
        elif not self.bars:
            now = time.monotonic()
            values = " ".join(f"{k} {v}" for k, v in _fmt(logs, keys).items())
            self._print(f"epoch {epoch + 1}/{self._epochs}: {values} ({now - self._epoch_started:.0f} s)")
            self._epoch_started = now
        self._close_bar()

    def on_message(self, text: str) -> None:
        self._close_stage_bar()
        if self.bars:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            self._print(text)


def KerasProgressCallback(  # noqa: N802 - a factory that reads like the class it returns
    progress: TrainingProgress, cancel: threading.Event | None = None, epochs: int = 0, steps_per_epoch: int = 0
) -> Any:
    """A ``keras.callbacks.Callback`` that forwards to ``progress`` and honours ``cancel``.

    Built by a factory so that importing this module does not import Keras.
    """
    import keras

    class _Adapter(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.cancelled = False
            self._epoch = 0

        def on_train_begin(self, logs: dict | None = None) -> None:
            progress.on_train_begin(epochs, steps_per_epoch)

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._epoch = epoch

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            progress.on_batch_end(self._epoch, batch, _floats(logs))
            if cancel is not None and cancel.is_set():
                # Raising (not only stop_training) ends fit() at once, without the
                # validation pass that would otherwise still run for this epoch.
                self.cancelled = True
                self.model.stop_training = True
                raise TrainingCancelled("Training was cancelled.")

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            values = _floats(logs)
            with contextlib.suppress(Exception):  # the learning rate is informative only
                values.setdefault("lr", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
            progress.on_epoch_end(epoch, values)

    return _Adapter()


def _floats(logs: dict | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in (logs or {}).items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out
