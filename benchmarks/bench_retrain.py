"""Retraining the bundled model, measured (issue 13, section 5): cheap experiments first.

    .venv/bin/python benchmarks/bench_retrain.py DATA.csv --cache-dir DIR --work DIR \
        [--reference resources/models/default] [--bundle NAME=DIR ...] [--steps features,heads,bundles]
        [--json OUT.json]

DATA is the CSV ``tools/make_cxr_csv.py`` writes (the one the bundled model was trained on);
``--cache-dir`` the decoded, lung-cropped arrays training keeps (``--cache-dir`` of ``train``);
``--work`` a folder outside the repository for feature caches. Every split is the reference
bundle's own (patient-disjoint, seed 0, recreated from its ``model.json``); the benchmark test
split (``split=test``) is never fitted on. Three steps:

* ``features``: penultimate features of every image, computed once and cached: the frozen
  ImageNet EfficientNet-Lite0 backbone (``head_pool``, 1,280 values; it has never seen a chest
  film, so a head fitted without a source is a true leave-source-out test of that backbone)
  and, for each bundle, its logits and features (the product's calibration cache).
* ``heads``: linear softmax heads on those features, trained in seconds with class-source
  balanced weights (as ``--balance class-source``): the patient-disjoint validation split,
  leave-source-out with ``ozturk_darkcovidnet`` (NIH) held out entirely, and with
  ``rsna_pneumonia_challenge`` held out entirely. The L2 strength is chosen on the
  in-distribution validation split only, never on a held-out source.
* ``bundles``: for each bundle, from its cached logits: validation accuracy (with a 95% Wilson
  interval), balanced accuracy, ECE before and after its temperature, the benchmark test split
  (count of 66), OOD abstentions; the six shipped samples through the whole ``Predictor`` gate;
  predict + Grad-CAM latency (median, lung model and gates included); and the shortcut probe
  (``benchmarks/shortcut_probe.py``: source read-out, lungs painted over, Grad-CAM heat in the
  lung fields) unless ``--no-probe``.

Numbers for ``benchmarks/bench_retrain.md`` come from its JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere in the checkout

NIH = "ozturk_darkcovidnet"
RSNA = "rsna_pneumonia_challenge"
HELD_OUT = (NIH, RSNA)
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


# ---------------------------------------------------------------------------------------------
# Data: every image of the CSV with the reference bundle's split


def load_data(data: Path, reference: Path, cache_dir: Path) -> dict[str, Any]:
    """The decoded arrays of every image, in one order, with labels, sources and the split."""
    from inference.bundle import read_bundle_info
    from training.datasets import discover_as_trained
    from training.ood_fit import recreate_split
    from training.pipeline import load_arrays

    info = read_bundle_info(reference)
    cfg = info.training.get("config", {})
    ds = discover_as_trained(data, cfg)
    recreate_split(ds.samples, info.training)
    known = {c: i for i, c in enumerate(info.class_names)}
    every = [s for s in ds.samples if s.label in known]
    x, kept, skipped = load_arrays(every, info.preprocessing, cache_dir)
    return {
        "x": x,
        "samples": kept,
        "paths": [str(s.path) for s in kept],
        "y": np.asarray([known[s.label] for s in kept], np.int64),
        "source": np.asarray([s.source or "(unknown)" for s in kept]),
        "split": np.asarray([s.split for s in kept]),
        "classes": list(info.class_names),
        "preprocessing": info.preprocessing,
        "skipped": len(skipped),
    }


# ---------------------------------------------------------------------------------------------
# Features


def imagenet_features(data: dict[str, Any], work: Path, batch_size: int = 32) -> np.ndarray:
    """Pooled features of the frozen ImageNet EfficientNet-Lite0 backbone (cached in ``work``)."""
    import hashlib

    cache = work / (
        "imagenet-lite0-"
        + hashlib.sha256("\n".join(data["paths"]).encode()).hexdigest()[:16]
        + f"-{data['preprocessing'].size}.npy"
    )
    if cache.is_file():
        feats = np.load(cache)
        if len(feats) == len(data["paths"]):
            return feats
    import keras

    from training.architectures import build_model, shipped_imagenet_weights
    from training.pipeline import predict_arrays

    size = data["preprocessing"].size
    model, _ = build_model(
        "efficientnet-lite0", size, 1, len(data["classes"]), shipped_imagenet_weights("efficientnet-lite0")
    )
    extractor = keras.Model(model.inputs[0], model.get_layer("head_pool").output)
    started = time.time()
    feats = predict_arrays(extractor, data["x"], data["preprocessing"], batch_size)
    print(f"ImageNet Lite0 features of {len(feats)} images: {time.time() - started:.0f} s", flush=True)
    work.mkdir(parents=True, exist_ok=True)
    np.save(cache, feats)
    return feats


def bundle_outputs(
    bundle: Path, data: dict[str, Any], work: Path, rows: np.ndarray | None = None, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and penultimate features under ``bundle`` of every image, or of ``rows`` (the
    product's calibration cache)."""
    from inference.bundle import MODEL_FILE, load_bundle
    from training.calibration import _cached_logits_and_features

    model, info = load_bundle(bundle)
    if info.preprocessing != data["preprocessing"]:
        raise SystemExit(f"{bundle} preprocesses differently from the reference; its images are not cached here.")
    started = time.time()
    idx = np.arange(len(data["paths"])) if rows is None else np.flatnonzero(rows)
    logits, feats = _cached_logits_and_features(
        model,
        bundle / MODEL_FILE,
        data["x"][idx],
        [data["paths"][i] for i in idx],
        info.preprocessing,
        batch_size,
        work,
    )
    print(f"{bundle}: logits and features of {len(logits)} images ({time.time() - started:.0f} s)", flush=True)
    return logits, feats


