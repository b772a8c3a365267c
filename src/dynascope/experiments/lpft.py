"""``dynascope reproduce lpft``: the LP-FT paper's study end to end, with its claims checked against our numbers.

Steps (each reuses finished work, so an interrupted reproduction resumes):
1. the recipe grid — LP, FT, LP-FT, LoRA, LP-LoRA on CB, RTE, SST-2 (OOD: CR, Amazon; near-ID: MR) and
   SST-5→3 classes (OOD: SemEval-2017 tweets) — over seeds (``runs/<task>/<method>/seed<s>``);
2. the LP-protocol study on CB: LP-FT after LP by cross-validation with accuracy scoring (the paper), with
   log-loss scoring, and by unregularised gradient descent (``lp-protocols/<name>``);
3. NTK statistics on CB at the start of FT, LP-FT, LoRA and LP-LoRA (``ntk/<state>``);
4. temperature scaling (``calibration.json`` in every run) and feature metrics;
5. the HTML report (``report/``), ``results.md`` and ``checks.md``/``checks.json``.

``quick`` subsamples training and evaluation sets and trains fewer epochs to fit 2 CPU cores in 45 minutes
(the sizes are listed in ``results.md``); ``full`` is the paper's protocol (5 seeds, 10 epochs, full data) for a
bigger machine. ``--docs DIR`` copies the report, the checks and the tables there (the committed copies under
``docs/results/lpft`` are produced this way).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynascope.progress import say
from dynascope.runio import FINETUNE, NTK, REPORT, STUDY
from dynascope.train.probe import ProbeSettings
from dynascope.train.recipes import METHODS, RunConfig


@dataclass(frozen=True)
class TaskPlan:
    """One task of the grid and how much of it to use."""

    task: str
    seeds: tuple[int, ...]
    max_train: int | None = None
    max_eval: int | None = None
    epochs: int = 10


@dataclass(frozen=True)
class Preset:
    """A whole reproduction: the grid, the LP-protocol study and the NTK runs."""

    name: str
    tasks: tuple[TaskPlan, ...]
    methods: tuple[str, ...] = METHODS
    lp_protocols: dict[str, ProbeSettings] = field(default_factory=dict)
    ntk_states: tuple[str, ...] = ("ft", "lp-ft", "lora", "lp-lora")
    ntk_n_train: int = 64
    ntk_n_eval: int = 56
    ntk_probes: int = 16
    tsne: bool = True


LP_PROTOCOLS = {
    "cv-accuracy (paper)": ProbeSettings(protocol="cv", scoring="accuracy"),
    "cv-logloss": ProbeSettings(protocol="cv", scoring="neg_log_loss"),
    "fixed C = 1": ProbeSettings(protocol="fixed", C=1.0),
    "gd (no regularisation)": ProbeSettings(protocol="gd", gd_steps=2000, gd_lr=0.5),
}

PRESETS = {
    "quick": Preset(
        name="quick",
        tasks=(
            TaskPlan("cb", seeds=(1001, 2002), epochs=3),
            TaskPlan("rte", seeds=(1001,), max_train=400, epochs=3),
            TaskPlan("sst2", seeds=(1001,), max_train=800, max_eval=400, epochs=3),
            TaskPlan("sst5-3", seeds=(1001,), max_train=800, max_eval=400, epochs=3),
        ),
        lp_protocols=LP_PROTOCOLS,
        ntk_n_train=16,
        ntk_n_eval=16,
        ntk_probes=8,
    ),
    "full": Preset(
        name="full",
        tasks=tuple(
            TaskPlan(task, seeds=(1001, 2002, 3003, 4004, 5005)) for task in ("cb", "rte", "sst2", "sst5-3")
        ),
        lp_protocols=LP_PROTOCOLS,
        ntk_n_train=250,
        ntk_n_eval=56,
        ntk_probes=32,
    ),
}


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def run_grid(preset: Preset, out: Path, model: str, data_dir: str | None) -> dict[str, list[Path]]:
    """Step 1: every (task, method, seed) run; returns the run directories per task."""
    from dynascope.experiments.compare import compare, run_dir_for

    dirs: dict[str, list[Path]] = {}
    for plan in preset.tasks:
        base = RunConfig(task=plan.task, method=preset.methods[0], model=model, epochs=plan.epochs,
                         max_train=plan.max_train, max_eval=plan.max_eval)
        where = STUDY.path(out, "runs") / plan.task
        compare(base, preset.methods, plan.seeds, where, data_dir=data_dir)
        dirs[plan.task] = [run_dir_for(where, m, s) for m in preset.methods for s in plan.seeds]
    return dirs


def run_lp_protocols(preset: Preset, out: Path, model: str, data_dir: str | None) -> dict[str, Path]:
    """Step 2: LP-FT on the first task's first seed after LP by each protocol."""
    from dynascope.train.recipes import run

    plan = preset.tasks[0]
    dirs = {}
    for name, settings in preset.lp_protocols.items():
        where = STUDY.path(out, "lp_protocols") / re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        done = FINETUNE.is_finished(where) and FINETUNE.load(where, "config")["lp"] == settings.to_dict()
        if not done:
            config = RunConfig(task=plan.task, method="lp-ft", seed=plan.seeds[0], model=model, epochs=plan.epochs,
                               max_train=plan.max_train, max_eval=plan.max_eval, lp=settings)
            run(config, where, data_dir=data_dir, overwrite=True)
        dirs[name] = where
    return dirs


