"""``dynascope calibrate``, ``dynascope features`` and ``dynascope report``: analysis of finished runs.

``calibrate RUN_DIR`` fits a temperature on the run's ``val`` logits and writes ``calibration.json``;
``features RUN_DIR`` writes ``features.json`` (Diff, cosine, CS, FDR per split); both overwrite only
their own file. ``report RUN_DIR... --out DIR`` builds the self-contained HTML report and its tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dynascope.analysis.calibration import DEFAULT_BINS
from dynascope.analysis.temperature import TemperatureConfig
from dynascope.commands.common import add_common
from dynascope.errors import DataError
from dynascope.progress import say
from dynascope.report.runs import FinetuneRun, calibration_of, feature_metrics_of
from dynascope.runio import FINETUNE


def _load_run(path: str) -> FinetuneRun:
    run_dir = Path(path)
    if not FINETUNE.is_finished(run_dir):
        raise DataError(f"not a finished fine-tuning run (no {FINETUNE.path(run_dir, 'metrics').name})", path=run_dir)
    return FinetuneRun.load(run_dir)


def _add_calibration_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bins", type=int, default=DEFAULT_BINS, help="equal-width bins for ECE/MCE (default 15)")
    parser.add_argument(
        "--method",
        choices=("lbfgs", "adam"),
        default="lbfgs",
        help="temperature optimiser: L-BFGS (default) or the paper's Adam protocol (lr 1e-3, patience 10)",
    )


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit T on val, evaluate every other split before/after, write calibration.json into the run."""
    run = _load_run(args.run_dir)
    result = calibration_of(run, n_bins=args.bins, config=TemperatureConfig(method=args.method))
    if result is None:
        raise DataError(f"the run has no {FINETUNE.path(run.path, 'logits').name}", path=run.path)
    path = FINETUNE.write(run.path, "calibration", result)
    fit = result["fit"]
    say(f"T = {result['temperature']:.4g} ({fit['method']}, {fit['iterations']} it, converged {fit['converged']})")
    for name, split in result["splits"].items():
        say(f"  {name}: ECE {100 * split['before']['ece']:.2f}% -> {100 * split['after']['ece']:.2f}%")
    say(f"wrote {path}")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    """Write features.json (feature change and separability per split) into the run."""
    run = _load_run(args.run_dir)
    result = feature_metrics_of(run)
    if result is None:
        raise DataError(f"the run has no {FINETUNE.path(run.path, 'features').name}", path=run.path)
    path = FINETUNE.write(run.path, "feature_metrics", result)
    for name, m in result["splits"].items():
        say(f"  {name}: Diff {m['diff']:.4g}, CS {m['cs_pre']:.3f} -> {m['cs_post']:.3f}")
    say(f"wrote {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Build report.html and tables/ from run directories (or directories holding runs)."""
    from dynascope.report.build import ReportConfig, build_report  # matplotlib is loaded only when needed

    cfg = ReportConfig(
        n_bins=args.bins,
        temperature=TemperatureConfig(method=args.method),
        tsne=not args.no_tsne,
        tsne_max_points=args.tsne_points,
    )
    result = build_report(args.runs, args.out, cfg, overwrite=args.overwrite)
    say(f"wrote {result.html_path} ({len(result.tables)} tables, {len(result.figures)} figures)")
    for note in result.notes:
        say(f"  note: {note}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``calibrate``, ``features`` and ``report``."""
    p = sub.add_parser("calibrate", help="fit temperature scaling on val and write calibration.json into a run")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished fine-tuning run directory")
    _add_calibration_flags(p)
    add_common(p, data=False, out=False)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("features", help="write features.json (Diff, cosine, CS, FDR per split) into a run")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished fine-tuning run directory")
    add_common(p, data=False, out=False)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("report", help="build a self-contained HTML report and tables from run directories")
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="fine-tuning, NTK or dynamics run directories, or directories holding runs (e.g. a reproduce study)",
    )
    _add_calibration_flags(p)
    p.add_argument("--no-tsne", action="store_true", help="skip the t-SNE figures (the slowest part)")
    p.add_argument("--tsne-points", type=int, default=300, help="examples per t-SNE plot (default 300)")
    add_common(p, data=False, out=True)
    p.set_defaults(func=cmd_report)
