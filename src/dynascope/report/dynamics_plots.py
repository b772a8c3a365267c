"""Figures of the looped-attention half, as PNG bytes (the convention of :mod:`dynascope.report.plots`).

Per run: eigenvalues of the one-step Jacobian, energy / alignment / contribution-index traces, board
accuracy vs T. Per study (and in the report): accuracy vs T of every run (board and blank-cell, ID and OOD), one
eigenvalue panel per run, the pseudo-energy and contribution index of every run; in the report also accuracy
against the Lyapunov exponents, the training loss per epoch and the per-step learning curves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dynascope.report.plots import figure_png, subplots_row

_THETA = np.linspace(0, 2 * np.pi, 400)


def _unit_circle(ax: Any, label: str | None = None) -> None:
    ax.plot(np.cos(_THETA), np.sin(_THETA), "k--", lw=0.8, label=label)
    ax.set_aspect("equal")


def _accuracy_lines(ax: Any, lines: Mapping[str, Mapping[Any, float]], ylabel: str) -> None:
    """One line per entry: accuracy (fractions, keys T as int or str) vs T on a log2 axis, in %."""
    for name, by_t in lines.items():
        points = sorted((int(t), 100 * v) for t, v in by_t.items())
        ax.plot([t for t, _ in points], [v for _, v in points], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("loop steps T")
    ax.set_ylabel(ylabel)


def eigenvalue_figure(boards: Sequence[dict[str, Any]], title: str) -> bytes:
    """Eigenvalues of the one-step Jacobian of each analysed board in the complex plane, with the unit circle."""
    fig, (ax,) = subplots_row(1, 4.5, 4.5)
    _unit_circle(ax, "unit circle")
    for i, b in enumerate(boards):
        ax.scatter(b["eigenvalues"]["real"], b["eigenvalues"]["imag"], s=4, alpha=0.5, label=f"board {i}")
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7)
    return figure_png(fig)


def trace_figure(boards: Sequence[dict[str, Any]], title: str) -> bytes:
    """Pseudo-energy, cos(MSA(X), J_MSA X) and contribution index along the loop, per analysed board."""
    fig, axes = subplots_row(3, 4.0, 3.5)
    for i, b in enumerate(boards):
        axes[0].plot(b["pseudo_energy"], label=f"board {i}")
        axes[1].plot(b["cos_msa_jx"])
        ci = b["contribution_index"]
        axes[2].plot([int(t) for t in ci], list(ci.values()), marker="o")
    for ax, name in zip(axes, ("pseudo-energy", "cos(MSA(X), J X)", "contribution index (top 2%)"), strict=True):
        ax.set_xlabel("loop step t")
        ax.set_title(name)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    return figure_png(fig)


def accuracy_figure(accuracy: Mapping[str, Mapping[Any, float]], title: str) -> bytes:
    """Board accuracy vs loop count T, one line per test set (ID / OOD)."""
    fig, (ax,) = subplots_row(1, 4.5, 3.5)
    _accuracy_lines(ax, accuracy, "board accuracy (%)")
    ax.set_title(title)
    ax.legend()
    return figure_png(fig)


def study_accuracy_figure(rows: Sequence[dict[str, Any]]) -> bytes:
    """Accuracy vs T of every run of a study: board and blank-cell rows, ID and OOD columns."""
    fig = Figure(figsize=(10, 8), layout="constrained")
    axes = fig.subplots(2, 2)
    for i, (kind, what) in enumerate((("board_accuracy", "board"), ("cell_accuracy", "blank-cell"))):
        for ax, split in zip(axes[i], ("id", "ood"), strict=True):
            _accuracy_lines(ax, {row["name"]: row["metrics"][kind][split] for row in rows}, f"{what} accuracy (%)")
            ax.set_title(f"{split.upper()}: {what} accuracy")
    axes[0, 1].legend(fontsize=7)
    return figure_png(fig)


def study_eigenvalue_figure(rows: Sequence[dict[str, Any]]) -> bytes:
    """One panel per run: eigenvalues of the one-step Jacobian of its first analysed board."""
    cols = min(3, len(rows))
    nrows = (len(rows) + cols - 1) // cols
    fig = Figure(figsize=(4 * cols, 4 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols)).ravel()
    for ax, row in zip(axes, rows, strict=False):
        eig = row["analysis"]["boards"][0]["eigenvalues"]
        _unit_circle(ax)
        ax.scatter(eig["real"], eig["imag"], s=3, alpha=0.5)
        ax.set_title(row["name"], fontsize=9)
    for ax in axes[len(rows) :]:
        ax.axis("off")
    return figure_png(fig)


def study_energy_figure(rows: Sequence[dict[str, Any]]) -> bytes:
    """Pseudo-energy and contribution index along the loop of every run's first analysed board."""
    fig, axes = subplots_row(2, 5.0, 4.0)
    for row in rows:
        b = row["analysis"]["boards"][0]
        axes[0].plot(b["pseudo_energy"], label=row["name"])
        ci = b["contribution_index"]
        axes[1].plot([int(t) for t in ci], list(ci.values()), marker="o", label=row["name"])
    axes[0].set_title("pseudo-energy −⟨X, C + MSA(X)⟩")
    axes[1].set_title("contribution index (top 2 % of J_MSA + J_MSAᵀ)")
    for ax in axes:
        ax.set_xlabel("loop step t")
    axes[0].legend(fontsize=7)
    return figure_png(fig)


