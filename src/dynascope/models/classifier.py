"""The classifier f(x) = V φ(x) + b on a pre-trained backbone, with V and b explicit.

φ(x) is the last hidden state of the first token (``pooling="cls"``), the attention-masked mean over tokens
(``"mean"``) or the last non-padding token (``"last"``, what a causal LM's final position summarises: its first
token sees only itself). ``"auto"`` picks ``"last"`` for causal LMs, else the checkpoint's own pooling where the
caller knows it (a sentence-transformers folder), else ``"cls"``. There is no extra dense/tanh layer: f is
exactly the paper's linear head, so the NTK splits into the pre-train-effective part (from V, b) and the
FT-effective part (from the backbone).

Causal backbones (:func:`forward_backbone`) see every batch right-padded: a left-padded (or gapped) batch is
packed, attended tokens first and in order, before the forward; position ids come from the attention mask
(``cumsum − 1``, clamped at 0) and no key/value cache is kept. With mask-derived positions a causal token's
output does not depend on where the padding sat, so left and right padding give the same φ; packing also keeps
fully masked query rows out (eager attention of Llama-family models in float64 turns them into NaN, which the
masked-out values then carry into real tokens).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from dynascope.errors import ConfigError

POOLINGS = ("cls", "mean", "last")
POOLING_CHOICES = ("auto", *POOLINGS)
PHI_SPREAD_TOL = 1e-5  # relative row spread of φ below which every example looks the same


def pool(last_hidden_state: Tensor, attention_mask: Tensor, pooling: str) -> Tensor:
    """φ from the backbone's last hidden state [B, T, h]: first token, masked mean, or last attended token."""
    if pooling == "cls":
        return last_hidden_state[:, 0, :]
    if pooling == "mean":
        mask = attention_mask.to(last_hidden_state.dtype).unsqueeze(-1)
        return (last_hidden_state * mask).sum(1) / mask.sum(1).clamp_min(1.0)
    if pooling == "last":
        steps = torch.arange(1, attention_mask.shape[1] + 1, device=attention_mask.device)
        last = (attention_mask.ne(0).long() * steps).argmax(dim=1)  # the last attended index, any padding side
        return last_hidden_state[torch.arange(last_hidden_state.shape[0], device=last.device), last]
    raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def is_causal(config: object) -> bool:
    """Whether a Hugging Face config describes a causal (decoder-only) LM.

    True for ``is_decoder`` configs and for model types that Transformers maps to a causal-LM class but not to
    a masked-LM one (GPT-2, Llama, Qwen2, Mistral, …; BERT and RoBERTa have both and stay encoders).
    """
    if getattr(config, "is_decoder", False):
        return True
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(config, "model_type", None)
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def causal_position_ids(attention_mask: Tensor) -> Tensor:
    """Position ids from the attention mask (``cumsum − 1``, clamped at 0): 0, 1, … over the attended tokens."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def forward_backbone(
    backbone: nn.Module, input_ids: Tensor, attention_mask: Tensor, **inputs: Tensor
) -> tuple[object, Tensor]:
    """The backbone's output and the attention mask aligned with its hidden states.

    Encoders run as given. Causal backbones get a batch that is not right-padded packed to right padding
    (attended tokens first, in order; per-token inputs such as ``token_type_ids`` follow), position ids from
    the mask and ``use_cache=False``; the returned mask is the packed one.
    """
    if not is_causal(getattr(backbone, "config", None)):
        return backbone(input_ids=input_ids, attention_mask=attention_mask, **inputs), attention_mask
    if bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):  # a pad before an attended token
        order = torch.argsort(attention_mask.eq(0).to(torch.int8), dim=1, stable=True)
        input_ids, attention_mask = input_ids.gather(1, order), attention_mask.gather(1, order)
        inputs = {k: v.gather(1, order) if v.shape == order.shape else v for k, v in inputs.items()}
    extra = {"position_ids": causal_position_ids(attention_mask), "use_cache": False, **inputs}
    return backbone(input_ids=input_ids, attention_mask=attention_mask, **extra), attention_mask


def auto_pooling(config: object, checkpoint_pooling: str | None = None) -> tuple[str, str]:
    """(pooling, reason) for ``pooling="auto"`` given the backbone's config: the last token for causal LMs,
    else ``checkpoint_pooling`` (what a sentence-transformers folder declares) when given, else the first token."""
    if is_causal(config):
        return "last", "causal LM: the last non-padding token"
    if checkpoint_pooling is not None:
        return checkpoint_pooling, "the checkpoint's own pooling (1_Pooling/config.json)"
    return "cls", "encoder: the first token"


def require_varying_phi(phi: Tensor | np.ndarray, pooling: str, tol: float = PHI_SPREAD_TOL) -> float:
    """Raise if every row of φ [N, h] is the same (relative spread ≤ ``tol``); return the spread.

    Equal φ for every example leaves the head nothing to separate: training would end at the majority class.
    The spread is max_i ‖φ_i − mean φ‖ over the mean ‖φ_i‖.
    """
    rows = phi.detach().double() if isinstance(phi, Tensor) else torch.as_tensor(np.asarray(phi, dtype=np.float64))
    if rows.ndim != 2 or rows.shape[0] < 2:
        return float("inf")
    scale = float(rows.norm(dim=1).mean())
    spread = float((rows - rows.mean(0)).norm(dim=1).max()) / max(scale, 1e-30)
    if spread <= tol:
        hint = (
            "a causal LM's first token sees only itself: use --pooling last (or auto)"
            if pooling == "cls"
            else "choose another --pooling (auto takes the last token of causal LMs)"
        )
        raise ConfigError(
            f"pooling {pooling!r} gives the same φ for all {rows.shape[0]} training examples checked (row spread "
            f"{spread:.2g} ≤ {tol:g}), so the head could only predict one class; {hint}"
        )
    return spread


def hidden_size(backbone: nn.Module) -> int:
    """Width h of the encoder's hidden states."""
    config = getattr(backbone, "config", None)
    size = getattr(config, "hidden_size", None) or getattr(config, "dim", None)
    if not isinstance(size, int):
        raise ConfigError("cannot tell the backbone's hidden size (config.hidden_size is missing)")
    return size


class Classifier(nn.Module):
    """f(x) = V φ(x) + b with ``head.weight`` = V (C×h) and ``head.bias`` = b (C).

    ``pooling="auto"`` resolves from the backbone alone (``last`` for causal LMs, else ``cls``); ``.pooling``
    holds the resolved choice.

    V ~ N(0, ``head_init_std``²) from a generator seeded by ``seed`` and b = 0, so the initial head norm is
    ≈ ``head_init_std``·√(h·C) and the same seed always gives the same head. ``head_dropout`` is applied to φ
    in training mode only (the paper's head has dropout 0.1 before its linear layer).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_labels: int,
        *,
        pooling: str = "auto",
        head_init_std: float = 0.02,
        head_dropout: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_labels < 2:
            raise ConfigError(f"num_labels must be at least 2, got {num_labels}")
        if pooling not in POOLING_CHOICES:
            raise ConfigError(f"pooling must be one of {POOLING_CHOICES}, got {pooling!r}")
        if not 0.0 <= head_dropout < 1.0:
            raise ConfigError(f"head_dropout must be in [0, 1), got {head_dropout}")
        self.backbone = backbone
        self.pooling = auto_pooling(getattr(backbone, "config", None))[0] if pooling == "auto" else pooling
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
        out, mask = forward_backbone(self.backbone, input_ids, attention_mask, **inputs)
        return pool(out.last_hidden_state, mask, self.pooling)

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