def run_ntk_states(preset: Preset, out: Path, model: str, data_dir: str | None) -> dict[str, Path]:
    """Step 3: NTK statistics at the start of each recipe's FT stage, on the first task."""
    from dynascope.pipelines.ntk import NTKConfig, run_ntk

    dirs = {}
    for state in preset.ntk_states:
        where = STUDY.path(out, "ntk") / state
        if not NTK.is_finished(where):
            config = NTKConfig(task=preset.tasks[0].task, state=state, n_train=preset.ntk_n_train,
                               n_eval=preset.ntk_n_eval, seed=preset.tasks[0].seeds[0], model=model,
                               probes=preset.ntk_probes)
            run_ntk(config, where, data_dir=data_dir)
        dirs[state] = where
    return dirs


def analyse_runs(run_dirs: Sequence[Path]) -> dict[Path, dict[str, Any]]:
    """Step 4: calibration (written into each run) and feature metrics, per run."""
    from dynascope.report.runs import FinetuneRun, calibration_of, feature_metrics_of

    out = {}
    for path in run_dirs:
        run = FinetuneRun.load(path)
        calibration = calibration_of(run)
        FINETUNE.write(path, "calibration", calibration)
        out[path] = {"metrics": run.metrics, "calibration": calibration, "features": feature_metrics_of(run)}
    return out


def _by(analysed: dict[Path, dict[str, Any]], task: str, method: str) -> list[dict[str, Any]]:
    return [a for a in analysed.values() if a["metrics"]["task"] == task and a["metrics"]["method"] == method]


def _verdict(ok: bool) -> str:
    return "holds" if ok else "does not hold"


