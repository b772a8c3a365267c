"""Callbacks through which library loops report progress, so that no library module draws or prints itself.

A long loop takes ``progress: Progress`` (wraps an iterable, e.g. a tqdm bar from
:func:`dynascope.progress.progress`) and ``log: Log`` (one status line, e.g. :func:`dynascope.progress.say`);
both default to doing nothing. The CLI passes the real ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

Progress = Callable[..., Iterable[Any]]
"""``progress(items, desc, total=None) -> items``: wraps a loop (a progress bar from the caller)."""

Log = Callable[[str], None]
"""``log(message)``: one status line."""


def silent(items: Iterable[T], desc: str = "", total: int | None = None) -> Iterable[T]:
    """The default :data:`Progress`: the items unchanged."""
    return items


def no_log(message: str) -> None:
    """The default :data:`Log`: nothing."""
