"""Sudoku puzzle files a user brings, for scoring a trained looped model: the common formats, auto-detected.

Formats:
- **lines**: one puzzle per line, 81 characters of ``1``-``9`` with ``0`` or ``.`` for blanks, optionally among
  other whitespace-separated fields (an id before, a rating after): the puzzle is the one 81-character field,
  and a second 81-character field of digits 1-9, if present, is its solution. Blank lines and lines starting
  with ``#`` are skipped.
- **csv**: a header row naming a puzzle column (``quizzes`` or ``puzzle``) and optionally a solution column
  (``solutions`` or ``solution``), case-insensitive; other columns are ignored; an empty solution cell means
  none. A first row whose first field is itself a puzzle is read as headerless ``puzzle[,solution]`` (RRN's
  files).

The format is read from the first line that is neither blank nor a comment: CSV when it names a puzzle
column, or has a comma and no 81-character whitespace-separated field; lines otherwise. UTF-8 with or without
a BOM; LF, CRLF or CR line ends. A malformed line (wrong length, a bad character, a solution that is not a
completed grid or disagrees with the puzzle's givens, a CSV row with another field count than its header) is a
``DataError`` naming file and line. :func:`complete_solutions` solves the puzzles that come without a solution
with the exact solver and sets aside those with no or several solutions (reported by line, not scored).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from dynascope.dynamics.solver import UNITS, find_solutions
from dynascope.errors import DataError
from dynascope.hooks import Progress, silent
from dynascope.validation import check_int, read_input_bytes

FORMATS = ("lines", "csv")
PUZZLE_COLUMNS = ("quizzes", "puzzle")
SOLUTION_COLUMNS = ("solutions", "solution")

_UNIT_NAMES = tuple(f"{kind} {i + 1}" for kind in ("row", "column", "box") for i in range(9))


@dataclass(frozen=True)
class PuzzleFile:
    """The puzzles of one file: ``puzzles`` int8 [N, 81] (0 = blank), ``solutions`` int8 [N, 81] (all 0 where
    the file gives none), ``lines`` int64 [N] (the 1-based line of each puzzle) and the detected format."""

    path: str
    format: str
    puzzles: np.ndarray
    solutions: np.ndarray
    lines: np.ndarray

    def __len__(self) -> int:
        return int(self.puzzles.shape[0])

    @property
    def has_solution(self) -> np.ndarray:
        """Bool [N]: whether the file gave the puzzle's solution."""
        return self.solutions.any(axis=1)


@dataclass(frozen=True)
class ScoredPuzzles:
    """Puzzles with one solution each, ready to score (``from_solver`` marks those the solver supplied), and the
    lines of the puzzles set aside: ``unsolvable`` (no solution) and ``multiple`` (two or more)."""

    puzzles: np.ndarray
    solutions: np.ndarray
    lines: np.ndarray
    from_solver: np.ndarray
    unsolvable: tuple[int, ...]
    multiple: tuple[int, ...]

    def __len__(self) -> int:
        return int(self.puzzles.shape[0])

    @property
    def num_givens(self) -> np.ndarray:
        """Int [N]: the number of given cells of each puzzle."""
        return np.count_nonzero(self.puzzles, axis=1)


def _grid(text: str, what: str, blanks: bool) -> np.ndarray:
    """``text`` as int8 [81]; raises ``ValueError`` saying what is wrong (the caller adds file and line)."""
    if len(text) != 81:
        raise ValueError(f"expected the {what} to have 81 characters, found {len(text)}: {text[:24]!r}")
    allowed = "0123456789." if blanks else "123456789"
    bad = next((i for i, ch in enumerate(text) if ch not in allowed), None)
    if bad is not None:
        expected = "1-9, 0 or '.'" if blanks else "1-9"
        raise ValueError(
            f"unexpected character {text[bad]!r} at position {bad + 1} of the {what} (expected {expected})"
        )
    return (np.frombuffer(text.replace(".", "0").encode("ascii"), dtype=np.uint8) - 48).astype(np.int8)


