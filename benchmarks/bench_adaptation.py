"""Adapting to a hospital the model has never seen: leave-source-out on the CXR collection.

    .venv/bin/python benchmarks/bench_adaptation.py base --out /work/runs/adapt
    .venv/bin/python benchmarks/bench_adaptation.py adapt --out /work/runs/adapt [--films 50 100 200]
    .venv/bin/python benchmarks/bench_adaptation.py adapt --adapt-blocks 1   (the top block too)

Protocol (issue 16). ``ozturk_darkcovidnet`` (NIH ChestX-ray14 films plus its COVID set) plays
the new hospital. ``base`` builds a model WITHOUT any of its films: EfficientNet-Lite0 from the
shipped ImageNet weights at 224 px (CLAHE, lung crop: the product's preprocessing), its
classification layer trained on cached backbone features (``training.finetune.warm_up_head``)
of a class-balanced subset of the other sources' training images, temperature and OOD
threshold fitted on other validation images. Decoded arrays come from the full-collection
cache (``--cache``, the one ``main.py train --cache-dir`` wrote for the whole manifest).

``adapt`` draws 50, 100 and 200 NIH films (patient-disjoint from the rest, class-stratified)
and runs the product's adaptation (:func:`training.adapt.adapt`, the code behind ``main.py
adapt``) on each, with the other sources' validation images as the forgetting reference.
Every model (base and adapted) is then scored on the NIH films never drawn and on the
other sources' validation images: balanced accuracy, counts. CPU time per adaptation is
``time.process_time`` of the whole call (decoding, fine-tune, calibration, gate).

With ``--adapt-blocks N`` the last N blocks and the head convolution are fine-tuned too, with
rehearsal of 100 per class of the base model's own training images (:func:`rehearsal_set`,
never the reference images); models and figures then go to ``adapted-blocksN-*`` and
``bench_adaptation_blocksN.json``.

Labels: NIH "No Finding"/"Pneumonia" labels are text-mined (see the data README): accuracy
on this source is capped by them.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

DATA = Path("/work/shared/data/cxr")
CACHE = Path("/work/runs/backbone/cache-cxr/4d8b73a0911e8d971f00ae027aaa9fad")
TARGET = "ozturk_darkcovidnet"
CLASSES = ["COVID-19", "Normal", "Pneumonia"]
LABEL = {
    "COVID-19": "COVID-19",
    "Normal": "Normal",
    "Viral Pneumonia": "Pneumonia",
    "Bacterial Pneumonia": "Pneumonia",
    "Pneumonia (unspecified)": "Pneumonia",
}
SEED = 0


def _rows(data: Path) -> list[dict[str, str]]:
    with open(data / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["abs"] = str(data / r["path"])
        r["label"] = LABEL[r["class"]]
    return rows


def _cached(cache: Path) -> tuple[np.ndarray, dict[str, int]]:
    x = np.load(cache.with_suffix(".npy"), mmap_mode="r")
    kept = json.loads(cache.with_suffix(".json").read_text())["kept"]
    return x, {p: i for i, p in enumerate(kept)}


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    from training.adapt import balanced_accuracy

    return balanced_accuracy(np.asarray(y), np.asarray(pred), len(CLASSES))


def plan_sets(rows: list[dict[str, str]], index: dict[str, int], n_per_class: int) -> dict[str, Any]:
    """Paths of: the base model's training subset, its calibration images, the other sources'
    reference (validation) images, and the NIH films (by patient)."""
    from training.samples import Sample
    from training.splits import split_dataset

    rng = np.random.default_rng(SEED)
    others = [
        Sample(Path(r["abs"]), r["label"], patient_id=r["patient_id"], source=r["source"])
        for r in rows
        if r["source"] != TARGET
        and r["abs"] in index
        and not (r["source"] == "kaggle_covid19_image_dataset" and r["split"] == "test")  # never tuned on
    ]
    splits = split_dataset(others, val_fraction=0.15, seed=SEED)
    train: list[str] = []
    for c in CLASSES:
        pool = [str(s.path) for s in splits["train"] if s.label == c]
        train += list(rng.choice(pool, min(n_per_class, len(pool)), replace=False))
    val = [s for s in splits["val"]]
    order = rng.permutation(len(val))
    reference = [str(val[i].path) for i in order[:600]]
    calibration = [str(val[i].path) for i in order[600:1200]]
    nih = [r for r in rows if r["source"] == TARGET and r["abs"] in index]
    return {
        "train": train,
        "calibration": calibration,
        "reference": reference,
        "nih": [{"path": r["abs"], "label": r["label"], "patient_id": r["patient_id"]} for r in nih],
        "labels": {r["abs"]: r["label"] for r in rows},
    }


def build_base(out: Path, cache: Path, data: Path, n_per_class: int, head_epochs: int) -> Path:
    """The base model (no NIH film seen) as a bundle, and the sets it was built with."""
    import keras

    from inference.bundle import BundleInfo, write_bundle
    from inference.model_folder import CONTENT_HASHES_FILE, content_hashes_text
    from inference.preprocess import PreprocessConfig
    from inference.sidecar import file_sha256
    from training.architectures import build_model, shipped_imagenet_weights
    from training.calibration import calibration_record
    from training.finetune import warm_up_head
    from training.ood_fit import fit_ood, logits_and_features
    from training.pipeline import class_weights
    from training.progress import ConsoleProgress

    started, cpu = time.time(), time.process_time()
    rows = _rows(data)
    x_all, index = _cached(cache)
    sets = plan_sets(rows, index, n_per_class)
    labels = sets["labels"]
    pre = PreprocessConfig(size=224, channels=1, clahe=True, crop="lungs", crop_margin=0.08)

    def arrays(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
        x = np.stack([x_all[index[p]] for p in paths]) if paths else np.zeros((0, 224, 224), np.uint8)
        return x, np.asarray([CLASSES.index(labels[p]) for p in paths], np.int32)

    xt, yt = arrays(sets["train"])
    xc, yc = arrays(sets["calibration"])
    print(f"base: {len(xt)} training images {np.bincount(yt, minlength=3).tolist()}, {len(xc)} calibration")
    keras.utils.set_random_seed(SEED)
    model, gradcam = build_model(
        "efficientnet-lite0", 224, 1, 3, weights=shipped_imagenet_weights("efficientnet-lite0"), dropout=0.3
    )
    cw = class_weights(yt, 3)
    warm = warm_up_head(
        model,
        (xt, yt, np.asarray([cw[int(c)] for c in yt], np.float32)),
        (xc, yc),
        pre,
        epochs=head_epochs,
        progress=ConsoleProgress(),
    )
    print("warm-up:", warm)
    logits_t, feats_t = logits_and_features(model, xt, pre)
    logits_c, feats_c = logits_and_features(model, xc, pre)
    calibration = calibration_record(logits_c, yc, f"other sources' validation images ({len(yc)})")
    scorer, ood = fit_ood(feats_t, yt, feats_c, f"training ({len(yt)}), threshold on calibration ({len(yc)})")
    out.mkdir(parents=True, exist_ok=True)
    (out / "sets.json").write_text(json.dumps({k: v for k, v in sets.items() if k != "labels"}, indent=1))
    tmp = out / "base-extra"
    tmp.mkdir(exist_ok=True)
    (tmp / CONTENT_HASHES_FILE).write_text(content_hashes_text(file_sha256(p) for p in sets["train"]))
    info = BundleInfo(
        name="cxr-lite0-no-nih",
        version="0.9.0",
        architecture="efficientnet-lite0",
        class_names=CLASSES,
        preprocessing=pre,
        gradcam_layer=gradcam,
        description="Benchmark base model: no ozturk_darkcovidnet (NIH) film seen. Research use only.",
        training={
            "data": {
                "n_images": len(xt),
                "counts": {"train": dict(zip(CLASSES, np.bincount(yt, minlength=3).tolist(), strict=True))},
                "content_hashes": {"file": CONTENT_HASHES_FILE, "algorithm": "sha256 of the file bytes"},
            },
            "transfer": {"warm_up": warm},
            "command": "python benchmarks/bench_adaptation.py base",
            "training_seconds": round(time.time() - started, 1),
        },
        calibration=calibration,
        ood=ood,
    )
    extra = {CONTENT_HASHES_FILE: tmp / CONTENT_HASHES_FILE, "ood.npz": scorer.save(str(tmp))}
    bundle = write_bundle(model, info, out / "base", extra_files=extra, overwrite=True)
    print(f"base written to {bundle}: {time.time() - started:.0f} s wall, {time.process_time() - cpu:.0f} s CPU")
    return bundle


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=("base", "recipe-base", "adapt", "summary"))
    ap.add_argument("--out", type=Path, default=Path("/work/runs/adapt"))
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--cache", type=Path, default=CACHE, help="the whole manifest's decoded arrays (.npy/.json stem)")
    ap.add_argument("--per-class", type=int, default=1000, help="base: training images per class (1000)")
    ap.add_argument("--head-epochs", type=int, default=200)
    ap.add_argument("--films", type=int, nargs="+", default=[50, 100, 200])
    ap.add_argument("--adapt-blocks", type=int, default=0, help="adapt: also fine-tune the last N blocks (0)")
    ap.add_argument(
        "--block-labels",
        action="store_true",
        help="with --adapt-blocks: rehearse the labels (not the parent's probabilities); the CV's largest gain",
    )
    ap.add_argument("--model", type=Path, help="recipe-base: a bundle trained with NIH held out")
    ap.add_argument("--draw-seed", type=int, default=SEED, help="adapt: which draw of the NIH films (0)")
    args = ap.parse_args(argv)
    if args.stage == "recipe-base":
        recipe_base(args.out, args.model, args.data)
        return 0
    if args.stage == "summary":
        summary(args.out, args.adapt_blocks)
        return 0
    if args.stage == "base":
        build_base(args.out, args.cache, args.data, args.per_class, args.head_epochs)
        return 0
    return run_adaptations(
        args.out, args.cache, args.data, args.films, args.adapt_blocks, args.block_labels, args.draw_seed
    )


def recipe_base(out: Path, model: Path, data: Path) -> None:
    """Use a bundle that ``main.py train --val-sources ozturk_darkcovidnet`` wrote (the product's
    own recipe: ImageNet Lite0, top blocks fine-tuned end to end) as the base. Its reference images
    are 600 of ITS OWN validation images of the other sources (never trained on); the NIH films and
    their draws are the head-only base's, so both bases are adapted and scored on the same films."""
    from inference.bundle import load_bundle
    from training.datasets import discover_as_trained
    from training.ood_fit import recreate_split

    _, info = load_bundle(model)
    if TARGET not in (info.training.get("config") or {}).get("val_sources", []):
        raise SystemExit(f"{model} was not trained with {TARGET} held out (--val-sources)")
    ds = discover_as_trained(info.training["data"]["path"], info.training["config"])
    split = recreate_split(ds.samples, info.training)
    val = [s for s in split["val"] if s.source != TARGET]
    order = np.random.default_rng(SEED).permutation(len(val))
    nih = [
        {"path": r["abs"], "label": r["label"], "patient_id": r["patient_id"]}
        for r in _rows(data)
        if r["source"] == TARGET
    ]
    out.mkdir(parents=True, exist_ok=True)
    sets = {
        "train": [str(s.path) for s in split["train"]],  # what --adapt-blocks rehearses (rehearsal_set)
        "calibration": [],
        "reference": [str(val[i].path) for i in order[:600]],
        "nih": nih,
    }
    (out / "sets.json").write_text(json.dumps(sets, indent=1))
    link = out / "base"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(model.resolve(), target_is_directory=True)
    print(f"base -> {model}: {len(split['train'])} training images, reference 600 of {len(val)} validation")


