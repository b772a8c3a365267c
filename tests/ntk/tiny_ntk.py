"""Tiny float64 encoders, batches with padding, and brute-force kernels shared by the NTK tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev

from dynascope.models.classifier import Classifier

VOCAB = 40
NUM_LABELS = 3
TINY_CONFIG = dict(  # the shared size of every tiny float64 encoder
    vocab_size=VOCAB,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=40,
    attn_implementation="eager",
)


def tiny_backbone(kind: str, seed: int = 0) -> nn.Module:
    """A 2-layer, width-16 BERT or RoBERTa in float64 with eager attention and no pooler."""
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    torch.manual_seed(seed)
    common = TINY_CONFIG
    if kind == "bert":
        model = BertModel(BertConfig(type_vocab_size=2, pad_token_id=0, **common), add_pooling_layer=False)
    else:
        model = RobertaModel(RobertaConfig(type_vocab_size=1, pad_token_id=1, **common), add_pooling_layer=False)
    return model.double().eval()


def tiny_classifier(kind: str, pooling: str = "cls", seed: int = 0) -> Classifier:
    """A float64 Classifier on a tiny backbone with a non-trivial head (‖V‖ order 1, non-zero bias)."""
    clf = Classifier(tiny_backbone(kind, seed), NUM_LABELS, pooling=pooling, head_init_std=0.3, seed=seed)
    clf = clf.double().eval()
    with torch.no_grad():
        clf.head.bias.copy_(torch.linspace(-0.2, 0.3, NUM_LABELS, dtype=torch.float64))
    return clf


def tiny_batch(kind: str, n: int, seed: int = 0, length: int = 9) -> dict[str, Tensor]:
    """``n`` examples of varying length, right-padded; BERT batches are sentence pairs with token_type_ids."""
    gen = torch.Generator().manual_seed(seed)
    pad = 0 if kind == "bert" else 1
    ids = torch.randint(3, 14, (n, length), generator=gen)  # small id range: many shared tokens
    mask = torch.ones(n, length, dtype=torch.long)
    for i in range(n):
        keep = length - (i % 4)
        ids[i, keep:] = pad
        mask[i, keep:] = 0
        ids[i, 0] = 2
    batch = {"input_ids": ids, "attention_mask": mask}
    if kind == "bert":
        types = torch.zeros(n, length, dtype=torch.long)
        types[:, length // 2 :] = 1
        batch["token_type_ids"] = types * mask
    return batch


def brute_force_ntk(
    clf: nn.Module, batch_a: dict[str, Tensor], batch_b: dict[str, Tensor], names: list[str] | None = None
) -> Tensor:
    """Θ(x, x') of the whole classifier by jacrev over the chosen parameters (all trainable by default)."""
    params = {n: p.detach() for n, p in clf.named_parameters() if p.requires_grad}
    if names is not None:
        params = {n: params[n] for n in names}

    def jac(batch: dict[str, Tensor]) -> Tensor:
        out = jacrev(lambda p: functional_call(clf, p, args=(), kwargs=batch))(params)
        n, c = batch["input_ids"].shape[0], next(iter(out.values())).shape[1]
        return torch.cat([out[k].reshape(n * c, -1) for k in params], dim=1)

    ja, jb = jac(batch_a), jac(batch_b)
    n_a, n_b = batch_a["input_ids"].shape[0], batch_b["input_ids"].shape[0]
    c = ja.shape[0] // n_a
    return (ja @ jb.T).reshape(n_a, c, n_b, c)


def rel_err(a: Tensor, b: Tensor) -> float:
    """‖a − b‖ / ‖b‖."""
    return float(torch.linalg.vector_norm(a.detach() - b.detach()) / torch.linalg.vector_norm(b.detach()))
