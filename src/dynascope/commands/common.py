"""Flags shared by several commands, so every command spells them the same way, and their config-file reader."""

from __future__ import annotations

import argparse

from dynascope.configfile import load_config_file
from dynascope.device import DEVICE_HELP, PRECISIONS
from dynascope.validation import check_int

__all__ = ["add_common", "add_device", "add_precision", "load_config_file", "set_threads"]


def set_threads(threads: int | None) -> None:
    """Apply ``--threads`` (torch's intra-op CPU threads) when given; it must be a positive integer."""
    if threads is not None:
        import torch

        torch.set_num_threads(check_int(threads, "--threads"))


def add_device(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """Add ``--device`` (``default`` None: the config's own, which is ``auto`` unless a --config file sets it)."""
    parser.add_argument("--device", default=default, help=f"where to compute: {DEVICE_HELP}; never a silent fallback")


def add_precision(parser: argparse.ArgumentParser) -> None:
    """Add ``--precision`` (autocast of the training steps; recorded in config.json)."""
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="training precision: fp32 (default, no autocast), bf16 or fp16 (autocast; fp16 with a gradient scaler)",
    )


def add_common(parser: argparse.ArgumentParser, *, data: bool = True, out: bool = True) -> None:
    """Add ``--data-dir``, ``--out``, ``--overwrite`` and ``--quiet`` as a command needs them."""
    if data:
        parser.add_argument(
            "--data-dir",
            default=None,
            help="data root (default: $DYNASCOPE_DATA)",
        )
    if out:
        parser.add_argument("--out", required=True, help="output directory of the run")
        parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
