"""Sudoku boards for the looped-attention studies: the 17-clue pool, easy (ID) and hard (OOD) splits.

Recipe (RRN's ``generate_hard.py`` idea, rebuilt on Royle's 17-clue pool; see the paper note §7):

1. Read the pool (line 1 is a citation, then one 17-given puzzle per line) and shuffle its lines
   with the seed. Each split takes its own consecutive block of the shuffled lines, in the order
   ``hard_test, hard_valid, hard_train, easy_test, easy_train``, so no two splits share a source
   puzzle and growing a later split never changes an earlier one.
2. Solve only the source puzzles a split needs, with the exact solver, and check each solution is
   unique. Solved pairs are cached in ``<out>/cache/`` (atomic writes), so a killed build resumes
   and a rebuild with another seed or other sizes solves only new lines.
3. For each board: pick a source from the split's block (each source gives ``boards_per_source``
   boards), transform the puzzle and its solution together with a random digit relabelling and, for
   ``symmetries="all"``, a random band / stack / row-within-band / column-within-stack permutation and
   an optional transpose (all preserve validity and uniqueness), then reveal k extra cells of the
   solution. Targets are spread evenly over the split's givens range: hard 17–34 (k = 0..17), easy
   31–42 (k = 14..25). Adding givens to a uniquely solvable puzzle keeps it uniquely solvable.

Defaults: hard splits use digit relabelling only (as RRN did); easy splits also use the geometric
symmetries, which spread the positional layout of Royle's canonicalised puzzles, as SATNet's random
boards are. Every array is a pure function of (pool file, config); the board order is shuffled.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from dynascope import runio
from dynascope.dynamics.solver import UNITS, conflicts, find_solutions, valid_solution_mask
from dynascope.errors import ConfigError, DataError
from dynascope.hooks import Log, Progress, no_log, silent
from dynascope.runio import SUDOKU
from dynascope.validation import read_input_bytes

POOL_FILE = Path("sudoku") / "sudoku17.txt"
"""Where the pool lives under the data root."""

SPLIT_NAMES = ("easy_train", "easy_test", "hard_train", "hard_valid", "hard_test")
ALLOCATION_ORDER = ("hard_test", "hard_valid", "hard_train", "easy_test", "easy_train")
"""Order in which splits take their blocks of shuffled source lines."""

SYMMETRIES = ("digits", "all")
CACHE_FILE = "solutions.npz"

_PUZZLE_LINE = re.compile(r"[0-9]{81}")
_CHECKPOINT_EVERY = 2000


# --------------------------------------------------------------------------------------------- pool


@dataclass(frozen=True)
class SudokuPool:
    """Puzzles of a pool file: ``puzzles`` int8 [N, 81] (0 = blank), ``source_line`` int32 [N] (1-based)."""

    puzzles: np.ndarray
    source_line: np.ndarray
    citation: str
    sha256: str
    path: str

    def __len__(self) -> int:
        return int(self.puzzles.shape[0])


def read_pool(path: str | Path, num_givens: int | None = 17, *, log: Log = no_log) -> SudokuPool:
    """Read a Royle-format pool: a citation line, then one puzzle of 81 digits (0 = blank) per line.

    Every puzzle is checked for length, characters, its number of givens (unless ``num_givens`` is
    None) and givens that break the rules; the first bad line raises ``DataError`` with file:line.
    Lines are split on LF, CRLF or CR. A puzzle repeated on a later line is dropped (``log`` says how
    many), so splits drawn from disjoint rows never share a source puzzle.
    """
    path = Path(path)
    raw = read_input_bytes(path, "Sudoku pool file")
    lines = re.split(r"\r\n|\r|\n", raw.decode("ascii", errors="replace"))
    if lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError("expected a citation line followed by puzzles, found an empty file", path=path)
    citation = lines[0].strip()
    if _PUZZLE_LINE.fullmatch(citation) or not re.search(r"[A-Za-z]{3}", citation):
        raise DataError(
            f"expected line 1 to be a citation (text), found {citation[:40]!r}", path=path, line=1, field="citation"
        )
    body = [line.strip() for line in lines[1:]]
    if not body:
        raise DataError("expected puzzles after the citation line, found none", path=path)
    for number, line in enumerate(body, start=2):
        if not _PUZZLE_LINE.fullmatch(line):
            raise DataError(
                f"expected 81 digits 0-9, found {len(line)} characters {line[:20]!r}...",
                path=path,
                line=number,
                field="puzzle",
            )
    puzzles = (np.frombuffer("".join(body).encode("ascii"), dtype=np.uint8) - 48).astype(np.int8).reshape(-1, 81)
    source_line = np.arange(2, len(body) + 2, dtype=np.int32)
    if num_givens is not None:
        counts = np.count_nonzero(puzzles, axis=1)
        bad = np.flatnonzero(counts != num_givens)
        if bad.size:
            raise DataError(
                f"expected {num_givens} givens, found {counts[bad[0]]}",
                path=path,
                line=int(source_line[bad[0]]),
                field="puzzle",
            )
    bad = np.flatnonzero(~_givens_consistent(puzzles))
    if bad.size:
        cell_a, cell_b, digit = conflicts(puzzles[bad[0]])[0]
        raise DataError(
            f"givens break the rules: {_cell_name(cell_a)} and {_cell_name(cell_b)} both hold {digit}",
            path=path,
            line=int(source_line[bad[0]]),
            field="puzzle",
        )
    _, first = np.unique(puzzles, axis=0, return_index=True)
    if len(first) < len(puzzles):
        keep = np.sort(first)
        log(
            f"{path}: {len(puzzles) - len(keep)} puzzle lines repeat an earlier line and are dropped; "
            f"{len(keep)} distinct puzzles remain"
        )
        puzzles, source_line = puzzles[keep], source_line[keep]
    return SudokuPool(
        puzzles=puzzles,
        source_line=source_line,
        citation=citation,
        sha256=hashlib.sha256(raw).hexdigest(),
        path=str(path),
    )


def _cell_name(cell: int) -> str:
    return f"r{cell // 9 + 1}c{cell % 9 + 1}"


def _givens_consistent(puzzles: np.ndarray) -> np.ndarray:
    """Bool [N]: no digit is given twice in any row, column or box."""
    units = np.sort(puzzles[:, np.asarray(UNITS)], axis=2)
    repeated = (units[:, :, 1:] == units[:, :, :-1]) & (units[:, :, 1:] > 0)
    return ~repeated.any(axis=(1, 2))


# ------------------------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class SudokuSplit:
    """One split: ``puzzles`` int8 [N, 81] (0 = blank), ``solutions`` int8 [N, 81] (1..9),
    ``source_line`` int32 [N] (line of the pool file each board came from), ``num_givens`` int16 [N].

    Construction checks shapes, dtypes, that solutions are valid grids and agree with the givens.
    """

    puzzles: np.ndarray
    solutions: np.ndarray
    source_line: np.ndarray
    num_givens: np.ndarray

    def __post_init__(self) -> None:
        dtypes = {"puzzles": np.int8, "solutions": np.int8, "source_line": np.int32, "num_givens": np.int16}
        for name, dtype in dtypes.items():
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.dtype != dtype:
                found = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
                raise DataError(f"expected a numpy array of dtype {np.dtype(dtype)}, found {found}", field=name)
        n = self.puzzles.shape[0]
        for name, shape in (("puzzles", (n, 81)), ("solutions", (n, 81)), ("source_line", (n,)), ("num_givens", (n,))):
            if getattr(self, name).shape != shape:
                raise DataError(f"expected shape {list(shape)}, found {list(getattr(self, name).shape)}", field=name)
        if n == 0:
            return
        if self.puzzles.min() < 0 or self.puzzles.max() > 9:
            raise DataError("expected digits 0-9", field="puzzles")
        bad = np.flatnonzero(~valid_solution_mask(self.solutions))
        if bad.size:
            raise DataError(f"board {bad[0]} is not a valid completed grid", field="solutions")
        given = self.puzzles != 0
        bad = np.flatnonzero(np.any(given & (self.puzzles != self.solutions), axis=1))
        if bad.size:
            raise DataError(f"board {bad[0]}: a given disagrees with the solution", field="puzzles")
        bad = np.flatnonzero(given.sum(axis=1) != self.num_givens)
        if bad.size:
            raise DataError(f"board {bad[0]}: num_givens does not match the puzzle", field="num_givens")

    def __len__(self) -> int:
        return int(self.puzzles.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """The four arrays by name, as stored in ``<split>.npz``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def load_split(dir: str | Path, name: str) -> SudokuSplit:
    """Load ``<dir>/<name>.npz`` written by ``build_datasets``; ``name`` is one of ``SPLIT_NAMES``."""
    if name not in SPLIT_NAMES:
        raise DataError(f"expected a split name in {list(SPLIT_NAMES)}, found {name!r}", field="name")
    path = Path(dir) / f"{name}.npz"
    if not path.is_file():
        raise DataError("split file not found; build it with `dynascope sudoku build --out DIR`", path=path)
    with np.load(path) as data:
        missing = [f.name for f in fields(SudokuSplit) if f.name not in data.files]
        if missing:
            raise DataError(f"expected arrays {missing} in the file, found {sorted(data.files)}", path=path)
        arrays = {f.name: data[f.name] for f in fields(SudokuSplit)}
    try:
        return SudokuSplit(**arrays)
    except DataError as exc:
        raise DataError(str(exc), path=path, field=exc.field) from None


