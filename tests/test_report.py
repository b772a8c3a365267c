"""The report and the analysis commands on synthetic run directories."""

from __future__ import annotations

import base64
import csv
import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from dynascope.analysis.calibration import calibration_metrics
from dynascope.cli import main
from dynascope.dynamics.analyze import AnalysisConfig
from dynascope.dynamics.models import ModelConfig
from dynascope.dynamics.sudoku import SudokuSplit, random_cell_maps, relabel_digits
from dynascope.dynamics.train import TrainConfig, train_run
from dynascope.errors import DataError
from dynascope.pipelines.dynamics import analyze_run_dir
from dynascope.report.build import ReportConfig, build_report
from dynascope.report.runs import LoopedRun, discover_runs
from dynascope.report.tables import Stat, Table, pct, sig3
from dynascope.runio import STUDY, read_json, write_json, write_npz

METHODS = ("lp", "ft", "lp-ft")
SEEDS = (0, 1)


@pytest.fixture
def runs_root(tmp_path: Path, finetune_run_factory: Callable[..., Path], ntk_run_factory: Callable[..., Path]) -> Path:
    root = tmp_path / "runs"
    for method in METHODS:
        for seed in SEEDS:
            finetune_run_factory(root / f"toy-{method}-{seed}", method=method, seed=seed)
    finetune_run_factory(root / "bare-ft-0", task="bare", method="ft", classes=2, ood=(), pieces=())
    ntk_run_factory(root / "ntk" / "toy-ft")
    return root


