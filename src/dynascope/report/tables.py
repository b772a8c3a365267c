"""Report tables: mean ± std over seeds, rendered as Markdown, CSV and HTML.

A ``Table`` holds key cells (strings) and number cells (``Stat`` = mean, std, n over seeds, or
``Change`` = a Stat before → after temperature scaling). The std is the sample standard deviation
(ddof = 1); with one seed only the mean is shown. Markdown/HTML show formatted strings; the CSV
has one column per mean and per std, in the units named in the header (percent where it says %).
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dynascope.report.runs import FinetuneRun, LoopedRun, NtkRun, split_order
from dynascope.train.recipes import METHODS


@dataclass(frozen=True)
class Stat:
    """Mean, sample std and count of the finite values among a group of seeds."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Iterable[Any]) -> Stat | None:
        """Stat of the finite numbers in ``values`` (None and NaN are skipped); None if there are none."""
        xs = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        xs = [x for x in xs if math.isfinite(x)]
        if not xs:
            return None
        return cls(float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0, len(xs))


@dataclass(frozen=True)
class Change:
    """A metric before and after temperature scaling."""

    before: Stat | None
    after: Stat | None


Cell = str | Stat | Change | None
Formatter = Callable[[float], str]


def pct(x: float) -> str:
    """A fraction shown as a percentage with two decimals."""
    return f"{100 * x:.2f}"


def sig3(x: float) -> str:
    """Three significant digits (whole numbers in [100, 1e4)), scientific notation outside [1e-3, 1e4)."""
    if x == 0:
        return "0"
    if 100 <= abs(x) < 1e4:
        return f"{x:.0f}"
    if 1e-3 <= abs(x) < 100:
        return f"{x:.3g}"
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _scale(fmt: Formatter) -> float:
    return 100.0 if fmt is pct else 1.0


def _show_stat(s: Stat | None, fmt: Formatter) -> str:
    if s is None:
        return "–"
    return fmt(s.mean) if s.n == 1 else f"{fmt(s.mean)} ± {fmt(s.std)}"


def _show(cell: Cell, fmt: Formatter) -> str:
    if cell is None:
        return "–"
    if isinstance(cell, Stat):
        return _show_stat(cell, fmt)
    if isinstance(cell, Change):
        return f"{_show_stat(cell.before, fmt)} → {_show_stat(cell.after, fmt)}"
    return str(cell)


@dataclass
class Table:
    """One report table; ``name`` is its file stem (``tables/NAME.md|csv``) and HTML id (``table-NAME``)."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    formats: dict[str, Formatter] = field(default_factory=dict)
    note: str = ""

    def _fmt(self, column: str) -> Formatter:
        return self.formats.get(column, sig3)

    def display_rows(self) -> list[list[str]]:
        """Every cell as the string shown in Markdown and HTML."""
        return [[_show(c, self._fmt(col)) for c, col in zip(row, self.columns, strict=True)] for row in self.rows]

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table with its title and note."""
        esc = lambda s: s.replace("|", "\\|")  # noqa: E731
        lines = [f"### {self.title}", "", "| " + " | ".join(map(esc, self.columns)) + " |"]
        lines.append("|" + "---|" * len(self.columns))
        lines += ["| " + " | ".join(map(esc, r)) + " |" for r in self.display_rows()]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"

    def _csv_kind(self, j: int) -> type:
        for row in self.rows:
            if row[j] is not None:
                return type(row[j])
        return str

    def to_csv(self) -> str:
        """CSV with numbers split into mean/std columns (before/after for changes) and a count column."""
        header: list[str] = []
        kinds = [self._csv_kind(j) for j in range(len(self.columns))]
        for col, kind in zip(self.columns, kinds, strict=True):
            if kind is Stat:
                header += [f"{col} mean", f"{col} std", f"{col} n"]
            elif kind is Change:
                header += [f"{col} before mean", f"{col} before std", f"{col} after mean", f"{col} after std"]
            else:
                header.append(col)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        for row in self.rows:
            out: list[Any] = []
            for cell, col, kind in zip(row, self.columns, kinds, strict=True):
                k = _scale(self._fmt(col))
                if kind is Stat:
                    out += ["", "", ""] if not isinstance(cell, Stat) else [cell.mean * k, cell.std * k, cell.n]
                elif kind is Change:
                    for s in (cell.before, cell.after) if isinstance(cell, Change) else (None, None):
                        out += ["", ""] if s is None else [s.mean * k, s.std * k]
                else:
                    out.append("" if cell is None else str(cell))
            writer.writerow(out)
        return buf.getvalue()

    def to_html(self) -> str:
        """An HTML table with ``id="table-NAME"``, a caption and the note below."""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.display_rows())
        note = f'<p class="note">{html.escape(self.note)}</p>' if self.note else ""
        return (
            f'<table id="table-{html.escape(self.name)}"><caption>{html.escape(self.title)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"
        )


