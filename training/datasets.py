"""Finding labelled images: class folders, pre-split folders, and three CSV formats.

:func:`discover` turns what a user points at into a :class:`Dataset` of :class:`Sample`
records, without decoding any image (decoding is :func:`training.pipeline.load_arrays`).
Files it cannot use are listed in ``Dataset.skipped`` with the reason, never fatal unless
nothing usable is left.

Labels pass through a class map (``"Viral Pneumonia=Pneumonia,Bacterial Pneumonia=Pneumonia"``).
Keys match case-insensitively and hierarchically: for a label ``A/B/C`` the longest of
``A/B/C``, ``A/B``, ``A`` that the map names wins. That one rule expresses the default
mappings of the two public metadata files (``Pnemonia`` -> Pneumonia, but the more specific
``Pnemonia/Virus/COVID-19`` -> COVID-19) and lets a user override any level of them.
Mapping a class to an empty name (``"Tuberculosis="``) leaves its images out.
"""

from __future__ import annotations

import csv
import fnmatch
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.duplicates import find_near_duplicates  # noqa: F401 - part of this module's documented API
from training.pipeline import class_weights, load_arrays, make_tf_dataset  # noqa: F401 - documented API
from training.samples import MIN_IMAGES_PER_CLASS, Dataset, DatasetError, Sample
from training.splits import split_dataset  # noqa: F401 - documented API

if TYPE_CHECKING:  # pragma: no cover
    from inference.image import XRayImage

__all__ = [
    "Sample",
    "Dataset",
    "DatasetError",
    "MIN_IMAGES_PER_CLASS",
    "DEFAULT_CORONAHACK_MAP",
    "DEFAULT_COVID_CHESTXRAY_MAP",
    "discover",
    "discover_as_trained",
    "parse_class_map",
    "map_label",
    "patient_id_from_name",
    "split_dataset",
    "find_near_duplicates",
    "load_arrays",
    "make_tf_dataset",
    "class_weights",
    "MIN_TRAINING_SIDE",
    "training_image_problem",
]

# A training image is squeezed or stretched to the model's input (224 px): below this many
# pixels a side there is nothing to learn from (icons, thumbnails, 1 x 1 placeholders).
MIN_TRAINING_SIDE = 32


def training_image_problem(image: XRayImage) -> str | None:
    """Why a loaded image must not become a training example, or None.

    The loader has already refused what no one can use (NaN or infinite pixels, blank
    images); this adds what only training cares about. The reason is listed with the
    skipped files, like an unreadable one.
    """
    import numpy as np

    height, width = image.shape
    if min(height, width) < MIN_TRAINING_SIDE:
        return f"too small to train on ({width} x {height} pixels; at least {MIN_TRAINING_SIDE} per side)"
    pixels = image.pixels
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():  # XRayImage forbids it; never trust a cache
        return "its pixel values include NaN or infinite numbers"
    return None


# CoronaHack (Chest_xray_Corona_Metadata.csv) labels are "Label/Label_1/Label_2", spelt as in
# the file ("Pnemonia"). Every pneumonia is Pneumonia except the COVID-19 ones; ARDS, SARS and
# Streptococcus rows are pneumonias a radiologist would not call COVID-19.
DEFAULT_CORONAHACK_MAP: dict[str, str] = {
    "Normal": "Normal",
    "Pnemonia": "Pneumonia",
    "Pneumonia": "Pneumonia",  # in case a cleaned copy fixed the spelling
    "Pnemonia/Virus/COVID-19": "COVID-19",
    "Pneumonia/Virus/COVID-19": "COVID-19",
}

