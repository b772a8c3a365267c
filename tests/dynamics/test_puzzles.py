"""Puzzle files a user brings: each format, malformed lines named by file:line, solving the puzzles that come
without a solution, and ``dynamics evaluate`` on a tiny trained model (library and CLI)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dynamics.test_train import boards, tiny
from dynascope.cli import main
from dynascope.dynamics.puzzles import complete_solutions, read_puzzles
from dynascope.dynamics.train import evaluate, load_run, train_run
from dynascope.errors import DataError
from dynascope.pipelines.dynamics import evaluate_puzzles
from dynascope.runio import read_json

PUZZLE = "530070000600195000098000060800060003400803001700020006060000280000419005000080079"
SOLUTION = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"
DOTS = PUZZLE.replace("0", ".")
OPEN = "0" * 81  # many solutions
CLASH = "11" + "0" * 79  # two 1s in row 1: none
WRONG_GIVEN = PUZZLE[:2] + "2" + PUZZLE[3:]  # r1c3 is 4 in the only solution; 2 breaks no rule directly: none
SWAPPED = SOLUTION.translate(str.maketrans("35", "53"))  # a valid grid that disagrees with the given 5 at r1c1


def grid(text: str) -> np.ndarray:
    return np.array([int(ch) for ch in text.replace(".", "0")], dtype=np.int8)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_line_format_with_zeros_and_dots(tmp_path: Path) -> None:
    file = read_puzzles(write(tmp_path, "plain.txt", f"{PUZZLE}\n{DOTS}\n"))
    assert (file.format, len(file), file.lines.tolist()) == ("lines", 2, [1, 2])
    assert np.array_equal(file.puzzles, np.stack([grid(PUZZLE)] * 2))
    assert not file.has_solution.any() and not file.solutions.any()


def test_line_format_with_ids_ratings_solutions_comments_bom_and_crlf(tmp_path: Path) -> None:
    text = (
        f"\ufeff# id puzzle [solution] rating\r\n\r\nwiki-1 {DOTS} 2.3\r\n  7\t{PUZZLE} {SOLUTION} easy\r\n{PUZZLE}\r"
    )
    file = read_puzzles(write(tmp_path, "rated.txt", text))
    assert (file.format, file.lines.tolist()) == ("lines", [3, 4, 5])
    assert file.has_solution.tolist() == [False, True, False]
    assert np.array_equal(file.solutions[1], grid(SOLUTION))
    assert all(np.array_equal(p, grid(PUZZLE)) for p in file.puzzles)
    assert read_puzzles(write(tmp_path, "first.txt", text), limit=2).lines.tolist() == [3, 4]


@pytest.mark.parametrize(
    "text, lines, solved",
    [
        (f"quizzes,solutions\n{PUZZLE},{SOLUTION}\n{DOTS},\n", [2, 3], [True, False]),
        (f"id,Puzzle,Rating\r\n1,{PUZZLE},3\r\n\r\n2,{DOTS},1\r\n", [2, 4], [False, False]),
        (f"SOLUTION,puzzle\n{SOLUTION},{PUZZLE}\n", [2], [True]),
        (f"Quizzes\n{PUZZLE}\n", [2], [False]),
        (f"{PUZZLE},{SOLUTION}\n{DOTS},\n", [1, 2], [True, False]),  # RRN's files: no header
    ],
    ids=["quizzes-solutions", "puzzle-no-solution", "solution-first", "one-column", "headerless"],
)
def test_csv_formats(tmp_path: Path, text: str, lines: list[int], solved: list[bool]) -> None:
    file = read_puzzles(write(tmp_path, "puzzles.csv", text))
    assert (file.format, file.lines.tolist(), file.has_solution.tolist()) == ("csv", lines, solved)
    assert all(np.array_equal(p, grid(PUZZLE)) for p in file.puzzles)
    assert all(np.array_equal(s, grid(SOLUTION)) for s in file.solutions[file.has_solution])


@pytest.mark.parametrize(
    "text, line, message",
    [
        (f"{PUZZLE}\n{PUZZLE[:80]} 3.1\n", 2, "found none (the longest field has 80 characters"),
        (
            f"{PUZZLE}\n\n# note\n{PUZZLE[:40]}x{PUZZLE[41:]}\n",
            4,
            "unexpected character 'x' at position 41 of the puzzle",
        ),
        (f"{PUZZLE} {PUZZLE} {SOLUTION}\n", 1, "found 3 81-character fields"),
        (f"{PUZZLE} {DOTS}\n", 1, "unexpected character '.' at position 3 of the solution (expected 1-9)"),
        (f"{PUZZLE} {SOLUTION[:-1]}8\n", 1, "the solution is not a valid completed grid: row 9 repeats a digit"),
        (f"{PUZZLE} {SWAPPED}\n", 1, "disagrees with the puzzle's given at r1c1 (puzzle 5, solution 3)"),
        (f"quizzes,solutions\n{PUZZLE},{SOLUTION}\n{PUZZLE},{SOLUTION},x\n", 3, "expected 2 comma-separated fields"),
        (f"puzzle,solution\n{PUZZLE}0,\n", 2, "expected the puzzle to have 81 characters, found 82"),
        ("id,rating\n1,2\n", 1, "the CSV header has no puzzle column"),
    ],
)
def test_a_malformed_line_is_named_by_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path, "bad.txt", text)
    with pytest.raises(DataError, match=re.escape(message)) as info:
        read_puzzles(path)
    assert str(info.value).startswith(f"{path}:{line}") and info.value.line == line


def test_empty_unreadable_and_missing_files(tmp_path: Path) -> None:
    for name, text in (("empty.txt", ""), ("comments.txt", "\n# only a comment\n\n"), ("header.csv", "quizzes\n")):
        with pytest.raises(DataError, match="no puzzles found"):
            read_puzzles(write(tmp_path, name, text))
    latin = tmp_path / "latin.txt"
    latin.write_bytes(f"{PUZZLE}\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.txt:2: not UTF-8"):
        read_puzzles(latin)
    with pytest.raises(DataError, match="not found"):
        read_puzzles(tmp_path / "absent.txt")


def test_solver_fills_missing_solutions_and_sets_aside_non_unique_and_unsolvable(tmp_path: Path) -> None:
    text = f"{PUZZLE}\n{OPEN}\n{CLASH}\n{WRONG_GIVEN}\n{DOTS} {SOLUTION}\n"
    scored = complete_solutions(read_puzzles(write(tmp_path, "mixed.txt", text)))
    assert scored.lines.tolist() == [1, 5] and scored.from_solver.tolist() == [True, False]
    assert np.array_equal(scored.solutions, np.stack([grid(SOLUTION)] * 2))
    assert (scored.multiple, scored.unsolvable) == ((2,), (3, 4))
    assert scored.num_givens.tolist() == [30, 30]


def _join(cells: np.ndarray) -> str:
    return "".join(str(int(c)) for c in cells)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny looped model trained for one epoch on synthetic boards."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("looped") / "run"
    train_run(tiny(epochs=1), boards(60, 40, 0), boards(10, 40, 1), boards(10, 25, 2), out)
    return out


FORTY, THIRTY = boards(6, 40, 3), boards(4, 30, 4)


def board_file(tmp_path: Path) -> Path:
    """Lines 1-10: boards with 40 and 30 givens (id, puzzle, solution); 11: PUZZLE (30 givens, no solution);
    12: OPEN (several solutions); 13: CLASH (none)."""
    pairs = [*zip(FORTY.puzzles, FORTY.solutions, strict=True), *zip(THIRTY.puzzles, THIRTY.solutions, strict=True)]
    rows = [f"b{i} {_join(p)} {_join(s)}" for i, (p, s) in enumerate(pairs)]
    return write(tmp_path, "mine.txt", "\n".join([*rows, PUZZLE, OPEN, CLASH]) + "\n")


def test_evaluate_writes_accuracy_per_T_and_per_number_of_givens(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    evaluate_puzzles(run, board_file(tmp_path), steps=(3, 1), out=out)
    saved = read_json(out / "results.json")
    assert saved["steps"] == [1, 3] and saved["puzzles"]["format"] == "lines"
    assert (saved["read"], saved["scored"], saved["solutions_from_file"], saved["solutions_from_solver"]) == (
        13,
        11,
        10,
        1,
    )
    assert saved["multiple_solutions"] == {"count": 1, "lines": [12]}
    assert saved["unsolvable"] == {"count": 1, "lines": [13]}
    by = {row["givens"]: row for row in saved["by_givens"]}
    assert {g: row["boards"] for g, row in by.items()} == {30: 5, 40: 6}
    blanks = 5 * 51 + 6 * 41
    for t in ("1", "3"):
        assert 0.0 <= saved["board_accuracy"][t] <= 1.0 and 0.0 <= saved["cell_accuracy"][t] <= 1.0
        pooled = sum(row["boards"] * row["board_accuracy"][t] for row in by.values()) / 11
        assert saved["board_accuracy"][t] == pytest.approx(pooled, abs=1e-12)
        cells = sum(row["boards"] * (81 - g) * row["cell_accuracy"][t] for g, row in by.items()) / blanks
        assert saved["cell_accuracy"][t] == pytest.approx(cells, abs=1e-12)
    config, model, _ = load_run(run)
    pz, sol = torch.as_tensor(FORTY.puzzles).long(), torch.as_tensor(FORTY.solutions).long()
    own = evaluate(model, pz, sol, (1, 3), seed=config.seed + 1)  # each givens count is the run's own evaluation
    assert by[40]["cell_accuracy"] == {str(t): v for t, v in own["cell"].items()}
    table = (out / "results.md").read_text()
    assert "| 3 |" in table and "with more than one solution (line 12)" in table and "unsolvable (line 13)" in table


def test_evaluate_refuses_a_file_with_nothing_to_score(run: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothing to score"):
        evaluate_puzzles(run, write(tmp_path, "open.txt", f"{OPEN}\n{CLASH}\n"), steps=(1,), out=tmp_path / "e")


def test_cli_evaluate(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = board_file(tmp_path)
    rc = main(["dynamics", "evaluate", str(run), "--puzzles", str(path), "--limit", "4", "--threads", "1", "--quiet"])
    assert rc == 0
    saved = read_json(run / "evaluate-mine" / "results.json")  # the default --out
    assert (saved["read"], saved["limit"], saved["steps"]) == (4, 4, [8, 16, 32, 64, 128])
    printed = capsys.readouterr().out
    assert "blank cells" in printed and "scored 4 of 4 puzzles" in printed and printed.count("%") == 10
    bad = write(tmp_path, "bad.txt", f"{PUZZLE}\n{PUZZLE[:80]}\n")
    assert main(["dynamics", "evaluate", str(run), "--puzzles", str(bad), "--quiet"]) == 2
    assert f"{bad}:2" in capsys.readouterr().err