# ---------------------------------------------------------------------------------------------
# Linear heads


def fit_head(x: np.ndarray, y: np.ndarray, w: np.ndarray, n_classes: int, l2: float, steps: int = 400) -> tuple:
    """Weighted multinomial logistic regression (Adam, full batch) on standardised features."""
    x = np.asarray(x, np.float64)  # once: mixed precision would copy the matrix at every step
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / std
    onehot = np.eye(n_classes)[y]
    sw = np.asarray(w, np.float64) / np.sum(w)
    weight, b = np.zeros((z.shape[1], n_classes)), np.zeros(n_classes)
    m = [np.zeros_like(weight), np.zeros_like(b)]
    v = [np.zeros_like(weight), np.zeros_like(b)]
    lr, b1, b2 = 0.05, 0.9, 0.999
    for t in range(1, steps + 1):
        logits = z @ weight + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) * sw[:, None]
        grads = [z.T @ g + l2 * weight, g.sum(axis=0)]
        for i, (param, grad) in enumerate(zip((weight, b), grads)):
            m[i] = b1 * m[i] + (1 - b1) * grad
            v[i] = b2 * v[i] + (1 - b2) * grad**2
            param -= lr * (m[i] / (1 - b1**t)) / (np.sqrt(v[i] / (1 - b2**t)) + 1e-8)
    return mean, std, weight, b


def head_logits(head: tuple, x: np.ndarray) -> np.ndarray:
    mean, std, weight, b = head
    return ((x - mean) / std) @ weight + b


def score(y: np.ndarray, logits: np.ndarray, classes: list[str], temperature: float = 1.0) -> dict[str, Any]:
    """Accuracy (count and Wilson interval), balanced accuracy, per-class recall, ECE."""
    from inference.calibration import softmax
    from training.evaluate import compute_metrics, wilson_interval

    probs = softmax(logits, temperature)
    m = compute_metrics(y, probs, classes)
    pred = np.argmax(logits, axis=1)
    correct = int(np.sum(pred == y))
    lo_hi = wilson_interval(correct, len(y))
    return {
        "n": int(len(y)),
        "correct": correct,
        "accuracy": round(correct / max(1, len(y)), 4),
        "accuracy_ci95": [round(v, 4) for v in lo_hi] if lo_hi else None,
        "balanced_accuracy": round(float(m["balanced_accuracy"]), 4),
        "recall": {
            c: (None if m["per_class"][c]["recall"] is None else round(float(m["per_class"][c]["recall"]), 4))
            for c in classes
        },
        "support": {c: int(m["per_class"][c]["support"]) for c in classes},
        "ece": round(float(m["ece"]), 4),
        "confusion": m["confusion_matrix"]["matrix"],
        "called_covid_among_non_covid": int(np.sum((pred == 0) & (y != 0))),
    }