# covid-chestxray-dataset (ieee8023) ``finding`` values: hierarchical in later versions
# ("Pneumonia/Viral/COVID-19"), bare pathogen names in early ones ("SARS", "Streptococcus").
# Findings not listed (Tuberculosis, "todo", "Unknown") are skipped and reported.
DEFAULT_COVID_CHESTXRAY_MAP: dict[str, str] = {
    "No Finding": "Normal",
    "Pneumonia": "Pneumonia",
    "Pneumonia/Viral/COVID-19": "COVID-19",
    "COVID-19": "COVID-19",
    "Pneumonia/Lipoid": "",  # not an infection
    **{
        name: "Pneumonia"
        for name in (
            "SARS",
            "MERS",
            "MERS-CoV",
            "Streptococcus",
            "Pneumocystis",
            "Legionella",
            "Klebsiella",
            "Chlamydophila",
            "E.Coli",
            "Mycoplasma Bacterial Pneumonia",
            "Influenza",
            "Varicella",
            "Herpes pneumonia",
            "Aspiration",
            "Bacterial",
            "Viral",
            "Fungal",
        )
    },
}

_SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}

# File-name conventions of public sets that identify the patient, so that a plain folder of
# them still gets patient-level splits: Kermany "person83_bacteria_407.jpeg" / "IM-0115-0001.jpeg"
# / "NORMAL2-IM-1427-0001.jpeg", NIH ChestX-ray14 "00000013_005.png" (patient 00000013).
_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_", re.IGNORECASE),
    re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.IGNORECASE),
    re.compile(r"^(\d{8})_\d{3}(?:\D|$)"),
)

_FRONTAL_PREFIXES = ("PA", "AP")  # PA, AP, AP Supine, AP semi erect, AP erect...


def _supported_suffixes() -> frozenset[str]:
    from inference.loading import SUPPORTED_SUFFIXES  # lazy: pulls in the image decoders

    return frozenset(s.lower() for s in SUPPORTED_SUFFIXES)


def _is_supported(path: Path) -> bool:
    """The loader's own rule: a known suffix, or none and content that sniffs as an image."""
    from inference.loading import is_supported_file

    return is_supported_file(path)


def parse_class_map(text: str | None) -> dict[str, str]:
    """``"A=B,C=B,D="`` -> ``{"A": "B", "C": "B", "D": ""}`` (an empty target drops the class)."""
    mapping: dict[str, str] = {}
    if not text:
        return mapping
    for entry in text.split(","):
        if not entry.strip():
            continue
        key, eq, value = entry.partition("=")
        if not eq or not key.strip():
            raise DatasetError(
                f"Class map entry {entry.strip()!r} is not of the form OLD=NEW "
                "(for example 'Viral Pneumonia=Pneumonia,Bacterial Pneumonia=Pneumonia')."
            )
        mapping[key.strip()] = value.strip()
    return mapping


def map_label(raw: str, mapping: dict[str, str] | None) -> str | None:
    """The target of the longest hierarchical prefix of ``raw`` in ``mapping``, or None."""
    if not mapping:
        return None
    lowered = {k.strip().lower(): v for k, v in mapping.items()}
    parts = [p.strip() for p in raw.split("/")]
    for n in range(len(parts), 0, -1):
        key = "/".join(parts[:n]).lower()
        if key in lowered:
            return lowered[key]
    return None


def patient_id_from_name(name: str) -> str:
    """The patient encoded in a public data set's file name, or ``""``."""
    for pattern in _PATIENT_PATTERNS:
        m = pattern.match(name)
        if m:
            return m.group(1)
    return ""


def _normalise_split(value: str) -> str:
    return _SPLIT_NAMES.get(value.strip().lower(), "")


