"""``dynascope reproduce lpft``: the LP-FT paper's study end to end, with its claims judged over seeds.

Steps (each reuses finished work whose config matches, so an interrupted reproduction resumes):
1. the recipe grid — LP, FT, LP-FT, LoRA, LP-LoRA — over seeds (``runs/<task>/<method>/seed<s>``), each FT-stage
   learning rate chosen as the paper did: a grid on the first seed, the best validation metric kept
   (``runs/<task>/lr-grid/``; the chosen point is adopted as that seed's run);
2. the LP-protocol study on the first task: LP-FT after LP by cross-validation with accuracy scoring (the paper),
   with log-loss scoring, with C = 1 and by unregularised gradient descent (``lp-protocols/<name>``); and the
   pooling variant: LP and LP-FT with mean pooling at the learning rates chosen for first-token pooling
   (``pooling-mean/``; the grid pins the paper's first token);
3. NTK statistics at the start of FT and LP-FT on every task over seeds, and of LoRA / LP-LoRA on the first
   (``ntk/<task>/<state>/seed<s>``);
4. temperature scaling (``calibration.json`` in every run) and feature metrics;
5. ``checks.md``/``checks.json``: each claim per task as effect ± SE over seeds with a verdict (holds,
   contradicted, inconclusive; :mod:`dynascope.analysis.verdicts`) from the runs that learned, and the runs left
   out; ``diagnostics.csv``: one row per (task, recipe, seed, pooling) with the cheap pre-FT quantities beside the
   outcomes; the HTML report (``report/``) and ``results.md`` (written last).

Presets: ``quick`` (2 CPU cores, ≤ 90 minutes: CB, SST-2 → CR / Amazon / MR, SST-5→3 → SemEval; 3 seeds;
training sets subsampled and a minimum number of optimizer steps per FT stage; ``results.md`` lists the sizes),
``full`` (the paper's protocol: CB, RTE, SST-2, SST-5→3, 5 seeds, 10 epochs, full data, NTK at N = 250) and
``base`` (``full`` on ``mpnet-base``, the offline model closest to roberta-base: for a GPU, several GPU-hours,
not yet measured; ``--tasks cb`` runs one task end to end on a CPU). ``--docs DIR`` copies the report, the
checks, the diagnostics and the tables there (the committed copies under ``docs/results/lpft``).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynascope.analysis.verdicts import MIN_SEEDS, Z_DEFAULT, Effect, compare_arms, effect_vs_reference
from dynascope.device import resolve_device
from dynascope.errors import ConfigError
from dynascope.progress import say
from dynascope.report.tables import Stat
from dynascope.runio import FINETUNE, NTK, REPORT, STUDY, ensure_dir
from dynascope.train.probe import ProbeSettings
from dynascope.train.recipes import METHODS, RunConfig


@dataclass(frozen=True)
class TaskPlan:
    """One task of the grid and how much of it to use: ``steps`` is the minimum number of optimizer steps of
    every FT stage (epochs are raised to reach it, so a subsampled training set still trains)."""

    task: str
    seeds: tuple[int, ...]
    max_train: int | None = None
    max_eval: int | None = None
    epochs: int = 10
    steps: int | None = None


QUICK_LR_GRIDS: dict[str, tuple[float, ...]] = {
    "ft": (3e-5, 1e-4),
    "lp-ft": (3e-5, 1e-4),
    "lora": (1e-3, 3e-3),
    "lp-lora": (1e-3, 3e-3),
}
"""Two points per recipe for the CPU preset (the library's default grids have three)."""


@dataclass(frozen=True)
class Preset:
    """A whole reproduction: the grid, the LP-protocol study, the pooling variant and the NTK runs.

    Learning rates are chosen as the paper chose them: on the validation set, from ``lr_grids`` (None: the
    library's default grid per recipe), once per (task, recipe) on the first seed. Pooling is pinned to the
    paper's first token (``cls``); ``pooling_variant`` recipes are also run with mean pooling (the default
    MiniLM was trained with it) on the first ``pooling_seeds`` seeds.
    """

    name: str
    tasks: tuple[TaskPlan, ...]
    model: str = "default"
    methods: tuple[str, ...] = METHODS
    lr_grids: dict[str, tuple[float, ...]] | None = None
    lp_protocols: dict[str, ProbeSettings] = field(default_factory=dict)
    pooling_variant: tuple[str, ...] = ("lp", "lp-ft")
    pooling_seeds: int = 5
    ntk_states: tuple[str, ...] = ("ft", "lp-ft", "lora", "lp-lora")
    ntk_seeds: int = 3
    ntk_n_train: int = 64
    ntk_n_eval: int = 56
    ntk_probes: int = 16
    tsne: bool = True

    def run_config(
        self, plan: TaskPlan, method: str, model: str, pooling: str = "cls", device: str = "auto"
    ) -> RunConfig:
        """The config of ``method`` on ``plan``'s task (seed: the first; ``compare`` sets the others), run on
        ``device``."""
        return RunConfig(
            task=plan.task,
            method=method,
            seed=plan.seeds[0],
            model=model,
            pooling=pooling,
            epochs=plan.epochs,
            steps=plan.steps,
            lr="auto",
            lr_grid=(self.lr_grids or {}).get(method),
            max_train=plan.max_train,
            max_eval=plan.max_eval,
            device=device,
        )


LP_PROTOCOLS = {
    "cv-accuracy (paper)": ProbeSettings(protocol="cv", scoring="accuracy"),
    "cv-logloss": ProbeSettings(protocol="cv", scoring="neg_log_loss"),
    "fixed C = 1": ProbeSettings(protocol="fixed", C=1.0),
    "gd (no regularisation)": ProbeSettings(protocol="gd", gd_steps=2000, gd_lr=0.5),
}

SEEDS = (1001, 2002, 3003)

PRESETS = {
    "quick": Preset(
        name="quick",
        tasks=(
            TaskPlan("cb", seeds=SEEDS, epochs=3, steps=60),
            TaskPlan("sst2", seeds=SEEDS, max_train=1000, max_eval=300, epochs=3, steps=120),
            TaskPlan("sst5-3", seeds=SEEDS, max_train=1000, max_eval=300, epochs=3, steps=120),
        ),
        lr_grids=QUICK_LR_GRIDS,
        lp_protocols=LP_PROTOCOLS,
        pooling_seeds=1,
        ntk_seeds=3,
        ntk_n_train=64,
        ntk_n_eval=16,
        ntk_probes=0,
    ),
    "full": Preset(
        name="full",
        tasks=tuple(TaskPlan(task, seeds=(*SEEDS, 4004, 5005)) for task in ("cb", "rte", "sst2", "sst5-3")),
        lp_protocols=LP_PROTOCOLS,
        ntk_seeds=5,
        ntk_n_train=250,
        ntk_n_eval=56,
        ntk_probes=32,
    ),
}
PRESETS["base"] = dataclasses.replace(PRESETS["full"], name="base", model="mpnet-base")


def run_grid(
    preset: Preset, out: Path, model: str, data_dir: str | None, device: str = "auto"
) -> dict[str, list[Path]]:
    """Step 1: every (task, method, seed) run, learning rates chosen per (task, method); returns the run
    directories per task."""
    from dynascope.experiments.compare import compare, run_dir_for

    dirs: dict[str, list[Path]] = {}
    for plan in preset.tasks:
        where = STUDY.path(out, "runs") / plan.task
        base = preset.run_config(plan, preset.methods[0], model, device=device)
        compare(base, preset.methods, plan.seeds, where, data_dir=data_dir, lr_grids=preset.lr_grids)
        dirs[plan.task] = [run_dir_for(where, m, s) for m in preset.methods for s in plan.seeds]
    return dirs


def run_lp_protocols(
    preset: Preset, out: Path, model: str, data_dir: str | None, device: str = "auto"
) -> dict[str, Path]:
    """Step 2: LP-FT on the first task's first seed after LP by each protocol, at the learning rate the grid chose
    for LP-FT on that task (step 1 must have run)."""
    from dynascope.experiments.compare import run_dir_for
    from dynascope.train.recipes import run

    plan = preset.tasks[0]
    chosen = FINETUNE.load(run_dir_for(STUDY.path(out, "runs") / plan.task, "lp-ft", plan.seeds[0]), "config")["lr"]
    dirs = {}
    for name, settings in preset.lp_protocols.items():
        where = STUDY.path(out, "lp_protocols") / re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        config = preset.run_config(plan, "lp-ft", model, device=device)
        config = dataclasses.replace(config, lr=chosen, lr_grid=None, lp=settings)
        done = FINETUNE.is_finished(where) and RunConfig.from_dict(FINETUNE.load(where, "config")) == config.resolved()
        if not done:
            run(config, where, data_dir=data_dir, overwrite=True)
        dirs[name] = where
    return dirs


def run_ntk_states(
    preset: Preset, out: Path, model: str, data_dir: str | None, device: str = "auto"
) -> dict[str, dict[str, list[Path]]]:
    """Step 3: NTK statistics at the start of each recipe's FT stage: ``ft`` and ``lp-ft`` on every task over
    ``ntk_seeds`` seeds (the spread of the FT ratio), the LoRA states on the first task and seed."""
    from dynascope.pipelines.ntk import NTKConfig, run_ntk

    dirs: dict[str, dict[str, list[Path]]] = {}
    for i, plan in enumerate(preset.tasks):
        for state in preset.ntk_states:
            lora = state.endswith("lora")
            if lora and i > 0:
                continue
            seeds = plan.seeds[:1] if lora else plan.seeds[: preset.ntk_seeds]
            for seed in seeds:
                where = STUDY.path(out, "ntk") / plan.task / state / f"seed{seed}"
                config = NTKConfig(
                    task=plan.task, state=state, n_train=preset.ntk_n_train, n_eval=preset.ntk_n_eval, seed=seed,
                    model=model, pooling="cls", probes=preset.ntk_probes, device=device,
                )  # fmt: skip
                if not NTK.is_finished(where):
                    run_ntk(config, where, data_dir=data_dir)
                elif NTK.load(where, "config") != config.to_dict():
                    raise ConfigError(f"{where} holds an NTK run of another config; use another --out")
                dirs.setdefault(plan.task, {}).setdefault(state, []).append(where)
    return dirs


def run_pooling_variant(
    preset: Preset, out: Path, model: str, data_dir: str | None, device: str = "auto"
) -> dict[str, list[Path]]:
    """Step 2b: ``pooling_variant`` recipes with mean pooling on every task, each at the learning rate step 1 chose
    for the same recipe with first-token pooling (step 1 must have run)."""
    from dynascope.experiments.compare import compare, run_dir_for

    dirs: dict[str, list[Path]] = {}
    for plan in preset.tasks:
        where = STUDY.path(out, "pooling_mean") / plan.task
        seeds = plan.seeds[: preset.pooling_seeds]
        for method in preset.pooling_variant:
            chosen = FINETUNE.load(run_dir_for(STUDY.path(out, "runs") / plan.task, method, plan.seeds[0]), "config")
            config = preset.run_config(plan, method, model, pooling="mean", device=device)
            config = dataclasses.replace(config, lr=chosen["lr"], lr_grid=None)
            compare(config, [method], seeds, where, data_dir=data_dir)
        dirs[plan.task] = [run_dir_for(where, m, s) for m in preset.pooling_variant for s in seeds]
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


def _per_seed(runs: Sequence[dict[str, Any]], value: Any) -> dict[int, float]:
    """``value(run)`` of each run, keyed by its seed (runs whose value is missing or not finite are skipped)."""
    out = {}
    for run in runs:
        v = value(run)
        if v is not None and np.isfinite(v):
            out[int(run["metrics"]["seed"])] = float(v)
    return out


def left_out(analysed: dict[Path, dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs that did not learn (validation accuracy not clearly above the majority baseline): never used by a check."""
    rows = []
    for path, a in analysed.items():
        m = a["metrics"]
        if m.get("learned") is not True:
            ev = m.get("learned_evidence") or {}
            rows.append(
                {
                    "run": str(path),
                    "task": m["task"],
                    "method": m["method"],
                    "seed": m["seed"],
                    "val_accuracy": ev.get("accuracy"),
                    "baseline": ev.get("baseline"),
                    "margin": ev.get("margin"),
                }
            )
    return rows


def _claim_row(
    claim: str,
    criterion: str,
    task: str,
    arms: dict[str, dict[int, float]],
    effect: Effect,
    scale: float = 1.0,
    unit: str = "",
) -> dict[str, Any]:
    """One (claim, task) row of ``checks.json``: the arms' means over seeds, the effect ± SE and the verdict."""
    return {
        "claim": claim,
        "criterion": criterion,
        "task": task,
        "arms": {
            name: {"mean": float(np.mean(list(v.values()))) * scale if v else None, "seeds": sorted(v)}
            for name, v in arms.items()
        },
        "unit": unit,
        "effect": effect.effect * scale,
        "se": effect.se * scale,
        **{k: v for k, v in effect.to_dict().items() if k not in ("effect", "se")},
    }


def claims(
    analysed: dict[Path, dict[str, Any]], tasks: Sequence[str], ntk: dict[str, dict[str, list[dict[str, Any]]]]
) -> list[dict[str, Any]]:
    """The paper's qualitative claims, per task, from runs that learned: effect ± SE over seeds and a verdict
    (:mod:`dynascope.analysis.verdicts`: holds / contradicted beyond 2 SE, else inconclusive)."""
    good = {p: a for p, a in analysed.items() if a["metrics"].get("learned") is True}
    rows: list[dict[str, Any]] = []
    for task in tasks:

        def by(method: str, task: str = task) -> list[dict[str, Any]]:
            return _by(good, task, method)

        ratio = _per_seed(by("lp"), lambda a: a["metrics"]["head_norm"]["after_lp"] / a["metrics"]["head_norm"]["init"])
        rows.append(
            _claim_row(
                "LP grows the head norm many-fold",
                "‖V‖ after LP / ‖V‖ at init above 5 (paper: 25–130×)",
                task,
                {"ratio": ratio},
                effect_vs_reference(ratio, 5.0, +1),
                unit="× − 5",
            )
        )

        diff = lambda a: a["features"]["splits"]["test"]["diff"]  # noqa: E731
        for arm, ref in (("lp-ft", "ft"), ("lp-lora", "lora")):
            a_vals, r_vals = _per_seed(by(arm), diff), _per_seed(by(ref), diff)
            rows.append(
                _claim_row(
                    f"{arm.upper()} changes the features less than {ref.upper()}",
                    f"Diff(F) on test: {arm} − {ref} below 0",
                    task,
                    {arm: a_vals, ref: r_vals},
                    compare_arms(a_vals, r_vals, -1),
                )
            )

        def ece_drop(a: dict[str, Any]) -> float | None:
            split = (a["calibration"] or {}).get("splits", {}).get("test")
            return None if split is None else split["after"]["ece"] - split["before"]["ece"]

        drops = {m: _per_seed(by(m), ece_drop) for m in ("ft", "lp-ft", "lora", "lp-lora")}
        seeds = sorted(set.intersection(*(set(v) for v in drops.values()))) if all(drops.values()) else []
        mean_drop = {s: float(np.mean([drops[m][s] for m in drops])) for s in seeds}
        rows.append(
            _claim_row(
                "Temperature scaling lowers ECE",
                "test ECE after − before, mean over the four FT-stage recipes, below 0",
                task,
                {"after − before": mean_drop},
                effect_vs_reference(mean_drop, 0.0, -1),
                scale=100,
                unit="pp",
            )
        )

        ood_sets = sorted({k for run in by("ft") + by("lp-ft") for k in run["metrics"].get("ood", {})})
        for key in ("test", *(f"ood.{name}" for name in ood_sets)):
            acc = functools.partial(_split_metric, key=key)
            a_vals, r_vals = _per_seed(by("lp-ft"), acc), _per_seed(by("ft"), acc)
            where = "ID test" if key == "test" else f"OOD {key.split('.', 1)[1]}"
            rows.append(
                _claim_row(
                    f"LP-FT is at least as accurate as FT ({'ID' if key == 'test' else 'OOD'})",
                    f"{where} accuracy: lp-ft − ft above 0 (contradicted only if FT wins beyond 2 SE)",
                    task,
                    {"lp-ft": a_vals, "ft": r_vals},
                    compare_arms(a_vals, r_vals, +1),
                    scale=100,
                    unit="pp",
                )
            )

        states = ntk.get(task, {})
        ratio_of = lambda stats: {int(s["seed"]): s["ft"]["ft_ratio"] for s in stats}  # noqa: E731
        a_vals, r_vals = ratio_of(states.get("lp-ft", [])), ratio_of(states.get("ft", []))
        if a_vals or r_vals:
            rows.append(
                _claim_row(
                    "The FT-effective kernel dominates LP-FT's NTK",
                    "FT ratio at the start of FT: lp-ft − ft above 0 (paper CB: 1.00 vs 0.20)",
                    task,
                    {"lp-ft": a_vals, "ft": r_vals},
                    compare_arms(a_vals, r_vals, +1),
                )
            )
    return rows


def _split_metric(a: dict[str, Any], key: str, name: str = "accuracy") -> float | None:
    group, _, sub = key.partition(".")
    block = a["metrics"].get(group, {})
    block = block.get(sub) if sub else block
    return None if not block else block.get(name)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _effect_text(row: dict[str, Any]) -> str:
    if not np.isfinite(row["effect"]):
        return "–"
    se = "–" if not np.isfinite(row["se"]) else f"{row['se']:.3g}"
    return f"{row['effect']:+.3g} ± {se}{' ' + row['unit'] if row['unit'] else ''} (n = {row['n']}" + (
        ", paired)" if row["paired"] else ")"
    )


def checks_markdown(checks: Sequence[dict[str, Any]], preset: Preset, dropped: Sequence[dict[str, Any]]) -> str:
    """``checks.md``: per claim and task the criterion, the arms' means, the effect ± SE and the verdict; the
    margins; the runs left out."""
    lines = [
        f"# LP-FT paper claims, checked (`dynascope reproduce lpft --preset {preset.name}`)",
        "",
        "Generated by the command; do not edit by hand.",
        "",
        f"Each claim is judged per task over seeds (at least {MIN_SEEDS}): the effect is the mean difference "
        "between the arms, paired by seed where both ran the same seeds (else Welch), ± its standard error. "
        f"**holds**: the effect exceeds {Z_DEFAULT:g} SE in the claimed direction; **contradicted**: it exceeds "
        f"{Z_DEFAULT:g} SE the other way; **inconclusive**: otherwise. Only runs that learned are used (validation "
        "accuracy above the majority-class baseline by max(2 pp, 1.645 binomial SE)).",
        "",
        "| claim | task | criterion | arms (mean over seeds) | effect ± SE | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for c in checks:
        arms = "<br>".join(f"{k}: {_fmt(v['mean'])} ({len(v['seeds'])} seeds)" for k, v in c["arms"].items())
        lines.append(
            f"| {c['claim']} | {c['task']} | {c['criterion']} | {arms} | {_effect_text(c)} | **{c['verdict']}** |"
        )
    lines += ["", "## Runs left out (did not learn)", ""]
    if not dropped:
        lines.append("None: every run learned.")
    for d in dropped:
        acc = "–" if d["val_accuracy"] is None else f"{100 * d['val_accuracy']:.1f} %"
        base = "–" if d["baseline"] is None else f"{100 * d['baseline']:.1f} % + {100 * d['margin']:.1f} pp"
        lines.append(f"- `{d['task']}/{d['method']}` seed {d['seed']}: val accuracy {acc}, needed > {base}")
    return "\n".join(lines) + "\n"


def protocols_markdown(protocols: dict[str, dict[str, Any]]) -> str:
    """The LP-protocol table: head norm after LP and LP-FT feature change under each protocol."""
    lines = [
        "| LP protocol | chosen C | ‖V‖ init | ‖V‖ after LP | LP-FT Diff(F) test | LP-FT test acc % |",
        "|---|---|---|---|---|---|",
    ]
    for name, p in protocols.items():
        strength = "–" if p["strength"] is None else f"{p['strength']:.3g}"
        lines.append(
            f"| {name} | {strength} | {p['init']:.3f} | {p['after_lp']:.3f} | {p['diff']:.3g} | "
            f"{100 * p['accuracy']:.2f} |"
        )
    return "\n".join(lines) + "\n"


DIAGNOSTIC_COLUMNS = (
    "task", "method", "seed", "pooling", "learned", "lr", "optimizer_steps",
    "lp_head_norm", "lp_head_norm_ratio", "lp_val_accuracy", "feature_anisotropy",
    "ntk_trace_ratio_lp_head", "ntk_ft_ratio_lp_head", "ntk_trace_ratio_random_head", "ntk_ft_ratio_random_head",
    "val_accuracy", "test_accuracy", "ood_accuracy_mean", "feature_diff_test", "ece_test", "ece_test_after_ts",
)  # fmt: skip
"""``diagnostics.csv``: per (task, method, seed), the cheap quantities measured before any FT (the LP run of the
same task and seed, the NTK at the LP head and at a random head of that seed) beside the recipe's outcomes."""


def diagnostics(
    analysed: dict[Path, dict[str, Any]], ntk: dict[str, dict[str, list[dict[str, Any]]]]
) -> list[dict[str, Any]]:
    """The rows of ``diagnostics.csv`` (every column in every row; None where a quantity does not exist)."""

    def kernel(task: str, state: str, seed: int) -> dict[str, Any]:
        return next((st for st in ntk.get(task, {}).get(state, []) if st["seed"] == seed), {})

    def trace_ratio(stats: dict[str, Any]) -> float | None:
        return stats["ft"]["trace"] / stats["pre"]["trace"] if stats and stats["pre"]["trace"] else None

    lp_runs = {
        (a["metrics"]["task"], a["metrics"]["seed"]): a for a in analysed.values() if a["metrics"]["method"] == "lp"
    }
    rows = []
    for path, a in analysed.items():
        m = a["metrics"]
        task, seed = m["task"], int(m["seed"])
        lp = lp_runs.get((task, seed))
        lp_norms = lp["metrics"]["head_norm"] if lp else None
        cal = (a["calibration"] or {}).get("splits", {}).get("test")
        ood = [v["accuracy"] for v in m.get("ood", {}).values()]
        lp_state, random_state = kernel(task, "lp-ft", seed), kernel(task, "ft", seed)
        config = FINETUNE.load(path, "config")
        rows.append({
            "task": task, "method": m["method"], "seed": seed, "pooling": config["pooling"],
            "learned": m.get("learned"),
            "lr": config.get("lr"), "optimizer_steps": m.get("optimizer_steps"),
            "lp_head_norm": lp_norms["after_lp"] if lp_norms else None,
            "lp_head_norm_ratio": lp_norms["after_lp"] / lp_norms["init"] if lp_norms else None,
            "lp_val_accuracy": lp["metrics"]["val"]["accuracy"] if lp else None,
            "feature_anisotropy": a["features"]["splits"]["test"]["cs_pre"] if a["features"] else None,
            "ntk_trace_ratio_lp_head": trace_ratio(lp_state),
            "ntk_ft_ratio_lp_head": lp_state["ft"]["ft_ratio"] if lp_state else None,
            "ntk_trace_ratio_random_head": trace_ratio(random_state),
            "ntk_ft_ratio_random_head": random_state["ft"]["ft_ratio"] if random_state else None,
            "val_accuracy": m["val"]["accuracy"], "test_accuracy": m["test"]["accuracy"],
            "ood_accuracy_mean": float(np.mean(ood)) if ood else None,
            "feature_diff_test": a["features"]["splits"]["test"]["diff"] if a["features"] else None,
            "ece_test": cal["before"]["ece"] if cal else None,
            "ece_test_after_ts": cal["after"]["ece"] if cal else None,
        })  # fmt: skip
    return rows


def diagnostics_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The diagnostics rows as CSV with the columns of ``DIAGNOSTIC_COLUMNS`` (empty cells for None)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=DIAGNOSTIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in DIAGNOSTIC_COLUMNS})
    return buf.getvalue()


def lr_markdown(run_dirs: Sequence[Path]) -> str:
    """How each (task, recipe) learning rate was chosen: the grid, every point's validation score, the choice."""
    lines = ["| task | recipe | pooling | metric | grid: validation score | chosen lr |", "|---|---|---|---|---|---|"]
    seen = set()
    for path in run_dirs:
        config = FINETUNE.load(path, "config")
        search = config.get("lr_search")
        key = (config["task"], config["method"], config["pooling"])
        if search is None or key in seen:
            continue
        seen.add(key)
        points = ", ".join(f"{lr}: {100 * v:.1f}" for lr, v in search["scores"].items())
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | val {search['metric']} (%) | {points} | {search['chosen']:g} |"
        )
    return "\n".join(lines) + "\n"


def pooling_markdown(cls_runs: dict[Path, dict[str, Any]], mean_runs: dict[Path, dict[str, Any]]) -> str:
    """LP and LP-FT with the paper's first-token pooling beside mean pooling: accuracy and ‖V‖ after LP."""
    lines = [
        "| task | recipe | pooling | seeds | test acc % | ‖V‖ after LP | ‖V‖ after LP / init | Diff(F) test |",
        "|---|---|---|---|---|---|---|---|",
    ]
    tasks = list(dict.fromkeys(a["metrics"]["task"] for a in mean_runs.values()))
    for task in tasks:
        for method in dict.fromkeys(a["metrics"]["method"] for a in mean_runs.values()):
            for pooling, runs in (("cls", cls_runs), ("mean", mean_runs)):
                group = _by(runs, task, method)
                if not group:
                    continue
                norms = [g["metrics"]["head_norm"] for g in group]
                diffs = [g["features"]["splits"]["test"]["diff"] for g in group if g["features"]]
                lines.append(
                    f"| {task} | {method} | {pooling} | {len(group)} | "
                    f"{_mean_sd([100 * g['metrics']['test']['accuracy'] for g in group], 2)} | "
                    f"{_mean_sd([n['after_lp'] for n in norms], 3)} | "
                    f"{_mean_sd([n['after_lp'] / n['init'] for n in norms], 3)} | {_mean_sd(diffs, 3)} |"
                )
    return "\n".join(lines) + "\n"


def _mean_sd(values: Sequence[float], digits: int) -> str:
    stat = Stat.of(values)
    if stat is None:
        return "–"
    return f"{stat.mean:.{digits}f}" + (f" ± {stat.std:.{digits}f}" if stat.n > 1 else "")


def ntk_markdown(ntk: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """The FT ratio and tr(F)/tr(P) per task and state, mean ± std over the NTK seeds."""
    lines = ["| task | state | seeds | N | FT ratio | tr(F)/tr(P) |", "|---|---|---|---|---|---|"]
    for task, states in ntk.items():
        for state, stats in states.items():
            ratios = [st["ft"]["ft_ratio"] for st in stats]
            traces = [st["ft"]["trace"] / st["pre"]["trace"] for st in stats]
            lines.append(
                f"| {task} | {state} | {len(stats)} | {stats[0]['n_train']} | {_mean_sd(ratios, 3)} | "
                f"{_mean_sd(traces, 3)} |"
            )
    return "\n".join(lines) + "\n"


def _sizes(preset: Preset) -> str:
    lines = []
    for p in preset.tasks:
        train = "full training set" if p.max_train is None else f"training set subsampled to {p.max_train}"
        evals = "test/OOD sets full" if p.max_eval is None else f"test/OOD sets capped at {p.max_eval}"
        steps = f"at least {p.steps} optimizer steps per FT stage" if p.steps else "no step minimum"
        lines.append(
            f"- `{p.task}`: seeds {', '.join(map(str, p.seeds))}; {p.epochs} epochs or more ({steps}); {train}; "
            f"{evals} (stratified, seeded); validation split full"
        )
    grids = ", ".join(f"{m} {', '.join(f'{v:g}' for v in g)}" for m, g in (preset.lr_grids or {}).items())
    lines.append(
        "- learning rates: chosen per (task, recipe) on the first seed's validation split from "
        + (grids or "the default grids")
    )
    lines.append(
        "- pooling: the paper's first token (`cls`); the mean-pooling variant (LP and LP-FT on the first "
        f"{preset.pooling_seeds} seed(s), at the learning rates chosen for `cls`) is reported separately"
    )
    lines.append(
        f"- NTK: {preset.ntk_n_train} train × {preset.ntk_n_eval} test examples; states ft and lp-ft on every task "
        "over "
        f"{preset.ntk_seeds} seeds, {', '.join(s for s in preset.ntk_states if s.endswith('lora'))} on "
        f"`{preset.tasks[0].task}` (first seed)"
    )
    return "\n".join(lines)


def select_tasks(preset: Preset, tasks: Sequence[str]) -> Preset:
    """``preset`` restricted to ``tasks`` (in the preset's order); unknown names are a ``ConfigError``."""
    known = [p.task for p in preset.tasks]
    unknown = sorted(set(tasks) - set(known))
    if unknown or not tasks:
        raise ConfigError(f"tasks: expected some of {', '.join(known)} (preset {preset.name}), found {list(tasks)}")
    return dataclasses.replace(preset, tasks=tuple(p for p in preset.tasks if p.task in set(tasks)))


def reproduce(
    preset: Preset,
    out: str | Path,
    *,
    model: str | None = None,
    data_dir: str | None = None,
    docs: str | Path | None = None,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Run the whole study (see the module docstring) with ``model`` (default: the preset's) on ``device``;
    returns the checks. Finished runs are reused whatever device they ran on."""
    from dynascope.analysis.features import feature_shift
    from dynascope.report.build import ReportConfig, build_report

    started = time.perf_counter()
    resolve_device(device)  # an unavailable device fails before any work
    model = model or preset.model
    out = ensure_dir(out)
    STUDY.write(out, "config", {"preset": dataclasses.asdict(preset), "model": model})
    grid = run_grid(preset, out, model, data_dir, device)
    protocol_dirs = run_lp_protocols(preset, out, model, data_dir, device) if preset.lp_protocols else {}
    pooling_dirs = run_pooling_variant(preset, out, model, data_dir, device)
    ntk_dirs = run_ntk_states(preset, out, model, data_dir, device) if preset.ntk_states else {}
    say("calibration and feature metrics")
    grid_dirs = [p for paths in grid.values() for p in paths]
    analysed = analyse_runs(grid_dirs)
    pooled = analyse_runs([p for paths in pooling_dirs.values() for p in paths])

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
    ntk = {
        task: {
            state: [{**NTK.load(p, "stats"), "seed": NTK.load(p, "config")["seed"]} for p in paths]
            for state, paths in states.items()
        }
        for task, states in ntk_dirs.items()
    }
    checks = claims(analysed, [p.task for p in preset.tasks], ntk)
    dropped = left_out(analysed)
    STUDY.write(out, "checks_json", {"checks": checks, "left_out": dropped, "z": Z_DEFAULT, "min_seeds": MIN_SEEDS})
    STUDY.write(out, "checks", checks_markdown(checks, preset, dropped))
    STUDY.write(out, "diagnostics", diagnostics_csv(diagnostics({**analysed, **pooled}, ntk)))

    say("report")
    here = Path.cwd()
    inputs = [os.path.relpath(p, here) for p in (STUDY.path(out, "runs"), STUDY.path(out, "ntk")) if p.exists()]
    report_dir = STUDY.path(out, "report")
    report = build_report(inputs, report_dir, ReportConfig(tsne=preset.tsne), overwrite=True)
    minutes = (time.perf_counter() - started) / 60
    every_run = [*grid_dirs, *protocol_dirs.values(), *(p for paths in pooling_dirs.values() for p in paths)]
    recorded = [FINETUNE.load(p, "metrics")["seconds"] for p in every_run]
    recorded += [st["seconds"] for states in ntk.values() for stats in states.values() for st in stats]
    first = preset.tasks[0].task
    results = (
        f"# LP-FT study (`dynascope reproduce lpft --preset {preset.name}`)\n\nGenerated by the command; do not "
        f"edit by hand. Model: `{model}`. Training and NTK runs took {sum(recorded) / 60:.1f} min in all (their "
        f"recorded times, not counting the learning-rate grid points that were not kept); this invocation took "
        f"{minutes:.1f} min (finished runs are reused).\n\n"
        f"## Sizes\n\n{_sizes(preset)}\n\n"
        "## Checks\n\n"
        + checks_markdown(checks, preset, dropped).split("\n", 4)[4]
        + "\n## Learning rates (chosen on validation)\n\n"
        + lr_markdown([*grid_dirs, *(p for paths in pooling_dirs.values() for p in paths)])
        + "\n## NTK at the start of FT (mean ± std over seeds)\n\n"
        + ntk_markdown(ntk)
        + "\n## Pooling: the paper's first token vs mean pooling (LP and LP-FT)\n\n"
        + pooling_markdown(analysed, pooled)
        + f"\n## LP protocol decides the head norm (`{first}`, LP-FT, first seed)\n\n"
        + protocols_markdown(protocols)
        + "\n## Tables\n\n"
        + "\n".join(
            (REPORT.path(report_dir, "tables") / f"{name}.md").read_text(encoding="utf-8") for name in report.tables
        )
    )
    STUDY.write(out, "results", results)
    if docs is not None:
        publish(out, Path(docs), report.tables)
    return checks


def publish(out: Path, docs: Path, tables: Sequence[str]) -> None:
    """Copy the report, results, checks and tables into ``docs`` (the committed copy)."""
    REPORT.path(docs, "tables").mkdir(parents=True, exist_ok=True)
    for stale in REPORT.path(docs, "tables").glob("*.md"):  # tables of an earlier, larger study
        if stale.stem not in tables:
            stale.unlink()
    for role in ("results", "checks", "checks_json", "diagnostics"):
        shutil.copyfile(STUDY.path(out, role), STUDY.path(docs, role))
    report_dir = STUDY.path(out, "report")
    shutil.copyfile(REPORT.path(report_dir, "report"), REPORT.path(docs, "report"))
    for name in tables:
        shutil.copyfile(REPORT.path(report_dir, "tables") / f"{name}.md", REPORT.path(docs, "tables") / f"{name}.md")
