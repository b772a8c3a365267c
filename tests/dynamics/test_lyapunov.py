"""Lyapunov exponents against systems with known answers and a brute-force unrolled Jacobian."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.func import jacrev

from dynascope.dynamics.jacobian import Step, step_jacobian
from dynascope.dynamics.lyapunov import (
    lyapunov_benettin,
    lyapunov_exact,
    lyapunov_lanczos,
    row_space_basis,
)

F64 = torch.float64


def orthogonal(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64)).Q


def linear(A: torch.Tensor) -> Step:
    return lambda x: A @ x


def looped_map(S: int, D: int, seed: int = 0, eta: float = 0.3, normalize: bool = False) -> tuple[Step, torch.Tensor]:
    """A small looped attention-like map X -> [Pi](X + eta (C + tanh(softmax(X Wq Wk^T X^T) X Wv))) and its x0."""
    g = torch.Generator().manual_seed(seed)
    wq, wk, wv = (torch.randn(D, D, generator=g, dtype=F64) / math.sqrt(D) for _ in range(3))
    c = 0.5 * torch.randn(S, D, generator=g, dtype=F64)

    def step(x: torch.Tensor) -> torch.Tensor:
        X = x.view(S, D)
        attn = torch.softmax((X @ wq) @ (X @ wk).T / math.sqrt(D), dim=-1)
        Y = X + eta * (c + torch.tanh(attn @ X @ wv))
        if normalize:
            Y = Y / torch.linalg.vector_norm(Y, dim=-1, keepdim=True)
        return Y.reshape(-1)

    return step, torch.randn(S * D, generator=g, dtype=F64)


def unrolled_jacobian(step: Step, x0: torch.Tensor, T: int) -> torch.Tensor:
    """Brute force: reverse-mode Jacobian of the whole T-step map (no chain product)."""

    def f_T(x: torch.Tensor) -> torch.Tensor:
        for _ in range(T):
            x = step(x)
        return x

    return jacrev(f_T)(x0)


def test_exact_on_normal_linear_map_is_log_singular_values() -> None:
    # resolution: lambda_i is accurate to about eps * sigma_1 / sigma_i / T, so keep (s_min / s_max)^T >> eps
    s = torch.tensor([2.0, 1.3, 1.0, 0.7, 0.5, 0.4], dtype=F64)
    Q = orthogonal(6, 0)
    res = lyapunov_exact(linear(Q @ torch.diag(s) @ Q.T), torch.ones(6, dtype=F64), T=6)
    assert torch.allclose(res.exponents, torch.log(s), atol=1e-10, rtol=0)
    assert res.max == pytest.approx(math.log(2.0), abs=1e-10)
    assert res.mean == pytest.approx(float(torch.log(s).mean()), abs=1e-10)
    assert (res.method, res.T, res.k, res.null_dims, res.unresolved) == ("exact", 6, 6, 0, 0)


def test_exact_on_general_linear_map_matches_svd_of_matrix_power() -> None:
    U, V = orthogonal(7, 1), orthogonal(7, 2)
    A = U @ torch.diag(torch.tensor([1.6, 1.4, 1.1, 1.0, 0.9, 0.8, 0.6], dtype=F64)) @ V.T
    T = 9
    expected = torch.log(torch.linalg.svdvals(torch.linalg.matrix_power(A, T))) / T
    res = lyapunov_exact(linear(A), torch.zeros(7, dtype=F64), T=T)
    assert torch.allclose(res.exponents, expected, atol=1e-10, rtol=0)
    # non-normal: the T-step exponents are not ln of A's own singular values
    assert not torch.allclose(res.exponents, torch.log(torch.linalg.svdvals(A)), atol=1e-3)


def test_exact_rescales_long_products_instead_of_overflowing() -> None:
    s = torch.tensor([3.0, 2.99, 2.98], dtype=F64)  # 3^1000 ~ 1e477 overflows float64 without rescaling
    Q = orthogonal(3, 3)
    res = lyapunov_exact(linear(Q @ torch.diag(s) @ Q.T), torch.ones(3, dtype=F64), T=1000)
    assert torch.allclose(res.exponents, torch.log(s), atol=1e-10, rtol=0)


def test_exact_chain_product_equals_brute_force_unrolled_jacobian() -> None:
    step, x0 = looped_map(4, 5, eta=0.8)
    T = 7
    expected = torch.log(torch.linalg.svdvals(unrolled_jacobian(step, x0, T))) / T
    for mode in ("fwd", "rev"):
        res = lyapunov_exact(step, x0, T, mode=mode)  # type: ignore[arg-type]
        assert torch.allclose(res.exponents, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("qr_every", [1, 3])
def test_benettin_from_top_singular_vectors_equals_exact(qr_every: int) -> None:
    """Started from the top-k right singular vectors of J_{f^T}, Benettin's QR products reproduce sigma_1..k exactly."""
    step, x0 = looped_map(4, 5, eta=0.8)
    T, k = 8, 6
    _, _, Vh = torch.linalg.svd(unrolled_jacobian(step, x0, T))
    exact = lyapunov_exact(step, x0, T)
    ben = lyapunov_benettin(step, x0, T, k, q0=Vh[:k].T, qr_every=qr_every)
    rel = (ben.exponents - exact.exponents[:k]).abs() / exact.exponents[:k].abs()
    assert float(rel.max()) <= 1e-8  # the task asks 1e-3
    assert (ben.method, ben.k, ben.T) == ("benettin", k, T)
    assert ben.mean == pytest.approx(float(exact.exponents[:k].mean()), rel=1e-8)


