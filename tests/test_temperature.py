"""Temperature scaling: recovers a known temperature, stays positive on adversarial inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dynascope.analysis.calibration import calibration_metrics, negative_log_likelihood, softmax
from dynascope.analysis.temperature import (
    TemperatureConfig,
    TemperatureScaler,
    apply_temperature,
    calibrate_splits,
    fit_temperature,
)
from dynascope.errors import ConfigError


def _sample(n: int, c: int, t_true: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); returned logits are t_true·z, so the calibrating T is t_true."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c)) * 2.0
    labels = (softmax(z).cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return z * t_true, labels


@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_lbfgs_recovers_known_temperature(t_true: float) -> None:
    logits, labels = _sample(4000, 5, t_true, seed=int(t_true * 10))
    fit = fit_temperature(logits, labels)
    assert fit.converged and not fit.at_bound
    assert abs(fit.grad) <= fit.config.grad_tol
    assert fit.temperature == pytest.approx(t_true, rel=0.05)
    assert fit.nll_after <= fit.nll_before
    # A stationary point: moving T either way does not lower the NLL.
    best = negative_log_likelihood(logits / fit.temperature, labels)
    for factor in (0.99, 1.01):
        assert negative_log_likelihood(logits / (fit.temperature * factor), labels) >= best


def test_adam_protocol_recovers_known_temperature_and_agrees_with_lbfgs() -> None:
    logits, labels = _sample(1500, 4, 2.0, seed=7)
    adam = fit_temperature(logits, labels, method="adam")
    lbfgs = fit_temperature(logits, labels, method="lbfgs")
    assert adam.method == "adam" and adam.converged and adam.iterations < 100_000
    assert adam.temperature == pytest.approx(2.0, rel=0.06)
    assert adam.temperature == pytest.approx(lbfgs.temperature, rel=1e-3)


@pytest.mark.parametrize("method", ["lbfgs", "adam"])
def test_temperature_stays_positive_on_adversarial_inputs(method: str) -> None:
    cfg = TemperatureConfig(method=method, max_steps=3000)
    labels = np.arange(30) % 3
    confident_right = np.eye(3)[labels] * 5.0
    confident_wrong = np.eye(3)[(labels + 1) % 3] * 5.0
    huge_right = np.eye(3)[labels] * 1e6
    constant = np.zeros((30, 3))
    for logits in (confident_right, confident_wrong, huge_right, constant):
        fit = fit_temperature(logits, labels, cfg)
        assert fit.temperature > 0 and math.isfinite(fit.temperature)
        assert cfg.t_min <= fit.temperature <= cfg.t_max
        assert fit.nll_after <= fit.nll_before + 1e-12
        assert np.all(np.isfinite(apply_temperature(logits, fit.temperature)))
    wrong = fit_temperature(confident_wrong, labels, cfg)
    if method == "lbfgs":  # all wrong: the NLL falls towards log C as T grows, so T ends on its upper bound
        assert wrong.at_bound and wrong.converged and wrong.temperature == pytest.approx(cfg.t_max)
        assert wrong.nll_after == pytest.approx(math.log(3), rel=1e-3)
    else:  # Adam moves log T by about lr per step, so 3000 steps stop short of the bound, unconverged
        assert wrong.temperature > 5.0 and not wrong.converged and wrong.iterations == 3000
    assert fit_temperature(constant, labels, cfg).temperature == 1.0
    assert fit_temperature(confident_right, labels, cfg).temperature < 1.0


def test_scaler_is_sklearn_like() -> None:
    logits, labels = _sample(800, 3, 1.7, seed=3)
    scaler = TemperatureScaler()
    with pytest.raises(ConfigError, match="not fitted"):
        scaler.transform(logits)
    assert scaler.fit(logits, labels) is scaler
    np.testing.assert_allclose(scaler.transform(logits), logits / scaler.temperature_)
    np.testing.assert_allclose(scaler.predict_proba(logits).sum(axis=1), 1.0)
    assert scaler.fit_ is not None and scaler.fit_.to_dict()["method"] == "lbfgs"
    assert TemperatureScaler(config=TemperatureConfig(method="adam")).config.method == "adam"
    assert TemperatureScaler("lbfgs", TemperatureConfig(method="adam")).config.method == "lbfgs"


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="method"):
        TemperatureConfig(method="sgd")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="patience"):
        TemperatureConfig(patience=0)
    with pytest.raises(ConfigError, match="t_max"):
        TemperatureConfig(t_min=2.0, t_max=1.0)
    with pytest.raises(ConfigError):
        apply_temperature(np.zeros((2, 2)), 0.0)


def test_calibrate_splits_reports_before_after_and_improvement() -> None:
    val = _sample(1000, 3, 3.0, seed=11)
    test = _sample(1000, 3, 3.0, seed=12)
    ood = _sample(500, 3, 1.0, seed=13)
    out = calibrate_splits(val, {"test": test, "ood.shift": ood}, n_bins=10)
    assert out["temperature"] == pytest.approx(3.0, rel=0.1)
    assert out["binning"]["n_bins"] == 10
    t = out["splits"]["test"]
    expected_after = calibration_metrics(test[0] / out["temperature"], test[1], n_bins=10)
    assert t["after"]["ece"] == pytest.approx(expected_after.ece)
    assert t["before"]["nll"] == pytest.approx(negative_log_likelihood(*test))
    for key, value in t["improvement"].items():
        assert value == pytest.approx(t["before"][key] - t["after"][key])
    assert t["after"]["nll"] < t["before"]["nll"] and t["after"]["ece"] < t["before"]["ece"]
    assert set(out["splits"]) == {"test", "ood.shift"}
