"""The looped-model pipelines: train a model on a Sudoku build, and analyse a finished run.

:func:`train_from_sudoku_dir` reads the splits of a ``dynascope sudoku build`` directory and trains into a
``runio.LOOPED`` run directory; :func:`analyze_run_dir` adds ``analysis.json`` (Jacobian spectrum, Prop. 5.1
bound, Lyapunov exponents, energy traces of the first boards of a split) and ``figures/*.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dynascope.dynamics.analyze import AnalysisConfig, analyze_model
from dynascope.dynamics.sudoku import load_split
from dynascope.dynamics.train import TrainConfig, load_run, train_run
from dynascope.errors import ConfigError, DataError
from dynascope.progress import progress, say
from dynascope.report.dynamics_plots import accuracy_figure, eigenvalue_figure, trace_figure
from dynascope.runio import LOOPED, write_bytes

TRAIN_SPLITS = {"train": "easy_train", "id": "easy_test", "ood": "hard_test"}
"""Which Sudoku split a looped model trains on (easy), and which are its ID and OOD test sets."""


def resolve_device(device: str) -> str:
    """``device`` if this machine has it; a CUDA device without CUDA falls back to the CPU, and says so."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        say(f"{device} is not available: using cpu")
        return "cpu"
    if not device.startswith(("cpu", "cuda")):
        raise ConfigError(f"device must be cpu or cuda[:i], got {device!r}")
    return device


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
