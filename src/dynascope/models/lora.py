"""LoRA on the attention query and value projections, through peft.

The adapter is injected into the backbone in place (``peft.inject_adapter_in_model``), so the backbone keeps its
type and parameter names gain ``lora_A``/``lora_B`` leaves; everything but those and the head is frozen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from dynascope.errors import ConfigError

# (query, value) projection names by architecture family: BERT/RoBERTa, MPNet, DistilBERT, decoder-style.
QUERY_VALUE_NAMES: tuple[tuple[str, str], ...] = (
    ("query", "value"),
    ("q", "v"),
    ("q_lin", "v_lin"),
    ("q_proj", "v_proj"),
)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters: rank, scale ``alpha / r``, dropout, optional Gaussian init of A (std ``init_std``)."""

    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    init_std: float | None = None
    target_modules: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"LoRA rank r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"LoRA alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if self.init_std is not None and self.init_std <= 0:
            raise ConfigError(f"LoRA init_std must be positive, got {self.init_std}")

    @property
    def scale(self) -> float:
        """The factor s = alpha / r multiplying B A."""
        return self.alpha / self.r

    def to_dict(self) -> dict:
        """JSON-ready form."""
        out = asdict(self)
        out["target_modules"] = list(self.target_modules) if self.target_modules else None
        return out


def lora_target_modules(backbone: nn.Module) -> list[str]:
    """Names (last path component) of the query and value projections of ``backbone``."""
    linear_names = {
        name.rsplit(".", 1)[-1] for name, m in backbone.named_modules() if isinstance(m, nn.Linear)
    }
    for query, value in QUERY_VALUE_NAMES:
        if query in linear_names and value in linear_names:
            return [query, value]
    raise ConfigError(
        "cannot find the attention query/value projections in this backbone; pass target_modules explicitly. "
        f"Linear layers found: {sorted(linear_names)}"
    )


def apply_lora(clf: nn.Module, settings: LoraSettings, seed: int = 0) -> nn.Module:
    """Inject LoRA into ``clf.backbone`` and freeze everything but the LoRA matrices and ``clf.head``.

    A is initialised by peft (Kaiming-uniform, as loralib) or, with ``init_std``, from N(0, init_std²) drawn
    with ``seed``; B starts at 0, so the classifier's function is unchanged at initialisation.
    """
    from peft import LoraConfig, inject_adapter_in_model

    targets = list(settings.target_modules) if settings.target_modules else lora_target_modules(clf.backbone)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        bias="none",
    )
    with torch.random.fork_rng(devices=[]):  # peft draws A from the global RNG; seed it without touching the caller's
        torch.manual_seed(seed)
        inject_adapter_in_model(config, clf.backbone)
    for name, param in clf.backbone.named_parameters():
        param.requires_grad_("lora_" in name)
    for param in clf.head.parameters():
        param.requires_grad_(True)
    if settings.init_std is not None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in clf.backbone.named_parameters():
                if "lora_A" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * settings.init_std)
    return clf


def lora_state_dict(clf: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA tensors of ``clf.backbone`` by parameter name."""
    return {name: p.detach().clone() for name, p in clf.backbone.named_parameters() if "lora_" in name}


def load_lora_state(clf: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy saved LoRA tensors into an adapter injected with the same settings."""
    params = dict(clf.backbone.named_parameters())
    missing = sorted(set(tensors) - set(params))
    if missing:
        raise ConfigError(f"adapter tensors do not match the model; unknown names: {missing[:5]}")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)


def count_trainable(module: nn.Module) -> int:
    """Number of parameters with ``requires_grad``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
