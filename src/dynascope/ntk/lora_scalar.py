"""LoRA's FT-effective kernel as a scalar multiple of FT's (the paper's Proposition 4.4, §5).

In the linear model f(x) = V B x + b with LoRA on B — φ(x) = B₀x + s·B_L A x, A ∈ R^{r×d} with i.i.d.
N(0, σ²) entries, B_L = 0 at initialisation, s = α/r — the kernels are F_FT(x,x') = ⟨x,x'⟩ VVᵀ and
F_LoRA(x,x') = s²⟨Ax, Ax'⟩ VVᵀ (the ∂/∂A term vanishes since B_L = 0), so F_LoRA ≈ s²σ²r·F_FT with a
Johnson–Lindenstrauss error of order 1/√r. :func:`linear_lora_table` computes both kernels exactly by
automatic differentiation of the two models (not from these formulas) and tabulates the error over r.
For Transformers, where LoRA covers only some projections, :func:`lora_trace_ratio` reports
tr(F_LoRA)/tr(F_FT) next to the linear-model factor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.func import jacrev

from dynascope.errors import ConfigError
from dynascope.ntk.functional import Batch, KernelModel
from dynascope.ntk.trace import JacobianOperator, hutchinson_trace

DEFAULT_RANKS = tuple(2**i for i in range(10))  # 1 … 512


def _kernel(fn, params: dict[str, Tensor], x: Tensor) -> Tensor:
    """Θ = J Jᵀ of fn(params, x) [N, C] over ``params``: (N, C, N, C) float64."""
    jac = jacrev(fn)(params, x)
    n, c = x.shape[0], jac[next(iter(params))].shape[1]
    flat = torch.cat([jac[k].reshape(n * c, -1) for k in params], dim=1)
    return (flat @ flat.T).reshape(n, c, n, c)


def linear_ft_kernel(v: Tensor, b0: Tensor, x: Tensor) -> Tensor:
    """F_FT of f = V B x over B (exact, by jacrev)."""
    return _kernel(lambda p, inp: inp @ p["B"].T @ v.T, {"B": b0}, x)


def linear_lora_kernel(v: Tensor, b0: Tensor, a: Tensor, b_lora: Tensor, scale: float, x: Tensor) -> Tensor:
    """F_LoRA of f = V (B₀ + s B_L A) x over (A, B_L) (exact, by jacrev)."""

    def fn(p: dict[str, Tensor], inp: Tensor) -> Tensor:
        return (inp @ b0.T + scale * (inp @ p["A"].T) @ p["B_L"].T) @ v.T

    return _kernel(fn, {"A": a, "B_L": b_lora}, x)


@dataclass(frozen=True)
class LoraScalarRow:
    """One rank of the table: the factor s²σ²r and the errors of F_LoRA against it (mean and sd over seeds)."""

    rank: int
    factor: float
    error: float  # ‖F_LoRA − s²σ²r F_FT‖ / ‖F_FT‖
    relative_error: float  # the same divided by s²σ²r: the JL error, ≈ 1/√r
    relative_error_sd: float


def linear_lora_table(
    ranks: Sequence[int] = DEFAULT_RANKS,
    *,
    n: int = 8,
    d: int = 64,
    h: int = 32,
    num_labels: int = 3,
    sigma: float = 0.1,
    alpha: float | None = None,
    num_seeds: int = 5,
    seed: int = 0,
) -> list[LoraScalarRow]:
    """Exact F_LoRA vs s²σ²r·F_FT in the linear model for each rank r (s = α/r; α = r, i.e. s = 1, by default)."""
    if num_seeds < 2 or any(r < 1 for r in ranks) or sigma <= 0:
        raise ConfigError(f"need num_seeds >= 2, ranks >= 1 and sigma > 0; got {num_seeds}, {list(ranks)}, {sigma}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    v = torch.randn(num_labels, h, generator=gen, dtype=torch.float64)
    b0 = torch.randn(h, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    f_ft = linear_ft_kernel(v, b0, x)
    ft_norm = float(torch.linalg.vector_norm(f_ft))
    rows = []
    for r in ranks:
        scale = (r if alpha is None else alpha) / r
        factor = scale**2 * sigma**2 * r
        errors = []
        for _ in range(num_seeds):
            a = sigma * torch.randn(r, d, generator=gen, dtype=torch.float64)
            f_lora = linear_lora_kernel(v, b0, a, torch.zeros(h, r, dtype=torch.float64), scale, x)
            errors.append(float(torch.linalg.vector_norm(f_lora - factor * f_ft)) / ft_norm)
        err = np.asarray(errors)
        rel = err / factor
        rows.append(LoraScalarRow(r, factor, float(err.mean()), float(rel.mean()), float(rel.std())))
    return rows


def decay_exponent(rows: Sequence[LoraScalarRow]) -> float:
    """Least-squares slope of log(relative error) against log r (≈ −0.5 for the JL rate)."""
    if len(rows) < 2:
        raise ConfigError("need at least two ranks to fit a decay exponent")
    logs_r = np.log([row.rank for row in rows])
    logs_e = np.log([row.relative_error for row in rows])
    return float(np.polyfit(logs_r, logs_e, 1)[0])


def lora_trace_ratio(
    ft_model: KernelModel, lora_model: KernelModel, batch: Batch, num_probes: int | None = None, seed: int = 0
) -> dict[str, float]:
    """tr(F_LoRA)/tr(F_FT) on a batch: exact (C VJPs per example) or Hutchinson with ``num_probes``.

    ``ft_model`` and ``lora_model`` come from two copies of one classifier, the second after ``apply_lora``
    (a ``KernelModel`` holds its live backbone, which LoRA injection rewrites in place); the head and φ agree
    at initialisation since B_L = 0.
    """

    def trace(model: KernelModel, offset: int) -> float:
        op = JacobianOperator(model, batch)
        if num_probes is None:
            return op.exact_trace()
        return hutchinson_trace(op, num_probes, seed + offset).estimate

    tr_ft, tr_lora = trace(ft_model, 0), trace(lora_model, 1)
    return {"trace_ft": tr_ft, "trace_lora": tr_lora, "ratio": tr_lora / tr_ft}
