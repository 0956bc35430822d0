"""Lung fields: where they are on an X-ray, and what that tells us about a prediction.

The shipped lung model (``resources/models/lungs/``: ``model.keras`` + ``model.json``) is a
small U-Net with two sigmoid outputs, one per mask convention found in the public masks
(see ``training/lungs.py`` for why both):

* ``"visible"``: the visible lung fields, heart and mediastinum excluded (NLM, Shenzhen
  and radiologist-drawn masks). This is :attr:`LungResult.mask`, the one used for the
  "fraction of heat inside the lungs" and for the plausibility check: it is the strict
  convention, so heat on the heart or the spine does not count as "in the lungs".
* ``"whole"``: the whole lungs including the parts behind the heart and below the dome of
  the diaphragm (V7 masks). The crop box is the union of both, so that a lung crop never
  cuts away the retrocardiac or posterior basal lung where pneumonia hides.

The image reaches the network through the one shared preprocessing
(:func:`inference.preprocess.preprocess`), and the probability maps come back onto the
original pixels through the same :class:`~inference.preprocess.Geometry` the classifier's
heat maps use, so masks and heat maps line up pixel for pixel.

Three uses (issue 7): :func:`lung_box` gives the crop box for ``PreprocessConfig(crop=
"lungs")``; :func:`heat_fraction_in_lungs` says how much of a Grad-CAM lies on the lungs;
and :attr:`LungResult.plausible` / :attr:`LungResult.warning` flag images that do not show
two lung fields (not a frontal chest X-ray, or a figure from a paper).

Reading ``model.json`` needs no TensorFlow; the network is loaded lazily with
``safe_mode=True``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from inference import model_folder as mf
from inference.image import XRayImage
from inference.model_folder import INFO_FILE, MODEL_FILE, BundleError
from inference.paths import resources_dir
from inference.preprocess import Geometry, PreprocessConfig, preprocess

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "LUNG_MODEL_FORMAT",
    "LUNG_MODEL_FORMAT_VERSION",
    "NO_LUNGS_WARNING",
    "LungModelError",
    "LungCard",
    "LungResult",
    "LungSegmenter",
    "check_plausible",
    "default_lung_model_dir",
    "heat_fraction_in_lungs",
    "heat_fraction_on_grid",
    "lung_box",
    "read_lung_card",
    "segmenter_identity",
    "shared_segmenter",
    "write_lung_model",
]

LUNG_MODEL_FORMAT = "cxr-lung-model"
LUNG_MODEL_FORMAT_VERSION = 1
NO_LUNGS_WARNING = "No plausible lung fields found: this may not be a frontal chest X-ray."

# Plausibility limits, on the visible-lung-field mask. The 1,449 annotated images span
# 0.08-0.43 (NLM, Shenzhen) and 0.20-0.59 (COVID-19 cases with consolidation, whose
# "visible" fields are large on AP films); the range leaves some room on both sides.
MIN_AREA_FRACTION = 0.06
MAX_AREA_FRACTION = 0.65
MIN_COMPONENT_FRACTION = 0.015  # of the image: smaller blobs are not a lung field
MIN_MAIN_SHARE = 0.80  # the lung fields must hold most of the mask (no scattered junk)
MIN_SINGLE_SPAN = 0.40  # one merged component must span this much of the width
CENTRE_X = (0.30, 0.70)  # where the mask's centroid may lie, as fractions of width/height
CENTRE_Y = (0.20, 0.75)
MIN_CONFIDENCE = 0.70  # mean |2p - 1| inside the mask's bounding box: the model must be sure


class LungModelError(BundleError):
    """The lung model is missing, incomplete or unreadable; the message says which.

    A :class:`~inference.model_folder.BundleError`, so that every caller that reports a bad
    model folder (exit code 2 in the CLI) reports a bad lung model the same way."""


def default_lung_model_dir() -> Path:
    return resources_dir() / "models" / "lungs"


# ---------------------------------------------------------------------------------------------
# The card (model.json)


@dataclass
class LungCard:
    """What ``model.json`` says about a lung model; enough to use it without its training code."""

    name: str
    version: str
    preprocessing: PreprocessConfig
    outputs: list[str]  # mask convention of each output channel, in order ("visible", "whole")
    threshold: float = 0.5
    primary: str = "visible"  # the output behind LungResult.mask
    box_outputs: list[str] = field(default_factory=lambda: ["visible", "whole"])  # union gives the crop box
    conventions: dict[str, str] = field(default_factory=dict)  # convention -> what it includes, in words
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    description: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    license: dict[str, Any] = field(default_factory=dict)
    keras_version: str = ""
    tensorflow_version: str = ""

    @property
    def input_size(self) -> int:
        return self.preprocessing.size

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": LUNG_MODEL_FORMAT,
            "format_version": LUNG_MODEL_FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "description": self.description,
            "input": {"size": self.preprocessing.size, "channels": self.preprocessing.channels},
            "preprocessing": self.preprocessing.to_dict(),
            "outputs": list(self.outputs),
            "threshold": self.threshold,
            "primary": self.primary,
            "box_outputs": list(self.box_outputs),
            "mask_conventions": dict(self.conventions),
            "metrics": self.metrics,
            "training": self.training,
            "license": self.license,
            "keras_version": self.keras_version,
            "tensorflow_version": self.tensorflow_version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = INFO_FILE) -> LungCard:
        """Check ``data`` against the lung model's schema and build the card (a :class:`LungModelError` if not)."""
        e = LungModelError
        if not isinstance(data, dict) or data.get("format") != LUNG_MODEL_FORMAT:
            raise e(f"{where} does not describe a lung model.")
        mf.check_tree(data, where, e)
        mf.format_version(data, where, LUNG_MODEL_FORMAT_VERSION, e)
        pre = mf.preprocessing_from(data.get("preprocessing"), where, e)
        mf.check_input_block(data, pre, where, e)
        outputs = mf.text_list(data, "outputs", where, min_items=1, max_items=8, pattern=mf.IDENT_RE, error=e)
        conventions = mf.mapping(data, "mask_conventions", where, error=e)
        if not all(isinstance(k, str) and isinstance(v, str) and len(v) <= 500 for k, v in conventions.items()):
            raise e(f"{where}: 'mask_conventions' must map output names to short texts.")
        card = cls(
            name=mf.text(data, "name", where, required=True, max_len=100, pattern=mf.NAME_RE, error=e),
            version=mf.text(data, "version", where, required=True, max_len=40, pattern=mf.VERSION_RE, error=e),
            preprocessing=pre,
            outputs=outputs,
            threshold=mf.number(
                data, "threshold", where, 0.0, 1.0, default=0.5, open_low=True, open_high=True, error=e
            ),
            primary=mf.text(data, "primary", where, default=outputs[0], max_len=128, error=e),
            box_outputs=mf.text_list(data, "box_outputs", where, min_items=1, max_items=8, default=outputs, error=e),
            conventions=conventions,
            created=mf.text(data, "created", where, max_len=64, error=e),
            description=mf.text(data, "description", where, max_len=2000, error=e),
            metrics=mf.mapping(data, "metrics", where, error=e),
            training=mf.mapping(data, "training", where, error=e),
            license=mf.mapping(data, "license", where, error=e),
            keras_version=mf.text(data, "keras_version", where, max_len=40, error=e),
            tensorflow_version=mf.text(data, "tensorflow_version", where, max_len=40, error=e),
        )
        if pre.crop != "none":
            raise e(f"{where}: a lung model must see the whole image (crop must be 'none').")
        unknown = {card.primary, *card.box_outputs} - set(outputs)
        if unknown:
            raise e(f"{where} names outputs the model does not have: {sorted(unknown)}.")
        return card


