"""The example tiles of the sharded NTK, in one process: every rank's share computed in turn into one store and
assembled equals ``ntk_train_eval`` and the brute-force kernel, for several world sizes and memory budgets; the
plan covers every (train, train) and (test, train) pair exactly once; a resumed share recomputes nothing."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from dynascope.errors import DynascopeError
from dynascope.ntk.components import ntk_train_eval
from dynascope.ntk.functional import kernel_model
from dynascope.ntk.tiles import assemble_tiles, compute_tiles, plan_tiles
from ntk.tiny_ntk import brute_force_ntk, rel_err, tiny_batch


class DictStore:
    """A ``KernelStore`` in memory that counts its writes."""

    def __init__(self) -> None:
        self.kernels: dict[str, tuple[Tensor, str]] = {}
        self.saves = 0

    def load(self, key: str, fingerprint: str) -> Tensor | None:
        found = self.kernels.get(key)
        return found[0] if found is not None and found[1] == fingerprint else None

    def save(self, key: str, kernel: Tensor, fingerprint: str) -> None:
        self.kernels[key] = (kernel.clone(), fingerprint)
        self.saves += 1


@pytest.mark.parametrize(("size", "memory_gb"), [(1, 4.0), (2, 4.0), (3, 4.0), (2, 2e-5)])
def test_tiles_of_every_rank_assemble_to_the_kernel(bert_clf: torch.nn.Module, size: int, memory_gb: float) -> None:
    train, evals = tiny_batch("bert", 7, seed=21), tiny_batch("bert", 3, seed=22)
    model = kernel_model(bert_clf)
    plan = plan_tiles(model, train, evals, size=size, memory_gb=memory_gb)
    covered = {"train": torch.zeros(7, 7, dtype=torch.int64), "eval": torch.zeros(3, 7, dtype=torch.int64)}
    for tile in plan.tiles:
        (a0, a1), (b0, b1) = tile.a, tile.b
        covered[tile.side][a0:a1, b0:b1] += 1
        if tile.side == "train" and tile.a != tile.b:
            covered["train"][b0:b1, a0:a1] += 1
    assert all(bool((c == len(plan.groups)).all()) for c in covered.values())
    assert sorted(t for r in range(size) for t in map(plan.tiles.index, plan.owned(r, size))) == list(
        range(len(plan.tiles))
    )
    store = DictStore()
    for rank in range(size):
        compute_tiles(model, train, evals, plan, rank=rank, size=size, store=store)
    tt, et = assemble_tiles(model, train, evals, plan, store)
    whole_t, whole_e = ntk_train_eval(model, train, evals)
    assert list(tt.blocks) == list(whole_t.blocks)
    assert rel_err(tt.total, whole_t.total) <= 1e-12 and rel_err(et.total, whole_e.total) <= 1e-12
    assert rel_err(et.total, brute_force_ntk(bert_clf, evals, train)) <= 1e-10
    assert compute_tiles(model, train, evals, plan, rank=0, size=size, store=store) == 0  # resumed: nothing to do


def test_no_rank_holds_more_than_half_the_examples_with_two_ranks(bert_clf: torch.nn.Module) -> None:
    train, evals = tiny_batch("bert", 8, seed=23), tiny_batch("bert", 2, seed=24)
    plan = plan_tiles(kernel_model(bert_clf), train, evals, size=2)
    assert max(t.a[1] - t.a[0] for t in plan.tiles) <= 2  # chunks of ⌈8 / (2·2)⌉: two chunks are half the rows


def test_a_missing_tile_is_an_error_naming_it(bert_clf: torch.nn.Module) -> None:
    train, evals = tiny_batch("bert", 4, seed=25), tiny_batch("bert", 2, seed=26)
    model = kernel_model(bert_clf)
    plan = plan_tiles(model, train, evals, size=2)
    store = DictStore()
    compute_tiles(model, train, evals, plan, rank=0, size=2, store=store)
    with pytest.raises(DynascopeError, match=r"NTK tile .* is missing from the store"):
        assemble_tiles(model, train, evals, plan, store)
