"""Shared fixtures: small synthetic run directories that follow the run-directory contract."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from dynascope.runio import write_json, write_npz, write_safetensors


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


@pytest.fixture
def finetune_run_factory() -> Callable[..., Path]:
    """``write_finetune_run(path, **options)``: a synthetic fine-tuning run directory."""
    return write_finetune_run


@pytest.fixture
def ntk_run_factory() -> Callable[..., Path]:
    """``write_ntk_run(path, **options)``: a synthetic NTK run directory."""
    return write_ntk_run