def _method_rank(method: str) -> tuple[int, str]:
    return (METHODS.index(method) if method in METHODS else len(METHODS), method)


def group_runs(runs: Sequence[FinetuneRun]) -> dict[tuple[str, str], list[FinetuneRun]]:
    """Runs grouped by (task, method): tasks alphabetical, methods in the paper's order, seeds sorted."""
    groups: dict[tuple[str, str], list[FinetuneRun]] = {}
    for run in runs:
        groups.setdefault((run.task, run.method), []).append(run)
    ordered = sorted(groups, key=lambda k: (k[0], _method_rank(k[1])))
    return {k: sorted(groups[k], key=lambda r: (r.seed is None, r.seed or 0, str(r.path))) for k in ordered}


def _split_metric(metrics: dict[str, Any], key: str, metric: str) -> Any:
    group, _, name = key.partition(".")
    node = metrics.get(group, {})
    if name:
        node = node.get(name, {}) if isinstance(node, dict) else {}
    return node.get(metric) if isinstance(node, dict) else None


def _metric_splits(runs: Sequence[FinetuneRun]) -> list[str]:
    keys: set[str] = set()
    for run in runs:
        for group in ("val", "test"):
            if isinstance(run.metrics.get(group), dict):
                keys.add(group)
        for group in ("near_id", "ood"):
            keys.update(f"{group}.{name}" for name in (run.metrics.get(group) or {}))
    return split_order(keys)


def accuracy_tables(runs: Sequence[FinetuneRun]) -> list[Table]:
    """Per task: accuracy (%) on val, test, near-ID and OOD splits per method; extra test metrics if logged."""
    tables = []
    groups = group_runs(runs)
    for task in sorted({t for t, _ in groups}):
        task_runs = [r for (t, _), rs in groups.items() if t == task for r in rs]
        splits = _metric_splits(task_runs)
        extras = [
            m
            for m in ("mcc", "macro_f1", "f1")
            if any(_split_metric(r.metrics, "test", m) is not None for r in task_runs)
        ]
        columns = ["method", "seeds", "learned"] + [f"{s} acc (%)" for s in splits]
        columns += [f"test {m} (%)" for m in extras]
        table = Table(
            f"accuracy_{_slug(task)}",
            f"Accuracy on {task} (mean ± std over seeds)",
            columns,
            note="learned: seeds whose validation accuracy beat the majority-class baseline by the run's recorded "
            "margin (– for runs that predate the flag).",
        )
        table.formats = {c: pct for c in columns[3:]}
        for (t, method), rs in groups.items():
            if t != task:
                continue
            flags = [r.metrics.get("learned") for r in rs]
            learned = "–" if None in flags else f"{sum(flags)}/{len(flags)}"
            row: list[Cell] = [method, str(len(rs)), learned]
            row += [Stat.of(_split_metric(r.metrics, s, "accuracy") for r in rs) for s in splits]
            row += [Stat.of(_split_metric(r.metrics, "test", m) for r in rs) for m in extras]
            table.rows.append(row)
        tables.append(table)
    return tables


def head_norm_table(runs: Sequence[FinetuneRun]) -> Table:
    """‖V‖_F at initialisation, after LP and at the end, per (task, method)."""
    table = Table(
        "head_norms",
        "Classifier norm ‖V‖_F (mean ± std over seeds)",
        ["task", "method", "seeds", "init", "after LP", "final"],
        note="after LP is empty for recipes without an LP stage.",
    )
    for (task, method), rs in group_runs(runs).items():
        norms = [r.metrics.get("head_norm") or {} for r in rs]
        table.rows.append(
            [task, method, str(len(rs)), *(Stat.of(n.get(k) for n in norms) for k in ("init", "after_lp", "final"))]
        )
    return table


