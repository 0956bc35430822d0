"""From files to batches: decode once, cache, then feed Keras through tf.data.

Images are decoded with the app's own loader and brought to the model's size with the one
shared preprocessing (:func:`inference.preprocess.preprocess_uint8`), exactly as inference
does. The compact uint8 result is what gets cached (a 224 px image is 50 kB), and the final
scaling in :func:`make_tf_dataset` is the same arithmetic as
:func:`inference.preprocess.to_model_input`, so training never sees an input that
prediction would not produce.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.preprocess import PreprocessConfig
from training.progress import TrainingProgress, check_cancel
from training.samples import Sample

if TYPE_CHECKING:  # pragma: no cover
    import keras
    import tensorflow as tf

    from inference.lungs import LungSegmenter

__all__ = [
    "AugmentConfig",
    "load_arrays",
    "make_tf_dataset",
    "build_augmenter",
    "class_weights",
    "group_balanced_weights",
    "predict_arrays",
]

CACHE_VERSION = 2  # 2: the loader refuses blank/NaN images and replaces unusable stored windows


@dataclass(frozen=True)
class AugmentConfig:
    """Random changes a radiograph plausibly undergoes between two acquisitions.

    Small on purpose: the disease signs are subtle, and big distortions teach the model
    images it will never see. No horizontal flip by default: the heart is on the left, and
    a flipped chest is an anatomy that does not occur (situs inversus aside).
    """

    rotation: float = 0.025  # fraction of a full turn: +-9 degrees
    zoom: float = 0.10
    translation: float = 0.06  # fraction of the side
    brightness: float = 0.10  # on the [0, 1] scale
    contrast: float = 0.15
    # Acquisition differences between hospitals: detector response curves (gamma, as
    # exp(U(-g, g))) and quantum noise (Gaussian, sigma up to this on the [0, 1] scale).
    gamma: float = 0.25
    noise: float = 0.02
    # Sharpness differs between detectors and post-processing: a Gaussian blur of sigma up
    # to this (in px of the model input) on half of the images.
    blur: float = 1.0
    # Text markers, rulers and ECG leads sit anywhere on a film and differ by hospital: a
    # gray or white rectangle (up to this fraction of the side) pasted at random on this
    # share of the images, so that no single patch of film can decide the class.
    occlusion: float = 0.5
    occlusion_size: float = 0.15
    horizontal_flip: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Decoding and caching


def _cache_key(paths: Sequence[str], config: PreprocessConfig, lungs: str = "") -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "config": config.to_dict(), "lungs": lungs}, sort_keys=True).encode())
    for p in paths:
        try:
            st = os.stat(p)
            stamp = f"{st.st_mtime_ns}:{st.st_size}"
        except OSError:
            stamp = "missing"
        h.update(f"{p}|{stamp}\n".encode())
    return h.hexdigest()[:32]


def _decode_one(
    path: Path, config: PreprocessConfig, lungs: LungSegmenter | None = None
) -> tuple[np.ndarray | None, str]:
    from inference.image import ImageLoadError
    from inference.loading import load_image
    from inference.preprocess import preprocess_uint8
    from training.datasets import training_image_problem

    try:
        image = load_image(path)
        problem = training_image_problem(image)
        if problem is not None:
            return None, problem
        box = lungs.crop_box(image, config.crop_margin) if lungs is not None else None
        small, _ = preprocess_uint8(image, config, box)
    except ImageLoadError as exc:
        return None, str(exc)
    except Exception as exc:  # a decoder bug on one odd file must not end a long run
        return None, f"cannot be read ({type(exc).__name__}: {exc})"
    return small, ""


def load_arrays(
    samples: Sequence[Sample],
    config: PreprocessConfig,
    cache_dir: Path | str | None = None,
    progress: TrainingProgress | None = None,
    cancel: threading.Event | None = None,
    workers: int | None = None,
) -> tuple[np.ndarray, list[Sample], list[tuple[str, str]]]:
    """Decode and preprocess ``samples``: ``(uint8 [N, S, S], kept samples, skipped (path, reason))``.

    The result keeps the order of ``samples``. Decoding runs in a thread pool (the decoders
    release the GIL). With ``cache_dir`` the decoded set is stored as ``.npy`` keyed by the
    files (path, mtime, size) and the preprocessing parameters, independent of their order,
    so a second run on the same data (another seed or split) starts training at once.

    With ``config.crop == "lungs"`` each image is cropped to its lung fields as the shipped
    lung model finds them (the whole image where it finds no plausible lungs), exactly as
    :class:`inference.predictor.Predictor` does at inference time.
    """
    samples = list(samples)
    lungs = None
    if config.crop == "lungs":
        from inference.lungs import segmenter_identity, shared_segmenter

        lungs = shared_segmenter()
        lungs.warm_up()
    paths = [str(s.path) for s in samples]
    unique = sorted(set(paths))
    xu, kept_paths, skipped = None, [], []
    cache_npy = cache_json = None
    if cache_dir is not None:
        key = _cache_key(unique, config, segmenter_identity(lungs) if lungs is not None else "")
        cache_npy, cache_json = Path(cache_dir) / f"{key}.npy", Path(cache_dir) / f"{key}.json"
        xu, kept_paths, skipped = _read_cache(cache_npy, cache_json, config.size)
        if xu is not None and progress is not None:
            progress.on_stage("decoding", f"{len(kept_paths)} images from the cache")
    if xu is None:
        xu, kept_paths, skipped = _decode_all(unique, config, progress, cancel, workers, lungs)
        if cache_npy is not None and cache_json is not None:
            _write_cache(cache_npy, cache_json, xu, kept_paths, skipped)
    row = {p: i for i, p in enumerate(kept_paths)}
    order = [i for i, p in enumerate(paths) if p in row]
    x = xu[[row[paths[i]] for i in order]] if order else np.zeros((0, config.size, config.size), np.uint8)
    wanted = set(paths)
    return x, [samples[i] for i in order], [(p, r) for p, r in skipped if p in wanted]


def _decode_all(
    paths: list[str],
    config: PreprocessConfig,
    progress: TrainingProgress | None,
    cancel: threading.Event | None,
    workers: int | None,
    lungs: LungSegmenter | None = None,
) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    n, size = len(paths), config.size
    x = np.zeros((n, size, size), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    skipped: list[tuple[str, str]] = []
    every = max(1, n // 100)
    pool = ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1))
    try:
        for i, (arr, reason) in enumerate(pool.map(lambda p: _decode_one(Path(p), config, lungs), paths)):
            if arr is None:
                skipped.append((paths[i], reason))
            else:
                x[i] = arr
                ok[i] = True
            if progress is not None and ((i + 1) % every == 0 or i + 1 == n):
                progress.on_stage("decoding", f"{i + 1}/{n}")
            if i % 16 == 0:
                check_cancel(cancel)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a cancel must not wait for the queued files
    kept_idx = np.flatnonzero(ok)
    return (x[kept_idx] if len(kept_idx) != n else x), [paths[i] for i in kept_idx], skipped


def _read_cache(npy: Path, meta_json: Path, size: int) -> tuple[np.ndarray | None, list[str], list[tuple[str, str]]]:
    if not (npy.is_file() and meta_json.is_file()):
        return None, [], []
    try:
        meta = json.loads(meta_json.read_text(encoding="utf-8"))
        x = np.load(npy)
        kept = [str(p) for p in meta["kept"]]
        if x.shape == (len(kept), size, size) and x.dtype == np.uint8:
            return x, kept, [(str(p), str(r)) for p, r in meta["skipped"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a damaged cache is rebuilt
    return None, [], []


def _write_cache(npy: Path, meta_json: Path, x: np.ndarray, kept: list[str], skipped: list[tuple[str, str]]) -> None:
    try:
        npy.parent.mkdir(parents=True, exist_ok=True)
        tmp = npy.with_name(npy.name + ".tmp.npy")
        np.save(tmp, x)
        os.replace(tmp, npy)
        meta_json.write_text(json.dumps({"kept": kept, "skipped": skipped}), encoding="utf-8")
    except OSError:
        pass  # the cache is an optimisation; a read-only or full disk must not stop training


# ---------------------------------------------------------------------------------------------
# tf.data


def build_augmenter(augment: AugmentConfig, seed: int = 0) -> keras.Sequential:
    """Keras preprocessing layers on ``[0, 1]`` float images (batch, S, S, C)."""
    import keras

    layers: list[keras.layers.Layer] = []
    if augment.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if augment.rotation:
        layers.append(keras.layers.RandomRotation(augment.rotation, fill_mode="constant", seed=seed + 1))
    if augment.zoom:
        layers.append(keras.layers.RandomZoom(augment.zoom, fill_mode="constant", seed=seed + 2))
    if augment.translation:
        layers.append(
            keras.layers.RandomTranslation(
                augment.translation, augment.translation, fill_mode="constant", seed=seed + 3
            )
        )
    if augment.brightness:
        layers.append(keras.layers.RandomBrightness(augment.brightness, value_range=(0.0, 1.0), seed=seed + 4))
    if augment.contrast:
        layers.append(keras.layers.RandomContrast(augment.contrast, value_range=(0.0, 1.0), seed=seed + 5))
    return keras.Sequential(layers, name="augment")


def _random_blur(x: tf.Tensor, max_sigma: float) -> tf.Tensor:
    """Gaussian blur with a per-image sigma in [0, max_sigma] px on half of a batch (N, S, S, 1)."""
    import tensorflow as tf

    radius = max(1, int(math.ceil(2 * max_sigma)))
    batch = tf.shape(x)[0]
    sigma = tf.random.uniform([batch], 0.05, max_sigma) * tf.cast(tf.random.uniform([batch]) < 0.5, tf.float32)
    sigma = tf.maximum(sigma, 1e-3)
    t = tf.cast(tf.range(-radius, radius + 1), tf.float32)
    k = tf.exp(-0.5 * tf.square(t[tf.newaxis, :] / sigma[:, tf.newaxis]))  # (N, 2r+1)
    k = k / tf.reduce_sum(k, axis=1, keepdims=True)
    # Separable blur with a different kernel per image: depthwise over the batch moved to channels.
    xt = tf.transpose(x[..., 0], [1, 2, 0])[tf.newaxis]  # (1, S, S, N)
    kh = tf.transpose(k)[:, tf.newaxis, :, tf.newaxis]  # (2r+1, 1, N, 1)
    kv = tf.transpose(k)[tf.newaxis, :, :, tf.newaxis]  # (1, 2r+1, N, 1)
    pad = [[0, 0], [radius, radius], [radius, radius], [0, 0]]
    xt = tf.pad(xt, pad, mode="SYMMETRIC")
    xt = tf.nn.depthwise_conv2d(xt, kh, [1, 1, 1, 1], "VALID")
    xt = tf.nn.depthwise_conv2d(xt, kv, [1, 1, 1, 1], "VALID")
    return tf.transpose(xt[0], [2, 0, 1])[..., tf.newaxis]


def _random_occlusion(x: tf.Tensor, share: float, max_size: float) -> tf.Tensor:
    """On ``share`` of the images, one axis-aligned rectangle of uniform gray or white."""
    import tensorflow as tf

    shape = tf.shape(x)
    batch, size = shape[0], tf.cast(shape[1], tf.float32)
    w = tf.random.uniform([batch], 0.03, max_size) * size
    h = tf.random.uniform([batch], 0.02, max_size / 2) * size  # markers are wider than tall
    x0 = tf.random.uniform([batch]) * (size - w)
    y0 = tf.random.uniform([batch]) * (size - h)
    grid = tf.range(size)
    inside_x = (grid[tf.newaxis, :] >= x0[:, tf.newaxis]) & (grid[tf.newaxis, :] < (x0 + w)[:, tf.newaxis])
    inside_y = (grid[tf.newaxis, :] >= y0[:, tf.newaxis]) & (grid[tf.newaxis, :] < (y0 + h)[:, tf.newaxis])
    on = tf.random.uniform([batch]) < share
    mask = inside_y[:, :, tf.newaxis] & inside_x[:, tf.newaxis, :] & on[:, tf.newaxis, tf.newaxis]
    value = tf.random.uniform([batch, 1, 1], 0.6, 1.0)
    out = tf.where(mask, value, x[..., 0])
    return out[..., tf.newaxis]


def make_tf_dataset(
    x_uint8: np.ndarray,
    y: np.ndarray | None,
    config: PreprocessConfig,
    batch_size: int,
    training: bool,
    seed: int = 0,
    augment: AugmentConfig | bool | None = None,
    sample_weight: np.ndarray | None = None,
    sampling_weights: np.ndarray | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Batches of ``(x, y[, w])`` (or ``x`` when ``y`` is None) for ``model.fit``/``predict``.

    ``training`` shuffles (reproducibly from ``seed``) and, unless ``augment`` is False,
    augments with :class:`AugmentConfig` (``True``/None mean the defaults). The arrays stay
    in NumPy and are gathered per batch, so a large cache never becomes a graph constant.

    ``sampling_weights`` (training only) replaces the shuffle by drawing each batch with
    replacement in proportion to the weights (see :func:`group_balanced_weights`); an
    "epoch" is then ``ceil(n / batch_size)`` such batches.

    ``drop_remainder`` leaves out the last, smaller batch (every batch then has
    ``batch_size`` images), as training on several replicas needs.
    """
    import tensorflow as tf

    n, size = len(x_uint8), config.size
    if x_uint8.shape[1:] != (size, size):
        raise ValueError(f"images are {x_uint8.shape[1:]}, the configuration says {size}x{size}")
    have_y = y is not None
    have_w = sample_weight is not None
    y_arr = np.asarray(y, dtype=np.int32) if have_y else None
    w_arr = np.asarray(sample_weight, dtype=np.float32) if have_w else None

    def fetch(idx: np.ndarray) -> tuple[np.ndarray, ...]:
        out: list[np.ndarray] = [x_uint8[idx]]
        if y_arr is not None:
            out.append(y_arr[idx])
        if w_arr is not None:
            out.append(w_arr[idx])
        return tuple(out)

    types = [tf.uint8] + ([tf.int32] if have_y else []) + ([tf.float32] if have_w else [])

    def gather(idx: tf.Tensor) -> tuple[tf.Tensor, ...]:
        parts = tf.numpy_function(fetch, [idx], types)
        parts[0].set_shape([None, size, size])
        for p in parts[1:]:
            p.set_shape([None])
        return tuple(parts)

    # Same arithmetic as inference.preprocess.to_model_input: float32 multiply by 1/255.
    scale = tf.constant(1.0 / 255.0, dtype=tf.float32)
    augmenter = None
    aug_config = augment if isinstance(augment, AugmentConfig) else AugmentConfig()
    if training and augment is not False:
        augmenter = build_augmenter(aug_config, seed)
        gamma, noise = float(aug_config.gamma), float(aug_config.noise)
        blur, occlusion, occ_size = (
            float(aug_config.blur),
            float(aug_config.occlusion),
            float(aug_config.occlusion_size),
        )
    else:
        gamma = noise = blur = occlusion = occ_size = 0.0

    def to_input(x: tf.Tensor, *rest: tf.Tensor) -> Any:
        x = tf.cast(x, tf.float32) * scale
        x = x[..., tf.newaxis]
        if augmenter is not None:
            x = tf.clip_by_value(augmenter(x, training=True), 0.0, 1.0)
            batch = tf.shape(x)[0]
            if gamma:
                x = tf.pow(x + 1e-6, tf.exp(tf.random.uniform([batch, 1, 1, 1], -gamma, gamma)))
            if blur:
                x = _random_blur(x, blur)
            if occlusion:
                x = _random_occlusion(x, occlusion, occ_size)
            if noise:
                sigma = tf.random.uniform([batch, 1, 1, 1], 0.0, noise)
                x = x + tf.random.normal(tf.shape(x)) * sigma
            x = tf.clip_by_value(x, 0.0, 1.0)
        if config.channels > 1:
            x = tf.repeat(x, config.channels, axis=-1)
        return (x, *rest) if rest else x

    if training and sampling_weights is not None:
        p = np.asarray(sampling_weights, dtype=np.float64)
        if p.shape != (n,) or not np.all(p >= 0) or p.sum() <= 0:
            raise ValueError("sampling_weights needs one non-negative weight per image, not all zero")
        p = p / p.sum()
        steps = max(1, math.ceil(n / batch_size))
        rng = np.random.default_rng(seed)

        def draw() -> Any:
            for _ in range(steps):
                yield rng.choice(n, size=batch_size, p=p)

        ds = tf.data.Dataset.from_generator(draw, output_signature=tf.TensorSpec([None], tf.int64))
        ds = ds.apply(tf.data.experimental.assert_cardinality(steps))  # so Keras knows where an epoch ends
    else:
        ds = tf.data.Dataset.range(n)
        if training:
            ds = ds.shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(to_input, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def predict_arrays(
    model: keras.Model, x_uint8: np.ndarray, config: PreprocessConfig, batch_size: int = 32
) -> np.ndarray:
    """Class probabilities ``(N, n_classes)`` for preprocessed uint8 images."""
    if len(x_uint8) == 0:
        return np.zeros((0, int(model.outputs[0].shape[-1])), dtype=np.float32)
    ds = make_tf_dataset(x_uint8, None, config, batch_size, training=False)
    return np.asarray(model.predict(ds, verbose=0), dtype=np.float32)


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """``n / (n_classes * count)`` per class, so each class weighs the same in the loss."""
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    total = counts.sum()
    return {i: (float(total / (n_classes * c)) if c > 0 else 1.0) for i, c in enumerate(counts)}


def group_balanced_weights(labels: np.ndarray, groups: Sequence[str], n_classes: int, power: float = 0.5) -> np.ndarray:
    """Per-image sampling weights: every class the same total, and within a class each group
    (a source hospital or data set) in proportion to ``size ** power``.

    With ``power=0`` every source of a class counts the same, however small (a 14-image
    source would be repeated hundreds of times); with ``power=1`` sources count by size, so
    one big source dominates its class and the model learns its scanner. The square root is
    between the two: small sources are heard, big ones still count for more.
    """
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray([str(g) for g in groups])
    w = np.zeros(len(labels), dtype=np.float64)
    for c in range(n_classes):
        in_class = labels == c
        if not in_class.any():
            continue
        names, counts = np.unique(groups[in_class], return_counts=True)
        mass = counts.astype(np.float64) ** power
        mass /= mass.sum()
        for name, count, m in zip(names, counts, mass):
            w[in_class & (groups == name)] = m / count
    return w / w.sum()