def _check_solution(puzzle: np.ndarray, solution: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``solution`` is a completed grid that keeps every given of ``puzzle``."""
    units = np.sort(solution[np.asarray(UNITS)], axis=1)
    broken = np.flatnonzero(np.any(units != np.arange(1, 10), axis=1))
    if broken.size:
        raise ValueError(f"the solution is not a valid completed grid: {_UNIT_NAMES[broken[0]]} repeats a digit")
    differ = np.flatnonzero((puzzle != 0) & (puzzle != solution))
    if differ.size:
        cell = int(differ[0])
        raise ValueError(
            f"the solution disagrees with the puzzle's given at r{cell // 9 + 1}c{cell % 9 + 1} "
            f"(puzzle {puzzle[cell]}, solution {solution[cell]})"
        )


def _pair(puzzle_text: str, solution_text: str | None, path: Path, line: int) -> tuple[np.ndarray, np.ndarray]:
    """A checked (puzzle, solution) pair from ``path``:``line``; the solution is all 0 when absent."""
    try:
        puzzle = _grid(puzzle_text, "puzzle", blanks=True)
    except ValueError as exc:
        raise DataError(str(exc), path=path, line=line, field="puzzle") from None
    if solution_text is None:
        return puzzle, np.zeros(81, dtype=np.int8)
    try:
        solution = _grid(solution_text, "solution", blanks=False)
        _check_solution(puzzle, solution)
    except ValueError as exc:
        raise DataError(str(exc), path=path, line=line, field="solution") from None
    return puzzle, solution


def _read_text(path: Path) -> str:
    """The file decoded as UTF-8 (a leading BOM dropped), or a ``DataError`` naming the line that is not."""
    raw = read_input_bytes(path, "puzzle file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x})", path=path, line=line) from None


def _detect(lines: list[str]) -> str:
    """``"csv"`` or ``"lines"``, from the first line that is neither blank nor a comment."""
    first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    if any(name.strip().strip('"').lower() in PUZZLE_COLUMNS for name in first.split(",")):
        return "csv"  # a header, also of a single puzzle column
    return "csv" if "," in first and not any(len(f) == 81 for f in first.split()) else "lines"


Row = tuple[int, str, str | None]
"""(line, puzzle text, solution text or None) of one puzzle of a file."""


def _rows_lines(lines: list[str], path: Path) -> Iterator[Row]:
    """The puzzles of the line format, one per line that is neither blank nor a comment."""
    for number, text in enumerate(lines, start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        fields = text.split()
        grids = [f for f in fields if len(f) == 81]
        if not grids:
            longest = max(fields, key=len)
            raise DataError(
                f"expected an 81-character puzzle field, found none (the longest field has {len(longest)} "
                f"characters: {longest[:24]!r})",
                path=path,
                line=number,
            )
        if len(grids) > 2:
            raise DataError(
                f"expected a puzzle and at most one solution, found {len(grids)} 81-character fields",
                path=path,
                line=number,
            )
        yield number, grids[0], grids[1] if len(grids) == 2 else None


def _csv_columns(header: list[str], path: Path, line: int) -> tuple[int, int | None, bool]:
    """(puzzle column, solution column or None, whether the first row is itself data: no header)."""
    names = [h.strip().lower() for h in header]
    if len(names[0]) == 81 and all(ch in "0123456789." for ch in names[0]):
        return 0, 1 if len(names) > 1 else None, True
    puzzle = next((i for i, name in enumerate(names) if name in PUZZLE_COLUMNS), None)
    if puzzle is None:
        raise DataError(
            f"the CSV header has no puzzle column: expected one of {list(PUZZLE_COLUMNS)}, found {header}",
            path=path,
            line=line,
        )
    solution = next((i for i, name in enumerate(names) if name in SOLUTION_COLUMNS), None)
    return puzzle, solution, False


def _rows_csv(text: str, path: Path) -> Iterator[Row]:
    """The puzzles of a CSV file, one per data row that is not empty."""
    reader = csv.reader(io.StringIO(text, newline=""))
    columns: tuple[int, int | None, int] | None = None
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if columns is None:
            puzzle_col, solution_col, is_data = _csv_columns(row, path, reader.line_num)
            columns = (puzzle_col, solution_col, len(row))
            if not is_data:
                continue
        puzzle_col, solution_col, width = columns
        if len(row) != width:
            raise DataError(
                f"expected {width} comma-separated fields as in the first row, found {len(row)}",
                path=path,
                line=reader.line_num,
            )
        solution = row[solution_col].strip() if solution_col is not None else ""
        yield reader.line_num, row[puzzle_col].strip(), solution or None


def read_puzzles(path: str | Path, limit: int | None = None) -> PuzzleFile:
    """Read the puzzles of ``path`` (format auto-detected, module docstring); only the first ``limit`` when given.

    Every read puzzle is checked (lines after the ``limit``-th puzzle are not read); the first bad one raises a
    ``DataError`` with file:line. An empty file, or one with no puzzle, is a ``DataError`` too.
    """
    path = Path(path)
    if limit is not None:
        check_int(limit, "limit")
    text = _read_text(path)
    lines = re.split(r"\r\n|\r|\n", text)
    fmt = _detect(lines)
    rows = list(islice(_rows_csv(text, path) if fmt == "csv" else _rows_lines(lines, path), limit))
    if not rows:
        raise DataError("no puzzles found (the file is empty or holds only blank and comment lines)", path=path)
    pairs = [_pair(puzzle, solution, path, number) for number, puzzle, solution in rows]
    return PuzzleFile(
        path=str(path),
        format=fmt,
        puzzles=np.stack([puzzle for puzzle, _ in pairs]),
        solutions=np.stack([solution for _, solution in pairs]),
        lines=np.asarray([row[0] for row in rows], dtype=np.int64),
    )


def complete_solutions(file: PuzzleFile, progress: Progress = silent) -> ScoredPuzzles:
    """Solve the puzzles of ``file`` that have no solution (exact solver, searching for up to two) and keep those
    with exactly one; the others are listed by line as ``unsolvable`` or ``multiple``. Given solutions are kept."""
    keep: list[int] = []
    solutions = file.solutions.copy()
    from_solver = np.zeros(len(file), dtype=bool)
    unsolvable: list[int] = []
    multiple: list[int] = []
    given = file.has_solution
    for i in progress(range(len(file)), desc="solving puzzles without a solution", total=len(file)):
        if not given[i]:
            found = find_solutions(file.puzzles[i], limit=2)
            if len(found) != 1:
                (unsolvable if not found else multiple).append(int(file.lines[i]))
                continue
            solutions[i], from_solver[i] = found[0], True
        keep.append(i)
    index = np.asarray(keep, dtype=np.int64)
    return ScoredPuzzles(
        puzzles=file.puzzles[index],
        solutions=solutions[index],
        lines=file.lines[index],
        from_solver=from_solver[index],
        unsolvable=tuple(unsolvable),
        multiple=tuple(multiple),
    )