def head_experiments(name: str, feats: np.ndarray, data: dict[str, Any]) -> dict[str, Any]:
    """Val (L2 chosen here), then leave-source-out with each of HELD_OUT removed from training."""
    from training.calibration import fit_temperature
    from training.pipeline import group_balanced_weights

    y, src, split, classes = data["y"], data["source"], data["split"], data["classes"]
    k = len(classes)
    train, val, test = split == "train", split == "val", split == "test"

    def weights(rows: np.ndarray) -> np.ndarray:
        return group_balanced_weights(y[rows], src[rows].tolist(), k)

    out: dict[str, Any] = {"features": int(feats.shape[1])}
    started = time.time()
    best = None
    for l2 in L2_GRID:
        head = fit_head(feats[train], y[train], weights(train), k, l2)
        acc = float(np.mean(np.argmax(head_logits(head, feats[val]), axis=1) == y[val]))
        out.setdefault("val_accuracy_by_l2", {})[str(l2)] = round(acc, 4)
        if best is None or acc > best[0]:
            best = (acc, l2, head)
    assert best is not None
    _, l2, head = best
    out["l2"] = l2
    lv = head_logits(head, feats[val])
    t = fit_temperature(lv, y[val])
    out["val"] = score(y[val], lv, classes)
    out["val"]["temperature"] = round(float(t), 4)
    out["val"]["ece_calibrated"] = score(y[val], lv, classes, t)["ece"]
    out["val_by_source"] = {s: score(y[val & (src == s)], lv[src[val] == s], classes) for s in sorted(set(src[val]))}
    out["test"] = score(y[test], head_logits(head, feats[test]), classes)
    for held in HELD_OUT:
        rows = train & (src != held)
        h = fit_head(feats[rows], y[rows], weights(rows), k, l2)
        target = src == held  # every image of the source: train, val (never test: none there)
        other_val = val & (src != held)
        out[f"lso_{held}"] = {
            "held_out": score(y[target], head_logits(h, feats[target]), classes),
            "val_other_sources": score(y[other_val], head_logits(h, feats[other_val]), classes),
            "test": score(y[test], head_logits(h, feats[test]), classes),
        }
    out["seconds"] = round(time.time() - started, 1)
    lso = out[f"lso_{NIH}"]["held_out"]
    print(
        f"{name}: val {out['val']['accuracy']:.3f} (ECE cal {out['val']['ece_calibrated']:.3f}), "
        f"test {out['test']['correct']}/{out['test']['n']}, LSO NIH bal {lso['balanced_accuracy']:.3f} "
        f"pneu {lso['recall']['Pneumonia']}, LSO RSNA bal {out[f'lso_{RSNA}']['held_out']['balanced_accuracy']:.3f}",
        flush=True,
    )
    return out


# ---------------------------------------------------------------------------------------------
# Bundles through the product


def sample_results(bundle: Path) -> list[dict[str, Any]]:
    from inference.loading import load_image
    from inference.predictor import Predictor

    predictor = Predictor(bundle)
    rows = []
    for path in sorted((ROOT / "resources" / "samples").iterdir()):
        if path.suffix.lower() not in (".jpg", ".png", ".dcm"):
            continue
        p = predictor.predict(load_image(path))
        truth = path.name.split("_")[0]
        truth = {"covid19": "COVID-19", "normal": "Normal", "pneumonia": "Pneumonia"}[truth]
        rows.append(
            {
                "sample": path.name,
                "truth": truth,
                "shown": p.shown_label,
                "confidence": round(float(p.confidence), 4),
                "probabilities": {c: round(float(v), 4) for c, v in p.probabilities.items()},
                "abstain_reason": p.abstain_reason,
                "ood_distance": None if p.ood_distance is None else round(float(p.ood_distance), 2),
                "correct": p.shown_label == truth,
            }
        )
    return rows


