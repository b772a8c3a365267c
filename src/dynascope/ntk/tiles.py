"""The train×train and eval×train NTK split into example tiles, so that several processes share the work.

``ntk_train_eval`` computes every kernel in one process. Here the N_t training and N_e evaluation examples are cut
into chunks, and a kernel is a set of tiles: (train chunk a, train chunk b ≥ a) for train×train and (eval chunk a,
train chunk b) for eval×train, per parameter block. Rank ``rank`` of ``size`` owns every ``size``-th tile
(round-robin over one fixed list) and computes only those: the Jacobian rows of a tile's two chunks, then their
Gram in float64. Rows never leave the rank that computed them, and no rank holds more than two chunks' rows at
once: chunks are at most ⌈max(N_t, N_e) / (2·size)⌉ examples, smaller still when two chunks' rows of a pass's
blocks would exceed ``memory_gb``. The price is recomputation: a chunk's rows are computed once per tile that
needs them (each rank keeps the last two chunks it computed).

Each finished tile goes to the ``KernelStore`` under its key (``<side>.<block>.<a0>-<a1>.<b0>-<b1>``) with the
fingerprint of its side's inputs and state, so a killed job resumes tile by tile, and :func:`assemble_tiles`
(after every rank finished) reads them back into the kernels ``ntk_train_eval`` returns. What moves between
ranks is therefore one tile per (tile, block): 8·C²·n_a·n_b bytes through the store's folder, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from dynascope.errors import DynascopeError
from dynascope.hooks import Progress, silent
from dynascope.ntk.blocks import resolve_partition
from dynascope.ntk.components import (
    KernelStore,
    NTKComponents,
    _block_gram,
    _jacobian_rows,
    _plan_groups,
    _pre_from_features,
    _Reference,
    _row_bytes,
    fingerprint,
)
from dynascope.ntk.functional import Batch, KernelModel, batch_features, examples


@dataclass(frozen=True)
class Tile:
    """One tile of one pass: ``side`` ``train`` (rows a, columns b, both training chunks) or ``eval`` (rows: an
    evaluation chunk), for the parameter blocks of pass ``group``."""

    group: int
    side: str
    a: tuple[int, int]
    b: tuple[int, int]

    def key(self, block: str) -> str:
        """The store key of this tile's kernel for ``block``."""
        return f"{self.side}.{block}.{self.a[0]}-{self.a[1]}.{self.b[0]}-{self.b[1]}"


