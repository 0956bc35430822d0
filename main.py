"""CXR Viewer: ``python main.py`` opens the viewer; subcommands do the same work headless.

Research use only, not for clinical diagnosis.
"""

from __future__ import annotations

import argparse
import sys

from inference import cli as inference_cli
from inference import models_cli
from training import adapt_cli, ensemble_cli
from training import cli as training_cli

DESCRIPTION = (
    "Chest X-ray viewer with a COVID-19 / Normal / Pneumonia classifier and Grad-CAM. "
    "Without a subcommand it opens the viewer. Research use only, not for clinical diagnosis."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description=DESCRIPTION)
    parser.add_argument("--open", nargs="+", default=[], metavar="FILE", help="files or folders to open in the viewer")
    parser.add_argument("--model", metavar="DIR", help="model folder for the viewer (default: the bundled model)")
    parser.add_argument(
        "--startup-time", action="store_true", help="print the time from start to the first painted window"
    )
    parser.add_argument(
        "--self-test", action="store_true", help="check the installation end to end and print a JSON summary"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="subcommands")
    inference_cli.register(sub)
    training_cli.register(sub)
    adapt_cli.register(sub)
    models_cli.register(sub)
    ensemble_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.self_test:
        from inference.selftest import run_self_test

        return run_self_test()
    if args.command:
        return int(args.func(args) or 0)
    from viewer.app import run_viewer

    return run_viewer(files=args.open, model_dir=args.model, startup_time=args.startup_time)


if __name__ == "__main__":
    sys.exit(main())
