"""A folder of finished block kernels (one safetensors file per block), the ``KernelStore`` the CLI uses.

Each file carries the fingerprint of the computation (inputs, head, trainable state, partition) in its
metadata; a file with another fingerprint is ignored, so a rerun with different inputs recomputes
instead of resuming into a wrong kernel. Files are written atomically through ``runio``.
"""

from __future__ import annotations

import re
from pathlib import Path

from safetensors import safe_open
from torch import Tensor

from dynascope.runio import write_safetensors


class CheckpointFolder:
    """``KernelStore`` backed by ``folder/<block>.safetensors``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / (re.sub(r"[^A-Za-z0-9_.-]", "_", key) + ".safetensors")

    def load(self, key: str, fingerprint: str) -> Tensor | None:
        """The saved kernel of block ``key`` if it exists with this fingerprint."""
        path = self._path(key)
        if not path.exists():
            return None
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("fingerprint") != fingerprint or meta.get("key") != key:
                return None
            return fh.get_tensor("kernel")

    def save(self, key: str, kernel: Tensor, fingerprint: str) -> None:
        """Write block ``key`` atomically."""
        write_safetensors(self._path(key), {"kernel": kernel}, metadata={"fingerprint": fingerprint, "key": key})

    def finished(self) -> list[str]:
        """Keys of the blocks on disk (whatever their fingerprint)."""
        return sorted(p.name.removesuffix(".safetensors") for p in self.folder.glob("*.safetensors"))
