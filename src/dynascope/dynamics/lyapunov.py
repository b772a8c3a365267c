"""Finite-horizon Lyapunov exponents of a state map: dense exact, matrix-free exact top-k, and Benettin QR.

For ``x_{t+1} = step(x_t)`` the paper (§5.3) defines ``lambda_i = (1/T) ln sigma_i(J_{f^T}(x_0))`` with
``J_{f^T} = J(x_{T-1}) ... J(x_1) J(x_0)``. ``lyapunov_exact`` forms that matrix (all n exponents),
``lyapunov_lanczos`` gets its top k singular values matrix-free (the same numbers), and
``lyapunov_benettin`` estimates the top k asymptotic exponents by QR-renormalised tangents (cheapest,
but biased at small T from a random start). Normalization (Pi / RMSNorm per token or oscillator) gives
each normalised block an exact radial null direction, so that many singular values are 0 and their
exponents are ``-inf``; the caller passes their count (``S*D/N``) as ``null_dims`` and the mean leaves
them out. Pure functions: no files, no printing.
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

    ``mean`` averages the top ``min(k, n - null_dims)`` exponents, i.e. it leaves out the ``null_dims``
    smallest of the n exponents. ``unresolved`` counts exponents reported as ``-inf``: singular values
    (exact) or QR diagonals (Benettin) at or below ``n * eps`` of the state's dtype relative to the
    largest (Lanczos: exactly zero). When the reported exponents include the null directions (exact, or
    ``k > n - null_dims``) it should equal ``null_dims``; a larger count means real contraction beyond
    what the method resolves (the mean is then ``-inf``).
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


def _summarise(exponents: torch.Tensor, n: int, method: str, T: int, k: int, null_dims: int) -> LyapunovResult:
    """Sort the exponents and form max and the null-excluding mean."""
    exponents = torch.sort(exponents, descending=True).values
    keep = min(k, n - null_dims)
    return LyapunovResult(
        exponents=exponents,
        max=float(exponents[0]),
        mean=float(exponents[:keep].mean()),
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


def lyapunov_exact(
    step: Step,
    x0: torch.Tensor,
    T: int,
    null_dims: int = 0,
    rank_rtol: float | None = None,
    mode: Literal["fwd", "rev"] = "rev",
    chunk_size: int | None = None,
) -> LyapunovResult:
    """All n exponents from the singular values of the T-step Jacobian, built as a float64 chain product.

    The one-step Jacobians ``J(x_t)`` (``step_jacobian`` in ``x0``'s dtype, then float64) are multiplied
    along the trajectory; after each product the running matrix is divided by its Frobenius norm and
    the log of that norm is accumulated, so long horizons neither overflow nor underflow. Singular values
    at or below ``rank_rtol * sigma_max`` (default ``n * eps`` of ``x0``'s dtype, the ``matrix_rank`` rule) cannot be
    told from rounding noise and give ``-inf``; this is how the exact null directions of normalization show.
    Memory: three n x n float64 matrices (8 n^2 bytes each); time: T dense n^3 products plus one SVD.
    """
    x = _check_args(x0, T, null_dims)
    n = x.numel()
    rtol = n * torch.finfo(x.dtype).eps if rank_rtol is None else rank_rtol
    prod = torch.eye(n, dtype=torch.float64, device=x.device)
    log_scale = 0.0
    for t in range(T):
        J = step_jacobian(step, x, mode=mode, chunk_size=chunk_size).to(torch.float64)
        _check_finite(J, "one-step Jacobian", t)
        prod = J @ prod
        del J
        scale = float(torch.linalg.matrix_norm(prod))
        if scale == 0.0:
            exponents = torch.full((n,), -math.inf, dtype=torch.float64)
            return _summarise(exponents, n, "exact", T, n, null_dims)
        prod /= scale
        log_scale += math.log(scale)
        x = step(x).detach()
    sv = torch.linalg.svdvals(prod).cpu()
    resolved = sv > rtol * sv[0]
    logs = torch.where(resolved, torch.log(torch.where(resolved, sv, 1.0)), -math.inf)
    return _summarise((logs + log_scale) / T, n, "exact", T, n, null_dims)


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
