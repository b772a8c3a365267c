"""``reproduce lpft`` end to end on a tiny encoder and real CB data: every step, the checks and the report."""

from __future__ import annotations

import os

import pytest

from dynascope.experiments.lpft import LP_PROTOCOLS, PRESETS, Preset, TaskPlan, checks_markdown, reproduce
from dynascope.runio import read_json
from tiny_models import tiny_bert_folder

pytestmark = pytest.mark.skipif(not os.environ.get("DYNASCOPE_DATA"), reason="DYNASCOPE_DATA is not set")


def test_presets_cover_the_papers_grid() -> None:
    for preset in PRESETS.values():
        assert [p.task for p in preset.tasks] == ["cb", "rte", "sst2", "sst5-3"]
        assert set(preset.methods) == {"lp", "ft", "lp-ft", "lora", "lp-lora"}
        assert set(preset.ntk_states) == {"ft", "lp-ft", "lora", "lp-lora"}
    assert all(len(p.seeds) == 5 and p.max_train is None for p in PRESETS["full"].tasks)


def test_smoke_reproduction(tmp_path) -> None:
    model = tiny_bert_folder(tmp_path / "bert")
    preset = Preset(
        name="smoke",
        tasks=(TaskPlan("cb", seeds=(1, 2), max_train=24, epochs=1),),
        lp_protocols={k: LP_PROTOCOLS[k] for k in list(LP_PROTOCOLS)[:2]},
        ntk_states=("ft", "lp-ft"),
        ntk_n_train=4,
        ntk_n_eval=3,
        ntk_probes=0,
        tsne=False,
    )
    out, docs = tmp_path / "study", tmp_path / "docs"
    checks = reproduce(preset, out, model=str(model), docs=docs)
    assert len(checks) == 5 and all(c["verdict"] in ("holds", "does not hold") for c in checks)
    assert all(isinstance(c["holds"], bool) for c in checks)
    for method in ("lp", "ft", "lp-ft", "lora", "lp-lora"):
        for seed in (1, 2):
            run = out / "runs" / "cb" / method / f"seed{seed}"
            assert (run / "metrics.json").exists() and (run / "calibration.json").exists()
    assert (out / "ntk" / "lp-ft" / "stats.json").exists()
    lp = read_json(out / "runs" / "cb" / "lp" / "seed1" / "metrics.json")["head_norm"]
    ratio_text = checks[0]["numbers"]["cb ratio"]
    assert ratio_text == pytest.approx((lp["after_lp"] / lp["init"] + _ratio(out, 2)) / 2)
    results = (out / "results.md").read_text()
    assert "## Checks" in results and "LP protocol decides the head norm" in results and "cv-logloss" in results
    for name in ("report.html", "checks.md", "results.md"):
        assert (docs / name).exists()
    assert "Inputs: /" not in (docs / "report.html").read_text(), "run paths in the published report are relative"
    assert checks_markdown(checks, preset).count("\n| ") == 6
    # a second invocation reuses every finished run
    again = reproduce(preset, out, model=str(model))
    assert [c["numbers"] for c in again] == [c["numbers"] for c in checks]


def _ratio(out, seed: int) -> float:
    lp = read_json(out / "runs" / "cb" / "lp" / f"seed{seed}" / "metrics.json")["head_norm"]
    return lp["after_lp"] / lp["init"]
