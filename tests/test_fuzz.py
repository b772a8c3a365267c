"""Fuzz tests (hypothesis) for every reader, the user task-spec parser and the Sudoku pool reader.

Three properties, each over generated files in a temporary folder:
(a) arbitrary bytes never raise anything but ``DataError``/``ConfigError``, and every message is one short,
    printable line; (b) structured mutations of a valid file (a NUL, a BOM mid-file, a dropped or duplicated
    column, CR-only endings, a truncation, a duplicated JSON key, a random label) never raise anything else,
    and the mutations that break a rule are refused; (c) valid generated files read back exactly.
Runs are derandomized (reproducible in CI) and sized to finish in well under two minutes on two cores.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynascope.data import FORMATS, Record, load_task, read_format, read_tweeteval, tail_split
from dynascope.dynamics.sudoku import SPLIT_NAMES, SudokuBuildConfig, allocate_sources, read_pool
from dynascope.errors import ConfigError, DataError


def fuzz(examples: int) -> settings:
    """Reproducible settings: fixed example count, no deadline (shared CI cores), no example database."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the whole module (hypothesis runs many examples per test; files are overwritten)."""
    return tmp_path_factory.mktemp("fuzz")


def refused(call: Callable[[], Any], one_line: bool = True) -> DataError | ConfigError | None:
    """Run ``call``; return the DataError/ConfigError it raised (checked to be one short line) or None.

    Any other exception propagates, which is what the fuzz tests look for. ``one_line=False`` skips the
    printable check, for file names with control characters (``DataError`` prints a path as it is given).
    """
    try:
        call()
    except (DataError, ConfigError) as exc:
        message = str(exc)
        assert message.isprintable() or not one_line, message  # one line: no newline or other line break
        assert len(message) < 800, message
        return exc
    return None


# ------------------------------------------------------------------------------------------ readers

LABELS = ("0", "1", "neg", "pos")


def read(fmt: str, path: Path, labels: tuple[str, ...] | None = None) -> list[Record]:
    """Read ``path`` in ``fmt``; jsonl and glue-tsv name the fields ``text``, ``pair``, ``label``."""
    fields = {"text_field": "text", "pair_field": "pair"} if fmt in ("jsonl", "glue-tsv") else {}
    return read_format(fmt, path, labels=labels, **fields)


PAIRED = ("jsonl", "glue-tsv", "msr")
"""Formats whose generated records carry a second text."""

MSR_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"

TOKENS = [
    b"\t", b"\n", b"\r\n", b"\r", b"\x00", codecs.BOM_UTF8, b"\xff\xfe", b"\xe9", b"\xc3\xa9", b" ",
    b'{"text": "a", "pair": "b", "label": "0"}', b'{"', b'"', b":", b",", b"{", b"}", b"[", b"]",
    b"\\u0000", b"\\ud800", b"\\", b"true", b"null", b"1e999", b"1", b"0", b"pos", b"__label__", b"__label__1",
    b"text", b"pair", b"label", b"index", b"Quality", b"#1 ID", b"a text", b"\x0c", b"\xe2\x80\xa8",
]  # fmt: skip
"""Pieces that matter to some reader: separators, line endings, BOMs, JSON syntax, header names."""

noisy_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join),
)


@fuzz(600)
@given(fmt=st.sampled_from(FORMATS), data=noisy_bytes, restrict=st.booleans())
def test_arbitrary_bytes_only_raise_data_errors(folder: Path, fmt: str, data: bytes, restrict: bool) -> None:
    path = folder / "input.txt"
    path.write_bytes(data)
    refused(lambda: read(fmt, path, LABELS if restrict else None))


@fuzz(200)
@given(texts=noisy_bytes, labels=noisy_bytes, restrict=st.booleans())
def test_arbitrary_tweeteval_files_only_raise_data_errors(
    folder: Path, texts: bytes, labels: bytes, restrict: bool
) -> None:
    text_path, labels_path = folder / "text.txt", folder / "labels.txt"
    text_path.write_bytes(texts)
    labels_path.write_bytes(labels)
    refused(lambda: read_tweeteval(text_path, labels_path, labels=LABELS if restrict else None))


