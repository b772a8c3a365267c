"""Tokenisation and batching: dynamic padding with length bucketing.

Examples are tokenised once (no padding); each batch is padded (on the right) to its own longest sequence.
Training batches are drawn by shuffling, then sorting within windows of ``bucket_window`` batches by length, so
a batch holds sequences of similar length and little compute is spent on padding, while the batch order stays
random.

Sequence pairs (premise, hypothesis) follow a template: ``tokenizer`` is the tokenizer's own pair encoding
(BERT ``[CLS] a [SEP] b [SEP]``, RoBERTa ``<s> a </s></s> b </s>``, Llama ``<s> a <s> b``); ``eos`` and
``newline`` join ``premise + sep + hypothesis`` with the tokenizer's eos token or ``"\n"`` as ``sep`` (the
separator opens the second segment, so longest-first truncation keeps it). ``auto`` is ``tokenizer`` when its
pair encoding puts a special token between the segments, else ``eos`` (or ``newline`` without an eos token):
GPT-2 and Qwen2 tokenizers just concatenate the two texts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dynascope.errors import ConfigError

PAIR_TEMPLATES = ("auto", "tokenizer", "eos", "newline")


@dataclass(frozen=True)
class Encoded:
    """Token ids of a split, unpadded, with labels and the tokenizer's pad id."""

    input_ids: tuple[tuple[int, ...], ...]
    token_type_ids: tuple[tuple[int, ...], ...] | None
    labels: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        """Sequence lengths (tokens, including special tokens)."""
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))


def resolve_pair_template(requested: str, tokenizer: Any) -> str:
    """The pair template used with ``tokenizer``: ``requested``, or for ``"auto"`` the tokenizer's own pair
    encoding when it separates the segments with a special token, else ``eos`` (``newline`` without eos)."""
    if requested not in PAIR_TEMPLATES:
        raise ConfigError(f"pair_template must be one of {PAIR_TEMPLATES}, got {requested!r}")
    eos = getattr(tokenizer, "eos_token", None)
    if requested == "eos" and eos is None:
        raise ConfigError("pair_template 'eos' needs a tokenizer with an eos token; use 'newline' or 'tokenizer'")
    if requested != "auto":
        return requested
    if tokenizer.num_special_tokens_to_add(pair=True) > tokenizer.num_special_tokens_to_add(pair=False):
        return "tokenizer"
    return "eos" if eos is not None else "newline"


def pair_separator(template: str, tokenizer: Any) -> str:
    """The text that opens the hypothesis under a resolved ``template`` (empty: the tokenizer's own pairs)."""
    return {"tokenizer": "", "eos": str(getattr(tokenizer, "eos_token", "")), "newline": "\n"}[template]


def encode_split(split: Any, tokenizer: Any, max_length: int = 128, pair_template: str = "auto") -> Encoded:
    """Tokenise a ``Split`` (``texts``, optional ``pairs``, ``labels``), joining pairs by ``pair_template``
    (see the module docstring) and truncating them longest-first."""
    if max_length < 8:
        raise ConfigError(f"max_length must be at least 8, got {max_length}")
    texts = list(split.texts)
    pairs = list(split.pairs) if split.pairs is not None else None
    if pairs is not None:
        sep = pair_separator(resolve_pair_template(pair_template, tokenizer), tokenizer)
        pairs = [sep + p for p in pairs] if sep else pairs
    out = tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=False)
    types = out.get("token_type_ids")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Encoded(
        input_ids=tuple(tuple(ids) for ids in out["input_ids"]),
        token_type_ids=None if types is None else tuple(tuple(t) for t in types),
        labels=np.asarray(split.labels, dtype=np.int64),
        pad_id=int(pad_id),
    )


def collate(enc: Encoded, indices: Sequence[int], pad_to: int | None = None) -> dict[str, Tensor]:
    """Pad the examples at ``indices`` to their longest length (or ``pad_to``) into model inputs."""
    length = max(len(enc.input_ids[i]) for i in indices)
    if pad_to is not None:
        length = max(length, pad_to)
    n = len(indices)
    input_ids = torch.full((n, length), enc.pad_id, dtype=torch.long)
    attention = torch.zeros((n, length), dtype=torch.long)
    types = torch.zeros((n, length), dtype=torch.long) if enc.token_type_ids is not None else None
    for row, i in enumerate(indices):
        ids = enc.input_ids[i]
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        if types is not None:
            types[row, : len(ids)] = torch.tensor(enc.token_type_ids[i])
    batch = {"input_ids": input_ids, "attention_mask": attention}
    if types is not None:
        batch["token_type_ids"] = types
    return batch


def batch_order(
    enc: Encoded,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    bucket: bool = True,
    bucket_window: int = 50,
) -> list[np.ndarray]:
    """Index arrays, one per batch.

    Evaluation (``shuffle=False``): sorted by length when ``bucket`` (callers scatter results back by index).
    Training (``shuffle=True``): a seeded permutation, sorted by length inside windows of ``bucket_window``
    batches when ``bucket``, then the batches themselves shuffled.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    n = len(enc)
    lengths = enc.lengths
    if not shuffle:
        order = np.argsort(lengths, kind="stable") if bucket else np.arange(n)
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    if bucket:
        window = batch_size * bucket_window
        chunks = [order[i : i + window] for i in range(0, n, window)]
        order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks])
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if bucket:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def iterate_batches(
    enc: Encoded,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    bucket: bool = True,
    pad_to: int | None = None,
) -> Iterator[tuple[dict[str, Tensor], np.ndarray]]:
    """Yield ``(inputs, indices)`` batches in ``batch_order``."""
    for idx in batch_order(enc, batch_size, shuffle=shuffle, seed=seed, bucket=bucket):
        yield collate(enc, idx, pad_to=pad_to), idx
