"""Readers for the text-classification file formats in the shared data folder (and user files alike).

Each reader returns a list of :class:`Record` (raw text, optional second text, raw label string, physical
line) and raises :class:`~dynascope.errors.DataError` naming ``file:line`` and the field on malformed input.
Messages stay one short line: values quoted from a file are cut to about 80 characters. Rules shared by
every reader, so a quirk is never silently absorbed:

- Files are decoded as UTF-8. A byte-order mark is accepted only as the file's first character and dropped
  (the MSR paraphrase files start with one); a BOM anywhere else (concatenated files, a double BOM at the
  start) is an error with its line. A UTF-16 file is named as such.
- NUL characters are an error with their line: they never occur in text (a binary or UTF-16 file, or
  padding). Other control characters are kept as text: ``mrpc/msr_paraphrase_train.txt`` holds a
  ``\x12`` and tweets hold form feeds. In JSON strings a ``\u0000`` escape is refused too, and so is an
  escape that leaves a lone surrogate (``\ud800``): it cannot be encoded as text.
- Lines are split on ``\n`` only, so line numbers are 1-based physical lines (``str.splitlines`` would also
  split on form feeds and Unicode separators, which tweets contain). One trailing ``\r`` (CRLF) is dropped;
  a file with CR-only line endings (old Mac) or a CR left inside a line (mixed endings) is an error.
- Tab-separated files are split on ``\t`` with no quoting at all (``csv.QUOTE_NONE`` semantics): quote
  characters are ordinary text. Default CSV quoting would merge rows in these files.
- A blank line in a TSV or JSONL file, a wrong column count, an unknown or empty label, a duplicated
  glue-tsv header column, a duplicated key in a JSON object, or an empty file is an error. An empty *text*
  is kept as ``""``: ``sentence/cr/train.tsv`` line 1763 is ``0<TAB>`` upstream and is counted in CR's
  canonical row total.
- fastText lines are ``__label__K``, one tab or space, then the text (the SST-5 copies use a tab, fastText
  itself a space); a second ``__label__`` (multi-label) is an error.
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
from dynascope.validation import read_input_bytes

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


SHOWN_CHARS = 80
"""How much of a value quoted from a file an error message shows."""

_BOM = "\ufeff"
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def shorten(value: str, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters (with the full length) so a message stays one line."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def listing(values: Sequence[str], limit: int = 10, quote: bool = True) -> str:
    """The first ``limit`` values, shortened and quoted (plain if ``quote=False`` and printable), then a count."""
    shown = ", ".join(v[:40] if not quote and v.isprintable() else shorten(v, 40) for v in values[:limit])
    return shown if len(values) <= limit else f"{shown}, ... ({len(values)} in all)"


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def check_text(value: str, path: Path, line: int, field: str) -> str:
    """A decoded JSON string unchanged if it is text; a NUL or a lone surrogate is a ``DataError``."""
    if "\x00" in value:
        raise DataError("NUL character (a \\u0000 escape) in the text", path=path, line=line, field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        raise DataError(
            f"lone surrogate U+{code:04X} (a broken \\u escape); it is not text", path=path, line=line, field=field
        ) from None
    return value


def _check_characters(text: str, path: Path) -> None:
    """Reject NUL, a BOM after the first character and CR line endings that are not CRLF (see module doc)."""
    nul = text.find("\x00")
    if nul >= 0:
        raise DataError(
            "NUL character (byte 0x00) in the text (a binary or UTF-16 file?)", path=path, line=_line_of(text, nul)
        )
    bom = text.find(_BOM)
    if bom >= 0:
        where = "a second byte-order mark at the start of the file" if bom == 0 else "a byte-order mark mid-file"
        raise DataError(
            f"{where} (concatenated files?); a BOM is allowed only as the first character",
            path=path,
            line=_line_of(text, bom),
        )
    if "\n" not in text and "\r" in text.rstrip("\r"):
        raise DataError("line endings are CR only (old Mac); convert to LF", path=path, line=1)


def _read_lines(path: Path) -> list[str]:
    """Decode ``path`` and split it into physical lines (no line terminators); empty files are an error."""
    raw = read_input_bytes(path)
    if raw.startswith(_UTF16_BOMS):
        raise DataError("the file is UTF-16 (it starts with a UTF-16 byte-order mark); convert it to UTF-8", path=path)
    body = raw[len(codecs.BOM_UTF8) :] if raw.startswith(codecs.BOM_UTF8) else raw
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body[: exc.start].count(b"\n") + 1
        raise DataError(f"not valid UTF-8 (byte 0x{body[exc.start]:02x})", path=path, line=line) from None
    _check_characters(text, path)
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    for lineno, ln in enumerate(lines if "\r" in text else (), start=1):
        if "\r" in ln:
            raise DataError(
                "carriage return inside the line (mixed CR and LF line endings?); convert to LF",
                path=path,
                line=lineno,
            )
    if not any(ln.strip() for ln in lines):
        raise DataError("empty file: it holds no records", path=path)
    return lines


def _check_label(value: str, labels: Sequence[str] | None, path: Path, line: int, field: str) -> str:
    value = value.strip()
    if labels is not None and value not in labels:
        raise DataError(
            f"unknown label {shorten(value)}; allowed labels: {listing(labels)}", path=path, line=line, field=field
        )
    if not value:
        raise DataError("empty label", path=path, line=line, field=field)
    return value


def _split_columns(line: str, names: Sequence[str], path: Path, lineno: int) -> list[str]:
    """Split one TSV line on tabs and insist on exactly ``len(names)`` columns."""
    what = f"{len(names)} tab-separated columns ({listing(names, quote=False)})"
    if not line.strip():
        raise DataError(f"blank line; expected {what}", path=path, line=lineno)
    cols = line.split("\t")
    if len(cols) != len(names):
        raise DataError(f"expected {what}, found {len(cols)}", path=path, line=lineno)
    return cols


def label_string(value: object) -> str:
    """A JSON/YAML label as a string: str as is, bool as ``true``/``false``, int in decimal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    raise TypeError(f"expected a string, integer or boolean label, found {type(value).__name__}")