def cell_text(exclude: str = "") -> st.SearchStrategy[str]:
    """Text of one TSV cell: anything but tab, line endings, NUL and BOM (form feeds, U+2028 and the like
    stay, since lines are split on LF only)."""
    return st.text(st.characters(exclude_characters="\t\n\r\x00\ufeff" + exclude, codec="utf-8"), max_size=20)


label_text = cell_text().filter(lambda s: s and s.strip() == s and s != "Quality")
fasttext_label = label_text.filter(lambda s: not any(c.isspace() for c in s))


def format_line(fmt: str, i: int, text: str, pair: str | None, label: str, fasttext_sep: str) -> str:
    """Row ``i`` of a file in ``fmt``."""
    if fmt == "jsonl":
        return json.dumps({"idx": i, "text": text, "pair": pair, "label": label}, ensure_ascii=False)
    return {
        "glue-tsv": f"{i}\t{text}\t{pair}\t{label}",
        "label-text": f"{label}\t{text}",
        "text-label": f"{text}\t{label}",
        "fasttext": f"__label__{label}{fasttext_sep}{text}",
        "msr": f"{label}\t{i}\t{i + 1}\t{text}\t{pair}",
    }[fmt]


@st.composite
def valid_file(draw: st.DrawFn, fmt: str) -> tuple[bytes, list[Record]]:
    """A valid file in ``fmt`` (optionally with a leading BOM, CRLF endings, an MSR header) and its records."""
    n = draw(st.integers(1, 6))
    labels = draw(st.lists(fasttext_label if fmt == "fasttext" else label_text, min_size=n, max_size=n))
    texts = draw(st.lists(cell_text(), min_size=n, max_size=n))
    if fmt == "jsonl":
        texts = draw(st.lists(st.text(st.characters(exclude_characters="\x00\ufeff", codec="utf-8"),
                                      max_size=20), min_size=n, max_size=n))  # fmt: skip
    pairs = draw(st.lists(cell_text(), min_size=n, max_size=n)) if fmt in PAIRED else [None] * n
    space = fmt == "fasttext" and draw(st.booleans())
    if fmt == "fasttext":  # one label per line: a text may not start with a second label
        texts = ["x" + t if t.lstrip().startswith("__label__") else t for t in texts]
    header = {"glue-tsv": ["index\ttext\tpair\tlabel"], "msr": draw(st.sampled_from([[], [MSR_HEADER]]))}
    lines = list(header.get(fmt, []))
    first = len(lines) + 1
    for i, (text, pair, label) in enumerate(zip(texts, pairs, labels, strict=True)):
        lines.append(format_line(fmt, i, text, pair, label, " " if space else "\t"))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    data = "".join(line + ending for line in lines).encode("utf-8")
    if draw(st.booleans()):
        data = codecs.BOM_UTF8 + data
    records = [Record(t, p, lb, first + i) for i, (t, p, lb) in enumerate(zip(texts, pairs, labels, strict=True))]
    return data, records


@fuzz(500)
@given(data=st.data(), fmt=st.sampled_from(FORMATS), restrict=st.booleans())
def test_valid_files_round_trip(folder: Path, data: st.DataObject, fmt: str, restrict: bool) -> None:
    content, records = data.draw(valid_file(fmt))
    path = folder / "valid.txt"
    path.write_bytes(content)
    allowed = tuple(sorted({r.label for r in records})) if restrict else None
    assert read(fmt, path, allowed) == records


MUTATIONS = ("nul", "bom", "double-bom", "drop-column", "duplicate-column", "cr-only", "truncate", "json-key", "label")


