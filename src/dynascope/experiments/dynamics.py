"""``dynascope reproduce dynamics``: the paper's looped self-attention study end to end (paper note §2–§5).

Steps: build Sudoku boards from the 17-clue pool (``dynascope.dynamics.sudoku``), train every run of the
grid below, analyse each run (Jacobian spectrum at t = 16, Prop. 5.1 bound, Lyapunov exponents, energies),
and write ``results.md`` / ``results.json`` (accuracy vs T on ID and OOD, Lyapunov vs accuracy, spectral
norms), ``checks.md`` (the paper's claims beside our numbers) and ``figures/``. Every stage is resumable:
finished runs (metrics.json) and analyses (analysis.json) are kept; a killed training resumes from its
checkpoint.

Runs (all presets): ItrSA without normalization (1 epoch, as in the paper), ItrSA with token-wise RMSNorm,
ItrSA + RMSNorm + Spec (λ = 1e-4), AKOrN (Π_osc), AKOrN + RMSNorm_osc, AKOrN + Spec (λ = 1e-5). On request
(``--runs``): the symmetric single- / multi-head SA (1 epoch, as in the paper), ItrSA + E-single (λ = 1e-6,
one head) and ItrSA + E-multi (λ = 1e-4, orthogonal W^V, W^O). Table S.2's λ values throughout.

Presets:
- ``smoke``: D = 8, H = 2, N = 4, T = 4, 240 training boards, 1 epoch, eval T ∈ {2, 4, 8} on 40 + 40
  boards, analysis with n = 648 (dense eigenvalues, exact Lyapunov). For the end-to-end test.
- ``quick``: D = 32, H = 4, N = 4, training T = 8, batch 32, Adam lr 8e-3 after a 200-step linear warm-up,
  EMA β = 0.98 (every 10 steps), 3000 easy training boards × 22 epochs (2068 optimizer steps per model; the
  no-norm ItrSA: 1 epoch = 94 steps), seeds 0, 1, 2, a learning-curve point every 100 steps, eval
  T ∈ {8, 16, 32, 64, 128} on 300 ID + 300 OOD boards; analysis on 1 board with n = 81·32 = 2592: dense
  eigenvalues and norms at t = 8, exact 8-step Lyapunov exponents, traces over 32 steps, CI at t ∈ {0, 8, 32}.
  Budget: ≤ 60 min on 2 cores for the 18 runs with ``--workers 2`` (``results.md`` records the measured stages).
- ``cpu-long``: the smallest setting measured to solve easy boards on this machine: D = 64, H = 8, N = 4,
  ItrSA with oscillator-wise RMSNorm (N = 4, the paper's Fig. 4 variant), digit embedding initialised with std
  0.15, training T = 16, batch 16, Adam lr 3e-3 after a 200-step warm-up, EMA β = 0.98, 9000 easy training boards
  × 10 epochs (5630 steps), seeds 0, 1, 2, a learning-curve point every 250 steps, eval on 300 ID + 300 OOD
  boards; analysis with n = 81·64 = 5184 (Arnoldi eigenvalues, power-iteration norms, Benettin exponents).
  Only the ItrSA runs by default (``Preset.runs``: no norm, RMSNorm, RMSNorm + Spec; AKOrN steps cost ≈ 1.5× an
  ItrSA step, and with them the grid would not fit the 120-minute budget). Measured with ``--workers 2`` (one
  thread each) on the idle machine: 205–225 ms per ItrSA step, ≈ 100 s per analysis, 78 min for the study; killed,
  it resumes from its checkpoints. 5 epochs were not enough: in a first run (2815 steps) two seeds of
  RMSNorm + Spec solved 25–31 % of ID boards while the third seed and every seed without Spec solved none.
- ``full``: the paper's size: D = 512, H = 8, N = 8 (AKOrN, v4), T = 16, 100 epochs, batch 100, 9000
  training boards, 1000 ID test and 18000 OOD test boards; analysis by Arnoldi (128 eigenvalues) and
  Benettin (top 64 exponents) since n = 41472. Meant for a GPU (``--device cuda``); runs on CPU too.

Why these quick sizes (measured on this 2-core machine, EMA blank-cell accuracy on 200 easy boards): a
looped model this small first copies the givens and sits near chance on the blanks (11 %, loss ≈ 1.2 over
all cells) for a while before it starts to use the constraints, and the length of that plateau is set mostly
by the learning rate: ItrSA + RMSNorm (D = 32, T = 8, batch 32) leaves it after ≈ 2600 steps at lr 3e-3 and
≈ 1600 at 8e-3 (20 % blank-cell accuracy by step 2400); D = 64, T = 16, batch 16 leaves it after ≈ 5000 steps at
1e-3, 2800 at 3e-3 and 1800 at 6e-3, and then climbs slowly (at 1e-3: 23 % at 20k steps, 37 % at 54k, still 0
boards). Supervising every loop step instead of the last gave the same accuracy per step at twice the cost.
Three seeds of six runs in an hour leave each model ≈ 2000 steps, just past the plateau: no model of this size
solves whole boards, and the checks then compare blank-cell accuracy (``checks.md`` says which accuracy it used).

What leaves the second plateau (≈ 20 % of blanks, loss ≈ 0.90; same data and readout, 1 thread per run): with
token-wise RMSNorm no setting we tried left it within 13k steps (D = 64, H = 4, lr 6e-3). Oscillator-wise
RMSNorm (N = 4) leaves it: D = 64, H = 4, T = 16, batch 16, lr 3e-3 reached 57 % of blanks at step 1500 and
≈ 83 % by step 6000, but solved ≤ 1 % of boards by step 7500 (a cosine decay over 6000 steps: 81 %, 0 boards).
Scaling the digit embedding's initial std from 1 to 0.15 (so ‖C‖ ≈ 1 against the unit state) moved the exit
earlier by ≈ 2000 steps (20 % of blanks still at step 2000 with std 1). Eight heads instead of four was what
made boards solvable: D = 64, H = 8 reached 16 % / 42 % / 55 % of ID boards at T = 16 / 32 / 64 by step 2000,
47 / 80 / 85 % by 2500 and 82 / 92 / 94 % by 5500, at 190 ms per step against 115 ms with four heads; D = 32,
H = 8 was still at 19 % of blanks at step 1250 and D = 32, H = 4, T = 8 with RMSNorm_osc at 23 % at step 2500.
That H = 8 exploration was one run; in the committed ``cpu-long`` study (seeds 0, 1, 2, 5630 steps) ItrSA +
RMSNorm without Spec left the 20 % plateau on every seed but solved no board (47–68 % of blanks), while with
Spec every seed solved 70–85 % of ID boards: at this size Spec decided whether boards were solved in the budget.
"""

