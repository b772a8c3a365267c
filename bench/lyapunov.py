"""Lyapunov-exponent benchmark: the dense exact route vs top-k Benettin vs top-k Lanczos, by state size.

The map is a looped single-head attention step with per-token normalization (ItrSA-like, float64),
``X <- Pi(X + eta (C + softmax(X Wq (X Wk)^T / sqrt(D)) X Wv))`` on S = 81 tokens of width D = round(size/81),
so n = 81 D and there are S exact null directions. For each size, in separate spawned processes (own peak
RSS): ``lyapunov_exact`` (all n exponents: T dense one-step Jacobians, T float64 n^3 products, one SVD),
``lyapunov_benettin`` (top k from a random start, with ``--sweeps`` forward-backward sweeps that align the
start with the top singular vectors, and plain, without them) and ``lyapunov_lanczos`` (top k of the same
finite-T definition as the exact route, matrix-free). The dense route is skipped where its predicted memory
(3 n x n float64 matrices plus the Jacobian batch) or time (cubic extrapolation from the previous size)
exceeds the budgets; the reason is recorded.

    python bench/lyapunov.py [--sizes 1000,2000,4000,8000,16000] [--T 16] [--k 16]
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import torch

from _common import markdown_table, measure, write_results
from dynascope.dynamics.lyapunov import lyapunov_benettin, lyapunov_exact, lyapunov_lanczos
from dynascope.progress import say

TOKENS = 81
JAC_CHUNK = 512


def make_map(width: int, seed: int, eta: float = 1.0) -> tuple[Any, torch.Tensor]:
    """The looped attention step on a flat state of n = 81 * width, and its normalised start x0."""
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    wq, wk, wv = (torch.randn(width, width, generator=g, dtype=f64) / math.sqrt(width) for _ in range(3))
    c = 0.5 * torch.randn(TOKENS, width, generator=g, dtype=f64)

    def step(x: torch.Tensor) -> torch.Tensor:
        X = x.view(TOKENS, width)
        attn = torch.softmax((X @ wq) @ (X @ wk).T / math.sqrt(width), dim=-1)
        Y = X + eta * (c + attn @ X @ wv)
        return (Y / torch.linalg.vector_norm(Y, dim=-1, keepdim=True)).reshape(-1)

    x0 = torch.randn(TOKENS, width, generator=g, dtype=f64)
    return step, (x0 / torch.linalg.vector_norm(x0, dim=-1, keepdim=True)).reshape(-1)


def _route(route: str, width: int, T: int, k: int, seed: int, sweeps: int = 3) -> Any:
    """One Lyapunov computation on the bench map."""
    step, x0 = make_map(width, seed)
    if route == "exact":
        return lyapunov_exact(step, x0, T, null_dims=TOKENS, chunk_size=JAC_CHUNK)
    if route == "benettin":
        return lyapunov_benettin(step, x0, T, k, seed=seed, null_dims=TOKENS, sweeps=sweeps)
    if route == "benettin_plain":
        return lyapunov_benettin(step, x0, T, k, seed=seed, null_dims=TOKENS)
    return lyapunov_lanczos(step, x0, T, k, null_dims=TOKENS, seed=seed)


def run_route(route: str, width: int, T: int, k: int, seed: int, threads: int, sweeps: int) -> dict[str, Any]:
    """Child process: one route on one size, timed after a warm-up on a tiny map.

    The first ``torch.func`` call in a process pays a one-off set-up of a few seconds; the warm-up keeps it
    out of ``seconds`` (the child's whole wall time, warm-up included, is ``measure``'s ``seconds``).
    """
    torch.set_num_threads(threads)
    _route(route, 2, 2, 2, seed, sweeps)
    started = time.perf_counter()
    res = _route(route, width, T, k, seed, sweeps)
    return {
        "seconds": time.perf_counter() - started,
        "top": res.exponents[:k].tolist(),
        "max": res.max,
        "mean": res.mean,
        "unresolved": res.unresolved,
        "threads": torch.get_num_threads(),
    }


def rel_diff(a: list[float], b: list[float]) -> float:
    """Largest relative difference |a_i - b_i| / |b_i| over the top-k exponents."""
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))


def abs_diff(a: list[float], b: list[float]) -> float:
    """Largest absolute difference |a_i - b_i| over the top-k (relative ones blow up for exponents near 0)."""
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def dense_bytes(n: int) -> float:
    """Predicted peak of the dense route: 3 n x n float64 matrices plus a Jacobian batch of JAC_CHUNK rows."""
    return 3 * 8.0 * n * n + 10 * 8.0 * JAC_CHUNK * n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2000,4000,8000,16000", help="state sizes (n is 81*round(size/81))")
    parser.add_argument("--T", type=int, default=16, help="loop steps of the finite-horizon exponents")
    parser.add_argument("--k", type=int, default=16, help="top-k exponents for Benettin and Lanczos")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweeps", type=int, default=3, help="Benettin's forward-backward sweeps")
    parser.add_argument("--time-budget", type=float, default=180.0, help="seconds allowed for one dense run")
    parser.add_argument("--mem-budget-gb", type=float, default=4.0, help="memory allowed for one dense run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (1: robust on a shared machine)")
    args = parser.parse_args()

    rows, records = [], []
    last_dense: tuple[int, float] | None = None
    for size in (int(s) for s in args.sizes.split(",")):
        width = max(1, round(size / TOKENS))
        n = TOKENS * width
        rec: dict[str, Any] = {"size": size, "n": n, "width": width, "T": args.T, "k": args.k}
        for route in ("benettin", "benettin_plain", "lanczos"):
            say(f"n={n}: {route}")
            rec[route] = measure(run_route, route, width, args.T, args.k, args.seed, args.threads, args.sweeps)
        predicted_s = None if last_dense is None else last_dense[1] * (n / last_dense[0]) ** 3
        predicted_gb = dense_bytes(n) / 1e9
        if predicted_gb > args.mem_budget_gb:
            rec["exact"] = {"skipped": f"predicted memory {predicted_gb:.1f} GB > {args.mem_budget_gb} GB"}
        elif predicted_s is not None and predicted_s > args.time_budget:
            reason = f"predicted time {predicted_s:.0f} s > {args.time_budget:.0f} s (n^3 from n={last_dense[0]})"
            rec["exact"] = {"skipped": reason}
        else:
            say(f"n={n}: exact (dense)")
            rec["exact"] = measure(run_route, "exact", width, args.T, args.k, args.seed, args.threads, args.sweeps)
            last_dense = (n, rec["exact"]["value"]["seconds"])
        ben, plain, lz, ex = (rec[r].get("value") for r in ("benettin", "benettin_plain", "lanczos", "exact"))
        pairs = {
            "benettin_vs_lanczos": (ben, lz),
            "benettin_vs_exact": (ben, ex),
            "plain_benettin_vs_exact": (plain, ex),
            "plain_benettin_vs_lanczos": (plain, lz),
            "lanczos_vs_exact": (lz, ex),
        }
        for name, (a, b) in pairs.items():
            if a is not None and b is not None:
                rec[f"{name}_rel"] = rel_diff(a["top"], b["top"][: args.k])
                rec[f"{name}_abs"] = abs_diff(a["top"], b["top"][: args.k])
        if ex is not None:
            rec["time_ratio_exact_over_benettin"] = ex["seconds"] / ben["seconds"]
            rec["time_ratio_exact_over_lanczos"] = ex["seconds"] / lz["seconds"]
        records.append(rec)
        rows.append(
            [
                n,
                ex["seconds"] if ex else f"skipped: {rec['exact']['skipped']}",
                ben["seconds"],
                lz["seconds"],
                rec.get("time_ratio_exact_over_benettin"),
                rec.get("time_ratio_exact_over_lanczos"),
                ex["max"] if ex else None,
                ben["max"],
                lz["max"],
                rec.get("benettin_vs_exact_abs"),
                rec.get("benettin_vs_exact_rel"),
                rec.get("lanczos_vs_exact_rel"),
                rec["benettin_vs_lanczos_abs"],
                plain["seconds"],
                rec["plain_benettin_vs_lanczos_abs"],
                rec["exact"].get("peak_rss_mb"),
                rec["benettin"]["peak_rss_mb"],
                rec["lanczos"]["peak_rss_mb"],
            ]
        )

    header = [
        "n",
        "exact s",
        "Benettin s",
        "Lanczos s",
        "exact/Benettin",
        "exact/Lanczos",
        "λmax exact",
        "λmax Benettin",
        "λmax Lanczos",
        f"Benettin vs exact, top-{args.k} max abs diff",
        "Benettin vs exact, max rel diff",
        "Lanczos vs exact, max rel diff",
        "Benettin vs Lanczos, max abs diff",
        "plain Benettin s",
        "plain Benettin vs Lanczos, max abs diff",
        "exact RSS MB",
        "Benettin RSS MB",
        "Lanczos RSS MB",
    ]
    threads = records[0]["benettin"]["value"]["threads"] if records else None
    note = (
        f"\nLooped single-head attention with per-token normalization (S = {TOKENS}, float64), T = {args.T}, "
        f"k = {args.k}, torch threads = {threads}. Seconds are the call itself, after a warm-up in the same "
        "process (the first torch.func call costs a few seconds of one-off set-up); RSS is the process peak "
        "(about 330 MB is the interpreter and libraries). Differences are max_i |a_i - b_i| (abs) or "
        "max_i |a_i - b_i| / |b_i| (rel) over the top-k exponents; relative ones blow up for exponents near 0. "
        "Exact and Lanczos compute the same finite-T quantity (singular values of the T-step Jacobian). "
        f"Benettin runs {args.sweeps} forward-backward sweeps (subspace iteration on the T-step JᵀJ with "
        "max(10, k) extra vectors) before the measuring pass and reports Rayleigh-Ritz values, so it computes that "
        "quantity too; plain Benettin from a random start estimates the asymptotic exponents and at small T "
        "sits below them by about ln|<q0, v_i>| / T.\n"
    )
    data = {"sizes": records, "threads": threads, "settings": vars(args)}
    write_results("lyapunov", data, markdown_table(header, rows) + note, "Lyapunov exponents: dense vs top-k")
    say("wrote bench/results/lyapunov.json and bench/results/lyapunov.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
