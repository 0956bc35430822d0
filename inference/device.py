"""Which device TensorFlow computes on, in words for the status bar and reports."""

from __future__ import annotations

from functools import lru_cache

__all__ = ["describe_device"]


@lru_cache(maxsize=1)
def describe_device() -> str:
    """``"GPU (NVIDIA H100 ...)"`` when TensorFlow sees a GPU, else ``"CPU"``.

    TensorFlow places work on the first visible GPU by itself; this only reports it.
    Importing TensorFlow is slow, so callers do it off the GUI thread.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    names = []
    for gpu in gpus:
        try:
            details = tf.config.experimental.get_device_details(gpu)
            names.append(details.get("device_name") or gpu.name)
        except Exception:  # details are cosmetic; never fail over them
            names.append(gpu.name)
    label = "GPU" if len(gpus) == 1 else f"{len(gpus)} GPUs"
    return f"{label} ({', '.join(names)})"
