"""``main.py models``: which model is active, where it came from, and one step back (issue 16).

The same record as the viewer's model manager (:mod:`inference.activations`), so a site that
runs headless (``adapt`` then ``predict``) can switch and roll back without the GUI, and the
viewer starts with whatever was chosen here. Reading ``model.json`` only: no TensorFlow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inference import activations
from inference.bundle import BundleError, BundleInfo, read_bundle_info
from inference.paths import bundled_model_dir

__all__ = ["register", "run_models"]


def register(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser(
        "models",
        help="show the active model and its lineage; activate another or roll back one step",
        description=(
            "Without options: the active model (the one the viewer opens with and adapt's --init "
            "default), what it was fine-tuned from, and what a roll back would restore. Exit codes: 0 done, "
            "1 nothing to roll back to, 2 a folder that is not a usable model."
        ),
    )
    action = m.add_mutually_exclusive_group()
    action.add_argument("--activate", metavar="MODEL_DIR", help="make this model folder the active one")
    action.add_argument("--roll-back", action="store_true", help="re-activate the model the active one replaced")
    m.set_defaults(func=run_models)


def _current() -> Path:
    return activations.active_model() or bundled_model_dir()


def _describe(path: Path) -> str:
    try:
        info = read_bundle_info(path)
    except BundleError as exc:
        return f"{path} (unreadable: {exc})"
    return f"{info.display_name} ({path})" + "".join(f"\n  {line}" for line in _lineage(info))


def _lineage(info: BundleInfo) -> list[str]:
    step = (info.training or {}).get("adaptation")
    if not isinstance(step, dict):
        return []
    parent = step.get("parent") or {}
    return [
        f"fine-tuned from {parent.get('name', '?')} {parent.get('version', '?')} on {step.get('local_films', '?')} "
        f"local films, {step.get('date', 'date not recorded')}"
    ]


def run_models(args: argparse.Namespace) -> int:
    if args.activate:
        target = Path(args.activate).expanduser().resolve()
        try:
            info = read_bundle_info(target)
        except BundleError as exc:
            print(f"Not activated: {exc}", file=sys.stderr)
            return 2
        previous = _current()
        activations.record_activation(target, previous)
        print(f"Active model: {info.display_name} ({target}); it replaced {previous}, kept for a roll back.")
        return 0
    if args.roll_back:
        previous = activations.roll_back(_current())
        if previous is None:
            print("No earlier model to roll back to.", file=sys.stderr)
            return 1
        print(f"Rolled back to {_describe(previous)}")
        return 0
    print(f"Active model: {_describe(_current())}")
    previous = activations.predecessor(_current())
    print(f"A roll back would restore: {_describe(previous)}" if previous else "No earlier model to roll back to.")
    return 0
