"""Training and evaluation of the looped SA models on Sudoku (paper note §5.1, AKOrN's recipe).

Loss: cross-entropy over all 81 cells at the last of ``loop_steps`` steps, plus λ·regularizer. Adam,
gradient norm clipped to 1.0, EMA of weights (β = 0.995, updated every 10 steps after step 100; before
that the EMA copies the weights), evaluation with the EMA model. Board accuracy is read out at every T of
``eval_steps`` from one trajectory per board (same initial noise for every T), on easy test (ID) and hard
test (OOD).

Runs are ``runio.LOOPED`` directories: ``config.json``, ``env.json``, ``metrics.json`` (written last: its
presence marks a finished run), ``model.safetensors`` (the EMA weights, the evaluated model).
``checkpoint.pt`` is written atomically after every epoch; rerunning into the same directory resumes from
it. Data order and initial noise of epoch e come from a generator seeded by (seed, e), so a resumed run
reproduces the weights of an uninterrupted one exactly (same device and threads). ``device`` is where the run
computes (``dynascope.device.resolve_device``: ``auto``, ``cpu``, ``cuda[:N]``, never a silent fallback); it is
not part of config.json (a resumed run may move) and env.json records the resolved one. ``precision`` bf16 /
fp16 autocasts each training step's forward pass and cross-entropy (fp16 with a gradient scaler; the weight
regularizer stays float32); fp32 enters no autocast region; evaluation runs in float32. Steps with a non-finite
loss are skipped and counted (un-normalised ItrSA can blow up on a few boards and recover); an epoch with no
finite step, or a non-finite parameter after an epoch, stops the run with a ``TrainingError`` and keeps the
checkpoint of the previous epoch.

Under ``torchrun`` the model is wrapped in ``DistributedDataParallel``: the global batch stays ``batch_size``, each
rank takes its contiguous slice of every batch of the shared epoch order, the initial noise is drawn for the whole
global batch on every rank (so each board gets the noise a single process would give it) and sliced, the local
cross-entropy is weighted by K·n_local/B so that DDP's average is the global batch mean, and a step is skipped on
every rank when its loss is non-finite on any. Rank 0 writes the checkpoint and the run; evaluation and the
learning curve run on every rank alike (the EMA weights are the same everywhere).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from dynascope.device import autocast, check_precision, describe, grad_scaler, resolve_device
from dynascope.distributed import all_agree, all_reduce_sum, check_divisible, shard_batch, world
from dynascope.dynamics.models import LoopedSA, ModelConfig, build_model
from dynascope.dynamics.regularizers import REGULARIZERS, regularizer
from dynascope.errors import ConfigError, DataError, TrainingError
from dynascope.hooks import Log, Progress, no_log, silent
from dynascope.runio import LOOPED
from dynascope.validation import check_number, check_seed


class Boards(Protocol):
    """Any split with int arrays ``puzzles`` [N, 81] (0 = blank) and ``solutions`` [N, 81] (1–9)."""

    puzzles: np.ndarray
    solutions: np.ndarray


LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe; ``n_train``/``n_eval`` = 0 use every board of the split (else the first n). ``device`` is
    left out of equality and of ``to_dict`` (see the module docstring). ``curve_every`` > 0 records the learning
    curve: every that many optimizer steps, the EMA model's board and blank-cell accuracy at the training T on the
    first ``curve_boards`` ID test boards (it reads the model only, so training is the same with or without it).
    The learning rate warms up linearly over ``warmup_steps`` and then stays at ``lr`` (``lr_schedule`` constant,
    the paper's recipe) or follows a cosine down to 0 at the last step (``cosine``); see ``learning_rate``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 100
    batch_size: int = 100
    lr: float = 1e-3
    loop_steps: int = 16
    eval_steps: tuple[int, ...] = (8, 16, 32, 64, 128)
    regularizer: str = "none"
    reg_weight: float = 0.0
    seed: int = 0
    grad_clip: float = 1.0
    ema_beta: float = 0.995
    ema_every: int = 10
    ema_start: int = 100
    n_train: int = 0
    n_eval: int = 0
    eval_batch: int = 500
    precision: str = "fp32"
    curve_every: int = 0
    curve_boards: int = 200
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    device: str = field(default="auto", compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", ModelConfig(**self.model))
        object.__setattr__(self, "eval_steps", tuple(int(t) for t in self.eval_steps))
        for name in ("epochs", "batch_size", "loop_steps", "ema_every", "eval_batch", "curve_boards"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("n_train", "n_eval", "ema_start", "seed", "curve_every", "warmup_steps"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        check_seed(self.seed)
        if not self.eval_steps or min(self.eval_steps) < 1:
            raise ConfigError(f"eval_steps must be positive loop counts, got {self.eval_steps!r}")
        check_number(self.lr, "lr", minimum=0.0, exclusive_minimum=True)
        check_number(self.ema_beta, "ema_beta", minimum=0.0, maximum=1.0, exclusive_maximum=True)
        check_number(self.grad_clip, "grad_clip", minimum=0.0, exclusive_minimum=True)
        if self.regularizer not in REGULARIZERS:
            raise ConfigError(f"regularizer must be one of {REGULARIZERS}, got {self.regularizer!r}")
        check_number(self.reg_weight, "reg_weight", minimum=0.0)
        if self.regularizer in ("e_single", "e_multi") and self.model.model not in ("itrsa", "akorn"):
            raise ConfigError(f"{self.regularizer} needs model itrsa or akorn, got {self.model.model!r}")
        if self.regularizer == "e_single" and self.model.heads != 1:
            raise ConfigError(f"e_single needs heads=1, got heads={self.model.heads}")
        if self.regularizer == "e_multi" and not self.model.orthogonal_vo:
            raise ConfigError("e_multi needs orthogonal W^V, W^O: set model.orthogonal_vo=True")
        check_precision(self.precision)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for config.json), without ``device``."""
        out = asdict(self)
        del out["device"]
        out["eval_steps"] = list(self.eval_steps)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict`` (a ``device`` recorded by older versions is read as the device setting)."""
        return cls(**data)


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (1-based) out of ``total_steps``: ``lr · step / warmup_steps``
    during the warm-up, then ``lr`` (constant) or ``lr · (1 + cos(π·k / K)) / 2`` for the k-th of the K steps after
    it (cosine: the first is at ``lr``, the last just above 0). A pure function of the step, so a resumed run
    follows the same schedule without storing a scheduler."""
    if step <= config.warmup_steps:
        return config.lr * step / config.warmup_steps
    if config.lr_schedule == "cosine":
        after = max(1, total_steps - config.warmup_steps)
        k = min(step - config.warmup_steps - 1, after - 1)
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * k / after))
    return config.lr


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of epoch ``epoch``: independent of whether earlier epochs ran in this process."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _as_tensors(split: Boards, limit: int, name: str) -> tuple[Tensor, Tensor]:
    puzzles = torch.as_tensor(np.asarray(split.puzzles), dtype=torch.long)
    solutions = torch.as_tensor(np.asarray(split.solutions), dtype=torch.long)
    if puzzles.ndim != 2 or puzzles.shape[1] != 81 or puzzles.shape != solutions.shape:
        raise DataError(
            f"expected puzzles and solutions of shape [N, 81]; found {tuple(puzzles.shape)} and "
            f"{tuple(solutions.shape)}",
            field=name,
        )
    if len(puzzles) == 0:
        raise DataError("split is empty", field=name)
    if limit:
        puzzles, solutions = puzzles[:limit], solutions[:limit]
    return puzzles, solutions