@pytest.mark.parametrize("normalize", [False, True])
def test_lanczos_top_k_equals_exact(normalize: bool) -> None:
    """Matrix-free Lanczos on the T-step operator gives the exact route's top-k exponents (no n x n matrix)."""
    S, D, T, k = 4, 5, 8, 6
    step, x0 = looped_map(S, D, eta=0.8, normalize=normalize)
    nulls = S if normalize else 0
    exact = lyapunov_exact(step, x0, T, null_dims=nulls)
    lz = lyapunov_lanczos(step, x0, T, k, null_dims=nulls, seed=1)
    assert (lz.method, lz.k, lz.T, lz.null_dims) == ("lanczos", k, T, nulls)
    rel = (lz.exponents - exact.exponents[:k]).abs() / exact.exponents[:k].abs()
    assert float(rel.max()) <= 1e-8
    with pytest.raises(ValueError, match="k must"):
        lyapunov_lanczos(step, x0, T, S * D)


def test_benettin_random_start_converges_on_a_normal_map() -> None:
    """From a random start the error is O(1/T): at T = 3000 the top-3 exponents are within 3e-3 of ln s."""
    s = torch.tensor([2.0, 1.6, 1.3, 1.0, 0.8, 0.5], dtype=F64)
    Q = orthogonal(6, 4)
    step, x0 = linear(Q @ torch.diag(s) @ Q.T), torch.zeros(6, dtype=F64)  # x_t = 0: the trajectory stays finite
    ben = lyapunov_benettin(step, x0, T=3000, k=3, seed=5)
    assert torch.allclose(ben.exponents, torch.log(s[:3]), atol=3e-3, rtol=0)
    short = lyapunov_benettin(step, x0, T=3, k=3, seed=5)
    assert float((short.exponents - torch.log(s[:3])).abs().max()) > 3e-3  # the finite-T bias is real
    with pytest.raises(FloatingPointError, match="not finite"):  # 2^1100 overflows along x_t = A^t 1
        lyapunov_benettin(step, torch.ones(6, dtype=F64), T=1100, k=3)


def test_benettin_full_rank_sum_is_log_determinant() -> None:
    """With k = n the QR volume is exact for any T and start: sum of exponents = ln|det A|."""
    U, V = orthogonal(5, 6), orthogonal(5, 7)
    A = U @ torch.diag(torch.tensor([1.9, 1.2, 1.0, 0.5, 0.3], dtype=F64)) @ V.T
    ben = lyapunov_benettin(linear(A), torch.ones(5, dtype=F64), T=13, k=5, seed=1, qr_every=4)
    assert float(ben.exponents.sum()) == pytest.approx(float(torch.linalg.slogdet(A).logabsdet), abs=1e-12)


