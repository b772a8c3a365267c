"""Run directories: atomic writes of JSON, arrays and tensors, the environment record, and the run kinds.

Every file is written to a temporary sibling and renamed into place, so an interrupted job never
leaves a half-written result behind. Each kind of run directory (fine-tuning, NTK, looped model, Sudoku
build, study, comparison, report) is a :class:`RunKind`: the one place that knows its file names and the
file whose presence marks it finished. Writers and readers go through it instead of spelling file names.
Under ``torchrun`` a run kind's files are written by rank 0 alone (``prepare`` lets the other ranks wait until
rank 0 has made the directory ready); ``env.json`` records the number of processes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynascope.distributed import barrier, world
from dynascope.errors import ConfigError, DataError, RunExistsError

_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are ordinary files
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return _atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (numpy/torch scalars and arrays are converted)."""
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=False, allow_nan=True) + "\n"
    return write_text(path, text)


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write a compressed ``.npz`` atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **{k: np.asarray(v) for k, v in arrays.items()})

    return _atomic_write(Path(path), write)


def write_safetensors(
    path: str | Path, tensors: Mapping[str, Any], metadata: dict[str, str] | None = None
) -> Path:
    """Write torch tensors as safetensors atomically (tensors are made contiguous and moved to CPU)."""
    from safetensors.torch import save_file

    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return _atomic_write(Path(path), lambda tmp: save_file(clean, str(tmp), metadata=metadata))


_REPRODUCIBILITY_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_CBWR", "CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED")
"""Environment variables that change the bits of a result (threads, MKL's reproducibility mode, cuBLAS)."""


def environment(seed: int | None = None) -> dict[str, Any]:
    """Versions, threads and platform: enough to tell two runs' software apart."""
    import torch

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "numpy": np.__version__,
        "seed": seed,
        "reproducibility_env": {k: os.environ[k] for k in _REPRODUCIBILITY_ENV if k in os.environ},
    }
    for dist in ("transformers", "peft", "scikit-learn", "scipy", "dynascope"):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[dist] = None
    return info