def feature_table(runs: Sequence[FinetuneRun], features: dict[str, dict[str, Any]]) -> Table:
    """Diff, cosine to pre, CS and FDR per split, from per-run results keyed by run path."""
    columns = ["task", "method", "split", "seeds", "Diff(F)", "cos to pre", "CS pre", "CS post", "FDR pre", "FDR post"]
    table = Table(
        "feature_change",
        "Feature change per split (mean ± std over seeds)",
        columns,
        note=(
            "Diff = mean ‖φ_post − φ_pre‖₂; cos to pre = mean cos(φ_post(x), φ_pre(x)); CS = mean pairwise cosine "
            "over pairs i ≠ j; FDR = tr(S_W⁺ S_B), scatters divided by N, pseudo-inverse with rcond 1e-10."
        ),
    )
    for (task, method), rs in group_runs(runs).items():
        per_run = [features[str(r.path)]["splits"] for r in rs if str(r.path) in features]
        if not per_run:
            continue
        for split in split_order({s for p in per_run for s in p}):
            vals = [p[split] for p in per_run if split in p]
            keys = ("diff", "cosine_to_pre", "cs_pre", "cs_post", "fdr_pre", "fdr_post")
            table.rows.append([task, method, split, str(len(vals)), *(Stat.of(v.get(k) for v in vals) for k in keys)])
    return table


def calibration_table(runs: Sequence[FinetuneRun], calibration: dict[str, dict[str, Any]]) -> Table:
    """ECE, MCE, adaptive ECE (%), Brier and NLL before → after temperature scaling, per split."""
    metrics = [("ECE (%)", "ece", pct), ("MCE (%)", "mce", pct), ("adaptive ECE (%)", "adaptive_ece", pct)]
    metrics += [("Brier", "brier", sig3), ("Brier (paper)", "brier_paper", sig3), ("NLL", "nll", sig3)]
    columns = ["task", "method", "split", "seeds", "T", *(m[0] for m in metrics)]
    bins = sorted({int(c["binning"]["n_bins"]) for c in calibration.values()})
    table = Table(
        "calibration",
        "Calibration without → with temperature scaling (T fitted on val)",
        columns,
        formats={name: fmt for name, _, fmt in metrics},
        note=(
            f"ECE/MCE: {', '.join(map(str, bins)) or '15'} equal-width bins, lower < conf ≤ upper; adaptive ECE: "
            "equal-mass bins; Brier = Σ_c (p_c − y_c)² per example; Brier (paper) = that / C."
        ),
    )
    for (task, method), rs in group_runs(runs).items():
        per_run = [calibration[str(r.path)] for r in rs if str(r.path) in calibration]
        if not per_run:
            continue
        temperature = Stat.of(c["temperature"] for c in per_run)
        for split in split_order({s for c in per_run for s in c["splits"]}):
            vals = [c["splits"][split] for c in per_run if split in c["splits"]]
            row: list[Cell] = [task, method, split, str(len(vals)), temperature]
            for _, key, _ in metrics:
                row.append(Change(Stat.of(v["before"][key] for v in vals), Stat.of(v["after"][key] for v in vals)))
            table.rows.append(row)
    return table


def _scalars(d: Any) -> dict[str, Any]:
    """Scalar entries of a dict; entries of nested dicts one level down appear as ``outer.inner``."""
    if not isinstance(d, dict):
        return {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, int | float | str | bool) or v is None:
            out[k] = v
        elif isinstance(v, dict):
            out.update({f"{k}.{ik}": iv for ik, iv in v.items() if isinstance(iv, int | float | str | bool)})
    return out


NTK_KERNELS = ("pre", "ft", "total")
NTK_FIRST = ("rank", "frobenius", "paper_row_acc_train", "paper_row_acc_test", "ft_ratio")


def _ordered_keys(parts: Iterable[dict[str, Any]], first: Sequence[str], skip: Sequence[str] = ()) -> list[str]:
    """Union of keys, ``first`` (those present) leading, the rest in order of appearance."""
    seen: list[str] = []
    for part in parts:
        seen += [k for k in part if k not in seen and k not in skip]
    return [k for k in first if k in seen] + [k for k in seen if k not in first]


def _stat_cell(v: Any) -> Cell:
    """A recorded scalar: floats as numbers, integers and strings verbatim."""
    if isinstance(v, float):
        return Stat.of([v])
    return None if v is None else str(v)


def _ntk_formats(columns: Sequence[str]) -> dict[str, Formatter]:
    return {c: pct for c in columns if c.endswith(("_acc_train", "_acc_test"))}


