"""Glue between a trained looped model and the Jacobian / Lyapunov / energy math (paper note §2–§4.2).

Everything runs in float64 on one board at a time, on the flat state map ``x ↦ vec step(X, C)`` with the
weights and C fixed (the state map only, not the readout: note §6.7). Per board:
- one-step Jacobian eigenvalues at t = ``t_jacobian`` (all of them, dense, when n = 81·D ≤ ``dense_max``;
  else the ``eig_k`` largest in modulus by Arnoldi), its spectral norm (exact from the dense Jacobian when
  n ≤ ``dense_max``, else power iteration);
- the Prop. 5.1 bound on the real state: R = min norm of the normalised blocks (tokens, or oscillators for
  *_osc norms) of Y = X + ηΔX, γ_max = max|γ|, ‖J_MSA‖₂ (dense or power iteration, as for ‖J‖₂);
  for ItrSA-type updates only
  (ΔX = C + MSA(X)), since AKOrN's Ω and Proj change the chain rule;
- Lyapunov exponents of the ``lyap_steps``-step map from X^(0): exact (SVD of the chained Jacobian) when
  n ≤ ``exact_max_dim``, else Benettin top-``benettin_k`` after ``benettin_sweeps`` forward–backward
  sweeps (which make Benettin return the same finite-T exponents as the exact route). null_dims = number
  of normalised blocks
  (S·D/N: S for token-wise norms, S·D/N for oscillator-wise, 0 without norm): each block has an exact
  radial null direction. ``mean`` is the mean over the other ``mean_over`` = n − null_dims exponents: the
  paper's λ̄ = (1/M) Σ λ_i with M read as the number of exponents that are not normalization nulls (with
  all n it is −∞). It comes from the QR volume (``dynamics.lyapunov``), so it stays finite where the exact
  product cannot resolve single exponents below about λ_max − ln(1/(n·eps))/T (≈ λ_max − 1.7 at T = 16; those
  are −inf in ``top`` and counted in ``unresolved``). Above ``exact_max_dim`` it is the mean of the Benettin
  top k (``mean_over`` = k) unless ``full_mean``: then Benettin with k = n − null_dims tangents started in the
  row space of J(x_0), which gives the same exact mean matrix-free (memory O(n²));
- along t = 0..``trace_steps``: pseudo-energy −⟨X, C + MSA(X)⟩, cos(MSA(X), J_MSA X), the model's own
  energy (symmetric models), and at t in ``ci_times`` the contribution index of J_MSA + J_MSAᵀ (top 2 %;
  dense ``eigh`` when n ≤ ``dense_max``, else Lanczos).
A board whose trajectory overflows (no normalization) reports ``diverged_at`` = the first non-finite step
and NaN for what needs the states beyond it.
Pure: the figures of these results are drawn by :mod:`dynascope.report.dynamics_plots`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.func import jvp

from dynascope.dynamics.jacobian import Step, step_jacobian
from dynascope.dynamics.layers import oscillator_blocks
from dynascope.dynamics.lyapunov import lyapunov_benettin, lyapunov_exact, row_space_basis
from dynascope.dynamics.models import AKOrN, LoopedSA, SymmetricItrSA
from dynascope.dynamics.spectral import (
    SpectralNorm,
    contribution_index,
    contribution_index_op,
    cosine,
    leading_eigenvalues,
    normalization_bound,
    pseudo_energy,
    spectral_norm,
)
from dynascope.errors import ConfigError


@dataclass(frozen=True)
class AnalysisConfig:
    """What to measure; see the module docstring. ``boards`` test boards are analysed (the first ones)."""

    boards: int = 1
    t_jacobian: int = 16
    lyap_steps: int = 16
    trace_steps: int = 64
    ci_times: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64)
    dense_max: int = 4096
    exact_max_dim: int = 4096
    eig_k: int = 128
    benettin_k: int = 64
    benettin_sweeps: int = 3
    power_iters: int = 300
    full_mean: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ci_times", tuple(int(t) for t in self.ci_times))
        for name in ("boards", "t_jacobian", "lyap_steps", "trace_steps", "eig_k", "benettin_k", "power_iters"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if int(self.benettin_sweeps) < 0:
            raise ConfigError(f"benettin_sweeps must be >= 0, got {self.benettin_sweeps!r}")
        if any(t < 0 or t > self.trace_steps for t in self.ci_times):
            raise ConfigError(f"ci_times must lie in [0, trace_steps={self.trace_steps}], got {self.ci_times}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for analysis.json)."""
        out = asdict(self)
        out["ci_times"] = list(self.ci_times)
        return out


