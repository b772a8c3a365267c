"""Training-loop benchmark: our FT loop vs a plain Hugging Face ``Trainer``, and LP vs one forward pass.

FT: the same default model, data and batch size, one epoch each, full fine-tuning; ours pads each batch to its
longest sequence with length bucketing. Two ``Trainer`` peers: one pads every example to the maximum length
(128), as the paper's code does; the other is the ``Trainer`` a user would configure, with dynamic padding
(``DataCollatorWithPadding``) and ``group_by_length=True`` (batches of similar lengths), the fair comparison.
LP: wall time of our whole LP (features of the training set in eval mode + cross-validated
logistic regression) against one forward pass over the same training set. Each measurement runs in its own
spawned process (peak RSS per method); ratios come from the same run.

    python bench/train.py [--tasks cb,sst2] [--max-train 512] [--epochs 1]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from _common import markdown_table, measure, write_results

BATCH = 16
MAX_LENGTH = 128


def _setup(task_name: str, max_train: int):
    import torch

    from dynascope.data import load_task
    from dynascope.data.encode import encode_split
    from dynascope.models import Classifier, load_backbone

    torch.manual_seed(0)
    task = load_task(task_name, max_train=max_train, seed=0)
    backbone, tokenizer = load_backbone("default", attn_implementation="sdpa")
    clf = Classifier(backbone, task.num_labels, seed=0)
    return task, tokenizer, clf, encode_split(task.train, tokenizer, MAX_LENGTH)


def ours_ft(task_name: str, max_train: int, epochs: int) -> dict:
    """Examples per second of ``dynascope.train.finetune`` (validation on 8 examples, negligible)."""
    from dynascope.train.finetune import FinetuneSettings, finetune

    task, tokenizer, clf, train = _setup(task_name, max_train)
    from dynascope.data.encode import encode_split

    val = encode_split(task.val.subset(range(8)), tokenizer, MAX_LENGTH)
    started = time.perf_counter()
    finetune(clf, train, val, FinetuneSettings(epochs=epochs, lr=5e-5, batch_size=BATCH), seed=0)
    seconds = time.perf_counter() - started
    return {"examples": len(train) * epochs, "train_seconds": seconds, "mean_tokens": float(train.lengths.mean())}


def _grouping(on: bool) -> dict:
    """``TrainingArguments`` keywords for length-grouped batches: ``train_sampling_strategy`` in recent
    transformers, ``group_by_length`` in older ones."""
    import inspect

    from transformers import TrainingArguments

    if "train_sampling_strategy" in inspect.signature(TrainingArguments).parameters:
        return {"train_sampling_strategy": "group_by_length" if on else "random"}
    return {"group_by_length": on}


def trainer_model(clf):
    """``clf`` as a ``Trainer`` model: it takes ``labels`` and returns the cross-entropy loss with the logits."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clf = clf

        def forward(self, labels=None, **inputs):
            logits = self.clf(**inputs)
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    return Wrapped()


