"""Reading run directories (fine-tuning and NTK) and computing their analysis on demand.

A fine-tuning run is a directory with ``metrics.json``; an NTK run has ``stats.json`` with
``"kind": "ntk"`` (see the run-directory contract in the project docs). Array files are read lazily,
and each optional piece returns ``None`` when absent so that the report can skip it with a note.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from dynascope.analysis.calibration import DEFAULT_BINS
from dynascope.analysis.features import FISHER_RCOND, feature_change_metrics
from dynascope.analysis.temperature import TemperatureConfig, calibrate_splits
from dynascope.errors import DataError
from dynascope.runio import read_json

CALIBRATION_FILE = "calibration.json"
FEATURES_FILE = "features.json"


def _read_json(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read JSON: {exc}", path=path) from exc


def _read_npz_groups(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """``K.NAME`` arrays of an npz grouped by split key K (split keys may contain dots)."""
    groups: dict[str, dict[str, np.ndarray]] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            for name in data.files:
                key, dot, array = name.rpartition(".")
                if not dot:
                    raise DataError(f"expected array names 'SPLIT.NAME', found {name!r}", path=path)
                groups.setdefault(key, {})[array] = data[name]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read arrays: {exc}", path=path) from exc
    return groups


def split_order(keys: Iterable[str]) -> list[str]:
    """Split keys in report order: val, test, near_id.*, ood.*, then anything else (alphabetical)."""

    def rank(key: str) -> tuple[int, str]:
        group = key.partition(".")[0]
        return ({"val": 0, "test": 1, "near_id": 2, "ood": 3}.get(group, 4), key)

    return sorted(keys, key=rank)


@dataclass
class FinetuneRun:
    """One fine-tuning run directory."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> FinetuneRun:
        """Read ``metrics.json`` (required) and ``config.json`` (optional) of a run."""
        path = Path(path)
        metrics = _read_json(path / "metrics.json")
        if not isinstance(metrics, dict):
            raise DataError("expected a JSON object", path=path / "metrics.json")
        config = _read_json(path / "config.json") if (path / "config.json").exists() else {}
        return cls(path, config, metrics)

    def _field(self, name: str) -> Any:
        return self.metrics.get(name, self.config.get(name))

    @property
    def task(self) -> str:
        """Task name (from metrics.json, else config.json)."""
        return str(self._field("task") or "unknown")

    @property
    def method(self) -> str:
        """Recipe: lp, ft, lp-ft, lora or lp-lora."""
        return str(self._field("method") or "unknown")

    @property
    def seed(self) -> int | None:
        """Seed of the run, if recorded."""
        seed = self._field("seed")
        return None if seed is None else int(seed)

    @property
    def label_names(self) -> list[str]:
        """Class names, or their indices as strings when not recorded."""
        names = self.metrics.get("label_names")
        if names:
            return [str(n) for n in names]
        return [str(i) for i in range(int(self.metrics.get("num_labels") or 0))]

    @cached_property
    def logits(self) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
        """``{split: (logits [N, C], labels [N])}`` from ``logits.npz``, or None if the file is absent."""
        path = self.path / "logits.npz"
        if not path.exists():
            return None
        out = {}
        for key, arrays in _read_npz_groups(path).items():
            if "logits" not in arrays or "labels" not in arrays:
                raise DataError(f"split {key!r} needs both {key}.logits and {key}.labels", path=path)
            out[key] = (arrays["logits"], arrays["labels"])
        return out

    @cached_property
    def features(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
        """``{split: (phi_pre, phi_post, labels)}`` from ``features.npz``, or None if the file is absent."""
        path = self.path / "features.npz"
        if not path.exists():
            return None
        out = {}
        for key, arrays in _read_npz_groups(path).items():
            missing = {"phi_pre", "phi_post", "labels"} - set(arrays)
            if missing:
                raise DataError(f"split {key!r} lacks {sorted(missing)}", path=path)
            out[key] = (arrays["phi_pre"], arrays["phi_post"], arrays["labels"])
        return out

    @cached_property
    def head_weight(self) -> np.ndarray | None:
        """V (C × h) from ``head.safetensors``, or None if absent."""
        path = self.path / "head.safetensors"
        if not path.exists():
            return None
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(path))
        except Exception as exc:
            raise DataError(f"cannot read tensors: {exc}", path=path) from exc
        if "weight" not in tensors:
            raise DataError("expected a tensor named 'weight'", path=path)
        return np.asarray(tensors["weight"], dtype=np.float64)

    def stored_calibration(self) -> dict[str, Any] | None:
        """``calibration.json`` as written by ``dynascope calibrate``, or None."""
        path = self.path / CALIBRATION_FILE
        return _read_json(path) if path.exists() else None

    def stored_feature_metrics(self) -> dict[str, Any] | None:
        """``features.json`` as written by ``dynascope features``, or None."""
        path = self.path / FEATURES_FILE
        return _read_json(path) if path.exists() else None


