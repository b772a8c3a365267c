"""GPU check: FT throughput (fp32, bf16) against this project's CPU figure and the dynamic-padding ``Trainer``,
the exact F kernel for N = 256 and 1024 (C = 2, SST-2: seconds and peak GPU memory), and steps/s of a D = 512
looped model (fp32, bf16).

Meant for a GPU machine without network or dynascope installed: ``bench/gpu_check.sh`` runs it from the repo
with ``PYTHONPATH=src`` on the folder ``bench/gpu_bundle.py`` prepares (the default model with float16 weights,
loaded as float32, and the SST-2 task's files). Every stage writes ``bench/results/gpu.json`` and ``gpu.md`` as
it finishes, so a run stopped at its time limit still reports the stages it finished.

    PYTHONPATH=src python bench/gpu_check.py --bundle gpu-bundle [--device cuda] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import RESULTS, markdown_table, write_results

FT_BATCH, MAX_LENGTH = 32, 128
SIZES: dict[str, Any] = {"ft_examples": 2048, "ntk": (256, 1024), "looped_steps": 20, "looped_batch": 100}
SMOKE = {"ft_examples": 64, "ntk": (4,), "looped_steps": 1, "looped_batch": 2}
"""``--smoke`` sizes: the whole script in a minute on a CPU, to check it before a GPU run."""


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gb(device: Any) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def ft_throughput(bundle: Path, device: Any, precision: str) -> dict[str, Any]:
    """Examples/s of one FT epoch over the first SST-2 training sentences (after a short warm-up epoch)."""
    import torch

    from dynascope.data import load_task
    from dynascope.data.encode import encode_split
    from dynascope.models import Classifier, load_backbone
    from dynascope.train.finetune import FinetuneSettings, finetune

    torch.manual_seed(0)
    task = load_task("sst2", bundle / "data")
    backbone, tokenizer = load_backbone(str(bundle / "model"), attn_implementation="sdpa")
    clf = Classifier(backbone, task.num_labels, pooling="cls", seed=0).to(device)
    train = encode_split(task.train.subset(range(SIZES["ft_examples"])), tokenizer, MAX_LENGTH)
    warm = encode_split(task.train.subset(range(4 * FT_BATCH)), tokenizer, MAX_LENGTH)
    val = encode_split(task.val.subset(range(8)), tokenizer, MAX_LENGTH)
    settings = FinetuneSettings(epochs=1, lr=5e-5, batch_size=FT_BATCH, precision=precision)
    finetune(clf, warm, val, settings, seed=0)  # warm-up: kernels, allocator
    _reset_peak(device)
    _sync(device)
    started = time.perf_counter()
    finetune(clf, train, val, settings, seed=0)
    _sync(device)
    seconds = time.perf_counter() - started
    return {"examples": len(train), "seconds": seconds, "examples_per_second": len(train) / seconds,
            "peak_gpu_gb": _peak_gb(device), "mean_tokens": float(train.lengths.mean())}


def trainer_ft(bundle: Path, device: Any, precision: str) -> dict[str, Any]:
    """Examples/s of the ``transformers.Trainer`` a user would configure on the same sentences and batch: dynamic
    padding (``DataCollatorWithPadding``) and length-grouped batches, fp32 or bf16 (``bf16=True``)."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from dynascope.data import load_task
    from dynascope.models import Classifier, load_backbone
    from train import _grouping, trainer_model

    torch.manual_seed(0)
    task = load_task("sst2", bundle / "data")
    backbone, tokenizer = load_backbone(str(bundle / "model"), attn_implementation="sdpa")
    clf = Classifier(backbone, task.num_labels, pooling="cls", seed=0)

    n = SIZES["ft_examples"]
    texts = list(task.train.texts[:n])
    enc = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)
    rows = [{**{k: enc[k][i] for k in enc}, "labels": int(task.train.labels[i])} for i in range(len(texts))]
    args = TrainingArguments(
        output_dir="/tmp/dynascope-gpu-trainer", per_device_train_batch_size=FT_BATCH, learning_rate=5e-5,
        num_train_epochs=1, weight_decay=0.0, warmup_steps=0, max_grad_norm=1.0, lr_scheduler_type="linear",
        save_strategy="no", eval_strategy="no", logging_strategy="no", report_to=[], use_cpu=device.type == "cpu",
        dataloader_num_workers=0, disable_tqdm=True, seed=0, remove_unused_columns=False,
        bf16=precision == "bf16", **_grouping(True),
    )
    collator = DataCollatorWithPadding(tokenizer)
    trainer = Trainer(model=trainer_model(clf), args=args, train_dataset=rows, data_collator=collator)
    _reset_peak(device)
    started = time.perf_counter()
    trainer.train()
    _sync(device)
    seconds = time.perf_counter() - started
    return {"examples": len(rows), "seconds": seconds, "examples_per_second": len(rows) / seconds,
            "peak_gpu_gb": _peak_gb(device)}


