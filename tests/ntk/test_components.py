"""P + F against the brute-force empirical NTK of tiny float64 BERT/RoBERTa classifiers."""

from __future__ import annotations

import pytest
import torch

from dynascope.errors import ConfigError, DynascopeError
from dynascope.models.lora import LoraSettings, apply_lora
from dynascope.ntk.blocks import default_block, resolve_partition
from dynascope.ntk.components import as_matrix, ntk_components, ntk_train_eval, pre_kernel
from dynascope.ntk.functional import kernel_model, position_ids
from ntk.tiny_ntk import NUM_LABELS, brute_force_ntk, rel_err, tiny_batch, tiny_classifier

TOL = 1e-8


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_p_plus_f_is_full_ntk(kind: str, request: pytest.FixtureRequest) -> None:
    clf = request.getfixturevalue(f"{kind}_clf")
    a, b = tiny_batch(kind, 5, seed=0), tiny_batch(kind, 4, seed=1)
    model = kernel_model(clf)
    cross = ntk_components(model, a, b)
    assert cross.total.shape == (5, NUM_LABELS, 4, NUM_LABELS)
    assert cross.total.dtype == torch.float64
    assert rel_err(cross.total, brute_force_ntk(clf, a, b)) <= TOL
    sym = ntk_components(model, a)
    assert rel_err(sym.total, brute_force_ntk(clf, a, a)) <= TOL
    assert torch.allclose(as_matrix(sym.total), as_matrix(sym.total).T, atol=1e-12)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_blocks_sum_and_each_block_matches_brute_force(kind: str, request: pytest.FixtureRequest) -> None:
    clf = request.getfixturevalue(f"{kind}_clf")
    a, b = tiny_batch(kind, 4, seed=2), tiny_batch(kind, 3, seed=3)
    model = kernel_model(clf)
    comp = ntk_components(model, a, b)
    assert list(comp.blocks) == [
        "embeddings.word",
        "embeddings.other",
        "layer.00.attention",
        "layer.00.mlp",
        "layer.01.attention",
        "layer.01.mlp",
    ]
    head = ["head.weight", "head.bias"]
    assert rel_err(comp.ft, brute_force_ntk(clf, a, b, [n for n, _ in clf.named_parameters() if n not in head])) <= TOL
    assert rel_err(comp.pre, brute_force_ntk(clf, a, b, head)) <= TOL
    blocks = resolve_partition(model.trainable_names, model.word_name)
    for block, names in blocks.items():
        expected = brute_force_ntk(clf, a, b, [f"backbone.{n}" for n in names])
        assert rel_err(comp.blocks[block], expected) <= TOL, block
    assert comp.block_sizes["embeddings.word"] == clf.backbone.embeddings.word_embeddings.weight.numel()


def test_word_block_is_nonzero_only_through_shared_tokens(bert_clf: torch.nn.Module) -> None:
    a = tiny_batch("bert", 2, seed=4)
    b = {k: v.clone() for k, v in a.items()}
    b["input_ids"] = torch.where(b["attention_mask"].bool(), b["input_ids"] + 20, b["input_ids"])  # disjoint ids
    comp = ntk_components(
        kernel_model(bert_clf), a, b, partition={"word": [r"word_embeddings"], "rest": [r"^(?!embeddings\.word)"]}
    )
    assert float(comp.blocks["word"].abs().max()) == 0.0
    assert float(comp.blocks["rest"].abs().max()) > 0.0


def test_chunked_equals_single_pass(roberta_clf: torch.nn.Module) -> None:
    a, b = tiny_batch("roberta", 5, seed=5), tiny_batch("roberta", 3, seed=6)
    model = kernel_model(roberta_clf)
    whole = ntk_components(model, a, b)
    tiny_budget = ntk_components(model, a, b, memory_gb=2e-5)  # forces chunks of one or two examples
    sym_whole, sym_tiny = ntk_components(model, a), ntk_components(model, a, memory_gb=2e-5)
    assert rel_err(tiny_budget.total, whole.total) <= 1e-13
    assert rel_err(sym_tiny.total, sym_whole.total) <= 1e-13


@pytest.mark.parametrize("memory_gb", [4.0, 2e-5])
def test_train_eval_pair_equals_separate_calls(roberta_clf: torch.nn.Module, memory_gb: float) -> None:
    train, evals = tiny_batch("roberta", 4, seed=14), tiny_batch("roberta", 3, seed=15)
    model = kernel_model(roberta_clf)
    tt, et = ntk_train_eval(model, train, evals, memory_gb=memory_gb)
    assert rel_err(tt.total, ntk_components(model, train).total) <= 1e-12
    assert rel_err(et.total, ntk_components(model, evals, train).total) <= 1e-12
    assert rel_err(et.total, brute_force_ntk(roberta_clf, evals, train)) <= TOL
    assert list(tt.blocks) == list(et.blocks)


def test_lora_state_uses_only_lora_parameters() -> None:
    clf = tiny_classifier("bert", seed=3)
    apply_lora(clf, LoraSettings(r=2, alpha=4, init_std=0.3), seed=0)
    with torch.no_grad():  # B = 0 at init makes the lora_A block vanish; a non-zero B exercises both factors
        for name, param in clf.backbone.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    clf.eval()
    a, b = tiny_batch("bert", 4, seed=7), tiny_batch("bert", 3, seed=8)
    model = kernel_model(clf)
    assert model.word_name is None
    assert all("lora_" in n for n in model.trainable_names)
    comp = ntk_components(model, a, b)
    assert list(comp.blocks) == ["layer.00.lora", "layer.01.lora"]
    assert rel_err(comp.total, brute_force_ntk(clf, a, b)) <= TOL


