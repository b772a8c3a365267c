"""Several processes on PyTorch's own engine: ``torch.distributed`` launched by ``torchrun``, nothing home-made.

``torchrun --nproc-per-node K -m dynascope <command> ...`` starts K copies of the command; :func:`init_from_env`
joins them into one process group (backend ``gloo`` on a CPU-only machine, ``cpu:gloo,cuda:nccl`` where CUDA is
available, so CPU tensors and GPU tensors both have a backend). Without ``torchrun`` (no ``WORLD_SIZE``, or 1)
nothing is initialised and every helper here is the single-process identity, so a plain run is bit for bit
what it was before this module existed.

What each rank does is decided where the work is (``train.finetune``, ``train.evaluate``, ``pipelines.ntk``):
this module only answers who am I (:func:`world`), splits work (:func:`shard_batch`, :func:`owned`) and moves
small Python objects (:func:`gather_objects`, :func:`broadcast_object`, :func:`barrier`).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from dynascope.errors import ConfigError

TIMEOUT_ENV = "DYNASCOPE_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class World:
    """This process's place among the job's processes: ``rank`` of ``size`` (``local_rank`` on its node)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0, the one that writes run directories and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether there is more than one process."""
        return self.size > 1

    def describe(self) -> dict[str, int]:
        """What ``env.json`` records: the number of processes (and nothing for a single process)."""
        return {"world_size": self.size} if self.distributed else {}


def world() -> World:
    """The current process group (a single process when none is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def env_world_size() -> int:
    """The ``WORLD_SIZE`` ``torchrun`` set (1 without it); a malformed value is a ``ConfigError``."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(text)
    except ValueError:
        raise ConfigError(f"WORLD_SIZE: expected a positive integer, found {text!r}") from None
    if size < 1:
        raise ConfigError(f"WORLD_SIZE: expected a positive integer, found {text!r}")
    return size


def init_from_env() -> World:
    """Join the process group ``torchrun`` describes in the environment (a no-op for one process).

    The collective timeout is ``DYNASCOPE_DIST_TIMEOUT`` seconds (default 1800): a rank waiting on one that died
    gives up after it instead of hanging (``torchrun`` normally stops the others first, on the failure itself).
    """
    if env_world_size() == 1 or (dist.is_available() and dist.is_initialized()):
        return world()
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run without torchrun")
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE is set but {', '.join(missing)} is not: launch several processes with torchrun")
    timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout))
    return world()


def finish() -> None:
    """Leave the process group after a command that succeeded on this rank: wait at a barrier until every rank is
    done with its last collective, then destroy the group, so that no rank tears its connections down while
    another still reads from them (a rank that ended early used to abort at exit now and then). A no-op for one
    process."""
    if world().distributed:
        dist.barrier()
    shutdown()


def shutdown() -> None:
    """Leave the process group if this process joined one (what remains after :func:`finish`, or after a failure,
    where no barrier is awaited: the other ranks may never reach it, and ``torchrun`` stops them)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank arrives (nothing for one process)."""
    if world().distributed:
        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` for one process)."""
    w = world()
    if not w.distributed:
        return [obj]
    out: list[Any] = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not world().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(value: float) -> float:
    """The sum of ``value`` over the ranks (as float64; ``value`` itself for one process)."""
    if not world().distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item())


def check_divisible(batch_size: int, w: World, what: str = "--batch-size") -> int:
    """The per-rank batch ``batch_size / size``; an indivisible global batch is a ``ConfigError``."""
    if batch_size % w.size:
        raise ConfigError(
            f"{what} {batch_size} is the global batch and must be divisible by the {w.size} processes "
            f"(per rank {batch_size / w.size:g}); choose a multiple of {w.size}"
        )
    return batch_size // w.size


def shard_batch(n: int, w: World) -> tuple[np.ndarray, np.ndarray]:
    """This rank's share of a global batch of ``n`` examples: (positions in the batch, weights). Contiguous slices
    in the batch's own order, so every rank walks the same length-bucketed sequence on disjoint examples. A rank
    whose slice is empty (a last batch shorter than the number of ranks) gets the batch's first example with
    weight 0, so that it still takes part in the gradient all-reduce without changing it."""
    part = np.array_split(np.arange(n), w.size)[w.rank]
    if len(part) == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(1)
    return part, np.ones(len(part))


def all_agree(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (``flag`` itself for one process): one decision for all of them."""
    if not world().distributed:
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def owned(items: list[Any], w: World) -> list[Any]:
    """The items this rank owns: every ``size``-th, starting at ``rank`` (round-robin, for balance)."""
    return items[w.rank :: w.size]
