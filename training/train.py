"""``train``: from a folder or CSV of labelled images to a model bundle.

The steps, and why they are in this order:

1. Check the output folder first, so a typo does not cost an hour of training.
2. Find the images, split them patient by patient (``training.splits``), decode them once
   through the shared preprocessing (``training.pipeline``), and report near-duplicates
   between training and validation/test before any time is spent on a model.
3. Train with Adam, class weights, early stopping on the validation loss (the best epoch's
   weights are restored, so the saved model is the best one seen, not the last one) and
   learning-rate reduction on plateaus; seeds fixed so a run can be repeated.
4. Evaluate on the validation (and test) split, write the report, and only then write
   the bundle with ``inference.bundle.write_bundle``, which replaces the folder atomically.
   A cancelled or failed run never gets there, so an existing model is never damaged.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import platform
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from inference.bundle import MAX_CLASSES, BundleInfo, write_bundle
from inference.calibration import apply_temperature, temperature_of
from inference.model_folder import (
    CLASS_RE,
    CONTENT_HASHES_FILE,
    NAME_RE,
    VERSION_RE,
    BundleError,
    check_preprocessing,
    clean_stale_temp_folders,
    content_hashes_text,
)
from inference.ood import OOD_FILE, FeatureGaussians
from inference.sidecar import file_sha256
from training.architectures import ARCHITECTURES, MIN_INPUT_SIZE, build_model
from training.datasets import discover
from training.distributed import (
    DistributedError,
    backup_callback,
    check_backup_dir,
    fit_multi_worker,
    global_batch_size,
    local_copy,
    multi_worker_task,
    select_strategy,
    stamp_backup_dir,
)
from training.duplicates import find_near_duplicates
from training.evaluate import accuracy_line, compute_metrics, metrics_by_group, worst_group, write_report
from training.init import InitPlan, init_from_bundle, resolve_init
from training.pipeline import (
    AugmentConfig,
    class_weights,
    group_balanced_weights,
    load_arrays,
    make_tf_dataset,
    predict_arrays,
)
from training.progress import KerasProgressCallback, NullProgress, TrainingCancelled, TrainingProgress, check_cancel
from training.samples import SPLITS, DatasetError, Sample
from training.splits import hold_out_sources, patient_overlap, split_dataset

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "TrainingCancelled",
    "train",
    "check_output_folder",
    "fit_callbacks",
]

# Fewer training or validation images than this fit no meaningful out-of-distribution scorer.
MIN_OOD_IMAGES = 10


class TrainingError(Exception):
    """Training cannot start or finish as asked; the message says why."""


@dataclass
class TrainConfig:
    data: Path | str
    out_dir: Path | str
    # None: as the starting bundle has it (see ``init``), else custom-cnn / 224 px / no CLAHE.
    arch: str | None = None
    epochs: int = 20
    image_size: int | None = None
    batch_size: int = 32
    # None: 1e-4 when fine-tuning (a bundle or ImageNet weights: keep what was learnt) and for
    # VGG16 from scratch (no BatchNorm: at 1e-3 its loss explodes and it stays at chance),
    # else 1e-3.
    learning_rate: float | None = None
    # "auto" (fine-tune the bundled model when it matches, else scratch), "scratch",
    # "bundled", a bundle folder, or "imagenet:WEIGHTS.h5".
    init: str = "auto"
    class_map: dict[str, str] | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.0
    # Leave-source-out validation: every image of these sources goes to validation (never
    # trained on), beside the usual patient-disjoint share of the other sources.
    val_sources: tuple[str, ...] = ()
    # None: as the starting bundle has it, else "none"; "lungs" crops to the lung fields.
    crop: str | None = None
    crop_margin: float | None = None
    seed: int = 0
    clahe: bool | None = None
    augment: bool = True
    horizontal_flip: bool = False
    # "class": class weights in the loss. "class-source": batches drawn so that classes weigh
    # the same and, within a class, each source by the square root of its size (needs a
    # source column); keeps small hospitals from being drowned by one big data set.
    balance: str = "class"
    patience: int = 5
    # Starting from ImageNet weights (see training.finetune): epochs of the frozen-backbone
    # warm-up of the classification layer on cached features (None: 200, early-stopped;
    # 0: none), then the blocks trained: the last ``unfreeze_blocks`` blocks and the head
    # convolution (None: 5 for a network with numbered blocks, else all; BatchNorm stays frozen).
    head_epochs: int | None = None
    unfreeze_blocks: int | None = None
    # Fit a temperature on the validation split after training (training.calibration), so the
    # bundle's probabilities mean what they say; stored in model.json and applied everywhere.
    calibrate: bool = True
    cache_dir: Path | str | None = None
    name: str | None = None
    version: str = "1.0.0"
    overwrite: bool = False
    csv_kind: str = "auto"
    exclude: tuple[str, ...] = ()
    use_split: bool = True  # keep the split the data declares (train/val/test folders, a split column)
    frontal_only: bool = True
    dropout: float = 0.3
    duplicate_distance: int = 8  # dHash bits (pairs must also correlate >= 0.95, see training.duplicates)
    description: str = ""
    command: str = ""  # the command line that started the run, recorded in the bundle
    # Keep a backup after every epoch here (keras BackupAndRestore); the same run started again
    # after a crash resumes from it. Removed when the run ends well. None: no backup.
    backup_dir: Path | str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("data", "out_dir", "cache_dir", "backup_dir"):
            if d[key] is not None:
                d[key] = str(d[key])
        d["exclude"] = list(self.exclude)
        d["val_sources"] = list(self.val_sources)
        return d


@dataclass
class TrainResult:
    bundle_dir: Path
    info: BundleInfo
    history: dict[str, list[float]]
    metrics: dict[str, Any]  # {"val": {...}, "test": {...}} as compute_metrics returns
    skipped: list[tuple[str, str]]
    duplicates: list[dict[str, Any]]
    init: str
    epochs_run: int
    seconds: float
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


def train(
    config: TrainConfig,
    progress: TrainingProgress | None = None,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Train a model as ``config`` says and write it to ``config.out_dir``.

    Raises :class:`DatasetError` or :class:`TrainingError` for bad data or settings,
    :class:`TrainingCancelled` when ``cancel`` is set (checked between files and batches).
    """
    progress = progress or NullProgress()
    started = time.time()
    out_dir = Path(config.out_dir).expanduser()
    _check_config(config, out_dir)
    replace_ok = check_output_folder(out_dir, config.overwrite)
    try:
        plan = resolve_init(config.init, config.arch, config.image_size, config.clahe)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    plan = _with_crop(plan, config)
    try:  # the saved description must pass the checks every reader applies: find out now, not after training
        check_preprocessing(plan.preprocessing, "The training settings")
    except BundleError as exc:
        raise TrainingError(str(exc)) from None
    if plan.size < MIN_INPUT_SIZE[plan.arch]:
        raise TrainingError(f"{plan.arch} needs images of at least {MIN_INPUT_SIZE[plan.arch]} px.")
    try:  # before any work: a refused TF_CONFIG or backup folder should not cost the decoding
        task = multi_worker_task()
        if task is not None and plan.kind == "imagenet":
            raise DistributedError("Starting from ImageNet weights is not supported on several workers (TF_CONFIG).")
        strategy = select_strategy()
        if config.backup_dir is not None:
            check_backup_dir(config.backup_dir, _backup_key(config))
    except DistributedError as exc:
        raise TrainingError(str(exc)) from None

    progress.on_stage("scanning", str(config.data))
    ds = discover(
        config.data,
        config.class_map,
        csv_kind=config.csv_kind,
        frontal_only=config.frontal_only,
        use_split=config.use_split,
        exclude=config.exclude,
    )
    classes = ds.classes
    _check_class_names(classes)
    progress.on_message(plan.description)
    if ds.skipped:
        progress.on_message(f"Skipped {len(ds.skipped)} files while scanning (listed in the report).")
    try:
        pool, held_out = hold_out_sources(ds.samples, config.val_sources)
        splits = split_dataset(pool, config.val_fraction, config.test_fraction, config.seed)
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    if held_out:
        splits["val"].extend(held_out)
        progress.on_message(
            f"Leave-source-out validation: {len(held_out)} images of {', '.join(config.val_sources)} "
            "are never trained on."
        )
    overlap = patient_overlap(splits)
    if overlap:
        progress.on_message(
            f"Warning: {len(overlap)} patients have images in more than one of the declared splits "
            f"(e.g. {next(iter(overlap))}); their validation/test scores are optimistic."
        )
    check_cancel(cancel)

    ordered = [s for name in SPLITS for s in splits[name]]
    x_all, kept, skipped = load_arrays(ordered, plan.preprocessing, config.cache_dir, progress, cancel)
    all_skipped = list(ds.skipped) + list(skipped)
    if skipped:
        progress.on_message(f"Skipped {len(skipped)} unreadable images (listed in the report).")
    if not kept:
        raise DatasetError("None of the images could be read.")
    class_index = {c: i for i, c in enumerate(classes)}
    arrays: dict[str, tuple[np.ndarray, np.ndarray, list[Sample]]] = {}
    for name in SPLITS:
        idx = [i for i, s in enumerate(kept) if s.split == name]
        arrays[name] = (
            x_all[idx],
            np.asarray([class_index[kept[i].label] for i in idx], np.int32),
            [kept[i] for i in idx],
        )
    del x_all
    counts = {name: _counts(arrays[name][2], classes) for name in SPLITS if arrays[name][2]}
    missing = [c for c, n in counts.get("train", dict.fromkeys(classes, 0)).items() if n == 0]
    if missing:
        raise DatasetError(f"No readable training images left for class(es): {', '.join(missing)}.")

    duplicates = _report_duplicates(arrays, config.duplicate_distance, progress)
    check_cancel(cancel)

    model, gradcam_layer, init_note = _build(plan, classes, config, strategy)
    if init_note:
        progress.on_message(init_note)
    transfer = _transfer(model, arrays, plan, config, progress, cancel, strategy) if plan.kind == "imagenet" else {}
    history, best_epoch, first_epoch = _fit(model, arrays, plan, config, progress, cancel, strategy)
    if task is not None:  # evaluated and saved as a one-process model; only the chief writes it
        model = local_copy(model)
        _compile(model, plan, config)
    epochs_run = first_epoch + len(history.get("loss", []))
    train_seconds = time.time() - started

    progress.on_stage("evaluating")
    calibration = _calibrate(model, arrays, plan, config, progress) if config.calibrate else None
    temperature = temperature_of(calibration)
    # The out-of-distribution scorer, fitted beside the temperature (inference.ood, issue 13).
    scorer, ood = _fit_ood(model, arrays, plan, config, progress) if config.calibrate else (None, None)
    metrics: dict[str, Any] = {}
    predictions: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in ("val", "test"):
        x, y, samples = arrays[name]
        if len(x) == 0:
            continue
        check_cancel(cancel)
        probs = apply_temperature(predict_arrays(model, x, plan.preprocessing, config.batch_size), temperature)
        m = compute_metrics(y, probs, classes)
        sources = [s.source for s in samples]
        if len({s for s in sources if s}) > 1:
            m["by_source"] = metrics_by_group(y, probs, [s or "(unknown)" for s in sources], classes)
            worst = worst_group(m["by_source"])
            if worst:
                m["worst_source"] = {"source": worst[0], "accuracy": worst[1]}
        metrics[name] = m
        predictions[name] = (y, probs)
        progress.on_message(f"{name}: {accuracy_line(m)}; macro-F1 {m['macro_f1'] or 0:.3f}")

    check_cancel(cancel)
    progress.on_stage("saving", str(out_dir))
    info = BundleInfo(
        name=config.name or out_dir.name,
        version=config.version,
        architecture=plan.arch,
        class_names=list(classes),
        preprocessing=plan.preprocessing,
        gradcam_layer=gradcam_layer,
        description=config.description,
        training={
            "data": {
                "path": str(config.data),
                "origin": ds.origin,
                "counts": counts,
                "sources": _sources(arrays),
                "n_images": int(sum(len(a[0]) for a in arrays.values())),
                "skipped": len(all_skipped),
                "patients_in_several_splits": len(overlap),
                "near_duplicates": len(duplicates),
                "content_hashes": {"file": CONTENT_HASHES_FILE, "algorithm": "sha256 of the file bytes"},
            },
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": config.command,
            "config": config.to_dict(),
            "init": " ".join(t for t in (plan.description, init_note) if t),
            "epochs_run": epochs_run,
            "learning_rate": initial_learning_rate(plan, config),
            "best_epoch": best_epoch,
            "training_seconds": round(train_seconds, 1),
            "hardware": _hardware(),
            "augmentation": _augment_config(config).to_dict() if config.augment else None,
            **({"transfer": transfer} if transfer else {}),
            **({"resumed_at_epoch": first_epoch} if first_epoch else {}),
        },
        metrics=metrics,
        calibration=calibration,
        ood=ood,
    )
    with tempfile.TemporaryDirectory(prefix="cxr-train-report-") as tmp:
        notes = [
            f"Data: {config.data} ({ds.origin}); classes: {', '.join(classes)}",
            "Images per split: " + "; ".join(f"{n}: {sum(c.values())} {c}" for n, c in counts.items() if c),
            "Initialisation: " + " ".join(t for t in (plan.description, init_note) if t),
            f"Epochs run: {epochs_run} (best: {best_epoch}); training time {train_seconds:.0f} s on {_hardware()}",
            f"Skipped files: {len(all_skipped)}; near-duplicate pairs across splits: {len(duplicates)}",
        ]
        paths = (
            write_report(
                metrics or {},
                tmp,
                history=history,
                title=f"Training report: {info.display_name}",
                predictions=predictions,
                notes=notes,
            )
            if metrics
            else _history_only_report(tmp, history, info.display_name, notes)
        )
        extra = {f"report/{name}": path for name, path in paths.items()}
        extra["report/skipped.csv"] = _write_rows(Path(tmp) / "skipped.csv", ("path", "reason"), all_skipped)
        extra["report/duplicates.csv"] = _write_rows(
            Path(tmp) / "duplicates.csv",
            ("split_a", "path_a", "split_b", "path_b", "distance"),
            [(d["split_a"], d["path_a"], d["split_b"], d["path_b"], d["distance"]) for d in duplicates],
        )
        # What an adaptation de-duplicates its local films against (training.adapt): the films the
        # weights were fitted on. Validation and test films are not, and a source held out with
        # --val-sources is exactly what a site may later adapt to.
        hashes = Path(tmp) / CONTENT_HASHES_FILE
        hashes.write_text(content_hashes_text(file_sha256(s.path) for s in arrays["train"][2]))
        extra[CONTENT_HASHES_FILE] = hashes
        if scorer is not None:  # inside the one atomic save: a half-written bundle never has it
            extra[OOD_FILE] = scorer.save(tmp)
        check_cancel(cancel)
        chief = task is None or task.is_chief
        bundle = write_bundle(model, info, out_dir, extra_files=extra, overwrite=replace_ok) if chief else out_dir
    return TrainResult(
        bundle_dir=bundle,
        info=info,
        history=history,
        metrics=metrics,
        skipped=all_skipped,
        duplicates=duplicates,
        init=plan.description,
        epochs_run=epochs_run,
        seconds=time.time() - started,
        counts=counts,
    )