def latency_ms(bundle: Path, runs: int = 20) -> dict[str, float]:
    """Median predict and predict + Grad-CAM of one 320 px sample, lung model and gates included."""
    from inference.loading import load_image
    from inference.predictor import Predictor

    predictor = Predictor(bundle)
    path = ROOT / "resources" / "samples" / "covid19_ieee8023_00870a9c.jpg"
    predictor.warm_up()
    out = {}
    for name, fn in (("predict", predictor.predict), ("predict_gradcam", predictor.predict_and_explain)):
        for _ in range(3):
            fn(load_image(path))
        # A freshly decoded image each time: the lung model's result is cached per pixel array.
        images = [load_image(path) for _ in range(runs)]
        times = []
        for image in images:
            t0 = time.perf_counter()
            fn(image)
            times.append((time.perf_counter() - t0) * 1000)
        out[name] = round(statistics.median(times), 1)
    return out


def bundle_experiments(bundle: Path, data: dict[str, Any], work: Path, probe: bool) -> dict[str, Any]:
    from inference.bundle import read_bundle_info
    from inference.calibration import temperature_of
    from inference.ood import load_feature_gaussians

    info = read_bundle_info(bundle)
    # Only the validation and test images: a full pass of a large network costs many minutes here.
    keep = np.isin(data["split"], ("val", "test"))
    logits, feats = bundle_outputs(bundle, data, work, keep)
    y, src, split, classes = data["y"][keep], data["source"][keep], data["split"][keep], data["classes"]
    val, test = split == "val", split == "test"
    t = temperature_of(info.calibration)
    out: dict[str, Any] = {"name": info.name, "version": info.version, "architecture": info.architecture}
    out["size_bytes"] = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    out["val"] = score(y[val], logits[val], classes)
    out["val"]["temperature"] = t
    out["val"]["ece_calibrated"] = score(y[val], logits[val], classes, t)["ece"]
    out["val_by_source"] = {
        s: score(y[val & (src == s)], logits[val & (src == s)], classes, t) for s in sorted(set(src[val]))
    }
    out["test"] = score(y[test], logits[test], classes, t)
    ood = load_feature_gaussians(bundle)
    if ood is not None and feats is not None:
        out["ood_val_abstained"] = int(np.sum(ood.is_outlier(feats[val])))
        out["ood_test_abstained"] = int(np.sum(ood.is_outlier(feats[test])))
    out["samples"] = sample_results(bundle)
    out["latency_ms"] = latency_ms(bundle)
    if probe:
        import importlib.util

        spec = importlib.util.spec_from_file_location("shortcut_probe", ROOT / "benchmarks" / "shortcut_probe.py")
        module = importlib.util.module_from_spec(spec)
        assert spec.loader is not None
        spec.loader.exec_module(module)
        probe_json = work / f"probe-{info.name}-{info.version}.json"
        if not probe_json.is_file():
            module.main([str(data["csv"]), "--model", str(bundle), "--per-group", "60", "--json", str(probe_json)])
        out["shortcut_probe"] = json.loads(probe_json.read_text(encoding="utf-8"))
    print(
        f"{info.name} {info.version}: val {out['val']['correct']}/{out['val']['n']} "
        f"ECE {out['val']['ece']:.3f}->{out['val']['ece_calibrated']:.3f}, test {out['test']['correct']}/66, "
        f"samples {sum(r['correct'] for r in out['samples'])}/6, latency {out['latency_ms']}",
        flush=True,
    )
    return out


