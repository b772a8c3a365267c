"""Backbones, the linear-head classifier and LoRA."""

from dynascope.models.backbone import load_backbone, resolve_model
from dynascope.models.classifier import Classifier, pool
from dynascope.models.lora import LoraSettings, apply_lora, count_trainable

__all__ = [
    "Classifier",
    "LoraSettings",
    "apply_lora",
    "count_trainable",
    "load_backbone",
    "pool",
    "resolve_model",
]
