"""The task registry: which files make a task, how they split into train/val/test, and its OOD suites.

Splits follow the LP-FT NTK paper (Tomihari & Sato 2024, §5.1): the original training file is split 9:1 as
``train_test_split(test_size=0.1, shuffle=False)`` does, so validation is the *last* ``ceil(0.1 n)`` rows of
the file and nothing is shuffled; the original validation/dev file becomes the test set. Exceptions, from the
shared data README:

- ``sst2`` trains on all of GLUE SST-2 train (67349), validates on GLUE dev (872) and tests on the 1821 SST
  test sentences (``sentence/sst2/dev.tsv``). OOD: CR (both files) and UCI Amazon. MR is reported as
  *near-ID*, never as OOD: SST was built from the same Rotten Tomatoes snippets, 5,635 MR snippets occur
  verbatim in SST-2 train and 731 of the 872 GLUE dev sentences are in MR, so MR accuracy measures in-domain
  recall, not robustness to a shift.
- ``sst5``/``sst5-3`` use SST-5's own train/dev/test; ``sst5-3`` maps 1-2 to negative, 3 to neutral, 4-5 to
  positive and has TweetEval sentiment test (SemEval-2017 4A) as OOD.
- ``semeval17`` has no train file here (TweetEval's train tweets are missing), so its train/val are the 9:1
  split of TweetEval's validation files and its test is TweetEval test.
- ``amazon-uci`` is a single 1000-row file: test is its last 10 %, val the 10 % before that, train the rest.

The data root comes from ``--data-dir`` or ``$DYNASCOPE_DATA``. A user task is a YAML/JSON spec file
(see :func:`load_task`) whose file paths are relative to the spec.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dynascope.data.readers import FORMATS, Record, label_string, read_format, read_tweeteval
from dynascope.errors import ConfigError, DataError
from dynascope.runio import sha256_file

ENV_VAR = "DYNASCOPE_DATA"
METRICS: tuple[str, ...] = ("mcc", "f1", "macro_f1")
"""Extra metrics a task may ask for besides accuracy."""
HOLDOUT_FRACTION = 0.1
MANIFEST = "MANIFEST.tsv"
_ROOT_HINT = f"set the data root with --data-dir or the {ENV_VAR} environment variable"


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


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The data root: ``data_dir`` if given, else ``$DYNASCOPE_DATA``; it must be an existing directory."""
    if data_dir is not None and str(data_dir) != "":
        origin, value = "--data-dir", str(data_dir)
    else:
        value = os.environ.get(ENV_VAR, "")
        origin = f"${ENV_VAR}"
        if not value:
            raise DataError(f"no data root given; {_ROOT_HINT} (for example {ENV_VAR}=/path/to/data)")
    root = Path(value).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} (from {origin}) is not a directory; {_ROOT_HINT}")
    return root


def tail_split(n: int, fraction: float = HOLDOUT_FRACTION) -> int:
    """Rows held out at the end of an ``n``-row file: ``ceil(fraction * n)``, as in sklearn's split."""
    return math.ceil(fraction * n)


def stratified_subset(labels: Sequence[int], k: int, seed: int) -> list[int]:
    """Sorted indices of ``k`` rows drawn without replacement, class proportions kept (seeded, deterministic).

    Per-class quotas are ``floor(k n_c / n)`` plus one for the largest remainders (ties: lower class first);
    when ``k`` is at least the number of classes, a class left at zero takes one row from the largest quota,
    so no class vanishes. Rows within a class are drawn by a ``numpy`` generator seeded with ``seed``.
    """
    if type(k) is not int or k < 1:
        raise ConfigError(f"max_train must be a positive integer, found {k!r}")
    y = np.asarray(labels)
    n = len(y)
    if k >= n:
        return list(range(n))
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * k / n
    quota = np.floor(exact).astype(np.int64)
    by_remainder = sorted(range(len(classes)), key=lambda c: (-(exact[c] - quota[c]), c))
    for c in by_remainder[: k - int(quota.sum())]:
        quota[c] += 1
    if k >= len(classes):
        for c in np.flatnonzero(quota == 0):
            quota[int(np.argmax(quota))] -= 1
            quota[c] = 1
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for c, q in zip(classes, quota, strict=True):
        members = np.flatnonzero(y == c)
        chosen.extend(int(i) for i in rng.permutation(members)[:q])
    return sorted(chosen)


