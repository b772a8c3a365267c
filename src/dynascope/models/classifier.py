"""The classifier f(x) = V φ(x) + b on a pre-trained encoder, with V and b explicit.

φ(x) is the last hidden state of the first token (``pooling="cls"``) or the attention-masked mean over tokens
(``pooling="mean"``). There is no extra dense/tanh layer: f is exactly the paper's linear head, so the NTK
splits into the pre-train-effective part (from V, b) and the FT-effective part (from the backbone).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dynascope.errors import ConfigError

POOLINGS = ("cls", "mean")


def pool(last_hidden_state: Tensor, attention_mask: Tensor, pooling: str) -> Tensor:
    """φ from the encoder's last hidden state [B, T, h]: first token, or masked mean over tokens."""
    if pooling == "cls":
        return last_hidden_state[:, 0, :]
    if pooling == "mean":
        mask = attention_mask.to(last_hidden_state.dtype).unsqueeze(-1)
        return (last_hidden_state * mask).sum(1) / mask.sum(1).clamp_min(1.0)
    raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def hidden_size(backbone: nn.Module) -> int:
    """Width h of the encoder's hidden states."""
    config = getattr(backbone, "config", None)
    size = getattr(config, "hidden_size", None) or getattr(config, "dim", None)
    if not isinstance(size, int):
        raise ConfigError("cannot tell the backbone's hidden size (config.hidden_size is missing)")
    return size


class Classifier(nn.Module):
    """f(x) = V φ(x) + b with ``head.weight`` = V (C×h) and ``head.bias`` = b (C).

    V ~ N(0, ``head_init_std``²) from a generator seeded by ``seed`` and b = 0, so the initial head norm is
    ≈ ``head_init_std``·√(h·C) and the same seed always gives the same head. ``head_dropout`` is applied to φ
    in training mode only (the paper's head has dropout 0.1 before its linear layer).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_labels: int,
        *,
        pooling: str = "cls",
        head_init_std: float = 0.02,
        head_dropout: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_labels < 2:
            raise ConfigError(f"num_labels must be at least 2, got {num_labels}")
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if not 0.0 <= head_dropout < 1.0:
            raise ConfigError(f"head_dropout must be in [0, 1), got {head_dropout}")
        self.backbone = backbone
        self.pooling = pooling
        self.dropout = nn.Dropout(head_dropout)
        h = hidden_size(backbone)
        self.head = nn.Linear(h, num_labels)
        generator = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            weight = torch.randn(num_labels, h, generator=generator, dtype=torch.float64) * head_init_std
            self.head.weight.copy_(weight.to(self.head.weight.dtype))
            self.head.bias.zero_()

    @property
    def num_labels(self) -> int:
        """Number of classes C."""
        return self.head.out_features

    def features(self, input_ids: Tensor, attention_mask: Tensor, **inputs: Tensor) -> Tensor:
        """φ(x) [B, h]."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **inputs)
        return pool(out.last_hidden_state, attention_mask, self.pooling)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **inputs: Tensor) -> Tensor:
        """Logits f(x) = V φ(x) + b [B, C]."""
        return self.head(self.dropout(self.features(input_ids, attention_mask, **inputs)))

    def head_norm(self) -> float:
        """‖V‖_F (bias excluded, as the paper's Norm(C))."""
        return float(torch.linalg.vector_norm(self.head.weight.detach().double()))

    def set_head(self, weight: Tensor, bias: Tensor) -> None:
        """Replace V and b (e.g. with a fitted linear probe)."""
        if tuple(weight.shape) != tuple(self.head.weight.shape) or tuple(bias.shape) != tuple(
            self.head.bias.shape
        ):
            raise ConfigError(
                f"head shapes must be {tuple(self.head.weight.shape)} and {tuple(self.head.bias.shape)}, "
                f"got {tuple(weight.shape)} and {tuple(bias.shape)}"
            )
        with torch.no_grad():
            self.head.weight.copy_(weight.to(self.head.weight.dtype))
            self.head.bias.copy_(bias.to(self.head.bias.dtype))

    def scale_head(self, norm: float, scale_bias: bool = True) -> float:
        """Rescale V to ‖V‖_F = ``norm`` (and b by the same factor when ``scale_bias``); returns the factor."""
        if not (norm > 0 and math.isfinite(norm)):
            raise ConfigError(f"head norm must be positive and finite, got {norm}")
        factor = norm / self.head_norm()
        with torch.no_grad():
            self.head.weight.mul_(factor)
            if scale_bias:
                self.head.bias.mul_(factor)
        return factor
