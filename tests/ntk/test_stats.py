"""Kernel statistics on hand-made kernels with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynascope.errors import ConfigError
from dynascope.ntk.components import as_matrix
from dynascope.ntk.stats import (
    block_nuclear_norms,
    first_step_residuals,
    frobenius_norm,
    ft_ratio,
    kernel_rank,
    normalized_spectrum,
    summarize,
)


def pre_like(phi: torch.Tensor, c: int, bias: bool = True) -> torch.Tensor:
    gram = phi @ phi.T + (1.0 if bias else 0.0)
    return gram[:, None, :, None] * torch.eye(c, dtype=torch.float64)[None, :, None, :]


def test_rank_of_pre_component_is_c_times_feature_rank() -> None:
    gen = torch.Generator().manual_seed(0)
    phi = torch.randn(6, 2, dtype=torch.float64, generator=gen)  # 6 examples in 2-d: ΦΦᵀ + 1 has rank 3
    assert kernel_rank(pre_like(phi, 3)) == 9
    assert kernel_rank(pre_like(phi, 3, bias=False)) == 6
    assert kernel_rank(torch.zeros(2, 3, 2, 3, dtype=torch.float64)) == 0


def test_rank_of_zero_sum_head_is_n_times_c_minus_one() -> None:
    gen = torch.Generator().manual_seed(1)
    n, c, p = 5, 3, 40
    jac = torch.randn(n, c, p, dtype=torch.float64, generator=gen)
    jac = jac - jac.mean(dim=1, keepdim=True)  # rows of V summing to zero: Σ_c g_c ≡ 0
    f = torch.einsum("ncp,mdp->ncmd", jac, jac)
    assert kernel_rank(f) == n * (c - 1)


def test_norms_and_spectrum() -> None:
    k = torch.zeros(2, 2, 2, 2, dtype=torch.float64)
    k[0, 0, 0, 0], k[1, 1, 1, 1], k[0, 1, 0, 1] = 4.0, 2.0, 1.0
    assert math.isclose(frobenius_norm(k), math.sqrt(21))
    assert normalized_spectrum(k).tolist() == [1.0, 0.5, 0.25, 0.0]
    summary = summarize(k)
    assert (summary.rank, summary.trace) == (3, 7.0)


def test_block_nuclear_norms_grouped_by_class() -> None:
    gen = torch.Generator().manual_seed(2)
    k = torch.randn(4, 2, 4, 2, dtype=torch.float64, generator=gen)
    labels = np.array([1, 0, 1, 0])
    matrix, sorted_labels, order = block_nuclear_norms(k, labels)
    assert sorted_labels.tolist() == [0, 0, 1, 1]
    assert order.tolist() == [1, 3, 0, 2]
    expected = np.linalg.svd(k[3, :, 0, :].numpy(), compute_uv=False).sum()
    assert math.isclose(matrix[1, 2], expected)
    with pytest.raises(ConfigError):
        block_nuclear_norms(k, labels[:3])


def test_ft_ratio() -> None:
    gen = torch.Generator().manual_seed(3)
    jac = torch.randn(4, 3, 10, dtype=torch.float64, generator=gen)
    f = torch.einsum("ncp,mdp->ncmd", jac, jac)
    logits = torch.randn(4, 3, dtype=torch.float64, generator=gen)
    delta = first_step_residuals(logits, np.array([0, 2, 1, 1]))
    assert torch.allclose(delta.sum(dim=1), torch.zeros(4, dtype=torch.float64), atol=1e-12)
    assert math.isclose(ft_ratio(torch.zeros_like(f), f, delta), 1.0)
    pre = pre_like(torch.randn(4, 5, dtype=torch.float64, generator=gen), 3)
    assert ft_ratio(pre, torch.zeros_like(pre), delta) == 0.0
    mixed = ft_ratio(pre, f, delta)
    assert mixed > 0.0
    direct = np.mean(
        [
            np.linalg.norm(np.einsum("cid,id->c", f[x].numpy(), delta.numpy()))
            / np.linalg.norm(np.einsum("cid,id->c", (pre + f)[x].numpy(), delta.numpy()))
            for x in range(4)
        ]
    )
    assert math.isclose(mixed, direct, rel_tol=1e-12)


def test_kernel_table_on_separable_toy_kernels() -> None:
    from dynascope.ntk.summary import kernel_table

    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(3), 4)
    y_eval = np.array([0, 1, 2])
    centres = 4.0 * np.eye(3, 6)
    phi = torch.tensor(centres[y] + 0.2 * rng.standard_normal((12, 6)))
    phi_eval = torch.tensor(centres[y_eval] + 0.2 * rng.standard_normal((3, 6)))
    gram = phi @ phi.T + 1.0
    eye = torch.eye(3, dtype=torch.float64)
    pre = gram[:, None, :, None] * eye[None, :, None, :]
    pre_eval = (phi_eval @ phi.T + 1.0)[:, None, :, None] * eye[None, :, None, :]
    jac = torch.tensor(rng.standard_normal((12, 3, 20)))
    jac_eval = torch.tensor(rng.standard_normal((3, 3, 20)))
    ft = 0.01 * torch.einsum("ncp,mdp->ncmd", jac, jac)
    ft_eval = 0.01 * torch.einsum("ncp,mdp->ncmd", jac_eval, jac)
    logits = rng.standard_normal((12, 3))
    stats, arrays = kernel_table(pre, ft, pre_eval, ft_eval, y, y_eval, logits, solvers=("ridge", "logistic"))
    assert stats["pre"]["rank"] == 3 * 7
    assert (stats["pre"]["ridge_acc_train"], stats["pre"]["ridge_acc_test"]) == (1.0, 1.0)
    assert stats["total"]["kernel_logistic_acc_test"] == 1.0
    assert "paper_row_acc_train" not in stats["total"]
    assert 0 < stats["ft"]["ft_ratio"] == stats["ft_ratio"] < 0.5
    assert math.isclose(stats["total"]["trace"], stats["pre"]["trace"] + stats["ft"]["trace"])
    assert arrays["labels_sorted"].tolist() == sorted(y.tolist())
    assert arrays["total_sv"][0] == 1.0 and arrays["pre_nuclear"].shape == (12, 12)


def test_rank_tolerance_follows_jacobian_precision() -> None:
    from dynascope.ntk.stats import default_rtol

    gen = torch.Generator().manual_seed(5)
    jac = torch.randn(4, 3, 30, dtype=torch.float64, generator=gen)
    jac = jac - jac.mean(dim=1, keepdim=True) + 1e-6 * torch.randn(4, 3, 30, dtype=torch.float64, generator=gen)
    f = torch.einsum("ncp,mdp->ncmd", jac, jac)  # zero-sum head up to 1e-6 noise: σ ~ 1e-12·σ_max
    assert kernel_rank(f) == 12  # float64 tolerance sees the noise directions
    assert kernel_rank(f, default_rtol(f, torch.float32)) == 8  # float32 Jacobians cannot resolve them


def test_as_matrix_orders_rows_by_example_then_class_and_checks_the_layout() -> None:
    k = torch.arange(2 * 3 * 4 * 3, dtype=torch.float64).reshape(2, 3, 4, 3)
    m = as_matrix(k)
    assert m.shape == (6, 12)
    assert m[1 * 3 + 2, 3 * 3 + 1] == k[1, 2, 3, 1]
    with pytest.raises(ConfigError, match=r"kernel: expected shape \(N_A, C, N_B, C\), found \(2, 3, 4\)"):
        as_matrix(k[..., 0])
    with pytest.raises(ConfigError, match=r"found \(2, 3, 4, 2\)"):
        kernel_rank(k[..., :2])
