"""Calibration metrics against torchmetrics and against direct formulas written as loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from dynascope.analysis.calibration import (
    CalibrationAccumulator,
    adaptive_calibration_error,
    bin_index,
    brier_paper,
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_diagram,
    softmax,
)
from dynascope.errors import ConfigError, DataError


def _torchmetrics(probs: np.ndarray, labels: np.ndarray, n_bins: int, norm: str) -> float:
    metric = MulticlassCalibrationError(num_classes=probs.shape[1], n_bins=n_bins, norm=norm)
    return float(metric(torch.as_tensor(probs), torch.as_tensor(labels)))


def _probs_with_confidence(conf: np.ndarray, labels_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """float32 probability rows whose maximum is ``conf`` at ``labels_pred`` (rest spread evenly)."""
    p = np.repeat(((1.0 - conf) / (n_classes - 1))[:, None], n_classes, axis=1)
    p[np.arange(conf.size), labels_pred] = conf
    return p.astype(np.float32)


def _brute_ece_mce(conf: np.ndarray, correct: np.ndarray, n_bins: int, torchmetrics_rule: bool) -> tuple:
    """Bins written out by hand: ours (lower < c <= upper) or torchmetrics' (lower <= c < upper, 1.0 apart)."""
    edges = [b / n_bins for b in range(n_bins + 1)]
    groups: list[list[int]] = []
    for b in range(n_bins):
        lo, hi = edges[b], edges[b + 1]
        if torchmetrics_rule:
            members = [i for i, c in enumerate(conf) if lo <= c < hi]
        else:
            members = [i for i, c in enumerate(conf) if lo < c <= hi or (b == 0 and c == 0.0)]
        groups.append(members)
    if torchmetrics_rule:
        groups.append([i for i, c in enumerate(conf) if c == 1.0])
    ece, mce = 0.0, 0.0
    for g in groups:
        if g:
            gap = abs(np.mean(conf[g]) - np.mean(correct[g]))
            ece += len(g) / len(conf) * gap
            mce = max(mce, gap)
    return ece, mce


@pytest.mark.parametrize("n_bins", [15, 7])
def test_ece_mce_equal_torchmetrics_on_random_logits(n_bins: int) -> None:
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(800, 4)) * 2.5).astype(np.float32)
    labels = rng.integers(0, 4, size=800)
    probs = torch.softmax(torch.as_tensor(logits), dim=1).numpy()
    for norm, ours in (("l1", expected_calibration_error), ("max", maximum_calibration_error)):
        expected = _torchmetrics(probs, labels, n_bins, norm)
        assert ours(probs, labels, n_bins=n_bins, from_logits=False) == pytest.approx(expected, abs=1e-6)
        assert ours(logits, labels, n_bins=n_bins) == pytest.approx(expected, abs=1e-5)


def test_ece_mce_equal_torchmetrics_with_confidences_of_exactly_one() -> None:
    # Confidences of exactly 1.0 and none elsewhere in the last bin: torchmetrics' extra "1.0" bin holds
    # the same examples as our last bin, so the two agree.
    rng = np.random.default_rng(1)
    n, c = 600, 3
    conf = rng.uniform(0.4, 0.9, size=n)
    conf[rng.random(n) < 0.3] = 1.0
    pred = rng.integers(0, c, size=n)
    labels = np.where(rng.random(n) < 0.7, pred, (pred + 1) % c)
    probs = _probs_with_confidence(conf, pred, c)
    assert np.sum(probs.max(axis=1) == 1.0) > 100
    for norm, ours in (("l1", expected_calibration_error), ("max", maximum_calibration_error)):
        assert ours(probs, labels, from_logits=False) == pytest.approx(_torchmetrics(probs, labels, 15, norm), abs=1e-6)


def test_edge_convention_differs_from_torchmetrics_exactly_as_documented() -> None:
    # With 4 bins the edges 0.25, 0.5, 0.75 and 1.0 are exact in binary floating point.
    n_bins, c = 4, 3
    conf = np.array([0.5, 0.5, 0.75, 0.75, 0.8, 0.9, 1.0, 1.0, 0.4, 0.6])
    pred = np.zeros(conf.size, dtype=int)
    labels = np.array([0, 1, 0, 0, 1, 0, 0, 1, 1, 0])
    probs = _probs_with_confidence(conf, pred, c)
    correct = (labels == 0).astype(float)
    np.testing.assert_array_equal(bin_index(conf, n_bins), [1, 1, 2, 2, 3, 3, 3, 3, 1, 2])
    ours = _brute_ece_mce(conf, correct, n_bins, torchmetrics_rule=False)
    theirs = _brute_ece_mce(conf, correct, n_bins, torchmetrics_rule=True)
    assert expected_calibration_error(probs, labels, n_bins, from_logits=False) == pytest.approx(ours[0])
    assert maximum_calibration_error(probs, labels, n_bins, from_logits=False) == pytest.approx(ours[1])
    assert _torchmetrics(probs, labels, n_bins, "l1") == pytest.approx(theirs[0], abs=1e-6)
    assert _torchmetrics(probs, labels, n_bins, "max") == pytest.approx(theirs[1], abs=1e-6)
    assert abs(ours[0] - theirs[0]) > 0.01


