"""Where tensors live and in what precision training runs: one resolver for every ``--device`` and ``--precision``.

``auto`` is CUDA when this machine has it, else the CPU (under ``torchrun``, ``auto`` and ``cuda`` mean the GPU
of the process's local rank); an explicit ``cuda`` / ``cuda:N`` that this machine
cannot honour is a ``ConfigError``, never a silent fallback. Precision ``fp32`` enters no autocast region at all,
so its results are the bits of a run without the option; ``bf16`` and ``fp16`` autocast on the run's device type,
and ``fp16`` scales the loss with a ``torch.amp.GradScaler`` (its gradients would underflow otherwise).
"""

from __future__ import annotations

import contextlib
import re

import torch
from torch import nn

from dynascope.distributed import world
from dynascope.errors import ConfigError

DEVICE_CHOICES = "auto | cpu | cuda | cuda:N"
DEVICE_HELP = f"{DEVICE_CHOICES} (default auto: cuda when available, else cpu)"
PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_DEVICE = re.compile(r"(auto|cpu|cuda)(:(\d+))?")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The ``torch.device`` that ``device`` names on this machine (``auto``: cuda if available, else cpu)."""
    text = str(device)
    match = _DEVICE.fullmatch(text)
    if match is None or (match.group(2) and match.group(1) != "cuda"):
        raise ConfigError(f"device: expected {DEVICE_CHOICES}, found {text!r}")
    if text == "cpu" or (text == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ConfigError(
            f"device {text!r}: CUDA is not available on this machine (torch {torch.__version__}, {build}); "
            "use --device cpu or auto"
        )
    count = torch.cuda.device_count()
    if match.group(3) is None:  # auto / cuda: under torchrun each rank takes the GPU of its local rank
        w = world()
        return torch.device("cuda", w.local_rank % count) if w.distributed else torch.device("cuda")
    if int(match.group(3)) >= count:
        raise ConfigError(f"device {text!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return torch.device(text)


def describe(device: torch.device) -> dict[str, str]:
    """What ``env.json`` records of a run's device: its name and, for CUDA, the GPU's model."""
    out = {"device": str(device)}
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
    return out


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (the CPU for a module without parameters)."""
    first = next(module.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def check_precision(precision: str) -> str:
    """``precision`` if it is one of ``PRECISIONS``; else a ``ConfigError``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: expected one of {', '.join(PRECISIONS)}, found {precision!r}")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The region a training step's forward pass and loss run in: nothing for fp32, else ``torch.autocast``."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A loss scaler enabled for fp16 only (a disabled one passes losses and optimizer steps through unchanged)."""
    return torch.amp.GradScaler(device.type, enabled=check_precision(precision) == "fp16")
