"""The functional core of the NTK engine: a classifier seen as g(θ, x) = V·φ(θ, x), one example at a time.

Everything the kernels and trace estimators need is built here once from a classifier state
(neural-tangents style): the trainable backbone parameters θ as a name → tensor dict, the fixed head
(V, b), and per-example functions that run the backbone through ``torch.func.functional_call`` on
``inputs_embeds = E[ids]`` so that the word-embedding matrix E is reached through a gather that we can
differentiate exactly (its Jacobian is row-sparse; see ``components``).

Position ids are passed explicitly and padding-aware: RoBERTa/MPNet-style embeddings (which carry a
``padding_idx``) number tokens from ``padding_idx + 1`` skipping padding when given ``input_ids`` but
not when given ``inputs_embeds``; BERT-style embeddings use 0..T-1. Each example is trimmed to the span from
its first to its last attended token (masked positions cannot reach φ), which is exact and saves work.
Causal LMs (GPT-2, Llama, …) run as the ``Classifier`` runs them (``models.classifier.forward_backbone``):
an example keeps only its attended tokens, numbered 0, 1, … (``cumsum(mask) − 1``), so left padding is exact
too.

Forward-mode AD (``torch.func.jvp``, used by the trace estimators) has no rule for the fused SDPA
attention kernel on CPU: models must be loaded with ``attn_implementation="eager"``;
:func:`require_eager` raises a clear error otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp, vmap

from dynascope.errors import ConfigError

Batch = Mapping[str, Tensor]
BATCH_KEYS = ("input_ids", "attention_mask", "token_type_ids")
WORD = "word_embeddings"  # key of the word-embedding tangent/cotangent in parameter-space dicts


@dataclass(frozen=True)
class Example:
    """One tokenised example, trimmed of leading and trailing padding, with explicit position ids."""

    input_ids: Tensor  # [T]
    attention_mask: Tensor  # [T]
    position_ids: Tensor  # [T]
    token_type_ids: Tensor | None  # [T]


@dataclass(frozen=True)
class KernelModel:
    """A classifier state frozen for kernel computation.

    ``params`` are the backbone parameters with ``requires_grad`` (detached), except the word-embedding
    matrix, which is ``word_weight`` and enters through ``inputs_embeds``; ``word_name`` is its parameter
    name when it is trainable (else ``None``). ``weight`` = V (C×h) and ``bias`` = b (or ``None``).
    """

    backbone: nn.Module
    pooling: str
    pool: Callable[[Tensor, Tensor, str], Tensor]
    weight: Tensor
    bias: Tensor | None
    params: dict[str, Tensor]
    word_weight: Tensor
    word_name: str | None

    @property
    def num_labels(self) -> int:
        """C."""
        return int(self.weight.shape[0])

    @property
    def trainable_names(self) -> list[str]:
        """Every parameter name that enters F (word embeddings included when trainable)."""
        names = list(self.params)
        return names if self.word_name is None else [self.word_name, *names]

    def param_size(self, name: str) -> int:
        """Number of scalars in parameter ``name``."""
        return self.word_weight.numel() if name == self.word_name else self.params[name].numel()


def require_eager(backbone: nn.Module) -> None:
    """Raise if the backbone runs SDPA/flash attention: forward-mode AD and vmap need eager attention."""
    config = getattr(backbone, "config", None)
    impl = getattr(config, "_attn_implementation", None) or getattr(config, "attn_implementation", None)
    if impl not in (None, "eager"):
        raise ConfigError(
            f"the backbone uses attn_implementation={impl!r}; forward-mode AD (torch.func.jvp) and vmap need "
            "eager attention: load it with attn_implementation='eager' (load_backbone does by default)"
        )


def kernel_model(clf: nn.Module, pool: Callable[[Tensor, Tensor, str], Tensor] | None = None) -> KernelModel:
    """Freeze a ``Classifier``-like module (``.backbone``, ``.head``, ``.pooling``) for kernel computation.

    Only backbone parameters with ``requires_grad`` enter F (so LoRA-only after ``apply_lora``); the head
    never does (it is P). ``pool`` defaults to ``dynascope.models.classifier.pool``.
    """
    if pool is None:
        from dynascope.models.classifier import pool as default_pool

        pool = default_pool
    backbone = clf.backbone
    require_eager(backbone)
    if backbone.training:
        raise ConfigError("the backbone is in training mode (dropout on); call clf.eval() before computing kernels")
    embedding = backbone.get_input_embeddings()
    word = embedding.weight
    word_name = None
    params: dict[str, Tensor] = {}
    for name, param in backbone.named_parameters():
        if param is word:
            word_name = name if param.requires_grad else None
        elif param.requires_grad:
            params[name] = param.detach()
    bias = clf.head.bias
    return KernelModel(
        backbone=backbone,
        pooling=clf.pooling,
        pool=pool,
        weight=clf.head.weight.detach(),
        bias=None if bias is None else bias.detach(),
        params=params,
        word_weight=word.detach(),
        word_name=word_name,
    )


def position_ids(backbone: nn.Module, input_ids: Tensor) -> Tensor:
    """The position ids the backbone itself uses for ``input_ids`` [B, T] (padding-aware for RoBERTa/MPNet)."""
    embeddings = getattr(backbone, "embeddings", None)
    pad = getattr(embeddings, "padding_idx", None)
    if pad is not None:
        mask = input_ids.ne(pad).long()
        return torch.cumsum(mask, dim=1) * mask + pad
    return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)


def _causal(backbone: nn.Module) -> bool:
    """Whether the backbone is a causal LM (``models.classifier.is_causal`` of its config)."""
    from dynascope.models.classifier import is_causal

    return is_causal(getattr(backbone, "config", None))


def examples(backbone: nn.Module, batch: Batch) -> list[Example]:
    """Split a batch into per-example records: the attended span (either padding side), or for causal LMs
    the attended tokens only, numbered from 0."""
    ids = batch["input_ids"]
    mask = batch["attention_mask"]
    types = batch.get("token_type_ids")
    causal = _causal(backbone)
    pos = None if causal else position_ids(backbone, ids)
    out = []
    for i in range(ids.shape[0]):
        nonzero = torch.nonzero(mask[i]).flatten()
        if nonzero.numel() == 0:
            raise ConfigError(f"example {i} of the batch has an all-zero attention mask")
        keep = nonzero if causal else torch.arange(int(nonzero[0]), int(nonzero[-1]) + 1, device=mask.device)
        out.append(
            Example(
                input_ids=ids[i, keep],
                attention_mask=mask[i, keep],
                position_ids=torch.arange(keep.numel(), device=mask.device) if pos is None else pos[i, keep],
                token_type_ids=None if types is None else types[i, keep],
            )
        )
    return out


def batch_size(batch: Batch) -> int:
    """Number of examples in a batch dict."""
    return int(batch["input_ids"].shape[0])


def features(model: KernelModel, example: Example, params: Mapping[str, Tensor], embeds: Tensor) -> Tensor:
    """φ(x) [h] for one example with backbone parameters ``params`` and word embeddings ``embeds`` [T, h]."""
    kwargs = {
        "inputs_embeds": embeds.unsqueeze(0),
        "attention_mask": example.attention_mask.unsqueeze(0),
        "position_ids": example.position_ids.unsqueeze(0),
    }
    if _causal(model.backbone):
        kwargs["use_cache"] = False
    if example.token_type_ids is not None:
        kwargs["token_type_ids"] = example.token_type_ids.unsqueeze(0)
    out = functional_call(model.backbone, dict(params), args=(), kwargs=kwargs, strict=False)
    return pooled(model, out, kwargs["attention_mask"])[0]


def pooled(model: KernelModel, out: object, attention_mask: Tensor) -> Tensor:
    """φ [B, h] from a backbone output: its own ``pooler_output`` for ``pooling="pooler"`` (the dense + tanh
    pooler that BERT-style ``*ForSequenceClassification`` heads read), else ``model.pool`` of the last hidden state.
    """
    if model.pooling == "pooler":
        return out.pooler_output
    return model.pool(out.last_hidden_state, attention_mask, model.pooling)


def output_fn(model: KernelModel, example: Example, output: str) -> Callable[[dict[str, Tensor], Tensor], Tensor]:
    """(params, embeds) ↦ g(x) = V φ(x) [C] (``output="logits"``) or φ(x) [h] (``output="features"``)."""
    if output not in ("logits", "features"):
        raise ConfigError(f"output must be 'logits' or 'features', got {output!r}")

    def fn(params: dict[str, Tensor], embeds: Tensor) -> Tensor:
        phi = features(model, example, params, embeds)
        return phi @ model.weight.T if output == "logits" else phi

    return fn


def _split(model: KernelModel, names: list[str]) -> tuple[dict[str, Tensor], bool]:
    """The dense parameters among ``names`` and whether the word embeddings are among them."""
    dense = {n: model.params[n] for n in names if n != model.word_name}
    return dense, model.word_name is not None and model.word_name in names


def example_vjp(
    model: KernelModel, example: Example, names: list[str], cotangents: Tensor, output: str = "logits"
) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
    """Rows of the per-example Jacobian: ``cotangents`` [k, m] pulled back to the parameters ``names``.

    Returns (output value [m], {name: [k, *shape]} for dense parameters, gradient w.r.t. ``inputs_embeds``
    [k, T, h] when the word embeddings are among ``names``, else ``None``). One forward pass, k backward
    passes vmapped together; the h-dimensional feature Jacobian is never formed for ``output="logits"``.
    """
    dense, with_word = _split(model, names)
    fn = output_fn(model, example, output)
    embeds = model.word_weight[example.input_ids]
    with torch.no_grad():  # torch.func transforms ignore an outer no_grad; frozen module parameters stay untracked
        if with_word:
            value, pull = vjp(fn, dense, embeds)
            grads, g_embeds = vmap(pull)(cotangents)
            return value, grads, g_embeds
        value, pull = vjp(lambda p: fn(p, embeds), dense)
        (grads,) = vmap(pull)(cotangents)
        return value, grads, None


def example_jvp(
    model: KernelModel,
    example: Example,
    names: list[str],
    tangents: Mapping[str, Tensor],
    rows: Tensor | None,
    output: str = "logits",
) -> Tensor:
    """J_x v for k tangents at once: [k, m]. Needs eager attention (forward-mode AD).

    ``tangents`` maps dense parameter names to [k, *shape] and, when the word embeddings are among
    ``names``, ``WORD`` to [k, R, h] tangents on the vocabulary rows ``rows`` [R] (which must contain every
    id of the example; other rows of E do not reach this example).
    """
    dense, with_word = _split(model, names)
    fn = output_fn(model, example, output)
    embeds = model.word_weight[example.input_ids]
    if with_word:
        if rows is None:
            raise ConfigError("word-embedding tangents need the vocabulary rows they live on")
        where = torch.searchsorted(rows, example.input_ids)

        def one(t_dense: dict[str, Tensor], t_word: Tensor) -> Tensor:
            return jvp(fn, (dense, embeds), (t_dense, t_word[where]))[1]

        with torch.no_grad():
            return vmap(one)({n: tangents[n] for n in dense}, tangents[WORD])

    def one_dense(t_dense: dict[str, Tensor]) -> Tensor:
        return jvp(lambda p: fn(p, embeds), (dense,), (t_dense,))[1]

    with torch.no_grad():
        return vmap(one_dense)({n: tangents[n] for n in dense})


def batch_features(model: KernelModel, batch: Batch, chunk: int = 32) -> Tensor:
    """φ for a whole batch through the ordinary ``input_ids`` path, float64 [N, h] (no gradients)."""
    from dynascope.models.classifier import forward_backbone

    out = []
    n = batch_size(batch)
    with torch.no_grad():
        for start in range(0, n, chunk):
            part = {k: v[start : start + chunk] for k, v in batch.items() if k in BATCH_KEYS}
            output, mask = forward_backbone(model.backbone, **part)
            out.append(pooled(model, output, mask).double())
    return torch.cat(out)