def ntk_kernel(bundle: Path, device: Any, n: int, memory_gb: float) -> dict[str, Any]:
    """Seconds and peak GPU memory of the exact F kernel (all blocks) of N stratified SST-2 training sentences."""
    import torch

    from dynascope.data import load_task, stratified_subset
    from dynascope.data.encode import collate, encode_split
    from dynascope.models import Classifier, load_backbone
    from dynascope.ntk.components import ntk_components
    from dynascope.ntk.functional import kernel_model

    torch.manual_seed(0)
    task = load_task("sst2", bundle / "data")
    backbone, tokenizer = load_backbone(str(bundle / "model"), attn_implementation="eager")
    clf = Classifier(backbone, task.num_labels, pooling="cls", seed=0).to(device).eval()
    idx = stratified_subset(task.train.labels, n, 0)
    enc = encode_split(task.train.subset(idx), tokenizer, MAX_LENGTH)
    batch = {k: v.to(device) for k, v in collate(enc, list(range(len(enc)))).items()}
    _reset_peak(device)
    _sync(device)
    started = time.perf_counter()
    comp = ntk_components(kernel_model(clf), batch, memory_gb=memory_gb)
    _sync(device)
    seconds = time.perf_counter() - started
    ft = comp.ft.double().cpu()
    return {"n": n, "classes": task.num_labels, "seconds": seconds, "peak_gpu_gb": _peak_gb(device),
            "memory_gb_budget": memory_gb, "ft_trace": float(torch.einsum("ncnc->", ft)),
            "ft_symmetric_rel": float((ft - ft.permute(2, 3, 0, 1)).norm() / ft.norm())}


def looped_steps(device: Any, precision: str) -> dict[str, Any]:
    """Optimizer steps/s of ItrSA + RMSNorm at the paper's size (D = 512, H = 8, T = 16, batch 100)."""
    import torch

    from dynascope.device import autocast
    from dynascope.dynamics.models import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(model="itrsa", width=512, heads=8, osc_size=8, norm="rms_token")).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch, steps = SIZES["looped_batch"], SIZES["looped_steps"]
    puzzles = torch.randint(0, 10, (batch, 81), device=device)
    targets = torch.randint(0, 9, (batch, 81), device=device)

    def step() -> None:
        with autocast(device, precision):
            logits = model(puzzles, 16)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 9).float(), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(min(3, steps)):
        step()
    _reset_peak(device)
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - started
    return {"steps": steps, "batch": batch, "seconds": seconds, "steps_per_second": steps / seconds,
            "peak_gpu_gb": _peak_gb(device)}


