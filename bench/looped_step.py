"""Where the milliseconds of one looped-attention training step go, before and after a change, side by side.

One step of ``dynascope.dynamics.train`` as the training loop runs it (a batch of easy boards, ``loop_steps``
applications of the SA block, cross-entropy at the last step, backward, gradient clipping, Adam, EMA), timed by
phase with ``time.perf_counter`` (the CPU is synchronous) and, over a few more steps, by operator kind with
``torch.profiler`` (self CPU time of every aten op, grouped: matmuls, attention (softmax or the fused kernel),
normalisation, element-wise, copies and views, the rest). The profiler's own overhead inflates its times, so the
table divides the unprofiled step time among the kinds in proportion to their profiled self time.

The *before* column runs the package of another git revision (``--before REV``, exported with ``git archive``),
the *after* column the working tree, each in its own child process, in one run.

    python bench/looped_step.py [--before REV] [--width 64] [--heads 4] [--loop-steps 16] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("forward", "backward", "clip", "optimizer", "ema")
KINDS = {
    "matmul": ("mm", "bmm", "addmm", "matmul", "linear", "baddbmm", "scaled_dot_product", "_flash_attention"),
    "attention (softmax, fused SDPA)": ("softmax", "scaled_dot_product_flash_attention_for_cpu",
                                        "scaled_dot_product_flash_attention_for_cpu_backward"),
    "normalisation": ("norm", "clamp", "rsqrt", "sqrt"),
    "copies and views": ("copy_", "clone", "contiguous", "transpose", "reshape", "view", "permute", "cat", "stack",
                         "expand", "unsqueeze", "select", "slice", "index", "t", "as_strided", "split", "unbind"),
    "element-wise": ("add", "mul", "div", "sub", "where", "neg", "exp", "sum", "mean", "fill_", "zero_", "lerp",
                     "addcmul", "addcdiv", "maximum", "pow", "ones_like", "zeros_like", "empty", "randn"),
}


def _kind(op: str) -> str:
    """The kind of an aten op: its name (without ``aten::``, underscores and ``_backward``) is in a kind's list,
    or, for softmax and norms, contains it."""
    name = op.removeprefix("aten::").strip("_").removesuffix("_backward")
    for kind, names in KINDS.items():
        if name in names or name.removesuffix("_") in names:
            return kind
    for word, kind in (("softmax", "attention (softmax, fused SDPA)"), ("attention", "attention (softmax, fused SDPA)"),
                       ("norm", "normalisation"), ("mm", "matmul")):
        if word in name:
            return kind
    return "other"


def child(width: int, heads: int, loop_steps: int, batch: int, steps: int) -> dict:
    """Profile ``steps`` training steps of ItrSA + RMSNorm with the ``dynascope`` found on ``sys.path``."""
    import torch

    from dynascope.dynamics.models import ModelConfig, build_model
    from dynascope.dynamics.train import TrainConfig, _ema_update

    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    config = TrainConfig(model=ModelConfig(model="itrsa", width=width, heads=heads, norm="rms_token"),
                         batch_size=batch, loop_steps=loop_steps)
    model = build_model(config.model)
    if hasattr(model, "fused_attention"):  # as dynamics.train builds it, in revisions that have it
        model.fused_attention()
    ema = build_model(config.model)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(0)
    puzzles = torch.randint(0, 10, (batch * 8, 81))
    solutions = torch.randint(1, 10, (batch * 8, 81))
    totals = dict.fromkeys(PHASES, 0.0)

    def one_step(i: int, timed: bool) -> None:
        idx = torch.arange(i * batch, (i + 1) * batch) % len(puzzles)
        pz, sol = puzzles[idx], solutions[idx]
        t0 = time.perf_counter()
        logits = model(pz, loop_steps, generator=gen)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 9), (sol - 1).reshape(-1))
        float(loss.detach())  # the loop reads the loss too (its finiteness check)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        _ema_update(ema, model, 200 + i, config)
        t5 = time.perf_counter()
        if timed:
            for name, (a, b) in zip(PHASES, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)), strict=True):
                totals[name] += 1000 * (b - a)

    for i in range(5):
        one_step(i, timed=False)
    for i in range(steps):
        one_step(i, timed=True)
    per_step = {name: value / steps for name, value in totals.items()}
    profiled = max(3, steps // 5)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for i in range(profiled):
            one_step(i, timed=False)
    by_kind: dict[str, float] = {}
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        kind = _kind(event.key)
        by_kind[kind] = by_kind.get(kind, 0.0) + event.self_cpu_time_total / 1000 / profiled
    total = sum(per_step.values())
    profiled_total = sum(by_kind.values())
    by_kind = {kind: total * value / profiled_total for kind, value in by_kind.items()}
    return {"ms_per_step": total, "phases_ms": per_step, "kinds_ms": by_kind, "threads": torch.get_num_threads(),
            "torch": torch.__version__}


def _export(rev: str, where: Path) -> Path:
    """The ``src`` folder of git revision ``rev``, exported under ``where``."""
    archive = where / "src.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), rev, "src"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(where, filter="data")
    return where / "src"


def _measure(src: Path, args: argparse.Namespace) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(args.threads),
           "BENCH_THREADS": str(args.threads)}
    cmd = [sys.executable, __file__, "--child", "--width", str(args.width), "--heads", str(args.heads),
           "--loop-steps", str(args.loop_steps), "--batch", str(args.batch), "--steps", str(args.steps)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"profiling {src} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="HEAD", help="git revision of the 'before' column (default HEAD)")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--loop-steps", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.width, args.heads, args.loop_steps, args.batch, args.steps)))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import markdown_table, write_results

    with tempfile.TemporaryDirectory() as tmp:
        before = _measure(_export(args.before, Path(tmp)), args)
    after = _measure(ROOT / "src", args)
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.before], capture_output=True,
                         text=True, check=True).stdout.strip()
    setting = {"model": "itrsa", "norm": "rms_token", "width": args.width, "heads": args.heads,
               "loop_steps": args.loop_steps, "batch": args.batch, "steps": args.steps, "threads": args.threads}
    rows = [[f"phase: {name}", before["phases_ms"][name], after["phases_ms"][name]] for name in PHASES]
    kinds = sorted(set(before["kinds_ms"]) | set(after["kinds_ms"]))
    rows += [[f"ops: {k}", before["kinds_ms"].get(k, 0.0), after["kinds_ms"].get(k, 0.0)] for k in kinds]
    rows.append(["**total ms per step**", before["ms_per_step"], after["ms_per_step"]])
    rows.append(["speed-up", None, before["ms_per_step"] / after["ms_per_step"]])
    md = (f"ItrSA + RMSNorm, D = {args.width}, H = {args.heads}, T = {args.loop_steps}, batch {args.batch}, "
          f"{args.threads} threads; before = `{rev}`, after = the working tree. Phases are wall time per step; "
          "ops divide the same step time among operator kinds in proportion to their self CPU time under "
          "`torch.profiler`.\n\n")
    md += markdown_table(["part", f"before ({rev}) ms", "after ms"], rows)
    write_results("looped_step", {"setting": setting, "before_rev": rev, "before": before, "after": after}, md,
                  "Looped attention: one training step by part")
    print(md)


if __name__ == "__main__":
    main()
