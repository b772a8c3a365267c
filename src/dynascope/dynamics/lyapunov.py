"""Finite-horizon Lyapunov exponents of a state map: dense exact, matrix-free exact top-k, and Benettin QR.

For ``x_{t+1} = step(x_t)`` the paper (§5.3) defines ``lambda_i = (1/T) ln sigma_i(J_{f^T}(x_0))`` with
``J_{f^T} = J(x_{T-1}) ... J(x_1) J(x_0)``. ``lyapunov_exact`` forms that matrix (all n exponents),
``lyapunov_lanczos`` gets its top k singular values matrix-free (the same numbers), and
``lyapunov_benettin`` estimates the top k asymptotic exponents by QR-renormalised tangents (cheapest,
but biased at small T from a random start). Normalization (Pi / RMSNorm per token or oscillator) gives
each normalised block an exact radial null direction, so that many singular values are 0 and their
exponents are ``-inf``; the caller passes their count (``S*D/N``) as ``null_dims``.

The mean exponent is the mean over the ``n - null_dims`` directions that are not those exact nulls. The
paper defines the mean of the whole spectrum, λ̄ = (1/M) Σ λ_i; with M = n it is always −∞ under
normalization, so we read M as the number of exponents that are not normalization nulls (the paper does
not say how it treats them). It is computed as a volume, so that no finite exponent is lost to underflow:
the sum of the top ``r = n - null_dims`` log singular values of ``J_{f^T}`` is ln of the r-volume it
stretches the complement of its kernel by, and pushing an orthonormal basis of the row space of ``J(x_0)``
through the T steps with a QR after each one accumulates that volume as Σ ln|diag R| (each step's
dynamic range only, never the product's). ``lyapunov_exact`` does this on its dense Jacobians;
``lyapunov_benettin`` with ``k = n - null_dims`` and ``q0 = row_space_basis(...)`` does it matrix-free.
Pure functions: no files, no printing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, svds
from torch.func import jvp, vjp, vmap

from dynascope.dynamics.jacobian import Step, step_jacobian
from dynascope.validation import check_flat, check_int


@dataclass(frozen=True, eq=False)
class LyapunovResult:
    """Exponents sorted descending (float64), their max and mean, and how they were computed.

    ``mean`` is the mean over the top ``min(k, n - null_dims)`` exponents, i.e. without the ``null_dims``
    normalization nulls. ``lyapunov_exact`` computes it from the QR volume (module docstring), so it stays
    finite where single small exponents are unresolved; Benettin and Lanczos average the exponents they
    return (from the volume too for Benettin with ``k = n - null_dims`` from ``row_space_basis``).
    ``unresolved`` counts exponents reported as ``-inf``: singular values (exact) or QR diagonals
    (Benettin) at or below ``n * eps`` of the state's dtype relative to the largest (Lanczos: exactly
    zero). When the reported exponents include the null directions (exact, or ``k > n - null_dims``) it
    equals ``null_dims`` unless the contraction over T steps exceeds what the float64 product resolves.
    """

    exponents: torch.Tensor
    max: float
    mean: float
    method: str
    T: int
    k: int
    null_dims: int
    unresolved: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (exponents as a list; ``-inf`` stays a float)."""
        out = asdict(self)
        out["exponents"] = self.exponents.tolist()
        return out


def _summarise(
    exponents: torch.Tensor, n: int, method: str, T: int, k: int, null_dims: int, mean: float | None = None
) -> LyapunovResult:
    """Sort the exponents and form max and (unless given) the null-excluding mean of the top ones."""
    exponents = torch.sort(exponents, descending=True).values
    keep = min(k, n - null_dims)
    return LyapunovResult(
        exponents=exponents,
        max=float(exponents[0]),
        mean=float(exponents[:keep].mean()) if mean is None else mean,
        method=method,
        T=T,
        k=k,
        null_dims=null_dims,
        unresolved=int(torch.isneginf(exponents).sum()),
    )


def _check_args(x0: torch.Tensor, T: int, null_dims: int) -> torch.Tensor:
    """``x0`` detached, after checking it is a flat state, T (loop steps) >= 1 and null_dims in [0, n - 1]."""
    x0 = check_flat(x0, "x0")
    check_int(T, "T (loop steps)")
    check_int(null_dims, "null_dims", minimum=0, maximum=x0.numel() - 1)
    return x0


def _check_finite(values: torch.Tensor, what: str, t: int) -> None:
    """Raise if the linearisation stopped being finite (the trajectory overflowed or hit a singular point)."""
    if not bool(torch.isfinite(values).all()):
        raise FloatingPointError(
            f"the {what} at step {t} is not finite (inf/nan); the trajectory likely overflowed - "
            "shorten T or rescale the map"
        )


