"""Task registry: split sizes and rules against the real files, determinism, max_train, user specs, errors."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from dynascope.data import (
    Split,
    Task,
    load_task,
    read_fasttext,
    read_glue_tsv,
    read_jsonl,
    read_label_text,
    read_text_label,
    resolve_data_dir,
    stratified_subset,
    tail_split,
    task_names,
    task_status,
    verify_files,
)
from dynascope.errors import ConfigError, DataError

REGISTERED = [
    "cb", "rte", "sst2", "mr", "cr", "mpqa", "subj", "cola", "mrpc",
    "sst5", "sst5-3", "semeval17", "amazon-uci",
]  # fmt: skip


@pytest.fixture(scope="module")
def data_root() -> Path:
    """The shared data root from $DYNASCOPE_DATA (tests on real files skip without it)."""
    value = os.environ.get("DYNASCOPE_DATA", "")
    if not value or not Path(value).is_dir():
        pytest.skip("real-data tests need DYNASCOPE_DATA pointing at the shared data folder")
    return Path(value)


@pytest.fixture(scope="module")
def sst2(data_root: Path) -> Task:
    """SST-2 with its OOD and near-ID sets, loaded once (67k training rows)."""
    return load_task("sst2", data_root)


def sizes(task: Task) -> tuple[int, int, int]:
    return len(task.train), len(task.val), len(task.test)


def test_registry_names() -> None:
    assert task_names() == REGISTERED


def test_tail_split_matches_sklearn() -> None:
    for n in [*range(1, 400), 2490, 4076, 8529, 67349]:
        rows = list(range(n))
        if n < 2:
            assert tail_split(n) == n
            continue
        train, val = train_test_split(rows, test_size=0.1, shuffle=False)
        assert val == rows[n - tail_split(n) :] and train == rows[: n - tail_split(n)], n


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cb", (225, 25, 56)),
        ("rte", (2241, 249, 277)),
        ("cola", (7695, 856, 516)),
        ("mrpc", (3668, 408, 1725)),
        ("sst5", (8544, 1101, 2210)),
        ("semeval17", (1800, 200, 12284)),
        ("amazon-uci", (800, 100, 100)),
    ],
)
def test_split_sizes(data_root: Path, name: str, expected: tuple[int, int, int]) -> None:
    task = load_task(name, data_root)
    assert sizes(task) == expected
    assert {s.name for s in (task.train, task.val, task.test)} == {"train", "val", "test"}


def test_sst2_splits_and_eval_sets(sst2: Task) -> None:
    assert sizes(sst2) == (67349, 872, 1821)
    assert {k: len(v) for k, v in sst2.ood.items()} == {"cr": 3771, "amazon-uci": 1000}
    assert {k: len(v) for k, v in sst2.near_id.items()} == {"mr": 10662}
    assert "mr" not in sst2.ood
    assert sst2.label_names == ("negative", "positive")
    assert sst2.train.pairs is None and sst2.ood["amazon-uci"].pairs is None
    assert sst2.ood["cr"].source == "sentence/cr/train.tsv rows 1-3016 + sentence/cr/dev.tsv rows 1-755"
    assert sst2.test.source == "sentence/sst2/dev.tsv rows 1-1821"
    assert sst2.ood["cr"].name == "cr" and sst2.near_id["mr"].name == "mr"


def test_sst2_labels_follow_the_files(sst2: Task, data_root: Path) -> None:
    raw = read_glue_tsv(data_root / "glue/sst2/dev.tsv", text_field="text")
    assert [int(r.label) for r in raw] == list(sst2.val.labels)
    assert [r.text for r in raw] == list(sst2.val.texts)
    cr = read_label_text(data_root / "sentence/cr/train.tsv") + read_label_text(
        data_root / "sentence/cr/dev.tsv"
    )
    assert [int(r.label) for r in cr] == list(sst2.ood["cr"].labels)


@pytest.mark.parametrize(("name", "read", "fields"), [
    ("cb", read_jsonl, {"text_field": "premise", "pair_field": "hypothesis"}),
    ("rte", read_glue_tsv, {"text_field": "sentence1", "pair_field": "sentence2"}),
])  # fmt: skip
def test_nli_split_is_sklearn_tail_split(data_root: Path, name: str, read, fields: dict[str, str]) -> None:
    """Train/val equal sklearn's ``train_test_split(test_size=0.1, shuffle=False)`` of the file, by row."""
    task = load_task(name, data_root)
    rel = {"cb": "superglue/cb/train.jsonl", "rte": "glue/rte/train.tsv"}[name]
    records = read(data_root / rel, **fields)
    train, val = train_test_split(records, test_size=0.1, shuffle=False)
    for split, part in ((task.train, train), (task.val, val)):
        assert split.texts == tuple(r.text for r in part)
        assert split.pairs == tuple(r.pair for r in part)
        assert tuple(task.label_names[y] for y in split.labels) == tuple(r.label for r in part)
    n_train = len(train)
    assert task.train.source == f"{rel} rows 1-{n_train}"
    assert task.val.source == f"{rel} rows {n_train + 1}-{len(records)}"
    # No val example appears in train, except rows the file itself holds twice (the split is by row index).
    duplicated = {k for k, c in Counter((r.text, r.pair) for r in records).items() if c > 1}
    train_pairs = set(zip(task.train.texts, task.train.pairs, strict=True))
    leaked = {p for p in zip(task.val.texts, task.val.pairs, strict=True) if p in train_pairs}
    assert leaked <= duplicated
    if name == "cb":
        assert not leaked