def _cpu_ft_figure() -> dict[str, Any] | None:
    """Our FT examples/s on SST-2 from ``bench/results/train.json`` (this project's 2-core CPU), if present."""
    path = RESULTS / "train.json"
    if not path.exists():
        return None
    sst2 = json.loads(path.read_text()).get("tasks", {}).get("sst2", {}).get("ft_ours")
    return None if sst2 is None else {"examples_per_second": sst2["examples_per_second"], "source": "train.json"}


def _markdown(results: dict[str, Any]) -> str:
    cpu = (results.get("cpu_ft") or {}).get("examples_per_second")
    peers = results.get("trainer", {})
    ft_rows = [[p, r["examples"], r["examples_per_second"], None if cpu is None else r["examples_per_second"] / cpu,
                (peers.get(p) or {}).get("examples_per_second"),
                r["examples_per_second"] / peers[p]["examples_per_second"] if p in peers else None,
                r["peak_gpu_gb"]] for p, r in results.get("ft", {}).items()]
    md = f"Device: {results.get('device_name', results.get('device'))}.\n\n"
    md += "## FT throughput (default model, SST-2, batch 32, one epoch)\n\n" + markdown_table(
        ["precision", "examples", "examples/s", "× the 2-core CPU figure", "dynamic-padding Trainer ex/s",
         "ours / Trainer (goal ≥ 1.2)", "peak GPU GB"], ft_rows)
    md += f"\nCPU figure: {cpu if cpu is not None else '–'} examples/s (`bench/results/train.json`, SST-2).\n"
    md += "\n## Exact F kernel (default model, SST-2, C = 2, all blocks)\n\n" + markdown_table(
        ["N", "seconds", "peak GPU GB", "memory budget GB", "‖F − Fᵀ‖/‖F‖"],
        [[r["n"], r["seconds"], r["peak_gpu_gb"], r["memory_gb_budget"], r["ft_symmetric_rel"]]
         for r in results.get("ntk", {}).values()])
    md += "\n## Looped ItrSA + RMSNorm, D = 512, H = 8, T = 16, batch 100\n\n" + markdown_table(
        ["precision", "steps/s", "peak GPU GB"],
        [[p, r["steps_per_second"], r["peak_gpu_gb"]] for p, r in results.get("looped", {}).items()])
    failed = results.get("failed", {})
    if failed:
        md += "\n## Stages that failed\n\n" + "".join(f"- {k}: {v}\n" for k, v in failed.items())
    return md


def main() -> None:
    import torch

    from dynascope.device import describe, resolve_device

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="gpu-bundle")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--memory-gb", type=float, default=40.0, help="Jacobian-row budget of the F kernel")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script on a CPU")
    args = parser.parse_args()
    if args.smoke:
        SIZES.update(SMOKE)
    device, bundle = resolve_device(args.device), Path(args.bundle)
    results: dict[str, Any] = {**describe(device), "torch": torch.__version__, "cpu_ft": _cpu_ft_figure(),
                               "sizes": dict(SIZES),
                               "ft": {}, "trainer": {}, "ntk": {}, "looped": {}, "failed": {}}
    stages = [("ft", p, lambda p=p: ft_throughput(bundle, device, p)) for p in ("fp32", "bf16")]
    stages += [("trainer", p, lambda p=p: trainer_ft(bundle, device, p)) for p in ("fp32", "bf16")]
    stages += [("ntk", str(n), lambda n=n: ntk_kernel(bundle, device, n, args.memory_gb)) for n in SIZES["ntk"]]
    stages += [("looped", p, lambda p=p: looped_steps(device, p)) for p in ("fp32", "bf16")]
    for section, key, run in stages:
        started = time.perf_counter()
        try:
            results[section][key] = run()
        except Exception as exc:  # a stage that breaks is reported, and the others still run
            results["failed"][f"{section} {key}"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        print(f"{section} {key}: {time.perf_counter() - started:.1f} s", flush=True)
        if not args.smoke:  # a smoke run checks the script; its numbers are not results
            write_results("gpu", results, _markdown(results), "GPU check")
    print(_markdown(results))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
