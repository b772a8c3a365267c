"""Kernel solvers on separable toy kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynascope.errors import ConfigError
from dynascope.ntk.solve import KernelLogistic, KernelRidge, KernelRowLogistic


def toy(n_per_class: int, seed: int, c: int = 3, noise: float = 0.3) -> tuple[torch.Tensor, np.ndarray]:
    """Features clustered by class (separable), labels."""
    rng = np.random.default_rng(seed)
    centres = 3.0 * np.eye(c, 5)
    y = np.repeat(np.arange(c), n_per_class)
    rng.shuffle(y)
    return torch.tensor(centres[y] + noise * rng.standard_normal((len(y), 5))), y


def linear_kernel(phi_a: torch.Tensor, phi_b: torch.Tensor, c: int = 3) -> torch.Tensor:
    gram = phi_a @ phi_b.T + 1.0
    return gram[:, None, :, None] * torch.eye(c, dtype=torch.float64)[None, :, None, :]


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray]:
    phi_tr, y_tr = toy(8, seed=0)
    phi_te, y_te = toy(6, seed=1)
    return linear_kernel(phi_tr, phi_tr), y_tr, linear_kernel(phi_te, phi_tr), y_te


@pytest.mark.parametrize("solver", [KernelRidge(), KernelRidge(ridge=1.0), KernelLogistic(ridge=1e-3)])
def test_multiclass_solvers_separate_toy_classes(solver, data) -> None:
    k_tr, y_tr, k_te, y_te = data
    solver.fit(k_tr, y_tr)
    assert solver.score(k_tr, y_tr) == 1.0
    assert solver.score(k_te, y_te) == 1.0
    assert solver.decision_function(k_te).shape == (len(y_te), 3)


def test_ridge_interpolates_with_pseudo_inverse(data) -> None:
    k_tr, y_tr, _, _ = data
    n = len(y_tr)
    full_rank = k_tr + torch.eye(n * 3, dtype=torch.float64).reshape(n, 3, n, 3)
    scores = KernelRidge().fit(full_rank, y_tr).decision_function(full_rank)
    assert np.allclose(scores, np.eye(3)[y_tr], atol=1e-8)
    projected = KernelRidge().fit(k_tr, y_tr).decision_function(k_tr)  # rank 18 < 24: a projection of Y
    assert not np.allclose(projected, np.eye(3)[y_tr], atol=1e-3)


def test_solvers_fail_on_shuffled_labels(data) -> None:
    k_tr, y_tr, k_te, y_te = data
    rng = np.random.default_rng(5)
    noisy = KernelRidge(ridge=1.0).fit(k_tr, rng.permutation(y_tr))
    assert noisy.score(k_te, y_te) < 1.0


def test_paper_row_accuracy(data) -> None:
    k_tr, y_tr, k_te, y_te = data
    rows = KernelRowLogistic().fit(k_tr, y_tr)
    assert rows.paper_row_accuracy(k_tr, y_tr) == 1.0
    assert rows.paper_row_accuracy(k_te, y_te) == 1.0
    assert rows.score(k_te, y_te) == 1.0  # argmax over c of the row decision values
    # the paper's metric counts (example, class) rows: predicting class 0 for every row scores (C-1)/C
    const = KernelRowLogistic().fit(k_tr * 0.0, y_tr)
    assert abs(const.paper_row_accuracy(k_te * 0.0, y_te) - 2 / 3) < 1e-12


def test_shape_errors(data) -> None:
    k_tr, y_tr, k_te, _ = data
    with pytest.raises(ConfigError, match="square"):
        KernelRidge().fit(k_te, y_tr)
    with pytest.raises(ConfigError, match="labels"):
        KernelRidge().fit(k_tr, y_tr[:-1])
    fitted = KernelRidge().fit(k_tr, y_tr)
    with pytest.raises(ConfigError, match="training examples"):
        fitted.predict(k_te[:, :, :-1, :])


def test_the_row_logistic_solver_takes_a_training_set_smaller_than_five() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4))
    k = np.einsum("ih,jh->ij", x, x)
    kernel = np.einsum("ij,cd->icjd", k, np.eye(2))
    solver = KernelRowLogistic().fit(kernel, np.array([0, 1, 0]))
    assert solver.decision_function(kernel).shape == (3, 2)
    with pytest.raises(ConfigError, match="at least 2 training examples"):
        KernelRowLogistic().fit(kernel[:1, :, :1], np.array([0]))
