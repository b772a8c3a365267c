"""Reading run directories (fine-tuning, NTK, looped models, studies) and computing their analysis on demand.

The kinds are ``runio.FINETUNE`` (finished when its metrics file exists), ``runio.NTK`` (finished when its stats
file exists and says ``"kind": "ntk"``) and ``runio.LOOPED`` (a finished ``dynamics train`` run: the same metrics
file name, told apart by its ``board_accuracy``); their file names live there. A finished ``runio.STUDY``
(``reproduce lpft`` / ``reproduce dynamics``) is searched like any folder, and the runs found in it remember it.
Array files are read lazily, and each optional piece returns ``None`` when absent so that the report can skip it
with a note.
"""

from __future__ import annotations

import json
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
from dynascope.runio import FINETUNE, LOOPED, NTK, STUDY


def _npz_groups(run_dir: Path, role: str) -> dict[str, dict[str, np.ndarray]]:
    """``K.NAME`` arrays of a fine-tuning run's npz grouped by split key K (split keys may contain dots)."""
    groups: dict[str, dict[str, np.ndarray]] = {}
    for name, array in FINETUNE.load(run_dir, role).items():
        key, dot, field_name = name.rpartition(".")
        if not dot:
            raise DataError(f"expected array names 'SPLIT.NAME', found {name!r}", path=FINETUNE.path(run_dir, role))
        groups.setdefault(key, {})[field_name] = array
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
        """Read the metrics (required) and the config (optional) of a run."""
        path = Path(path)
        metrics = FINETUNE.load(path, "metrics")
        if not isinstance(metrics, dict):
            raise DataError("expected a JSON object", path=FINETUNE.path(path, "metrics"))
        return cls(path, FINETUNE.load_optional(path, "config") or {}, metrics)

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
        """``{split: (logits [N, C], labels [N])}`` from the logits file, or None if it is absent."""
        if not FINETUNE.has(self.path, "logits"):
            return None
        out = {}
        for key, arrays in _npz_groups(self.path, "logits").items():
            if "logits" not in arrays or "labels" not in arrays:
                raise DataError(
                    f"split {key!r} needs both {key}.logits and {key}.labels", path=FINETUNE.path(self.path, "logits")
                )
            out[key] = (arrays["logits"], arrays["labels"])
        return out

    @cached_property
    def features(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
        """``{split: (phi_pre, phi_post, labels)}`` from the features file, or None if it is absent."""
        if not FINETUNE.has(self.path, "features"):
            return None
        out = {}
        for key, arrays in _npz_groups(self.path, "features").items():
            missing = {"phi_pre", "phi_post", "labels"} - set(arrays)
            if missing:
                raise DataError(f"split {key!r} lacks {sorted(missing)}", path=FINETUNE.path(self.path, "features"))
            out[key] = (arrays["phi_pre"], arrays["phi_post"], arrays["labels"])
        return out

    @cached_property
    def head_weight(self) -> np.ndarray | None:
        """V (C × h) from the head file, or None if absent."""
        if not FINETUNE.has(self.path, "head"):
            return None
        tensors = FINETUNE.load(self.path, "head")
        if "weight" not in tensors:
            raise DataError("expected a tensor named 'weight'", path=FINETUNE.path(self.path, "head"))
        return tensors["weight"].double().numpy()

    def stored_calibration(self) -> dict[str, Any] | None:
        """The calibration record written by ``dynascope calibrate``, or None."""
        return FINETUNE.load_optional(self.path, "calibration")

    def stored_feature_metrics(self) -> dict[str, Any] | None:
        """The feature-change record written by ``dynascope features``, or None."""
        return FINETUNE.load_optional(self.path, "feature_metrics")


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
        raise DataError("no 'val' split to fit the temperature on", path=FINETUNE.path(run.path, "logits"))
    splits = {k: logits[k] for k in split_order(logits) if k != "val"}
    return calibrate_splits(logits["val"], splits, n_bins=n_bins, config=config)


def feature_metrics_of(run: FinetuneRun) -> dict[str, Any] | None:
    """Per split Diff, cosine to pre, CS and FDR before/after (None without the features file)."""
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
        """Read the stats (required) and the config (optional)."""
        path = Path(path)
        return cls(path, NTK.load_optional(path, "config") or {}, NTK.load(path, "stats"))

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
        """The spectra arrays (normalised singular values, block nuclear norms), or None."""
        return NTK.load_optional(self.path, "spectra")


@dataclass
class LoopedRun:
    """One finished looped-model run (``dynascope dynamics train``); ``study`` is the study folder holding it."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    study: Path | None = None

    @classmethod
    def load(cls, path: str | Path, metrics: dict[str, Any], study: Path | None = None) -> LoopedRun:
        """The run with its already-read metrics; the config is optional."""
        path = Path(path)
        return cls(path, LOOPED.load_optional(path, "config") or {}, metrics, study)

    @property
    def study_name(self) -> str | None:
        """The run's name in its study (config ``run``, e.g. ``itrsa_rms``); None for a standalone run."""
        name = self.config.get("run")
        return None if name is None else str(name)

    @property
    def train(self) -> dict[str, Any]:
        """The training recipe (``TrainConfig.to_dict``), empty when config.json is absent."""
        return self.config.get("train") or {}

    @property
    def model(self) -> dict[str, Any]:
        """The architecture (``ModelConfig`` as a dict)."""
        return self.train.get("model") or {}

    @property
    def seed(self) -> int | None:
        """Seed of the run, if recorded."""
        seed = self.train.get("seed")
        return None if seed is None else int(seed)

    @property
    def recipe(self) -> str:
        """The recipe without the seed (and the device), as canonical JSON: runs sharing it are seeds of one."""
        return json.dumps({k: v for k, v in self.train.items() if k not in ("seed", "device")}, sort_keys=True)

    def accuracy(self, kind: str, split: str) -> dict[int, float]:
        """``{T: accuracy}`` of ``kind`` (``board_accuracy`` or ``cell_accuracy``) on ``split`` (``id``/``ood``)."""
        by_t = (self.metrics.get(kind) or {}).get(split) or {}
        return {int(t): float(v) for t, v in by_t.items() if isinstance(v, int | float)}

    def at_training_t(self, kind: str, split: str) -> float | None:
        """:meth:`accuracy` at the loop count the run was trained with (None where it was not evaluated)."""
        t = self.train.get("loop_steps")
        return None if t is None else self.accuracy(kind, split).get(int(t))

    def stored_analysis(self) -> dict[str, Any] | None:
        """analysis.json (``dynascope dynamics analyze``), or None."""
        return LOOPED.load_optional(self.path, "analysis")

    def learning_curve(self) -> dict[str, tuple[list[float], list[float]]] | None:
        """The per-step accuracy curves of metrics.json's ``learning_curve`` as ``{series: (steps, values)}``.

        Read layouts: records ``[{"step": s, "board_accuracy": a, "cell_accuracy": c}, ...]`` or columns
        ``{"step": [...], "board_accuracy": [...], ...}``; the step key may also be ``optimizer_step``, and a value
        may be a per-split dict (series ``board_accuracy.id``). Series are the fields whose name holds
        ``accuracy``; None when there is no curve.
        """
        curve = self.metrics.get("learning_curve")
        if isinstance(curve, dict):
            columns = {k: v for k, v in _flatten(curve).items() if isinstance(v, list)}
            length = max(map(len, columns.values()), default=0)
            curve = [{k: v[i] for k, v in columns.items() if i < len(v)} for i in range(length)]
        if not isinstance(curve, list):
            return None
        series: dict[str, tuple[list[float], list[float]]] = {}
        for record in curve:
            flat = _flatten(record) if isinstance(record, dict) else {}
            step = flat.get("step", flat.get("optimizer_step"))
            if not _is_number(step):
                continue
            for key, value in flat.items():
                if "accuracy" in key and _is_number(value):
                    steps, values = series.setdefault(key, ([], []))
                    steps.append(float(step))
                    values.append(float(value))
        return series or None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _looped_metrics(path: Path) -> dict[str, Any] | None:
    """The metrics of a finished looped-model run at ``path`` (they hold ``board_accuracy``), else None."""
    if not LOOPED.is_finished(path):
        return None
    metrics = LOOPED.load(path, "metrics")
    return metrics if isinstance(metrics, dict) and isinstance(metrics.get("board_accuracy"), dict) else None


def _is_ntk_dir(path: Path) -> bool:
    if not NTK.is_finished(path):
        return False
    data = NTK.load(path, "stats")
    return isinstance(data, dict) and data.get("kind") == "ntk"


@dataclass
class Discovered:
    """Runs found under the given paths, with notes on what was passed over."""

    finetune: list[FinetuneRun] = field(default_factory=list)
    ntk: list[NtkRun] = field(default_factory=list)
    looped: list[LoopedRun] = field(default_factory=list)
    studies: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def discover_runs(paths: Iterable[str | Path]) -> Discovered:
    """Run directories among ``paths``; a path that is not a run is searched recursively for runs (a finished
    study among them is listed in ``studies``, and its looped runs point to it)."""
    found = Discovered()
    seen: set[Path] = set()

    def visit(path: Path, study: Path | None = None) -> bool:
        resolved = path.resolve()
        if resolved in seen:
            return True
        metrics = _looped_metrics(path)
        if metrics is not None:
            seen.add(resolved)
            found.looped.append(LoopedRun.load(path, metrics, study))
            return True
        if FINETUNE.is_finished(path):
            seen.add(resolved)
            found.finetune.append(FinetuneRun.load(path))
            return True
        if _is_ntk_dir(path):
            seen.add(resolved)
            found.ntk.append(NtkRun.load(path))
            return True
        if STUDY.is_finished(path):
            seen.add(resolved)
            found.studies.append(path)
            study = path
        hit = False
        skip = FINETUNE.files["lr_grid"]  # learning-rate selection runs are evidence for a choice, not results
        for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != skip):
            hit = visit(child, study) or hit
        return hit

    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise DataError("expected a run directory or a directory holding runs; it does not exist", path=path)
        if not visit(path):
            found.notes.append(
                f"{path}: no run directories found (no {FINETUNE.files['metrics']} or NTK {NTK.files['stats']})"
            )
    if not found.finetune and not found.ntk and not found.looped:
        raise DataError(f"no run directories found under {', '.join(str(p) for p in paths)}")
    return found
