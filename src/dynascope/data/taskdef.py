"""Task definitions: which files (parts) make each split of a task, and building the ``Task`` from them.

A ``TaskDef`` comes from the built-in registry (:mod:`dynascope.data.registry`) or from a user task spec
(:mod:`dynascope.data.spec`); ``build_task`` reads its files under a root and cuts the splits, taking val
and/or test from the tail of train when the definition has none (``tail_split``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynascope.data.readers import Record, read_format, read_tweeteval, shorten
from dynascope.data.sampling import tail_split
from dynascope.data.task import Split, Task
from dynascope.errors import DataError


@dataclass(frozen=True)
class Part:
    """One input file of a split (two for TweetEval: text then labels), relative to the task's root.

    ``label_map`` overrides the task's raw-label map for this file (an OOD set whose file encodes the same
    classes differently, such as TweetEval's 0/1/2 under SST-5's 1..5).
    """

    fmt: str
    files: tuple[str, ...]
    text_field: str | None = None
    pair_field: str | None = None
    label_field: str = "label"
    label_map: Mapping[str, int] | None = None

    def describe(self) -> str:
        if self.fmt == "tweeteval":
            return f"{self.files[0]} (labels: {Path(self.files[1]).name})"
        return self.files[0]


@dataclass(frozen=True)
class TaskDef:
    """How to build a task from files: the label map (raw label -> index), the parts of each split, metrics.

    ``val=None`` takes val from the tail of train (9:1); ``test=None`` takes test from the tail of train, and
    with ``val=None`` too, val is the 10 % before it (80/10/10 in file order).
    """

    name: str
    label_names: tuple[str, ...]
    label_map: Mapping[str, int]
    train: tuple[Part, ...]
    test: tuple[Part, ...] | None
    val: tuple[Part, ...] | None = None
    ood: Mapping[str, tuple[Part, ...]] = field(default_factory=dict)
    near_id: Mapping[str, tuple[Part, ...]] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()
    note: str = ""

    def parts(self) -> list[Part]:
        groups = [self.train, self.val or (), self.test or (), *self.ood.values(), *self.near_id.values()]
        return [p for group in groups for p in group]

    def files(self) -> list[str]:
        return list(dict.fromkeys(f for p in self.parts() for f in p.files))


def file_parts(fmt: str, *files: str, **fields: Any) -> tuple[Part, ...]:
    """One part per file, all in format ``fmt`` (TweetEval: one part from a text file and a labels file)."""
    if fmt == "tweeteval":
        return (Part(fmt, files, **fields),)
    return tuple(Part(fmt, (f,), **fields) for f in files)


@dataclass(frozen=True)
class _Rows:
    """Records of one or more parts, labels mapped to indices, with per-part row counts for ``source``."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[int]
    segments: list[tuple[str, int]]

    def split(self, name: str, start: int, stop: int) -> Split:
        pieces, offset = [], 0
        for where, count in self.segments:
            lo, hi = max(start, offset), min(stop, offset + count)
            if lo < hi:
                pieces.append(f"{where} rows {lo - offset + 1}-{hi - offset}")
            offset += count
        return Split(
            name=name,
            texts=tuple(self.texts[start:stop]),
            pairs=None if self.pairs is None else tuple(self.pairs[start:stop]),
            labels=tuple(self.labels[start:stop]),
            source=" + ".join(pieces),
        )

    def whole(self, name: str) -> Split:
        return self.split(name, 0, len(self.texts))


def _read_parts(parts: Sequence[Part], root: Path, task_map: Mapping[str, int]) -> _Rows:
    """Read ``parts`` one after another and map their raw labels to class indices."""
    records: list[Record] = []
    labels: list[int] = []
    segments: list[tuple[str, int]] = []
    for part in parts:
        label_map = task_map if part.label_map is None else part.label_map
        allowed = tuple(label_map)
        paths = [root / f for f in part.files]
        if part.fmt == "tweeteval":
            got = read_tweeteval(paths[0], paths[1], labels=allowed)
        else:
            got = read_format(
                part.fmt,
                paths[0],
                text_field=part.text_field,
                pair_field=part.pair_field,
                label_field=part.label_field,
                labels=allowed,
            )
        records.extend(got)
        labels.extend(label_map[r.label] for r in got)
        segments.append((part.describe(), len(got)))
    pairs = [r.pair for r in records if r.pair is not None]
    if pairs and len(pairs) != len(records):
        raise DataError(f"{' + '.join(w for w, _ in segments)}: some rows have a second text and some do not")
    return _Rows(
        texts=[r.text for r in records],
        pairs=pairs or None,
        labels=labels,
        segments=segments,
    )


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; a name the system cannot look up (too long, a NUL) is a ``DataError``."""
    try:
        return path.is_file()
    except OSError as exc:
        raise DataError(f"cannot look up the file: {exc.strerror or exc}", path=_shown_path(path)) from None


def _shown_path(path: Path) -> str:
    """``path`` as text, quoted when it holds characters that would break a one-line message."""
    return str(path) if str(path).isprintable() else repr(str(path))


def _check_files(defn: TaskDef, root: Path, hint: str) -> None:
    missing = [_shown_path(root / f) for f in defn.files() if not _is_file(root / f)]
    if missing:
        listed = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"task {defn.name!r} needs files that are missing: {listed}; {hint}", path=missing[0])


def build_task(defn: TaskDef, root: Path, hint: str) -> Task:
    """Read every file of ``defn`` under ``root`` and cut the splits."""
    _check_files(defn, root, hint)
    rows = _read_parts(defn.train, root, defn.label_map)
    n = len(rows.texts)
    hold = tail_split(n)
    held_out = (defn.val is None) + (defn.test is None)
    n_train = n - held_out * hold
    if n_train <= 0:
        raise DataError(
            f"task {defn.name!r}: {rows.segments[0][0]} has {n} rows, too few to hold out val/test"
        )
    train = rows.split("train", 0, n_train)
    if len(set(train.labels)) < 2:
        only = defn.label_names[train.labels[0]]
        raise DataError(
            f"task {defn.name!r}: the training split ({train.source}) holds one class only, "
            f"{shorten(only)}; a classifier needs at least 2",
            path=root / defn.train[0].files[-1],
        )
    if defn.val is None:
        val = rows.split("val", n_train, n_train + hold)
    else:
        val = _read_parts(defn.val, root, defn.label_map).whole("val")
    if defn.test is None:
        test = rows.split("test", n - hold, n)
    else:
        test = _read_parts(defn.test, root, defn.label_map).whole("test")
    return Task(
        name=defn.name,
        label_names=defn.label_names,
        train=train,
        val=val,
        test=test,
        ood={k: _read_parts(p, root, defn.label_map).whole(k) for k, p in defn.ood.items()},
        near_id={k: _read_parts(p, root, defn.label_map).whole(k) for k, p in defn.near_id.items()},
        metrics=defn.metrics,
    )