# ---------------------------------------------------------------------------------- transformations


def relabel_digits(grids: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """Apply one digit relabelling per grid: ``perms`` int [N, 9] maps digit d to ``perms[:, d - 1]``; 0 stays 0."""
    table = np.concatenate([np.zeros((perms.shape[0], 1), dtype=perms.dtype), perms], axis=1)
    return np.take_along_axis(table, grids.astype(np.intp), axis=1).astype(grids.dtype)


def random_cell_maps(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random validity-preserving cell maps, int [n, 81]: new cell i takes old cell ``map[i]``.

    Each map permutes the three bands, the rows within each band, the three stacks and the columns
    within each stack, then transposes with probability 1/2. Rows, columns and boxes map onto rows,
    columns and boxes, so a valid grid stays valid and a unique puzzle stays unique.
    """

    def lines() -> np.ndarray:
        blocks = np.argsort(rng.random((n, 3)), axis=1)
        within = np.argsort(rng.random((n, 3, 3)), axis=2)
        return (3 * blocks[:, :, None] + within).reshape(n, 9)

    old_row, old_col = lines(), lines()
    transpose = rng.random(n) < 0.5
    row_of, col_of = np.divmod(np.arange(81), 9)
    straight = 9 * old_row[:, row_of] + old_col[:, col_of]
    flipped = 9 * old_row[:, col_of] + old_col[:, row_of]
    return np.where(transpose[:, None], flipped, straight)


def derive_boards(
    puzzles: np.ndarray,
    solutions: np.ndarray,
    target_givens: np.ndarray,
    rng: np.random.Generator,
    symmetries: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Transform each (puzzle, solution) pair and reveal solution cells until it has ``target_givens``.

    ``symmetries`` is ``"digits"`` (random digit relabelling) or ``"all"`` (plus random geometric maps,
    see ``random_cell_maps``). Revealed cells are drawn uniformly among the blanks. Returns new
    ``(puzzles, solutions)`` arrays of the input dtype.
    """
    if symmetries not in SYMMETRIES:
        raise ConfigError(f"expected symmetries in {list(SYMMETRIES)}, found {symmetries!r}")
    n = puzzles.shape[0]
    extra = target_givens - np.count_nonzero(puzzles, axis=1)
    if np.any(extra < 0) or np.any(target_givens > 81):
        raise ConfigError("target givens must lie between a puzzle's own givens and 81")
    perms = np.argsort(rng.random((n, 9)), axis=1) + 1
    puzzles, solutions = relabel_digits(puzzles, perms), relabel_digits(solutions, perms)
    if symmetries == "all":
        maps = random_cell_maps(rng, n)
        puzzles = np.take_along_axis(puzzles, maps, axis=1)
        solutions = np.take_along_axis(solutions, maps, axis=1)
    keys = np.where(puzzles == 0, rng.random((n, 81)), 2.0)
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    reveal = rank < extra[:, None]
    return np.where(reveal, solutions, puzzles).astype(puzzles.dtype), solutions


# ------------------------------------------------------------------------------------------ builder


@dataclass(frozen=True)
class SudokuBuildConfig:
    """What to build: split sizes (boards), givens ranges, symmetries and the seed."""

    seed: int = 0
    easy_train: int = 9000
    easy_test: int = 1000
    hard_train: int = 9000
    hard_valid: int = 1000
    hard_test: int = 1000
    boards_per_source: int = 1
    easy_givens: tuple[int, int] = (31, 42)
    hard_givens: tuple[int, int] = (17, 34)
    easy_symmetries: str = "all"
    hard_symmetries: str = "digits"

    def __post_init__(self) -> None:
        object.__setattr__(self, "easy_givens", tuple(self.easy_givens))
        object.__setattr__(self, "hard_givens", tuple(self.hard_givens))
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed: expected an integer >= 0, found {self.seed!r}")
        for name in SPLIT_NAMES:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name}: expected a board count >= 0, found {value!r}")
        if not isinstance(self.boards_per_source, int) or self.boards_per_source < 1:
            raise ConfigError(f"boards_per_source: expected an integer >= 1, found {self.boards_per_source!r}")
        for name in ("easy_givens", "hard_givens"):
            lo_hi = getattr(self, name)
            ints = all(isinstance(v, int) for v in lo_hi)
            if len(lo_hi) != 2 or not ints or not 17 <= lo_hi[0] <= lo_hi[1] <= 81:
                raise ConfigError(f"{name}: expected (low, high) with 17 <= low <= high <= 81, found {lo_hi!r}")
        for name in ("easy_symmetries", "hard_symmetries"):
            if getattr(self, name) not in SYMMETRIES:
                raise ConfigError(f"{name}: expected one of {list(SYMMETRIES)}, found {getattr(self, name)!r}")

    def sources_needed(self, split: str) -> int:
        """How many distinct source puzzles ``split`` takes from the pool."""
        return math.ceil(getattr(self, split) / self.boards_per_source)

    def family(self, split: str) -> tuple[tuple[int, int], str]:
        """(givens range, symmetries) of ``split``."""
        if split.startswith("easy"):
            return self.easy_givens, self.easy_symmetries
        return self.hard_givens, self.hard_symmetries


def allocate_sources(config: SudokuBuildConfig, pool_size: int) -> dict[str, np.ndarray]:
    """Disjoint blocks of pool row indices per split, from one seeded shuffle (see module docstring)."""
    total = sum(config.sources_needed(name) for name in SPLIT_NAMES)
    if total > pool_size:
        raise ConfigError(
            f"the splits need {total} distinct source puzzles but the pool has {pool_size} distinct puzzles; "
            "shrink the splits or raise boards_per_source"
        )
    order = np.random.default_rng(np.random.SeedSequence([config.seed, 0])).permutation(pool_size)
    blocks: dict[str, np.ndarray] = {}
    start = 0
    for name in ALLOCATION_ORDER:
        stop = start + config.sources_needed(name)
        blocks[name] = order[start:stop]
        start = stop
    return blocks


def make_split(
    config: SudokuBuildConfig, split: str, rows: np.ndarray, pool: SudokuPool, solutions: np.ndarray
) -> SudokuSplit:
    """Boards of ``split`` from its source ``rows`` of ``pool`` (``solutions`` aligned with ``rows``)."""
    n = getattr(config, split)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1 + SPLIT_NAMES.index(split)]))
    (low, high), symmetries = config.family(split)
    targets = rng.permutation(low + np.arange(n) % (high - low + 1))
    pick = rng.permutation(n) % max(len(rows), 1)
    puzzles, sols = derive_boards(pool.puzzles[rows[pick]], solutions[pick], targets, rng, symmetries)
    return SudokuSplit(
        puzzles=puzzles.astype(np.int8),
        solutions=sols.astype(np.int8),
        source_line=pool.source_line[rows[pick]].astype(np.int32),
        num_givens=targets.astype(np.int16),
    )


