"""The looped-model pipelines: train a model on a Sudoku build, analyse a finished run, score it on puzzles.

:func:`train_from_sudoku_dir` reads the splits of a ``dynascope sudoku build`` directory and trains into a
``runio.LOOPED`` run directory; :func:`analyze_run_dir` adds ``analysis.json`` (Jacobian spectrum, Prop. 5.1
bound, Lyapunov exponents, energy traces of the first boards of a split) and ``figures/*.png``;
:func:`evaluate_puzzles` scores a finished run on a puzzle file a user brings (a ``runio.EVALUATION``
directory).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynascope.device import resolve_device
from dynascope.dynamics.analyze import AnalysisConfig, analyze_model
from dynascope.dynamics.puzzles import complete_solutions, read_puzzles
from dynascope.dynamics.sudoku import load_split
from dynascope.dynamics.train import TrainConfig, evaluate, load_run, train_run
from dynascope.errors import ConfigError, DataError
from dynascope.progress import progress, say
from dynascope.report.dynamics_plots import accuracy_figure, eigenvalue_figure, trace_figure
from dynascope.runio import EVALUATION, LOOPED, sha256_file, write_bytes

TRAIN_SPLITS = {"train": "easy_train", "id": "easy_test", "ood": "hard_test"}
"""Which Sudoku split a looped model trains on (easy), and which are its ID and OOD test sets."""


def train_from_sudoku_dir(
    config: TrainConfig, sudoku_dir: str | Path, out: str | Path, *, overwrite: bool = False, **extra: Any
) -> dict[str, Any]:
    """Train ``config`` on the easy training boards of ``sudoku_dir``, test on easy (ID) and hard (OOD) boards;
    returns the run's metrics. ``extra`` is recorded in config.json beside the recipe."""
    sudoku_dir = Path(sudoku_dir)
    splits = {role: load_split(sudoku_dir, name) for role, name in TRAIN_SPLITS.items()}
    record = {"sudoku_dir": str(sudoku_dir.resolve()), "train_split": TRAIN_SPLITS["train"], **extra}
    record.update(id=TRAIN_SPLITS["id"], ood=TRAIN_SPLITS["ood"])
    return train_run(
        config,
        splits["train"],
        splits["id"],
        splits["ood"],
        out,
        overwrite=overwrite,
        extra=record,
        progress=progress,
        log=say,
    )


def analyze_run_dir(
    run_dir: str | Path,
    config: AnalysisConfig,
    sudoku_dir: str | Path | None = None,
    split: str = "easy_test",
    device: str = "cpu",
) -> dict[str, Any]:
    """Analyse a finished run on the first ``config.boards`` boards of ``split``; writes analysis.json and
    figures/ (eigenvalues, energy traces, accuracy vs T) into the run directory and returns the analysis."""
    run_dir = Path(run_dir)
    train_config, model, record = load_run(run_dir, resolve_device(device))
    source = sudoku_dir or record.get("sudoku_dir")
    if source is None:
        raise DataError("the run does not record its Sudoku directory; pass --sudoku-dir", path=run_dir)
    boards = load_split(source, split)
    puzzles = torch.as_tensor(boards.puzzles[: config.boards], dtype=torch.long)
    result = analyze_model(model, puzzles, config)
    result["split"] = split
    result["model"] = train_config.model.to_dict()
    LOOPED.write(run_dir, "analysis", result)
    figures = LOOPED.path(run_dir, "figures")
    name = run_dir.name
    metrics = LOOPED.load(run_dir, "metrics")
    for file, png in (
        ("eigenvalues.png", eigenvalue_figure(result["boards"], f"{name}: eigenvalues of J at t={config.t_jacobian}")),
        ("energy.png", trace_figure(result["boards"], name)),
        ("accuracy_vs_T.png", accuracy_figure(metrics["board_accuracy"], f"{name}: board accuracy vs T")),
    ):
        write_bytes(figures / file, png)
    return result


EVALUATE_STEPS = (8, 16, 32, 64, 128)
"""Default loop counts T of ``dynascope dynamics evaluate``."""


