"""``dynascope reproduce STUDY``: one of the papers' studies end to end.

``reproduce lpft`` is defined here and calls :func:`dynascope.experiments.lpft.reproduce`; the dynamics
study's sub-parser comes from :func:`dynascope.commands.dynamics.register_reproduce`.
"""

from __future__ import annotations

import argparse

from dynascope.commands.common import add_common, add_device
from dynascope.commands.dynamics import register_reproduce as register_dynamics
from dynascope.experiments.lpft import PRESETS, reproduce, select_tasks
from dynascope.runio import REPORT, STUDY


def _lpft(args: argparse.Namespace) -> int:
    preset = PRESETS[args.preset]
    if args.tasks:
        preset = select_tasks(preset, [t.strip() for t in args.tasks.split(",") if t.strip()])
    reproduce(preset, args.out, model=args.model, data_dir=args.data_dir, docs=args.docs, device=args.device)
    print(STUDY.load(args.out, "checks"), end="")
    report = REPORT.path(STUDY.path(args.out, "report"), "report")
    print(f"report: {report}; results: {STUDY.path(args.out, 'results')}")
    return 0


def _register_lpft(studies: argparse._SubParsersAction) -> None:
    """``reproduce lpft``."""
    p = studies.add_parser("lpft", help="the LP-FT/NTK study: recipe grid, LP protocols, NTK, calibration, report")
    p.add_argument(
        "--preset",
        default="quick",
        choices=tuple(PRESETS),
        help="quick (2 CPU cores, ≤ 90 min), full (the paper's protocol) or base (full on mpnet-base; for a GPU)",
    )
    p.add_argument("--model", help="override the preset's model (quick/full: default; base: mpnet-base)")
    p.add_argument("--tasks", help="comma-separated subset of the preset's tasks (e.g. cb, to run one end to end)")
    p.add_argument("--docs", default=None, help="also copy report, checks and tables into this folder")
    add_device(p, default="auto")
    add_common(p, out=False)
    p.add_argument("--out", required=True, help="working directory of the study (runs are reused)")
    p.set_defaults(func=_lpft)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``reproduce`` with one sub-command per study."""
    parser = sub.add_parser("reproduce", help="run one of the papers' studies end to end and write its report")
    studies = parser.add_subparsers(dest="study", metavar="STUDY")
    _register_lpft(studies)
    register_dynamics(studies)
