"""``dynascope dynamics train`` (looped SA on Sudoku), ``dynascope dynamics analyze RUN_DIR``,
``dynascope dynamics evaluate RUN_DIR --puzzles FILE`` and ``dynascope reproduce dynamics`` (the whole study:
:func:`dynascope.experiments.dynamics.reproduce`).

``train`` reads boards built by ``dynascope sudoku build --out DIR`` (``--sudoku-dir DIR``); settings come
from flags, or from a YAML/JSON file of ``TrainConfig`` fields (``--config``; flags override it).
``analyze`` writes ``analysis.json`` and ``figures/*.png`` into the run directory. ``evaluate`` scores the run
on a puzzle file (:func:`dynascope.pipelines.dynamics.evaluate_puzzles`).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from dynascope.commands.common import add_common, add_device, add_precision, load_config_file, set_threads
from dynascope.dynamics.analyze import AnalysisConfig
from dynascope.dynamics.layers import NORM_KINDS
from dynascope.dynamics.models import MODEL_KINDS, ModelConfig
from dynascope.dynamics.regularizers import REGULARIZERS
from dynascope.dynamics.sudoku import SPLIT_NAMES
from dynascope.dynamics.train import LR_SCHEDULES, TrainConfig
from dynascope.errors import ConfigError
from dynascope.experiments.dynamics import EXTRA_RUNS, PRESETS, RUNS, publish, reproduce
from dynascope.pipelines.dynamics import EVALUATE_STEPS, analyze_run_dir, evaluate_puzzles, train_from_sudoku_dir
from dynascope.progress import say
from dynascope.runio import LOOPED

_MODEL_FLAGS = {
    "model": "model",
    "width": "width",
    "heads": "heads",
    "osc_size": "osc_size",
    "norm": "norm",
    "eta": "eta",
    "init_omg": "init_omg",
    "readout_size": "readout_size",
    "digit_std": "digit_std",
}
_TRAIN_FLAGS = (
    "epochs",
    "batch_size",
    "lr",
    "loop_steps",
    "regularizer",
    "reg_weight",
    "seed",
    "n_train",
    "n_eval",
    "eval_batch",
    "curve_every",
    "curve_boards",
    "warmup_steps",
    "lr_schedule",
    "precision",
    "device",
)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The ``TrainConfig`` of a ``dynamics train`` command line."""
    data = load_config_file(args.config, "training settings") if args.config else {}
    model = dict(data.pop("model", {}) or {})
    model.update({key: getattr(args, flag) for flag, key in _MODEL_FLAGS.items() if getattr(args, flag) is not None})
    if args.orthogonal_vo:
        model["orthogonal_vo"] = True
    data.update({key: getattr(args, key) for key in _TRAIN_FLAGS if getattr(args, key) is not None})
    if args.eval_steps is not None:
        data["eval_steps"] = _int_list(args.eval_steps, "--eval-steps")
    try:
        return TrainConfig(model=ModelConfig(**model), **data)
    except TypeError as exc:
        raise ConfigError(f"unknown training setting: {exc}") from exc


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ConfigError(f"{flag}: expected comma-separated integers, found {text!r}") from exc


def _train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    set_threads(args.threads)
    metrics = train_from_sudoku_dir(config, args.sudoku_dir, args.out, overwrite=args.overwrite)
    acc = metrics["board_accuracy"]
    for name in ("id", "ood"):
        print(f"{name}: " + "  ".join(f"T={t}: {100 * v:.1f}%" for t, v in acc[name].items()))
    return 0


