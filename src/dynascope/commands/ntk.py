"""``dynascope ntk``: the empirical NTK of a classifier state, split into P and F, with the paper's Table 2.

The state is built at the start of a training stage (``ft``: random head; ``lp-ft``: head fitted by LP on
the full training set; ``lora`` / ``lp-lora``: the same with LoRA injected at initialisation) or loaded
from a finished fine-tuning run directory. N training examples (seeded, stratified) and M evaluation
examples from the task's **test** split are drawn; P, F (per block, checkpointed: an interrupted run
resumes) and their sum are computed train×train and eval×train, with traces, statistics and kernel solvers,
into the NTK run directory (``config.json``, ``env.json``, ``kernels.safetensors``, ``spectra.npz``,
``stats.json`` last). The work is :func:`dynascope.pipelines.ntk.run_ntk`; this module maps flags onto
its ``NTKConfig``.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from dynascope.commands.common import add_common, add_device, load_config_file
from dynascope.errors import ConfigError
from dynascope.models.classifier import POOLING_CHOICES
from dynascope.pipelines.ntk import NTK_DTYPES, SOLVERS, STATES, NTKConfig, format_table, run_ntk
from dynascope.train.probe import PROTOCOLS, SCORINGS


def config_from_mapping(data: dict[str, Any], where: str = "config") -> NTKConfig:
    """An ``NTKConfig`` from a mapping (a config file's content); unknown keys are named in the error."""
    known = {f.name for f in fields(NTKConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown NTK settings {unknown}; expected some of {sorted(known)}")
    data = dict(data)
    if isinstance(data.get("solvers"), str):
        data["solvers"] = data["solvers"].split(",")
    if "solvers" in data:
        data["solvers"] = tuple(data["solvers"])
    if "state" not in data:
        raise ConfigError(f"{where}: --state is required (or 'state' in --config)")
    return NTKConfig(**data)


def _run(args: argparse.Namespace) -> int:
    data = load_config_file(args.config, "NTK settings") if args.config else {}
    flags = {
        "task": args.task,
        "state": args.state,
        "n_train": args.n_train,
        "n_eval": args.n_eval,
        "seed": args.seed,
        "model": args.model,
        "pooling": args.pooling,
        "max_length": args.max_length,
        "memory_gb": args.memory_gb,
        "probes": args.probes,
        "solvers": args.solvers,
        "ntk_dtype": args.ntk_dtype,
        "device": args.device,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    lp = dict(data.get("lp") or {})
    lp_flags = (("protocol", args.lp_protocol), ("C", args.lp_c), ("scoring", args.lp_scoring))
    lp.update({key: value for key, value in lp_flags if value is not None})
    if lp:
        data["lp"] = lp
    data.setdefault("task", None)
    config = config_from_mapping(data, args.config or "flags")
    stats = run_ntk(config, args.out, data_dir=args.data_dir, overwrite=args.overwrite)
    print(format_table(stats))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``dynascope ntk``."""
    p = sub.add_parser(
        "ntk",
        help="empirical NTK of a classifier state split into P and F, with the paper's kernel statistics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", help="registered task or task spec file (default with a run directory: its task)")
    p.add_argument("--config", help="YAML/JSON file with NTK settings (NTKConfig fields); flags override it")
    p.add_argument("--state", help=f"{' | '.join(STATES)} | a finished fine-tuning run directory (required)")
    p.add_argument("--n-train", type=int, help="training examples (stratified, seeded; default 64)")
    p.add_argument("--n-eval", type=int, help="test examples (stratified, seeded; default 56)")
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--model", help="default | mpnet-base | a model folder | a hub id")
    p.add_argument(
        "--pooling",
        choices=POOLING_CHOICES,
        help="default auto: the last non-padding token for causal LMs, the checkpoint's own for "
        "sentence-transformers folders, else the first token (a run directory brings its own)",
    )
    p.add_argument("--max-length", type=int, help="default 128")
    p.add_argument("--memory-gb", type=float, help="budget for per-example Jacobian rows (default 4)")
    p.add_argument("--probes", type=int, help="Hutchinson / Hutch++ probes for trace estimates (0: none; default 16)")
    p.add_argument("--lp-protocol", choices=PROTOCOLS, help="how LP fits the head of lp-* states (default cv)")
    p.add_argument("--lp-c", type=float, help="inverse regularisation strength for --lp-protocol fixed")
    p.add_argument("--lp-scoring", choices=SCORINGS, help="CV scoring for --lp-protocol cv (default accuracy)")
    p.add_argument("--solvers", help=f"comma list of kernel solvers ({', '.join(SOLVERS)}; default all)")
    p.add_argument(
        "--ntk-dtype",
        choices=tuple(NTK_DTYPES),
        help="dtype of the model and its Jacobian rows (default float32; float64 for exactness checks); the "
        "Grams are accumulated in float64 either way",
    )
    add_device(p)
    add_common(p)
    p.set_defaults(func=_run)