def mutate(content: bytes, fmt: str, mutation: str, data: st.DataObject) -> tuple[bytes, bool]:
    """``content`` changed by ``mutation``; also whether the change breaks a rule the reader must enforce."""
    body = content.removeprefix(codecs.BOM_UTF8)
    lines = body.split(b"\n")[:-1]
    row = data.draw(st.integers(0, len(lines) - 1))
    cells = lines[row].removesuffix(b"\r").split(b"\t")
    ending = b"\r" if lines[row].endswith(b"\r") else b""
    at = data.draw(st.integers(0, len(content)))
    if mutation == "nul":
        return content[:at] + b"\x00" + content[at:], True
    if mutation == "bom":  # after the first line's first character, so never the leading BOM
        start = len(content) - len(body) + 1
        at = data.draw(st.integers(start, len(content)))
        return content[:at] + codecs.BOM_UTF8 + content[at:], True
    if mutation == "double-bom":
        return codecs.BOM_UTF8 + codecs.BOM_UTF8 + body, True
    if mutation in ("drop-column", "duplicate-column"):
        if len(cells) < 2:  # JSON Lines: no columns to change
            return content, False
        k = data.draw(st.integers(0, len(cells) - 1))
        cells = cells[:k] + cells[k + 1 :] if mutation == "drop-column" else cells[: k + 1] + cells[k:]
        lines[row] = b"\t".join(cells) + ending
        return b"\n".join(lines) + b"\n", True
    if mutation == "cr-only":
        changed = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r")
        return changed, len(lines) > 1
    if mutation == "truncate":
        return content[:at], False
    if mutation == "json-key":
        if fmt != "jsonl":
            return content, False
        key = data.draw(st.sampled_from([b"idx", b"text", b"pair", b"label"]))
        lines[row] = lines[row].replace(b"{", b'{"' + key + b'": 0, ', 1)
        return b"\n".join(lines) + b"\n", True
    label = data.draw(st.text(max_size=6)).encode("utf-8", "surrogatepass")
    field = {"label-text": 0, "fasttext": 0, "msr": 0, "text-label": -1, "glue-tsv": -1}.get(fmt)
    if field is None:  # JSON Lines: the label value, as a JSON string
        lines[row] = lines[row].replace(b'"label": ', b'"label": "' + label.replace(b'"', b"") + b'", "x": ', 1)
    elif (fmt == "glue-tsv" and row == 0) or (fmt == "msr" and cells[0] == b"Quality"):
        return content, False
    else:
        cells[field] = (b"__label__" if fmt == "fasttext" else b"") + label
        lines[row] = b"\t".join(cells) + ending
    return b"\n".join(lines) + b"\n", False


@fuzz(900)
@given(data=st.data(), fmt=st.sampled_from(FORMATS), mutation=st.sampled_from(MUTATIONS), restrict=st.booleans())
def test_mutated_files_raise_data_errors_only(
    folder: Path, data: st.DataObject, fmt: str, mutation: str, restrict: bool
) -> None:
    content, records = data.draw(valid_file(fmt))
    changed, must_refuse = mutate(content, fmt, mutation, data)
    path = folder / "mutated.txt"
    path.write_bytes(changed)
    allowed = tuple(sorted({r.label for r in records})) if restrict else None
    error = refused(lambda: read(fmt, path, allowed))
    if must_refuse:
        assert error is not None, (mutation, changed)
        assert isinstance(error, DataError) and error.path == str(path)
    if mutation == "json-key" and fmt == "jsonl":
        assert "appears twice" in str(error)


@fuzz(300)
@given(
    data=st.data(),
    side=st.sampled_from(["text", "labels"]),
    mutation=st.sampled_from(["nul", "bom", "double-bom", "cr-only", "truncate"]),
)
def test_tweeteval_round_trip_and_mutations(folder: Path, data: st.DataObject, side: str, mutation: str) -> None:
    n = data.draw(st.integers(1, 6))
    texts = data.draw(st.lists(cell_text(), min_size=n, max_size=n).filter(lambda ts: any(t.strip() for t in ts)))
    labels = data.draw(st.lists(label_text, min_size=n, max_size=n))
    text_path, labels_path = folder / "t.txt", folder / "l.txt"
    files = {"text": "".join(t + "\n" for t in texts).encode(), "labels": "".join(x + "\n" for x in labels).encode()}
    for name, path in (("text", text_path), ("labels", labels_path)):
        path.write_bytes(files[name])
    expected = [Record(t, None, lb, i) for i, (t, lb) in enumerate(zip(texts, labels, strict=True), start=1)]
    assert read_tweeteval(text_path, labels_path, labels=tuple(set(labels))) == expected
    changed, must_refuse = mutate(files[side], "tweeteval", mutation, data)
    (text_path if side == "text" else labels_path).write_bytes(changed)
    error = refused(lambda: read_tweeteval(text_path, labels_path))
    if must_refuse:
        assert error is not None, (side, mutation, changed)


# --------------------------------------------------------------------------------------- task specs

SPEC_BASE: dict[str, Any] = {"name": "t", "format": "label-text", "labels": ["a", "b"], "train": "d.tsv"}

junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)
spec_values: dict[str, st.SearchStrategy[Any]] = {
    "name": st.text(max_size=100) | junk,
    "format": st.sampled_from([*FORMATS, "tweeteval", "csv"]) | junk,
    "labels": st.lists(st.sampled_from(["a", "b", "c", "no", "yes", 0, 1, True, False, 1.5, None]), max_size=4),
    "label_names": st.lists(st.text(max_size=4) | junk, max_size=3) | junk,
    "train": st.sampled_from(["d.tsv", "e.tsv", "missing.tsv", "x\x00y", "a" * 300, "", "/", ".", ["d.tsv", "e.tsv"]])
    | junk,
    "val": st.sampled_from(["d.tsv", "e.tsv", "one.tsv"]) | junk,
    "test": st.sampled_from(["d.tsv", "e.tsv", "bad.tsv"]) | junk,
    "ood": st.dictionaries(st.text(max_size=90), st.sampled_from(["e.tsv", "bad.tsv", "nope.tsv"]) | junk, max_size=2)
    | junk,
    "near_id": junk,
    "metrics": st.lists(st.sampled_from(["mcc", "f1", "macro_f1", "auc"]), max_size=2) | junk,
    "text_field": st.sampled_from(["text", "q"]) | junk,
    "colour": junk,
}


@pytest.fixture(scope="module")
def spec_folder(folder: Path) -> Path:
    """Data files next to the specs: two valid label-text files, a single-class one, a broken one."""
    spec = folder / "spec"
    spec.mkdir()
    (spec / "d.tsv").write_text("a\tone\nb\ttwo\na\tthree\nb\tfour\n", encoding="utf-8")
    (spec / "e.tsv").write_text("b\tfive\na\tsix\n", encoding="utf-8")
    (spec / "one.tsv").write_text("a\tseven\n", encoding="utf-8")
    (spec / "bad.tsv").write_bytes(b"a\tei\x00ght\n")
    return spec


def spec_text(spec: dict[str, Any], suffix: str) -> str:
    """The spec as JSON or YAML (YAML sometimes with plain, unquoted scalars in flow style)."""
    if suffix == ".json":
        return json.dumps(spec)
    return yaml.safe_dump(spec, default_flow_style=None, allow_unicode=True)


@fuzz(300)
@given(data=noisy_bytes | st.text(max_size=200).map(str.encode), suffix=st.sampled_from([".yaml", ".json"]))
def test_arbitrary_spec_files_only_raise_data_errors(spec_folder: Path, data: bytes, suffix: str) -> None:
    path = spec_folder / f"fuzz{suffix}"
    path.write_bytes(data)
    refused(lambda: load_task(str(path)))


@fuzz(500)
@given(
    changes=st.dictionaries(st.sampled_from(list(spec_values)), st.none(), max_size=3).flatmap(
        lambda keys: st.fixed_dictionaries({k: spec_values[k] for k in keys})
    ),
    drop=st.sets(st.sampled_from([*SPEC_BASE, "test"]), max_size=1),
    suffix=st.sampled_from([".yaml", ".json"]),
    plain=st.booleans(),
)
def test_mutated_specs_raise_data_errors_only(
    spec_folder: Path, changes: dict[str, Any], drop: set[str], suffix: str, plain: bool
) -> None:
    spec = {**SPEC_BASE, "test": "e.tsv", **changes}
    for key in drop:
        spec.pop(key, None)
    text = spec_text(spec, suffix)
    if plain and suffix == ".yaml":  # strip quotes: YAML then reads no/yes as booleans, 1.5 as a float, ...
        text = text.replace("'", "")
    path = spec_folder / f"mutated{suffix}"
    path.write_text(text, encoding="utf-8")
    refused(lambda: load_task(str(path)))