from __future__ import annotations

import itertools
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynascope.analysis.verdicts import MIN_SEEDS, Z_DEFAULT, Effect, Verdict, compare_arms, effect_vs_reference
from dynascope.data import resolve_data_dir
from dynascope.device import resolve_device
from dynascope.dynamics.analyze import AnalysisConfig
from dynascope.dynamics.models import ModelConfig
from dynascope.dynamics.sudoku import POOL_FILE, SudokuBuildConfig, build_datasets
from dynascope.dynamics.train import TrainConfig
from dynascope.errors import ConfigError
from dynascope.pipelines.dynamics import analyze_run_dir, train_from_sudoku_dir
from dynascope.progress import is_quiet, progress, say, set_quiet
from dynascope.report.dynamics_plots import (
    learning_curve_figure,
    study_accuracy_figure,
    study_eigenvalue_figure,
    study_energy_figure,
)
from dynascope.runio import LOOPED, STUDY, ensure_dir, write_bytes
from dynascope.validation import check_int, check_number, check_seed


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid: a name, the model and regularizer; epochs / heads 0 = the preset's."""

    name: str
    model: str
    norm: str
    regularizer: str = "none"
    reg_weight: float = 0.0
    epochs: int = 0
    label: str = ""
    heads: int = 0
    orthogonal_vo: bool = False


ITRSA_RMS = "rms"
"""``RunSpec.norm`` of the normalised ItrSA runs: the preset's ``itrsa_norm`` (token- or oscillator-wise RMSNorm)."""

RUNS = (
    RunSpec("itrsa_none", "itrsa", "none", epochs=1, label="ItrSA, no norm (1 epoch)"),
    RunSpec("itrsa_rms", "itrsa", ITRSA_RMS, label="ItrSA + RMSNorm"),
    RunSpec("itrsa_rms_spec", "itrsa", ITRSA_RMS, "spec", 1e-4, label="ItrSA + RMSNorm + Spec"),
    RunSpec("akorn", "akorn", "pi_osc", label="AKOrN (Π_osc)"),
    RunSpec("akorn_rms", "akorn", "rms_osc", label="AKOrN + RMSNorm_osc"),
    RunSpec("akorn_spec", "akorn", "pi_osc", "spec", 1e-5, label="AKOrN + Spec"),
)
EXTRA_RUNS = (
    RunSpec("sym_single", "sym_single", "pi_token", epochs=1, heads=1, label="symmetric SA, 1 head (1 epoch)"),
    RunSpec("sym_multi", "sym_multi", "none", epochs=1, label="symmetric SA, orthogonal heads (1 epoch)"),
    RunSpec("itrsa_e_single", "itrsa", ITRSA_RMS, "e_single", 1e-6, heads=1, label="ItrSA + E-single"),
    RunSpec("itrsa_e_multi", "itrsa", ITRSA_RMS, "e_multi", 1e-4, orthogonal_vo=True, label="ItrSA + E-multi"),
)
"""Runs beyond the default grid (the paper's energy-based variants, note §4.1), chosen with ``--runs``."""


@dataclass(frozen=True)
class Preset:
    """Sizes of one preset: data, model, training and analysis."""

    name: str
    build: SudokuBuildConfig
    width: int
    heads: int
    osc_size: int
    akorn_osc_size: int
    loop_steps: int
    epochs: int
    batch_size: int
    lr: float
    n_train: int
    n_eval: int
    eval_steps: tuple[int, ...]
    ema_beta: float = 0.995
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    seeds: tuple[int, ...] = (0,)
    precision: str = "fp32"
    """Training precision; ``full`` autocasts in bf16 (it is sized for a GPU, where bf16 is the fast path)."""
    curve_every: int = 0
    """Optimizer steps between learning-curve points (EMA model on 200 ID boards at the training T); 0 = none."""
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    """Learning-rate warm-up and schedule (``TrainConfig``); ``full`` keeps the paper's constant rate."""
    itrsa_norm: str = "rms_token"
    """The RMSNorm of the normalised ItrSA runs: ``rms_token`` (the paper's main definition) or ``rms_osc`` with
    ``osc_size`` channels per block (its Fig. 4 / Table S.3 variant)."""
    digit_std: float = 1.0
    """Initial std of the digit embedding in C (``ModelConfig.digit_std``)."""
    runs: tuple[str, ...] = ()
    """The runs the preset trains when ``--runs`` does not say (empty: the whole grid ``RUNS``)."""

    def __post_init__(self) -> None:
        if self.itrsa_norm not in ("rms_token", "rms_osc"):
            raise ConfigError(f"itrsa_norm must be rms_token or rms_osc, got {self.itrsa_norm!r}")
        known = {s.name for s in (*RUNS, *EXTRA_RUNS)}
        if not set(self.runs) <= known:
            raise ConfigError(f"runs: unknown {sorted(set(self.runs) - known)}; expected names from {sorted(known)}")
        check_number(self.digit_std, "digit_std", minimum=0.0, exclusive_minimum=True)


