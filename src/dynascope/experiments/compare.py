"""``compare``: several recipes × seeds on one task, then one table of mean ± std over seeds.

Each run lives in ``OUT/<method>/seed<seed>``; finished runs are reused, so an interrupted comparison resumes.
The table goes to ``summary.csv`` and ``summary.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dynascope.data.task import METRICS
from dynascope.errors import ConfigError
from dynascope.progress import say
from dynascope.report.tables import Stat
from dynascope.runio import COMPARISON, FINETUNE, ensure_dir
from dynascope.train.recipes import AUTO_LR, RunConfig, choose_lr, run


def run_dir_for(out: Path, method: str, seed: int) -> Path:
    """Where ``compare`` puts one run."""
    return out / method / f"seed{seed}"


def compare(
    base: RunConfig,
    methods: Sequence[str],
    seeds: Sequence[int],
    out: str | Path,
    *,
    data_dir: str | Path | None = None,
    overwrite: bool = False,
    lr_grids: Mapping[str, tuple[float, ...]] | None = None,
) -> list[dict[str, Any]]:
    """Run every (method, seed) not yet finished, then summarise; returns the summary rows.

    A method whose learning rate is ``"auto"`` is searched once, on the first seed, under
    ``out/lr-grid/<method>`` (finished grid points are reused) over ``lr_grids[method]`` when given, else
    ``base.lr_grid`` or the method's default grid; every seed then trains with the chosen rate.
    """
    out = ensure_dir(out)
    metrics = []
    for method in methods:
        grid = (lr_grids or {}).get(method, base.lr_grid)
        method_base = dataclasses.replace(base, method=method, lr_grid=grid)
        first = dataclasses.replace(method_base, seed=seeds[0]).resolved()
        choice = None
        for seed in seeds:
            where = run_dir_for(out, method, seed)
            config = dataclasses.replace(method_base, seed=seed)
            if FINETUNE.is_finished(where) and not overwrite:
                _check_reusable(where, config)
                say(f"{where}: finished, reused")
                metrics.append(FINETUNE.load(where, "metrics"))
                continue
            if first.lr == AUTO_LR and choice is None:
                grid_root = FINETUNE.path(out, "lr_grid") / method
                choice = choose_lr(first, grid_root, data_dir=data_dir, overwrite=overwrite)
                say(f"{method}: lr {choice.chosen:g} chosen by validation {choice.metric} ({choice.scores})")
            metrics.append(run(config, where, data_dir=data_dir, overwrite=overwrite, lr_choice=choice))
    rows = summarize(metrics)
    COMPARISON.write(out, "summary_csv", to_csv(rows))
    COMPARISON.write(out, "summary", to_markdown(rows))
    return rows


def _check_reusable(where: Path, wanted: RunConfig) -> None:
    """Refuse to reuse a finished run whose config differs from ``wanted`` (an ``"auto"`` lr matches any chosen)."""
    saved = RunConfig.from_dict(FINETUNE.load(where, "config"))
    wanted = wanted.resolved()
    if wanted.lr == AUTO_LR:
        saved = dataclasses.replace(saved, lr=AUTO_LR)
    if saved != wanted:
        changed = sorted(k for k, v in wanted.to_dict().items() if saved.to_dict().get(k) != v)
        raise ConfigError(
            f"{where} holds a finished run of another config (differs in {', '.join(changed)}); "
            "use another --out or --overwrite"
        )


def _columns(metrics: dict[str, Any]) -> dict[str, float | None]:
    """Flat numeric columns of one run: split metrics, OOD / near-ID metrics and head norms."""
    cols: dict[str, float | None] = {}
    for split in ("val", "test"):
        for name, value in metrics[split].items():
            if name != "n":
                cols[f"{split} {name}"] = value
    for group, label in (("ood", "OOD"), ("near_id", "near-ID")):
        for set_name, values in metrics.get(group, {}).items():
            cols[f"{label} {set_name} accuracy"] = values["accuracy"]
    norms = metrics["head_norm"]
    cols["‖V‖ init"] = norms["init"]
    cols["‖V‖ after LP"] = norms["after_lp"]
    cols["‖V‖ final"] = norms["final"]
    return cols


def summarize(all_metrics: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, method): every column as a ``Stat`` (mean, sample std, count) over seeds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for m in all_metrics:
        groups.setdefault((m["task"], m["method"]), []).append(m)
    rows = []
    for (task, method), runs in groups.items():
        per_run = [_columns(m) for m in runs]
        names = list(dict.fromkeys(k for cols in per_run for k in cols))
        row: dict[str, Any] = {"task": task, "method": method, "seeds": len(runs)}
        for name in names:
            row[name] = Stat.of(cols.get(name) for cols in per_run)
        rows.append(row)
    return rows


def _header(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for row in rows for k in row))


def _fmt(name: str, value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, Stat):
        percent = "accuracy" in name or name.split()[-1] in METRICS
        shown = f"{100 * value.mean:.2f}" if percent else f"{value.mean:.3g}"
        if value.n < 2:
            return shown
        return f"{shown} ± {100 * value.std:.2f}" if percent else f"{shown} ± {value.std:.2g}"
    return str(value)


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a markdown table (metrics in %, norms as plain numbers)."""
    header = _header(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(h, row.get(h)) for h in header) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as CSV with separate ``mean`` and ``std`` columns."""
    header = _header(rows)
    flat = []
    for h in header:
        flat.extend([f"{h} mean", f"{h} std"] if any(isinstance(r.get(h), Stat) for r in rows) else [h])
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(flat)
    for row in rows:
        cells: list[Any] = []
        for h in header:
            value = row.get(h)
            if any(isinstance(r.get(h), Stat) for r in rows):
                if isinstance(value, Stat):
                    cells.extend([value.mean, value.std if value.n > 1 else ""])
                else:
                    cells.extend(["", ""])
            else:
                cells.append(value)
        writer.writerow(cells)
    return buf.getvalue()