def _load_cache(path: Path, pool: SudokuPool, log: Log) -> dict[int, np.ndarray]:
    """Cached solutions by pool row; a cache built from another pool file is ignored."""
    if not path.is_file():
        return {}
    with np.load(path) as data:
        if str(data["pool_sha256"]) != pool.sha256:
            log(f"ignoring {path}: it was built from a different pool file")
            return {}
        rows, sols = data["rows"], data["solutions"]
    ok = valid_solution_mask(sols) & ~np.any((pool.puzzles[rows] != 0) & (pool.puzzles[rows] != sols), axis=1)
    if not ok.all():
        raise DataError("cached solution disagrees with its puzzle; delete the cache and rebuild", path=path)
    return dict(zip(rows.tolist(), sols, strict=True))


def _save_cache(path: Path, pool: SudokuPool, cache: dict[int, np.ndarray]) -> None:
    rows = np.asarray(sorted(cache), dtype=np.int32)
    sols = np.array([cache[r] for r in rows.tolist()], dtype=np.int8).reshape(-1, 81)
    runio.write_npz(path, {"rows": rows, "solutions": sols, "pool_sha256": np.asarray(pool.sha256)})


def solve_sources(
    pool: SudokuPool, rows: np.ndarray, cache_path: Path, *, progress: Progress = silent, log: Log = no_log
) -> tuple[np.ndarray, dict[str, Any]]:
    """Unique solutions of ``pool.puzzles[rows]`` (int8 [len(rows), 81]), through the on-disk cache.

    Each new puzzle is searched for two solutions; anything but exactly one raises ``DataError`` with
    the pool file and line. The cache is rewritten atomically every few thousand puzzles.
    """
    cache = _load_cache(cache_path, pool, log)
    todo = [r for r in dict.fromkeys(rows.tolist()) if r not in cache]
    times: list[float] = []
    for done, row in enumerate(progress(todo, desc="solving sudoku17", total=len(todo)), start=1):
        start = time.perf_counter()
        found = find_solutions(pool.puzzles[row], limit=2)
        times.append(time.perf_counter() - start)
        if len(found) != 1:
            what = "no solution" if not found else "more than one solution"
            raise DataError(
                f"expected a unique solution, found {what}", path=pool.path, line=int(pool.source_line[row])
            )
        cache[row] = found[0]
        if done % _CHECKPOINT_EVERY == 0:
            _save_cache(cache_path, pool, cache)
    if todo:
        _save_cache(cache_path, pool, cache)
    stats = {
        "requested": len(rows),
        "solved_now": len(todo),
        "from_cache": len(rows) - len(todo),
        "solve_seconds": round(float(np.sum(times)), 3),
        "mean_ms": round(1e3 * float(np.mean(times)), 3) if times else None,
        "max_ms": round(1e3 * float(np.max(times)), 3) if times else None,
    }
    return np.array([cache[r] for r in rows.tolist()], dtype=np.int8).reshape(-1, 81), stats


