"""Ghost-norm exact traces against the per-parameter VJP route and brute-force jacrev, in float64."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev
from torch.nn import functional as F

from dynascope.errors import ConfigError
from dynascope.models.classifier import Classifier, pool
from dynascope.models.lora import LoraSettings, apply_lora
from dynascope.ntk.functional import kernel_model
from dynascope.ntk.ghost import ghost_plan, ghost_trace
from dynascope.ntk.trace import JacobianOperator, block_traces
from ntk.tiny_ntk import tiny_batch

TOL = 1e-10


def brute_trace(clf: Classifier, batch: dict[str, Tensor], names: list[str], output: str) -> float:
    """Σ ‖∂out/∂θ‖² over backbone parameters ``names`` by jacrev through the ordinary ``input_ids`` path."""
    params = {n: p.detach() for n, p in clf.backbone.named_parameters() if n in names}
    assert len(params) == len(names)

    def out(p: dict[str, Tensor]) -> Tensor:
        hidden = functional_call(clf.backbone, p, args=(), kwargs=batch).last_hidden_state
        phi = pool(hidden, batch["attention_mask"], clf.pooling)
        return phi @ clf.head.weight.detach().T if output == "logits" else phi

    return sum(float(j.detach().pow(2).sum()) for j in jacrev(out)(params).values())


def assert_exact(clf: Classifier, batch: dict[str, Tensor], names: list[str] | None, output: str) -> float:
    """Ghost trace = VJP-route trace = brute force (relative 1e-10); returns the ghost value."""
    model = kernel_model(clf)
    op = JacobianOperator(model, batch, names, output)
    ghost = op.exact_trace(chunk=5)
    one_chunk = ghost_trace(model, op.examples, op.names, output, chunk=64)
    assert abs(ghost - one_chunk) <= TOL * ghost
    vjp = op.exact_trace(method="vjp")
    brute = brute_trace(clf, batch, op.names, output)
    assert ghost > 0
    assert abs(ghost - vjp) <= TOL * vjp, (ghost, vjp)
    assert abs(ghost - brute) <= TOL * brute, (ghost, brute)
    return ghost


def subset(clf: Classifier, which: str) -> list[str] | None:
    """Parameter subsets: all, one layer's attention + word embeddings, norms + position/type tables, word only."""
    names = [n for n, _ in clf.backbone.named_parameters()]
    if which == "all":
        return None
    if which == "attention+word":
        return [n for n in names if "layer.1.attention." in n or "word_embeddings" in n]
    if which == "word":
        return [n for n in names if "word_embeddings" in n]
    return [n for n in names if "LayerNorm" in n or "position_embeddings" in n or "token_type_embeddings" in n]


@pytest.mark.parametrize("output", ["features", "logits"])
@pytest.mark.parametrize("which", ["all", "attention+word", "norms+positions", "word"])
@pytest.mark.parametrize("length", [9, 20])  # T ≤ d_in = 16: Gram route; T > d_in: weight-gradient route
def test_ghost_trace_is_exact_on_bert(bert_clf: Classifier, output: str, which: str, length: int) -> None:
    batch = tiny_batch("bert", 3, seed=40, length=length)
    assert_exact(bert_clf, batch, subset(bert_clf, which), output)


@pytest.mark.parametrize("output", ["features", "logits"])
@pytest.mark.parametrize("which", ["all", "attention+word", "norms+positions"])
def test_ghost_trace_is_exact_on_roberta(roberta_clf: Classifier, output: str, which: str) -> None:
    batch = tiny_batch("roberta", 4, seed=41, length=12)  # padding-aware positions from padding_idx + 1
    assert_exact(roberta_clf, batch, subset(roberta_clf, which), output)


def test_padding_idx_row_gets_no_gradient(roberta_clf: Classifier) -> None:
    """An attended pad token sits at position ``padding_idx``, whose embedding row F.embedding never updates."""
    batch = tiny_batch("roberta", 3, seed=46, length=10)
    batch["input_ids"][:, 4] = 1  # RoBERTa's pad id, attended: position id = padding_idx
    names = [n for n, _ in roberta_clf.backbone.named_parameters() if "word_embeddings" not in n]
    # (the word block is left out: the inputs_embeds route gives the pad row of E a gradient, input_ids does not)
    assert_exact(roberta_clf, batch, names, "features")
    assert_exact(roberta_clf, batch, [n for n in names if "position_embeddings" in n], "logits")