def lyapunov_accuracy_figure(points: Sequence[dict[str, Any]]) -> bytes:
    """Accuracy against λ_max and λ_mean, one colour per run (circle: ID, square: OOD), board and blank-cell rows.

    Each point is ``{"name", "max", "mean", "board_accuracy": {"id", "ood"}, "cell_accuracy": {"id", "ood"}}``
    (fractions; a missing or non-finite value is left out).
    """
    fig = Figure(figsize=(9, 7), layout="constrained")
    axes = fig.subplots(2, 2)
    for i, point in enumerate(points):
        for row, kind in enumerate(("board_accuracy", "cell_accuracy")):
            for col, exponent in enumerate(("max", "mean")):
                for split, marker in (("id", "o"), ("ood", "s")):
                    x, y = point[exponent], point[kind].get(split)
                    if x is None or y is None or not np.isfinite(x):
                        continue
                    label = f"{point['name']} ({split.upper()})" if row == col == 0 else None
                    axes[row, col].scatter([x], [100 * y], color=f"C{i % 10}", marker=marker, s=30, label=label)
    for row, what in enumerate(("board", "blank-cell")):
        for col, exponent in enumerate(("λ_max", "λ_mean")):
            axes[row, col].axvline(0.0, color="black", linewidth=0.6, linestyle=":")
            axes[row, col].set(xlabel=exponent, ylabel=f"{what} accuracy (%)")
    if any(ax.get_legend_handles_labels()[0] for ax in axes.ravel()):
        axes[0, 0].legend(fontsize=6)
    fig.suptitle("Accuracy at the training T vs Lyapunov exponents", fontsize=10)
    return figure_png(fig)


def train_loss_figure(losses: Mapping[str, Sequence[float]]) -> bytes:
    """Training cross-entropy per epoch, one line per run (log scale when it spans more than a factor 10)."""
    fig, (ax,) = subplots_row(1, 5.5, 3.6)
    for name, curve in losses.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, marker="o", markersize=2, label=name)
    values = np.array([v for c in losses.values() for v in c], dtype=float)
    values = values[np.isfinite(values)]
    if values.size and values.min() > 0 and values.max() > 10 * values.min():
        ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="train loss (cross-entropy)", title="Training loss per epoch")
    ax.legend(fontsize=7)
    return figure_png(fig)


def learning_curve_figure(curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]]) -> bytes:
    """Accuracy vs optimizer step per run: series whose name holds ``cell`` in the blank-cell panel, the others in
    the board panel (OOD series dashed); ``curves`` is ``{run: {series: (steps, accuracies as fractions)}}``."""
    fig, axes = subplots_row(2, 5.0, 3.6)
    for i, (name, series) in enumerate(curves.items()):
        for key, (steps, values) in series.items():
            ax = axes[1] if "cell" in key else axes[0]
            style = "--" if "ood" in key else "-"
            ax.plot(steps, 100 * np.asarray(values, dtype=float), style, color=f"C{i % 10}", label=f"{name}: {key}")
    for ax, what in zip(axes, ("board", "blank-cell"), strict=True):
        ax.set(xlabel="optimizer step", ylabel=f"{what} accuracy (%)", title=f"Learning curve: {what} accuracy")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    return figure_png(fig)