@dataclass(frozen=True)
class _Part:
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
class _TaskDef:
    """How to build a task from files: the label map (raw label -> index), the parts of each split, metrics.

    ``val=None`` takes val from the tail of train (9:1); ``test=None`` takes test from the tail of train, and
    with ``val=None`` too, val is the 10 % before it (80/10/10 in file order).
    """

    name: str
    label_names: tuple[str, ...]
    label_map: Mapping[str, int]
    train: tuple[_Part, ...]
    test: tuple[_Part, ...] | None
    val: tuple[_Part, ...] | None = None
    ood: Mapping[str, tuple[_Part, ...]] = field(default_factory=dict)
    near_id: Mapping[str, tuple[_Part, ...]] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()
    note: str = ""

    def parts(self) -> list[_Part]:
        groups = [self.train, self.val or (), self.test or (), *self.ood.values(), *self.near_id.values()]
        return [p for group in groups for p in group]

    def files(self) -> list[str]:
        return list(dict.fromkeys(f for p in self.parts() for f in p.files))


def _one(fmt: str, *files: str, **fields: Any) -> tuple[_Part, ...]:
    """One part per file, all in format ``fmt`` (TweetEval: one part from a text file and a labels file)."""
    if fmt == "tweeteval":
        return (_Part(fmt, files, **fields),)
    return tuple(_Part(fmt, (f,), **fields) for f in files)


_BINARY = ("negative", "positive")
_BINARY_MAP = {"0": 0, "1": 1}
_SST5_NAMES = ("very negative", "negative", "neutral", "positive", "very positive")
_THREE = ("negative", "neutral", "positive")
_TWEETEVAL_MAP = {"0": 0, "1": 1, "2": 2}


def _sentence_task(name: str, label_names: tuple[str, ...] = _BINARY, note: str = "") -> _TaskDef:
    folder = f"sentence/{name}"
    return _TaskDef(
        name,
        label_names,
        _BINARY_MAP,
        train=_one("label-text", f"{folder}/train.tsv"),
        test=_one("label-text", f"{folder}/dev.tsv"),
        note=note or f"{folder}: train.tsv split 9:1 (val = last 10 %), dev.tsv as test",
    )


