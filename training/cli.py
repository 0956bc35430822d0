"""``main.py train`` and ``main.py evaluate``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model bundle from a folder or CSV of labelled images")
    p.add_argument("data", metavar="DATA")
    p.set_defaults(func=lambda args: 2)
    e = sub.add_parser("evaluate", help="evaluate a model bundle on labelled images")
    e.add_argument("data", metavar="DATA")
    e.set_defaults(func=lambda args: 2)