def _analyze(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {
        key: getattr(args, key)
        for key in (
            "boards",
            "t_jacobian",
            "lyap_steps",
            "trace_steps",
            "dense_max",
            "exact_max_dim",
            "eig_k",
            "benettin_k",
            "seed",
        )
        if getattr(args, key) is not None
    }
    if args.full_mean:
        fields["full_mean"] = True
    if args.ci_times is not None:
        fields["ci_times"] = _int_list(args.ci_times, "--ci-times")
    elif args.trace_steps is not None:
        fields["ci_times"] = tuple(t for t in AnalysisConfig.ci_times if t <= args.trace_steps)
    set_threads(args.threads)
    result = analyze_run_dir(args.run_dir, AnalysisConfig(**fields), args.sudoku_dir, args.split, args.device)
    s = result["summary"]
    say(f"wrote {LOOPED.path(args.run_dir, 'analysis')}")
    print(
        f"lyapunov max {s['lyapunov_max']:.4f} mean {s['lyapunov_mean']:.4f}  ‖J‖₂ {s['spectral_norm']:.4f}  "
        f"max|λ| {s['max_abs_eigenvalue']:.4f}  Prop. 5.1 bound holds: {s['bound_holds']}"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    steps = _int_list(args.steps, "--steps") if args.steps is not None else EVALUATE_STEPS
    result = evaluate_puzzles(args.run_dir, args.puzzles, steps, args.limit, args.out, args.device)
    print(f"{'T':>5}  {'boards':>7}  {'blank cells':>11}")
    for t in result["steps"]:
        print(f"{t:>5}  {100 * result['board_accuracy'][t]:>6.1f}%  {100 * result['cell_accuracy'][t]:>10.1f}%")
    aside = [
        f"{result[key]['count']} {what}"
        for key, what in (("unsolvable", "unsolvable"), ("multiple_solutions", "not unique"))
    ]
    print(f"scored {result['scored']} of {result['read']} puzzles ({', '.join(aside)})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``dynamics train``, ``dynamics analyze`` and ``dynamics evaluate``."""
    parser = sub.add_parser(
        "dynamics", help="looped self-attention on Sudoku: train, analyse the dynamics, score puzzle files"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")

    train = actions.add_parser("train", help="train ItrSA / AKOrN / symmetric SA on Sudoku and evaluate vs T")
    add_common(train, data=False)
    train.add_argument("--sudoku-dir", required=True, help="boards built by `dynascope sudoku build --out DIR`")
    train.add_argument("--config", help="YAML/JSON file of TrainConfig fields; flags override it")
    train.add_argument("--model", choices=MODEL_KINDS)
    train.add_argument("--norm", choices=NORM_KINDS)
    train.add_argument("--width", type=int, help="state width D")
    train.add_argument("--heads", type=int, help="attention heads H")
    train.add_argument("--osc-size", type=int, help="oscillator size N")
    train.add_argument("--eta", type=float, help="initial step size η (learnable)")
    train.add_argument("--init-omg", type=float, help="AKOrN's initial frequency ω")
    train.add_argument("--readout-size", type=int, help="readout components per channel (0: osc size)")
    train.add_argument("--digit-std", type=float, help="initial std of the digit embedding in C (default 1)")
    train.add_argument("--orthogonal-vo", action="store_true", help="orthogonal W^V, W^O (needed by e_multi)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--warmup-steps", type=int, help="linear learning-rate warm-up over K optimizer steps")
    train.add_argument("--lr-schedule", choices=LR_SCHEDULES, help="after warm-up: constant (default) or cosine to 0")
    train.add_argument("--loop-steps", type=int, help="training loop count T")
    train.add_argument("--eval-steps", help="comma-separated test loop counts (default 8,16,32,64,128)")
    train.add_argument("--regularizer", choices=REGULARIZERS)
    train.add_argument("--reg-weight", type=float, help="λ of the regularizer")
    train.add_argument("--seed", type=int)
    train.add_argument("--n-train", type=int, help="use the first n training boards (0: all)")
    train.add_argument("--n-eval", type=int, help="use the first n boards of each test set (0: all)")
    train.add_argument("--eval-batch", type=int)
    train.add_argument("--curve-every", type=int, help="learning curve every K optimizer steps (0: none)")
    train.add_argument("--curve-boards", type=int, help="ID test boards of each learning-curve point (default 200)")
    add_precision(train)
    add_device(train)
    train.add_argument("--threads", type=int, help="torch CPU threads")
    train.set_defaults(func=_train)

    analyze = actions.add_parser("analyze", help="Jacobian spectra, Lyapunov exponents and energies of a run")
    analyze.add_argument("run_dir", help="a finished `dynamics train` run directory")
    add_common(analyze, data=False, out=False)
    analyze.add_argument("--sudoku-dir", help="boards (default: the run's own)")
    analyze.add_argument("--split", choices=SPLIT_NAMES, default="easy_test", help="boards to analyse")
    analyze.add_argument("--boards", type=int, help="how many boards (default 1)")
    analyze.add_argument("--t-jacobian", type=int, help="loop step of the one-step Jacobian (default 16)")
    analyze.add_argument("--lyap-steps", type=int, help="horizon of the Lyapunov exponents (default 16)")
    analyze.add_argument("--trace-steps", type=int, help="steps of the energy / CI traces (default 64)")
    analyze.add_argument("--ci-times", help="comma-separated steps for the contribution index")
    analyze.add_argument("--dense-max", type=int, help="largest n for dense eigenvalues (default 4096)")
    analyze.add_argument("--exact-max-dim", type=int, help="largest n for exact Lyapunov (default 4096)")
    analyze.add_argument("--eig-k", type=int, help="eigenvalues by Arnoldi above --dense-max (default 128)")
    analyze.add_argument("--benettin-k", type=int, help="exponents by Benettin above --exact-max-dim (default 64)")
    analyze.add_argument(
        "--full-mean", action="store_true", help="above --exact-max-dim: mean of all non-null exponents (O(n²) memory)"
    )
    analyze.add_argument("--seed", type=int)
    add_device(analyze, default="auto")
    analyze.add_argument("--threads", type=int, help="torch CPU threads")
    analyze.set_defaults(func=_analyze)

    evaluate = actions.add_parser("evaluate", help="board and blank-cell accuracy vs T on a puzzle file")
    evaluate.add_argument("run_dir", help="a finished `dynamics train` run directory")
    add_common(evaluate, data=False, out=False)
    evaluate.add_argument(
        "--puzzles", required=True, help="81 characters per line (0 or . = blank) or CSV with quizzes/puzzle columns"
    )
    evaluate.add_argument("--steps", help="comma-separated loop counts T (default 8,16,32,64,128)")
    evaluate.add_argument("--limit", type=int, help="score only the first N puzzles of the file")
    evaluate.add_argument("--out", help="output directory (default RUN_DIR/evaluate-<file stem>)")
    add_device(evaluate, default="auto")
    evaluate.add_argument("--threads", type=int, help="torch CPU threads")
    evaluate.set_defaults(func=_evaluate)


def _reproduce(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    runs = tuple(r.strip() for r in args.runs.split(",")) if args.runs else None
    preset = PRESETS[args.preset]
    if args.epochs:
        preset = replace(preset, epochs=args.epochs)
    seeds = tuple(_int_list(args.seeds, "--seeds")) if args.seeds is not None else None
    results = reproduce(
        preset,
        args.out,
        args.data_dir,
        args.device,
        seeds,
        runs,
        args.overwrite,
        flush_denormal=True,
        workers=args.workers,
    )
    if args.docs:
        publish(Path(args.out), Path(args.docs))
    print(f"{args.out}: results.md, checks.md ({results['timings']['stages']:.0f} s of measured stages)")
    return 0


def register_reproduce(studies: argparse._SubParsersAction) -> None:
    """Add ``reproduce dynamics``."""
    parser = studies.add_parser(
        "dynamics", help="looped SA on Sudoku: ItrSA / AKOrN ± norm ± Spec, accuracy vs T, Lyapunov, spectra"
    )
    add_common(parser)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="sizes (default quick)")
    add_device(parser, default="auto")
    parser.add_argument(
        "--seeds", help="comma-separated seeds of every run (default: the preset's; quick: 0,1,2; full: 0)"
    )
    parser.add_argument(
        "--runs",
        help=f"comma-separated runs (default: the preset's, cpu-long: the ItrSA runs; else the grid "
        f"{[s.name for s in RUNS]}; also {[s.name for s in EXTRA_RUNS]})",
    )
    parser.add_argument("--epochs", type=int, help="override the preset's epoch count")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument(
        "--workers", type=int, default=1, help="runs trained side by side in separate processes (default 1)"
    )
    parser.add_argument("--docs", help="also copy results, checks and figures into this folder")
    parser.set_defaults(func=_reproduce)
