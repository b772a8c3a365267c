"""``dynascope sudoku build`` (easy/hard boards from the 17-clue pool) and ``dynascope sudoku info DIR``."""

from __future__ import annotations

import argparse

from dynascope.commands.common import add_common
from dynascope.data import resolve_data_dir
from dynascope.dynamics.sudoku import POOL_FILE, SPLIT_NAMES, SudokuBuildConfig, build_datasets
from dynascope.errors import DataError
from dynascope.progress import progress, say
from dynascope.runio import SUDOKU


def _build(args: argparse.Namespace) -> int:
    config = SudokuBuildConfig(
        seed=args.seed,
        easy_train=args.easy_train,
        easy_test=args.easy_test,
        hard_train=args.hard_train,
        hard_valid=args.hard_valid,
        hard_test=args.hard_test,
        boards_per_source=args.boards_per_source,
    )
    pool = resolve_data_dir(args.data_dir) / POOL_FILE
    summary = build_datasets(config, pool, args.out, overwrite=args.overwrite, progress=progress, log=say)
    counts = ", ".join(f"{name} {summary['splits'][name]['boards']}" for name in SPLIT_NAMES)
    print(f"{args.out}: {counts}")
    return 0


def _info(args: argparse.Namespace) -> int:
    if not SUDOKU.is_finished(args.dir):
        path = SUDOKU.path(args.dir, "summary")
        raise DataError(f"no finished Sudoku build here ({path.name} missing)", path=path)
    summary = SUDOKU.load(args.dir, "summary")
    pool = summary["pool"]
    print(f"pool {pool['file']} ({pool['puzzles']} puzzles, sha256 {pool['sha256'][:12]})")
    for name in SPLIT_NAMES:
        split = summary["splits"][name]
        print(
            f"{name:<11} {split['boards']:>7} boards  {split['distinct_sources']:>7} sources  "
            + (f"givens {split['givens_min']}-{split['givens_max']}" if split["boards"] else "empty")
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sudoku`` with its ``build`` and ``info`` sub-commands."""
    parser = sub.add_parser("sudoku", help="build and inspect the Sudoku boards (easy = ID, hard = OOD)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    build = actions.add_parser(
        "build",
        help="solve the 17-clue pool and write easy/hard splits",
        description="Builds easy_{train,test}.npz (31-42 givens) and hard_{train,valid,test}.npz (17-34 givens) "
        "from DATA_ROOT/sudoku/sudoku17.txt, each split from its own disjoint block of source puzzles.",
    )
    add_common(build)
    build.add_argument("--seed", type=int, default=0, help="seed for the pool shuffle and the boards (default 0)")
    defaults = SudokuBuildConfig()
    for name in SPLIT_NAMES:
        build.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=getattr(defaults, name),
            metavar="N",
            help=f"boards in {name} (default {getattr(defaults, name)})",
        )
    build.add_argument(
        "--boards-per-source",
        type=int,
        default=defaults.boards_per_source,
        metavar="K",
        help="boards derived from each source puzzle within a split (default 1: every board has its own source)",
    )
    build.set_defaults(func=_build)

    info = actions.add_parser("info", help="print the split sizes and givens ranges of a build")
    info.add_argument("dir", help="output directory of `dynascope sudoku build`")
    info.set_defaults(func=_info)
