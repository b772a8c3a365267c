"""The NTK pipeline: the empirical NTK of a classifier state, split into P and F, with the paper's Table 2.

The state is built at the start of a training stage (``ft``: random head; ``lp-ft``: head fitted by LP on
the full training set; ``lora`` / ``lp-lora``: the same with LoRA injected at initialisation) or loaded
from a finished fine-tuning run directory. N training examples (seeded, stratified) and M evaluation
examples from the task's **test** split (the paper's Table 2 used the original validation set, which is
our test split) are drawn; P, F (per block, checkpointed: an interrupted run resumes) and their sum are
computed train×train and eval×train, with traces, statistics and kernel solvers, into an NTK run directory
(``runio.NTK``: record, kernels, spectra, and the stats file last).

The state is built in float32 as training builds it, then cast to ``ntk_dtype`` (float64 for exactness checks:
Jacobian rows in the model dtype, Grams always accumulated in float64) and moved to ``device``, where every
kernel is computed; the kernels come back to the CPU. ``device`` is where, not what: it is left out of the
record and of the resume fingerprint (``env.json`` and the stats name the resolved device).

Under ``torchrun`` the F kernels are computed in example tiles shared among the ranks (``ntk.tiles``: every rank
writes its finished tiles to ``blocks/``, so a killed job resumes tile by tile); rank 0 then assembles them and
alone computes the statistics, trace estimates and solvers and writes the run directory, and every rank returns
rank 0's stats.
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynascope.device import describe, resolve_device
from dynascope.distributed import broadcast_object, gather_objects, world
from dynascope.errors import ConfigError
from dynascope.models.classifier import POOLING_CHOICES
from dynascope.progress import progress, say
from dynascope.runio import NTK
from dynascope.train.probe import ProbeSettings

STATES = ("ft", "lp-ft", "lora", "lp-lora")
SOLVERS = ("paper", "ridge", "logistic")
NTK_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class NTKConfig:
    """Everything that determines an NTK run."""

    task: str | None
    state: str
    n_train: int = 64
    n_eval: int = 56
    seed: int = 0
    model: str = "default"
    pooling: str = "auto"
    max_length: int = 128
    memory_gb: float = 4.0
    probes: int = 16
    solvers: tuple[str, ...] = SOLVERS
    lp: ProbeSettings = field(default_factory=ProbeSettings)
    ntk_dtype: str = "float32"
    device: str = field(default="auto", compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.lp, dict):
            object.__setattr__(self, "lp", ProbeSettings(**self.lp))
        if self.state not in STATES and not Path(self.state).is_dir():
            raise ConfigError(
                f"--state must be one of {', '.join(STATES)} or a finished run directory; got {self.state!r}"
            )
        if self.pooling not in POOLING_CHOICES:
            raise ConfigError(f"--pooling must be one of {', '.join(POOLING_CHOICES)}; got {self.pooling!r}")
        if self.state in STATES and not self.task:
            raise ConfigError(f"--task is required with --state {self.state}")
        if self.n_train < 2 or self.n_eval < 1:
            raise ConfigError(f"need --n-train >= 2 and --n-eval >= 1, got {self.n_train} and {self.n_eval}")
        if self.memory_gb <= 0:
            raise ConfigError(f"--memory-gb must be positive, got {self.memory_gb}")
        if self.probes < 0 or self.probes == 1:
            raise ConfigError(f"--probes must be 0 (no estimates) or at least 2, got {self.probes}")
        if self.ntk_dtype not in NTK_DTYPES:
            raise ConfigError(f"--ntk-dtype must be one of {', '.join(NTK_DTYPES)}; got {self.ntk_dtype!r}")
        unknown = set(self.solvers) - set(SOLVERS)
        if unknown:
            raise ConfigError(f"unknown solvers {sorted(unknown)}; expected {', '.join(SOLVERS)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (no ``device``: see the module docstring)."""
        out = asdict(self)
        del out["device"]
        out["solvers"] = list(self.solvers)
        out["lp"] = self.lp.to_dict()
        return out