def test_label_maps(data_root: Path) -> None:
    sst5 = load_task("sst5", data_root)
    three = load_task("sst5-3", data_root)
    raw = [int(r.label) for r in read_fasttext(data_root / "sst5/sst_test.txt")]
    assert list(sst5.test.labels) == [k - 1 for k in raw]
    assert list(three.test.labels) == [{1: 0, 2: 0, 3: 1, 4: 2, 5: 2}[k] for k in raw]
    assert three.label_names == ("negative", "neutral", "positive") and sst5.num_labels == 5
    assert len(three.ood["semeval17"]) == 12284
    semeval = load_task("semeval17", data_root)
    assert three.ood["semeval17"].labels == semeval.test.labels
    subj = load_task("subj", data_root)
    assert subj.label_names == ("subjective", "objective")
    first = read_label_text(data_root / "sentence/subj/train.tsv")[0]
    assert subj.label_names[subj.train.labels[0]] == {"0": "subjective", "1": "objective"}[first.label]
    assert load_task("cola", data_root).metrics == ("mcc",)
    mrpc = load_task("mrpc", data_root)
    assert mrpc.metrics == ("f1",) and mrpc.train.pairs is not None
    assert load_task("cb", data_root).metrics == ("macro_f1",)


def test_every_registered_task_loads_with_valid_labels(data_root: Path) -> None:
    for name in REGISTERED:
        if name == "sst2":
            continue
        task = load_task(name, data_root)
        assert set(task.train.labels) == set(range(task.num_labels)), name
        for split in task.splits().values():
            assert set(split.labels) <= set(range(task.num_labels)), (name, split.name)


def test_loading_is_deterministic(data_root: Path, sst2: Task) -> None:
    assert load_task("cb", data_root) == load_task("cb", data_root)
    assert load_task("amazon-uci", data_root) == load_task("amazon-uci", data_root)
    again = load_task("sst2", data_root)
    assert again.train.texts == sst2.train.texts and again.ood == sst2.ood and again.near_id == sst2.near_id


def test_train_val_test_disjoint_by_row(data_root: Path) -> None:
    task = load_task("amazon-uci", data_root)
    assert task.train.source.endswith("rows 1-800")
    assert task.val.source.endswith("rows 801-900") and task.test.source.endswith("rows 901-1000")
    whole = read_text_label(data_root / "uci_sentiment/amazon_cells_labelled.txt")
    assert task.train.texts + task.val.texts + task.test.texts == tuple(r.text for r in whole)
    assert task.train.labels + task.val.labels + task.test.labels == tuple(int(r.label) for r in whole)


