"""Verdicts over seeds and the learned flag, on synthetic seed tables with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dynascope.analysis.verdicts import (
    Verdict,
    compare_arms,
    effect_vs_reference,
    learned,
    learning_margin,
    majority_baseline,
)


def test_paired_verdicts_give_each_of_the_three_outcomes() -> None:
    ft = {1: 0.70, 2: 0.80, 3: 0.75}
    better = {1: 0.72, 2: 0.83, 3: 0.76}  # +0.02, +0.03, +0.01: SE 0.0058, effect 0.02
    result = compare_arms(better, ft, direction=1)
    assert result.paired and result.n == 3
    assert result.effect == pytest.approx(0.02) and result.se == pytest.approx(0.01 / math.sqrt(3))
    assert result.verdict is Verdict.HOLDS
    assert compare_arms(better, ft, direction=-1).verdict is Verdict.CONTRADICTED
    noisy = {1: 0.75, 2: 0.78, 3: 0.76}  # +0.05, -0.02, +0.01: mean 0.0133, SE 0.0203
    assert compare_arms(noisy, ft, direction=1).verdict is Verdict.INCONCLUSIVE


def test_pairing_removes_the_seed_to_seed_spread() -> None:
    ft = {1: 0.60, 2: 0.90, 3: 0.75}
    lpft = {s: v + 0.01 for s, v in ft.items()}
    assert compare_arms(lpft, ft, direction=1).verdict is Verdict.HOLDS  # unpaired, the 0.15 spread would hide it
    unpaired = compare_arms({11: 0.61, 12: 0.91, 13: 0.76}, ft, direction=1)
    assert not unpaired.paired and unpaired.verdict is Verdict.INCONCLUSIVE


def test_too_few_seeds_is_inconclusive_whatever_the_effect() -> None:
    result = compare_arms({1: 0.9, 2: 0.9}, {1: 0.1, 2: 0.1}, direction=1)
    assert result.verdict is Verdict.INCONCLUSIVE and "fewer than 3" in result.reason
    assert compare_arms({}, {1: 0.5}, direction=1).verdict is Verdict.INCONCLUSIVE


def test_effect_against_a_reference_value() -> None:
    ratios = {1: 3.0, 2: 4.0, 3: 5.0}  # head-norm growth after LP vs 1
    assert effect_vs_reference(ratios, 1.0, direction=1).verdict is Verdict.HOLDS
    assert effect_vs_reference(ratios, 1.0, direction=-1).verdict is Verdict.CONTRADICTED
    assert effect_vs_reference({1: 0.5, 2: 1.5, 3: 1.1}, 1.0, direction=1).verdict is Verdict.INCONCLUSIVE
    assert effect_vs_reference(ratios, 1.0, direction=1).to_dict()["verdict"] == "holds"


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="direction: expected"):
        compare_arms({1: 0.5}, {1: 0.5}, direction=0)
    with pytest.raises(ValueError, match="seeds \\[2\\]"):
        effect_vs_reference({1: 0.5, 2: math.nan}, 0.0, direction=1)


def test_learned_is_false_for_a_constant_predictor_and_true_for_a_good_one() -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 2, 500)
    test = rng.integers(0, 2, 400)
    baseline = majority_baseline(train, test)
    majority = np.bincount(train).argmax()
    constant = float(np.mean(test == majority))
    assert constant == baseline
    assert not learned(constant, baseline, len(test))
    good = np.where(rng.random(400) < 0.8, test, 1 - test)
    assert learned(float(np.mean(good == test)), baseline, len(test))


def test_the_margin_accounts_for_the_split_size() -> None:
    assert learning_margin(0.5, 56) == pytest.approx(2 * 0.5 / math.sqrt(56))  # CB-sized split: 13 points
    assert learning_margin(0.5, 100_000) == 0.02  # a large split falls back to the stated minimum
    assert learned(0.70, 0.5, 56) and not learned(0.60, 0.5, 56)
    with pytest.raises(ValueError, match=r"found 1\.5"):
        learning_margin(1.5, 10)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        majority_baseline([], [0, 1])
