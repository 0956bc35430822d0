"""The lung segmentation model: data, network, training and evaluation (issue 7).

Run it as ``python main.py train-lungs --data ../shared/data/lungs --out resources/models/lungs``
(or ``python -m training.lungs`` with the same arguments). It runs on the classifier's training
stack (:mod:`training.train`, :mod:`training.progress`): the output folder is checked before any
work and an existing model is replaced only with ``--overwrite``; progress, Ctrl+C (cancels at
the next batch, writes nothing, exit 130) and early stopping with the best epoch's weights
restored (here on the validation Dice) behave as in ``main.py train``.

Two mask conventions, two outputs. The public masks disagree on what "lung" is: the NLM,
Shenzhen and radiologist-polygon masks cover the *visible* lung fields (heart excluded),
the V7 masks the *whole* lungs (behind the heart and below the dome of the diaphragm
too). Mixing them in one output would teach a blur of both; training on one would throw
away the only children's masks (V7 Kermany) although the classifier sees thousands of
children's films. So the network has one sigmoid output per convention and shares
everything else: each mask trains only its own output (the other is masked out of the
loss), and both outputs learn from every image's features. Dice is reported per source
on the output of that source's convention.

Every image reaches the network through :func:`inference.preprocess.preprocess_uint8`
(cached by :func:`training.pipeline.load_arrays`), exactly as :mod:`inference.lungs`
feeds it; masks are resized with the same :func:`inference.preprocess.resize_gray`.
Dice is measured where the app uses the masks: on the original image grid, after
:meth:`~inference.preprocess.Geometry.to_original` and the 0.5 threshold.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shlex
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from inference.paths import sample_stems
from inference.preprocess import PreprocessConfig, resize_gray
from training.progress import NullProgress, TrainingProgress, check_cancel

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "CONVENTIONS",
    "LungPair",
    "LungTrainConfig",
    "read_manifest",
    "split_pairs",
    "load_pair_arrays",
    "build_lung_model",
    "lung_loss",
    "augment_pair",
    "dice",
    "evaluate_lungs",
    "train_lungs",
    "main",
]

CONVENTIONS = ("visible", "whole")  # output channel order
CONVENTION_TEXT = {
    "visible": "visible lung fields, heart and mediastinum excluded",
    "whole": "whole lungs, including the parts behind the heart and below the dome of the diaphragm",
}
UNKNOWN = -1.0  # target value of the output a mask does not annotate: left out of the loss
MASK_CACHE_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class LungPair:
    image: Path
    mask: Path
    id: str
    source: str
    convention: str  # "visible" or "whole"
    group: str  # images that must share a split (a patient, else the image)
    stem: str = ""  # the original file's name without suffix (``00870a9c``, ``IM-0115-0001``)
    license: str = ""
    split: str = ""


def _convention(row: dict[str, str]) -> str:
    text = row.get("mask_convention", "").lower()
    if "whole" in text or "retrocardiac" in text:
        return "whole"
    if "excluded" in text or "visible" in text or "fields" in text:
        return "visible"
    raise ValueError(f"unknown mask convention {row.get('mask_convention')!r} for {row.get('id')}")


def _patient_index(path: Path | None) -> dict[str, str]:
    """File stem -> patient id from the classifier data's manifest (``source_path``, ``patient_id``).

    The covid-chestxray-dataset holds several films of many patients; its file names do not
    say whose they are, but the classifier manifest does.
    """
    if path is None or not path.is_file():
        return {}
    index: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            pid, src = row.get("patient_id", ""), row.get("source_path", "")
            if pid and src:
                index[Path(src).stem] = pid
    return index


def read_manifest(data_dir: Path | str, patients_csv: Path | str | None = None) -> list[LungPair]:
    """The image/mask pairs listed in ``data_dir/manifest.csv``, with their split groups."""
    from training.datasets import patient_id_from_name

    data_dir = Path(data_dir)
    patients = _patient_index(Path(patients_csv) if patients_csv else None)
    pairs = []
    with (data_dir / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            stem = Path(row.get("source_image_path") or row["image"]).stem
            # The same film can appear in two sources (with the two conventions): grouping
            # on the original file name keeps both copies in one split.
            group = patient_id_from_name(stem) or patients.get(stem) or f"image:{stem}"
            pairs.append(
                LungPair(
                    image=data_dir / row["image"],
                    mask=data_dir / row["mask"],
                    id=row["id"],
                    source=row["source"],
                    convention=_convention(row),
                    group=group,
                    stem=stem,
                    license=row.get("license", ""),
                )
            )
    return pairs


def split_pairs(
    pairs: list[LungPair],
    val_fraction: float = 0.10,
    test_fraction: float = 0.15,
    seed: int = 0,
    force_test: Sequence[str] = (),
) -> dict[str, list[LungPair]]:
    """Train/val/test by whole groups, stratified by source (the project's one splitter).

    Pairs whose original file stem is in ``force_test`` (the app's sample images) go to the
    test split with their whole group, so the tests that segment the samples see images the
    model never learned.
    """
    from training.samples import Sample
    from training.splits import split_dataset

    forced = set(force_test)
    forced_groups = {p.group for p in pairs if p.stem in forced}
    by_path = {p.image: p for p in pairs}
    samples = [
        Sample(path=p.image, label=p.source, patient_id=p.group, source=p.source)
        for p in pairs
        if p.group not in forced_groups
    ]
    out = split_dataset(samples, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    result: dict[str, list[LungPair]] = {name: [by_path[s.path] for s in items] for name, items in out.items()}
    result["test"].extend(p for p in pairs if p.group in forced_groups)
    for name, items in result.items():
        for pair in items:
            pair.split = name
    return result


def _decode_mask(path: Path, size: int) -> np.ndarray:
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise OSError(f"cannot read mask {path}")
    return resize_gray(np.where(m > 127, 255, 0).astype(np.uint8), size)


def load_pair_arrays(
    pairs: Sequence[LungPair],
    size: int,
    cache_dir: Path | str | None = None,
    progress: TrainingProgress | None = None,
    cancel: threading.Event | None = None,
) -> tuple[np.ndarray, np.ndarray, list[LungPair]]:
    """``(images uint8 [N, S, S], soft masks uint8 [N, S, S], kept pairs)``, cached as ``.npy``.

    Images go through the shared preprocessing (and its cache); masks are resized with the
    same interpolation, so their soft edges fall where the image's edges fall.
    """
    from training.pipeline import load_arrays
    from training.samples import Sample

    config = PreprocessConfig(size=size)
    samples = [Sample(path=p.image, label=p.source) for p in pairs]
    x, kept, skipped = load_arrays(samples, config, cache_dir, progress, cancel)
    if skipped:
        (progress or NullProgress()).on_message(f"Skipped {len(skipped)} unreadable images: {skipped[:3]}")
    by_path = {p.image: p for p in pairs}
    kept_pairs = [by_path[s.path] for s in kept]
    cache_file = None
    if cache_dir is not None:
        h = hashlib.sha256(f"{MASK_CACHE_VERSION}|{size}".encode())
        for p in kept_pairs:
            st = p.mask.stat()
            h.update(f"{p.mask}|{st.st_mtime_ns}|{st.st_size}\n".encode())
        cache_file = Path(cache_dir) / f"masks-{h.hexdigest()[:32]}.npy"
        if cache_file.is_file():
            y = np.load(cache_file)
            if y.shape == x.shape:
                return x, y, kept_pairs
    masks = []
    for p in kept_pairs:
        check_cancel(cancel)
        masks.append(_decode_mask(p.mask, size))
    y = np.stack(masks) if masks else np.zeros_like(x)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache_file, y)
    return x, y, kept_pairs


# ---------------------------------------------------------------------------------------------
# Network and loss


def build_lung_model(size: int = 160, base_filters: int = 8, depth: int = 4, outputs: int = 2) -> keras.Model:
    """A small U-Net: ``depth`` poolings, filters doubling from ``base_filters``, sigmoid outputs.

    Built from stock layers only, flat, so that ``load_model(..., safe_mode=True)`` reads it.
    """
    import keras
    from keras import layers

    if size % (2**depth):
        raise ValueError(f"input size {size} must be divisible by {2**depth}")

    def block(x: Any, filters: int, name: str) -> Any:
        for k in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{k}")(x)
            x = layers.BatchNormalization(name=f"{name}_bn{k}")(x)
            x = layers.ReLU(name=f"{name}_relu{k}")(x)
        return x

    inputs = keras.Input((size, size, 1), name="image")
    x, skips = inputs, []
    for d in range(depth):
        x = block(x, base_filters * 2**d, f"down{d}")
        skips.append(x)
        x = layers.MaxPooling2D(name=f"pool{d}")(x)
    x = block(x, base_filters * 2**depth, "bottom")
    for d in reversed(range(depth)):
        x = layers.UpSampling2D(name=f"up{d}")(x)
        x = layers.Concatenate(name=f"skip{d}")([x, skips[d]])
        x = block(x, base_filters * 2**d, f"dec{d}")
    out = layers.Conv2D(outputs, 1, activation="sigmoid", name="lungs")(x)
    return keras.Model(inputs, out, name="lung_unet")


def lung_loss(y_true: Any, y_pred: Any) -> Any:
    """Binary cross-entropy plus soft Dice, each output only where its convention is annotated.

    ``y_true`` holds soft masks in [0, 1] for the annotated output and :data:`UNKNOWN` for
    the other. Dice keeps thin lungs (children, AP films) from being traded for background.
    """
    from keras import ops

    known = ops.cast(y_true >= 0.0, "float32")
    t = ops.clip(y_true, 0.0, 1.0)
    p = ops.clip(y_pred, 1e-6, 1.0 - 1e-6)
    bce = -(t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p))
    bce = ops.sum(bce * known) / ops.maximum(ops.sum(known), 1.0)
    inter = ops.sum(p * t * known, axis=(1, 2))
    denom = ops.sum((p + t) * known, axis=(1, 2))
    channel_known = ops.max(known, axis=(1, 2))
    soft_dice = (2.0 * inter + 1.0) / (denom + 1.0)
    dice_loss = ops.sum((1.0 - soft_dice) * channel_known) / ops.maximum(ops.sum(channel_known), 1.0)
    return bce + dice_loss


def targets(masks: np.ndarray, conventions: Sequence[str]) -> np.ndarray:
    """Soft masks in [0, 1] ``[N, S, S]`` -> targets ``[N, S, S, 2]``, the other convention unknown."""
    y = np.full((*masks.shape, len(CONVENTIONS)), UNKNOWN, dtype=np.float32)
    for i, conv in enumerate(conventions):
        y[i, ..., CONVENTIONS.index(conv)] = masks[i]
    return y


# ---------------------------------------------------------------------------------------------
# Augmentation


@dataclass(frozen=True)
class LungAugment:
    """Acquisition differences: position and scale on the detector, exposure and processing.

    No flips: the heart is on the left, and the visible-field masks follow its outline.
    """

    rotation_deg: float = 10.0
    zoom: float = 0.12
    shift: float = 0.08  # fraction of the side
    brightness: float = 0.10
    contrast: float = 0.20
    gamma: float = 0.35  # log-uniform in [1/(1+g), 1+g]
    noise: float = 0.02
    blur_probability: float = 0.2


def augment_pair(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, aug: LungAugment = LungAugment()
) -> tuple[np.ndarray, np.ndarray]:
    """One random variant of a uint8 image and its uint8 mask: float32 image in [0, 1], float32 mask in [0, 1].

    The same affine transform moves both, so the mask stays on the lungs.
    """
    s = image.shape[0]
    angle = rng.uniform(-aug.rotation_deg, aug.rotation_deg)
    scale = float(np.exp(rng.uniform(np.log(1 - aug.zoom), np.log(1 + aug.zoom))))
    matrix = cv2.getRotationMatrix2D((s / 2, s / 2), angle, scale)
    matrix[:, 2] += rng.uniform(-aug.shift, aug.shift, size=2) * s
    img = cv2.warpAffine(image, matrix, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    msk = cv2.warpAffine(mask, matrix, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    x = img.astype(np.float32) / 255.0
    if rng.random() < aug.blur_probability:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.2))
    gamma = float(np.exp(rng.uniform(-np.log1p(aug.gamma), np.log1p(aug.gamma))))
    x = np.power(np.clip(x, 0.0, 1.0), gamma)
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - aug.contrast, 1 + aug.contrast) + mean
    x = x + rng.uniform(-aug.brightness, aug.brightness)
    if aug.noise:
        x = x + rng.normal(0.0, rng.uniform(0.0, aug.noise), size=x.shape).astype(np.float32)
    return np.clip(x, 0.0, 1.0).astype(np.float32), msk.astype(np.float32) / 255.0


def _batches(
    x: np.ndarray, y: np.ndarray, conventions: list[str], batch_size: int, seed: int, aug: LungAugment | None
) -> Any:
    """A Keras ``PyDataset`` of augmented batches, a new order and new variants every epoch."""
    import keras

    class _Pairs(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = 0
            self.order = np.random.default_rng(seed).permutation(len(x))

        def __len__(self) -> int:
            return int(np.ceil(len(x) / batch_size))

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            idx = self.order[i * batch_size : (i + 1) * batch_size]
            rng = np.random.default_rng([seed, self.epoch, i])
            xs, ms = [], []
            for j in idx:
                if aug is None:
                    xi, mi = x[j].astype(np.float32) / 255.0, y[j].astype(np.float32) / 255.0
                else:
                    xi, mi = augment_pair(x[j], y[j], rng, aug)
                xs.append(xi)
                ms.append(mi)
            ys = targets(np.stack(ms), [conventions[j] for j in idx])
            return np.stack(xs)[..., np.newaxis], ys

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.order = np.random.default_rng([seed, self.epoch]).permutation(len(x))

    return _Pairs()


# ---------------------------------------------------------------------------------------------
# Evaluation


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks; 1.0 when both are empty."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * float(np.logical_and(a, b).sum()) / denom


def evaluate_lungs(segmenter: Any, pairs: Sequence[LungPair], cancel: threading.Event | None = None) -> dict[str, Any]:
    """Dice per source on the original grid, through :class:`inference.lungs.LungSegmenter`.

    Each pair is scored on the output of its own convention; ``plausible_rate`` says how
    often the app would (wrongly) warn about a real chest film.
    """
    from inference.loading import load_image

    card = segmenter.card
    if card.outputs != list(CONVENTIONS) or card.primary != "visible":
        raise ValueError(f"evaluate_lungs expects outputs {CONVENTIONS} with 'visible' primary")
    per_source: dict[str, list[float]] = defaultdict(list)
    plausible: dict[str, list[bool]] = defaultdict(list)
    per_image = []
    for p in pairs:
        check_cancel(cancel)
        image = load_image(p.image)
        truth = cv2.imread(str(p.mask), cv2.IMREAD_GRAYSCALE) > 127
        result = segmenter.segment(image)
        d = dice(result.mask if p.convention == card.primary else result.whole_mask, truth)
        per_source[p.source].append(d)
        plausible[p.source].append(result.plausible)
        per_image.append({"id": p.id, "source": p.source, "dice": round(d, 4), "plausible": result.plausible})
    out: dict[str, Any] = {"per_source": {}, "per_convention": {}}
    for src in sorted(per_source):
        v = np.array(per_source[src])
        out["per_source"][src] = {
            "n": int(v.size),
            "convention": next(p.convention for p in pairs if p.source == src),
            "dice_mean": round(float(v.mean()), 4),
            "dice_median": round(float(np.median(v)), 4),
            "dice_min": round(float(v.min()), 4),
            "plausible_rate": round(float(np.mean(plausible[src])), 4),
        }
    for conv in CONVENTIONS:
        v = [d for p, d in zip(pairs, (r["dice"] for r in per_image)) if p.convention == conv]
        if v:
            out["per_convention"][conv] = {"n": len(v), "dice_mean": round(float(np.mean(v)), 4)}
    out["worst"] = sorted(per_image, key=lambda r: r["dice"])[:5]
    return out


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class LungTrainConfig:
    data: str
    out: str
    size: int = 160
    base_filters: int = 8
    depth: int = 4
    epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 2e-3
    seed: int = 0
    val_fraction: float = 0.10
    test_fraction: float = 0.15
    cache: str | None = None
    patients: str | None = None  # classifier manifest with patient ids of the covid-chestxray films
    force_test: list[str] = field(default_factory=list)
    max_pairs: int | None = None  # for smoke runs
    patience: int = 8  # epochs without a better validation Dice before stopping (best weights restored)
    overwrite: bool = False  # replace an existing model at ``out`` (else refused before any work)
    command: str = ""


def _license_summary(pairs: Sequence[LungPair]) -> dict[str, Any]:
    counts = Counter(p.license for p in pairs if p.license)
    return {
        "terms": LICENSE_TERMS,
        "source_rows": {text: n for text, n in counts.most_common()},
    }


LICENSE_TERMS = (
    "The lung model was trained on public chest X-rays with manual lung masks. Its use is bound by "
    "the terms of that data: (1) NLM Montgomery County and Shenzhen Hospital TB sets: public for "
    "research, cite Jaeger S. et al., 'Two public chest X-ray datasets for computer-aided screening "
    "of pulmonary diseases', Quant Imaging Med Surg 4(6):475-477, 2014, and Candemir S. et al., "
    "'Lung segmentation in chest radiographs using anatomical atlases with nonrigid registration', "
    "IEEE TMI 33(2):577-590, 2014. (2) Shenzhen lung masks: Stirenko S. et al. 2018, 'Lung Masks for "
    "Shenzhen Hospital Chest X-ray Set', CC BY-NC-SA 4.0 (non-commercial, share alike). (3) V7 Darwin "
    "lung masks (covid-chestxray-dataset and Kermany images) and the radiologist polygons of the "
    "covid-chestxray-dataset (GeneralBlockchain): CC BY 4.0. (4) Images of the covid-chestxray-dataset "
    "(Cohen J.P. et al.) carry per-image licences, some non-commercial (CC BY-NC-SA, CC BY-NC-ND); "
    "Kermany images (Kermany D. et al., Mendeley Data doi:10.17632/rscbjbr9sj.2): CC BY 4.0. "
    "Because of (2) and (4), the lung model may be used for research and non-commercial purposes only."
)


def _dice_at_model_grid(model: keras.Model, x: np.ndarray, y: np.ndarray, conventions: list[str]) -> float:
    p = model.predict(x[..., np.newaxis].astype(np.float32) / 255.0, batch_size=32, verbose=0)
    scores = [dice(p[i, ..., CONVENTIONS.index(c)] >= 0.5, y[i] >= 128) for i, c in enumerate(conventions)]
    return float(np.mean(scores)) if scores else 0.0


def _check_lung_config(config: LungTrainConfig) -> None:
    from training.train import TrainingError

    if config.epochs < 1:
        raise TrainingError("epochs must be at least 1.")
    if config.batch_size < 1:
        raise TrainingError("batch size must be at least 1.")
    if not config.learning_rate > 0:
        raise TrainingError("the learning rate must be positive.")
    if config.patience < 1:
        raise TrainingError("patience must be at least 1 epoch.")
    if config.depth < 1 or config.base_filters < 1:
        raise TrainingError("depth and base filters must be at least 1.")
    if not 8 <= config.size <= 1024 or config.size % (2**config.depth):
        raise TrainingError(f"--size must be 8-1024 px and divisible by {2**config.depth} (2 ** depth).")
    if not 0 <= config.val_fraction < 1 or not 0 <= config.test_fraction < 1:
        raise TrainingError("validation and test fractions must be between 0 and 1.")
    if not (Path(config.data) / "manifest.csv").is_file():
        raise TrainingError(f"{config.data} holds no manifest.csv (columns id, image, mask, source, mask_convention).")


def _validation_dice_callback(xv: np.ndarray, yv: np.ndarray, conventions: list[str]) -> Any:
    """A Keras callback that adds the validation Dice at the model's grid to each epoch's logs as
    ``val_dice`` (early stopping and the progress report read it there)."""
    import keras

    class _Dice(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if logs is not None:
                logs["val_dice"] = round(_dice_at_model_grid(self.model, xv, yv, conventions), 4)

    return _Dice()


def train_lungs(
    config: LungTrainConfig, progress: TrainingProgress | None = None, cancel: threading.Event | None = None
) -> dict[str, Any]:
    """Train, keep the epoch with the best validation Dice, score the test split, write the model.

    The classifier's training stack: the output folder is checked first (an existing model is
    replaced only with ``config.overwrite``), progress goes to ``progress``, ``cancel`` stops
    the run at the next batch or file with :class:`TrainingCancelled` (nothing is written),
    and early stopping on the validation Dice restores the best epoch's weights.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from inference.lungs import LungCard, LungSegmenter, write_lung_model
    from training.train import TrainingError, check_output_folder, fit_callbacks

    progress = progress or NullProgress()
    started = time.time()
    _check_lung_config(config)
    replace_ok = check_output_folder(Path(config.out).expanduser(), config.overwrite)

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    progress.on_stage("scanning", str(config.data))
    try:
        pairs = read_manifest(config.data, config.patients)
    except (KeyError, ValueError) as exc:
        raise TrainingError(f"{config.data}/manifest.csv cannot be used: {exc}") from None
    if config.max_pairs:
        rng = np.random.default_rng(config.seed)
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), min(config.max_pairs, len(pairs)), replace=False))]
    if len(pairs) < 3:
        raise TrainingError(f"{config.data}/manifest.csv lists {len(pairs)} image/mask pairs; training needs more.")
    splits = split_pairs(pairs, config.val_fraction, config.test_fraction, config.seed, config.force_test)
    arrays = {}
    for name in ("train", "val"):
        check_cancel(cancel)
        x, y, kept = load_pair_arrays(splits[name], config.size, config.cache, progress, cancel)
        arrays[name] = (x, y, kept)
        progress.on_message(f"{name}: {len(kept)} pairs {dict(Counter(p.source for p in kept))}")
    progress.on_message(f"test: {len(splits['test'])} pairs {dict(Counter(p.source for p in splits['test']))}")
    xt, yt, kt = arrays["train"]
    xv, yv, kv = arrays["val"]
    if len(xt) == 0:
        raise TrainingError("No readable training pairs.")
    conv_t, conv_v = [p.convention for p in kt], [p.convention for p in kv]
    check_cancel(cancel)

    model = build_lung_model(config.size, config.base_filters, config.depth, len(CONVENTIONS))
    steps_per_epoch = int(np.ceil(len(xt) / config.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, config.epochs * steps_per_epoch, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=lung_loss)
    # Without a validation split (tiny data, --val-fraction 0) the training loss is watched instead.
    before = [_validation_dice_callback(xv, yv, conv_v)] if len(xv) else []
    callbacks, early = fit_callbacks(
        progress,
        cancel,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        monitor="val_dice" if len(xv) else "loss",
        mode="max" if len(xv) else "min",
        patience=config.patience,
        before=[*before, keras.callbacks.TerminateOnNaN()],
    )
    progress.on_stage("training", f"{len(xt)} pairs, {steps_per_epoch} batches per epoch")
    fit = model.fit(
        _batches(xt, yt, conv_t, config.batch_size, config.seed, LungAugment()),
        epochs=config.epochs,
        callbacks=callbacks,
        verbose=0,
    )
    check_cancel(cancel)
    losses = [float(v) for v in fit.history.get("loss", [])]
    if any(not np.isfinite(v) for v in losses):
        raise TrainingError("The training loss became NaN; try a lower learning rate (--learning-rate).")
    dices = [float(v) for v in fit.history.get("val_dice", [])]
    history = [
        {"epoch": i + 1, "loss": round(loss, 6), "val_dice": round(dices[i], 4) if i < len(dices) else None}
        for i, loss in enumerate(losses)
    ]
    best_epoch = int(early.best_epoch) + 1 if early.best is not None else len(history)
    # Ship a fresh, uncompiled copy of the restored best weights: the optimizer's state would
    # triple the file for nothing.
    trained = model
    model = build_lung_model(config.size, config.base_filters, config.depth, len(CONVENTIONS))
    model.set_weights(trained.get_weights())
    train_seconds = time.time() - started
    progress.on_stage("evaluating")

    card = LungCard(
        name="cxr-lungs",
        version="1.0.0",
        preprocessing=PreprocessConfig(size=config.size),
        outputs=list(CONVENTIONS),
        threshold=0.5,
        primary="visible",
        box_outputs=list(CONVENTIONS),
        conventions=dict(CONVENTION_TEXT),
        description=(
            "Lung-field segmentation (small U-Net, two outputs: visible lung fields and whole lungs). "
            "Research use only, not for clinical diagnosis."
        ),
    )
    segmenter = LungSegmenter.from_model(model, card)
    test = evaluate_lungs(segmenter, splits["test"], cancel)
    val = evaluate_lungs(segmenter, kv, cancel)
    all_pairs = [p for split in splits.values() for p in split]
    card.metrics = {
        "dice_test": test["per_source"],
        "dice_test_by_convention": test["per_convention"],
        "dice_val": val["per_source"],
        "worst_test_images": test["worst"],
        "note": "Dice on the original image grid, each source on the output of its own mask convention.",
    }
    card.training = {
        "command": config.command,
        "config": {k: v for k, v in asdict(config).items() if k not in ("command",)},
        "architecture": {
            "type": "u-net",
            "depth": config.depth,
            "base_filters": config.base_filters,
            "params": int(model.count_params()),
        },
        "loss": "masked binary cross-entropy + soft Dice per output",
        "augmentation": asdict(LungAugment()),
        "epochs_run": len(history),
        "stopped_early": bool(early.stopped_epoch),
        "patience": config.patience,
        "best_epoch": best_epoch,
        "history": history,
        "split": {
            "method": "whole patients/images by source, seed-fixed (training.splits.split_dataset)",
            "seed": config.seed,
            "counts": {k: dict(Counter(p.source for p in v)) for k, v in splits.items()},
            "test_ids": sorted(p.id for p in splits["test"]),
        },
        "wall_time_s": round(train_seconds, 1),
        "hardware": f"{os.cpu_count()} CPU cores, TensorFlow {tf.__version__}",
        "data": {
            "manifest": "lungs/manifest.csv",
            "pairs": len(all_pairs),
            "sources": dict(Counter(p.source for p in all_pairs)),
        },
    }
    card.license = _license_summary(all_pairs)
    notice = "CXR Viewer lung segmentation model: data licences\n\n" + LICENSE_TERMS + "\n"
    check_cancel(cancel)
    progress.on_stage("saving", str(config.out))
    out = write_lung_model(model, card, config.out, extra_files={"NOTICE": notice}, overwrite=replace_ok)
    summary = {"test": test["per_source"], "best_epoch": best_epoch, "wall_s": round(train_seconds)}
    progress.on_message(json.dumps(summary, indent=1))
    return {"card": card.to_dict(), "test": test, "val": val, "out": out}


def config_from_args(args: Any, command: str) -> LungTrainConfig:
    """The :class:`LungTrainConfig` of parsed ``train-lungs`` arguments (see :mod:`training.cli`)."""
    return LungTrainConfig(
        data=args.data,
        out=args.out,
        size=args.size,
        base_filters=args.base_filters,
        depth=args.depth,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        cache=args.cache,
        patients=args.patients,
        force_test=sample_stems() if args.force_test is None else list(args.force_test),
        max_pairs=args.max_pairs,
        patience=args.patience,
        overwrite=args.overwrite,
        command=command,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m training.lungs``: the same command as ``main.py train-lungs``."""
    import argparse

    from training.cli import add_lung_arguments, run_train_lungs

    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m training.lungs", description="Train the lung segmentation model.")
    add_lung_arguments(ap)
    args = ap.parse_args(argv)
    args.command_line = "python -m training.lungs " + " ".join(shlex.quote(a) for a in argv)
    return run_train_lungs(args)


if __name__ == "__main__":
    sys.exit(main())
