"""Shortcut probe of a model bundle on its own validation images (issue 7).

    python benchmarks/shortcut_probe.py runs/cxr.csv --model resources/models/default \
        [--per-group 120] [--json probe.json]

DATA must be the data the bundle was trained on (the CSV ``tools/make_cxr_csv.py`` writes):
the validation split is rebuilt from the training configuration stored in the bundle
(same seed, fractions and held-out sources), so every probed image is one the model never
trained on. Up to ``--per-group`` images per (class, source) are used.

Prints, and writes with ``--json``:

* per class, how well a linear probe on the model's penultimate features tells that
  class's sources apart (balanced accuracy; chance is 1/sources): high means the features
  carry the hospital, a shortcut the model can use;
* accuracy and per-class recall with the lungs painted over (mean gray), beside the same
  images untouched: a model that still classifies without lungs is using something else;
* the mean share of Grad-CAM heat inside the lung fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def validation_samples(data: Path, info) -> list:
    """The bundle's validation split, rebuilt from its stored training configuration."""
    from training.datasets import discover_as_trained
    from training.splits import hold_out_sources, split_dataset

    cfg = info.training.get("config", {})
    ds = discover_as_trained(data, cfg)
    pool, held = hold_out_sources(ds.samples, cfg.get("val_sources", ()))
    splits = split_dataset(pool, cfg.get("val_fraction", 0.15), cfg.get("test_fraction", 0.0), cfg.get("seed", 0))
    return splits["val"] + held


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="the CSV (or folder) the bundle was trained on")
    ap.add_argument("--model", type=Path, default=None, help="model bundle (default: the bundled model)")
    ap.add_argument("--per-group", type=int, default=120, help="images per (class, source) at most")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)

    from inference.bundle import read_bundle_info
    from inference.display import full_range_window, window_image
    from inference.image import XRayImage
    from inference.loading import load_image
    from inference.paths import bundled_model_dir
    from inference.predictor import Predictor
    from inference.preprocess import preprocess
    from training.probe import feature_extractor, mask_lungs, source_probe

    model_dir = args.model or bundled_model_dir()
    info = read_bundle_info(model_dir)
    samples = validation_samples(args.data, info)
    rng = np.random.default_rng(0)
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for s in samples:
        groups[(s.label, s.source or "(unknown)")].append(s)
    chosen = []
    for key in sorted(groups):
        items = groups[key]
        idx = rng.permutation(len(items))[: args.per_group]
        chosen += [items[i] for i in sorted(idx)]
    print(f"{info.display_name}: {len(chosen)} of {len(samples)} validation images, {len(groups)} groups")

    predictor = Predictor(model_dir)
    features_of = feature_extractor(predictor.model)
    classes = predictor.class_names
    started = time.time()
    feats, labels, sources, y, p_plain, p_masked, heat = [], [], [], [], [], [], []
    for i, s in enumerate(chosen):
        try:
            image = load_image(s.path)
        except Exception as exc:  # noqa: BLE001 - a probe skips what it cannot read
            print(f"skipped {s.path}: {exc}", file=sys.stderr)
            continue
        lungs = predictor.lungs.segment(image, info.preprocessing.crop_margin)
        prediction, explanation = predictor.predict_and_explain(image)
        x, _ = predictor.prepare(image)
        feats.append(np.asarray(features_of(x[np.newaxis], training=False))[0])
        labels.append(s.label)
        sources.append(s.source or "(unknown)")
        y.append(classes.index(s.label))
        p_plain.append(prediction.class_index)
        heat.append(explanation.lung_heat_fraction)
        # Lungs painted over on the displayed 8-bit image, then through the same preprocessing
        # with the crop box of the untouched image (the masked one has no lungs to find).
        gray = window_image(image)
        whole = lungs.whole_mask if lungs.whole_mask is not None else lungs.mask
        masked = XRayImage(
            mask_lungs(gray, whole | lungs.mask) if lungs.plausible else gray,
            dataclasses.replace(
                image.meta,
                bits_stored=8,
                photometric="MONOCHROME2",
                default_window=full_range_window(8),
            ),
        )
        box = lungs.box if (lungs.plausible and info.preprocessing.crop == "lungs") else None
        xm, _ = preprocess(masked, info.preprocessing, box)
        p_masked.append(int(np.argmax(predictor.forward(xm[np.newaxis])[0])))
        if (i + 1) % 100 == 0:
            print(f"  {i + 1}/{len(chosen)} images, {time.time() - started:.0f} s", flush=True)
    y_arr, plain, masked_pred = np.array(y), np.array(p_plain), np.array(p_masked)

    probes = [r.to_dict() for r in source_probe(np.array(feats), labels, sources)]
    print("\nSource probe on the penultimate features (within each class; balanced accuracy, chance):")
    for r in probes:
        print(
            f"  {r['class']:<10} {len(r['sources'])} sources  {r['balanced_accuracy']:.3f}  (chance {r['chance']:.3f}; "
            f"{r['n_train']} fit / {r['n_test']} scored: {', '.join(r['sources'])})"
        )

    def recall(pred: np.ndarray) -> dict[str, float]:
        return {c: round(float(np.mean(pred[y_arr == k] == k)), 4) for k, c in enumerate(classes) if np.any(y_arr == k)}

    acc_plain, acc_masked = float(np.mean(plain == y_arr)), float(np.mean(masked_pred == y_arr))
    masked_counts = Counter(classes[k] for k in masked_pred)
    print(f"\nAccuracy, untouched: {acc_plain:.3f}; lungs masked out: {acc_masked:.3f} (chance {1 / len(classes):.3f})")
    print(f"  recall untouched: {recall(plain)}")
    print(f"  recall masked:    {recall(masked_pred)}")
    print(f"  masked images called: {dict(masked_counts)}")
    by_source_masked = {
        src: round(float(np.mean(masked_pred[np.array(sources) == src] == y_arr[np.array(sources) == src])), 4)
        for src in sorted(set(sources))
    }
    print(f"  masked accuracy per source: {by_source_masked}")
    known_heat = [h for h in heat if h is not None]
    mean_heat = float(np.mean(known_heat)) if known_heat else None
    if mean_heat is not None:
        print(
            f"\nGrad-CAM heat inside the lung fields: mean {mean_heat:.3f}, median {float(np.median(known_heat)):.3f} "
            f"({len(known_heat)} images with plausible lungs of {len(heat)})"
        )
    result = {
        "model": {"name": info.name, "version": info.version, "path": str(model_dir)},
        "n_images": len(y),
        "per_group": args.per_group,
        "source_probe": probes,
        "accuracy": round(acc_plain, 4),
        "accuracy_lungs_masked": round(acc_masked, 4),
        "recall": recall(plain),
        "recall_lungs_masked": recall(masked_pred),
        "lungs_masked_predictions": dict(masked_counts),
        "accuracy_lungs_masked_by_source": by_source_masked,
        "lung_heat_fraction_mean": None if mean_heat is None else round(mean_heat, 4),
        "lung_heat_fraction_median": None if not known_heat else round(float(np.median(known_heat)), 4),
        "images_with_plausible_lungs": len(known_heat),
        "seconds": round(time.time() - started, 1),
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nWritten to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