def rehearsal_set(train_paths: list[str], data: Path, per_class: int = 100) -> list[tuple[str, str]]:
    """(path, class) of ``per_class`` images per class of the base model's own training images:
    what a site that kept the parent's training data can rehearse (bench_adaptation_tune_blocks.py
    draws the same ones)."""
    rng = np.random.default_rng(0)
    label = {r["abs"]: r["label"] for r in _rows(data)}
    drawn: list[tuple[str, str]] = []
    for c in CLASSES:
        pool = [p for p in train_paths if label[p] == c]
        drawn += [(str(p), c) for p in rng.choice(pool, min(per_class, len(pool)), replace=False)]
    return drawn


def _nih_draws(
    nih: list[dict[str, str]], films: list[int], seed: int = SEED
) -> tuple[dict[int, list[dict[str, str]]], list[dict]]:
    """Nested class-stratified draws of whole patients (50 within 100 within 200) and the NIH
    films never drawn, which every model of that draw is scored on."""
    rng = np.random.default_rng(seed)
    by_patient: dict[str, list[dict[str, str]]] = {}
    for r in nih:
        by_patient.setdefault(r["patient_id"] or r["path"], []).append(r)
    order = list(by_patient)
    rng.shuffle(order)
    # Interleave classes so that every prefix is roughly stratified.
    per_class: dict[str, list[str]] = {c: [] for c in CLASSES}
    for pid in order:
        per_class[by_patient[pid][0]["label"]].append(pid)
    total = len(nih)
    quota = {c: sum(len(by_patient[p]) for p in per_class[c]) / total for c in CLASSES}
    drawn: list[str] = []
    taken = dict.fromkeys(CLASSES, 0)
    n_films = 0
    while n_films < max(films):
        c = min(CLASSES, key=lambda k: (taken[k] / max(quota[k], 1e-9)) if per_class[k] else np.inf)
        pid = per_class[c].pop(0)
        drawn.append(pid)
        taken[c] += len(by_patient[pid])
        n_films += len(by_patient[pid])
    draws = {}
    for n in films:
        chosen, count = [], 0
        for pid in drawn:
            if count >= n:
                break
            chosen += by_patient[pid]
            count += len(by_patient[pid])
        draws[n] = chosen
    rest = [r for pid in by_patient if pid not in set(drawn) for r in by_patient[pid]]
    return draws, rest


