"""Kernel statistics of the paper's Table 2 and figures, on (N, C, N, C) kernels (float64).

* Rank of the N·C × N·C matrix: singular values above ``rtol · σ_max``, with the default
  ``rtol = N·C · eps`` (NumPy's ``matrix_rank`` rule) where eps is that of the dtype the Jacobians were
  computed in (float32 for a float32 model: the kernel is accumulated in float64 but cannot be more
  precise than its factors). A multinomial logistic-regression
  head (scikit-learn) has rows summing to zero, so Σ_c g_c ≡ 0 and F has rank at most N(C−1); P = (ΦΦᵀ+1)⊗I_C
  has rank C·rank(ΦΦᵀ+1).
* Frobenius norm (FN), singular values normalised by the largest (descending).
* The N×N matrix of nuclear (trace) norms of the C×C blocks K(x_i, x_j), rows/cols sorted by class.
* FT ratio: mean_x ‖Σ_i F(x,x_i) δ_i‖ / ‖Σ_i (P+F)(x,x_i) δ_i‖ with δ_i = e_{y_i} − softmax(f₀(x_i)):
  the share of the first-step logit change that comes from the FT-effective component.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dynascope.errors import ConfigError
from dynascope.ntk.components import as_matrix


def singular_values(kernel: Tensor) -> Tensor:
    """Singular values of the N·C × N·C matrix, descending."""
    return torch.linalg.svdvals(as_matrix(kernel).double())


def default_rtol(kernel: Tensor, precision: torch.dtype = torch.float64) -> float:
    """max(rows, cols) · eps(precision): the rank tolerance for Jacobians computed in ``precision``."""
    n_a, c, n_b, _ = kernel.shape
    return max(n_a * c, n_b * c) * float(torch.finfo(precision).eps)


def kernel_rank(kernel: Tensor, rtol: float | None = None) -> int:
    """Numerical rank: σ > rtol·σ_max, default rtol = max(rows, cols)·eps(float64) (see ``default_rtol``)."""
    matrix = as_matrix(kernel).double()
    sv = torch.linalg.svdvals(matrix)
    if sv.numel() == 0 or float(sv[0]) == 0.0:
        return 0
    if rtol is None:
        rtol = default_rtol(kernel)
    return int((sv > rtol * sv[0]).sum())


def frobenius_norm(kernel: Tensor) -> float:
    """‖K‖_F of the N·C × N·C matrix (the paper's FN)."""
    return float(torch.linalg.vector_norm(kernel.double()))


def normalized_spectrum(kernel: Tensor) -> Tensor:
    """Singular values divided by the largest (all zeros for the zero kernel)."""
    sv = singular_values(kernel)
    return sv / sv[0] if float(sv[0]) > 0 else sv


def block_nuclear_norms(kernel: Tensor, labels: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nuclear norms of the C×C blocks of a square (N, C, N, C) kernel, grouped by class.

    Returns (matrix [N, N] with rows/cols sorted by label (stable), sorted labels, the sorting order).
    """
    labels = np.asarray(labels)
    if kernel.shape[0] != kernel.shape[2] or kernel.shape[0] != labels.shape[0]:
        raise ConfigError(
            f"expected a square (N, C, N, C) kernel and N labels, got {tuple(kernel.shape)} and {labels.shape}"
        )
    norms = torch.linalg.matrix_norm(kernel.double().permute(0, 2, 1, 3), ord="nuc").cpu().numpy()
    order = np.argsort(labels, kind="stable")
    return norms[np.ix_(order, order)], labels[order], order


def first_step_residuals(logits: np.ndarray | Tensor, labels: np.ndarray | Tensor) -> Tensor:
    """δ_i = e_{y_i} − softmax(f₀(x_i)), float64 [N, C]."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ConfigError(f"expected logits [N, C] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    return torch.nn.functional.one_hot(labels, logits.shape[1]).double() - torch.softmax(logits, dim=1)


def ft_ratio(pre: Tensor, ft: Tensor, delta: Tensor) -> float:
    """mean_x ‖Σ_i F(x,x_i) δ_i‖ / ‖Σ_i (P+F)(x,x_i) δ_i‖ over the rows x of the kernels."""
    if pre.shape != ft.shape or delta.shape != (pre.shape[2], pre.shape[3]):
        raise ConfigError(
            f"expected P and F of equal shape (N_A, C, N, C) and δ [N, C], "
            f"got {tuple(pre.shape)}, {tuple(ft.shape)}, {tuple(delta.shape)}"
        )
    delta = delta.double()
    moved_ft = torch.einsum("xcid,id->xc", ft.double(), delta)
    moved_all = torch.einsum("xcid,id->xc", (pre + ft).double(), delta)
    return float((moved_ft.norm(dim=1) / moved_all.norm(dim=1)).mean())


@dataclass(frozen=True)
class KernelSummary:
    """Rank, Frobenius norm and trace of one kernel."""

    rank: int
    frobenius: float
    trace: float

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready form."""
        return {"rank": self.rank, "frobenius": self.frobenius, "trace": self.trace}


def summarize(kernel: Tensor, rtol: float | None = None) -> KernelSummary:
    """Rank (see ``kernel_rank``), FN and trace of a square kernel."""
    trace = float(torch.trace(as_matrix(kernel).double()))
    return KernelSummary(kernel_rank(kernel, rtol), frobenius_norm(kernel), trace)
