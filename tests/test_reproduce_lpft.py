"""``reproduce lpft`` end to end on a tiny encoder and real CB data: every step, the checks and the report."""

from __future__ import annotations

import csv
import json
import os

import pytest

from dynascope.errors import ConfigError
from dynascope.experiments.lpft import (
    DIAGNOSTIC_COLUMNS,
    LP_PROTOCOLS,
    PRESETS,
    Preset,
    TaskPlan,
    claims,
    reproduce,
    select_tasks,
)
from dynascope.runio import read_json
from tiny_models import tiny_bert_folder

pytestmark = pytest.mark.skipif(not os.environ.get("DYNASCOPE_DATA"), reason="DYNASCOPE_DATA is not set")


def test_presets_state_seeds_steps_and_models() -> None:
    quick, full, base = PRESETS["quick"], PRESETS["full"], PRESETS["base"]
    assert [p.task for p in quick.tasks] == ["cb", "sst2", "sst5-3"]
    assert [p.task for p in full.tasks] == ["cb", "rte", "sst2", "sst5-3"]
    for preset in PRESETS.values():
        assert set(preset.methods) == {"lp", "ft", "lp-ft", "lora", "lp-lora"}
        assert all(len(p.seeds) >= 3 for p in preset.tasks)
    assert all(p.steps for p in quick.tasks), "quick subsamples, so it states a minimum number of steps"
    assert all(len(p.seeds) == 5 and p.max_train is None for p in full.tasks)
    assert (full.model, base.model) == ("default", "mpnet-base")
    assert [p.task for p in select_tasks(base, ["cb"]).tasks] == ["cb"]
    with pytest.raises(ConfigError, match="expected some of"):
        select_tasks(quick, ["rte"])


def _synthetic(task: str, method: str, seed: int, diff: float, learned: bool = True) -> dict:
    return {
        "metrics": {
            "task": task, "method": method, "seed": seed, "learned": learned,
            "head_norm": {"init": 1.0, "after_lp": 10.0 + seed % 7}, "test": {"accuracy": 0.8}, "ood": {},
        },
        "features": {"splits": {"test": {"diff": diff}}},
        "calibration": None,
    }  # fmt: skip


def test_claims_use_only_runs_that_learned_and_judge_per_task() -> None:
    analysed = {}
    for seed in (1, 2, 3):
        analysed[f"a/lp/{seed}"] = _synthetic("a", "lp", seed, 0.0)
        analysed[f"a/ft/{seed}"] = _synthetic("a", "ft", seed, 5.0 + 0.1 * seed)
        analysed[f"a/lp-ft/{seed}"] = _synthetic("a", "lp-ft", seed, 1.0 + 0.1 * seed)
        analysed[f"b/ft/{seed}"] = _synthetic("b", "ft", seed, 1.0 + 0.1 * seed)
        analysed[f"b/lp-ft/{seed}"] = _synthetic("b", "lp-ft", seed, 5.0 + 0.2 * seed)
    analysed["b/lp-ft/4"] = _synthetic("b", "lp-ft", 4, -100.0, learned=False)  # would flip b if used
    rows = {(r["task"], r["claim"]): r for r in claims(analysed, ["a", "b"], {})}
    less = "LP-FT changes the features less than FT"
    assert rows[("a", less)]["verdict"] == "holds" and rows[("a", less)]["paired"]
    assert rows[("b", less)]["verdict"] == "contradicted" and rows[("b", less)]["arms"]["lp-ft"]["seeds"] == [1, 2, 3]
    assert rows[("a", "LP grows the head norm many-fold")]["verdict"] == "holds"
    assert rows[("b", "LP grows the head norm many-fold")]["verdict"] == "inconclusive"  # no LP run on b


def test_smoke_reproduction(tmp_path) -> None:
    model = tiny_bert_folder(tmp_path / "bert")
    grids = {"ft": (1e-4,), "lp-ft": (1e-4,), "lora": (1e-3,), "lp-lora": (1e-3,)}
    preset = Preset(
        name="smoke",
        tasks=(TaskPlan("cb", seeds=(1, 2, 3), max_train=24, epochs=1, steps=2),),
        lr_grids=grids,
        lp_protocols={k: LP_PROTOCOLS[k] for k in list(LP_PROTOCOLS)[:2]},
        ntk_states=("ft", "lp-ft"),
        ntk_seeds=2,
        ntk_n_train=4,
        ntk_n_eval=3,
        ntk_probes=0,
        tsne=False,
    )
    out, docs = tmp_path / "study", tmp_path / "docs"
    checks = reproduce(preset, out, model=str(model), docs=docs)
    assert checks and all(c["verdict"] in ("holds", "contradicted", "inconclusive") for c in checks)
    for method in ("lp", "ft", "lp-ft", "lora", "lp-lora"):
        for seed in (1, 2, 3):
            run = out / "runs" / "cb" / method / f"seed{seed}"
            assert (run / "metrics.json").exists() and (run / "calibration.json").exists()
            config = read_json(run / "config.json")
            if method != "lp":
                assert config["lr_search"]["grid"] == list(grids[method]) and config["lr"] == grids[method][0]
            metrics = read_json(run / "metrics.json")
            assert isinstance(metrics["learned"], bool) and "val" in metrics["majority_baseline"]
    assert (out / "runs" / "cb" / "lr-grid" / "ft").is_dir()
    assert (out / "ntk" / "cb" / "lp-ft" / "seed2" / "stats.json").exists()
    assert (out / "pooling-mean" / "cb" / "lp-ft" / "seed3" / "metrics.json").exists()

    saved = read_json(out / "checks.json")
    never_learned = {(d["method"], d["seed"]) for d in saved["left_out"]}
    for c in saved["checks"]:  # a check never uses a run that did not learn (the NTK claim uses no trained run)
        for arm, values in c["arms"].items() if "kernel" not in c["claim"] else ():
            assert not {(arm, s) for s in values["seeds"]} & never_learned
    checks_md = (out / "checks.md").read_text()
    assert "## Runs left out" in checks_md and "SE" in checks_md

    with open(out / "diagnostics.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == list(DIAGNOSTIC_COLUMNS)
    keys = {(r["task"], r["method"], r["seed"], r["pooling"]) for r in table}
    assert len(table) == len(keys) == 5 * 3 + 2 * 3  # the grid, and LP / LP-FT with mean pooling
    assert all(r["ntk_ft_ratio_lp_head"] for r in table if r["seed"] in ("1", "2"))

    results = (out / "results.md").read_text()
    for section in ("## Checks", "## Learning rates", "## NTK at the start of FT", "## Pooling", "LP protocol"):
        assert section in results
    for name in ("report.html", "checks.md", "results.md", "diagnostics.csv"):
        assert (docs / name).exists()
    report = (docs / "report.html").read_text()
    assert "Inputs: /" not in report, "run paths in the published report are relative"
    assert "lr-grid" not in report, "learning-rate grid points are not results"
    again = reproduce(preset, out, model=str(model))  # a second invocation reuses every finished run
    assert json.dumps(again) == json.dumps(checks)  # (NaN standard errors compare equal as text)
