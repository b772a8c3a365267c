"""Learning-rate selection (known outcomes), step budgets, the learned flag, and ``lr="auto"`` end to end."""

from __future__ import annotations

import dataclasses
import math
import os

import pytest

from dynascope.errors import ConfigError
from dynascope.runio import FINETUNE
from dynascope.train.lr_search import best_point, select_lr
from dynascope.train.recipes import RunConfig, choose_lr, run
from tiny_models import tiny_bert_folder


def test_select_lr_keeps_the_best_validation_point(tmp_path) -> None:
    outcomes = {1e-5: 0.61, 3e-5: 0.83, 1e-4: 0.70}
    calls = []

    def run_point(lr: float, where) -> dict:
        calls.append((lr, where.name))
        return {"val": {"accuracy": outcomes[lr]}}

    choice = select_lr((1e-4, 1e-5, 3e-5), seed=7, root=tmp_path, run_point=run_point)
    assert choice.chosen == 3e-5 and choice.metric == "accuracy" and choice.seed == 7
    assert choice.scores == {"1e-05": 0.61, "3e-05": 0.83, "0.0001": 0.70}
    assert calls == [(1e-5, "lr-1e-05"), (3e-5, "lr-3e-05"), (1e-4, "lr-0.0001")]
    assert choice.to_dict()["grid"] == [1e-5, 3e-5, 1e-4]


def test_selection_uses_mcc_when_the_task_reports_it_and_ties_keep_the_smaller_lr(tmp_path) -> None:
    outcomes = {1e-5: {"accuracy": 0.9, "mcc": 0.1}, 1e-4: {"accuracy": 0.6, "mcc": 0.5}}
    choice = select_lr((1e-5, 1e-4), 0, tmp_path, lambda lr, where: {"val": outcomes[lr]})
    assert choice.chosen == 1e-4 and choice.metric == "mcc"
    assert best_point({"1e-05": 0.5, "0.0001": 0.5}, (1e-5, 1e-4)) == 1e-5
    assert best_point({"1e-05": math.nan, "0.0001": 0.1}, (1e-5, 1e-4)) == 1e-4


def test_bad_grids_and_lrs_are_named() -> None:
    with pytest.raises(ConfigError, match=r"expected positive finite learning rates, found \[-1\.0\]"):
        RunConfig(task="cb", method="ft", lr_grid=(1e-5, -1.0))
    with pytest.raises(ConfigError, match="'fast'"):
        RunConfig(task="cb", method="ft", lr="fast")
    with pytest.raises(ConfigError, match="steps: expected an integer >= 1, found 0"):
        RunConfig(task="cb", method="ft", steps=0)
    for field, value in (("lr", math.inf), ("lr", -1.0), ("head_norm", math.nan), ("batch_size", 0), ("seed", -1)):
        with pytest.raises(ConfigError, match=f"^{field}: expected"):
            RunConfig(task="cb", method="ft", **{field: value})
    with pytest.raises(ConfigError, match="seed: expected an integer in"):
        RunConfig(task="cb", method="lp", seed=2**64)


def test_tasks_without_paper_settings_search_instead_of_borrowing_rte() -> None:
    assert RunConfig(task="my-task", method="ft").resolved().lr == "auto"
    assert RunConfig(task="my-task", method="lp-ft").resolved().batch_size == 8
    assert RunConfig(task="cb", method="ft").resolved().lr == 5e-5  # the paper's CB setting
    assert RunConfig(task="cb", method="ft", lr_grid=(1e-4, 1e-5)).grid() == (1e-5, 1e-4)


needs_data = pytest.mark.skipif(not os.environ.get("DYNASCOPE_DATA"), reason="DYNASCOPE_DATA is not set")


@needs_data
def test_auto_lr_run_records_the_search_and_adopts_its_grid_point(tmp_path) -> None:
    model = tiny_bert_folder(tmp_path / "bert")
    config = RunConfig(task="cb", method="ft", model=str(model), epochs=1, steps=9, max_train=48, batch_size=16,
                       lr="auto", lr_grid=(1e-4, 3e-3))
    metrics = run(config, tmp_path / "run")
    record = FINETUNE.load(tmp_path / "run", "config")
    search = record["lr_search"]
    assert search["grid"] == [1e-4, 3e-3] and set(search["scores"]) == {"0.0001", "0.003"}
    best = max(search["scores"], key=lambda k: (search["scores"][k], -float(k)))
    assert record["lr"] == search["chosen"] == float(best)
    assert metrics["adopted_from"].endswith(f"lr-{best}")  # same seed: the grid point is this run
    assert metrics["optimizer_steps"] == 9 and len(metrics["history"]) == 3  # 3 steps per epoch, raised to 3 epochs
    assert isinstance(metrics["learned"], bool) and metrics["learned_evidence"]["n"] == 25
    assert set(metrics["majority_baseline"]) >= {"val", "test"}
    again = choose_lr(config, tmp_path / "run" / "lr-grid")  # finished points are read back, not trained again
    assert again.chosen == record["lr"] and again.scores == search["scores"]
    other = run(dataclasses.replace(config, seed=5), tmp_path / "seed5", lr_choice=again)
    assert "adopted_from" not in other and not (tmp_path / "seed5" / "lr-grid").exists()
    assert FINETUNE.load(tmp_path / "seed5", "config")["lr_search"]["chosen"] == again.chosen


def test_compare_selects_once_per_method_and_refuses_a_changed_config(tmp_path, capsys) -> None:
    from dynascope.cli import main
    from dynascope.experiments.compare import compare

    model = tiny_bert_folder(tmp_path / "bert")
    out = tmp_path / "cmp"
    argv = ["compare", "--task", "cb", "--model", str(model), "--methods", "lp,ft", "--seeds", "1,2", "--epochs", "1",
            "--steps", "4", "--max-train", "32", "--batch-size", "16", "--lr", "auto", "--lr-grid", "1e-4,3e-3",
            "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    grid_points = sorted(p.name for p in (out / "lr-grid" / "ft").iterdir())
    assert grid_points == ["lr-0.0001", "lr-0.003"]  # one search for both seeds, none for LP
    chosen = {FINETUNE.load(out / "ft" / f"seed{s}", "config")["lr"] for s in (1, 2)}
    assert len(chosen) == 1 and FINETUNE.load(out / "ft" / "seed2", "metrics")["optimizer_steps"] == 4
    assert "lr_search" not in FINETUNE.load(out / "lp" / "seed1", "config")
    base = RunConfig(task="cb", method="ft", model=str(model), epochs=1, steps=4, max_train=48, batch_size=16,
                     lr="auto", lr_grid=(1e-4, 3e-3))  # max_train changed
    with pytest.raises(ConfigError, match="differs in max_train"):
        compare(base, ["ft"], [1, 2], out)
    with pytest.raises(SystemExit):
        main(["train", "--task", "cb", "--method", "ft", "--lr", "fast", "--out", str(tmp_path / "x")])
    assert "expected a number or 'auto'" in capsys.readouterr().err
