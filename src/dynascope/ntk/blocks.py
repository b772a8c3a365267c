"""Parameter partitions for the blocked F kernel: F = Σ_blocks J_b J_bᵀ.

The default partition is resolved from parameter names, generically for BERT/RoBERTa/MPNet-style
encoders (``…embeddings.word_embeddings…``, ``…layer.{i}.attention…``, ``…layer.{i}.intermediate|output…``)
and for LoRA leaves injected by peft (``…layer.{i}….lora_A|lora_B…``). Parameters that match none of
these (a pooler, a relative-attention bias, a final LayerNorm) go to ``other``, so blocks always sum to
the whole. A user partition maps block names to regular expressions (``re.search`` on parameter names);
every trainable parameter must match exactly one block.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from dynascope.errors import ConfigError

_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")
_ATTENTION = re.compile(r"(?:^|\.)layers?\.\d+\.(?:attention|attn|self_attn)\.")
_MLP = re.compile(r"(?:^|\.)layers?\.\d+\.(?:intermediate|output|mlp|ffn)\.")


def default_block(name: str, word_name: str | None) -> str:
    """The default block of one parameter name."""
    if name == word_name:
        return "embeddings.word"
    layer = _LAYER.search(name)
    if "lora_" in name and layer:
        return f"layer.{int(layer.group(1)):02d}.lora"
    if "embeddings." in name:
        return "embeddings.other"
    if layer and _ATTENTION.search(name):
        return f"layer.{int(layer.group(1)):02d}.attention"
    if layer and _MLP.search(name):
        return f"layer.{int(layer.group(1)):02d}.mlp"
    return "other"


def resolve_partition(
    names: Sequence[str], word_name: str | None, partition: Mapping[str, Sequence[str]] | None = None
) -> dict[str, list[str]]:
    """Block name → parameter names (in model order), covering every name exactly once.

    ``partition=None`` gives the default; otherwise ``{block: [regex, …]}`` and a name must match the
    patterns of exactly one block (a ``ConfigError`` lists the names that match none or several).
    """
    blocks: dict[str, list[str]] = {}
    if partition is None:
        for name in names:
            blocks.setdefault(default_block(name, word_name), []).append(name)
        return blocks
    compiled = {block: [re.compile(p) for p in patterns] for block, patterns in partition.items()}
    unmatched, ambiguous = [], []
    for name in names:
        hits = [b for b, pats in compiled.items() if any(p.search(name) for p in pats)]
        if not hits:
            unmatched.append(name)
        elif len(hits) > 1:
            ambiguous.append(f"{name} -> {hits}")
        else:
            blocks.setdefault(hits[0], []).append(name)
    if unmatched or ambiguous:
        raise ConfigError(
            "a partition must put every trainable parameter in exactly one block; "
            f"matching no block: {unmatched[:8]}{' …' if len(unmatched) > 8 else ''}; "
            f"matching several: {ambiguous[:8]}"
        )
    return {b: blocks[b] for b in partition if b in blocks}
