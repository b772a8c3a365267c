"""Jacobians, spectra and the contribution index checked against finite differences and dense linear algebra."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynascope.dynamics.jacobian import (
    Step,
    finite_difference_jacobian,
    jvp_operator,
    step_jacobian,
    symmetric_jvp_operator,
)
from dynascope.dynamics.spectral import (
    contribution_index,
    contribution_index_op,
    cosine,
    leading_eigenvalues,
    normalization_bound,
    pseudo_energy,
    spectral_norm,
)

F64 = torch.float64


def attention_map(
    S: int, D: int, seed: int = 0, eta: float = 0.7, normalize: bool = False
) -> tuple[Step, torch.Tensor, Step]:
    """One-head attention-like step X -> [Pi](X + eta (C + tanh(softmax(X Wq Wk^T X^T) X Wv))), x0, the block."""
    g = torch.Generator().manual_seed(seed)
    wq, wk, wv = (torch.randn(D, D, generator=g, dtype=F64) / math.sqrt(D) for _ in range(3))
    c = 0.5 * torch.randn(S, D, generator=g, dtype=F64)

    def block(x: torch.Tensor) -> torch.Tensor:
        X = x.view(S, D)
        attn = torch.softmax((X @ wq) @ (X @ wk).T / math.sqrt(D), dim=-1)
        return torch.tanh(attn @ X @ wv).reshape(-1)

    def step(x: torch.Tensor) -> torch.Tensor:
        Y = (x + eta * (c.reshape(-1) + block(x))).view(S, D)
        if normalize:
            Y = Y / torch.linalg.vector_norm(Y, dim=-1, keepdim=True)
        return Y.reshape(-1)

    return step, torch.randn(S * D, generator=g, dtype=F64), block


@pytest.mark.parametrize("mode", ["fwd", "rev"])
@pytest.mark.parametrize("normalize", [False, True])
def test_step_jacobian_matches_finite_differences(mode: str, normalize: bool) -> None:
    step, x, _ = attention_map(5, 8, normalize=normalize)
    J = step_jacobian(step, x, mode=mode)  # type: ignore[arg-type]
    fd = finite_difference_jacobian(step, x, eps=1e-6)
    assert J.shape == (40, 40) and J.dtype == F64
    assert torch.allclose(J, fd, atol=1e-7, rtol=0)
    assert J.abs().max() > 0.1  # a non-trivial Jacobian, not a vacuous match


def test_chunked_forward_jacobian_equals_unchunked() -> None:
    step, x, _ = attention_map(4, 6)
    full = step_jacobian(step, x, mode="fwd")
    assert torch.allclose(step_jacobian(step, x, mode="fwd", chunk_size=7), full, atol=1e-14, rtol=0)
    assert torch.allclose(step_jacobian(step, x, mode="rev", chunk_size=5), full, atol=1e-13, rtol=0)


def test_step_jacobian_rejects_non_flat_state() -> None:
    step, x, _ = attention_map(3, 4)
    with pytest.raises(ValueError, match="flat state"):
        step_jacobian(step, x.view(3, 4))


def test_jvp_operator_products_equal_dense_products() -> None:
    step, x, _ = attention_map(4, 5, normalize=True)
    J = step_jacobian(step, x).numpy()
    rng = np.random.default_rng(1)
    v, u = rng.standard_normal(20), rng.standard_normal(20)
    op = jvp_operator(step, x)
    assert np.allclose(op.matvec(v), J @ v, atol=1e-12)
    assert np.allclose(op.rmatvec(u), J.T @ u, atol=1e-12)
    assert np.allclose(symmetric_jvp_operator(step, x).matvec(v), (J + J.T) @ v, atol=1e-12)


def test_arnoldi_leading_eigenvalues_equal_dense() -> None:
    step, x, _ = attention_map(6, 10, eta=1.5)
    k = 6
    dense = leading_eigenvalues(step, x, k + 2, dense_max=10_000)
    arnoldi = leading_eigenvalues(step, x, k, dense_max=0)
    assert arnoldi.dtype == torch.complex128 and arnoldi.shape == (k,)
    assert torch.allclose(arnoldi.abs(), dense[:k].abs(), atol=1e-9, rtol=0)
    for lam in arnoldi:  # each Arnoldi value is one of the dense leading values (conjugates may swap order)
        assert (dense - lam).abs().min() < 1e-9
    all_vals = torch.linalg.eigvals(step_jacobian(step, x))
    assert torch.allclose(dense.abs(), torch.sort(all_vals.abs(), descending=True).values[: k + 2], atol=1e-12)


def test_power_iteration_equals_matrix_two_norm() -> None:
    step, x, _ = attention_map(5, 8, normalize=True)
    exact = float(torch.linalg.matrix_norm(step_jacobian(step, x), 2))
    est = spectral_norm(step, x, iters=2000, tol=1e-13, seed=3)
    assert est.converged
    assert abs(est.value - exact) <= 1e-6 * exact
    early = spectral_norm(step, x, iters=1, tol=1e-13, seed=3)
    assert not early.converged and early.iters == 1
    assert early.value <= exact * (1 + 1e-12)  # ||J v|| with unit v never exceeds ||J||_2


def test_contribution_index_hand_computed_3x3() -> None:
    # S = J + J^T = [[2, 2, 0], [2, 2, 0], [0, 0, -2]]: eigenvalues 4 (v=(1,1,0)/sqrt2), 0 ((1,-1,0)/sqrt2), -2 (e3).
    J = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]], dtype=F64)
    # frac = 0.2 -> ceil(0.6) = 1 direction: x = e1 has a_1^2 = 1/2 of ||x||^2; x = (1, 0, 1) has 0.5 / 2.
    assert contribution_index(J, torch.tensor([1.0, 0.0, 0.0], dtype=F64), frac=0.2) == pytest.approx(0.5, abs=1e-14)
    assert contribution_index(J, torch.tensor([1.0, 0.0, 1.0], dtype=F64), frac=0.2) == pytest.approx(0.25, abs=1e-14)
    # frac = 0.5 -> ceil(1.5) = 2 directions span {e1, e2}: x = (1, 0, 1) has 1 / 2.
    assert contribution_index(J, torch.tensor([1.0, 0.0, 1.0], dtype=F64), frac=0.5) == pytest.approx(0.5, abs=1e-14)
    # frac * n = 0.02 * 50 lands a hair above 1 in floating point; it must still mean 1 direction.
    assert contribution_index(torch.diag(torch.arange(50.0, dtype=F64)), torch.ones(50, dtype=F64)) == pytest.approx(
        1 / 50, abs=1e-14
    )


def test_contribution_index_is_one_in_top_eigenspace_and_validates() -> None:
    g = torch.Generator().manual_seed(0)
    J = torch.randn(30, 30, generator=g, dtype=F64)
    _, vecs = torch.linalg.eigh(J + J.T)
    x = vecs[:, -3:] @ torch.tensor([0.3, -2.0, 1.1], dtype=F64)  # inside the top-3 eigenspace
    assert contribution_index(J, x, frac=0.1) == pytest.approx(1.0, abs=1e-12)
    assert contribution_index(J, vecs[:, 0], frac=0.1) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="frac"):
        contribution_index(J, x, frac=0.0)
    with pytest.raises(ValueError, match="square"):
        contribution_index(J[:, :5], x)


def test_matrix_free_contribution_index_equals_dense() -> None:
    _, x, block = attention_map(5, 8)
    J = step_jacobian(block, x)
    for frac in (0.05, 0.1):
        dense = contribution_index(J, x, frac=frac)
        assert contribution_index_op(block, x, frac=frac) == pytest.approx(dense, abs=1e-9)
    v = torch.linspace(-1, 1, 40, dtype=F64)
    assert contribution_index_op(block, x, frac=0.1, v=v) == pytest.approx(contribution_index(J, v, 0.1), abs=1e-9)


def test_pseudo_energy_and_cosine_batched() -> None:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(3, 4, 5, generator=g, dtype=F64)
    Y = torch.randn(3, 4, 5, generator=g, dtype=F64)
    energy = pseudo_energy(X, Y, state_dims=2)
    assert energy.shape == (3,)
    for b in range(3):
        assert float(energy[b]) == pytest.approx(-float(torch.trace(X[b].T @ Y[b])), abs=1e-12)
    assert float(pseudo_energy(X, Y)) == pytest.approx(float(energy.sum()), abs=1e-12)
    cos = cosine(X, Y, state_dims=2)
    for b in range(3):
        x, y = X[b].reshape(-1), Y[b].reshape(-1)
        assert float(cos[b]) == pytest.approx(float(x @ y / (x.norm() * y.norm())), abs=1e-12)
    assert float(cosine(X, -2.5 * X)) == pytest.approx(-1.0, abs=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        pseudo_energy(X, Y[:2])


@pytest.mark.parametrize("gamma_max", [1.0, 0.4])
def test_normalization_bound_holds_on_a_normalised_step(gamma_max: float) -> None:
    """Prop. 5.1 on a real step: ||d RMSNorm(X + eta(C + MSA))/dX||_2 <= gamma_max/R (1 + eta ||J_MSA||_2)."""
    S, D, eta = 5, 8, 0.9
    _, x, block = attention_map(S, D, eta=eta)
    c = 0.5 * torch.ones(S * D, dtype=F64)
    gamma = torch.linspace(-gamma_max, gamma_max, D, dtype=F64)

    def step(z: torch.Tensor) -> torch.Tensor:
        Y = (z + eta * (c + block(z))).view(S, D)
        return (Y / torch.linalg.vector_norm(Y, dim=-1, keepdim=True) * gamma).reshape(-1)

    R = float(torch.linalg.vector_norm((x + eta * (c + block(x))).view(S, D), dim=-1).min())
    j_msa = float(torch.linalg.matrix_norm(step_jacobian(block, x), 2))
    actual = float(torch.linalg.matrix_norm(step_jacobian(step, x), 2))
    bound = normalization_bound(gamma_max, R, eta, j_msa)
    assert bound == pytest.approx(gamma_max / R * (1 + eta * j_msa))
    assert 0 < actual <= bound
    with pytest.raises(ValueError, match="R"):
        normalization_bound(1.0, 0.0, eta, j_msa)
