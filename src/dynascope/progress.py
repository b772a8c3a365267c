"""Progress bars that a single switch silences (``--quiet`` on the CLI, ``DYNASCOPE_QUIET=1``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_QUIET = os.environ.get("DYNASCOPE_QUIET", "") not in ("", "0")


def set_quiet(quiet: bool) -> None:
    """Silence (or re-enable) every progress bar and ``say`` line."""
    global _QUIET
    _QUIET = quiet


def is_quiet() -> bool:
    """Whether progress output is silenced."""
    return _QUIET


def progress(
    iterable: Iterable[T], desc: str = "", total: int | None = None, leave: bool = False
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr unless quiet."""
    return iter(
        tqdm(
            iterable, desc=desc, total=total, leave=leave, disable=_QUIET, file=sys.stderr, dynamic_ncols=True
        )
    )


def say(message: str) -> None:
    """Print a status line on stderr unless quiet."""
    if not _QUIET:
        print(message, file=sys.stderr, flush=True)
