"""Run directories: atomic writes of JSON, arrays and tensors, and the environment record.

Every file is written to a temporary sibling and renamed into place, so an interrupted job never
leaves a half-written result behind.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dynascope.errors import RunExistsError

FINISHED_MARKER = "metrics.json"
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
    }
    for dist in ("transformers", "peft", "scikit-learn", "scipy", "dynascope"):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[dist] = None
    return info


def prepare_run_dir(out: str | Path, overwrite: bool = False, marker: str = FINISHED_MARKER) -> Path:
    """Create ``out`` for a run; refuse if it already holds a finished run (``marker`` present).

    An unfinished directory (no marker) is reused so that checkpoints inside it can be resumed.
    """
    out = Path(out)
    if (out / marker).exists() and not overwrite:
        raise RunExistsError(
            f"{out} already holds a finished run ({marker} exists); pass --overwrite to replace it"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


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