PRESETS = {
    "smoke": Preset(
        name="smoke",
        build=SudokuBuildConfig(easy_train=240, easy_test=40, hard_train=0, hard_valid=0, hard_test=40),
        width=8,
        heads=2,
        osc_size=4,
        akorn_osc_size=4,
        loop_steps=4,
        epochs=1,
        batch_size=40,
        lr=3e-3,
        n_train=0,
        n_eval=0,
        eval_steps=(2, 4, 8),
        analysis=AnalysisConfig(
            boards=1, t_jacobian=4, lyap_steps=4, trace_steps=8, ci_times=(0, 4, 8), full_mean=True
        ),
        curve_every=2,
    ),
    "quick": Preset(
        name="quick",
        build=SudokuBuildConfig(easy_train=3000, easy_test=300, hard_train=0, hard_valid=0, hard_test=300),
        width=32,
        heads=4,
        osc_size=4,
        akorn_osc_size=4,
        loop_steps=8,
        epochs=22,
        batch_size=32,
        lr=8e-3,
        n_train=0,
        n_eval=0,
        eval_steps=(8, 16, 32, 64, 128),
        ema_beta=0.98,
        analysis=AnalysisConfig(boards=1, t_jacobian=8, lyap_steps=8, trace_steps=32, ci_times=(0, 8, 32)),
        seeds=(0, 1, 2),
        curve_every=100,
        warmup_steps=200,
    ),
    "cpu-long": Preset(
        name="cpu-long",
        build=SudokuBuildConfig(easy_train=9000, easy_test=300, hard_train=0, hard_valid=0, hard_test=300),
        width=64,
        heads=8,
        osc_size=4,
        akorn_osc_size=4,
        loop_steps=16,
        epochs=10,
        batch_size=16,
        lr=3e-3,
        n_train=0,
        n_eval=0,
        eval_steps=(8, 16, 32, 64, 128),
        ema_beta=0.98,
        analysis=AnalysisConfig(boards=1, t_jacobian=16, lyap_steps=16, trace_steps=32, ci_times=(0, 16, 32)),
        seeds=(0, 1, 2),
        curve_every=250,
        warmup_steps=200,
        itrsa_norm="rms_osc",
        digit_std=0.15,
        runs=("itrsa_none", "itrsa_rms", "itrsa_rms_spec"),
    ),
    "full": Preset(
        name="full",
        build=SudokuBuildConfig(easy_train=9000, easy_test=1000, hard_train=0, hard_valid=1000, hard_test=18000),
        width=512,
        heads=8,
        osc_size=8,
        akorn_osc_size=8,
        loop_steps=16,
        epochs=100,
        batch_size=100,
        lr=1e-3,
        n_train=0,
        n_eval=0,
        eval_steps=(8, 16, 32, 64, 128),
        analysis=AnalysisConfig(boards=1, t_jacobian=16, lyap_steps=16, trace_steps=64, ci_times=(0, 16, 64)),
        precision="bf16",
    ),
}


def train_config(preset: Preset, spec: RunSpec, device: str, seed: int) -> TrainConfig:
    """The ``TrainConfig`` of run ``spec`` under ``preset``."""
    model = ModelConfig(
        model=spec.model,
        width=preset.width,
        heads=spec.heads or preset.heads,
        osc_size=preset.akorn_osc_size if spec.model == "akorn" else preset.osc_size,
        norm=preset.itrsa_norm if spec.norm == ITRSA_RMS else spec.norm,
        orthogonal_vo=spec.orthogonal_vo,
        digit_std=preset.digit_std,
    )
    return TrainConfig(
        model=model,
        epochs=spec.epochs or preset.epochs,
        batch_size=preset.batch_size,
        lr=preset.lr,
        loop_steps=preset.loop_steps,
        eval_steps=preset.eval_steps,
        regularizer=spec.regularizer,
        reg_weight=spec.reg_weight,
        seed=seed,
        n_train=preset.n_train,
        n_eval=preset.n_eval,
        ema_beta=preset.ema_beta,
        precision=preset.precision,
        curve_every=preset.curve_every,
        warmup_steps=preset.warmup_steps,
        lr_schedule=preset.lr_schedule,
        device=device,
    )


def _pct(value: float | None) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{100 * value:.1f}"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _acc(row: dict[str, Any], split: str, t: int, kind: str = "board_accuracy") -> float:
    return float(row["metrics"][kind][split][str(t)])


def check_metric(rows: list[dict[str, Any]]) -> str:
    """The accuracy the checks compare: board accuracy when any run solves a board at any T, else blank-cell
    accuracy (small models that solve no board still differ in how many blanks they fill correctly)."""
    solved = any(v > 0 for r in rows for split in r["metrics"]["board_accuracy"].values() for v in split.values())
    return "board_accuracy" if solved else "cell_accuracy"


CURVE_ROWS = 12
"""Rows of the learning-curve table in results.md (evenly spaced over the recorded points; the figure has all)."""


def best_normalised(rows: list[dict[str, Any]], t: int) -> str:
    """The normalised run (not the no-norm or symmetric 1-epoch ones) with the highest mean ID board accuracy at
    T = ``t`` over seeds, ties broken by mean ID blank-cell accuracy."""
    names = [n for n in dict.fromkeys(r["name"] for r in rows) if n != "itrsa_none" and not n.startswith("sym_")]

    def score(name: str) -> tuple[float, float]:
        mine = [r for r in rows if r["name"] == name]
        return (
            float(np.mean([_acc(r, "id", t) for r in mine])),
            float(np.mean([_acc(r, "id", t, "cell_accuracy") for r in mine])),
        )

    return max(names, key=score)


