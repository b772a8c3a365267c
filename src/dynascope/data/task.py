"""The task types: a ``Split`` (texts, optional pairs, class indices, origin) and a ``Task`` (label names,
train/val/test splits, OOD and near-ID sets, extra metrics).

Both are frozen dataclasses that validate themselves; nothing here reads files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dynascope.errors import ConfigError, DataError

METRICS: tuple[str, ...] = ("mcc", "f1", "macro_f1")
"""Extra metrics a task may ask for besides accuracy."""


@dataclass(frozen=True)
class Split:
    """One labelled set of examples: texts, optional second texts (pair tasks), class indices, origin."""

    name: str
    texts: tuple[str, ...]
    pairs: tuple[str, ...] | None
    labels: tuple[int, ...]
    source: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "texts", tuple(self.texts))
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.pairs is not None:
            object.__setattr__(self, "pairs", tuple(self.pairs))
        n = len(self.texts)
        if n == 0:
            raise DataError(f"split {self.name!r} ({self.source}) is empty")
        if len(self.labels) != n:
            raise DataError(f"split {self.name!r}: {n} texts but {len(self.labels)} labels")
        if self.pairs is not None and len(self.pairs) != n:
            raise DataError(f"split {self.name!r}: {n} texts but {len(self.pairs)} pairs")
        if not all(type(y) is int and y >= 0 for y in self.labels):
            bad = next(y for y in self.labels if type(y) is not int or y < 0)
            raise DataError(f"split {self.name!r}: labels must be class indices (int >= 0), found {bad!r}")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int], name: str | None = None) -> Split:
        """The rows at ``indices`` (in that order) as a new split; its source records the selection size."""
        n = len(self)
        idx = [int(i) for i in indices]
        for i in idx:
            if not 0 <= i < n:
                raise IndexError(f"index {i} out of range for split {self.name!r} of {n} rows")
        return Split(
            name=self.name if name is None else name,
            texts=tuple(self.texts[i] for i in idx),
            pairs=None if self.pairs is None else tuple(self.pairs[i] for i in idx),
            labels=tuple(self.labels[i] for i in idx),
            source=f"{self.source} [{len(idx)} of {n} rows]",
        )


@dataclass(frozen=True)
class Task:
    """A classification task: label names, train/val/test splits, OOD and near-ID evaluation sets, metrics."""

    name: str
    label_names: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    ood: dict[str, Split]
    near_id: dict[str, Split]
    metrics: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_names", tuple(self.label_names))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        if len(self.label_names) < 2 or len(set(self.label_names)) != len(self.label_names):
            raise ConfigError(
                f"task {self.name!r}: expected at least 2 distinct label names, found {self.label_names}"
            )
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ConfigError(
                f"task {self.name!r}: unknown metrics {unknown}; expected a subset of {list(METRICS)}"
            )
        for split in self.splits().values():
            top = max(split.labels)
            if top >= self.num_labels:
                raise DataError(
                    f"task {self.name!r}: split {split.name!r} has label index {top}, "
                    f"but the task has {self.num_labels} labels {self.label_names}"
                )

    @property
    def num_labels(self) -> int:
        """Number of classes C."""
        return len(self.label_names)

    def splits(self) -> dict[str, Split]:
        """Every split by its run-directory key: train, val, test, ood.NAME, near_id.NAME."""
        out = {"train": self.train, "val": self.val, "test": self.test}
        out.update({f"ood.{k}": v for k, v in self.ood.items()})
        out.update({f"near_id.{k}": v for k, v in self.near_id.items()})
        return out
