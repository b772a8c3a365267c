"""``dynascope tasks``, ``dynascope train`` and ``dynascope compare``."""

from __future__ import annotations

import argparse

from dynascope.commands.common import add_common, add_device, add_precision, load_config_file
from dynascope.data.encode import PAIR_TEMPLATES
from dynascope.errors import ConfigError
from dynascope.models.classifier import POOLING_CHOICES
from dynascope.runio import COMPARISON
from dynascope.train.probe import ProbeSettings
from dynascope.train.recipes import METHODS, RunConfig


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", help="registered task name or a task spec file (.yaml/.json)")
    p.add_argument("--model", help="default | mpnet-base | a local model folder | a hub id")
    p.add_argument("--config", help="YAML/JSON file with run settings; flags override it")
    p.add_argument("--epochs", type=int, help="epochs of the FT stage (raised to reach --steps)")
    p.add_argument("--steps", type=int, help="minimum optimizer steps of the FT stage (epochs are raised to reach it)")
    p.add_argument(
        "--lr",
        type=_lr,
        help="learning rate, or 'auto': the best of --lr-grid by validation metric on the first seed "
        "(default: the paper's for a task it reports, else auto)",
    )
    p.add_argument("--lr-grid", help="comma-separated learning rates searched by --lr auto (default per method)")
    p.add_argument("--batch-size", type=int, help="training batch size (default: the paper's)")
    p.add_argument("--eval-batch-size", type=int)
    p.add_argument("--max-train", type=int, help="subsample the training split (stratified, seeded)")
    p.add_argument("--max-eval", type=int, help="cap test and OOD sets (stratified, seeded)")
    p.add_argument("--max-length", type=int, help="max tokens per example (default 128)")
    p.add_argument(
        "--pooling",
        choices=POOLING_CHOICES,
        help="φ from the first token (cls), the masked mean, or the last non-padding token; auto (default): last "
        "for causal LMs, the checkpoint's own for sentence-transformers folders, else cls",
    )
    p.add_argument(
        "--pair-template",
        choices=PAIR_TEMPLATES,
        help="how sentence pairs are joined: the tokenizer's own pair encoding, or premise + eos / newline + "
        "hypothesis; auto (default): the tokenizer's when it separates pairs, else eos",
    )
    p.add_argument("--head-norm", type=float, help="rescale V (and b) to this norm before the FT stage")
    p.add_argument("--head-dropout", type=float, help="dropout on φ before the head in training (default 0.1)")
    p.add_argument(
        "--backbone-dropout",
        type=float,
        help="set every dropout layer of the backbone to this probability (default: the model's own)",
    )
    p.add_argument("--lp-protocol", choices=("cv", "fixed", "gd"), help="how LP fits the head (default cv)")
    p.add_argument("--lp-c", type=float, help="inverse regularisation strength for --lp-protocol fixed")
    p.add_argument(
        "--lp-scoring", choices=("accuracy", "neg_log_loss"), help="CV scoring for --lp-protocol cv"
    )
    p.add_argument("--lora-r", type=int)
    p.add_argument("--lora-alpha", type=float)
    p.add_argument(
        "--lora-init-std", type=float, help="Gaussian init of LoRA A with this std (default: peft's)"
    )
    p.add_argument(
        "--save-backbone", action="store_true", help="also save the fine-tuned backbone (FT, LP-FT)"
    )
    add_precision(p)
    add_device(p)


def _config_from_args(args: argparse.Namespace, method: str, seed: int | None) -> RunConfig:
    data = load_config_file(args.config, "run settings") if args.config else {}
    flat = {
        "task": args.task,
        "model": args.model,
        "epochs": args.epochs,
        "steps": args.steps,
        "lr": args.lr,
        "lr_grid": _floats(args.lr_grid, "--lr-grid") if args.lr_grid else None,
        "batch_size": args.batch_size,
        "eval_batch_size": args.eval_batch_size,
        "max_train": args.max_train,
        "max_eval": args.max_eval,
        "max_length": args.max_length,
        "pooling": args.pooling,
        "pair_template": args.pair_template,
        "head_norm": args.head_norm,
        "head_dropout": args.head_dropout,
        "backbone_dropout": args.backbone_dropout,
        "precision": args.precision,
        "device": args.device,
    }
    data.update({k: v for k, v in flat.items() if v is not None})
    if args.save_backbone:
        data["save_backbone"] = True
    data["method"] = method
    if seed is not None:
        data["seed"] = seed
    lp = dict(data.get("lp") or {})
    lp.update(
        {
            k: v
            for k, v in (("protocol", args.lp_protocol), ("C", args.lp_c), ("scoring", args.lp_scoring))
            if v is not None
        }
    )
    data["lp"] = lp
    lora = dict(data.get("lora") or {})
    lora.update(
        {
            k: v
            for k, v in (("r", args.lora_r), ("alpha", args.lora_alpha), ("init_std", args.lora_init_std))
            if v is not None
        }
    )
    data["lora"] = lora
    if not data.get("task"):
        raise ConfigError("--task is required (or 'task' in --config)")
    ProbeSettings(**lp)  # validate early, with its own message
    return RunConfig.from_dict(data)