def board_and_cell_accuracy(logits: Tensor, puzzles: Tensor, solutions: Tensor) -> tuple[float, float]:
    """Board accuracy (every blank correct) and blank-cell accuracy, via the Sudoku module's metrics."""
    from dynascope.dynamics.sudoku_metrics import board_accuracy, cell_accuracy

    pred = (logits.argmax(-1) + 1).cpu().numpy().astype(np.int8)
    sol, puz = solutions.cpu().numpy().astype(np.int8), puzzles.cpu().numpy().astype(np.int8)
    return float(board_accuracy(pred, sol, puz)), float(cell_accuracy(pred, sol, puz))


@torch.no_grad()
def evaluate(
    model: LoopedSA,
    puzzles: Tensor,
    solutions: Tensor,
    steps: Sequence[int],
    batch: int = 500,
    seed: int = 0,
) -> dict[str, dict[int, float]]:
    """Board and cell accuracy at every T in ``steps``, reading out one trajectory per board."""
    model.eval()
    device = next(model.parameters()).device
    grid = sorted(set(int(t) for t in steps))
    gen = torch.Generator().manual_seed(seed)
    logits: dict[int, list[Tensor]] = {t: [] for t in grid}
    for start in range(0, len(puzzles), batch):
        pz = puzzles[start : start + batch].to(device)
        c = model.conditioning(pz)
        x = model.init_state(pz, gen)
        for t in range(1, grid[-1] + 1):
            x = model.step(x, c)
            if t in logits:
                logits[t].append(model.readout(x).cpu())
    board: dict[int, float] = {}
    cell: dict[int, float] = {}
    for t in grid:
        board[t], cell[t] = board_and_cell_accuracy(torch.cat(logits[t]), puzzles, solutions)
    return {"board": board, "cell": cell}