def read_lung_card(path: str | os.PathLike[str]) -> LungCard:
    """Read and check ``model.json`` of the lung model folder ``path`` (no TensorFlow needed)."""
    p = Path(path)
    if not (p / INFO_FILE).is_file() or not (p / MODEL_FILE).is_file():
        raise LungModelError(f"No lung model in {p}: it needs {MODEL_FILE} and {INFO_FILE}.")
    data = mf.read_description(p, LungModelError)
    return LungCard.from_dict(data, where=str(p / INFO_FILE))


def lung_card_markdown(card: LungCard) -> str:
    """The ``README.md`` written with a lung model (the measured details stay in ``model.json``)."""
    facts = [
        ("Outputs", ", ".join(f"{o} ({card.conventions.get(o, o)})" for o in card.outputs)),
        ("Input", f"{card.input_size} x {card.input_size} px, whole image"),
        ("Threshold", f"{card.threshold:g}"),
        ("Created", card.created),
        ("Training command", f"`{card.training['command']}`" if card.training.get("command") else ""),
        ("Licence", "see NOTICE" if card.license else ""),
    ]
    return mf.card_markdown(f"Lung model: {card.name} {card.version}", card.description, facts)


def write_lung_model(
    model: keras.Model,
    card: LungCard,
    out_dir: str | os.PathLike[str],
    extra_files: dict[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model.keras``, ``model.json``, ``README.md`` and ``extra_files`` (name -> text) atomically.

    The one atomic save of :func:`inference.model_folder.write_model_folder`: a temporary
    sibling folder is read back and renamed into place, so an interrupted write never leaves
    a half-written model behind, and a working model is replaced only with ``overwrite``.
    """
    import keras
    import tensorflow as tf

    card.keras_version, card.tensorflow_version = keras.__version__, tf.__version__
    description = card.to_dict()
    LungCard.from_dict(description, where=f"the card of {card.name}")  # never write a bad one
    mf.check_network(
        model,
        f"the lung network {card.name}",
        input_shape=(card.input_size, card.input_size, card.preprocessing.channels),
        outputs=len(card.outputs),
        output_rank=4,
        error=LungModelError,
    )
    return mf.write_model_folder(
        out_dir,
        lambda dest: model.save(dest),
        description,
        read_back=read_lung_card,
        card=lung_card_markdown(card),
        extra_texts=extra_files,
        overwrite=overwrite,
        error=LungModelError,
    )


# ---------------------------------------------------------------------------------------------
# Geometry and maths on masks (pure functions)


def lung_box(mask: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """The bounding box ``(x0, y0, x1, y1)`` (x1/y1 exclusive) of ``mask`` grown by ``margin``.

    ``margin`` is a fraction of the box's own width (added left and right) and height (added
    top and bottom), as ``PreprocessConfig.crop_margin`` means it; the box is clipped to the
    image. An empty mask gives the whole image, so a crop can never lose the picture. The box
    is in the mask's pixels: with a mask on the original grid it is what
    ``preprocess(image, config, crop_box=box)`` takes.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"a lung mask is 2-D; got shape {mask.shape}")
    h, w = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0, 0, w, h)
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    return (
        max(0, int(np.floor(x0 - mx))),
        max(0, int(np.floor(y0 - my))),
        min(w, int(np.ceil(x1 + mx))),
        min(h, int(np.ceil(y1 + my))),
    )


