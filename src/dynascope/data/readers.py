"""Readers for the text-classification file formats in the shared data folder (and user files alike).

Each reader returns a list of :class:`Record` (raw text, optional second text, raw label string, physical
line) and raises :class:`~dynascope.errors.DataError` naming ``file:line`` and the field on malformed input.
Rules shared by every reader, so a quirk is never silently absorbed:

- Files are decoded as UTF-8; a leading byte-order mark is dropped (``utf-8-sig``), which the MSR paraphrase
  files need and which is harmless elsewhere. A trailing ``\\r`` (CRLF line ending) is dropped too.
- Lines are split on ``\\n`` only, so line numbers are 1-based physical lines (``str.splitlines`` would also
  split on form feeds and Unicode separators, which tweets contain).
- Tab-separated files are split on ``\\t`` with no quoting at all (``csv.QUOTE_NONE`` semantics): quote
  characters are ordinary text. Default CSV quoting would merge rows in these files.
- A blank line in a TSV or JSONL file, a wrong column count, an unknown or empty label, or an empty file is an
  error. An empty *text* is kept as ``""``: ``sentence/cr/train.tsv`` line 1763 is ``0<TAB>`` upstream and is
  counted in CR's canonical row total.
- Labels are kept as the string written in the file (whitespace around it stripped; JSON ``true``/``false``
  become ``"true"``/``"false"``, JSON integers their decimal string; fastText's ``__label__`` prefix is
  removed). ``labels=`` restricts them to an allowed set; mapping them to class indices is the task's job.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dynascope.errors import DataError

FORMATS: tuple[str, ...] = ("jsonl", "glue-tsv", "label-text", "text-label", "fasttext", "msr")
"""Single-file formats understood by :func:`read_format` (TweetEval's two-file layout has its own reader)."""

FASTTEXT_PREFIX = "__label__"
MSR_COLUMNS: tuple[str, ...] = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")


@dataclass(frozen=True)
class Record:
    """One example as written in its file: first text, second text (pair tasks) or None, raw label, line."""

    text: str
    pair: str | None
    label: str
    line: int


def _read_lines(path: Path) -> list[str]:
    """Decode ``path`` and split it into physical lines (no line terminators); empty files are an error."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path=path) from None
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror or exc}", path=path) from None
    body = raw[len(codecs.BOM_UTF8) :] if raw.startswith(codecs.BOM_UTF8) else raw
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body[: exc.start].count(b"\n") + 1
        raise DataError(f"not valid UTF-8 (byte 0x{body[exc.start]:02x})", path=path, line=line) from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    if not any(ln.strip() for ln in lines):
        raise DataError("empty file: it holds no records", path=path)
    return lines


def _check_label(value: str, labels: Sequence[str] | None, path: Path, line: int, field: str) -> str:
    value = value.strip()
    if labels is not None and value not in labels:
        allowed = ", ".join(repr(v) for v in labels)
        raise DataError(
            f"unknown label {value!r}; allowed labels: {allowed}", path=path, line=line, field=field
        )
    if not value:
        raise DataError("empty label", path=path, line=line, field=field)
    return value


def _split_columns(line: str, names: Sequence[str], path: Path, lineno: int) -> list[str]:
    """Split one TSV line on tabs and insist on exactly ``len(names)`` columns."""
    if not line.strip():
        raise DataError(
            f"blank line; expected {len(names)} tab-separated columns ({', '.join(names)})",
            path=path,
            line=lineno,
        )
    cols = line.split("\t")
    if len(cols) != len(names):
        raise DataError(
            f"expected {len(names)} tab-separated columns ({', '.join(names)}), found {len(cols)}",
            path=path,
            line=lineno,
        )
    return cols


def label_string(value: object) -> str:
    """A JSON/YAML label as a string: str as is, bool as ``true``/``false``, int in decimal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    raise TypeError(f"expected a string, integer or boolean label, found {type(value).__name__}")


def read_jsonl(
    path: str | Path,
    *,
    text_field: str,
    pair_field: str | None = None,
    label_field: str = "label",
    labels: Sequence[str] | None = None,
) -> list[Record]:
    """Read JSON Lines (SuperGLUE style): one object per line with the named text, pair and label fields."""
    path = Path(path)
    records = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            raise DataError("blank line; expected one JSON object", path=path, line=lineno)
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"invalid JSON: {exc.msg} at column {exc.colno}", path=path, line=lineno
            ) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, found {type(obj).__name__}", path=path, line=lineno)
        values: dict[str, str] = {}
        for field in (text_field, pair_field, label_field):
            if field is None:
                continue
            if field not in obj:
                keys = ", ".join(repr(k) for k in obj)
                raise DataError(
                    f"missing field; the object has keys {keys}", path=path, line=lineno, field=field
                )
            value = obj[field]
            if field == label_field:
                try:
                    values[field] = _check_label(label_string(value), labels, path, lineno, field)
                except TypeError as exc:
                    raise DataError(str(exc), path=path, line=lineno, field=field) from None
            elif isinstance(value, str):
                values[field] = value
            else:
                raise DataError(
                    f"expected a string, found {type(value).__name__}", path=path, line=lineno, field=field
                )
        pair = values[pair_field] if pair_field is not None else None
        records.append(Record(values[text_field], pair, values[label_field], lineno))
    return records


