"""The head-norm scaling experiment: before the FT stage, set ‖V‖_F to s (b scaled by the same factor), train,
and measure how much the features move.

The paper's claim: feature change grows with the head norm's inverse — a large head lets the logits move while
the features stay put. One curve per recipe: FT and LoRA start from the random head, LP-FT and LP-LoRA from
the LP head, each rescaled to every s. Runs live in ``OUT/<method>/norm<s>/seed<seed>`` and are reused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dynascope.analysis.features import cosine_to_pre, feature_shift
from dynascope.experiments.compare import to_csv, to_markdown
from dynascope.progress import say
from dynascope.report.plots import scale_head_figure
from dynascope.report.tables import Stat
from dynascope.runio import COMPARISON, FINETUNE, ensure_dir
from dynascope.train.recipes import RunConfig, run

PAPER_NORMS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0, 100.0)


def _measure(run_dir: Path, split: str) -> dict[str, float]:
    features = FINETUNE.load(run_dir, "features")
    metrics = FINETUNE.load(run_dir, "metrics")
    pre, post = features[f"{split}.phi_pre"], features[f"{split}.phi_post"]
    group, _, name = split.partition(".")
    accuracy = metrics[group][name]["accuracy"] if name else metrics[split]["accuracy"]
    return {
        "diff": feature_shift(post, pre),
        "cosine": cosine_to_pre(post, pre),
        "accuracy": accuracy,
        "final_norm": metrics["head_norm"]["final"],
    }


def scale_head(
    base: RunConfig,
    methods: Sequence[str],
    norms: Sequence[float],
    seeds: Sequence[int],
    out: str | Path,
    *,
    split: str = "test",
    data_dir: str | Path | None = None,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Run the grid, then write ``scale_head.md``/``.csv`` and ``scale_head.png``; returns the table rows."""
    out = ensure_dir(out)
    rows = []
    for method in methods:
        for norm in norms:
            measured = []
            for seed in seeds:
                where = out / method / f"norm{norm:g}" / f"seed{seed}"
                if not FINETUNE.is_finished(where) or overwrite:
                    config = dataclasses.replace(base, method=method, seed=seed, head_norm=float(norm))
                    run(config, where, data_dir=data_dir, overwrite=overwrite)
                else:
                    say(f"{where}: finished, reused")
                measured.append(_measure(where, split))
            row: dict[str, Any] = {"method": method, "head norm s": norm, "seeds": len(seeds)}
            for key, label in (("diff", "Diff(F)"), ("cosine", "cos(φ, φ_pre)"), ("accuracy", f"{split} accuracy"),
                               ("final_norm", "‖V‖ final")):
                row[label] = Stat.of(m[key] for m in measured)
            rows.append(row)
    COMPARISON.write(out, "scale_head", to_markdown(rows))
    COMPARISON.write(out, "scale_head_csv", to_csv(rows))
    COMPARISON.write(out, "scale_head_figure", scale_head_figure(_diff_curves(rows), split))
    return rows


def _diff_curves(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[list[float], list[float], list[float | None]]]:
    """Per recipe: the head norms s, mean Diff(F) and its std over seeds (None for one seed)."""
    curves: dict[str, tuple[list[float], list[float], list[float | None]]] = {}
    for row in rows:
        norms, means, stds = curves.setdefault(row["method"], ([], [], []))
        norms.append(row["head norm s"])
        diff = row["Diff(F)"]
        means.append(diff.mean)
        stds.append(diff.std if diff.n > 1 else None)
    return curves