def write_torch(path: str | Path, obj: Any) -> Path:
    """``torch.save`` atomically (checkpoints)."""
    import torch

    return _atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write raw bytes (e.g. a PNG) atomically."""
    return _atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_dir(path: str | Path) -> Path:
    """Create the output directory ``path`` (and its parents) or raise a one-line ``ConfigError`` saying why not:
    it is a file, a parent is a file, or the place is not writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output {path} exists and is not a directory; choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"cannot create output directory {path}: a parent of it is a file") from None
    except OSError as exc:
        raise ConfigError(f"cannot create output directory {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"output directory {path} is not writable")
    return path


def remove_stale_temps(root: str | Path) -> list[Path]:
    """Delete the temporary siblings (``.<name>.<random>.tmp``) that a killed atomic write left under ``root``."""
    stale = [p for p in Path(root).rglob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON values differ, with both values (for a resume that refuses)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in [*old, *(k for k in new if k not in old)]:
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    if old != new:
        return [f"{prefix[:-1] or 'config'}: {old!r} -> {new!r}"]
    return []


_TEXT_SUFFIXES = (".md", ".csv", ".html", ".txt")


@dataclass(frozen=True)
class RunKind:
    """One kind of run directory: the file of each role, and the role whose file marks the run finished.

    ``files`` maps a role (``"metrics"``, ``"head"``, ...) to a file or folder name inside the run
    directory. :meth:`write` and :meth:`load` choose the format from the suffix (JSON, npz, safetensors,
    text, torch), so a caller names only the role.
    """

    name: str
    marker: str
    files: Mapping[str, str] = field(default_factory=dict)
    resumable: tuple[str, ...] = ()
    """Roles holding resumable state (checkpoints, finished tiles): kept across a rerun with the same config,
    removed by ``--overwrite``. A kind with resumable state refuses to resume under a different config."""

    def __post_init__(self) -> None:
        unknown = [r for r in (self.marker, *self.resumable) if r not in self.files]
        if unknown:
            raise ValueError(f"{self.name}: roles {unknown} are not among its files {sorted(self.files)}")

    def path(self, run_dir: str | Path, role: str) -> Path:
        """The path of ``role`` inside ``run_dir``."""
        try:
            return Path(run_dir) / self.files[role]
        except KeyError:
            raise KeyError(f"a {self.name} run has no {role!r} file; known: {', '.join(sorted(self.files))}") from None

    def is_finished(self, run_dir: str | Path) -> bool:
        """Whether ``run_dir`` holds a finished run of this kind (its marker file exists)."""
        return self.path(run_dir, self.marker).is_file()

    def has(self, run_dir: str | Path, role: str) -> bool:
        """Whether the file of ``role`` exists in ``run_dir``."""
        return self.path(run_dir, role).exists()

    def prepare(self, out: str | Path, overwrite: bool = False) -> Path:
        """Create ``out`` for a run of this kind; refuse a finished one (its marker present) unless ``overwrite``.

        An unfinished directory (no marker) is reused so that its resumable state can be resumed; temporary files
        of a killed write are removed. With ``overwrite`` the old marker goes first (a replacement run that is
        killed never looks finished), then the old config and resumable state (the run starts again).
        """
        out = ensure_dir(out)
        marker = out / self.files[self.marker]
        if marker.exists() and not overwrite:
            raise RunExistsError(
                f"{out} already holds a finished run ({marker.name} exists); pass --overwrite to replace it"
            )
        if not world().is_main:  # under torchrun rank 0 alone changes the directory; the others wait for it
            barrier()
            return out
        remove_stale_temps(out)
        if overwrite:
            marker.unlink(missing_ok=True)
            for role in ("config", *self.resumable) if "config" in self.files else self.resumable:
                path = self.path(out, role)
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        barrier()
        return out

    def write(self, run_dir: str | Path, role: str, obj: Any, metadata: dict[str, str] | None = None) -> Path:
        """Write ``obj`` as the file of ``role`` atomically, in the format its suffix names (under ``torchrun``
        on rank 0 only: the other ranks hold the same results and return the path unwritten)."""
        path = self.path(run_dir, role)
        if not world().is_main:
            return path
        suffix = path.suffix
        if suffix == ".json":
            return write_json(path, obj)
        if suffix == ".npz":
            return write_npz(path, obj)
        if suffix == ".safetensors":
            return write_safetensors(path, obj, metadata=metadata)
        if suffix == ".pt":
            return write_torch(path, obj)
        if suffix == ".png":
            return write_bytes(path, obj)
        if suffix in _TEXT_SUFFIXES:
            return write_text(path, obj)
        raise ValueError(f"{self.name}: role {role!r} ({path.name}) is not a file this module writes")

    def write_record(
        self, run_dir: str | Path, config: Mapping[str, Any], seed: int | None, env: Mapping[str, Any] | None = None
    ) -> None:
        """Write ``config.json`` and ``env.json``: what was asked, and on what software (``env``: more of where it
        ran, e.g. the resolved device, which is not part of the config since it does not change the experiment).

        For a kind with resumable state, an existing ``config.json`` is the resume fingerprint: a different
        config is a ``ConfigError`` naming the fields that differ (the old state is never resumed silently).
        """
        if self.resumable and self.has(run_dir, "config"):
            wanted = json.loads(json.dumps(_jsonable(config)))
            found = self.load(run_dir, "config")
            changed = _differences(found, wanted)
            if changed:
                more = f" (and {len(changed) - 6} more)" if len(changed) > 6 else ""
                raise ConfigError(
                    f"{run_dir} holds an unfinished {self.name} run of another config ({'; '.join(changed[:6])}"
                    f"{more}); rerun with its arguments to resume it, or pass --overwrite to start again"
                )
        self.write(run_dir, "config", config)
        self.write(run_dir, "env", {**environment(seed), **world().describe(), **(env or {})})

    def load(self, run_dir: str | Path, role: str) -> Any:
        """Read the file of ``role``: JSON as Python objects, npz as a dict of arrays, safetensors as a dict of
        torch tensors; a missing or unreadable file raises a ``DataError`` naming it."""
        path = self.path(run_dir, role)
        if not path.is_file():
            raise DataError(f"no {role} file in this {self.name} run", path=path)
        try:
            if path.suffix == ".json":
                return read_json(path)
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as data:
                    return {name: data[name] for name in data.files}
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(str(path))
            if path.suffix in _TEXT_SUFFIXES:
                return path.read_text(encoding="utf-8")
        except DataError:
            raise
        except Exception as exc:  # any unreadable file is reported with its path
            what = {".json": "JSON", ".npz": "arrays", ".safetensors": "tensors"}.get(path.suffix, "text")
            raise DataError(f"cannot read {what}: {exc}", path=path) from exc
        raise ValueError(f"{self.name}: role {role!r} ({path.name}) is not a file this module reads")

    def load_optional(self, run_dir: str | Path, role: str) -> Any | None:
        """:meth:`load`, or None when the file is absent."""
        return self.load(run_dir, role) if self.path(run_dir, role).is_file() else None


CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
_RECORD = {"config": CONFIG_FILE, "env": "env.json"}

FINETUNE = RunKind(
    "fine-tuning",
    marker="metrics",
    files={
        **_RECORD,
        "metrics": METRICS_FILE,
        "logits": "logits.npz",
        "features": "features.npz",
        "head": "head.safetensors",
        "adapter": "adapter.safetensors",
        "backbone": "backbone.safetensors",
        "checkpoint": "checkpoint",
        "calibration": "calibration.json",
        "feature_metrics": "features.json",
        "lr_grid": "lr-grid",
    },
    resumable=("checkpoint",),
)
"""A fine-tuning run (``dynascope train``): metrics.json is written last; ``checkpoint/`` holds the resumable
training state until then."""

NTK = RunKind(
    "NTK",
    marker="stats",
    files={
        **_RECORD,
        "stats": "stats.json",
        "kernels": "kernels.safetensors",
        "spectra": "spectra.npz",
        "blocks": "blocks",
    },
    resumable=("blocks",),
)
"""An NTK run (``dynascope ntk``): stats.json is written last; ``blocks/`` holds resumable block kernels."""

LOOPED = RunKind(
    "looped model",
    marker="metrics",
    files={
        **_RECORD,
        "metrics": METRICS_FILE,
        "model": "model.safetensors",
        "checkpoint": "checkpoint.pt",
        "analysis": "analysis.json",
        "figures": "figures",
    },
    resumable=("checkpoint",),
)
"""A looped-attention model trained on Sudoku (``dynascope dynamics train``), and its analysis."""

EVALUATION = RunKind(
    "puzzle evaluation",
    marker="results",
    files={"results": "results.json", "table": "results.md"},
)
"""A looped model scored on a user's puzzle file (``dynascope dynamics evaluate``): results.json is written last."""

SUDOKU = RunKind(
    "Sudoku build",
    marker="summary",
    files={**_RECORD, "summary": "summary.json", "cache": "cache"},
)
"""A Sudoku dataset build: one ``<split>.npz`` per split, summary.json written last."""

STUDY = RunKind(
    "study",
    marker="results",
    files={
        **_RECORD,
        "results": "results.md",
        "results_json": "results.json",
        "checks": "checks.md",
        "checks_json": "checks.json",
        "timings": "stage_seconds.json",
        "figures": "figures",
        "report": "report",
        "runs": "runs",
        "lp_protocols": "lp-protocols",
        "ntk": "ntk",
        "pooling_mean": "pooling-mean",
        "diagnostics": "diagnostics.csv",
    },
)
"""A paper's study (``dynascope reproduce``): results.md is written last; the LP-FT study keeps its fine-tuning
runs under ``runs/``, ``lp-protocols/`` and ``pooling-mean/``, its NTK runs under ``ntk/``, and one row per run in
``diagnostics.csv``."""

COMPARISON = RunKind(
    "comparison",
    marker="summary",
    files={
        "summary": "summary.md",
        "summary_csv": "summary.csv",
        "scale_head": "scale_head.md",
        "scale_head_csv": "scale_head.csv",
        "scale_head_figure": "scale_head.png",
    },
)
"""A grid of fine-tuning runs (``dynascope compare``, ``scale-head``) and its mean ± std tables."""

REPORT = RunKind(
    "report",
    marker="report",
    files={**_RECORD, "report": "report.html", "tables": "tables", "figures": "figures"},
)
"""The HTML report (``dynascope report``)."""
