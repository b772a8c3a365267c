"""``dynascope reproduce STUDY``: each study in ``dynascope.experiments`` registers its own sub-parser.

A study module exposes ``register_reproduce(subparsers)``; studies not installed yet are skipped.
"""

from __future__ import annotations

import argparse
import importlib

STUDIES = ("lpft", "dynamics")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``reproduce`` with one sub-command per available study."""
    parser = sub.add_parser(
        "reproduce", help="run one of the papers' studies end to end and write its report"
    )
    studies = parser.add_subparsers(dest="study", metavar="STUDY")
    for name in STUDIES:
        try:
            module = importlib.import_module(f"dynascope.experiments.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"dynascope.experiments.{name}":
                continue
            raise
        module.register_reproduce(studies)
