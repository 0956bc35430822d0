"""The labelled-image records every part of training passes around."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DatasetError", "Sample", "Dataset", "SPLITS", "MIN_IMAGES_PER_CLASS"]

SPLITS = ("train", "val", "test")

# Three to learn from and one to validate on is the least that lets a class take part in a
# stratified split; below that the "training" would be a lottery.
MIN_IMAGES_PER_CLASS = 4


class DatasetError(Exception):
    """The data cannot be used as given; the message says why and what to do."""


@dataclass
class Sample:
    path: Path
    label: str
    patient_id: str = ""  # images of one patient never end up in two splits
    split: str = ""  # "train", "val", "test", or "" (not decided yet)
    source: str = ""  # where the image comes from (hospital, dataset), for per-source metrics
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """What must stay together in one split: the patient, else the image itself."""
        return self.patient_id or str(self.path)


@dataclass
class Dataset:
    samples: list[Sample]
    classes: list[str]  # sorted; the model's output order
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path or row, reason)
    origin: str = ""  # "folder", "split-folder", "csv", "coronahack", "covid-chestxray"

    def counts(self, split: str | None = None) -> dict[str, int]:
        """Images per class (every class listed, zeros included), optionally for one split."""
        c = Counter(s.label for s in self.samples if split is None or s.split == split)
        return {name: int(c.get(name, 0)) for name in self.classes}

    def sources(self) -> dict[str, int]:
        c = Counter(s.source for s in self.samples if s.source)
        return dict(sorted(c.items()))