def _build_state(
    config: NTKConfig, pooling: str, data_dir: str | None, device: torch.device
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(classifier in eval mode on ``device``, tokenizer, task, info) for the requested state (``pooling``:
    resolved)."""
    from dynascope.data import load_task
    from dynascope.data.encode import encode_split, resolve_pair_template
    from dynascope.models.backbone import check_max_length, load_backbone
    from dynascope.models.classifier import Classifier
    from dynascope.models.lora import LoraSettings, apply_lora
    from dynascope.train.evaluate import predict
    from dynascope.train.probe import fit_linear_probe

    info: dict[str, Any] = {}
    if config.state not in STATES:
        from dynascope.train.recipes import load_run_classifier

        clf, tokenizer, run_config = load_run_classifier(config.state)
        clf.to(device)
        task = load_task(config.task or run_config.task, data_dir)
        info.update(run_method=run_config.method, run_seed=run_config.seed, model=run_config.model)
        info["pair_template"] = resolve_pair_template(run_config.pair_template, tokenizer)
        return clf, tokenizer, task, info
    task = load_task(config.task, data_dir)
    backbone, tokenizer = load_backbone(config.model, attn_implementation="eager")
    check_max_length(backbone, config.max_length)
    clf = Classifier(backbone, task.num_labels, pooling=pooling, seed=config.seed).to(device).eval()
    info["head_norm_init"] = clf.head_norm()
    info["pair_template"] = resolve_pair_template("auto", tokenizer)
    if config.state.startswith("lp-"):
        train_enc = encode_split(task.train, tokenizer, config.max_length, info["pair_template"])
        _, phi = predict(clf, train_enc, desc="φ train (LP)")
        init = (clf.head.weight.detach().double().cpu().numpy(), clf.head.bias.detach().double().cpu().numpy())
        probe = fit_linear_probe(phi, train_enc.labels, task.num_labels, config.lp, seed=config.seed, init=init)
        clf.set_head(torch.as_tensor(probe.weight), torch.as_tensor(probe.bias))
        info.update(lp_strength=probe.strength, lp_train_accuracy=probe.train_accuracy, lp_n_train=len(train_enc))
    if config.state.endswith("lora"):
        info["ft_reference"] = copy.deepcopy(clf)
        apply_lora(clf, LoraSettings(), seed=config.seed)
        info["lora"] = LoraSettings().to_dict()
    clf.eval()
    info["head_norm"] = clf.head_norm()
    return clf, tokenizer, task, info


def _sample(
    split: Any, n: int, seed: int, tokenizer: Any, max_length: int, pair_template: str
) -> tuple[dict, np.ndarray, list[int]]:
    """A seeded stratified subset of ``split`` as one padded batch, its labels and indices."""
    from dynascope.data import stratified_subset
    from dynascope.data.encode import collate, encode_split

    idx = stratified_subset(split.labels, n, seed) if n < len(split) else list(range(len(split)))
    enc = encode_split(split.subset(idx), tokenizer, max_length, pair_template)
    return collate(enc, list(range(len(enc)))), np.asarray(enc.labels), idx


def _trace_record(
    model: Any, train: dict, config: NTKConfig, exact_ft: float, ft_reference: torch.nn.Module | None
) -> dict[str, Any]:
    """tr(F) exactly and, with probes, by Hutchinson and Hutch++; for LoRA states, the LoRA-vs-FT trace ratio."""
    from dynascope.ntk.functional import kernel_model
    from dynascope.ntk.lora_scalar import lora_trace_ratio
    from dynascope.ntk.trace import JacobianOperator, hutchinson_trace, hutchpp_trace

    trace: dict[str, Any] = {"exact_ft": exact_ft, "probes": config.probes}
    if config.probes:
        op = JacobianOperator(model, train)
        trace["hutchinson_ft"] = hutchinson_trace(op, config.probes, config.seed).to_dict()
        trace["stderr"] = trace["hutchinson_ft"]["stderr"]
        trace["hutchpp_ft"] = hutchpp_trace(op, max(6, config.probes), config.seed).to_dict()
        trace["hutchinson_feature_kernel"] = hutchinson_trace(
            JacobianOperator(model, train, output="features"), config.probes, config.seed
        ).to_dict()
    if ft_reference is not None:
        trace["lora_vs_ft"] = lora_trace_ratio(kernel_model(ft_reference.eval()), model, train)
    return trace


def run_ntk(config: NTKConfig, out: str | Path, *, data_dir: str | None = None, overwrite: bool = False) -> dict:
    """Compute the NTK run directory (see the module docstring) and return its stats."""
    from dynascope.models.backbone import resolve_pooling
    from dynascope.models.classifier import require_varying_phi
    from dynascope.ntk.checkpoint import CheckpointFolder
    from dynascope.ntk.components import ntk_train_eval
    from dynascope.ntk.functional import batch_features, kernel_model
    from dynascope.ntk.summary import kernel_table
    from dynascope.ntk.tiles import assemble_tiles, compute_tiles, plan_tiles

    started = time.perf_counter()
    device = resolve_device(config.device)
    out = NTK.prepare(out, overwrite=overwrite)
    record = config.to_dict()
    pooling = config.pooling
    if config.state in STATES:  # a run directory brings its own pooling
        pooling = resolve_pooling(config.pooling, config.model)
        if pooling != config.pooling:
            record.update(pooling=pooling, pooling_requested=config.pooling)
    NTK.write_record(out, record, config.seed, describe(device))
    torch.manual_seed(config.seed)
    clf, tokenizer, task, info = _build_state(config, pooling, data_dir, device)
    info["pooling"] = clf.pooling
    dtype = NTK_DTYPES[config.ntk_dtype]
    clf.to(dtype)
    ft_reference = info.pop("ft_reference", None)
    if ft_reference is not None:
        ft_reference.to(dtype)
    template = info["pair_template"]
    train, y_train, train_idx = _sample(task.train, config.n_train, config.seed, tokenizer, config.max_length, template)
    evals, y_eval, eval_idx = _sample(task.test, config.n_eval, config.seed, tokenizer, config.max_length, template)
    train, evals = ({k: v.to(device) for k, v in batch.items()} for batch in (train, evals))
    say(
        f"NTK of {config.state} on {task.name}: {len(y_train)} train × {len(y_eval)} test, C = {task.num_labels}, "
        f"pooling {clf.pooling}"
    )

    model = kernel_model(clf)
    require_varying_phi(batch_features(model, train), clf.pooling)
    blocks = NTK.path(out, "blocks")
    w = world()
    if w.distributed:  # each rank computes its tiles into blocks/; rank 0 assembles them and does the rest
        plan = plan_tiles(model, train, evals, size=w.size, memory_gb=config.memory_gb)
        done = compute_tiles(
            model, train, evals, plan, rank=w.rank, size=w.size, store=CheckpointFolder(blocks), progress=progress
        )
        say(f"rank {w.rank}: {done} of its {len(plan.owned(w.rank, w.size))} tiles computed, the rest resumed")
        computed = gather_objects(done)  # also the barrier: every tile is in blocks/ after it
        if not w.is_main:
            return broadcast_object(None)
        comp, comp_eval = assemble_tiles(model, train, evals, plan, CheckpointFolder(blocks))
        info["tiles"] = {
            "world_size": w.size,
            "tiles": len(plan.tiles),
            "passes": len(plan.groups),
            "computed": computed,
        }
    else:
        comp, comp_eval = ntk_train_eval(
            model, train, evals, memory_gb=config.memory_gb, store=CheckpointFolder(blocks), progress=progress
        )
    with torch.no_grad():
        logits_train = clf(**train).double().cpu().numpy()
    kernel_stats, arrays = kernel_table(
        comp.pre,
        comp.ft,
        comp_eval.pre,
        comp_eval.ft,
        y_train,
        y_eval,
        logits_train,
        solvers=config.solvers,
        precision=model.weight.dtype,
    )
    kernel_stats["blocks"] = {
        block: {
            "parameters": comp.block_sizes[block],
            "frobenius": float(k.norm()),
            "trace": float(torch.einsum("ncnc->", k)),
        }
        for block, k in comp.blocks.items()
    }
    stats = {
        "kind": "ntk",
        "task": task.name,
        "state": config.state,
        "num_labels": task.num_labels,
        "label_names": list(task.label_names),
        "n_train": len(y_train),
        "n_eval": len(y_eval),
        "eval_split": "test",
        "train_indices": train_idx,
        "eval_indices": eval_idx,
        "device": str(device),
        **info,
        **kernel_stats,
        "trace": _trace_record(model, train, config, kernel_stats["ft"]["trace"], ft_reference),
        "seconds": time.perf_counter() - started,
    }
    NTK.write(
        out,
        "kernels",
        {
            "pre": comp.pre,
            "ft": comp.ft,
            "total": comp.total,
            "pre_eval": comp_eval.pre,
            "ft_eval": comp_eval.ft,
            "total_eval": comp_eval.total,
        },
    )
    NTK.write(out, "spectra", arrays)
    NTK.write(out, "stats", stats)
    shutil.rmtree(blocks, ignore_errors=True)
    return broadcast_object(stats) if w.distributed else stats


def format_table(stats: dict[str, Any]) -> str:
    """Rows P / F / P+F shaped like the paper's Table 2: Rank, FN, Acc train/test, FT ratio."""
    lines = [
        f"{stats['task']} · state {stats['state']} · N = {stats['n_train']} train, {stats['n_eval']} test",
        f"{'kernel':<8}{'rank':>7}{'FN':>13}{'Acc train/test':>18}{'FT ratio':>11}",
    ]
    for key, label in (("pre", "P"), ("ft", "F"), ("total", "P+F")):
        row = stats[key]
        acc = (row.get("paper_row_acc_train"), row.get("paper_row_acc_test"))
        acc_text = f"{100 * acc[0]:.2f}/{100 * acc[1]:.2f}" if None not in acc else "–"
        ratio = f"{row['ft_ratio']:.4f}" if key == "ft" else ""
        lines.append(f"{label:<8}{row['rank']:>7}{row['frobenius']:>13.4g}{acc_text:>18}{ratio:>11}")
    lines.append("Acc = the paper's row-wise binary accuracy over (example, class) rows, not multiclass accuracy")
    return "\n".join(lines)