def ntk_table(runs: Sequence[NtkRun]) -> Table:
    """Table-2-style kernel statistics: one row per (run, kernel) with every scalar recorded for that kernel."""
    ordered = sorted(runs, key=lambda r: (r.task, r.state, str(r.path)))
    per_kernel = [(r, k, _scalars(r.stats.get(k))) for r in ordered for k in NTK_KERNELS if k in r.stats]
    keys = _ordered_keys((v for _, _, v in per_kernel), NTK_FIRST)
    table = Table(
        "ntk_stats",
        "NTK statistics (pre-train-effective P, FT-effective F, total = P + F)",
        ["task", "state", "kernel", *keys],
        note="Accuracy columns in %; paper_row_acc is the paper's row-wise binary accuracy over (example, class) rows.",
    )
    table.formats = _ntk_formats(table.columns)
    for run, kernel, values in per_kernel:
        table.rows.append([run.task, run.state, kernel, *(_stat_cell(values.get(k)) for k in keys)])
    return table


def ntk_run_table(runs: Sequence[NtkRun]) -> Table:
    """Quantities of each NTK run as a whole (FT ratio, trace estimates, sizes), one row per run."""
    ordered = sorted(runs, key=lambda r: (r.task, r.state, str(r.path)))
    per_run = [_scalars({k: v for k, v in r.stats.items() if k not in NTK_KERNELS}) for r in ordered]
    keys = _ordered_keys(per_run, ("ft_ratio", "ft_share_of_trace", "n_train", "n_eval"), ("kind", "task", "state"))
    table = Table("ntk_runs", "NTK runs: whole-run quantities", ["task", "state", *keys])
    table.formats = _ntk_formats(table.columns)
    for run, values in zip(ordered, per_run, strict=True):
        table.rows.append([run.task, run.state, *(_stat_cell(values.get(k)) for k in keys)])
    return table


LOOPED_SPLITS = (("id", "ID"), ("ood", "OOD"))
LOOPED_ACCURACIES = (("board_accuracy", "board"), ("cell_accuracy", "blank cell"))


def _recipe_name(run: LoopedRun) -> str:
    """``model + norm`` (``+ regularizer λ``) of a looped run, for runs that carry no study name."""
    model, train = run.model, run.train
    name = f"{model.get('model', 'unknown')} + {model.get('norm', '?')}"
    reg = train.get("regularizer", "none")
    return name if reg == "none" else f"{name} + {reg} {float(train.get('reg_weight', 0.0)):g}"


def group_looped(runs: Sequence[LoopedRun]) -> dict[str, list[LoopedRun]]:
    """Looped runs grouped by study run name (config ``run``, if any) and recipe (everything but the seed), seeds
    sorted, groups in discovery order.

    A group is named by its study run name; a standalone run alone in its group by its directory, several seeds by
    model, norm and regularizer; names that repeat get ``#1``, ``#2``, ....
    """
    by_key: dict[tuple[str | None, str], list[LoopedRun]] = {}
    for run in runs:
        by_key.setdefault((run.study_name, run.recipe), []).append(run)
    named = []
    for (study_name, _), rs in by_key.items():
        name = study_name or (rs[0].path.name if len(rs) == 1 else _recipe_name(rs[0]))
        named.append((name, sorted(rs, key=lambda r: (r.seed is None, r.seed or 0, str(r.path)))))
    counts = Counter(name for name, _ in named)
    index: Counter[str] = Counter()
    out = {}
    for name, rs in named:
        index[name] += 1
        out[name if counts[name] == 1 else f"{name} #{index[name]}"] = rs
    return out


def _distinct(values: Iterable[Any]) -> str:
    """The different values, in order, joined by ``/`` (one value when every seed agrees)."""
    shown = ({None: "n/a", True: "yes", False: "no"}.get(v, v) if isinstance(v, bool | None) else v for v in values)
    return "/".join(dict.fromkeys(map(str, shown))) or "–"


def dynamics_accuracy_table(groups: dict[str, list[LoopedRun]]) -> Table:
    """Board and blank-cell accuracy (%) at every evaluated loop count T, ID and OOD, per recipe."""
    ts = sorted(
        {
            t
            for rs in groups.values()
            for r in rs
            for k, _ in LOOPED_ACCURACIES
            for s, _ in LOOPED_SPLITS
            for t in r.accuracy(k, s)
        }
    )
    columns = ["run", "seeds", "test set", "accuracy", *(f"T={t} (%)" for t in ts)]
    table = Table(
        "dynamics_accuracy",
        "Looped models: accuracy vs loop steps T (mean ± std over seeds)",
        columns,
        formats={c: pct for c in columns[4:]},
        note="board: every blank of a board right; blank cell: share of blank cells right (chance 1/9); EMA "
        "weights, one trajectory per board read out at every T.",
    )
    for name, rs in groups.items():
        for split, split_name in LOOPED_SPLITS:
            for kind, what in LOOPED_ACCURACIES:
                by_t = [r.accuracy(kind, split) for r in rs]
                table.rows.append(
                    [name, str(len(rs)), split_name, what, *(Stat.of(a.get(t) for a in by_t) for t in ts)]
                )
    return table


