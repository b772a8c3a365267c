"""The paper's Table 2 for one classifier state: statistics and solver accuracies of P, F and P + F.

Pure: takes the train×train and eval×train kernels, the labels and the initial training logits, and
returns JSON-ready statistics plus the arrays of the run directory (normalised spectra, class-sorted
block nuclear norms).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dynascope.ntk.solve import KernelLogistic, KernelRidge, KernelRowLogistic
from dynascope.ntk.stats import (
    block_nuclear_norms,
    default_rtol,
    first_step_residuals,
    ft_ratio,
    normalized_spectrum,
    summarize,
)

KERNELS = ("pre", "ft", "total")


def _solver_scores(
    train: Tensor, evals: Tensor, y_train: np.ndarray, y_eval: np.ndarray, solvers: tuple[str, ...]
) -> dict[str, float]:
    """Flat accuracies ``{solver}_acc_{train|test}`` (flat scalars, so report tables can show them)."""
    fitted: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn convergence chatter on unscaled kernels (the paper's protocol)
        if "paper" in solvers:
            fitted["row_argmax"] = fitted["paper_row"] = KernelRowLogistic().fit(train, y_train)
        if "ridge" in solvers:
            fitted["ridge"] = KernelRidge().fit(train, y_train)
        if "logistic" in solvers:
            fitted["kernel_logistic"] = KernelLogistic().fit(train, y_train)
    out: dict[str, float] = {}
    for name, solver in fitted.items():
        score = solver.paper_row_accuracy if name == "paper_row" else solver.score
        out[f"{name}_acc_train"] = score(train, y_train)
        out[f"{name}_acc_test"] = score(evals, y_eval)
    return out


def kernel_table(
    pre: Tensor,
    ft: Tensor,
    pre_eval: Tensor,
    ft_eval: Tensor,
    y_train: np.ndarray,
    y_eval: np.ndarray,
    logits_train: np.ndarray,
    *,
    solvers: tuple[str, ...] = ("paper", "ridge", "logistic"),
    precision: torch.dtype = torch.float64,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Statistics per kernel (``pre``/``ft``/``total``: rank, FN, trace, solver accuracies) and the FT ratio.

    Solvers: ``paper`` (``paper_row_acc_*``: the paper's row-wise binary accuracy, and ``row_argmax_acc_*``),
    ``ridge`` (``ridge_acc_*``, pseudo-inverse) and ``logistic`` (``kernel_logistic_acc_*``).

    ``precision`` is the dtype of the model's Jacobians; it sets the rank tolerance (``stats.default_rtol``).
    Returns (stats, arrays) where arrays holds ``{k}_sv``, ``{k}_nuclear`` and ``labels_sorted``.
    """
    y_train, y_eval = np.asarray(y_train), np.asarray(y_eval)
    kernels = {"pre": (pre, pre_eval), "ft": (ft, ft_eval), "total": (pre + ft, pre_eval + ft_eval)}
    stats: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, (train, evals) in kernels.items():
        stats[name] = {
            **summarize(train, default_rtol(train, precision)).to_dict(),
            **_solver_scores(train, evals, y_train, y_eval, solvers),
        }
        arrays[f"{name}_sv"] = normalized_spectrum(train).cpu().numpy()
        nuclear, labels_sorted, _ = block_nuclear_norms(train, y_train)
        arrays[f"{name}_nuclear"] = nuclear
        arrays["labels_sorted"] = labels_sorted
    delta = first_step_residuals(logits_train, y_train)
    stats["ft"]["ft_ratio"] = ft_ratio(pre, ft, delta)
    stats["ft_ratio"] = stats["ft"]["ft_ratio"]
    stats["ft_share_of_trace"] = stats["ft"]["trace"] / stats["total"]["trace"] if stats["total"]["trace"] else None
    stats["rank_rtol"] = default_rtol(pre, precision)
    stats["delta_norm"] = float(torch.linalg.vector_norm(delta))
    return stats, arrays
