"""Which ``tf.distribute`` strategy a training run uses, and its resumable backup.

- Several GPUs visible in one process: ``tf.distribute.MirroredStrategy`` (one replica per
  GPU). ``--batch-size`` is the batch of one replica; a step trains on
  ``batch_size x replicas`` images (:func:`global_batch_size`), and every training batch is
  full, because a replica handed an empty remainder batch breaks the step (measured with
  Keras 3.15, 17 images in steps of 8 on two replicas: custom-cnn stops with an
  InvalidArgumentError in its BatchNormalization, a Dense+BatchNorm model's loss turns NaN).
- Otherwise: TensorFlow's default strategy, exactly the single-process behaviour of before.
- A ``TF_CONFIG`` naming several workers: ``tf.distribute.MultiWorkerMirroredStrategy``,
  trained by :func:`fit_multi_worker`, TensorFlow's documented custom training loop for that
  strategy (``experimental_distribute_dataset``, ``strategy.run`` of a GradientTape step,
  the loss averaged over the global batch, ``strategy.reduce``), because ``model.fit`` of
  Keras 3 fails under it (measured with Keras 3.15.1 and TensorFlow 2.21.0 at its first
  batch; keras-team/keras#20585, tensorflow#72388). Each worker reads every
  ``num_workers``-th batch (``AutoShardPolicy.DATA``); gradients are summed across workers
  at every step, so the weights stay identical on all of them (measured: the same hash on
  two workers after two epochs). BatchNormalization's moving statistics are updated from each
  worker's own batches; they are averaged across workers after every epoch, which for the
  moving means equals what synchronised statistics would give (the moving average is linear)
  and for the variances leaves out the spread between the workers' batch means.
  :func:`launch_local` starts such a cluster on this machine (``--distributed local:N``).

A run may keep a backup through ``keras.callbacks.BackupAndRestore``: the weights, the
optimizer and the epoch counter are saved after every epoch in a folder that the same
command, run again after a crash, resumes from; Keras deletes the folder when the run ends
well. The folder is Keras's own (it is deleted as a whole), so a folder that holds anything
else is refused, never emptied. On several workers the same folder holds, per worker,
``worker-I/``: that worker's last two epochs saved by ``tf.train.CheckpointManager`` (each
worker keeps its own, so the folder need not be shared between machines); the restarted
cluster resumes from the last epoch that every worker holds.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DistributedError",
    "ClusterTask",
    "read_tf_config",
    "multi_worker_task",
    "fit_multi_worker",
    "launch_local",
    "parse_local",
    "local_copy",
    "local_tf_configs",
    "select_strategy",
    "global_batch_size",
    "check_backup_dir",
    "stamp_backup_dir",
    "backup_callback",
]

# What fails with model.fit, measured in this environment (two workers on 127.0.0.1, CPU,
# TensorFlow 2.21.0, Keras 3.15.1), in keras/src/backend/tensorflow/trainer.py:
#   1. fit -> _maybe_symbolic_build -> strategy.reduce("MEAN", (x, y)) on the first batch:
#      "ValueError: Attempt to convert a value (PerReplica:{...}) with an unsupported type
#      (<class 'tensorflow.python.distribute.values.PerReplica'>) to a Tensor."
#   2. past that, every step's reduce_per_replica -> strategy.reduce("MEAN", loss, axis=0):
#      "ValueError: Invalid reduction dimension 0 for input with 0 dimensions."
# Upstream: keras-team/keras#20585 (open), tensorflow/tensorflow#72388. Hence fit_multi_worker.

# Test hook: "I:N" makes worker I exit hard right after saving epoch N of a run that did not
# resume (a power cut on one machine), so the tests can check that the cluster resumes.
_EXIT_HOOK = "CXR_TEST_WORKER_EXIT_AFTER_EPOCH"


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


def multi_worker_task(environ: Mapping[str, str] | None = None) -> ClusterTask | None:
    """This process's task when ``TF_CONFIG`` names several workers, else None."""
    task = read_tf_config(environ)
    return task if task is not None and len(task.workers) > 1 else None


