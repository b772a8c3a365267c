"""One training loop for FT, LP-FT, LoRA and LP-LoRA.

AdamW (weight decay 0), linear decay to zero without warm-up, gradient clipping, evaluation on validation after
every epoch, the best epoch (strictly better validation metric; ties keep the earlier) restored at the end.
Batches use dynamic padding with length bucketing. Only parameters with ``requires_grad`` are trained, so LoRA
runs train adapter + head. After each epoch a checkpoint (trainable state, optimiser, schedule, RNG, history,
best state) is written atomically; a rerun with the same checkpoint folder resumes after the last finished
epoch and reaches the same result as an uninterrupted run.

The loop runs on the classifier's device (batches follow the model). ``precision`` bf16 / fp16 runs each training
step's forward pass and loss under ``torch.autocast`` (fp16 with a gradient scaler, checkpointed too); fp32 enters
no autocast region. Validation runs in float32 either way.

Under ``torchrun`` (``dynascope.distributed``) the model is wrapped in ``DistributedDataParallel``: the global
batch stays ``batch_size`` and each rank takes its contiguous slice of every length-bucketed batch (the same order
on every rank, disjoint examples), weighting its summed loss by K/B so that DDP's gradient average is the
single-process batch mean exactly. Validation is sharded and gathered (``train.evaluate.predict``), every rank
selects the same best epoch, rank 0 alone writes the checkpoint (with every rank's RNG state, so a relaunched job
resumes each rank's dropout stream), and a checkpoint from another number of processes is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dynascope.data.encode import Encoded, batch_order, collate
from dynascope.device import autocast, check_precision, grad_scaler, module_device
from dynascope.distributed import all_reduce_sum, check_divisible, gather_objects, shard_batch, world
from dynascope.errors import ConfigError, TrainingError
from dynascope.progress import progress, say
from dynascope.runio import write_torch
from dynascope.train.evaluate import classification_metrics, predict
from dynascope.validation import check_int, check_number

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class FinetuneSettings:
    """Optimisation settings of the FT stage."""

    epochs: int = 10
    lr: float = 5e-5
    batch_size: int = 16
    eval_batch_size: int = 64
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    bucket: bool = True
    select_metric: str = "accuracy"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            check_int(getattr(self, name), name)
        check_number(self.lr, "lr", minimum=0.0, exclusive_minimum=True)
        check_number(self.max_grad_norm, "max_grad_norm", minimum=0.0, exclusive_minimum=True)
        check_number(self.weight_decay, "weight_decay", minimum=0.0)
        check_precision(self.precision)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class FinetuneResult:
    """What the loop did: per-epoch history, the restored best epoch and ‖V‖_F after each epoch."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    head_norms: list[float] = field(default_factory=list)
    resumed_after: int = 0


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _snapshot(params: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in params.items()}


def _diverged(what: str, epoch: int, ckpt_path: Path | None) -> None:
    """Stop a run that went non-finite, saying what is kept (the checkpoint of the last finished epoch)."""
    kept = (
        f"the checkpoint after epoch {epoch - 1} is kept in {ckpt_path}"
        if ckpt_path is not None and ckpt_path.exists()
        else "nothing was checkpointed yet"
    )
    raise TrainingError(f"epoch {epoch}: {what}; training stopped ({kept}); try a smaller --lr")