_REGISTRY: dict[str, _TaskDef] = {
    t.name: t
    for t in (
        _TaskDef(
            "cb",
            ("entailment", "contradiction", "neutral"),
            {"entailment": 0, "contradiction": 1, "neutral": 2},
            train=_one("jsonl", "superglue/cb/train.jsonl", text_field="premise", pair_field="hypothesis"),
            test=_one("jsonl", "superglue/cb/val.jsonl", text_field="premise", pair_field="hypothesis"),
            metrics=("macro_f1",),
            note="SuperGLUE CB (premise, hypothesis): train 9:1 -> 225/25 (the last 25 rows hold no neutral "
            "example), SuperGLUE val (56) as test",
        ),
        _TaskDef(
            "rte",
            ("entailment", "not_entailment"),
            {"entailment": 0, "not_entailment": 1},
            train=_one("glue-tsv", "glue/rte/train.tsv", text_field="sentence1", pair_field="sentence2"),
            test=_one("glue-tsv", "glue/rte/dev.tsv", text_field="sentence1", pair_field="sentence2"),
            note="GLUE RTE (premise, hypothesis): train 9:1 -> 2241/249, dev (277) as test",
        ),
        _TaskDef(
            "sst2",
            _BINARY,
            _BINARY_MAP,
            train=_one("glue-tsv", "glue/sst2/train.tsv", text_field="text"),
            val=_one("glue-tsv", "glue/sst2/dev.tsv", text_field="text"),
            test=_one("label-text", "sentence/sst2/dev.tsv"),
            ood={
                "cr": _one("label-text", "sentence/cr/train.tsv", "sentence/cr/dev.tsv"),
                "amazon-uci": _one("text-label", "uci_sentiment/amazon_cells_labelled.txt"),
            },
            near_id={"mr": _one("label-text", "sentence/mr/train.tsv", "sentence/mr/dev.tsv")},
            note="GLUE SST-2 train (all) / GLUE dev / SST test sentences; OOD cr, amazon-uci; "
            "MR near-ID (shares Rotten Tomatoes snippets with SST), never OOD",
        ),
        _sentence_task("mr"),
        _sentence_task("cr"),
        _sentence_task("mpqa"),
        _sentence_task(
            "subj",
            ("subjective", "objective"),
            "sentence/subj (0 subjective, 1 objective): train 9:1, dev.tsv as test",
        ),
        _TaskDef(
            "cola",
            ("unacceptable", "acceptable"),
            _BINARY_MAP,
            train=_one("text-label", "sentence/cola/train.tsv"),
            test=_one("text-label", "sentence/cola/dev.tsv"),
            metrics=("mcc",),
            note="CoLA: train 9:1, dev (516, out-of-domain part only) as test",
        ),
        _TaskDef(
            "mrpc",
            ("not_paraphrase", "paraphrase"),
            _BINARY_MAP,
            train=_one("msr", "mrpc/msr_paraphrase_train.txt"),
            test=_one("msr", "mrpc/msr_paraphrase_test.txt"),
            metrics=("f1",),
            note="MSR paraphrase (#1 String, #2 String): train 9:1, original test (1725) as test",
        ),
        _TaskDef(
            "sst5",
            _SST5_NAMES,
            {str(k): k - 1 for k in range(1, 6)},
            train=_one("fasttext", "sst5/sst_train.txt"),
            val=_one("fasttext", "sst5/sst_dev.txt"),
            test=_one("fasttext", "sst5/sst_test.txt"),
            note="SST-5 sentences: train/dev/test as given",
        ),
        _TaskDef(
            "sst5-3",
            _THREE,
            {"1": 0, "2": 0, "3": 1, "4": 2, "5": 2},
            train=_one("fasttext", "sst5/sst_train.txt"),
            val=_one("fasttext", "sst5/sst_dev.txt"),
            test=_one("fasttext", "sst5/sst_test.txt"),
            ood={
                "semeval17": _one(
                    "tweeteval",
                    "tweeteval/sentiment/test_text.txt",
                    "tweeteval/sentiment/test_labels.txt",
                    label_map=_TWEETEVAL_MAP,
                )
            },
            note="SST-5 mapped 1-2 negative, 3 neutral, 4-5 positive; OOD semeval17 (TweetEval test)",
        ),
        _TaskDef(
            "semeval17",
            _THREE,
            _TWEETEVAL_MAP,
            train=_one("tweeteval", "tweeteval/sentiment/val_text.txt", "tweeteval/sentiment/val_labels.txt"),
            test=_one(
                "tweeteval", "tweeteval/sentiment/test_text.txt", "tweeteval/sentiment/test_labels.txt"
            ),
            note="TweetEval sentiment (SemEval-2017 4A): val files split 9:1 (no train tweets here), test",
        ),
        _TaskDef(
            "amazon-uci",
            _BINARY,
            _BINARY_MAP,
            train=_one("text-label", "uci_sentiment/amazon_cells_labelled.txt"),
            test=None,
            note="UCI Amazon (one file, file order): test = last 10 %, val = the 10 % before, train = rest",
        ),
    )
}


def task_names() -> list[str]:
    """Names of the registered tasks, in registry order."""
    return list(_REGISTRY)


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


def _read_parts(parts: Sequence[_Part], root: Path, task_map: Mapping[str, int]) -> _Rows:
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


def _check_files(defn: _TaskDef, root: Path, hint: str) -> None:
    missing = [root / f for f in defn.files() if not (root / f).is_file()]
    if missing:
        listed = ", ".join(str(p) for p in missing)
        raise DataError(f"task {defn.name!r} needs files that are missing: {listed}; {hint}", path=missing[0])


def _build(defn: _TaskDef, root: Path, hint: str) -> Task:
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