def _split_summary(split: SudokuSplit) -> dict[str, Any]:
    values, counts = np.unique(split.num_givens, return_counts=True)
    return {
        "boards": len(split),
        "distinct_sources": int(np.unique(split.source_line).size),
        "givens_min": int(values.min()) if len(split) else None,
        "givens_max": int(values.max()) if len(split) else None,
        "givens_histogram": {str(v): int(c) for v, c in zip(values.tolist(), counts.tolist(), strict=True)},
        "sha256": {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in split.arrays().items()},
    }


def build_datasets(
    config: SudokuBuildConfig,
    pool_path: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: Progress = silent,
    log: Log = no_log,
) -> dict[str, Any]:
    """Build every split into ``out`` and return the summary written to ``out/summary.json``.

    ``out`` gets ``<split>.npz`` for each of ``SPLIT_NAMES``, ``config.json``, ``env.json``,
    ``summary.json`` (written last: it marks a finished build) and ``cache/`` with solved pool lines.
    Without ``overwrite``, a finished build with the same config and pool is returned as is and a
    different finished build is refused. Solved pool lines are reused in every case.
    """
    out = Path(out)
    pool = read_pool(pool_path, log=log)
    wanted = asdict(config)
    wanted["easy_givens"], wanted["hard_givens"] = list(config.easy_givens), list(config.hard_givens)
    if not overwrite and SUDOKU.is_finished(out) and SUDOKU.has(out, "config"):
        previous = SUDOKU.load(out, "summary")
        if SUDOKU.load(out, "config") == wanted and previous["pool"]["sha256"] == pool.sha256:
            log(f"{out} already holds this build; nothing to do")
            return previous
    SUDOKU.prepare(out, overwrite=overwrite)
    SUDOKU.path(out, "summary").unlink(missing_ok=True)
    SUDOKU.write_record(out, wanted, config.seed)

    blocks = allocate_sources(config, len(pool))
    needed = np.concatenate([blocks[name] for name in SPLIT_NAMES])
    solutions, solver_stats = solve_sources(
        pool, needed, SUDOKU.path(out, "cache") / CACHE_FILE, progress=progress, log=log
    )
    log(
        f"source puzzles: {solver_stats['solved_now']} solved now, {solver_stats['from_cache']} from the cache "
        f"({solver_stats['solve_seconds']} s)"
    )
    offsets = np.cumsum([0] + [len(blocks[name]) for name in SPLIT_NAMES])

    splits: dict[str, Any] = {}
    for name, start, stop in zip(SPLIT_NAMES, offsets[:-1], offsets[1:], strict=True):
        split = make_split(config, name, blocks[name], pool, solutions[start:stop])
        runio.write_npz(out / f"{name}.npz", split.arrays())
        splits[name] = _split_summary(split)
        log(f"{name}: {len(split)} boards, givens {splits[name]['givens_min']}-{splits[name]['givens_max']}")
    summary = {
        "pool": {"file": Path(pool_path).name, "sha256": pool.sha256, "puzzles": len(pool), "citation": pool.citation},
        "solver": solver_stats,
        "allocation_order": list(ALLOCATION_ORDER),
        "splits": splits,
    }
    SUDOKU.write(out, "summary", summary)
    return summary