def _with_crop(plan: InitPlan, config: TrainConfig) -> InitPlan:
    """Apply ``--crop``/``--crop-margin``; a fine-tuned bundle keeps its own crop unless told."""
    changes: dict[str, Any] = {}
    if config.crop is not None:
        if config.crop not in ("none", "lungs"):
            raise TrainingError(f"--crop must be none or lungs, not {config.crop!r}.")
        changes["crop"] = config.crop
    if config.crop_margin is not None:
        if not 0 <= config.crop_margin <= 0.5:
            raise TrainingError("--crop-margin must be between 0 and 0.5.")
        changes["crop_margin"] = float(config.crop_margin)
    if not changes:
        return plan
    return dataclasses.replace(plan, preprocessing=dataclasses.replace(plan.preprocessing, **changes))


def initial_learning_rate(plan: InitPlan, config: TrainConfig) -> float:
    """The initial learning rate: the configured one, else the default for this start."""
    if config.learning_rate is not None:
        return float(config.learning_rate)
    if plan.kind in ("bundle", "imagenet") or plan.arch == "vgg16":
        return 1e-4
    return 1e-3


def _check_config(config: TrainConfig, out_dir: Path) -> None:
    if config.arch is not None and config.arch not in ARCHITECTURES:
        raise TrainingError(f"Unknown architecture {config.arch!r}; choose one of {', '.join(ARCHITECTURES)}.")
    if config.epochs < 1:
        raise TrainingError("epochs must be at least 1.")
    if config.balance not in ("class", "class-source"):
        raise TrainingError(f"balance must be 'class' or 'class-source', not {config.balance!r}.")
    if config.batch_size < 1:
        raise TrainingError("batch size must be at least 1.")
    if config.learning_rate is not None and not config.learning_rate > 0:
        raise TrainingError("the learning rate must be positive.")
    if not 0 <= config.val_fraction < 1 or not 0 <= config.test_fraction < 1:
        raise TrainingError("validation and test fractions must be between 0 and 1.")
    for key, value, pattern in (("name", config.name, NAME_RE), ("version", config.version, VERSION_RE)):
        if value is not None and not pattern.match(value):
            raise TrainingError(f"--{key} {value!r} holds characters a model {key} may not have.")
    if len(config.description) > 2000 or any(ord(ch) < 32 and ch not in "\t\n\r" for ch in config.description):
        raise TrainingError("--description must be at most 2000 characters, without control characters.")


