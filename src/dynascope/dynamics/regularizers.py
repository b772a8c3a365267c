"""Training regularizers of the paper (note §4.1): E-single, E-multi and Spec; loss = CE + λ·R.

Pure functions on weight matrices in the paper's row-vector layout (``W_paper = linear.weight.T``), plus
``regularizer(model, name)`` that pulls those matrices out of a model.
- E-single (H = 1): R = |W^V W^O − (A + Aᵀ)/2|_F², A = W^Q W^Kᵀ; R = 0 is the Prop. 4.1 condition.
- E-multi: R = Σ_h |W^V_h W^O_h − (W^V_h W^O_h)ᵀ|_F²; W^V, W^O are kept orthogonal by the model
  (``ModelConfig.orthogonal_vo``); R = 0 makes every per-head value-output product symmetric.
- Spec (Lewandowski et al.): R = Σ_W (σ_max(W)² − 1)² + Σ_b |b|⁴ over the SA weights and biases, with
  σ_max the exact matrix 2-norm (cheap at D ≤ 512; differentiable through the SVD).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from dynascope.dynamics.layers import MultiHeadSelfAttention
from dynascope.dynamics.models import LoopedSA
from dynascope.errors import ConfigError

REGULARIZERS = ("none", "e_single", "e_multi", "spec")


def spec_penalty(weights: Iterable[Tensor], biases: Iterable[Tensor]) -> Tensor:
    """Σ_W (σ_max(W)² − 1)² + Σ_b |b|₂⁴."""
    terms = [(torch.linalg.matrix_norm(w, ord=2) ** 2 - 1.0) ** 2 for w in weights]
    terms += [b.pow(2).sum() ** 2 for b in biases]
    if not terms:
        raise ValueError("spec_penalty needs at least one weight or bias; found none")
    return torch.stack(terms).sum()


def e_single_penalty(wq: Tensor, wk: Tensor, wv: Tensor, wo: Tensor) -> Tensor:
    """|W^V W^O − sym(W^Q W^Kᵀ)|_F² for a single head (all D × D in the paper's layout)."""
    a = wq @ wk.T
    return (wv @ wo - 0.5 * (a + a.T)).pow(2).sum()


def e_multi_penalty(value_output: Sequence[Tensor]) -> Tensor:
    """Σ_h |M_h − M_hᵀ|_F² over the per-head value-output products M_h = W^V_h W^O_h."""
    if not value_output:
        raise ValueError("e_multi_penalty needs at least one head; found none")
    return torch.stack([(m - m.T).pow(2).sum() for m in value_output]).sum()


def regularizer(model: LoopedSA, name: str) -> Tensor:
    """The regularizer ``name`` (none | e_single | e_multi | spec) evaluated on ``model``'s SA block."""
    if name not in REGULARIZERS:
        raise ConfigError(f"regularizer must be one of {REGULARIZERS}, got {name!r}")
    if name == "none":
        return model.eta.new_zeros(())
    if name == "spec":
        return spec_penalty(model.sa_weights().values(), model.sa_biases().values())
    msa = model.msa
    if not isinstance(msa, MultiHeadSelfAttention):
        raise ConfigError(f"{name} needs the free multi-head attention (model itrsa/akorn), got {type(msa).__name__}")
    if name == "e_single":
        if msa.heads != 1:
            raise ConfigError(f"e_single is defined for one head, got heads={msa.heads}")
        w = msa.weights()
        return e_single_penalty(w["wq"], w["wk"], w["wv"], w["wo"])
    return e_multi_penalty(msa.value_output())
