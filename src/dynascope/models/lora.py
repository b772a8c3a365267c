"""LoRA on the attention query and value projections, through peft.

Targets are resolved from the backbone's modules: separate query/value projections (``nn.Linear``: BERT/RoBERTa
``query``/``value``, MPNet ``q``/``v``, DistilBERT ``q_lin``/``v_lin``, Llama/Qwen2/Mistral ``q_proj``/``v_proj``),
else a fused query-key-value projection (output width 3h: GPT-2's ``c_attn``). GPT-2 builds its projections as
Transformers' ``Conv1D`` (weight stored in × out), which peft adapts with ``fan_in_fan_out=True``.

The adapter is injected into the backbone in place (``peft.inject_adapter_in_model``), so the backbone keeps its
type and parameter names gain ``lora_A``/``lora_B`` leaves; everything but those and the head is frozen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from dynascope.errors import ConfigError
from dynascope.validation import check_int, check_number

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
        check_int(self.r, "LoRA rank r")
        check_number(self.alpha, "LoRA alpha", minimum=0.0, exclusive_minimum=True)
        check_number(self.dropout, "LoRA dropout", minimum=0.0, maximum=1.0, exclusive_maximum=True)
        if self.init_std is not None:
            check_number(self.init_std, "LoRA init_std", minimum=0.0, exclusive_minimum=True)

    @property
    def scale(self) -> float:
        """The factor s = alpha / r multiplying B A."""
        return self.alpha / self.r

    def to_dict(self) -> dict:
        """JSON-ready form."""
        out = asdict(self)
        out["target_modules"] = list(self.target_modules) if self.target_modules else None
        return out


def _projections(backbone: nn.Module) -> dict[str, list[nn.Module]]:
    """Linear-like modules (``nn.Linear`` and Transformers' ``Conv1D``) by last path component."""
    from transformers.pytorch_utils import Conv1D

    out: dict[str, list[nn.Module]] = {}
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Linear | Conv1D):
            out.setdefault(name.rsplit(".", 1)[-1], []).append(module)
    return out


def _out_features(module: nn.Module) -> int:
    """Output width of an ``nn.Linear`` or a ``Conv1D`` (``nf``)."""
    return int(getattr(module, "out_features", None) or module.nf)


def lora_target_modules(backbone: nn.Module) -> list[str]:
    """Names (last path component) of the query and value projections of ``backbone``, or of its fused
    query-key-value projection (every module of that name has output width 3h)."""
    found = _projections(backbone)
    linear = {n for n, mods in found.items() if all(isinstance(m, nn.Linear) for m in mods)}
    for query, value in QUERY_VALUE_NAMES:
        if query in linear and value in linear:
            return [query, value]
    config = getattr(backbone, "config", None)
    width = getattr(config, "hidden_size", None)
    fused = sorted(n for n, mods in found.items() if width and all(_out_features(m) == 3 * width for m in mods))
    if len(fused) == 1:
        return fused
    raise ConfigError(
        "cannot find the attention query/value projections (or one fused query-key-value projection) in this "
        f"backbone; pass target_modules explicitly. Linear layers found: {sorted(found)}"
    )


def fan_in_fan_out(backbone: nn.Module, targets: list[str]) -> bool:
    """Whether the target modules (matched as peft does: the module name or its dotted suffix) store weights
    in × out (``Conv1D``): peft's ``fan_in_fan_out``. A mix of ``Conv1D`` and ``nn.Linear`` targets cannot
    share one LoRA config and is an error."""
    from transformers.pytorch_utils import Conv1D

    hit = [
        m for name, m in backbone.named_modules() if any(name == t or name.endswith(f".{t}") for t in targets)
    ]
    kinds = {isinstance(m, Conv1D) for m in hit}
    if len(kinds) > 1:
        raise ConfigError(f"LoRA targets {targets} mix Conv1D and nn.Linear layers; target one kind at a time")
    return kinds == {True}


def apply_lora(clf: nn.Module, settings: LoraSettings, seed: int = 0) -> nn.Module:
    """Inject LoRA into ``clf.backbone`` and freeze everything but the LoRA matrices and ``clf.head``.

    A is initialised by peft (Kaiming-uniform, as loralib) or, with ``init_std``, from N(0, init_std²) drawn
    with ``seed``; B starts at 0, so the classifier's function is unchanged at initialisation. The adapter is
    injected and drawn on the CPU and then moved to ``clf``'s device, so a GPU run starts from the same A as a
    CPU run (and the CUDA generators are untouched).
    """
    from peft import LoraConfig, inject_adapter_in_model

    targets = list(settings.target_modules) if settings.target_modules else lora_target_modules(clf.backbone)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        fan_in_fan_out=fan_in_fan_out(clf.backbone, targets),
        bias="none",
    )
    device = next(clf.parameters()).device
    clf.cpu()
    with torch.random.fork_rng(devices=[]):  # peft draws A from the global RNG; seed it without touching the caller's
        torch.random.default_generator.manual_seed(seed)  # the CPU generator only: CUDA's are not forked
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
    return clf.to(device)


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