def finetune(
    clf: nn.Module,
    train: Encoded,
    val: Encoded,
    settings: FinetuneSettings,
    *,
    seed: int,
    val_metrics: tuple[str, ...] = (),
    checkpoint_dir: str | Path | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> FinetuneResult:
    """Train ``clf`` in place and restore its best epoch; see the module docstring."""
    params = _trainable(clf)
    if not params:
        raise ConfigError("nothing to train: no parameter requires grad")
    if settings.select_metric != "accuracy" and settings.select_metric not in val_metrics:
        val_metrics = (*val_metrics, settings.select_metric)
    steps_per_epoch = -(-len(train) // settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    optimizer = torch.optim.AdamW(
        list(params.values()),
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total_steps))
    device = module_device(clf)
    scaler = grad_scaler(device, settings.precision)
    w = world()
    model: nn.Module = clf
    if w.distributed:
        check_divisible(settings.batch_size, w)
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(clf, device_ids=[device] if device.type == "cuda" else None)
    result = FinetuneResult()
    best_score = -np.inf
    best_state = _snapshot(params)
    torch.manual_seed(seed + 7919 * w.rank)  # rank 0 draws a single process's dropout masks; the others their own
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    start_epoch = 1
    if ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=False, map_location=device)
        if state["settings"] != settings.to_dict() or state["seed"] != seed:
            raise ConfigError(
                f"{ckpt_path} was written with other settings or seed; remove it or use another --out"
            )
        if state.get("world_size", 1) != w.size:
            raise ConfigError(
                f"{ckpt_path} was written by {state.get('world_size', 1)} process(es), this job has {w.size}: "
                "resume it with as many, or pass --overwrite to start again"
            )
        with torch.no_grad():
            for name, value in state["params"].items():
                params[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state.get("scaler", {}))
        rng = state["rng_ranks"][w.rank] if w.distributed else state
        torch.set_rng_state(rng["rng"].cpu())
        if "cuda_rng" in rng and device.type == "cuda":  # dropout masks on the GPU come from its generator
            torch.cuda.set_rng_state(rng["cuda_rng"].cpu(), device)
        result = FinetuneResult(**state["result"])
        best_score, best_state = state["best_score"], state["best_state"]
        start_epoch = result.resumed_after = len(result.history) + 1
        say(f"resuming from {ckpt_path} after epoch {start_epoch - 1}")
    clf.train()
    for epoch in range(start_epoch, settings.epochs + 1):
        started = time.perf_counter()
        order = batch_order(
            train, settings.batch_size, shuffle=True, seed=seed * 1000 + epoch, bucket=settings.bucket
        )
        losses = []
        for idx in progress(order, desc=f"epoch {epoch}/{settings.epochs}"):
            weight = None
            local = idx
            if w.distributed:
                positions, weight = shard_batch(len(idx), w)
                local = idx[positions]
            batch = {k: v.to(device) for k, v in collate(train, local).items()}
            labels = torch.as_tensor(train.labels[local]).to(device)
            with autocast(device, settings.precision):
                if weight is None:
                    loss = nn.functional.cross_entropy(model(**batch), labels)
                else:  # Σ_local CE · K/B: DDP's mean over the K ranks is the global batch's mean CE
                    per_example = nn.functional.cross_entropy(model(**batch), labels, reduction="none")
                    local_sum = (per_example * torch.as_tensor(weight, device=device)).sum()
                    loss = local_sum * (w.size / len(idx))
            if not torch.isfinite(loss):
                _diverged(f"the training loss is {float(loss)}", epoch, ckpt_path)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip the true gradients (a no-op unless fp16)
            torch.nn.utils.clip_grad_norm_(list(params.values()), settings.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            losses.append(float(loss.detach()) * len(idx) if weight is None else float(local_sum.detach()))
        logits, _ = predict(clf, val, settings.eval_batch_size, desc="validate")
        clf.train()
        metrics = classification_metrics(logits, val.labels, tuple(m for m in val_metrics if m != "accuracy"))
        score = metrics[settings.select_metric]
        norm = float(torch.linalg.vector_norm(clf.head.weight.detach().double()))
        broken = [name for name, p in params.items() if not torch.isfinite(p).all()]
        if broken:
            _diverged(f"{len(broken)} parameter tensors are not finite (first: {broken[0]})", epoch, ckpt_path)
        row = {
            "epoch": epoch,
            "train_loss": all_reduce_sum(sum(losses)) / len(train),
            **{f"val_{k}": v for k, v in metrics.items() if k != "n"},
            "head_norm": norm,
            "seconds": time.perf_counter() - started,
        }
        result.history.append(row)
        result.head_norms.append(norm)
        if score > best_score:
            best_score, best_state, result.best_epoch = score, _snapshot(params), epoch
        say(
            f"epoch {epoch}: loss {row['train_loss']:.4f}  val {settings.select_metric} {score:.4f}  ‖V‖ {norm:.3f}"
        )
        if ckpt_path is not None:
            rng = {
                "rng": torch.get_rng_state(),
                **({"cuda_rng": torch.cuda.get_rng_state(device).cpu()} if device.type == "cuda" else {}),
            }
            ranks = gather_objects(rng) if w.distributed else None
            if w.is_main:
                write_torch(
                    ckpt_path,
                    {
                        "settings": settings.to_dict(),
                        "seed": seed,
                        "params": _snapshot(params),
                        "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(),
                        **rng,
                        **({"world_size": w.size, "rng_ranks": ranks} if w.distributed else {}),
                        "scaler": scaler.state_dict(),
                        "result": asdict(result),
                        "best_score": best_score,
                        "best_state": best_state,
                    },
                )
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    with torch.no_grad():
        for name, value in best_state.items():
            params[name].copy_(value)
    clf.eval()
    return result
