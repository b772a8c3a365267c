"""Scale benchmark on CPUs: one process with 2 threads against 2 processes (``torchrun``, gloo) with 1 thread each,
and how far the exact F kernel goes on this machine.

1. FT steps per second: ``dynascope train`` (default model, CB, full fine-tuning, one epoch, global batch 16);
   the epoch time of the run's history (training plus validation on CB's 56 validation examples).
2. NTK Jacobian rows per second: ``dynascope ntk`` (default model, SST-2, state ft, N_train train and N_eval test
   examples, C = 2, no trace probes): rows (N_train + N_eval)·C over the run's seconds.
3. The exact F kernel for N ∈ {64, 128, 256} (SST-2, C = 2, one process, 2 threads): seconds per N, and the
   largest N that fits in 15 minutes, from the quadratic through the three points (the Gram is O(N²), the rows
   O(N)), unless a measured N already exceeds it.

Every command runs as its own child process (so the peak RSS is that of the job), side by side in one run.

    python bench/scale.py [--ns 64,128,256] [--memory-gb 8] [--ft-train 128] [--rows-train 32]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import markdown_table, measure, read_previous, write_results
from dynascope.runio import FINETUNE, NTK

BUDGET_S = 15 * 60
SRC = Path(__file__).resolve().parents[1] / "src"


def _launch(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd`` (in the spawned child of ``measure``): wall seconds and the peak RSS of its largest process."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return {"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def _run(args: list[str], processes: int, threads: int) -> tuple[float, float]:
    """Run ``dynascope args`` in ``processes`` processes of ``threads`` threads: (wall seconds, peak RSS MB of the
    largest process of the job)."""
    env = {**os.environ, "DYNASCOPE_QUIET": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    if processes == 1:
        cmd = [sys.executable, "-m", "dynascope", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               "-m", "dynascope", *args]
    result = measure(_launch, cmd, env)["value"]
    return result["seconds"], result["peak_mb"]


def ft_rate(out: Path, processes: int, threads: int, n_train: int) -> dict:
    """FT optimizer steps per second of one epoch."""
    args = ["train", "--task", "cb", "--method", "ft", "--max-train", str(n_train), "--epochs", "1",
            "--batch-size", "16", "--lr", "5e-5", "--device", "cpu", "--out", str(out)]
    wall, peak = _run(args, processes, threads)
    metrics = FINETUNE.load(out, "metrics")
    epoch = sum(row["seconds"] for row in metrics["history"])
    return {"processes": processes, "threads": threads, "steps": metrics["optimizer_steps"],
            "epoch_seconds": epoch, "steps_per_second": metrics["optimizer_steps"] / epoch,
            "wall_seconds": wall, "val_accuracy": metrics["val"]["accuracy"], "peak_rss_mb": peak}


def ntk_run(out: Path, processes: int, threads: int, n_train: int, n_eval: int, memory_gb: float) -> dict:
    """One exact NTK run: its seconds, rows per second and the kernel's trace (to check the two agree)."""
    args = ["ntk", "--task", "sst2", "--state", "ft", "--n-train", str(n_train), "--n-eval", str(n_eval),
            "--probes", "0", "--memory-gb", str(memory_gb), "--device", "cpu", "--seed", "0", "--out", str(out)]
    wall, peak = _run(args, processes, threads)
    stats = NTK.load(out, "stats")
    rows = (n_train + n_eval) * stats["num_labels"]
    return {"processes": processes, "threads": threads, "n_train": n_train, "n_eval": n_eval,
            "seconds": stats["seconds"], "wall_seconds": wall, "rows": rows, "rows_per_second": rows / stats["seconds"],
            "ft_trace": stats["ft"]["trace"], "peak_rss_mb": peak}


