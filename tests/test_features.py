"""Feature-change metrics on hand-made point sets with known answers, and against brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from dynascope.analysis.features import (
    cosine_to_pre,
    feature_change_metrics,
    feature_shift,
    fisher_ratio,
    mean_pairwise_cosine,
    scatter_matrices,
    tsne_embedding,
    tsne_features_and_head,
)
from dynascope.errors import DataError


def test_shift_and_cosine_known_values() -> None:
    pre = np.array([[1.0, 0.0], [0.0, 2.0]])
    post = np.array([[2.0, 0.0], [0.0, -2.0]])
    assert feature_shift(post, pre) == pytest.approx((1.0 + 4.0) / 2)
    assert cosine_to_pre(post, pre) == pytest.approx((1.0 - 1.0) / 2)
    assert feature_shift(pre, pre) == 0.0
    assert cosine_to_pre(3.0 * pre, pre) == pytest.approx(1.0)


def test_shift_accepts_torch_tensors() -> None:
    pre = torch.zeros(3, 4)
    post = torch.ones(3, 4)
    assert feature_shift(post, pre) == pytest.approx(2.0)


def test_pairwise_cosine_known_values() -> None:
    pts = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert mean_pairwise_cosine(pts) == pytest.approx(math.sqrt(2) / 3)
    assert mean_pairwise_cosine(np.array([[1.0, 2.0], [2.0, 4.0], [0.5, 1.0]])) == pytest.approx(1.0)
    assert mean_pairwise_cosine(np.array([[1.0, 0.0], [-3.0, 0.0]])) == pytest.approx(-1.0)


def test_pairwise_cosine_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(17, 5)) + 0.7
    pairs = [
        x[i] @ x[j] / (np.linalg.norm(x[i]) * np.linalg.norm(x[j])) for i, j in itertools.permutations(range(len(x)), 2)
    ]
    assert mean_pairwise_cosine(x) == pytest.approx(np.mean(pairs), rel=1e-12)


def test_pairwise_cosine_needs_two_rows() -> None:
    with pytest.raises(DataError):
        mean_pairwise_cosine(np.ones((1, 3)))


def test_fisher_ratio_one_dimensional() -> None:
    a = 0.25
    x = np.array([[-1 - a], [-1 + a], [1 - a], [1 + a]])
    y = np.array([0, 0, 1, 1])
    assert fisher_ratio(x, y) == pytest.approx(1.0 / a**2)


def test_fisher_ratio_two_dimensional_full_rank() -> None:
    a, b = 0.5, 2.0
    pts, labels = [], []
    for c, centre in enumerate((-1.0, 1.0)):
        for s, t in itertools.product((-1, 1), repeat=2):
            pts.append([centre + s * a, t * b])
            labels.append(c)
    # S_W = diag(a², b²), S_B = diag(1, 0)  =>  tr(S_W⁻¹ S_B) = 1 / a²
    assert fisher_ratio(np.array(pts), np.array(labels)) == pytest.approx(1.0 / a**2)


def test_fisher_ratio_singular_within_scatter_uses_pseudo_inverse() -> None:
    # Classes differ only along x, where there is no within-class spread: S_W⁺ drops that direction.
    x = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    y = np.array([0, 0, 1, 1])
    assert fisher_ratio(x, y) == pytest.approx(0.0, abs=1e-12)
    # A ridge makes S_W invertible: S_W + rI = diag(r, 1 + r), S_B = diag(1, 0)  =>  1 / r.
    assert fisher_ratio(x, y, ridge=0.01) == pytest.approx(100.0)


def test_fisher_ratio_matches_brute_force_and_is_affine_invariant() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, size=60)
    x = rng.normal(size=(60, 4)) + y[:, None] * np.array([1.0, 0.5, 0.0, -0.3])
    mu = x.mean(axis=0)
    s_w = np.zeros((4, 4))
    s_b = np.zeros((4, 4))
    for i in range(60):
        d = x[i] - x[y == y[i]].mean(axis=0)
        s_w += np.outer(d, d) / 60
    for c in range(3):
        d = x[y == c].mean(axis=0) - mu
        s_b += np.sum(y == c) / 60 * np.outer(d, d)
    got_w, got_b = scatter_matrices(x, y)
    np.testing.assert_allclose(got_w, s_w, atol=1e-12)
    np.testing.assert_allclose(got_b, s_b, atol=1e-12)
    expected = np.trace(np.linalg.inv(s_w) @ s_b)
    assert fisher_ratio(x, y) == pytest.approx(expected, rel=1e-9)
    a = rng.normal(size=(4, 4)) + 3 * np.eye(4)
    assert fisher_ratio(x @ a.T + 5.0, y) == pytest.approx(expected, rel=1e-7)


def test_fisher_ratio_needs_two_classes() -> None:
    with pytest.raises(DataError):
        fisher_ratio(np.ones((4, 2)), np.zeros(4, dtype=int))


def test_feature_change_metrics_bundle() -> None:
    rng = np.random.default_rng(3)
    pre = rng.normal(size=(30, 6))
    y = rng.integers(0, 2, size=30)
    post = pre + 0.5
    fc = feature_change_metrics(pre, post, y)
    assert fc.n == 30
    assert fc.diff == pytest.approx(0.5 * math.sqrt(6))
    assert fc.cs_pre == pytest.approx(mean_pairwise_cosine(pre))
    assert fc.cs_post == pytest.approx(mean_pairwise_cosine(post))
    assert fc.fdr_pre == pytest.approx(fc.fdr_post)  # a translation keeps the ratio
    single = feature_change_metrics(pre, post, np.zeros(30, dtype=int))
    assert single.fdr_pre is None and single.to_dict()["fdr_post"] is None


def test_mismatched_shapes_are_rejected() -> None:
    with pytest.raises(DataError, match="same shape"):
        feature_shift(np.ones((3, 2)), np.ones((4, 2)))


def _knn_purity(coords: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    d = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :k]
    return float(np.mean(labels[nn] == labels[:, None]))


def test_tsne_is_seeded_and_keeps_clusters() -> None:
    rng = np.random.default_rng(4)
    y = np.repeat([0, 1], 30)
    x = rng.normal(size=(60, 80)) + 6.0 * y[:, None]
    a = tsne_embedding(x, seed=0)
    b = tsne_embedding(x, seed=0)
    assert a.shape == (60, 2)
    np.testing.assert_allclose(a, b)
    assert _knn_purity(a, y) > 0.95


def test_tsne_with_head_rows_returns_both_sets() -> None:
    rng = np.random.default_rng(5)
    phi = rng.normal(size=(25, 8))
    head = rng.normal(size=(3, 8))
    f, v = tsne_features_and_head(phi, head, seed=1)
    assert f.shape == (25, 2) and v.shape == (3, 2)
    assert np.all(np.isfinite(f)) and np.all(np.isfinite(v))
    with pytest.raises(DataError):
        tsne_features_and_head(phi, head[:, :4])
