"""The classifier's model bundle: a folder holding ``model.keras``, ``model.json`` and ``README.md``.

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
      "gradcam_layers": ["m0_last_conv", "m1_top_activation"],  # optional: several (an ensemble)
      "training": {"data": {"counts": {...}, "sources": {...}, "n_images": N}, ...},
      "metrics": {...},
      "keras_version": "3.x", "tensorflow_version": "2.x"
    }

Reading, checking, loading and writing the folder is :mod:`inference.model_folder`'s job
(one schema validation, Keras safe mode, the archive checks, the atomic save); this module
says what a classifier's description holds and what its network must look like.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference import model_folder as mf
from inference.model_folder import INFO_FILE, MODEL_FILE, BundleError
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
MAX_CLASSES = 100


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
    # Optional out-of-distribution scorer (inference.ood): {"file": "ood.npz", "quantile": 0.99,
    # "threshold": ..., "validation_abstain_rate": ...}. None: no OOD gate (older models).
    ood: dict[str, Any] | None = None
    # Several Grad-CAM layers (an ensemble of networks, training.ensemble: one per member; the
    # heat map is the mean of their maps, inference.gradcam). Empty: ``gradcam_layer`` alone.
    # When set, ``gradcam_layer`` is its first entry, so readers that know one layer still work.
    gradcam_layers: list[str] = field(default_factory=list)

    @property
    def input_size(self) -> int:
        return self.preprocessing.size

    @property
    def channels(self) -> int:
        return self.preprocessing.channels

    @property
    def cam_layers(self) -> list[str]:
        """Every Grad-CAM target layer: ``gradcam_layers``, or ``[gradcam_layer]`` (one network)."""
        return list(self.gradcam_layers) or [self.gradcam_layer]

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
            **({"gradcam_layers": list(self.gradcam_layers)} if self.gradcam_layers else {}),
            "training": self.training,
            "metrics": self.metrics,
            "keras_version": self.keras_version,
            "tensorflow_version": self.tensorflow_version,
            **({"calibration": self.calibration} if self.calibration else {}),
            **({"ood": self.ood} if self.ood else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = INFO_FILE) -> BundleInfo:
        """Check ``data`` against the schema (types, ranges, lengths, characters) and build the info.

        Every problem is a :class:`BundleError` naming the field; unknown top-level fields are
        ignored (newer writers may add optional ones).
        """
        if not isinstance(data, dict):
            raise BundleError(f"{where} does not hold a JSON object.")
        mf.check_tree(data, where)
        if data.get("format") != BUNDLE_FORMAT:
            shown = data.get("format")
            shown = shown[:40] if isinstance(shown, str) else type(shown).__name__
            raise BundleError(f"{where} is not a CXR Viewer model description (format {shown!r}).")
        mf.format_version(data, where, BUNDLE_FORMAT_VERSION)
        classes = data.get("class_names")
        if not isinstance(classes, list) or len(classes) < 2:
            raise BundleError(f"{where} has no valid class list (class_names must name at least two classes).")
        classes = mf.text_list(data, "class_names", where, min_items=2, max_items=MAX_CLASSES, pattern=mf.CLASS_RE)
        if len(set(classes)) != len(classes):
            raise BundleError(f"{where} names a class twice: {classes}.")
        pre = mf.preprocessing_from(data.get("preprocessing"), where)
        mf.check_input_block(data, pre, where, BundleError)
        calibration = mf.mapping(data, "calibration", where) or None
        if calibration is not None:  # a temperature divides the logits: positive, finite, sane
            try:
                mf.number(calibration, "temperature", where, 1e-3, 1e3)
            except BundleError:
                raise BundleError(
                    f"{where} has an invalid calibration (temperature must be a number from 0.001 to 1000)."
                ) from None
        ood = _ood_from(data, where)
        gradcam_layer = mf.text(data, "gradcam_layer", where, required=True, max_len=128, pattern=mf.IDENT_RE)
        gradcam_layers = mf.text_list(
            data, "gradcam_layers", where, min_items=1, max_items=16, max_len=128, pattern=mf.IDENT_RE, default=[]
        )
        if gradcam_layers and gradcam_layers[0] != gradcam_layer:
            raise BundleError(
                f"{where}: gradcam_layer ({gradcam_layer!r}) must be the first of gradcam_layers ({gradcam_layers})."
            )
        return cls(
            name=mf.text(data, "name", where, required=True, max_len=100, pattern=mf.NAME_RE),
            version=mf.text(data, "version", where, required=True, max_len=40, pattern=mf.VERSION_RE),
            architecture=mf.text(data, "architecture", where, required=True, max_len=64, pattern=mf.IDENT_RE),
            class_names=classes,
            preprocessing=pre,
            gradcam_layer=gradcam_layer,
            gradcam_layers=gradcam_layers,
            created=mf.text(data, "created", where, max_len=64),
            training=mf.mapping(data, "training", where),
            metrics=mf.mapping(data, "metrics", where),
            keras_version=mf.text(data, "keras_version", where, max_len=40),
            tensorflow_version=mf.text(data, "tensorflow_version", where, max_len=40),
            description=mf.text(data, "description", where, max_len=2000),
            calibration=calibration,
            ood=ood,
        )


def _ood_from(data: dict[str, Any], where: str) -> dict[str, Any] | None:
    """The optional ``ood`` block: the scorer's file name (always ``ood.npz``), its quantile,
    threshold and the share of validation images it turned away."""
    from inference.ood import OOD_FILE

    ood = mf.mapping(data, "ood", where) or None
    if ood is None:
        return None
    try:
        if ood.get("file") != OOD_FILE:
            raise BundleError("file")
        mf.number(ood, "quantile", where, 0.5, 1.0, open_high=True)
        mf.number(ood, "threshold", where, 0.0, 1e12, open_low=True)
        if ood.get("validation_abstain_rate") is not None:
            mf.number(ood, "validation_abstain_rate", where, 0.0, 1.0)
    except BundleError:
        raise BundleError(
            f"{where} has an invalid ood block (file must be {OOD_FILE!r}, quantile from 0.5 to 1, "
            "threshold a positive number, validation_abstain_rate from 0 to 1)."
        ) from None
    return ood


def is_bundle(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return (p / MODEL_FILE).is_file() and (p / INFO_FILE).is_file()


def read_bundle_info(path: str | os.PathLike[str]) -> BundleInfo:
    """Read and check ``model.json`` of the bundle at ``path`` (no TensorFlow needed)."""
    data = mf.read_description(path)
    return BundleInfo.from_dict(data, where=str(Path(path) / INFO_FILE))


def load_bundle(path: str | os.PathLike[str]) -> tuple[keras.Model, BundleInfo]:
    """Load the network and its description; every failure becomes a :class:`BundleError`.

    The network must have one input of the described shape, one ``(batch, classes)`` output,
    and every Grad-CAM layer with a spatial output: a wrong model is refused here, not mid-batch.
    """
    info = read_bundle_info(path)
    model = mf.load_network(
        path,
        input_shape=(info.input_size, info.input_size, info.channels),
        outputs=len(info.class_names),
        output_rank=2,
        saved_with=info.keras_version,
    )
    for name in info.cam_layers:
        try:
            layer = model.get_layer(name)
        except ValueError:
            raise BundleError(f"{INFO_FILE} names Grad-CAM layer {name!r}, which the network lacks.") from None
        try:
            rank = len(layer.output.shape)
        except (AttributeError, ValueError):  # a layer used twice has no single output
            rank = 0
        if rank != 4:
            raise BundleError(
                f"The Grad-CAM layer {name!r} of {Path(path)} has no spatial output; "
                f"{INFO_FILE} must name a convolutional layer."
            )
    return model, info


def bundle_card(info: BundleInfo) -> str:
    """The ``README.md`` written with a bundle (the measured details stay in ``model.json``)."""
    pre = info.preprocessing
    facts = [
        ("Architecture", info.architecture),
        ("Classes (output order)", ", ".join(info.class_names)),
        ("Input", f"{pre.size} x {pre.size} px, {pre.channels} channel(s)"),
        ("Lung crop", f"yes (+{pre.crop_margin:.0%} margin)" if pre.crop == "lungs" else "no"),
        ("CLAHE", f"clip {pre.clahe_clip:g}, {pre.clahe_tiles}x{pre.clahe_tiles} tiles" if pre.clahe else "no"),
        ("Created", info.created),
        ("Training command", f"`{info.training['command']}`" if info.training.get("command") else ""),
    ]
    return mf.card_markdown(f"Model: {info.display_name}", info.description, facts)


def write_bundle(
    model: keras.Model,
    info: BundleInfo,
    out_dir: str | os.PathLike[str],
    extra_files: dict[str, str | os.PathLike[str]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` and ``info`` to ``out_dir`` atomically (see :func:`inference.model_folder.write_model_folder`).

    ``extra_files`` maps names inside the bundle (``report/report.md``) to files to copy.
    An existing ``out_dir`` is replaced only with ``overwrite=True``, and only after the
    new bundle is complete on disk.
    """
    import keras
    import tensorflow as tf

    info.keras_version = keras.__version__
    info.tensorflow_version = tf.__version__
    description = info.to_dict()
    BundleInfo.from_dict(description, where=f"the description of {info.display_name}")  # never write a bad one
    return mf.write_model_folder(
        out_dir,
        lambda dest: model.save(dest),
        description,
        read_back=read_bundle_info,
        card=bundle_card(info),
        extra_files=extra_files,
        overwrite=overwrite,
    )