def test_every_rule_contributes(bert_clf: Classifier) -> None:
    """The norm and position/type-table terms are a sizeable part of the trace (dropping one would show)."""
    batch = tiny_batch("bert", 3, seed=42)
    model = kernel_model(bert_clf)
    names = [n for n, _ in bert_clf.backbone.named_parameters()]
    total = JacobianOperator(model, batch, output="features").exact_trace()
    for key in ("LayerNorm.weight", "LayerNorm.bias", "position_embeddings", "token_type_embeddings"):
        part = JacobianOperator(model, batch, [n for n in names if key in n], output="features").exact_trace()
        assert part > 1e-3 * total, key
    assert ghost_plan(model, model.trainable_names).fallback == []


def test_ghost_trace_is_exact_for_lora(bert_clf: Classifier) -> None:
    clf = copy.deepcopy(bert_clf)
    apply_lora(clf, LoraSettings(r=4, alpha=8), seed=1)
    clf.eval()
    with torch.no_grad():  # B = 0 at initialisation would zero the lora_A Jacobian
        for name, param in clf.backbone.named_parameters():
            if "lora_B" in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=torch.Generator().manual_seed(len(name))))
    model = kernel_model(clf)
    assert all("lora_" in n for n in model.trainable_names)
    assert ghost_plan(model, model.trainable_names).fallback == []  # lora_A / lora_B are plain nn.Linear
    batch = tiny_batch("bert", 3, seed=43)  # T ≤ 16 = d_in of lora_A (Gram), T > 4 = d_in of lora_B (weights)
    for output in ("features", "logits"):
        assert_exact(clf, batch, None, output)


class _Twice(nn.Module):
    """One Linear called twice per forward pass (two probes, concatenated along tokens)."""

    def __init__(self, inner: nn.Linear) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x) + self.inner(torch.tanh(x))


class _Direct(nn.Module):
    """Uses its Linear's weights without calling it (no probe ever fires: VJP fallback)."""

    def __init__(self, inner: nn.Linear) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.inner.weight, self.inner.bias)


class _Scaled(nn.Linear):
    """A Linear subclass with its own forward (no ghost rule: VJP fallback)."""

    def forward(self, x: Tensor) -> Tensor:
        return 1.5 * F.linear(torch.sin(x), self.weight, self.bias)


def test_unusual_modules_fall_back_or_concatenate(bert_clf: Classifier) -> None:
    clf = copy.deepcopy(bert_clf)
    layers = clf.backbone.encoder.layer
    layers[0].intermediate.dense = _Twice(layers[0].intermediate.dense)
    layers[1].attention.output.dense = _Direct(layers[1].attention.output.dense)
    old = layers[1].intermediate.dense
    scaled = _Scaled(old.in_features, old.out_features, dtype=torch.float64)
    scaled.load_state_dict(old.state_dict())
    layers[1].intermediate.dense = scaled
    layers[1].attention.self.key.weight = layers[1].attention.self.query.weight  # tied: shared by two modules
    clf.eval()
    model = kernel_model(clf)
    plan = ghost_plan(model, model.trainable_names)
    assert sorted(plan.fallback) == [
        "encoder.layer.1.attention.self.query.weight",
        "encoder.layer.1.intermediate.dense.bias",
        "encoder.layer.1.intermediate.dense.weight",
    ]
    assert "encoder.layer.0.intermediate.dense.inner" in plan.modules
    assert "encoder.layer.1.attention.output.dense.inner" in plan.modules  # planned, found uncalled at run time
    batch = tiny_batch("bert", 3, seed=44)
    assert_exact(clf, batch, None, "features")
    names = [n for n in model.trainable_names if "layer.1.attention" in n or "layer.0.intermediate" in n]
    assert_exact(clf, batch, names, "logits")


def test_exact_trace_methods(bert_clf: Classifier) -> None:
    model = kernel_model(bert_clf)
    batch = tiny_batch("bert", 2, seed=45)
    op = JacobianOperator(model, batch)
    with pytest.raises(ConfigError, match="method"):
        op.exact_trace(method="magic")
    with pytest.raises(ConfigError, match="chunk"):
        op.exact_trace(chunk=0)
    exact = block_traces(model, batch, method="exact")
    assert exact["total"].method == "exact"
    blocks = sum(t.estimate for b, t in exact.items() if b != "total")
    assert abs(blocks - exact["total"].estimate) <= TOL * exact["total"].estimate
    assert abs(exact["total"].estimate - op.exact_trace(method="vjp")) <= TOL * exact["total"].estimate