def _csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_report_has_every_table_and_an_img_per_figure(runs_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = build_report([runs_root], out, ReportConfig(tsne_max_points=30))
    page = result.html_path.read_text(encoding="utf-8")
    expected_tables = {"accuracy_toy", "accuracy_bare", "head_norms", "feature_change", "calibration"}
    expected_tables |= {"ntk_stats", "ntk_runs"}
    assert set(result.tables) == expected_tables
    for name in expected_tables:
        assert f'id="table-{name}"' in page
        assert (out / "tables" / f"{name}.md").read_text(encoding="utf-8").startswith("### ")
        assert (out / "tables" / f"{name}.csv").exists()
    expected_figures = {f"reliability-toy-{m}" for m in METHODS} | {f"tsne-toy-{m}" for m in METHODS}
    expected_figures |= {"head-norm-toy", "head-norm-bare", "ntk-sv-toy-ft-toy-ft", "ntk-nuclear-toy-ft-toy-ft"}
    assert set(result.figures) == expected_figures
    assert page.count("<img") == len(result.figures)
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', page)) == len(result.figures)
    assert not re.search(r"https?://|src=\"(?!data:)|href=\"(?!#)", page)
    notes = " ".join(result.notes)
    assert "bare/ft/seed 0" in notes and "no logits.npz" in notes and "no features.npz" in notes
    assert "calibration computed on the fly for 6 run(s)" in notes
    assert read_json(out / "config.json")["ntk_runs"] and (out / "env.json").exists()
    assert "sec-dynamics" not in page and read_json(out / "config.json")["looped_runs"] == []


def test_accuracy_table_is_mean_and_sample_std_over_seeds(runs_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    build_report([runs_root], out, ReportConfig(tsne=False))
    rows = {r["method"]: r for r in _csv_rows(out / "tables" / "accuracy_toy.csv")}
    assert list(rows) == list(METHODS)
    for method in METHODS:
        accs = [read_json(runs_root / f"toy-{method}-{s}" / "metrics.json")["test"]["accuracy"] for s in SEEDS]
        assert float(rows[method]["test acc (%) mean"]) == pytest.approx(100 * np.mean(accs))
        assert float(rows[method]["test acc (%) std"]) == pytest.approx(100 * np.std(accs, ddof=1))
        assert rows[method]["seeds"] == "2"
        assert "ood.shifted acc (%) mean" in rows[method] and "test macro_f1 (%) mean" in rows[method]
    md = (out / "tables" / "accuracy_toy.md").read_text(encoding="utf-8")
    assert " ± " in md and "| lp-ft | 2 |" in md


def test_feature_and_calibration_tables_match_direct_computation(runs_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    build_report([runs_root], out, ReportConfig(tsne=False, n_bins=10))
    feats = [r for r in _csv_rows(out / "tables" / "feature_change.csv") if r["method"] == "lp"]
    assert {r["split"] for r in feats} == {"val", "test", "ood.shifted"}
    assert all(float(r["Diff(F) mean"]) == 0.0 and float(r["cos to pre mean"]) == pytest.approx(1.0) for r in feats)
    cal = {(r["method"], r["split"]): r for r in _csv_rows(out / "tables" / "calibration.csv")}
    assert ("ft", "val") not in cal  # T is fitted on val
    seed_eces = []
    for s in SEEDS:
        with np.load(runs_root / f"toy-ft-{s}" / "logits.npz") as data:
            seed_eces.append(calibration_metrics(data["test.logits"], data["test.labels"], n_bins=10).ece)
    assert float(cal[("ft", "test")]["ECE (%) before mean"]) == pytest.approx(100 * np.mean(seed_eces))
    assert "10 equal-width bins" in (out / "tables" / "calibration.md").read_text(encoding="utf-8")


def test_calibrate_command_writes_only_calibration_json(runs_root: Path) -> None:
    run = runs_root / "toy-ft-0"
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main(["calibrate", str(run), "--bins", "12", "--quiet"]) == 0
    cal = read_json(run / "calibration.json")
    assert cal["temperature"] > 0 and cal["fitted_on"] == "val" and cal["binning"]["n_bins"] == 12
    assert set(cal["splits"]) == {"test", "ood.shifted"}
    test = cal["splits"]["test"]
    for key in ("ece", "mce", "adaptive_ece", "brier", "brier_paper", "nll"):
        assert test["improvement"][key] == pytest.approx(test["before"][key] - test["after"][key])
    assert len(test["before"]["reliability"]["count"]) == 12 and "lower < conf <= upper" in test["before"]["binning"]
    assert main(["calibrate", str(run), "--method", "adam", "--quiet"]) == 0
    assert read_json(run / "calibration.json")["fit"]["method"] == "adam"
    after = {p.name: p.read_bytes() for p in run.iterdir()}
    assert set(after) == set(before) | {"calibration.json"}
    assert all(after[name] == data for name, data in before.items())


def test_report_uses_stored_results(runs_root: Path, tmp_path: Path) -> None:
    run = runs_root / "toy-ft-0"
    assert main(["calibrate", str(run), "--quiet"]) == 0
    assert main(["features", str(run), "--quiet"]) == 0
    cal = read_json(run / "calibration.json")
    cal["temperature"] = 123.0
    (run / "calibration.json").write_text(__import__("json").dumps(cal), encoding="utf-8")
    out = tmp_path / "report"
    result = build_report([run], out, ReportConfig(tsne=False))
    rows = _csv_rows(out / "tables" / "calibration.csv")
    assert all(float(r["T mean"]) == 123.0 for r in rows)
    assert not any("on the fly" in n for n in result.notes)
    assert read_json(run / "features.json")["splits"]["test"]["n"] == 40


def test_report_command_and_refusal_to_overwrite(
    runs_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "cli-report"
    argv = ["report", str(runs_root / "toy-ft-0"), str(runs_root / "ntk"), "--out", str(out), "--no-tsne", "--quiet"]
    assert main(argv) == 0
    assert (out / "report.html").exists()
    assert main(argv) == 2
    assert "already holds" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_missing_pieces_become_notes(tmp_path: Path, finetune_run_factory: Callable[..., Path]) -> None:
    run = finetune_run_factory(tmp_path / "only-metrics", pieces=())
    result = build_report([run], tmp_path / "r")
    assert result.figures == ["head-norm-toy"]
    assert {"accuracy_toy", "head_norms"} <= set(result.tables) and "calibration" not in result.tables
    assert any("no NTK run directories" in n for n in result.notes)
    broken = finetune_run_factory(tmp_path / "broken", method="lp-ft")
    (broken / "logits.npz").write_bytes(b"not a zip file")
    result = build_report([broken], tmp_path / "r2", ReportConfig(tsne=False))
    assert any("calibration: skipped" in n and "cannot read arrays" in n for n in result.notes)
    assert "feature_change" in result.tables
    odd = finetune_run_factory(tmp_path / "odd", method="ft")
    (odd / "calibration.json").write_text('{"splits": []}', encoding="utf-8")
    (odd / "features.json").write_text("[1, 2]", encoding="utf-8")
    result = build_report([odd], tmp_path / "r3", ReportConfig(tsne=False))
    assert any("calibration.json has another bin count or layout, recomputed" in n for n in result.notes)
    assert any("features.json has an unexpected layout, recomputed" in n for n in result.notes)
    assert {"calibration", "feature_change"} <= set(result.tables)


def test_discovery_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no run directories"):
        discover_runs([tmp_path / "empty"])
    with pytest.raises(DataError, match="does not exist"):
        discover_runs([tmp_path / "missing"])
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--quiet"]) == 2


def test_table_formatting() -> None:
    s = Stat.of([0.5, 0.7, None, float("nan")])
    assert s == Stat(pytest.approx(0.6), pytest.approx(np.std([0.5, 0.7], ddof=1)), 2)
    assert Stat.of([None]) is None and Stat.of([2.0]) == Stat(2.0, 0.0, 1)
    assert sig3(81400.0) == "8.14e4" and sig3(0.9512) == "0.951" and sig3(24.8) == "24.8" and pct(0.1234) == "12.34"
    assert sig3(1848.4) == "1848" and sig3(-0.000123) == "-1.23e-4" and sig3(123.4) == "123"
    t = Table("t", "T|itle", ["key", "acc (%)"], [["a|b", Stat(0.5, 0.1, 3)], ["c", None]], {"acc (%)": pct})
    md = t.to_markdown()
    assert "| a\\|b | 50.00 ± 10.00 |" in md and "| c | – |" in md
    assert _csv_rows_text(t.to_csv()) == [
        {"key": "a|b", "acc (%) mean": "50.0", "acc (%) std": "10.0", "acc (%) n": "3"},
        {"key": "c", "acc (%) mean": "", "acc (%) std": "", "acc (%) n": ""},
    ]
    assert '<table id="table-t">' in t.to_html() and "a|b" in t.to_html()


def _csv_rows_text(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_pooled_reliability_equals_reliability_of_concatenated_data() -> None:
    from dynascope.analysis.calibration import reliability_diagram
    from dynascope.report.plots import pool_reliability

    rng = np.random.default_rng(0)
    parts = [(rng.normal(size=(n, 3)) * 2, rng.integers(0, 3, size=n)) for n in (30, 50)]
    pooled = pool_reliability([reliability_diagram(z, y, n_bins=8) for z, y in parts])
    whole = reliability_diagram(np.vstack([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), n_bins=8)
    np.testing.assert_array_equal(pooled.count, whole.count)
    np.testing.assert_allclose(pooled.confidence, whole.confidence, equal_nan=True)
    np.testing.assert_allclose(pooled.accuracy, whole.accuracy, equal_nan=True)
    with pytest.raises(ValueError, match="different binnings"):
        pool_reliability([pooled, reliability_diagram(*parts[0], n_bins=5)])


def test_ntk_tables_list_kernels_and_run_level_values(tmp_path: Path, ntk_run_factory: Callable[..., Path]) -> None:
    from dynascope.report.tables import ntk_run_table, ntk_table

    found = discover_runs([ntk_run_factory(tmp_path / "k")])
    table = ntk_table(found.ntk)
    assert table.columns == ["task", "state", "kernel", "rank", "frobenius", "paper_row_acc_test"]
    shown = {row[2]: row for row in table.display_rows()}
    assert list(shown) == ["pre", "ft", "total"]
    assert shown["pre"][3:] == ["8", "5", "50.00"]
    runs = ntk_run_table(found.ntk)
    assert runs.columns == ["task", "state", "ft_ratio", "trace.exact_ft"]
    assert runs.display_rows() == [["toy", "ft", "0.2", "3"]]


def test_accuracy_tables_count_the_seeds_that_learned_and_skip_lr_grid_points(tmp_path, finetune_run_factory) -> None:
    from dynascope.report.runs import discover_runs
    from dynascope.report.tables import accuracy_tables

    finetune_run_factory(tmp_path / "ft" / "seed1", method="ft", seed=1, learned=True)
    finetune_run_factory(tmp_path / "ft" / "seed2", method="ft", seed=2, learned=False)
    finetune_run_factory(tmp_path / "lr-grid" / "ft" / "lr-0.001", method="ft", seed=1, learned=True)
    found = discover_runs([tmp_path])
    assert len(found.finetune) == 2, "learning-rate grid points are selection evidence, not results"
    (table,) = accuracy_tables(found.finetune)
    assert table.columns[:3] == ["method", "seeds", "learned"]
    assert table.display_rows()[0][:3] == ["ft", "2", "1/2"]


def _pngs(page: str) -> dict[str, bytes]:
    """Every embedded figure of a report page, decoded, by figure name."""
    found = re.findall(r'<figure id="fig-([^"]+)"><img src="data:image/png;base64,([^"]+)"', page)
    return {name: base64.b64decode(data) for name, data in found}


def _assert_valid_png(data: bytes) -> None:
    from PIL import Image

    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    with Image.open(io.BytesIO(data)) as image:
        assert image.width > 100 and image.height > 100


@pytest.fixture
def dynamics_root(tmp_path: Path, looped_run_factory: Callable[..., Path]) -> Path:
    """A finished ``reproduce dynamics``-like study (two runs) and two seeds of a standalone recipe, one analysed."""
    root = tmp_path / "dynamics"
    study = root / "study"
    looped_run_factory(study / "runs" / "itrsa_none", run="itrsa_none", norm="none")
    looped_run_factory(
        study / "runs" / "akorn_spec", run="akorn_spec", model="akorn", norm="pi_osc", regularizer="spec"
    )
    write_json(STUDY.path(study, "results_json"), {"preset": "toy", "runs": {}})
    STUDY.write(study, "results", "# results\n")
    for seed in SEEDS:
        looped_run_factory(root / "solo" / f"seed{seed}", seed=seed, learning_curve=True, analysis=seed == 0)
    return root


def test_dynamics_section_from_looped_runs_and_a_study(
    dynamics_root: Path, tmp_path: Path, finetune_run_factory: Callable[..., Path]
) -> None:
    ft = finetune_run_factory(tmp_path / "ft-run", pieces=())
    out = tmp_path / "report"
    result = build_report([dynamics_root, ft], out, ReportConfig(tsne=False))
    page = result.html_path.read_text(encoding="utf-8")
    assert '<section id="sec-dynamics">' in page and '<section id="sec-accuracy">' in page
    assert "Studies: " in page and "preset toy, 2 looped run(s)" in page
    assert {"dynamics_accuracy", "dynamics_lyapunov", "dynamics_training"} <= set(result.tables)
    dynamics_figures = {"accuracy", "lyapunov", "eigenvalues", "energy", "train-loss", "learning-curve"}
    assert {f"dynamics-{name}" for name in dynamics_figures} <= set(result.figures)
    pngs = _pngs(page)
    assert set(pngs) == set(result.figures)
    for data in pngs.values():
        _assert_valid_png(data)
    assert any("no analysis.json in seed1" in n for n in result.notes)
    record = read_json(out / "config.json")
    assert len(record["looped_runs"]) == 4 and record["studies"] == [str(dynamics_root / "study")]

    solo = [read_json(dynamics_root / "solo" / f"seed{s}" / "metrics.json") for s in SEEDS]
    acc = {(r["run"], r["test set"], r["accuracy"]): r for r in _csv_rows(out / "tables" / "dynamics_accuracy.csv")}
    assert {run for run, _, _ in acc} == {"itrsa_none", "akorn_spec", "itrsa + rms_token"}
    row = acc[("itrsa + rms_token", "OOD", "blank cell")]
    values = [m["cell_accuracy"]["ood"]["8"] for m in solo]
    assert row["seeds"] == "2" and float(row["T=8 (%) mean"]) == pytest.approx(100 * np.mean(values))
    assert float(row["T=8 (%) std"]) == pytest.approx(100 * np.std(values, ddof=1))
    lyap = {r["run"]: r for r in _csv_rows(out / "tables" / "dynamics_lyapunov.csv")}
    analysis = read_json(dynamics_root / "solo" / "seed0" / "analysis.json")
    mine = lyap["itrsa + rms_token"]
    assert mine["seeds analysed"] == "1" and float(mine["λ_max mean"]) == analysis["summary"]["lyapunov_max"]
    assert float(mine["λ_mean mean"]) == analysis["summary"]["lyapunov_mean"]
    assert mine["λ_mean over"] == "567 of 648" and mine["Prop. 5.1 bound holds"] == "yes"
    assert float(mine["ID board (%) mean"]) == pytest.approx(100 * solo[0]["board_accuracy"]["id"]["4"])
    training = {r["run"]: r for r in _csv_rows(out / "tables" / "dynamics_training.csv")}
    assert training["akorn_spec"]["regularizer"] == "spec (λ = 0)" and training["itrsa_none"]["norm"] == "none"
    assert float(training["itrsa + rms_token"]["final train loss mean"]) == pytest.approx(
        np.mean([m["train_loss"][-1] for m in solo])
    )


def test_dynamics_only_report_notes_what_is_missing(tmp_path: Path, looped_run_factory: Callable[..., Path]) -> None:
    bare = looped_run_factory(tmp_path / "bare", analysis=False)
    broken = looped_run_factory(tmp_path / "broken")
    (broken / "analysis.json").write_text("{not json", encoding="utf-8")
    odd = looped_run_factory(tmp_path / "odd", run="odd")
    (odd / "analysis.json").write_text('{"boards": []}', encoding="utf-8")
    result = build_report([bare, broken, odd], tmp_path / "report")
    page = result.html_path.read_text(encoding="utf-8")
    assert "sec-ntk" not in page and "sec-dynamics" in page
    assert result.tables == ["dynamics_accuracy", "dynamics_training"]
    assert result.figures == ["dynamics-accuracy", "dynamics-train-loss"]
    notes = " ".join(result.notes)
    assert "no analysis.json in bare" in notes and "cannot read JSON" in notes and "unexpected layout" in notes
    assert "no run records a per-step learning curve" in notes
    # bare and broken share a recipe: one row of two seeds (both seed 0), named by the recipe; odd by its run name
    rows = _csv_rows(tmp_path / "report" / "tables" / "dynamics_training.csv")
    assert [(r["run"], r["seeds"]) for r in rows] == [("itrsa + rms_token", "2"), ("odd", "1")]


def test_learning_curve_layouts(tmp_path: Path, looped_run_factory: Callable[..., Path]) -> None:
    path = looped_run_factory(tmp_path / "run", analysis=False)
    metrics = read_json(path / "metrics.json")
    records = [{"step": 10, "board_accuracy": 0.0, "cell_accuracy": {"id": 0.2}}, {"step": 20, "board_accuracy": 0.5}]
    columns = {"optimizer_step": [10, 20], "board_accuracy": {"id": [0.1, 0.3], "ood": [0.0, 0.1]}, "note": "x"}
    curve = LoopedRun.load(path, {**metrics, "learning_curve": records}).learning_curve()
    assert curve == {"board_accuracy": ([10.0, 20.0], [0.0, 0.5]), "cell_accuracy.id": ([10.0], [0.2])}
    curve = LoopedRun.load(path, {**metrics, "learning_curve": columns}).learning_curve()
    assert curve == {"board_accuracy.id": ([10.0, 20.0], [0.1, 0.3]), "board_accuracy.ood": ([10.0, 20.0], [0.0, 0.1])}
    assert LoopedRun.load(path, metrics).learning_curve() is None


BASE_GRID = np.array([(3 * (r % 3) + r // 3 + c) % 9 + 1 for r in range(9) for c in range(9)], dtype=np.int8)


def _sudoku_boards(n: int, givens: int, seed: int) -> SudokuSplit:
    """``n`` solved grids (the base grid under random symmetries) with ``givens`` cells revealed."""
    rng = np.random.default_rng(seed)
    grids = relabel_digits(np.tile(BASE_GRID, (n, 1)), np.argsort(rng.random((n, 9)), axis=1) + 1)
    solutions = np.take_along_axis(grids, random_cell_maps(rng, n), axis=1).astype(np.int8)
    puzzles = np.where(np.argsort(rng.random((n, 81)), axis=1) < givens, solutions, 0).astype(np.int8)
    lines, counts = np.zeros(n, dtype=np.int32), np.full(n, givens, dtype=np.int16)
    return SudokuSplit(puzzles=puzzles, solutions=solutions, source_line=lines, num_givens=counts)


def test_a_trained_and_analysed_looped_run_through_the_report_command(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    sudoku = tmp_path / "sudoku"
    splits = {"easy_train": _sudoku_boards(60, 40, 0), "easy_test": _sudoku_boards(10, 40, 1)}
    splits["hard_test"] = _sudoku_boards(10, 25, 2)
    for name, split in splits.items():
        write_npz(sudoku / f"{name}.npz", split.arrays())
    model = ModelConfig(model="itrsa", width=4, heads=2, osc_size=4, norm="rms_token")
    config = TrainConfig(model=model, epochs=2, batch_size=20, lr=1e-2, loop_steps=2, eval_steps=(1, 2, 4), ema_start=2)
    run = tmp_path / "run"
    train_run(config, splits["easy_train"], splits["easy_test"], splits["hard_test"], run)
    settings = AnalysisConfig(boards=1, t_jacobian=2, lyap_steps=2, trace_steps=2, ci_times=(0, 2))
    analysis = analyze_run_dir(run, settings, sudoku)
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out), "--quiet"]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert '<section id="sec-dynamics">' in page
    pngs = _pngs(page)
    assert {"dynamics-accuracy", "dynamics-lyapunov", "dynamics-eigenvalues", "dynamics-energy"} <= set(pngs)
    for data in pngs.values():
        _assert_valid_png(data)
    (lyap,) = _csv_rows(out / "tables" / "dynamics_lyapunov.csv")
    assert float(lyap["λ_max mean"]) == pytest.approx(analysis["summary"]["lyapunov_max"])
    assert lyap["λ_mean over"] == f"{analysis['boards'][0]['lyapunov']['mean_over']} of {81 * 4}"
    metrics = read_json(run / "metrics.json")
    acc = {(r["test set"], r["accuracy"]): r for r in _csv_rows(out / "tables" / "dynamics_accuracy.csv")}
    assert float(acc[("OOD", "board")]["T=4 (%) mean"]) == pytest.approx(100 * metrics["board_accuracy"]["ood"]["4"])