def select_strategy(environ: Mapping[str, str] | None = None) -> Any:
    """The strategy for this process (see the module notes). Call it before anything else
    starts TensorFlow's runtime work, once per process."""
    import tensorflow as tf

    if multi_worker_task(environ) is not None:
        return tf.distribute.MultiWorkerMirroredStrategy()
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
        tmp = folder / f".{_STAMP}.{os.getpid()}.part"  # several workers may share the folder
        tmp.write_text(json.dumps(run, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, folder / _STAMP)
    return folder


def _backed_up_epochs(folder: Path) -> int | None:
    """The epoch counter of Keras's backup (its ``training_metadata.json``), or of the
    multi-worker checkpoints in it (the highest of the ``worker-I`` folders), if there is one."""
    try:
        epoch = json.loads((folder / "training_metadata.json").read_text(encoding="utf-8"))["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        epoch = max((e for w in folder.glob("worker-*") for e in _checkpoint_epochs(w)), default=None)
    return int(epoch) if isinstance(epoch, int) and epoch > 0 else None


def _checkpoint_epochs(folder: Path) -> list[int]:
    """The epochs saved by a ``tf.train.CheckpointManager`` in ``folder`` (``ckpt-N.index``)."""
    out = []
    for index in folder.glob("ckpt-*.index"):
        number = index.name[len("ckpt-") : -len(".index")]
        if number.isdigit():
            out.append(int(number))
    return sorted(out)


def backup_callback(folder: Path) -> Any:
    """Keras's BackupAndRestore on ``folder``: saved after every epoch, restored when ``fit``
    starts, deleted (with the folder) when ``fit`` ends without an error. Two checkpoints
    are kept, so a kill in the middle of writing one falls back to the one before."""
    import keras

    return keras.callbacks.BackupAndRestore(str(folder), double_checkpoint=True, delete_checkpoint=True)


# ---------------------------------------------------------------------------------------------
# Several workers: TensorFlow's custom training loop for MultiWorkerMirroredStrategy


def fit_multi_worker(
    model: Any,
    train_ds: Any,
    val_ds: Any | None,
    *,
    strategy: Any,
    task: ClusterTask,
    epochs: int,
    steps_per_epoch: int,
    global_batch: int,
    class_weight: Mapping[int, float] | None,
    callbacks: Sequence[Any],
    progress: Any,
    cancel: threading.Event | None,
    backup_dir: Path | None,
) -> tuple[dict[str, list[float]], int]:
    """Train ``model`` (built and compiled under ``strategy.scope()``) on this worker's share
    of ``train_ds`` (global batches of ``global_batch`` images), as every worker of the
    cluster does at the same time. Returns ``(history, epochs restored from the backup)``.

    ``callbacks`` are Keras callbacks that act on the epoch's logs (early stopping with the
    best weights, learning-rate reduction); they get the same logs on every worker (the
    losses are summed across workers), so every worker takes the same decisions. Progress
    goes to ``progress`` on the chief only. ``cancel`` set on any worker stops all of them
    after the same step (the flag is summed with the step's results). With ``backup_dir``,
    each worker keeps its last two epochs (weights, optimizer) in ``backup_dir/worker-I``
    with ``tf.train.CheckpointManager``; a restarted cluster resumes from the last epoch
    that every worker holds, and the checkpoints are deleted when the run ends well.
    """
    import keras
    import tensorflow as tf

    from training.progress import TrainingCancelled

    n_classes = int(model.outputs[0].shape[-1])
    loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)
    weights = (
        tf.constant([float(class_weight.get(i, 1.0)) for i in range(n_classes)], tf.float32) if class_weight else None
    )
    optimizer = model.optimizer
    with strategy.scope():  # its slots must be mirrored variables, made before the tf.function traces
        optimizer.build(model.trainable_variables)
    stats = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]
    total = tf.distribute.ReduceOp.SUM

    def correct(y: Any, probs: Any) -> Any:
        return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, -1, output_type=tf.int32), y), tf.float32))

    def train_replica(x: Any, y: Any, stop: Any) -> tuple[Any, ...]:
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            per_image = loss_fn(y, probs)
            if weights is not None:  # as fit's class_weight: weighted, averaged over the batch
                per_image = per_image * tf.gather(weights, y)
            loss = tf.nn.compute_average_loss(per_image, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return tf.reduce_sum(per_image), correct(y, probs), tf.cast(tf.size(y), tf.float32), stop

    def val_replica(x: Any, y: Any) -> tuple[Any, ...]:
        probs = model(x, training=False)
        return tf.reduce_sum(loss_fn(y, probs)), correct(y, probs), tf.cast(tf.size(y), tf.float32)

    @tf.function
    def train_step(x: Any, y: Any, stop: Any) -> list[Any]:
        return [strategy.reduce(total, v, axis=None) for v in strategy.run(train_replica, args=(x, y, stop))]

    @tf.function
    def val_step(x: Any, y: Any) -> list[Any]:
        return [strategy.reduce(total, v, axis=None) for v in strategy.run(val_replica, args=(x, y))]

    @tf.function
    def sync_stats() -> None:
        # Each worker's BatchNorm moving statistics followed its own batches: average them.
        local = strategy.run(lambda: [tf.identity(tf.convert_to_tensor(v)) for v in stats])
        for v, value in zip(stats, local):
            v.assign(strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None))

    @tf.function
    def all_sum(values: Any) -> Any:
        return strategy.reduce(total, strategy.run(lambda: tf.identity(values)), axis=None)

    dist_train = strategy.experimental_distribute_dataset(_shard_by_data(train_ds))
    dist_val = strategy.experimental_distribute_dataset(_shard_by_data(val_ds)) if val_ds is not None else None

    manager = None
    first_epoch = 0
    if backup_dir is not None:
        ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer)
        mine = Path(backup_dir) / f"worker-{task.index}"
        manager = tf.train.CheckpointManager(ckpt, str(mine), max_to_keep=2)
        have = np.zeros(epochs + 1, np.float32)
        have[0] = 1.0
        for e in _checkpoint_epochs(mine):
            if e <= epochs:
                have[e] = 1.0
        # The last epoch every worker holds (a worker killed while saving may lag by one).
        held = all_sum(tf.constant(have)).numpy()
        first_epoch = int(max(e for e in range(epochs + 1) if held[e] >= len(task.workers)))
        if first_epoch:
            ckpt.restore(str(mine / f"ckpt-{first_epoch}")).assert_existing_objects_matched()

    chief_progress = progress if task.is_chief else None
    model.stop_training = False
    for cb in callbacks:
        cb.set_model(model)
        cb.on_train_begin()
    history: dict[str, list[float]] = {}
    if chief_progress is not None:
        chief_progress.on_train_begin(epochs, steps_per_epoch)
    try:
        for epoch in range(first_epoch, epochs):
            for cb in callbacks:
                cb.on_epoch_begin(epoch)
            loss_sum = right = seen = 0.0
            for step, (x, y) in enumerate(dist_train):
                stop = 1.0 if cancel is not None and cancel.is_set() else 0.0
                s_loss, s_right, s_seen, s_stop = (float(v) for v in train_step(x, y, tf.constant(stop)))
                loss_sum, right, seen = loss_sum + s_loss, right + s_right, seen + s_seen
                if s_stop > 0:  # some worker was cancelled: all stop here, together
                    raise TrainingCancelled("Training was cancelled.")
                if chief_progress is not None:
                    chief_progress.on_batch_end(epoch, step, {"loss": loss_sum / seen, "accuracy": right / seen})
            if stats:
                sync_stats()
            logs = {"loss": loss_sum / max(seen, 1.0), "accuracy": right / max(seen, 1.0)}
            if dist_val is not None:
                v_loss = v_right = v_seen = 0.0
                for x, y in dist_val:
                    a, b, c = (float(v) for v in val_step(x, y))
                    v_loss, v_right, v_seen = v_loss + a, v_right + b, v_seen + c
                logs.update(val_loss=v_loss / max(v_seen, 1.0), val_accuracy=v_right / max(v_seen, 1.0))
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            for key, value in logs.items():  # as fit's history (ReduceLROnPlateau adds learning_rate)
                history.setdefault(key, []).append(float(value))
            if chief_progress is not None:
                lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
                chief_progress.on_epoch_end(epoch, {**logs, "lr": lr})
            if manager is not None:
                manager.save(checkpoint_number=epoch + 1)
                _test_exit_hook(task, epoch + 1, first_epoch)
            if not math.isfinite(logs["loss"]) or model.stop_training:
                break
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError) as exc:
        first_line = (exc.message or str(exc)).strip().splitlines()[0][:300]
        kept = f" The finished epochs are kept in {backup_dir};" if backup_dir is not None else ""
        raise DistributedError(
            f"Another worker of the cluster stopped ({first_line}).{kept} Run the same command on every worker "
            "again" + (" to resume." if kept else ".")
        ) from None
    for cb in callbacks:
        cb.on_train_end()
    if backup_dir is not None:  # the run ended well: its checkpoints are no longer needed
        shutil.rmtree(Path(backup_dir) / f"worker-{task.index}", ignore_errors=True)
        all_sum(tf.constant(0.0))  # every worker has removed its own before the folder goes
        _remove_backup_if_empty(Path(backup_dir))
    return history, first_epoch