def heat_fraction_in_lungs(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """The share of the heat map's total heat that lies inside ``mask``, in [0, 1].

    Both must be on the same grid (``Explanation.heatmap_original`` and
    :attr:`LungResult.mask`). Negative heat is not heat (Grad-CAM is ReLU'd; this only
    guards against maps from elsewhere), and a map without heat gives 0.0, never NaN.
    """
    heat = np.asarray(heatmap, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if heat.shape != mask.shape:
        raise ValueError(f"heat map {heat.shape} and lung mask {mask.shape} are not on the same grid")
    heat = np.where(np.isfinite(heat), np.maximum(heat, 0.0), 0.0)
    total = float(heat.sum())
    if total <= 0.0:
        return 0.0
    return float(min(1.0, max(0.0, heat[mask].sum() / total)))


def check_plausible(mask: np.ndarray, probability: np.ndarray | None = None) -> tuple[bool, str | None]:
    """Does ``mask`` (visible lung fields, any grid) look like the two lungs of a frontal chest film?

    Two large fields, one on each side of the midline (or one field spanning both, as in
    small children), holding most of the mask; a sane area; roughly centred; and, given
    the model's ``probability`` map on the same grid, a confident model. Returns
    ``(True, None)`` or ``(False, warning)``; the warning names the first failed check.
    """
    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    area = float(m.mean())

    def fail(why: str) -> tuple[bool, str]:
        return False, f"{NO_LUNGS_WARNING} ({why})"

    if area < MIN_AREA_FRACTION:
        return fail(f"lung area {area:.0%} of the image")
    if area > MAX_AREA_FRACTION:
        return fail(f"lung area {area:.0%} of the image")
    n, _, stats, centroids = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    comps = sorted(range(1, n), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    large = [i for i in comps if stats[i, cv2.CC_STAT_AREA] >= MIN_COMPONENT_FRACTION * h * w]
    total = float(m.sum())
    if len(large) >= 2:
        a, b = large[0], large[1]
        xs = sorted((centroids[a][0], centroids[b][0]))
        if not (xs[0] < w / 2 < xs[1]):
            return fail("the two largest fields are on the same side")
        main = stats[a, cv2.CC_STAT_AREA] + stats[b, cv2.CC_STAT_AREA]
    elif len(large) == 1:
        a = large[0]
        x0, span = stats[a, cv2.CC_STAT_LEFT], stats[a, cv2.CC_STAT_WIDTH]
        if not (x0 < w / 2 < x0 + span and span >= MIN_SINGLE_SPAN * w):
            return fail("only one lung field found")
        main = stats[a, cv2.CC_STAT_AREA]
    else:
        return fail("no lung field found")
    if main < MIN_MAIN_SHARE * total:
        return fail("scattered fragments")
    ys, xs = np.nonzero(m)
    cx, cy = xs.mean() / w, ys.mean() / h
    if not (CENTRE_X[0] <= cx <= CENTRE_X[1] and CENTRE_Y[0] <= cy <= CENTRE_Y[1]):
        return fail("the fields are off centre")
    if probability is not None:
        x0, y0, x1, y1 = lung_box(m, 0.0)
        p = np.asarray(probability, dtype=np.float32)[y0:y1, x0:x1]
        confidence = float(np.abs(2.0 * p - 1.0).mean())
        if confidence < MIN_CONFIDENCE:
            return fail(f"the lung model is unsure, confidence {confidence:.2f}")
    return True, None


# ---------------------------------------------------------------------------------------------
# The segmenter


@dataclass(frozen=True)
class LungResult:
    """The lung fields of one image, on its original pixel grid."""

    mask: np.ndarray  # bool (H, W): the visible lung fields (heart excluded)
    whole_mask: np.ndarray | None  # bool (H, W): whole lungs incl. retrocardiac/basal parts, if the model has it
    area_fraction: float  # of ``mask`` in the image
    plausible: bool
    warning: str | None
    box: tuple[int, int, int, int]  # crop box with the margin asked for; the whole image when not plausible
    margin: float


class LungSegmenter:
    """The lung model, loaded once. ``segment`` is safe to call from several threads.

    Recent results are remembered per pixel array, so that the crop box (asked for before
    classification) and the heat fraction (asked for after Grad-CAM) cost one segmentation.
    """

    CACHE_SIZE = 4

    def __init__(self, model_dir: str | os.PathLike[str] | None = None):
        self.model_dir = Path(model_dir) if model_dir is not None else default_lung_model_dir()
        self.card = read_lung_card(self.model_dir)
        size, ch = self.card.input_size, self.card.preprocessing.channels
        model = mf.load_network(
            self.model_dir,
            input_shape=(size, size, ch),
            outputs=len(self.card.outputs),
            output_rank=4,
            saved_with=self.card.keras_version,
            error=LungModelError,
            what="lung model",
        )
        self._init(model)

    @classmethod
    def from_model(cls, model: keras.Model, card: LungCard) -> LungSegmenter:
        """A segmenter around a network in memory (training evaluates through this)."""
        self = cls.__new__(cls)
        self.model_dir = None
        self.card = card
        self._init(model)
        return self

    def _init(self, model: keras.Model) -> None:
        import tensorflow as tf

        size, ch = self.card.input_size, self.card.preprocessing.channels
        mf.check_network(
            model,
            f"The lung network {self.model_dir or self.card.name}",
            input_shape=(size, size, ch),
            outputs=len(self.card.outputs),
            output_rank=4,
            error=LungModelError,
        )
        self.model = model
        spec = tf.TensorSpec((None, size, size, ch), tf.float32)
        self._forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, tuple[np.ndarray, float, LungResult]] = OrderedDict()

    def warm_up(self) -> None:
        """Trace the compiled forward pass now, so that the first image is not the slow one."""
        s, ch = self.card.input_size, self.card.preprocessing.channels
        self._forward(np.zeros((1, s, s, ch), np.float32))

    def probabilities(self, image: XRayImage) -> dict[str, np.ndarray]:
        """Each output's probability map on the original grid (float32 (H, W) in [0, 1])."""
        x, geometry = preprocess(image, self.card.preprocessing)
        small = self.predict_batch(x[np.newaxis])[0]
        return {name: np.clip(geometry.to_original(p), 0.0, 1.0) for name, p in small.items()}

    def probabilities_model(self, image: XRayImage) -> dict[str, np.ndarray]:
        """Each output's probability map on the model's square grid."""
        x, _ = preprocess(image, self.card.preprocessing)
        return self.predict_batch(x[np.newaxis])[0]

    def predict_batch(self, x: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Probability maps for a batch of preprocessed inputs ``(N, S, S, C)`` (training uses this)."""
        out = np.asarray(self._forward(np.asarray(x, dtype=np.float32)), dtype=np.float32)
        return [{name: out[i, ..., k] for k, name in enumerate(self.card.outputs)} for i in range(len(out))]

    def segment(self, image: XRayImage, margin: float | None = None) -> LungResult:
        """The lung fields of ``image`` on its original grid, their crop box and plausibility.

        ``margin`` defaults to ``PreprocessConfig().crop_margin``; pass the classifier
        bundle's ``preprocessing.crop_margin`` so that the box is the one it was trained with.
        """
        margin = PreprocessConfig().crop_margin if margin is None else float(margin)
        key = id(image.pixels)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] is image.pixels and hit[1] == margin:
                self._cache.move_to_end(key)
                return hit[2]
        result = self._segment(image, margin)
        self._remember([image], margin, [result])
        return result

    def _remember(self, images: Sequence[XRayImage], margin: float, results: Sequence[LungResult]) -> None:
        with self._lock:
            for image, result in zip(images, results):
                # The entry holds the pixel array itself, so its id cannot be reused while cached.
                self._cache[id(image.pixels)] = (image.pixels, margin, result)
                while len(self._cache) > self.CACHE_SIZE:
                    self._cache.popitem(last=False)

    def segment_batch(
        self,
        images: Sequence[XRayImage],
        margin: float | None = None,
        inputs: Sequence[tuple[np.ndarray, Geometry]] | None = None,
    ) -> list[LungResult]:
        """:meth:`segment` for several images with one pass of the network (batch prediction).

        ``inputs`` are the images' :meth:`network_input` results when they were prepared
        already (on decoding threads); results are cached as by :meth:`segment`.
        """
        margin = PreprocessConfig().crop_margin if margin is None else float(margin)
        if not images:
            return []
        prepared = list(inputs) if inputs is not None else [self.network_input(im) for im in images]
        maps = self.predict_batch(np.stack([x for x, _ in prepared]))
        results = [self._result(small, geometry, margin) for small, (_, geometry) in zip(maps, prepared)]
        self._remember(images, margin, results)
        return results

    def network_input(self, image: XRayImage) -> tuple[np.ndarray, Geometry]:
        """The lung network's input for ``image`` and its geometry (thread-safe, no TensorFlow)."""
        return preprocess(image, self.card.preprocessing)

    def _segment(self, image: XRayImage, margin: float) -> LungResult:
        x, geometry = self.network_input(image)
        return self._result(self.predict_batch(x[np.newaxis])[0], geometry, margin)

    def _result(self, small: dict[str, np.ndarray], geometry: Geometry, margin: float) -> LungResult:
        """The lung fields on the original grid from the network's maps on its own grid."""
        card = self.card
        primary = small[card.primary]
        plausible, warning = check_plausible(primary >= card.threshold, primary)
        full = {name: geometry.to_original(p) >= card.threshold for name, p in small.items()}
        mask = full[card.primary]
        whole = full.get("whole")
        h, w = mask.shape
        if plausible:
            union = np.zeros_like(mask)
            for name in card.box_outputs:
                union |= full[name]
            box = lung_box(union, margin)
        else:
            box = (0, 0, w, h)
        return LungResult(
            mask=mask,
            whole_mask=whole,
            area_fraction=float(mask.mean()),
            plausible=plausible,
            warning=warning,
            box=box,
            margin=margin,
        )

    def crop_box(self, image: XRayImage, margin: float | None = None) -> tuple[int, int, int, int] | None:
        """The lung crop box for ``preprocess(..., crop_box=...)``, or None when no plausible lungs were found.

        Has the signature of :data:`inference.predictor.CropLocator` once the margin is
        bound: ``lambda im: segmenter.crop_box(im, info.preprocessing.crop_margin)``.
        """
        result = self.segment(image, margin)
        return result.box if result.plausible else None


_SHARED: dict[Path, LungSegmenter] = {}
_SHARED_LOCK = threading.Lock()


def shared_segmenter(model_dir: str | os.PathLike[str] | None = None) -> LungSegmenter:
    """One :class:`LungSegmenter` per model folder and process (the viewer, training and the
    CLI all ask for the shipped one; loading it twice would only cost memory)."""
    where = Path(model_dir) if model_dir is not None else default_lung_model_dir()
    key = where.resolve()
    with _SHARED_LOCK:
        seg = _SHARED.get(key)
        if seg is None:
            seg = _SHARED[key] = LungSegmenter(where)
        return seg


def segmenter_identity(segmenter: LungSegmenter) -> str:
    """A short text that changes when the lung model does (it keys cached lung crops)."""
    card = segmenter.card
    return f"{card.name}:{card.version}:{card.created}"


def heat_fraction_on_grid(cam: np.ndarray, geometry: Geometry, mask: np.ndarray, max_side: int = 512) -> float:
    """:func:`heat_fraction_in_lungs` of a Grad-CAM ``cam`` (any grid over the model input)
    placed on the original image through ``geometry``, against ``mask`` on the original grid.

    Computed on the original grid scaled down to at most ``max_side`` px: the fraction is a
    ratio of areas, and a full-size map of a 3000x3000 film would cost 36 MB and tens of ms.
    """
    h, w = geometry.original_shape
    if mask.shape != (h, w):
        raise ValueError(f"lung mask {mask.shape} is not on the image's grid {(h, w)}")
    s = min(1.0, max_side / max(h, w))
    if s < 1.0:
        hs, ws = max(1, round(h * s)), max(1, round(w * s))
        x0, y0, x1, y1 = geometry.crop_box
        box = (
            min(int(x0 * s), ws - 1),
            min(int(y0 * s), hs - 1),
            max(min(ws, round(x1 * s)), min(int(x0 * s), ws - 1) + 1),
            max(min(hs, round(y1 * s)), min(int(y0 * s), hs - 1) + 1),
        )
        geometry = Geometry(original_shape=(hs, ws), crop_box=box, size=geometry.size)
        mask = cv2.resize(mask.astype(np.float32), (ws, hs), interpolation=cv2.INTER_AREA) >= 0.5
    return heat_fraction_in_lungs(np.clip(geometry.to_original(cam), 0.0, 1.0), mask)
