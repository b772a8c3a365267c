"""Matrix-free traces of F = J Jᵀ (outputs g = Vφ) and of the feature kernel Θ^φ (outputs φ).

A :class:`JacobianOperator` is J for a set of examples and a set of parameters (a block or all of
them), exposed nngeometry-style through products only: ``jvp`` (forward mode, ``torch.func.jvp``) and
``vjp``; the matrix is never formed. Probes live in parameter space: tr(J Jᵀ) = tr(JᵀJ) = E‖J v‖² for
Rademacher v. Word-embedding probes live on the vocabulary rows the examples use (other rows of E have
zero Jacobian), gathered into ``inputs_embeds`` tangents.

* :func:`hutchinson_trace`: mean of ‖J v‖² over probes, with its standard error.
* :func:`hutchpp_trace`: Hutch++ (Meyer, Musco, Musco & Woodruff 2021) on A = JᵀJ: a third of the
  matrix–vector budget sketches the range (Q = orth(A S), A S = Jᵀ(J S)), the trace on it is exact
  (‖J Q‖²_F), and Hutchinson runs on the deflated rest.
* :meth:`JacobianOperator.exact_trace`: Σ_x ‖J_x‖²_F from m backward passes per example (m = C for F, h for
  Θ^φ), by ghost norms (``method="ghost"``, :mod:`dynascope.ntk.ghost`: activation gradients only, no weight
  gradient formed) or by pulling every row back to all parameter gradients (``method="vjp"``).

Forward-mode AD needs ``attn_implementation="eager"`` (``kernel_model`` refuses SDPA).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dynascope.errors import ConfigError
from dynascope.ntk.blocks import resolve_partition
from dynascope.ntk.functional import WORD, Batch, KernelModel, example_jvp, example_vjp, examples
from dynascope.ntk.ghost import ghost_trace, summed_row_square
from dynascope.validation import check_choice, check_int

TRACE_METHODS = ("hutchinson", "hutch++", "exact")
EXACT_METHODS = ("ghost", "vjp")


@dataclass(frozen=True)
class TraceEstimate:
    """A trace estimate, its standard error, and how many products of J it used."""

    estimate: float
    stderr: float
    num_probes: int
    method: str

    def to_dict(self) -> dict[str, float | int | str]:
        """JSON-ready form."""
        return {"estimate": self.estimate, "stderr": self.stderr, "num_probes": self.num_probes, "method": self.method}


class JacobianOperator:
    """J of ``output`` ("logits": g = Vφ, C outputs; "features": φ, h outputs) over ``names`` for a batch."""

    def __init__(
        self, model: KernelModel, batch: Batch, names: Sequence[str] | None = None, output: str = "logits"
    ) -> None:
        self.model = model
        self.output = output
        self.names = list(model.trainable_names if names is None else names)
        unknown = [n for n in self.names if n != model.word_name and n not in model.params]
        if unknown:
            raise ConfigError(f"not trainable parameters of this state: {unknown[:5]}")
        if not self.names:
            raise ConfigError("a Jacobian operator needs at least one trainable parameter")
        self.examples = examples(model.backbone, batch)
        self.with_word = model.word_name is not None and model.word_name in self.names
        self.rows = torch.unique(torch.cat([e.input_ids for e in self.examples])) if self.with_word else None
        self.dense = [n for n in self.names if n != model.word_name]

    @property
    def num_outputs(self) -> int:
        """Outputs per example: C or h."""
        return self.model.num_labels if self.output == "logits" else int(self.model.weight.shape[1])

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {n: tuple(self.model.params[n].shape) for n in self.dense}
        if self.with_word:
            shapes[WORD] = (int(self.rows.numel()), int(self.model.word_weight.shape[1]))
        return shapes

    @property
    def dim(self) -> int:
        """Dimension of the probe space (word embeddings counted on the used rows only)."""
        return sum(math.prod(s) for s in self._shapes().values())

    def rademacher(self, k: int, generator: torch.Generator) -> dict[str, Tensor]:
        """k Rademacher probes in parameter space, {name: [k, *shape]} (model dtype and device; drawn on the CPU,
        so every device sees the same probes)."""
        weight = self.model.word_weight
        return {
            n: (torch.randint(0, 2, (k, *s), generator=generator) * 2 - 1).to(weight.device, weight.dtype)
            for n, s in self._shapes().items()
        }

    def jvp(self, tangents: Mapping[str, Tensor]) -> Tensor:
        """J v for k tangents: [k, N, m]."""
        names = self.names
        outs = [example_jvp(self.model, ex, names, tangents, self.rows, self.output) for ex in self.examples]
        return torch.stack(outs, dim=1)

    def vjp(self, cotangents: Tensor) -> dict[str, Tensor]:
        """Jᵀ u for k cotangents [k, N, m]: {name: [k, *shape]} summed over examples."""
        k = cotangents.shape[0]
        weight = self.model.word_weight
        out = {n: torch.zeros(k, *s, dtype=weight.dtype, device=weight.device) for n, s in self._shapes().items()}
        for i, ex in enumerate(self.examples):
            _, grads, g_embeds = example_vjp(self.model, ex, self.names, cotangents[:, i, :], self.output)
            for n in self.dense:
                out[n] += grads[n]
            if self.with_word:
                out[WORD].index_add_(1, torch.searchsorted(self.rows, ex.input_ids), g_embeds)
        return out

    def exact_trace(self, chunk: int = 64, method: str = "ghost") -> float:
        """Σ_x ‖J_x‖²_F in float64 from m backward passes per example, vmapped ``chunk`` rows at a time.

        ``method="ghost"`` (default) contracts activation gradients with layer inputs (ghost norms, no weight
        gradient formed); ``method="vjp"`` pulls each row back to every parameter gradient and sums squares.
        """
        if check_choice(method, EXACT_METHODS, "method") == "ghost":
            return ghost_trace(self.model, self.examples, self.names, self.output, chunk)
        m = self.num_outputs
        eye = torch.eye(m, dtype=self.model.weight.dtype, device=self.model.weight.device)
        total = 0.0
        for ex in self.examples:
            for start in range(0, m, chunk):
                _, grads, g_embeds = example_vjp(self.model, ex, self.names, eye[start : start + chunk], self.output)
                total += sum(float(grads[n].double().pow(2).sum()) for n in self.dense)
                if self.with_word:
                    total += summed_row_square(ex.input_ids, g_embeds)
        return total


def hutchinson_samples(op: JacobianOperator, num_probes: int, seed: int = 0, chunk: int = 8) -> Iterator[Tensor]:
    """‖J v‖² (float64) for ``num_probes`` seeded Rademacher probes v, yielded ``chunk`` at a time; a shorter
    run with the same seed and chunk yields a prefix of a longer one."""
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, num_probes, chunk):
        k = min(chunk, num_probes - start)
        yield op.jvp(op.rademacher(k, generator)).double().pow(2).sum(dim=(1, 2))


def hutchinson_trace(op: JacobianOperator, num_probes: int, seed: int = 0, chunk: int = 8) -> TraceEstimate:
    """Hutchinson estimate of tr(J Jᵀ) = E‖J v‖², v Rademacher in parameter space; stderr = sd/√K."""
    num_probes = check_int(num_probes, "num_probes", minimum=2)
    z = torch.cat(list(hutchinson_samples(op, num_probes, seed, chunk)))
    return TraceEstimate(float(z.mean()), float(z.std(unbiased=True) / math.sqrt(num_probes)), num_probes, "hutchinson")


def _flatten(vectors: Mapping[str, Tensor], keys: Sequence[str]) -> Tensor:
    """{name: [k, *shape]} → [k, P]."""
    return torch.cat([vectors[n].reshape(vectors[n].shape[0], -1) for n in keys], dim=1)


def _unflatten(flat: Tensor, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Tensor]:
    """[k, P] → {name: [k, *shape]}."""
    out, start = {}, 0
    for n, s in shapes.items():
        size = math.prod(s)
        out[n] = flat[:, start : start + size].reshape(flat.shape[0], *s)
        start += size
    return out


def hutchpp_trace(op: JacobianOperator, num_matvecs: int, seed: int = 0, chunk: int = 8) -> TraceEstimate:
    """Hutch++ estimate of tr(JᵀJ) with ``num_matvecs`` products (a third each: sketch, range, residual).

    The standard error is that of the residual Hutchinson term (the range term is exact).
    """
    num_matvecs = check_int(num_matvecs, "num_matvecs", minimum=6)
    k = num_matvecs // 3
    generator = torch.Generator().manual_seed(seed)
    shapes = op._shapes()
    keys = list(shapes)
    sketch = op.rademacher(k, generator)
    residual = op.rademacher(k, generator)
    y = _flatten(op.vjp(op.jvp(sketch)), keys)  # A S = Jᵀ (J S), [k, P]
    q = torch.linalg.qr(y.T).Q  # [P, k], in the model dtype (P·k values can be large)
    range_part = 0.0
    for start in range(0, k, chunk):
        block = _unflatten(q[:, start : start + chunk].T, shapes)
        range_part += float(op.jvp(block).double().pow(2).sum())
    g = _flatten(residual, keys)
    g = g - (g @ q) @ q.T
    z = []
    for start in range(0, k, chunk):
        block = _unflatten(g[start : start + chunk], shapes)
        z.append(op.jvp(block).double().pow(2).sum(dim=(1, 2)))
    zs = torch.cat(z)
    return TraceEstimate(range_part + float(zs.mean()), float(zs.std(unbiased=True) / math.sqrt(k)), 3 * k, "hutch++")


def block_traces(
    model: KernelModel,
    batch: Batch,
    *,
    method: str = "hutchinson",
    num_probes: int = 32,
    seed: int = 0,
    partition: Mapping[str, Sequence[str]] | None = None,
    output: str = "logits",
) -> dict[str, TraceEstimate]:
    """Trace estimates per block and for the whole (``"total"``, one operator over all trainable parameters).

    ``method`` is ``"hutchinson"``, ``"hutch++"`` or ``"exact"`` (stderr 0).
    """
    check_choice(method, TRACE_METHODS, "method")
    blocks = resolve_partition(model.trainable_names, model.word_name, partition)
    ops = {"total": None, **{b: names for b, names in blocks.items()}}
    out = {}
    for i, (block, names) in enumerate(ops.items()):
        op = JacobianOperator(model, batch, names, output)
        if method == "hutchinson":
            out[block] = hutchinson_trace(op, num_probes, seed + 1000 * i)
        elif method == "hutch++":
            out[block] = hutchpp_trace(op, num_probes, seed + 1000 * i)
        else:
            out[block] = TraceEstimate(op.exact_trace(), 0.0, 0, "exact")
    return out