def run_adaptations(
    out: Path,
    cache: Path,
    data: Path,
    films: list[int],
    adapt_blocks: int = 0,
    block_labels: bool = False,
    draw_seed: int = SEED,
) -> int:
    from inference.bundle import load_bundle
    from training.adapt import AdaptConfig, adapt
    from training.pipeline import predict_arrays
    from training.progress import ConsoleProgress
    from training.samples import Sample

    sets = json.loads((out / "sets.json").read_text())
    x_all, index = _cached(cache)
    draws, rest = _nih_draws(sets["nih"], films, draw_seed)

    def arrays(items: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.stack([x_all[index[p]] for p, _ in items]),
            np.asarray([CLASSES.index(c) for _, c in items], np.int32),
        )

    labels = {r["path"]: r["label"] for r in sets["nih"]}
    x_nih, y_nih = arrays([(r["path"], r["label"]) for r in rest])
    ref_labels = _reference_labels(data, sets["reference"])
    x_ref, y_ref = arrays([(p, ref_labels[p]) for p in sets["reference"]])
    tag = (f"-blocks{adapt_blocks}" + ("-labels" if block_labels else "")) if adapt_blocks else ""
    tag += f"-draw{draw_seed}" if draw_seed != SEED else ""
    rehearsal = arrays(rehearsal_set(sets["train"], data)) if adapt_blocks else None

    def score(bundle: Path) -> dict[str, Any]:
        model, info = load_bundle(bundle)
        pn = predict_arrays(model, x_nih, info.preprocessing).argmax(axis=1)
        pr = predict_arrays(model, x_ref, info.preprocessing).argmax(axis=1)
        return {
            "nih_balanced_accuracy": _balanced_accuracy(y_nih, pn),
            "nih_correct": int(np.sum(pn == y_nih)),
            "nih_n": len(y_nih),
            "other_balanced_accuracy": _balanced_accuracy(y_ref, pr),
            "other_correct": int(np.sum(pr == y_ref)),
            "other_n": len(y_ref),
        }

    results: dict[str, Any] = {"base": score(out / "base"), "adapted": {}, "draw_seed": draw_seed}
    print("base:", results["base"], flush=True)
    for n in films:
        local = [
            Sample(Path(r["path"]), labels[r["path"]], patient_id=r["patient_id"], source=TARGET) for r in draws[n]
        ]
        target = out / f"adapted{tag}-{n}"
        if target.exists():
            import shutil

            shutil.rmtree(target)
        cpu, wall = time.process_time(), time.time()
        result = adapt(
            AdaptConfig(
                parent=out / "base",
                out_dir=target,
                check_fraction=0.2,
                cache_dir=out / "cache",
                keep_refused=True,
                seed=SEED,
                adapt_blocks=adapt_blocks,
                **({"block_distill": False} if block_labels else {}),
            ),
            progress=ConsoleProgress(),
            local=local,
            reference_arrays=(x_ref, y_ref),
            rehearsal_arrays=rehearsal,
        )
        cpu, wall = time.process_time() - cpu, time.time() - wall
        row = score(target)
        row.update(
            {
                "films": len(local),
                "gate_accepted": result.accepted,
                "gate_reasons": result.reasons,
                "cpu_seconds": round(cpu, 1),
                "wall_seconds": round(wall, 1),
                "adapted_layers": result.report["lineage"]["adapted_layers"],
                "fit": result.report["lineage"]["fit"],
                "split": {
                    "fine_tune": result.report["lineage"]["fine_tune_films"],
                    "check": result.report["lineage"]["check_films"],
                },
            }
        )
        results["adapted"][str(n)] = row
        print(f"adapted with {n}:", json.dumps(row), flush=True)
        (out / f"bench_adaptation{tag}.json").write_text(json.dumps(results, indent=2))
    return 0