def lyapunov_table(groups: dict[str, list[LoopedRun]], analyses: dict[str, dict[str, Any]]) -> Table:
    """λ_max and λ_mean beside the accuracy at the training T, per recipe, over the analysed seeds."""
    accuracy_columns = [(f"{s} {what} (%)", k, split) for split, s in LOOPED_SPLITS for k, what in LOOPED_ACCURACIES]
    columns = ["run", "seeds analysed", "λ_max", "λ_mean", "λ_mean over", "route", "‖J‖₂", "max |eigenvalue|"]
    columns += ["Prop. 5.1 bound holds", "T train", *(c for c, _, _ in accuracy_columns)]
    table = Table(
        "dynamics_lyapunov",
        "Lyapunov exponents vs accuracy at the training T (mean ± std over analysed seeds)",
        columns,
        formats={c: pct for c, _, _ in accuracy_columns},
        note="λ over the analysed boards (analysis.json summary); λ_mean is the mean over the M exponents ('λ_mean "
        "over', of n = 81·D) that are not the normalization's exact null directions; route = how the exponents "
        "were computed and over how many steps; ‖J‖₂ and eigenvalues of the one-step Jacobian.",
    )
    for name, rs in groups.items():
        done = [(r, analyses[str(r.path)]) for r in rs if str(r.path) in analyses]
        if not done:
            continue
        summaries = [a["summary"] for _, a in done]
        first = [a["boards"][0] for _, a in done]
        row: list[Cell] = [name, str(len(done))]
        row += [Stat.of(s.get(k) for s in summaries) for k in ("lyapunov_max", "lyapunov_mean")]
        row.append(_distinct(f"{b['lyapunov'].get('mean_over')} of {b.get('n')}" for b in first))
        row.append(_distinct(f"{b['lyapunov'].get('method')}, T={b['lyapunov'].get('T')}" for b in first))
        row += [Stat.of(s.get(k) for s in summaries) for k in ("spectral_norm", "max_abs_eigenvalue")]
        row += [
            _distinct(s.get("bound_holds") for s in summaries),
            _distinct(r.train.get("loop_steps") for r, _ in done),
        ]
        row += [Stat.of(r.at_training_t(k, split) for r, _ in done) for _, k, split in accuracy_columns]
        table.rows.append(row)
    return table


def looped_training_table(groups: dict[str, list[LoopedRun]]) -> Table:
    """Recipe and training record of every looped-model group: size, steps, final loss, time, learned scalars."""
    columns = ["run", "seeds", "model", "norm", "regularizer", "D", "H", "T train", "epochs", "optimizer steps"]
    columns += ["final train loss", "skipped steps", "train s", "η", "max |γ|"]
    table = Table(
        "dynamics_training",
        "Looped models: recipe and training (mean ± std over seeds)",
        columns,
        note="skipped steps: optimizer steps with a non-finite loss; train s: summed epoch times; η and max |γ| of "
        "the EMA weights.",
    )
    for name, rs in groups.items():
        first = rs[0]
        reg = first.train.get("regularizer", "none")
        reg_text = reg if reg == "none" else f"{reg} (λ = {float(first.train.get('reg_weight', 0.0)):g})"
        ms = [r.metrics for r in rs]
        row: list[Cell] = [name, str(len(rs)), str(first.model.get("model", "–")), str(first.model.get("norm", "–"))]
        row += [reg_text, *(_distinct(r.model.get(k) for r in rs) for k in ("width", "heads"))]
        row += [_distinct(r.train.get(k) for r in rs) for k in ("loop_steps", "epochs")]
        row += [_distinct(m.get("optimizer_steps") for m in ms)]
        row += [Stat.of((m.get("train_loss") or [None])[-1] for m in ms)]
        row += [_distinct(m.get("skipped_nonfinite_steps") for m in ms)]
        row += [Stat.of(sum(m["epoch_seconds"]) if m.get("epoch_seconds") else None for m in ms)]
        row += [Stat.of(m.get(k) for m in ms) for k in ("eta", "gamma_max")]
        table.rows.append(row)
    return table


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text) or "unnamed"