def discover(
    data: Path | str,
    class_map: dict[str, str] | None = None,
    csv_kind: str = "auto",
    frontal_only: bool = True,
    *,
    use_split: bool = True,
    exclude: Iterable[str] = (),
    min_classes: int = 2,
    min_per_class: int = MIN_IMAGES_PER_CLASS,
    group_by_folder: bool = False,
) -> Dataset:
    """Find the labelled images in ``data`` (a folder or a CSV file).

    - ``csv_kind``: "auto", "generic", "coronahack" or "covid-chestxray".
    - ``frontal_only``: covid-chestxray rows other than PA/AP views are skipped.
    - ``use_split``: keep the split the data declares (split folders, a split column);
      False moves it to ``meta["original_split"]`` so that :func:`split_dataset` decides.
    - ``exclude``: glob patterns (matched against the path relative to ``data``'s folder and
      the absolute path) of images to leave out, e.g. a benchmark's test split.
    - ``min_classes`` / ``min_per_class``: what training needs; evaluation passes 1 / 1.
    - ``group_by_folder``: ``data`` is a folder of sources (``DATA/<hospital>/<Class>/...``);
      each first-level folder becomes the images' ``source``, for per-source metrics.
    """
    root = Path(data).expanduser()
    if not root.exists():
        raise DatasetError(f"{root} does not exist.")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DatasetError(
                f"{root} is a file; give a folder with one subfolder per class, or a CSV file listing the images."
            )
        ds = _discover_csv(root, class_map, csv_kind, frontal_only)
        base = root.parent
    elif group_by_folder:
        ds = _discover_sources(root, class_map)
        base = root
    else:
        ds = _discover_folder(root, class_map)
        base = root
    ds = _apply_exclude(ds, base, list(exclude))
    if not use_split:
        for s in ds.samples:
            if s.split:
                s.meta["original_split"] = s.split
                s.split = ""
    _check(ds, root, min_classes, min_per_class)
    return ds


def discover_as_trained(data: Path | str, config: dict[str, Any]) -> Dataset:
    """``data`` read the way a bundle's training read it (``config``: its stored ``training.config``),
    so that its splits can be rebuilt for evaluation, probes and the adaptation's forgetting check."""
    return discover(
        data,
        config.get("class_map"),
        csv_kind=config.get("csv_kind", "auto"),
        frontal_only=config.get("frontal_only", True),
        use_split=bool(config.get("use_split", True)),
        exclude=config.get("exclude", ()),
    )


def _apply_exclude(ds: Dataset, base: Path, patterns: list[str]) -> Dataset:
    if not patterns:
        return ds
    kept: list[Sample] = []
    for s in ds.samples:
        try:
            rel = s.path.relative_to(base).as_posix()
        except ValueError:
            rel = s.path.as_posix()
        if any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(s.path.as_posix(), p) for p in patterns):
            ds.skipped.append((str(s.path), "excluded by --exclude"))
        else:
            kept.append(s)
    ds.samples = kept
    ds.classes = sorted({s.label for s in kept})
    return ds


def _check(ds: Dataset, root: Path, min_classes: int, min_per_class: int) -> None:
    if not ds.samples:
        reasons = Counter(r for _, r in ds.skipped)
        why = "; ".join(f"{n} x {r}" for r, n in reasons.most_common(3))
        raise DatasetError(f"No usable images found in {root}." + (f" Skipped: {why}." if why else ""))
    counts = Counter(s.label for s in ds.samples)
    if len(counts) < min_classes:
        only = ", ".join(sorted(counts))
        raise DatasetError(
            f"Only one class ({only}) found in {root}: training needs at least {min_classes} classes, "
            "each in its own subfolder or with its own label."
        )
    small = {c: n for c, n in sorted(counts.items()) if n < min_per_class}
    if small:
        listing = ", ".join(f"{c!r} has {n}" for c, n in small.items())
        raise DatasetError(f"Too few images: {listing}; each class needs at least {min_per_class} images.")


# ---------------------------------------------------------------------------------------------
# Folders


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def _discover_sources(root: Path, class_map: dict[str, str] | None) -> Dataset:
    """``root/<source>/<Class>/...`` (each source may be split): one dataset, sources named by folder."""
    folders = sorted(p for p in root.iterdir() if _visible(p) and p.is_dir())
    if not folders:
        raise DatasetError(
            f"{root} has no source folders; --group-by-folder expects {root}/<source>/<class name>/... ."
        )
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = [(str(p), "not inside a source folder") for p in root.iterdir() if p.is_file()]
    for folder in folders:
        try:
            part = _discover_folder(folder, class_map)
        except DatasetError as exc:
            skipped.append((str(folder), str(exc)))
            continue
        for sample in part.samples:
            sample.source = folder.name
        samples.extend(part.samples)
        skipped.extend(part.skipped)
    classes = sorted({s.label for s in samples})
    return Dataset(samples=samples, classes=classes, skipped=skipped, origin="folder-by-source")