def ensemble_experiment(bundles: dict[str, str], data: dict[str, Any], work: Path) -> dict[str, Any]:
    """The mean of the bundles' calibrated probabilities on validation and test (cached outputs)."""
    from inference.bundle import read_bundle_info
    from inference.calibration import softmax, temperature_of
    from training.calibration import fit_temperature

    keep = np.isin(data["split"], ("val", "test"))
    probs = []
    for folder in bundles.values():
        logits, _ = bundle_outputs(Path(folder), data, work, keep)
        probs.append(softmax(logits, temperature_of(read_bundle_info(Path(folder)).calibration)))
    mean_logits = np.log(np.maximum(np.mean(probs, axis=0), 1e-12))
    y, split, classes = data["y"][keep], data["split"][keep], data["classes"]
    val, test = split == "val", split == "test"
    out = {"members": list(bundles), "val": score(y[val], mean_logits[val], classes)}
    t = fit_temperature(mean_logits[val], y[val])
    out["val"]["temperature"] = round(float(t), 4)
    out["val"]["ece_calibrated"] = score(y[val], mean_logits[val], classes, t)["ece"]
    out["test"] = score(y[test], mean_logits[test], classes)
    print(
        f"ensemble: val {out['val']['correct']}/{out['val']['n']} ECE cal {out['val']['ece_calibrated']:.3f}, "
        f"test {out['test']['correct']}/{out['test']['n']}",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="the CSV the bundled model was trained on")
    ap.add_argument("--cache-dir", type=Path, required=True, help="decoded arrays (train's --cache-dir)")
    ap.add_argument("--work", type=Path, required=True, help="feature caches (outside the repository)")
    ap.add_argument("--reference", type=Path, default=ROOT / "resources" / "models" / "default")
    ap.add_argument("--bundle", action="append", default=[], metavar="NAME=DIR", help="bundles to compare")
    ap.add_argument("--steps", default="features,heads,bundles", help="any of features,heads,bundles,ensemble,latency")
    ap.add_argument("--no-probe", action="store_true", help="skip the shortcut probe (minutes per bundle)")
    ap.add_argument("--no-imagenet", action="store_true", help="no frozen ImageNet features (heads on bundles only)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    steps = set(args.steps.split(","))
    result: dict[str, Any] = json.loads(args.json.read_text()) if args.json and args.json.is_file() else {}
    if steps - {"latency"}:
        data = load_data(args.data, args.reference, args.cache_dir)
        data["csv"] = args.data
        counts = {s: int(np.sum(data["split"] == s)) for s in ("train", "val", "test")}
        print(f"{len(data['y'])} images ({counts}; {data['skipped']} skipped)", flush=True)
        result["split_counts"] = counts
    bundles = dict(item.split("=", 1) for item in args.bundle)
    feature_sets: dict[str, np.ndarray] = {}
    if "features" in steps or "heads" in steps:
        if not args.no_imagenet:
            feature_sets["imagenet-lite0 (frozen)"] = imagenet_features(data, args.work)
        for name, folder in bundles.items():
            _, feats = bundle_outputs(Path(folder), data, args.work)
            if feats is not None:
                feature_sets[f"{name} features (not LSO: the network saw every source)"] = feats
    if "heads" in steps:
        heads = result.setdefault("heads", {})
        for name, feats in feature_sets.items():
            heads[name] = head_experiments(name, feats, data)
        if len(feature_sets) > 1:
            both = np.concatenate(list(feature_sets.values())[:2], axis=1)
            heads["imagenet + first bundle (concatenated)"] = head_experiments("concatenated", both, data)
    if "bundles" in steps:
        out = result.setdefault("bundles", {})
        for name, folder in bundles.items():
            out[name] = bundle_experiments(Path(folder), data, args.work, probe=not args.no_probe)
    if "ensemble" in steps and len(bundles) > 1:
        result["ensemble"] = ensemble_experiment(bundles, data, args.work)
    if "latency" in steps:  # alone, on a quieter machine: the figure depends on the load
        lat = result.setdefault("latency_ms", {})
        for name, folder in bundles.items():
            lat[name] = {**latency_ms(Path(folder)), "load_average": [round(v, 2) for v in os.getloadavg()]}
            print(f"{name}: {lat[name]}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
