"""The five recipes — LP, FT, LP-FT, LoRA, LP-LoRA — as one run that writes a run directory.

A run: load the task and the backbone; build the classifier (seeded head); compute φ of the pre-trained
backbone on every evaluated split; LP fits the head on φ of the training set (LP, LP-FT, LP-LoRA); LoRA is
injected (LoRA, LP-LoRA); the FT stage trains (all but LP); finally logits and φ after training are computed.
The directory contract (``config.json``, ``env.json``, ``metrics.json``, ``logits.npz``, ``features.npz``,
``head.safetensors``, ``adapter.safetensors``) is documented in the README; ``metrics.json`` is written last and
marks the run finished.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynascope.data import load_task, stratified_subset
from dynascope.data.encode import encode_split
from dynascope.errors import ConfigError
from dynascope.models.backbone import load_backbone
from dynascope.models.classifier import POOLINGS, Classifier
from dynascope.models.lora import LoraSettings, apply_lora, count_trainable, load_lora_state, lora_state_dict
from dynascope.progress import say
from dynascope.runio import environment, prepare_run_dir, read_json, write_json, write_npz, write_safetensors
from dynascope.train.evaluate import classification_metrics, predict
from dynascope.train.finetune import FinetuneSettings, finetune
from dynascope.train.probe import ProbeSettings, fit_linear_probe

METHODS = ("lp", "ft", "lp-ft", "lora", "lp-lora")
CHECKPOINT_DIR = "checkpoint"

# (batch size, learning rate) per task and method: the paper's scripts / Table 6 (roberta-base, 10 epochs).
PAPER_HPARAMS: dict[str, dict[str, tuple[int, float]]] = {
    "cb": {"ft": (16, 5e-5), "lora": (16, 1e-3), "lp-ft": (8, 5e-6), "lp-lora": (8, 1e-4)},
    "rte": {"ft": (16, 1e-5), "lora": (16, 1e-3), "lp-ft": (8, 1e-5), "lp-lora": (8, 5e-4)},
    "cola": {"ft": (32, 5e-5), "lora": (16, 1e-3), "lp-ft": (8, 1e-5), "lp-lora": (8, 1e-3)},
    "sst2": {"ft": (32, 1e-5), "lora": (32, 5e-4), "lp-ft": (8, 1e-5), "lp-lora": (8, 1e-3)},
    "mrpc": {"ft": (16, 1e-5), "lora": (32, 5e-4), "lp-ft": (8, 1e-5), "lp-lora": (8, 1e-3)},
    "sst5-3": {
        "ft": (16, 1e-5),
        "lora": (16, 1e-3),
        "lp-ft": (8, 1e-6),
        "lp-lora": (8, 5e-4),
    },  # BOSS Amazon row
}
DEFAULT_HPARAMS = PAPER_HPARAMS["rte"]


def _lp_stage(method: str) -> bool:
    return method in ("lp", "lp-ft", "lp-lora")


def _lora_stage(method: str) -> bool:
    return method in ("lora", "lp-lora")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a fine-tuning run (``lr``/``batch_size`` None = the paper's value for the task)."""

    task: str
    method: str
    seed: int = 1001
    model: str = "default"
    pooling: str = "cls"
    epochs: int = 10
    lr: float | None = None
    batch_size: int | None = None
    eval_batch_size: int = 64
    max_train: int | None = None
    max_eval: int | None = None
    max_length: int = 128
    head_init_std: float = 0.02
    head_dropout: float = 0.1
    head_norm: float | None = None
    lp: ProbeSettings = field(default_factory=ProbeSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    save_backbone: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}; got {self.pooling!r}")
        for name in ("max_train", "max_eval"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ConfigError(f"{name} must be at least 2 when given, got {value}")
        if self.epochs < 1 or self.max_length < 8 or self.eval_batch_size < 1:
            raise ConfigError(f"epochs >= 1, max_length >= 8 and eval_batch_size >= 1 required; got {self}")
        if self.head_norm is not None and not self.head_norm > 0:
            raise ConfigError(f"head_norm must be positive, got {self.head_norm}")

    def resolved(self) -> RunConfig:
        """The config with ``lr`` and ``batch_size`` filled in from the paper's table where left unset."""
        if self.method == "lp":
            return self
        bs, lr = PAPER_HPARAMS.get(self.task, DEFAULT_HPARAMS)[self.method]
        return dataclasses.replace(
            self, lr=self.lr if self.lr is not None else lr, batch_size=self.batch_size or bs
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (LoRA settings only for LoRA recipes)."""
        out = asdict(self)
        out["lp"] = self.lp.to_dict()
        out["lora"] = self.lora.to_dict() if _lora_stage(self.method) else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Inverse of ``to_dict`` (unknown keys are an error)."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown run config keys {unknown}; known: {sorted(known)}")
        lp = ProbeSettings(**(data.pop("lp", None) or {}))
        lora_data = data.pop("lora", None) or {}
        if lora_data.get("target_modules") is not None:
            lora_data["target_modules"] = tuple(lora_data["target_modules"])
        return cls(lp=lp, lora=LoraSettings(**lora_data), **data)


def _cap(split: Any, n: int | None, seed: int) -> Any:
    """A deterministic, label-stratified subset of at most ``n`` examples (the split itself when smaller)."""
    if n is None or len(split) <= n:
        return split
    return split.subset(stratified_subset(split.labels, n, seed))


def eval_splits(task: Any, max_eval: int | None, seed: int) -> dict[str, Any]:
    """The evaluated splits by run-directory key: ``val``, ``test``, ``ood.NAME``, ``near_id.NAME``."""
    splits = {"val": task.val, "test": _cap(task.test, max_eval, seed)}
    splits.update({f"ood.{k}": _cap(v, max_eval, seed) for k, v in task.ood.items()})
    splits.update({f"near_id.{k}": _cap(v, max_eval, seed) for k, v in task.near_id.items()})
    return splits


def _metrics_by_group(
    task: Any, logits: dict[str, np.ndarray], labels: dict[str, np.ndarray]
) -> dict[str, Any]:
    out: dict[str, Any] = {"ood": {}, "near_id": {}}
    for key, value in logits.items():
        metrics = classification_metrics(value, labels[key], tuple(task.metrics))
        group, _, name = key.partition(".")
        if name:
            out[group][name] = metrics
        else:
            out[key] = metrics
    return out


def run(
    config: RunConfig, out: str | Path, *, data_dir: str | Path | None = None, overwrite: bool = False
) -> dict:
    """Run one recipe into ``out`` and return its metrics (see the module docstring)."""
    started = time.perf_counter()
    config = config.resolved()
    out = prepare_run_dir(out, overwrite=overwrite)
    write_json(out / "config.json", config.to_dict())
    write_json(out / "env.json", environment(config.seed))
    torch.manual_seed(config.seed)

    task = load_task(config.task, data_dir, max_train=config.max_train, seed=config.seed)
    backbone, tokenizer = load_backbone(config.model, attn_implementation="sdpa")  # no JVPs in training
    encode = lambda split: encode_split(split, tokenizer, config.max_length)  # noqa: E731
    train_enc = encode(task.train)
    evals = {key: encode(split) for key, split in eval_splits(task, config.max_eval, config.seed).items()}
    clf = Classifier(
        backbone,
        task.num_labels,
        pooling=config.pooling,
        head_init_std=config.head_init_std,
        head_dropout=config.head_dropout,
        seed=config.seed,
    )
    norm_init = clf.head_norm()
    say(
        f"{config.task}/{config.method} seed {config.seed}: {len(train_enc)} train, "
        f"{', '.join(f'{k} {len(v)}' for k, v in evals.items())}; ‖V‖ init {norm_init:.3f}"
    )
    phi_pre = {
        key: predict(clf, enc, config.eval_batch_size, desc=f"φ pre {key}")[1] for key, enc in evals.items()
    }

    norm_after_lp = None
    lp_info: dict[str, Any] | None = None
    if _lp_stage(config.method):
        _, phi_train = predict(clf, train_enc, config.eval_batch_size, desc="φ train")
        probe = fit_linear_probe(
            phi_train,
            train_enc.labels,
            task.num_labels,
            config.lp,
            seed=config.seed,
            init=(clf.head.weight.detach().double().numpy(), clf.head.bias.detach().double().numpy()),
        )
        clf.set_head(torch.as_tensor(probe.weight), torch.as_tensor(probe.bias))
        norm_after_lp = clf.head_norm()
        lp_info = {
            "strength": probe.strength,
            "train_accuracy": probe.train_accuracy,
            "norm_trajectory": probe.norm_trajectory or None,
        }
        say(f"LP: C = {probe.strength}, train acc {probe.train_accuracy:.4f}, ‖V‖ {norm_after_lp:.3f}")

    history: list[dict] = []
    best_epoch = None
    trainable = 0
    norm_before_ft = None
    if config.method != "lp":
        if config.head_norm is not None:
            clf.scale_head(config.head_norm)
        norm_before_ft = clf.head_norm()
        if _lora_stage(config.method):
            apply_lora(clf, config.lora, seed=config.seed)
        else:
            for p in clf.parameters():
                p.requires_grad_(True)
        trainable = count_trainable(clf)
        settings = FinetuneSettings(
            epochs=config.epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            eval_batch_size=config.eval_batch_size,
            select_metric="mcc" if "mcc" in task.metrics else "accuracy",
        )
        result = finetune(
            clf,
            train_enc,
            evals["val"],
            settings,
            seed=config.seed,
            val_metrics=tuple(task.metrics),
            checkpoint_dir=out / CHECKPOINT_DIR,
        )
        history, best_epoch = result.history, result.best_epoch

    logits: dict[str, np.ndarray] = {}
    phi_post: dict[str, np.ndarray] = {}
    for key, enc in evals.items():
        if config.method == "lp":
            phi_post[key] = phi_pre[key]
            with torch.no_grad():
                logits[key] = clf.head(torch.as_tensor(phi_pre[key])).numpy()
        else:
            logits[key], phi_post[key] = predict(clf, enc, config.eval_batch_size, desc=f"φ post {key}")
    labels = {key: enc.labels for key, enc in evals.items()}

    write_safetensors(out / "head.safetensors", {"weight": clf.head.weight, "bias": clf.head.bias})
    if _lora_stage(config.method):
        write_safetensors(out / "adapter.safetensors", lora_state_dict(clf))
    if config.save_backbone and config.method in ("ft", "lp-ft"):
        write_safetensors(out / "backbone.safetensors", dict(clf.backbone.state_dict()))
    logit_arrays: dict[str, np.ndarray] = {}
    feature_arrays: dict[str, np.ndarray] = {}
    for key in evals:
        logit_arrays.update({f"{key}.logits": logits[key], f"{key}.labels": labels[key]})
        feature_arrays.update(
            {f"{key}.phi_pre": phi_pre[key], f"{key}.phi_post": phi_post[key], f"{key}.labels": labels[key]}
        )
    write_npz(out / "logits.npz", logit_arrays)
    write_npz(out / "features.npz", feature_arrays)
    final_norm = clf.head_norm()
    metrics = {
        "task": config.task,
        "method": config.method,
        "seed": config.seed,
        "model": config.model,
        "num_labels": task.num_labels,
        "label_names": list(task.label_names),
        **_metrics_by_group(task, logits, labels),
        "head_norm": {
            "init": norm_init,
            "after_lp": norm_after_lp,
            "before_ft": norm_before_ft,
            "final": final_norm,
            "per_epoch": [row["head_norm"] for row in history],
        },
        "lp": lp_info,
        "history": history,
        "best_epoch": best_epoch,
        "trainable_parameters": trainable,
        "n_train": len(train_enc),
        "seconds": time.perf_counter() - started,
    }
    write_json(out / "metrics.json", metrics)
    ckpt = out / CHECKPOINT_DIR
    if ckpt.exists():
        for item in ckpt.iterdir():
            item.unlink()
        ckpt.rmdir()
    return metrics


def load_run_classifier(
    run_dir: str | Path, attn_implementation: str = "eager"
) -> tuple[Classifier, Any, RunConfig]:
    """Rebuild the trained classifier of a finished run: (classifier in eval mode, tokenizer, config)."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").exists():
        raise ConfigError(f"{run_dir} is not a finished run (no metrics.json)")
    config = RunConfig.from_dict(read_json(run_dir / "config.json"))
    metrics = read_json(run_dir / "metrics.json")
    backbone, tokenizer = load_backbone(config.model, attn_implementation=attn_implementation)
    clf = Classifier(
        backbone, metrics["num_labels"], pooling=config.pooling, head_dropout=config.head_dropout
    )
    if config.method in ("ft", "lp-ft"):
        path = run_dir / "backbone.safetensors"
        if not path.exists():
            raise ConfigError(
                f"{run_dir} was saved without its fine-tuned backbone; rerun it with --save-backbone"
            )
        backbone.load_state_dict(load_file(str(path)))
    if _lora_stage(config.method):
        apply_lora(clf, config.lora, seed=config.seed)
        load_lora_state(clf, load_file(str(run_dir / "adapter.safetensors")))
    head = load_file(str(run_dir / "head.safetensors"))
    clf.set_head(head["weight"], head["bias"])
    clf.eval()
    return clf, tokenizer, config
