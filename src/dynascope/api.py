"""The functional NTK API in the neural-tangents style: adapt a model once, build a kernel function, call it.

```python
import dynascope as ds
clf = ds.as_classifier(hf_model)          # Classifier, encoder + head, or *ForSequenceClassification
ntk_fn = ds.empirical_ntk_fn(clf, implementation=ds.NtkImplementation.BLOCKED_VJP, memory_gb=4)
k = ntk_fn(batch_a, batch_b)              # NTKComponents(pre, blocks); k.ft, k.total
```
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import jacrev

from dynascope.errors import ConfigError
from dynascope.models.classifier import POOLING_CHOICES, Classifier, auto_pooling, forward_backbone, pool
from dynascope.ntk.blocks import resolve_partition
from dynascope.ntk.components import NTKComponents, ntk_components, pre_kernel
from dynascope.ntk.functional import Batch, KernelModel, examples, kernel_model, output_fn

HEAD_ATTRIBUTES = ("classifier", "score", "out_proj")  # where HF *ForSequenceClassification keep their head


class NtkImplementation(enum.Enum):
    """How the F component is computed (P = (φφᵀ + 1) ⊗ I_C is always formed from the features).

    - ``BLOCKED_VJP`` (ours): C vector–Jacobian products per example, rows grouped by parameter block so that
      at most ``memory_gb`` of rows are held, the word-embedding block gather-aware (only the rows of the
      tokens present); cost ≈ N·C backward passes plus the float64 Gram, memory bounded by ``memory_gb``.
    - ``JACOBIAN_CONTRACTION`` (the reference): the full per-example Jacobian over every trainable parameter by
      ``torch.func.jacrev`` (the word embedding as a dense [V, h] block), then the contraction J_a J_bᵀ per
      block; cost ≈ N·C backward passes and N·C·P memory for the rows, so for tiny models and checks only.
    """

    BLOCKED_VJP = "blocked-vjp"
    JACOBIAN_CONTRACTION = "jacobian-contraction"


class _AdaptedClassifier(nn.Module):
    """An encoder plus a single linear head seen as f(x) = V φ(x) + b (``.backbone``, ``.head``, ``.pooling``)."""

    def __init__(self, backbone: nn.Module, head: nn.Linear, pooling: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.pooling = pooling

    @property
    def num_labels(self) -> int:
        """Number of classes C."""
        return self.head.out_features

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **inputs: Tensor) -> Tensor:
        """Logits [B, C] (no dropout: the adapter is for evaluation and kernels)."""
        out, mask = forward_backbone(self.backbone, input_ids, attention_mask, **inputs)
        if self.pooling == "pooler":
            return self.head(out.pooler_output)
        return self.head(pool(out.last_hidden_state, mask, self.pooling))


def as_classifier(model: nn.Module, head: nn.Linear | None = None, *, pooling: str | None = None) -> nn.Module:
    """View ``model`` as f(x) = V φ(x) + b for the NTK.

    Accepts a dynascope ``Classifier`` (returned as is), a bare backbone plus ``head`` (an ``nn.Linear``;
    ``pooling`` "cls", "mean", "last" or "auto", the default: "last" for causal LMs, else "cls"), or a Hugging
    Face ``*ForSequenceClassification`` whose head is a single linear layer (BERT: φ is the encoder's own
    dense + tanh pooler output, ``pooling="pooler"``; GPT-2/Llama ``score``: the last non-padding token).
    Anything else raises ``ConfigError`` saying what was found.
    """
    if isinstance(model, Classifier | _AdaptedClassifier):
        if head is not None or pooling not in (None, model.pooling):
            raise ConfigError(f"a {type(model).__name__} already has its head and pooling; pass neither")
        return model
    if head is not None:
        if not isinstance(head, nn.Linear):
            raise ConfigError(f"head must be an nn.Linear, got {type(head).__name__}")
        chosen = pooling or "auto"
        if chosen not in (*POOLING_CHOICES, "pooler"):
            raise ConfigError(f"pooling must be one of {(*POOLING_CHOICES, 'pooler')}, got {chosen!r}")
        if chosen == "auto":
            chosen = auto_pooling(getattr(model, "config", None))[0]
        return _AdaptedClassifier(model, head, chosen)
    prefix = getattr(model, "base_model_prefix", None)
    backbone = getattr(model, prefix, None) if isinstance(prefix, str) else None
    found = {a: getattr(model, a) for a in HEAD_ATTRIBUTES if isinstance(getattr(model, a, None), nn.Module)}
    if backbone is None or not found:
        raise ConfigError(
            f"expected a dynascope Classifier, an encoder plus head=nn.Linear, or a Hugging Face "
            f"*ForSequenceClassification; found {type(model).__name__} without a base model and a classifier head"
        )
    name, module = next(iter(found.items()))
    if not isinstance(module, nn.Linear):
        parts = ", ".join(f"{n}: {type(m).__name__}" for n, m in module.named_children()) or type(module).__name__
        raise ConfigError(
            f"{type(model).__name__}.{name} is {type(module).__name__} ({parts}), not a single linear layer: "
            "the NTK split into P and F needs f = V φ + b; pass the encoder and one nn.Linear as head instead"
        )
    chosen = pooling or "auto"
    if chosen == "auto":
        has_pooler = getattr(backbone, "pooler", None) is not None
        chosen = "pooler" if has_pooler else auto_pooling(getattr(backbone, "config", None))[0]
    return _AdaptedClassifier(backbone, module, chosen)


NtkFn = Callable[[Batch, Batch | None], NTKComponents]


def empirical_ntk_fn(
    model: nn.Module,
    *,
    implementation: NtkImplementation = NtkImplementation.BLOCKED_VJP,
    partition: Mapping[str, Sequence[str]] | None = None,
    memory_gb: float = 4.0,
) -> NtkFn:
    """Build ``ntk_fn(batch_a, batch_b=None) -> NTKComponents`` for ``model`` (anything ``as_classifier`` takes).

    The model is frozen once (eval mode and eager attention are required; the parameters are read at build
    time); ``partition`` is ``None`` (per-layer attention/MLP blocks) or ``{block: [regex, …]}``. Batches are
    moved to the model's device, where the kernels are computed; they come back on the CPU.
    """
    if not isinstance(implementation, NtkImplementation):
        raise ConfigError(f"implementation must be an NtkImplementation, got {implementation!r}")
    frozen = kernel_model(as_classifier(model))

    def ntk_fn(batch_a: Batch, batch_b: Batch | None = None) -> NTKComponents:
        device = frozen.weight.device
        batch_a = {k: v.to(device) for k, v in batch_a.items()}
        batch_b = None if batch_b is None else {k: v.to(device) for k, v in batch_b.items()}
        if implementation is NtkImplementation.BLOCKED_VJP:
            return ntk_components(frozen, batch_a, batch_b, partition=partition, memory_gb=memory_gb)
        return _contraction_ntk(frozen, batch_a, batch_b, partition)

    return ntk_fn


def _contraction_ntk(
    model: KernelModel, batch_a: Batch, batch_b: Batch | None, partition: Mapping[str, Sequence[str]] | None
) -> NTKComponents:
    """The reference route: full per-example Jacobians by ``jacrev``, contracted per block in float64."""
    blocks = resolve_partition(model.trainable_names, model.word_name, partition)
    rows_a = _jacobian_rows(model, batch_a)
    rows_b = rows_a if batch_b is None else _jacobian_rows(model, batch_b)
    n_a, n_b, c = len(rows_a), len(rows_b), model.num_labels
    kernels = {}
    for block, names in blocks.items():
        a = _stack(rows_a, names, c)
        b = a if batch_b is None else _stack(rows_b, names, c)
        kernels[block] = (a @ b.T).reshape(n_a, c, n_b, c).cpu()
    sizes = {b: sum(model.param_size(n) for n in names) for b, names in blocks.items()}
    return NTKComponents(pre=pre_kernel(model, batch_a, batch_b), blocks=kernels, block_sizes=sizes)


def _stack(rows: list[dict[str, Tensor]], names: Sequence[str], c: int) -> Tensor:
    """[n·C, P_block] float64: the examples' Jacobian rows for the parameters ``names``."""
    return torch.cat([torch.cat([r[n].reshape(c, -1) for n in names], dim=1) for r in rows]).double()


def _jacobian_rows(model: KernelModel, batch: Batch) -> list[dict[str, Tensor]]:
    """Per example: {parameter name: ∂g/∂θ [C, *shape]} over every trainable backbone parameter."""
    out = []
    for ex in examples(model.backbone, batch):
        fn = output_fn(model, ex, "logits")
        ids = ex.input_ids

        def g(params: dict[str, Tensor], word: Tensor, fn: Callable = fn, ids: Tensor = ids) -> Tensor:
            return fn(params, word[ids])

        jac_params, jac_word = jacrev(g, argnums=(0, 1))(dict(model.params), model.word_weight)
        rows = dict(jac_params)
        if model.word_name is not None:
            rows[model.word_name] = jac_word
        out.append(rows)
    return out


__all__ = ["NtkImplementation", "as_classifier", "empirical_ntk_fn"]
