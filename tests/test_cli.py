"""The command line never shows a traceback: every bad value is one line and a non-zero exit code."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from dynascope import runio
from dynascope.cli import main
from tiny_models import tiny_bert_folder

DATA = os.environ.get("DYNASCOPE_DATA")
needs_data = pytest.mark.skipif(not DATA or not Path(DATA, "MANIFEST.tsv").exists(), reason="needs DYNASCOPE_DATA")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and stderr of ``dynascope argv`` run in-process (argparse's SystemExit included)."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = int(exc.code or 0)
    return rc, capsys.readouterr().err


def assert_one_line(rc: int, err: str, pattern: str) -> None:
    import re

    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc in (1, 2), (rc, err)
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]


def test_an_unexpected_exception_is_one_internal_error_line(monkeypatch, capsys) -> None:
    def broken(args) -> int:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("dynascope.cli.build_parser", _parser_with({"func": broken}))
    rc, err = run_cli(["report", "x", "--out", "y"], capsys)
    assert_one_line(rc, err, r"internal error: RuntimeError: boom -- this is a bug .*DYNASCOPE_DEBUG=1")
    assert rc == 1
    monkeypatch.setenv("DYNASCOPE_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        main(["report", "x", "--out", "y"])


def test_an_operating_system_error_is_one_line(monkeypatch, capsys) -> None:
    def full(args) -> int:
        raise OSError(28, "No space left on device", "/some/file")

    monkeypatch.setattr("dynascope.cli.build_parser", _parser_with({"func": full}))
    rc, err = run_cli(["report", "x", "--out", "y"], capsys)
    assert_one_line(rc, err, r"^dynascope: error: .*No space left on device")


def _parser_with(defaults: dict):
    """``build_parser`` whose every command runs ``defaults['func']``."""
    from dynascope.cli import build_parser as real

    def build():
        parser = real()
        for action in parser._subparsers._group_actions:
            for sub in action.choices.values():
                sub.set_defaults(**defaults)
        return parser

    return build


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_bert_folder(tmp_path_factory.mktemp("models") / "bert")


def write_boards(out: Path) -> Path:
    """Tiny easy_train / easy_test / hard_test splits (one solved grid, half its cells given) in ``out``."""
    from dynascope.dynamics.sudoku import SudokuSplit

    rng = np.random.default_rng(0)
    base = np.array([(3 * (r % 3) + r // 3 + c) % 9 + 1 for r in range(9) for c in range(9)], dtype=np.int8)
    for name, n in (("easy_train", 40), ("easy_test", 8), ("hard_test", 8)):
        sol = np.tile(base, (n, 1))
        puzzles = np.where(rng.random((n, 81)) < 0.5, sol, 0).astype(np.int8)
        split = SudokuSplit(
            puzzles=puzzles,
            solutions=sol,
            source_line=np.zeros(n, dtype=np.int32),
            num_givens=(puzzles > 0).sum(1).astype(np.int16),
        )
        runio.write_npz(out / f"{name}.npz", split.arrays())
    return out


@pytest.fixture(scope="module")
def sudoku_dir(tmp_path_factory) -> Path:
    return write_boards(tmp_path_factory.mktemp("sudoku"))


TRAIN = "train --task cb --max-train 32 --max-eval 16 --epochs 1"
LOOPED = "dynamics train --width 8 --heads 2 --epochs 1 --batch-size 20 --loop-steps 2 --eval-steps 2"

# (flags, pattern of the one error line). {model}, {out}, {file}, {sudoku}, {notok} are filled in by the test.
BAD_VALUES: list[tuple[str, str]] = [
    (f"{TRAIN} --model {{model}} --method ft --lr inf --out {{out}}", r"lr: expected a finite number"),
    (f"{TRAIN} --model {{model}} --method ft --lr nan --out {{out}}", r"lr: expected a finite number"),
    (f"{TRAIN} --model {{model}} --method lp --lr -1 --out {{out}}", r"lr: expected a finite number in \(0"),
    (f"{TRAIN} --model {{model}} --method ft --batch-size 0 --out {{out}}", r"batch_size: expected an integer >= 1"),
    (f"{TRAIN} --model {{model}} --method ft --seed -1 --out {{out}}", r"seed: expected an integer in \[0"),
    (f"{TRAIN} --model {{model}} --method ft --seed {2**70} --out {{out}}", r"seed: expected an integer in \[0"),
    (f"{TRAIN} --model {{model}} --method ft --out {{file}}", r"exists and is not a directory"),
    (f"{TRAIN} --model {{model}} --method ft --out {{file}}/run", r"a parent of it is a file"),
    (f"{TRAIN} --model {{model}} --method ft --head-norm inf --out {{out}}", r"head_norm: expected a finite"),
    (f"{TRAIN} --model {{model}} --method ft --max-eval -5 --out {{out}}", r"max_eval: expected an integer"),
    (f"{TRAIN} --model {{model}} --method ft --steps -1 --out {{out}}", r"steps: expected an integer >= 1"),
    (f"{TRAIN} --model {{model}} --method lp --lp-protocol fixed --lp-c 0 --out {{out}}", r"lp C: expected a fin"),
    (f"{TRAIN} --model {{model}} --method ft --lr auto --lr-grid 1e-3,x --out {{out}}", r"--lr-grid must be"),
    (f"{TRAIN} --model {{model}} --method lora --lora-r 0 --out {{out}}", r"LoRA rank r: expected an integer >= 1"),
    (f"{TRAIN} --model {{model}} --method lora --lora-alpha nan --out {{out}}", r"LoRA alpha: expected a finite"),
    (f"{TRAIN} --model {{model}} --method ft --max-length 100000 --out {{out}}", r"exceeds the model's 160 posit"),
    (f"{TRAIN} --model {{notok}} --method ft --out {{out}}", r"holds no tokenizer .*save_pretrained"),
    (f"{TRAIN} --model {{out}}/a/b --method ft --out {{out}}", r"model folder .*/a/b does not exist"),
    ("train --task cb --model {model} --method lp --max-train 4 --out {out}", r"needs at least 2 examples of every"),
    (f"{TRAIN} --model {{model}} --method ft --batch-size x --out {{out}}", r"invalid int value: 'x'"),
    (f"{TRAIN} --model ./no-such-folder --method ft --out {{out}}", r"does not exist"),
    ("compare --task cb --seeds 1,x --out {out}", r"--seeds must be comma-separated integers"),
    ("compare --task cb --methods ft,bogus --out {out}", r"unknown methods \['bogus'\]"),
    ("scale-head --task cb --norms 1,-2 --out {out}", r"--norms must be positive numbers"),
    ("ntk --task cb --model {model} --state nope --out {out}", r"--state must be one of"),
    ("sudoku build --out {file}", r"exists and is not a directory"),
    (f"{LOOPED} --sudoku-dir {{sudoku}} --lr inf --out {{out}}", r"lr: expected a finite number"),
    (f"{LOOPED} --sudoku-dir {{sudoku}} --eta inf --out {{out}}", r"eta: expected a finite number"),
    (f"{LOOPED} --sudoku-dir {{sudoku}} --regularizer spec --reg-weight nan --out {{out}}", r"reg_weight: expected"),
    (f"{LOOPED} --sudoku-dir {{sudoku}} --heads 3 --out {{out}}", r"divisible by heads"),
    (f"{LOOPED} --sudoku-dir {{sudoku}} --threads -1 --out {{out}}", r"--threads: expected an integer >= 1"),
    (f"{LOOPED} --sudoku-dir {{sudoku}} --eval-steps 0,x --out {{out}}", r"--eval-steps: expected comma-separated"),
    (f"{LOOPED} --sudoku-dir {{sudoku}} --out {{file}}", r"exists and is not a directory"),
    (f"{LOOPED} --sudoku-dir {{file}} --out {{out}}", r"split file not found"),
    ("dynamics analyze {out}", r"not a finished dynamics run"),
    ("report {out}/none --out {out}", r"does not exist"),
    ("calibrate {out}", r"not a finished fine-tuning run"),
    ("features {out}", r"not a finished fine-tuning run"),
]


@needs_data
@pytest.mark.parametrize(("flags", "pattern"), BAD_VALUES, ids=[f for f, _ in BAD_VALUES])
def test_each_bad_value_is_one_line_and_a_non_zero_exit(
    flags: str, pattern: str, tiny: Path, sudoku_dir: Path, tmp_path: Path, capsys
) -> None:
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("not a directory\n", encoding="utf-8")
    out = tmp_path / "out"
    notok = tmp_path / "no-tokenizer"
    notok.mkdir()
    (notok / "config.json").write_text((tiny / "config.json").read_text(encoding="utf-8"), encoding="utf-8")
    argv = [*flags.format(model=tiny, out=out, file=a_file, sudoku=sudoku_dir, notok=notok).split(), "--quiet"]
    rc, err = run_cli(argv, capsys)
    assert_one_line(rc, err, pattern)
    assert not runio.FINETUNE.is_finished(out) and not runio.LOOPED.is_finished(out)


def test_a_hub_id_fails_at_once_when_offline_and_not_cached(monkeypatch, tmp_path) -> None:
    import socket
    import time

    from dynascope.errors import ConfigError
    from dynascope.models.backbone import resolve_model

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"not a local folder .* cannot be reached"):
        resolve_model("someone/some-model")
    with pytest.raises(ConfigError, match=r"not a local folder .* cannot be reached"):
        resolve_model("mymodel")  # a bare name is a hub id only when nothing here is called so
    assert time.perf_counter() - started < 5
    (tmp_path / "models").mkdir()
    with pytest.raises(ConfigError, match="model folder models/tiny does not exist"):
        resolve_model("models/tiny")  # its first component exists here: a path, never sent to the hub
