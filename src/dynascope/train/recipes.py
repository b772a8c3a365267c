"""The five recipes — LP, FT, LP-FT, LoRA, LP-LoRA — as one run that writes a run directory.

A run: load the task and the backbone; build the classifier (seeded head); compute φ of the pre-trained
backbone on every evaluated split; LP fits the head on φ of the training set (LP, LP-FT, LP-LoRA); LoRA is
injected (LoRA, LP-LoRA); the FT stage trains (all but LP); finally logits and φ after training are computed.
The directory's files are ``runio.FINETUNE``'s (documented in the README); the metrics file is written last and
marks the run finished.

Learning rates: ``lr=None`` takes the paper's setting for a task it reports, and for any other task runs the
grid search of :mod:`dynascope.train.lr_search`, as ``lr="auto"`` does for every task. Budgets: ``steps`` raises
the FT stage's epochs until it takes at least that many optimizer steps, so a subsampled training set still
trains. Every run records the majority-class baseline of each split and whether it *learned* (validation accuracy
above the baseline by the margin of :func:`dynascope.analysis.verdicts.learning_margin`).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynascope.analysis.verdicts import learned, learning_margin, majority_baseline
from dynascope.data import load_task, stratified_subset
from dynascope.data.encode import PAIR_TEMPLATES, encode_split, resolve_pair_template
from dynascope.device import check_precision, describe, resolve_device
from dynascope.distributed import world
from dynascope.errors import ConfigError
from dynascope.models.backbone import check_max_length, load_backbone, load_tokenizer, resolve_pooling, set_dropout
from dynascope.models.classifier import POOLING_CHOICES, Classifier, require_varying_phi
from dynascope.models.lora import LoraSettings, apply_lora, count_trainable, load_lora_state, lora_state_dict
from dynascope.progress import say
from dynascope.runio import FINETUNE
from dynascope.train.evaluate import classification_metrics, predict
from dynascope.train.finetune import FinetuneSettings, finetune
from dynascope.train.lr_search import DEFAULT_LR_GRIDS, LrChoice, check_grid, lr_key, select_lr
from dynascope.train.probe import ProbeSettings, fit_linear_probe
from dynascope.validation import check_int, check_number, check_seed

METHODS = ("lp", "ft", "lp-ft", "lora", "lp-lora")

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
DEFAULT_BATCH_SIZES = {"ft": 16, "lora": 16, "lp-ft": 8, "lp-lora": 8}  # the paper's usual sizes per recipe
AUTO_LR = "auto"
LEARNED_Z = 1.645  # one-sided 95 %: a predictor no better than the majority class exceeds the margin 5 % of the time
PHI_CHECK_N = 64  # training examples whose φ must vary before a recipe without an LP stage trains
RESOLVED = ("pooling", "pair_template")  # settings whose "auto" is resolved per model and recorded resolved


def _lp_stage(method: str) -> bool:
    return method in ("lp", "lp-ft", "lp-lora")


def _lora_stage(method: str) -> bool:
    return method in ("lora", "lp-lora")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a fine-tuning run.

    ``lr``: a number, ``"auto"`` (grid search on the validation set, ``lr_grid`` or the method's default grid), or
    None (the paper's value for a task it reports, else the grid). ``batch_size`` None: the paper's value, else
    16 for FT/LoRA and 8 for LP-FT/LP-LoRA. ``steps``: minimum optimizer steps of the FT stage. ``pooling`` and
    ``pair_template`` ``"auto"`` are resolved per model when the run starts (``models.backbone.resolve_pooling``,
    ``data.encode.resolve_pair_template``); ``config.json`` records the resolved values (:meth:`record`).

    ``precision`` (fp32, bf16, fp16: autocast of the FT stage's training steps) changes the results and is part of
    the record. ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) is where the run computes: a CPU and a GPU run
    of one config are the same experiment up to float rounding (and the GPU's own dropout masks), so it is left
    out of ``to_dict`` and of equality (a finished run is reused on any device); ``env.json`` and the metrics
    record the device the run resolved it to.

    ``backbone_dropout`` None keeps the model's own dropout; a number sets every dropout layer of the backbone to
    it (0 makes runs on different numbers of processes comparable step by step).
    """

    task: str
    method: str
    seed: int = 1001
    model: str = "default"
    pooling: str = "auto"
    pair_template: str = "auto"
    epochs: int = 10
    steps: int | None = None
    lr: float | str | None = None
    lr_grid: tuple[float, ...] | None = None
    batch_size: int | None = None
    eval_batch_size: int = 64
    max_train: int | None = None
    max_eval: int | None = None
    max_length: int = 128
    head_init_std: float = 0.02
    head_dropout: float = 0.1
    backbone_dropout: float | None = None
    head_norm: float | None = None
    lp: ProbeSettings = field(default_factory=ProbeSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    save_backbone: bool = False
    precision: str = "fp32"
    device: str = field(default="auto", compare=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.pooling not in POOLING_CHOICES:
            raise ConfigError(f"pooling must be one of {POOLING_CHOICES}; got {self.pooling!r}")
        if self.pair_template not in PAIR_TEMPLATES:
            raise ConfigError(f"pair_template must be one of {PAIR_TEMPLATES}; got {self.pair_template!r}")
        check_seed(self.seed)
        check_precision(self.precision)
        for name, minimum in (("max_train", 2), ("max_eval", 2), ("steps", 1), ("batch_size", 1)):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, minimum=minimum)
        check_int(self.epochs, "epochs")
        check_int(self.max_length, "max_length", minimum=8)
        check_int(self.eval_batch_size, "eval_batch_size")
        check_number(self.head_init_std, "head_init_std", minimum=0.0)
        check_number(self.head_dropout, "head_dropout", minimum=0.0, maximum=1.0, exclusive_maximum=True)
        if self.backbone_dropout is not None:
            check_number(
                self.backbone_dropout, "backbone_dropout", minimum=0.0, maximum=1.0, exclusive_maximum=True
            )
        if self.head_norm is not None:
            check_number(self.head_norm, "head_norm", minimum=0.0, exclusive_minimum=True)
        if isinstance(self.lr, str) and self.lr != AUTO_LR:
            raise ConfigError(f"lr: expected a positive number or {AUTO_LR!r}, found {self.lr!r}")
        if self.lr is not None and not isinstance(self.lr, str):
            check_number(self.lr, "lr", minimum=0.0, exclusive_minimum=True)
        if self.lr_grid is not None:
            object.__setattr__(self, "lr_grid", check_grid(self.lr_grid, "lr_grid"))

    def resolved(self) -> RunConfig:
        """The config with ``batch_size`` and ``lr`` filled in where left unset (``lr`` may resolve to ``"auto"``)."""
        if self.method == "lp":  # no FT stage: nothing to search or set
            return dataclasses.replace(self, lr=None, lr_grid=None, batch_size=None, steps=None)
        paper = PAPER_HPARAMS.get(self.task)
        bs, lr = paper[self.method] if paper else (DEFAULT_BATCH_SIZES[self.method], AUTO_LR)
        return dataclasses.replace(
            self, lr=self.lr if self.lr is not None else lr, batch_size=self.batch_size or bs
        )

    def grid(self) -> tuple[float, ...]:
        """The learning rates an ``"auto"`` run searches."""
        return self.lr_grid or DEFAULT_LR_GRIDS[self.method]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (LoRA settings only for LoRA recipes; no ``device``: see the class docstring)."""
        out = asdict(self)
        del out["device"]
        out["lp"] = self.lp.to_dict()
        out["lora"] = self.lora.to_dict() if _lora_stage(self.method) else None
        out["lr_grid"] = list(self.lr_grid) if self.lr_grid is not None else None
        return out

    def record(self, pooling: str, pair_template: str) -> dict[str, Any]:
        """``to_dict`` with the resolved ``pooling`` and ``pair_template``; where one differs from the setting
        (``"auto"``), the setting is kept as ``<name>_requested``."""
        out = self.to_dict()
        for name, value in zip(RESOLVED, (pooling, pair_template), strict=True):
            if value != out[name]:
                out[f"{name}_requested"] = out[name]
                out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Inverse of ``to_dict`` and of ``record`` (the requested settings come back; unknown keys are an error;
        the ``lr_search`` record is not a setting)."""
        data = dict(data)
        data.pop("lr_search", None)
        for name in RESOLVED:
            if f"{name}_requested" in data:
                data[name] = data.pop(f"{name}_requested")
        if data.get("lr_grid") is not None:
            data["lr_grid"] = tuple(data["lr_grid"])
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


def choose_lr(
    config: RunConfig, root: str | Path, *, data_dir: str | Path | None = None, overwrite: bool = False
) -> LrChoice:
    """Search ``config.grid()`` on ``config.seed``, one run directory per point under ``root``.

    A finished point with the same config is read back, so every seed of a (task, method) can share one search.
    """
    config = config.resolved()

    def point(lr: float, where: Path) -> dict[str, Any]:
        wanted = dataclasses.replace(config, lr=lr)
        if FINETUNE.is_finished(where) and not overwrite:
            if RunConfig.from_dict(FINETUNE.load(where, "config")) != wanted:
                raise ConfigError(f"{where} holds a grid point of another config; use another --out or --overwrite")
            return FINETUNE.load(where, "metrics")
        return run(wanted, where, data_dir=data_dir, overwrite=overwrite)

    return select_lr(config.grid(), config.seed, root, point)


def _adopt_grid_point(
    choice: LrChoice, config: RunConfig, out: Path, record: dict[str, Any], env: dict[str, Any]
) -> dict | None:
    """Copy the chosen grid point into ``out`` when it is this very run (same seed and config); else None."""
    where = Path(choice.runs[lr_key(choice.chosen)])
    if choice.seed != config.seed or not FINETUNE.is_finished(where):
        return None
    if RunConfig.from_dict(FINETUNE.load(where, "config")) != config:
        return None
    skip = {FINETUNE.files[role] for role in ("config", "env", "metrics")}
    for item in sorted(where.iterdir()):
        if item.is_file() and item.name not in skip and world().is_main:
            shutil.copy2(item, out / item.name)
    FINETUNE.write_record(out, record, config.seed, env)
    metrics = {**FINETUNE.load(where, "metrics"), "adopted_from": str(where)}
    FINETUNE.write(out, "metrics", metrics)
    return metrics


def run(
    config: RunConfig,
    out: str | Path,
    *,
    data_dir: str | Path | None = None,
    overwrite: bool = False,
    lr_choice: LrChoice | None = None,
) -> dict:
    """Run one recipe into ``out`` and return its metrics (see the module docstring).

    An ``"auto"`` learning rate uses ``lr_choice`` when given (``compare`` selects once per (task, method)), else
    searches its grid under ``out/lr-grid``; the choice is recorded in ``config.json`` as ``lr_search``, and when
    the chosen grid point is this run (same seed) it is copied instead of trained again.
    """
    started = time.perf_counter()
    config = config.resolved()
    device = resolve_device(config.device)
    env = describe(device)
    out = FINETUNE.prepare(out, overwrite=overwrite)
    pooling = resolve_pooling(config.pooling, config.model)
    pair_template = resolve_pair_template(config.pair_template, load_tokenizer(config.model))
    record = config.record(pooling, pair_template)
    if config.lr == AUTO_LR:
        choice = lr_choice or choose_lr(config, FINETUNE.path(out, "lr_grid"), data_dir=data_dir)
        config = dataclasses.replace(config, lr=choice.chosen)
        record = {**config.record(pooling, pair_template), "lr_search": choice.to_dict()}
        adopted = _adopt_grid_point(choice, config, out, record, env)
        if adopted is not None:
            return adopted
    FINETUNE.write_record(out, record, config.seed, env)
    torch.manual_seed(config.seed)

    task = load_task(config.task, data_dir, max_train=config.max_train, seed=config.seed)
    backbone, tokenizer = load_backbone(config.model, attn_implementation="sdpa")  # no JVPs in training
    check_max_length(backbone, config.max_length)
    if config.backbone_dropout is not None:
        set_dropout(backbone, config.backbone_dropout)
    encode = lambda split: encode_split(split, tokenizer, config.max_length, pair_template)  # noqa: E731
    train_enc = encode(task.train)
    evals = {key: encode(split) for key, split in eval_splits(task, config.max_eval, config.seed).items()}
    clf = Classifier(
        backbone,
        task.num_labels,
        pooling=pooling,
        head_init_std=config.head_init_std,
        head_dropout=config.head_dropout,
        seed=config.seed,
    ).to(device)
    norm_init = clf.head_norm()
    say(
        f"{config.task}/{config.method} seed {config.seed}: {len(train_enc)} train, "
        f"{', '.join(f'{k} {len(v)}' for k, v in evals.items())}; ‖V‖ init {norm_init:.3f}"
    )
    if _lp_stage(config.method):
        _, phi_train = predict(clf, train_enc, config.eval_batch_size, desc="φ train")
        require_varying_phi(phi_train, pooling)
    else:
        check = encode(_cap(task.train, PHI_CHECK_N, config.seed))
        require_varying_phi(predict(clf, check, config.eval_batch_size, desc="φ check")[1], pooling)
    phi_pre = {
        key: predict(clf, enc, config.eval_batch_size, desc=f"φ pre {key}")[1] for key, enc in evals.items()
    }

    norm_after_lp = None
    lp_info: dict[str, Any] | None = None
    if _lp_stage(config.method):
        probe = fit_linear_probe(
            phi_train,
            train_enc.labels,
            task.num_labels,
            config.lp,
            seed=config.seed,
            init=(clf.head.weight.detach().double().cpu().numpy(), clf.head.bias.detach().double().cpu().numpy()),
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
    optimizer_steps = 0
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
        steps_per_epoch = math.ceil(len(train_enc) / config.batch_size)
        epochs = max(config.epochs, math.ceil((config.steps or 0) / steps_per_epoch))
        optimizer_steps = steps_per_epoch * epochs
        settings = FinetuneSettings(
            epochs=epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            eval_batch_size=config.eval_batch_size,
            select_metric="mcc" if "mcc" in task.metrics else "accuracy",
            precision=config.precision,
        )
        result = finetune(
            clf,
            train_enc,
            evals["val"],
            settings,
            seed=config.seed,
            val_metrics=tuple(task.metrics),
            checkpoint_dir=FINETUNE.path(out, "checkpoint"),
        )
        history, best_epoch = result.history, result.best_epoch

    logits: dict[str, np.ndarray] = {}
    phi_post: dict[str, np.ndarray] = {}
    for key, enc in evals.items():
        if config.method == "lp":
            phi_post[key] = phi_pre[key]
            with torch.no_grad():
                logits[key] = clf.head(torch.as_tensor(phi_pre[key], device=device)).cpu().numpy()
        else:
            logits[key], phi_post[key] = predict(clf, enc, config.eval_batch_size, desc=f"φ post {key}")
    labels = {key: enc.labels for key, enc in evals.items()}
    baselines = {key: majority_baseline(train_enc.labels, labels[key]) for key in evals}
    val_accuracy = float(np.mean(logits["val"].argmax(axis=1) == labels["val"]))
    n_val = len(labels["val"])

    FINETUNE.write(out, "head", {"weight": clf.head.weight, "bias": clf.head.bias})
    if _lora_stage(config.method):
        FINETUNE.write(out, "adapter", lora_state_dict(clf))
    if config.save_backbone and config.method in ("ft", "lp-ft"):
        FINETUNE.write(out, "backbone", dict(clf.backbone.state_dict()))
    logit_arrays: dict[str, np.ndarray] = {}
    feature_arrays: dict[str, np.ndarray] = {}
    for key in evals:
        logit_arrays.update({f"{key}.logits": logits[key], f"{key}.labels": labels[key]})
        feature_arrays.update(
            {f"{key}.phi_pre": phi_pre[key], f"{key}.phi_post": phi_post[key], f"{key}.labels": labels[key]}
        )
    FINETUNE.write(out, "logits", logit_arrays)
    FINETUNE.write(out, "features", feature_arrays)
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
        "majority_baseline": baselines,
        "learned": learned(val_accuracy, baselines["val"], n_val, z=LEARNED_Z),
        "learned_evidence": {
            "split": "val",
            "accuracy": val_accuracy,
            "baseline": baselines["val"],
            "margin": learning_margin(baselines["val"], n_val, z=LEARNED_Z),
            "n": n_val,
            "rule": f"accuracy > baseline + max(0.02, {LEARNED_Z} * sqrt(p(1-p)/n)), p = baseline",
        },
        "history": history,
        "best_epoch": best_epoch,
        "optimizer_steps": optimizer_steps,
        "trainable_parameters": trainable,
        "n_train": len(train_enc),
        "device": str(device),
        **world().describe(),
        "seconds": time.perf_counter() - started,
    }
    FINETUNE.write(out, "metrics", metrics)
    ckpt = FINETUNE.path(out, "checkpoint")
    if ckpt.exists() and world().is_main:
        for item in ckpt.iterdir():
            item.unlink()
        ckpt.rmdir()
    return metrics


def load_run_classifier(
    run_dir: str | Path, attn_implementation: str = "eager"
) -> tuple[Classifier, Any, RunConfig]:
    """Rebuild the trained classifier of a finished run: (classifier in eval mode, tokenizer, config)."""
    run_dir = Path(run_dir)
    if not FINETUNE.is_finished(run_dir):
        raise ConfigError(f"{run_dir} is not a finished run (no {FINETUNE.path(run_dir, 'metrics').name})")
    recorded = FINETUNE.load(run_dir, "config")
    config = RunConfig.from_dict(recorded)
    metrics = FINETUNE.load(run_dir, "metrics")
    backbone, tokenizer = load_backbone(config.model, attn_implementation=attn_implementation)
    clf = Classifier(
        backbone, metrics["num_labels"], pooling=recorded["pooling"], head_dropout=config.head_dropout
    )
    if config.method in ("ft", "lp-ft"):
        if not FINETUNE.has(run_dir, "backbone"):
            raise ConfigError(
                f"{run_dir} was saved without its fine-tuned backbone; rerun it with --save-backbone"
            )
        backbone.load_state_dict(FINETUNE.load(run_dir, "backbone"))
    if _lora_stage(config.method):
        apply_lora(clf, config.lora, seed=config.seed)
        load_lora_state(clf, FINETUNE.load(run_dir, "adapter"))
    head = FINETUNE.load(run_dir, "head")
    clf.set_head(head["weight"], head["bias"])
    clf.eval()
    return clf, tokenizer, config