def test_logistic_map_at_r4_has_exponent_ln2() -> None:
    """256 independent logistic maps x -> 4x(1-x) as one diagonal state, Benettin with k = n: the mean
    exponent is exactly the one-dimensional accumulation (1/(nT)) sum ln|f'(x_t)| (the QR volume is the
    determinant), and over 256 * 400 samples it is ln 2, the exponent of the invariant measure."""
    n, T = 256, 400
    g = torch.Generator().manual_seed(0)
    x0 = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=F64)

    def logistic(x: torch.Tensor) -> torch.Tensor:
        return 4.0 * x * (1.0 - x)

    res = lyapunov_benettin(logistic, x0, T=T, k=n, seed=0)
    x, acc = x0.clone(), 0.0
    for _ in range(T):
        acc += float(torch.log((4.0 * (1.0 - 2.0 * x)).abs()).sum())
        x = logistic(x)
    assert res.mean == pytest.approx(acc / (n * T), abs=1e-10)
    assert res.mean == pytest.approx(math.log(2.0), abs=1e-2)
    assert res.unresolved == 0


def test_normalization_null_directions_are_exactly_null_dims() -> None:
    """Pi per token gives S exact radial null directions: exactly S exponents are -inf, the rest finite."""
    S, D = 4, 6
    step, x0 = looped_map(S, D, eta=0.3, normalize=True)
    exact = lyapunov_exact(step, x0, T=12, null_dims=S)
    assert exact.unresolved == S
    assert bool((exact.exponents[-S:] <= -20).all())
    assert bool(torch.isfinite(exact.exponents[:-S]).all()) and bool((exact.exponents[:-S] > -5).all())
    assert exact.mean == pytest.approx(float(exact.exponents[:-S].mean()), abs=1e-14)
    assert math.isfinite(exact.mean)
    ben = lyapunov_benettin(step, x0, T=12, k=S * D, null_dims=S, seed=2)
    assert int((ben.exponents <= -20).sum()) == S and ben.unresolved == S
    assert math.isfinite(ben.mean)
    # without normalization the same map has no null directions
    free_step, _ = looped_map(S, D, eta=0.3, normalize=False)
    assert lyapunov_exact(free_step, x0, T=12).unresolved == 0


def test_result_serialises_and_arguments_are_validated() -> None:
    step, x0 = looped_map(2, 3)
    res = lyapunov_benettin(step, x0, T=2, k=2)
    payload = json.loads(json.dumps(res.as_dict()))
    assert payload["method"] == "benettin" and len(payload["exponents"]) == 2
    with pytest.raises(ValueError, match="T"):
        lyapunov_exact(step, x0, T=0)
    with pytest.raises(ValueError, match="null_dims"):
        lyapunov_exact(step, x0, T=1, null_dims=6)
    with pytest.raises(ValueError, match="k must"):
        lyapunov_benettin(step, x0, T=1, k=7)
    with pytest.raises(ValueError, match="q0"):
        lyapunov_benettin(step, x0, T=1, k=2, q0=torch.zeros(6, 3, dtype=F64))


@pytest.mark.parametrize("normalize", [False, True])
def test_benettin_random_start_with_sweeps_equals_exact_on_looped_sa(normalize: bool) -> None:
    """From a random start, two forward-backward sweeps make Benettin match the exact route (rel. <= 1e-3);
    without them the same run is off by more than that (the finite-T start bias)."""
    S, D, T, k = 4, 5, 12, 4
    step, x0 = looped_map(S, D, eta=0.8, normalize=normalize)
    exact = lyapunov_exact(step, x0, T, null_dims=S if normalize else 0)
    top = exact.exponents[:k]
    plain = lyapunov_benettin(step, x0, T, k, seed=3)
    swept = lyapunov_benettin(step, x0, T, k, seed=3, sweeps=2)
    assert float(((plain.exponents - top).abs() / top.abs()).max()) > 1e-3
    assert float(((swept.exponents - top).abs() / top.abs()).max()) <= 1e-3
    with pytest.raises(ValueError, match="sweeps"):
        lyapunov_benettin(step, x0, T, k, sweeps=-1)