@fuzz(200)
@given(
    rows=st.lists(st.tuples(st.sampled_from(["no", "yes", "1", "true"]), cell_text()), min_size=2, max_size=8),
    suffix=st.sampled_from([".yaml", ".json"]),
    val=st.booleans(),
)
def test_valid_spec_round_trip(spec_folder: Path, rows: list[tuple[str, str]], suffix: str, val: bool) -> None:
    labels = sorted({label for label, _ in rows})
    if len(labels) < 2:
        rows = [*rows, ("zz", "other class")]
        labels.append("zz")
    (spec_folder / "rt.tsv").write_text("".join(f"{lb}\t{t}\n" for lb, t in rows), encoding="utf-8")
    spec = {"name": "rt", "format": "label-text", "labels": labels, "train": "rt.tsv", "test": "rt.tsv"}
    if val:
        spec["val"] = "rt.tsv"
    path = spec_folder / f"rt{suffix}"
    path.write_text(spec_text(spec, suffix), encoding="utf-8")
    n_train = len(rows) if val else len(rows) - tail_split(len(rows))
    if len({label for label, _ in rows[:n_train]}) < 2:
        error = refused(lambda: load_task(str(path)))
        assert error is not None and "one class only" in str(error) and "rt.tsv" in str(error)
        return
    task = load_task(str(path))
    assert task.train.texts == tuple(t for _, t in rows[:n_train])
    assert task.train.labels == tuple(labels.index(lb) for lb, _ in rows[:n_train])
    assert task.label_names == tuple(labels)


@fuzz(200)
@given(name=st.text(max_size=40) | st.text(max_size=300).map(lambda t: t + ".yaml") | st.sampled_from(["~x/t", "cb"]))
def test_task_names_only_raise_data_errors(folder: Path, name: str) -> None:
    refused(lambda: load_task(name, folder), one_line=name.isprintable())


# -------------------------------------------------------------------------------------- Sudoku pool

CITATION = "Somebody, A collection of puzzles, http://example.org"
GRID = np.array([(3 * (r % 3) + r // 3 + c) % 9 + 1 for r in range(9) for c in range(9)], dtype=np.int8)
"""A valid completed grid; 17 of its cells, digits relabelled, make a consistent 17-given puzzle."""

puzzle_line = st.tuples(st.permutations(range(1, 10)), st.sets(st.integers(0, 80), min_size=17, max_size=17)).map(
    lambda pk: "".join(str(pk[0][GRID[i] - 1]) if i in pk[1] else "0" for i in range(81))
)


@fuzz(200)
@given(data=noisy_bytes | st.lists(puzzle_line | st.sampled_from(["", CITATION]), max_size=5).map(
    lambda ls: "\n".join(ls).encode()))  # fmt: skip
def test_arbitrary_pool_files_only_raise_data_errors(folder: Path, data: bytes) -> None:
    path = folder / "pool.txt"
    path.write_bytes(data)
    refused(lambda: read_pool(path))


@fuzz(300)
@given(
    puzzles=st.lists(puzzle_line, min_size=1, max_size=6),
    repeats=st.lists(st.integers(0, 5), max_size=4),
    ending=st.sampled_from(["\n", "\r\n", "\r"]),
    mutation=st.sampled_from(["none", "nul", "bom", "truncate"]),
    at=st.integers(0, 10_000),
)
def test_pool_round_trip_dedup_and_mutations(
    folder: Path, puzzles: list[str], repeats: list[int], ending: str, mutation: str, at: int
) -> None:
    lines = puzzles + [puzzles[i % len(puzzles)] for i in repeats]
    content = (CITATION + ending + "".join(p + ending for p in lines)).encode()
    path = folder / "pool.txt"
    if mutation == "none":
        path.write_bytes(content)
        notes: list[str] = []
        pool = read_pool(path, log=notes.append)
        first = {p: lines.index(p) for p in reversed(lines)}
        keep = sorted(first.values())
        assert ["".join(map(str, p.tolist())) for p in pool.puzzles] == [lines[i] for i in keep]
        assert pool.source_line.tolist() == [i + 2 for i in keep]
        assert bool(notes) == (len(keep) < len(lines))
        sizes = dict.fromkeys(SPLIT_NAMES, 0) | {"hard_test": len(keep), "easy_train": 1}
        error = refused(lambda: allocate_sources(SudokuBuildConfig(**sizes), len(pool)))
        assert isinstance(error, ConfigError) and "distinct" in str(error)
        return
    at %= len(content) + 1
    insert = {"nul": b"\x00", "bom": codecs.BOM_UTF8, "truncate": b""}[mutation]
    changed = content[:at] + insert if mutation == "truncate" else content[:at] + insert + content[at:]
    path.write_bytes(changed)
    error = refused(lambda: read_pool(path))
    if mutation in ("nul", "bom") and at > len(CITATION):  # the citation line is free text
        assert error is not None
