"""``main.py train``, ``main.py train-lungs``, ``main.py evaluate`` and ``main.py calibrate``.

Expected problems (bad data, a wrong path, an existing output folder) end with one line on
stderr and exit code 1, never a traceback; in ``train``/``train-lungs`` a model folder that cannot be used
(``--init``: a broken or hostile ``model.json`` or ``model.keras``) ends the same way with
exit code 2, as in ``predict --model``. Ctrl+C during training cancels cooperatively at the next
batch (exit code 130) and leaves any existing model untouched; a second Ctrl+C stops at once.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from training.architectures import ARCHITECTURES

__all__ = ["register", "run_train", "run_train_lungs", "run_evaluate", "run_calibrate", "add_lung_arguments"]

EXIT_ERROR = 1
EXIT_BAD_MODEL = 2
EXIT_CANCELLED = 130


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "train",
        help="train a model bundle from a folder or CSV of labelled images",
        description=(
            "Train a classifier from DATA: a folder with one subfolder per class (optionally inside "
            "train/, val/, test/), a CSV (path,label[,patient_id][,split][,source]), the CoronaHack "
            "metadata CSV or the covid-chestxray-dataset metadata.csv. Writes a model bundle to --out."
        ),
    )
    t.add_argument("data", metavar="DATA", help="folder of class subfolders, or a CSV file")
    t.add_argument("--out", required=True, metavar="MODEL_DIR", help="folder to write the model bundle to")
    t.add_argument("--arch", choices=ARCHITECTURES, help="network (default: the starting model's, else custom-cnn)")
    t.add_argument("--epochs", type=int, default=20, help="maximum epochs; early stopping may end sooner (20)")
    t.add_argument("--image-size", type=int, metavar="S", help="input side in px (default: starting model's, else 224)")
    t.add_argument(
        "--init",
        default="auto",
        metavar="INIT",
        help="auto (fine-tune the bundled model when it matches, else scratch), scratch, bundled, "
        "a model folder, imagenet (the shipped ImageNet EfficientNet-Lite0 weights), "
        "or imagenet:WEIGHTS.h5 (a local 'no top' weights file)",
    )
    t.add_argument("--class-map", metavar="MAP", help="merge/rename classes: 'Viral Pneumonia=Pneumonia,Other='")
    t.add_argument(
        "--batch-size", type=int, default=32, help="images per step on each GPU (all GPUs are used together) (32)"
    )
    t.add_argument(
        "--lr",
        type=float,
        help="initial learning rate of Adam (default: 0.0001 when fine-tuning and for vgg16, else 0.001)",
    )
    t.add_argument("--val-fraction", type=float, default=0.15, help="validation share when DATA has no val split")
    t.add_argument("--test-fraction", type=float, default=0.0, help="test share when DATA has no test split (0)")
    t.add_argument(
        "--val-sources",
        metavar="SRC[,SRC]",
        default="",
        help="leave-source-out validation: every image of these sources (the CSV's source column) is "
        "validated on and never trained on, beside the usual share of the others",
    )
    t.add_argument(
        "--crop",
        choices=("none", "lungs"),
        help="lungs: crop each image to its lung fields (shipped lung model) before resizing; "
        "default: as the starting model, else none",
    )
    t.add_argument(
        "--crop-margin", type=float, metavar="F", help="margin around the lung box, fraction of its size (0.08)"
    )
    t.add_argument("--seed", type=int, default=0)
    clahe = t.add_mutually_exclusive_group()
    clahe.add_argument("--clahe", dest="clahe", action="store_true", default=None, help="contrast equalisation")
    clahe.add_argument("--no-clahe", dest="clahe", action="store_false")
    t.add_argument("--no-augment", action="store_true", help="train without augmentation")
    t.add_argument(
        "--balance",
        choices=("class", "class-source"),
        default="class",
        help="class: class weights (default); class-source: batches balanced over classes and, within a class, "
        "over the data's sources (needs a source column)",
    )
    t.add_argument("--flip", action="store_true", help="also flip images horizontally (off: it breaks anatomy)")
    t.add_argument("--patience", type=int, default=5, help="epochs without validation improvement before stopping")
    t.add_argument("--cache-dir", metavar="DIR", help="keep decoded images here to start later runs faster")
    t.add_argument(
        "--backup-dir",
        metavar="DIR",
        help="save the training state here after every epoch; the same command run again after a crash "
        "resumes from it (deleted when the run ends well; DIR must be new, empty or such a backup)",
    )
    t.add_argument(
        "--distributed",
        metavar="local:N",
        help="train as N workers of a tf.distribute cluster on this machine (loopback only); on a real "
        "cluster run the same command without it on each machine, each with its own TF_CONFIG",
    )
    t.add_argument("--overwrite", action="store_true", help="replace an existing model at --out")
    t.add_argument("--name", help="model name (default: the --out folder's name)")
    t.add_argument("--version", default="1.0.0", help="model version (1.0.0)")
    t.add_argument("--description", default="", help="one line describing the model")
    t.add_argument(
        "--csv-kind",
        default="auto",
        choices=("auto", "generic", "coronahack", "covid-chestxray"),
        help=argparse.SUPPRESS,
    )
    t.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="leave out matching images (repeatable)"
    )
    t.add_argument("--ignore-split", action="store_true", help="ignore the split DATA declares; split anew")
    t.add_argument("--all-views", action="store_true", help="covid-chestxray: keep lateral views too")
    t.add_argument(
        "--head-epochs",
        type=int,
        metavar="N",
        help="ImageNet start: epochs of the head's warm-up on cached backbone features (200, early-stopped; 0: none)",
    )
    t.add_argument(
        "--unfreeze-blocks",
        type=int,
        metavar="N",
        help="ImageNet start: fine-tune only the last N blocks and the head convolution (efficientnet-lite0: 5 of 16)",
    )
    t.add_argument(
        "--no-calibrate",
        action="store_true",
        help="do not fit a temperature on the validation split after training",
    )
    t.set_defaults(func=run_train)

    lungs = sub.add_parser(
        "train-lungs",
        help="train the lung segmentation model from images with lung masks",
        description=(
            "Train the lung segmentation model (a small U-Net with one output per mask convention) from a "
            "folder holding manifest.csv, images and masks. Writes a lung model folder to --out."
        ),
    )
    add_lung_arguments(lungs)
    lungs.set_defaults(func=run_train_lungs)

    e = sub.add_parser(
        "evaluate",
        help="evaluate a model bundle on labelled images",
        description="Evaluate a model bundle on labelled images (same DATA forms as train).",
    )
    e.add_argument("data", metavar="DATA", help="folder of class subfolders, or a CSV file")
    e.add_argument("--model", metavar="MODEL_DIR", help="model bundle (default: the bundled model)")
    e.add_argument("--class-map", metavar="MAP", help="rename classes to the model's: 'Viral Pneumonia=Pneumonia'")
    e.add_argument("--json", metavar="OUT.json", help="write the metrics as JSON (schema: see the README)")
    e.add_argument("--report-dir", metavar="DIR", help="also write report.md, report.json and plots here")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    e.add_argument("--split", choices=("train", "val", "test"), help="only this declared split of DATA")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--cache-dir", metavar="DIR", help="keep decoded images here to start later runs faster")
    e.add_argument(
        "--csv-kind",
        default="auto",
        choices=("auto", "generic", "coronahack", "covid-chestxray"),
        help=argparse.SUPPRESS,
    )
    e.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="leave out matching images")
    e.add_argument(
        "--group-by-folder",
        action="store_true",
        help="DATA/<source>/<class>/...: report every metric per source (first folder level)",
    )
    e.set_defaults(func=run_evaluate)

    c = sub.add_parser(
        "calibrate",
        help="write a calibrated copy of a model bundle (temperature fitted on labelled images)",
        description=(
            "Fit a temperature to MODEL_DIR's scores on labelled images the model was not trained on "
            "(DATA, in the forms train reads) and write the calibrated model to a NEW folder; "
            "the original is never changed."
        ),
    )
    c.add_argument("model", metavar="MODEL_DIR", help="the model bundle to calibrate")
    c.add_argument("data", metavar="DATA", help="labelled images: folder of class subfolders, or a CSV file")
    c.add_argument("--out", required=True, metavar="NEW_DIR", help="folder for the calibrated copy (must not exist)")
    c.add_argument("--class-map", metavar="MAP", help="rename classes to the model's: 'Viral Pneumonia=Pneumonia'")
    c.add_argument("--split", choices=("train", "val", "test"), help="only this declared split of DATA")
    c.add_argument(
        "--model-split",
        action="store_true",
        help="recreate the train/validation split MODEL_DIR was trained with (its model.json: fractions, seed): fit "
        "the temperature and the OOD threshold on its validation images, the OOD class means on its training images",
    )
    c.add_argument("--version", metavar="X.Y.Z", help="version of the calibrated copy (default: the original's)")
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--cache-dir", metavar="DIR", help="keep decoded images here to start later runs faster")
    c.set_defaults(func=run_calibrate)


def add_lung_arguments(ap: argparse.ArgumentParser) -> None:
    """The arguments of ``main.py train-lungs`` (and ``python -m training.lungs``)."""
    ap.add_argument("--data", required=True, help="folder with manifest.csv, images and masks (../shared/data/lungs)")
    ap.add_argument("--out", required=True, metavar="MODEL_DIR", help="lung model folder to write")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing model at --out")
    ap.add_argument("--epochs", type=int, default=30, help="maximum epochs; early stopping may end sooner (30)")
    ap.add_argument("--patience", type=int, default=8, help="epochs without a better validation Dice before stopping")
    ap.add_argument("--size", type=int, default=160, help="input side in px (160)")
    ap.add_argument("--base-filters", type=int, default=8)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--learning-rate", "--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", metavar="DIR", help="folder for decoded arrays (outside the repository)")
    ap.add_argument("--patients", help="CSV with source_path and patient_id columns (../shared/data/cxr/manifest.csv)")
    ap.add_argument(
        "--force-test",
        nargs="*",
        default=None,
        help="image stems to hold out in the test split (default: the app's sample images)",
    )
    ap.add_argument("--max-pairs", type=int, help="use a random subset (smoke runs)")


def _error(text: str, code: int = EXIT_ERROR) -> int:
    print(f"error: {text}", file=sys.stderr)
    return code


def _error_code(exc: BaseException) -> int:
    from inference.bundle import BundleError

    return EXIT_BAD_MODEL if isinstance(exc, BundleError) else EXIT_ERROR


class _CancelOnInterrupt:
    """First Ctrl+C sets the cancel flag (the run stops at the next batch); a second one aborts."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: Any = None

    def __enter__(self) -> threading.Event:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self.event

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        print("\nCancelling at the next batch (Ctrl+C again to abort now)...", file=sys.stderr, flush=True)

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _expected_errors() -> tuple[type[BaseException], ...]:
    from inference.bundle import BundleError
    from inference.image import ImageLoadError
    from training.calibration import CalibrationError
    from training.evaluate import EvaluationError
    from training.samples import DatasetError
    from training.train import TrainingError

    return (DatasetError, TrainingError, BundleError, EvaluationError, CalibrationError, ImageLoadError, OSError)


