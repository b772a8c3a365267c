"""Parameter partitions for the blocked F kernel: F = Σ_blocks J_b J_bᵀ.

The default partition is resolved from parameter names, generically for BERT/RoBERTa/MPNet-style
encoders (``…embeddings.word_embeddings…``, ``…layer.{i}.attention…``, ``…layer.{i}.intermediate|output…``),
for GPT-2 (``wte``, ``wpe``, ``h.{i}.attn|mlp|ln_1|ln_2``, ``ln_f``) and Llama/Qwen2/Mistral-style decoders
(``embed_tokens``, ``layers.{i}.self_attn|mlp|input_layernorm|post_attention_layernorm``, ``norm``), and for
LoRA leaves injected by peft (``…layer.{i}….lora_A|lora_B…``). Blocks: ``embeddings.word`` (the input
embedding matrix, whatever its name), ``embeddings.other`` (positions, token types, embedding norm),
``layer.NN.attention|mlp|norm|lora`` and ``norm.final``. Parameters that match none of these (a pooler, a
relative-attention bias) go to ``other``, so blocks always sum to the whole. A user partition maps block
names to regular expressions (``re.search`` on parameter names); every trainable parameter must match exactly
one block.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from dynascope.errors import ConfigError

_LAYER = re.compile(r"(?:^|\.)(?:layers?|h)\.(\d+)\.")
_ATTENTION = re.compile(r"(?:^|\.)(?:layers?|h)\.\d+\.(?:attention|attn|self_attn)\.")
_MLP = re.compile(r"(?:^|\.)(?:layers?|h)\.\d+\.(?:intermediate|output|mlp|ffn)\.")
_NORM = re.compile(r"(?:^|\.)(?:layers?|h)\.\d+\.(?:ln_\d+|\w*norm\w*)\.", re.IGNORECASE)
_EMBEDDINGS = re.compile(r"embeddings\.|(?:^|\.)wpe\.")
_FINAL_NORM = re.compile(r"^(?:\w+\.)?(?:ln_f|norm|final_layer_norm)\.")


def default_block(name: str, word_name: str | None) -> str:
    """The default block of one parameter name."""
    if name == word_name:
        return "embeddings.word"
    layer = _LAYER.search(name)
    if "lora_" in name and layer:
        return f"layer.{int(layer.group(1)):02d}.lora"
    if _EMBEDDINGS.search(name):
        return "embeddings.other"
    if layer and _ATTENTION.search(name):
        return f"layer.{int(layer.group(1)):02d}.attention"
    if layer and _MLP.search(name):
        return f"layer.{int(layer.group(1)):02d}.mlp"
    if layer and _NORM.search(name):
        return f"layer.{int(layer.group(1)):02d}.norm"
    if not layer and _FINAL_NORM.search(name):
        return "norm.final"
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
