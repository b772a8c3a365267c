"""Sudoku solver, pool reader, board builder, split files, metrics and the ``dynascope sudoku`` command.

Exactness of the solver is checked against brute-force enumeration on grids with a few blanks; the
builder tests use the real 17-clue pool from ``$DYNASCOPE_DATA`` and skip without it.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dynascope import runio
from dynascope.cli import main
from dynascope.dynamics import sudoku
from dynascope.dynamics.solver import UNITS, count_solutions, find_solutions, is_valid_solution, solve
from dynascope.dynamics.sudoku import (
    POOL_FILE,
    SPLIT_NAMES,
    SudokuBuildConfig,
    SudokuSplit,
    allocate_sources,
    build_datasets,
    derive_boards,
    load_split,
    random_cell_maps,
    read_pool,
    relabel_digits,
    solve_sources,
)
from dynascope.dynamics.sudoku_metrics import board_accuracy, cell_accuracy
from dynascope.errors import ConfigError, DataError, RunExistsError

SMALL = SudokuBuildConfig(seed=7, easy_train=24, easy_test=12, hard_train=18, hard_valid=18, hard_test=36)


# ------------------------------------------------------------------------------------------ helpers


def _valid_rows(grids: np.ndarray) -> np.ndarray:
    """Independent validity check for [M, 81] grids: every row, column and box is a set {1..9}."""
    g = grids.reshape(-1, 9, 9)
    boxes = g.reshape(-1, 3, 3, 3, 3).transpose(0, 1, 3, 2, 4).reshape(-1, 9, 9)
    ok = np.ones(len(g), dtype=bool)
    for view in (g, g.transpose(0, 2, 1), boxes):
        ok &= np.all(np.sort(view, axis=2) == np.arange(1, 10), axis=(1, 2))
    return ok


def _brute_force(puzzle: np.ndarray) -> list[np.ndarray]:
    """Every completion of ``puzzle`` by trying all 9^k digit tuples in its k blanks."""
    blanks = np.flatnonzero(puzzle == 0)
    combos = np.array(list(itertools.product(range(1, 10), repeat=len(blanks))), dtype=np.int8)
    grids = np.repeat(puzzle[None, :], len(combos), axis=0)
    grids[:, blanks] = combos
    return list(grids[_valid_rows(grids)])


def _random_grid(seed: int) -> np.ndarray:
    """A valid full grid: the solver's completion of a random first row."""
    puzzle = np.zeros(81, dtype=np.int8)
    puzzle[:9] = np.random.default_rng(seed).permutation(9) + 1
    grid = solve(puzzle)
    assert grid is not None
    return grid


def _rectangle(grid: np.ndarray) -> list[int] | None:
    """Four cells (two rows of one band, two columns of different stacks) holding a/b over b/a, if any."""
    g = grid.reshape(9, 9)
    for r1, r2 in itertools.combinations(range(9), 2):
        if r1 // 3 != r2 // 3:
            continue
        for c1, c2 in itertools.combinations(range(9), 2):
            if c1 // 3 != c2 // 3 and g[r1, c1] == g[r2, c2] and g[r1, c2] == g[r2, c1]:
                return [9 * r1 + c1, 9 * r1 + c2, 9 * r2 + c1, 9 * r2 + c2]
    return None


def _pool_text(puzzles: list[str], citation: str = "Somebody, A collection of puzzles, http://example.org") -> str:
    return "\n".join([citation, *puzzles]) + "\n"


def _seventeen(grid: np.ndarray, seed: int) -> str:
    """A consistent 17-given puzzle string cut from a valid grid (not necessarily uniquely solvable)."""
    keep = np.random.default_rng(seed).choice(81, size=17, replace=False)
    puzzle = np.zeros(81, dtype=np.int8)
    puzzle[keep] = grid[keep]
    return "".join(map(str, puzzle.tolist()))


@pytest.fixture(scope="module")
def data_root() -> Path:
    value = os.environ.get("DYNASCOPE_DATA", "")
    if not value:
        pytest.skip("real-data tests need DYNASCOPE_DATA pointing at the shared data folder (sudoku/sudoku17.txt)")
    return Path(value)