def run_train(args: argparse.Namespace) -> int:
    from training.datasets import parse_class_map
    from training.progress import ConsoleProgress, TrainingCancelled
    from training.train import TrainConfig, train

    if args.distributed:
        return _run_local_cluster(args.distributed)
    try:
        config = TrainConfig(
            data=Path(args.data),
            out_dir=Path(args.out),
            arch=args.arch,
            epochs=args.epochs,
            image_size=args.image_size,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            init=args.init,
            class_map=parse_class_map(args.class_map) or None,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            val_sources=tuple(s for s in args.val_sources.split(",") if s.strip()),
            crop=args.crop,
            crop_margin=args.crop_margin,
            seed=args.seed,
            clahe=args.clahe,
            augment=not args.no_augment,
            horizontal_flip=args.flip,
            balance=args.balance,
            patience=args.patience,
            cache_dir=args.cache_dir,
            name=args.name,
            version=args.version,
            overwrite=args.overwrite,
            csv_kind=args.csv_kind,
            exclude=tuple(args.exclude),
            use_split=not args.ignore_split,
            frontal_only=not args.all_views,
            description=args.description,
            head_epochs=args.head_epochs,
            unfreeze_blocks=args.unfreeze_blocks,
            calibrate=not args.no_calibrate,
            command="python main.py " + shlex.join(sys.argv[1:]),
            backup_dir=args.backup_dir,
        )
        progress = ConsoleProgress()
        with _CancelOnInterrupt() as cancel:
            result = train(config, progress=progress, cancel=cancel)
    except TrainingCancelled:
        print("Training cancelled; no model was written and any existing model is unchanged.", file=sys.stderr)
        _backup_note(args.backup_dir)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print("Training aborted; any existing model is unchanged.", file=sys.stderr)
        _backup_note(args.backup_dir)
        return EXIT_CANCELLED
    except _expected_errors() as exc:
        return _error(str(exc), _error_code(exc))
    from training.distributed import read_tf_config
    from training.evaluate import accuracy_line

    task = read_tf_config()
    if task is not None and not task.is_chief:
        print(f"Worker {task.index} finished ({result.epochs_run} epochs); the chief (worker 0) writes the model.")
        return 0
    print(f"Model written to {result.bundle_dir} ({result.epochs_run} epochs, {result.seconds:.0f} s).")
    for split, m in result.metrics.items():
        print(f"{split}: {accuracy_line(m)}; macro-F1 {(m['macro_f1'] or 0):.3f}")
    print(f"Report: {result.bundle_dir / 'report' / 'report.md'}")
    return 0


