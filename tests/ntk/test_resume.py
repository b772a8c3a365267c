"""A run killed after k finished blocks resumes from its checkpoints to the identical kernel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from dynascope.ntk.checkpoint import CheckpointFolder
from dynascope.ntk.components import ntk_components
from dynascope.ntk.functional import kernel_model
from dynascope.runio import NTK
from ntk.tiny_ntk import tiny_batch


class Killed(BaseException):
    """Stands in for the process dying."""


class DyingFolder(CheckpointFolder):
    """Saves ``survive`` blocks, then 'dies' while saving the next one."""

    def __init__(self, folder: Path, survive: int) -> None:
        super().__init__(folder)
        self.survive = survive

    def save(self, key: str, kernel: Tensor, fingerprint: str) -> None:
        if self.survive == 0:
            raise Killed(key)
        self.survive -= 1
        super().save(key, kernel, fingerprint)


class CountingFolder(CheckpointFolder):
    """Records which blocks had to be computed (saved) on this run."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.saved: list[str] = []

    def save(self, key: str, kernel: Tensor, fingerprint: str) -> None:
        self.saved.append(key)
        super().save(key, kernel, fingerprint)


def test_killed_run_resumes_to_identical_kernel(tmp_path: Path, bert_clf: torch.nn.Module) -> None:
    a, b = tiny_batch("bert", 4, seed=11), tiny_batch("bert", 3, seed=12)
    model = kernel_model(bert_clf)
    reference = ntk_components(model, a, b, memory_gb=1e-5)
    folder = tmp_path / "ckpt"
    with pytest.raises(Killed):
        # a tiny budget puts every block in its own pass, so blocks finish one by one
        ntk_components(model, a, b, memory_gb=1e-5, store=DyingFolder(folder, survive=2))
    first_two = list(reference.blocks)[:2]
    assert CheckpointFolder(folder).finished() == sorted(first_two)
    store = CountingFolder(folder)
    resumed = ntk_components(model, a, b, memory_gb=1e-5, store=store)
    assert store.saved == list(reference.blocks)[2:]
    for block, kernel in reference.blocks.items():
        assert torch.equal(resumed.blocks[block], kernel), block
    assert torch.equal(resumed.total, reference.total)


def test_changed_inputs_do_not_resume(tmp_path: Path, bert_clf: torch.nn.Module) -> None:
    a = tiny_batch("bert", 3, seed=13)
    model = kernel_model(bert_clf)
    ntk_components(model, a, store=CheckpointFolder(tmp_path))
    other = {k: v.clone() for k, v in a.items()}
    other["input_ids"][0, 1] = 13 if int(other["input_ids"][0, 1]) != 13 else 12
    store = CountingFolder(tmp_path)
    recomputed = ntk_components(model, other, store=store)
    assert store.saved == list(recomputed.blocks)
    assert torch.allclose(recomputed.total, ntk_components(model, other).total, rtol=0, atol=0)


def _toy_task(folder: Path) -> Path:
    """A 2-class sentence-pair task spec over the tiny model's vocabulary."""
    import json

    from tiny_models import WORDS

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 30), ("test", 12)):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(n):
                label = i % 2
                words = rng.choice(WORDS[:20] if label else WORDS[20:40], size=rng.integers(3, 9))
                pair = rng.choice(WORDS, size=rng.integers(2, 5))
                fh.write(json.dumps({"s": " ".join(words), "p": " ".join(pair), "label": label}) + "\n")
    spec = folder / "toy.json"
    spec.write_text(
        json.dumps(
            {
                "name": "toy",
                "format": "jsonl",
                "labels": [0, 1],
                "text_field": "s",
                "pair_field": "p",
                "train": "train.jsonl",
                "test": "test.jsonl",
            }
        ),
        encoding="utf-8",
    )
    return spec