def _discover_folder(root: Path, class_map: dict[str, str] | None) -> Dataset:
    entries = [p for p in root.iterdir() if _visible(p)]
    if not entries:
        raise DatasetError(f"The folder {root} is empty.")
    subdirs = sorted(p for p in entries if p.is_dir())
    suffixes = _supported_suffixes()
    if not subdirs:
        if any(_is_supported(p) for p in entries if p.is_file()):
            raise DatasetError(
                f"{root} holds images but no class subfolders; put each class in its own subfolder "
                f"({root}/<class name>/...)."
            )
        raise DatasetError(f"No images found in {root} (supported: {', '.join(sorted(suffixes))}).")
    skipped: list[tuple[str, str]] = [(str(p), "not inside a class folder") for p in entries if p.is_file()]
    pre_split = all(_normalise_split(p.name) for p in subdirs)
    layout: list[tuple[str, Path]] = []  # (split, class folder)
    if pre_split:
        for split_dir in subdirs:
            split = _normalise_split(split_dir.name)
            for p in sorted(split_dir.iterdir()):
                if not _visible(p):
                    continue
                if p.is_dir():
                    layout.append((split, p))
                else:
                    skipped.append((str(p), "not inside a class folder"))
    else:
        layout = [("", p) for p in subdirs]
    samples: list[Sample] = []
    for split, class_dir in layout:
        label = _folder_label(class_dir.name, class_map)
        for f in sorted(class_dir.rglob("*")):
            if not f.is_file() or not _visible(f):
                continue
            if not _is_supported(f):
                skipped.append((str(f), f"unsupported file type {f.suffix or '(none)'}"))
            elif not label:
                skipped.append((str(f), f"class {class_dir.name!r} excluded by the class map"))
            else:
                samples.append(
                    Sample(path=f.resolve(), label=label, patient_id=patient_id_from_name(f.name), split=split)
                )
    if not samples and not skipped:
        raise DatasetError(f"No images found in {root} (supported: {', '.join(sorted(suffixes))}).")
    return Dataset(
        samples=samples,
        classes=sorted({s.label for s in samples}),
        skipped=skipped,
        origin="split-folder" if pre_split else "folder",
    )


def _folder_label(name: str, class_map: dict[str, str] | None) -> str:
    mapped = map_label(name, class_map)
    return name if mapped is None else mapped


# ---------------------------------------------------------------------------------------------
# CSV files

_PATH_COLUMNS = ("path", "filepath", "file_path", "image_path", "filename", "file", "image")
_LABEL_COLUMNS = ("label", "class", "class_name", "diagnosis")
_PATIENT_COLUMNS = ("patient_id", "patientid", "patient")


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path} cannot be read as CSV: {exc}") from None
    if not header:
        raise DatasetError(f"{path} is empty.")
    return header, rows


def _detect_kind(header: list[str]) -> str:
    cols = {h.lower() for h in header}
    if {"x_ray_image_name", "label"} <= cols:
        return "coronahack"
    if {"finding", "filename"} <= cols:
        return "covid-chestxray"
    if cols & set(_PATH_COLUMNS) and cols & set(_LABEL_COLUMNS):
        return "generic"
    return ""


