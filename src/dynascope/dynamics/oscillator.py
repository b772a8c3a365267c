"""The toy oscillator of paper §5.2 / App. A.5: how normalization pulls oscillatory eigenvalues into the unit disk.

``x <- (I + eta Omega) x`` with ``Omega`` anti-symmetric (eigenvalues ``+-i omega_j``) has Jacobian
eigenvalues ``1 +- i eta omega_j`` of modulus ``sqrt(1 + eta^2 omega_j^2) > 1``. With the state normalised,
``x <- Pi((I + eta Omega) x)`` and ``||x|| = 1``, the Jacobian is
``(1/||y||)(I - y y^T/||y||^2)(I + eta Omega)``; when every ``omega_j`` is equal, ``||y|| = ||I + eta Omega||_2``
so ``||J||_2 <= 1`` and all eigenvalues lie in the closed unit disk.
"""

from __future__ import annotations

import torch

from dynascope.dynamics.jacobian import Step, step_jacobian
from dynascope.validation import check_flat


def antisymmetric(omegas: torch.Tensor) -> torch.Tensor:
    """Block-diagonal ``Omega`` (2m x 2m, float64) with blocks ``[[0, w], [-w, 0]]``: eigenvalues ``+-i w``.

    The pairing matches AKOrN's Omg term, which maps channel pair ``(x_2k, x_2k+1)`` to ``w (x_2k+1, -x_2k)``.
    """
    omegas = torch.as_tensor(omegas, dtype=torch.float64).reshape(-1)
    m = omegas.numel()
    if m == 0:
        raise ValueError("omegas must hold at least one frequency; found none")
    omega = torch.zeros(2 * m, 2 * m, dtype=torch.float64)
    idx = torch.arange(m)
    omega[2 * idx, 2 * idx + 1] = omegas
    omega[2 * idx + 1, 2 * idx] = -omegas
    return omega


def toy_step(omega: torch.Tensor, eta: float, normalize: bool) -> Step:
    """The discrete oscillator step ``x -> (I + eta Omega) x``, followed by ``x / ||x||`` when ``normalize``."""
    if omega.ndim != 2 or omega.shape[0] != omega.shape[1]:
        raise ValueError(f"omega must be square; found shape {tuple(omega.shape)}")
    A = torch.eye(omega.shape[0], dtype=omega.dtype) + eta * omega

    def step(x: torch.Tensor) -> torch.Tensor:
        y = A @ x
        return y / torch.linalg.vector_norm(y) if normalize else y

    return step


def toy_eigenvalues(omegas: torch.Tensor, eta: float, x: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Eigenvalues (complex128) of the toy step's Jacobian at ``x`` (a unit vector for the paper's setting)."""
    x = check_flat(x).to(torch.float64)
    J = step_jacobian(toy_step(antisymmetric(omegas), eta, normalize), x)
    return torch.linalg.eigvals(J)
