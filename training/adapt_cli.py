"""``main.py adapt``: fine-tune the model to this hospital's films, behind a gate (issue 16).

Exit codes: 0 the gate passed and the adapted model was written to ``--out``; 3
(:data:`training.adapt.EXIT_REFUSED`) the gate refused it (nothing written unless
``--keep-refused``); 1 bad input; 2 a model folder that cannot be used; 130 cancelled (Ctrl+C:
nothing written, the parent untouched).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from training.adapt import DEFAULT_ADAPT_BLOCKS, DEFAULT_TOLERANCE, EXIT_REFUSED, MAX_REHEARSAL, MIN_CHECK_FRACTION

__all__ = ["register", "run_adapt", "default_parent"]


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser(
        "adapt",
        help="fine-tune the model on this hospital's labelled films, with a gate against getting worse",
        description=(
            "Adapt a model to local films: the reader's verdicts (--reads) and/or DATA (a folder of class "
            "subfolders or a CSV, as train reads them). A patient-level share (--check-fraction, at least 20%) "
            "is held out to check; the new model is written only if it is better there by more than its 95% "
            "bootstrap interval and not worse than --tolerance on the reference images. Exit codes: 0 accepted "
            f"and written, {EXIT_REFUSED} refused by the gate, 1 bad input, 2 unusable model, 130 cancelled."
        ),
    )
    a.add_argument("data", nargs="?", metavar="DATA", help="labelled films: folder of class subfolders, or a CSV")
    a.add_argument("--reads", action="store_true", help="use the reader's verdicts recorded in the viewer")
    a.add_argument("--reads-dir", metavar="DIR", help="the verdict store (default: <user data>/reads)")
    a.add_argument("--init", metavar="MODEL_DIR", help="the model to adapt (default: the active model, else bundled)")
    a.add_argument(
        "--out",
        metavar="NEW_DIR",
        help="folder for the adapted model (must not exist; default: beside your models, named after the new version)",
    )
    a.add_argument(
        "--reference",
        metavar="REF",
        help="labelled images to check for forgetting (default: the "
        "parent's own validation images when its training data is still where it was)",
    )
    a.add_argument("--class-map", metavar="MAP", help="rename classes to the model's: 'Viral Pneumonia=Pneumonia'")
    a.add_argument("--check-fraction", type=float, default=0.25, help="share held out to check (0.25; >= 0.2)")
    a.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"allowed loss in balanced accuracy on the reference images ({DEFAULT_TOLERANCE})",
    )
    a.add_argument("--steps", type=int, default=300, help="training steps of the classification layer (300)")
    a.add_argument(
        "--adapt-blocks",
        type=int,
        default=DEFAULT_ADAPT_BLOCKS,
        metavar="N",
        help="also fine-tune the network's last N blocks and head convolution (BatchNorm frozen), rehearsing "
        f"images of the parent's training distribution; 0: the classification layer only ({DEFAULT_ADAPT_BLOCKS})",
    )
    a.add_argument(
        "--rehearsal",
        metavar="REH",
        help=f"labelled images of the parent's training distribution to rehearse with --adapt-blocks (at most "
        f"{MAX_REHEARSAL} used; default: the parent's own training images when its training data is still "
        "where it was, else the classification layer only)",
    )
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--cache-dir", metavar="DIR", help="keep decoded images here to start later runs faster")
    a.add_argument("--version", metavar="V", help="version of the adapted model (default: <parent>-adapted.N)")
    a.add_argument("--keep-refused", action="store_true", help="write the model even when the gate refuses it")
    a.add_argument("--json", metavar="OUT.json", help="write the full report (gate, figures, lineage) as JSON")
    a.set_defaults(func=run_adapt)


def default_parent() -> Path:
    """The active model (as the viewer last recorded it), else the bundled one."""
    from inference.activations import active_model
    from inference.paths import bundled_model_dir

    return active_model() or bundled_model_dir()


def run_adapt(args: argparse.Namespace) -> int:
    from inference.bundle import read_bundle_info
    from inference.paths import user_data_dir, user_models_dir
    from training.adapt import AdaptConfig, AdaptError, adapt, adapted_version
    from training.cli import EXIT_CANCELLED, _CancelOnInterrupt, _error, _error_code, _expected_errors
    from training.datasets import parse_class_map
    from training.progress import ConsoleProgress, TrainingCancelled

    if not args.reads and not args.data:
        return _error("nothing to adapt to: give --reads and/or DATA")
    if args.adapt_blocks < 0:
        return _error("--adapt-blocks cannot be negative")
    if args.check_fraction < MIN_CHECK_FRACTION:
        return _error(f"--check-fraction must be at least {MIN_CHECK_FRACTION}")
    if args.json and Path(args.json).exists():
        return _error(f"{args.json} already exists; choose another name")
    parent = Path(args.init).expanduser() if args.init else default_parent()
    try:
        info = read_bundle_info(parent)
        out = (
            Path(args.out)
            if args.out
            else user_models_dir() / f"{info.name}-{args.version or adapted_version(info.version)}"
        )
        config = AdaptConfig(
            parent=parent,
            out_dir=out,
            reads_dir=(Path(args.reads_dir) if args.reads_dir else user_data_dir() / "reads") if args.reads else None,
            data=args.data,
            class_map=parse_class_map(args.class_map) or None,
            reference=args.reference,
            check_fraction=args.check_fraction,
            tolerance=args.tolerance,
            epochs=args.steps,
            adapt_blocks=args.adapt_blocks,
            rehearsal=args.rehearsal,
            seed=args.seed,
            cache_dir=args.cache_dir,
            version=args.version,
            keep_refused=args.keep_refused,
        )
        with _CancelOnInterrupt() as cancel:
            result = adapt(config, progress=ConsoleProgress(), cancel=cancel)
    except (TrainingCancelled, KeyboardInterrupt):
        print("Adaptation cancelled; no model was written and the parent is unchanged.", flush=True)
        return EXIT_CANCELLED
    except (AdaptError, *_expected_errors()) as exc:
        return _error(str(exc), _error_code(exc))
    if args.json:
        target = Path(args.json)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        from training.adapt import _json_default

        tmp.write_text(json.dumps(result.report, indent=2, default=_json_default) + "\n", encoding="utf-8")
        os.replace(tmp, target)
    print("Gate: " + ("PASSED" if result.accepted else "REFUSED"))
    for reason in result.reasons:
        print(f"  {reason}")
    if result.bundle_dir is not None:
        print(
            f"Adapted model written to {result.bundle_dir}" + ("" if result.accepted else " (refused; kept as asked)")
        )
    else:
        print("No model was written.")
    return 0 if result.accepted else EXIT_REFUSED