@dataclass(frozen=True)
class TilePlan:
    """The passes (parameter blocks per pass), the tiles in their fixed order, and the store fingerprints."""

    groups: list[dict[str, list[str]]]
    tiles: list[Tile]
    keys: dict[str, str]

    def owned(self, rank: int, size: int) -> list[Tile]:
        """The tiles rank ``rank`` of ``size`` computes: every ``size``-th, starting at ``rank``."""
        return self.tiles[rank::size]

    def tile_bytes(self, tile: Tile, num_labels: int) -> int:
        """Bytes of the finished kernels of one tile (all its pass's blocks): what the store carries for it."""
        n = (tile.a[1] - tile.a[0]) * (tile.b[1] - tile.b[0])
        return 8 * num_labels**2 * n * len(self.groups[tile.group])


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def plan_tiles(
    model: KernelModel,
    train: Batch,
    evals: Batch,
    *,
    size: int,
    partition: Mapping[str, Sequence[str]] | None = None,
    memory_gb: float = 4.0,
) -> TilePlan:
    """The tile plan every rank derives alike from the same inputs (see the module docstring)."""
    if memory_gb <= 0:
        raise DynascopeError(f"memory_gb must be positive, got {memory_gb}")
    blocks = resolve_partition(model.trainable_names, model.word_name, partition)
    n_t, n_e = int(train["input_ids"].shape[0]), int(evals["input_ids"].shape[0])
    longest = max(int(train["input_ids"].shape[1]), int(evals["input_ids"].shape[1]))
    budget = memory_gb * 2**30
    chunk = max(1, -(-max(n_t, n_e) // (2 * size)))
    groups = _plan_groups(model, blocks, longest, 2 * chunk, budget)
    tiles: list[Tile] = []
    for g, group in enumerate(groups):
        row = sum(_row_bytes(model, names, longest) for names in group.values())
        step = max(1, min(chunk, int(budget // (2 * row))))
        train_chunks, eval_chunks = _chunks(n_t, step), _chunks(n_e, step)
        tiles += [Tile(g, "train", a, b) for i, a in enumerate(train_chunks) for b in train_chunks[i:]]
        tiles += [Tile(g, "eval", a, b) for a in eval_chunks for b in train_chunks]
    keys = {"train": fingerprint(model, train, None, blocks), "eval": fingerprint(model, evals, train, blocks)}
    return TilePlan(groups=groups, tiles=tiles, keys=keys)


def compute_tiles(
    model: KernelModel,
    train: Batch,
    evals: Batch,
    plan: TilePlan,
    *,
    rank: int,
    size: int,
    store: KernelStore,
    desc: str = "F tiles",
    progress: Progress = silent,
) -> int:
    """Compute and store the tiles rank ``rank`` of ``size`` owns that the store does not hold yet; returns how
    many were computed (0 when resuming a finished share)."""
    phi = {"train": batch_features(model, train), "eval": batch_features(model, evals)}
    refs = {side: _Reference.of(value, model.weight) for side, value in phi.items()}
    exs = {"train": examples(model.backbone, train), "eval": examples(model.backbone, evals)}
    todo = [
        t
        for t in plan.owned(rank, size)
        if any(store.load(t.key(block), plan.keys[t.side]) is None for block in plan.groups[t.group])
    ]
    cache: dict[tuple[int, str, tuple[int, int]], dict] = {}

    def rows(group: int, side: str, span: tuple[int, int]) -> dict:
        key = (group, side, span)
        if key not in cache:
            while len(cache) >= 2:  # at most two chunks' rows held at once
                del cache[next(iter(cache))]
            exs_side = exs[side][span[0] : span[1]]
            cache[key] = _jacobian_rows(model, exs_side, refs[side], span[0], plan.groups[group], desc, silent)
        return cache[key]

    c = model.num_labels
    for tile in progress(todo, desc):
        rows_a = rows(tile.group, tile.side, tile.a)
        rows_b = rows(tile.group, "train", tile.b)
        for block in plan.groups[tile.group]:
            kernel = _block_gram(rows_a[block], rows_b[block], c)
            store.save(tile.key(block), kernel.cpu(), plan.keys[tile.side])
    return len(todo)


def assemble_tiles(
    model: KernelModel, train: Batch, evals: Batch, plan: TilePlan, store: KernelStore
) -> tuple[NTKComponents, NTKComponents]:
    """The train×train and eval×train components from the stored tiles (every tile must be there)."""
    phi_t, phi_e = batch_features(model, train), batch_features(model, evals)
    c, with_bias = model.num_labels, model.bias is not None
    n = {"train": phi_t.shape[0], "eval": phi_e.shape[0]}
    blocks = [b for group in plan.groups for b in group]
    out = {
        side: {b: torch.zeros(n[side], c, n["train"], c, dtype=torch.float64) for b in blocks}
        for side in ("train", "eval")
    }
    for tile in plan.tiles:
        for block in plan.groups[tile.group]:
            kernel = store.load(tile.key(block), plan.keys[tile.side])
            if kernel is None:
                raise DynascopeError(f"NTK tile {tile.key(block)} is missing from the store; rerun to compute it")
            (a0, a1), (b0, b1) = tile.a, tile.b
            out[tile.side][block][a0:a1, :, b0:b1, :] = kernel
            if tile.side == "train" and tile.a != tile.b:
                out["train"][block][b0:b1, :, a0:a1, :] = kernel.permute(2, 3, 0, 1)
    sizes = {b: sum(model.param_size(name) for name in group[b]) for group in plan.groups for b in group}
    pre = {
        "train": _pre_from_features(phi_t, phi_t, c, with_bias),
        "eval": _pre_from_features(phi_e, phi_t, c, with_bias),
    }
    comps = tuple(
        NTKComponents(pre=pre[side], blocks=dict(out[side]), block_sizes=sizes) for side in ("train", "eval")
    )
    return comps[0], comps[1]

