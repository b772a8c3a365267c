"""Input checks shared by the library, in the style of ``sklearn.utils.validation``.

Each function checks one input and returns it converted (float64 / int64 numpy arrays, a plain ``int``, a
detached tensor), or raises with a message that names the input, what was expected and what was found.
Malformed arrays raise ``DataError`` (with ``field`` set to the input's name); out-of-range settings raise
``ConfigError``. Pure: no files, no printing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from dynascope.errors import ConfigError, DataError

if TYPE_CHECKING:
    import torch


def to_numpy(x: Any) -> np.ndarray:
    """``x`` as a numpy array; a torch tensor is detached and moved to the CPU first."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def check_array(x: Any, *, name: str, ndim: int) -> NDArray[np.float64]:
    """``x`` as a float64 array with ``ndim`` dimensions and finite values."""
    arr = np.asarray(to_numpy(x), dtype=np.float64)
    if arr.ndim != ndim:
        raise DataError(f"expected a {ndim}-D array, found shape {arr.shape}", field=name)
    if not np.all(np.isfinite(arr)):
        raise DataError(f"expected finite values, found {int(np.sum(~np.isfinite(arr)))} NaN or inf", field=name)
    return arr


def check_labels(y: Any, *, n: int, num_classes: int | None = None, name: str = "labels") -> NDArray[np.int64]:
    """``y`` as a 1-D int64 array of ``n`` class indices, each in ``[0, num_classes)`` when that is given."""
    arr = to_numpy(y)
    if arr.shape != (n,):
        raise DataError(f"expected a 1-D array of {n} labels, found shape {arr.shape}", field=name)
    if n == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"expected integer labels, found dtype {arr.dtype}", field=name)
    if arr.min() < 0 or (num_classes is not None and arr.max() >= num_classes):
        wanted = "labels >= 0" if num_classes is None else f"labels in [0, {num_classes})"
        raise DataError(f"expected {wanted}, found values in [{arr.min()}, {arr.max()}]", field=name)
    return arr.astype(np.int64)


def check_int(value: Any, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an ``int`` (Python or numpy integer, not bool) in ``[minimum, maximum]``."""
    is_int = isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)
    if not is_int or value < minimum or (maximum is not None and value > maximum):
        wanted = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(f"{name}: expected an integer {wanted}, found {value!r}")
    return int(value)


def check_choice(value: Any, choices: Sequence[str], name: str) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{name}: expected one of {listed}, found {value!r}")
    return value


def check_flat(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """``x`` detached, if it is a flat state vector of shape (n,) with n >= 1."""
    if x.ndim != 1 or x.numel() == 0:
        raise DataError(f"expected a flat state of shape (n,) with n >= 1, found shape {tuple(x.shape)}", field=name)
    return x.detach()


MAX_SEED = 2**32 - 1
"""Seeds are drawn into numpy and scikit-learn generators, which take [0, 2³² − 1]."""


def check_number(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
) -> float:
    """``value`` as a finite ``float`` (a Python or numpy number, not bool) within the given bounds."""
    is_number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)
    low = "" if minimum is None else ("(" if exclusive_minimum else "[") + f"{minimum:g}"
    high = "" if maximum is None else f"{maximum:g}" + (")" if exclusive_maximum else "]")
    wanted = "a finite number" + (f" in {low or '(-inf'}, {high or 'inf)'}" if low or high else "")
    if not is_number or not np.isfinite(value):
        raise ConfigError(f"{name}: expected {wanted}, found {value!r}")
    x = float(value)
    too_low = minimum is not None and (x <= minimum if exclusive_minimum else x < minimum)
    too_high = maximum is not None and (x >= maximum if exclusive_maximum else x > maximum)
    if too_low or too_high:
        raise ConfigError(f"{name}: expected {wanted}, found {value!r}")
    return x


def check_seed(value: Any, name: str = "seed") -> int:
    """``value`` as a seed: an integer in [0, 2³² − 1]."""
    return check_int(value, name, minimum=0, maximum=MAX_SEED)


def read_input_bytes(path: str | Path, what: str = "file") -> bytes:
    """The bytes of an input file, or a one-line ``DataError`` naming it: missing, unreadable (a folder, a denied
    permission) or a name the system cannot look up (a NUL in it). ``what`` names the file in the message."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what} not found", path=path) from None
    except OSError as exc:
        raise DataError(f"cannot read {what}: {exc.strerror or exc}", path=path) from None
    except ValueError as exc:  # a NUL in the path
        raise DataError(f"cannot read {what}: {exc}", path=path) from None