def _mean_se(values: list[float]) -> str:
    """``mean ± SE`` in percent (SE over seeds; only the mean for one seed)."""
    mean = 100 * float(np.mean(values))
    if len(values) < 2:
        return f"{mean:.1f} %"
    return f"{mean:.1f} ± {100 * float(np.std(values, ddof=1)) / np.sqrt(len(values)):.1f} %"


def _curve_table(columns: dict[str, list[dict[str, Any]]]) -> list[str]:
    """A markdown table of learning curves, one column per entry of ``columns`` (``{heading: curve}``), at up to
    ``CURVE_ROWS`` steps evenly spaced over the longest curve; ``–`` where a curve had ended."""
    longest = max(columns.values(), key=len)
    picks = sorted({int(i) for i in np.linspace(0, len(longest) - 1, min(CURVE_ROWS, len(longest)))})
    out = ["| step | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for step in (int(longest[i]["step"]) for i in picks):
        cells = []
        for curve in columns.values():
            point = next((p for p in curve if int(p["step"]) == step), None)
            cells.append(
                "–" if point is None else f"{_pct(point['board_accuracy'])} / {_pct(point['cell_accuracy'])}"
            )
        out.append(f"| {step} | " + " | ".join(cells) + " |")
    return out


def _learning_curve_md(rows: list[dict[str, Any]], t: int, first_seed: int) -> list[str]:
    """The best normalised model's ID accuracy and learning curve over seeds, and the learning curves of the first
    seed's runs."""
    best = best_normalised(rows, t)
    mine = [r for r in rows if r["name"] == best]
    label = next(r["label"] for r in mine).split(" · seed")[0]
    per_seed = ", ".join(f"seed {r['seed']}: {_pct(_acc(r, 'id', t))}" for r in mine)
    out = ["## Learning curves", ""]
    out += [
        f"Best normalised model (mean ID board accuracy at T = {t}, then blank-cell accuracy): **{label}**: ID board "
        f"accuracy {_mean_se([_acc(r, 'id', t) for r in mine])} (mean ± SE over seeds; {per_seed}), ID blank-cell "
        f"accuracy {_mean_se([_acc(r, 'id', t, 'cell_accuracy') for r in mine])}.",
        "",
    ]
    first = [r for r in rows if r["seed"] == first_seed and r["metrics"].get("learning_curve")]
    if not first:
        return [*out, "No run recorded a learning curve (the preset's `curve_every` is 0).", ""]
    legend = "entries are board / blank-cell accuracy in % (– where a run had ended)"
    seeds = {f"seed {r['seed']}": r["metrics"]["learning_curve"] for r in mine if r["metrics"].get("learning_curve")}
    if len(seeds) > 1:
        out += [f"{label}, EMA model on the first 200 ID boards at T = {t}, every seed; {legend}.", ""]
        out += [*_curve_table(seeds), ""]
    out += [
        f"Every run of seed {first_seed}, EMA model on the first 200 ID boards at T = {t} (all recorded steps in "
        f"`figures/learning_curve.png`); {legend}.",
        "",
    ]
    return [*out, *_curve_table({r["label"].split(" · seed")[0]: r["metrics"]["learning_curve"] for r in first}), ""]


def _schedule(preset: Preset) -> str:
    """The learning-rate schedule in words."""
    warm = f"{preset.warmup_steps}-step linear warm-up, then " if preset.warmup_steps else ""
    return warm + ("constant" if preset.lr_schedule == "constant" else "cosine to 0")


def _itrsa_norm(preset: Preset) -> str:
    """Token-wise, or oscillator-wise with its block size."""
    return "token-wise" if preset.itrsa_norm == "rms_token" else f"oscillator-wise (N = {preset.osc_size})"


def _results_md(rows: list[dict[str, Any]], preset: Preset, timings: dict[str, Any], seeds: tuple[int, ...]) -> str:
    """Tables: accuracy vs T (ID, OOD); Lyapunov vs accuracy; spectral norms and the Prop. 5.1 bound."""
    ts = preset.eval_steps
    t_train = preset.loop_steps
    out = [f"# Looped self-attention on Sudoku: `reproduce dynamics --preset {preset.name}`", ""]
    out += [
        f"Width D = {preset.width}, H = {preset.heads}, N = {preset.osc_size} (AKOrN {preset.akorn_osc_size}), "
        f"training T = {t_train}, batch {preset.batch_size}, lr {preset.lr} ({_schedule(preset)}), "
        f"{preset.epochs} epochs (no-norm ItrSA: 1); ItrSA's RMSNorm {_itrsa_norm(preset)}; digit embedding "
        f"initialised with std {preset.digit_std:g}. Boards: easy train {preset.build.easy_train}, easy test (ID) "
        f"{preset.build.easy_test}, hard test (OOD) {preset.build.hard_test}. Accuracies in % (board: every blank "
        f"right; cell: blank cells right), EMA weights. Seeds: {', '.join(str(k) for k in seeds)} (one row per run "
        "and seed; the figures show the first seed's runs, the learning curves also the best normalised model's other "
        "seeds).",
        "",
    ]
    for split, title in (("id", "ID (easy test)"), ("ood", "OOD (hard test)")):
        for kind, what in (("board_accuracy", "Board accuracy"), ("cell_accuracy", "Blank-cell accuracy")):
            out += [f"## {what} vs T, {title}", ""]
            out += ["| run | " + " | ".join(f"T={t}" for t in ts) + " |", "|---|" + "---|" * len(ts)]
            for row in rows:
                values = row["metrics"][kind][split]
                out.append(f"| {row['label']} | " + " | ".join(_pct(values[str(t)]) for t in ts) + " |")
            out.append("")
    out += _learning_curve_md(rows, t_train, seeds[0])
    kind = check_metric(rows)
    acc = "board" if kind == "board_accuracy" else "cell"
    out += ["## Lyapunov exponents vs accuracy", ""]
    out += [
        f"| run | λ_max | λ_mean | method (T, null dims) | ID {acc} acc T={t_train} | OOD {acc} acc T={t_train} | "
        f"OOD {acc} acc T={ts[-1]} | final train loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ly = row["analysis"]["boards"][0]["lyapunov"]
        out.append(
            f"| {row['label']} | {_num(ly['max'])} | {_num(ly['mean'])} "
            f"| {ly['method']} ({ly['T']}, {ly['null_dims']}) "
            f"| {_pct(_acc(row, 'id', t_train, kind))} | {_pct(_acc(row, 'ood', t_train, kind))} "
            f"| {_pct(_acc(row, 'ood', ts[-1], kind))} "
            f"| {_num(row['metrics']['train_loss'][-1])} |"
        )
    out += [
        "",
        "λ_mean is the mean over the exponents that are not normalization's exact null directions (one per "
        "normalised block), accumulated as a volume by per-step QRs, so it stays finite where single exponents are "
        "too small for the product to resolve.",
    ]
    out += ["", f"## One-step Jacobian at t = {preset.analysis.t_jacobian}", ""]
    out += [
        "| run | ‖J‖₂ | max abs eigenvalue | ‖J_MSA‖₂ | Prop. 5.1 bound | bound holds | η | max abs γ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        b = row["analysis"]["boards"][0]
        bound = b["normalization_bound"]
        out.append(
            f"| {row['label']} | {_num(b['spectral_norm']['value'])} | {_num(b['max_abs_eigenvalue'])} "
            f"| {_num(b['j_msa_norm']['value'])} | {_num(bound.get('bound'))} "
            f"| {bound.get('holds', 'n/a (not ItrSA-type or no norm)')} | {_num(row['metrics']['eta'])} "
            f"| {_num(row['metrics']['gamma_max'])} |"
        )
    out += ["", "## Timings", ""]
    out += ["| run | train s | eval s | analysis s |", "|---|---|---|---|"]
    for row in rows:
        tm = timings["runs"][row["key"]]
        out.append(f"| {row['key']} | {_num(tm['train'], 1)} | {_num(tm['eval'], 1)} | {_num(tm['analysis'], 1)} |")
    out += [
        "",
        f"Sudoku build: {_num(timings['build'], 1)} s; all stages: {_num(timings['stages'], 1)} s "
        f"({_num(timings['stages'] / 60, 1)} min; each stage timed when it ran, so a resumed study still reports "
        f"its full cost); this call: {_num(timings['total'], 1)} s; torch threads: {torch.get_num_threads()}; "
        f"denormals flushed to zero: {'yes' if timings.get('flush_denormal') else 'no'}; runs side by side: "
        f"{timings.get('workers', 1)} (stage seconds add up over them, so the sum can exceed this call's wall time).",
        "",
    ]
    out += [
        "Figures: `figures/accuracy_vs_T.png`, `figures/eigenvalues.png`, `figures/energy.png`, "
        "`figures/learning_curve.png` (when the preset records curves); per run in "
        "`runs/<name>-seed<k>/figures/`.",
        "",
    ]
    return "\n".join(out)


CELL_TOLERANCE = 0.005
"""Drop in blank-cell accuracy (absolute) from one T to the next still read as "non-decreasing" (noise)."""
LYAP_BAND = (-0.05, 0.3)
"""The paper's "near criticality" for the best models: λ_max ≈ 0 (≈ +0.1 for the best)."""


def _verdict(effect: Effect, scale: float = 100.0, unit: str = " points") -> str:
    """An effect ± SE over seeds and its verdict, in one phrase."""
    if effect.n == 0 or not np.isfinite(effect.effect):
        return f"**{Verdict.INCONCLUSIVE.value}** (no finite values)"
    se = f" ± {scale * effect.se:.2f}" if np.isfinite(effect.se) else ""
    how = "paired by seed" if effect.paired else "unpaired"
    return (
        f"effect {scale * effect.effect:+.2f}{se}{unit} (mean ± SE over {effect.n} seed(s), {how}): "
        f"**{effect.verdict.value}** ({effect.reason})"
    )


def _band_verdict(values: dict[int, float]) -> str:
    """Whether per-seed λ_max lies inside LYAP_BAND: holds when it is above the low end and below the high end,
    each by more than Z_DEFAULT SE; contradicted when either end is crossed by that much; else inconclusive."""
    low = effect_vs_reference(values, LYAP_BAND[0], +1)
    high = effect_vs_reference(values, LYAP_BAND[1], -1)
    verdicts = {low.verdict, high.verdict}
    if Verdict.CONTRADICTED in verdicts:
        verdict = Verdict.CONTRADICTED
    elif verdicts == {Verdict.HOLDS}:
        verdict = Verdict.HOLDS
    else:
        verdict = Verdict.INCONCLUSIVE
    spread = f" ± {low.se:.3f}" if np.isfinite(low.se) else ""
    mean = float(np.mean(list(values.values())))
    return (
        f"λ_max {mean:.3f}{spread} over {len(values)} seed(s): **{verdict.value}** "
        f"(low end: {low.reason}; high end: {high.reason})"
    )


def _checks_md(rows: list[dict[str, Any]], preset: Preset, seeds: tuple[int, ...]) -> str:
    """The paper's claims with our numbers and a verdict per claim: the effect over seeds and its standard error
    (``dynascope.analysis.verdicts``: holds / contradicted beyond two SE, else inconclusive)."""
    ts = preset.eval_steps
    t_train = preset.loop_steps
    kind = check_metric(rows)
    cells = kind == "cell_accuracy"
    what = "blank-cell accuracy" if cells else "board accuracy"
    names = list(dict.fromkeys(r["name"] for r in rows))
    lines = [f"# Paper claims vs this run (`--preset {preset.name}`)", ""]
    lines += [
        f"Seeds: {', '.join(str(s) for s in seeds)}. Each claim's effect is the mean over seeds with its standard "
        f"error; it **holds** only when the effect exceeds {Z_DEFAULT:g} standard errors in the claimed direction, "
        f"is **contradicted** when it does so in the other direction, and is otherwise **inconclusive** (always "
        f"with fewer than {MIN_SEEDS} seeds). Small presets are far from the paper's scale: read them as a test of "
        "the pipeline and of the direction of each effect, not of its size.",
        "",
        f"Accuracy compared below: **{what}**"
        + (
            " (no run solves a single board at any T, so board accuracy cannot rank the runs; the share of "
            "blank cells filled correctly can; chance is 1/9 ≈ 11.1 %)."
            if cells
            else " (every blank of a board right)."
        ),
        "",
    ]

    def per_seed(name: str, value: Any) -> dict[int, float]:
        return {int(r["seed"]): float(value(r)) for r in rows if r["name"] == name}

    def acc(name: str, split: str, t: int) -> dict[int, float]:
        return per_seed(name, lambda r: _acc(r, split, t, kind))

    def lyap_max(name: str) -> dict[int, float]:
        return per_seed(name, lambda r: r["analysis"]["boards"][0]["lyapunov"]["max"])

    def mean(values: dict[int, float]) -> float:
        return float(np.mean(list(values.values()))) if values else float("nan")

    normed = [n for n in names if n != "itrsa_none"]
    score = {n: mean(acc(n, "id", t_train)) + mean(acc(n, "ood", t_train)) for n in names}
    best = max(names, key=lambda n: (score[n], n != "itrsa_none"))
    lines += [
        "## 1. Normalised models sit near criticality (λ_max ≈ 0, ≈ +0.1 for the best) and are the best",
        "",
        f"Best run by mean ID + OOD {what} at T = {t_train}: **{best}** (ID {_pct(mean(acc(best, 'id', t_train)))} %, "
        f"OOD {_pct(mean(acc(best, 'ood', t_train)))} %). Normalised runs' mean λ_max: "
        + ", ".join(f"{n} {_num(mean(lyap_max(n)))}" for n in normed)
        + ".",
        "",
    ]
    best_l = {s: v for s, v in lyap_max(best).items() if np.isfinite(v)}
    if score[best] == 0 or not best_l:
        lines += ["Criterion: the best run's λ_max lies in [−0.05, 0.3]: **n/a** (every accuracy is 0).", ""]
    else:
        normalised = "yes" if best != "itrsa_none" else "no"
        lines += [
            f"Criterion: the best run is normalised ({normalised}) and its λ_max lies in "
            f"[{LYAP_BAND[0]}, {LYAP_BAND[1]}]: {_band_verdict(best_l)}.",
            "",
        ]
    lines += ["## 2. Without normalization ItrSA is worse, with a larger λ_max", ""]
    skipped = per_seed("itrsa_none", lambda r: r["metrics"]["skipped_nonfinite_steps"])
    for split in ("id", "ood"):
        effect = compare_arms(acc("itrsa_rms", split, t_train), acc("itrsa_none", split, t_train), +1)
        lines.append(f"- RMSNorm − no norm, {split.upper()} {what} at T = {t_train}: {_verdict(effect)}.")
    none_l, rms_l = lyap_max("itrsa_none"), lyap_max("itrsa_rms")
    overflowed = sorted(s for s, v in none_l.items() if not np.isfinite(v))
    if overflowed and len(overflowed) == len(none_l):
        larger = "**holds** in effect: the no-norm trajectory overflowed on every seed (λ_max = +∞)"
    elif overflowed:
        larger = f"**inconclusive** (the no-norm trajectory overflowed on seeds {overflowed} only)"
    else:
        larger = _verdict(compare_arms(none_l, rms_l, +1), scale=1.0, unit="")
    lines += [
        f"- λ_max no norm − RMSNorm: {larger}. Skipped non-finite steps without norm: "
        + ", ".join(f"seed {s}: {int(v)}" for s, v in skipped.items())
        + ".",
        "",
        "## 3. Spec helps ItrSA and AKOrN",
        "",
    ]
    pairs = [(b, r) for b, r in (("itrsa_rms", "itrsa_rms_spec"), ("akorn", "akorn_spec")) if {b, r} <= set(names)]
    for base, reg in pairs:
        effect = compare_arms(acc(reg, "ood", t_train), acc(base, "ood", t_train), +1)
        lines.append(
            f"- {reg} − {base}, OOD {what} at T = {t_train} (the paper's selection metric): {_verdict(effect)}."
        )
    if not pairs:
        lines.append("- not run (no Spec runs in this study).")
    lines += ["", "## 4. Normalised ItrSA keeps improving with T on the hard (OOD) set", ""]
    tol = CELL_TOLERANCE if cells else 0.0
    for name in [n for n in ("itrsa_rms", "itrsa_rms_spec", "akorn", "akorn_rms") if n in names]:
        curve = {t: acc(name, "ood", t) for t in ts}
        later = [t for t in ts if t >= t_train]
        gain = {s: curve[ts[-1]][s] - curve[t_train][s] for s in curve[t_train]}
        settles = all(
            curve[b][s] >= curve[a][s] - tol for a, b in itertools.pairwise(later) for s in curve[t_train]
        )
        lines.append(
            f"- {name}: mean OOD {what} "
            + ", ".join(f"T={t}: {_pct(mean(v))}" for t, v in curve.items())
            + f". Non-decreasing from T = {t_train} on every seed"
            + (f" (drops ≤ {100 * tol:.1f} points allowed)" if tol else "")
            + f": {'yes' if settles else 'no'}. Gain T = {ts[-1]} − T = {t_train}: "
            + (_verdict(effect_vs_reference(gain, 0.0, +1)) if any(mean(v) > 0 for v in curve.values()) else
               "**n/a** (0 % at every T)")
            + "."
        )
    lines += [
        "",
        "The paper claims yes for ItrSA (every N) and for AKOrN + RMSNorm; for AKOrN with large N it reports lost "
        "scaling. Non-decreasing alone means the accuracy holds (the state settles) but more steps do not add to it.",
        "",
        "## 5. Normalization bounds the one-step Jacobian (Prop. 5.1)",
        "",
    ]
    for name in [n for n in ("itrsa_rms", "itrsa_rms_spec") if n in names]:
        bounds = {int(r["seed"]): r["analysis"]["boards"][0]["normalization_bound"] for r in rows if r["name"] == name}
        held = [b.get("holds") for b in bounds.values()]
        worst = max(bounds.values(), key=lambda b: (b.get("measured") or 0.0) / (b.get("bound") or float("inf")))
        lines.append(
            f"- {name}: measured ‖J‖₂ ≤ the bound on {sum(bool(h) for h in held)} of {len(held)} seed(s) "
            f"(closest: {_num(worst['measured'])} ≤ {_num(worst.get('bound'))}, R {_num(worst.get('R'))}, "
            f"γ_max {_num(worst.get('gamma_max'))}, η {_num(worst.get('eta'))}): "
            f"**{'holds' if all(held) else 'contradicted'}** (an inequality checked exactly on each seed)."
        )
    lines.append("")
    return "\n".join(lines)


def _measured_stage_seconds(out: Path) -> dict[str, dict[str, float]]:
    """Per run: seconds of training, evaluation and analysis recorded by earlier calls into ``out`` when each
    stage ran (kept across resumes; empty for a new study)."""
    return STUDY.load_optional(out, "timings") or {}


def publish(out: Path, docs: Path) -> None:
    """Copy results, checks and figures into ``docs`` (the committed copy under docs/results/dynamics)."""
    (docs / "figures").mkdir(parents=True, exist_ok=True)
    for role in ("results", "checks", "results_json"):
        shutil.copyfile(STUDY.path(out, role), STUDY.path(docs, role))
    for fig in sorted(STUDY.path(out, "figures").glob("*.png")):
        shutil.copyfile(fig, STUDY.path(docs, "figures") / fig.name)


def run_key(name: str, seed: int) -> str:
    """The folder (under ``runs/``) and timings key of run ``name`` with ``seed``."""
    return f"{name}-seed{seed}"


def _worker_init(threads: int, flush_denormal: bool, quiet: bool) -> None:
    """A study worker process: its share of the CPU threads, the parent's denormal and quiet settings."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(flush_denormal)
    set_quiet(quiet)


def train_and_analyse(
    preset: Preset,
    spec: RunSpec,
    seed: int,
    out: Path,
    sudoku_dir: Path,
    device: str,
    overwrite: bool,
    earlier: dict[str, float],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """Train (or resume, or reuse) run ``spec`` with ``seed`` and analyse it; returns its metrics, analysis and
    stage seconds (``earlier``: the stage seconds an earlier call recorded, kept for a reused analysis)."""
    key = run_key(spec.name, seed)
    run_dir = out / "runs" / key
    config = train_config(preset, spec, device, seed)
    t0 = time.perf_counter()
    if overwrite or not LOOPED.is_finished(run_dir):
        say(f"training {key}")
        train_from_sudoku_dir(config, sudoku_dir, run_dir, overwrite=overwrite, preset=preset.name, run=spec.name)
    wall = time.perf_counter() - t0
    metrics = LOOPED.load(run_dir, "metrics")
    t0 = time.perf_counter()
    if overwrite or not LOOPED.has(run_dir, "analysis") or "analysis" not in earlier:
        say(f"analysing {key}")
        analysis = analyze_run_dir(run_dir, preset.analysis, sudoku_dir, "easy_test", device)
        analysis_seconds = time.perf_counter() - t0
    else:
        analysis = LOOPED.load(run_dir, "analysis")
        analysis_seconds = float(earlier["analysis"])
    timing = {
        "train": float(sum(metrics["epoch_seconds"])),
        "eval": float(metrics["eval_seconds"]),
        "analysis": analysis_seconds,
        "wall_this_call": wall,
    }
    return metrics, analysis, timing


def reproduce(
    preset: Preset,
    out: str | Path,
    data_dir: str | Path | None = None,
    device: str = "auto",
    seeds: tuple[int, ...] | None = None,
    runs: tuple[str, ...] | None = None,
    overwrite: bool = False,
    flush_denormal: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """Run the whole study for ``preset`` into ``out`` over ``seeds`` (default: the preset's); returns the results
    dict (also results.json). Each (run, seed) trains into ``runs/<name>-seed<k>``. ``flush_denormal`` flushes
    denormal floats to zero for the duration of the call (``torch.set_flush_denormal``, process-wide, reset after):
    trained looped models drive the softmax into denormals, which CPUs compute many times slower (≈ 15 % of a
    trained model's training step here, far more in the no-norm model's evaluation); results.json records it.
    ``workers`` > 1 trains and analyses that many runs at once in spawned processes, each with its share of torch's
    threads: small looped models gain little from a second thread, so on 2 cores two 1-thread runs side by side
    nearly halve the study's wall time (each run's own results are the same as in one process)."""
    check_int(workers, "workers")
    if flush_denormal:
        torch.set_flush_denormal(True)
    try:
        return _reproduce(preset, out, data_dir, device, seeds, runs, overwrite, flush_denormal, workers)
    finally:
        if flush_denormal:
            torch.set_flush_denormal(False)


def _reproduce(
    preset: Preset,
    out: str | Path,
    data_dir: str | Path | None,
    device: str,
    seeds: tuple[int, ...] | None,
    runs: tuple[str, ...] | None,
    overwrite: bool,
    flush_denormal: bool,
    workers: int,
) -> dict[str, Any]:
    """``reproduce`` with denormal flushing already set."""
    known = {s.name: s for s in (*RUNS, *EXTRA_RUNS)}
    unknown = sorted(set(runs or ()) - set(known))
    if unknown:
        raise ConfigError(f"unknown runs {unknown}; expected names from {sorted(known)}")
    runs = runs or preset.runs or None
    specs = list(RUNS) if runs is None else [known[name] for name in runs]
    needed = {"itrsa_none", "itrsa_rms"}
    if not needed <= {s.name for s in specs}:
        raise ConfigError(f"runs must include {sorted(needed)} (the checks compare them), got {runs}")
    seeds = tuple(preset.seeds if seeds is None else seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct and at least one, got {list(seeds)}")
    for seed in seeds:
        check_seed(seed)
    resolve_device(device)  # an unavailable device fails before the boards are built
    out = ensure_dir(out)
    t_total = time.perf_counter()
    t0 = time.perf_counter()
    sudoku_dir = out / "sudoku"
    build_datasets(preset.build, resolve_data_dir(data_dir) / POOL_FILE, sudoku_dir, progress=progress, log=say)
    build_seconds = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    timings: dict[str, Any] = {"build": build_seconds, "runs": {}}
    measured = _measured_stage_seconds(out)
    jobs = list(itertools.product(specs, seeds))
    for spec, seed in jobs:  # every config is checked before anything trains
        run_dir = out / "runs" / run_key(spec.name, seed)
        config = train_config(preset, spec, device, seed)
        finished = LOOPED.is_finished(run_dir)
        if finished and not overwrite and TrainConfig.from_dict(LOOPED.load(run_dir, "config")["train"]) != config:
            raise ConfigError(f"{run_dir} holds a run of another config (preset?); use another --out or --overwrite")
    done: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}

    def record(key: str, result: tuple[dict[str, Any], dict[str, Any], dict[str, float]]) -> None:
        metrics, analysis, timing = result
        done[key] = (metrics, analysis)
        timings["runs"][key] = timing
        STUDY.write(out, "timings", {**measured, **timings["runs"]})

    args = [
        (preset, spec, seed, out, sudoku_dir, device, overwrite, measured.get(run_key(spec.name, seed), {}))
        for spec, seed in jobs
    ]
    if workers == 1:
        for job in args:
            record(run_key(job[1].name, job[2]), train_and_analyse(*job))
    else:
        threads = max(1, torch.get_num_threads() // workers)
        context = multiprocessing.get_context("spawn")
        init = (threads, flush_denormal, is_quiet())
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init, initargs=init) as pool:
            futures = {pool.submit(train_and_analyse, *job): run_key(job[1].name, job[2]) for job in args}
            try:
                for future in as_completed(futures):
                    record(futures[future], future.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # running jobs finish (and checkpoint); none start
                raise
    for spec, seed in jobs:
        key = run_key(spec.name, seed)
        metrics, analysis = done[key]
        label = spec.label if len(seeds) == 1 else f"{spec.label} · seed {seed}"
        rows.append({"name": spec.name, "seed": seed, "key": key, "label": label, "metrics": metrics,
                     "analysis": analysis})
    timings["total"] = time.perf_counter() - t_total
    timings["flush_denormal"] = flush_denormal
    timings["workers"] = workers
    stage_keys = ("train", "eval", "analysis")
    timings["stages"] = build_seconds + sum(sum(v[k] for k in stage_keys) for v in timings["runs"].values())
    figures = STUDY.path(out, "figures")
    first = [row for row in rows if row["seed"] == seeds[0]]  # figures show the first seed's runs
    write_bytes(figures / "accuracy_vs_T.png", study_accuracy_figure(first))
    write_bytes(figures / "eigenvalues.png", study_eigenvalue_figure(first))
    write_bytes(figures / "energy.png", study_energy_figure(first))
    best = best_normalised(rows, preset.loop_steps)
    curves = {
        row["label"]: {
            "ID board": ([p["step"] for p in curve], [p["board_accuracy"] for p in curve]),
            "ID cell": ([p["step"] for p in curve], [p["cell_accuracy"] for p in curve]),
        }
        for row in first + [r for r in rows if r["name"] == best and r not in first]
        if (curve := row["metrics"].get("learning_curve"))
    }  # every run of the first seed, and the best normalised model's other seeds
    if curves:
        write_bytes(figures / "learning_curve.png", learning_curve_figure(curves))
    STUDY.write(out, "checks", _checks_md(rows, preset, seeds))
    results = {
        "preset": preset.name,
        "seeds": list(seeds),
        "timings": timings,
        "runs": {
            spec.name: {
                str(row["seed"]): {
                    "board_accuracy": row["metrics"]["board_accuracy"],
                    "cell_accuracy": row["metrics"]["cell_accuracy"],
                    "train_loss": row["metrics"]["train_loss"],
                    "summary": row["analysis"]["summary"],
                }
                for row in rows
                if row["name"] == spec.name
            }
            for spec in specs
        },
        "torch_threads": torch.get_num_threads(),
        "flush_denormal": flush_denormal,
    }
    STUDY.write(out, "results_json", results)
    STUDY.write(out, "results", _results_md(rows, preset, timings, seeds))
    return results
