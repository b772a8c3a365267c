"""Looped self-attention models on Sudoku: ItrSA, AKOrN (Π or RMSNorm), symmetric energy SA (paper note §1).

One interface for all (state X ∈ R^{B×81×D}):
- ``conditioning(puzzles)`` → C: digit embedding (0 = blank) plus learnable row, column and box embeddings, so
  cells have identity (note §6.2: our positional encoding instead of AKOrN's GTA rotations).
- ``init_state(puzzles, generator)``: C on givens, N(0, 1) noise on blanks, then the model's normalization.
- ``drive(X, C) = C + MSA(X)``; ``step(X, C)`` → X_next; ``readout(X)`` → logits [B, 81, 9];
  ``forward(puzzles, T)`` runs T steps from ``init_state`` and reads out.

Updates:
- ItrSA (Eq. 9): X ← Norm(X + η(C + MSA(X))), Norm ∈ {none, Π, RMSNorm} token- or oscillator-wise.
- AKOrN (Eq. 7–8): X ← Norm_osc(X + η(Ω X + Proj_X(C + MSA(X)))), Norm_osc = Π_osc or RMSNorm_osc.
- Symmetric (note §1.5, §6.6): the ItrSA loop with ``SymmetricSelfAttention``; ``energy(X)`` is the
  attention energy E_single / E_multi. It is a Lyapunov function of the C-free dynamics only
  (single head with Π, multi-head without normalization, small η); with input injection it is not.
η is a learnable scalar (init 1); γ of RMSNorm is learnable (init 1); norms are clamped below at eps = 1e-6.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dynascope.dynamics.layers import (
    NORM_KINDS,
    MultiHeadSelfAttention,
    Omega,
    Readout,
    StateNorm,
    SymmetricSelfAttention,
    tangent_project,
)
from dynascope.errors import ConfigError
from dynascope.validation import check_number

MODEL_KINDS = ("itrsa", "akorn", "sym_single", "sym_multi")
CELLS = 81

# Row, column and box index of each of the 81 cells (row-major).
_ROWS = torch.arange(CELLS) // 9
_COLS = torch.arange(CELLS) % 9
_BOXES = (_ROWS // 3) * 3 + _COLS // 3


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a looped SA model.

    ``model``: itrsa | akorn | sym_single | sym_multi; ``width`` D; ``heads`` H; ``osc_size`` N (channels per
    oscillator for *_osc norms, Omega pairs and the readout when ``readout_size`` is 0); ``norm``: none |
    pi_token | pi_osc | rms_token | rms_osc (AKOrN: pi_osc = the original, rms_osc = AKOrN + RMSNorm);
    ``eta`` initial step size; ``init_omg``/``learn_omg`` AKOrN's frequency; ``orthogonal_vo`` keeps W^V, W^O
    orthogonal (E-multi); ``readout_size`` components per readout channel (0 → osc_size); ``digit_std`` the
    standard deviation of the digit embedding at initialisation (1 = torch's default). With N(0, 1) entries the
    injected C has norm ≈ √D against a unit-norm state, so each step nearly resets X to Norm(C) until training
    shrinks the embedding; a small value (0.15 at D = 32–64, so ‖C‖ ≈ 1) starts the loop with X and C comparable
    and shortened the first plateau by ≈ 2000 steps at D = 64 (measurements in ``experiments.dynamics``).
    """

    model: str = "itrsa"
    width: int = 64
    heads: int = 4
    osc_size: int = 4
    norm: str = "rms_token"
    eta: float = 1.0
    init_omg: float = 0.5
    learn_omg: bool = True
    eps: float = 1e-6
    orthogonal_vo: bool = False
    readout_size: int = 0
    digit_std: float = 1.0

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ConfigError(f"model must be one of {MODEL_KINDS}, got {self.model!r}")
        if self.norm not in NORM_KINDS:
            raise ConfigError(f"norm must be one of {NORM_KINDS}, got {self.norm!r}")
        for name in ("width", "heads", "osc_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.width % self.heads:
            raise ConfigError(f"width must be divisible by heads, got width={self.width}, heads={self.heads}")
        if self.width % self.osc_size:
            raise ConfigError(f"width must be divisible by osc_size, got width={self.width}, osc_size={self.osc_size}")
        if self.model == "akorn":
            if self.norm not in ("pi_osc", "rms_osc"):
                raise ConfigError(f"akorn needs norm pi_osc or rms_osc, got {self.norm!r}")
            if self.osc_size % 2:
                raise ConfigError(f"akorn pairs channels in oscillators: osc_size must be even, got {self.osc_size}")
        if self.model == "sym_single" and self.heads != 1:
            raise ConfigError(f"sym_single is single-head: heads must be 1, got {self.heads}")
        if self.model.startswith("sym") and self.orthogonal_vo:
            raise ConfigError("orthogonal_vo applies to the free MSA only, not to the symmetric models")
        check_number(self.eta, "eta", minimum=0.0, exclusive_minimum=True)
        check_number(self.eps, "eps", minimum=0.0, exclusive_minimum=True)
        check_number(self.init_omg, "init_omg")
        check_number(self.digit_std, "digit_std", minimum=0.0, exclusive_minimum=True)
        if self.readout_size < 0:
            raise ConfigError(f"readout_size must be >= 0, got {self.readout_size}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for config.json)."""
        return asdict(self)


class LoopedSA(nn.Module):
    """Shared parts of every model: conditioning, initial state, normalization, η, readout, the loop."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.width
        self.digit = nn.Embedding(10, d)
        with torch.no_grad():  # scaled in place: no extra random draws, so digit_std = 1 keeps every other init
            self.digit.weight.mul_(float(config.digit_std))
        self.row = nn.Embedding(9, d)
        self.col = nn.Embedding(9, d)
        self.box = nn.Embedding(9, d)
        for emb in (self.row, self.col, self.box):
            nn.init.normal_(emb.weight, std=0.1)
        self.norm = StateNorm(config.norm, d, config.osc_size, config.eps)
        self.eta = nn.Parameter(torch.tensor(float(config.eta)))
        self.readout_head = Readout(d, config.readout_size or config.osc_size)
        self.msa = self.make_attention(config)
        self.register_buffer("cell_rows", _ROWS.clone(), persistent=False)
        self.register_buffer("cell_cols", _COLS.clone(), persistent=False)
        self.register_buffer("cell_boxes", _BOXES.clone(), persistent=False)

    def make_attention(self, config: ModelConfig) -> nn.Module:
        """The SA block: free multi-head attention unless a subclass needs a constrained one."""
        return MultiHeadSelfAttention(config.width, config.heads, config.orthogonal_vo)

    def conditioning(self, puzzles: Tensor) -> Tensor:
        """C [B, 81, D] from ``puzzles`` [B, 81] (0 = blank, 1–9 = given digit)."""
        pos = self.row(self.cell_rows) + self.col(self.cell_cols) + self.box(self.cell_boxes)
        return self.digit(puzzles.long()) + pos

    def init_state(
        self, puzzles: Tensor, generator: torch.Generator | None = None, noise: Tensor | None = None
    ) -> Tensor:
        """X^(0): C on given cells, N(0, 1) noise on blanks (drawn from ``generator`` on the CPU, or the given
        ``noise`` [B, 81, D]), then the model's normalization."""
        c = self.conditioning(puzzles)
        if noise is None:
            noise = torch.randn(c.shape, generator=generator, dtype=c.dtype, device="cpu")
        noise = noise.to(device=c.device, dtype=c.dtype)
        given = (puzzles != 0).unsqueeze(-1)
        return self.norm(torch.where(given, c, noise))

    def drive(self, x: Tensor, c: Tensor) -> Tensor:
        """C + MSA(X)."""
        return c + self.msa(x)

    def update(self, x: Tensor, c: Tensor) -> Tensor:
        """ΔX, the pre-normalization update direction (model specific)."""
        raise NotImplementedError

    def step(self, x: Tensor, c: Tensor) -> Tensor:
        """One loop step X → Norm(X + η ΔX)."""
        return self.norm(x + self.eta * self.update(x, c))

    def readout(self, x: Tensor) -> Tensor:
        """Logits [B, 81, 9]."""
        return self.readout_head(x)

    def run(self, x: Tensor, c: Tensor, steps: int) -> list[Tensor]:
        """States [X^(0), …, X^(steps)] starting from ``x``."""
        states = [x]
        for _ in range(steps):
            states.append(self.step(states[-1], c))
        return states

    def forward(
        self,
        puzzles: Tensor,
        loop_steps: int,
        return_trajectory: bool = False,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Logits after ``loop_steps`` steps from ``init_state``; with the list of states if asked."""
        c = self.conditioning(puzzles)
        states = self.run(self.init_state(puzzles, generator, noise), c, loop_steps)
        logits = self.readout(states[-1])
        return (logits, states) if return_trajectory else logits

    def fused_attention(self, on: bool = True) -> LoopedSA:
        """Let a free MSA use the fused attention kernel (training only; see ``layers``); returns ``self``."""
        if isinstance(self.msa, MultiHeadSelfAttention):
            self.msa.fused = on
        return self

    def sa_weights(self) -> dict[str, Tensor]:
        """The SA weight matrices (paper layout) that Spec regularises."""
        return self.msa.weights()

    def sa_biases(self) -> dict[str, Tensor]:
        """The SA bias vectors that Spec regularises."""
        return self.msa.biases()


class ItrSA(LoopedSA):
    """X ← Norm(X + η(C + MSA(X))) (paper Eq. 9; ``norm='none'`` is the diverging variant (a))."""

    def update(self, x: Tensor, c: Tensor) -> Tensor:
        """ΔX = C + MSA(X)."""
        return self.drive(x, c)


class AKOrN(LoopedSA):
    """X ← Norm_osc(X + η(Ω X + Proj_X(C + MSA(X)))) (paper Eq. 7–8); rms_osc gives AKOrN + RMSNorm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.omega = Omega(config.init_omg, config.learn_omg)

    def update(self, x: Tensor, c: Tensor) -> Tensor:
        """ΔX = Ω X + Proj_X(C + MSA(X)), projection per oscillator."""
        return self.omega(x) + tangent_project(self.drive(x, c), x, self.config.osc_size, self.config.eps)


class SymmetricItrSA(ItrSA):
    """The ItrSA loop with energy-admitting attention: single head (E_single) or orthogonal heads (E_multi)."""

    def make_attention(self, config: ModelConfig) -> nn.Module:
        """Symmetric attention; orthogonal per-head subspaces for sym_multi."""
        return SymmetricSelfAttention(config.width, config.heads, subspaces=config.model == "sym_multi")

    def energy(self, x: Tensor) -> Tensor:
        """Attention energy of ``x`` ([B, S, D] → [B]); decreases along the C-free flow (see module doc)."""
        return self.msa.energy(x)


def build_model(config: ModelConfig) -> LoopedSA:
    """The model class that ``config.model`` names."""
    if config.model == "itrsa":
        return ItrSA(config)
    if config.model == "akorn":
        return AKOrN(config)
    return SymmetricItrSA(config)