def test_stratified_subset_brute_force() -> None:
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(2, 60))
        labels = rng.integers(0, int(rng.integers(1, 5)), size=n).tolist()
        k = int(rng.integers(1, n + 3))
        keep = stratified_subset(labels, k, seed=trial)
        assert keep == sorted(set(keep)) and all(0 <= i < n for i in keep)
        assert len(keep) == min(k, n)
        assert keep == stratified_subset(labels, k, seed=trial)
        if k >= n:
            continue
        got = Counter(labels[i] for i in keep)
        counts = Counter(labels)
        shares = {c: k * n_c / n for c, n_c in counts.items()}
        for c, share in shares.items():
            assert got[c] <= math.ceil(share), (labels, k, c)
            if k >= len(counts):
                assert got[c] >= 1, (labels, k, c)
            if min(shares.values()) >= 1:
                # No class needs lifting to one row: largest-remainder quotas are within one of the share.
                assert abs(got[c] - share) < 1, (labels, k, c)


def test_stratified_subset_proportional_and_seeded() -> None:
    labels = [0] * 700 + [1] * 200 + [2] * 100
    keep = stratified_subset(labels, 100, seed=3)
    assert Counter(labels[i] for i in keep) == {0: 70, 1: 20, 2: 10}
    assert stratified_subset(labels, 100, seed=4) != keep
    rare = [0] * 97 + [1, 2, 3]
    assert Counter(rare[i] for i in stratified_subset(rare, 4, seed=0)) == {0: 1, 1: 1, 2: 1, 3: 1}
    assert Counter(rare[i] for i in stratified_subset(rare, 3, seed=0)) == {0: 3}
    with pytest.raises(ConfigError, match=r"k: expected an integer >= 1, found 0"):
        stratified_subset(labels, 0, seed=0)


def test_max_train(data_root: Path) -> None:
    full = load_task("cb", data_root)
    small = load_task("cb", data_root, max_train=30, seed=7)
    assert len(small.train) == 30
    assert small == load_task("cb", data_root, max_train=30, seed=7)
    assert small.train != load_task("cb", data_root, max_train=30, seed=8).train
    assert (small.val, small.test, small.ood) == (full.val, full.test, full.ood)
    index = {(t, p): i for i, (t, p) in enumerate(zip(full.train.texts, full.train.pairs, strict=True))}
    rows = [index[(t, p)] for t, p in zip(small.train.texts, small.train.pairs, strict=True)]
    assert rows == sorted(rows)
    assert [full.train.labels[i] for i in rows] == list(small.train.labels)
    counts, full_counts = Counter(small.train.labels), Counter(full.train.labels)
    for c in range(3):
        assert abs(counts[c] - 30 * full_counts[c] / len(full.train)) < 1
    assert "stratified 30 of 225 rows, seed 7" in small.train.source
    assert load_task("cb", data_root, max_train=10_000) == full
    with pytest.raises(ConfigError, match="max_train"):
        load_task("cb", data_root, max_train=0)