def _ema_update(ema: LoopedSA, model: LoopedSA, step: int, config: TrainConfig) -> None:
    """Copy the weights up to ``ema_start``; afterwards blend every ``ema_every`` steps with β."""
    with torch.no_grad():
        if step <= config.ema_start:
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.copy_(pm)
        elif step % config.ema_every == 0:
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1.0 - config.ema_beta)


def _model_summary(model: LoopedSA) -> dict[str, float]:
    """Learned scalars worth reporting: η, max|γ|, ω (AKOrN)."""
    out = {"eta": float(model.eta.detach()), "gamma_max": model.norm.gamma_max()}
    omega = getattr(model, "omega", None)
    if omega is not None:
        out["omega"] = float(omega.omega().detach())
    return out




def _curve_point(ema: LoopedSA, puzzles: Tensor, solutions: Tensor, step: int, config: TrainConfig) -> dict:
    """One learning-curve record: the EMA model's board and blank-cell accuracy at the training T."""
    res = evaluate(ema, puzzles, solutions, (config.loop_steps,), config.eval_batch, seed=config.seed + 1)
    t = config.loop_steps
    return {"step": step, "board_accuracy": res["board"][t], "cell_accuracy": res["cell"][t]}


def _check_finite(model: LoopedSA, epoch: int, batches: int, ckpt_path: Path) -> None:
    """Stop a run whose epoch took no finite step, or whose parameters went non-finite; the last checkpoint
    (of the previous epoch, if any) is kept as it was."""
    kept = f"the checkpoint after epoch {epoch - 1} is kept" if ckpt_path.exists() else "nothing was checkpointed yet"
    if batches == 0:
        raise TrainingError(
            f"epoch {epoch}: every step had a non-finite loss; training stopped ({kept}); try a smaller --lr"
        )
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise TrainingError(
            f"epoch {epoch}: parameter {bad[0]} is non-finite ({len(bad)} in all); training stopped ({kept}); "
            "try a smaller --lr"
        )

