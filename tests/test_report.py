"""The report and the analysis commands on synthetic run directories."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dynascope.analysis.calibration import calibration_metrics
from dynascope.cli import main
from dynascope.errors import DataError
from dynascope.report.build import ReportConfig, build_report
from dynascope.report.runs import discover_runs
from dynascope.report.tables import Stat, Table, pct, sig3
from dynascope.runio import read_json

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
