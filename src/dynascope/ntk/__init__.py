"""Empirical NTK of f(x) = V φ(x) + b: P (pre-train-effective) and F (FT-effective) components, exact and blocked,
matrix-free trace estimates, kernel statistics, kernel solvers and LoRA's scalar factor.

Pure functions on tensors and callables (nothing here reads files or prints, except the ``KernelStore`` in
``checkpoint`` that writes finished blocks). Forward-mode AD needs eager attention
(``load_backbone(..., attn_implementation="eager")``).
"""

from dynascope.ntk.blocks import default_block, resolve_partition
from dynascope.ntk.checkpoint import CheckpointFolder
from dynascope.ntk.components import (
    KernelStore,
    NTKComponents,
    as_matrix,
    ntk_components,
    ntk_train_eval,
    pre_kernel,
)
from dynascope.ntk.functional import KernelModel, kernel_model, require_eager
from dynascope.ntk.lora_scalar import decay_exponent, linear_lora_table, lora_trace_ratio
from dynascope.ntk.solve import KernelLogistic, KernelRidge, KernelRowLogistic
from dynascope.ntk.stats import (
    block_nuclear_norms,
    first_step_residuals,
    frobenius_norm,
    ft_ratio,
    kernel_rank,
    normalized_spectrum,
    summarize,
)
from dynascope.ntk.summary import kernel_table
from dynascope.ntk.trace import JacobianOperator, TraceEstimate, block_traces, hutchinson_trace, hutchpp_trace

__all__ = [
    "CheckpointFolder",
    "JacobianOperator",
    "KernelLogistic",
    "KernelModel",
    "KernelRidge",
    "KernelRowLogistic",
    "KernelStore",
    "NTKComponents",
    "TraceEstimate",
    "as_matrix",
    "block_nuclear_norms",
    "block_traces",
    "decay_exponent",
    "default_block",
    "first_step_residuals",
    "frobenius_norm",
    "ft_ratio",
    "hutchinson_trace",
    "hutchpp_trace",
    "kernel_model",
    "kernel_rank",
    "kernel_table",
    "linear_lora_table",
    "lora_trace_ratio",
    "normalized_spectrum",
    "ntk_components",
    "ntk_train_eval",
    "pre_kernel",
    "require_eager",
    "resolve_partition",
    "summarize",
]
