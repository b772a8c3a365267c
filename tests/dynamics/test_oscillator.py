"""The toy oscillator: eigenvalues leave the unit disk without normalization and return to it with it (equal omegas)."""

from __future__ import annotations

import math

import pytest
import torch

from dynascope.dynamics.jacobian import step_jacobian
from dynascope.dynamics.oscillator import antisymmetric, toy_eigenvalues, toy_step

F64 = torch.float64


def unit_vectors(dim: int, count: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        x = torch.randn(dim, generator=g, dtype=F64)
        out.append(x / x.norm())
    return out


def test_antisymmetric_has_eigenvalues_plus_minus_i_omega() -> None:
    omegas = torch.tensor([0.5, 1.0, 2.5], dtype=F64)
    omega = antisymmetric(omegas)
    assert omega.shape == (6, 6)
    assert torch.equal(omega.T, -omega)
    assert torch.equal(omega[:2, :2], torch.tensor([[0.0, 0.5], [-0.5, 0.0]], dtype=F64))
    vals = torch.linalg.eigvals(omega)
    assert float(vals.real.abs().max()) < 1e-14
    expected = torch.sort(torch.cat([omegas, -omegas])).values
    assert torch.allclose(torch.sort(vals.imag).values, expected, atol=1e-14)
    with pytest.raises(ValueError, match="at least one"):
        antisymmetric(torch.tensor([]))


@pytest.mark.parametrize("omegas", [[0.8, 0.8, 0.8], [0.3, 1.0, 2.0]])
def test_without_normalization_eigenvalues_leave_the_unit_disk(omegas: list[float]) -> None:
    eta = 0.5
    om = torch.tensor(omegas, dtype=F64)
    x = unit_vectors(6, 1, seed=0)[0]
    vals = toy_eigenvalues(om, eta, x, normalize=False)
    expected = torch.sqrt(1 + eta**2 * om**2).repeat_interleave(2)
    assert torch.allclose(torch.sort(vals.abs()).values, torch.sort(expected).values, atol=1e-14)
    assert torch.allclose(vals.real, torch.ones(6, dtype=F64), atol=1e-14)  # 1 +- i eta omega
    assert bool((vals.abs() > 1.0).all())


def test_with_normalization_equal_omegas_stay_in_the_unit_disk() -> None:
    eta, w = 0.5, 1.7
    om = torch.full((4,), w, dtype=F64)
    step = toy_step(antisymmetric(om), eta, normalize=True)
    for x in unit_vectors(8, 6, seed=1):
        vals = toy_eigenvalues(om, eta, x, normalize=True)
        assert float(vals.abs().max()) <= 1.0 + 1e-12
        assert float(vals.abs().min()) < 1e-12  # the radial null direction
        assert float(torch.linalg.matrix_norm(step_jacobian(step, x), 2)) <= 1.0 + 1e-12
        assert float(step(x).norm()) == pytest.approx(1.0, abs=1e-14)
    # the same x without normalization: every eigenvalue is outside, |lambda| = sqrt(1 + eta^2 w^2)
    outside = toy_eigenvalues(om, eta, unit_vectors(8, 1, seed=1)[0], normalize=False)
    assert torch.allclose(outside.abs(), torch.full((8,), math.sqrt(1 + eta**2 * w**2), dtype=F64), atol=1e-14)


def test_with_normalization_unequal_omegas_can_leave_the_disk() -> None:
    """The equal-omega condition matters: at x = e_1 (in the slow pair) ||y|| = sqrt(1 + eta^2 w_1^2), so the
    fast pair's eigenvalues have modulus sqrt(1 + eta^2 w_2^2) / sqrt(1 + eta^2 w_1^2) = sqrt(10 / 1.25)."""
    vals = toy_eigenvalues(torch.tensor([0.5, 3.0], dtype=F64), 1.0, torch.tensor([1.0, 0, 0, 0], dtype=F64), True)
    assert float(vals.abs().max()) == pytest.approx(math.sqrt(10 / 1.25), abs=1e-12)