def test_unknown_task_lists_known_ones(data_root: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_task("sst-2", data_root)
    assert "'sst-2'" in str(info.value)
    for name in REGISTERED:
        assert name in str(info.value)


def test_resolve_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNASCOPE_DATA", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    other = tmp_path / "other"
    other.mkdir()
    assert resolve_data_dir(other) == other
    monkeypatch.delenv("DYNASCOPE_DATA")
    with pytest.raises(DataError) as info:
        resolve_data_dir(None)
    assert "--data-dir" in str(info.value) and "DYNASCOPE_DATA" in str(info.value)
    with pytest.raises(DataError, match="not a directory"):
        resolve_data_dir(tmp_path / "absent")


def test_missing_file_names_expected_path(tmp_path: Path) -> None:
    (tmp_path / "superglue/cb").mkdir(parents=True)
    (tmp_path / "superglue/cb/train.jsonl").write_text(
        '{"premise": "p", "hypothesis": "h", "label": "neutral"}\n', encoding="utf-8"
    )
    with pytest.raises(DataError) as info:
        load_task("cb", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "superglue/cb/val.jsonl") in message
    assert "--data-dir" in message and "DYNASCOPE_DATA" in message
    status = {s["name"]: s for s in task_status(tmp_path)}
    assert [f["found"] for f in status["cb"]["files"]] == [True, False] and not status["cb"]["ready"]
    assert status["cb"]["files"][1]["expected"] == str(tmp_path / "superglue/cb/val.jsonl")
    assert status["sst2"]["num_labels"] == 2 and status["sst2"]["ood"] == ["cr", "amazon-uci"]


def test_task_status_and_verify_on_real_data(data_root: Path) -> None:
    status = task_status(data_root)
    assert [s["name"] for s in status] == REGISTERED
    assert all(s["ready"] for s in status)
    rows = verify_files(data_root)
    assert rows and all(r["ok"] is True and r["sha256"] == r["expected_sha256"] for r in rows)
    assert {r["path"] for r in rows} == {f["path"] for s in status for f in s["files"]}


def test_verify_files_detects_mismatch(tmp_path: Path, data_root: Path) -> None:
    rel = "superglue/cb/val.jsonl"
    (tmp_path / "superglue/cb").mkdir(parents=True)
    shutil.copy(data_root / rel, tmp_path / rel)
    rows = {r["path"]: r for r in verify_files(tmp_path)}
    assert rows[rel]["found"] and rows[rel]["ok"] is None and rows[rel]["expected_sha256"] is None
    assert rows["glue/rte/train.tsv"]["found"] is False and rows["glue/rte/train.tsv"]["ok"] is False
    manifest = (data_root / "MANIFEST.tsv").read_text(encoding="utf-8")
    (tmp_path / "MANIFEST.tsv").write_text(manifest, encoding="utf-8")
    assert {r["path"]: r for r in verify_files(tmp_path)}[rel]["ok"] is True
    with open(tmp_path / rel, "a", encoding="utf-8") as fh:
        fh.write("\n")
    assert {r["path"]: r for r in verify_files(tmp_path)}[rel]["ok"] is False


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_user_spec_round_trip_yaml(tmp_path: Path) -> None:
    rows = [
        json.dumps({"q": f"question {i}", "ctx": f"context {i}", "answer": i % 3 == 0}) for i in range(20)
    ]
    write_lines(tmp_path / "files/train.jsonl", rows)
    write_lines(tmp_path / "files/test.jsonl", rows[:5])
    write_lines(tmp_path / "files/shifted.jsonl", rows[5:9])
    spec = tmp_path / "spec" / "mytask.yaml"
    spec.parent.mkdir()
    spec.write_text(
        "name: myqa\nformat: jsonl\ntext_field: q\npair_field: ctx\nlabel_field: answer\n"
        "labels: [false, true]\nlabel_names: ['no', 'yes']\nmetrics: [f1]\n"
        "train: ../files/train.jsonl\ntest: ../files/test.jsonl\nood:\n  shifted: ../files/shifted.jsonl\n",
        encoding="utf-8",
    )
    task = load_task(str(spec))
    assert task.name == "myqa" and task.label_names == ("no", "yes") and task.metrics == ("f1",)
    assert sizes(task) == (18, 2, 5)
    assert task.train.texts == tuple(f"question {i}" for i in range(18))
    assert task.val.pairs == ("context 18", "context 19")
    assert task.train.labels == tuple(int(i % 3 == 0) for i in range(18))
    assert task.ood["shifted"].texts == tuple(f"question {i}" for i in range(5, 9))
    assert task.train.source == "../files/train.jsonl rows 1-18"
    assert load_task(str(spec), max_train=6, seed=1).train.labels.count(1) == 2


def test_user_spec_json_with_val_and_several_files(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.tsv", ["pos\tgreat", "neg\tawful", "pos\tfine"])
    write_lines(tmp_path / "b.tsv", ["neg\tbad"])
    write_lines(tmp_path / "v.tsv", ["pos\tnice"])
    spec = tmp_path / "t.json"
    spec.write_text(json.dumps({
        "name": "tiny", "format": "label-text", "labels": ["neg", "pos"],
        "train": ["a.tsv", "b.tsv"], "val": "v.tsv", "test": "b.tsv", "near_id": {"same": "a.tsv"},
    }), encoding="utf-8")  # fmt: skip
    task = load_task(str(spec))
    assert task.train.texts == ("great", "awful", "fine", "bad") and task.train.labels == (1, 0, 1, 0)
    assert task.train.source == "a.tsv rows 1-3 + b.tsv rows 1-1"
    assert task.val.texts == ("nice",) and task.label_names == ("neg", "pos") and task.ood == {}
    assert task.near_id["same"].labels == (1, 0, 1)


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ({"colour": "red"}, ["unknown key 'colour'", "allowed keys"]),
        ({"format": "csv"}, ["(field 'format')", "unknown format 'csv'"]),
        ({"text_field": "q"}, ["(field 'text_field')", "fixed columns"]),
        ({"labels": ["a"]}, ["(field 'labels')", "at least 2"]),
        ({"labels": ["a", "a"]}, ["(field 'labels')", "distinct"]),
        ({"label_names": ["x"]}, ["(field 'label_names')"]),
        ({"label_names": [False, True]}, ["(field 'label_names')", "YAML reads yes/no"]),
        ({"metrics": ["auc"]}, ["(field 'metrics')"]),
        ({"ood": ["x.tsv"]}, ["(field 'ood')", "mapping"]),
        ({"train": 3}, ["(field 'train')", "file path"]),
        ({"test": None}, ["(field 'test')"]),
        ({"train": "missing.tsv"}, ["missing.tsv", "relative to its folder"]),
    ],
)
def test_user_spec_errors(tmp_path: Path, spec: dict, fragments: list[str]) -> None:
    write_lines(tmp_path / "d.tsv", ["a\tone", "b\ttwo"])
    base = {"name": "t", "format": "label-text", "labels": ["a", "b"], "train": "d.tsv", "test": "d.tsv"}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**base, **spec}), encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_task(str(path))
    message = str(info.value)
    assert str(path) in message or "missing.tsv" in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_user_spec_missing_required_and_bad_syntax(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: t\nformat: msr\nlabels: ['0', '1']\ntrain: x.txt\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"field 'test'.*required key"):
        load_task(str(path))
    path.write_text("name: t\nformat: [msr\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"s\.yaml:\d+: invalid YAML"):
        load_task(str(path))
    bad_json = tmp_path / "s.json"
    bad_json.write_text('{"name": "t",\n "format": }', encoding="utf-8")
    with pytest.raises(DataError, match=r"s\.json:2: invalid JSON"):
        load_task(str(bad_json))
    with pytest.raises(DataError, match=r"nope\.yaml: task spec file not found"):
        load_task(str(tmp_path / "nope.yaml"))


def test_split_and_task_validation() -> None:
    split = Split("train", ("a", "b", "c"), None, (0, 1, 1), "mem rows 1-3")
    sub = split.subset([2, 0], name="few")
    assert (sub.name, sub.texts, sub.labels, len(sub)) == ("few", ("c", "a"), (1, 0), 2)
    assert sub.source == "mem rows 1-3 [2 of 3 rows]"
    with pytest.raises(IndexError):
        split.subset([3])
    with pytest.raises(DataError, match="empty"):
        split.subset([])
    with pytest.raises(DataError, match="3 texts but 2 labels"):
        Split("x", ("a", "b", "c"), None, (0, 1), "mem")
    with pytest.raises(DataError, match="pairs"):
        Split("x", ("a",), ("p", "q"), (0,), "mem")
    with pytest.raises(DataError, match="class indices"):
        Split("x", ("a",), None, (-1,), "mem")
    with pytest.raises(DataError, match="label index 2"):
        Task("t", ("n", "p"), split, split, Split("test", ("z",), None, (2,), "mem"), {}, {}, ())
    with pytest.raises(ConfigError, match="unknown metrics"):
        Task("t", ("n", "p"), split, split, split, {}, {}, ("auc",))
    task = Task("t", ["n", "p"], split, split, split, {"o": split}, {}, ["f1"])
    assert (
        task.num_labels == 2
        and task.metrics == ("f1",)
        and list(task.splits()) == ["train", "val", "test", "ood.o"]
    )


def write_spec(tmp_path: Path, name: str, text: str) -> Path:
    """A spec file next to a two-class label-text file d.tsv (labels a, b)."""
    write_lines(tmp_path / "d.tsv", ["a\tone", "b\ttwo", "a\tthree", "b\tfour"])
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_booleans_in_labels_get_a_quoting_hint(tmp_path: Path) -> None:
    write_lines(tmp_path / "yn.tsv", ["no\tbad", "yes\tgood"])
    path = write_spec(
        tmp_path, "yn.yaml", "name: t\nformat: label-text\nlabels: [no, yes]\ntrain: yn.tsv\ntest: yn.tsv\n"
    )
    with pytest.raises(DataError) as info:
        load_task(str(path))
    message = str(info.value)
    assert f"{path}:3 (field 'labels')" in message
    assert "YAML reads unquoted no/yes/on/off as booleans" in message and "quote them ('no', 'yes')" in message
    path.write_text("name: t\nformat: label-text\nlabels: ['no', 'yes']\ntrain: yn.tsv\nval: yn.tsv\ntest: yn.tsv\n")
    assert load_task(str(path)).train.texts == ("bad", "good")


@pytest.mark.parametrize(
    ("name", "text", "fragments"),
    [
        ("dup.yaml", "name: t\nformat: label-text\nlabels: [a, b]\ntrain: d.tsv\ntest: d.tsv\nlabels: [b, a]\n",
         [":6 (field 'labels')", "appears twice (lines 3 and 6)"]),
        ("dup.json", '{"name": "t", "name": "u", "format": "label-text", "labels": ["a", "b"], "train": "d.tsv",'
         ' "test": "d.tsv"}', ["(field 'name')", "key 'name' appears twice"]),
        ("date.yaml", "name: 2001-02-30\n", ["cannot read the task spec file", "day is out of range"]),
        ("deep.yaml", "name: " + "[" * 5000 + "\n", ["nested too deeply"]),
        ("nul.yaml", "name: t\x00\n", ["invalid YAML", "#x0000"]),
        ("ctl.json", '{"name": "t\\n2", "format": "label-text", "labels": ["a", "b"], "train": "d.tsv",'
         ' "test": "d.tsv"}', ["(field 'name')", "printable name"]),
        ("path.json", '{"name": "t", "format": "label-text", "labels": ["a", "b"], "train": "x\\u0000y",'
         ' "test": "d.tsv"}', ["missing", "x\\x00y"]),
    ],
)  # fmt: skip
def test_spec_problems_are_one_line_data_errors(tmp_path: Path, name: str, text: str, fragments: list[str]) -> None:
    path = write_spec(tmp_path, name, text)
    with pytest.raises(DataError) as info:
        load_task(str(path))
    message = str(info.value)
    assert message.isprintable() and len(message) < 400, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_single_class_training_split_names_its_file(tmp_path: Path) -> None:
    write_lines(tmp_path / "same.tsv", ["a\tone", "a\ttwo", "a\tthree", "b\tonly in the tail"])
    path = write_spec(tmp_path, "s.yaml", "name: t\nformat: label-text\nlabels: [a, b]\ntrain: same.tsv\ntest: d.tsv\n")
    with pytest.raises(DataError) as info:
        load_task(str(path))
    message = str(info.value)
    assert str(tmp_path / "same.tsv") in message and "same.tsv rows 1-3" in message
    assert "one class only, 'a'" in message
    with pytest.raises(ConfigError, match=r"max_train: 1 rows cannot hold the 2 classes.*d\.tsv rows 1-3"):
        load_task(str(write_spec(tmp_path, "ok.yaml", "name: t\nformat: label-text\nlabels: [a, b]\n"
                                 "train: d.tsv\ntest: d.tsv\n")), max_train=1)  # fmt: skip


def test_task_names_that_cannot_be_looked_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\(300 characters\): cannot look it up as a spec file: File name too long"):
        load_task("a" * 300, tmp_path)
    with pytest.raises(ConfigError, match="cannot look it up as a spec file"):
        load_task("~no-such-user-here/task.yaml", tmp_path)
