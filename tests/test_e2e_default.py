"""End to end on the default model (packaged all-MiniLM-L6-v2) and real CB data."""

from __future__ import annotations

import os

import numpy as np
import pytest

from dynascope.cli import main
from dynascope.runio import read_json

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("DYNASCOPE_DATA"), reason="DYNASCOPE_DATA is not set"),
]


def test_lp_on_cb_with_the_default_model(tmp_path) -> None:
    out = tmp_path / "lp"
    assert main(["train", "--task", "cb", "--method", "lp", "--out", str(out), "--quiet"]) == 0
    metrics = read_json(out / "metrics.json")
    # random head: ‖V‖ ≈ 0.02·√(h·C) with h = 384, C = 3
    assert metrics["head_norm"]["init"] == pytest.approx(0.02 * (384 * 3) ** 0.5, rel=0.06)
    # CB test: the majority class is 50 %; frozen MiniLM features separate it better than that
    assert metrics["test"]["accuracy"] > 0.6
    assert metrics["lp"]["strength"] > 0
    env = read_json(out / "env.json")
    assert env["torch"].startswith("2.13.0") and env["seed"] == 1001


def test_short_lora_and_ft_change_features(tmp_path) -> None:
    common = ["--task", "cb", "--epochs", "1", "--max-train", "24", "--quiet"]
    for method in ("ft", "lp-lora"):
        out = tmp_path / method
        assert main(["train", "--method", method, *common, "--out", str(out)]) == 0
        features = np.load(out / "features.npz")
        shift = np.linalg.norm(features["test.phi_post"] - features["test.phi_pre"], axis=1).mean()
        assert shift > 0
        metrics = read_json(out / "metrics.json")
        assert len(metrics["head_norm"]["per_epoch"]) == 1
    assert read_json(tmp_path / "lp-lora" / "metrics.json")["trainable_parameters"] == 74883

