"""Matrix-free J products against brute force; exact traces; Hutchinson unbiased; Hutch++ exact at low rank."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call, jacrev

from dynascope.errors import ConfigError
from dynascope.ntk.components import as_matrix, ntk_components
from dynascope.ntk.functional import WORD, kernel_model
from dynascope.ntk.trace import JacobianOperator, block_traces, hutchinson_trace, hutchpp_trace
from ntk.tiny_ntk import tiny_batch


def brute_jacobian(clf: torch.nn.Module, batch: dict, op: JacobianOperator) -> torch.Tensor:
    """[N·m, P] Jacobian of g (or φ): dense parameters in the operator's order, then word embeddings on its rows."""
    params = {n: p.detach() for n, p in clf.backbone.named_parameters() if n in op.names}

    def out(p: dict) -> torch.Tensor:
        if op.output == "logits":
            return (
                functional_call(clf, {f"backbone.{k}": v for k, v in p.items()}, args=(), kwargs=batch) - clf.head.bias
            )
        return functional_call(clf.backbone, p, args=(), kwargs=batch).last_hidden_state[:, 0]

    jac = jacrev(out)(params)
    n = batch["input_ids"].shape[0]
    cols = []
    for name in [*op.dense, *([op.model.word_name] if op.with_word else [])]:
        j = jac[name].reshape(n * op.num_outputs, *params[name].shape)
        if name == op.model.word_name:
            j = j[:, op.rows]
        cols.append(j.reshape(n * op.num_outputs, -1))
    return torch.cat(cols, dim=1)


def test_jvp_and_vjp_match_brute_force_jacobian(bert_clf: torch.nn.Module) -> None:
    batch = tiny_batch("bert", 3, seed=20)
    model = kernel_model(bert_clf)
    op = JacobianOperator(model, batch)
    jac = brute_jacobian(bert_clf, batch, op)
    assert jac.shape[1] == op.dim
    keys = [*op.dense, WORD]  # flattening order of the probe dicts, as in brute_jacobian
    probes = op.rademacher(3, torch.Generator().manual_seed(0))
    flat = torch.cat([probes[k].reshape(3, -1) for k in keys], dim=1)
    assert torch.allclose(op.jvp(probes).reshape(3, -1), flat @ jac.T, rtol=1e-10, atol=1e-10)
    cot = torch.randn(2, 3, op.num_outputs, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    back = op.vjp(cot)
    back_flat = torch.cat([back[k].reshape(2, -1) for k in keys], dim=1)
    assert torch.allclose(back_flat, cot.reshape(2, -1) @ jac, rtol=1e-10, atol=1e-10)


def test_exact_traces_equal_kernel_diagonal_and_feature_jacobian(roberta_clf: torch.nn.Module) -> None:
    batch = tiny_batch("roberta", 3, seed=21)
    model = kernel_model(roberta_clf)
    comp = ntk_components(model, batch)
    exact = block_traces(model, batch, method="exact")
    assert math.isclose(exact["total"].estimate, float(torch.trace(as_matrix(comp.ft))), rel_tol=1e-10)
    for block, kernel in comp.blocks.items():
        assert math.isclose(exact[block].estimate, float(torch.trace(as_matrix(kernel))), rel_tol=1e-10), block

    feats = JacobianOperator(model, batch, output="features")
    params = {n: p.detach() for n, p in roberta_clf.backbone.named_parameters()}

    def phi(p: dict) -> torch.Tensor:
        hidden = functional_call(roberta_clf.backbone, p, args=(), kwargs=batch).last_hidden_state
        mask = batch["attention_mask"].double().unsqueeze(-1)
        return (hidden * mask).sum(1) / mask.sum(1)

    brute = sum(float(j.pow(2).sum()) for j in jacrev(phi)(params).values())
    assert math.isclose(feats.exact_trace(chunk=5), brute, rel_tol=1e-10)


def test_hutchinson_is_unbiased_over_seeds(bert_clf: torch.nn.Module) -> None:
    batch = tiny_batch("bert", 2, seed=22)
    model = kernel_model(bert_clf)
    op = JacobianOperator(model, batch)
    exact = op.exact_trace()
    estimates = torch.tensor([hutchinson_trace(op, 4, seed=s).estimate for s in range(48)], dtype=torch.float64)
    half_width = 3.5 * float(estimates.std()) / math.sqrt(len(estimates))
    assert abs(float(estimates.mean()) - exact) <= half_width
    assert float(estimates.std()) > 0  # it is an estimator, not the exact value in disguise
    one = hutchinson_trace(op, 48, seed=99)
    assert abs(one.estimate - exact) <= 4 * one.stderr
    assert one == hutchinson_trace(op, 48, seed=99)


def test_hutchpp_is_exact_when_sketch_covers_the_rank(bert_clf: torch.nn.Module) -> None:
    batch = tiny_batch("bert", 2, seed=23)
    model = kernel_model(bert_clf)
    op = JacobianOperator(model, batch)  # rank(F) ≤ N·C = 6 < k = 8
    exact = op.exact_trace()
    est = hutchpp_trace(op, 24, seed=0)
    assert est.num_probes == 24
    assert math.isclose(est.estimate, exact, rel_tol=1e-9)
    layer = JacobianOperator(model, batch, [n for n in model.trainable_names if ".layer.1." in n], output="features")
    est_f = hutchpp_trace(layer, 12, seed=1)  # rank 2·16 = 32 > k = 4: an estimate with a real error bar
    assert est_f.stderr > 0
    assert abs(est_f.estimate - layer.exact_trace()) <= 5 * est_f.stderr


def test_trace_argument_errors(bert_clf: torch.nn.Module) -> None:
    model = kernel_model(bert_clf)
    batch = tiny_batch("bert", 2, seed=24)
    with pytest.raises(ConfigError, match="probes"):
        hutchinson_trace(JacobianOperator(model, batch), 1)
    with pytest.raises(ConfigError, match="not trainable"):
        JacobianOperator(model, batch, ["nope.weight"])
    with pytest.raises(ConfigError, match="method"):
        block_traces(model, batch, method="magic")