def largest_n(ns: list[int], seconds: list[float], budget: float = BUDGET_S) -> dict:
    """The largest N whose time stays under ``budget``, from t(N) = c + b·N + a·N² fitted to the measured points
    with non-negative coefficients (a fixed cost, the rows, the Gram)."""
    from scipy.optimize import nnls

    n = np.asarray(ns, float)
    (c, b, a), _ = nnls(np.stack([np.ones_like(n), n, n**2], axis=1), np.asarray(seconds, float))
    grid = np.arange(1, 200_001)
    fits = grid[c + b * grid + a * grid**2 <= budget]
    within = [m for m, s in zip(ns, seconds, strict=True) if s <= budget]
    return {"fit": {"c": float(c), "b": float(b), "a": float(a)}, "largest_n": int(fits.max()) if len(fits) else None,
            "largest_measured_within": max(within, default=None),
            "how": "largest N with c + b·N + a·N² ≤ 900 s, fitted to the measured points with a, b, c ≥ 0"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ns", default="64,128,256", help="N of the exact F kernel timings")
    parser.add_argument("--memory-gb", type=float, default=8.0, help="--memory-gb of the NTK runs")
    parser.add_argument("--ft-train", type=int, default=128, help="CB training examples of the FT runs")
    parser.add_argument("--rows-train", type=int, default=32, help="N_train of the rows-per-second NTK runs")
    parser.add_argument("--skip-kernel", action="store_true", help="keep the previous F-kernel timings")
    args = parser.parse_args()
    results: dict = read_previous("scale") if args.skip_kernel else {}
    results.pop("environment", None)
    results.pop("benchmark", None)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ft = [ft_rate(root / f"ft-{p}", p, t, args.ft_train) for p, t in ((1, 2), (2, 1))]
        rows = [ntk_run(root / f"rows-{p}", p, t, args.rows_train, 8, args.memory_gb) for p, t in ((1, 2), (2, 1))]
        results["ft"] = ft
        results["ntk_rows"] = rows
        if not args.skip_kernel:
            ns = [int(n) for n in args.ns.split(",")]
            kernel = [ntk_run(root / f"kernel-{n}", 1, 2, n, 8, args.memory_gb) for n in ns]
            results["kernel"] = {"runs": kernel, **largest_n(ns, [k["seconds"] for k in kernel])}
    results["memory_gb"] = args.memory_gb
    md = "## FT steps per second (CB, default model, global batch 16, one epoch)\n\n" + markdown_table(
        ["processes × threads", "steps", "epoch s", "steps/s", "ratio vs 1×2", "peak RSS MB (largest process)"],
        [[f"{r['processes']} × {r['threads']}", r["steps"], r["epoch_seconds"], r["steps_per_second"],
          r["steps_per_second"] / ft[0]["steps_per_second"], r["peak_rss_mb"]] for r in ft])
    md += "\n## NTK Jacobian rows per second (SST-2, state ft, C = 2, no probes)\n\n" + markdown_table(
        ["processes × threads", "N train + N eval", "rows", "seconds", "rows/s", "ratio vs 1×2", "tr F"],
        [[f"{r['processes']} × {r['threads']}", f"{r['n_train']} + {r['n_eval']}", r["rows"], r["seconds"],
          r["rows_per_second"], r["rows_per_second"] / rows[0]["rows_per_second"], r["ft_trace"]] for r in rows])
    kernel = results.get("kernel")
    if kernel:
        md += (f"\n## Exact F kernel (SST-2, C = 2, 1 process × 2 threads, --memory-gb {args.memory_gb:g}, "
               "8 test examples beside)\n\n")
        md += markdown_table(["N", "seconds", "peak RSS MB"],
                             [[k["n_train"], k["seconds"], k["peak_rss_mb"]] for k in kernel["runs"]])
        md += (f"\nLargest N within 15 minutes: **{kernel['largest_n']}** ({kernel['how']}; "
               f"largest measured N within it: {kernel['largest_measured_within']}).\n")
    write_results("scale", results, md, "Scale: one process × 2 threads vs 2 processes × 1 thread (CPU, gloo)")
    print(md)


if __name__ == "__main__":
    main()
