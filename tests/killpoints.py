"""Run ``dynascope`` in a child process that SIGKILLs itself at a chosen write: a real kill, at a known point.

``python tests/killpoints.py NAME COUNT WHEN -- ARGS...`` runs ``dynascope ARGS`` and, on the COUNT-th atomic write
of a file called NAME, kills itself with SIGKILL either ``after`` the file is in place or ``before`` its
temporary sibling is renamed (which leaves a ``.NAME.*.tmp`` behind, as a kill during the final writes would),
or ``raise`` an ``OSError`` there instead (a failing disk). Under ``torchrun`` (``torchrun ... tests/killpoints.py
...``) only the rank named by ``DYNASCOPE_KILL_RANK`` is armed (default: every rank).
No production code knows about this: the child wraps ``runio._atomic_write``, through which every result goes.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path


def arm(name: str, count: int, when: str) -> None:
    """Make the ``count``-th write of a file called ``name`` the last thing this process does."""
    from dynascope import runio

    rank = os.environ.get("DYNASCOPE_KILL_RANK")
    if rank is not None and os.environ.get("RANK", "0") != rank:
        return
    real = runio._atomic_write
    seen = {"n": 0}

    def dying_write(path: Path, write: Callable[[Path], None]) -> Path:
        path = Path(path)
        if path.name == name:
            seen["n"] += 1
            if seen["n"] == count:
                if when == "raise":
                    raise OSError(f"injected failure writing {path.name}")
                if when == "before":
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                    os.close(fd)
                    write(Path(tmp))
                else:
                    real(path, write)
                os.kill(os.getpid(), signal.SIGKILL)
        return real(path, write)

    runio._atomic_write = dying_write


if __name__ == "__main__":
    name, count, when, sep, *args = sys.argv[1:]
    assert sep == "--" and when in ("before", "after", "raise")
    arm(name, int(count), when)
    from dynascope.cli import main

    sys.exit(main(args))
