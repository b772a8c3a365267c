"""Tiny random encoders saved as Hugging Face folders, for fast exact tests of the fine-tuning stack."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = (
    "the", "a", "of", "and", "to", "in", "is", "it", "that", "was", "not", "he", "she", "they", "we", "you",
    "i", "this", "be", "have", "do", "say", "get", "make", "go", "know", "take", "see", "come", "think",
    "look", "want", "give", "use", "find", "tell", "ask", "work", "seem", "feel", "try", "leave", "call",
    "good", "new", "first", "last", "long", "great", "little", "own", "other", "old", "right", "big", "high",
    "different", "small", "large", "next", "early", "young", "important", "few", "public", "bad",
)


def vocabulary() -> dict[str, int]:
    """A WordPiece vocabulary with the special tokens and ~80 common words."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *".,!?'"]
    return {token: i for i, token in enumerate(tokens)}


def tiny_bert_folder(folder: Path, *, hidden: int = 16, layers: int = 2, seed: int = 0) -> Path:
    """Save a random 2-layer BERT (eager attention) and its tokenizer into ``folder``."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=160,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    BertTokenizerFast(vocab=vocab).save_pretrained(folder)
    return folder
