"""Adapting the model to a hospital's own films, safely: the reads become data, a gate decides.

The radiologist's verdicts (the reader's class, never the AI's) in the sidecar store are the
labels. :func:`samples_from_reads` turns them into training samples; :func:`split_local` holds at
least a fifth of the patients out as the *check set*, never trained on. After a fine-tune,
:func:`gate` compares the current and the new model on the check set with a paired bootstrap:
the new model is offered only when its gain is larger than its uncertainty (the 95% interval of
the difference in balanced accuracy lies above zero), and when it is not worse than the current
one beyond ``tolerance`` on a reference set (forgetting what it knew).

:func:`adapt` is the whole loop, the one code path behind ``main.py adapt`` and the viewer's
"Adapt to my reads": local films (reads and/or a labelled folder or CSV), minus those the
parent was trained on (its ``training_hashes.txt``), split by patient; the parent's
classification layer fine-tuned on the frozen network's features of the fine-tune films
(one forward pass per film), with two guards against forgetting what it knew: an L2 pull
toward the parent's weights, and rehearsal of its training distribution (features drawn from
the class Gaussians its out-of-distribution scorer stores); the
temperature refitted where at least ``MIN_IMAGES`` validation films allow it; both models
scored on the check set and on the reference images; the gate; and, only when it passes
(or when asked to keep a refused one), a NEW model folder with its lineage and a card
comparing parent and child. The parent is never written to.

Only the final Dense layer changes, so the penultimate features, and with them the parent's
out-of-distribution scorer (class means and threshold on those features), stay valid as
they are: the child carries the parent's ``ood.npz`` unchanged and says so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference.sidecar import SidecarStore
from training.samples import Sample
from training.splits import split_dataset

__all__ = [
    "AdaptConfig",
    "AdaptError",
    "AdaptResult",
    "EXIT_REFUSED",
    "MIN_CHECK_FRACTION",
    "adapt",
    "adapted_version",
    "replay_features",
    "GateResult",
    "balanced_accuracy",
    "gate",
    "paired_bootstrap",
    "samples_from_reads",
    "split_local",
]

MIN_CHECK_FRACTION = 0.2
DEFAULT_TOLERANCE = 0.02
MIN_LOCAL_FILMS = 10  # fewer cannot be split into fine-tune and check films that mean anything
MAX_REFERENCE = 1000  # reference images drawn from the parent's own validation split
MAX_REHEARSAL = 300  # rehearsal images (class-balanced) when the top blocks are adapted
DEFAULT_ADAPT_BLOCKS = 0
# ``main.py adapt`` exits with this when the gate refuses the new model (0: accepted and
# written, 1: bad input, 2: unusable model folder, 130: cancelled).
EXIT_REFUSED = 3


def samples_from_reads(store: SidecarStore, class_names: Sequence[str]) -> tuple[list[Sample], list[tuple[str, str]]]:
    """One sample per read film whose reader's class is one of the model's; the rest listed with why."""
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    for key in store.film_keys():
        try:
            sidecar = store.load(key)
        except Exception as exc:  # a damaged sidecar is set aside by the store; say so and go on
            skipped.append((key, str(exc)))
            continue
        verdict = sidecar.verdict
        if verdict is None or verdict.reader_class is None:
            continue
        if verdict.reader_class not in class_names:
            skipped.append((sidecar.file or key, f"reader's class '{verdict.reader_class}' is not one of the model's"))
            continue
        if not sidecar.file or not Path(sidecar.file).is_file():
            skipped.append((sidecar.file or key, "the film is no longer where it was read"))
            continue
        patient = _patient_id(Path(sidecar.file))
        samples.append(
            Sample(Path(sidecar.file), verdict.reader_class, patient_id=patient, source="local", meta={"key": key})
        )
    return samples, skipped


def _patient_id(path: Path) -> str:
    """The DICOM Patient ID (read from the header only), or "" for a film that names none."""
    from inference.loading import import_pydicom, sniff_format

    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
        if sniff_format(head) != "DICOM":
            return ""
        import_pydicom()
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
        return str(ds.get("PatientID", "") or "").strip()
    except (OSError, ValueError, TypeError, AttributeError):
        return ""


def split_local(
    samples: list[Sample], check_fraction: float = MIN_CHECK_FRACTION, seed: int = 0
) -> dict[str, list[Sample]]:
    """Patient-level, class-stratified split: ``train`` and ``val`` to fine-tune, ``test`` to check."""
    if check_fraction < MIN_CHECK_FRACTION:
        raise ValueError(f"at least {MIN_CHECK_FRACTION:.0%} of the films must be held out for checking")
    for s in samples:
        s.split = ""
    return split_dataset(samples, val_fraction=0.15, test_fraction=check_fraction, seed=seed)


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    recalls = [float(np.mean(pred[y == c] == c)) for c in range(n_classes) if np.any(y == c)]
    return float(np.mean(recalls)) if recalls else float("nan")


def paired_bootstrap(
    y: np.ndarray,
    pred_current: np.ndarray,
    pred_new: np.ndarray,
    n_classes: int,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(difference, 2.5th, 97.5th percentile) of new minus current balanced accuracy over resamples."""
    y, a, b = (np.asarray(v, dtype=np.int64) for v in (y, pred_current, pred_new))
    if not (len(y) == len(a) == len(b)) or len(y) == 0:
        raise ValueError("labels and both models' predictions must be the same non-empty length")
    delta = balanced_accuracy(y, b, n_classes) - balanced_accuracy(y, a, n_classes)
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        diffs[i] = balanced_accuracy(y[idx], b[idx], n_classes) - balanced_accuracy(y[idx], a[idx], n_classes)
    diffs = diffs[np.isfinite(diffs)]
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(delta), float(lo), float(hi)


@dataclass
class GateResult:
    accept: bool
    reasons: list[str]
    figures: dict[str, Any] = field(default_factory=dict)


