"""Shared input checks: each rejects a bad input naming the input, what was expected and what was found."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynascope.errors import ConfigError, DataError
from dynascope.validation import check_array, check_choice, check_flat, check_int, check_labels, to_numpy


def test_to_numpy_detaches_tensors() -> None:
    x = torch.ones(2, 3, requires_grad=True)
    out = to_numpy(x * 2)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3) and float(out.sum()) == 12.0
    assert to_numpy([1, 2]).tolist() == [1, 2]


def test_check_array_converts_and_rejects() -> None:
    good = check_array(torch.arange(6, dtype=torch.float32).reshape(2, 3), name="phi", ndim=2)
    assert good.dtype == np.float64 and good.shape == (2, 3) and good[1, 2] == 5.0
    with pytest.raises(DataError, match=r"field 'phi': expected a 2-D array, found shape \(3, 4, 5\)") as info:
        check_array(np.zeros((3, 4, 5)), name="phi", ndim=2)
    assert info.value.field == "phi"
    with pytest.raises(DataError, match=r"field 'x': expected a 1-D array, found shape \(\)"):
        check_array(3.0, name="x", ndim=1)
    bad = np.ones((2, 2))
    bad[0, 1], bad[1, 0] = np.nan, np.inf
    with pytest.raises(DataError, match=r"field 'scores': expected finite values, found 2 NaN or inf"):
        check_array(bad, name="scores", ndim=2)


def test_check_labels_converts_and_rejects() -> None:
    good = check_labels([2, 0, 1], n=3, num_classes=3)
    assert good.dtype == np.int64 and good.tolist() == [2, 0, 1]
    assert check_labels(torch.tensor([1, 1]), n=2).tolist() == [1, 1]
    assert check_labels(np.array([], dtype=np.float64), n=0).shape == (0,)
    with pytest.raises(DataError, match=r"field 'labels': expected a 1-D array of 3 labels, found shape \(2,\)"):
        check_labels([0, 1], n=3)
    with pytest.raises(DataError, match=r"expected a 1-D array of 4 labels, found shape \(2, 2\)"):
        check_labels(np.zeros((2, 2), dtype=int), n=4)
    with pytest.raises(DataError, match="field 'y': expected integer labels, found dtype float64"):
        check_labels([0.0, 1.0], n=2, name="y")
    with pytest.raises(DataError, match=r"expected labels in \[0, 2\), found values in \[0, 2\]"):
        check_labels([0, 2], n=2, num_classes=2)
    with pytest.raises(DataError, match=r"expected labels >= 0, found values in \[-1, 1\]"):
        check_labels([-1, 1], n=2)


def test_check_int_converts_and_rejects() -> None:
    assert check_int(np.int64(3), "n_bins") == 3 and type(check_int(np.int64(3), "n_bins")) is int
    assert check_int(0, "null_dims", minimum=0, maximum=4) == 0
    with pytest.raises(ConfigError, match=r"n_bins: expected an integer >= 1, found 0"):
        check_int(0, "n_bins")
    with pytest.raises(ConfigError, match=r"num_probes: expected an integer >= 2, found 2\.0"):
        check_int(2.0, "num_probes", minimum=2)
    with pytest.raises(ConfigError, match=r"k: expected an integer >= 1, found True"):
        check_int(True, "k")
    with pytest.raises(ConfigError, match=r"null_dims: expected an integer in \[0, 4\], found 5"):
        check_int(5, "null_dims", minimum=0, maximum=4)


def test_check_choice() -> None:
    assert check_choice("rev", ("fwd", "rev"), "mode") == "rev"
    with pytest.raises(ConfigError, match=r"mode: expected one of 'fwd', 'rev', found 'both'"):
        check_choice("both", ("fwd", "rev"), "mode")


def test_check_flat() -> None:
    x = torch.ones(4, requires_grad=True)
    out = check_flat(x)
    assert out.shape == (4,) and not out.requires_grad
    with pytest.raises(DataError, match=r"field 'x0': expected a flat state of shape \(n,\).*found shape \(2, 3\)"):
        check_flat(torch.ones(2, 3), "x0")
    with pytest.raises(DataError, match=r"with n >= 1, found shape \(0,\)"):
        check_flat(torch.ones(0))


def test_check_number_wants_finite_values_in_range() -> None:
    import math

    from dynascope.validation import check_number

    assert check_number(3, "x", minimum=0) == 3.0
    for bad in (math.inf, math.nan, "1", True, None):
        with pytest.raises(ConfigError, match=r"^x: expected a finite number"):
            check_number(bad, "x")
    with pytest.raises(ConfigError, match=r"x: expected a finite number in \(0, inf\), found 0"):
        check_number(0, "x", minimum=0, exclusive_minimum=True)
    with pytest.raises(ConfigError, match=r"in \[0, 1\), found 1"):
        check_number(1, "x", minimum=0, maximum=1, exclusive_maximum=True)


def test_looped_configs_refuse_non_finite_settings() -> None:
    import math

    from dynascope.dynamics.models import ModelConfig
    from dynascope.dynamics.train import TrainConfig

    for field, value in (("lr", math.inf), ("reg_weight", math.nan), ("ema_beta", 1.0), ("grad_clip", 0.0)):
        with pytest.raises(ConfigError, match=f"^{field}: expected"):
            TrainConfig(**{field: value})
    with pytest.raises(ConfigError, match=r"^eta: expected"):
        ModelConfig(eta=math.inf)