def calibration_of(
    run: FinetuneRun, n_bins: int = DEFAULT_BINS, config: TemperatureConfig | None = None
) -> dict[str, Any] | None:
    """Temperature fitted on ``val`` and metrics before/after on every other split (None without logits).

    Raises ``DataError`` when logits exist but hold no ``val`` split to fit on.
    """
    logits = run.logits
    if logits is None:
        return None
    if "val" not in logits:
        raise DataError("no 'val' split to fit the temperature on", path=run.path / "logits.npz")
    splits = {k: logits[k] for k in split_order(logits) if k != "val"}
    return calibrate_splits(logits["val"], splits, n_bins=n_bins, config=config)


def feature_metrics_of(run: FinetuneRun) -> dict[str, Any] | None:
    """Per split Diff, cosine to pre, CS and FDR before/after (None without ``features.npz``)."""
    features = run.features
    if features is None:
        return None
    return {
        "splits": {k: feature_change_metrics(*features[k]).to_dict() for k in split_order(features)},
        "definitions": {
            "diff": "mean ||phi_post - phi_pre||_2",
            "cosine_to_pre": "mean cos(phi_post(x), phi_pre(x))",
            "cs": "mean pairwise cosine over pairs i != j within the split",
            "fdr": f"tr(pinv(S_W) S_B), scatters divided by N, pinv rcond {FISHER_RCOND:g}",
        },
    }


@dataclass
class NtkRun:
    """One NTK run directory."""

    path: Path
    config: dict[str, Any]
    stats: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> NtkRun:
        """Read ``stats.json`` (required) and ``config.json`` (optional)."""
        path = Path(path)
        stats = _read_json(path / "stats.json")
        config = _read_json(path / "config.json") if (path / "config.json").exists() else {}
        return cls(path, config, stats)

    @property
    def task(self) -> str:
        """Task of the kernel."""
        return str(self.stats.get("task", self.config.get("task", "unknown")))

    @property
    def state(self) -> str:
        """Which model state the kernel was taken at (e.g. the method whose initial head was used)."""
        return str(self.stats.get("state", self.config.get("state", "unknown")))

    @cached_property
    def spectra(self) -> dict[str, np.ndarray] | None:
        """Arrays of ``spectra.npz`` (normalised singular values, block nuclear norms), or None."""
        path = self.path / "spectra.npz"
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise DataError(f"cannot read arrays: {exc}", path=path) from exc


def _is_ntk_dir(path: Path) -> bool:
    stats = path / "stats.json"
    if not stats.is_file():
        return False
    data = _read_json(stats)
    return isinstance(data, dict) and data.get("kind") == "ntk"


@dataclass
class Discovered:
    """Runs found under the given paths, with notes on what was passed over."""

    finetune: list[FinetuneRun] = field(default_factory=list)
    ntk: list[NtkRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def discover_runs(paths: Iterable[str | Path]) -> Discovered:
    """Run directories among ``paths``; a path that is not a run is searched recursively for runs."""
    found = Discovered()
    seen: set[Path] = set()

    def visit(path: Path) -> bool:
        resolved = path.resolve()
        if resolved in seen:
            return True
        if (path / "metrics.json").is_file():
            seen.add(resolved)
            found.finetune.append(FinetuneRun.load(path))
            return True
        if _is_ntk_dir(path):
            seen.add(resolved)
            found.ntk.append(NtkRun.load(path))
            return True
        hit = False
        for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            hit = visit(child) or hit
        return hit

    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise DataError("expected a run directory or a directory holding runs; it does not exist", path=path)
        if not visit(path):
            found.notes.append(f"{path}: no run directories found (no metrics.json or NTK stats.json)")
    if not found.finetune and not found.ntk:
        raise DataError(f"no run directories found under {', '.join(str(p) for p in paths)}")
    return found
