"""Classifier networks, every one a single flat functional graph.

Why flat: Grad-CAM needs ``keras.Model(model.inputs, [conv_layer.output, model.output])``.
When a keras.applications base is added as one nested layer, its inner layers belong to
another graph and that model fails with "Graph disconnected". Building the base on the
classifier's own input tensor (``input_tensor=``) puts every layer in one graph.

Every model:
- takes the shared preprocessing's output: float32 ``(S, S, channels)`` in [0, 1];
- does its own input scaling inside the graph with built-in layers only (no Lambda), so
  bundles load with ``safe_mode=True``; ImageNet bases get gray expanded to 3 channels;
- ends ``Dense(name="logits") -> Activation("softmax", name="predictions")`` so Grad-CAM
  can differentiate the score before the softmax, which saturates.

No weights are ever downloaded: ``weights`` is None or a local file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "ARCHITECTURES",
    "MIN_INPUT_SIZE",
    "GRADCAM_LAYERS",
    "build_model",
    "count_params",
    "own_base",
    "shipped_imagenet_weights",
]

ARCHITECTURES = (
    "custom-cnn",
    "vgg16",
    "resnet50",
    "densenet121",
    "xception",
    "mobilenetv2",
    "efficientnetb0",
    "efficientnet-lite0",
)

# Smallest input side each network accepts (Xception's stem and its valid-padded convs need 71).
MIN_INPUT_SIZE = {
    "custom-cnn": 16,
    "vgg16": 32,
    "resnet50": 32,
    "densenet121": 32,
    "xception": 71,
    "mobilenetv2": 32,
    "efficientnetb0": 32,
    "efficientnet-lite0": 32,
}

GRADCAM_LAYERS = {
    "custom-cnn": "last_conv",
    "vgg16": "block5_conv3",
    "resnet50": "conv5_block3_out",
    "densenet121": "relu",
    "xception": "block14_sepconv2_act",
    "mobilenetv2": "out_relu",
    "efficientnetb0": "top_activation",
    "efficientnet-lite0": "top_activation",
}

# keras.applications' own input conventions, on [0, 255] RGB:
# "caffe": BGR minus the ImageNet mean; "torch": [0, 1] minus mean, divided by std;
# "tf": [-1, 1]; "raw": the application scales by itself (EfficientNet has its own layers);
# "lite": EfficientNet-Lite's TF training input, (RGB - 127) / 128.
_IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
_SCALING = {
    "vgg16": "caffe",
    "resnet50": "caffe",
    "densenet121": "torch",
    "xception": "tf",
    "mobilenetv2": "tf",
    "efficientnetb0": "raw",
    "efficientnet-lite0": "lite",  # the photos decide, see tools/convert_efficientnet_lite.py
}


# EfficientNet-Lite0 (tensorflow/tpu models/official/efficientnet/lite, efficientnet_lite_builder.py):
# EfficientNet-B0's inverted residual blocks without squeeze-and-excitation, ReLU6 instead of
# swish, stem (32) and head (1280) not scaled; TF "SAME" padding (Keras "same" pads the same
# way, the extra row/column at the bottom/right), BatchNorm epsilon 1e-3. One row per stage:
# (repeats, kernel, stride of the first block, expansion, input filters, output filters).
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_LITE_BN_EPSILON = 1e-3
# Built here rather than taken from keras.applications (which has no Lite variant).
_OWN_BASES = ("efficientnet-lite0",)


# ImageNet "no top" weights shipped with the app (converted by tools/convert_efficientnet_lite.py).
_SHIPPED_WEIGHTS = {"efficientnet-lite0": ("efficientnet_lite0", "efficientnet_lite0_notop.weights.h5")}


def shipped_imagenet_weights(arch: str) -> Path | None:
    """The shipped ImageNet weights file of ``arch``, or None when the app ships none for it."""
    from inference.paths import resources_dir

    if arch not in _SHIPPED_WEIGHTS:
        return None
    folder, name = _SHIPPED_WEIGHTS[arch]
    path = resources_dir() / "weights" / folder / name
    return path if path.is_file() else None


def _application(arch: str) -> Callable[..., Any]:
    import keras

    return {
        "vgg16": keras.applications.VGG16,
        "resnet50": keras.applications.ResNet50,
        "densenet121": keras.applications.DenseNet121,
        "xception": keras.applications.Xception,
        "mobilenetv2": keras.applications.MobileNetV2,
        "efficientnetb0": keras.applications.EfficientNetB0,
    }[arch]


def _check(arch: str, input_size: int, channels: int, n_classes: int) -> None:
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}.")
    if input_size < MIN_INPUT_SIZE[arch]:
        raise ValueError(f"{arch} needs an input of at least {MIN_INPUT_SIZE[arch]} px (asked for {input_size}).")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}.")
    if n_classes < 2:
        raise ValueError("a classifier needs at least two classes.")


def build_model(
    arch: str,
    input_size: int,
    channels: int,
    n_classes: int,
    weights: str | Path | None = None,
    dropout: float = 0.3,
) -> tuple[keras.Model, str]:
    """The network and the name of its Grad-CAM target layer (its last convolutional feature map).

    ``weights``: None (random initialisation) or a local ImageNet "no top" weights file of
    this architecture (``.h5`` or ``.weights.h5``) for the convolutional base.
    """
    import keras

    _check(arch, input_size, channels, n_classes)
    inputs = keras.Input((input_size, input_size, channels), name="image")
    if arch == "custom-cnn":
        if weights is not None:
            raise ValueError("custom-cnn has no ImageNet weights; initialise it from scratch or from a model bundle.")
        features = _custom_cnn(inputs)
    else:
        features = _application_base(arch, inputs, channels, weights)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logits = keras.layers.Dense(n_classes, name="logits")(x)
    outputs = keras.layers.Activation("softmax", name="predictions", dtype="float32")(logits)
    model = keras.Model(inputs, outputs, name=arch.replace("-", "_"))
    if weights is not None and arch in _OWN_BASES:
        _load_own_base_weights(arch, model, Path(weights))
    return model, GRADCAM_LAYERS[arch]


def _conv_bn_relu(x: Any, filters: int, name: str, strides: int = 1, act_name: str | None = None) -> Any:
    import keras

    x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    # momentum 0.9 (Keras: 0.99): the moving statistics settle within a few dozen batches,
    # so a short run on a small folder does not predict with untrained statistics.
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=act_name or f"{name}_relu")(x)


def _custom_cnn(inputs: Any) -> Any:
    """A small VGG-style CNN (about 0.8 M parameters, 3 MB) that trains on a 2-core CPU.

    A 5x5 stride-2 stem and a pooling step bring 224 px down to 56 before any wide layer,
    which makes it about 4x cheaper than plain VGG blocks at full resolution (fast enough to
    train the bundled model on a CPU); BatchNorm lets it train from scratch with a high
    learning rate; the last block stays at 1/16 of the input (14x14 at 224 px) so Grad-CAM
    maps are not too coarse.
    """
    import keras

    x = keras.layers.Rescaling(2.0, offset=-1.0, name="input_scaling")(inputs)  # [0, 1] -> [-1, 1]
    x = keras.layers.Conv2D(32, 5, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = keras.layers.Activation("relu", name="stem_relu")(x)
    x = keras.layers.MaxPooling2D(2, name="stem_pool")(x)
    x = _conv_bn_relu(x, 32, "block1a")
    x = keras.layers.MaxPooling2D(2, name="block1_pool")(x)
    x = _conv_bn_relu(x, 64, "block2a")
    x = _conv_bn_relu(x, 64, "block2b")
    x = keras.layers.MaxPooling2D(2, name="block2_pool")(x)
    x = _conv_bn_relu(x, 128, "block3a")
    x = _conv_bn_relu(x, 128, "block3b")
    x = _conv_bn_relu(x, 192, "block4a")
    return _conv_bn_relu(x, 192, "block4b", act_name="last_conv")


def _imagenet_scaling(arch: str, x: Any) -> Any:
    """Turn [0, 1] input into what ``arch`` was trained on, with serialisable built-in layers."""
    import keras

    mode = _SCALING[arch]
    if mode == "caffe":  # gray is identical in R, G and B, so the BGR swap is a no-op
        x = keras.layers.Rescaling(255.0, name="input_to_255")(x)
        variance = [1.0, 1.0, 1.0]
        return keras.layers.Normalization(mean=list(_IMAGENET_MEAN_BGR), variance=variance, name="imagenet_norm")(x)
    if mode == "torch":
        variance = [s * s for s in _TORCH_STD]
        return keras.layers.Normalization(mean=list(_TORCH_MEAN), variance=variance, name="imagenet_norm")(x)
    if mode == "tf":
        return keras.layers.Rescaling(2.0, offset=-1.0, name="input_scaling")(x)
    if mode == "lite":  # efficientnet_lite_builder.py: (RGB - 127) / 128 on [0, 255]
        return keras.layers.Rescaling(255.0 / 128.0, offset=-127.0 / 128.0, name="input_scaling")(x)
    return keras.layers.Rescaling(255.0, name="input_to_255")(x)  # EfficientNet rescales inside


def _application_base(arch: str, inputs: Any, channels: int, weights: str | Path | None) -> Any:
    import keras

    x = inputs
    if channels == 1:
        x = keras.layers.Concatenate(axis=-1, name="gray_to_rgb")([x, x, x])
    x = _imagenet_scaling(arch, x)
    if arch in _OWN_BASES:
        return _efficientnet_lite(x)  # its weights are copied into the finished model, by name
    base = _application(arch)(include_top=False, weights=None, input_tensor=x)
    if weights is not None:
        _load_base_weights(arch, base, Path(weights), int(inputs.shape[1]))
    return base.output


def _lite_bn(x: Any, name: str) -> Any:
    import keras

    return keras.layers.BatchNormalization(epsilon=_LITE_BN_EPSILON, momentum=0.99, name=name)(x)


def _mbconv(x: Any, prefix: str, kernel: int, stride: int, expand: int, filters_in: int, filters_out: int) -> Any:
    """One inverted residual block of EfficientNet-Lite (no squeeze-and-excitation, ReLU6)."""
    import keras

    inputs = x
    if expand != 1:
        x = keras.layers.Conv2D(filters_in * expand, 1, use_bias=False, name=f"{prefix}expand_conv")(x)
        x = _lite_bn(x, f"{prefix}expand_bn")
        x = keras.layers.ReLU(6.0, name=f"{prefix}expand_activation")(x)
    x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}dwconv")(x)
    x = _lite_bn(x, f"{prefix}bn")
    x = keras.layers.ReLU(6.0, name=f"{prefix}activation")(x)
    x = keras.layers.Conv2D(filters_out, 1, use_bias=False, name=f"{prefix}project_conv")(x)
    x = _lite_bn(x, f"{prefix}project_bn")
    if stride == 1 and filters_in == filters_out:
        x = keras.layers.Add(name=f"{prefix}add")([x, inputs])
    return x


def _efficientnet_lite(x: Any) -> Any:
    """The EfficientNet-Lite0 feature extractor on ImageNet-scaled RGB; ends at ``top_activation``.

    Layer names follow keras.applications' EfficientNet (``block2a_expand_conv``, ...), so
    the converted weights load by name (see ``tools/convert_efficientnet_lite.py``).
    """
    import keras

    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _lite_bn(x, "stem_bn")
    x = keras.layers.ReLU(6.0, name="stem_activation")(x)
    for stage, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(_LITE0_STAGES, start=1):
        for r in range(repeats):
            first = r == 0
            prefix = f"block{stage}{chr(ord('a') + r)}_"
            x = _mbconv(x, prefix, kernel, stride if first else 1, expand, f_in if first else f_out, f_out)
    x = keras.layers.Conv2D(1280, 1, use_bias=False, name="top_conv")(x)
    x = _lite_bn(x, "top_bn")
    return keras.layers.ReLU(6.0, name="top_activation")(x)


def own_base(arch: str, input_size: int) -> keras.Model:
    """The stand-alone convolutional base of ``arch`` (input: ImageNet-scaled RGB), the model
    that its shipped "no top" weights file was saved from."""
    import keras

    if arch not in _OWN_BASES:
        raise ValueError(f"{arch} has no base of its own here (it comes from keras.applications).")
    inputs = keras.Input((input_size, input_size, 3), name="rgb")
    return keras.Model(inputs, _efficientnet_lite(inputs), name=f"{arch.replace('-', '_')}_base")


def _load_own_base_weights(arch: str, model: keras.Model, path: Path) -> None:
    """Copy a "no top" weights file of :func:`own_base` into the same-named layers of ``model``."""
    if not path.is_file():
        raise ValueError(f"Weights file not found: {path}")
    reference = own_base(arch, int(model.inputs[0].shape[1]))
    try:
        reference.load_weights(str(path))
    except Exception as exc:
        raise ValueError(f"{path} does not hold {arch} 'no top' weights: {exc}") from None
    for layer in reference.layers:
        if layer.weights:
            model.get_layer(layer.name).set_weights(layer.get_weights())


def _weighted_layers(model: keras.Model, skip: set[str]) -> list[Any]:
    return [layer for layer in model.layers if layer.weights and layer.name not in skip]


def _load_base_weights(arch: str, flat_base: keras.Model, path: Path, input_size: int) -> None:
    """Load a "no top" weights file into the base that lives inside the flat graph.

    The file fits a stand-alone application model, so it is loaded into one and copied
    layer by layer in graph order: layer names of unnamed layers differ between the two
    builds, their order does not.
    """
    if not path.is_file():
        raise ValueError(f"Weights file not found: {path}")
    reference = _application(arch)(include_top=False, weights=None, input_shape=(input_size, input_size, 3))
    try:
        reference.load_weights(str(path))
    except Exception as exc:
        raise ValueError(
            f"{path} does not hold {arch} 'no top' weights for this input (e.g. the Keras "
            f"'{arch}_weights_tf_dim_ordering_tf_kernels_notop.h5' file): {exc}"
        ) from None
    ours = {"imagenet_norm"}  # our scaling layer has no trainable weights but may hold constants
    src = _weighted_layers(reference, set())
    dst = _weighted_layers(flat_base, ours)
    if len(src) != len(dst):
        raise ValueError(f"{path}: {len(src)} weighted layers, the {arch} base has {len(dst)}.")
    for a, b in zip(src, dst):
        wa = a.get_weights()
        if [w.shape for w in wa] != [w.shape for w in b.get_weights()]:
            raise ValueError(f"{path}: layer {a.name} does not match {b.name} of the {arch} base.")
        b.set_weights(wa)


def count_params(model: keras.Model) -> int:
    return int(sum(int(w.numpy().size) for w in model.weights))