def _run_local_cluster(spec: str) -> int:
    """``--distributed local:N``: this same command, less the option, as N workers here."""
    from training.distributed import DistributedError, launch_local, parse_local

    try:
        n = parse_local(spec)
    except DistributedError as exc:
        return _error(str(exc))
    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--distributed":
            skip = True
        elif not arg.startswith("--distributed="):
            argv.append(arg)
    return launch_local(n, argv)


def _backup_note(backup_dir: str | None) -> None:
    """After a stopped run: where its finished epochs are kept, if anywhere."""
    folder = Path(backup_dir).expanduser() if backup_dir else None
    if folder and ((folder / "training_metadata.json").is_file() or any(folder.glob("worker-*/ckpt-*.index"))):
        print(f"The finished epochs are kept in {backup_dir}; run the same command to resume.", file=sys.stderr)


def run_train_lungs(args: argparse.Namespace) -> int:
    from training.lungs import config_from_args, train_lungs
    from training.progress import ConsoleProgress, TrainingCancelled

    command = getattr(args, "command_line", None) or "python main.py " + shlex.join(sys.argv[1:])
    try:
        config = config_from_args(args, command)
        with _CancelOnInterrupt() as cancel:
            result = train_lungs(config, progress=ConsoleProgress(), cancel=cancel)
    except TrainingCancelled:
        print("Training cancelled; no model was written and any existing model is unchanged.", file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print("Training aborted; any existing model is unchanged.", file=sys.stderr)
        return EXIT_CANCELLED
    except _expected_errors() as exc:
        return _error(str(exc), _error_code(exc))
    training = result["card"]["training"]
    print(f"Lung model written to {result['out']} ({training['epochs_run']} epochs, best {training['best_epoch']}).")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from inference.paths import bundled_model_dir
    from training.datasets import parse_class_map
    from training.evaluate import evaluate_bundle, metrics_markdown
    from training.progress import ConsoleProgress, TrainingCancelled

    model_dir = Path(args.model) if args.model else bundled_model_dir()
    if args.json and Path(args.json).exists() and not args.overwrite:  # before the work, not after it
        return _error(f"{args.json} already exists; choose another name or pass --overwrite")
    try:
        with _CancelOnInterrupt() as cancel:
            result = evaluate_bundle(
                model_dir,
                Path(args.data),
                class_map=parse_class_map(args.class_map) or None,
                batch_size=args.batch_size,
                progress=ConsoleProgress(),
                split=args.split,
                csv_kind=args.csv_kind,
                exclude=tuple(args.exclude),
                cache_dir=args.cache_dir,
                cancel=cancel,
                report_dir=args.report_dir,
                group_by_folder=args.group_by_folder,
            )
        if args.json:
            out = Path(args.json)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.part")  # then renamed: never a half-written file
            tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, out)
    except (TrainingCancelled, KeyboardInterrupt):
        print("Evaluation cancelled.", file=sys.stderr)
        return EXIT_CANCELLED
    except _expected_errors() as exc:
        return _error(str(exc), _error_code(exc))
    print(metrics_markdown(result, heading=f"{result['model']['name']} on {args.data}"))
    if result["skipped"]:
        print(f"Skipped {len(result['skipped'])} unreadable files (listed in the JSON).")
    if args.json:
        print(f"Metrics written to {args.json}")
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    from inference.bundle import read_bundle_info
    from training.calibration import calibrate_bundle
    from training.datasets import parse_class_map
    from training.progress import ConsoleProgress, TrainingCancelled

    try:
        with _CancelOnInterrupt() as cancel:
            out, record = calibrate_bundle(
                Path(args.model),
                Path(args.data),
                Path(args.out),
                class_map=parse_class_map(args.class_map) or None,
                split=args.split,
                batch_size=args.batch_size,
                cache_dir=args.cache_dir,
                progress=ConsoleProgress(),
                cancel=cancel,
                model_split=args.model_split,
                version=args.version,
            )
    except (TrainingCancelled, KeyboardInterrupt):
        print("Calibration cancelled; nothing was written.", file=sys.stderr)
        return EXIT_CANCELLED
    except _expected_errors() as exc:
        return _error(str(exc))
    print(
        f"Calibrated model written to {out}: temperature {record['temperature']:.3f} "
        f"(fitted on {record['fitted_on']}); NLL {record['nll_before']:.3f} -> {record['nll_after']:.3f}, "
        f"ECE {record['ece_before']:.3f} -> {record['ece_after']:.3f} on those images."
    )
    ood = read_bundle_info(out).ood
    if ood:
        print(
            f"Out-of-distribution scorer: threshold {ood['threshold']:.2f} (the {ood['quantile']:.0%} quantile); "
            f"it turns away {ood['validation_abstain_rate']:.1%} of the {ood['n_val']} threshold images."
        )
    else:
        print("No out-of-distribution scorer: the network has no final Dense layer to read features from.")
    return 0