def norm_blocks(model: LoopedSA) -> int:
    """Channels per normalised block (D for token-wise norms, N for oscillator-wise), 0 without norm."""
    return 0 if model.norm.kind == "none" else model.norm.block


def null_dims(model: LoopedSA) -> int:
    """Exact null directions of one step: one radial direction per normalised block (S·D/N), 0 without norm."""
    block = norm_blocks(model)
    return 0 if block == 0 else 81 * model.config.width // block


class _FlatMaps:
    """Flat float64 views of one model on one board: the step, the MSA block and the drive."""

    def __init__(self, model: LoopedSA, puzzles: Tensor) -> None:
        self.model = model
        self.width = model.config.width
        with torch.no_grad():
            self.c = model.conditioning(puzzles[None])

    def shape(self, x: Tensor) -> Tensor:
        return x.reshape(1, 81, self.width)

    def step(self, x: Tensor) -> Tensor:
        return self.model.step(self.shape(x), self.c).reshape(-1)

    def msa(self, x: Tensor) -> Tensor:
        return self.model.msa(self.shape(x)).reshape(-1)

    def drive(self, x: Tensor) -> Tensor:
        return self.model.drive(self.shape(x), self.c).reshape(-1)


def _bound(model: LoopedSA, maps: _FlatMaps, x: Tensor, j_msa: float) -> dict[str, Any]:
    """Prop. 5.1 on state ``x``: R, γ_max, η, ‖J_MSA‖ and the bound (None where it does not apply)."""
    if model.norm.kind == "none" or isinstance(model, AKOrN):
        return {"applies": False, "bound": None}
    with torch.no_grad():
        eta = float(model.eta)
        y = maps.shape(x) + eta * maps.drive(x).reshape(1, 81, -1)
        radius = float(oscillator_blocks(y, model.norm.block).norm(dim=-1).min())
    gamma_max = model.norm.gamma_max()
    return {
        "applies": True,
        "R": radius,
        "gamma_max": gamma_max,
        "eta": eta,
        "j_msa_norm": j_msa,
        "bound": normalization_bound(gamma_max, radius, eta, j_msa),
    }


def _all_or_none(flags: Sequence[bool | None]) -> bool | None:
    """True/False over the boards where a check applies; None where it applies to none."""
    known = [f for f in flags if f is not None]
    return all(known) if known else None


def _exact_norm(fn: Step, x: Tensor) -> SpectralNorm:
    """‖J‖₂ of ``fn`` at ``x`` from the dense Jacobian (for small n, where it beats power iteration)."""
    value = float(torch.linalg.matrix_norm(step_jacobian(fn, x).to(torch.float64), ord=2))
    return SpectralNorm(value=value, converged=True, iters=0)


