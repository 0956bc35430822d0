"""Choose training settings for the published comparison by cross-validation on its TRAIN split.

    .venv/bin/python benchmarks/bench_published_comparison_cv.py \\
        '{"10ep": {"epochs": 10}, "20ep_3e-4": {"epochs": 20, "learning_rate": 3e-4}}'

Each named setting (``TrainConfig`` fields, over the defaults below) is trained 5 times
from the shipped ImageNet EfficientNet-Lite0, each time validated on a different fifth of
``kaggle_covid19_image_dataset/train`` (folds grouped by patient where the file names say
one, stratified by class); the counts are pooled over the folds. The 66 test images are
never read: settings are chosen here, then run once by ``bench_published_comparison.py``.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.datasets import discover, patient_id_from_name  # noqa: E402
from training.progress import NullProgress  # noqa: E402
from training.samples import Sample  # noqa: E402
from training.train import TrainConfig, train  # noqa: E402

TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "cxr" / "kaggle_covid19_image_dataset" / "train"
CLASS_MAP = {"Viral Pneumonia": "Pneumonia"}
DEFAULTS = {"image_size": 224, "crop": "lungs", "clahe": True, "patience": 4, "batch_size": 16}
FOLDS = 5


def _group(s: Sample) -> tuple[str, str]:
    return s.label, patient_id_from_name(s.path.stem) or s.path.stem


def fold_of(samples: list[Sample], seed: int = 0) -> dict[tuple[str, str], int]:
    """Patient groups dealt round-robin to the folds within each class, in a seeded order
    (``samples`` sorted by path; groups taken in order of first appearance, then shuffled)."""
    keys = list(dict.fromkeys(_group(s) for s in samples))
    np.random.default_rng(seed).shuffle(keys)
    dealt: dict[str, int] = defaultdict(int)
    folds = {}
    for key in sorted(keys, key=lambda k: k[0]):  # stable: keeps the shuffled order within a class
        folds[key] = dealt[key[0]] % FOLDS
        dealt[key[0]] += 1
    return folds


def main(argv: list[str]) -> int:
    settings = json.loads(argv[0]) if argv else {"default": {}}
    work = Path(argv[1]) if len(argv) > 1 else Path("runs/published_cv")
    work.mkdir(parents=True, exist_ok=True)
    samples = sorted(discover(TRAIN, CLASS_MAP).samples, key=lambda s: str(s.path))
    folds = fold_of(samples)
    for name, overrides in settings.items():
        started, cm = time.time(), np.zeros((3, 3), int)
        for f in range(FOLDS):
            table = work / f"fold{f}.csv"
            with table.open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["path", "label", "patient_id", "split"])
                for s in samples:
                    split = "val" if folds[_group(s)] == f else "train"
                    w.writerow([s.path, s.label, patient_id_from_name(s.path.stem), split])
            config = TrainConfig(
                data=table,
                out_dir=work / "model",
                arch="efficientnet-lite0",
                init="imagenet",
                overwrite=True,
                cache_dir=work / "cache",
                calibrate=False,
                **{**DEFAULTS, **overrides},
            )
            result = train(config, progress=NullProgress())
            m = np.array(result.metrics["val"]["confusion_matrix"]["matrix"])
            cm += m
            print(f"{name} fold {f}: {np.trace(m)}/{m.sum()} ({result.epochs_run} epochs)", flush=True)
        print(
            f"CV {name} {json.dumps(overrides)}: {np.trace(cm)}/{cm.sum()} = {np.trace(cm) / cm.sum():.4f} "
            f"confusion {cm.tolist()} ({time.time() - started:.0f} s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
