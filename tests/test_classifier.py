"""Classifier, pooling, backbone resolution and LoRA on tiny random encoders."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel, MPNetConfig, MPNetModel, RobertaConfig, RobertaModel

from dynascope.errors import ConfigError
from dynascope.models import Classifier, LoraSettings, apply_lora, count_trainable, pool, resolve_model
from dynascope.models.lora import lora_state_dict, lora_target_modules


def tiny_bert(hidden: int = 16, layers: int = 2) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=60, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=40,
    )
    return BertModel(config, add_pooling_layer=False)


def batch(n: int = 3, length: int = 7) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 60, (n, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_head_init_norm_matches_paper_scale() -> None:
    # ‖V‖_F ≈ 0.02·√(h·C): with h·C = 2,304 entries the relative spread of the norm is about 1.5 %.
    h, c = 768, 3
    clf = Classifier(tiny_bert(hidden=h, layers=1), c, seed=1001)
    expected = 0.02 * (h * c) ** 0.5
    assert abs(clf.head_norm() - expected) / expected < 0.06
    assert torch.count_nonzero(clf.head.bias) == 0
    again = Classifier(tiny_bert(hidden=h, layers=1), c, seed=1001)
    assert torch.equal(clf.head.weight, again.head.weight)
    other = Classifier(tiny_bert(hidden=h, layers=1), c, seed=2002)
    assert not torch.equal(clf.head.weight, other.head.weight)


def test_logits_are_exactly_linear_in_features() -> None:
    clf = Classifier(tiny_bert(), 3, seed=0).eval()
    inputs = batch()
    phi = clf.features(**inputs)
    expected = phi @ clf.head.weight.T + clf.head.bias
    assert torch.allclose(clf(**inputs), expected, atol=1e-6)


def test_pooling_cls_and_masked_mean() -> None:
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])
    mean = pool(hidden, mask, "mean")
    assert torch.allclose(mean[0], hidden[0, :2].mean(0))
    assert torch.allclose(mean[1], hidden[1].mean(0))
    with pytest.raises(ConfigError, match="pooling"):
        pool(hidden, mask, "max")


def test_scale_and_set_head() -> None:
    clf = Classifier(tiny_bert(), 2, seed=0)
    clf.head.bias.data.fill_(0.5)
    factor = clf.scale_head(10.0)
    assert clf.head_norm() == pytest.approx(10.0, rel=1e-6)
    assert torch.allclose(clf.head.bias, torch.full((2,), 0.5 * factor))
    with pytest.raises(ConfigError, match="head shapes"):
        clf.set_head(torch.zeros(3, 16), torch.zeros(3))


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: tiny_bert(), ["query", "value"]),
        (
            lambda: RobertaModel(
                RobertaConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=32, max_position_embeddings=40),
                add_pooling_layer=False,
            ),
            ["query", "value"],
        ),
        (
            lambda: MPNetModel(
                MPNetConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=40),
                add_pooling_layer=False,
            ),
            ["q", "v"],
        ),
    ],
)
def test_lora_trains_only_adapter_and_head(make, expected) -> None:
    backbone = make()
    assert lora_target_modules(backbone) == expected
    hidden, layers, rank, classes = 16, 2, 4, 3
    clf = Classifier(backbone, classes, seed=0).eval()
    inputs = batch()
    before = clf(**inputs).detach()
    apply_lora(clf, LoraSettings(r=rank, alpha=rank), seed=0)
    # query and value in every layer: A (r×h) and B (h×r) each; plus the head V (C×h) and b (C).
    assert count_trainable(clf) == layers * 2 * (2 * rank * hidden) + classes * hidden + classes
    trainable = {n for n, p in clf.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith("head.") for n in trainable)
    assert len(lora_state_dict(clf)) == layers * 2 * 2
    assert torch.allclose(clf(**inputs), before, atol=1e-6), "B = 0 at init: function unchanged"


def test_lora_gaussian_init_std() -> None:
    clf = Classifier(tiny_bert(hidden=64), 2, seed=0)
    apply_lora(clf, LoraSettings(r=8, alpha=8, init_std=0.5), seed=3)
    a = torch.cat([p.flatten() for n, p in clf.backbone.named_parameters() if "lora_A" in n])
    assert a.std().item() == pytest.approx(0.5, rel=0.05)


def test_lora_settings_validation() -> None:
    with pytest.raises(ConfigError, match="rank"):
        LoraSettings(r=0)
    with pytest.raises(ConfigError, match="dropout"):
        LoraSettings(dropout=1.5)


def test_resolve_model_errors(tmp_path, monkeypatch) -> None:
    import socket

    class Reachable:
        def close(self) -> None:
            pass

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no config\.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model("./no/such/folder")
    monkeypatch.setattr(socket, "create_connection", lambda *args, **kwargs: Reachable())
    assert resolve_model("org/some-model") == "org/some-model"  # a hub id when the hub answers


def test_apply_lora_is_seeded_and_leaves_the_global_rng_alone() -> None:
    def adapter(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(123)  # a different global state before each call
        clf = apply_lora(Classifier(tiny_bert(), 2), LoraSettings(r=2), seed=seed)
        return lora_state_dict(clf)

    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    Classifier(tiny_bert(), 2)  # consumes the global RNG like any model build
    after_build = torch.random.get_rng_state()
    torch.random.set_rng_state(before)
    clf = Classifier(tiny_bert(), 2)
    apply_lora(clf, LoraSettings(r=2), seed=3)
    assert torch.equal(torch.random.get_rng_state(), after_build)  # apply_lora drew nothing from the caller's RNG
    first, again, other = adapter(3), adapter(3), adapter(4)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first if "lora_A" in k)


def test_load_backbone_restores_the_hf_logging_level(tmp_path) -> None:
    from transformers import BertTokenizerFast
    from transformers.utils import logging as hf_logging

    from dynascope.models import load_backbone

    tiny_bert().save_pretrained(tmp_path)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(tmp_path)
    hf_logging.set_verbosity_info()
    try:
        load_backbone(str(tmp_path))
        assert hf_logging.get_verbosity() == hf_logging.INFO
        assert hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.set_verbosity_warning()
