"""Temperature scaling: one scalar T > 0 dividing the logits, fitted on held-out logits by NLL.

T is parametrised as T = exp(τ) with τ kept in [log T_min, log T_max] (default T in [1e-4, 1e4]), so
T is positive and finite whatever the data: all-correct confident logits push T to its lower bound,
all-wrong ones to its upper bound, constant logits leave T = 1. Two optimisers:

- ``"lbfgs"`` (default): SciPy's L-BFGS-B on τ with the exact gradient, in float64; converged means
  |dNLL/dτ| ≤ ``grad_tol`` at the end (or τ sits on a bound with the gradient pointing outwards).
- ``"adam"``: the paper's protocol (A.3.3) — Adam, lr 1e-3, up to 1e5 steps, early stopping when the
  NLL has not improved for ``patience`` = 10 steps; the best τ seen is returned. The paper steps T
  itself; here Adam steps τ = log T, which keeps T > 0 (near T = 1 the two step sizes agree).

Since f/T = (V/T)φ + b/T, scaling by T is the same as rescaling the head (V, b) by 1/T.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from dynascope.analysis.calibration import (
    DEFAULT_BINS,
    calibration_metrics,
    equal_width_binning,
    softmax,
    validate_scores,
)
from dynascope.errors import ConfigError, DataError
from dynascope.validation import to_numpy

Method = Literal["lbfgs", "adam"]
METRIC_KEYS = ("ece", "mce", "adaptive_ece", "brier", "brier_paper", "nll")


@dataclass(frozen=True)
class TemperatureConfig:
    """How to fit T; the defaults of the ``adam`` fields are the paper's protocol."""

    method: Method = "lbfgs"
    grad_tol: float = 1e-7
    max_iter: int = 200
    lr: float = 1e-3
    max_steps: int = 100_000
    patience: int = 10
    min_delta: float = 0.0
    t_min: float = 1e-4
    t_max: float = 1e4

    def __post_init__(self) -> None:
        if self.method not in ("lbfgs", "adam"):
            raise ConfigError(f"method must be 'lbfgs' or 'adam', found {self.method!r}")
        for name in ("grad_tol", "lr", "t_min"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a finite number > 0, found {value!r}")
        for name in ("max_iter", "max_steps", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, found {value!r}")
        if not (isinstance(self.min_delta, int | float) and self.min_delta >= 0):
            raise ConfigError(f"min_delta must be >= 0, found {self.min_delta!r}")
        if not (isinstance(self.t_max, int | float) and math.isfinite(self.t_max) and self.t_max > self.t_min):
            raise ConfigError(f"t_max must be finite and > t_min = {self.t_min}, found {self.t_max!r}")
        if not self.t_min <= 1.0 <= self.t_max:
            raise ConfigError(f"[t_min, t_max] must contain the starting value 1.0, found [{self.t_min}, {self.t_max}]")


@dataclass(frozen=True)
class TemperatureFit:
    """The fitted temperature and how the fit went."""

    temperature: float
    log_temperature: float
    method: str
    iterations: int
    converged: bool
    at_bound: bool
    grad: float
    nll_before: float
    nll_after: float
    n: int
    config: TemperatureConfig = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, config included."""
        return asdict(self)


def _nll_and_grad(tau: float, z: NDArray[np.float64], y: NDArray[np.int64]) -> tuple[float, float]:
    """Mean NLL of softmax(z·e^{−τ}) and its derivative in τ."""
    beta = math.exp(-tau)
    s = beta * z
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    norm = e.sum(axis=1)
    p = e / norm[:, None]
    rows = np.arange(y.size)
    nll = float(np.mean(np.log(norm) - s[rows, y]))
    dnll_dbeta = float(np.mean(np.sum(p * z, axis=1) - z[rows, y]))
    return nll, -beta * dnll_dbeta


def _fit_lbfgs(z: NDArray[np.float64], y: NDArray[np.int64], cfg: TemperatureConfig) -> tuple[float, int]:
    from scipy.optimize import minimize

    res = minimize(
        lambda t: _nll_and_grad(float(t[0]), z, y),
        x0=np.zeros(1),
        jac=True,
        method="L-BFGS-B",
        bounds=[(math.log(cfg.t_min), math.log(cfg.t_max))],
        options={"gtol": cfg.grad_tol, "ftol": 1e-15, "maxiter": cfg.max_iter},
    )
    return float(res.x[0]), int(res.nit)


def _fit_adam(z: NDArray[np.float64], y: NDArray[np.int64], cfg: TemperatureConfig) -> tuple[float, int, bool]:
    """Paper protocol; returns (best τ, steps taken, stopped early).

    Adam is written out for the single scalar τ with ``torch.optim.Adam``'s defaults (β₁ = 0.9,
    β₂ = 0.999, ε = 1e-8, bias correction) on the exact gradient; τ is clipped to its bounds.
    """
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    lo, hi = math.log(cfg.t_min), math.log(cfg.t_max)
    tau, m, v = 0.0, 0.0, 0.0
    best, best_tau, wait = math.inf, 0.0, 0
    for step in range(1, cfg.max_steps + 1):
        value, grad = _nll_and_grad(tau, z, y)
        if value < best - cfg.min_delta:
            best, best_tau, wait = value, tau, 0
        else:
            wait += 1
            if wait >= cfg.patience:
                return best_tau, step, True
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad * grad
        m_hat = m / (1 - beta1**step)
        v_hat = v / (1 - beta2**step)
        tau = min(max(tau - cfg.lr * m_hat / (math.sqrt(v_hat) + eps), lo), hi)
    return best_tau, cfg.max_steps, False


def fit_temperature(
    logits: ArrayLike, labels: ArrayLike, config: TemperatureConfig | None = None, **overrides: Any
) -> TemperatureFit:
    """Fit T minimising the mean NLL of softmax(logits / T) on (held-out) ``logits`` [N, C], ``labels`` [N].

    Keyword ``overrides`` replace fields of ``config`` (e.g. ``method="adam"``).
    """
    cfg = config or TemperatureConfig()
    if overrides:
        cfg = TemperatureConfig(**{**asdict(cfg), **overrides})
    z, y = validate_scores(logits, labels, from_logits=True)
    if y.size == 0:
        raise DataError("cannot fit a temperature on zero examples", field="labels")
    nll_before, _ = _nll_and_grad(0.0, z, y)
    if cfg.method == "lbfgs":
        tau, iterations = _fit_lbfgs(z, y, cfg)
        stopped_early = False
    else:
        tau, iterations, stopped_early = _fit_adam(z, y, cfg)
    nll_after, grad = _nll_and_grad(tau, z, y)
    lo, hi = math.log(cfg.t_min), math.log(cfg.t_max)
    at_bound = (tau <= lo + 1e-9 and grad >= 0) or (tau >= hi - 1e-9 and grad <= 0)
    converged = stopped_early if cfg.method == "adam" else (abs(grad) <= cfg.grad_tol or at_bound)
    return TemperatureFit(
        temperature=min(max(math.exp(tau), cfg.t_min), cfg.t_max),
        log_temperature=tau,
        method=cfg.method,
        iterations=iterations,
        converged=bool(converged),
        at_bound=bool(at_bound),
        grad=grad,
        nll_before=nll_before,
        nll_after=nll_after,
        n=int(y.size),
        config=cfg,
    )


def apply_temperature(logits: ArrayLike, temperature: float) -> NDArray[np.float64]:
    """``logits / T`` in float64."""
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ConfigError(f"temperature must be finite and > 0, found {temperature!r}")
    return np.asarray(to_numpy(logits), dtype=np.float64) / temperature


class TemperatureScaler:
    """Scikit-learn-style temperature scaling: ``fit(val_logits, val_labels)``, then ``transform``.

    ``method`` ("lbfgs" or "adam") overrides ``config.method`` when given. After ``fit``:
    ``temperature_`` (float) and ``fit_`` (``TemperatureFit``).
    """

    def __init__(self, method: Method | None = None, config: TemperatureConfig | None = None) -> None:
        cfg = config or TemperatureConfig()
        self.config = cfg if method is None else TemperatureConfig(**{**asdict(cfg), "method": method})
        self.fit_: TemperatureFit | None = None

    @property
    def temperature_(self) -> float:
        """The fitted T; raises if ``fit`` has not run."""
        if self.fit_ is None:
            raise ConfigError("TemperatureScaler is not fitted yet: call fit(logits, labels) first")
        return self.fit_.temperature

    def fit(self, logits: ArrayLike, labels: ArrayLike) -> TemperatureScaler:
        """Fit T on held-out logits and labels; returns self."""
        self.fit_ = fit_temperature(logits, labels, self.config)
        return self

    def transform(self, logits: ArrayLike) -> NDArray[np.float64]:
        """Scaled logits ``logits / T``."""
        return apply_temperature(logits, self.temperature_)

    def predict_proba(self, logits: ArrayLike) -> NDArray[np.float64]:
        """Calibrated probabilities softmax(logits / T)."""
        return softmax(self.transform(logits))


def calibrate_splits(
    val: tuple[ArrayLike, ArrayLike],
    splits: Mapping[str, tuple[ArrayLike, ArrayLike]],
    *,
    n_bins: int = DEFAULT_BINS,
    config: TemperatureConfig | None = None,
) -> dict[str, Any]:
    """Fit T on ``val`` = (logits, labels) and report every split's metrics before and after scaling.

    Returns a JSON-ready dict: ``temperature``, ``fit``, ``binning``, and ``splits[name]`` with
    ``before``/``after`` (``CalibrationMetrics.to_dict``) and ``improvement`` (before − after per metric).
    """
    fit = fit_temperature(*val, config)
    out_splits: dict[str, Any] = {}
    for name, (logits, labels) in splits.items():
        before = calibration_metrics(logits, labels, n_bins=n_bins).to_dict()
        after = calibration_metrics(apply_temperature(logits, fit.temperature), labels, n_bins=n_bins).to_dict()
        out_splits[name] = {
            "before": before,
            "after": after,
            "improvement": {k: before[k] - after[k] for k in METRIC_KEYS},
        }
    return {
        "temperature": fit.temperature,
        "fitted_on": "val",
        "fit": fit.to_dict(),
        "binning": equal_width_binning(n_bins).to_dict(),
        "splits": out_splits,
    }
