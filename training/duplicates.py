"""Near-duplicate images across splits, found with a difference hash (dHash).

Public chest X-ray collections hold the same radiograph several times (re-uploads, resized
copies, crops from papers). A copy in training and in test inflates the test score, so
training reports such pairs before it starts. dHash on the shared 8-bit preprocessed image
survives resizing, recompression and mild contrast changes, and costs microseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from training.samples import Sample

__all__ = ["dhash", "hamming_pairs", "find_near_duplicates"]


def dhash(images: np.ndarray) -> np.ndarray:
    """64-bit difference hashes (uint64) of a 2-D uint8 image or a batch ``(N, H, W)``."""
    batch = images[np.newaxis] if images.ndim == 2 else images
    out = np.empty(len(batch), dtype=np.uint64)
    weights = (np.uint64(1) << np.arange(64, dtype=np.uint64)).astype(np.uint64)
    for i, img in enumerate(batch):
        small = cv2.resize(np.asarray(img, dtype=np.uint8), (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
        bits = (small[:, 1:] > small[:, :-1]).ravel().astype(np.uint64)
        out[i] = np.bitwise_or.reduce(bits * weights)
    return out


def hamming_pairs(a: np.ndarray, b: np.ndarray, max_distance: int = 4, chunk: int = 2048) -> list[tuple[int, int, int]]:
    """``(i, j, distance)`` for every pair of hashes ``a[i]``, ``b[j]`` within ``max_distance`` bits."""
    a = np.asarray(a, dtype=np.uint64)
    b = np.asarray(b, dtype=np.uint64)
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, len(a), chunk):
        block = a[start : start + chunk, np.newaxis] ^ b[np.newaxis, :]
        dist = np.bitwise_count(block)
        for i, j in zip(*np.nonzero(dist <= max_distance)):
            pairs.append((int(start + i), int(j), int(dist[i, j])))
    return pairs


def find_near_duplicates(
    a: Sequence[Sample],
    b: Sequence[Sample],
    max_distance: int = 4,
    arrays: tuple[np.ndarray, np.ndarray] | None = None,
    size: int = 64,
) -> list[tuple[Sample, Sample, int]]:
    """Pairs ``(sample of a, sample of b, distance)`` that look like the same radiograph.

    ``arrays`` are the already preprocessed uint8 images of ``a`` and ``b`` (training has them
    in memory); without them the images are loaded and preprocessed at ``size`` px.
    """
    if arrays is None:
        from inference.preprocess import PreprocessConfig
        from training.pipeline import load_arrays

        config = PreprocessConfig(size=size)
        xa, kept_a, _ = load_arrays(list(a), config)
        xb, kept_b, _ = load_arrays(list(b), config)
    else:
        xa, xb = arrays
        kept_a, kept_b = list(a), list(b)
    if len(xa) == 0 or len(xb) == 0:
        return []
    return [(kept_a[i], kept_b[j], d) for i, j, d in hamming_pairs(dhash(xa), dhash(xb), max_distance)]
