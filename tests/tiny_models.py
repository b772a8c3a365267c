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


def tiny_bert_folder(folder: Path, *, hidden: int = 16, layers: int = 2, seed: int = 0, dropout: float = 0.1) -> Path:
    """Save a random 2-layer BERT (eager attention) and its tokenizer into ``folder`` (``dropout``: hidden and
    attention dropout, BERT's 0.1 by default; 0 makes runs on two devices comparable)."""
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
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    BertTokenizerFast(vocab=vocab).save_pretrained(folder)
    return folder


DECODERS = ("gpt2", "llama", "qwen2")
# special tokens per family, as the real checkpoints have them: GPT-2 and Llama come without a pad token,
# Llama's tokenizer prepends bos (so its pair encoding is "<s> a <s> b"), GPT-2's and Qwen2's add nothing
_DECODER_TOKENS = {
    "gpt2": {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"},
    "llama": {"eos_token": "</s>", "bos_token": "<s>"},
    "qwen2": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
}


def decoder_tokenizer(family: str):
    """A fast tokenizer over ``WORDS`` with ``family``'s special tokens (no token_type_ids): word-level for
    GPT-2 and Llama; byte-level BPE trained on ``WORDS`` for Qwen2, because Transformers rebuilds any ``qwen2``
    folder's tokenizer as its own byte-level ``Qwen2Tokenizer`` from the saved vocabulary and merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = _DECODER_TOKENS[family]
    names = [*dict.fromkeys(specials.values()), "<unk>"]
    if family == "qwen2":
        backend = Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=400, special_tokens=names, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )  # fmt: skip
        corpus = [" ".join(WORDS[i:] + WORDS[:i]) + " .,!?'" for i in range(0, len(WORDS), 7)]
        backend.train_from_iterator(corpus, trainer)
    else:
        vocab = {token: i for i, token in enumerate([*names, *WORDS, *".,!?'"])}
        backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if family == "llama":
        bos = specials["bos_token"]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, backend.token_to_id(bos))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", model_input_names=["input_ids", "attention_mask"], **specials
    )


def tiny_decoder(family: str, tokenizer, *, hidden: int = 16, layers: int = 2, seed: int = 0):
    """A random 2-layer GPT-2, Llama or Qwen2 for ``tokenizer`` (eager attention, no cache), float32, eval mode."""
    from transformers import GPT2Config, GPT2Model, LlamaConfig, LlamaModel, Qwen2Config, Qwen2Model

    torch.manual_seed(seed)
    common = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="eager",
        use_cache=False,
    )
    if family == "gpt2":
        config = GPT2Config(n_embd=hidden, n_layer=layers, n_head=2, n_positions=160, **common)
        return GPT2Model(config).eval()
    sizes = dict(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=160,
        **common,
    )
    if family == "llama":
        return LlamaModel(LlamaConfig(**sizes)).eval()
    return Qwen2Model(Qwen2Config(**sizes)).eval()


def tiny_decoder_folder(folder: Path, family: str, *, seed: int = 0) -> Path:
    """Save a random tiny ``family`` decoder and its word-level tokenizer into ``folder`` (a HF model folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = decoder_tokenizer(family)
    tiny_decoder(family, tokenizer, seed=seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