def _log_volume(r: torch.Tensor, rtol: float) -> float:
    """Σ ln|diag R| of one QR of pushed tangents; ``-inf`` when a diagonal is at or below ``rtol`` times the
    largest (a direction the step annihilates beyond the declared nulls)."""
    diag = torch.diagonal(r).abs()
    if bool((diag <= rtol * diag.max()).any()):
        return -math.inf
    return float(torch.log(diag).sum())


def row_space_basis(step: Step, x0: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """An orthonormal (n, k) float64 basis of span(J(x_0)ᵀ g_1, …, J(x_0)ᵀ g_k) for Gaussian g (k VJPs).

    With ``k = n - null_dims`` = rank J(x_0) this is the complement of the first step's kernel: the start
    from which ``lyapunov_benettin``'s k-volume, and so its mean, is exact for any T (module docstring).
    """
    x = check_flat(x0, "x0")
    check_int(k, "k", minimum=1, maximum=x.numel())
    gen = torch.Generator().manual_seed(seed)
    sketch = torch.randn(k, x.numel(), generator=gen, dtype=torch.float64).to(dtype=x.dtype, device=x.device)
    _, pullback = vjp(step, x)
    rows = vmap(lambda u: pullback(u)[0])(sketch)
    _check_finite(rows, "row-space sketch", 0)
    return torch.linalg.qr(rows.T.to(torch.float64)).Q


def lyapunov_exact(
    step: Step,
    x0: torch.Tensor,
    T: int,
    null_dims: int = 0,
    rank_rtol: float | None = None,
    mode: Literal["fwd", "rev"] = "rev",
    chunk_size: int | None = None,
) -> LyapunovResult:
    """All n exponents from the singular values of the T-step Jacobian, built as a float64 chain product,
    and their mean over the ``n - null_dims`` non-null directions from the QR volume.

    The one-step Jacobians ``J(x_t)`` (``step_jacobian`` in ``x0``'s dtype, then float64) are multiplied
    along the trajectory; after each product the running matrix is divided by its Frobenius norm and
    the log of that norm is accumulated, so long horizons neither overflow nor underflow. Singular values
    at or below ``rank_rtol * sigma_max`` (default ``n * eps`` of ``x0``'s dtype, the ``matrix_rank`` rule) cannot be
    told from rounding noise and give ``-inf``; this is how the exact null directions of normalization show,
    and also exponents more than about ln(1/rtol)/T below the largest. The mean does not depend on them:
    an orthonormal basis of the row space of ``J(x_0)`` (a seeded Gaussian sketch) is pushed through the same
    Jacobians with a QR after each step (module docstring); it is ``-inf`` only if some step annihilates a
    direction beyond the declared nulls. Memory: four n x n float64 matrices (8 n^2 bytes each); time: about
    3T dense n^3 products and QRs plus one SVD.
    """
    x = _check_args(x0, T, null_dims)
    n = x.numel()
    rank = n - null_dims
    rtol = n * torch.finfo(x.dtype).eps if rank_rtol is None else rank_rtol
    prod = torch.eye(n, dtype=torch.float64, device=x.device)
    basis: torch.Tensor | None = None
    log_scale, log_volume = 0.0, 0.0
    for t in range(T):
        J = step_jacobian(step, x, mode=mode, chunk_size=chunk_size).to(torch.float64)
        _check_finite(J, "one-step Jacobian", t)
        if basis is None:  # the row space of J(x_0): the complement of its kernel (the null directions)
            gen = torch.Generator().manual_seed(0)
            sketch = torch.randn(n, rank, generator=gen, dtype=torch.float64).to(J.device)
            basis = torch.linalg.qr(J.T @ sketch).Q
        basis, r = torch.linalg.qr(J @ basis)
        log_volume += _log_volume(r, rtol)
        prod = J @ prod
        del J
        scale = float(torch.linalg.matrix_norm(prod))
        if scale == 0.0:
            exponents = torch.full((n,), -math.inf, dtype=torch.float64)
            return _summarise(exponents, n, "exact", T, n, null_dims, mean=-math.inf)
        prod /= scale
        log_scale += math.log(scale)
        x = step(x).detach()
    sv = torch.linalg.svdvals(prod).cpu()
    resolved = sv > rtol * sv[0]
    logs = torch.where(resolved, torch.log(torch.where(resolved, sv, 1.0)), -math.inf)
    return _summarise((logs + log_scale) / T, n, "exact", T, n, null_dims, mean=log_volume / (rank * T))


def _orthonormal_rows(rows: torch.Tensor, dtype: torch.dtype, what: str, t: int) -> torch.Tensor:
    """Rows (k, n) → an orthonormal basis of their span as rows, via a float64 QR."""
    q = torch.linalg.qr(rows.T.to(torch.float64)).Q
    _check_finite(q, what, t)
    return q.T.to(dtype).contiguous()


def _align_with_top_singular_vectors(
    step: Step, points: list[torch.Tensor], basis: torch.Tensor, sweeps: int
) -> torch.Tensor:
    """Subspace iteration on JᵀJ (J the T-step Jacobian along the states ``points`` = x_0 … x_{T-1}):
    ``sweeps`` forward (JVP) and backward (VJP) passes with a QR after every step; returns the refined
    (n, k) float64 basis."""
    x0 = points[0]
    rows = basis.T.to(dtype=x0.dtype, device=x0.device).contiguous()
    for _ in range(sweeps):
        for t, point in enumerate(points):
            rows = vmap(lambda v, p=point: jvp(step, (p,), (v,))[1])(rows)
            rows = _orthonormal_rows(rows, x0.dtype, "forward sweep tangents", t)
        for t in reversed(range(len(points))):
            _, pullback = vjp(step, points[t])
            rows = vmap(lambda u, f=pullback: f(u)[0])(rows)
            rows = _orthonormal_rows(rows, x0.dtype, "backward sweep cotangents", t)
    return rows.T.to(torch.float64)


def lyapunov_benettin(
    step: Step,
    x0: torch.Tensor,
    T: int,
    k: int,
    seed: int = 0,
    qr_every: int = 1,
    null_dims: int = 0,
    q0: torch.Tensor | None = None,
    rank_rtol: float | None = None,
    sweeps: int = 0,
    oversample: int | None = None,
) -> LyapunovResult:
    """Top-k exponents by Benettin's method: k tangent vectors pushed by batched JVPs, QR every ``qr_every`` steps.

    Tangents start as an orthonormal basis (``q0``'s columns, orthonormalised, or a seeded Gaussian one),
    are pushed through each step with ``vmap`` over ``torch.func.jvp`` in ``x0``'s dtype, and are
    re-orthonormalised by a float64 QR; exponents are ``sum ln|diag R| / T``, sorted descending. A
    diagonal at or below ``rank_rtol * max|diag R|`` of its QR (default ``n * eps`` of ``x0``'s dtype) is
    a direction the step annihilates (a normalization null) and makes that exponent ``-inf``.
    Cost: T forward passes plus T batched k-JVPs; memory O(k n). For finite T the result equals the exact
    SVD exponents only when ``q0`` spans the top-k right singular vectors of the T-step Jacobian; from a
    random start the top exponent is low by about ``ln|<q0, v_1>| / T`` (the asymptotic exponents are
    approached as O(1/T) by both routes). ``sweeps`` > 0 removes that bias: each sweep pushes the basis
    forward through the T steps (JVPs) and back (VJPs), with a QR after every step, which is one step of
    subspace iteration on JᵀJ for the T-step Jacobian J; it aligns the start with the top-k right singular
    subspace. With sweeps the basis carries ``oversample`` extra vectors (default max(10, k); k' =
    min(n, k + oversample)), so the misalignment shrinks by (sigma_{k'+1}/sigma_k)^(2 * sweeps): close
    exponents around k do not slow it. The measuring pass then returns the singular values of the T-step
    Jacobian restricted to that subspace (Rayleigh-Ritz on the k' x k' product of its QR factors, top k kept)
    instead of the QR diagonals: the finite-T exact exponents, with an error second order in the subspace
    misalignment. Each sweep costs 2T batched products; the T states are kept (T n values) and reused.
    With ``k = n - null_dims``, ``q0 = row_space_basis(step, x0, k)`` and no sweeps, the exponents' sum is the
    exact finite-T log-volume, so ``mean`` is the exact non-null mean (module docstring); memory O(n^2).
    """
    x = _check_args(x0, T, null_dims)
    n = x.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}]; found {k}")
    if qr_every < 1:
        raise ValueError(f"qr_every must be >= 1; found {qr_every}")
    if q0 is None:
        gen = torch.Generator().manual_seed(seed)
        q0 = torch.randn(n, k, generator=gen, dtype=torch.float64)
    elif tuple(q0.shape) != (n, k):
        raise ValueError(f"q0 must have shape (n, k) = ({n}, {k}); found {tuple(q0.shape)}")
    oversample = max(10, k) if oversample is None else oversample
    if sweeps < 0 or oversample < 0:
        raise ValueError(f"sweeps and oversample must be >= 0; found {sweeps}, {oversample}")
    if sweeps and q0.shape[1] < min(n, k + oversample):
        gen = torch.Generator().manual_seed(seed + 1)
        extra = torch.randn(n, min(n, k + oversample) - q0.shape[1], generator=gen, dtype=torch.float64)
        q0 = torch.cat([q0.detach().to(torch.float64).cpu(), extra], dim=1)
    basis = torch.linalg.qr(q0.detach().to(torch.float64)).Q
    points = None  # the trajectory x_0 … x_{T-1}, kept when sweeps need it (and then reused below)
    if sweeps:
        points = [x]
        for _ in range(T - 1):
            points.append(step(points[-1]).detach())
        basis = _align_with_top_singular_vectors(step, points, basis, sweeps)
    tangents = basis.T.to(dtype=x.dtype, device=x.device).contiguous()  # (k, n), one tangent per row
    rtol = n * torch.finfo(x.dtype).eps if rank_rtol is None else rank_rtol
    width = basis.shape[1]
    log_sums = torch.zeros(width, dtype=torch.float64)
    r_prod, log_scale = torch.eye(width, dtype=torch.float64), 0.0
    for t in range(T):
        point = x if points is None else points[t]
        tangents = vmap(lambda v, p=point: jvp(step, (p,), (v,))[1])(tangents)
        if points is None and t < T - 1:
            x = step(x).detach()
        if (t + 1) % qr_every == 0 or t == T - 1:
            q, r = torch.linalg.qr(tangents.T.to(torch.float64))
            r = r.cpu()
            diag = torch.diagonal(r).abs()
            _check_finite(diag, "QR diagonal of the tangents", t)
            log_sums += torch.where(diag > rtol * diag.max(), torch.log(diag), -math.inf)
            tangents = q.T.to(x.dtype).contiguous()
            if sweeps:
                r_prod = r @ r_prod
                scale = float(torch.linalg.matrix_norm(r_prod))
                r_prod, log_scale = r_prod / scale, log_scale + math.log(scale)
    if sweeps:  # Rayleigh-Ritz: the T-step Jacobian restricted to the aligned subspace is Q_T R_T ... R_1
        sv = torch.linalg.svdvals(r_prod)
        resolved = sv > rtol * sv[0]
        log_sums = (torch.where(resolved, torch.log(torch.where(resolved, sv, 1.0)), -math.inf) + log_scale)[:k]
    return _summarise(log_sums / T, n, "benettin", T, k, null_dims)


