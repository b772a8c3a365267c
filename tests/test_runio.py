"""The run-directory kinds: file names in one place, formats chosen by suffix, finished markers, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynascope import runio
from dynascope.errors import ConfigError, DataError, RunExistsError

KINDS = [runio.FINETUNE, runio.NTK, runio.LOOPED, runio.SUDOKU, runio.STUDY, runio.COMPARISON, runio.REPORT]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_every_kind_names_its_marker_and_refuses_a_finished_run(kind: runio.RunKind, tmp_path) -> None:
    out = kind.prepare(tmp_path / "run")
    assert out.is_dir() and not kind.is_finished(out)
    marker = kind.path(out, kind.marker)
    marker.write_text("{}" if marker.suffix == ".json" else "x", encoding="utf-8")
    assert kind.is_finished(out)
    with pytest.raises(RunExistsError, match=marker.name):
        kind.prepare(out)
    assert kind.prepare(out, overwrite=True) == out
    assert not kind.is_finished(out), "a replacement run that is killed must not look finished"


def test_write_and_load_round_trip_each_format(tmp_path) -> None:
    kind = runio.FINETUNE
    kind.write(tmp_path, "metrics", {"accuracy": np.float32(0.5), "per_epoch": np.arange(2)})
    assert kind.load(tmp_path, "metrics") == {"accuracy": 0.5, "per_epoch": [0, 1]}
    kind.write(tmp_path, "logits", {"val.logits": np.ones((2, 3))})
    assert np.array_equal(kind.load(tmp_path, "logits")["val.logits"], np.ones((2, 3)))
    kind.write(tmp_path, "head", {"weight": torch.eye(2)})
    assert torch.equal(kind.load(tmp_path, "head")["weight"], torch.eye(2))
    runio.COMPARISON.write(tmp_path, "summary", "| a |\n")
    assert runio.COMPARISON.load(tmp_path, "summary") == "| a |\n"
    kind.write_record(tmp_path, {"task": "cb"}, seed=3)
    assert kind.load(tmp_path, "config") == {"task": "cb"} and kind.load(tmp_path, "env")["seed"] == 3
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_missing_unknown_and_corrupt_files_are_named(tmp_path) -> None:
    kind = runio.NTK
    with pytest.raises(DataError, match="no stats file") as missing:
        kind.load(tmp_path, "stats")
    assert "stats.json" in str(missing.value)
    assert kind.load_optional(tmp_path, "stats") is None
    with pytest.raises(KeyError, match="no 'metrics' file; known: blocks, config"):
        kind.path(tmp_path, "metrics")
    (tmp_path / "spectra.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read arrays") as corrupt:
        kind.load(tmp_path, "spectra")
    assert "spectra.npz" in str(corrupt.value)


def test_a_kind_must_list_its_marker() -> None:
    with pytest.raises(ValueError, match="roles \\['done'\\] are not among"):
        runio.RunKind("broken", marker="done", files={"config": runio.CONFIG_FILE})


def test_out_problems_are_one_line_config_errors(tmp_path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        runio.FINETUNE.prepare(a_file)
    with pytest.raises(ConfigError, match="a parent of it is a file"):
        runio.NTK.prepare(a_file / "run")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not runio.os.access(locked, runio.os.W_OK):  # root can write anywhere
        with pytest.raises(ConfigError, match=r"cannot create output directory|not writable"):
            runio.LOOPED.prepare(locked / "run")


def test_prepare_removes_temporary_files_of_a_killed_write(tmp_path) -> None:
    out = runio.FINETUNE.prepare(tmp_path / "run")
    stale = [out / ".features.npz.abc123.tmp", out / "checkpoint" / ".checkpoint.pt.x1.tmp"]
    stale[1].parent.mkdir()
    for path in stale:
        path.write_bytes(b"half")
    keep = out / "checkpoint" / "checkpoint.pt"
    keep.write_bytes(b"whole")
    runio.FINETUNE.prepare(out)
    assert not any(p.exists() for p in stale) and keep.exists()


def test_overwrite_removes_the_old_config_and_resumable_state(tmp_path) -> None:
    kind = runio.NTK
    out = kind.prepare(tmp_path / "run")
    kind.write_record(out, {"n": 1}, seed=0)
    (kind.path(out, "blocks") / "tile").parent.mkdir()
    (kind.path(out, "blocks") / "tile").write_bytes(b"x")
    kind.prepare(out, overwrite=True)
    assert not kind.has(out, "config") and not kind.has(out, "blocks")


def test_a_resume_under_another_config_is_refused_naming_the_fields(tmp_path) -> None:
    kind = runio.FINETUNE
    out = kind.prepare(tmp_path / "run")
    config = {"task": "cb", "max_train": 16, "lp": {"c": 1.0}}
    kind.write_record(out, config, seed=0)
    kind.write_record(out, dict(config), seed=0)  # the same config resumes
    with pytest.raises(ConfigError, match=r"max_train: 16 -> 64; lp\.c: 1\.0 -> 2\.0.*--overwrite"):
        kind.write_record(out, {**config, "max_train": 64, "lp": {"c": 2.0}}, seed=0)
    runio.REPORT.write_record(out, {"other": True}, seed=0)  # a kind with nothing to resume just rewrites
