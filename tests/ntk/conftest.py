"""Fixtures of the NTK tests: tiny float64 classifiers shared within a module."""

from __future__ import annotations

import pytest

from dynascope.models.classifier import Classifier
from ntk.tiny_ntk import tiny_classifier


@pytest.fixture(scope="module")
def bert_clf() -> Classifier:
    return tiny_classifier("bert")


@pytest.fixture(scope="module")
def roberta_clf() -> Classifier:
    return tiny_classifier("roberta", pooling="mean", seed=1)