@pytest.fixture(scope="module")
def pool(data_root: Path) -> sudoku.SudokuPool:
    return read_pool(data_root / POOL_FILE)


@pytest.fixture(scope="module")
def built(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sudoku") / "build"
    build_datasets(SMALL, data_root / POOL_FILE, out)
    return out


# ------------------------------------------------------------------------------------------- solver


@pytest.mark.parametrize("seed", range(6))
def test_count_solutions_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    grid = _random_grid(seed)
    rect = _rectangle(grid)
    # Even seeds blank an unavoidable rectangle plus one cell (>= 2 solutions); odd seeds blank 5 random cells.
    if seed % 2 == 0 and rect is not None:
        others = np.setdiff1d(np.arange(81), rect)
        blanks = np.asarray([*rect, rng.choice(others)])
    else:
        blanks = rng.choice(81, size=5, replace=False)
    puzzle = grid.copy()
    puzzle[blanks] = 0
    expected = _brute_force(puzzle)
    assert count_solutions(puzzle, limit=100) == len(expected)
    found = find_solutions(puzzle, limit=100)
    assert sorted(map(bytes, found)) == sorted(map(bytes, expected))
    if seed % 2 == 0 and rect is not None:
        assert len(expected) >= 2


def test_rectangle_puzzle_has_exactly_two_solutions() -> None:
    for seed in range(50):
        grid = _random_grid(seed)
        rect = _rectangle(grid)
        if rect is not None:
            break
    assert rect is not None, "no unavoidable rectangle in 50 random grids"
    puzzle = grid.copy()
    puzzle[rect] = 0
    assert len(_brute_force(puzzle)) == 2
    assert count_solutions(puzzle) == 2
    assert count_solutions(puzzle, limit=1) == 1
    assert solve(puzzle) is not None


def test_inconsistent_puzzles_have_no_solution() -> None:
    clash = np.zeros(81, dtype=np.int8)
    clash[[0, 5]] = 4  # two 4s in row 1
    assert solve(clash) is None
    assert count_solutions(clash) == 0
    # No two givens clash, but r1c9 has no candidate: row 1 holds 1..8 and column 9 holds a 9.
    dead = np.zeros(81, dtype=np.int8)
    dead[:8] = np.arange(1, 9)
    dead[9 * 5 + 8] = 9
    assert solve(dead) is None
    assert count_solutions(dead) == 0


def test_empty_grid_count_stops_at_limit() -> None:
    assert count_solutions("." * 81, limit=5) == 5
    assert is_valid_solution(solve("0" * 81))


@pytest.mark.parametrize(
    ("bad", "what"),
    [("1" * 80, "81 characters"), ("x" * 81, "81 characters"), ([0] * 80 + [10], "digits 0-9"), (np.zeros(80), "81")],
)
def test_malformed_puzzles_are_rejected(bad: object, what: str) -> None:
    with pytest.raises(DataError, match=what):
        solve(bad)


def test_is_valid_solution() -> None:
    grid = _random_grid(3)
    assert is_valid_solution(grid)
    assert is_valid_solution(grid.reshape(9, 9))
    swapped = grid.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert not is_valid_solution(swapped)
    holed = grid.copy()
    holed[40] = 0
    assert not is_valid_solution(holed)


# ---------------------------------------------------------------------------------- transformations


def test_symmetries_preserve_validity_and_units() -> None:
    rng = np.random.default_rng(0)
    grids = np.stack([_random_grid(s) for s in range(8)])
    perms = np.argsort(rng.random((8, 9)), axis=1) + 1
    relabelled = relabel_digits(grids, perms)
    assert _valid_rows(relabelled).all()
    assert np.array_equal(relabelled, perms[np.arange(8)[:, None], grids - 1])
    maps = random_cell_maps(rng, 200)
    assert np.array_equal(np.sort(maps, axis=1), np.tile(np.arange(81), (200, 1)))
    units = {frozenset(u) for u in UNITS}
    for cell_map in maps:
        assert {frozenset(cell_map[list(u)].tolist()) for u in UNITS} == units
    moved = np.take_along_axis(np.repeat(grids, 25, axis=0), maps, axis=1)
    assert _valid_rows(moved).all()
    assert len({bytes(m) for m in maps}) > 150  # the maps really vary


def test_derive_boards_reveals_solution_cells() -> None:
    rng = np.random.default_rng(1)
    solutions = np.stack([_random_grid(s) for s in range(10)])
    puzzles = np.where(rng.random((10, 81)) < 0.25, solutions, 0).astype(np.int8)
    targets = np.count_nonzero(puzzles, axis=1) + rng.integers(0, 10, size=10)
    for symmetries in ("digits", "all"):
        new_p, new_s = derive_boards(puzzles, solutions, targets, np.random.default_rng(2), symmetries)
        assert _valid_rows(new_s).all()
        assert np.array_equal(np.count_nonzero(new_p, axis=1), targets)
        assert not np.any((new_p != 0) & (new_p != new_s))
    with pytest.raises(ConfigError):
        derive_boards(puzzles, solutions, targets - 50, rng, "digits")
    with pytest.raises(ConfigError):
        derive_boards(puzzles, solutions, targets, rng, "rotations")


# ------------------------------------------------------------------------------------------ metrics


def test_board_and_cell_accuracy_match_a_loop() -> None:
    rng = np.random.default_rng(0)
    solutions = np.stack([_random_grid(s) for s in range(6)])
    puzzles = np.where(rng.random((6, 81)) < 0.4, solutions, 0).astype(np.int8)
    pred = np.where(rng.random((6, 81)) < 0.97, solutions, rng.integers(1, 10, size=(6, 81))).astype(np.int8)
    pred[0] = np.where(puzzles[0] != 0, 0, solutions[0])  # wrong on every given, right on every blank
    boards, hits, blanks = 0, 0, 0
    for p, s, q in zip(pred, solutions, puzzles, strict=True):
        ok = [int(p[i] == s[i]) for i in range(81) if q[i] == 0]
        boards += all(ok)
        hits += sum(ok)
        blanks += len(ok)
    assert boards >= 1
    assert board_accuracy(pred, solutions, puzzles) == pytest.approx(boards / 6)
    assert cell_accuracy(pred, solutions, puzzles) == pytest.approx(hits / blanks)
    as_tensor = [torch.as_tensor(a.astype(np.int64)) for a in (pred, solutions, puzzles)]
    assert board_accuracy(*as_tensor) == pytest.approx(boards / 6)
    with pytest.raises(DataError, match="shape"):
        board_accuracy(pred[:, :80], solutions, puzzles)


# -------------------------------------------------------------------------------------------- reader


def test_reader_reads_a_small_pool(tmp_path: Path) -> None:
    grid = _random_grid(0)
    lines = [_seventeen(grid, s) for s in range(3)]
    path = tmp_path / "pool.txt"
    path.write_text(_pool_text(lines))
    pool = read_pool(path)
    assert len(pool) == 3
    assert pool.source_line.tolist() == [2, 3, 4]
    assert ["".join(map(str, p.tolist())) for p in pool.puzzles] == lines
    assert pool.citation.startswith("Somebody")


@pytest.mark.parametrize(
    ("corrupt", "line", "message"),
    [
        (lambda ls: [ls[0], ls[1], ls[2][:-1]], 4, "81 digits"),
        (lambda ls: [ls[0], ls[1].replace("0", "a", 1), ls[2]], 3, "81 digits"),
        (lambda ls: [ls[0], "", ls[2]], 3, "81 digits"),
        (lambda ls: [ls[0], ls[1], ls[2].replace("0", "1", 1)], 4, "17 givens"),
    ],
)
def test_reader_errors_name_file_and_line(tmp_path: Path, corrupt: object, line: int, message: str) -> None:
    grid = _random_grid(0)
    lines = corrupt([_seventeen(grid, s) for s in range(3)])  # type: ignore[operator]
    path = tmp_path / "pool.txt"
    path.write_text(_pool_text(lines))
    with pytest.raises(DataError, match=message) as info:
        read_pool(path)
    assert info.value.line == line
    assert info.value.path == str(path)
    assert f"{path}:{line}" in str(info.value)


def test_reader_rejects_clashing_givens_and_missing_citation(tmp_path: Path) -> None:
    good = _seventeen(_random_grid(0), 0)
    clash = np.zeros(81, dtype=np.int8)
    clash[[0, 1]] = 5
    clash[np.arange(20, 35)] = _random_grid(1)[np.arange(20, 35)]
    path = tmp_path / "pool.txt"
    path.write_text(_pool_text([good, "".join(map(str, clash.tolist()))]))
    with pytest.raises(DataError, match="r1c1 and r1c2 both hold 5") as info:
        read_pool(path)
    assert info.value.line == 3
    path.write_text("\n".join([good, good]) + "\n")
    with pytest.raises(DataError, match="citation") as info:
        read_pool(path)
    assert info.value.line == 1


def test_reader_drops_repeated_puzzles_with_a_note(tmp_path: Path) -> None:
    grid = _random_grid(0)
    one, other = _seventeen(grid, 0), _seventeen(grid, 1)
    path = tmp_path / "pool.txt"
    path.write_text(_pool_text([one] * 13 + [other, one]))
    notes: list[str] = []
    pool = read_pool(path, log=notes.append)
    assert len(pool) == 2 and pool.source_line.tolist() == [2, 15]
    assert ["".join(map(str, p.tolist())) for p in pool.puzzles] == [one, other]
    assert notes == [f"{path}: 13 puzzle lines repeat an earlier line and are dropped; 2 distinct puzzles remain"]
    with pytest.raises(ConfigError, match="the pool has 2 distinct puzzles"):
        allocate_sources(SMALL, len(pool))


def test_reader_accepts_crlf_and_cr_line_endings(tmp_path: Path) -> None:
    lines = [_seventeen(_random_grid(0), s) for s in range(3)]
    path = tmp_path / "pool.txt"
    for ending in ("\r\n", "\r"):
        path.write_bytes(_pool_text(lines).replace("\n", ending).encode())
        pool = read_pool(path)
        assert ["".join(map(str, p.tolist())) for p in pool.puzzles] == lines
        assert pool.source_line.tolist() == [2, 3, 4]


# -------------------------------------------------------------------------------------------- splits


def test_split_validation_and_names(tmp_path: Path) -> None:
    solutions = np.stack([_random_grid(s) for s in range(4)])
    puzzles = np.where(np.arange(81) % 3 == 0, solutions, 0).astype(np.int8)
    split = SudokuSplit(
        puzzles=puzzles,
        solutions=solutions,
        source_line=np.arange(2, 6, dtype=np.int32),
        num_givens=np.count_nonzero(puzzles, axis=1).astype(np.int16),
    )
    runio.write_npz(tmp_path / "hard_test.npz", split.arrays())
    loaded = load_split(tmp_path, "hard_test")
    assert all(np.array_equal(loaded.arrays()[k], v) for k, v in split.arrays().items())
    with pytest.raises(DataError, match="split name"):
        load_split(tmp_path, "hard_dev")
    with pytest.raises(DataError, match="not found"):
        load_split(tmp_path, "easy_test")
    bad = solutions.copy()
    bad[1, [0, 1]] = bad[1, [1, 0]]
    for change, field in [
        ({"solutions": bad}, "solutions"),
        ({"puzzles": np.where(puzzles > 0, puzzles % 9 + 1, 0).astype(np.int8)}, "puzzles"),
        ({"num_givens": split.num_givens + 1}, "num_givens"),
        ({"source_line": split.source_line.astype(np.int64)}, "source_line"),
    ]:
        with pytest.raises(DataError) as info:
            replace(split, **change)
        assert info.value.field == field
    runio.write_npz(tmp_path / "easy_test.npz", {**split.arrays(), "solutions": bad})
    with pytest.raises(DataError, match=r"easy_test\.npz") as info:
        load_split(tmp_path, "easy_test")
    assert info.value.field == "solutions"


def test_config_validation_and_source_allocation() -> None:
    for bad in (
        {"easy_train": -1},
        {"boards_per_source": 0},
        {"hard_givens": (16, 34)},
        {"easy_givens": (42, 31)},
        {"easy_symmetries": "rotations"},
    ):
        with pytest.raises(ConfigError):
            SudokuBuildConfig(**bad)
    config = SudokuBuildConfig(
        easy_train=30, easy_test=10, hard_train=20, hard_valid=5, hard_test=8, boards_per_source=2
    )
    blocks = allocate_sources(config, 200)
    assert {k: len(v) for k, v in blocks.items()} == {
        "easy_train": 15,
        "easy_test": 5,
        "hard_train": 10,
        "hard_valid": 3,
        "hard_test": 4,
    }
    every = np.concatenate(list(blocks.values()))
    assert len(np.unique(every)) == len(every)
    again = allocate_sources(config, 200)
    assert all(np.array_equal(blocks[k], again[k]) for k in SPLIT_NAMES)
    bigger = allocate_sources(replace(config, easy_train=60), 200)
    assert np.array_equal(bigger["hard_test"], blocks["hard_test"])  # later splits never move earlier ones
    with pytest.raises(ConfigError, match="pool has 30"):
        allocate_sources(config, 30)


# ------------------------------------------------------------------------------------- real data


def test_real_pool_reads_completely(pool: sudoku.SudokuPool) -> None:
    assert len(pool) == 49151
    assert "Royle" in pool.citation
    assert pool.source_line[0] == 2 and pool.source_line[-1] == 49152
    assert np.all(np.count_nonzero(pool.puzzles, axis=1) == 17)


def test_solver_on_real_seventeen_clue_puzzles(pool: sudoku.SudokuPool) -> None:
    rows = np.random.default_rng(0).choice(len(pool), size=20, replace=False)
    for row in rows:
        puzzle = pool.puzzles[row]
        solution = solve(puzzle)
        assert solution is not None
        assert _valid_rows(solution[None, :])[0]
        assert np.array_equal(solution[puzzle != 0], puzzle[puzzle != 0])
        assert count_solutions(puzzle) == 1


def test_build_writes_valid_disjoint_splits(built: Path, pool: sudoku.SudokuPool) -> None:
    splits = {name: load_split(built, name) for name in SPLIT_NAMES}
    summary = runio.read_json(built / "summary.json")
    expected_config = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(SMALL).items()}
    assert runio.read_json(built / "config.json") == expected_config
    assert runio.read_json(built / "env.json")["seed"] == SMALL.seed
    seen: set[int] = set()
    for name, split in splits.items():
        assert len(split) == getattr(SMALL, name) == summary["splits"][name]["boards"]
        low, high = SMALL.easy_givens if name.startswith("easy") else SMALL.hard_givens
        assert split.num_givens.min() >= low and split.num_givens.max() <= high
        assert np.array_equal(np.count_nonzero(split.puzzles, axis=1), split.num_givens)
        assert _valid_rows(split.solutions).all()
        assert not np.any((split.puzzles != 0) & (split.puzzles != split.solutions))
        lines = set(split.source_line.tolist())
        assert not lines & seen, f"{name} shares source puzzles with another split"
        seen |= lines
        for board in split.puzzles[:3]:
            assert count_solutions(board) == 1
    # 36 hard test boards over 18 givens counts: exactly two of each.
    assert summary["splits"]["hard_test"]["givens_histogram"] == {str(g): 2 for g in range(17, 35)}
    # Hard boards keep the source's given positions and relabel its digits one-to-one.
    hard = splits["hard_test"]
    for board, line in zip(hard.puzzles, hard.source_line, strict=True):
        source = pool.puzzles[line - 2]
        cells = source != 0
        assert np.all(board[cells] != 0)
        pairs = set(zip(source[cells].tolist(), board[cells].tolist(), strict=True))
        assert len({a for a, _ in pairs}) == len({b for _, b in pairs}) == len(pairs)