def _high_precision_mean(step: Step, x0: torch.Tensor, T: int, keep: int, digits: int = 300) -> float:
    """Brute force: the mean of the top ``keep`` exponents from the product of the float64 one-step Jacobians,
    multiplied and decomposed (SVD) in ``digits``-digit arithmetic, so that nothing under- or overflows."""
    mpmath = pytest.importorskip("mpmath")
    n = x0.numel()
    with mpmath.workdps(digits):
        x, prod = x0, mpmath.eye(n)
        for _ in range(T):
            prod = mpmath.matrix(step_jacobian(step, x).tolist()) * prod
            x = step(x).detach()
        sv = sorted(mpmath.svd_r(prod, compute_uv=False), reverse=True)
        return float(sum(mpmath.log(s) for s in sv[:keep]) / (keep * T))


def test_mean_over_non_null_directions_equals_dense_brute_force() -> None:
    """The mean over the n − null_dims non-null directions, exact route and matrix-free Benettin from the row
    space of J(x_0), equals the mean of the top n − S exponents of the float64 SVD of the unrolled Jacobian."""
    S, D, T = 4, 5, 8
    step, x0 = looped_map(S, D, eta=0.8, normalize=True)
    n = S * D
    brute = torch.log(torch.linalg.svdvals(unrolled_jacobian(step, x0, T))) / T
    expected = float(brute[: n - S].mean())
    exact = lyapunov_exact(step, x0, T, null_dims=S)
    assert exact.unresolved == S
    assert exact.mean == pytest.approx(expected, abs=1e-12)
    start = row_space_basis(step, x0, n - S, seed=4)
    ben = lyapunov_benettin(step, x0, T, k=n - S, q0=start, null_dims=S)
    assert ben.mean == pytest.approx(expected, abs=1e-12)
    # from a random start the same volume is off by the angle between the start and the row space
    assert abs(lyapunov_benettin(step, x0, T, k=n - S, null_dims=S, seed=4).mean - expected) > 1e-4


def test_mean_stays_finite_and_exact_where_the_product_underflows() -> None:
    """Over a long horizon the float64 product cannot resolve the smallest non-null exponents (they come out
    −inf, beyond the null_dims nulls); the mean is still finite and equals the brute force."""
    # a normal map with one exact null: 0.01^400 / 2^400 is far below float64's resolution
    s = torch.tensor([2.0, 1.0, 0.5, 0.01, 0.0], dtype=F64)
    Q = orthogonal(5, 8)
    step = linear(Q @ torch.diag(s) @ Q.T)
    ones = torch.ones(5, dtype=F64)
    res = lyapunov_exact(step, ones, T=400, null_dims=1)
    assert res.unresolved >= 2
    assert res.mean == pytest.approx(float(torch.log(s[:4]).mean()), abs=1e-12)
    ben = lyapunov_benettin(step, ones, 400, k=4, q0=row_space_basis(step, ones, 4), null_dims=1)
    assert ben.mean == pytest.approx(float(torch.log(s[:4]).mean()), abs=1e-12)
    # a normalised looped map, against a 300-digit product of its Jacobians
    S, D, T = 3, 3, 64
    step, x0 = looped_map(S, D, eta=0.8, normalize=True, seed=1)
    exact = lyapunov_exact(step, x0, T, null_dims=S)
    assert exact.unresolved > S and math.isfinite(exact.mean)
    expected = _high_precision_mean(step, x0, T, S * D - S)
    assert exact.mean == pytest.approx(expected, abs=1e-12)
    finite = exact.exponents[torch.isfinite(exact.exponents)]
    assert float(finite.mean()) > expected + 0.01  # averaging only the resolved exponents is biased upwards