def claims(analysed: dict[Path, dict[str, Any]], tasks: Sequence[str], protocols: dict[str, dict[str, Any]],
           ntk: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's qualitative claims, each with its criterion, our numbers and a verdict."""
    checks = []

    ratios = {}
    for task in tasks:
        lp = _by(analysed, task, "lp")
        ratios[task] = _mean([a["metrics"]["head_norm"]["after_lp"] / a["metrics"]["head_norm"]["init"] for a in lp])
    protocol_ratios = {name: p["after_lp"] / p["init"] for name, p in protocols.items()}
    checks.append({
        "claim": "LP grows the head norm many-fold (‖V‖ after LP ≫ ‖V‖ at init)",
        "criterion": "‖V‖_after_LP / ‖V‖_init ≥ 5 on every task (paper: 25–130×), with the paper's LP protocol",
        "numbers": {**{f"{t} ratio": r for t, r in ratios.items()},
                    **{f"CB LP protocol '{n}' ratio": r for n, r in protocol_ratios.items()}},
        "holds": all(r >= 5 for r in ratios.values()),
    })

    diffs = {}
    for task in tasks:
        ft = _mean([a["features"]["splits"]["test"]["diff"] for a in _by(analysed, task, "ft")])
        lpft = _mean([a["features"]["splits"]["test"]["diff"] for a in _by(analysed, task, "lp-ft")])
        diffs[task] = (ft, lpft)
    checks.append({
        "claim": "LP-FT changes the features less than FT",
        "criterion": "Diff(F) on test, mean over seeds: LP-FT < FT on every task",
        "numbers": {f"{t} Diff FT / LP-FT": f"{d[0]:.3g} / {d[1]:.3g}" for t, d in diffs.items()},
        "holds": all(d[1] < d[0] for d in diffs.values()),
    })

    pairs = []
    for task in tasks:
        for method in ("ft", "lp-ft", "lora", "lp-lora"):
            runs = _by(analysed, task, method)
            before = _mean([a["calibration"]["splits"]["test"]["before"]["ece"] for a in runs])
            after = _mean([a["calibration"]["splits"]["test"]["after"]["ece"] for a in runs])
            pairs.append((task, method, before, after))
    lowered = sum(after < before for *_, before, after in pairs)
    checks.append({
        "claim": "Temperature scaling lowers ECE",
        "criterion": "test ECE after < before for at least 3/4 of the (task, recipe) pairs with an FT stage",
        "numbers": {f"{t}/{m} ECE %": f"{100 * b:.2f} → {100 * a:.2f}" for t, m, b, a in pairs},
        "holds": lowered >= 0.75 * len(pairs),
    })

    ood = {}
    for task in tasks:
        for name in _by(analysed, task, "ft")[0]["metrics"]["ood"] if _by(analysed, task, "ft") else []:
            ft = _mean([a["metrics"]["ood"][name]["accuracy"] for a in _by(analysed, task, "ft")])
            lpft = _mean([a["metrics"]["ood"][name]["accuracy"] for a in _by(analysed, task, "lp-ft")])
            ood[f"{task} → {name}"] = (ft, lpft)
    checks.append({
        "claim": "LP-FT is at least as good as FT out of distribution",
        "criterion": "OOD accuracy, mean over seeds: LP-FT ≥ FT on every OOD set",
        "numbers": {f"{k} acc % FT / LP-FT": f"{100 * v[0]:.2f} / {100 * v[1]:.2f}" for k, v in ood.items()},
        "holds": bool(ood) and all(v[1] >= v[0] for v in ood.values()),
    })

    ft_ratio = {state: s["ft"].get("ft_ratio") for state, s in ntk.items()}
    ok = ft_ratio.get("lp-ft") is not None and ft_ratio.get("ft") is not None
    checks.append({
        "claim": "The FT-effective kernel dominates LP-FT's NTK (FT ratio LP-FT ≫ FT)",
        "criterion": "FT ratio(LP-FT) ≥ 2 × FT ratio(FT) (paper CB: 1.00 vs 0.20)",
        "numbers": {f"FT ratio {state}": r for state, r in ft_ratio.items()},
        "holds": ok and ft_ratio["lp-ft"] >= 2 * ft_ratio["ft"],
    })
    for check in checks:
        check["verdict"] = _verdict(check["holds"])
    return checks


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def checks_markdown(checks: Sequence[dict[str, Any]], preset: Preset) -> str:
    """``checks.md``: claim, criterion, our numbers, verdict."""
    lines = [f"# LP-FT paper claims, checked (`dynascope reproduce lpft --preset {preset.name}`)", "",
             "Generated by the command; do not edit by hand.", "",
             "| claim | criterion | our numbers | verdict |", "|---|---|---|---|"]
    for c in checks:
        numbers = "<br>".join(f"{k}: {_fmt(v)}" for k, v in c["numbers"].items())
        lines.append(f"| {c['claim']} | {c['criterion']} | {numbers} | **{c['verdict']}** |")
    return "\n".join(lines) + "\n"


def protocols_markdown(protocols: dict[str, dict[str, Any]]) -> str:
    """The LP-protocol table: head norm after LP and LP-FT feature change under each protocol."""
    lines = ["| LP protocol | chosen C | ‖V‖ init | ‖V‖ after LP | LP-FT Diff(F) test | LP-FT test acc % |",
             "|---|---|---|---|---|---|"]
    for name, p in protocols.items():
        strength = "–" if p["strength"] is None else f"{p['strength']:.3g}"
        lines.append(f"| {name} | {strength} | {p['init']:.3f} | {p['after_lp']:.3f} | {p['diff']:.3g} | "
                     f"{100 * p['accuracy']:.2f} |")
    return "\n".join(lines) + "\n"


def reproduce(preset: Preset, out: str | Path, *, model: str = "default", data_dir: str | None = None,
              docs: str | Path | None = None) -> list[dict[str, Any]]:
    """Run the whole study (see the module docstring); returns the checks."""
    from dynascope.analysis.features import feature_shift
    from dynascope.report.build import ReportConfig, build_report

    started = time.perf_counter()
    out = Path(out)
    STUDY.write(out, "config", {"preset": dataclasses.asdict(preset), "model": model})
    grid = run_grid(preset, out, model, data_dir)
    protocol_dirs = run_lp_protocols(preset, out, model, data_dir) if preset.lp_protocols else {}
    ntk_dirs = run_ntk_states(preset, out, model, data_dir) if preset.ntk_states else {}
    say("calibration and feature metrics")
    analysed = analyse_runs([p for paths in grid.values() for p in paths])

    protocols = {}
    for name, path in protocol_dirs.items():
        metrics = FINETUNE.load(path, "metrics")
        features = FINETUNE.load(path, "features")
        protocols[name] = {
            "strength": metrics["lp"]["strength"],
            "init": metrics["head_norm"]["init"],
            "after_lp": metrics["head_norm"]["after_lp"],
            "diff": feature_shift(features["test.phi_post"], features["test.phi_pre"]),
            "accuracy": metrics["test"]["accuracy"],
        }
    ntk = {state: NTK.load(path, "stats") for state, path in ntk_dirs.items()}
    checks = claims(analysed, [p.task for p in preset.tasks], protocols, ntk)
    STUDY.write(out, "checks_json", checks)
    STUDY.write(out, "checks", checks_markdown(checks, preset))

    say("report")
    here = Path.cwd()
    inputs = [os.path.relpath(p, here) for p in (STUDY.path(out, "runs"), STUDY.path(out, "ntk")) if p.exists()]
    report_dir = STUDY.path(out, "report")
    report = build_report(inputs, report_dir, ReportConfig(tsne=preset.tsne), overwrite=True)
    sizes = "\n".join(
        f"- `{p.task}`: seeds {', '.join(map(str, p.seeds))}; {p.epochs} epochs; training set "
        f"{'full' if p.max_train is None else f'subsampled to {p.max_train}'}; test/OOD sets "
        f"{'full' if p.max_eval is None else f'capped at {p.max_eval}'} (stratified, seeded)"
        for p in preset.tasks
    )
    minutes = (time.perf_counter() - started) / 60
    recorded = [FINETUNE.load(p, "metrics")["seconds"] for paths in grid.values() for p in paths]
    recorded += [FINETUNE.load(p, "metrics")["seconds"] for p in protocol_dirs.values()]
    recorded += [s["seconds"] for s in ntk.values()]
    results = (
        f"# LP-FT study (`dynascope reproduce lpft --preset {preset.name}`)\n\nGenerated by the command; do not "
        f"edit by hand. Model: `{model}`. Training and NTK runs took {sum(recorded) / 60:.1f} min in all (their "
        f"recorded times); this invocation took {minutes:.1f} min (finished runs are reused).\n\n"
        f"## Sizes\n\n{sizes}\n- NTK on `{preset.tasks[0].task}`: "
        f"{preset.ntk_n_train} train × {preset.ntk_n_eval} test examples, states {', '.join(preset.ntk_states)}\n\n"
        f"## Checks\n\n" + checks_markdown(checks, preset).split("\n", 4)[4]
        + f"\n## LP protocol decides the head norm (`{preset.tasks[0].task}`, LP-FT)\n\n"
        + protocols_markdown(protocols)
        + "\n## Tables\n\n"
        + "\n".join((REPORT.path(report_dir, "tables") / f"{name}.md").read_text(encoding="utf-8")
                    for name in report.tables)
    )
    STUDY.write(out, "results", results)
    if docs is not None:
        publish(out, Path(docs), report.tables)
    return checks


def publish(out: Path, docs: Path, tables: Sequence[str]) -> None:
    """Copy the report, results, checks and tables into ``docs`` (the committed copy)."""
    REPORT.path(docs, "tables").mkdir(parents=True, exist_ok=True)
    for role in ("results", "checks", "checks_json"):
        shutil.copyfile(STUDY.path(out, role), STUDY.path(docs, role))
    report_dir = STUDY.path(out, "report")
    shutil.copyfile(REPORT.path(report_dir, "report"), REPORT.path(docs, "report"))
    for name in tables:
        shutil.copyfile(REPORT.path(report_dir, "tables") / f"{name}.md", REPORT.path(docs, "tables") / f"{name}.md")