def hf_trainer_ft(task_name: str, max_train: int, epochs: int, dynamic: bool = False) -> dict:
    """Examples per second of a ``transformers.Trainer``: padding every example to max length, or (``dynamic``)
    padding each batch to its longest example with ``group_by_length=True``."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    task, tokenizer, clf, _ = _setup(task_name, max_train)

    texts, pairs = list(task.train.texts), list(task.train.pairs) if task.train.pairs else None
    padding = False if dynamic else "max_length"
    enc = tokenizer(texts, pairs, truncation=True, max_length=MAX_LENGTH, padding=padding)
    rows = [{**{k: enc[k][i] for k in enc}, "labels": int(task.train.labels[i])} for i in range(len(texts))]
    args = TrainingArguments(
        output_dir=os.path.join(os.environ.get("TMPDIR", "/tmp"), "dynascope-bench-trainer"),
        per_device_train_batch_size=BATCH, learning_rate=5e-5, num_train_epochs=epochs, weight_decay=0.0,
        warmup_steps=0, max_grad_norm=1.0, lr_scheduler_type="linear", save_strategy="no", eval_strategy="no",
        logging_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, seed=0,
        remove_unused_columns=False, **_grouping(dynamic),
    )

    def collate(batch):
        return {k: torch.tensor([row[k] for row in batch]) for k in batch[0]}

    collator = DataCollatorWithPadding(tokenizer) if dynamic else collate
    trainer = Trainer(model=trainer_model(clf), args=args, train_dataset=rows, data_collator=collator)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    tokens = float(np.mean([len(r["input_ids"]) for r in rows]))
    return {"examples": len(rows) * epochs, "train_seconds": seconds, "mean_tokens": tokens}


def ours_lp(task_name: str, max_train: int) -> dict:
    """Wall time of LP: φ of the training set in eval mode, then the cross-validated logistic regression."""
    from dynascope.train.evaluate import predict
    from dynascope.train.probe import fit_linear_probe

    task, _, clf, train = _setup(task_name, max_train)
    started = time.perf_counter()
    _, phi = predict(clf, train, 64)
    forward = time.perf_counter() - started
    fit_linear_probe(phi, train.labels, task.num_labels, seed=0)
    return {"seconds": time.perf_counter() - started, "forward_seconds": forward}


def one_forward(task_name: str, max_train: int) -> dict:
    """One forward pass over the training set, batched exactly as LP's feature pass (batch 64, length-sorted)."""
    import torch

    from dynascope.data.encode import iterate_batches

    _, _, clf, train = _setup(task_name, max_train)
    clf.eval()
    started = time.perf_counter()
    with torch.no_grad():
        for batch, _ in iterate_batches(train, 64):
            clf(**batch)
    return {"seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="cb,sst2")
    parser.add_argument("--max-train", type=int, default=480)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    results: dict = {"batch_size": BATCH, "max_length": MAX_LENGTH, "epochs": args.epochs, "tasks": {}}
    ft_rows, lp_rows = [], []
    for task in args.tasks.split(","):
        ours = measure(ours_ft, task, args.max_train, args.epochs)
        hf = measure(hf_trainer_ft, task, args.max_train, args.epochs)
        hf_dyn = measure(hf_trainer_ft, task, args.max_train, args.epochs, True)
        lp = measure(ours_lp, task, args.max_train)
        fwd = measure(one_forward, task, args.max_train)
        rate = {name: m["value"]["examples"] / m["value"]["train_seconds"]
                for name, m in (("ours", ours), ("hf", hf), ("hf_dyn", hf_dyn))}
        lp_ratio = lp["value"]["seconds"] / fwd["value"]["seconds"]
        results["tasks"][task] = {
            "ft_ours": {**ours["value"], "examples_per_second": rate["ours"], "peak_rss_mb": ours["peak_rss_mb"]},
            "ft_hf_trainer": {**hf["value"], "examples_per_second": rate["hf"], "peak_rss_mb": hf["peak_rss_mb"]},
            "ft_hf_trainer_dynamic": {
                **hf_dyn["value"], "examples_per_second": rate["hf_dyn"], "peak_rss_mb": hf_dyn["peak_rss_mb"]
            },
            "ft_speedup": rate["ours"] / rate["hf"],
            "ft_speedup_vs_dynamic": rate["ours"] / rate["hf_dyn"],
            "lp": {**lp["value"], "peak_rss_mb": lp["peak_rss_mb"]},
            "one_forward": {**fwd["value"], "peak_rss_mb": fwd["peak_rss_mb"]},
            "lp_over_forward": lp_ratio,
        }
        ft_rows.append([task, ours["value"]["examples"], rate["ours"], rate["hf"], rate["ours"] / rate["hf"],
                        rate["hf_dyn"], rate["ours"] / rate["hf_dyn"], ours["value"]["mean_tokens"],
                        hf_dyn["value"]["mean_tokens"], ours["peak_rss_mb"], hf["peak_rss_mb"],
                        hf_dyn["peak_rss_mb"]])
        lp_rows.append([task, lp["value"]["seconds"], lp["value"]["forward_seconds"], fwd["value"]["seconds"],
                        lp_ratio])
    md = ("## FT throughput (goals: ours ≥ 1.3× the max-length Trainer, ≥ 1.2× the dynamic-padding Trainer)\n\n"
          + markdown_table(
              ["task", "examples", "ours ex/s", "Trainer (pad 128) ex/s", "speed-up", "Trainer (dynamic) ex/s",
               "speed-up vs dynamic", "ours mean tokens", "dynamic mean tokens", "ours peak MB",
               "Trainer (pad 128) peak MB", "Trainer (dynamic) peak MB"], ft_rows))
    md += "\n## LP wall time vs one forward pass over the training set (goal: ≤ 1.5×)\n\n" + markdown_table(
        ["task", "LP s", "of which features s", "one forward s", "ratio"], lp_rows)
    md += f"\nBatch {BATCH}, max length {MAX_LENGTH}, {args.epochs} epoch(s), training sets capped at "
    md += f"{args.max_train} examples; threads: {os.environ.get('OMP_NUM_THREADS', 'default')}.\n"
    write_results("train", results, md, "Training loop benchmark")
    print(md)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