def evaluate_puzzles(
    run_dir: str | Path,
    puzzles_path: str | Path,
    steps: Sequence[int] = EVALUATE_STEPS,
    limit: int | None = None,
    out: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Score a finished run on a puzzle file (:mod:`dynascope.dynamics.puzzles`, first ``limit`` puzzles): board
    and blank-cell accuracy at every T of ``steps``, overall and per number of givens. Writes results.md and
    results.json into ``out`` (default ``RUN/evaluate-<file stem>/``) and returns the results.

    Puzzles the file gives without a solution are solved exactly; those with none or several are counted and
    listed by line, not scored. Each givens count is one :func:`dynascope.dynamics.train.evaluate` call (initial
    noise seeded as in the run's own test evaluation); the overall accuracies pool their boards and blank cells.
    """
    run_dir, puzzles_path = Path(run_dir), Path(puzzles_path)
    grid = sorted({int(t) for t in steps})
    if not grid or grid[0] < 1:
        raise ConfigError(f"steps: expected positive loop counts, found {list(steps)}")
    config, model, _ = load_run(run_dir, resolve_device(device))
    file = read_puzzles(puzzles_path, limit)
    scored = complete_solutions(file, progress=progress)
    if not len(scored):
        raise DataError(
            f"none of the {len(file)} puzzles read has exactly one solution: nothing to score", path=puzzles_path
        )
    givens = scored.num_givens
    solved = dict.fromkeys(grid, 0.0)
    correct = dict.fromkeys(grid, 0.0)
    by_givens = []
    for count in progress(np.unique(givens).tolist(), desc="evaluating by number of givens"):
        index = np.flatnonzero(givens == count)
        res = evaluate(
            model,
            torch.as_tensor(scored.puzzles[index], dtype=torch.long),
            torch.as_tensor(scored.solutions[index], dtype=torch.long),
            grid,
            batch=config.eval_batch,
            seed=config.seed + 1,
        )
        by_givens.append(
            {"givens": count, "boards": len(index), "board_accuracy": res["board"], "cell_accuracy": res["cell"]}
        )
        for t in grid:
            solved[t] += res["board"][t] * len(index)
            correct[t] += res["cell"][t] * len(index) * (81 - count)
    blanks = int((81 - givens).sum())
    result = {
        "run": str(run_dir),
        "model": config.model.to_dict(),
        "puzzles": {"path": str(puzzles_path), "sha256": sha256_file(puzzles_path), "format": file.format},
        "limit": limit,
        "steps": grid,
        "read": len(file),
        "scored": len(scored),
        "solutions_from_file": int((~scored.from_solver).sum()),
        "solutions_from_solver": int(scored.from_solver.sum()),
        "unsolvable": {"count": len(scored.unsolvable), "lines": list(scored.unsolvable)},
        "multiple_solutions": {"count": len(scored.multiple), "lines": list(scored.multiple)},
        "board_accuracy": {t: solved[t] / len(scored) for t in grid},
        "cell_accuracy": {t: correct[t] / blanks if blanks else 1.0 for t in grid},
        "by_givens": by_givens,
    }
    out = EVALUATION.prepare(run_dir / f"evaluate-{puzzles_path.stem}" if out is None else out, overwrite=True)
    EVALUATION.write(out, "table", _markdown(result))
    path = EVALUATION.write(out, "results", result)
    say(f"wrote {path} and {EVALUATION.path(out, 'table').name}")
    return result


def _line_list(lines: Sequence[int], shown: int = 20) -> str:
    """``lines 3, 7, 9`` (the first ``shown``, then how many more)."""
    text = ", ".join(str(n) for n in lines[:shown])
    more = f" and {len(lines) - shown} more (all in results.json)" if len(lines) > shown else ""
    return f"line{'s' if len(lines) > 1 else ''} {text}{more}"


def _markdown(result: dict[str, Any]) -> str:
    """The results.md of :func:`evaluate_puzzles`: what was scored, accuracy per T, and per number of givens."""
    steps = result["steps"]
    set_aside = [
        f"{result[key]['count']} {what} ({_line_list(result[key]['lines'])})"
        for key, what in (("unsolvable", "unsolvable"), ("multiple_solutions", "with more than one solution"))
        if result[key]["count"]
    ]
    lines = [
        f"# `{Path(result['run']).name}` on `{Path(result['puzzles']['path']).name}`",
        "",
        f"{result['read']} puzzles read ({result['puzzles']['format']} format"
        + (f", the first {result['limit']}" if result["limit"] else "")
        + f"), {result['scored']} scored ({result['solutions_from_file']} solutions from the file, "
        f"{result['solutions_from_solver']} from the exact solver)"
        + (f"; not scored: {'; '.join(set_aside)}" if set_aside else "")
        + ".",
        "",
        "| T | board accuracy | blank-cell accuracy |",
        "|---:|---:|---:|",
        *(f"| {t} | {_pct(result['board_accuracy'][t])} | {_pct(result['cell_accuracy'][t])} |" for t in steps),
    ]
    for key, title in (("board_accuracy", "Board accuracy"), ("cell_accuracy", "Blank-cell accuracy")):
        lines += [
            "",
            f"## {title} by number of givens",
            "",
            "| givens | boards | " + " | ".join(f"T = {t}" for t in steps) + " |",
            "|---:|---:|" + "---:|" * len(steps),
            *(
                f"| {row['givens']} | {row['boards']} | " + " | ".join(_pct(row[key][t]) for t in steps) + " |"
                for row in result["by_givens"]
            ),
        ]
    return "\n".join(lines) + "\n"


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"
