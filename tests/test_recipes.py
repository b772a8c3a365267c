"""Recipes end to end on real CB data with a tiny random encoder: the run-directory contract, determinism,
resume, refusal to overwrite, LP-FT starting from the LP head, and the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from safetensors.torch import load_file

from dynascope.cli import main
from dynascope.errors import RunExistsError
from dynascope.runio import read_json
from dynascope.train.recipes import RunConfig, load_run_classifier, run
from tiny_models import tiny_bert_folder

pytestmark = pytest.mark.skipif(not os.environ.get("DYNASCOPE_DATA"), reason="DYNASCOPE_DATA is not set")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_bert_folder(tmp_path_factory.mktemp("tiny") / "bert")


def config(model_dir, method: str, **kw) -> RunConfig:
    base = dict(task="cb", method=method, model=str(model_dir), epochs=2, max_train=48, lr=1e-3, batch_size=16)
    base.update(kw)
    return RunConfig(**base)


def test_lp_ft_run_directory_contract(model_dir, tmp_path) -> None:
    out = tmp_path / "lpft"
    metrics = run(config(model_dir, "lp-ft"), out)
    for name in ("config.json", "env.json", "metrics.json", "logits.npz", "features.npz", "head.safetensors"):
        assert (out / name).exists(), name
    assert not (out / "checkpoint").exists()
    saved = read_json(out / "metrics.json")
    assert saved["task"] == "cb" and saved["method"] == "lp-ft" and saved["seed"] == 1001
    assert set(saved["val"]) >= {"accuracy", "macro_f1"} and set(saved["test"]) >= {"accuracy", "macro_f1"}
    assert saved["ood"] == {}
    norms = saved["head_norm"]
    assert norms["after_lp"] is not None and len(norms["per_epoch"]) == 2 == len(saved["history"])
    assert norms["final"] == pytest.approx(norms["per_epoch"][saved["best_epoch"] - 1], rel=1e-6)
    logits = np.load(out / "logits.npz")
    assert logits["test.logits"].shape == (56, 3) and logits["val.logits"].shape == (25, 3)
    features = np.load(out / "features.npz")
    assert features["test.phi_pre"].shape == features["test.phi_post"].shape == (56, 16)
    assert not np.allclose(features["test.phi_pre"], features["test.phi_post"])
    head = load_file(str(out / "head.safetensors"))
    assert head["weight"].shape == (3, 16)
    config_saved = read_json(out / "config.json")
    assert config_saved["lr"] == 1e-3 and config_saved["lora"] is None
    assert metrics["test"]["accuracy"] == saved["test"]["accuracy"]


def test_lp_head_is_what_lp_ft_starts_from(model_dir, tmp_path) -> None:
    lp = run(config(model_dir, "lp"), tmp_path / "lp")
    lpft = run(config(model_dir, "lp-ft"), tmp_path / "lpft")
    assert lp["head_norm"]["after_lp"] == pytest.approx(lpft["head_norm"]["after_lp"], rel=1e-9)
    assert lp["head_norm"]["final"] == lp["head_norm"]["after_lp"] and lp["history"] == []
    features = np.load(tmp_path / "lp" / "features.npz")
    assert np.array_equal(features["val.phi_pre"], features["val.phi_post"])


def test_same_seed_same_numbers_and_refusal(model_dir, tmp_path) -> None:
    a = run(config(model_dir, "lora", epochs=1), tmp_path / "a")
    b = run(config(model_dir, "lora", epochs=1), tmp_path / "b")
    for key in ("val", "test", "head_norm", "best_epoch"):
        assert a[key] == b[key]
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    assert np.array_equal(np.load(tmp_path / "a" / "logits.npz")["test.logits"],
                          np.load(tmp_path / "b" / "logits.npz")["test.logits"])
    assert (tmp_path / "a" / "adapter.safetensors").exists()
    with pytest.raises(RunExistsError, match="--overwrite"):
        run(config(model_dir, "lora", epochs=1), tmp_path / "a")
    clf, _, cfg = load_run_classifier(tmp_path / "a")
    assert cfg.method == "lora" and clf.head_norm() == pytest.approx(a["head_norm"]["final"], rel=1e-6)


def test_cli_train_and_compare(model_dir, tmp_path, capsys) -> None:
    common = ["--task", "cb", "--model", str(model_dir), "--epochs", "1", "--max-train", "30", "--quiet"]
    assert main(["train", "--method", "ft", *common, "--out", str(tmp_path / "ft")]) == 0
    assert "cb/ft seed 1001" in capsys.readouterr().out
    assert main(["train", "--method", "ft", *common, "--out", str(tmp_path / "ft")]) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    code = main(["compare", "--methods", "lp,ft", "--seeds", "1,2", *common, "--out", str(tmp_path / "cmp")])
    assert code == 0
    table = (tmp_path / "cmp" / "summary.md").read_text()
    assert "| cb | lp | 2 |" in table and "| cb | ft | 2 |" in table
    assert (tmp_path / "cmp" / "summary.csv").read_text().startswith("task,method,seeds,")
    assert "test accuracy" in capsys.readouterr().out


def test_cli_config_file_and_bad_method(model_dir, tmp_path, capsys) -> None:
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"task": "cb", "model": str(model_dir), "epochs": 1, "max_train": 24,
                               "lp": {"protocol": "gd", "gd_steps": 20}}))
    assert main(["train", "--method", "lp", "--config", str(cfg), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    saved = read_json(tmp_path / "r" / "config.json")
    assert saved["lp"]["protocol"] == "gd" and saved["max_train"] == 24
    assert len(read_json(tmp_path / "r" / "metrics.json")["lp"]["norm_trajectory"]) == 21
    bad = tmp_path / "bad.json"
    bad.write_text('{"task": "cb", "epochz": 3}')
    assert main(["train", "--method", "lp", "--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "epochz" in capsys.readouterr().err


def test_scale_head_grid(model_dir, tmp_path, capsys) -> None:
    args = ["scale-head", "--task", "cb", "--model", str(model_dir), "--norms", "0.5,20", "--methods", "ft,lp-ft",
            "--epochs", "1", "--max-train", "24", "--quiet", "--out", str(tmp_path / "sh")]
    assert main(args) == 0
    for method in ("ft", "lp-ft"):
        for norm in ("0.5", "20"):
            metrics = read_json(tmp_path / "sh" / method / f"norm{norm}" / "seed1001" / "metrics.json")
            assert metrics["head_norm"]["before_ft"] == pytest.approx(float(norm), rel=1e-6)
    table = (tmp_path / "sh" / "scale_head.md").read_text()
    assert table.count("| ft |") == 2 and table.count("| lp-ft |") == 2
    assert (tmp_path / "sh" / "scale_head.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*args[:-2], "--methods", "lp", "--out", str(tmp_path / "x")]) == 2
    assert "has none" in capsys.readouterr().err