def read_glue_tsv(
    path: str | Path,
    *,
    text_field: str,
    pair_field: str | None = None,
    label_field: str = "label",
    labels: Sequence[str] | None = None,
) -> list[Record]:
    """Read a GLUE-style TSV whose first line is a header; columns are picked by header name."""
    path = Path(path)
    lines = _read_lines(path)
    header = lines[0].split("\t")
    index: dict[str, int] = {}
    for field in (text_field, pair_field, label_field):
        if field is None:
            continue
        if field not in header:
            columns = ", ".join(repr(h) for h in header)
            raise DataError(
                f"the header has no such column; columns: {columns}", path=path, line=1, field=field
            )
        index[field] = header.index(field)
    if len(lines) == 1:
        raise DataError("no data rows after the header", path=path, line=1)
    records = []
    for lineno, line in enumerate(lines[1:], start=2):
        cols = _split_columns(line, header, path, lineno)
        text = cols[index[text_field]]
        pair = None if pair_field is None else cols[index[pair_field]]
        label = _check_label(cols[index[label_field]], labels, path, lineno, label_field)
        records.append(Record(text, pair, label, lineno))
    return records


def read_label_text(path: str | Path, *, labels: Sequence[str] | None = None) -> list[Record]:
    """Read headerless ``label<TAB>text`` rows (the SentEval-style sentence folders)."""
    path = Path(path)
    records = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        label, text = _split_columns(line, ("label", "text"), path, lineno)
        label = _check_label(label, labels, path, lineno, "label")
        records.append(Record(text, None, label, lineno))
    return records


def read_text_label(path: str | Path, *, labels: Sequence[str] | None = None) -> list[Record]:
    """Read headerless ``text<TAB>label`` rows (CoLA sentence folder, UCI sentiment)."""
    path = Path(path)
    records = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        text, label = _split_columns(line, ("text", "label"), path, lineno)
        records.append(Record(text, None, _check_label(label, labels, path, lineno, "label"), lineno))
    return records


def read_fasttext(path: str | Path, *, labels: Sequence[str] | None = None) -> list[Record]:
    """Read ``__label__K<TAB>text`` rows (SST-5); the record's label is ``K`` without the prefix."""
    path = Path(path)
    records = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        tag, text = _split_columns(line, ("__label__K", "text"), path, lineno)
        tag = tag.strip()
        if not tag.startswith(FASTTEXT_PREFIX):
            raise DataError(
                f"expected a label of the form {FASTTEXT_PREFIX}K, found {tag!r}",
                path=path,
                line=lineno,
                field="label",
            )
        label = _check_label(tag[len(FASTTEXT_PREFIX) :], labels, path, lineno, "label")
        records.append(Record(text, None, label, lineno))
    return records


def read_msr(path: str | Path, *, labels: Sequence[str] | None = None) -> list[Record]:
    """Read the MSR paraphrase corpus: 5 tab-separated columns, Quality is the label, the strings the pair.

    The shared copy has no header and starts with a BOM; the original distribution's header line
    (``Quality<TAB>#1 ID...``) is recognised and skipped, so both layouts read the same.
    """
    path = Path(path)
    records = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        cols = _split_columns(line, MSR_COLUMNS, path, lineno)
        if lineno == 1 and cols[0] == MSR_COLUMNS[0]:
            continue
        label = _check_label(cols[0], labels, path, lineno, MSR_COLUMNS[0])
        records.append(Record(cols[3], cols[4], label, lineno))
    if not records:
        raise DataError("no data rows after the header", path=path, line=1)
    return records


def read_tweeteval(
    text_path: str | Path, labels_path: str | Path, *, labels: Sequence[str] | None = None
) -> list[Record]:
    """Read a TweetEval split: tweet on line i of ``text_path``, its label on line i of ``labels_path``."""
    text_path, labels_path = Path(text_path), Path(labels_path)
    texts = _read_lines(text_path)
    tags = _read_lines(labels_path)
    if len(texts) != len(tags):
        raise DataError(
            f"{text_path} has {len(texts)} lines but {labels_path} has {len(tags)}; "
            "the text and labels files must align line by line",
            path=text_path,
        )
    return [
        Record(text, None, _check_label(tag, labels, labels_path, lineno, "label"), lineno)
        for lineno, (text, tag) in enumerate(zip(texts, tags, strict=True), start=1)
    ]


def read_format(
    fmt: str,
    path: str | Path,
    *,
    text_field: str | None = None,
    pair_field: str | None = None,
    label_field: str = "label",
    labels: Sequence[str] | None = None,
) -> list[Record]:
    """Dispatch to the reader of ``fmt`` (one of :data:`FORMATS`); field names are for jsonl and glue-tsv."""
    if fmt in ("jsonl", "glue-tsv"):
        if text_field is None:
            raise DataError(f"format {fmt!r} needs a text field name", path=path, field="text_field")
        reader = read_jsonl if fmt == "jsonl" else read_glue_tsv
        return reader(
            path, text_field=text_field, pair_field=pair_field, label_field=label_field, labels=labels
        )
    positional = {
        "label-text": read_label_text,
        "text-label": read_text_label,
        "fasttext": read_fasttext,
        "msr": read_msr,
    }
    if fmt not in positional:
        raise DataError(
            f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}", path=path, field="format"
        )
    if text_field is not None or pair_field is not None:
        raise DataError(
            f"format {fmt!r} has fixed columns; text and pair field names apply to jsonl and glue-tsv only",
            path=path,
        )
    return positional[fmt](path, labels=labels)
