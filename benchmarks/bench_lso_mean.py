"""The mean of two networks on a hospital neither was trained on (issue 13, section 5).

    .venv/bin/python benchmarks/bench_lso_mean.py cnn=runs/lso-nih-cnn lite0=runs/lso-nih-lite0 \
        --cache runs/cache/<key> --json benchmarks/bench_lso_mean.json

Every member must be a bundle that ``main.py train --val-sources ozturk_darkcovidnet`` wrote from
the same data, seed and fractions (so their validation splits are the same images). Each
member's logits on that split are divided by its own temperature; the candidate is the mean of
the scaled logits (what a merged ensemble bundle computes). Reported per model: balanced accuracy
and per-class recall on the held-out source, accuracy on the other sources' validation images,
and a paired bootstrap interval (2,000 resamples of the held-out films) of the mean's gain over
each member. Decoded arrays come from the cache that ``main.py train --cache-dir`` wrote.

``--tta`` also scores each member with test-time augmentation: the mean probability over five
views of each cached (lung-cropped) image: as is, zoomed 1.06 and 0.94, shifted 3% left and
right (reflected borders); with ECE (15 bins) on both parts, before and after.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

HELD_OUT = "ozturk_darkcovidnet"


def _scores(y: np.ndarray, z: np.ndarray, held: np.ndarray, classes: list[str]) -> dict[str, Any]:
    from training.adapt import balanced_accuracy

    pred = z.argmax(axis=1)
    out: dict[str, Any] = {}
    for part, mask in (("held_out", held), ("other_sources", ~held)):
        recall = {
            c: [int(np.sum((pred == k) & (y == k) & mask)), int(np.sum((y == k) & mask))] for k, c in enumerate(classes)
        }
        out[part] = {
            "correct": int(np.sum((pred == y) & mask)),
            "n": int(mask.sum()),
            "balanced_accuracy": round(balanced_accuracy(y[mask], pred[mask], len(classes)), 4),
            "recall": recall,
        }
    return out


TTA_VIEWS = {"zoom 1.06": (1.06, 0.0), "zoom 0.94": (0.94, 0.0), "left 3%": (1.0, -0.03), "right 3%": (1.0, 0.03)}


def _view(img: np.ndarray, scale: float, dx: float) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 0, scale)
    m[0, 2] += dx * w
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _ece(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    conf, right = p.max(axis=1), p.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    return float(
        sum(
            np.mean(m) * abs(np.mean(right[m]) - np.mean(conf[m]))
            for lo, hi in zip(edges[:-1], edges[1:], strict=True)
            if (m := (conf > lo) & (conf <= hi)).any()
        )
    )


def _tta(model: Any, info: Any, x: np.ndarray, y: np.ndarray, held: np.ndarray, classes: list[str]) -> dict[str, Any]:
    from inference.calibration import softmax
    from training.calibration import model_logits

    t = float((info.calibration or {}).get("temperature", 1.0))
    single = softmax(model_logits(model, x, info.preprocessing) / t)
    views = [single] + [
        softmax(model_logits(model, np.stack([_view(im, *v) for im in x]), info.preprocessing) / t)
        for v in TTA_VIEWS.values()
    ]
    out = {}
    for name, p in (("single", single), ("tta", np.mean(views, axis=0))):
        out[name] = _scores(y, np.log(np.maximum(p, 1e-12)), held, classes)
        out[name]["ece"] = {
            "held_out": round(_ece(p[held], y[held]), 4),
            "other_sources": round(_ece(p[~held], y[~held]), 4),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("members", nargs="+", metavar="NAME=BUNDLE")
    ap.add_argument("--cache", type=Path, required=True, help="decoded arrays (.npy/.json stem) of the training data")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--tta", action="store_true", help="also score each member with 5-view test-time augmentation")
    args = ap.parse_args(argv)

    from inference.bundle import load_bundle
    from training.adapt import balanced_accuracy
    from training.calibration import model_logits
    from training.datasets import discover_as_trained
    from training.ood_fit import recreate_split

    x_all = np.load(args.cache.with_suffix(".npy"), mmap_mode="r")
    index = {p: i for i, p in enumerate(json.loads(args.cache.with_suffix(".json").read_text())["kept"])}
    scaled: dict[str, np.ndarray] = {}
    tta: dict[str, Any] = {}
    x = y = held = None
    classes: list[str] = []
    for item in args.members:
        name, path = item.split("=", 1)
        model, info = load_bundle(Path(path))
        if HELD_OUT not in (info.training.get("config") or {}).get("val_sources", []):
            raise SystemExit(f"{path} was not trained with {HELD_OUT} held out")
        if x is None:
            classes = list(info.class_names)
            ds = discover_as_trained(info.training["data"]["path"], info.training["config"])
            val = [s for s in recreate_split(ds.samples, info.training)["val"] if s.label in classes]
            x = np.stack([x_all[index[str(s.path)]] for s in val])
            y = np.array([classes.index(s.label) for s in val])
            held = np.array([s.source == HELD_OUT for s in val])
        temperature = float((info.calibration or {}).get("temperature", 1.0))
        scaled[name] = model_logits(model, x, info.preprocessing) / temperature
        if args.tta:
            tta[name] = _tta(model, info, x, y, held, classes)
        print(f"{name}: {info.name} {info.version}, temperature {temperature}", flush=True)
    assert y is not None and held is not None
    results: dict[str, Any] = {name: _scores(y, z, held, classes) for name, z in scaled.items()}
    mean = np.mean(list(scaled.values()), axis=0)
    results["mean"] = _scores(y, mean, held, classes)
    rng = np.random.default_rng(0)
    yh, ph = y[held], mean[held].argmax(axis=1)
    draws = [rng.integers(0, len(yh), len(yh)) for _ in range(2000)]
    for name, z in scaled.items():
        pm = z[held].argmax(axis=1)
        diff = [
            balanced_accuracy(yh[i], ph[i], len(classes)) - balanced_accuracy(yh[i], pm[i], len(classes)) for i in draws
        ]
        results["mean"][f"gain_over_{name}"] = {
            "balanced_accuracy": round(
                results["mean"]["held_out"]["balanced_accuracy"] - results[name]["held_out"]["balanced_accuracy"], 4
            ),
            "ci95": [round(float(v), 4) for v in np.percentile(diff, [2.5, 97.5])],
        }
    for name, r in results.items():
        h, o = r["held_out"], r["other_sources"]
        print(
            f"{name}: {HELD_OUT} balanced {h['balanced_accuracy']:.3f} ({h['correct']}/{h['n']}) recall {h['recall']}; "
            f"other sources {o['correct']}/{o['n']} (balanced {o['balanced_accuracy']:.3f})"
        )
    for k, v in results["mean"].items():
        if k.startswith("gain_over_"):
            print(f"mean {k}: {v}")
    for name, r in tta.items():
        for kind, v in r.items():
            h, o = v["held_out"], v["other_sources"]
            print(
                f"{name} {kind}: {HELD_OUT} balanced {h['balanced_accuracy']:.3f} ({h['correct']}/{h['n']}), "
                f"other sources {o['correct']}/{o['n']}, ECE {v['ece']}"
            )
    if tta:
        results["tta"] = tta
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
