"""Readers on the real shared files (counts against MANIFEST.tsv) and on malformed files in tmp_path."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dynascope.data import (
    FORMATS,
    read_fasttext,
    read_format,
    read_glue_tsv,
    read_jsonl,
    read_label_text,
    read_msr,
    read_text_label,
    read_tweeteval,
)
from dynascope.errors import DataError

NLI = {"text_field": "premise", "pair_field": "hypothesis"}
RTE = {"text_field": "sentence1", "pair_field": "sentence2"}
CB_LABELS = ("entailment", "contradiction", "neutral")
BINARY = ("0", "1")

# (file under the data root, reader, reader kwargs, allowed raw labels, pair task?)
REAL_FILES: list[tuple[str, Callable[..., Any], dict[str, Any], tuple[str, ...], bool]] = [
    ("superglue/cb/train.jsonl", read_jsonl, NLI, CB_LABELS, True),
    ("superglue/cb/val.jsonl", read_jsonl, NLI, CB_LABELS, True),
    ("glue/rte/train.tsv", read_glue_tsv, RTE, ("entailment", "not_entailment"), True),
    ("glue/rte/dev.tsv", read_glue_tsv, RTE, ("entailment", "not_entailment"), True),
    ("glue/sst2/train.tsv", read_glue_tsv, {"text_field": "text"}, BINARY, False),
    ("glue/sst2/dev.tsv", read_glue_tsv, {"text_field": "text"}, BINARY, False),
    *[
        (f"sentence/{name}/{part}.tsv", read_label_text, {}, BINARY, False)
        for name in ("sst2", "mr", "cr", "mpqa", "subj")
        for part in ("train", "dev")
    ],
    ("sentence/cola/train.tsv", read_text_label, {}, BINARY, False),
    ("sentence/cola/dev.tsv", read_text_label, {}, BINARY, False),
    ("uci_sentiment/amazon_cells_labelled.txt", read_text_label, {}, BINARY, False),
    *[
        (f"sst5/sst_{part}.txt", read_fasttext, {}, ("1", "2", "3", "4", "5"), False)
        for part in ("train", "dev", "test")
    ],
    ("mrpc/msr_paraphrase_train.txt", read_msr, {}, BINARY, True),
    ("mrpc/msr_paraphrase_test.txt", read_msr, {}, BINARY, True),
]


@pytest.fixture(scope="module")
def data_root() -> Path:
    """The shared data root from $DYNASCOPE_DATA (tests on real files skip without it)."""
    value = os.environ.get("DYNASCOPE_DATA", "")
    if not value or not Path(value).is_dir():
        pytest.skip("real-data tests need DYNASCOPE_DATA pointing at the shared data folder")
    return Path(value)


@pytest.fixture(scope="module")
def manifest(data_root: Path) -> dict[str, dict[str, str]]:
    """MANIFEST.tsv rows by path."""
    lines = (data_root / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return {row[0]: dict(zip(header, row, strict=True)) for row in (ln.split("\t") for ln in lines[1:])}


def manifest_label_counts(note: str, allowed: tuple[str, ...]) -> Counter[str]:
    """Label counts in a MANIFEST note (``label=count``, fastText prefix dropped), only ``allowed`` ones."""
    found = re.findall(r"(?:__label__)?(\w+)=(\d+)", note)
    return Counter({label: int(count) for label, count in found if label in allowed})


@pytest.mark.parametrize(
    ("rel", "reader", "kwargs", "allowed", "pair"), REAL_FILES, ids=[f[0] for f in REAL_FILES]
)
def test_reader_matches_manifest(
    data_root: Path,
    manifest: dict[str, dict[str, str]],
    rel: str,
    reader: Callable[..., Any],
    kwargs: dict[str, Any],
    allowed: tuple[str, ...],
    pair: bool,
) -> None:
    records = reader(data_root / rel, labels=allowed, **kwargs)
    expected_counts = manifest_label_counts(manifest[rel]["notes"], allowed)
    assert set(expected_counts) == set(allowed), f"MANIFEST note for {rel} lacks a count for some label"
    assert len(records) == int(manifest[rel]["rows"])
    assert Counter(r.label for r in records) == expected_counts
    assert all((r.pair is not None) == pair for r in records)
    header = 1 if reader is read_glue_tsv else 0
    assert [r.line for r in records] == list(range(1 + header, len(records) + 1 + header))


def test_msr_real_file_has_no_bom_in_first_record(data_root: Path) -> None:
    first = read_msr(data_root / "mrpc/msr_paraphrase_train.txt")[0]
    assert first.label == "1" and first.text.startswith("Amrozi accused his brother")
    assert "\ufeff" not in first.text + first.label


def test_tweeteval_real_files_match_manifest(data_root: Path, manifest: dict[str, dict[str, str]]) -> None:
    for part in ("val", "test"):
        text_rel, labels_rel = (
            f"tweeteval/sentiment/{part}_text.txt",
            f"tweeteval/sentiment/{part}_labels.txt",
        )
        records = read_tweeteval(data_root / text_rel, data_root / labels_rel, labels=("0", "1", "2"))
        assert len(records) == int(manifest[text_rel]["rows"]) == int(manifest[labels_rel]["rows"])
        counts = manifest_label_counts(manifest[labels_rel]["notes"], ("0", "1", "2"))
        assert len(counts) == 3
        assert Counter(r.label for r in records) == counts


def test_quotes_are_ordinary_text(tmp_path: Path) -> None:
    path = tmp_path / "quotes.tsv"
    path.write_text('1\t"an opening quote never closed\n0\tplain\n1\tsays "hi" twice ""\n', encoding="utf-8")
    records = read_label_text(path, labels=BINARY)
    assert [r.text for r in records] == ['"an opening quote never closed', "plain", 'says "hi" twice ""']
    assert [r.label for r in records] == ["1", "0", "1"]


def test_bom_and_crlf_are_tolerated_and_empty_text_kept(tmp_path: Path) -> None:
    path = tmp_path / "bom.tsv"
    path.write_bytes(b"\xef\xbb\xbf1\tfirst\r\n0\t\r\n")
    records = read_label_text(path, labels=BINARY)
    assert [(r.label, r.text, r.line) for r in records] == [("1", "first", 1), ("0", "", 2)]


def test_lines_split_on_newline_only(tmp_path: Path) -> None:
    text, labels = tmp_path / "t.txt", tmp_path / "l.txt"
    text.write_text("a tweet with a \u2028 separator and \x0c feed\nsecond\n", encoding="utf-8")
    labels.write_text("2\n0\n", encoding="utf-8")
    records = read_tweeteval(text, labels, labels=("0", "1", "2"))
    assert [r.label for r in records] == ["2", "0"]
    assert records[0].text == "a tweet with a \u2028 separator and \x0c feed"


def test_msr_header_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "msr.txt"
    path.write_text(
        '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA "quoted" one.\tA second.\n',
        encoding="utf-8",
    )
    (record,) = read_msr(path, labels=BINARY)
    assert (record.text, record.pair, record.label, record.line) == ('A "quoted" one.', "A second.", "1", 2)


def test_jsonl_labels_of_other_json_types(tmp_path: Path) -> None:
    path = tmp_path / "boolq.jsonl"
    path.write_text('{"q": "is it?", "label": true}\n{"q": "or not?", "label": 0}\n', encoding="utf-8")
    records = read_jsonl(path, text_field="q", labels=("true", "0"))
    assert [r.label for r in records] == ["true", "0"]
    assert all(r.pair is None for r in records)


def expect_error(call: Callable[[], Any], *fragments: str) -> DataError:
    """Run ``call``, insist on a DataError whose message holds every fragment; return it."""
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return info.value


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_wrong_column_count_names_line_and_expected_count(tmp_path: Path) -> None:
    p = write(tmp_path, "lt.tsv", "1\tgood\n0\tbad\textra column\n")
    err = expect_error(
        lambda: read_label_text(p), f"{p}:2", "expected 2 tab-separated columns (label, text)", "found 3"
    )
    assert err.line == 2
    p = write(tmp_path, "tl.tsv", "only one column\n")
    expect_error(
        lambda: read_text_label(p), f"{p}:1", "expected 2 tab-separated columns (text, label)", "found 1"
    )
    p = write(tmp_path, "ft.txt", "__label__1\tok\n__label__2\n")
    expect_error(lambda: read_fasttext(p), f"{p}:2", "expected 2")
    p = write(tmp_path, "msr.txt", "1\t1\t2\ta\tb\n0\t3\t4\tonly four\n")
    expect_error(lambda: read_msr(p), f"{p}:2", "expected 5 tab-separated columns", "found 4")
    p = write(
        tmp_path, "glue.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tentailment\n"
    )
    expect_error(lambda: read_glue_tsv(p, **RTE), f"{p}:3", "expected 4 tab-separated columns", "found 3")
    p = write(tmp_path, "blank.tsv", "1\tgood\n\n0\tbad\n")
    expect_error(lambda: read_label_text(p), f"{p}:2", "blank line")


@pytest.mark.parametrize(
    ("name", "content", "read", "line", "field"),
    [
        ("lt.tsv", "1\tok\n2\tbad\n", lambda p: read_label_text(p, labels=BINARY), 2, "label"),
        ("tl.tsv", "ok\t1\nbad\tpositive\n", lambda p: read_text_label(p, labels=BINARY), 2, "label"),
        (
            "ft.txt",
            "__label__1\tok\n__label__9\tbad\n",
            lambda p: read_fasttext(p, labels=("1", "2")),
            2,
            "label",
        ),
        ("msr.txt", "1\t1\t2\ta\tb\nyes\t3\t4\tc\td\n", lambda p: read_msr(p, labels=BINARY), 2, "Quality"),
        (
            "cb.jsonl",
            '{"premise": "a", "hypothesis": "b", "label": "entailment"}\n'
            '{"premise": "a", "hypothesis": "b", "label": "maybe"}\n',
            lambda p: read_jsonl(p, labels=CB_LABELS, **NLI),
            2,
            "label",
        ),
        (
            "rte.tsv",
            "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tentailed\n",
            lambda p: read_glue_tsv(p, labels=("entailment", "not_entailment"), **RTE),
            3,
            "label",
        ),
    ],
)
def test_unknown_label_lists_allowed(
    tmp_path: Path, name: str, content: str, read: Callable[[Path], Any], line: int, field: str
) -> None:
    p = write(tmp_path, name, content)
    err = expect_error(
        lambda: read(p), f"{p}:{line}", f"(field {field!r})", "unknown label", "allowed labels"
    )
    assert (err.line, err.field) == (line, field)


def test_fasttext_label_without_prefix(tmp_path: Path) -> None:
    p = write(tmp_path, "ft.txt", "__label__1\tok\n1\tno prefix\n")
    expect_error(lambda: read_fasttext(p), f"{p}:2", "(field 'label')", "__label__K")


def test_bad_json(tmp_path: Path) -> None:
    p = write(
        tmp_path, "bad.jsonl", '{"premise": "a", "hypothesis": "b", "label": "neutral"}\n{"premise": "a",\n'
    )
    expect_error(lambda: read_jsonl(p, **NLI), f"{p}:2", "invalid JSON")
    p = write(tmp_path, "list.jsonl", '["premise", "hypothesis"]\n')
    expect_error(lambda: read_jsonl(p, **NLI), f"{p}:1", "expected a JSON object, found list")
    p = write(tmp_path, "missing.jsonl", '{"premise": "a", "label": "neutral"}\n')
    err = expect_error(lambda: read_jsonl(p, **NLI), f"{p}:1", "(field 'hypothesis')", "missing field")
    assert err.field == "hypothesis"
    p = write(tmp_path, "type.jsonl", '{"premise": "a", "hypothesis": 3, "label": "neutral"}\n')
    expect_error(
        lambda: read_jsonl(p, **NLI), f"{p}:1", "(field 'hypothesis')", "expected a string, found int"
    )
    p = write(tmp_path, "nolabel.jsonl", '{"premise": "a", "hypothesis": "b", "label": null}\n')
    expect_error(lambda: read_jsonl(p, **NLI), f"{p}:1", "(field 'label')", "NoneType")


def test_glue_header_problems(tmp_path: Path) -> None:
    p = write(tmp_path, "h.tsv", "index\tsentence\tlabel\n0\ta\t1\n")
    expect_error(lambda: read_glue_tsv(p, text_field="text"), f"{p}:1", "(field 'text')", "'sentence'")
    p = write(tmp_path, "only_header.tsv", "text\tlabel\n")
    expect_error(lambda: read_glue_tsv(p, text_field="text"), f"{p}:1", "no data rows")


@pytest.mark.parametrize(
    "read",
    [
        lambda p: read_jsonl(p, text_field="premise"),
        lambda p: read_glue_tsv(p, text_field="text"),
        read_label_text,
        read_text_label,
        read_fasttext,
        read_msr,
    ],
    ids=["jsonl", "glue-tsv", "label-text", "text-label", "fasttext", "msr"],
)
@pytest.mark.parametrize(
    "content", [b"", b"\n\n", b"\xef\xbb\xbf"], ids=["zero-bytes", "blank-lines", "bom-only"]
)
def test_empty_file_is_an_error(tmp_path: Path, read: Callable[[Path], Any], content: bytes) -> None:
    p = tmp_path / "empty.txt"
    p.write_bytes(content)
    expect_error(lambda: read(p), str(p), "empty file")


def test_tweeteval_length_mismatch_names_both_files(tmp_path: Path) -> None:
    text = write(tmp_path, "val_text.txt", "one\ntwo\nthree\n")
    labels = write(tmp_path, "val_labels.txt", "0\n1\n")
    err = expect_error(lambda: read_tweeteval(text, labels), str(text), str(labels), "3 lines", "has 2")
    assert err.path == str(text)
    empty = write(tmp_path, "empty_labels.txt", "")
    expect_error(lambda: read_tweeteval(text, empty), str(empty), "empty file")


def test_tweeteval_bad_label_names_labels_file(tmp_path: Path) -> None:
    text = write(tmp_path, "t.txt", "one\ntwo\n")
    labels = write(tmp_path, "l.txt", "0\n3\n")
    expect_error(
        lambda: read_tweeteval(text, labels, labels=("0", "1", "2")), f"{labels}:2", "(field 'label')", "'3'"
    )


def test_invalid_utf8_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "latin1.tsv"
    p.write_bytes(b"1\tfine\n0\tcaf\xe9\n")
    expect_error(lambda: read_label_text(p), f"{p}:2", "not valid UTF-8", "0xe9")
    expect_error(
        lambda: read_label_text(tmp_path / "absent.tsv"), str(tmp_path / "absent.tsv"), "file not found"
    )


def test_read_format_dispatch(tmp_path: Path) -> None:
    p = write(tmp_path, "x.tsv", "good text\t1\n")
    assert read_format("text-label", p, labels=BINARY)[0].text == "good text"
    expect_error(lambda: read_format("csv", p), "unknown format 'csv'", ", ".join(FORMATS))
    expect_error(lambda: read_format("text-label", p, text_field="text"), "fixed columns")
    expect_error(lambda: read_format("jsonl", p), "(field 'text_field')")


# ------------------------------------------------------------------- rules added for issue #14


def write_bytes(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "data", "read", "line"),
    [
        ("lt.tsv", b"1\tgood\n0\tba\x00d\n", read_label_text, 2),
        ("tl.tsv", b"good\t1\n\x00\x00\x00\t0\n", read_text_label, 2),
        ("ft.txt", b"__label__1\tok\n__label__2\tok\n__label__3\t\x00\n", read_fasttext, 3),
        ("msr.txt", b"1\t1\t2\ta\tb\x00\n", read_msr, 1),
        ("cb.jsonl", b'{"premise": "a", "hypothesis": "b", "label": "x"}\x00\n', lambda p: read_jsonl(p, **NLI), 1),
        ("g.tsv", b"text\tlabel\nfine\t1\nnul\x00\t0\n", lambda p: read_glue_tsv(p, text_field="text"), 3),
    ],
)
def test_nul_in_text_is_an_error_with_its_line(
    tmp_path: Path, name: str, data: bytes, read: Callable[[Path], Any], line: int
) -> None:
    p = write_bytes(tmp_path, name, data)
    err = expect_error(lambda: read(p), f"{p}:{line}", "NUL")
    assert err.line == line


def test_nul_in_tweets_and_json_escapes(tmp_path: Path) -> None:
    text = write_bytes(tmp_path, "t.txt", b"one\ntw\x00o\n")
    labels = write(tmp_path, "l.txt", "0\n1\n")
    expect_error(lambda: read_tweeteval(text, labels), f"{text}:2", "NUL")
    p = write(tmp_path, "esc.jsonl", '{"premise": "ok", "hypothesis": "b", "label": "neutral"}\n'
              '{"premise": "a\\u0000b", "hypothesis": "b", "label": "neutral"}\n')  # fmt: skip
    err = expect_error(lambda: read_jsonl(p, **NLI), f"{p}:2", "(field 'premise')", "NUL")
    assert err.field == "premise"
    p = write(tmp_path, "surrogate.jsonl", '{"premise": "\\ud800", "hypothesis": "b", "label": "neutral"}\n')
    expect_error(lambda: read_jsonl(p, **NLI), f"{p}:1", "(field 'premise')", "lone surrogate U+D800")


def test_other_control_characters_stay_text(tmp_path: Path) -> None:
    """Only NUL is refused: the shared MSR train file holds a \\x12 and tweets hold form feeds."""
    p = write(tmp_path, "ctl.tsv", "1\tform\x0cfeed and \x12 and \x1b\n")
    assert read_label_text(p)[0].text == "form\x0cfeed and \x12 and \x1b"


def test_bom_only_at_the_start_of_a_file(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    p = write_bytes(tmp_path, "cat.tsv", bom + b"1\tfirst file\n" + bom + b"0\tsecond file\n")
    err = expect_error(lambda: read_label_text(p), f"{p}:2", "byte-order mark mid-file", "only as the first")
    assert err.line == 2
    p = write_bytes(tmp_path, "double.tsv", bom + bom + b"1\ttext\n")
    expect_error(lambda: read_label_text(p), f"{p}:1", "second byte-order mark")
    p = write_bytes(tmp_path, "inline.jsonl", b'{"premise": "a\xef\xbb\xbf", "hypothesis": "b", "label": "neutral"}\n')
    expect_error(lambda: read_jsonl(p, **NLI), f"{p}:1", "byte-order mark")
    p = write_bytes(tmp_path, "utf16.tsv", "1\ttext\n".encode("utf-16"))
    expect_error(lambda: read_label_text(p), str(p), "UTF-16")


def test_cr_only_line_endings_give_one_short_line(tmp_path: Path) -> None:
    rows = "".join(f"{i}\ttext {i}\tmore\t1\r" for i in range(20000))
    p = write(tmp_path, "mac.tsv", "index\tsentence1\tsentence2\tlabel\r" + rows)
    err = expect_error(lambda: read_glue_tsv(p, **RTE), f"{p}:1", "line endings are CR only", "convert to LF")
    assert len(str(err)) < 200 and "\n" not in str(err)
    p = write(tmp_path, "mac.txt", "1\tone\r0\ttwo\r")
    expect_error(lambda: read_label_text(p), f"{p}:1", "CR only")
    p = write(tmp_path, "mixed.tsv", "1\tone\n0\ttwo\r1\tthree\n")
    expect_error(lambda: read_label_text(p), f"{p}:2", "carriage return inside the line")


def test_duplicate_header_column_and_json_key(tmp_path: Path) -> None:
    p = write(tmp_path, "dup.tsv", "index\tsentence1\tsentence2\tsentence1\tlabel\n0\ta\tb\tc\tentailment\n")
    err = expect_error(lambda: read_glue_tsv(p, **RTE), f"{p}:1", "column 'sentence1' appears twice")
    assert err.field == "sentence1"
    p = write(tmp_path, "dup.jsonl", '{"premise": "a", "hypothesis": "b", "label": "neutral"}\n'
              '{"premise": "a", "hypothesis": "b", "label": "neutral", "label": "entailment"}\n')  # fmt: skip
    err = expect_error(lambda: read_jsonl(p, **NLI), f"{p}:2", "key 'label' appears twice")
    assert (err.line, err.field) == (2, "label")


def test_jsonl_nesting_and_huge_integers_are_data_errors(tmp_path: Path) -> None:
    p = write(tmp_path, "deep.jsonl", "[" * 100_000 + "\n")
    expect_error(lambda: read_jsonl(p, **NLI), f"{p}:1", "nested too deeply")
    p = write(tmp_path, "int.jsonl", '{"premise": "a", "hypothesis": "b", "label": ' + "9" * 5000 + "}\n")
    err = expect_error(lambda: read_jsonl(p, **NLI), f"{p}:1", "invalid JSON")
    assert len(str(err)) < 250


def test_fasttext_space_separated_is_read(tmp_path: Path) -> None:
    p = write(tmp_path, "ft.txt", "__label__pos a fine film\n__label__neg\tdull\n__label__pos  two spaces\n")
    records = read_fasttext(p, labels=("neg", "pos"))
    assert [(r.label, r.text, r.line) for r in records] == [
        ("pos", "a fine film", 1), ("neg", "dull", 2), ("pos", " two spaces", 3)
    ]  # fmt: skip
    p = write(tmp_path, "multi.txt", "__label__a __label__b text\n")
    expect_error(lambda: read_fasttext(p), f"{p}:1", "more than one label")
    p = write(tmp_path, "bare.txt", "__label__a\n")
    expect_error(lambda: read_fasttext(p), f"{p}:1", "found only the label", "a tab or a space")
    p = write(tmp_path, "words.txt", "positive a fine film\n")
    expect_error(lambda: read_fasttext(p), f"{p}:1", "__label__K, a tab or a space", "found 'positive' first")


def test_long_values_are_cut_in_messages(tmp_path: Path) -> None:
    p = write(tmp_path, "swap.tsv", "0\tok\n" + "a very long sentence " * 300 + "\t1\n")
    err = expect_error(lambda: read_label_text(p, labels=BINARY), f"{p}:2", "unknown label", "(6299 characters)")
    assert len(str(err)) < 300
    header = "\t".join(f"column{i}" for i in range(5000))
    p = write(tmp_path, "wide.tsv", header + "\n" + "\t".join("x" * 5000) + "\n")
    err = expect_error(lambda: read_glue_tsv(p, text_field="text"), f"{p}:1", "no such column", "(5000 in all)")
    assert len(str(err)) < 600


def test_unreadable_paths_are_data_errors(tmp_path: Path) -> None:
    expect_error(lambda: read_label_text(tmp_path / "nul\x00name.tsv"), "cannot read file")
    expect_error(lambda: read_label_text(tmp_path), "cannot read file")
