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

import numpy as np

from dynascope.analysis.features import cosine_to_pre, feature_shift
from dynascope.experiments.compare import to_csv, to_markdown
from dynascope.progress import say
from dynascope.runio import read_json, write_bytes, write_text
from dynascope.train.recipes import RunConfig, run

PAPER_NORMS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0, 100.0)


def _measure(run_dir: Path, split: str) -> dict[str, float]:
    features = np.load(run_dir / "features.npz")
    metrics = read_json(run_dir / "metrics.json")
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
    out = Path(out)
    rows = []
    for method in methods:
        for norm in norms:
            measured = []
            for seed in seeds:
                where = out / method / f"norm{norm:g}" / f"seed{seed}"
                if not (where / "metrics.json").exists() or overwrite:
                    config = dataclasses.replace(base, method=method, seed=seed, head_norm=float(norm))
                    run(config, where, data_dir=data_dir, overwrite=overwrite)
                else:
                    say(f"{where}: finished, reused")
                measured.append(_measure(where, split))
            row: dict[str, Any] = {"method": method, "head norm s": norm, "seeds": len(seeds)}
            for key, label in (("diff", "Diff(F)"), ("cosine", "cos(φ, φ_pre)"), ("accuracy", f"{split} accuracy"),
                               ("final_norm", "‖V‖ final")):
                values = [m[key] for m in measured]
                row[label] = (float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None)
            rows.append(row)
    write_text(out / "scale_head.md", to_markdown(rows))
    write_text(out / "scale_head.csv", to_csv(rows))
    write_bytes(out / "scale_head.png", curve_figure(rows, split))
    return rows


def curve_figure(rows: Sequence[dict[str, Any]], split: str) -> bytes:
    """Feature change Diff(F) against the head norm s, one line (mean ± std over seeds) per recipe."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        s = np.array([r["head norm s"] for r in mine])
        mean = np.array([r["Diff(F)"][0] for r in mine])
        std = np.array([r["Diff(F)"][1] or 0.0 for r in mine])
        ax.plot(s, mean, marker="o", label=method)
        ax.fill_between(s, mean - std, mean + std, alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("head norm ‖V‖_F before the FT stage")
    ax.set_ylabel(f"Diff(F) on {split}")
    ax.set_title("Feature change vs head norm")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
