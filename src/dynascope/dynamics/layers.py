"""Building blocks of the looped self-attention models (paper note §1): MSA, Π / RMSNorm, Proj, Omega, readout.

Conventions (paper note §1.1): a state is ``X`` of shape ``[B, S, D]`` with tokens as rows; a weight in the
paper's row-vector layout is ``W_paper = linear.weight.T`` (``y = x W + b``). Oscillator-wise operators split
each token into ``D / N`` consecutive blocks of ``N`` channels (``N = D`` is token-wise).

Every operation is written with plain tensor ops (no fused SDPA) so that float64, ``torch.func.jvp`` and
``vmap`` work through it (SDPA on CPU has no forward-mode AD). The one exception is opt-in:
``MultiHeadSelfAttention.fused = True`` (set by the training loop, never by the analyses) computes the attention
with ``scaled_dot_product_attention`` for float32 / bf16 / fp16 inputs, the same function up to rounding (≈ 1e-6)
and 1.6× faster forward + backward at S = 81, D_H = 16 on two CPU cores.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations


def oscillator_blocks(x: Tensor, size: int) -> Tensor:
    """View the last dim ``D`` of ``x`` as ``[D // size, size]`` oscillator blocks."""
    return x.reshape(*x.shape[:-1], x.shape[-1] // size, size)


def sphere_normalize(y: Tensor, osc_size: int, eps: float = 1e-6) -> Tensor:
    """Π^(osc): scale every block of ``osc_size`` channels to unit norm (``y / max(|y|, eps)``).

    Clamping the norm (rather than adding eps under the root) keeps Π exact for |y| > eps, so each block's
    Jacobian is exactly (I − ŷŷᵀ)/|y|: norm 1/|y| (Prop. 5.1) and an exact radial null direction.
    """
    blocks = oscillator_blocks(y, osc_size)
    return (blocks / blocks.norm(dim=-1, keepdim=True).clamp_min(eps)).reshape(y.shape)


def tangent_project(y: Tensor, x: Tensor, osc_size: int, eps: float = 1e-6) -> Tensor:
    """Proj_X(Y) per oscillator block: remove from ``y`` its component along the direction of ``x``.

    ``x`` need not be unit norm (AKOrN + RMSNorm keeps states of norm |γ|), so its direction is used.
    """
    xb = oscillator_blocks(sphere_normalize(x, osc_size, eps), osc_size)
    yb = oscillator_blocks(y, osc_size)
    return (yb - (yb * xb).sum(-1, keepdim=True) * xb).reshape(y.shape)


NORM_KINDS = ("none", "pi_token", "pi_osc", "rms_token", "rms_osc")


class StateNorm(nn.Module):
    """The state normalization: none, Π, or the paper's RMSNorm = Π(Y)·diag(γ) (γ ∈ R^D, init 1).

    ``*_token`` acts on whole tokens, ``*_osc`` on blocks of ``osc_size`` channels. This is the paper's
    convention (unit norm × γ), not ``torch.nn.RMSNorm`` (which is that times sqrt(D)).
    """

    def __init__(self, kind: str, width: int, osc_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        if kind not in NORM_KINDS:
            raise ValueError(f"norm kind must be one of {NORM_KINDS}, got {kind!r}")
        self.kind = kind
        self.block = width if kind.endswith("_token") else osc_size
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(width)) if kind.startswith("rms") else None

    def forward(self, y: Tensor) -> Tensor:
        """Normalise ``y`` ([..., D])."""
        if self.kind == "none":
            return y
        out = sphere_normalize(y, self.block, self.eps)
        return out * self.gamma if self.gamma is not None else out

    def gamma_max(self) -> float:
        """max_j |γ_j| (1 for Π; inf for no normalization, where Prop. 5.1 does not apply)."""
        if self.kind == "none":
            return math.inf
        return 1.0 if self.gamma is None else float(self.gamma.detach().abs().max())


class Omega(nn.Module):
    """AKOrN's natural-frequency term: each channel pair (x_{2k}, x_{2k+1}) ↦ ω·(x_{2k+1}, −x_{2k}).

    One global ω = |omg_param| with omg_param ∈ R² initialised to init_omg/sqrt(2)·(1, 1) (AKOrN's
    ``global_omg``); the map is linear and anti-symmetric.
    """

    def __init__(self, init_omg: float = 0.5, learn: bool = True) -> None:
        super().__init__()
        self.omg_param = nn.Parameter(torch.full((2,), init_omg / math.sqrt(2.0)), requires_grad=learn)

    def omega(self) -> Tensor:
        """The scalar frequency ω."""
        return self.omg_param.norm()

    def forward(self, x: Tensor) -> Tensor:
        """Ω X for ``x`` of shape [..., D] (D even)."""
        pairs = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
        rotated = torch.stack((pairs[..., 1], -pairs[..., 0]), dim=-1)
        return self.omega() * rotated.reshape(x.shape)


class MultiHeadSelfAttention(nn.Module):
    """MSA(X) = Σ_h softmax(β X W^Q_h W^K_hᵀ Xᵀ) X W^V_h W^O_h with biases, β = 1/sqrt(D/H).

    ``orthogonal_vo`` keeps W^V and W^O orthogonal through ``torch.nn.utils.parametrizations.orthogonal``
    (the E-multi setting, paper note §4.1).
    """

    def __init__(self, width: int, heads: int, orthogonal_vo: bool = False) -> None:
        super().__init__()
        self.width, self.heads = width, heads
        self.head_dim = width // heads
        self.beta = 1.0 / math.sqrt(self.head_dim)
        self.wq = nn.Linear(width, width)
        self.wk = nn.Linear(width, width)
        self.wv = nn.Linear(width, width)
        self.wo = nn.Linear(width, width)
        self.fused = False
        if orthogonal_vo:
            parametrizations.orthogonal(self.wv)
            parametrizations.orthogonal(self.wo)

    def forward(self, x: Tensor) -> Tensor:
        """MSA of ``x`` ([B, S, D]) → [B, S, D]: Q, K and V from one matmul with the stacked weights."""
        weight = torch.cat((self.wq.weight, self.wk.weight, self.wv.weight))
        bias = torch.cat((self.wq.bias, self.wk.bias, self.wv.bias))
        qkv = nn.functional.linear(x, weight, bias).reshape(*x.shape[:-1], 3, self.heads, self.head_dim)
        q, k, v = qkv.movedim(-3, 0).transpose(-3, -2).unbind(0)  # each [..., H, S, D_H]
        if self.fused and x.dtype != torch.float64:
            out = nn.functional.scaled_dot_product_attention(q, k, v, scale=self.beta)
        else:
            out = torch.softmax(self.beta * q @ k.transpose(-1, -2), dim=-1) @ v
        return self.wo(out.transpose(-3, -2).reshape(x.shape))

    def weights(self) -> dict[str, Tensor]:
        """The SA weight matrices in the paper's layout (D × D each): W^Q, W^K, W^V, W^O."""
        return {"wq": self.wq.weight.T, "wk": self.wk.weight.T, "wv": self.wv.weight.T, "wo": self.wo.weight.T}

    def biases(self) -> dict[str, Tensor]:
        """The SA bias vectors b^Q, b^K, b^V, b^O."""
        return {"bq": self.wq.bias, "bk": self.wk.bias, "bv": self.wv.bias, "bo": self.wo.bias}

    def value_output(self) -> list[Tensor]:
        """Per-head value-output products W^V_h W^O_h (D × D), the paper's W^V_h in Props. 4.1–4.2."""
        wv, wo, d = self.wv.weight.T, self.wo.weight.T, self.head_dim
        return [wv[:, h * d : (h + 1) * d] @ wo[h * d : (h + 1) * d, :] for h in range(self.heads)]

    def query_key(self) -> list[Tensor]:
        """Per-head query-key products A_h = W^Q_h W^K_hᵀ (D × D)."""
        wq, wk, d = self.wq.weight.T, self.wk.weight.T, self.head_dim
        return [wq[:, h * d : (h + 1) * d] @ wk[:, h * d : (h + 1) * d].T for h in range(self.heads)]


class SymmetricSelfAttention(nn.Module):
    """Energy-admitting SA (paper note §1.5, §6.6): per head A_h = W^Q_h W^Q_hᵀ and W^V_h W^O_h = A_h, no biases.

    ``subspaces=False`` (single head): W^Q free, so SA(X) = softmax(β X A Xᵀ) X A and the energy
    E_single(X) = −1/(2β) Σ_ij exp(β x_iᵀ A x_j) decreases along the projected flow (Prop. 4.1 with
    A symmetric; the asymmetric-A case of the proposition could not be verified and is not built).
    ``subspaces=True`` (multi-head): W^Q_h = U_h G_h with U = [U_1 … U_H] orthogonal (parametrised) and
    G_h ∈ R^{D_H×D_H} free, so every head lives in its own orthogonal subspace and
    E_multi(X) = Σ_h E_h(X) decreases along dX/dt = Σ_h SA_h(X) without projection (Prop. 4.2).
    """

    def __init__(self, width: int, heads: int, subspaces: bool) -> None:
        super().__init__()
        self.width, self.heads, self.subspaces = width, heads, subspaces
        self.head_dim = width // heads
        self.beta = 1.0 / math.sqrt(self.head_dim)
        if subspaces:
            self.frame = nn.Linear(width, width, bias=False)
            parametrizations.orthogonal(self.frame)
            self.mix = nn.Parameter(torch.randn(heads, self.head_dim, self.head_dim) / math.sqrt(self.head_dim))
        else:
            self.wq = nn.Linear(width, width, bias=False)

    def query_weights(self) -> list[Tensor]:
        """W^Q_h (D × D_H) of every head; W^K_h = W^Q_h and W^V_h W^O_h = W^Q_h W^Q_hᵀ."""
        d = self.head_dim
        if self.subspaces:
            u = self.frame.weight.T
            return [u[:, h * d : (h + 1) * d] @ self.mix[h] for h in range(self.heads)]
        w = self.wq.weight.T
        return [w[:, h * d : (h + 1) * d] for h in range(self.heads)]

    def forward(self, x: Tensor) -> Tensor:
        """Σ_h softmax(β Q_h Q_hᵀ) Q_h W^Q_hᵀ with Q_h = X W^Q_h."""
        out = torch.zeros_like(x)
        for wq in self.query_weights():
            q = x @ wq
            att = torch.softmax(self.beta * q @ q.transpose(-1, -2), dim=-1)
            out = out + (att @ q) @ wq.T
        return out

    def energy(self, x: Tensor) -> Tensor:
        """−Σ_h 1/(2β) Σ_ij exp(β x_iᵀ A_h x_j), one value per batch element ([B])."""
        total = x.new_zeros(x.shape[:-2])
        for wq in self.query_weights():
            q = x @ wq
            total = total - torch.exp(self.beta * q @ q.transpose(-1, -2)).sum((-1, -2)) / (2 * self.beta)
        return total

    def weights(self) -> dict[str, Tensor]:
        """The free weight matrices (for Spec): W^Q (single head) or the frame U and each G_h."""
        if self.subspaces:
            out = {"frame": self.frame.weight.T}
            out.update({f"mix{h}": self.mix[h] for h in range(self.heads)})
            return out
        return {"wq": self.wq.weight.T}

    def biases(self) -> dict[str, Tensor]:
        """None: biases would break the energy."""
        return {}


class Readout(nn.Module):
    """AKOrN's readout (paper note §1.3): m_k = |Σ U_k x| over ``size`` components + bias, FF block, 9 logits.

    Linear D → D·size, reshape [D, size], L2 norm over size, + bias; then a residual ReLU-Linear-ReLU-Linear
    block; then ReLU-Linear(D, D); then ReLU-Linear(D, 9).
    """

    def __init__(self, width: int, size: int, classes: int = 9) -> None:
        super().__init__()
        self.size = size
        self.proj = nn.Linear(width, width * size, bias=False)
        self.bias = nn.Parameter(torch.zeros(width))
        self.ff1 = nn.Linear(width, width)
        self.ff2 = nn.Linear(width, width)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits [B, S, classes] of states ``x`` [B, S, D]."""
        m = oscillator_blocks(self.proj(x), self.size).norm(dim=-1) + self.bias
        m = m + self.ff2(torch.relu(self.ff1(torch.relu(m))))
        m = self.hidden(torch.relu(m))
        return self.out(torch.relu(m))