def _cmd_tasks(args: argparse.Namespace) -> int:
    from dynascope.data import resolve_data_dir, task_status, verify_files

    print(f"data root: {resolve_data_dir(args.data_dir)}")
    checks = {row["path"]: row for row in verify_files(args.data_dir)} if args.verify else {}
    for row in task_status(args.data_dir):
        files = row["files"]
        found = sum(f["found"] for f in files)
        mark = "ok" if found == len(files) else "MISSING"
        print(f"{row['name']:<12} C={row['num_labels']}  {found}/{len(files)} files  {mark}")
        for f in files:
            state = "found  " if f["found"] else "missing"
            check = checks.get(f["path"], {}).get("ok")
            sha = {True: "  sha256 ok", False: "  SHA256 MISMATCH", None: ""}[check] if args.verify else ""
            print(f"    {state}  {f['path'] if f['found'] else f['expected']}{sha}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from dynascope.train.recipes import run

    config = _config_from_args(args, args.method, args.seed)
    metrics = run(config, args.out, data_dir=args.data_dir, overwrite=args.overwrite)
    parts = [
        f"val acc {100 * metrics['val']['accuracy']:.2f}",
        f"test acc {100 * metrics['test']['accuracy']:.2f}",
    ]
    parts += [f"{k} acc {100 * v['accuracy']:.2f}" for k, v in metrics["ood"].items()]
    norms = metrics["head_norm"]
    after_lp = "–" if norms["after_lp"] is None else f"{norms['after_lp']:.3f}"
    parts += [f"‖V‖ init {norms['init']:.3f}", f"after LP {after_lp}", f"final {norms['final']:.3f}"]
    print(f"{config.task}/{config.method} seed {config.seed}: " + ", ".join(parts))
    print(f"run directory: {args.out}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from dynascope.experiments.compare import compare, to_markdown

    methods = _methods(args.methods)
    seeds = _ints(args.seeds, "--seeds")
    base = _config_from_args(args, methods[0], seeds[0])
    rows = compare(base, methods, seeds, args.out, data_dir=args.data_dir, overwrite=args.overwrite)
    print(to_markdown(rows), end="")
    print(f"summary: {COMPARISON.path(args.out, 'summary')} and {COMPARISON.path(args.out, 'summary_csv')}")
    return 0


def _cmd_scale_head(args: argparse.Namespace) -> int:
    from dynascope.experiments.compare import to_markdown
    from dynascope.experiments.scale_head import scale_head

    methods = _methods(args.methods)
    seeds = _ints(args.seeds, "--seeds")
    norms = _floats(args.norms, "--norms")
    if min(norms) <= 0:
        raise ConfigError(f"--norms must be positive numbers, got {args.norms!r}")
    if "lp" in methods:
        raise ConfigError("scale-head rescales the head before an FT stage; 'lp' has none")
    base = _config_from_args(args, methods[0], seeds[0])
    rows = scale_head(base, methods, norms, seeds, args.out, split=args.split, data_dir=args.data_dir,
                      overwrite=args.overwrite)
    print(to_markdown(rows), end="")
    table, figure = COMPARISON.path(args.out, "scale_head"), COMPARISON.path(args.out, "scale_head_figure")
    print(f"table and figure: {table}, {figure}")
    return 0


def _methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ConfigError(f"unknown methods {bad or text!r}; choose from {', '.join(METHODS)}")
    return methods


def _lr(text: str) -> float | str:
    """``--lr``: a number or ``auto``."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', found {text!r}") from None


def _numbers(text: str, flag: str, kind: type[int] | type[float]) -> list:
    """A comma-separated list of ``kind`` values (ints or floats) from ``flag``; empty or malformed is an error."""
    what = "integers" if kind is int else "numbers"
    try:
        values = [kind(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise ConfigError(f"{flag} must be comma-separated {what}, got {text!r}") from exc
    if not values:
        raise ConfigError(f"{flag} is empty")
    return values


def _floats(text: str, flag: str) -> list[float]:
    return _numbers(text, flag, float)


def _ints(text: str, flag: str) -> list[int]:
    return _numbers(text, flag, int)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``tasks``, ``train``, ``compare`` and ``scale-head``."""
    p = sub.add_parser("tasks", help="list registered tasks and whether their files are under the data root")
    p.add_argument("--verify", action="store_true", help="also check each file's SHA-256 against MANIFEST.tsv")
    add_common(p, out=False)
    p.set_defaults(func=_cmd_tasks)

    p = sub.add_parser("train", help="train one recipe (lp, ft, lp-ft, lora, lp-lora) into a run directory")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--seed", type=int, default=None, help="seed of head init and data order (default 1001)")
    _add_run_flags(p)
    add_common(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("compare", help="several recipes x seeds on one task; one mean ± std table")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all five)")
    p.add_argument("--seeds", default="1001,2002,3003", help="comma-separated seeds")
    _add_run_flags(p)
    add_common(p)
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("scale-head", help="rescale the head to several norms before the FT stage; feature change")
    p.add_argument("--methods", default="ft,lp-ft", help="comma-separated recipes with an FT stage")
    p.add_argument("--norms", default="0.1,0.5,1,2,5,10,50,100", help="head norms s (the paper's grid)")
    p.add_argument("--seeds", default="1001", help="comma-separated seeds")
    p.add_argument("--split", default="test", help="split whose feature change is plotted (test, val, ood.NAME)")
    _add_run_flags(p)
    add_common(p)
    p.set_defaults(func=_cmd_scale_head)