def _parse_json_line(line: str, path: Path, lineno: int) -> object:
    """One JSON value; invalid JSON, a key given twice in an object or absurd nesting is a ``DataError``."""

    def unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
        obj: dict[str, object] = {}
        for key, value in pairs:
            if key in obj:
                raise DataError(
                    f"key {shorten(key)} appears twice in one JSON object", path=path, line=lineno, field=key[:40]
                )
            obj[key] = value
        return obj

    try:
        return json.loads(line, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON: {exc.msg} at column {exc.colno}", path=path, line=lineno) from None
    except RecursionError:
        raise DataError("invalid JSON: nested too deeply", path=path, line=lineno) from None
    except DataError:
        raise
    except ValueError as exc:  # an integer beyond Python's digit limit
        raise DataError(f"invalid JSON: {shorten(str(exc))}", path=path, line=lineno) from None


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
        obj = _parse_json_line(line, path, lineno)
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, found {type(obj).__name__}", path=path, line=lineno)
        values: dict[str, str] = {}
        for field in (text_field, pair_field, label_field):
            if field is None:
                continue
            if field not in obj:
                keys = listing(list(obj))
                raise DataError(f"missing field; the object has keys {keys}", path=path, line=lineno, field=field)
            value = obj[field]
            if field == label_field:
                try:
                    label = label_string(value)
                except TypeError as exc:
                    raise DataError(str(exc), path=path, line=lineno, field=field) from None
                values[field] = _check_label(check_text(label, path, lineno, field), labels, path, lineno, field)
            elif isinstance(value, str):
                values[field] = check_text(value, path, lineno, field)
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
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(f"column {shorten(name)} appears twice in the header", path=path, line=1, field=name[:40])
        seen.add(name)
    index: dict[str, int] = {}
    for field in (text_field, pair_field, label_field):
        if field is None:
            continue
        if field not in header:
            raise DataError(
                f"the header has no such column; columns: {listing(header)}", path=path, line=1, field=field
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
    """Read ``__label__K<TAB>text`` (SST-5) or ``__label__K text`` (fastText) rows; the label is ``K``.

    A line whose first tab follows a single token is tab-separated and must hold exactly two columns;
    otherwise the label ends at the first space and the rest of the line is the text (fastText's format).
    """
    path = Path(path)
    expected = f"{FASTTEXT_PREFIX}K, a tab or a space, then the text"
    records = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            raise DataError(f"blank line; expected {expected}", path=path, line=lineno)
        first, tab, _ = line.partition("\t")
        if tab and " " not in first.strip():
            tag, text = _split_columns(line, ("__label__K", "text"), path, lineno)
            sep = tab
        else:
            tag, sep, text = line.lstrip(" ").partition(" ")
        tag = tag.strip()
        if not tag.startswith(FASTTEXT_PREFIX):
            raise DataError(f"expected {expected}; found {shorten(tag)} first", path=path, line=lineno, field="label")
        if not sep:
            raise DataError(f"expected 2 fields ({expected}), found only the label", path=path, line=lineno)
        if text.lstrip().startswith(FASTTEXT_PREFIX):
            raise DataError(
                "more than one label on the line (multi-label fastText); expected one label per line",
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
