"""The model bundle: a directory holding ``model.keras`` and ``model.json``.

``model.json`` carries everything needed to use the model without the code that
trained it::

    {
      "format": "cxr-model-bundle", "format_version": 1,
      "name": "cxr-default", "version": "1.0.0", "created": "2026-11-22T05:00:00+00:00",
      "architecture": "custom-cnn",
      "class_names": ["COVID-19", "Normal", "Pneumonia"],      # in output order
      "input": {"size": 224, "channels": 1},
      "preprocessing": {...PreprocessConfig...},
      "gradcam_layer": "last_conv",                             # Grad-CAM target layer
      "training": {"data": {"counts": {...}, "sources": {...}, "n_images": N}, ...},
      "metrics": {...},
      "keras_version": "3.x", "tensorflow_version": "2.x"
    }

Reading ``model.json`` needs no TensorFlow (the model manager lists models instantly);
loading the network imports Keras lazily and always uses ``safe_mode=True``.
Writing is atomic: everything goes to a temporary sibling directory that is renamed into
place, so a crash or a full disk never leaves a half-written bundle or damages the old one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.preprocess import PreprocessConfig

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_FORMAT_VERSION",
    "BundleError",
    "BundleInfo",
    "read_bundle_info",
    "load_bundle",
    "write_bundle",
    "is_bundle",
]

BUNDLE_FORMAT = "cxr-model-bundle"
BUNDLE_FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
INFO_FILE = "model.json"


class BundleError(Exception):
    """A model bundle is missing, incomplete or unreadable; the message says which."""


@dataclass
class BundleInfo:
    name: str
    version: str
    architecture: str
    class_names: list[str]
    preprocessing: PreprocessConfig
    gradcam_layer: str
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    keras_version: str = ""
    tensorflow_version: str = ""
    description: str = ""
    # Optional temperature scaling (inference.calibration): {"temperature": T, "fitted_on": ...,
    # "ece_before": ..., "ece_after": ...}. None: probabilities as the network gives them.
    calibration: dict[str, Any] | None = None

    @property
    def input_size(self) -> int:
        return self.preprocessing.size

    @property
    def channels(self) -> int:
        return self.preprocessing.channels

    @property
    def display_name(self) -> str:
        return f"{self.name} {self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "description": self.description,
            "architecture": self.architecture,
            "class_names": list(self.class_names),
            "input": {"size": self.preprocessing.size, "channels": self.preprocessing.channels},
            "preprocessing": self.preprocessing.to_dict(),
            "gradcam_layer": self.gradcam_layer,
            "training": self.training,
            "metrics": self.metrics,
            "keras_version": self.keras_version,
            "tensorflow_version": self.tensorflow_version,
            **({"calibration": self.calibration} if self.calibration else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model.json") -> BundleInfo:
        if not isinstance(data, dict):
            raise BundleError(f"{where} does not hold a JSON object.")
        if data.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{where} is not a CXR Viewer model description (format {data.get('format')!r}).")
        if int(data.get("format_version", 0)) > BUNDLE_FORMAT_VERSION:
            raise BundleError(
                f"{where} was written by a newer version of the app (bundle format "
                f"{data.get('format_version')}, this app reads up to {BUNDLE_FORMAT_VERSION}). Update the app."
            )
        classes = data.get("class_names")
        if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) and c for c in classes):
            raise BundleError(f"{where} has no valid class list (class_names must name at least two classes).")
        if len(set(classes)) != len(classes):
            raise BundleError(f"{where} names a class twice: {classes}.")
        for key in ("name", "version", "architecture", "gradcam_layer", "preprocessing"):
            if not data.get(key):
                raise BundleError(f"{where} lacks the required field {key!r}.")
        try:
            pre = PreprocessConfig.from_dict(dict(data["preprocessing"]))
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{where} has invalid preprocessing parameters: {exc}") from None
        calibration = data.get("calibration") or None
        if calibration is not None:
            t = calibration.get("temperature") if isinstance(calibration, dict) else None
            if not isinstance(t, int | float) or isinstance(t, bool) or not 0 < t < float("inf"):
                raise BundleError(f"{where} has an invalid calibration (temperature must be a positive number).")
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            architecture=str(data["architecture"]),
            class_names=list(classes),
            preprocessing=pre,
            gradcam_layer=str(data["gradcam_layer"]),
            created=str(data.get("created", "")),
            training=dict(data.get("training") or {}),
            metrics=dict(data.get("metrics") or {}),
            keras_version=str(data.get("keras_version", "")),
            tensorflow_version=str(data.get("tensorflow_version", "")),
            description=str(data.get("description", "")),
            calibration=dict(calibration) if calibration else None,
        )


def is_bundle(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return (p / MODEL_FILE).is_file() and (p / INFO_FILE).is_file()


def read_bundle_info(path: str | os.PathLike[str]) -> BundleInfo:
    """Read and check ``model.json`` of the bundle at ``path`` (no TensorFlow needed)."""
    p = Path(path)
    if not p.exists():
        raise BundleError(f"Model folder not found: {p}")
    if not p.is_dir():
        raise BundleError(f"A model is a folder holding {MODEL_FILE} and {INFO_FILE}; {p} is a file.")
    info_path = p / INFO_FILE
    if not info_path.is_file():
        raise BundleError(f"{p} is not a model folder: {INFO_FILE} is missing.")
    if not (p / MODEL_FILE).is_file():
        raise BundleError(f"The model folder {p} is incomplete: {MODEL_FILE} is missing.")
    try:
        data = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{info_path} cannot be read: {exc}") from None
    return BundleInfo.from_dict(data, where=str(info_path))


def load_bundle(path: str | os.PathLike[str]) -> tuple[keras.Model, BundleInfo]:
    """Load the network and its description; every failure becomes a :class:`BundleError`."""
    info = read_bundle_info(path)
    import keras  # deferred: importing TensorFlow takes seconds

    model_path = Path(path) / MODEL_FILE
    try:
        model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types (ValueError, OSError, zipfile errors...)
        hint = ""
        if info.keras_version and info.keras_version != keras.__version__:
            # Any version difference may be the cause (layers change between minor releases too).
            hint = f" It was saved with Keras {info.keras_version}; this app has Keras {keras.__version__}."
        raise BundleError(f"The network in {model_path} cannot be loaded: {exc}.{hint}") from None
    n_out = int(model.outputs[0].shape[-1])
    if n_out != len(info.class_names):
        raise BundleError(f"{model_path} has {n_out} outputs but {INFO_FILE} names {len(info.class_names)} classes.")
    expected = (info.input_size, info.input_size, info.channels)
    got = tuple(model.inputs[0].shape[1:])
    if got != expected:
        raise BundleError(f"{model_path} takes inputs of shape {got}, but {INFO_FILE} says {expected}.")
    try:
        model.get_layer(info.gradcam_layer)
    except ValueError:
        raise BundleError(
            f"{INFO_FILE} names Grad-CAM layer {info.gradcam_layer!r}, which the network lacks."
        ) from None
    return model, info


def write_bundle(
    model: keras.Model,
    info: BundleInfo,
    out_dir: str | os.PathLike[str],
    extra_files: dict[str, str | os.PathLike[str]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` and ``info`` to ``out_dir`` atomically.

    ``extra_files`` maps names inside the bundle (``report/report.md``) to files to copy.
    An existing ``out_dir`` is replaced only with ``overwrite=True``, and only after the
    new bundle is complete on disk.
    """
    import keras
    import tensorflow as tf

    out = Path(out_dir).resolve()
    if out.exists() and not overwrite:
        raise BundleError(f"{out} already exists; choose another folder or allow overwriting.")
    out.parent.mkdir(parents=True, exist_ok=True)
    info.keras_version = keras.__version__
    info.tensorflow_version = tf.__version__
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        model.save(tmp / MODEL_FILE)
        (tmp / INFO_FILE).write_text(json.dumps(info.to_dict(), indent=2) + "\n", encoding="utf-8")
        for name, src in (extra_files or {}).items():
            dest = tmp / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        read_bundle_info(tmp)  # never publish a bundle we could not read back
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except OSError as exc:  # a full disk or a read-only folder: the old bundle is still in place
        shutil.rmtree(tmp, ignore_errors=True)
        reason = exc.strerror or str(exc)
        raise BundleError(f"The model could not be written to {out}: {reason}. Nothing was replaced.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
