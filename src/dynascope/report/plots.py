"""Report figures returned as PNG bytes (no files, no display).

Figures are plain ``matplotlib.figure.Figure`` objects rendered by the Agg canvas, never pyplot, so
no global backend or figure registry is touched.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dynascope.analysis.calibration import ReliabilityData

DPI = 80  # keeps a full reproduction's self-contained page well under 2 MB


def figure_png(fig: Figure) -> bytes:
    """``fig`` rendered as PNG bytes at the report's DPI (the one figure convention of dynascope)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def subplots_row(ncols: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure with ``ncols`` panels of ``width`` × ``height`` inches in one row."""
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    return fig, np.atleast_1d(fig.subplots(1, ncols, squeeze=False)[0])


def pool_reliability(items: Sequence[ReliabilityData]) -> ReliabilityData:
    """Reliability data of several runs with the same binning merged: counts add, means are count-weighted."""
    if not items:
        raise ValueError("nothing to pool")
    first = items[0]
    if any(r.binning.edges != first.binning.edges for r in items):
        raise ValueError("cannot pool reliability data with different binnings")
    count = np.sum([r.count for r in items], axis=0)
    weighted = lambda attr: np.sum([np.nan_to_num(getattr(r, attr)) * r.count for r in items], axis=0)  # noqa: E731
    with np.errstate(invalid="ignore", divide="ignore"):
        return ReliabilityData(first.binning, count, weighted("confidence") / count, weighted("accuracy") / count)


def reliability_figure(panels: Mapping[str, ReliabilityData], title: str) -> bytes:
    """One reliability diagram per panel (e.g. before / after TS): accuracy bars, mean-confidence outlines."""
    fig, axes = subplots_row(len(panels), 3.4, 3.4)
    for ax, (name, rel) in zip(axes, panels.items(), strict=True):
        edges = np.asarray(rel.binning.edges)
        width = np.diff(edges)
        mask = rel.count > 0
        ax.bar(
            edges[:-1][mask],
            rel.accuracy[mask],
            width=width[mask],
            align="edge",
            color="#4c72b0",
            edgecolor="white",
            label="accuracy",
        )
        ax.bar(
            edges[:-1][mask],
            rel.confidence[mask],
            width=width[mask],
            align="edge",
            fill=False,
            edgecolor="#c44e52",
            linewidth=1.2,
            label="mean confidence",
        )
        ax.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle="--")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=f"{name} (ECE {100 * rel.ece():.2f}%)")
        ax.set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize=7)
    fig.suptitle(title, fontsize=10)
    return figure_png(fig)


def head_norm_figure(curves: Mapping[str, Sequence[Sequence[float]]], title: str) -> bytes:
    """‖V‖_F per epoch: a thin line per seed and a thick mean line per method."""
    fig, axes = subplots_row(1, 5.5, 3.4)
    ax = axes[0]
    for i, (method, seeds) in enumerate(curves.items()):
        color = f"C{i}"
        for curve in seeds:
            ax.plot(np.arange(1, len(curve) + 1), curve, color=color, alpha=0.3, linewidth=0.8)
        length = min(len(c) for c in seeds)
        mean = np.mean([c[:length] for c in seeds], axis=0)
        ax.plot(np.arange(1, length + 1), mean, color=color, linewidth=2, label=method, marker="o", markersize=3)
    ax.set(xlabel="epoch", ylabel="‖V‖_F", title=title)
    values = [v for seeds in curves.values() for c in seeds for v in c]
    if min(values) > 0 and max(values) > 10 * min(values):  # LP heads are often 10-100x the random init
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return figure_png(fig)


def scale_head_figure(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float | None]]], split: str
) -> bytes:
    """Feature change Diff(F) against the head norm s set before the FT stage: per recipe, (s, mean, std over
    seeds) as a line with a ± std band (a None std, from one seed, draws no band)."""
    fig, axes = subplots_row(1, 5.5, 3.8)
    ax = axes[0]
    for method, (norms, means, stds) in curves.items():
        s, mean = np.asarray(norms, dtype=float), np.asarray(means, dtype=float)
        std = np.array([0.0 if v is None else v for v in stds])
        ax.plot(s, mean, marker="o", label=method)
        ax.fill_between(s, mean - std, mean + std, alpha=0.2)
    ax.set_xscale("log")
    ax.set(xlabel="head norm ‖V‖_F before the FT stage", ylabel=f"Diff(F) on {split}")
    ax.set_title("Feature change vs head norm")
    ax.legend()
    return figure_png(fig)


def tsne_figure(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    label_names: Sequence[str],
    title: str,
) -> bytes:
    """Scatter of 2-D t-SNE coordinates per panel, coloured by label; classifier rows (if any) as stars."""
    fig, axes = subplots_row(len(panels), 3.8, 3.6)
    for ax, (name, (coords, labels, head)) in zip(axes, panels.items(), strict=True):
        for c in np.unique(labels):
            pts = coords[labels == c]
            name_c = label_names[c] if 0 <= c < len(label_names) else str(c)
            ax.scatter(pts[:, 0], pts[:, 1], s=8, color=f"C{c % 10}", alpha=0.7, label=name_c)
        if head is not None:
            for c, row in enumerate(head):
                ax.scatter(row[0], row[1], marker="*", s=220, color=f"C{c % 10}", edgecolor="black", linewidth=1)
        ax.set(title=name, xticks=[], yticks=[])
    axes[0].legend(fontsize=7, markerscale=1.5)
    fig.suptitle(title + ("" if all(p[2] is None for p in panels.values()) else "  (★ = classifier rows)"), fontsize=10)
    return figure_png(fig)


def singular_value_figure(spectra: Mapping[str, np.ndarray], title: str) -> bytes:
    """Singular values divided by the largest, descending, on a log scale, one line per kernel."""
    fig, axes = subplots_row(1, 5.5, 3.4)
    ax = axes[0]
    for name, sv in spectra.items():
        sv = np.asarray(sv, dtype=np.float64)
        ax.plot(np.arange(1, sv.size + 1), np.maximum(sv, 1e-300), label=name)
    ax.set(xlabel="index", ylabel="σ_i / σ_1", title=title, yscale="log")
    ax.legend(fontsize=8)
    return figure_png(fig)


def nuclear_heatmap_figure(blocks: Mapping[str, np.ndarray], labels_sorted: np.ndarray | None, title: str) -> bytes:
    """Heat maps of the per-pair C×C block nuclear norms, rows/columns sorted by class, one per kernel."""
    fig, axes = subplots_row(len(blocks), 3.6, 3.4)
    for ax, (name, mat) in zip(axes, blocks.items(), strict=True):
        im = ax.imshow(np.asarray(mat, dtype=np.float64), cmap="viridis", interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        if labels_sorted is not None and labels_sorted.size:
            for b in np.flatnonzero(np.diff(labels_sorted)) + 0.5:
                ax.axhline(b, color="white", linewidth=0.6)
                ax.axvline(b, color="white", linewidth=0.6)
        ax.set(title=name, xticks=[], yticks=[])
    fig.suptitle(title, fontsize=10)
    return figure_png(fig)
