"""Print the measured part of a classifier's model card (Markdown) from its bundle.

    python tools/model_card.py resources/models/default [--probe probe.json] > tables.md
    python tools/model_card.py --compare BUNDLE BUNDLE... > comparison.md

The tables come from ``model.json`` (written by ``main.py train``) and, with ``--probe``,
from ``benchmarks/shortcut_probe.py --json``; the narrative around them (what was tried, what
it means) is written by hand in the card.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _f(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}"


def _pairs(d: dict[str, Any], fmt: str) -> str:
    return ", ".join(f"{k} {fmt.format(v)}" for k, v in d.items())


def class_table(m: dict[str, Any]) -> list[str]:
    lines = [
        "| class | precision | recall (sensitivity) | specificity | F1 | AUC | support |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in m["per_class"].items():
        lines.append(
            f"| {name} | {_f(v['precision'])} | {_f(v['recall'])} | {_f(v.get('specificity'))} | {_f(v['f1'])} | "
            f"{_f(v['auc'])} | {v['support']} |"
        )
    cm = m["confusion_matrix"]
    lines += ["", f"Confusion matrix (rows true, columns predicted; {', '.join(cm['classes'])}): `{cm['matrix']}`."]
    return lines


def source_table(by_source: dict[str, Any], held_out: set[str]) -> list[str]:
    names = None
    lines = []
    for src, v in by_source.items():
        if names is None:
            names = list(v["per_class"])
            lines += [
                "| source | images | accuracy | balanced accuracy | macro-F1 | "
                + " | ".join(f"recall {n}" for n in names)
                + " |",
                "|---" * (5 + len(names)) + "|",
            ]
        recalls = " | ".join(
            _f(v["per_class"][n]["recall"]) + f" ({v['per_class'][n]['support']})"
            if v["per_class"][n]["support"]
            else "–"
            for n in names
        )
        mark = " **(held out: never trained on)**" if src in held_out else ""
        lines.append(
            f"| {src}{mark} | {v['n_images']} | {_f(v['accuracy'])} | {_f(v.get('balanced_accuracy'))} | "
            f"{_f(v['macro_f1'])} | {recalls} |"
        )
    return lines


def probe_lines(p: dict[str, Any]) -> list[str]:
    lines = [
        f"On {p['n_images']} validation images (up to {p.get('per_group', 120)} per class and source), "
        "the model's own features:",
        "",
        "| class | sources told apart | balanced accuracy | chance |",
        "|---|---|---|---|",
    ]
    for r in p["source_probe"]:
        lines.append(f"| {r['class']} | {', '.join(r['sources'])} | {r['balanced_accuracy']:.3f} | {r['chance']:.3f} |")
    lines += [
        "",
        f"Accuracy on the same images untouched {p['accuracy']:.3f}; with the lungs painted over "
        f"{p['accuracy_lungs_masked']:.3f} (recall {_pairs(p['recall_lungs_masked'], '{:.3f}')}; the masked "
        f"images were called {_pairs(p['lungs_masked_predictions'], '{}')}).",
    ]
    if p.get("lung_heat_fraction_mean") is not None:
        lines += [
            "",
            f"Grad-CAM heat inside the lung fields: mean {p['lung_heat_fraction_mean']:.3f}, median "
            f"{p['lung_heat_fraction_median']:.3f} ({p['images_with_plausible_lungs']} images with plausible lungs).",
        ]
    return lines


def card_tables(bundle: Path, probe: Path | None = None) -> str:
    info = json.loads((bundle / "model.json").read_text(encoding="utf-8"))
    metrics, training = info["metrics"], info["training"]
    held = set(training.get("config", {}).get("val_sources") or [])
    out: list[str] = []
    if "test" in metrics:
        te = metrics["test"]
        out += [
            "### Benchmark test split (`kaggle_covid19_image_dataset/test`, Viral Pneumonia as Pneumonia)",
            "",
            f"Accuracy **{te['accuracy']:.3f}** ({te['n_images']} images), macro-F1 {_f(te['macro_f1'])}, "
            f"ECE {_f(te.get('ece'))}.",
            "",
            *class_table(te),
            "",
        ]
    va = metrics["val"]
    out += [
        "### Validation: patient-disjoint split" + (" plus the held-out sources" if held else ""),
        "",
        f"Accuracy {va['accuracy']:.3f}, balanced accuracy {_f(va.get('balanced_accuracy'))}, macro-F1 "
        f"{_f(va['macro_f1'])}, ECE {_f(va.get('ece'))} on {va['n_images']} images.",
        "",
        *class_table(va),
        "",
        "Per source (recall with the number of images in brackets):",
        "",
        *source_table(va.get("by_source", {}), held),
        "",
    ]
    if va.get("worst_source"):
        out += [f"Worst source: {va['worst_source']['source']} (accuracy {va['worst_source']['accuracy']:.3f}).", ""]
    if probe is not None:
        out += [
            "### Shortcut probe (`benchmarks/shortcut_probe.py`)",
            "",
            *probe_lines(json.loads(probe.read_text())),
            "",
        ]
    return "\n".join(out)


def compare_table(bundles: list[Path]) -> str:
    """Bundles side by side: test accuracy, validation accuracy and balanced accuracy per source.

    Meant for models validated on the same split (same data, seed and fractions), such as a
    recipe and its control: the numbers are then comparable image for image.
    """
    infos = [json.loads((b / "model.json").read_text(encoding="utf-8")) for b in bundles]
    names = [f"{i['name']} {i['version']}" for i in infos]
    head = ["| figure | " + " | ".join(names) + " |", "|---" * (1 + len(names)) + "|"]
    rows: list[str] = []

    def row(label: str, values: list[Any]) -> None:
        rows.append(f"| {label} | " + " | ".join(_f(v) for v in values) + " |")

    row("test accuracy (66)", [i["metrics"].get("test", {}).get("accuracy") for i in infos])
    row("validation accuracy", [i["metrics"]["val"]["accuracy"] for i in infos])
    row("validation balanced accuracy", [i["metrics"]["val"].get("balanced_accuracy") for i in infos])
    row("validation macro-F1", [i["metrics"]["val"]["macro_f1"] for i in infos])
    sources = sorted({s for i in infos for s in i["metrics"]["val"].get("by_source", {})})
    for src in sources:
        per = [i["metrics"]["val"].get("by_source", {}).get(src) for i in infos]
        n = next(p["n_images"] for p in per if p)
        row(f"{src} ({n}): accuracy", [p and p["accuracy"] for p in per])
        row(f"{src}: balanced accuracy", [p and p.get("balanced_accuracy") for p in per])
    return "\n".join(head + rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path, nargs="+", help="one bundle, or several with --compare")
    ap.add_argument("--probe", type=Path)
    ap.add_argument("--compare", action="store_true", help="print the bundles side by side instead")
    args = ap.parse_args(argv)
    if args.compare:
        sys.stdout.write(compare_table(args.bundle))
    else:
        sys.stdout.write(card_tables(args.bundle[0], args.probe))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
