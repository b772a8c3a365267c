"""Tokenisation and length-bucketed batching."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from dynascope.data.encode import Encoded, batch_order, collate


def encoded(lengths: list[int], with_types: bool = True) -> Encoded:
    ids = tuple(tuple(range(1, n + 1)) for n in lengths)
    types = tuple(tuple([0] * n) for n in lengths) if with_types else None
    return Encoded(input_ids=ids, token_type_ids=types, labels=np.zeros(len(lengths), dtype=np.int64), pad_id=0)


def test_training_order_is_a_seeded_partition_with_buckets() -> None:
    rng = np.random.default_rng(0)
    enc = encoded(rng.integers(3, 100, size=503).tolist())
    first = batch_order(enc, 16, shuffle=True, seed=7, bucket_window=4)
    again = batch_order(enc, 16, shuffle=True, seed=7, bucket_window=4)
    other = batch_order(enc, 16, shuffle=True, seed=8, bucket_window=4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=False))
    flat = np.concatenate(first)
    assert sorted(flat.tolist()) == list(range(503))
    # bucketing: padding waste far below that of random batches
    lengths = enc.lengths

    def waste(batches: list[np.ndarray]) -> int:
        return sum(int(lengths[b].max() * len(b) - lengths[b].sum()) for b in batches)

    random_batches = batch_order(enc, 16, shuffle=True, seed=7, bucket=False)
    assert waste(first) < 0.5 * waste(random_batches)


def test_eval_order_sorted_and_complete() -> None:
    enc = encoded([5, 3, 9, 1, 7])
    order = batch_order(enc, 2, shuffle=False)
    assert np.concatenate(order).tolist() == [3, 1, 0, 4, 2]


def test_collate_pads_to_longest() -> None:
    enc = encoded([2, 4])
    batch = collate(enc, [0, 1])
    assert batch["input_ids"].tolist() == [[1, 2, 0, 0], [1, 2, 3, 4]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert "token_type_ids" in batch
    assert "token_type_ids" not in collate(encoded([2], with_types=False), [0])
    assert collate(enc, [0], pad_to=6)["input_ids"].shape == (1, 6)


def test_encode_split_pairs_and_truncation() -> None:
    from transformers import BertTokenizerFast

    from dynascope.data.encode import encode_split
    from tiny_models import vocabulary

    tok = BertTokenizerFast(vocab=vocabulary())
    split = SimpleNamespace(texts=("the good " * 40, "a"), pairs=("we go", "they see"), labels=(1, 0))
    enc = encode_split(split, tok, max_length=16)
    assert max(enc.lengths) == 16
    assert enc.token_type_ids is not None and enc.token_type_ids[1][-1] == 1
    assert enc.labels.tolist() == [1, 0]