_SPEC_KEYS = (
    "name", "format", "text_field", "pair_field", "label_field", "labels", "label_names",
    "train", "val", "test", "ood", "near_id", "metrics",
)  # fmt: skip
_SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def _parse_spec_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError("task spec not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read task spec: {exc}", path=path) from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"invalid JSON: {exc.msg} at column {exc.colno}", path=path, line=exc.lineno
            ) from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise DataError(f"invalid YAML: {problem}", path=path, line=line) from None


def _spec_files(value: Any, path: Path, key: str) -> tuple[str, ...]:
    """A spec's file entry: one path or a non-empty list (read one after another); relative to the spec."""
    files = [value] if isinstance(value, str) else value
    if not isinstance(files, list) or not files or not all(isinstance(f, str) and f.strip() for f in files):
        raise DataError(
            f"expected a file path or a list of file paths, found {value!r}", path=path, field=key
        )
    return tuple(files)


def _spec_str(spec: Mapping[str, Any], key: str, path: Path, default: str | None = None) -> str | None:
    value = spec.get(key, default)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise DataError(f"expected a non-empty string, found {value!r}", path=path, field=key)
    return value


def _spec_sets(
    spec: Mapping[str, Any], key: str, path: Path, parts: Callable[[tuple[str, ...]], tuple[_Part, ...]]
) -> dict[str, tuple[_Part, ...]]:
    """The ``ood``/``near_id`` entry of a spec: ``{NAME: FILE or [FILE, ...]}``."""
    value = spec.get(key, {})
    if not isinstance(value, dict):
        raise DataError(f"expected a mapping NAME: FILE, found {value!r}", path=path, field=key)
    out = {}
    for name, files in value.items():
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"expected non-empty set names, found {name!r}", path=path, field=key)
        out[name] = parts(_spec_files(files, path, f"{key}.{name}"))
    return out


def _load_spec(path: Path) -> _TaskDef:
    """Validate a user task spec (every key, at the edge) and turn it into a task definition."""
    spec = _parse_spec_file(path)
    if not isinstance(spec, dict):
        raise DataError(
            f"expected a mapping of spec keys at the top level, found {type(spec).__name__}", path=path
        )
    for key in spec:
        if key not in _SPEC_KEYS:
            raise DataError(
                f"unknown key {key!r}; allowed keys: {', '.join(_SPEC_KEYS)}", path=path, field=str(key)
            )
    for key in ("name", "format", "labels", "train", "test"):
        if key not in spec:
            raise DataError("required key is missing", path=path, field=key)
    name = _spec_str(spec, "name", path)
    fmt = _spec_str(spec, "format", path)
    if fmt not in FORMATS:
        raise DataError(
            f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}", path=path, field="format"
        )
    named = fmt in ("jsonl", "glue-tsv")
    for key in ("text_field", "pair_field", "label_field"):
        if key in spec and not named:
            raise DataError(
                f"format {fmt!r} has fixed columns; {key} applies to jsonl and glue-tsv only",
                path=path,
                field=key,
            )
    if named and "text_field" not in spec:
        raise DataError(
            f"format {fmt!r} needs text_field (the column or key of the text)", path=path, field="text_field"
        )
    text_field = _spec_str(spec, "text_field", path)
    pair_field = _spec_str(spec, "pair_field", path)
    label_field = _spec_str(spec, "label_field", path, "label") if named else "label"

    raw = spec["labels"]
    try:
        labels = [label_string(v) for v in raw] if isinstance(raw, list) else None
    except TypeError:
        labels = None
    if labels is None or len(labels) < 2 or len(set(labels)) != len(labels):
        raise DataError(
            f"expected a list of at least 2 distinct labels (strings, integers or booleans) as "
            f"written in the files, found {raw!r}",
            path=path,
            field="labels",
        )
    names = spec.get("label_names", labels)
    valid = isinstance(names, list) and all(isinstance(v, str) and v.strip() for v in names)
    if not valid or len(names) != len(labels) or len(set(names)) != len(names):
        booleans = isinstance(names, list) and any(isinstance(v, bool) for v in names)
        hint = " (quote them: YAML reads yes/no/on/off as booleans)" if booleans else ""
        raise DataError(
            f"expected {len(labels)} distinct non-empty names, one per label, found {names!r}{hint}",
            path=path,
            field="label_names",
        )
    metrics = spec.get("metrics", [])
    if not isinstance(metrics, list) or any(m not in METRICS for m in metrics):
        raise DataError(
            f"expected a list drawn from {list(METRICS)}, found {metrics!r}", path=path, field="metrics"
        )

    def parts(files: tuple[str, ...]) -> tuple[_Part, ...]:
        fields = (
            {"text_field": text_field, "pair_field": pair_field, "label_field": label_field} if named else {}
        )
        return _one(fmt, *files, **fields)

    return _TaskDef(
        name=name,
        label_names=tuple(names),
        label_map={raw_label: i for i, raw_label in enumerate(labels)},
        train=parts(_spec_files(spec["train"], path, "train")),
        val=parts(_spec_files(spec["val"], path, "val")) if "val" in spec else None,
        test=parts(_spec_files(spec["test"], path, "test")),
        ood=_spec_sets(spec, "ood", path, parts),
        near_id=_spec_sets(spec, "near_id", path, parts),
        metrics=tuple(metrics),
        note=f"user task spec {path.name}",
    )


