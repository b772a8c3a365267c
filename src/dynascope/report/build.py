"""Build the report: find runs, compute what is missing, write ``report.html`` and ``tables/*.md|csv``.

Each optional piece (logits, features, head, per-epoch norms, calibration, NTK spectra, a looped run's
analysis.json and learning curve) is used when present and otherwise skipped with a note on the page; a
malformed optional file of one run also becomes a note rather than an error, so one bad run never hides the
others. Looped-model runs (``dynamics train``, ``reproduce dynamics``) fill the Dynamics section, drawn from
their stored results only (nothing is recomputed for them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from dynascope.analysis.calibration import DEFAULT_BINS, ReliabilityData
from dynascope.analysis.features import tsne_embedding, tsne_features_and_head
from dynascope.analysis.temperature import METRIC_KEYS, TemperatureConfig
from dynascope.errors import ConfigError, DynascopeError
from dynascope.progress import progress, say
from dynascope.report import dynamics_plots, plots
from dynascope.report.html import FigureItem, Section, render_page
from dynascope.report.runs import (
    Discovered,
    FinetuneRun,
    LoopedRun,
    NtkRun,
    calibration_of,
    discover_runs,
    feature_metrics_of,
    split_order,
)
from dynascope.report.tables import (
    Table,
    accuracy_tables,
    calibration_table,
    dynamics_accuracy_table,
    feature_table,
    group_looped,
    group_runs,
    head_norm_table,
    looped_training_table,
    lyapunov_table,
    ntk_run_table,
    ntk_table,
)
from dynascope.runio import FINETUNE, LOOPED, REPORT, STUDY, write_text

T = TypeVar("T")


@dataclass(frozen=True)
class ReportConfig:
    """What the report computes when a run lacks stored results, and how much t-SNE it draws."""

    n_bins: int = DEFAULT_BINS
    temperature: TemperatureConfig = field(default_factory=TemperatureConfig)
    tsne: bool = True
    tsne_split: str = "test"
    tsne_max_points: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.n_bins, int) or self.n_bins < 1:
            raise ConfigError(f"n_bins must be a positive integer, found {self.n_bins!r}")
        if not isinstance(self.tsne_max_points, int) or self.tsne_max_points < 10:
            raise ConfigError(f"tsne_max_points must be an integer >= 10, found {self.tsne_max_points!r}")


@dataclass
class ReportResult:
    """Where the report went and what it holds."""

    html_path: Path
    tables: list[str]
    figures: list[str]
    notes: list[str]


def _attempt(notes: list[str], what: str, fn: Callable[[], T]) -> T | None:
    """``fn()``, or None with a note when the data behind it is malformed."""
    try:
        return fn()
    except (DynascopeError, KeyError, ValueError, TypeError) as exc:
        notes.append(f"{what}: skipped ({exc})")
        return None


def _run_name(run: FinetuneRun) -> str:
    return f"{run.task}/{run.method}/seed {run.seed} ({run.path.name})"


def _usable_calibration(stored: Any, n_bins: int) -> bool:
    """Whether a stored calibration.json has the layout ``calibrate`` writes and the requested bin count."""
    try:
        return (
            stored["binning"]["n_bins"] == n_bins
            and float(stored["temperature"]) > 0
            and all(
                all(k in split[phase] for k in METRIC_KEYS) and "reliability" in split[phase]
                for split in stored["splits"].values()
                for phase in ("before", "after")
            )
        )
    except (KeyError, TypeError, AttributeError, ValueError):
        return False


def _usable_features(stored: Any) -> bool:
    """Whether a stored features.json has the layout ``features`` writes."""
    try:
        return all(isinstance(v, dict) and "diff" in v for v in stored["splits"].values())
    except (KeyError, TypeError, AttributeError):
        return False


def _first_split(calibrations: Sequence[dict[str, Any]]) -> str | None:
    """``test`` if any run has it, else the first split in report order."""
    keys = {k for c in calibrations for k in c["splits"]}
    return "test" if "test" in keys else next(iter(split_order(keys)), None)


def _calibrations(runs: Sequence[FinetuneRun], cfg: ReportConfig, notes: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    computed = 0
    for run in progress(runs, desc="calibration"):
        stored = _attempt(notes, f"{_run_name(run)} calibration.json", run.stored_calibration)
        if _usable_calibration(stored, cfg.n_bins):
            out[str(run.path)] = stored
            continue
        if stored is not None:
            notes.append(
                f"{_run_name(run)}: {FINETUNE.files['calibration']} has another bin count or layout, recomputed"
            )
        result = _attempt(
            notes, f"{_run_name(run)} calibration", lambda r=run: calibration_of(r, cfg.n_bins, cfg.temperature)
        )
        if result is None:
            if not FINETUNE.has(run.path, "logits"):
                notes.append(f"{_run_name(run)}: no {FINETUNE.files['logits']}, calibration skipped")
            continue
        out[str(run.path)] = result
        computed += 1
    if computed:
        notes.append(
            f"calibration computed on the fly for {computed} run(s) without a matching {FINETUNE.files['calibration']}"
        )
    return out


def _feature_metrics(runs: Sequence[FinetuneRun], notes: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for run in progress(runs, desc="feature metrics"):
        stored_name = FINETUNE.files["feature_metrics"]
        stored = _attempt(notes, f"{_run_name(run)} {stored_name}", run.stored_feature_metrics)
        if stored is not None and not _usable_features(stored):
            notes.append(f"{_run_name(run)}: {stored_name} has an unexpected layout, recomputed")
            stored = None
        result = stored or _attempt(notes, f"{_run_name(run)} features", lambda r=run: feature_metrics_of(r))
        if result is None:
            if FINETUNE.has(run.path, "features"):
                continue
            notes.append(f"{_run_name(run)}: no {FINETUNE.files['features']}, feature change and t-SNE skipped")
            continue
        out[str(run.path)] = result
    return out


def _reliability_figures(
    runs: Sequence[FinetuneRun], calibration: dict[str, dict[str, Any]], notes: list[str]
) -> list[FigureItem]:
    figures = []
    for (task, method), rs in group_runs(runs).items():
        cals = [calibration[str(r.path)] for r in rs if str(r.path) in calibration]
        split = _first_split(cals)
        if split is None:
            continue
        panels = {}
        for phase, label in (("before", "without TS"), ("after", "with TS")):
            items = [
                ReliabilityData.from_dict(c["splits"][split][phase]["reliability"])
                for c in cals
                if split in c["splits"]
            ]
            pooled = _attempt(notes, f"{task}/{method} reliability", lambda i=items: plots.pool_reliability(i))
            if pooled is not None:
                panels[label] = pooled
        if panels:
            png = plots.reliability_figure(panels, f"{task} / {method}, {split} ({len(cals)} seed(s) pooled)")
            figures.append(
                FigureItem(f"reliability-{task}-{method}", f"Reliability diagram, {task} / {method}, {split}", png)
            )
    return figures


def _head_norm_figures(runs: Sequence[FinetuneRun], notes: list[str]) -> list[FigureItem]:
    figures = []
    by_task: dict[str, dict[str, list[list[float]]]] = {}
    for (task, method), rs in group_runs(runs).items():
        curves = []
        for r in rs:
            per_epoch = (r.metrics.get("head_norm") or {}).get("per_epoch") or []
            values = [float(v) for v in per_epoch if isinstance(v, int | float)]
            if values:
                curves.append(values)
        if curves:
            by_task.setdefault(task, {})[method] = curves
    for task in sorted({r.task for r in runs}):
        if task not in by_task:
            notes.append(f"{task}: no per-epoch head norms (LP-only runs or none logged), curve skipped")
            continue
        png = plots.head_norm_figure(by_task[task], f"Head norm during training, {task}")
        figures.append(FigureItem(f"head-norm-{task}", f"‖V‖_F per epoch, {task} (thin: seeds, thick: mean)", png))
    return figures


def _subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def _tsne_figures(runs: Sequence[FinetuneRun], cfg: ReportConfig, notes: list[str]) -> list[FigureItem]:
    figures = []
    for (task, method), rs in progress(list(group_runs(runs).items()), desc="t-SNE"):
        run = next((r for r in rs if FINETUNE.has(r.path, "features")), None)
        if run is None:
            continue
        features = _attempt(notes, f"{_run_name(run)} {FINETUNE.files['features']}", lambda r=run: r.features)
        if not features:
            continue
        split = cfg.tsne_split if cfg.tsne_split in features else split_order(features)[-1]
        pre, post, labels = features[split]
        idx = _subsample(len(labels), cfg.tsne_max_points, cfg.seed)
        if idx.size < 5:
            notes.append(f"{_run_name(run)}: fewer than 5 examples in {split}, t-SNE skipped")
            continue
        head = _attempt(notes, f"{_run_name(run)} head.safetensors", lambda r=run: r.head_weight)
        if head is None:
            notes.append(f"{_run_name(run)}: no usable head.safetensors, t-SNE drawn without classifier rows")
        pre_xy = tsne_embedding(pre[idx], seed=cfg.seed)
        if head is not None and head.shape[1] == post.shape[1]:
            post_xy, head_xy = tsne_features_and_head(post[idx], head, seed=cfg.seed)
        else:
            post_xy, head_xy = tsne_embedding(post[idx], seed=cfg.seed), None
        panels = {"pre-trained φ": (pre_xy, labels[idx], None), f"φ after {method}": (post_xy, labels[idx], head_xy)}
        png = plots.tsne_figure(panels, run.label_names, f"t-SNE, {task} / {method}, {split}, seed {run.seed}")
        figures.append(FigureItem(f"tsne-{task}-{method}", f"t-SNE of features, {task} / {method} ({split})", png))
    return figures


def _ntk_figures(runs: Sequence[NtkRun], notes: list[str]) -> list[FigureItem]:
    figures = []
    for run in sorted(runs, key=lambda r: (r.task, r.state, str(r.path))):
        tag = f"{run.task}-{run.state}-{run.path.name}"
        spectra = _attempt(notes, f"NTK {run.path.name} spectra.npz", lambda r=run: r.spectra)
        if spectra is None:
            notes.append(f"NTK run {run.path.name}: no spectra.npz, singular values and heat maps skipped")
            continue
        svs = {k: spectra[f"{k}_sv"] for k in ("pre", "ft", "total") if f"{k}_sv" in spectra}
        if svs:
            png = plots.singular_value_figure(svs, f"Normalised singular values, {run.task} / {run.state}")
            figures.append(FigureItem(f"ntk-sv-{tag}", f"σ_i / σ_1 of the kernels, {run.task} / {run.state}", png))
        blocks = {k: spectra[f"{k}_nuclear"] for k in ("pre", "ft", "total") if f"{k}_nuclear" in spectra}
        if blocks:
            png = plots.nuclear_heatmap_figure(
                blocks, spectra.get("labels_sorted"), f"Block nuclear norms, {run.task} / {run.state}"
            )
            figures.append(FigureItem(f"ntk-nuclear-{tag}", f"C×C block nuclear norms, {run.task} / {run.state}", png))
        if not svs and not blocks:
            notes.append(f"NTK run {run.path.name}: spectra.npz holds neither *_sv nor *_nuclear arrays")
    return figures


def _usable_analysis(stored: Any) -> bool:
    """Whether a stored analysis.json has the layout ``dynamics analyze`` writes (a summary and analysed boards)."""
    needed = {"eigenvalues", "lyapunov", "pseudo_energy", "contribution_index"}
    try:
        boards = stored["boards"]
        return isinstance(stored["summary"], dict) and len(boards) > 0 and all(needed <= set(b) for b in boards)
    except (KeyError, TypeError):
        return False


def _analyses(runs: Sequence[LoopedRun], notes: list[str]) -> dict[str, dict[str, Any]]:
    """The usable analysis.json of each looped run, keyed by run path; a note for each run without one."""
    out: dict[str, dict[str, Any]] = {}
    name = LOOPED.files["analysis"]
    missing = []
    for run in runs:
        stored = _attempt(notes, f"{run.path} {name}", run.stored_analysis)
        if _usable_analysis(stored):
            out[str(run.path)] = stored
        elif stored is not None:
            notes.append(f"{run.path}: {name} has an unexpected layout, skipped")
        elif not LOOPED.has(run.path, "analysis"):
            missing.append(run.path.name)
    if missing:
        notes.append(
            f"no {name} in {', '.join(missing)} (run `dynascope dynamics analyze RUN`): their Lyapunov exponents, "
            "eigenvalues and energies are not shown"
        )
    return out


def _figure(notes: list[str], name: str, caption: str, draw: Callable[[], bytes]) -> list[FigureItem]:
    """``[FigureItem(name, caption, draw())]``, or none with a note when the results behind it are malformed."""
    png = _attempt(notes, f"figure {name}", draw)
    return [] if png is None else [FigureItem(name, caption, png)]


def _study_line(study: Path, runs: Sequence[LoopedRun], notes: list[str]) -> str:
    """``DIR (preset P, k looped runs)`` for a study given to the report."""
    results = _attempt(
        notes, f"{study} {STUDY.files['results_json']}", lambda: STUDY.load_optional(study, "results_json")
    )
    preset = results.get("preset") if isinstance(results, dict) else None
    count = sum(r.study == study for r in runs)
    return f"{study} ({f'preset {preset}, ' if preset else ''}{count} looped run(s))"


def _lyapunov_points(
    runs: Sequence[LoopedRun], names: dict[str, str], analyses: dict[str, Any]
) -> list[dict[str, Any]]:
    """Per analysed run: its λ_max, λ_mean and accuracies at the training T (the Lyapunov-vs-accuracy figure)."""
    return [
        {
            "name": names[str(r.path)],
            "max": analyses[str(r.path)]["summary"].get("lyapunov_max"),
            "mean": analyses[str(r.path)]["summary"].get("lyapunov_mean"),
            **{k: {s: r.at_training_t(k, s) for s in ("id", "ood")} for k in ("board_accuracy", "cell_accuracy")},
        }
        for r in runs
        if str(r.path) in analyses
    ]


def _dynamics_figures(
    runs: Sequence[LoopedRun], names: dict[str, str], analyses: dict[str, dict[str, Any]], notes: list[str]
) -> list[FigureItem]:
    """Accuracy vs T, accuracy vs λ, eigenvalues, energies (analysed runs), loss per epoch, per-step curves."""
    rows = [{"name": names[str(r.path)], "metrics": r.metrics, "analysis": analyses.get(str(r.path))} for r in runs]
    analysed = [row for row in rows if row["analysis"] is not None]
    figures = _figure(
        notes,
        "dynamics-accuracy",
        "Board and blank-cell accuracy vs loop steps T on ID and OOD boards, one line per run",
        lambda: dynamics_plots.study_accuracy_figure(rows),
    )
    if analysed:
        points = _lyapunov_points(runs, names, analyses)
        t_jacobian = "/".join(
            sorted({str((row["analysis"].get("config") or {}).get("t_jacobian")) for row in analysed})
        )
        figures += _figure(
            notes,
            "dynamics-lyapunov",
            "Accuracy at the training T against λ_max and λ_mean (circle: ID, square: OOD)",
            lambda: dynamics_plots.lyapunov_accuracy_figure(points),
        )
        figures += _figure(
            notes,
            "dynamics-eigenvalues",
            f"Eigenvalues of the one-step Jacobian at t = {t_jacobian} with the unit circle (first analysed board)",
            lambda: dynamics_plots.study_eigenvalue_figure(analysed),
        )
        figures += _figure(
            notes,
            "dynamics-energy",
            "Pseudo-energy and contribution index along the loop steps t (first analysed board)",
            lambda: dynamics_plots.study_energy_figure(analysed),
        )
    losses = {names[str(r.path)]: r.metrics["train_loss"] for r in runs if r.metrics.get("train_loss")}
    if losses:
        figures += _figure(
            notes, "dynamics-train-loss", "Training loss per epoch", lambda: dynamics_plots.train_loss_figure(losses)
        )
    curves = {}
    for r in runs:
        curve = _attempt(notes, f"{r.path} learning_curve", r.learning_curve)
        if curve:
            curves[names[str(r.path)]] = curve
    if curves:
        figures += _figure(
            notes,
            "dynamics-learning-curve",
            "Learning curves: board and blank-cell accuracy vs optimizer step (OOD dashed)",
            lambda: dynamics_plots.learning_curve_figure(curves),
        )
    else:
        notes.append("no run records a per-step learning curve (learning_curve in its metrics): loss per epoch only")
    return figures


def _dynamics_section(runs: Sequence[LoopedRun], studies: Sequence[Path]) -> Section:
    """Accuracy vs T, Lyapunov exponents vs accuracy, Jacobian eigenvalues, energies and learning curves."""
    sec = Section(
        "Dynamics",
        "Looped self-attention models on Sudoku: ID = easy test boards, OOD = hard test boards. Runs that share a "
        "recipe and differ only in the seed form one row (mean ± std over seeds); figures draw every run.",
    )
    held = [s for s in studies if any(r.study == s for r in runs)]
    if held:
        sec.intro += " Studies: " + "; ".join(_study_line(s, runs, sec.notes) for s in held) + "."
    groups = group_looped(runs)
    names = {str(r.path): name if len(rs) == 1 else f"{name} seed {r.seed}" for name, rs in groups.items() for r in rs}
    analyses = _analyses(runs, sec.notes)
    sec.tables = [dynamics_accuracy_table(groups), looped_training_table(groups)]
    if analyses:
        sec.tables.insert(1, lyapunov_table(groups, analyses))
    sec.figures = _dynamics_figures([r for rs in groups.values() for r in rs], names, analyses, sec.notes)
    return sec


def build_sections(found: Discovered, cfg: ReportConfig) -> list[Section]:
    """Compute every table and figure of the report for the runs found."""
    runs = found.finetune
    sections: list[Section] = []
    if runs:
        acc = Section("Accuracy", "Accuracy (%) per task and recipe; OOD and near-ID splits as evaluated by each run.")
        acc.tables = accuracy_tables(runs)
        norms = Section("Classifier norms", "Frobenius norm of the head V (bias excluded).")
        norms.tables = [head_norm_table(runs)]
        norms.figures = _head_norm_figures(runs, norms.notes)
        feats = Section("Feature change", "How far training moved φ from the pre-trained features.")
        feature_results = _feature_metrics(runs, feats.notes)
        if feature_results:
            feats.tables = [feature_table(runs, feature_results)]
        if cfg.tsne:
            feats.figures = _tsne_figures(runs, cfg, feats.notes)
        else:
            feats.notes.append("t-SNE disabled")
        cal = Section("Calibration", "Temperature T fitted on val by NLL; metrics on every other split.")
        calibration = _calibrations(runs, cfg, cal.notes)
        if calibration:
            cal.tables = [calibration_table(runs, calibration)]
            cal.figures = _reliability_figures(runs, calibration, cal.notes)
        sections += [acc, norms, feats, cal]
    if runs or found.ntk:
        ntk = Section("NTK", "Pre-train-effective (P), FT-effective (F) and total kernels at the start of training.")
        if found.ntk:
            ntk.tables = [ntk_table(found.ntk), ntk_run_table(found.ntk)]
            ntk.figures = _ntk_figures(found.ntk, ntk.notes)
        else:
            ntk.notes.append("no NTK run directories were given")
        sections.append(ntk)
    if found.looped:
        sections.append(_dynamics_section(found.looped, found.studies))
    for s in sections:
        if not s.tables and not s.figures and not s.notes:
            s.notes.append("nothing to show for the runs given")
    return sections


def build_report(
    paths: Iterable[str | Path], out: str | Path, config: ReportConfig | None = None, *, overwrite: bool = False
) -> ReportResult:
    """Write the report run (``runio.REPORT``): ``tables/*.md|csv``, ``config.json``, ``env.json``, and
    ``report.html`` last."""
    cfg = config or ReportConfig()
    paths = [Path(p) for p in paths]
    found = discover_runs(paths)
    out = REPORT.prepare(out, overwrite=overwrite)
    REPORT.path(out, "report").unlink(missing_ok=True)  # an overwritten report is unfinished until rewritten
    counts = f"{len(found.finetune)} fine-tuning run(s), {len(found.ntk)} NTK run(s)"
    if found.looped:
        counts += f", {len(found.looped)} looped-model run(s)"
    say(f"report: {counts}")
    sections = build_sections(found, cfg)
    if found.notes:
        sections[0].notes[:0] = found.notes
    tables: list[Table] = [t for s in sections for t in s.tables]
    for t in tables:
        write_text(REPORT.path(out, "tables") / f"{t.name}.md", t.to_markdown())
        write_text(REPORT.path(out, "tables") / f"{t.name}.csv", t.to_csv())
    meta = [counts, "Inputs: " + ", ".join(str(p) for p in paths)]
    record = {
        "inputs": [str(p) for p in paths],
        "runs": [str(r.path) for r in found.finetune],
        "ntk_runs": [str(r.path) for r in found.ntk],
        "looped_runs": [str(r.path) for r in found.looped],
        "studies": [str(p) for p in found.studies],
        "report": asdict(cfg),
    }
    REPORT.write_record(out, record, cfg.seed)
    html_path = REPORT.write(out, "report", render_page("dynascope report", sections, meta))
    return ReportResult(
        html_path=html_path,
        tables=[t.name for t in tables],
        figures=[f.name for s in sections for f in s.figures],
        notes=[n for s in sections for n in s.notes],
    )