def analyze_board(model: LoopedSA, puzzles: Tensor, config: AnalysisConfig, seed: int = 0) -> dict[str, Any]:
    """All measurements on one board (``puzzles`` [81]); ``model`` must be float64. Plain dict + arrays."""
    maps = _FlatMaps(model, puzzles)
    gen = torch.Generator().manual_seed(seed)
    n = 81 * model.config.width
    horizon = max(config.t_jacobian, config.trace_steps, config.lyap_steps)
    with torch.no_grad():
        x0 = model.init_state(puzzles[None], gen).reshape(-1)
        states = [x0]
        for _ in range(horizon):
            states.append(maps.step(states[-1]))
    finite = next((t for t, x in enumerate(states) if not torch.isfinite(x).all()), len(states))
    if finite <= max(config.t_jacobian, config.lyap_steps):
        return _diverged(model, n, finite, config)

    xj = states[config.t_jacobian]
    dense = n <= config.dense_max
    eig = leading_eigenvalues(maps.step, xj, k=n if dense else min(config.eig_k, n - 2), dense_max=config.dense_max)
    if dense:
        norm = _exact_norm(maps.step, xj)
        j_msa = _exact_norm(maps.msa, xj)
    else:
        norm = spectral_norm(maps.step, xj, iters=config.power_iters, seed=seed)
        j_msa = spectral_norm(maps.msa, xj, iters=config.power_iters, seed=seed)
    bound = _bound(model, maps, xj, j_msa.value)
    bound["measured"] = norm.value
    if bound["applies"]:
        bound["holds"] = bool(norm.value <= bound["bound"] * (1 + 1e-6))

    nulls = null_dims(model)
    if n <= config.exact_max_dim:
        lyap = lyapunov_exact(maps.step, x0, config.lyap_steps, null_dims=nulls)
        mean, mean_over = lyap.mean, n - nulls
    else:
        k_b = min(config.benettin_k, n - nulls)
        lyap = lyapunov_benettin(
            maps.step, x0, config.lyap_steps, k=k_b, seed=seed, null_dims=nulls, sweeps=config.benettin_sweeps
        )
        mean, mean_over = lyap.mean, k_b
        if config.full_mean:
            start = row_space_basis(maps.step, x0, n - nulls, seed=seed)
            full = lyapunov_benettin(maps.step, x0, config.lyap_steps, k=n - nulls, q0=start, null_dims=nulls)
            mean, mean_over = full.mean, n - nulls

    energy, cos, own_energy = [], [], []
    for x in states[: min(config.trace_steps + 1, finite)]:
        msa_x, jx = jvp(maps.msa, (x,), (x,))
        with torch.no_grad():
            energy.append(float(pseudo_energy(x, maps.drive(x))))
            cos.append(float(cosine(msa_x.detach(), jx.detach())))
            if isinstance(model, SymmetricItrSA):
                own_energy.append(float(model.energy(maps.shape(x))[0]))
    ci_times = [t for t in config.ci_times if t < finite]
    if dense:
        ci = {t: contribution_index(step_jacobian(maps.msa, states[t]), states[t]) for t in ci_times}
    else:
        ci = {t: contribution_index_op(maps.msa, states[t], seed=seed) for t in ci_times}

    return {
        "n": n,
        "eigenvalues": {
            "real": eig.real.tolist(),
            "imag": eig.imag.tolist(),
            "count": len(eig),
            "dense": dense,
        },
        "max_abs_eigenvalue": float(eig.abs().max()),
        "spectral_norm": {"value": norm.value, "method": "dense" if dense else f"power ({norm.iters} iterations)"},
        "j_msa_norm": {"value": j_msa.value, "converged": j_msa.converged},
        "normalization_bound": bound,
        "lyapunov": {
            "method": lyap.method,
            "T": lyap.T,
            "k": lyap.k,
            "null_dims": lyap.null_dims,
            "unresolved": lyap.unresolved,
            "max": lyap.max,
            "mean": mean,
            "mean_over": mean_over,
            "top": [float(v) for v in lyap.exponents[: min(32, len(lyap.exponents))]],
        },
        "pseudo_energy": energy,
        "cos_msa_jx": cos,
        "model_energy": own_energy or None,
        "contribution_index": {str(t): v for t, v in ci.items()},
        "diverged_at": None if finite == len(states) else finite,
    }


def _diverged(model: LoopedSA, n: int, finite: int, config: AnalysisConfig) -> dict[str, Any]:
    """The result of a board whose trajectory overflows before the Jacobian / Lyapunov horizon: NaN metrics."""
    nan = float("nan")
    return {
        "n": n,
        "eigenvalues": {"real": [], "imag": [], "count": 0, "dense": n <= config.dense_max},
        "max_abs_eigenvalue": nan,
        "spectral_norm": {"value": nan, "method": "none (diverged)"},
        "j_msa_norm": {"value": nan, "converged": False},
        "normalization_bound": {"applies": False, "bound": None, "measured": nan},
        "lyapunov": {
            "method": "none (diverged)",
            "T": config.lyap_steps,
            "k": 0,
            "null_dims": null_dims(model),
            "unresolved": 0,
            "max": nan,
            "mean": nan,
            "mean_over": 0,
            "top": [],
        },
        "pseudo_energy": [],
        "cos_msa_jx": [],
        "model_energy": None,
        "contribution_index": {},
        "diverged_at": finite,
    }


def analyze_model(model: LoopedSA, puzzles: Tensor, config: AnalysisConfig) -> dict[str, Any]:
    """``analyze_board`` on the first ``config.boards`` boards of ``puzzles`` [N, 81], plus summaries.

    Runs on the model's device, in float64 (a copy; ``model`` is untouched).
    """
    m64 = copy.deepcopy(model).to(torch.float64).eval()
    for p in m64.parameters():
        p.requires_grad_(False)
    count = min(config.boards, len(puzzles))
    device = next(m64.parameters()).device
    boards = [analyze_board(m64, puzzles[i].long().to(device), config, seed=config.seed + i) for i in range(count)]
    summary = {
        "lyapunov_max": float(np.mean([b["lyapunov"]["max"] for b in boards])),
        "lyapunov_mean": float(np.mean([b["lyapunov"]["mean"] for b in boards])),
        "spectral_norm": float(np.mean([b["spectral_norm"]["value"] for b in boards])),
        "max_abs_eigenvalue": float(np.mean([b["max_abs_eigenvalue"] for b in boards])),
        "bound_holds": _all_or_none([b["normalization_bound"].get("holds") for b in boards]),
    }
    return {"config": config.to_dict(), "null_dims": null_dims(m64), "summary": summary, "boards": boards}