def summary(out: Path, adapt_blocks: int = 0) -> None:
    """Mean, SD and worst change over every draw's ``bench_adaptation*.json`` in ``out`` (the
    classification-layer runs, or with ``adapt_blocks`` those of ``--adapt-blocks N``), as a
    markdown table."""
    files = sorted(
        out.glob(f"bench_adaptation-blocks{adapt_blocks}*.json" if adapt_blocks else "bench_adaptation*.json")
    )
    runs = [
        json.loads(p.read_text()) for p in files if "labels" not in p.name and (adapt_blocks or "blocks" not in p.name)
    ]
    sizes = sorted({int(n) for r in runs for n in r["adapted"]})
    bases = [round(r["base"]["nih_balanced_accuracy"], 3) for r in runs]
    print(f"{len(runs)} draws; base NIH balanced accuracy per draw:", bases)
    print("| films | draws | NIH change: mean (SD) | worst | other sources change: mean (SD) | worst | CPU s (max) |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        rows = [(r["base"], r["adapted"][str(n)]) for r in runs if str(n) in r["adapted"]]
        nih = np.array([a["nih_balanced_accuracy"] - b["nih_balanced_accuracy"] for b, a in rows])
        oth = np.array([a["other_balanced_accuracy"] - b["other_balanced_accuracy"] for b, a in rows])
        cpu = max(a["cpu_seconds"] for _, a in rows)
        sd_n, sd_o = (float(nih.std(ddof=1)), float(oth.std(ddof=1))) if len(rows) > 1 else (0.0, 0.0)
        print(
            f"| {n} | {len(rows)} | {nih.mean():+.3f} ({sd_n:.3f}) | {nih.min():+.3f} "
            f"| {oth.mean():+.3f} ({sd_o:.3f}) | {oth.min():+.3f} | {cpu:.1f} |"
        )


def _reference_labels(data: Path, paths: list[str]) -> dict[str, str]:
    wanted = set(paths)
    return {r["abs"]: r["label"] for r in _rows(data) if r["abs"] in wanted}


if __name__ == "__main__":
    sys.exit(main())
