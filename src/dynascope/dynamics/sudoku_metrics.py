"""Sudoku scores: board accuracy (every blank right) and blank-cell accuracy; givens are never scored."""

from __future__ import annotations

from typing import Any

import numpy as np

from dynascope.errors import DataError


def _as_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != 81:
        raise DataError(f"expected shape [N, 81], found {list(arr.shape)}", field=name)
    return arr


def _blank_hits(pred: Any, solutions: Any, puzzles: Any) -> tuple[np.ndarray, np.ndarray]:
    """(correct & blank, blank) bool masks [N, 81] after checking the three inputs agree in shape."""
    p, s, q = _as_numpy(pred, "pred"), _as_numpy(solutions, "solutions"), _as_numpy(puzzles, "puzzles")
    if not p.shape == s.shape == q.shape:
        raise DataError(f"shapes differ: pred {list(p.shape)}, solutions {list(s.shape)}, puzzles {list(q.shape)}")
    if p.shape[0] == 0:
        raise DataError("expected at least one board, found none", field="pred")
    blank = q == 0
    return (p == s) & blank, blank


def board_accuracy(pred: Any, solutions: Any, puzzles: Any) -> float:
    """Fraction of boards whose every blank cell is predicted correctly (givens are not scored).

    ``pred``, ``solutions`` and ``puzzles`` are [N, 81] digit arrays or tensors (pred and solutions 1..9,
    puzzles 0 = blank), e.g. ``pred = logits.argmax(-1) + 1``.
    """
    hit, blank = _blank_hits(pred, solutions, puzzles)
    return float(np.mean(np.all(hit == blank, axis=1)))


def cell_accuracy(pred: Any, solutions: Any, puzzles: Any) -> float:
    """Fraction of blank cells, pooled over all boards, predicted correctly (givens are not scored; 1.0 if
    there are no blanks)."""
    hit, blank = _blank_hits(pred, solutions, puzzles)
    total = int(blank.sum())
    return float(hit.sum() / total) if total else 1.0
