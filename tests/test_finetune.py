"""The FT loop on a tiny model: determinism, resume after interruption, LoRA freezing, best-epoch restore."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from dynascope.data.encode import Encoded
from dynascope.errors import ConfigError
from dynascope.models import Classifier, LoraSettings, apply_lora
from dynascope.train.finetune import CHECKPOINT, FinetuneSettings, finetune


def tiny_classifier(seed: int = 0) -> Classifier:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32,
    )
    return Classifier(BertModel(config, add_pooling_layer=False), 2, seed=seed)


def toy_data(n: int, seed: int) -> Encoded:
    """Label = whether token 7 occurs; lengths vary so that padding and bucketing matter."""
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for _ in range(n):
        length = int(rng.integers(4, 12))
        seq = rng.integers(8, 40, size=length).tolist()
        label = int(rng.integers(0, 2))
        if label:
            seq[int(rng.integers(1, length))] = 7
        ids.append(tuple([2, *seq, 3]))
        labels.append(label)
    return Encoded(tuple(ids), None, np.array(labels), pad_id=0)


SETTINGS = FinetuneSettings(epochs=3, lr=3e-3, batch_size=8, eval_batch_size=16)


def params(clf: Classifier) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in clf.state_dict().items()}


def test_same_seed_same_result_and_learning() -> None:
    train, val = toy_data(64, 0), toy_data(24, 1)
    runs = []
    for _ in range(2):
        clf = tiny_classifier()
        result = finetune(clf, train, val, SETTINGS, seed=5)
        runs.append((result, params(clf)))
    (r1, p1), (r2, p2) = runs
    assert [row["train_loss"] for row in r1.history] == [row["train_loss"] for row in r2.history]
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    assert r1.history[-1]["train_loss"] < r1.history[0]["train_loss"]
    assert len(r1.head_norms) == 3 and r1.best_epoch in (1, 2, 3)


def test_interrupted_run_resumes_to_the_same_result(tmp_path) -> None:
    train, val = toy_data(64, 0), toy_data(24, 1)
    reference = tiny_classifier()
    ref_result = finetune(reference, train, val, SETTINGS, seed=5)

    class Stop(Exception):
        pass

    def stop_after_first(epoch: int, row: dict) -> None:
        if epoch == 1:
            raise Stop

    clf = tiny_classifier()
    with pytest.raises(Stop):
        finetune(clf, train, val, SETTINGS, seed=5, checkpoint_dir=tmp_path, on_epoch_end=stop_after_first)
    assert (tmp_path / CHECKPOINT).exists()
    resumed = tiny_classifier()  # a fresh process would rebuild the model from scratch
    result = finetune(resumed, train, val, SETTINGS, seed=5, checkpoint_dir=tmp_path)
    assert result.resumed_after == 2
    assert result.history == [
        {**row, "seconds": result.history[i]["seconds"]} for i, row in enumerate(ref_result.history)
    ]
    assert result.best_epoch == ref_result.best_epoch
    ref_params, got = params(reference), params(resumed)
    assert all(torch.equal(ref_params[k], got[k]) for k in ref_params)


def test_resume_refuses_other_settings(tmp_path) -> None:
    train, val = toy_data(16, 0), toy_data(8, 1)
    finetune(tiny_classifier(), train, val, FinetuneSettings(epochs=1, lr=1e-3, batch_size=8), seed=1,
             checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="other settings"):
        finetune(tiny_classifier(), train, val, FinetuneSettings(epochs=2, lr=1e-3, batch_size=8), seed=1,
                 checkpoint_dir=tmp_path)


def test_lora_updates_only_adapter_and_head() -> None:
    train, val = toy_data(32, 0), toy_data(8, 1)
    clf = tiny_classifier()
    apply_lora(clf, LoraSettings(r=2, alpha=2), seed=0)
    before = params(clf)
    finetune(clf, train, val, FinetuneSettings(epochs=1, lr=1e-2, batch_size=8), seed=0)
    after = params(clf)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "something must train"
    assert all("lora_B" in k or "lora_A" in k or k.startswith("head.") for k in changed)
    assert any("lora_B" in k for k in changed) and "head.weight" in changed


def test_settings_validation() -> None:
    with pytest.raises(ConfigError, match="epochs"):
        FinetuneSettings(epochs=0)
    with pytest.raises(ConfigError, match="lr"):
        FinetuneSettings(lr=0.0)


def test_a_non_finite_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path) -> None:
    from dynascope.errors import TrainingError

    train, val = toy_data(32, 0), toy_data(8, 1)
    calls = {"n": 0}

    def poison(epoch: int, row: dict) -> None:  # after epoch 1's checkpoint, break the head
        calls["n"] += 1
        with torch.no_grad():
            clf.head.weight.fill_(float("nan"))

    clf = tiny_classifier()
    with pytest.raises(TrainingError, match=r"epoch 2: the training loss is nan; .*after epoch 1 is kept"):
        finetune(clf, train, val, SETTINGS, seed=5, checkpoint_dir=tmp_path, on_epoch_end=poison)
    assert calls["n"] == 1 and (tmp_path / CHECKPOINT).exists()
    state = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert len(state["result"]["history"]) == 1 and torch.isfinite(state["params"]["head.weight"]).all()
