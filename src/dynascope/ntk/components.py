"""The two components of the empirical NTK of f(x) = V φ(x) + b, exact, in float64, layout (N_A, C, N_B, C).

* P (``ntk_pre``) = (⟨φ(x), φ(x')⟩ + 1) ⊗ I_C, from features (the +1 only when the head has a bias).
* F (``ntk_ft``) = J_g J_gᵀ with g(x) = V φ(x) and V fixed: per example, one forward pass and C backward
  passes (``torch.func.vjp`` vmapped over the C cotangents), never the h-dimensional feature Jacobian.
  F is a sum of per-block kernels (``blocks.resolve_partition``), returned separately.
* The word-embedding block is exact and gather-aware: with G_x = ∂g/∂inputs_embeds ∈ R^{C×T×h},
  K_emb(x, x')_{cc'} = Σ_{t,t': id_t = id'_{t'}} ⟨G_x[c,t], G_{x'}[c',t']⟩, computed by scatter-adding G into
  the vocabulary rows shared by both sides. Nothing is sampled.

Memory: blocks are packed into passes whose per-example Jacobian rows (model dtype) for all examples fit in
``memory_gb``; a block too large for that is computed in example chunks (recomputing the B side per A
chunk). Grams are accumulated in float64 on the model's device; the finished kernels (small: N_A·C × N_B·C) come
back on the CPU, so saved and computed blocks mix freely and a run resumes on any device. Resume: a
``KernelStore`` receives each finished block with a fingerprint of the inputs and the state, and a rerun loads
finished blocks instead of recomputing them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from dynascope.errors import ConfigError, DynascopeError
from dynascope.hooks import Progress, silent
from dynascope.ntk.blocks import resolve_partition
from dynascope.ntk.functional import (
    Batch,
    Example,
    KernelModel,
    batch_features,
    example_vjp,
    examples,
)

GRAM_CHUNK_BYTES = 256 * 2**20
WORD_SUBCHUNK = 8


class KernelStore(Protocol):
    """Where finished block kernels go (and come back from on a rerun)."""

    def load(self, key: str, fingerprint: str) -> Tensor | None:
        """The kernel saved under ``key`` with this fingerprint, or ``None``."""

    def save(self, key: str, kernel: Tensor, fingerprint: str) -> None:
        """Persist one finished block kernel atomically."""


@dataclass(frozen=True)
class NTKComponents:
    """P, the per-block F kernels and their sums, all float64 (N_A, C, N_B, C) on the CPU."""

    pre: Tensor
    blocks: dict[str, Tensor]
    block_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def ft(self) -> Tensor:
        """F = Σ_blocks F_b (zeros when nothing in the backbone is trainable)."""
        total = torch.zeros_like(self.pre)
        for kernel in self.blocks.values():
            total += kernel
        return total

    @property
    def total(self) -> Tensor:
        """The full empirical NTK P + F."""
        return self.pre + self.ft


def as_matrix(kernel: Tensor) -> Tensor:
    """(N_A, C, N_B, C) → (N_A·C, N_B·C) view, rows and columns ordered (example, class)."""
    if kernel.ndim != 4 or kernel.shape[1] != kernel.shape[3]:
        raise ConfigError(f"kernel: expected shape (N_A, C, N_B, C), found {tuple(kernel.shape)}")
    n_a, c, n_b, _ = kernel.shape
    return kernel.reshape(n_a * c, n_b * c)


def pre_kernel(model: KernelModel, batch_a: Batch, batch_b: Batch | None = None) -> Tensor:
    """P = (⟨φ(x), φ(x')⟩ + 1{bias}) ⊗ I_C, float64 (N_A, C, N_B, C)."""
    phi_a = batch_features(model, batch_a)
    phi_b = phi_a if batch_b is None else batch_features(model, batch_b)
    return _pre_from_features(phi_a, phi_b, model.num_labels, model.bias is not None)


def _pre_from_features(phi_a: Tensor, phi_b: Tensor, num_labels: int, with_bias: bool) -> Tensor:
    gram = phi_a @ phi_b.T + (1.0 if with_bias else 0.0)
    eye = torch.eye(num_labels, dtype=torch.float64, device=gram.device)
    return (gram[:, None, :, None] * eye[None, :, None, :]).cpu()


def fingerprint(model: KernelModel, batch_a: Batch, batch_b: Batch | None, blocks: Mapping[str, Sequence[str]]) -> str:
    """SHA-256 of the inputs, the head, the trainable state and the partition: a resume key."""
    digest = hashlib.sha256()
    tensors = [batch_a[k] for k in sorted(batch_a)]
    if batch_b is not None:
        tensors += [batch_b[k] for k in sorted(batch_b)]
    tensors.append(model.weight)
    names = model.trainable_names
    tensors += [model.word_weight if n == model.word_name else model.params[n] for n in names]
    for t in tensors:
        digest.update(str((tuple(t.shape), t.dtype)).encode())
        digest.update(t.detach().contiguous().cpu().numpy().tobytes())
    digest.update(repr(sorted((b, list(p)) for b, p in blocks.items())).encode())
    digest.update(repr(("sym" if batch_b is None else "cross", model.pooling)).encode())
    return digest.hexdigest()


def ntk_components(
    model: KernelModel,
    batch_a: Batch,
    batch_b: Batch | None = None,
    *,
    partition: Mapping[str, Sequence[str]] | None = None,
    memory_gb: float = 4.0,
    store: KernelStore | None = None,
    desc: str = "F kernel",
    progress: Progress = silent,
) -> NTKComponents:
    """P and the per-block F kernels between ``batch_a`` and ``batch_b`` (``None``: A with itself).

    ``partition`` is ``None`` (the default blocks) or ``{block: [regex, …]}``; ``memory_gb`` bounds the
    per-example Jacobian rows held at once; ``store`` checkpoints finished blocks and resumes from them.
    """
    if memory_gb <= 0:
        raise DynascopeError(f"memory_gb must be positive, got {memory_gb}")
    phi_a = batch_features(model, batch_a)
    phi_b = phi_a if batch_b is None else batch_features(model, batch_b)
    pre = _pre_from_features(phi_a, phi_b, model.num_labels, model.bias is not None)
    blocks = resolve_partition(model.trainable_names, model.word_name, partition)
    sizes = {b: sum(model.param_size(n) for n in names) for b, names in blocks.items()}
    ex_a = examples(model.backbone, batch_a)
    ex_b = None if batch_b is None else examples(model.backbone, batch_b)
    ref_a = _Reference.of(phi_a, model.weight)
    ref_b = None if batch_b is None else _Reference.of(phi_b, model.weight)

    key = fingerprint(model, batch_a, batch_b, blocks) if store is not None else ""
    done: dict[str, Tensor] = {}
    if store is not None:
        for block in blocks:
            kernel = store.load(block, key)
            if kernel is not None:
                done[block] = kernel
    todo = {b: names for b, names in blocks.items() if b not in done}
    longest = max(int(e.input_ids.numel()) for e in ex_a + (ex_b or []))
    budget = memory_gb * 2**30
    n_hold = len(ex_a) + (0 if ex_b is None else len(ex_b))
    for group in _plan_groups(model, todo, longest, n_hold, budget):
        row = sum(_row_bytes(model, names, longest) for names in group.values())
        chunk = len(ex_a) + len(ex_b or []) if row * n_hold <= budget else max(1, int(budget // (2 * row)))
        kernels = _group_kernels(model, ex_a, ex_b, ref_a, ref_b, group, chunk, desc, progress)
        for block, kernel in kernels.items():
            if store is not None:
                store.save(block, kernel.cpu(), key)
            done[block] = kernel.cpu()
    return NTKComponents(pre=pre, blocks={b: done[b] for b in blocks}, block_sizes=sizes)


def ntk_train_eval(
    model: KernelModel,
    train: Batch,
    evals: Batch,
    *,
    partition: Mapping[str, Sequence[str]] | None = None,
    memory_gb: float = 4.0,
    store: KernelStore | None = None,
    desc: str = "F kernel",
    progress: Progress = silent,
) -> tuple[NTKComponents, NTKComponents]:
    """train×train and eval×train components at once, computing each pass's training Jacobian rows once.

    Equivalent to ``ntk_components(model, train)`` and ``ntk_components(model, evals, train)``; when a pass's
    rows for both sets fit in ``memory_gb`` they are shared, otherwise the two kernels are chunked
    separately. ``store`` keys are ``train.<block>`` and ``eval.<block>``.
    """
    if memory_gb <= 0:
        raise DynascopeError(f"memory_gb must be positive, got {memory_gb}")
    phi_t, phi_e = batch_features(model, train), batch_features(model, evals)
    c, with_bias = model.num_labels, model.bias is not None
    pre = {
        "train": _pre_from_features(phi_t, phi_t, c, with_bias),
        "eval": _pre_from_features(phi_e, phi_t, c, with_bias),
    }
    blocks = resolve_partition(model.trainable_names, model.word_name, partition)
    sizes = {b: sum(model.param_size(n) for n in names) for b, names in blocks.items()}
    ex_t, ex_e = examples(model.backbone, train), examples(model.backbone, evals)
    ref_t, ref_e = _Reference.of(phi_t, model.weight), _Reference.of(phi_e, model.weight)
    keys = {"train": "", "eval": ""}
    done: dict[str, dict[str, Tensor]] = {"train": {}, "eval": {}}
    if store is not None:
        keys = {"train": fingerprint(model, train, None, blocks), "eval": fingerprint(model, evals, train, blocks)}
        for side, side_done in done.items():
            for block in blocks:
                kernel = store.load(f"{side}.{block}", keys[side])
                if kernel is not None:
                    side_done[block] = kernel
    todo = {b: names for b, names in blocks.items() if b not in done["train"] or b not in done["eval"]}
    longest = max(int(e.input_ids.numel()) for e in ex_t + ex_e)
    budget = memory_gb * 2**30
    n_hold = len(ex_t) + len(ex_e)
    for group in _plan_groups(model, todo, longest, n_hold, budget):
        row = sum(_row_bytes(model, names, longest) for names in group.values())
        label = f"{desc} [{', '.join(group)}]" if len(group) <= 2 else f"{desc} [{len(group)} blocks]"
        if row * n_hold <= budget:
            rows_t = _jacobian_rows(model, ex_t, ref_t, 0, group, label, progress)
            rows_e = _jacobian_rows(model, ex_e, ref_e, 0, group, label, progress)
            kernels = {
                "train": {b: _block_gram(rows_t[b], rows_t[b], c) for b in group},
                "eval": {b: _block_gram(rows_e[b], rows_t[b], c) for b in group},
            }
        else:
            chunk = max(1, int(budget // (2 * row)))
            kernels = {
                "train": _group_kernels(model, ex_t, None, ref_t, None, group, chunk, desc, progress),
                "eval": _group_kernels(model, ex_e, ex_t, ref_e, ref_t, group, chunk, desc, progress),
            }
        for side, side_kernels in kernels.items():
            for block, kernel in side_kernels.items():
                if block in done[side]:
                    continue  # finished on an earlier run: keep the saved kernel
                if store is not None:
                    store.save(f"{side}.{block}", kernel.cpu(), keys[side])
                done[side][block] = kernel.cpu()
    out = (
        NTKComponents(pre=pre[side], blocks={b: done[side][b] for b in blocks}, block_sizes=sizes)
        for side in ("train", "eval")
    )
    return next(out), next(out)


def _row_bytes(model: KernelModel, names: Sequence[str], longest: int) -> int:
    """Bytes of one example's Jacobian rows for these parameters (model dtype)."""
    itemsize = model.word_weight.element_size()
    c = model.num_labels
    total = 0
    for name in names:
        if name == model.word_name:
            total += c * longest * model.word_weight.shape[1] * itemsize
        else:
            total += c * model.params[name].numel() * itemsize
    return total


def _plan_groups(
    model: KernelModel, blocks: Mapping[str, list[str]], longest: int, n_hold: int, budget: float
) -> list[dict[str, list[str]]]:
    """Pack consecutive blocks into passes whose Jacobian rows for every example fit in the budget."""
    groups: list[dict[str, list[str]]] = []
    current: dict[str, list[str]] = {}
    used = 0.0
    for block, names in blocks.items():
        need = _row_bytes(model, names, longest) * n_hold
        if current and used + need > budget:
            groups.append(current)
            current, used = {}, 0.0
        current[block] = names
        used += need
    if current:
        groups.append(current)
    return groups


@dataclass
class _Rows:
    """One block's Jacobian rows for a chunk of examples."""

    dense: Tensor | None  # [n·C, P_dense] model dtype
    word: list[tuple[Tensor, Tensor]]  # per example: (unique vocabulary ids [k], summed G [C, k, h])


def _jacobian_rows(
    model: KernelModel,
    exs: Sequence[Example],
    ref: _Reference,
    start: int,
    group: Mapping[str, list[str]],
    desc: str,
    progress: Progress,
) -> dict[str, _Rows]:
    """Per-example C VJPs for every parameter of the group, split by block."""
    names = [n for block_names in group.values() for n in block_names]
    c = model.num_labels
    device = model.weight.device
    eye = torch.eye(c, dtype=model.weight.dtype, device=device)
    dense_names = {b: [n for n in block_names if n != model.word_name] for b, block_names in group.items()}
    # rows are written in place into one preallocated matrix per block: no list + cat copy, so the peak
    # stays at the planned budget rather than twice it
    dense = {
        b: torch.empty(len(exs) * c, sum(model.params[n].numel() for n in ns), dtype=model.weight.dtype, device=device)
        for b, ns in dense_names.items()
        if ns
    }
    words: dict[str, list[tuple[Tensor, Tensor]]] = {b: [] for b in group}
    for i, ex in enumerate(progress(exs, desc)):
        value, grads, g_embeds = example_vjp(model, ex, names, eye)
        _check_value(value, ref, start + i)
        for block, block_names in group.items():
            offset = 0
            for n in dense_names[block]:
                size = model.params[n].numel()
                dense[block][i * c : (i + 1) * c, offset : offset + size] = grads[n].reshape(c, -1)
                offset += size
            if model.word_name in block_names:
                ids, where = torch.unique(ex.input_ids, return_inverse=True)
                summed = torch.zeros(c, ids.numel(), g_embeds.shape[-1], dtype=g_embeds.dtype, device=device)
                summed.index_add_(1, where, g_embeds)
                words[block].append((ids, summed))
        del grads, g_embeds
    return {b: _Rows(dense=dense.get(b), word=words[b]) for b in group}


@dataclass(frozen=True)
class _Reference:
    """g(x) = V φ(x) from the batched ``input_ids`` forward, and the size of the terms each entry sums.

    The tolerance of the ``inputs_embeds`` check scales with ‖V_c‖‖φ‖ (the Cauchy–Schwarz bound on
    |g_c|), not with |g|: a strongly regularised head gives |g| ≪ ‖V_c‖‖φ‖ by cancellation, while the
    float32 differences between the padded batched forward and the trimmed per-example one are
    relative to φ, not to the small sum.
    """

    value: Tensor  # [n, C] float64
    scale: Tensor  # [n, C] float64: ‖V_c‖ ‖φ‖

    @staticmethod
    def of(phi: Tensor, weight: Tensor) -> _Reference:
        """The reference for features ``phi`` [n, h] (float64) under the head weight [C, h]."""
        w = weight.double()
        return _Reference(value=phi @ w.T, scale=phi.norm(dim=1, keepdim=True) * w.norm(dim=1))


def _check_value(value: Tensor, ref: _Reference, index: int) -> None:
    """The inputs_embeds path must reproduce g(x) from the input_ids path (position ids, padding).

    Passes when every entry agrees to 1e-4 of ‖V_c‖‖φ‖ (float32 noise is ≈ 1e-7 of it); a wrong
    position-id rule changes φ by a large fraction of ‖φ‖, so g by ≈ ‖V_c‖‖Δφ‖/√h, and is caught.
    """
    value = value.detach().double()
    reference = ref.value[index]
    tolerance = 1e-4 * float(ref.scale[index].max()) + 1e-9
    if float((value - reference).abs().max()) > tolerance:
        raise DynascopeError(
            f"example {index}: g(x) through inputs_embeds differs from the input_ids forward "
            f"({value.tolist()} vs {reference.tolist()}, tolerance {tolerance:.3g}); "
            "the backbone's position-id rule is not supported"
        )


def _dense_gram(a: Tensor, b: Tensor) -> Tensor:
    """a bᵀ in float64, cast column-chunk by column-chunk to bound memory."""
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    step = max(1, GRAM_CHUNK_BYTES // (8 * (a.shape[0] + b.shape[0])))
    for c0 in range(0, a.shape[1], step):
        out += a[:, c0 : c0 + step].double() @ b[:, c0 : c0 + step].double().T
    return out


def _word_gram(rows_a: list[tuple[Tensor, Tensor]], rows_b: list[tuple[Tensor, Tensor]], c: int) -> Tensor:
    """Exact word-embedding kernel [n_a, C, n_b, C] from per-example (ids, summed G) on shared vocabulary rows."""
    out = torch.zeros(len(rows_a), c, len(rows_b), c, dtype=torch.float64, device=rows_a[0][1].device)
    for a0 in range(0, len(rows_a), WORD_SUBCHUNK):
        sub_a = rows_a[a0 : a0 + WORD_SUBCHUNK]
        vocab_a = torch.unique(torch.cat([ids for ids, _ in sub_a]))
        for b0 in range(0, len(rows_b), WORD_SUBCHUNK):
            sub_b = rows_b[b0 : b0 + WORD_SUBCHUNK]
            vocab_b = torch.unique(torch.cat([ids for ids, _ in sub_b]))
            common = vocab_a[torch.isin(vocab_a, vocab_b)]
            if common.numel() == 0:
                continue
            dense_a = _scatter_rows(sub_a, common, c)
            dense_b = _scatter_rows(sub_b, common, c)
            out[a0 : a0 + len(sub_a), :, b0 : b0 + len(sub_b), :] = torch.einsum("ackh,bdkh->acbd", dense_a, dense_b)
    return out


def _scatter_rows(rows: list[tuple[Tensor, Tensor]], common: Tensor, c: int) -> Tensor:
    """[n, C, K, h] float64: each example's summed G placed on the shared vocabulary rows ``common``."""
    h = rows[0][1].shape[-1]
    dense = torch.zeros(len(rows), c, common.numel(), h, dtype=torch.float64, device=common.device)
    for i, (ids, summed) in enumerate(rows):
        keep = torch.isin(ids, common)
        if keep.any():
            dense[i][:, torch.searchsorted(common, ids[keep])] = summed[:, keep].double()
    return dense


def _block_gram(rows_a: _Rows, rows_b: _Rows, c: int) -> Tensor:
    """One block's kernel between two chunks, float64 [n_a, C, n_b, C]."""
    n_a = len(rows_a.word) if rows_a.dense is None else rows_a.dense.shape[0] // c
    n_b = len(rows_b.word) if rows_b.dense is None else rows_b.dense.shape[0] // c
    device = rows_a.dense.device if rows_a.dense is not None else rows_a.word[0][1].device
    out = torch.zeros(n_a, c, n_b, c, dtype=torch.float64, device=device)
    if rows_a.dense is not None:
        out += _dense_gram(rows_a.dense, rows_b.dense).reshape(n_a, c, n_b, c)
    if rows_a.word:
        out += _word_gram(rows_a.word, rows_b.word, c)
    return out


def _group_kernels(
    model: KernelModel,
    ex_a: list[Example],
    ex_b: list[Example] | None,
    ref_a: _Reference,
    ref_b: _Reference | None,
    group: Mapping[str, list[str]],
    chunk: int,
    desc: str,
    progress: Progress,
) -> dict[str, Tensor]:
    """Kernels of one pass's blocks, in example chunks of size ``chunk`` (B side recomputed per A chunk)."""
    c = model.num_labels
    sym = ex_b is None
    side_b, ref_side_b = (ex_a, ref_a) if sym else (ex_b, ref_b)
    device = model.weight.device
    out = {b: torch.zeros(len(ex_a), c, len(side_b), c, dtype=torch.float64, device=device) for b in group}
    label = f"{desc} [{', '.join(group)}]" if len(group) <= 2 else f"{desc} [{len(group)} blocks]"
    chunks_a = [(s, min(s + chunk, len(ex_a))) for s in range(0, len(ex_a), chunk)]
    chunks_b = chunks_a if sym else [(s, min(s + chunk, len(side_b))) for s in range(0, len(side_b), chunk)]
    cache_b = None
    if not sym and len(chunks_b) == 1:
        cache_b = _jacobian_rows(model, side_b, ref_side_b, 0, group, label, progress)
    for ia, (a0, a1) in enumerate(chunks_a):
        rows_a = _jacobian_rows(model, ex_a[a0:a1], ref_a, a0, group, label, progress)
        for ib, (b0, b1) in enumerate(chunks_b):
            if sym and ib < ia:
                continue
            if sym and ib == ia:
                rows_b = rows_a
            elif cache_b is not None:
                rows_b = cache_b
            else:
                rows_b = _jacobian_rows(model, side_b[b0:b1], ref_side_b, b0, group, label, progress)
            for block in group:
                kernel = _block_gram(rows_a[block], rows_b[block], c)
                out[block][a0:a1, :, b0:b1, :] = kernel
                if sym and ib != ia:
                    out[block][b0:b1, :, a0:a1, :] = kernel.permute(2, 3, 0, 1)
    return out
