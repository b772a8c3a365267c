"""Spectra of a step's Jacobian and the paper's derived quantities (Tomihari & Karakida 2025, §5, §6.3).

Leading eigenvalues (dense or Arnoldi), the spectral norm by matrix-free power iteration, the
contribution index of the symmetric part, the pseudo-energy, a cosine, and the Prop. 5.1 bound.
Pure functions on tensors and callables: no files, no printing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import eigs, eigsh
from torch.func import jvp, vjp

from dynascope.dynamics.jacobian import Step, jvp_operator, step_jacobian, symmetric_jvp_operator
from dynascope.validation import check_flat


@dataclass(frozen=True)
class SpectralNorm:
    """A power-iteration estimate of ``||J||_2``: ``value`` is a lower bound that rises to the norm."""

    value: float
    converged: bool
    iters: int


def leading_eigenvalues(
    step: Step,
    x: torch.Tensor,
    k: int,
    dense_max: int = 2048,
    tol: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """The ``k`` eigenvalues of the one-step Jacobian at ``x`` largest in modulus, as complex128, by modulus descending.

    For ``n <= dense_max`` the Jacobian is built (``step_jacobian``) and ``torch.linalg.eigvals`` gives all
    eigenvalues; above it, ARPACK's implicitly restarted Arnoldi (``scipy eigs``, ``which="LM"``) runs on
    the JVP operator, which needs ``k < n - 1``. ``tol`` is ARPACK's relative accuracy (0 = machine
    precision); ``seed`` fixes ARPACK's start vector.
    """
    x = check_flat(x)
    n = x.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}]; found {k}")
    if n <= dense_max:
        vals = torch.linalg.eigvals(step_jacobian(step, x).to(torch.float64))
    else:
        if k >= n - 1:
            raise ValueError(f"Arnoldi needs k < n - 1 = {n - 1}; found k={k} (raise dense_max for a dense solve)")
        v0 = np.random.default_rng(seed).standard_normal(n)
        vals = torch.from_numpy(eigs(jvp_operator(step, x), k=k, which="LM", tol=tol, v0=v0, return_eigenvectors=False))
    vals = vals.to(torch.complex128)
    order = torch.argsort(vals.abs(), descending=True, stable=True)
    return vals[order][:k]


def spectral_norm(
    step: Step,
    x: torch.Tensor,
    iters: int = 500,
    tol: float = 1e-10,
    seed: int = 0,
) -> SpectralNorm:
    """``||J||_2`` of the one-step Jacobian at ``x`` by power iteration on ``J^T J``, never materialising J.

    Each iteration is one JVP (``J v``) and one VJP (``J^T J v``, reusing a single ``vjp`` closure).
    The estimate ``||J v||`` for unit ``v`` is a lower bound; it stops when its relative change is below
    ``tol`` (``converged=True``) or after ``iters`` iterations. The convergence rate is ``(s2/s1)^2``.
    """
    x = check_flat(x)
    if iters < 1:
        raise ValueError(f"iters must be >= 1; found {iters}")
    _, vjp_fn = vjp(step, x)
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(dtype=x.dtype, device=x.device)
    v = v / v.norm()
    prev = 0.0
    for i in range(1, iters + 1):
        _, jv = jvp(step, (x,), (v,))
        value = float(jv.norm())
        (w,) = vjp_fn(jv)
        w_norm = w.norm()
        if value == 0.0 or w_norm == 0.0:
            return SpectralNorm(value=value, converged=True, iters=i)
        v = w / w_norm
        if abs(value - prev) <= tol * value:
            return SpectralNorm(value=value, converged=True, iters=i)
        prev = value
    return SpectralNorm(value=value, converged=False, iters=iters)


def top_count(n: int, frac: float) -> int:
    """``ceil(frac * n)`` eigen-directions (at least 1), robust to ``frac * n`` landing a hair above an integer."""
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"frac must be in (0, 1]; found {frac}")
    return max(1, math.ceil(round(frac * n, 9)))


def contribution_index(J: torch.Tensor, x: torch.Tensor, frac: float = 0.02) -> float:
    """Share of ``||x||^2`` in the top ``ceil(frac * n)`` eigen-directions of ``S = J + J^T`` (paper §6.3).

    ``S`` is symmetric, so ``eigh`` gives an orthonormal eigenbasis ``v_k``; with ``a_k = v_k . x`` and
    eigenvalues sorted descending, CI = ``sum_{k <= m} a_k^2 / sum_k a_k^2``. Computed in float64. Where
    eigenvalues tie across the cut-off, the split of their eigenspace is arbitrary (as in ``eigh``).
    """
    if J.ndim != 2 or J.shape[0] != J.shape[1]:
        raise ValueError(f"J must be square (n, n); found shape {tuple(J.shape)}")
    x = check_flat(x).to(torch.float64)
    n = J.shape[0]
    if x.numel() != n:
        raise ValueError(f"x must have n={n} entries to match J; found {x.numel()}")
    J = J.detach().to(torch.float64)
    _, vecs = torch.linalg.eigh(J + J.T)  # ascending eigenvalues
    a = vecs[:, -top_count(n, frac) :].T @ x
    return float((a @ a) / (x @ x))


def contribution_index_op(
    fn: Step,
    x: torch.Tensor,
    frac: float = 0.02,
    v: torch.Tensor | None = None,
    tol: float = 0.0,
    seed: int = 0,
) -> float:
    """Matrix-free contribution index: ``J`` is the Jacobian of ``fn`` at ``x``, the state is ``v`` (default ``x``).

    The top ``m = ceil(frac * n)`` eigenvectors of ``J + J^T`` come from Lanczos (``scipy eigsh``,
    ``which="LA"``) on a JVP + VJP operator; needs ``m < n``. Equals ``contribution_index`` up to ``tol``.
    """
    x = check_flat(x)
    state = x if v is None else check_flat(v, "v")
    n = x.numel()
    m = top_count(n, frac)
    if m >= n:
        raise ValueError(f"Lanczos needs ceil(frac*n) < n={n}; found {m} (use contribution_index on a dense J)")
    v0 = np.random.default_rng(seed).standard_normal(n)
    _, vecs = eigsh(symmetric_jvp_operator(fn, x), k=m, which="LA", tol=tol, v0=v0)
    s = state.detach().to("cpu", torch.float64).numpy()
    a = vecs.T @ s
    return float((a @ a) / (s @ s))


def _flat_state(t: torch.Tensor, state_dims: int | None) -> torch.Tensor:
    """View ``t`` as (batch..., state) by flattening its trailing ``state_dims`` axes (None = all axes)."""
    if state_dims is None:
        return t.reshape(-1)
    if not 1 <= state_dims <= t.ndim:
        raise ValueError(
            f"state_dims must be in [1, {t.ndim}] for a tensor of shape {tuple(t.shape)}; found {state_dims}"
        )
    return t.reshape(*t.shape[: t.ndim - state_dims], -1)


def pseudo_energy(x: torch.Tensor, drive: torch.Tensor, state_dims: int | None = None) -> torch.Tensor:
    """AKOrN's pseudo-energy ``E = -sum x * drive`` with ``drive = C + MSA(X)`` (paper §4.2: ``-Tr(X^T Y)``).

    Sums over the trailing ``state_dims`` axes (None: all axes, a scalar); leading axes are a batch,
    e.g. ``state_dims=2`` on (B, S, D) tensors gives one energy per board.
    """
    if x.shape != drive.shape:
        raise ValueError(f"x and drive must have the same shape; found {tuple(x.shape)} and {tuple(drive.shape)}")
    return -(_flat_state(x, state_dims) * _flat_state(drive, state_dims)).sum(-1)


def cosine(a: torch.Tensor, b: torch.Tensor, state_dims: int | None = None, eps: float = 1e-30) -> torch.Tensor:
    """Cosine between states flattened over the trailing ``state_dims`` axes (paper Fig. 6: cos(MSA(X), J x)).

    ``eps`` guards a zero vector (cosine 0 there).
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape; found {tuple(a.shape)} and {tuple(b.shape)}")
    fa, fb = _flat_state(a, state_dims), _flat_state(b, state_dims)
    return (fa * fb).sum(-1) / (fa.norm(dim=-1) * fb.norm(dim=-1)).clamp_min(eps)


def normalization_bound(gamma_max: float, R: float, eta: float, j_msa_norm: float) -> float:
    """Prop. 5.1: ``||d RMSNorm(X + eta dX)/dX||_2 <= gamma_max / R * (1 + eta * ||J_MSA||_2)``.

    Valid when every token of ``Y = X + eta (C + MSA(X))`` has norm at least ``R`` and ``gamma_max`` is
    ``max_j |gamma_j|`` of the paper's RMSNorm (unit norm times gamma).
    """
    if R <= 0:
        raise ValueError(f"R (a lower bound on token norms) must be positive; found {R}")
    return abs(gamma_max) / R * (1.0 + abs(eta) * j_msa_norm)