def lyapunov_lanczos(
    step: Step,
    x0: torch.Tensor,
    T: int,
    k: int,
    null_dims: int = 0,
    tol: float = 1e-10,
    seed: int = 0,
) -> LyapunovResult:
    """Top-k exponents of the exact finite-T definition without forming any n x n matrix.

    ``J_{f^T}`` is a float64 ``LinearOperator``: ``J v`` is T JVPs along the stored trajectory, ``J^T u``
    is T VJPs in reverse order (one ``vjp`` closure per step, kept for the whole solve). ARPACK's Lanczos
    (``scipy svds``) finds its k largest singular values to relative accuracy ``tol``; the exponents equal
    ``lyapunov_exact``'s top k (the same quantity, the paper's definition), unlike Benettin's from a random
    start. Needs ``k < n``; cost: a few hundred operator applications (each T JVPs or VJPs) for k ~ 16;
    memory: the trajectory and T autograd graphs plus O(n k) Lanczos vectors.
    """
    x = _check_args(x0, T, null_dims)
    n = x.numel()
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, n={n}) for Lanczos; found {k} (use lyapunov_exact for all n)")
    points = [x]
    for _ in range(T - 1):
        points.append(step(points[-1]).detach())
    pullbacks = [vjp(step, p)[1] for p in points]

    def to_torch(v: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(v).reshape(n), dtype=x.dtype, device=x.device)

    def matvec(v: np.ndarray) -> np.ndarray:
        u = to_torch(v)
        for p in points:
            u = jvp(step, (p,), (u,))[1]
        return u.detach().to("cpu", torch.float64).numpy()

    def rmatvec(v: np.ndarray) -> np.ndarray:
        u = to_torch(v)
        for pull in reversed(pullbacks):
            (u,) = pull(u)
        return u.detach().to("cpu", torch.float64).numpy()

    op = LinearOperator((n, n), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    sv = torch.from_numpy(svds(op, k=k, tol=tol, v0=v0, return_singular_vectors=False).copy())
    _check_finite(sv, "top singular values of the T-step Jacobian", T - 1)
    logs = torch.where(sv > 0, torch.log(sv.clamp_min(torch.finfo(torch.float64).tiny)), -math.inf)
    return _summarise(logs / T, n, "lanczos", T, k, null_dims)