@pytest.mark.parametrize(("state", "solvers"), [("lp-ft", "paper,ridge,logistic"), ("lora", "ridge")])
def test_ntk_command_writes_contract_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, state: str, solvers: str
) -> None:
    from safetensors.torch import load_file

    from dynascope.cli import main
    from tiny_models import tiny_bert_folder

    model = tiny_bert_folder(tmp_path / "model")
    spec = _toy_task(tmp_path / "data")
    args = ["ntk", "--task", str(spec), "--state", state, "--model", str(model), "--n-train", "10"]
    args += ["--n-eval", "6", "--memory-gb", "1e-3", "--probes", "4", "--solvers", solvers, "--quiet"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    table = capsys.readouterr().out
    assert "P+F" in table and "FT ratio" in table
    assert ("–" in table) == (state == "lora")  # no paper accuracy without the paper solver

    real_save = CheckpointFolder.save
    calls = {"n": 0}

    def dying_save(self: CheckpointFolder, key: str, kernel: Tensor, fingerprint: str) -> None:
        calls["n"] += 1
        if calls["n"] > 2:
            raise Killed(key)
        real_save(self, key, kernel, fingerprint)

    monkeypatch.setattr(CheckpointFolder, "save", dying_save)
    with pytest.raises(Killed):
        main([*args, "--out", str(tmp_path / "resumed")])
    assert not (tmp_path / "resumed" / "stats.json").exists()
    assert len(list(NTK.path(tmp_path / "resumed", "blocks").glob("*.safetensors"))) == 2
    monkeypatch.setattr(CheckpointFolder, "save", real_save)
    assert main([*args, "--out", str(tmp_path / "resumed")]) == 0

    whole, resumed = (
        load_file(str(tmp_path / "whole" / "kernels.safetensors")),
        load_file(str(tmp_path / "resumed" / "kernels.safetensors")),
    )
    assert sorted(whole) == ["ft", "ft_eval", "pre", "pre_eval", "total", "total_eval"]
    assert whole["total"].shape == (10, 2, 10, 2) and whole["total_eval"].shape == (6, 2, 10, 2)
    assert whole["ft"].dtype == torch.float64
    for key, value in whole.items():
        assert torch.equal(value, resumed[key]), key
    assert not NTK.has(tmp_path / "resumed", "blocks")
    stats = json.loads((tmp_path / "resumed" / "stats.json").read_text())
    assert (stats["kind"], stats["state"], stats["task"]) == ("ntk", state, "toy")
    assert stats["pre"]["rank"] <= 2 * 10 and 0 <= stats["ft_ratio"] <= 1.5
    assert stats["trace"]["hutchinson_ft"]["num_probes"] == 4
    trace = stats["trace"]
    assert trace["probes"] == 4 and trace["exact_ft"] == pytest.approx(stats["ft"]["trace"])
    assert trace["hutchinson_ft"]["estimate"] > 0 and trace["stderr"] > 0
    assert not {"exact", "hutchinson"} & set(trace)  # removed aliases (0.2)
    paper = {"paper_row_acc_train", "paper_row_acc_test"} if "paper" in solvers else set()
    for key in ("pre", "ft", "total"):
        assert set(stats[key]) >= {"rank", "frobenius", "ridge_acc_train", "ridge_acc_test", *paper}
        assert not {"acc_train", "acc_test"} & set(stats[key])
    assert ("lora_vs_ft" in stats["trace"]) == (state == "lora")
    spectra = np.load(tmp_path / "resumed" / "spectra.npz")
    assert spectra["total_nuclear"].shape == (10, 10) and spectra["ft_sv"][0] == 1.0
    assert spectra["labels_sorted"].tolist() == sorted(spectra["labels_sorted"].tolist())


def test_ntk_command_on_a_lora_run_directory(tmp_path: Path) -> None:
    from dynascope.cli import main
    from dynascope.train.recipes import RunConfig, run
    from tiny_models import tiny_bert_folder

    model = tiny_bert_folder(tmp_path / "model")
    spec = _toy_task(tmp_path / "data")
    run(RunConfig(task=str(spec), method="lora", model=str(model), epochs=1), tmp_path / "run")
    args = ["ntk", "--state", str(tmp_path / "run"), "--n-train", "8", "--n-eval", "4", "--solvers", "ridge"]
    assert main([*args, "--quiet", "--out", str(tmp_path / "ntk")]) == 0
    stats = json.loads((tmp_path / "ntk" / "stats.json").read_text())
    assert (stats["task"], stats["run_method"], stats["n_train"]) == ("toy", "lora", 8)
    assert sorted(stats["blocks"]) == ["layer.00.lora", "layer.01.lora"]  # the trained adapter only
    assert stats["ft"]["trace"] > 0 and stats["pre"]["trace"] > 0


def test_ntk_config_file_gives_the_same_run_as_flags(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from dynascope.cli import main
    from dynascope.runio import read_json
    from tiny_models import tiny_bert_folder

    model = tiny_bert_folder(tmp_path / "model")
    spec = _toy_task(tmp_path / "data")
    settings = {"task": str(spec), "state": "ft", "model": str(model), "n_train": 6, "n_eval": 4, "probes": 0}
    (tmp_path / "ntk.json").write_text(json.dumps(settings), encoding="utf-8")
    flags = ["ntk", "--task", str(spec), "--state", "ft", "--model", str(model), "--n-train", "6"]
    assert main([*flags, "--n-eval", "4", "--probes", "0", "--quiet", "--out", str(tmp_path / "flags")]) == 0
    assert main(["ntk", "--config", str(tmp_path / "ntk.json"), "--quiet", "--out", str(tmp_path / "file")]) == 0
    assert read_json(tmp_path / "file" / "config.json") == read_json(tmp_path / "flags" / "config.json")
    # a flag overrides the file
    out = tmp_path / "override"
    assert main(["ntk", "--config", str(tmp_path / "ntk.json"), "--n-eval", "3", "--quiet", "--out", str(out)]) == 0
    assert read_json(out / "config.json")["n_eval"] == 3
    capsys.readouterr()
    (tmp_path / "bad.json").write_text(json.dumps({**settings, "n_trian": 8}), encoding="utf-8")
    assert main(["ntk", "--config", str(tmp_path / "bad.json"), "--quiet", "--out", str(tmp_path / "bad")]) != 0
    assert "unknown NTK settings ['n_trian']" in capsys.readouterr().err


def test_ntk_lp_protocol_flags_reach_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from dynascope.cli import main
    from dynascope.commands import ntk as command

    seen = []
    monkeypatch.setattr(command, "run_ntk", lambda config, *a, **k: seen.append(config) or {})
    monkeypatch.setattr(command, "format_table", lambda stats: "")
    argv = ["ntk", "--task", "cb", "--state", "lp-ft", "--lp-protocol", "fixed", "--lp-c", "0.5"]
    argv += ["--out", str(tmp_path)]
    assert main(argv) == 0
    assert (seen[0].lp.protocol, seen[0].lp.C) == ("fixed", 0.5)
    assert seen[0].to_dict()["lp"]["protocol"] == "fixed"
