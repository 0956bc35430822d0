"""Which ``tf.distribute`` strategy a training run uses, and its resumable backup.

- Several GPUs visible in one process: ``tf.distribute.MirroredStrategy`` (one replica per
  GPU). ``--batch-size`` is the batch of one replica; a step trains on
  ``batch_size x replicas`` images (:func:`global_batch_size`), and every training batch is
  full, because a replica handed an empty remainder batch breaks the step (measured with
  Keras 3.15, 17 images in steps of 8 on two replicas: custom-cnn stops with an
  InvalidArgumentError in its BatchNormalization, a Dense+BatchNorm model's loss turns NaN).
- Otherwise: TensorFlow's default strategy, exactly the single-process behaviour of before.
- A ``TF_CONFIG`` naming several workers (``MultiWorkerMirroredStrategy``) is refused with
  the reason: ``model.fit`` of Keras 3 (measured with 3.15.1 and TensorFlow 2.21.0, the
  lowest versions this project allows) fails under that strategy at its first batch, see
  :data:`MULTI_WORKER_UNSUPPORTED`.

A run may keep a backup through ``keras.callbacks.BackupAndRestore``: the weights, the
optimizer and the epoch counter are saved after every epoch in a folder that the same
command, run again after a crash, resumes from; Keras deletes the folder when the run ends
well. The folder is Keras's own (it is deleted as a whole), so a folder that holds anything
else is refused, never emptied.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MULTI_WORKER_UNSUPPORTED",
    "DistributedError",
    "ClusterTask",
    "read_tf_config",
    "select_strategy",
    "global_batch_size",
    "check_backup_dir",
    "stamp_backup_dir",
    "backup_callback",
]

# What fails, measured in this environment (two workers on 127.0.0.1, CPU, TensorFlow 2.21.0,
# Keras 3.15.1), in keras/src/backend/tensorflow/trainer.py:
#   1. fit -> _maybe_symbolic_build -> strategy.reduce("MEAN", (x, y)) on the first batch:
#      "ValueError: Attempt to convert a value (PerReplica:{...}) with an unsupported type
#      (<class 'tensorflow.python.distribute.values.PerReplica'>) to a Tensor."
#   2. past that, every step's reduce_per_replica -> strategy.reduce("MEAN", loss, axis=0):
#      "ValueError: Invalid reduction dimension 0 for input with 0 dimensions."
# Upstream: keras-team/keras#20585 (open), tensorflow/tensorflow#72388.
# With both reductions patched in Keras (not done here: private code), two workers trained,
# but BatchNormalization's moving statistics then differ between the workers.
MULTI_WORKER_UNSUPPORTED = (
    "Training on several machines (a TF_CONFIG with {n} workers) is not supported: Keras 3's "
    "model.fit fails under tf.distribute.MultiWorkerMirroredStrategy with this TensorFlow "
    "(keras-team/keras#20585). Unset TF_CONFIG to train on this machine (all of its GPUs are used)."
)


class DistributedError(ValueError):
    """The distribution settings (TF_CONFIG, the backup folder) cannot be used; the message says why."""


@dataclass(frozen=True)
class ClusterTask:
    """This process's place in a ``TF_CONFIG`` cluster; worker 0 is the chief."""

    workers: tuple[str, ...]
    index: int

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def read_tf_config(environ: Mapping[str, str] | None = None) -> ClusterTask | None:
    """Parse the standard ``TF_CONFIG`` (``{"cluster": {"worker": [...]}, "task": {"type":
    "worker", "index": i}}``); None when it is unset or empty."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
        workers = tuple(str(w) for w in cfg["cluster"]["worker"])
        task = cfg["task"]
        kind, index = task["type"], int(task["index"])
    except (ValueError, TypeError, KeyError) as exc:
        raise DistributedError(
            'TF_CONFIG is not {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
            f'"index": i}}: {exc}'
        ) from None
    extra = sorted(set(cfg["cluster"]) - {"worker"})
    if kind != "worker" or extra:
        raise DistributedError(f"TF_CONFIG: only 'worker' tasks are used (got task type {kind!r}, other jobs {extra}).")
    if not workers or not 0 <= index < len(workers):
        raise DistributedError(f"TF_CONFIG: task index {index} is not one of the {len(workers)} workers.")
    return ClusterTask(workers, index)


def select_strategy(environ: Mapping[str, str] | None = None) -> Any:
    """The strategy for this process (see the module notes). Call it before anything else
    starts TensorFlow's runtime work, once per process."""
    import tensorflow as tf

    task = read_tf_config(environ)
    if task is not None and len(task.workers) > 1:
        raise DistributedError(MULTI_WORKER_UNSUPPORTED.format(n=len(task.workers)))
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def global_batch_size(batch_size: int, strategy: Any) -> int:
    """Images per training step: ``--batch-size`` per replica times the replicas."""
    return int(batch_size) * int(strategy.num_replicas_in_sync)


_STAMP = "cxr-backup.json"  # our mark in a backup folder: which run it belongs to


def check_backup_dir(backup_dir: Path | str, run: Mapping[str, Any]) -> int | None:
    """Check the backup folder for the run described by ``run`` (JSON values), touching nothing.

    Returns how many epochs the backup already holds (None when there is nothing to resume).
    A folder that holds files but not our stamp, or a backup of a run with other settings,
    is refused: resuming it would load unrelated weights, or delete someone's files when
    the run ends.
    """
    folder = Path(backup_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise DistributedError(f"The backup folder {folder} is a file.")
    if not folder.is_dir() or not any(folder.iterdir()):
        return None
    stamp = folder / _STAMP
    if not stamp.is_file():
        raise DistributedError(
            f"{folder} holds files that are not a training backup; choose an empty or new folder for --backup-dir."
        )
    try:
        saved = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DistributedError(f"The backup in {folder} is unreadable ({exc}); delete it to start over.") from None
    wanted = json.loads(json.dumps(run))
    if saved != wanted:
        changed = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        raise DistributedError(
            f"The backup in {folder} belongs to a run with other settings ({', '.join(changed)}); "
            "run the same command to resume it, or delete the folder to start over."
        )
    return _backed_up_epochs(folder)


def stamp_backup_dir(backup_dir: Path | str, run: Mapping[str, Any]) -> Path:
    """Make the backup folder and mark it as this run's (atomically), just before training."""
    folder = Path(backup_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / _STAMP).is_file():
        tmp = folder / f".{_STAMP}.part"
        tmp.write_text(json.dumps(run, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, folder / _STAMP)
    return folder


def _backed_up_epochs(folder: Path) -> int | None:
    """The epoch counter of Keras's backup (its ``training_metadata.json``), if there is one."""
    try:
        epoch = json.loads((folder / "training_metadata.json").read_text(encoding="utf-8"))["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return int(epoch) if isinstance(epoch, int) and epoch > 0 else None


def backup_callback(folder: Path) -> Any:
    """Keras's BackupAndRestore on ``folder``: saved after every epoch, restored when ``fit``
    starts, deleted (with the folder) when ``fit`` ends without an error. Two checkpoints
    are kept, so a kill in the middle of writing one falls back to the one before."""
    import keras

    return keras.callbacks.BackupAndRestore(str(folder), double_checkpoint=True, delete_checkpoint=True)