def train_run(
    config: TrainConfig,
    train: Boards,
    id_test: Boards,
    ood_test: Boards,
    out: str | Path,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    progress: Progress = silent,
    log: Log = no_log,
) -> dict[str, Any]:
    """Train ``config`` on ``train``, evaluate the EMA model on ID/OOD test across T; returns metrics.

    ``extra`` is stored in config.json beside the recipe (e.g. where the data came from). ``on_epoch(epoch,
    loss)`` is called after each epoch's checkpoint is written; ``progress`` wraps each epoch's batches and
    ``log`` receives one line per epoch.
    """
    device = resolve_device(config.device)
    out = LOOPED.prepare(out, overwrite)
    record = {"train": config.to_dict(), **(extra or {})}
    ckpt_path = LOOPED.path(out, "checkpoint")
    if overwrite and world().is_main:
        LOOPED.path(out, "analysis").unlink(missing_ok=True)  # it analysed the model being replaced
    LOOPED.write_record(out, record, config.seed, describe(device))  # refuses to resume another config's checkpoint
    puzzles, solutions = _as_tensors(train, config.n_train, "train")
    torch.manual_seed(config.seed)
    model = build_model(config.model).to(device).fused_attention()  # the EMA copy inherits it; analyses do not
    ema = copy.deepcopy(model)
    w = world()
    forward: torch.nn.Module = model
    if w.distributed:
        check_divisible(config.batch_size, w)
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = grad_scaler(device, config.precision)
    losses: list[float] = []
    regs: list[float] = []
    seconds: list[float] = []
    step, start_epoch, skipped = 0, 0, 0
    curve: list[dict[str, float]] = []
    curve_pz, curve_sol = _as_tensors(id_test, config.curve_boards, "id")
    total_steps = config.epochs * math.ceil(len(puzzles) / config.batch_size)
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state.get("scaler", {}))
        step, start_epoch, skipped = int(state["step"]), int(state["epoch"]), int(state["skipped"])
        losses, regs, seconds = list(state["train_loss"]), list(state["train_reg"]), list(state["epoch_seconds"])
        curve = list(state.get("learning_curve", []))
        log(f"resuming {out} after epoch {start_epoch}")

    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        model.train()
        gen = _epoch_generator(config.seed, epoch)
        order = torch.randperm(len(puzzles), generator=gen)
        # running sums stay on the device in float64 (the bits of summing the float32 values in Python floats)
        # and are read once per epoch: no host sync per step beyond the finiteness check
        total = torch.zeros((), dtype=torch.float64, device=device)
        total_reg = torch.zeros((), dtype=torch.float64, device=device)
        batches = 0
        for start in progress(range(0, len(order), config.batch_size), desc=f"epoch {epoch + 1}/{config.epochs}"):
            idx = order[start : start + config.batch_size]
            if w.distributed:
                width = config.model.width
                noise = torch.randn((len(idx), 81, width), generator=gen, dtype=torch.float32, device="cpu")
                positions, weight = shard_batch(len(idx), w)
                local = idx[torch.as_tensor(positions)]
                pz, sol = puzzles[local].to(device), solutions[local].to(device)
                with autocast(device, config.precision):
                    logits = forward(pz, config.loop_steps, noise=noise[torch.as_tensor(positions)])
                    per_board = torch.nn.functional.cross_entropy(
                        logits.reshape(-1, 9), (sol - 1).reshape(-1), reduction="none"
                    ).reshape(len(local), 81).mean(dim=1)
                    ce_local = (per_board * torch.as_tensor(weight, device=device, dtype=per_board.dtype)).sum()
                    ce = ce_local * (w.size / len(idx))  # DDP's mean over ranks: the global batch's mean
            else:
                pz, sol = puzzles[idx].to(device), solutions[idx].to(device)
                with autocast(device, config.precision):
                    logits = model(pz, config.loop_steps, generator=gen)
                    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 9), (sol - 1).reshape(-1))
            reg = regularizer(model, config.regularizer) if config.reg_weight > 0 else ce.new_zeros(())
            loss = ce + config.reg_weight * reg
            step += 1
            finite = bool(torch.isfinite(loss))
            if not (all_agree(finite) if w.distributed else finite):
                skipped += 1
                continue
            for group in opt.param_groups:
                group["lr"] = learning_rate(config, step, total_steps)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)  # clip the true gradients (a no-op unless fp16)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(opt)
            scaler.update()
            _ema_update(ema, model, step, config)
            logged = ce if not w.distributed else ce_local / len(idx)  # summed over ranks below
            total += logged.detach().double()
            total_reg += reg.detach().double()
            batches += 1
            if config.curve_every and step % config.curve_every == 0:
                curve.append(_curve_point(ema, curve_pz, curve_sol, step, config))
        _check_finite(model, epoch + 1, batches, ckpt_path)
        total_ce = all_reduce_sum(float(total)) if w.distributed else float(total)
        losses.append(total_ce / batches if batches else float("nan"))
        regs.append(float(total_reg) / batches if batches else float("nan"))
        seconds.append(time.perf_counter() - t0)
        LOOPED.write(
            out,
            "checkpoint",
            {
                "epoch": epoch + 1,
                "step": step,
                "skipped": skipped,
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(),
                "learning_curve": curve,
                "train_loss": losses,
                "train_reg": regs,
                "epoch_seconds": seconds,
            },
        )
        log(f"epoch {epoch + 1}: loss {losses[-1]:.4f} ({seconds[-1]:.1f} s)")
        if on_epoch is not None:
            on_epoch(epoch + 1, losses[-1])

    t0 = time.perf_counter()
    accuracy: dict[str, dict[int, float]] = {}
    cells: dict[str, dict[int, float]] = {}
    for name, split in (("id", id_test), ("ood", ood_test)):
        pz, sol = _as_tensors(split, config.n_eval, name)
        res = evaluate(ema, pz, sol, config.eval_steps, config.eval_batch, seed=config.seed + 1)
        accuracy[name], cells[name] = res["board"], res["cell"]
    metrics = {
        "board_accuracy": accuracy,
        "cell_accuracy": cells,
        "train_loss": losses,
        "train_reg": regs,
        "learning_curve": curve,
        "epoch_seconds": seconds,
        "eval_seconds": time.perf_counter() - t0,
        "optimizer_steps": step,
        "skipped_nonfinite_steps": skipped,
        "n_train": len(puzzles),
        "device": str(device),
        **w.describe(),
        **_model_summary(ema),
    }
    LOOPED.write(out, "model", ema.state_dict())
    LOOPED.write(out, "metrics", metrics)
    if w.is_main:
        ckpt_path.unlink(missing_ok=True)
    return metrics


def load_run(
    run_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[TrainConfig, LoopedSA, dict[str, Any]]:
    """Rebuild a finished run's (EMA) model on ``device``: returns (recipe, model in eval mode, full config.json)."""
    run_dir = Path(run_dir)
    for role in ("config", "model"):
        if not LOOPED.has(run_dir, role):
            name = LOOPED.path(run_dir, role).name
            raise DataError(f"not a finished dynamics run: {name} is missing", path=run_dir)
    record = LOOPED.load(run_dir, "config")
    config = TrainConfig.from_dict(record["train"])
    model = build_model(config.model)
    model.load_state_dict(LOOPED.load(run_dir, "model"))
    return config, model.to(device).eval(), record