def _limit_train(task: Task, max_train: int | None, seed: int) -> Task:
    if max_train is None:
        return task
    if type(seed) is not int:
        raise ConfigError(f"seed must be an integer, found {seed!r}")
    keep = stratified_subset(task.train.labels, max_train, seed)
    if len(keep) == len(task.train):
        return task
    train = task.train.subset(keep)
    source = f"{task.train.source} [stratified {len(keep)} of {len(task.train)} rows, seed {seed}]"
    return replace(task, train=replace(train, source=source))


def load_task(
    name_or_spec: str, data_dir: str | Path | None = None, *, max_train: int | None = None, seed: int = 0
) -> Task:
    """Build a task by registered name (files under the data root) or from a YAML/JSON task spec file.

    A spec holds ``name``, ``format`` (one of ``FORMATS``), ``labels`` (the raw labels as written in the
    files, in class-index order), ``train`` and ``test`` (a path or list of paths relative to the spec), and
    optionally ``val`` (else the last 10 % of train), ``label_names``, ``text_field``/``pair_field``/
    ``label_field`` (jsonl and glue-tsv only; ``label_field`` defaults to ``label``), ``ood`` and ``near_id``
    (``{NAME: FILE}``) and ``metrics``. Unknown keys are an error.

    ``data_dir`` (else ``$DYNASCOPE_DATA``) is the root of registered tasks; a spec ignores it.
    ``max_train`` keeps a stratified, seeded subset of train; val, test and the OOD sets are untouched.
    """
    if max_train is not None and (type(max_train) is not int or max_train < 1):
        raise ConfigError(f"max_train must be a positive integer or None, found {max_train!r}")
    if name_or_spec in _REGISTRY:
        root = resolve_data_dir(data_dir)
        task = _build(_REGISTRY[name_or_spec], root, f"expected under the data root {root}; {_ROOT_HINT}")
    else:
        path = Path(name_or_spec).expanduser()
        if path.suffix.lower() not in _SPEC_SUFFIXES and not path.is_file():
            raise ConfigError(
                f"unknown task {name_or_spec!r}; known tasks: {', '.join(_REGISTRY)} "
                f"(or give the path of a task spec file: {', '.join(_SPEC_SUFFIXES)})"
            )
        defn = _load_spec(path)
        task = _build(defn, path.parent, f"paths in task spec {path} are relative to its folder")
    return _limit_train(task, max_train, seed)


def task_status(data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Per registered task: name, labels, metrics, eval sets, every file it needs (expected path, found)."""
    root = resolve_data_dir(data_dir)
    out = []
    for defn in _REGISTRY.values():
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
    files = dict.fromkeys(f for defn in _REGISTRY.values() for f in defn.files())
    out = []
    for rel in files:
        path = root / rel
        found = path.is_file()
        actual = sha256_file(path) if found else None
        expected = manifest.get(rel)
        ok = False if not found else (None if expected is None else actual == expected)
        out.append({"path": rel, "found": found, "sha256": actual, "expected_sha256": expected, "ok": ok})
    return out
