"""Training, resume, the CLI (train + analyze) and the smoke ``reproduce dynamics`` end to end."""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dynascope import runio
from dynascope.cli import main
from dynascope.dynamics.models import ModelConfig
from dynascope.dynamics.sudoku import SudokuSplit, random_cell_maps, relabel_digits
from dynascope.dynamics.train import TrainConfig, evaluate, load_run, train_run
from dynascope.errors import ConfigError
from dynascope.experiments.dynamics import check_metric

BASE = np.array([(3 * (r % 3) + r // 3 + c) % 9 + 1 for r in range(9) for c in range(9)], dtype=np.int8)


def boards(n: int, givens: int, seed: int) -> SudokuSplit:
    """``n`` valid solved grids (base grid under random symmetries), each with ``givens`` cells revealed."""
    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((n, 9)), axis=1) + 1
    grids = relabel_digits(np.tile(BASE, (n, 1)), perms)
    solutions = np.take_along_axis(grids, random_cell_maps(rng, n), axis=1).astype(np.int8)
    keep = np.argsort(rng.random((n, 81)), axis=1) < givens
    puzzles = np.where(keep, solutions, 0).astype(np.int8)
    return SudokuSplit(
        puzzles=puzzles,
        solutions=solutions,
        source_line=np.zeros(n, dtype=np.int32),
        num_givens=np.full(n, givens, dtype=np.int16),
    )


TRAIN, ID, OOD = boards(120, 40, 0), boards(20, 40, 1), boards(20, 25, 2)


def tiny(epochs: int = 2, **fields) -> TrainConfig:
    model = ModelConfig(model="itrsa", width=8, heads=2, osc_size=4, norm="rms_token")
    settings = {"batch_size": 20, "lr": 1e-2, "loop_steps": 3, "eval_steps": (1, 3, 6), "ema_start": 4, **fields}
    return TrainConfig(model=model, epochs=epochs, **settings)


def test_synthetic_boards_are_valid() -> None:
    for row in TRAIN.solutions[:5].reshape(5, 9, 9):
        for unit in (*row, *row.T, *(row[r : r + 3, c : c + 3].ravel() for r in (0, 3, 6) for c in (0, 3, 6))):
            assert sorted(unit.tolist()) == list(range(1, 10))


def test_training_reduces_loss_and_writes_the_run(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    metrics = train_run(tiny(epochs=4), TRAIN, ID, OOD, tmp_path / "run")
    losses = metrics["train_loss"]
    assert len(losses) == 4
    assert losses[-1] < losses[0] - 0.05
    for name in ("config.json", "env.json", "metrics.json", "model.safetensors"):
        assert (tmp_path / "run" / name).exists()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert set(metrics["board_accuracy"]) == {"id", "ood"}
    assert set(metrics["board_accuracy"]["ood"]) == {1, 3, 6}
    assert all(0.0 <= v <= 1.0 for v in metrics["cell_accuracy"]["id"].values())
    # the saved EMA model reproduces the evaluation
    config, model, record = load_run(tmp_path / "run")
    assert record["train"] == config.to_dict()
    res = evaluate(
        model,
        torch.as_tensor(OOD.puzzles).long(),
        torch.as_tensor(OOD.solutions).long(),
        (1, 3, 6),
        seed=config.seed + 1,
    )
    assert res["board"] == metrics["board_accuracy"]["ood"]
    # a finished run is not silently overwritten
    with pytest.raises(Exception, match="finished run"):
        train_run(tiny(epochs=4), TRAIN, ID, OOD, tmp_path / "run")


def test_interrupted_run_resumes_to_identical_weights(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    # a warm-up and a cosine schedule that straddle the interruption: the resumed run must follow them exactly
    config = tiny(epochs=3, regularizer="spec", reg_weight=1e-3, warmup_steps=3, lr_schedule="cosine")
    full = train_run(config, TRAIN, ID, OOD, tmp_path / "full")

    def stop(epoch: int, loss: float) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(config, TRAIN, ID, OOD, tmp_path / "cut", on_epoch=stop)
    assert (tmp_path / "cut" / "checkpoint.pt").exists()
    assert not (tmp_path / "cut" / "metrics.json").exists()
    with pytest.raises(ConfigError):
        train_run(tiny(epochs=3), TRAIN, ID, OOD, tmp_path / "cut")  # another config may not resume it
    resumed = train_run(config, TRAIN, ID, OOD, tmp_path / "cut")
    assert resumed["train_loss"] == full["train_loss"]
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["board_accuracy"] == full["board_accuracy"]


def test_learning_rate_warms_up_linearly_then_holds_or_follows_a_cosine_to_zero() -> None:
    from dynascope.dynamics.train import learning_rate

    const = tiny(lr=0.1, warmup_steps=4)
    assert [learning_rate(const, s, 20) for s in (1, 2, 4, 5, 20)] == pytest.approx([0.025, 0.05, 0.1, 0.1, 0.1])
    cos = tiny(lr=0.1, warmup_steps=4, lr_schedule="cosine")
    lrs = [learning_rate(cos, s, 20) for s in range(1, 21)]
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1]) and lrs[4] == pytest.approx(0.1)
    assert all(a > b for a, b in itertools.pairwise(lrs[4:])) and 0 < lrs[-1] < 0.002
    assert lrs[4 + 8] == pytest.approx(0.05)  # halfway through the 16 decay steps
    assert learning_rate(tiny(lr=0.1, lr_schedule="cosine"), 1, 10) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="lr_schedule"):
        tiny(lr_schedule="linear")
    with pytest.raises(ConfigError, match="warmup_steps"):
        tiny(warmup_steps=-1)


def test_train_config_validation() -> None:
    with pytest.raises(ConfigError):
        tiny(regularizer="e_multi", reg_weight=1.0)  # needs orthogonal_vo
    with pytest.raises(ConfigError):
        tiny(regularizer="e_single", reg_weight=1.0)  # needs one head
    with pytest.raises(ConfigError):
        tiny(eval_steps=())
    with pytest.raises(ConfigError):
        tiny(lr=0.0)
    assert TrainConfig.from_dict(tiny().to_dict()) == tiny()


def test_a_preset_picks_the_norm_of_the_normalised_itrsa_runs_and_the_digit_init() -> None:
    from dataclasses import replace

    from dynascope.experiments.dynamics import PRESETS, RUNS, train_config

    specs = {spec.name: spec for spec in RUNS}
    osc = replace(PRESETS["smoke"], itrsa_norm="rms_osc", digit_std=0.2)
    for preset, norm in ((PRESETS["smoke"], "rms_token"), (osc, "rms_osc")):
        for name in ("itrsa_rms", "itrsa_rms_spec"):
            assert train_config(preset, specs[name], "cpu", 0).model.norm == norm
        assert train_config(preset, specs["itrsa_none"], "cpu", 0).model.norm == "none"
        assert train_config(preset, specs["akorn"], "cpu", 0).model.norm == "pi_osc"
    assert train_config(osc, specs["akorn"], "cpu", 0).model.digit_std == 0.2
    with pytest.raises(ConfigError, match="itrsa_norm"):
        replace(PRESETS["smoke"], itrsa_norm="pi_token")


def test_cli_train_and_analyze(tmp_path: Path) -> None:
    data = tmp_path / "sudoku"
    for name, split in (("easy_train", TRAIN), ("easy_test", ID), ("hard_test", OOD)):
        runio.write_npz(data / f"{name}.npz", split.arrays())
    run = tmp_path / "run"
    flags = "--model akorn --norm rms_osc --width 8 --heads 2 --osc-size 4 --epochs 1 --batch-size 40"
    flags += " --loop-steps 2 --eval-steps 2,4 --digit-std 0.5 --threads 1 --quiet"
    rc = main(["dynamics", "train", "--sudoku-dir", str(data), "--out", str(run), *flags.split()])
    assert rc == 0
    recorded = runio.read_json(run / "config.json")["train"]["model"]
    assert (recorded["model"], recorded["digit_std"]) == ("akorn", 0.5)
    flags = "--t-jacobian 2 --lyap-steps 2 --trace-steps 2 --threads 1 --quiet"
    rc = main(["dynamics", "analyze", str(run), *flags.split()])
    assert rc == 0
    analysis = runio.read_json(run / "analysis.json")
    board = analysis["boards"][0]
    assert analysis["null_dims"] == 81 * 2
    assert board["lyapunov"]["unresolved"] == 81 * 2
    assert len(board["eigenvalues"]["real"]) == 648
    assert not board["normalization_bound"]["applies"]  # AKOrN: Ω and Proj change the chain rule
    for fig in ("eigenvalues.png", "energy.png", "accuracy_vs_T.png"):
        assert (run / "figures" / fig).stat().st_size > 1000


def test_reproduce_smoke_end_to_end(tmp_path: Path) -> None:
    if not os.environ.get("DYNASCOPE_DATA"):
        pytest.skip("DYNASCOPE_DATA is unset: the smoke reproduction builds boards from the real 17-clue pool")
    torch.set_num_threads(1)
    docs = tmp_path / "docs"
    rc = main(
        ["reproduce", "dynamics", "--preset", "smoke", "--out", str(tmp_path / "study"), "--quiet", "--docs", str(docs),
         "--seeds", "0,1"]
    )
    assert rc == 0
    study = tmp_path / "study"
    results = runio.read_json(study / "results.json")
    assert set(results["runs"]) == {"itrsa_none", "itrsa_rms", "itrsa_rms_spec", "akorn", "akorn_rms", "akorn_spec"}
    assert results["seeds"] == [0, 1] and all(set(r) == {"0", "1"} for r in results["runs"].values())
    assert runio.LOOPED.is_finished(study / "runs" / "akorn-seed1")
    text = (study / "results.md").read_text()
    assert "Board accuracy vs T, OOD" in text and "Lyapunov" in text and "Seeds: 0, 1" in text
    checks = (study / "checks.md").read_text()
    verdicts = sum(checks.count(f"**{word}**") for word in ("holds", "contradicted", "inconclusive", "n/a"))
    assert verdicts >= 8, checks
    assert "2 seed(s), fewer than 3" in checks  # two seeds can never make a claim hold
    assert "Accuracy compared below: **" in checks
    assert "## Learning curves" in text and "Best normalised model" in text
    for fig in ("accuracy_vs_T.png", "eigenvalues.png", "energy.png", "learning_curve.png"):
        assert (study / "figures" / fig).exists()
        assert (docs / "figures" / fig).read_bytes() == (study / "figures" / fig).read_bytes()
    assert (docs / "checks.md").read_text() == checks
    stages = runio.read_json(study / "stage_seconds.json")
    assert set(stages) == {f"{name}-seed{seed}" for name in results["runs"] for seed in (0, 1)}
    assert all(v["analysis"] > 0 for v in stages.values())


def test_checks_compare_cell_accuracy_only_when_no_board_is_solved() -> None:
    def row(board: float, cell: float) -> dict:
        return {
            "metrics": {
                "board_accuracy": {"id": {"16": 0.0}, "ood": {"16": board}},
                "cell_accuracy": {"id": {"16": cell}, "ood": {"16": cell}},
            }
        }

    assert check_metric([row(0.0, 0.2), row(0.0, 0.3)]) == "cell_accuracy"
    assert check_metric([row(0.0, 0.2), row(0.01, 0.3)]) == "board_accuracy"


def test_a_run_that_goes_non_finite_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    from dynascope.errors import TrainingError

    torch.set_num_threads(1)
    with pytest.raises(TrainingError, match=r"epoch \d+: .*non-finite.*training stopped"):
        train_run(tiny(epochs=3, lr=1e30), TRAIN, ID, OOD, tmp_path / "run")
    assert not runio.LOOPED.is_finished(tmp_path / "run")
    ckpt = runio.LOOPED.path(tmp_path / "run", "checkpoint")
    if ckpt.exists():  # what is kept is finite
        state = torch.load(ckpt, weights_only=True)
        assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_the_learning_curve_reads_the_model_only_and_survives_a_resume(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    plain = train_run(tiny(epochs=2), TRAIN, ID, OOD, tmp_path / "plain")
    curved = train_run(tiny(epochs=2, curve_every=2, curve_boards=8), TRAIN, ID, OOD, tmp_path / "curved")
    assert plain["train_loss"] == curved["train_loss"] and plain["board_accuracy"] == curved["board_accuracy"]
    curve = curved["learning_curve"]
    assert [p["step"] for p in curve] == list(range(2, curved["optimizer_steps"] + 1, 2))
    assert all(0.0 <= p["board_accuracy"] <= 1.0 and 0.0 <= p["cell_accuracy"] <= 1.0 for p in curve)

    def stop(epoch: int, loss: float) -> None:
        raise KeyboardInterrupt

    cut = tiny(epochs=2, curve_every=2, curve_boards=8)
    with pytest.raises(KeyboardInterrupt):
        train_run(cut, TRAIN, ID, OOD, tmp_path / "cut", on_epoch=stop)
    assert train_run(cut, TRAIN, ID, OOD, tmp_path / "cut")["learning_curve"] == curve


def test_the_checks_give_holds_contradicted_and_inconclusive_on_synthetic_seed_tables() -> None:
    from dynascope.experiments.dynamics import PRESETS, _checks_md

    preset = PRESETS["smoke"]  # eval T 2, 4, 8; training T 4
    noise = {"akorn": (0.0, 0.05, -0.05), "akorn_spec": (0.03, -0.03, 0.01)}  # paired differences +.03 −.08 +.06
    # board accuracy at the training T by run: RMSNorm clearly above no norm (holds), Spec clearly below (contra-
    # dicted), AKOrN + Spec against AKOrN within noise (inconclusive)
    level = {"itrsa_none": 0.05, "itrsa_rms": 0.40, "itrsa_rms_spec": 0.20, "akorn": 0.30, "akorn_rms": 0.35,
             "akorn_spec": 0.30}

    def row(name: str, seed: int) -> dict:
        acc = level[name] + (noise[name][seed] if name in noise else 0.002 * seed)
        curve = {str(t): acc + 0.01 * i for i, t in enumerate(preset.eval_steps)}
        bound = {"measured": 0.5, "bound": 0.9, "R": 2.0, "gamma_max": 1.0, "eta": 1.0, "holds": True}
        return {
            "name": name,
            "seed": seed,
            "metrics": {"board_accuracy": {"id": curve, "ood": curve}, "cell_accuracy": {"id": curve, "ood": curve},
                        "skipped_nonfinite_steps": 0},
            "analysis": {"boards": [{"lyapunov": {"max": 0.1 + 0.001 * seed if name != "itrsa_none" else 2.0 + seed},
                                     "normalization_bound": bound}]},
        }

    rows = [row(name, seed) for name in level for seed in (0, 1, 2)]
    checks = _checks_md(rows, preset, (0, 1, 2))
    assert "Accuracy compared below: **board accuracy**" in checks
    section = {k: checks.split(f"## {k}.")[1].split("\n## ")[0] for k in range(1, 6)}
    assert "**holds**" in section[1]  # λ_max 0.101 ± 0.0006 inside [−0.05, 0.3]
    assert section[2].count("**holds**") == 3  # ID, OOD and the larger λ_max without norm
    spec_itrsa, spec_akorn = [line for line in section[3].splitlines() if line.startswith("- ")]
    assert "**contradicted**" in spec_itrsa and "**inconclusive**" in spec_akorn
    assert "**holds**" in section[4]  # +1 point per T on every seed, SE 0 → beyond 2 SE
    assert section[5].count("**holds**") == 2


def test_results_name_the_best_normalised_model_with_its_board_accuracy_and_learning_curve() -> None:
    from dynascope.experiments.dynamics import _learning_curve_md, best_normalised

    def row(name: str, seed: int, board: float, cell: float, steps: int) -> dict:
        curve = [
            {"step": s, "board_accuracy": board * s / steps, "cell_accuracy": cell} for s in range(10, steps + 1, 10)
        ]
        return {
            "name": name,
            "seed": seed,
            "label": f"{name} · seed {seed}",
            "metrics": {"board_accuracy": {"id": {"8": board}}, "cell_accuracy": {"id": {"8": cell}},
                        "learning_curve": curve},
        }

    # the no-norm run has the best boards but is never "the best normalised"; itrsa_rms beats akorn on boards
    # although akorn fills more blank cells
    rows = [row("itrsa_none", s, 0.9, 0.9, 10) for s in (0, 1)]
    rows += [row("itrsa_rms", s, 0.2 + 0.1 * s, 0.5, 400) for s in (0, 1)]
    rows += [row("akorn", s, 0.1, 0.8, 400) for s in (0, 1)]
    assert best_normalised(rows, 8) == "itrsa_rms"
    text = "\n".join(_learning_curve_md(rows, 8, 0))
    assert "**itrsa_rms**: ID board accuracy 25.0 ± 5.0 %" in text and "seed 0: 20.0, seed 1: 30.0" in text
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    # first the best model's every seed, then every run of the first seed
    seeds_at = lines.index("| step | seed 0 | seed 1 |")
    runs_at = lines.index("| step | itrsa_none | itrsa_rms | akorn |")
    assert seeds_at < runs_at
    by_seed, by_run = lines[seeds_at + 1 : runs_at], lines[runs_at + 1 :]
    assert len(by_seed) == 12 and by_seed[-1] == "| 400 | 20.0 / 50.0 | 30.0 / 50.0 |"
    assert len(by_run) == 12 and by_run[0].startswith("| 10 | 90.0 / 90.0 | 0.5 / 50.0 |")
    assert by_run[-1] == "| 400 | – | 20.0 / 50.0 | 10.0 / 80.0 |"  # the 1-epoch run had ended
    assert "no run recorded" not in text.lower()
    for r in rows:
        r["metrics"]["learning_curve"] = []
    assert "No run recorded a learning curve" in "\n".join(_learning_curve_md(rows, 8, 0))


def test_a_study_with_two_workers_gives_each_run_the_results_of_one_process(tmp_path: Path) -> None:
    if not os.environ.get("DYNASCOPE_DATA"):
        pytest.skip("DYNASCOPE_DATA is unset: the smoke reproduction builds boards from the real 17-clue pool")
    from dynascope.experiments.dynamics import PRESETS, reproduce

    torch.set_num_threads(1)  # the serial study and each worker compute with one thread
    runs, seeds = ("itrsa_none", "itrsa_rms"), (0, 1)
    serial = reproduce(PRESETS["smoke"], tmp_path / "serial", seeds=seeds, runs=runs, device="cpu")
    own = dataclasses.replace(PRESETS["smoke"], runs=runs)  # the preset's own runs when --runs is not given
    side = reproduce(own, tmp_path / "side", seeds=seeds, device="cpu", workers=2)
    assert side["timings"]["workers"] == 2 and set(side["timings"]["runs"]) == set(serial["timings"]["runs"])
    for name in runs:
        for seed in ("0", "1"):
            a, b = serial["runs"][name][seed], side["runs"][name][seed]
            assert a["train_loss"] == b["train_loss"] and a["board_accuracy"] == b["board_accuracy"]
            assert a["cell_accuracy"] == b["cell_accuracy"]
    assert "runs side by side: 2" in (tmp_path / "side" / "results.md").read_text()
    with pytest.raises(ConfigError, match="workers"):
        reproduce(PRESETS["smoke"], tmp_path / "bad", runs=runs, workers=0)
    with pytest.raises(ConfigError, match=r"runs: unknown \['nope'\]"):
        dataclasses.replace(PRESETS["smoke"], runs=("itrsa_rms", "nope"))