def _check_class_names(classes: Sequence[str]) -> None:
    """The class names must pass the model description's checks, or the save would fail after training."""
    bad = [c for c in classes if not CLASS_RE.match(c)]
    if bad:
        raise DatasetError(
            f"Class names must have 1-64 characters without quotes, backslashes, < > or control characters: "
            f"{', '.join(repr(c) for c in bad[:3])}. Rename them with --class-map."
        )
    if len(classes) > MAX_CLASSES:
        raise DatasetError(f"{len(classes)} classes; a model may have at most {MAX_CLASSES}.")


def check_output_folder(out_dir: Path, overwrite: bool) -> bool:
    """Refuse an output folder that would replace a model without ``overwrite``, before any work.

    Returns whether the final save may replace ``out_dir``: with ``overwrite``, or when it is
    an empty folder (made by a file dialog, say). Also removes temporary folders left beside
    it and in the temp folder by an earlier run that was killed while saving.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise TrainingError(f"{out_dir} is a file; the model is written to a folder.")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise TrainingError(f"{out_dir} already exists; choose another folder or allow overwriting (--overwrite).")
    clean_stale_temp_folders(out_dir.parent, reports=True)
    return overwrite or (out_dir.is_dir() and not any(out_dir.iterdir()))


def fit_callbacks(
    progress: TrainingProgress,
    cancel: threading.Event | None,
    *,
    epochs: int,
    steps_per_epoch: int,
    monitor: str,
    patience: int,
    mode: str = "min",
    before: Sequence[Any] = (),
) -> tuple[list[Any], Any]:
    """The callbacks every training shares: ``before`` (callbacks that add to the epoch's logs,
    such as a validation Dice), progress and cancel, then early stopping on ``monitor`` that
    restores the best epoch's weights. Returns ``(callbacks, early_stopping)``."""
    import keras

    early = keras.callbacks.EarlyStopping(
        monitor=monitor, mode=mode, patience=patience, restore_best_weights=True, verbose=0
    )
    progress_cb = KerasProgressCallback(progress, cancel, epochs=epochs, steps_per_epoch=steps_per_epoch)
    return [*before, progress_cb, early], early


