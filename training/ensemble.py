"""Merging model bundles into one ensemble bundle that is an ordinary, single-network bundle.

Every network built here ends ``... -> pooled features (N, D_i) -> Dense "logits" -> softmax``.
The mean of the members' temperature-scaled logits,

    mean_i (f_i W_i + b_i) / T_i  =  concat(f_1 .. f_n) @ vstack(W_i / (n T_i)) + sum_i b_i / (n T_i),

is itself ONE Dense layer over the concatenated features. So the merged network is one flat
Keras functional graph: one shared input, each member's layers re-created under a name prefix
(``m0_``, ``m1_``, ...; no nested model, no Lambda, loads in safe mode) up to its feature
vector, a ``Concatenate`` named ``head_concat``, a Dense ``logits`` with the stacked weights and
the softmax ``predictions``. Everything that reads a bundle (the predictor, calibration, the
OOD scorer, evaluate, adapt, exports, the model manager) uses it unchanged; its Grad-CAM layers
are the members' (``gradcam_layers`` in ``model.json``), and the heat map is the mean of their
maps (:func:`inference.gradcam.combine_maps`).

    python main.py ensemble MODEL_DIR MODEL_DIR [...] --out NEW_DIR [--data DATA]

With ``--data`` (the labelled images the members were trained on), the merged bundle gets its
own temperature and out-of-distribution scorer through the one calibration path
(:func:`training.calibration.calibrate_bundle` with the members' own split: temperature and
threshold on their validation images, class means on their training images).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.bundle import BundleError, BundleInfo, load_bundle, read_bundle_info, write_bundle
from inference.calibration import temperature_of
from inference.model_folder import CARD_FILE, card_markdown

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from training.progress import TrainingProgress

__all__ = [
    "ARCH_PREFIX",
    "FEATURES_LAYER",
    "EnsembleError",
    "merged_head",
    "merge_networks",
    "merge_bundles",
    "ensemble_card",
]

ARCH_PREFIX = "ensemble:"
FEATURES_LAYER = "head_concat"
LOGITS_LAYER = "logits"
MAX_MEMBERS = 8
# The keys of a member's training.config that decide its train/validation split
# (training.ood_fit.recreate_split): members calibrated together must agree on all of them.
SPLIT_KEYS = ("val_fraction", "test_fraction", "seed", "val_sources")
# How the members read their data (training.datasets.discover_as_trained): kept in the ensemble's
# training.config where every member agrees, so tools that rebuild "the model's validation
# images" (benchmarks/shortcut_probe.py, adapt's reference images) read the data as they did.
READ_KEYS = ("data", "class_map", "csv_kind", "frontal_only", "use_split", "exclude")


class EnsembleError(Exception):
    """The bundles cannot be merged as asked; the message says why."""


@dataclass
class _Member:
    path: Path
    model: Any
    info: BundleInfo
    temperature: float


def merged_head(
    weights: Sequence[np.ndarray], biases: Sequence[np.ndarray], temperatures: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """The one Dense layer equal to the mean of the members' logits divided by their temperatures:
    ``W = vstack(W_i / (n T_i))`` over the concatenated features and ``b = sum(b_i / (n T_i))``."""
    n = len(weights)
    if n == 0 or not len(biases) == len(temperatures) == n:
        raise ValueError("one kernel, one bias and one temperature per member")
    scale = [1.0 / (n * float(t)) for t in temperatures]
    w = np.vstack([np.asarray(wi, np.float64) * s for wi, s in zip(weights, scale)])
    b = np.sum([np.asarray(bi, np.float64) * s for bi, s in zip(biases, scale)], axis=0)
    return w.astype(np.float32), b.astype(np.float32)


def _head_of(model: keras.Model, where: str) -> tuple[Any, np.ndarray, np.ndarray]:
    """The member's feature tensor (input of its Dense ``logits``) and that layer's kernel and bias."""
    import keras

    try:
        dense = model.get_layer(LOGITS_LAYER)
    except ValueError:
        dense = None
    if not isinstance(dense, keras.layers.Dense) or not dense.use_bias:
        raise EnsembleError(
            f"{where} has no Dense layer named {LOGITS_LAYER!r} with a bias; only networks built by this app "
            "(training.architectures) can be merged."
        )
    try:
        features = dense.input
    except (AttributeError, ValueError):
        features = None
    if features is None or len(features.shape) != 2:
        raise EnsembleError(f"{where}: the input of its {LOGITS_LAYER!r} layer is not one flat feature vector.")
    kernel, bias = dense.get_weights()
    return features, kernel, bias


def merge_networks(
    models: Sequence[keras.Model],
    cam_layers: Sequence[Sequence[str]],
    temperatures: Sequence[float],
    name: str = "ensemble",
) -> tuple[keras.Model, list[str]]:
    """One flat functional network whose logits are the mean of ``models``' logits / temperature.

    ``cam_layers[i]`` are member i's Grad-CAM layers. Returns the network and its Grad-CAM
    layers (the members', under their prefixes ``m{i}_``). The members are not changed.
    """
    import keras

    if not 2 <= len(models) <= MAX_MEMBERS:
        raise EnsembleError(f"an ensemble has 2 to {MAX_MEMBERS} members; {len(models)} given.")
    shape = tuple(models[0].inputs[0].shape[1:])
    inputs = keras.Input(shape, name="image")
    features, kernels, biases, layers_out = [], [], [], []
    for i, model in enumerate(models):
        prefix = f"m{i}_"
        feat, kernel, bias = _head_of(model, f"member {i + 1} ({model.name})")
        trunk = keras.Model(model.inputs[0], feat)  # shares the member's layers, copies nothing
        clones: dict[str, Any] = {}

        def clone(layer: Any, prefix: str = prefix, clones: dict[str, Any] = clones) -> Any:
            config = layer.get_config()
            config["name"] = prefix + layer.name
            copy = layer.__class__.from_config(config)
            clones[layer.name] = (layer, copy)
            return copy

        # clone_model over the trunk on the shared input: each layer re-created with its prefix
        # and called in the member's graph order; the returned Model is only a handle, the final
        # network below is built from the shared input to the head, so it stays one flat graph.
        rebuilt = keras.models.clone_model(trunk, input_tensors=inputs, clone_function=clone)
        for original, copy in clones.values():
            copy.set_weights(original.get_weights())
        features.append(rebuilt.outputs[0])
        kernels.append(kernel)
        biases.append(bias)
        layers_out.extend(prefix + layer for layer in cam_layers[i])
    concat = keras.layers.Concatenate(name=FEATURES_LAYER)(features)
    dense = keras.layers.Dense(int(kernels[0].shape[1]), name=LOGITS_LAYER)
    logits = dense(concat)
    dense.set_weights(list(merged_head(kernels, biases, temperatures)))
    outputs = keras.layers.Activation("softmax", name="predictions", dtype="float32")(logits)
    merged = keras.Model(inputs, outputs, name=name)
    return merged, layers_out


def _load_members(paths: Sequence[str | os.PathLike[str]]) -> list[_Member]:
    members = []
    for p in paths:
        path = Path(p)
        if not path.is_dir():
            raise EnsembleError(f"{path} is not a folder; each member must be a model bundle folder.")
        try:
            model, info = load_bundle(path)
        except BundleError as exc:
            raise EnsembleError(f"{path} cannot be used as a member: {exc}") from None
        members.append(_Member(path, model, info, temperature_of(info.calibration)))
    return members


def _check_compatible(members: Sequence[_Member]) -> None:
    """Members must agree on classes (and their order), preprocessing and input: one input feeds all."""
    first = members[0]
    for m in members[1:]:
        if m.info.class_names != first.info.class_names:
            raise EnsembleError(
                f"{m.path} says {m.info.class_names}, {first.path} says {first.info.class_names}: "
                "members must have the same classes in the same order."
            )
        a, b = first.info.preprocessing.to_dict(), m.info.preprocessing.to_dict()
        if a != b:
            diff = ", ".join(
                f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
            )
            raise EnsembleError(
                f"{first.path} and {m.path} prepare their input differently ({diff}): members must share "
                "preprocessing, input size and channels, since one input feeds every member."
            )
    seen = set()
    for m in members:
        key = m.path.resolve()
        if key in seen:
            raise EnsembleError(f"{m.path} is named twice; an ensemble of a network with itself adds nothing.")
        seen.add(key)


def shared_split(infos: Sequence[BundleInfo]) -> tuple[dict[str, Any] | None, str]:
    """The members' common split settings (``training.config`` subset) and, when they have
    none in common, why: calibrating on "their validation images" is then meaningless."""
    configs = [(info.training or {}).get("config") or {} for info in infos]
    counts = [((info.training or {}).get("data") or {}).get("counts") for info in infos]
    for info, config in zip(infos, configs):
        if not all(k in config for k in SPLIT_KEYS):
            return None, f"{info.display_name} does not record its split settings ({', '.join(SPLIT_KEYS)})"
    first = {k: configs[0][k] for k in SPLIT_KEYS}
    for info, config in zip(infos[1:], configs[1:]):
        other = {k: config[k] for k in SPLIT_KEYS}
        if other != first:
            return None, f"{infos[0].display_name} was split with {first}, {info.display_name} with {other}"
    if any(c is not None for c in counts) and any(c != counts[0] for c in counts):
        return None, "the members were trained on different images (their training/validation counts differ)"
    for key in READ_KEYS:
        if key in configs[0] and all(key in c and c[key] == configs[0][key] for c in configs):
            first[key] = configs[0][key]
    return first, ""


def _member_record(m: _Member) -> dict[str, Any]:
    val = (m.info.metrics or {}).get("val") or {}
    record: dict[str, Any] = {
        "name": m.info.name,
        "version": m.info.version,
        "architecture": m.info.architecture,
        "temperature": m.temperature,
        "gradcam_layers": m.info.cam_layers,
        "created": m.info.created,
    }
    figures = {k: val[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "ece", "n_images") if k in val}
    if figures:
        record["validation"] = figures
    cal = m.info.calibration or {}
    if "ece_after" in cal:  # metrics.val.ece may be before or after the temperature, by when it was written
        record["validation_ece_calibrated"] = cal["ece_after"]
    if (m.info.training or {}).get("command"):
        record["command"] = m.info.training["command"]
    return record


def ensemble_card(info: BundleInfo) -> str:
    """The ``README.md`` of an ensemble bundle: the usual facts, its members and how it combines them."""
    members = ((info.training or {}).get("ensemble") or {}).get("members") or []
    pre = info.preprocessing
    cal = info.calibration or {}
    facts = [
        ("Architecture", f"mean of {len(members)} networks ({info.architecture})"),
        ("Classes (output order)", ", ".join(info.class_names)),
        ("Input", f"{pre.size} x {pre.size} px, {pre.channels} channel(s)"),
        ("Lung crop", f"yes (+{pre.crop_margin:.0%} margin)" if pre.crop == "lungs" else "no"),
        ("CLAHE", f"clip {pre.clahe_clip:g}, {pre.clahe_tiles}x{pre.clahe_tiles} tiles" if pre.clahe else "no"),
        ("Created", info.created),
        (
            "Temperature",
            f"{cal['temperature']:g} (fitted on {cal.get('fitted_on', '?')}; ECE {cal.get('ece_before', '?')} -> "
            f"{cal.get('ece_after', '?')})"
            if cal
            else "none (the members' own temperatures are folded into the weights)",
        ),
        (
            "Out-of-distribution threshold",
            f"{info.ood['threshold']:.3f} (the {info.ood['quantile']:.0%} quantile; turns away "
            f"{info.ood.get('validation_abstain_rate', 0):.1%} of the validation images)"
            if info.ood
            else "none",
        ),
    ]
    lines = [card_markdown(f"Model: {info.display_name}", info.description, facts).rstrip(), "", "## Members", ""]
    lines += [
        "| # | model | architecture | its temperature | its validation accuracy | its validation ECE (calibrated) |"
    ]
    lines += ["|---|---|---|---|---|---|"]
    for i, m in enumerate(members):
        val = m.get("validation") or {}
        acc = val.get("accuracy")
        n = val.get("n_images")
        acc_text = (f"{round(acc * n):,}/{n:,} = {acc:.3f}" if n else f"{acc:.3f}") if acc is not None else "-"
        if m.get("validation_ece_calibrated") is not None:
            ece = f"{m['validation_ece_calibrated']:.3f}"
        else:
            ece = f"{val['ece']:.3f} (as recorded)" if val.get("ece") is not None else "-"
        lines.append(
            f"| {i} | {m['name']} {m['version']} | {m['architecture']} | {m['temperature']:g} | {acc_text} | {ece} |"
        )
    lines += [
        "",
        "How it combines them: the probabilities are the softmax of the mean of the members' logits, each "
        "divided by its own temperature (one Dense layer over the members' concatenated features), then "
        "divided by this bundle's temperature. Member i's layers carry the prefix `m{i}_`.",
        "",
        "The heat map (Grad-CAM) is the mean of the members' maps: one per member's last convolution ("
        + ", ".join(f"`{layer}`" for layer in info.cam_layers)
        + "), each on the model input, averaged before the one normalisation, so a member weighs in "
        "by its share of the score.",
        "",
    ]
    return "\n".join(lines)


def merge_bundles(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    name: str,
    version: str,
    description: str = "",
    *,
    data: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    progress: TrainingProgress | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Merge the bundles at ``paths`` into a NEW bundle at ``out`` (which must not exist) and
    return its folder.

    With ``data`` (the labelled images the members were trained on, with their common split),
    the merged bundle gets its own temperature and OOD scorer from
    :func:`training.calibration.calibrate_bundle` on the members' validation images (the class
    means on their training images). Without it the bundle has neither: run ``main.py
    calibrate`` on it later.
    """
    out_dir = Path(out)
    if out_dir.exists():
        raise EnsembleError(f"{out_dir} already exists; choose a new folder for the ensemble (nothing is overwritten).")
    if len(paths) < 2:
        raise EnsembleError("an ensemble needs at least two model bundles.")
    members = _load_members(paths)
    _check_compatible(members)
    split, why_not = shared_split([m.info for m in members])
    if data is not None and split is None:
        raise EnsembleError(
            f"cannot calibrate on the members' own split: {why_not}. Merge without --data and calibrate the "
            "ensemble with `main.py calibrate` on images none of the members was trained on."
        )
    first = members[0].info
    model, cam_layers = merge_networks(
        [m.model for m in members],
        [m.info.cam_layers for m in members],
        [m.temperature for m in members],
        name=name.replace("-", "_") if name.replace("-", "_").isidentifier() else "ensemble",
    )
    records = [_member_record(m) for m in members]
    training: dict[str, Any] = {
        "ensemble": {
            "members": records,
            "combination": "mean of the members' logits / their temperatures (one Dense over head_concat)",
            "gradcam": "mean of the members' Grad-CAM maps on the model input, then one normalisation",
        },
        "init": "merged from " + ", ".join(f"{r['name']} {r['version']}" for r in records),
    }
    if split is not None:
        # recreate_split (main.py calibrate --model-split) reads these: the members' common split.
        training["config"] = dict(split)
        data_block = (first.training or {}).get("data")
        if data_block:
            training["data"] = data_block
    info = BundleInfo(
        name=name,
        version=version,
        architecture=ARCH_PREFIX + "+".join(m.info.architecture for m in members),
        class_names=list(first.class_names),
        preprocessing=first.preprocessing,
        gradcam_layer=cam_layers[0],
        gradcam_layers=cam_layers,
        training=training,
        description=description,
    )
    with tempfile.TemporaryDirectory(prefix="cxr-ensemble-") as tmp:
        extra: dict[str, str | os.PathLike[str]] = {}
        if data is not None:
            from training.calibration import calibrate_bundle

            plain = write_bundle(model, info, Path(tmp) / "merged")
            calibrated, _ = calibrate_bundle(
                plain,
                data,
                Path(tmp) / "calibrated",
                model_split=True,
                batch_size=batch_size,
                cache_dir=cache_dir,
                progress=progress,
                cancel=cancel,
            )
            done = read_bundle_info(calibrated)
            info.calibration, info.ood = done.calibration, done.ood
            if (calibrated / "ood.npz").is_file():
                extra["ood.npz"] = calibrated / "ood.npz"
        card = Path(tmp) / CARD_FILE
        card.write_text(ensemble_card(info), encoding="utf-8")
        extra[CARD_FILE] = card
        return write_bundle(model, info, out_dir, extra_files=extra)
