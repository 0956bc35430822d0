"""``main.py ensemble``: merge model bundles into one ensemble bundle (see :mod:`training.ensemble`).

Exit codes: 0 written; 1 bad input (an existing --out, members that do not match, a missing
folder); 130 cancelled (nothing written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register", "run_ensemble"]


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "ensemble",
        help="merge model bundles into one ensemble bundle (mean of their calibrated scores)",
        description=(
            "Merge two or more model bundles with the same classes and preprocessing into a NEW bundle whose "
            "scores are the mean of the members' temperature-scaled logits and whose heat map is the mean of "
            "their Grad-CAM maps. It is an ordinary bundle: predict, evaluate, calibrate, adapt and the viewer "
            "use it as they use any other. With --data (the labelled images the members were trained on, "
            "split as they were) it gets its own temperature and out-of-distribution scorer, fitted on the "
            "members' validation images."
        ),
    )
    e.add_argument("models", nargs="+", metavar="MODEL_DIR", help="the member bundles (two or more)")
    e.add_argument("--out", required=True, metavar="NEW_DIR", help="folder for the ensemble (must not exist)")
    e.add_argument("--name", default="cxr-ensemble", help="model name (default: cxr-ensemble)")
    e.add_argument("--version", default="1.0.0", metavar="X.Y.Z", help="model version (default: 1.0.0)")
    e.add_argument("--description", default="", help="one paragraph for the model card")
    e.add_argument(
        "--data",
        metavar="DATA",
        help="the labelled images (CSV or folder) the members were trained on: calibrate the ensemble on their "
        "own validation split (temperature, OOD threshold) and their training split (OOD class means)",
    )
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--cache-dir", metavar="DIR", help="keep decoded images here to start later runs faster")
    e.set_defaults(func=run_ensemble)


def run_ensemble(args: argparse.Namespace) -> int:
    from training.cli import EXIT_CANCELLED, _CancelOnInterrupt, _error, _expected_errors
    from training.ensemble import EnsembleError, merge_bundles
    from training.progress import ConsoleProgress, TrainingCancelled

    out = Path(args.out)
    if out.exists():  # before TensorFlow loads anything: the answer is immediate
        return _error(f"{out} already exists; choose a new folder for the ensemble (nothing is overwritten).")
    missing = [m for m in args.models if not Path(m).is_dir()]
    if missing:
        return _error(f"no model folder at {', '.join(missing)}.")
    if len(args.models) < 2:
        return _error("an ensemble needs at least two model folders.")
    try:
        with _CancelOnInterrupt() as cancel:
            written = merge_bundles(
                args.models,
                out,
                args.name,
                args.version,
                args.description,
                data=args.data,
                cache_dir=args.cache_dir,
                batch_size=args.batch_size,
                progress=ConsoleProgress(),
                cancel=cancel,
            )
    except (TrainingCancelled, KeyboardInterrupt):
        print("Ensemble cancelled; nothing was written.", file=sys.stderr)
        return EXIT_CANCELLED
    except (EnsembleError, *_expected_errors()) as exc:
        return _error(str(exc))
    from inference.bundle import read_bundle_info

    info = read_bundle_info(written)
    members = info.training["ensemble"]["members"]
    print(
        f"Ensemble {info.display_name} written to {written}: mean of "
        + ", ".join(f"{m['name']} {m['version']}" for m in members)
        + f"; Grad-CAM layers {', '.join(info.cam_layers)}."
    )
    if info.calibration:
        cal = info.calibration
        print(
            f"Temperature {cal['temperature']:.3f} (fitted on {cal['fitted_on']}); "
            f"ECE {cal['ece_before']:.3f} -> {cal['ece_after']:.3f}."
        )
    if info.ood:
        print(f"Out-of-distribution threshold {info.ood['threshold']:.3f} ({info.ood['quantile']:.0%} quantile).")
    if not info.calibration:
        print("Not calibrated: run `main.py calibrate` on it with images none of its members was trained on.")
    return 0
