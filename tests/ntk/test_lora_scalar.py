"""LoRA's F as a scalar multiple of FT's: exact kernels in the linear model, 1/√r decay, Transformer trace ratio."""

from __future__ import annotations

import copy
import math

import torch

from dynascope.models.lora import LoraSettings, apply_lora
from dynascope.ntk.components import as_matrix
from dynascope.ntk.functional import kernel_model
from dynascope.ntk.lora_scalar import (
    decay_exponent,
    linear_ft_kernel,
    linear_lora_kernel,
    linear_lora_table,
    lora_trace_ratio,
)
from ntk.tiny_ntk import brute_force_ntk, tiny_batch, tiny_classifier


def test_linear_kernels_match_closed_forms() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    v = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    b0 = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    a = torch.randn(2, 6, generator=gen, dtype=torch.float64)
    vvt = v @ v.T
    ft = linear_ft_kernel(v, b0, x)
    assert torch.allclose(ft, torch.einsum("nm,cd->ncmd", x @ x.T, vvt), atol=1e-12)
    lora = linear_lora_kernel(v, b0, a, torch.zeros(5, 2, dtype=torch.float64), 0.5, x)
    ax = x @ a.T
    assert torch.allclose(lora, 0.25 * torch.einsum("nm,cd->ncmd", ax @ ax.T, vvt), atol=1e-12)


def test_error_decays_like_inverse_sqrt_rank() -> None:
    rows = linear_lora_table(ranks=(1, 4, 16, 64, 256, 512), num_seeds=4, sigma=0.3)
    assert [r.rank for r in rows] == [1, 4, 16, 64, 256, 512]
    assert all(math.isclose(r.factor, 0.09 * r.rank) for r in rows)  # s = 1: factor σ²r
    assert rows[-1].relative_error < rows[0].relative_error / 8
    assert -0.75 < decay_exponent(rows) < -0.3
    with_alpha = linear_lora_table(ranks=(2, 8), num_seeds=2, alpha=8.0, sigma=0.3)
    assert math.isclose(with_alpha[0].factor, (8.0 / 2) ** 2 * 0.09 * 2)


def test_transformer_trace_ratio_matches_brute_force() -> None:
    ft_clf = tiny_classifier("bert", seed=4)
    clf = copy.deepcopy(ft_clf)
    batch = tiny_batch("bert", 3, seed=30)
    ft_model = kernel_model(ft_clf)
    ft_brute = brute_force_ntk(clf, batch, batch, [n for n, _ in clf.named_parameters() if not n.startswith("head")])
    apply_lora(clf, LoraSettings(r=4, alpha=8), seed=1)
    clf.eval()
    lora_brute = brute_force_ntk(clf, batch, batch, [n for n, p in clf.named_parameters() if "lora_" in n])
    out = lora_trace_ratio(ft_model, kernel_model(clf), batch)
    expected = float(torch.trace(as_matrix(lora_brute)) / torch.trace(as_matrix(ft_brute)))
    assert math.isclose(out["ratio"], expected, rel_tol=1e-9)
    assert 0 < out["ratio"] < 1
    estimated = lora_trace_ratio(ft_model, kernel_model(clf), batch, num_probes=64, seed=0)
    assert abs(estimated["ratio"] / expected - 1) < 0.5
