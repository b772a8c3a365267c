"""Exact 9x9 Sudoku solver: bitmask constraint propagation plus minimum-remaining-values backtracking.

Cells are numbered 0..80 row-major; digits are 1..9 and 0 marks a blank. Each cell keeps a 9-bit
candidate mask (bit ``d - 1`` for digit ``d``). Placing a digit removes it from the 20 peers; a cell
left with one candidate is placed (naked single) and a digit with one possible cell in a unit is
placed there (hidden single). When propagation stalls, the search branches on the blank with the
fewest candidates. The search is exhaustive, so ``count_solutions`` is exact up to its limit.

Pure functions on grids: nothing here reads files or prints.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dynascope.errors import DataError

ALL_DIGITS = 0x1FF

_ROWS = tuple(tuple(9 * r + c for c in range(9)) for r in range(9))
_COLS = tuple(tuple(9 * r + c for r in range(9)) for c in range(9))
_BOXES = tuple(
    tuple(9 * (3 * br + r) + 3 * bc + c for r in range(3) for c in range(3)) for br in range(3) for bc in range(3)
)
UNITS: tuple[tuple[int, ...], ...] = _ROWS + _COLS + _BOXES
"""The 27 units (9 rows, 9 columns, 9 boxes) as tuples of cell indices."""

PEERS: tuple[tuple[int, ...], ...] = tuple(
    tuple(sorted({p for unit in UNITS if cell in unit for p in unit} - {cell})) for cell in range(81)
)
"""For each cell, the 20 other cells that share a row, column or box with it."""

_POPCOUNT = tuple(bin(m).count("1") for m in range(512))
_SINGLE_DIGIT = tuple(m.bit_length() if _POPCOUNT[m] == 1 else 0 for m in range(512))
_DIGITS_OF = tuple(tuple(d + 1 for d in range(9) if m >> d & 1) for m in range(512))

Grid = str | Sequence[int] | np.ndarray


def as_grid(puzzle: Grid, *, field: str = "puzzle") -> np.ndarray:
    """Return ``puzzle`` as an int8 array of 81 digits (0 = blank), checking only shape and range.

    Accepts an 81-character string (``0`` or ``.`` for blanks), a sequence of 81 ints, or an array
    of shape [81] or [9, 9]. Raises ``DataError`` naming ``field`` when the input is malformed.
    """
    if isinstance(puzzle, str):
        text = puzzle.strip().replace(".", "0")
        if len(text) != 81 or not text.isdigit() or not text.isascii():
            raise DataError(f"expected 81 characters from 0-9 or '.', found {len(text)} characters", field=field)
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int8) - np.int8(48)
    arr = np.asarray(puzzle)
    if arr.shape not in ((81,), (9, 9)):
        raise DataError(f"expected 81 cells (shape [81] or [9, 9]), found shape {list(arr.shape)}", field=field)
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
        raise DataError(f"expected integer digits, found dtype {arr.dtype}", field=field)
    flat = arr.reshape(81)
    if flat.min() < 0 or flat.max() > 9:
        raise DataError(f"expected digits 0-9, found values {int(flat.min())}..{int(flat.max())}", field=field)
    return flat.astype(np.int8)


def conflicts(puzzle: Grid) -> list[tuple[int, int, int]]:
    """Pairs of givens that break the rules, as ``(cell_a, cell_b, digit)`` with ``cell_a < cell_b``."""
    grid = as_grid(puzzle)
    found: set[tuple[int, int, int]] = set()
    for unit in UNITS:
        seen: dict[int, int] = {}
        for cell in unit:
            digit = int(grid[cell])
            if digit:
                if digit in seen:
                    found.add((seen[digit], cell, digit))
                else:
                    seen[digit] = cell
    return sorted(found)


def is_valid_solution(grid: Grid) -> bool:
    """Whether ``grid`` is a completely filled grid in which every row, column and box holds 1..9 once."""
    return bool(valid_solution_mask(as_grid(grid, field="grid")[None, :])[0])


def valid_solution_mask(grids: np.ndarray) -> np.ndarray:
    """Vectorised ``is_valid_solution``: a bool array [N] for grids of shape [N, 81]."""
    grids = np.asarray(grids)
    if grids.ndim != 2 or grids.shape[1] != 81:
        raise DataError(f"expected grids of shape [N, 81], found {list(grids.shape)}", field="grids")
    units = np.sort(grids[:, np.asarray(UNITS)], axis=2)
    return np.all(units == np.arange(1, 10), axis=(1, 2))


class _State:
    """Candidate masks and placed digits of one node of the search tree."""

    __slots__ = ("cand", "grid")

    def __init__(self, cand: list[int], grid: list[int]) -> None:
        self.cand = cand
        self.grid = grid

    def copy(self) -> _State:
        return _State(self.cand[:], self.grid[:])

    def place(self, pending: list[tuple[int, int]]) -> bool:
        """Place every ``(cell, digit)`` in ``pending`` and propagate singles; False on a contradiction."""
        cand, grid = self.cand, self.grid
        while True:
            while pending:
                cell, digit = pending.pop()
                if grid[cell]:
                    if grid[cell] != digit:
                        return False
                    continue
                bit = 1 << (digit - 1)
                if not cand[cell] & bit:
                    return False
                grid[cell] = digit
                cand[cell] = 0
                for peer in PEERS[cell]:
                    mask = cand[peer]
                    if mask & bit:
                        mask ^= bit
                        cand[peer] = mask
                        if not mask:
                            return False
                        single = _SINGLE_DIGIT[mask]
                        if single:
                            pending.append((peer, single))
            if not self._hidden_singles(pending):
                return False
            if not pending:
                return True

    def _hidden_singles(self, pending: list[tuple[int, int]]) -> bool:
        """Queue digits that fit only one cell of a unit; False if some digit fits nowhere."""
        cand, grid = self.cand, self.grid
        for unit in UNITS:
            once = twice = placed = 0
            for cell in unit:
                mask = cand[cell]
                twice |= once & mask
                once |= mask
                if grid[cell]:
                    placed |= 1 << (grid[cell] - 1)
            if (once | placed) != ALL_DIGITS:
                return False
            only = once & ~twice & ~placed
            if only:
                for cell in unit:
                    hit = cand[cell] & only
                    if hit:
                        if _POPCOUNT[hit] > 1:
                            return False
                        pending.append((cell, hit.bit_length()))
        return True


def _initial_state(grid: np.ndarray) -> _State | None:
    """The propagated root state of ``grid``, or None when the givens already contradict each other."""
    state = _State([ALL_DIGITS] * 81, [0] * 81)
    pending = [(cell, int(digit)) for cell, digit in enumerate(grid.tolist()) if digit]
    return state if state.place(pending) else None


def _search(state: _State, limit: int, found: list[list[int]]) -> None:
    """Depth-first search from a propagated ``state``, appending full grids to ``found`` until ``limit``."""
    best_cell, best_count = -1, 10
    for cell, mask in enumerate(state.cand):
        if mask:
            count = _POPCOUNT[mask]
            if count < best_count:
                best_cell, best_count = cell, count
                if count == 2:
                    break
    if best_cell < 0:
        found.append(state.grid)
        return
    for digit in _DIGITS_OF[state.cand[best_cell]]:
        child = state.copy()
        if child.place([(best_cell, digit)]):
            _search(child, limit, found)
            if len(found) >= limit:
                return


def find_solutions(puzzle: Grid, limit: int = 2) -> list[np.ndarray]:
    """Up to ``limit`` solutions of ``puzzle`` (int8 [81] each, digits 1..9), in search order.

    The search is exhaustive, so fewer than ``limit`` results means these are all the solutions.
    Givens that contradict each other make the puzzle unsolvable (empty list), not an error;
    malformed input (wrong length, digits outside 0..9) raises ``DataError``.
    """
    if limit < 1:
        raise DataError(f"expected limit >= 1, found {limit}", field="limit")
    root = _initial_state(as_grid(puzzle))
    if root is None:
        return []
    found: list[list[int]] = []
    _search(root, limit, found)
    return [np.asarray(grid, dtype=np.int8) for grid in found]


def solve(puzzle: Grid) -> np.ndarray | None:
    """The first solution of ``puzzle`` as int8 [81] digits 1..9, or None if it has none."""
    found = find_solutions(puzzle, limit=1)
    return found[0] if found else None


def count_solutions(puzzle: Grid, limit: int = 2) -> int:
    """The number of solutions of ``puzzle``, exact up to ``limit`` (the search stops there).

    ``count_solutions(p) == 1`` certifies a unique solution; 0 means unsolvable.
    """
    return len(find_solutions(puzzle, limit=limit))
