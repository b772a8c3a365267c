"""Exact tr(J Jᵀ) = Σ_x ‖J_x‖²_F without forming a single weight gradient ("ghost norms").

For a linear layer y = A Wᵀ + b with input A (T×d_in) and gradient G_j = ∂φ_j/∂y (T×d_out) of output row j,
∂φ_j/∂W = G_jᵀ A, so

    ‖∂φ_j/∂W‖²_F = ⟨G_j G_jᵀ, A Aᵀ⟩   (two T×T Grams)   and   ‖∂φ_j/∂b‖² = ‖Σ_t G_j[t]‖².

Summed over the m rows of J_x this is ⟨S, A Aᵀ⟩ with S = Σ_j G_j G_jᵀ, one batched product per chunk of
rows. The G_j come from a single forward pass in which a zero *probe* is added to the output of every covered
module (forward hooks under ``torch.func.functional_call``); differentiating with respect to the probes, with
the backbone parameters held constant, makes the m backward passes compute activation gradients only. When
T > d_in the Gram costs more than the weight gradient itself, so that layer takes ‖G_jᵀ A‖² directly
(still exact). Other module rules:

* ``nn.LayerNorm``: ∂φ_j/∂γ = Σ_t G_j[t] ⊙ x̂[t] (x̂ the normalised input), ∂φ_j/∂β = Σ_t G_j[t].
* ``nn.Embedding`` (position, token type, …; not the word embeddings): ∂φ_j/∂E sums G_j[t] over the
  positions t that share an index (the ``padding_idx`` row gets no gradient, as in ``F.embedding``).
* Word embeddings: the gradient with respect to ``inputs_embeds`` summed over equal token ids, exactly as
  :meth:`dynascope.ntk.trace.JacobianOperator.exact_trace` does with ``method="vjp"``.

A module called several times in one forward pass gets one probe per call; its weight gradient is then
Σ_calls G_cᵀ A_c = [G_1; G_2; …]ᵀ [A_1; A_2; …], so the calls are concatenated along the token axis.
Any parameter no rule covers — a module subclass with its own ``forward``, a parameter shared between
modules, a module never called through ``__call__`` — is differentiated directly in the same backward pass
(plain VJP for those parameters only), so the result is exact for every parameter set. A covered parameter
is assumed to reach the output only through its module's forward (true of Hugging Face encoders and of
peft LoRA layers, whose ``lora_A``/``lora_B`` are plain ``nn.Linear``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import vjp, vmap
from torch.nn import functional as F

from dynascope.errors import ConfigError
from dynascope.ntk.functional import Example, KernelModel, features, output_fn

# module types whose parameters the ghost rules cover, with the parameter leaves each rule handles
_RULES: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Linear: ("weight", "bias"),
    nn.LayerNorm: ("weight", "bias"),
    nn.Embedding: ("weight",),
}


@dataclass(frozen=True)
class GhostPlan:
    """Which modules get probes (path → covered parameter leaves) and which parameters fall back to a VJP."""

    modules: dict[str, tuple[nn.Module, tuple[str, ...]]]
    fallback: list[str]


def _rule_type(module: nn.Module) -> type[nn.Module] | None:
    """The rule a module follows: an instance of a covered type whose ``forward`` is the stock one."""
    for kind in _RULES:
        if isinstance(module, kind) and type(module).forward is kind.forward:
            if kind is nn.Embedding and (module.max_norm is not None or module.scale_grad_by_freq):
                return None  # renormalising / frequency-scaled embeddings: not the plain gather rule
            return kind
    return None


def ghost_plan(model: KernelModel, names: Sequence[str]) -> GhostPlan:
    """Assign every dense parameter of ``names`` to a probed module or to the VJP fallback.

    A parameter is covered when it is a ``weight``/``bias`` leaf of a module with a ghost rule and belongs to
    that module only (a parameter shared between modules or registered twice falls back).
    """
    dense = [n for n in names if n != model.word_name]
    wanted = set(dense)
    owners = Counter(
        id(p) for _, m in model.backbone.named_modules(remove_duplicate=False) for p in m._parameters.values()
    )
    modules: dict[str, tuple[nn.Module, tuple[str, ...]]] = {}
    covered: set[str] = set()
    for path, module in model.backbone.named_modules():
        kind = _rule_type(module)
        if kind is None:
            continue
        leaves = tuple(
            leaf
            for leaf in _RULES[kind]
            if (p := module._parameters.get(leaf)) is not None and _qualify(path, leaf) in wanted and owners[id(p)] == 1
        )
        if leaves:
            modules[path] = (module, leaves)
            covered.update(_qualify(path, leaf) for leaf in leaves)
    return GhostPlan(modules, [n for n in dense if n not in covered])


def _qualify(path: str, leaf: str) -> str:
    return f"{path}.{leaf}" if path else leaf


@contextmanager
def _hooks(
    modules: Mapping[str, nn.Module], hook: Callable[[str, nn.Module, Tensor, Tensor], Tensor | None]
) -> Iterator:
    """Forward hooks ``hook(path, module, input, output)`` on ``modules``, removed on exit."""

    def wrap(path: str) -> Callable:
        def fire(module: nn.Module, args: tuple, kwargs: dict, out: Tensor) -> Tensor | None:
            return hook(path, module, args[0] if args else kwargs["input"], out)

        return fire

    handles = [m.register_forward_hook(wrap(p), with_kwargs=True) for p, m in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _probe_shapes(
    model: KernelModel, example: Example, plan: GhostPlan, embeds: Tensor
) -> dict[str, list[tuple[tuple[int, ...], torch.dtype]]]:
    """Output shape and dtype of every call of every probed module in one forward pass."""
    shapes: dict[str, list[tuple[tuple[int, ...], torch.dtype]]] = {p: [] for p in plan.modules}

    def record(path: str, module: nn.Module, x: Tensor, out: Tensor) -> None:
        shapes[path].append((tuple(out.shape), out.dtype))

    with torch.no_grad(), _hooks({p: m for p, (m, _) in plan.modules.items()}, record):
        features(model, example, model.params, embeds)
    return shapes


def _stack_calls(tensors: list[Tensor], width: int, batched: bool) -> Tensor:
    """Calls of one module as [T, width] (inputs) or [k, T, width] (gradients), concatenated along T."""
    parts = [x.reshape(x.shape[0], -1, width) if batched else x.reshape(-1, width) for x in tensors]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1 if batched else 0)


def _linear_terms(
    module: nn.Linear, leaves: tuple[str, ...], inputs: list[Tensor], grads: list[Tensor], gram: dict[str, Tensor]
) -> float:
    """Σ_j ‖∂φ_j/∂W‖² + ‖∂φ_j/∂b‖² for a chunk of rows; ``gram`` caches A Aᵀ (float64) across chunks.

    Σ_j G_j G_jᵀ is a batched product in the model dtype (each entry one d_out-long dot product), summed
    over rows and contracted with A Aᵀ in float64.
    """
    d_in, d_out = module.in_features, module.out_features
    a = _stack_calls(inputs, d_in, batched=False)  # [T, d_in]
    g = _stack_calls(grads, d_out, batched=True)  # [k, T, d_out]
    total = 0.0
    if "weight" in leaves:
        if g.shape[1] <= d_in:  # ⟨Σ_j G_j G_jᵀ, A Aᵀ⟩: T²·d_out per row instead of T·d_in·d_out
            if "aat" not in gram:
                a64 = a.double()
                gram["aat"] = a64 @ a64.T
            s = torch.bmm(g, g.transpose(1, 2)).sum(dim=0, dtype=torch.float64)
            total += float((s * gram["aat"]).sum())
        else:  # the weight gradients G_jᵀ A themselves are cheaper than the Grams
            total += float(torch.matmul(g.transpose(1, 2), a).double().pow(2).sum())
    if "bias" in leaves:
        total += float(g.sum(dim=1, dtype=torch.float64).pow(2).sum())
    return total


def _layer_norm_terms(
    module: nn.LayerNorm, leaves: tuple[str, ...], inputs: list[Tensor], grads: list[Tensor]
) -> float:
    """Σ_j ‖Σ_t G_j[t] ⊙ x̂[t]‖² + ‖Σ_t G_j[t]‖² for a chunk of rows (x̂ recomputed from the input)."""
    shape = tuple(module.normalized_shape)
    size = int(torch.Size(shape).numel())
    xhat = _stack_calls([F.layer_norm(x, shape, eps=module.eps) for x in inputs], size, batched=False)  # [T, size]
    g = _stack_calls(grads, size, batched=True)  # [k, T, size]
    total = 0.0
    if "weight" in leaves:
        total += float(torch.einsum("kts,ts->ks", g, xhat).double().pow(2).sum())
    if "bias" in leaves:
        total += float(g.sum(dim=1, dtype=torch.float64).pow(2).sum())
    return total


def _embedding_terms(module: nn.Embedding, inputs: list[Tensor], grads: list[Tensor]) -> float:
    """Σ_j Σ_rows ‖Σ_{t: idx_t = row} G_j[t]‖² for a chunk of rows (padding_idx excluded)."""
    idx = _stack_calls(inputs, 1, batched=False).reshape(-1)
    g = _stack_calls(grads, module.embedding_dim, batched=True)
    if module.padding_idx is not None:
        keep = idx != module.padding_idx
        idx, g = idx[keep], g[:, keep]
    return summed_row_square(idx, g)


def summed_row_square(idx: Tensor, g: Tensor) -> float:
    """Σ over rows of ‖Σ_{t: idx_t = row} g[:, t]‖², float64 (the gather-aware norm of an embedding gradient)."""
    ids, where = torch.unique(idx, return_inverse=True)
    summed = torch.zeros(g.shape[0], ids.numel(), g.shape[-1], dtype=torch.float64, device=g.device)
    summed.index_add_(1, where, g.double())
    return float(summed.pow(2).sum())


def example_ghost_trace(
    model: KernelModel,
    example: Example,
    names: Sequence[str],
    output: str = "logits",
    chunk: int = 64,
    plan: GhostPlan | None = None,
) -> float:
    """‖J_x‖²_F of one example over ``names`` (float64): probe gradients for ``chunk`` rows of J_x at a time.

    One forward pass records the probed modules' output shapes, a second one (under ``torch.func.vjp``) adds
    the zero probes and keeps each probed module's input; the pullback is then vmapped over ``chunk`` basis
    cotangents at a time and reduced module by module. ``plan`` defaults to ``ghost_plan(model, names)``.
    """
    out_fn = output_fn(model, example, output)  # validates ``output``
    if chunk < 1:
        raise ConfigError(f"chunk must be >= 1, got {chunk}")
    plan = ghost_plan(model, names) if plan is None else plan
    with_word = model.word_name is not None and model.word_name in names
    embeds = model.word_weight[example.input_ids]
    with torch.no_grad():  # torch.func transforms ignore an outer no_grad; module parameters stay untracked
        shapes = _probe_shapes(model, example, plan, embeds)
    fallback = list(plan.fallback)
    for path in [p for p, calls in shapes.items() if not calls]:  # never called through __call__: plain VJP
        fallback.extend(_qualify(path, leaf) for leaf in plan.modules[path][1])
    probed = {p: plan.modules[p] for p in plan.modules if shapes[p]}
    device = model.weight.device
    probes = {p: [torch.zeros(s, dtype=d, device=device) for s, d in calls] for p, calls in shapes.items() if calls}
    base = dict(model.params)

    def fn(probe: dict[str, list[Tensor]], direct: dict[str, Tensor], *emb: Tensor) -> tuple[Tensor, dict]:
        inputs: dict[str, list[Tensor]] = {p: [] for p in probe}

        def add_probe(path: str, module: nn.Module, x: Tensor, out: Tensor) -> Tensor:
            calls = inputs[path]
            calls.append(x.detach())
            return out + probe[path][len(calls) - 1]

        with _hooks({p: m for p, (m, _) in probed.items()}, add_probe):
            value = out_fn({**base, **direct}, emb[0] if emb else embeds)
        return value, inputs

    m = model.num_labels if output == "logits" else int(model.weight.shape[1])
    eye = torch.eye(m, dtype=model.weight.dtype, device=device)
    direct = {n: model.params[n] for n in fallback}
    total = 0.0
    grams: dict[str, dict[str, Tensor]] = {p: {} for p in probed}
    with torch.no_grad():
        # the word embeddings are a primal only when wanted: backward then stops at the lowest probe
        _, pull, inputs = vjp(fn, probes, direct, *([embeds] if with_word else []), has_aux=True)
        for start in range(0, m, chunk):
            g_probe, g_direct, *g_embeds = vmap(pull)(eye[start : start + chunk])
            for path, (module, leaves) in probed.items():
                if isinstance(module, nn.Linear):
                    total += _linear_terms(module, leaves, inputs[path], g_probe[path], grams[path])
                elif isinstance(module, nn.LayerNorm):
                    total += _layer_norm_terms(module, leaves, inputs[path], g_probe[path])
                else:
                    total += _embedding_terms(module, inputs[path], g_probe[path])
            total += sum(float(g.double().pow(2).sum()) for g in g_direct.values())
            if with_word:
                total += summed_row_square(example.input_ids, g_embeds[0])
    return total


def ghost_trace(
    model: KernelModel, examples: Sequence[Example], names: Sequence[str], output: str = "logits", chunk: int = 64
) -> float:
    """tr(J Jᵀ) = Σ_x ‖J_x‖²_F over ``names`` for ``examples`` (float64), by ghost norms."""
    plan = ghost_plan(model, names)
    return sum(example_ghost_trace(model, ex, names, output, chunk, plan) for ex in examples)