def _shard_by_data(ds: Any) -> Any:
    """Each worker reads every ``num_workers``-th batch (the batches, not files, are split)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def _remove_backup_if_empty(folder: Path) -> None:
    """Remove the backup folder once only our stamp is left in it (never anyone else's files)."""
    with contextlib.suppress(OSError):
        if {p.name for p in folder.iterdir()} <= {_STAMP}:
            (folder / _STAMP).unlink(missing_ok=True)
            folder.rmdir()


def _test_exit_hook(task: ClusterTask, epochs_done: int, first_epoch: int) -> None:
    spec = os.environ.get(_EXIT_HOOK, "")
    if spec and first_epoch == 0 and spec == f"{task.index}:{epochs_done}":
        os._exit(3)


def local_copy(model: Any) -> Any:
    """The trained model as an ordinary one-process model (same layers, names and weights),
    to evaluate and save: Keras's predict under the multi-worker strategy would split the
    images between the workers."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


# ---------------------------------------------------------------------------------------------
# ``--distributed local:N``: a cluster of N workers on this machine


def parse_local(spec: str) -> int:
    """The number of workers in ``local:N`` (N from 2 to 16)."""
    kind, _, count = spec.partition(":")
    if kind != "local" or not count.isdigit() or not 2 <= int(count) <= 16:
        raise DistributedError(f"--distributed {spec!r}: use local:N with N workers (2 to 16) on this machine.")
    return int(count)


def _free_ports(n: int) -> list[int]:
    """``n`` free loopback ports (bound to port 0, read back, released just before use)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def local_tf_configs(n: int) -> list[str]:
    """One ``TF_CONFIG`` per worker of a loopback cluster of ``n`` workers."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(n)]
    return [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}) for i in range(n)]


def launch_local(n: int, argv: Sequence[str], *, grace_s: float = 10.0) -> int:
    """Run ``python main.py *argv`` as ``n`` workers of a loopback cluster and wait for them.

    The chief's output goes to this terminal, the others' to a log each (its end is shown
    when that worker fails). Ctrl+C is passed on to every worker (each stops at the same
    step); when a worker fails, the others are stopped. Returns the chief's exit code, or a
    failed worker's when the chief itself succeeded.
    """
    main_py = Path(__file__).resolve().parents[1] / "main.py"
    logs = Path(tempfile.mkdtemp(prefix="cxr-workers-"))
    procs: list[subprocess.Popen[bytes]] = []
    handles = []
    previous = signal.getsignal(signal.SIGINT)
    stopping = threading.Event()

    def forward(signum: int, frame: Any) -> None:
        if stopping.is_set():  # a second Ctrl+C aborts, as in a one-process run
            for p in procs:
                with contextlib.suppress(OSError):
                    p.send_signal(signal.SIGINT)
            return
        stopping.set()
        print("\nCancelling every worker at the next step (Ctrl+C again to abort)...", file=sys.stderr, flush=True)
        for p in procs:
            with contextlib.suppress(OSError):
                p.send_signal(signal.SIGINT)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, forward)
    try:
        for i, tf_config in enumerate(local_tf_configs(n)):
            env = {**os.environ, "TF_CONFIG": tf_config}
            out = None if i == 0 else open(logs / f"worker-{i}.log", "wb")  # noqa: SIM115 - closed below
            handles.append(out)
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(main_py), *argv],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT if out else None,
                    start_new_session=True,  # Ctrl+C reaches the workers through forward() only, once
                )
            )
        codes: dict[int, int] = {}
        while len(codes) < n:
            for i, p in enumerate(procs):
                if i not in codes and p.poll() is not None:
                    codes[i] = p.returncode
                    if p.returncode != 0 and not stopping.is_set():
                        _stop_all(procs, grace_s)  # its peers would wait for it forever
            time.sleep(0.2)
        for i in range(1, n):
            if codes[i] != 0 and not stopping.is_set():
                tail = (logs / f"worker-{i}.log").read_text(encoding="utf-8", errors="replace")[-2000:]
                print(f"Worker {i} failed (exit code {codes[i]}); the end of its output:\n{tail}", file=sys.stderr)
        code = codes[0] if codes[0] != 0 else next((c for c in codes.values() if c != 0), 0)
        return 128 - code if code < 0 else code  # killed by a signal: the shell's 128 + signal
    finally:
        _stop_all(procs, grace_s)
        for h in handles:
            if h is not None:
                h.close()
        shutil.rmtree(logs, ignore_errors=True)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)


def _stop_all(procs: Sequence[subprocess.Popen[bytes]], grace_s: float) -> None:
    """Stop the workers still running (a lone worker would wait for its peers forever)."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
