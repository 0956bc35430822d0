"""Where a new model's weights start: scratch, ImageNet file, or an existing bundle.

Fine-tuning a model that already knows chest radiographs needs far fewer images than
starting over, so when a user retrains on their own small folder, starting from the
bundled model is the default (``init="auto"``) whenever it fits what was asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from inference.bundle import BundleInfo, is_bundle, load_bundle, read_bundle_info
from inference.paths import bundled_model_dir
from inference.preprocess import PreprocessConfig
from training.architectures import build_model, shipped_imagenet_weights

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = ["InitPlan", "resolve_init", "init_from_bundle", "DEFAULT_ARCH", "DEFAULT_IMAGENET_ARCH", "DEFAULT_SIZE"]

DEFAULT_ARCH = "custom-cnn"
DEFAULT_IMAGENET_ARCH = "efficientnet-lite0"  # the one whose ImageNet weights ship with the app
DEFAULT_SIZE = 224


@dataclass(frozen=True)
class InitPlan:
    kind: str  # "scratch", "imagenet", "bundle"
    arch: str
    size: int
    preprocessing: PreprocessConfig  # size and channels decided; CLAHE/crop from the bundle if any
    bundle_dir: Path | None = None
    weights: Path | None = None
    description: str = ""


def resolve_init(
    init: str, arch: str | None, size: int | None, clahe: bool | None, bundled: Path | None = None
) -> InitPlan:
    """Turn ``--init`` (auto, scratch, bundled, a bundle folder, ``imagenet``, ``imagenet:FILE``) into a plan.

    ``imagenet`` starts from the shipped ImageNet weights (EfficientNet-Lite0 unless ``arch``
    names another architecture with shipped weights); ``imagenet:FILE`` from a local file.

    ``arch``/``size``/``clahe`` of None mean "as the starting bundle has it", else the
    defaults (custom-cnn, 224 px, no CLAHE). ``auto`` fine-tunes the bundled model when it
    exists and matches every value that was given, and starts from scratch otherwise.
    """
    bundled = bundled or bundled_model_dir()
    spec = (init or "auto").strip()
    if spec == "auto":
        if is_bundle(bundled):
            try:
                info = read_bundle_info(bundled)
            except Exception as exc:  # a broken bundled model must not block training from scratch
                return _scratch(arch, size, clahe, f"the bundled model is unreadable ({exc})")
            mismatch = _mismatch(info, arch, size, clahe)
            if not mismatch:
                return _from_bundle(bundled, info, arch, size, clahe, "the bundled model")
            return _scratch(arch, size, clahe, f"the bundled model differs ({mismatch})")
        return _scratch(arch, size, clahe, "no bundled model was found")
    if spec == "scratch":
        return _scratch(arch, size, clahe, "as asked")
    if spec == "imagenet":  # the ImageNet weights shipped with the app
        a = arch or DEFAULT_IMAGENET_ARCH
        weights = shipped_imagenet_weights(a)
        if weights is None:
            raise ValueError(
                f"The app ships ImageNet weights for {DEFAULT_IMAGENET_ARCH} only, not {a}; "
                f"leave --arch out, or give a local file with --init imagenet:WEIGHTS.h5."
            )
        pre = PreprocessConfig(size=size or DEFAULT_SIZE, channels=1, clahe=bool(clahe))
        return InitPlan("imagenet", a, pre.size, pre, weights=weights, description=f"shipped ImageNet weights of {a}")
    if spec.startswith("imagenet:"):
        weights = Path(spec.split(":", 1)[1]).expanduser()
        if not weights.is_file():
            raise ValueError(f"ImageNet weights file not found: {weights}")
        a = arch or DEFAULT_ARCH
        if a == "custom-cnn":
            raise ValueError("custom-cnn has no ImageNet weights; choose --arch resnet50, densenet121, ... with them.")
        pre = PreprocessConfig(size=size or DEFAULT_SIZE, channels=1, clahe=bool(clahe))
        return InitPlan("imagenet", a, pre.size, pre, weights=weights, description=f"ImageNet weights from {weights}")
    where = bundled if spec == "bundled" else Path(spec).expanduser()
    if not is_bundle(where):
        raise ValueError(
            f"--init {spec}: {where} is not a model bundle (a folder with model.keras and model.json). "
            "Use auto, scratch, bundled, a model folder, imagenet, or imagenet:WEIGHTS.h5."
        )
    info = read_bundle_info(where)
    if arch and arch != info.architecture:
        raise ValueError(
            f"{where} is a {info.architecture} model; fine-tuning it as {arch} is impossible. "
            f"Leave --arch out or use --init scratch."
        )
    return _from_bundle(where, info, arch, size, clahe, str(where))


def _mismatch(info: BundleInfo, arch: str | None, size: int | None, clahe: bool | None) -> str:
    diffs = []
    if arch and arch != info.architecture:
        diffs.append(f"architecture {info.architecture}, asked {arch}")
    if size and size != info.input_size:
        diffs.append(f"input {info.input_size} px, asked {size}")
    if clahe is not None and clahe != info.preprocessing.clahe:
        diffs.append(f"CLAHE {'on' if info.preprocessing.clahe else 'off'}")
    return "; ".join(diffs)


def _scratch(arch: str | None, size: int | None, clahe: bool | None, why: str) -> InitPlan:
    pre = PreprocessConfig(size=size or DEFAULT_SIZE, channels=1, clahe=bool(clahe))
    a = arch or DEFAULT_ARCH
    return InitPlan("scratch", a, pre.size, pre, description=f"Starting {a} from scratch: {why}.")


def _from_bundle(
    where: Path, info: BundleInfo, arch: str | None, size: int | None, clahe: bool | None, label: str
) -> InitPlan:
    base = info.preprocessing.to_dict()
    base["size"] = size or info.input_size
    if clahe is not None:
        base["clahe"] = clahe
    pre = PreprocessConfig.from_dict(base)
    return InitPlan(
        "bundle",
        arch or info.architecture,
        pre.size,
        pre,
        bundle_dir=Path(where),
        description=f"Fine-tuning {label} ({info.display_name}, {info.architecture}, {info.input_size} px).",
    )


def init_from_bundle(
    bundle_dir: Path | str,
    classes: list[str],
    arch: str | None = None,
    input_size: int | None = None,
    dropout: float = 0.3,
) -> tuple[keras.Model, str, str]:
    """A new model for ``classes`` that starts from the weights of the bundle at ``bundle_dir``.

    Every layer is reused where its name and shape match (the whole backbone; all of it when
    the input size differs, since convolutions do not depend on it). The output layer keeps
    the weights of the classes the bundle already knows, matched by name, and starts fresh
    for new ones. Returns ``(model, gradcam layer, summary)``.
    """
    old, info = load_bundle(bundle_dir)
    arch = arch or info.architecture
    if arch != info.architecture:
        raise ValueError(f"{bundle_dir} is a {info.architecture} model, not {arch}.")
    model, layer = build_model(arch, input_size or info.input_size, info.channels, len(classes), dropout=dropout)
    old_layers = {lyr.name: lyr for lyr in old.layers if lyr.weights}
    reused = 0
    for lyr in model.layers:
        if not lyr.weights or lyr.name not in old_layers:
            continue
        src = old_layers[lyr.name].get_weights()
        if lyr.name == "logits":
            continue
        if [w.shape for w in src] == [w.shape for w in lyr.get_weights()]:
            lyr.set_weights(src)
            reused += 1
    # The head: copy the columns of classes the bundle already has.
    kept_classes = [c for c in classes if c in info.class_names]
    if "logits" in old_layers and kept_classes:
        old_k, old_b = old_layers["logits"].get_weights()
        new_k, new_b = model.get_layer("logits").get_weights()
        if old_k.shape[0] == new_k.shape[0]:
            for j, c in enumerate(classes):
                if c in info.class_names:
                    i = info.class_names.index(c)
                    new_k[:, j], new_b[j] = old_k[:, i], old_b[i]
            model.get_layer("logits").set_weights([new_k, new_b])
    same = list(classes) == list(info.class_names)
    head = "kept" if same else f"new for {len(classes) - len(kept_classes)} class(es), kept for {len(kept_classes)}"
    summary = f"reused {reused} layers of {info.display_name}; output layer {head}"
    return model, layer, summary
