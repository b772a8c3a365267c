"""Kernel solvers on (N, C, N, C) kernels, scikit-learn style (``fit`` / ``predict`` / ``score``).

* :class:`KernelRowLogistic` is the paper's protocol (§3.6, ``solve_kernel`` of the published code): each
  kernel row K[(i, c), :] (N·C features) is one sample with binary target 1[y_i = c], fitted by
  ``LogisticRegressionCV(max_iter=10000, random_state=0)``; :meth:`KernelRowLogistic.paper_row_accuracy`
  is the binary accuracy over all (example, class) rows (the paper's kernel "Acc"), which is not a
  multiclass accuracy; :meth:`KernelRowLogistic.predict` also gives the per-example argmax over c.
* :class:`KernelRidge`: scores = K_eval α with α = (K + λI)⁺ Y (one-hot Y); λ = 0 is the pseudo-inverse,
  needed because F can be rank-deficient (rank N(C−1) for a multinomial LP head).
* :class:`KernelLogistic`: multinomial logistic regression with logits f = K α (+ bias), penalty
  (λ/2) αᵀKα, fitted by L-BFGS; proper multiclass argmax prediction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from scipy.optimize import minimize
from torch import Tensor

from dynascope.errors import ConfigError, NotFittedError


def _matrix(kernel: Tensor | np.ndarray, n_train: int | None = None, num_labels: int | None = None) -> np.ndarray:
    """(M, C, N, C) → float64 (M·C, N·C), validated against the training size and C."""
    k = np.asarray(kernel.detach().cpu().numpy() if isinstance(kernel, Tensor) else kernel, dtype=np.float64)
    if k.ndim != 4 or k.shape[1] != k.shape[3]:
        raise ConfigError(f"expected a kernel of shape (M, C, N, C), got {k.shape}")
    if n_train is not None and (k.shape[2] != n_train or k.shape[3] != num_labels):
        raise ConfigError(
            f"kernel columns must be the {n_train} training examples × {num_labels} classes, got {k.shape}"
        )
    return k.reshape(k.shape[0] * k.shape[1], k.shape[2] * k.shape[3])


def _labels(y: np.ndarray | Tensor, n: int, num_labels: int) -> np.ndarray:
    y = np.asarray(y).astype(np.int64)
    if y.shape != (n,) or y.min() < 0 or y.max() >= num_labels:
        found = f"shape {y.shape}" + (f", range [{y.min()}, {y.max()}]" if y.size else "")
        raise ConfigError(f"expected {n} labels in [0, {num_labels}), got {found}")
    return y


class _KernelEstimator(ABC):
    """Shared validation and argmax prediction; subclasses give per-example class scores."""

    num_labels: int
    n_train: int

    def _fit_shapes(self, kernel: Tensor | np.ndarray, y: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
        shape = tuple(kernel.shape)
        if len(shape) != 4 or shape[0] != shape[2]:
            raise ConfigError(f"fit needs a square train×train kernel (N, C, N, C), got {shape}")
        self.n_train, self.num_labels = shape[2], shape[3]
        return _matrix(kernel), _labels(y, shape[0], shape[1])

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_train"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet: call fit(train_kernel, labels) before using it"
            )

    def _columns(self, kernel: Tensor | np.ndarray) -> np.ndarray:
        """An eval×train kernel as a matrix, checked against the fitted training set."""
        self._check_fitted()
        return _matrix(kernel, self.n_train, self.num_labels)

    @abstractmethod
    def decision_function(self, kernel: Tensor | np.ndarray) -> np.ndarray:
        """Per-example class scores [M, C]."""

    def predict(self, kernel: Tensor | np.ndarray) -> np.ndarray:
        """argmax over classes per example [M]."""
        return self.decision_function(kernel).argmax(axis=1)

    def score(self, kernel: Tensor | np.ndarray, y: np.ndarray | Tensor) -> float:
        """Multiclass accuracy of ``predict``."""
        self._check_fitted()
        y = _labels(y, kernel.shape[0], self.num_labels)
        return float((self.predict(kernel) == y).mean())


class KernelRowLogistic(_KernelEstimator):
    """The paper's row-wise binary logistic regression on kernel rows (see module docstring)."""

    def __init__(self, max_iter: int = 10000, random_state: int = 0) -> None:
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, kernel: Tensor | np.ndarray, y: np.ndarray | Tensor) -> KernelRowLogistic:
        """Fit on the train×train kernel and train labels."""
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold

        k, y = self._fit_shapes(kernel, y)
        targets = self._row_targets(y)
        smallest = int(np.bincount(targets, minlength=2).min())  # N positive rows: one per training example
        if smallest < 2:
            raise ConfigError(f"the kernel-row logistic solver needs at least 2 training examples, got {len(y)}")
        self.model_ = LogisticRegressionCV(
            cv=StratifiedKFold(min(5, smallest)),  # the paper's 5 folds, fewer only for a tiny training set
            max_iter=self.max_iter,
            random_state=self.random_state,
            use_legacy_attributes=False,
        )
        self.model_.fit(k, targets)
        return self

    def _row_targets(self, y: np.ndarray) -> np.ndarray:
        return (y[:, None] == np.arange(self.num_labels)[None, :]).reshape(-1).astype(np.int64)

    def decision_function(self, kernel: Tensor | np.ndarray) -> np.ndarray:
        """Row decision values reshaped to [M, C] (argmax over c gives a multiclass prediction)."""
        k = self._columns(kernel)
        return self.model_.decision_function(k).reshape(-1, self.num_labels)

    def paper_row_accuracy(self, kernel: Tensor | np.ndarray, y: np.ndarray | Tensor) -> float:
        """Binary accuracy over all (example, class) rows: the paper's kernel "Acc"."""
        k = self._columns(kernel)
        y = _labels(y, kernel.shape[0], self.num_labels)
        return float(self.model_.score(k, self._row_targets(y)))


