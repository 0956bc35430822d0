"""Fine-tuning an ImageNet backbone on a 2-core CPU: a cached-feature warm-up, then the top blocks.

Training a whole pretrained network end to end from a random head wastes most of the CPU
time and damages the ImageNet features while the head is still random. Two stages instead:

1. **Warm-up on cached features.** With the backbone frozen, its pooled features do not
   change, so they are computed once (one forward pass over the decoded, cached images) and
   the classification layer is trained on them alone: hundreds of epochs cost seconds.
2. **The top blocks.** The last few inverted-residual blocks and the head convolution are
   unfrozen and trained with augmentation at a low learning rate, starting from a head that
   already works. Earlier blocks (generic edges and textures) stay as ImageNet made them.

BatchNorm layers stay frozen in both stages (Keras then runs them in inference mode): with
batches of 16-32 chest films, batch statistics are noisy and would overwrite the ImageNet
statistics that the pretrained convolutions expect.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.preprocess import PreprocessConfig
from training.pipeline import predict_arrays
from training.progress import TrainingProgress, check_cancel

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = ["block_names", "freeze_for_finetuning", "split_at_block", "warm_up_head"]

HEAD_LAYERS = ("head_pool", "head_dropout", "logits", "predictions")
_BLOCK = re.compile(r"^(block\d+[a-z])_")


def block_names(model: keras.Model) -> list[str]:
    """The backbone's inverted-residual blocks in graph order (``block1a`` ... ``block7a``)."""
    seen: list[str] = []
    for layer in model.layers:
        m = _BLOCK.match(layer.name)
        if m and m.group(1) not in seen:
            seen.append(m.group(1))
    return seen


def freeze_for_finetuning(model: keras.Model, unfreeze_blocks: int | None) -> int:
    """Freeze the backbone except its last ``unfreeze_blocks`` blocks and head convolution
    (None, or at least the number of blocks: nothing frozen but BatchNorm). Returns the
    number of trainable weight tensors.

    Every BatchNormalization layer is frozen either way (see the module docstring). The model
    must be compiled again afterwards for the change to take effect.
    """
    import keras

    blocks = block_names(model)
    if unfreeze_blocks is not None and not blocks:
        raise ValueError(f"{model.name} has no numbered blocks (block1a_...): --unfreeze-blocks cannot apply.")
    if unfreeze_blocks is not None and unfreeze_blocks < 0:
        raise ValueError("--unfreeze-blocks cannot be negative.")
    if unfreeze_blocks is not None and unfreeze_blocks >= len(blocks):
        unfreeze_blocks = None  # all of them: the stem too
    trainable_blocks = set(blocks[len(blocks) - unfreeze_blocks :]) if unfreeze_blocks is not None else set(blocks)
    seen_blocks = False
    for layer in model.layers:
        m = _BLOCK.match(layer.name)
        if m:
            seen_blocks = True
            train_it = m.group(1) in trainable_blocks
        elif layer.name in HEAD_LAYERS or unfreeze_blocks is None:
            train_it = True
        else:
            # Stem before the blocks stays frozen; the head convolution after them (top_conv)
            # is trained with the last blocks unless none is unfrozen.
            train_it = seen_blocks and unfreeze_blocks > 0
        if isinstance(layer, keras.layers.BatchNormalization):
            train_it = False
        layer.trainable = train_it
    return len(model.trainable_weights)


def _features(model: keras.Model, x_uint8: np.ndarray, config: PreprocessConfig, batch_size: int) -> np.ndarray:
    import keras

    extractor = keras.Model(model.inputs[0], model.get_layer("head_pool").output)
    return predict_arrays(extractor, x_uint8, config, batch_size)


def warm_up_head(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray] | None,
    config: PreprocessConfig,
    *,
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    dropout: float = 0.3,
    seed: int = 0,
    progress: TrainingProgress | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Train ``model``'s ``logits`` layer on the frozen backbone's pooled features.

    ``train`` is ``(uint8 images, labels, per-image loss weights)``, ``val`` ``(images,
    labels)`` or None. The features of both are computed once; the head is trained with
    early stopping on the validation loss (best weights kept) and copied into ``model``.
    Returns a summary (epochs run, best validation loss and accuracy, seconds).
    """
    import time

    import keras

    started = time.time()
    xt, yt, wt = train
    if progress is not None:
        progress.on_stage("warm-up", f"backbone features of {len(xt) + (len(val[0]) if val else 0)} images")
    ft = _features(model, xt, config, batch_size)
    check_cancel(cancel)
    fv = _features(model, val[0], config, batch_size) if val is not None and len(val[0]) else None
    check_cancel(cancel)
    logits = model.get_layer("logits")
    keras.utils.set_random_seed(seed)
    head = keras.Sequential(
        [
            keras.Input((ft.shape[1],)),
            keras.layers.Dropout(dropout),
            keras.layers.Dense(int(logits.units)),
        ]
    )
    head.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=["accuracy"],
    )
    monitor = "val_loss" if fv is not None else "loss"
    early = keras.callbacks.EarlyStopping(monitor=monitor, patience=20, restore_best_weights=True, verbose=0)
    fit = head.fit(
        ft,
        yt,
        sample_weight=np.asarray(wt, np.float32),
        validation_data=(fv, val[1]) if fv is not None else None,
        epochs=epochs,
        batch_size=batch_size,
        callbacks=[early],
        shuffle=True,
        verbose=0,
    )
    logits.set_weights(head.layers[-1].get_weights())
    hist = fit.history
    best = int(np.argmin(hist[monitor]))
    summary = {
        "epochs_run": len(hist["loss"]),
        "best_epoch": best + 1,
        "best_" + monitor: round(float(hist[monitor][best]), 4),
        "seconds": round(time.time() - started, 1),
    }
    if fv is not None:
        summary["val_accuracy"] = round(float(hist["val_accuracy"][best]), 4)
    return summary


def split_at_block(model: keras.Model, blocks: int) -> tuple[keras.Model, keras.Model, str]:
    """``(bottom, top, first)``: the network cut at the input of its last ``blocks`` blocks.

    ``bottom`` maps the image to that tensor; ``top`` maps it to ``[logits, penultimate
    features]`` (the input and output of the final Dense layer). Both share ``model``'s layers,
    so training ``top`` trains ``model``: the bottom's output can be computed once and cached,
    and each fine-tuning step runs only the top of the network. ``first`` names the first top block.
    """
    import keras

    from inference.ood import feature_layer

    names = block_names(model)
    if not names:
        raise ValueError(f"{model.name} has no numbered blocks (block1a_...): its top blocks cannot be adapted.")
    if not 1 <= blocks < len(names):
        raise ValueError(f"between 1 and {len(names) - 1} top blocks can be adapted, not {blocks}.")
    first = names[len(names) - blocks]
    entry = next(layer for layer in model.layers if layer.name.startswith(first + "_"))
    dense = feature_layer(model)
    if dense is None or dense.name != "logits":
        raise ValueError(f"{model.name} has no final 'logits' layer: its top blocks cannot be adapted.")
    bottom = keras.Model(model.inputs[0], entry.input)
    top = keras.Model(entry.input, [dense.output, dense.input])
    return bottom, top, first
