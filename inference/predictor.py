"""Prediction and Grad-CAM with one loaded model bundle.

A :class:`Predictor` loads a bundle once and then answers three questions: what does the
model say about this image (:meth:`Predictor.predict`), where did it look
(:meth:`Predictor.explain`, both at once with :meth:`Predictor.predict_and_explain`), and
what does it say about these many files (:meth:`Predictor.predict_paths`, which decodes the
next files on a thread pool while the model works on the current batch).

Every image reaches the model through :func:`inference.preprocess.preprocess` and nothing
else, and every heat map goes back onto the original image through the same
:class:`~inference.preprocess.Geometry`. Single images run through a compiled
``tf.function`` rather than ``model.predict``, whose per-call set-up costs more than a
small CNN's forward pass.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.bundle import BundleError, load_bundle
from inference.calibration import apply_temperature, temperature_of
from inference.gradcam import METHODS, CamEngine, upsample
from inference.image import ImageLoadError, XRayImage
from inference.ood import FeatureGaussians, load_feature_gaussians, ood_reason, with_features
from inference.preprocess import Geometry, preprocess
from inference.scope import scope_reasons

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from inference.lungs import LungResult, LungSegmenter

__all__ = ["DECODE_AHEAD_BYTES", "NO_AI_RESULT", "Prediction", "Explanation", "FileResult", "Predictor"]

# Decoded files waiting for the model may hold at most this many bytes (plus the files being
# decoded right now): twenty 10000 x 10000 16-bit PNGs ahead of the model once took 9.7 GB
# (4.5 GB peak with two decode threads here; 1.3 GB with this budget).
DECODE_AHEAD_BYTES = 1024**3


NO_AI_RESULT = "No AI result"


@dataclass(frozen=True, eq=False)  # eq=False: NumPy fields make == ambiguous
class Prediction:
    probabilities: dict[str, float]  # class name -> probability, in the bundle's class order
    probs: np.ndarray  # the same as float32 (K,)
    label: str
    class_index: int
    model_name: str
    model_version: str
    device: str
    geometry: Geometry
    # Set when the lung model looked at the image (lung-crop models, explanations) and found
    # no plausible lung fields: the input may not be a frontal chest X-ray.
    lung_warning: str | None = None
    # Set when the film is out of the model's scope (issue 13): every display and export then
    # shows "No AI result" with this sentence instead of ``label``, which is kept for the record.
    # Several reasons are joined with a space (each is a full sentence). See Predictor._abstain_reason.
    abstain_reason: str | None = None
    # Which gates closed, in order: "scope" (the file's header or pixels), "lungs", "ood".
    abstain_gates: tuple[str, ...] = ()
    # The smallest Mahalanobis distance of the model's features to a training class (None
    # without an OOD scorer in the bundle); above the bundle's threshold the model abstains.
    ood_distance: float | None = None

    @property
    def confidence(self) -> float:
        return float(self.probs[self.class_index])

    @property
    def abstained(self) -> bool:
        return self.abstain_reason is not None

    @property
    def shown_label(self) -> str:
        """What a reader is shown: the class, or "No AI result" when the model abstained."""
        return NO_AI_RESULT if self.abstained else self.label


@dataclass(eq=False)
class Explanation:
    """A Grad-CAM map and what it explains.

    ``cam`` is the map on the target layer's feature grid, ``heatmap_model`` the same over the
    model input, and ``heatmap_original`` (computed on first use: a 3000x3000 float map is
    36 MB) lies on the original image pixel for pixel. All three are float32 in [0, 1].
    """

    cam: np.ndarray
    heatmap_model: np.ndarray
    class_index: int
    class_name: str
    method: str
    geometry: Geometry
    # Share of the heat inside the lung fields (issue 7); None without a lung model or when
    # it found no plausible lungs (then ``lung_warning`` says so).
    lung_heat_fraction: float | None = None
    lung_warning: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def heatmap_original(self) -> np.ndarray:
        # Straight from the feature grid to the original: one interpolation, not two.
        return np.clip(self.geometry.to_original(self.cam, taper=True), 0.0, 1.0)

    @property
    def is_empty(self) -> bool:
        """True when the gradients vanished and the map holds no evidence at all."""
        return not bool(np.any(self.cam > 0))

    def peak(self) -> tuple[int, int] | None:
        """(x, y) of the hottest pixel on the original image, or None for an empty map."""
        if self.is_empty:
            return None
        y, x = np.unravel_index(int(np.argmax(self.heatmap_original)), self.heatmap_original.shape)
        return int(x), int(y)


@dataclass(eq=False)
class FileResult:
    file: str
    ok: bool
    error: str = ""
    prediction: Prediction | None = None
    image: XRayImage | None = None  # kept only when asked (exports need it)
    explanation: Explanation | None = None


class Predictor:
    """One model bundle, loaded once, ready to predict and explain.

    Loading takes seconds (TensorFlow import and model build): a GUI creates it off the
    main thread. Methods may be called from any one thread at a time per call site;
    TensorFlow itself is thread-safe.
    """

    def __init__(self, bundle_dir: str | os.PathLike[str], lungs: LungSegmenter | str | None = "auto"):
        """``lungs``: the lung model behind the lung crop, the heat-in-lungs fraction and the
        "no plausible lungs" warning. "auto" uses the shipped one when it is there; None
        turns lung analysis off (impossible for a bundle trained on lung crops)."""
        import tensorflow as tf

        from inference.device import describe_device

        self.bundle_dir = Path(bundle_dir)
        self.model: keras.Model
        self.model, self.info = load_bundle(self.bundle_dir)
        self.temperature = temperature_of(self.info.calibration)  # 1.0: the bundle is not calibrated
        # The out-of-distribution scorer fitted with the model (None for older bundles: no OOD gate).
        self.ood: FeatureGaussians | None = self._load_ood()
        self.device = describe_device()
        self.lungs = self._resolve_lungs(lungs)
        spec = tf.TensorSpec((None, self.info.input_size, self.info.input_size, self.info.channels), tf.float32)
        # With a scorer, one pass gives the probabilities and the penultimate features.
        model = self.model if self.ood is None else with_features(self.model)
        if model is None:
            raise BundleError(f"{self.bundle_dir} has an OOD scorer, but its network has no final Dense layer.")
        if self.ood is not None and int(model.outputs[1].shape[-1]) != self.ood.n_features:
            raise BundleError(
                f"The OOD scorer of {self.bundle_dir} expects {self.ood.n_features} features; "
                f"the network gives {int(model.outputs[1].shape[-1])}."
            )
        self._forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        self._cam: CamEngine | None = None
        self._cam_lock = threading.Lock()

    def _load_ood(self) -> FeatureGaussians | None:
        try:
            return load_feature_gaussians(self.bundle_dir)
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"The OOD scorer of {self.bundle_dir} cannot be read ({exc}).") from None

    def _resolve_lungs(self, lungs: LungSegmenter | str | None) -> LungSegmenter | None:
        from inference.lungs import LungModelError, shared_segmenter

        needed = self.info.preprocessing.crop == "lungs"
        if lungs == "auto":
            try:
                lungs = shared_segmenter()
            except LungModelError as exc:
                if needed:
                    raise BundleError(f"{self.bundle_dir} crops to the lung fields, but {exc}") from None
                lungs = None
        elif isinstance(lungs, str):
            raise ValueError(f"lungs must be a LungSegmenter, 'auto' or None, not {lungs!r}")
        if needed and lungs is None:
            raise BundleError(f"{self.bundle_dir} crops to the lung fields and needs the lung model.")
        return lungs

    # -- description -------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    @property
    def cam(self) -> CamEngine:
        """The Grad-CAM engine for the bundle's target layers (built on first use, owned by this predictor)."""
        with self._cam_lock:
            if self._cam is None:
                self._cam = CamEngine(self.model, self.info.cam_layers)
            return self._cam

    def warm_up(self, explain: bool = True) -> None:
        """Trace the compiled passes now, so that the first real image is not the slow one."""
        x = np.zeros((1, self.info.input_size, self.info.input_size, self.info.channels), np.float32)
        self._forward(x)
        if explain:
            self.cam.run(x)

    # -- single images and batches -----------------------------------------------------------
    def prepare(self, image: XRayImage) -> tuple[np.ndarray, Geometry]:
        """The model input of ``image`` and its geometry (the one shared preprocessing)."""
        x, geometry, _, _ = self._prepare(image, explain=False)
        return x, geometry

    def _needs_lungs(self, explain: bool) -> bool:
        # Every prediction is gated on plausible lung fields when a lung model is there (issue 13).
        return self.lungs is not None

    def _prepare(self, image: XRayImage, explain: bool) -> tuple[np.ndarray, Geometry, LungResult | None, list[str]]:
        """The model input, its geometry, the lungs (with a lung model) and the scope reasons."""
        lungs = self.lungs.segment(image, self.info.preprocessing.crop_margin) if self._needs_lungs(explain) else None
        x, geometry = self._model_input(image, lungs)
        return x, geometry, lungs, scope_reasons(image)

    def _model_input(self, image: XRayImage, lungs: LungResult | None) -> tuple[np.ndarray, Geometry]:
        config = self.info.preprocessing
        box = lungs.box if lungs is not None and lungs.plausible and config.crop == "lungs" else None
        return preprocess(image, config, box)

    def predict(self, image: XRayImage) -> Prediction:
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Iterable[XRayImage]) -> list[Prediction]:
        prepared = [self._prepare(im, explain=False) for im in images]
        if not prepared:
            return []
        probs, features = self._scores(np.stack([x for x, _, _, _ in prepared]))
        return [
            self._prediction(probs[i], geom, lungs, scope, _row(features, i))
            for i, (_, geom, lungs, scope) in enumerate(prepared)
        ]

    def explain(self, image: XRayImage, class_index: int | None = None, method: str = "gradcam") -> Explanation:
        """Grad-CAM of ``class_index`` (default: the predicted class) on ``image``."""
        return self.predict_and_explain(image, class_index, method)[1]

    def predict_and_explain(
        self, image: XRayImage, class_index: int | None = None, method: str = "gradcam"
    ) -> tuple[Prediction, Explanation]:
        """Prediction and Grad-CAM from one forward and one backward pass."""
        x, geom, lungs, scope = self._prepare(image, explain=True)
        probs, chosen, cams, features = self._explain_pass(x[np.newaxis], class_index, method)
        return (
            self._prediction(probs[0], geom, lungs, scope, _row(features, 0)),
            self._explanation(cams[0], int(chosen[0]), geom, method, lungs),
        )

    # -- many files --------------------------------------------------------------------------
    def predict_paths(
        self,
        paths: Iterable[str | os.PathLike[str]],
        batch_size: int = 16,
        progress: Callable[[int, int], None] | None = None,
        *,
        explain: bool = False,
        method: str = "gradcam",
        keep_images: bool = False,
        workers: int | None = None,
        max_bytes_ahead: int | None = None,
    ) -> Iterator[FileResult]:
        """Predict files in input order; a file that cannot be read gives ``ok=False``, never an exception.

        Decoding and preprocessing run on ``workers`` threads ahead of the model, so the model
        rarely waits for the disk or the decoder: up to two batches of files, and never more
        than ``max_bytes_ahead`` bytes of decoded data (default :data:`DECODE_AHEAD_BYTES`)
        besides the files being decoded; a batch closes early when it reaches that size.
        ``progress(done, total)`` is called after each result. With ``explain`` every result
        carries a Grad-CAM explanation of its predicted class.
        """
        if method not in METHODS:
            raise ValueError(f"unknown Grad-CAM method {method!r}; choose one of {', '.join(METHODS)}")
        batch_size = max(1, int(batch_size))
        items = [str(p) for p in paths]
        total = len(items)
        workers = workers or max(2, min(4, os.cpu_count() or 2))
        ahead = _DecodeAhead(
            self, iter(items), explain, keep_images, workers, 2 * batch_size + workers, max_bytes_ahead
        )
        done = 0
        try:
            ahead.refill()
            while ahead.pending:
                chunk: list[_Prepared] = []
                n_ready = 0
                # A chunk ends at batch_size readable files, or early when the decode-ahead
                # budget stops new decodes (the model must run to free memory).
                while ahead.pending and n_ready < batch_size and (not chunk or ahead.ready() or not ahead.stalled()):
                    item = ahead.take()
                    chunk.append(item)
                    n_ready += item.error is None
                self._segment_chunk(chunk)
                results = self._run_chunk(chunk, explain, method, keep_images)
                ahead.release(chunk)
                del chunk
                for result in results:
                    done += 1
                    if progress is not None:
                        progress(done, total)
                    yield result
        finally:
            # Also reached when the caller stops early: do not decode files nobody will read.
            ahead.close()

    def _prepare_file(self, path: str, explain: bool, keep_image: bool = True) -> _Prepared:
        from inference.loading import load_image

        try:
            image = load_image(path)
        except ImageLoadError as exc:
            return _Prepared(path, error=str(exc))
        except Exception as exc:  # the loader promises ImageLoadError only; never let a slip stop a batch
            return _Prepared(path, error=f"{Path(path).name} cannot be read ({type(exc).__name__}: {exc})")
        try:
            scope = scope_reasons(image)
            if self._needs_lungs(explain):
                # The lungs are segmented for the whole chunk at once (one batched pass of the
                # lung network, see _segment_chunk); this thread only prepares its input.
                return _Prepared(path, image=image, lung_input=self.lungs.network_input(image), scope=scope)
            x, geom = self._model_input(image, None)
        except Exception as exc:
            return _Prepared(path, error=f"{Path(path).name} cannot be prepared for the model ({exc})")
        # Without lungs to segment or images to return, the full-size pixels are not needed any more.
        return _Prepared(path, image=image if keep_image else None, x=x, geometry=geom, scope=scope)

    def _segment_chunk(self, chunk: list[_Prepared]) -> None:
        """Segment the lungs of the chunk's files in one pass, then make their model inputs."""
        todo = [item for item in chunk if item.error is None and item.lung_input is not None]
        if not todo:
            return
        try:
            results = self.lungs.segment_batch(
                [item.image for item in todo], self.info.preprocessing.crop_margin, [item.lung_input for item in todo]
            )
        except Exception as exc:  # the lung network failed on this batch: report its files, go on
            for item in todo:
                item.error = f"{Path(item.path).name}: the lung fields could not be found ({exc})"
            return
        for item, lungs in zip(todo, results):
            try:
                item.x, item.geometry = self._model_input(item.image, lungs)
                item.lungs = lungs
            except Exception as exc:
                item.error = f"{Path(item.path).name} cannot be prepared for the model ({exc})"
            item.lung_input = None

    def _run_chunk(self, chunk: list[_Prepared], explain: bool, method: str, keep_images: bool) -> list[FileResult]:
        ready = [item for item in chunk if item.error is None]
        predictions: dict[int, tuple[Prediction, Explanation | None]] = {}
        if ready:
            batch = np.stack([item.x for item in ready])
            if explain:
                probs, chosen, cams, features = self._explain_pass(batch, None, method)
                for i, item in enumerate(ready):
                    predictions[id(item)] = (
                        self._prediction(probs[i], item.geometry, item.lungs, item.scope, _row(features, i)),
                        self._explanation(cams[i], int(chosen[i]), item.geometry, method, item.lungs),
                    )
            else:
                probs, features = self._scores(batch)
                for i, item in enumerate(ready):
                    predictions[id(item)] = (
                        self._prediction(probs[i], item.geometry, item.lungs, item.scope, _row(features, i)),
                        None,
                    )
        results = []
        for item in chunk:
            if item.error is not None:
                results.append(FileResult(file=item.path, ok=False, error=item.error))
                continue
            prediction, explanation = predictions[id(item)]
            image = item.image if keep_images else None
            results.append(FileResult(item.path, True, "", prediction, image, explanation))
        return results

    # -- building results --------------------------------------------------------------------
    def forward(self, batch: np.ndarray) -> np.ndarray:
        """The network's probabilities ``(N, K)`` of prepared model inputs ``(N, S, S, C)`` (see
        :meth:`prepare`), before the bundle's calibration (:meth:`_prediction` applies it)."""
        return self._scores(batch)[0]

    def _scores(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities ``(N, K)`` and, with an OOD scorer, the penultimate features ``(N, D)``."""
        out = self._forward(np.asarray(batch, dtype=np.float32))
        if self.ood is None:
            return np.asarray(out, dtype=np.float32), None
        return np.asarray(out[0], dtype=np.float32), np.asarray(out[1], dtype=np.float32)

    def _explain_pass(
        self, batch: np.ndarray, class_index: int | None, method: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Probabilities, explained classes, maps and (with an OOD scorer) the features, from the
        Grad-CAM pass alone: its forward pass already holds the features (a second forward pass for
        them took the two-network ensemble from 59 to 86 ms per film, 1.1.1 from 25 to 32 ms)."""
        probs, chosen, cams, features = self.cam.run_with_features(batch, class_index, method)
        return probs, chosen, cams, (features if self.ood is not None else None)

    def _features(self, batch: np.ndarray) -> np.ndarray | None:
        """The penultimate features of ``batch`` (None without an OOD scorer: nothing is computed)."""
        return None if self.ood is None else self._scores(batch)[1]

    def _abstain_reason(
        self, lungs: LungResult | None, scope: Iterable[str], features: np.ndarray | None
    ) -> tuple[str | None, tuple[str, ...], float | None]:
        """The gate (issue 13): why no class should be shown for this film, which gates closed,
        and its OOD distance.

        Out of scope by the file's header or pixels (:func:`inference.scope.scope_reasons`), no
        plausible lung fields (with a lung model), or features farther from every training class
        than the bundle's threshold (with an OOD scorer). Several reasons are joined.
        """
        reasons = list(scope)
        gates = ["scope"] if reasons else []
        if lungs is not None and not lungs.plausible:
            reasons.append(lungs.warning or "No plausible lung fields found: this may not be a frontal chest X-ray.")
            gates.append("lungs")
        distance = None
        if self.ood is not None and features is not None:
            distance = float(self.ood.distances(features)[0])
            if distance > self.ood.threshold:
                reasons.append(ood_reason(distance, self.ood.threshold))
                gates.append("ood")
        return (" ".join(reasons) if reasons else None), tuple(gates), distance

    def _prediction(
        self,
        probs: np.ndarray,
        geometry: Geometry,
        lungs: LungResult | None = None,
        scope: Iterable[str] = (),
        features: np.ndarray | None = None,
    ) -> Prediction:
        # Every shown, exported or evaluated score passes here: the one place calibration applies,
        # and the one place the abstain gate decides.
        probs = apply_temperature(np.asarray(probs, dtype=np.float32), self.temperature)
        reason, gates, distance = self._abstain_reason(lungs, scope, features)
        index = int(np.argmax(probs))
        names = self.info.class_names
        return Prediction(
            probabilities={name: float(p) for name, p in zip(names, probs)},
            probs=probs,
            label=names[index],
            class_index=index,
            model_name=self.info.name,
            model_version=self.info.version,
            device=self.device,
            geometry=geometry,
            lung_warning=lungs.warning if lungs is not None else None,
            abstain_reason=reason,
            abstain_gates=gates,
            ood_distance=distance,
        )

    def _explanation(
        self, cam: np.ndarray, class_index: int, geometry: Geometry, method: str, lungs: LungResult | None = None
    ) -> Explanation:
        from inference.lungs import heat_fraction_on_grid

        size = self.info.input_size
        fraction = warning = None
        if lungs is not None:
            warning = lungs.warning
            if lungs.plausible:
                fraction = heat_fraction_on_grid(cam, geometry, lungs.mask)
        return Explanation(
            cam=cam,
            heatmap_model=upsample(cam, (size, size)),
            class_index=class_index,
            class_name=self.info.class_names[class_index],
            method=method,
            geometry=geometry,
            lung_heat_fraction=fraction,
            lung_warning=warning,
        )


def _row(features: np.ndarray | None, i: int) -> np.ndarray | None:
    return None if features is None else features[i : i + 1]


@dataclass
class _Prepared:
    """A decoded, preprocessed file waiting for the model (or the reason it could not be)."""

    path: str
    image: XRayImage | None = None
    x: np.ndarray | None = None
    geometry: Geometry | None = None
    lungs: LungResult | None = None
    lung_input: tuple[np.ndarray, Geometry] | None = None  # waiting for the chunk's lung pass
    scope: list[str] = field(default_factory=list)  # inference.scope reasons read from the file
    error: str | None = None
    counted: int = 0  # bytes charged to the decode-ahead budget when decoding finished

    @property
    def nbytes(self) -> int:
        arrays = [self.x, self.image.pixels if self.image is not None else None]
        if self.lung_input is not None:
            arrays.append(self.lung_input[0])
        return sum(int(a.nbytes) for a in arrays if isinstance(a, np.ndarray))


class _DecodeAhead:
    """The files decoding ahead of the model, bounded by count and by bytes.

    At most ``workers`` files decode at once; a finished one starts the next (from its own
    thread) only while the decoded files not yet released by the model loop hold less than
    ``max_bytes`` (one file is always allowed, so a single huge file still gets through).
    """

    def __init__(
        self,
        predictor: Predictor,
        source: Iterator[str],
        explain: bool,
        keep_images: bool,
        workers: int,
        lookahead: int,
        max_bytes: int | None,
    ) -> None:
        self._predictor, self._source, self._explain = predictor, source, explain
        self._keep = keep_images or predictor._needs_lungs(explain)
        self._workers, self._lookahead = workers, lookahead
        self._max_bytes = DECODE_AHEAD_BYTES if max_bytes is None else max(0, int(max_bytes))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cxr-decode")
        self._lock = threading.RLock()
        self.pending: deque[Future[_Prepared]] = deque()
        self._running = 0  # submitted, not finished
        self._held = 0  # bytes of finished files not yet released by the model loop
        self._exhausted = False
        self._closed = False

    def refill(self) -> None:
        with self._lock:
            while not self._exhausted and not self._closed and len(self.pending) < self._lookahead:
                if self._running >= self._workers:
                    return
                if self._held >= self._max_bytes and (self._held or self._running):
                    return
                path = next(self._source, None)
                if path is None:
                    self._exhausted = True
                    return
                self._running += 1
                future = self._pool.submit(self._predictor._prepare_file, path, self._explain, self._keep)
                self.pending.append(future)
                future.add_done_callback(self._finished)

    def _finished(self, future: Future[_Prepared]) -> None:
        with self._lock:
            self._running -= 1
            if not future.cancelled() and future.exception() is None:
                item = future.result()
                item.counted = item.nbytes
                self._held += item.counted
        self.refill()

    def stalled(self) -> bool:
        """True when nothing more will be decoded until the model loop releases memory."""
        with self._lock:
            return not self._exhausted and self._held >= self._max_bytes and not self._running

    def ready(self) -> bool:
        """True when the next file is decoded already (taking it costs no memory)."""
        return bool(self.pending) and self.pending[0].done()

    def take(self) -> _Prepared:
        future = self.pending[0]
        item = future.result()
        with self._lock:
            self.pending.popleft()
        self.refill()
        return item

    def release(self, chunk: list[_Prepared]) -> None:
        """The model is done with ``chunk``: its bytes no longer count (the caller drops them)."""
        with self._lock:
            self._held -= sum(item.counted for item in chunk)
        self.refill()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