def test_bin_index_edges() -> None:
    np.testing.assert_array_equal(bin_index(np.array([0.0, 1e-9, 0.25, 0.2500001, 0.5, 1.0]), 4), [0, 0, 0, 1, 1, 3])


def test_reliability_data_counts_and_means() -> None:
    probs = _probs_with_confidence(np.array([0.4, 0.45, 0.95, 1.0]), np.array([0, 1, 2, 0]), 3)
    labels = np.array([0, 0, 2, 0])
    rel = reliability_diagram(probs, labels, n_bins=2, from_logits=False)
    np.testing.assert_array_equal(rel.count, [2, 2])
    np.testing.assert_allclose(rel.confidence, [0.425, 0.975], rtol=1e-6)
    np.testing.assert_allclose(rel.accuracy, [0.5, 1.0])
    d = rel.to_dict()
    assert d["binning"]["scheme"] == "equal-width" and "lower < conf <= upper" in d["binning"]["rule"]
    empty = reliability_diagram(probs, labels, n_bins=10, from_logits=False).to_dict()
    assert empty["count"][0] == 0 and empty["accuracy"][0] is None


def test_brier_and_nll_match_direct_formulas() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(50, 5)) * 3
    labels = rng.integers(0, 5, size=50)
    brier_sum, nll_sum = 0.0, 0.0
    for i in range(50):
        exps = [math.exp(v) for v in logits[i]]
        total = sum(exps)
        for c in range(5):
            brier_sum += (exps[c] / total - (1.0 if c == labels[i] else 0.0)) ** 2
        nll_sum += -math.log(exps[labels[i]] / total)
    assert brier_score(logits, labels) == pytest.approx(brier_sum / 50, rel=1e-12)
    assert brier_paper(logits, labels) == pytest.approx(brier_sum / (50 * 5), rel=1e-12)
    assert negative_log_likelihood(logits, labels) == pytest.approx(nll_sum / 50, rel=1e-12)
    ref = torch.nn.functional.cross_entropy(torch.as_tensor(logits), torch.as_tensor(labels))
    assert negative_log_likelihood(logits, labels) == pytest.approx(float(ref), rel=1e-12)
    assert negative_log_likelihood(softmax(logits), labels, from_logits=False) == pytest.approx(nll_sum / 50)


def test_nll_is_exact_for_extreme_logits() -> None:
    logits = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]])
    assert negative_log_likelihood(logits, np.array([1, 1])) == pytest.approx(1000.0)


def test_adaptive_ece_uses_equal_mass_bins() -> None:
    conf = np.array([0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    pred = np.zeros(6, dtype=int)
    labels = np.array([1, 0, 0, 1, 0, 0])
    probs = _probs_with_confidence(conf, pred, 3)
    correct = (labels == 0).astype(float)
    expected = sum(abs(conf[g].mean() - correct[g].mean()) * 2 / 6 for g in (slice(0, 2), slice(2, 4), slice(4, 6)))
    assert adaptive_calibration_error(probs, labels, n_bins=3, from_logits=False) == pytest.approx(expected)


def test_accumulator_equals_functional() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(301, 3)) * 2
    labels = rng.integers(0, 3, size=301)
    acc = CalibrationAccumulator(n_bins=10)
    for start in range(0, 301, 64):
        acc.update(torch.as_tensor(logits[start : start + 64]), torch.as_tensor(labels[start : start + 64]))
    streamed = acc.compute().to_dict()
    whole = calibration_metrics(logits, labels, n_bins=10).to_dict()
    assert streamed == whole
    assert whole["ece"] == pytest.approx(expected_calibration_error(logits, labels, 10))
    assert whole["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    acc.reset()
    with pytest.raises(DataError):
        acc.compute()


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(DataError, match="labels in"):
        expected_calibration_error(np.zeros((3, 2)), np.array([0, 1, 2]))
    with pytest.raises(DataError, match="probabilities"):
        expected_calibration_error(np.full((2, 2), 2.0), np.array([0, 1]), from_logits=False)
    with pytest.raises(ConfigError):
        expected_calibration_error(np.zeros((2, 2)), np.array([0, 1]), n_bins=0)
