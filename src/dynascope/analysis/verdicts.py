"""Verdicts on a paper's claims from per-seed numbers, and whether a run learned at all.

A claim compares two arms (e.g. LP-FT vs FT) or one arm with a reference value, in a stated direction. Over
seeds the effect is the mean difference with its standard error: paired by seed where both arms ran the same
seeds (the seed's shared data order and initialisation cancel), unpaired (Welch) otherwise. The verdict is

- ``holds``: at least ``min_seeds`` seeds and the effect exceeds ``z`` standard errors in the claimed direction;
- ``contradicted``: the same, in the other direction;
- ``inconclusive``: otherwise, with the reason (too few seeds, or the effect within ``z`` standard errors).

A run *learned* when its accuracy beats the majority-class baseline of the same split by a margin that shrinks
with the split size: ``max(min_margin, z·sqrt(p(1 − p)/n))``, p the baseline's accuracy, i.e. ``z`` binomial
standard errors of a constant predictor on ``n`` examples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import numpy as np

Z_DEFAULT = 2.0
MIN_SEEDS = 3
MIN_MARGIN = 0.02


class Verdict(StrEnum):
    """The three outcomes of a claim."""

    HOLDS = "holds"
    CONTRADICTED = "contradicted"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Effect:
    """A claim's effect over seeds: mean difference (arm − reference), its standard error, and the verdict.

    ``direction`` is +1 when the claim says the effect is positive, −1 when it says negative.
    """

    effect: float
    se: float
    n: int
    paired: bool
    direction: int
    verdict: Verdict
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (the verdict as its string)."""
        return {**asdict(self), "verdict": self.verdict.value}


def _check_direction(direction: int) -> int:
    if direction not in (1, -1):
        raise ValueError(f"direction: expected +1 or -1, found {direction!r}")
    return direction


def _judge(effect: float, se: float, n: int, paired: bool, direction: int, z: float, min_seeds: int) -> Effect:
    if n < min_seeds:
        return Effect(effect, se, n, paired, direction, Verdict.INCONCLUSIVE, f"{n} seed(s), fewer than {min_seeds}")
    signed = direction * effect
    if signed > z * se:
        verdict, reason = Verdict.HOLDS, f"effect beyond {z:g} SE in the claimed direction"
    elif signed < -z * se:
        verdict, reason = Verdict.CONTRADICTED, f"effect beyond {z:g} SE against the claimed direction"
    else:
        verdict, reason = Verdict.INCONCLUSIVE, f"effect within {z:g} SE of zero"
    return Effect(effect, se, n, paired, direction, verdict, reason)


def _clean(values: Mapping[int, float]) -> dict[int, float]:
    out = {int(k): float(v) for k, v in values.items()}
    bad = sorted(k for k, v in out.items() if not math.isfinite(v))
    if bad:
        raise ValueError(f"per-seed values: expected finite numbers, found non-finite values at seeds {bad}")
    return out


def _sem(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan


def effect_vs_reference(
    values: Mapping[int, float],
    reference: float,
    direction: int,
    *,
    z: float = Z_DEFAULT,
    min_seeds: int = MIN_SEEDS,
) -> Effect:
    """Claim "``values`` exceed (direction +1) or fall below (−1) ``reference``", over seeds."""
    direction = _check_direction(direction)
    diffs = [v - reference for v in _clean(values).values()]
    effect = float(np.mean(diffs)) if diffs else math.nan
    return _judge(effect, _sem(diffs), len(diffs), False, direction, z, min_seeds)


def compare_arms(
    arm: Mapping[int, float],
    reference: Mapping[int, float],
    direction: int,
    *,
    z: float = Z_DEFAULT,
    min_seeds: int = MIN_SEEDS,
) -> Effect:
    """Claim "``arm`` is above (direction +1) or below (−1) ``reference``", both given per seed.

    With at least ``min_seeds`` seeds in common the differences are paired by seed (unshared seeds are dropped);
    otherwise the arms are compared unpaired with Welch's standard error and the smaller arm's size as ``n``.
    """
    direction = _check_direction(direction)
    a, b = _clean(arm), _clean(reference)
    shared = sorted(set(a) & set(b))
    if len(shared) >= min_seeds:
        diffs = [a[s] - b[s] for s in shared]
        return _judge(float(np.mean(diffs)), _sem(diffs), len(diffs), True, direction, z, min_seeds)
    if not a or not b:
        return _judge(math.nan, math.nan, 0, False, direction, z, min_seeds)
    effect = float(np.mean(list(a.values())) - np.mean(list(b.values())))
    se = math.sqrt(_sem(list(a.values())) ** 2 + _sem(list(b.values())) ** 2)
    return _judge(effect, se, min(len(a), len(b)), False, direction, z, min_seeds)


def majority_baseline(train_labels: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Accuracy on ``labels`` of the constant predictor that always says the training set's majority class."""
    train = np.asarray(train_labels)
    split = np.asarray(labels)
    if train.ndim != 1 or train.size == 0:
        raise ValueError(f"train_labels: expected a non-empty 1-D array, found shape {train.shape}")
    if split.ndim != 1 or split.size == 0:
        raise ValueError(f"labels: expected a non-empty 1-D array, found shape {split.shape}")
    values, counts = np.unique(train, return_counts=True)
    majority = values[np.argmax(counts)]  # ties: the smallest label, as np.unique sorts
    return float(np.mean(split == majority))


def learning_margin(baseline: float, n: int, *, z: float = Z_DEFAULT, min_margin: float = MIN_MARGIN) -> float:
    """How far above ``baseline`` an accuracy on ``n`` examples must be to count as learned."""
    if not 0.0 <= baseline <= 1.0:
        raise ValueError(f"baseline: expected an accuracy in [0, 1], found {baseline!r}")
    if n < 1:
        raise ValueError(f"n: expected at least 1 example, found {n!r}")
    return max(min_margin, z * math.sqrt(baseline * (1.0 - baseline) / n))


def learned(
    accuracy: float, baseline: float, n: int, *, z: float = Z_DEFAULT, min_margin: float = MIN_MARGIN
) -> bool:
    """Whether ``accuracy`` on ``n`` examples beats the majority ``baseline`` by :func:`learning_margin`."""
    return accuracy > baseline + learning_margin(baseline, n, z=z, min_margin=min_margin)
