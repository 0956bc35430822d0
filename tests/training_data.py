"""Tiny labelled image sets for the training tests, generated on the fly (no shared data).

Each class has its own bright blob position on a noisy background, so a small CNN can tell
them apart, and the noise makes every image's perceptual hash different from the others.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

# Blob centre (as a fraction of the side) per class index.
_CENTRES = ((0.3, 0.5), (0.7, 0.5), (0.5, 0.25), (0.5, 0.75))


def class_image(class_index: int, seed: int, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = (rng.random((size, size)) * 90).astype(np.uint8)
    cx, cy = _CENTRES[class_index % len(_CENTRES)]
    cv2.circle(img, (int(cx * size), int(cy * size)), max(2, size // 6), 235, -1)
    return img


def write_image(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"cannot write {path}")
    return path


def make_class_folder(
    root: Path,
    counts: dict[str, int],
    size: int = 48,
    split: str = "",
    seed: int = 0,
    suffix: str = ".png",
    name: str = "img",
) -> list[Path]:
    """``root[/split]/<class>/<name>_<i>.png`` with ``counts[class]`` images each."""
    paths = []
    base = root / split if split else root
    for ci, (cls, n) in enumerate(counts.items()):
        for i in range(n):
            img = class_image(ci, seed=seed * 10_000 + ci * 1000 + i, size=size)
            paths.append(write_image(base / cls / f"{name}_{ci}_{i}{suffix}", img))
    return paths


def write_csv(path: Path, header: Iterable[str], rows: Iterable[Iterable[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(list(header))
        w.writerows(rows)
    return path