def test_build_from_a_pool_with_repeats_never_shares_a_puzzle(data_root: Path, tmp_path: Path) -> None:
    real = (data_root / POOL_FILE).read_text(encoding="ascii", errors="replace").split("\n")
    puzzles = real[1:31]
    path = tmp_path / "pool.txt"
    path.write_text(_pool_text([p for p in puzzles for _ in range(3)]))
    notes: list[str] = []
    config = SudokuBuildConfig(seed=1, easy_train=8, easy_test=4, hard_train=6, hard_valid=4, hard_test=8)
    build_datasets(config, path, tmp_path / "build", log=notes.append)
    assert any("60 puzzle lines repeat an earlier line" in note for note in notes)
    owner: dict[str, str] = {}
    for name in SPLIT_NAMES:
        for line in load_split(tmp_path / "build", name).source_line.tolist():
            assert owner.setdefault(puzzles[(line - 2) // 3], name) == name, "two splits share a source puzzle"
    assert len(owner) == 30


def test_build_is_deterministic_and_seeded(built: Path, data_root: Path, tmp_path: Path) -> None:
    build_datasets(SMALL, data_root / POOL_FILE, tmp_path / "again")
    for name in SPLIT_NAMES:
        a, b = load_split(built, name), load_split(tmp_path / "again", name)
        for key, value in a.arrays().items():
            other = b.arrays()[key]
            assert value.dtype == other.dtype and value.tobytes() == other.tobytes(), (name, key)
    summary = build_datasets(replace(SMALL, seed=8), data_root / POOL_FILE, tmp_path / "again", overwrite=True)
    assert summary["solver"]["from_cache"] < summary["solver"]["requested"]
    assert not np.array_equal(
        load_split(built, "hard_test").puzzles, load_split(tmp_path / "again", "hard_test").puzzles
    )


def test_rerun_is_a_no_op_and_other_configs_need_overwrite(built: Path, data_root: Path) -> None:
    stamp = (built / "easy_train.npz").stat().st_mtime_ns
    build_datasets(SMALL, data_root / POOL_FILE, built)
    assert (built / "easy_train.npz").stat().st_mtime_ns == stamp
    with pytest.raises(RunExistsError):
        build_datasets(replace(SMALL, easy_test=11), data_root / POOL_FILE, built)


def test_killed_solve_resumes_from_cache(
    pool: sudoku.SudokuPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = np.arange(100, 130)
    cache = tmp_path / "cache" / "solutions.npz"
    calls = {"n": 0}

    def dying(puzzle: np.ndarray, limit: int = 2) -> list[np.ndarray]:
        calls["n"] += 1
        if calls["n"] > 12:
            raise KeyboardInterrupt
        return find_solutions(puzzle, limit)

    monkeypatch.setattr(sudoku, "_CHECKPOINT_EVERY", 5)
    monkeypatch.setattr(sudoku, "find_solutions", dying)
    with pytest.raises(KeyboardInterrupt):
        solve_sources(pool, rows, cache)
    monkeypatch.setattr(sudoku, "find_solutions", find_solutions)
    solutions, stats = solve_sources(pool, rows, cache)
    assert stats["from_cache"] == 10 and stats["solved_now"] == 20
    assert all(np.array_equal(solutions[i], solve(pool.puzzles[r])) for i, r in enumerate(rows))
    _, stats = solve_sources(pool, rows[::-1], cache)
    assert stats["solved_now"] == 0


def test_cli_build_and_info(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    sizes = ["--easy-train", "6", "--easy-test", "3", "--hard-train", "0", "--hard-valid", "2", "--hard-test", "4"]
    args = ["sudoku", "build", "--out", str(out), "--data-dir", str(data_root), "--boards-per-source", "2"]
    assert main([*args, "--quiet", *sizes]) == 0
    easy = load_split(out, "easy_train")
    assert len(easy) == 6 and len(load_split(out, "hard_train")) == 0
    _, uses = np.unique(easy.source_line, return_counts=True)
    assert uses.tolist() == [2, 2, 2]
    assert main(["sudoku", "info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "easy_train" in printed and "givens 17-" in printed


def test_cli_explains_a_missing_data_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DYNASCOPE_DATA", raising=False)
    assert main(["sudoku", "build", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "DYNASCOPE_DATA" in capsys.readouterr().err
