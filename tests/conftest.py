"""Shared fixtures: small synthetic run directories that follow the run-directory contract."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from dynascope.runio import LOOPED, write_json, write_npz, write_safetensors


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``cuda`` on a machine without CUDA (``make test`` and ``.ci/run`` stay CPU-only)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


def write_finetune_run(
    path: Path,
    *,
    task: str = "toy",
    method: str = "ft",
    seed: int = 0,
    n: int = 40,
    h: int = 12,
    classes: int = 3,
    ood: Sequence[str] = ("shifted",),
    epochs: int = 3,
    pieces: Sequence[str] = ("logits", "features", "head"),
    learned: bool | None = None,
) -> Path:
    """A fine-tuning run directory from random arrays; ``pieces`` picks the optional files to write."""
    rng = np.random.default_rng(zlib.crc32(f"{task}/{method}/{seed}".encode()))
    means = rng.normal(size=(classes, h)) * 0.5
    keys = ["val", "test", *(f"ood.{name}" for name in ood)]
    head = rng.normal(size=(classes, h)) * 0.5
    logits, features = {}, {}
    for key in keys:
        labels = rng.integers(0, classes, size=n).astype(np.int64)
        pre = (means[labels] + rng.normal(size=(n, h))).astype(np.float32)
        post = pre if method == "lp" else (pre + 0.5 * means[labels] + 0.1 * rng.normal(size=(n, h))).astype(np.float32)
        z = (post @ means.T * 1.5 + rng.normal(size=(n, classes))).astype(np.float32)  # overconfident
        logits.update({f"{key}.logits": z, f"{key}.labels": labels})
        features.update({f"{key}.phi_pre": pre, f"{key}.phi_post": post, f"{key}.labels": labels})
    path.mkdir(parents=True, exist_ok=True)
    per_epoch = [] if method == "lp" else list(np.linspace(1.0, 1.5, epochs) + 0.1 * seed)

    def acc(key: str) -> float:
        return float(np.mean(logits[f"{key}.logits"].argmax(1) == logits[f"{key}.labels"]))

    write_json(path / "config.json", {"task": task, "method": method, "seed": seed, "model": "toy", "epochs": epochs})
    write_json(path / "env.json", {"seed": seed})
    write_json(
        path / "metrics.json",
        {
            "task": task,
            "method": method,
            "seed": seed,
            "model": "toy",
            "num_labels": classes,
            "label_names": [f"class{c}" for c in range(classes)],
            "val": {"accuracy": acc("val")},
            "test": {"accuracy": acc("test"), "macro_f1": acc("test") * 0.9},
            "ood": {name: {"accuracy": acc(f"ood.{name}")} for name in ood},
            "near_id": {},
            "head_norm": {
                "init": 0.5,
                "after_lp": 5.0 if method.startswith("lp") else None,
                "final": float(np.linalg.norm(head)),
                "per_epoch": per_epoch,
            },
            "history": [{"epoch": i + 1, "train_loss": 1.0 / (i + 1), "head_norm": v} for i, v in enumerate(per_epoch)],
            "best_epoch": epochs if per_epoch else None,
            "seconds": 1.0,
            **({} if learned is None else {"learned": learned}),
        },
    )
    if "logits" in pieces:
        write_npz(path / "logits.npz", logits)
    if "features" in pieces:
        write_npz(path / "features.npz", features)
    if "head" in pieces:
        write_safetensors(
            path / "head.safetensors",
            {"weight": torch.as_tensor(head), "bias": torch.zeros(classes, dtype=torch.float64)},
        )
    return path


def write_ntk_run(path: Path, *, task: str = "toy", state: str = "ft", n: int = 8, classes: int = 2) -> Path:
    """An NTK run directory with stats.json and spectra.npz (kernels are not needed by the report)."""
    rng = np.random.default_rng(7)
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / "config.json", {"task": task, "state": state})
    write_json(path / "env.json", {"seed": 0})

    def kernel_stats(scale: float) -> dict[str, float]:
        return {"frobenius": 10.0 * scale, "rank": int(n * classes * scale), "paper_row_acc_test": scale}

    write_json(
        path / "stats.json",
        {
            "kind": "ntk",
            "task": task,
            "state": state,
            "pre": kernel_stats(0.5),
            "ft": kernel_stats(1.0),
            "total": kernel_stats(1.0),
            "trace": {"exact_ft": 3.0, "hutchinson_ft": {"estimate": 2.9, "stderr": 0.1}},
            "train_indices": list(range(n)),
            "ft_ratio": 0.2,
        },
    )
    labels = np.sort(rng.integers(0, classes, size=n))
    arrays: dict[str, np.ndarray] = {"labels_sorted": labels}
    for kernel in ("pre", "ft", "total"):
        sv = np.sort(rng.random(n * classes))[::-1]
        arrays[f"{kernel}_sv"] = sv / sv[0]
        arrays[f"{kernel}_nuclear"] = rng.random((n, n))
    write_npz(path / "spectra.npz", arrays)
    return path


def write_looped_run(
    path: Path,
    *,
    run: str | None = None,
    model: str = "itrsa",
    norm: str = "rms_token",
    regularizer: str = "none",
    reg_weight: float = 0.0,
    seed: int = 0,
    epochs: int = 3,
    loop_steps: int = 4,
    eval_steps: Sequence[int] = (2, 4, 8),
    analysis: bool = True,
    learning_curve: bool = False,
) -> Path:
    """A finished looped-model run (``dynamics train``) from random numbers, with analysis.json if ``analysis``;
    ``run`` is the study's run name recorded in config.json, ``learning_curve`` adds a per-step curve."""
    from dynascope.dynamics.analyze import AnalysisConfig  # imported here: most tests never need the dynamics
    from dynascope.dynamics.models import ModelConfig
    from dynascope.dynamics.train import TrainConfig

    rng = np.random.default_rng(zlib.crc32(f"{run}/{model}/{norm}/{regularizer}/{seed}".encode()))
    config = TrainConfig(
        model=ModelConfig(model=model, width=8, heads=2, osc_size=4, norm=norm),
        epochs=epochs,
        loop_steps=loop_steps,
        eval_steps=tuple(eval_steps),
        regularizer=regularizer,
        reg_weight=reg_weight,
        seed=seed,
    )
    path.mkdir(parents=True, exist_ok=True)
    LOOPED.write(path, "config", {"train": config.to_dict(), **({} if run is None else {"run": run, "preset": "toy"})})
    LOOPED.write(path, "env", {"seed": seed})
    cell = {
        split: {t: 0.11 + 0.05 * i + 0.01 * rng.random() for i, t in enumerate(eval_steps)} for split in ("id", "ood")
    }
    board = {split: {t: v / 4 for t, v in by_t.items()} for split, by_t in cell.items()}
    metrics = {
        "board_accuracy": board,
        "cell_accuracy": cell,
        "train_loss": list(2.2 - 0.3 * np.arange(epochs) - 0.01 * rng.random(epochs)),
        "train_reg": [0.0] * epochs,
        "epoch_seconds": [1.5] * epochs,
        "eval_seconds": 0.5,
        "optimizer_steps": 6 * epochs,
        "skipped_nonfinite_steps": 0,
        "n_train": 120,
        "device": "cpu",
        "eta": 0.9 + 0.01 * seed,
        "gamma_max": 1.1,
    }
    if learning_curve:
        steps = 6 * np.arange(1, epochs + 1)
        metrics["learning_curve"] = [
            {"step": int(s), "board_accuracy": 0.01 * i, "cell_accuracy": 0.12 + 0.02 * i} for i, s in enumerate(steps)
        ]
    if analysis:
        eig = rng.normal(size=40) * 0.5 + 1j * rng.normal(size=40) * 0.5
        lyap_max = float(rng.normal(0.05, 0.1))
        lyapunov = {"method": "exact", "T": 4, "k": 648, "null_dims": 81, "unresolved": 0, "max": lyap_max}
        lyapunov.update(mean=lyap_max - 1.0, mean_over=567, top=[lyap_max, lyap_max - 0.2])
        board_result = {
            "n": 648,
            "eigenvalues": {"real": eig.real.tolist(), "imag": eig.imag.tolist(), "count": 40, "dense": True},
            "max_abs_eigenvalue": float(np.abs(eig).max()),
            "spectral_norm": {"value": 1.5, "method": "dense"},
            "j_msa_norm": {"value": 0.8, "converged": True},
            "normalization_bound": {"applies": True, "bound": 3.0, "measured": 1.5, "holds": True},
            "lyapunov": lyapunov,
            "pseudo_energy": list(-np.linspace(1.0, 2.0, 9)),
            "cos_msa_jx": list(np.linspace(0.5, 0.9, 9)),
            "model_energy": None,
            "contribution_index": {"0": 0.2, "4": 0.3, "8": 0.35},
            "diverged_at": None,
        }
        summary = {"lyapunov_max": lyap_max, "lyapunov_mean": lyap_max - 1.0, "spectral_norm": 1.5}
        summary.update(max_abs_eigenvalue=board_result["max_abs_eigenvalue"], bound_holds=True)
        record = {"config": AnalysisConfig(t_jacobian=4, lyap_steps=4, trace_steps=8, ci_times=(0, 4, 8)).to_dict()}
        record.update(null_dims=81, summary=summary, boards=[board_result], split="easy_test")
        LOOPED.write(path, "analysis", record)
    LOOPED.write(path, "metrics", metrics)
    return path


@pytest.fixture
def finetune_run_factory() -> Callable[..., Path]:
    """``write_finetune_run(path, **options)``: a synthetic fine-tuning run directory."""
    return write_finetune_run


@pytest.fixture
def ntk_run_factory() -> Callable[..., Path]:
    """``write_ntk_run(path, **options)``: a synthetic NTK run directory."""
    return write_ntk_run


@pytest.fixture
def looped_run_factory() -> Callable[..., Path]:
    """``write_looped_run(path, **options)``: a synthetic finished looped-model run directory."""
    return write_looped_run