def _counts(samples: list[Sample], classes: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(classes, 0)
    for s in samples:
        counts[s.label] += 1
    return counts


def _sources(arrays: dict[str, tuple[np.ndarray, np.ndarray, list[Sample]]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for name, (_, _, samples) in arrays.items():
        for s in samples:
            if s.source:
                out.setdefault(s.source, {}).setdefault(name, 0)
                out[s.source][name] += 1
    return dict(sorted(out.items()))


def _report_duplicates(
    arrays: dict[str, tuple[np.ndarray, np.ndarray, list[Sample]]], max_distance: int, progress: TrainingProgress
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    xt, _, st = arrays["train"]
    for other in ("val", "test"):
        xo, _, so = arrays[other]
        if len(xo) == 0:
            continue
        for a, b, d in find_near_duplicates(st, so, max_distance, arrays=(xt, xo)):
            found.append(
                {"split_a": "train", "path_a": str(a.path), "split_b": other, "path_b": str(b.path), "distance": d}
            )
    if found:
        first = found[0]
        progress.on_message(
            f"Warning: {len(found)} near-duplicate image pairs between training and validation/test "
            f"(e.g. {Path(first['path_a']).name} ~ {Path(first['path_b']).name}); listed in the report. "
            "Their scores will be optimistic."
        )
    return found


def _augment_config(config: TrainConfig) -> AugmentConfig:
    return AugmentConfig(horizontal_flip=config.horizontal_flip)


def _build(plan: InitPlan, classes: list[str], config: TrainConfig, strategy: Any) -> tuple[Any, str, str]:
    import keras

    keras.utils.set_random_seed(config.seed)
    try:
        with strategy.scope():
            if plan.kind == "bundle":
                model, layer, note = init_from_bundle(
                    plan.bundle_dir, classes, plan.arch, plan.size, dropout=config.dropout
                )
            else:
                model, layer = build_model(
                    plan.arch,
                    plan.size,
                    plan.preprocessing.channels,
                    len(classes),
                    weights=plan.weights,
                    dropout=config.dropout,
                )
                note = ""
            _compile(model, plan, config)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    replicas = strategy.num_replicas_in_sync
    if replicas > 1:
        kind = "MultiWorkerMirroredStrategy" if multi_worker_task() else "MirroredStrategy"
        note = (
            note + f" Training on {replicas} replicas ({kind}), "
            f"{global_batch_size(config.batch_size, strategy)} images per step."
        ).strip()
    return model, layer, note


def _compile(model: Any, plan: InitPlan, config: TrainConfig) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(initial_learning_rate(plan, config)),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )


def _transfer(
    model: Any,
    arrays: dict[str, tuple[np.ndarray, np.ndarray, list[Sample]]],
    plan: InitPlan,
    config: TrainConfig,
    progress: TrainingProgress,
    cancel: threading.Event | None,
    strategy: Any,
) -> dict[str, Any]:
    """ImageNet start: warm the head up on cached backbone features, then freeze all but the
    top blocks (see :mod:`training.finetune`). Returns what was done, for the bundle."""
    from training.finetune import block_names, freeze_for_finetuning, warm_up_head

    xt, yt, st = arrays["train"]
    xv, yv, _ = arrays["val"]
    n_classes = int(model.outputs[0].shape[-1])
    if config.balance == "class-source" and any(s.source for s in st):
        weights = group_balanced_weights(yt, [s.source or "(unknown)" for s in st], n_classes) * len(yt)
    else:
        per_class = class_weights(yt, n_classes)
        weights = np.asarray([per_class[int(c)] for c in yt], np.float32)
    done: dict[str, Any] = {}
    head_epochs = 200 if config.head_epochs is None else config.head_epochs
    if head_epochs > 0:
        done["warm_up"] = warm_up_head(
            model,
            (xt, yt, weights),
            (xv, yv) if len(xv) else None,
            plan.preprocessing,
            epochs=head_epochs,
            batch_size=config.batch_size,
            dropout=config.dropout,
            seed=config.seed,
            progress=progress,
            cancel=cancel,
        )
        w = done["warm_up"]
        progress.on_message(
            f"Warm-up of the classification layer on cached ImageNet features: {w['epochs_run']} epochs "
            f"in {w['seconds']:.0f} s"
            + (f", validation accuracy {w['val_accuracy']:.3f}" if "val_accuracy" in w else "")
        )
    unfreeze = config.unfreeze_blocks
    if unfreeze is None and block_names(model):
        unfreeze = 5
    try:
        n_trainable = freeze_for_finetuning(model, unfreeze)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    with strategy.scope():  # the optimizer's variables must be mirrored like the model's
        _compile(model, plan, config)
    done["unfreeze_blocks"] = "all" if unfreeze is None else unfreeze
    done["trainable_tensors"] = n_trainable
    progress.on_message(
        f"Fine-tuning {'all blocks' if unfreeze is None else f'the last {unfreeze} blocks'} "
        "(BatchNorm frozen) from the warmed-up head."
    )
    return done


def _calibrate(
    model: Any,
    arrays: dict[str, tuple[np.ndarray, np.ndarray, list[Sample]]],
    plan: InitPlan,
    config: TrainConfig,
    progress: TrainingProgress,
) -> dict[str, Any] | None:
    """The temperature fitted on the validation split (None when it is too small to fit one)."""
    from training.calibration import MIN_IMAGES, CalibrationError, calibration_record, model_logits

    xv, yv, _ = arrays["val"]
    if len(xv) < MIN_IMAGES:
        if len(xv):
            progress.on_message(f"Not calibrated: {len(xv)} validation images (at least {MIN_IMAGES} needed).")
        return None
    logits = model_logits(model, xv, plan.preprocessing, config.batch_size)
    try:
        record = calibration_record(logits, yv, f"validation split ({len(xv)} images)")
    except CalibrationError as exc:
        progress.on_message(f"Not calibrated: {exc}")
        return None
    progress.on_message(
        f"Calibration: temperature {record['temperature']:.3f} fitted on the validation split; "
        f"ECE {record['ece_before']:.3f} -> {record['ece_after']:.3f} there."
    )
    return record


def _fit_ood(
    model: Any,
    arrays: dict[str, tuple[np.ndarray, np.ndarray, list[Sample]]],
    plan: InitPlan,
    config: TrainConfig,
    progress: TrainingProgress,
) -> tuple[FeatureGaussians | None, dict[str, Any] | None]:
    """Class means on the training features, threshold on the validation ones (None without a
    validation split or a final Dense layer: the model then has no OOD gate)."""
    from training.ood_fit import fit_ood, logits_and_features

    (xt, yt, _), (xv, _, _) = arrays["train"], arrays["val"]
    if len(xv) < MIN_OOD_IMAGES or len(xt) < MIN_OOD_IMAGES:
        return None, None
    _, train_features = logits_and_features(model, xt, plan.preprocessing, config.batch_size)
    if train_features is None:
        progress.on_message("No out-of-distribution scorer: the network has no final Dense layer.")
        return None, None
    _, val_features = logits_and_features(model, xv, plan.preprocessing, config.batch_size)
    scorer, record = fit_ood(
        train_features, yt, val_features, f"training split ({len(xt)} images), threshold on validation ({len(xv)})"
    )
    progress.on_message(
        f"Out-of-distribution scorer: threshold {record['threshold']:.2f}; it turns away "
        f"{record['validation_abstain_rate']:.1%} of the validation images."
    )
    return scorer, record


def _fit(
    model: Any,
    arrays: dict[str, tuple[np.ndarray, np.ndarray, list[Sample]]],
    plan: InitPlan,
    config: TrainConfig,
    progress: TrainingProgress,
    cancel: threading.Event | None,
    strategy: Any,
) -> tuple[dict[str, list[float]], int, int]:
    """Returns ``(history, best epoch, epochs restored from the backup)``."""
    import keras

    xt, yt, st = arrays["train"]
    xv, yv, _ = arrays["val"]
    n_classes = int(model.outputs[0].shape[-1])
    sampling = None
    weights: dict[int, float] | None = class_weights(yt, n_classes)
    if config.balance == "class-source":
        sources = [s.source for s in st]
        if not any(sources):
            progress.on_message("No source column in the data: balancing by class only.")
        else:
            sampling, weights = group_balanced_weights(yt, [s or "(unknown)" for s in sources], n_classes), None
    # --batch-size is per replica. With several, every step is full: a replica handed an
    # empty remainder batch breaks BatchNormalization (an error, or a NaN loss).
    batch = global_batch_size(config.batch_size, strategy)
    full_batches = strategy.num_replicas_in_sync > 1 and sampling is None  # sampled batches are always full
    if full_batches and len(xt) < batch:
        raise TrainingError(f"{len(xt)} training images are fewer than one step ({batch} images); lower --batch-size.")
    train_ds = make_tf_dataset(
        xt,
        yt,
        plan.preprocessing,
        batch,
        training=True,
        seed=config.seed,
        augment=_augment_config(config) if config.augment else False,
        sampling_weights=sampling,
        drop_remainder=full_batches,
    )
    val_ds = make_tf_dataset(xv, yv, plan.preprocessing, batch, training=False) if len(xv) else None
    monitor = "val_loss" if val_ds is not None else "loss"
    steps = len(xt) // batch if full_batches else math.ceil(len(xt) / batch)
    callbacks, early = fit_callbacks(
        progress, cancel, epochs=config.epochs, steps_per_epoch=steps, monitor=monitor, patience=config.patience
    )
    if config.backup_dir is not None:  # first, so an epoch is saved before any later callback can fail
        done = check_backup_dir(config.backup_dir, _backup_key(config))
        callbacks.insert(0, backup_callback(stamp_backup_dir(config.backup_dir, _backup_key(config))))
        if done:
            progress.on_message(
                f"Resuming from the backup in {config.backup_dir}: {done} of {config.epochs} epochs already done."
            )
    callbacks += [
        keras.callbacks.ReduceLROnPlateau(
            monitor=monitor,
            factor=0.3,
            patience=max(1, config.patience // 2),
            min_lr=initial_learning_rate(plan, config) / 100,
        ),
        keras.callbacks.TerminateOnNaN(),
    ]
    progress.on_stage("training", f"{len(xt)} images, {steps} batches per epoch")
    task = multi_worker_task()
    if task is not None:  # Keras's fit fails under MultiWorkerMirroredStrategy: tf.distribute's own loop
        try:
            history, first = fit_multi_worker(
                model,
                train_ds,
                val_ds,
                strategy=strategy,
                task=task,
                epochs=config.epochs,
                steps_per_epoch=steps,  # each worker takes its share of every step
                global_batch=batch,
                class_weight=weights,
                callbacks=[early, *(c for c in callbacks if isinstance(c, keras.callbacks.ReduceLROnPlateau))],
                progress=progress,
                cancel=cancel,
                backup_dir=None if config.backup_dir is None else Path(config.backup_dir).expanduser(),
            )
        except DistributedError as exc:
            raise TrainingError(str(exc)) from None
        if any(not math.isfinite(v) for v in history.get("loss", [])):
            raise TrainingError("The training loss became NaN; try a lower learning rate (--lr).")
        return history, int(early.best_epoch) + 1, first
    fit = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        class_weight=weights,
        callbacks=callbacks,
        shuffle=False,  # the tf.data pipeline shuffles, reproducibly from the seed
        verbose=0,
    )
    check_cancel(cancel)
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    if any(not math.isfinite(v) for v in history.get("loss", [])):
        raise TrainingError("The training loss became NaN; try a lower learning rate (--lr).")
    return history, int(early.best_epoch) + 1, int(fit.epoch[0]) if fit.epoch else 0


def _backup_key(config: TrainConfig) -> dict[str, Any]:
    """What a backup must match to be resumed: the run's settings, less those that do not
    change the training (where the command came from, the decoding cache, overwriting)."""
    key = config.to_dict()
    for name in ("command", "cache_dir", "overwrite"):
        key.pop(name, None)
    return key


def _hardware() -> str:
    from inference.device import describe_device

    cpu = platform.processor() or platform.machine()
    return f"{describe_device()}; {os.cpu_count()} CPU cores ({cpu}); {platform.system()} {platform.release()}"


def _write_rows(path: Path, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _history_only_report(tmp: str, history: dict[str, list[float]], title: str, notes: list[str]) -> dict[str, Path]:
    """Without a validation split there is nothing to evaluate; keep the curves and notes."""
    from training.evaluate import plot_training_curves

    out = Path(tmp)
    lines = [f"# Training report: {title}", "", "No validation split: no metrics.", ""] + [f"- {n}" for n in notes]
    paths = {"report.md": out / "report.md"}
    paths["report.md"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    if history:
        paths["training_curves.png"] = plot_training_curves(history, out / "training_curves.png")
    return paths
