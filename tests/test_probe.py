"""Linear probing: the binary ±½ mapping, multinomial heads and the gradient-descent protocol."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from dynascope.errors import ConfigError, DataError
from dynascope.train.probe import ProbeSettings, cv_folds, fit_linear_probe


def blobs(n: int, classes: int, dim: int = 10, seed: int = 0, spread: float = 1.5):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * spread
    y = np.arange(n) % classes
    return centers[y] + rng.normal(size=(n, dim)), y


def test_binary_mapping_reproduces_the_fitted_logistic_model() -> None:
    x, y = blobs(300, 2, spread=0.5)
    result = fit_linear_probe(x, y, 2, ProbeSettings(protocol="fixed", C=0.3), seed=0)
    reference = LogisticRegression(C=0.3, l1_ratio=0.0, max_iter=5000, tol=1e-4, random_state=0).fit(x, y)
    logits = x @ result.weight.T + result.bias
    assert np.array_equal(logits.argmax(1), reference.predict(x))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert np.allclose(probs, reference.predict_proba(x), atol=1e-10)
    assert np.allclose(result.weight[0], -result.weight[1])


def test_cv_protocol_multiclass() -> None:
    x, y = blobs(240, 3)
    result = fit_linear_probe(x, y, 3, ProbeSettings(), seed=0)
    assert result.weight.shape == (3, 10) and result.bias.shape == (3,)
    assert result.strength in np.logspace(-4, 4, 10)
    assert result.train_accuracy > 0.9
    # scikit-learn's multinomial coefficients sum to zero over classes (the NTK notes rely on this).
    assert np.allclose(result.weight.sum(0), 0, atol=1e-8)


def test_gd_protocol_grows_the_head_norm_on_separable_data() -> None:
    x, y = blobs(120, 3, spread=3.0)
    init = (np.full((3, 10), 0.01), np.zeros(3))
    result = fit_linear_probe(x, y, 3, ProbeSettings(protocol="gd", gd_steps=300, gd_lr=0.5), init=init)
    traj = result.norm_trajectory
    assert len(traj) == 301 and traj[0] == pytest.approx(np.linalg.norm(init[0]))
    assert traj[-1] > 5 * traj[0] and traj[-1] == pytest.approx(result.norm)
    assert result.train_accuracy == 1.0


def test_absent_class_is_never_predicted() -> None:
    x, y = blobs(90, 2)
    result = fit_linear_probe(x, y, 3, ProbeSettings(protocol="fixed"))
    assert (x @ result.weight.T + result.bias).argmax(1).max() < 2


def test_invalid_inputs() -> None:
    with pytest.raises(ConfigError, match="protocol"):
        ProbeSettings(protocol="svm")
    with pytest.raises(ConfigError, match="two classes"):
        fit_linear_probe(np.zeros((4, 2)), np.zeros(4, dtype=int), 2)
    with pytest.raises(DataError, match=r"expected labels in \[0, 3\), found values in \[0, 5\]"):
        fit_linear_probe(np.zeros((4, 2)), np.array([0, 1, 2, 5]), 3)


def test_cv_folds_shrink_to_the_smallest_class_with_a_note(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dynascope.progress._QUIET", False)
    x, y = blobs(4, 2, spread=3.0)  # two examples per class: 5-fold CV is impossible, 2-fold works
    result = fit_linear_probe(x, y, 2, ProbeSettings(), split="train")
    assert result.strength in np.logspace(-4, 4, 10)
    note = capsys.readouterr().err
    assert "class 0 has only 2 examples in the train split (4 rows)" in note and "uses 2 folds instead of 5" in note
    assert cv_folds(np.array([0] * 7 + [1] * 3), 5) == 3
    assert "class 1 has only 3 examples in the training split (10 rows)" in capsys.readouterr().err
    assert cv_folds(np.array([0, 1] * 10), 5) == 5 and not capsys.readouterr().err


def test_cv_with_a_class_of_one_example_names_the_split_and_size() -> None:
    x, y = blobs(5, 2)
    y = np.array([0, 1, 1, 1, 1])
    with pytest.raises(ConfigError, match=r"train split \(5 rows\) needs at least 2 examples.*class 0 has 1"):
        fit_linear_probe(x, y, 2, ProbeSettings(), split="train")
    result = fit_linear_probe(x, y, 2, ProbeSettings(protocol="fixed"))  # no CV: fine
    assert result.weight.shape == (2, 10)
