"""Our architectures against the published comparison on the Kaggle "covid19-image-dataset".

    .venv/bin/python benchmarks/bench_published_comparison.py [--arch custom-cnn vgg16 resnet50]
        [--epochs 15] [--image-size 160] [--evaluate-model resources/models/default] [--md OUT.md]
    .venv/bin/python benchmarks/bench_published_comparison.py --arch efficientnet-lite0 --init imagenet \
        --image-size 224 --crop lungs --clahe --epochs 10 --patience 4 --batch-size 16

Protocol: each architecture is trained with ``training.train`` on the data set's ``train``
split only (a patient-level validation split is carved from it for early stopping), then
evaluated once on its ``test`` split (66 images). "Viral Pneumonia" is mapped to
"Pneumonia", the class name the app uses. The published figures (accuracy on the same test
split, 3 classes) are custom CNN 0.88, VGG16 0.88, ResNet50 0.95.

Differences to state beside any table this prints: ``--init scratch`` (the default) starts
from random weights; ``--init imagenet`` starts EfficientNet-Lite0 from the ImageNet weights
shipped with the app (a warm-up of the head on cached features, then the top blocks, see
``training/finetune.py``), the way the published VGG16/ResNet50 were probably initialised.
Epochs and image size are given here (CPU time is limited), the augmentation is our own.
``--evaluate-model`` adds already trained bundles (the bundled model,
trained on the whole collection without this test split) to the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

from training.architectures import ARCHITECTURES  # noqa: E402

PUBLISHED = {"custom-cnn": 0.88, "vgg16": 0.88, "resnet50": 0.95}
CLASS_MAP = {"Viral Pneumonia": "Pneumonia"}
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cxr" / "kaggle_covid19_image_dataset"


def _row(name: str, arch: str, result: dict, epochs: str, size: str, seconds: float | None, init: str = "") -> dict:
    per = result["per_class"]
    return {
        "model": name,
        "arch": arch,
        "init": init,
        "epochs": epochs,
        "image_size": size,
        "train_seconds": None if seconds is None else round(seconds),
        "test_accuracy": result["accuracy"],
        "test_macro_f1": result["macro_f1"],
        "recall": {c: per[c]["recall"] for c in per},
        "n_test": result["n_images"],
        "n_correct": int(sum(result["confusion_matrix"]["matrix"][i][i] for i in range(len(per)))),
        "confusion_matrix": result["confusion_matrix"]["matrix"],
        "published": None if init == "bundle" else PUBLISHED.get(arch),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def _markdown(rows: list[dict]) -> str:
    lines = [
        "| model | arch | init | epochs run | px | train time | test accuracy | macro-F1 | published accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = "-" if r["train_seconds"] is None else f"{r['train_seconds']} s"
        pub = "-" if r["published"] is None else f"{r['published']:.2f}"
        lines.append(
            f"| {r['model']} | {r['arch']} | {r['init'] or '-'} | {r['epochs']} | {r['image_size']} | {t} | "
            f"{r['n_correct']}/{r['n_test']} = {r['test_accuracy']:.4f} | {r['test_macro_f1']:.3f} | {pub} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding train/ and test/")
    parser.add_argument("--arch", nargs="+", default=["custom-cnn", "vgg16", "resnet50"], choices=ARCHITECTURES)
    parser.add_argument("--epochs", type=int, default=15, help="maximum epochs (early stopping may end sooner)")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, help="default: training's (1e-4 for vgg16, else 1e-3)")
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", default="scratch", help="scratch (default) or imagenet (shipped weights)")
    parser.add_argument("--crop", choices=("none", "lungs"), default="none", help="crop to the lung fields")
    parser.add_argument("--clahe", action="store_true", help="contrast equalisation (CLAHE)")
    parser.add_argument("--head-epochs", type=int, help="ImageNet start: warm-up epochs of the head (200)")
    parser.add_argument("--unfreeze-blocks", type=int, help="ImageNet start: top blocks fine-tuned (5)")
    parser.add_argument("--cache-dir", type=Path, help="keep decoded images here (default: none, a cold start)")
    parser.add_argument("--out", type=Path, help="keep the trained bundles here (default: a temporary folder)")
    parser.add_argument(
        "--evaluate-model",
        action="append",
        default=[],
        type=Path,
        metavar="BUNDLE",
        help="also evaluate an existing bundle on the test split (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="write the rows as JSON")
    parser.add_argument("--md", type=Path, help="write the table as Markdown")
    args = parser.parse_args(argv)

    from training.evaluate import evaluate_bundle
    from training.progress import ConsoleProgress
    from training.train import TrainConfig, train

    train_dir, test_dir = args.data / "train", args.data / "test"
    if not train_dir.is_dir() or not test_dir.is_dir():
        print(f"error: {args.data} must hold train/ and test/ (the Kaggle covid19-image-dataset).", file=sys.stderr)
        return 1
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-published-") as tmp:
        out_root = args.out or Path(tmp)
        for arch in args.arch:
            print(f"== {arch}: training on {train_dir}", file=sys.stderr)
            started = time.time()
            result = train(
                TrainConfig(
                    data=train_dir,
                    out_dir=out_root / arch,
                    arch=arch,
                    epochs=args.epochs,
                    image_size=args.image_size,
                    batch_size=args.batch_size,
                    learning_rate=args.lr,
                    patience=args.patience,
                    seed=args.seed,
                    init=args.init,
                    crop=args.crop,
                    clahe=args.clahe,
                    head_epochs=args.head_epochs,
                    unfreeze_blocks=args.unfreeze_blocks,
                    cache_dir=args.cache_dir,
                    class_map=CLASS_MAP,
                    overwrite=True,
                    name=f"bench-{arch}",
                    command="benchmarks/bench_published_comparison.py " + " ".join(sys.argv[1:]),
                ),
                progress=ConsoleProgress(),
            )
            seconds = time.time() - started
            test = evaluate_bundle(result.bundle_dir, test_dir, class_map=CLASS_MAP, batch_size=args.batch_size)
            epochs = f"{result.epochs_run}/{args.epochs}"
            rows.append(_row(arch, arch, test, epochs, str(args.image_size), seconds, args.init))
            print(f"{arch}: test accuracy {test['accuracy']:.3f}", file=sys.stderr)
        for bundle in args.evaluate_model:
            from inference.bundle import read_bundle_info

            info = read_bundle_info(bundle)
            test = evaluate_bundle(bundle, test_dir, class_map=CLASS_MAP, batch_size=args.batch_size)
            epochs = str(info.training.get("epochs_run", "?"))
            rows.append(_row(info.display_name, info.architecture, test, epochs, str(info.input_size), None, "bundle"))
    table = _markdown(rows)
    print(table)
    print(
        f"\nTrained ({args.init}) on {train_dir.name}/ only, at most {args.epochs} epochs at {args.image_size} px; "
        f"evaluated on {test_dir} ({rows[0]['n_test'] if rows else 0} images). Published: custom CNN 0.88, "
        "VGG16 0.88, ResNet50 0.95."
    )
    if args.md:
        args.md.write_text(table + "\n", encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
