"""Train/validation/test splits: stratified by class, whole patients at a time.

A patient's images are near-copies of each other for a network; one in training and one in
validation makes the validation score a memory test. So splits move whole groups (a
patient, or a lone image when the data names no patients), and the groups are drawn per
class so every split keeps the class proportions.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict

from training.samples import SPLITS, Sample

__all__ = ["split_dataset", "hold_out_sources", "patient_overlap"]


def split_dataset(
    samples: list[Sample],
    val_fraction: float = 0.15,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, list[Sample]]:
    """``{"train": [...], "val": [...], "test": [...]}``; returns new lists, sets ``Sample.split``.

    Splits the data already declares are kept. A split that is missing is carved out of the
    undecided images plus the declared training images (so a ``train/``+``test/`` folder
    gets its validation set from ``train/``), ``*_fraction`` of them, class by class.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction and test_fraction must be in [0, 1) and sum to less than 1.")
    declared = {s.split for s in samples if s.split in SPLITS}
    want = {
        "val": val_fraction if "val" not in declared else 0.0,
        "test": test_fraction if "test" not in declared else 0.0,
    }
    fixed = [s for s in samples if s.split in ("val", "test")]
    pool = [s for s in samples if s.split not in ("val", "test")]
    out: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for s in fixed:
        out[s.split].append(s)
    if want["val"] == 0 and want["test"] == 0:
        for s in pool:
            s.split = "train"
        out["train"].extend(pool)
        return out

    # A group belongs to the class most of its images have; groups already tied to a fixed
    # split (a patient with images in the declared test set) follow it, so they cannot leak.
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in pool:
        groups[s.group].append(s)
    fixed_split_of = {s.group: s.split for s in fixed}
    by_class: dict[str, list[str]] = defaultdict(list)
    for key in sorted(groups):
        if key in fixed_split_of:
            for s in groups[key]:
                s.split = fixed_split_of[key]
                out[s.split].append(s)
            continue
        label = Counter(s.label for s in groups[key]).most_common(1)[0][0]
        by_class[label].append(key)

    rng = random.Random(seed)
    for label in sorted(by_class):
        keys = by_class[label]
        rng.shuffle(keys)
        n_images = sum(len(groups[k]) for k in keys)
        targets = {name: _target(frac, n_images, len(keys)) for name, frac in want.items()}
        taken = {"val": 0, "test": 0}
        has_train = False
        for i, key in enumerate(keys):
            split = "train"
            for name in ("val", "test"):
                if taken[name] < targets[name]:
                    split = name
                    break
            if split != "train" and i == len(keys) - 1 and not has_train:
                split = "train"  # never give away a class's last training group
            has_train = has_train or split == "train"
            for s in groups[key]:
                s.split = split
            if split != "train":
                taken[split] += len(groups[key])
            out[split].extend(groups[key])
    return out


def hold_out_sources(samples: list[Sample], sources: tuple[str, ...] | list[str]) -> tuple[list[Sample], list[Sample]]:
    """``(rest, held_out)``: every image of ``sources`` is taken out (and marked ``val``),
    except those the data declares as test images, which stay in ``rest`` for the test split.

    Leave-source-out validation: a whole hospital or data set the model never trains on, so
    that early stopping and model choice reward what carries over to new scanners rather
    than what was memorised. Unknown source names are an error (a typo would otherwise
    silently validate on nothing).
    """
    wanted = {s.strip() for s in sources if s.strip()}
    present = {s.source for s in samples}
    unknown = sorted(wanted - present)
    if unknown:
        known = ", ".join(sorted(x for x in present if x)) or "none: the data has no source column"
        raise ValueError(f"--val-sources: no images from {', '.join(unknown)} (sources in the data: {known}).")
    # Images the data already puts in its test split stay there (still never trained on).
    rest = [s for s in samples if s.source not in wanted or s.split == "test"]
    held = [s for s in samples if s.source in wanted and s.split != "test"]
    for s in held:
        s.split = "val"
    return rest, held


def _target(fraction: float, n_images: int, n_groups: int) -> int:
    """Images of one class to put in a split: at least one when asked for and affordable."""
    if fraction <= 0:
        return 0
    n = int(round(fraction * n_images))
    if n == 0 and n_groups >= 3:
        n = 1
    return n


def patient_overlap(splits: dict[str, list[Sample]]) -> dict[str, list[str]]:
    """Patients whose images sit in more than one split (only possible with declared splits)."""
    where: dict[str, set[str]] = defaultdict(set)
    for name, items in splits.items():
        for s in items:
            if s.patient_id:
                where[s.patient_id].add(name)
    return {pid: sorted(names) for pid, names in sorted(where.items()) if len(names) > 1}