def test_pre_kernel_without_bias_has_no_plus_one(bert_clf: torch.nn.Module) -> None:
    a = tiny_batch("bert", 3, seed=9)
    with_bias = pre_kernel(kernel_model(bert_clf), a)
    head = bert_clf.head
    bert_clf.head = torch.nn.Linear(head.in_features, head.out_features, bias=False, dtype=torch.float64)
    try:
        without = pre_kernel(kernel_model(bert_clf), a)
    finally:
        bert_clf.head = head
    diag = torch.ones(3, 3, dtype=torch.float64)
    assert torch.allclose(with_bias[:, 0, :, 0] - without[:, 0, :, 0], diag)
    assert float(without[:, 0, :, 1].abs().max()) == 0.0


def test_roberta_position_ids_skip_padding(roberta_clf: torch.nn.Module) -> None:
    ids = torch.tensor([[0, 5, 6, 1, 1]])
    assert position_ids(roberta_clf.backbone, ids).tolist() == [[2, 3, 4, 1, 1]]


def test_partition_errors_and_defaults() -> None:
    names = ["embeddings.word_embeddings.weight", "encoder.layer.3.attention.self.query.weight", "pooler.dense.weight"]
    assert default_block(names[1], names[0]) == "layer.03.attention"
    assert default_block("encoder.layer.0.output.dense.weight", None) == "layer.00.mlp"
    assert default_block("encoder.layer.1.attention.self.query.lora_A.default.weight", None) == "layer.01.lora"
    assert resolve_partition(names, names[0])["other"] == ["pooler.dense.weight"]
    with pytest.raises(ConfigError, match="matching no block"):
        resolve_partition(names, names[0], {"emb": ["embeddings"]})
    with pytest.raises(ConfigError, match="matching several"):
        resolve_partition(names, names[0], {"a": ["."], "b": ["pooler"]})


def test_training_mode_and_sdpa_are_refused() -> None:
    clf = tiny_classifier("bert")
    clf.train()
    with pytest.raises(ConfigError, match="training mode"):
        kernel_model(clf)
    clf.eval()
    clf.backbone.config._attn_implementation = "sdpa"
    with pytest.raises(ConfigError, match="eager"):
        kernel_model(clf)


def _tiny_head_float32_roberta() -> torch.nn.Module:
    """A float32 tiny RoBERTa whose head is shrunk so that |g| ≪ ‖V‖‖φ‖ (a strongly regularised LP head)."""
    clf = tiny_classifier("roberta").float()
    with torch.no_grad():
        clf.head.weight.mul_(1e-3)
        clf.head.bias.zero_()
    return clf


def test_value_guard_accepts_float32_noise_under_a_tiny_head() -> None:
    clf = _tiny_head_float32_roberta()
    batch = tiny_batch("roberta", 6, seed=11)
    comp = ntk_components(kernel_model(clf), batch)
    assert torch.isfinite(comp.total).all()


def test_value_guard_rejects_a_wrong_position_id_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    import dynascope.ntk.functional as functional

    clf = _tiny_head_float32_roberta()
    batch = tiny_batch("roberta", 6, seed=11)
    # BERT's 0..T-1 rule on a RoBERTa backbone, whose positions start after padding_idx
    monkeypatch.setattr(
        functional, "position_ids", lambda backbone, ids: torch.arange(ids.shape[1]).expand_as(ids)
    )
    with pytest.raises(DynascopeError, match="position-id rule"):
        ntk_components(kernel_model(clf), batch)


def test_value_guard_tolerance_scales_with_the_summed_terms() -> None:
    """|g| ≈ 1e-3 by cancellation while ‖V_c‖‖φ‖ ≈ 100: feature noise at float32 level (1e-6 of ‖φ‖) passes,
    a feature change as large as a wrong position-id rule makes (30 % of ‖φ‖) is caught."""
    from dynascope.ntk.components import _check_value, _Reference

    gen = torch.Generator().manual_seed(0)
    h = 384
    phi = torch.randn(1, h, generator=gen, dtype=torch.float64)
    phi *= 10 / phi.norm()
    v = torch.randn(2, h, generator=gen, dtype=torch.float64)
    v -= (v @ phi.T) / phi.norm() ** 2 * phi  # V_c ⟂ φ: g = 0 up to the 1e-3 added below
    v += 1e-3 * phi / phi.norm() ** 2
    v *= 10 / v.norm(dim=1, keepdim=True)
    ref = _Reference.of(phi, v)
    assert float(ref.value.abs().max()) < 1e-2 < float(ref.scale.min())
    noise = 1e-6 * phi.norm() * v[0] / v[0].norm()  # worst-case direction for class 0
    _check_value(((phi + noise) @ v.T)[0], ref, 0)
    shift = torch.randn(1, h, generator=gen, dtype=torch.float64)
    shift *= 0.3 * phi.norm() / shift.norm()
    with pytest.raises(DynascopeError, match="position-id rule"):
        _check_value(((phi + shift) @ v.T)[0], ref, 0)


def test_progress_is_the_callers_wrapper(bert_clf: torch.nn.Module) -> None:
    seen: list[tuple[str, int]] = []

    def count(items, desc):  # an iterator wrapper, as tqdm would be
        items = list(items)
        seen.append((desc, len(items)))
        return items

    a = tiny_batch("bert", 3, seed=12)
    quiet = ntk_components(kernel_model(bert_clf), a)
    counted = ntk_components(kernel_model(bert_clf), a, desc="F", progress=count)
    assert torch.equal(quiet.total, counted.total)
    assert seen and all(desc.startswith("F [") and n == 3 for desc, n in seen)