def gate(
    check: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_classes: int,
    reference: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    n_boot: int = 2000,
    seed: int = 0,
) -> GateResult:
    """Decide whether the new model may be offered. Each tuple is (labels, current's, new's predictions)."""
    reasons: list[str] = []
    delta, lo, hi = paired_bootstrap(*check, n_classes=n_classes, n_boot=n_boot, seed=seed)
    figures: dict[str, Any] = {
        "check": {"n": int(len(check[0])), "delta_balanced_accuracy": delta, "ci95": [lo, hi]},
        "tolerance": tolerance,
    }
    better = lo > 0.0
    reasons.append(
        f"Local check set ({len(check[0])} films): balanced accuracy {delta:+.3f} (95% CI {lo:+.3f} to {hi:+.3f}); "
        + ("better beyond its uncertainty." if better else "not better beyond its uncertainty.")
    )
    kept = True
    if reference is not None and len(reference[0]):
        r_delta, r_lo, r_hi = paired_bootstrap(*reference, n_classes=n_classes, n_boot=n_boot, seed=seed)
        figures["reference"] = {"n": int(len(reference[0])), "delta_balanced_accuracy": r_delta, "ci95": [r_lo, r_hi]}
        kept = r_delta >= -tolerance
        reasons.append(
            f"Reference set ({len(reference[0])} films): balanced accuracy {r_delta:+.3f} "
            f"(95% CI {r_lo:+.3f} to {r_hi:+.3f}); "
            + (f"within the tolerance of {tolerance:.2f}." if kept else f"worse than the tolerance of {tolerance:.2f}.")
        )
    else:
        reasons.append("No reference set: forgetting was not checked.")
    return GateResult(accept=better and kept, reasons=reasons, figures=figures)


# ---------------------------------------------------------------------------------------------
# The whole loop


class AdaptError(Exception):
    """The adaptation cannot start or finish as asked; the message says why."""


@dataclass
class AdaptConfig:
    parent: Path | str  # the model folder to adapt (never written to)
    out_dir: Path | str | None  # the new model folder (must not exist); None: not written at all
    reads_dir: Path | str | None = None  # a verdict store (<user data>/reads) to take labels from
    data: Path | str | None = None  # a folder of class subfolders or a CSV, as ``train`` reads them
    class_map: dict[str, str] | None = None
    reference: Path | str | None = None  # labelled images for the forgetting check (default: see adapt())
    check_fraction: float = MIN_CHECK_FRACTION
    tolerance: float = DEFAULT_TOLERANCE
    epochs: int = 300  # full-batch steps of the classification layer
    early_stop: bool = False  # stop at the best local validation loss instead
    learning_rate: float = 1e-3
    # Defaults chosen by 4-fold cross-validation inside the 200-film NIH pool of
    # benchmarks/bench_adaptation.py (never on its evaluation films): the best gain that kept the
    # reference loss within 0.01 (see bench_adaptation.md).
    anchor: float = 0.1  # L2 pull toward the parent's weights (per weight, relative to the loss)
    # Rehearsal of what the parent knew: features drawn from the class Gaussians its OOD scorer
    # stores (fitted on its training images), mixed in with this share of the loss.
    replay_per_class: int = 500
    replay_weight: float = 3.0
    batch_size: int = 32
    cache_dir: Path | str | None = None
    seed: int = 0
    n_boot: int = 2000
    version: str | None = None  # default: adapted_version(parent's)
    keep_refused: bool = False  # write the model even when the gate refuses it (marked refused)
    # 0: only the classification layer (above). N > 0: also the last N inverted-residual blocks and
    # the head convolution (BatchNorm frozen), on cached block inputs, with the same L2-SP pull and
    # rehearsal of real images of the parent's training distribution (``rehearsal``, else its own
    # training images when they are still where they were; without any, the classification layer
    # only, said so). Default from bench_adaptation_tune_blocks.py (see bench_adaptation.md).
    adapt_blocks: int = DEFAULT_ADAPT_BLOCKS
    block_steps: int = 150  # Adam steps of the top blocks (mini-batches of local + rehearsal films)
    block_learning_rate: float = 1e-4
    block_anchor: float = 0.1  # L2-SP pull on every trained weight of the blocks and head
    block_replay_weight: float = 10.0  # the rehearsal images against the local films
    block_distill: bool = True  # rehearsal targets: the parent's probabilities (else the labels)
    rehearsal: Path | str | None = None  # labelled images of the parent's training distribution
    max_rehearsal: int = MAX_REHEARSAL


@dataclass
class AdaptResult:
    accepted: bool
    reasons: list[str]
    report: dict[str, Any]  # everything --json writes
    bundle_dir: Path | None  # None when nothing was written


def adapted_version(version: str) -> str:
    """``1.1.1`` -> ``1.1.1-adapted.1``; ``1.1.1-adapted.1`` -> ``1.1.1-adapted.2``."""
    import re

    m = re.fullmatch(r"(.*)-adapted\.(\d+)", version)
    return f"{m.group(1)}-adapted.{int(m.group(2)) + 1}" if m else f"{version}-adapted.1"


def _softmax(z: np.ndarray, t: float = 1.0) -> np.ndarray:
    from inference.calibration import softmax

    return softmax(z, t)


