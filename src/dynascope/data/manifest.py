"""File checks of the registered tasks under a data root: which files are found, and their SHA-256 against
``MANIFEST.tsv``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dynascope.data.registry import REGISTRY, resolve_data_dir
from dynascope.errors import DataError
from dynascope.runio import sha256_file

MANIFEST = "MANIFEST.tsv"


def task_status(data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Per registered task: name, labels, metrics, eval sets, every file it needs (expected path, found)."""
    root = resolve_data_dir(data_dir)
    out = []
    for defn in REGISTRY.values():
        files = [{"path": f, "expected": str(root / f), "found": (root / f).is_file()} for f in defn.files()]
        out.append(
            {
                "name": defn.name,
                "num_labels": len(defn.label_names),
                "label_names": list(defn.label_names),
                "metrics": list(defn.metrics),
                "ood": list(defn.ood),
                "near_id": list(defn.near_id),
                "files": files,
                "ready": all(f["found"] for f in files),
                "note": defn.note,
            }
        )
    return out


def _read_manifest(path: Path) -> dict[str, str]:
    """``path -> sha256`` from ``MANIFEST.tsv`` (header with ``path`` and ``sha256`` columns)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    header = lines[0].split("\t")
    for column in ("path", "sha256"):
        if column not in header:
            raise DataError(f"the header has no {column!r} column", path=path, line=1, field=column)
    ip, ih = header.index("path"), header.index("sha256")
    out = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != len(header):
            raise DataError(
                f"expected {len(header)} tab-separated columns, found {len(cols)}", path=path, line=lineno
            )
        out[cols[ip]] = cols[ih].strip().lower()
    return out


def verify_files(data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Each registered file's SHA-256 against ``MANIFEST.tsv`` in the data root, when the manifest lists it.

    Rows: ``path``, ``found``, ``sha256`` (None if missing), ``expected_sha256`` (None without a manifest
    entry) and ``ok``: True on a match, False on a mismatch or a missing file, None when there is nothing to
    compare.
    """
    root = resolve_data_dir(data_dir)
    manifest = _read_manifest(root / MANIFEST) if (root / MANIFEST).is_file() else {}
    files = dict.fromkeys(f for defn in REGISTRY.values() for f in defn.files())
    out = []
    for rel in files:
        path = root / rel
        found = path.is_file()
        actual = sha256_file(path) if found else None
        expected = manifest.get(rel)
        ok = False if not found else (None if expected is None else actual == expected)
        out.append({"path": rel, "found": found, "sha256": actual, "expected_sha256": expected, "ok": ok})
    return out
