"""NTK benchmark: our blocked F kernel against the published approach and the torch.func recipe; trace estimators.

F = J_g J_gᵀ (g = V·φ, all backbone parameters, random head) on N stratified CB training examples with the
default model, C = 3, three ways, each in its own spawned process (wall time of the kernel computation, peak
RSS of the process, max |difference| to ours):

* ``ours``: ``dynascope.ntk.components.ntk_components`` (C VJPs per example, blocks packed into passes
  within ``--memory-gb``, exact gather-aware word-embedding block, float64 Gram).
* ``published``: a re-implementation of the published code's ``compute_ntk_ftE``: per block (non-word
  embeddings, each layer's attention, each layer's intermediate+output), per example (batch size 1),
  ``torch.autograd.functional.jacobian`` of φ (h outputs, reverse mode) w.r.t. the flattened block, projected
  by V, then the per-block Gram. The published word-embedding block is a 10 % sample, so it is left out on
  both sides of the difference (ours minus its exact word block). When the predicted full run exceeds 10
  minutes (``--full-run-limit``), only ``--published-examples`` examples are run and the time is extrapolated
  linearly in N (the cost is per example); the output says so, and the difference is taken on that subset.
* ``torchfunc``: the PyTorch tutorial's Jacobian-contraction recipe (``jacrev`` of g for both example sets,
  then ``einsum`` over parameters). ``vmap`` over examples fails on Hugging Face encoders (data-dependent
  control flow in the attention-mask code), so the per-example Jacobians are taken in a Python loop; all of
  them are held in memory (N·C·P floats: both example sets are the same N examples, so the Jacobians are
  computed once). Where that exceeds ``--max-gb`` the method is not run and its time is extrapolated linearly
  in N from the largest N it ran at (the Jacobians dominate; the output says so).

Trace estimators: tr(Θ^φ) at ``--trace-n`` examples (h = 384 outputs: the exact trace, by ghost norms,
back-propagates all h rows per example) against Hutchinson (nested prefixes of one probe sequence per seed,
``--seeds``) and Hutch++ (``--hutchpp-seeds``) with ``--probes`` probes; tr(F) (C outputs) for each N, exact
vs Hutchinson; and the crossover number of probes K* = c_exact / c_probe (seconds per example of the exact
trace and of one probe; both linear in N) below which an estimator is cheaper than the exact trace.

    python bench/ntk.py [--sizes 16,32,64] [--skip-published] [--skip-torchfunc] [--skip-traces]
                        [--trace-n 64] [--probes 8,16,32] [--seeds 3] [--hutchpp-seeds 2]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any

import numpy as np

from _common import markdown_table, measure, read_previous, write_results
from dynascope.runio import environment

TASK = "cb"
MAX_LENGTH = 128
TARGET_ERROR = 0.05


def _setup(n: int) -> tuple[Any, dict]:
    """The default model with a seeded random head (eval mode) and N stratified CB training examples."""
    import torch

    from dynascope.data import load_task, stratified_subset
    from dynascope.data.encode import collate, encode_split
    from dynascope.models import Classifier, load_backbone

    torch.manual_seed(0)
    task = load_task(TASK)
    backbone, tokenizer = load_backbone("default", attn_implementation="eager")
    clf = Classifier(backbone, task.num_labels, seed=0).eval()
    idx = stratified_subset(task.train.labels, n, 0)
    enc = encode_split(task.train.subset(idx), tokenizer, MAX_LENGTH)
    return clf, collate(enc, list(range(len(enc))))


def ours(n: int, memory_gb: float) -> dict:
    """Our F (and its word-embedding block) with the kernel-computation seconds."""
    from dynascope.ntk.components import ntk_components
    from dynascope.ntk.functional import kernel_model

    clf, batch = _setup(n)
    started = time.perf_counter()
    comp = ntk_components(kernel_model(clf), batch, memory_gb=memory_gb)
    seconds = time.perf_counter() - started
    return {"ft": comp.ft.numpy(), "word": comp.blocks["embeddings.word"].numpy(), "seconds": seconds}


def _published_blocks(backbone: Any) -> dict[str, list[str]]:
    """The published train×train partition without the (sampled) word block."""
    from dynascope.ntk.blocks import default_block

    word = backbone.get_input_embeddings().weight
    blocks: dict[str, list[str]] = {}
    for name, param in backbone.named_parameters():
        if param is not word:
            blocks.setdefault(default_block(name, None), []).append(name)
    return blocks


def published(n: int, k: int) -> dict:
    """The published approach on the first ``k`` of the N examples: h-output reverse-mode Jacobian per block."""
    import torch
    from torch.func import functional_call

    from dynascope.models.classifier import pool

    clf, batch = _setup(n)
    backbone, v = clf.backbone, clf.head.weight.detach()
    c = v.shape[0]
    params = {name: p.detach() for name, p in backbone.named_parameters()}
    examples = []
    for i in range(k):
        length = int(batch["attention_mask"][i].sum())
        examples.append({key: t[i : i + 1, :length] for key, t in batch.items()})
    kernel = torch.zeros(k, c, k, c, dtype=torch.float32)  # the published code accumulates in float32
    started = time.perf_counter()
    for names in _published_blocks(backbone).values():
        shapes = [params[name].shape for name in names]
        flat0 = torch.cat([params[name].reshape(-1) for name in names])
        rows = []
        for ex in examples:

            def phi(flat: torch.Tensor, ex: dict = ex, names: list = names, shapes: list = shapes) -> torch.Tensor:
                pieces = torch.split(flat, [math.prod(s) for s in shapes])
                update = {name: p.reshape(s) for name, p, s in zip(names, pieces, shapes, strict=True)}
                out = functional_call(backbone, {**params, **update}, args=(), kwargs=ex)
                return pool(out.last_hidden_state, ex["attention_mask"], "cls")[0]

            jac = torch.autograd.functional.jacobian(phi, flat0)  # [h, P_b], h backward passes
            rows.append(torch.einsum("ch,hp->cp", v, jac))
            del jac
        j = torch.stack(rows)
        kernel += torch.einsum("ncp,mdp->ncmd", j, j)
    seconds = time.perf_counter() - started
    return {"ft_no_word": kernel.double().numpy(), "seconds": seconds, "examples": k}


def torchfunc(n: int) -> dict:
    """The torch.func tutorial recipe: jacrev of g (per-example loop), then einsum; since both example sets
    are the same N examples here, the Jacobians are computed once (the tutorial computes them per set)."""
    import torch
    from torch.func import functional_call, jacrev

    from dynascope.models.classifier import pool

    clf, batch = _setup(n)
    backbone, v = clf.backbone, clf.head.weight.detach()
    params = {name: p.detach() for name, p in backbone.named_parameters()}

    def g_single(p: dict, ex: dict) -> torch.Tensor:
        out = functional_call(backbone, p, args=(), kwargs=ex)
        return pool(out.last_hidden_state, ex["attention_mask"], "cls")[0] @ v.T

    def jacobians() -> list[torch.Tensor]:
        jac = [jacrev(g_single)(params, {key: t[i : i + 1] for key, t in batch.items()}) for i in range(n)]
        return [torch.stack([j[name] for j in jac]).flatten(2) for name in params]  # per parameter [N, C, P]

    started = time.perf_counter()
    with torch.no_grad():
        jac = jacobians()
        kernel = torch.stack([torch.einsum("Naf,Mbf->NaMb", a, a) for a in jac]).sum(0)
    seconds = time.perf_counter() - started
    return {"ft": kernel.double().numpy(), "seconds": seconds}


def nested_hutchinson(op: Any, probes: list[int], seed: int, chunk: int = 8) -> list[dict]:
    """Hutchinson estimates for every K in ``probes`` from the prefixes of one seeded probe sequence.

    ``hutchinson_samples`` yields the same probes as ``hutchinson_trace(op, K, seed, chunk)`` uses, so each
    prefix estimate equals that call's result; its ``seconds`` is the measured time of the chunks it uses.
    """
    from dynascope.ntk.trace import hutchinson_samples

    samples: list[float] = []
    chunk_seconds: list[float] = []
    started = time.perf_counter()
    for z in hutchinson_samples(op, max(probes), seed, chunk):
        samples += z.tolist()
        chunk_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
    rows = []
    for k in probes:
        z = np.array(samples[:k])
        rows.append(
            {
                "method": "hutchinson",
                "probes": k,
                "seed": seed,
                "estimate": float(z.mean()),
                "stderr": float(z.std(ddof=1) / math.sqrt(k)),
                "seconds": float(sum(chunk_seconds[: math.ceil(k / chunk)])),
            }
        )
    return rows


def trace_feature_kernel(n: int, probes: list[int], seeds: int, hutchpp_seeds: int) -> dict:
    """tr(Θ^φ): exact (all h output rows per example) vs Hutchinson (nested prefixes, ``seeds`` seeds) and
    Hutch++ (one run per probe count, ``hutchpp_seeds`` seeds), with seconds."""
    from dynascope.ntk.functional import kernel_model
    from dynascope.ntk.trace import JacobianOperator, hutchpp_trace

    clf, batch = _setup(n)
    op = JacobianOperator(kernel_model(clf), batch, output="features")
    started = time.perf_counter()
    exact = op.exact_trace()
    out: dict[str, Any] = {"exact": exact, "exact_seconds": time.perf_counter() - started, "rows": []}
    for seed in range(seeds):
        out["rows"] += nested_hutchinson(op, probes, seed)
    for k in probes:
        for seed in range(hutchpp_seeds):
            started = time.perf_counter()
            est = hutchpp_trace(op, k, seed)
            out["rows"].append(
                {
                    "method": "hutch++",
                    "probes": k,
                    "seed": seed,
                    "estimate": est.estimate,
                    "stderr": est.stderr,
                    "seconds": time.perf_counter() - started,
                }
            )
    return out


def trace_ft(n: int, probes: int) -> dict:
    """tr(F): exact (C VJPs per example) vs one Hutchinson estimate with ``probes`` probes."""
    from dynascope.ntk.functional import kernel_model
    from dynascope.ntk.trace import JacobianOperator, hutchinson_trace

    clf, batch = _setup(n)
    op = JacobianOperator(kernel_model(clf), batch)
    started = time.perf_counter()
    exact = op.exact_trace()
    exact_seconds = time.perf_counter() - started
    started = time.perf_counter()
    est = hutchinson_trace(op, probes, 0)
    return {
        "exact": exact,
        "exact_seconds": exact_seconds,
        "estimate": est.estimate,
        "stderr": est.stderr,
        "estimate_seconds": time.perf_counter() - started,
        "probes": probes,
    }


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)))


def bench_kernels(args: argparse.Namespace) -> tuple[dict, str]:
    """The F-kernel comparison for every N."""
    results: dict[str, Any] = {}
    rows = []
    p_total = 22.7e6  # parameters of the default model, for the torch.func memory prediction
    last_torchfunc: tuple[int, float] | None = None  # (N, seconds) of the largest torch.func run
    for n in args.sizes:
        entry: dict[str, Any] = {}
        mine = measure(ours, n, args.memory_gb)
        ref = mine["value"]
        entry["ours"] = {"seconds": ref["seconds"], "peak_rss_mb": mine["peak_rss_mb"], "max_abs_diff": 0.0}
        if not args.skip_published:
            k = min(n, args.published_examples)
            run = measure(published, n, k)
            predicted = run["value"]["seconds"] * n / k
            if k < n and predicted <= args.full_run_limit:
                run, k, predicted = measure(published, n, n), n, None
            ours_sub = (ref["ft"] - ref["word"])[:k, :, :k, :]
            entry["published"] = {
                "seconds": run["value"]["seconds"] if k == n else predicted,
                "peak_rss_mb": run["peak_rss_mb"],
                "max_abs_diff": _max_abs(run["value"]["ft_no_word"], ours_sub),
                "max_abs_kernel": float(np.max(np.abs(ours_sub))),
                "extrapolated_from_examples": None if k == n else k,
                "measured_seconds": run["value"]["seconds"],
                "word_block": "excluded on both sides (sampled in the published code)",
            }
            entry["speedup_vs_published"] = entry["published"]["seconds"] / ref["seconds"]
        if not args.skip_torchfunc:
            need_gb = n * 3 * p_total * 4 / 2**30
            if need_gb > args.max_gb and last_torchfunc is None:
                entry["torchfunc"] = {"skipped": f"needs ≈ {need_gb:.1f} GB for N·C·P float32 Jacobians"}
            elif need_gb > args.max_gb:
                n0, s0 = last_torchfunc
                entry["torchfunc"] = {
                    "seconds": s0 * n / n0,
                    "peak_rss_mb": None,
                    "max_abs_diff": None,
                    "extrapolated_from_n": n0,
                    "not_run": f"needs ≈ {need_gb:.1f} GB for N·C·P float32 Jacobians (> --max-gb {args.max_gb:g})",
                }
                entry["speedup_vs_torchfunc"] = entry["torchfunc"]["seconds"] / ref["seconds"]
            else:
                run = measure(torchfunc, n)
                entry["torchfunc"] = {
                    "seconds": run["value"]["seconds"],
                    "peak_rss_mb": run["peak_rss_mb"],
                    "max_abs_diff": _max_abs(run["value"]["ft"], ref["ft"]),
                }
                entry["speedup_vs_torchfunc"] = run["value"]["seconds"] / ref["seconds"]
                last_torchfunc = (n, run["value"]["seconds"])
        results[str(n)] = entry
        for method in ("ours", "published", "torchfunc"):
            m = entry.get(method)
            if m is None:
                continue
            if "skipped" in m:
                rows.append([n, method, None, None, None, m["skipped"]])
                continue
            note = (
                f"extrapolated from {m['extrapolated_from_examples']} examples"
                if m.get("extrapolated_from_examples")
                else ""
            )
            if m.get("extrapolated_from_n"):
                note = f"not run ({m['not_run']}); time extrapolated linearly from N = {m['extrapolated_from_n']}"
            if method == "published":
                note = (note + "; " if note else "") + "word block excluded"
            rows.append([n, method, m["seconds"], m["peak_rss_mb"], m["max_abs_diff"], note])
        speed = [f"vs published ×{entry['speedup_vs_published']:.1f}" if "speedup_vs_published" in entry else ""]
        speed.append(f"vs torch.func ×{entry['speedup_vs_torchfunc']:.1f}" if "speedup_vs_torchfunc" in entry else "")
        rows.append([n, "speed-up of ours", None, None, None, ", ".join(s for s in speed if s)])
    md = "## F kernel (CB, default model, C = 3, all backbone parameters)\n\n" + markdown_table(
        ["N", "method", "seconds", "peak RSS (MB)", "max |Δ| vs ours", "note"], rows
    )
    return results, md


def bench_traces(args: argparse.Namespace) -> tuple[dict, str]:
    """Trace estimators: Θ^φ at --trace-n, tr(F) for each N, and the crossover."""
    feature = measure(trace_feature_kernel, args.trace_n, args.probes, args.seeds, args.hutchpp_seeds)["value"]
    exact = feature["exact"]
    table = []
    summary: dict[str, Any] = {}
    for method in ("hutchinson", "hutch++"):
        for k in args.probes:
            runs = [r for r in feature["rows"] if r["method"] == method and r["probes"] == k]
            errors = [abs(r["estimate"] - exact) / exact for r in runs]
            seconds = float(np.mean([r["seconds"] for r in runs]))
            summary[f"{method}/{k}"] = {"mean_rel_error": float(np.mean(errors)), "seconds": seconds}
            table.append(
                [method, k, float(np.mean(errors)), float(np.max(errors)), seconds, seconds / feature["exact_seconds"]]
            )
    h = 384
    n = args.trace_n
    c_exact = feature["exact_seconds"] / n  # seconds of the exact (ghost-norm) trace per example, all h rows
    hutch_runs = [r for r in feature["rows"] if r["method"] == "hutchinson"]
    c_jvp = float(np.mean([r["seconds"] / (n * r["probes"]) for r in hutch_runs]))  # seconds per probe per example
    ft_rows, ft_results = [], {}
    for size in args.sizes:
        r = measure(trace_ft, size, args.ft_probes)["value"]
        ft_results[str(size)] = r
        ft_rows.append(
            [
                size,
                r["exact"],
                r["exact_seconds"],
                r["estimate"],
                abs(r["estimate"] - r["exact"]) / r["exact"],
                r["estimate_seconds"],
            ]
        )
    largest = ft_results[str(max(args.sizes))]
    k_star_phi = c_exact / c_jvp
    k_star_f = args.ft_probes * largest["exact_seconds"] / largest["estimate_seconds"]
    needed = {}
    for method in ("hutchinson", "hutch++"):
        good = [k for k in args.probes if summary[f"{method}/{k}"]["mean_rel_error"] <= TARGET_ERROR]
        needed[method] = min(good) if good else None
    ft_rel_stderr = largest["stderr"] / largest["exact"]
    ft_needed = args.ft_probes * (ft_rel_stderr / TARGET_ERROR) ** 2  # the standard error ∝ 1/√K
    crossover = {
        "exact_seconds_per_example": c_exact,
        "probe_seconds_per_example": c_jvp,
        "k_star_feature_kernel": k_star_phi,
        "k_star_ft": k_star_f,
        "target_rel_error": TARGET_ERROR,
        "probes_needed_feature_kernel": needed,
        "probes_needed_ft_estimate": ft_needed,
        "n": n,
        "C": 3,
        "h": h,
    }

    def verdict(k: float | None, k_star: float) -> str:
        if k is None:
            return f"not reached within {max(args.probes)} probes"
        return f"{k:.0f} probes needed, {'below' if k < k_star else 'above'} K* = {k_star:.0f}"

    statement = (
        f"The exact trace of Θ^φ costs {c_exact:.2f} s per example (all h = {h} output rows, ghost norms) and "
        f"one JVP probe {c_jvp * 1e3:.0f} ms per example, so an estimator with K probes is cheaper when "
        f"K < K* = c_exact/c_probe ≈ {k_star_phi:.0f}; both costs are linear in N, so K* does not depend on N, and "
        f"c_exact grows with the number of outputs m (h for Θ^φ, C for F) while c_probe does not. At N = {n} "
        f"for {TARGET_ERROR:.0%} mean relative error: Hutchinson {verdict(needed['hutchinson'], k_star_phi)}; "
        f"Hutch++ {verdict(needed['hutch++'], k_star_phi)}. For F (m = C = 3) the measured K* at "
        f"N = {max(args.sizes)} is {k_star_f:.1f} probes, while Hutchinson needs ≈ {ft_needed:.0f} probes for a "
        f"{TARGET_ERROR:.0%} relative standard error (from its standard error at {args.ft_probes} probes), so "
        f"the exact trace {'wins' if ft_needed > k_star_f else 'loses'}: small-output traces should be exact, "
        "wide ones (feature kernels, h in the hundreds) estimated."
    )
    crossover["statement"] = statement
    md = (
        f"## Trace of the feature kernel Θ^φ (N = {n}, h = {h}): "
        f"exact {exact:.6g} in {feature['exact_seconds']:.1f} s\n\n"
        + markdown_table(["method", "probes", "mean rel. error", "max rel. error", "seconds", "cost / exact"], table)
        + f"\n## tr(F) (C = 3): exact vs Hutchinson with {args.ft_probes} probes\n\n"
        + markdown_table(["N", "exact", "exact s", "estimate", "rel. error", "estimate s"], ft_rows)
        + "\n## Crossover\n\n"
        + statement
        + "\n"
    )
    return {"feature_kernel": feature, "feature_summary": summary, "ft": ft_results, "crossover": crossover}, md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="16,32,64", help="comma list of N (training examples)")
    parser.add_argument("--memory-gb", type=float, default=4.0, help="our Jacobian-row budget")
    parser.add_argument("--skip-published", action="store_true")
    parser.add_argument("--skip-torchfunc", action="store_true")
    parser.add_argument("--skip-traces", action="store_true")
    parser.add_argument("--skip-kernels", action="store_true")
    parser.add_argument("--published-examples", type=int, default=2, help="subset size when extrapolating")
    parser.add_argument(
        "--full-run-limit", type=float, default=600.0, help="extrapolate the published run when predicted above (s)"
    )
    parser.add_argument("--max-gb", type=float, default=12.0, help="skip torch.func when its Jacobians exceed this")
    parser.add_argument("--trace-n", type=int, default=64)
    parser.add_argument("--probes", default="8,16,32", help="probe counts (Θ^φ); Hutch++ rounds down to 3·k")
    parser.add_argument("--ft-probes", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=3, help="Hutchinson seeds (nested probe prefixes)")
    parser.add_argument("--hutchpp-seeds", type=int, default=2, help="Hutch++ seeds (one run per probe count)")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.probes = [int(s) for s in args.probes.split(",")]
    os.environ.setdefault("DYNASCOPE_QUIET", "1")
    data: dict[str, Any] = {"task": TASK, "model": "default", "max_length": MAX_LENGTH, "argv": vars(args)}
    previous = read_previous("ntk")
    sections = (("kernels", args.skip_kernels, bench_kernels), ("traces", args.skip_traces, bench_traces))
    for section, skip, run in sections:
        if not skip:
            data[section], data[f"{section}_md"] = run(args)
            data[f"{section}_environment"] = environment()
        elif section in previous:  # a section skipped now keeps its numbers from the run that measured it
            for key in (section, f"{section}_md", f"{section}_environment"):
                data[key] = previous.get(key)
    md = "\n".join(data[f"{section}_md"] for section in ("kernels", "traces") if data.get(f"{section}_md"))
    json_path, md_path = write_results("ntk", data, md, "NTK kernels and trace estimators")
    print(md)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