class KernelRidge(_KernelEstimator):
    """Kernel ridge regression on one-hot targets; ``ridge=0`` uses the pseudo-inverse."""

    def __init__(self, ridge: float = 0.0, rcond: float = 1e-10) -> None:
        if ridge < 0:
            raise ConfigError(f"ridge must be >= 0, got {ridge}")
        self.ridge = ridge
        self.rcond = rcond

    def fit(self, kernel: Tensor | np.ndarray, y: np.ndarray | Tensor) -> KernelRidge:
        """α = (K + λI)⁺ Y."""
        k, y = self._fit_shapes(kernel, y)
        targets = np.eye(self.num_labels)[y].reshape(-1)
        system = k + self.ridge * np.eye(k.shape[0])
        self.alpha_ = np.linalg.pinv(system, rcond=self.rcond, hermitian=True) @ targets
        return self

    def decision_function(self, kernel: Tensor | np.ndarray) -> np.ndarray:
        """K α per example [M, C]."""
        return (self._columns(kernel) @ self.alpha_).reshape(-1, self.num_labels)


class KernelLogistic(_KernelEstimator):
    """Multinomial kernel logistic regression: logits K α + b, loss CE + (λ/2) αᵀKα, L-BFGS."""

    def __init__(self, ridge: float = 1e-3, max_iter: int = 500, fit_bias: bool = True) -> None:
        if ridge < 0:
            raise ConfigError(f"ridge must be >= 0, got {ridge}")
        self.ridge = ridge
        self.max_iter = max_iter
        self.fit_bias = fit_bias

    def fit(self, kernel: Tensor | np.ndarray, y: np.ndarray | Tensor) -> KernelLogistic:
        """Minimise the mean cross-entropy plus the RKHS penalty over (α, b)."""
        k, y = self._fit_shapes(kernel, y)
        n, c = self.n_train, self.num_labels
        scale = float(np.abs(np.diag(k)).mean()) or 1.0
        k = k / scale  # a well-conditioned problem for L-BFGS; α is rescaled back below
        onehot = np.eye(c)[y]

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            alpha, bias = theta[: n * c], theta[n * c :]
            ka = k @ alpha
            logits = ka.reshape(n, c) + (bias if self.fit_bias else 0.0)
            logits = logits - logits.max(axis=1, keepdims=True)
            logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            value = -(onehot * logp).sum() / n + 0.5 * self.ridge * alpha @ ka
            resid = (np.exp(logp) - onehot) / n
            grad_alpha = k.T @ resid.reshape(-1) + self.ridge * ka
            grad_bias = resid.sum(axis=0) if self.fit_bias else np.zeros(c)
            return float(value), np.concatenate([grad_alpha, grad_bias])

        result = minimize(loss, np.zeros(n * c + c), jac=True, method="L-BFGS-B", options={"maxiter": self.max_iter})
        self.alpha_ = result.x[: n * c] / scale
        self.bias_ = result.x[n * c :] if self.fit_bias else np.zeros(c)
        self.converged_ = bool(result.success)
        return self

    def decision_function(self, kernel: Tensor | np.ndarray) -> np.ndarray:
        """Logits K α + b per example [M, C]."""
        return (self._columns(kernel) @ self.alpha_).reshape(-1, self.num_labels) + self.bias_