def _discover_csv(path: Path, class_map: dict[str, str] | None, csv_kind: str, frontal_only: bool) -> Dataset:
    header, rows = _read_csv(path)
    kind = _detect_kind(header) if csv_kind == "auto" else csv_kind
    if kind == "generic":
        return _generic_csv(path, header, rows, class_map)
    if kind == "coronahack":
        return _coronahack_csv(path, header, rows, class_map)
    if kind == "covid-chestxray":
        return _covid_chestxray_csv(path, header, rows, class_map, frontal_only)
    if csv_kind != "auto":
        raise DatasetError(f"Unknown CSV kind {csv_kind!r}; use auto, generic, coronahack or covid-chestxray.")
    raise DatasetError(
        f"{path} is not a CSV format this app knows: expected columns path,label[,patient_id][,split][,source], "
        "the CoronaHack metadata (X_ray_image_name, Label, ...) or covid-chestxray-dataset metadata "
        f"(finding, view, modality, filename). Its columns are: {', '.join(header)}."
    )


def _column(header: list[str], candidates: tuple[str, ...]) -> str | None:
    lowered = {h.lower(): h for h in header}
    for c in candidates:
        if c in lowered:
            return lowered[c]
    return None


def _generic_csv(
    path: Path, header: list[str], rows: list[dict[str, str]], class_map: dict[str, str] | None
) -> Dataset:
    path_col = _column(header, _PATH_COLUMNS)
    label_col = _column(header, _LABEL_COLUMNS)
    if path_col is None or label_col is None:
        raise DatasetError(f"{path} needs a 'path' and a 'label' column; its columns are: {', '.join(header)}.")
    patient_col = _column(header, _PATIENT_COLUMNS)
    split_col = _column(header, ("split",))
    source_col = _column(header, ("source",))
    known = {c for c in (path_col, label_col, patient_col, split_col, source_col) if c}
    base = path.parent
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    for i, row in enumerate(rows, start=2):  # line numbers as an editor shows them
        rel = row.get(path_col, "")
        raw = row.get(label_col, "")
        where = f"{path.name} line {i}"
        if not rel:
            skipped.append((where, "no path"))
            continue
        f = Path(rel).expanduser()
        f = f if f.is_absolute() else base / f
        if not raw:
            skipped.append((str(f), "no label"))
            continue
        mapped = map_label(raw, class_map)
        label = raw if mapped is None else mapped
        if not label:
            skipped.append((str(f), f"class {raw!r} excluded by the class map"))
        elif not f.is_file():
            skipped.append((str(f), "file not found"))
        elif not _is_supported(f):
            skipped.append((str(f), f"unsupported file type {f.suffix or '(none)'}"))
        else:
            samples.append(
                Sample(
                    path=f.resolve(),
                    label=label,
                    patient_id=(row.get(patient_col, "") if patient_col else "") or patient_id_from_name(f.name),
                    split=_normalise_split(row.get(split_col, "")) if split_col else "",
                    source=row.get(source_col, "") if source_col else "",
                    meta={k: v for k, v in row.items() if k not in known and v},
                )
            )
    return Dataset(samples=samples, classes=sorted({s.label for s in samples}), skipped=skipped, origin="csv")


def _file_index(base: Path) -> dict[str, list[Path]]:
    """Image files under ``base`` by lower-case name: the metadata files name images, not paths."""
    suffixes = _supported_suffixes()
    index: dict[str, list[Path]] = defaultdict(list)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if os.path.splitext(name)[1].lower() in suffixes:
                index[name.lower()].append(Path(dirpath) / name)
    return index


def _find(index: dict[str, list[Path]], name: str, hint: str = "") -> Path | None:
    found = index.get(name.lower(), [])
    if len(found) > 1 and hint:
        preferred = [p for p in found if hint.lower() in (part.lower() for part in p.parts)]
        found = preferred or found
    return sorted(found)[0] if found else None


