"""Learning rates chosen as the LP-FT paper chose them: a short grid on one seed, the best by validation metric.

The paper tuned the LP-FT and LP-LoRA learning rates on the validation set and took the FT/LoRA settings from a
grid search. :func:`select_lr` runs each point of a grid as an ordinary fine-tuning run (its own run directory,
so a finished point is reused by a later selection and an interrupted one resumes) and keeps the learning rate
with the best validation metric of the task (MCC where the task reports it, else accuracy); ties keep the smaller
learning rate. The choice, the grid and every point's score are returned as an :class:`LrChoice`, which the
final run records in its ``config.json``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynascope.errors import ConfigError

# Grids for a MiniLM/MPNet-sized encoder: three points a factor ~3 apart around the usual settings.
DEFAULT_LR_GRIDS: dict[str, tuple[float, ...]] = {
    "ft": (1e-5, 3e-5, 1e-4),
    "lp-ft": (1e-5, 3e-5, 1e-4),
    "lora": (3e-4, 1e-3, 3e-3),
    "lp-lora": (3e-4, 1e-3, 3e-3),
}


@dataclass(frozen=True)
class LrChoice:
    """The selected learning rate and the evidence for it."""

    chosen: float
    grid: tuple[float, ...]
    scores: dict[str, float]
    metric: str
    seed: int
    runs: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (scores and runs keyed by :func:`lr_key`)."""
        return dataclasses.asdict(self) | {"grid": list(self.grid)}


def lr_key(lr: float) -> str:
    """A grid point's name in records and directory names (``3e-05``)."""
    return f"{lr:g}"


def check_grid(grid: Sequence[float], where: str = "lr grid") -> tuple[float, ...]:
    """The grid as a sorted tuple of distinct positive floats, or a ``ConfigError`` saying what was found."""
    values = tuple(sorted({float(v) for v in grid}))
    if not values:
        raise ConfigError(f"{where}: expected at least one learning rate, found none")
    bad = [v for v in values if not (v > 0 and math.isfinite(v))]
    if bad:
        raise ConfigError(f"{where}: expected positive finite learning rates, found {bad}")
    return values


def best_point(scores: dict[str, float], grid: Sequence[float]) -> float:
    """The learning rate of ``grid`` with the highest score; ties keep the smaller one, NaN scores rank last."""

    def rank(lr: float) -> tuple[bool, float, float]:
        score = scores[lr_key(lr)]
        return (math.isnan(score), 0.0 if math.isnan(score) else -score, lr)

    return min(grid, key=rank)


def select_lr(
    grid: Sequence[float],
    seed: int,
    root: str | Path,
    run_point: Callable[[float, Path], dict[str, Any]],
) -> LrChoice:
    """Run ``run_point(lr, run_dir)`` for each grid point under ``root/lr-<lr>`` and keep the best.

    ``run_point`` returns the run's metrics (a finished point may be read back instead of rerun); the score of a
    point is its validation MCC when the task reports it, else its validation accuracy.
    """
    values = check_grid(grid)
    root = Path(root)
    scores: dict[str, float] = {}
    runs: dict[str, str] = {}
    metric = "accuracy"
    for lr in values:
        where = root / f"lr-{lr_key(lr)}"
        val = run_point(lr, where).get("val")
        if not isinstance(val, dict) or "accuracy" not in val:
            raise ConfigError(f"{where}: the run's metrics have no validation accuracy to select on")
        metric = "mcc" if "mcc" in val else "accuracy"
        scores[lr_key(lr)] = float(val[metric])
        runs[lr_key(lr)] = str(where)
    return LrChoice(best_point(scores, values), values, scores, metric, seed, runs)
