"""The ``dynascope`` command: one entry point, thin.

Each command group lives in ``dynascope.commands.<group>`` and exposes ``register(subparsers)``;
a registered sub-parser sets ``func`` to a callable taking the parsed namespace and returning an
exit code. Errors raised on purpose (``DynascopeError``) and operating-system errors (a full disk, a denied
permission) are printed as one line without a traceback; anything else is a bug, reported as one "internal error"
line that asks for a report (``DYNASCOPE_DEBUG=1`` shows the traceback instead). Under ``torchrun`` every rank
runs the command in one process group (``dynascope.distributed``): rank 0 prints, each rank prints its own
errors prefixed with its rank, and a rank that fails exits non-zero, whereupon ``torchrun`` stops the others.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from dynascope import __version__, distributed
from dynascope.errors import ConfigError, DynascopeError
from dynascope.progress import set_quiet

COMMAND_GROUPS = ("finetune", "ntk", "analysis", "sudoku", "dynamics", "reproduce")
MULTI_PROCESS = ("train", "compare", "scale-head", "ntk", "dynamics train")
"""The commands that run as several processes under ``torchrun``; the others refuse to (one line, exit 2)."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (argparse prints the whole usage first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every command group that is installed."""
    parser = _Parser(
        prog="dynascope",
        description="Fine-tuning dynamics (LP-FT through the NTK) and inference dynamics of looped self-attention.",
    )
    parser.add_argument("--version", action="version", version=f"dynascope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        try:
            module = importlib.import_module(f"dynascope.commands.{group}")
        except ModuleNotFoundError as exc:
            if exc.name == f"dynascope.commands.{group}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "quiet", False):  # --quiet adds to DYNASCOPE_QUIET=1, never overrides it
        set_quiet(True)
    who = "dynascope"
    try:
        command = " ".join(filter(None, (args.command, getattr(args, "action", None))))
        if distributed.env_world_size() > 1 and command not in MULTI_PROCESS:
            raise ConfigError(
                f"'{command}' runs in one process: launch it without torchrun (several processes: "
                f"{', '.join(MULTI_PROCESS)})"
            )
        w = distributed.init_from_env()
        if w.distributed:
            who = f"dynascope (rank {w.rank} of {w.size})"
            if not w.is_main:  # rank 0 prints the results; the others only their errors
                set_quiet(True)
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        code = int(args.func(args) or 0)
        distributed.finish()
        return code
    except DynascopeError as exc:
        print(f"{who}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{who}: interrupted; finished checkpoints are kept and a rerun resumes", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"{who}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if os.environ.get("DYNASCOPE_DEBUG") == "1":
            raise
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        print(
            f"{who}: internal error: {type(exc).__name__}: {first} -- this is a bug in dynascope; please "
            "report it with the command line (DYNASCOPE_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