def fit_head(
    features: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    w0: np.ndarray,
    b0: np.ndarray,
    val: tuple[np.ndarray, np.ndarray] | None,
    *,
    replay: tuple[np.ndarray, np.ndarray] | None = None,
    replay_weight: float = 1.0,
    early_stop: bool = False,
    steps: int,
    learning_rate: float,
    anchor: float,
    progress: Any = None,
    cancel: Any = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The classification layer fine-tuned from ``(w0, b0)``: class-weighted cross-entropy plus
    ``anchor * |W - W0|^2`` (L2-SP), full-batch Adam for ``steps`` steps; with ``early_stop`` the
    weights of the best validation loss are kept (patience 50). A few local validation films make
    a noisy stopping signal, so the default is the fixed number of steps the benchmark chose."""
    from training.progress import check_cancel

    x = np.asarray(features, np.float64)
    y = np.asarray(labels, np.int64)
    sw = np.asarray(weights, np.float64) / max(float(np.sum(weights)), 1e-12)
    if replay is not None and len(replay[0]):
        # The local films and the rehearsed parent features weigh 1 : replay_weight in the loss.
        x = np.concatenate([x, np.asarray(replay[0], np.float64)])
        y = np.concatenate([y, np.asarray(replay[1], np.int64)])
        rw = np.full(len(replay[0]), replay_weight / len(replay[0]))
        sw = np.concatenate([sw, rw]) / (1.0 + replay_weight)
    k = w0.shape[1]
    onehot = np.eye(k)[y]
    w, b = w0.astype(np.float64).copy(), b0.astype(np.float64).copy()
    params = [w, b]
    m = [np.zeros_like(q) for q in params]
    v = [np.zeros_like(q) for q in params]

    def val_loss(w_: np.ndarray, b_: np.ndarray) -> float:
        xv, yv = val  # type: ignore[misc]
        p = _softmax(np.asarray(xv, np.float64) @ w_ + b_)
        return float(-np.mean(np.log(np.maximum(p[np.arange(len(yv)), yv], 1e-12))))

    best = (val_loss(w, b) if val is not None else np.inf, w.copy(), b.copy(), 0)
    if progress is not None:
        progress.on_train_begin(steps, 1)
    step = 0
    for step in range(1, steps + 1):
        p = _softmax(x @ w + b)
        g = (p - onehot) * sw[:, None]
        grads = [x.T @ g + 2 * anchor * (w - w0), g.sum(axis=0)]
        for i, (q, dq) in enumerate(zip(params, grads, strict=True)):
            m[i] = 0.9 * m[i] + 0.1 * dq
            v[i] = 0.999 * v[i] + 0.001 * dq * dq
            q -= learning_rate * (m[i] / (1 - 0.9**step)) / (np.sqrt(v[i] / (1 - 0.999**step)) + 1e-8)
        loss = float(-np.sum(sw * np.log(np.maximum(p[np.arange(len(y)), y], 1e-12))))
        logs = {"loss": loss}
        if val is not None:
            vl = val_loss(w, b)
            logs["val_loss"] = vl
            if not early_stop:
                best = (vl, w, b, step)
            elif vl < best[0] - 1e-6:
                best = (vl, w.copy(), b.copy(), step)
            elif step - best[3] >= 50:
                break
        if progress is not None and (step % 10 == 0 or step == steps):
            progress.on_epoch_end(step - 1, logs)
        if step % 10 == 0:
            check_cancel(cancel)
    if val is None:
        best = (np.nan, w.copy(), b.copy(), step)
    summary = {"steps_run": step, "best_step": best[3], "best_val_loss": None if val is None else round(best[0], 4)}
    return best[1].astype(np.float32), best[2].astype(np.float32), summary


def top_outputs(top: Any, h: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, penultimate features)`` of cached block inputs ``h`` through ``top``
    (:func:`training.finetune.split_at_block`), in inference mode."""
    if len(h) == 0:
        d = int(top.outputs[1].shape[-1])
        return np.zeros((0, int(top.outputs[0].shape[-1]))), np.zeros((0, d), np.float32)
    outs = [top(h[i : i + batch_size], training=False) for i in range(0, len(h), batch_size)]
    logits = np.concatenate([np.asarray(o[0]) for o in outs]).astype(np.float64)
    return logits, np.concatenate([np.asarray(o[1]) for o in outs]).astype(np.float32)


def fit_top(
    top: Any,
    h: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    *,
    rehearsal: tuple[np.ndarray, np.ndarray] | None = None,
    replay_weight: float = 1.0,
    steps: int,
    learning_rate: float,
    anchor: float,
    distill: bool = False,
    batch_size: int = 32,
    seed: int = 0,
    progress: Any = None,
    cancel: Any = None,
) -> dict[str, Any]:
    """Fine-tune the trainable weights of ``top`` (the last blocks, the head convolution and the
    classification layer; BatchNorm frozen) in place, on cached block inputs ``h``.

    Each Adam step draws ``batch_size`` local films (loss weighted by ``weights``) and as many
    rehearsal images of the parent's training distribution (weight ``replay_weight`` against
    the local films), plus ``anchor * |theta - theta_parent|^2`` over the trained weights
    (L2-SP: the pull toward the parent's weights). With ``distill`` the rehearsal images' targets
    are the parent's own probabilities (learning without forgetting: keep what the parent
    answered, not only its labels) instead of their labels."""
    import keras
    import tensorflow as tf

    from training.progress import check_cancel

    variables = list(top.trainable_variables)
    if not variables:
        raise ValueError("nothing to train: the top of the network is frozen")
    start = [tf.constant(np.asarray(v.numpy())) for v in variables]
    optimizer = keras.optimizers.Adam(learning_rate)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
    soft_ce = keras.losses.CategoricalCrossentropy(from_logits=True, reduction="sum")
    rw = float(replay_weight) if rehearsal is not None and len(rehearsal[0]) else 0.0

    def weighted(x: Any, y: Any, w: Any) -> Any:
        loss = soft_ce if len(y.shape) == 2 else ce  # soft targets: the parent's probabilities
        return loss(y, top(x, training=True)[0], sample_weight=w) / tf.reduce_sum(w)

    @tf.function(reduce_retracing=True, autograph=False)
    def step_fn(xl: Any, yl: Any, wl: Any, xr: Any, yr: Any, wr: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = weighted(xl, yl, wl)
            if rw:
                loss = (loss + rw * weighted(xr, yr, wr)) / (1.0 + rw)
            pull = tf.add_n([tf.reduce_sum(tf.square(v.value - v0)) for v, v0 in zip(variables, start, strict=True)])
            total = loss + anchor * pull
        grads = tape.gradient(total, [v.value for v in variables])
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    y = np.asarray(labels, np.int32)
    w = np.asarray(weights, np.float32)
    if rw:
        hr, yr = rehearsal  # type: ignore[misc]
        yr = np.asarray(yr, np.int32)
        counts = np.bincount(yr, minlength=int(y.max(initial=0)) + 1).astype(np.float32)
        wr_all = (len(yr) / (np.count_nonzero(counts) * np.maximum(counts, 1)))[yr].astype(np.float32)
        if distill:
            yr = _softmax(top_outputs(top, hr)[0]).astype(np.float32)  # before any step: the parent's
    if progress is not None:
        progress.on_train_begin(steps, 1)
    losses: list[float] = []
    for step in range(1, steps + 1):
        i = rng.choice(len(h), min(batch_size, len(h)), replace=False)
        if rw:
            j = rng.choice(len(hr), min(batch_size, len(hr)), replace=False)
            xr_b, yr_b, wr_b = hr[j], yr[j], wr_all[j]
        else:
            xr_b, yr_b, wr_b = h[i], y[i], w[i]  # unused: rw == 0
        loss = float(step_fn(h[i], y[i], w[i], xr_b, yr_b, wr_b))
        losses.append(loss)
        if progress is not None and (step % 10 == 0 or step == steps):
            progress.on_epoch_end(step - 1, {"loss": float(np.mean(losses[-10:]))})
        if step % 5 == 0:
            check_cancel(cancel)
    return {"steps_run": steps, "final_loss": round(float(np.mean(losses[-10:])), 4) if losses else None}


def replay_features(scorer: Any, n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features of the parent's training distribution, drawn from its OOD scorer's class Gaussians
    (class means and shared covariance of the training features), with their class labels."""
    cov = np.linalg.inv(np.asarray(scorer.precision, np.float64))
    cov = (cov + cov.T) / 2
    vals, vecs = np.linalg.eigh(cov)
    root = vecs * np.sqrt(np.clip(vals, 0.0, None))  # cov = root @ root.T, robust to round-off
    rng = np.random.default_rng(seed)
    k, d = scorer.means.shape
    x = np.concatenate([scorer.means[c] + rng.standard_normal((n_per_class, d)) @ root.T for c in range(k)])
    return x.astype(np.float32), np.repeat(np.arange(k), n_per_class).astype(np.int32)


def _local_samples(
    config: AdaptConfig, classes: list[str], progress: Any
) -> tuple[list[Sample], dict[str, Any], list[tuple[str, str]]]:
    """The labelled local films (reads first, then DATA) with counts of what came from where."""
    from training.datasets import discover

    samples: list[Sample] = []
    counts: dict[str, Any] = {"from_reads": 0, "from_data": 0, "excluded_not_a_model_class": 0}
    skipped: list[tuple[str, str]] = []
    if config.reads_dir is not None:
        folder = Path(config.reads_dir).expanduser()
        if not folder.is_dir():
            raise AdaptError(f"No reads were found: {folder} is not a folder of the viewer's reads.")
        progress.on_stage("scanning", f"reads in {folder}")
        reads, skip = samples_from_reads(SidecarStore(folder), classes)
        counts["from_reads"] = len(reads)
        counts["excluded_not_a_model_class"] = sum(1 for _p, r in skip if "is not one of the model's" in r)
        samples += reads
        skipped += skip
    if config.data is not None:
        progress.on_stage("scanning", str(config.data))
        ds = discover(config.data, config.class_map, use_split=False)
        kept = [s for s in ds.samples if s.label in classes]
        wrong = sorted({s.label for s in ds.samples if s.label not in classes})
        if wrong:
            skipped += [
                (str(s.path), f"class '{s.label}' is not one of the model's") for s in ds.samples if s.label in wrong
            ]
            counts["excluded_not_a_model_class"] += len(ds.samples) - len(kept)
        for s in kept:
            s.split, s.source = "", s.source or "local"
        counts["from_data"] = len(kept)
        samples += kept
        skipped += list(ds.skipped)
    if config.reads_dir is None and config.data is None:
        raise AdaptError("Nothing to adapt to: give --reads (the reader's verdicts) and/or DATA (labelled films).")
    return samples, counts, skipped


def _deduplicate(samples: list[Sample], parent_hashes: set[str] | None) -> tuple[list[Sample], dict[str, Any]]:
    """Local films less exact copies of one another and of the parent's training images."""
    from inference.sidecar import file_sha256

    seen: set[str] = set()
    kept: list[Sample] = []
    copies = in_parent = 0
    for s in samples:
        try:
            h = file_sha256(s.path)
        except OSError:
            kept.append(s)  # unreadable: the decoder reports it with its reason
            continue
        s.meta["sha256"] = h
        if h in seen:
            copies += 1
        elif parent_hashes is not None and h in parent_hashes:
            in_parent += 1
        else:
            seen.add(h)
            kept.append(s)
    return kept, {
        "local_copies_removed": copies,
        "in_parent_training_data": in_parent if parent_hashes is not None else "not checked",
    }


def _reference_samples(config: AdaptConfig, info: Any, classes: list[str], progress: Any) -> tuple[list[Sample], str]:
    """Images to catch forgetting on: ``--reference``, else the parent's own validation split
    when its training data is still where it was, else none (said so)."""
    from training.datasets import discover, discover_as_trained
    from training.ood_fit import recreate_split

    if config.reference is not None:
        ds = discover(config.reference, config.class_map, use_split=False)
        return [s for s in ds.samples if s.label in classes], f"reference images {config.reference}"
    data = (info.training.get("data") or {}).get("path")
    if data and Path(data).exists() and info.training.get("config"):
        try:
            ds = discover_as_trained(data, info.training["config"])
            val = [s for s in recreate_split(ds.samples, info.training)["val"] if s.label in classes]
        except Exception as exc:  # an unusable old data set is not the adaptation's failure
            progress.on_message(f"The parent's validation images could not be used ({exc}).")
            return [], ""
        rng = np.random.default_rng(config.seed)
        if len(val) > MAX_REFERENCE:
            val = [val[i] for i in sorted(rng.choice(len(val), MAX_REFERENCE, replace=False))]
        return val, f"the parent's own validation images ({data})"
    return [], ""


def _rehearsal_samples(config: AdaptConfig, info: Any, classes: list[str]) -> tuple[list[Sample], str]:
    """Real images of the parent's training distribution to rehearse while its blocks change:
    ``rehearsal``, else its own training images when they are still where they were, else none.
    At most ``max_rehearsal``, drawn class by class (the same number of each where possible)."""
    from training.datasets import discover
    from training.ood_fit import recreate_split

    pool: list[Sample] = []
    label = ""
    if config.rehearsal is not None:
        ds = discover(config.rehearsal, config.class_map, use_split=False)
        pool, label = [s for s in ds.samples if s.label in classes], f"rehearsal images {config.rehearsal}"
    else:
        data = (info.training.get("data") or {}).get("path")
        if data and Path(data).exists() and info.training.get("config"):
            cfg = info.training["config"]
            try:
                ds = discover(
                    data,
                    cfg.get("class_map"),
                    csv_kind=cfg.get("csv_kind", "auto"),
                    use_split=bool(cfg.get("use_split", True)),
                )
                pool = [s for s in recreate_split(ds.samples, info.training)["train"] if s.label in classes]
                label = f"the parent's own training images ({data})"
            except Exception:  # an unusable old data set: no rehearsal images, said by the caller
                pool = []
    rng = np.random.default_rng(config.seed)
    per_class = max(1, config.max_rehearsal // max(1, len(classes)))
    drawn: list[Sample] = []
    for c in classes:
        of_c = [s for s in pool if s.label == c]
        take = sorted(rng.choice(len(of_c), min(per_class, len(of_c)), replace=False)) if of_c else []
        drawn += [of_c[i] for i in take]
    return drawn, label if drawn else ""


def _model_hash(folder: Path) -> str:
    from inference.model_folder import MODEL_FILE
    from inference.sidecar import file_sha256

    return "sha256:" + file_sha256(folder / MODEL_FILE)


def _summary(m: dict[str, Any], abstain: float | None) -> dict[str, Any]:
    """The figures compared side by side (from training.evaluate.compute_metrics)."""
    return {
        "n": m["n_images"],
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "recall": {c: v["recall"] for c, v in m["per_class"].items()},
        "ece": m["ece"],
        "abstain_rate": abstain,
        "confusion_matrix": m["confusion_matrix"],
    }


def adapt(
    config: AdaptConfig,
    progress: Any = None,
    cancel: Any = None,
    *,
    reference_arrays: tuple[np.ndarray, np.ndarray] | None = None,
    rehearsal_arrays: tuple[np.ndarray, np.ndarray] | None = None,
    local: list[Sample] | None = None,
) -> AdaptResult:
    """Run the adaptation loop (module docstring). ``reference_arrays`` and ``rehearsal_arrays``
    (preprocessed uint8 images, labels) and ``local`` (labelled samples) let a benchmark pass
    data it already holds.
    Raises AdaptError/DatasetError/BundleError for bad input, TrainingCancelled on cancel;
    nothing is written unless the gate passes or ``keep_refused``."""
    import tempfile
    from datetime import UTC, datetime

    from inference.bundle import BundleInfo, load_bundle, read_bundle_info, write_bundle
    from inference.calibration import temperature_of
    from inference.model_folder import (
        CARD_FILE,
        CONTENT_HASHES_FILE,
        content_hashes_text,
        read_content_hashes,
        read_description,
    )
    from inference.ood import OOD_FILE, feature_layer, load_feature_gaussians
    from training.calibration import MIN_IMAGES, CalibrationError, calibration_record
    from training.evaluate import compute_metrics
    from training.finetune import freeze_for_finetuning, split_at_block
    from training.ood_fit import fit_ood, logits_and_features
    from training.pipeline import class_weights, load_arrays, predict_arrays
    from training.progress import NullProgress, check_cancel
    from training.samples import DatasetError

    progress = progress or NullProgress()
    parent_dir = Path(config.parent).expanduser().resolve()
    info = read_bundle_info(parent_dir)
    classes, pre = list(info.class_names), info.preprocessing
    out_dir = Path(config.out_dir).expanduser() if config.out_dir is not None else None
    if out_dir is not None and out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise AdaptError(f"{out_dir} already exists; an adapted model is always written to a new folder.")
    if out_dir is not None and out_dir.resolve() == parent_dir:
        raise AdaptError("The adapted model cannot replace the model it starts from.")
    if config.check_fraction < MIN_CHECK_FRACTION:
        raise AdaptError(f"At least {MIN_CHECK_FRACTION:.0%} of the local films must be held out for checking.")

    counts: dict[str, Any] = {}
    skipped: list[tuple[str, str]] = []
    if local is None:
        local, counts, skipped = _local_samples(config, classes, progress)
    else:
        counts = {"from_data": len(local)}
    parent_hashes = read_content_hashes(parent_dir, read_description(parent_dir))
    local, dedup = _deduplicate(local, parent_hashes)
    counts.update(dedup)
    if parent_hashes is None:
        progress.on_message(
            "The parent model carries no training-data hashes: overlap with its training data not checked."
        )
    elif dedup["in_parent_training_data"]:
        progress.on_message(
            f"{dedup['in_parent_training_data']} local films were in the parent's training data: left out."
        )
    if len(local) < MIN_LOCAL_FILMS:
        raise AdaptError(
            f"{len(local)} usable local films; at least {MIN_LOCAL_FILMS} labelled films of the model's classes "
            f"({', '.join(classes)}) are needed to fine-tune and check."
        )
    try:
        splits = split_local(local, config.check_fraction, config.seed)
    except ValueError as exc:
        raise AdaptError(str(exc)) from None
    check_cancel(cancel)

    ordered = splits["train"] + splits["val"] + splits["test"]
    x, kept, unreadable = load_arrays(ordered, pre, config.cache_dir, progress, cancel)
    skipped += unreadable
    index = {c: i for i, c in enumerate(classes)}
    part = {name: [i for i, s in enumerate(kept) if s.split == name] for name in ("train", "val", "test")}
    y = np.asarray([index[s.label] for s in kept], np.int32)
    if len(part["train"]) < 2 or len(part["test"]) < 2:
        raise DatasetError("Too few readable local films to fine-tune and check (see the skipped list).")
    ref_samples, ref_label = (
        ([], "") if reference_arrays is not None else _reference_samples(config, info, classes, progress)
    )
    if reference_arrays is not None:
        ref_label = "reference images given by the caller"
    check_cancel(cancel)

    if config.adapt_blocks < 0:
        raise AdaptError("--adapt-blocks cannot be negative.")
    blocks = config.adapt_blocks
    xh: np.ndarray | None = None  # rehearsal images (uint8) when the top blocks are adapted
    yh: np.ndarray | None = None
    rehearsal_label = ""
    if blocks:
        if rehearsal_arrays is not None:
            xh, yh = rehearsal_arrays
            rehearsal_label = "rehearsal images given by the caller"
        else:
            reh_samples, rehearsal_label = _rehearsal_samples(config, info, classes)
            if reh_samples:
                xh, kept_h, _ = load_arrays(reh_samples, pre, config.cache_dir, progress, cancel)
                yh = np.asarray([index[s.label] for s in kept_h], np.int32)
        if xh is None or len(xh) == 0:
            progress.on_message(
                "No images of the parent's training distribution to rehearse (give --rehearsal): "
                "only the classification layer is adapted."
            )
            blocks = 0

    # Reference images first: with the top blocks adapted, the network's weights change in place.
    if reference_arrays is not None:
        xr, yr = reference_arrays
    elif ref_samples:
        xr, kept_r, _ = load_arrays(ref_samples, pre, config.cache_dir, progress, cancel)
        yr = np.asarray([index[s.label] for s in kept_r], np.int32)
    else:
        xr, yr = np.zeros((0, pre.size, pre.size), np.uint8), np.zeros(0, np.int32)
    check_cancel(cancel)

    progress.on_stage("features", f"{len(kept)} local films through {info.display_name}")
    model, _ = load_bundle(parent_dir)
    layer = feature_layer(model)
    activation = getattr(getattr(layer, "activation", None), "__name__", "")
    if layer is None or len(layer.input.shape) != 2 or activation != "linear":
        raise AdaptError(f"{info.display_name} has no final linear Dense layer; it cannot be adapted this way.")
    top = None
    if blocks:
        try:
            bottom, top, first_block = split_at_block(model, blocks)
        except ValueError as exc:
            raise AdaptError(f"{info.display_name}: {exc}") from None
        # The bottom of the network is never trained: its output is computed once per image.
        h = predict_arrays(bottom, x, pre, config.batch_size)
        hh = predict_arrays(bottom, xh, pre, config.batch_size)
        hr = predict_arrays(bottom, xr, pre, config.batch_size)
        check_cancel(cancel)
        logits, feats = top_outputs(top, h)
        lr_parent, fr_parent = top_outputs(top, hr)
    else:
        logits, feats = logits_and_features(model, x, pre, config.batch_size)
        lr_parent, fr_parent = logits_and_features(model, xr, pre, config.batch_size) if len(xr) else (None, None)
    check_cancel(cancel)
    w0, b0 = (np.asarray(a) for a in layer.get_weights())
    t_parent = temperature_of(info.calibration)

    scorer = load_feature_gaussians(parent_dir) if info.ood else None
    yt = y[part["train"]]
    cw = class_weights(yt, len(classes))
    if blocks:
        trained = f"the last {blocks} blocks (from {first_block}), the head convolution and the classification layer"
        replay_note = (
            f"Rehearsal: {len(hh)} images of the parent's training distribution ({rehearsal_label}), "
            f"weight {config.block_replay_weight:g} against the local films, "
            + ("the parent's own probabilities as targets." if config.block_distill else "their labels as targets.")
        )
        progress.on_message(replay_note)
        progress.on_stage("training", f"{trained} on {len(part['train'])} films")
        freeze_for_finetuning(model, blocks)
        fit = fit_top(
            top,
            h[part["train"]],
            yt,
            np.asarray([cw.get(int(c), 1.0) for c in yt]),
            rehearsal=(hh, np.asarray(yh)),
            replay_weight=config.block_replay_weight,
            steps=config.block_steps,
            learning_rate=config.block_learning_rate,
            anchor=config.block_anchor,
            distill=config.block_distill,
            batch_size=config.batch_size,
            seed=config.seed,
            progress=progress,
            cancel=cancel,
        )
        fit["trained"] = trained
        check_cancel(cancel)
        child_logits, child_feats = top_outputs(top, h)
        lr_child, fr_child = top_outputs(top, hr)
        w, b = (np.asarray(a, np.float64) for a in layer.get_weights())
    else:
        trained = "the classification layer"
        replay, replay_note = None, "No rehearsal: the parent carries no class Gaussians of its training features."
        if scorer is not None and scorer.means.shape == (len(classes), feats.shape[1]) and config.replay_per_class > 0:
            replay = replay_features(scorer, config.replay_per_class, config.seed)
            replay_note = (
                f"Rehearsal: {config.replay_per_class} features per class drawn from the parent's training-feature "
                f"Gaussians (its out-of-distribution scorer), weight {config.replay_weight:g} against the local films."
            )
        progress.on_message(replay_note)
        progress.on_stage("training", f"classification layer on {len(part['train'])} films")
        val = (feats[part["val"]], y[part["val"]]) if part["val"] else None
        w, b, fit = fit_head(
            feats[part["train"]],
            yt,
            np.asarray([cw.get(int(c), 1.0) for c in yt]),
            w0,
            b0,
            val,
            replay=replay,
            replay_weight=config.replay_weight,
            early_stop=config.early_stop,
            steps=config.epochs,
            learning_rate=config.learning_rate,
            anchor=config.anchor,
            progress=progress,
            cancel=cancel,
        )
        fit["trained"] = trained
        child_logits, child_feats = feats.astype(np.float64) @ w + b, feats
        lr_child = None if fr_parent is None else fr_parent.astype(np.float64) @ w + b
        fr_child = fr_parent
    check_cancel(cancel)

    progress.on_stage("evaluating")
    calibration, calibration_note = info.calibration, ""
    if len(part["val"]) >= MIN_IMAGES:
        try:
            calibration = calibration_record(
                child_logits[part["val"]], y[part["val"]], f"local validation films ({len(part['val'])})"
            )
            calibration_note = f"Temperature refitted on {len(part['val'])} local validation films."
        except CalibrationError as exc:
            calibration_note = f"Parent's temperature kept: {exc}"
    if not calibration_note:
        calibration_note = (
            f"Parent's temperature ({t_parent:g}) kept: {len(part['val'])} local validation films, "
            f"at least {MIN_IMAGES} are needed to refit it."
        )
    t_child = temperature_of(calibration)
    child_scorer, child_ood = scorer, info.ood
    if scorer is None:
        ood_note = "No out-of-distribution scorer (the parent has none)."
    elif not blocks:
        ood_note = (
            "Parent's out-of-distribution scorer kept unchanged: only the classification layer was fine-tuned, "
            "so the features it reads are the parent's."
        )
    else:
        # The features changed with the blocks: the scorer is refitted on the adapted network's
        # features of the rehearsal images and the local fine-tune films (never the check films).
        _, fh_child = top_outputs(top, hh)
        fit_idx = part["train"] + part["val"]
        thr = fr_child if len(fr_child) else child_feats[fit_idx]
        child_scorer, child_ood = fit_ood(
            np.concatenate([fh_child, child_feats[fit_idx]]),
            np.concatenate([np.asarray(yh), y[fit_idx]]),
            thr,
            f"adapted features of {len(fh_child)} rehearsal images and {len(fit_idx)} local fine-tune films, "
            f"threshold on {'the reference images' if len(fr_child) else 'the fine-tune films'} ({len(thr)})",
        )
        ood_note = f"Out-of-distribution scorer refitted on the adapted features ({child_ood['fitted_on']})."

    def compare(labels: np.ndarray, lp: np.ndarray, fp: np.ndarray, lc: np.ndarray, fc: np.ndarray) -> dict[str, Any]:
        """Both models on one set: the parent's logits and features, the adapted model's."""
        pp, pc = _softmax(lp, t_parent), _softmax(lc, t_child)
        ap = float(np.mean(scorer.is_outlier(fp))) if scorer is not None and len(fp) else None
        ac = float(np.mean(child_scorer.is_outlier(fc))) if child_scorer is not None and len(fc) else None
        return {
            "parent": _summary(compute_metrics(labels, pp, classes), ap),
            "child": _summary(compute_metrics(labels, pc, classes), ac),
            "_pred": (labels, pp.argmax(axis=1), pc.argmax(axis=1)),
        }

    tc = part["test"]
    check = compare(y[tc], logits[tc], feats[tc], child_logits[tc], child_feats[tc])
    reference = None
    if len(xr) and lr_parent is not None and lr_child is not None:
        reference = compare(np.asarray(yr), lr_parent, fr_parent, lr_child, fr_child)
    check_cancel(cancel)
    result = gate(
        check["_pred"],
        len(classes),
        reference["_pred"] if reference else None,
        config.tolerance,
        config.n_boot,
        config.seed,
    )
    if reference is None:
        stored = (info.metrics.get("val") or {}) if isinstance(info.metrics, dict) else {}
        result.reasons[-1] = (
            "Forgetting not checked: no reference images (give --reference, or keep the parent's training data "
            "where it was)"
            + (
                f"; the parent's stored validation summary: accuracy {stored['accuracy']:.3f} "
                f"on {stored.get('n_images')} images."
                if isinstance(stored.get("accuracy"), float)
                else "."
            )
        )
    date = datetime.now(UTC).isoformat(timespec="seconds")
    version = config.version or adapted_version(info.version)
    n_local = len(part["train"]) + len(part["val"]) + len(part["test"])
    comparison = {
        "check": {k: v for k, v in check.items() if k != "_pred"},
        **({"reference": {k: v for k, v in reference.items() if k != "_pred"}} if reference else {}),
    }
    lineage = {
        "parent": {
            "name": info.name,
            "version": info.version,
            "content_hash": _model_hash(parent_dir),
            "folder": str(parent_dir),
        },
        "local_films": n_local,
        "fine_tune_films": len(part["train"]) + len(part["val"]),
        "check_films": len(part["test"]),
        "date": date,
        "counts": counts,
        "reference": ref_label or None,
        "gate": {"accepted": result.accept, "reasons": result.reasons, "figures": result.figures},
        "comparison": comparison,
        "calibration": calibration_note,
        "ood": ood_note,
        "rehearsal": replay_note,
        "adapted_layers": trained,
        "fit": fit,
    }
    report = {
        "accepted": result.accept,
        "reasons": result.reasons,
        "model": {"name": info.name, "version": version},
        "lineage": lineage,
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
        "written_to": None,
    }
    for r in result.reasons + [calibration_note, ood_note]:
        progress.on_message(r)
    if out_dir is None or not (result.accept or config.keep_refused):
        return AdaptResult(result.accept, result.reasons, report, None)

    progress.on_stage("saving", str(out_dir))
    if not blocks:
        layer.set_weights([w, b])  # with the top blocks adapted, the weights were trained in place
    training = {
        "adaptation": lineage,
        "data": {
            "n_images": n_local,
            "counts": {n: {c: int(sum(1 for i in part[n] if y[i] == k)) for c, k in index.items()} for n in part},
            "content_hashes": {"file": CONTENT_HASHES_FILE, "algorithm": "sha256 of the file bytes"},
        },
        "date": date,
        "init": f"fine-tuned from {info.display_name} ({lineage['parent']['content_hash']})",
        "parent_training": {k: v for k, v in info.training.items() if k in ("data", "date", "command", "init")},
    }
    child = BundleInfo(
        name=info.name,
        version=version,
        architecture=info.architecture,
        class_names=classes,
        preprocessing=pre,
        gradcam_layer=info.gradcam_layer,
        gradcam_layers=list(info.gradcam_layers),
        description=(info.description + " " if info.description else "")
        + f"Adapted on {n_local} local films ({date[:10]}).",
        training=training,
        metrics={"local_check": compute_metrics(y[tc], _softmax(child_logits[tc], t_child), classes)},
        calibration=calibration,
        ood=child_ood,
    )
    checked = set(tc)  # check films were never trained on: a later round may learn from them
    local_hashes = {s.meta["sha256"] for i, s in enumerate(kept) if "sha256" in s.meta and i not in checked}
    with tempfile.TemporaryDirectory(prefix="cxr-adapt-") as tmp:
        hashes = Path(tmp) / CONTENT_HASHES_FILE
        hashes.write_text(content_hashes_text((parent_hashes or set()) | local_hashes))
        card = Path(tmp) / CARD_FILE
        card.write_text(adaptation_card(child.display_name, lineage, classes), encoding="utf-8")
        rep = Path(tmp) / "adaptation.json"
        rep.write_text(json.dumps(report, indent=2, default=_json_default), encoding="utf-8")
        extra: dict[str, Any] = {CONTENT_HASHES_FILE: hashes, CARD_FILE: card, "report/adaptation.json": rep}
        if child_scorer is not None:
            extra[OOD_FILE] = parent_dir / OOD_FILE if child_scorer is scorer else Path(child_scorer.save(tmp))
        check_cancel(cancel)
        written = write_bundle(model, child, out_dir, extra_files=extra)
    report["written_to"] = str(written)
    return AdaptResult(result.accept, result.reasons, report, written)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _f(v: Any, signed: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def comparison_markdown(comparison: dict[str, Any], classes: list[str]) -> str:
    """Parent vs child, one table per set, plus both confusion matrices (rows: true class)."""
    lines: list[str] = []
    names = {"check": "Local check set (never trained on)", "reference": "Reference set (forgetting)"}
    for key, block in comparison.items():
        p, c = block["parent"], block["child"]
        lines += [
            f"### {names.get(key, key)}: {p['n']} films",
            "",
            "| | parent | adapted | change |",
            "|---|---|---|---|",
        ]
        rows = [
            ("Accuracy", "accuracy"),
            ("Balanced accuracy", "balanced_accuracy"),
            ("ECE", "ece"),
            ("Abstain rate", "abstain_rate"),
        ]
        for label, k in rows:
            d = None if p[k] is None or c[k] is None else c[k] - p[k]
            lines.append(f"| {label} | {_f(p[k])} | {_f(c[k])} | {_f(d, True)} |")
        for cls in classes:
            pr, cr = p["recall"].get(cls), c["recall"].get(cls)
            d = None if pr is None or cr is None else cr - pr
            lines.append(f"| Recall {cls} | {_f(pr)} | {_f(cr)} | {_f(d, True)} |")
        lines.append("")
        for who, m in (("parent", p), ("adapted", c)):
            lines += [
                f"Confusion matrix, {who} (rows: true, columns: predicted)",
                "",
                "| | " + " | ".join(classes) + " |",
            ]
            lines.append("|---" * (len(classes) + 1) + "|")
            for cls, row in zip(classes, m["confusion_matrix"]["matrix"], strict=True):
                lines.append(f"| {cls} | " + " | ".join(str(v) for v in row) + " |")
            lines.append("")
    return "\n".join(lines)


def adaptation_card(title: str, lineage: dict[str, Any], classes: list[str]) -> str:
    """The adapted model's ``README.md``: lineage, the gate's verdict and the side-by-side figures."""
    parent = lineage["parent"]
    gate_ = lineage["gate"]
    lines = [
        f"# Model: {title}",
        "",
        "Research use only, not for clinical diagnosis.",
        "",
        "## Lineage",
        "",
        f"- Fine-tuned from: {parent['name']} {parent['version']} ({parent['content_hash']})",
        f"- Local films: {lineage['local_films']} "
        f"({lineage['fine_tune_films']} fine-tune, {lineage['check_films']} check)",
        f"- Date: {lineage['date']}",
        f"- Overlap with the parent's training data: {lineage['counts'].get('in_parent_training_data', 'not checked')}",
        f"- Calibration: {lineage['calibration']}",
        f"- Out-of-distribution gate: {lineage['ood']}",
        "",
        "## Gate: " + ("passed" if gate_["accepted"] else "REFUSED"),
        "",
        *[f"- {r}" for r in gate_["reasons"]],
        "",
        "## Parent vs adapted",
        "",
        comparison_markdown(lineage["comparison"], classes),
    ]
    return "\n".join(lines) + "\n"