def _special_label(raw: str, class_map: dict[str, str] | None, default: dict[str, str]) -> str | None:
    """The most specific key of the default and the user's map wins (the user's on a tie).

    So ``Pnemonia/Virus=Viral Pneumonia`` renames the viral pneumonias but leaves the more
    specific default ``Pnemonia/Virus/COVID-19`` -> COVID-19 alone. A default's result then
    passes through the user's map once more (``Pneumonia=Other`` renames the default target).
    """
    user = {k.strip().lower(): v for k, v in (class_map or {}).items()}
    combined = {k.strip().lower(): (v, False) for k, v in default.items()}
    combined.update({k: (v, True) for k, v in user.items()})
    parts = [p.strip() for p in raw.split("/")]
    for n in range(len(parts), 0, -1):
        hit = combined.get("/".join(parts[:n]).lower())
        if hit is not None:
            label, from_user = hit
            if from_user or not label:
                return label
            return user.get(label.lower(), label)
    return None


def _coronahack_csv(
    path: Path, header: list[str], rows: list[dict[str, str]], class_map: dict[str, str] | None
) -> Dataset:
    col = {h.lower(): h for h in header}
    index = _file_index(path.parent)
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    for row in rows:
        name = row.get(col["x_ray_image_name"], "")
        parts = [row.get(col.get(c, ""), "") for c in ("label", "label_1_virus_category", "label_2_virus_category")]
        raw = "/".join(p for p in parts if p)
        dataset_type = row.get(col.get("dataset_type", ""), "")
        f = _find(index, name, hint=dataset_type)
        label = _special_label(raw, class_map, DEFAULT_CORONAHACK_MAP)
        if f is None:
            skipped.append((name, "file not found"))
        elif label is None:
            skipped.append((str(f), f"label {raw!r} is not mapped to a class"))
        elif not label:
            skipped.append((str(f), f"label {raw!r} excluded by the class map"))
        else:
            samples.append(
                Sample(
                    path=f.resolve(),
                    label=label,
                    patient_id=patient_id_from_name(f.name),
                    split=_normalise_split(dataset_type),
                    meta={"raw_label": raw},
                )
            )
    return Dataset(samples=samples, classes=sorted({s.label for s in samples}), skipped=skipped, origin="coronahack")


def _covid_chestxray_csv(
    path: Path,
    header: list[str],
    rows: list[dict[str, str]],
    class_map: dict[str, str] | None,
    frontal_only: bool,
) -> Dataset:
    col = {h.lower(): h for h in header}
    base = path.parent
    index: dict[str, list[Path]] | None = None
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    for row in rows:
        name = row.get(col["filename"], "")
        folder = row.get(col.get("folder", ""), "") or "images"
        modality = row.get(col.get("modality", ""), "X-ray")
        view = row.get(col.get("view", ""), "")
        # Early versions wrote "COVID-19, ARDS": the first finding is the diagnosis.
        raw = row.get(col["finding"], "").split(",")[0].strip()
        if modality.strip().lower().replace("-", "") not in ("xray", "x ray"):
            skipped.append((name, f"modality {modality or '(none)'} is not X-ray"))
            continue
        if frontal_only and not view.strip().upper().startswith(_FRONTAL_PREFIXES):
            skipped.append((name, f"view {view or '(none)'} is not frontal (PA/AP)"))
            continue
        f = base / folder / name
        if not f.is_file():
            index = index if index is not None else _file_index(base)
            f = _find(index, name)
        if f is None:
            skipped.append((name, "file not found"))
            continue
        label = _special_label(raw, class_map, DEFAULT_COVID_CHESTXRAY_MAP)
        if label is None:
            skipped.append((str(f), f"finding {raw!r} is not mapped to a class"))
        elif not label:
            skipped.append((str(f), f"finding {raw!r} excluded by the class map"))
        else:
            meta = {k: row.get(col[k], "") for k in ("age", "sex", "view", "location") if row.get(col.get(k, ""), "")}
            samples.append(
                Sample(
                    path=f.resolve(),
                    label=label,
                    patient_id=row.get(col.get("patientid", ""), ""),
                    meta={"raw_label": raw, **meta},
                )
            )
    return Dataset(
        samples=samples, classes=sorted({s.label for s in samples}), skipped=skipped, origin="covid-chestxray"
    )
