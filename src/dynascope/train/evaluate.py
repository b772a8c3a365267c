"""Prediction and task metrics: logits and features in one pass, accuracy plus the task's extra metrics."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dynascope.data.encode import Encoded, batch_order, collate
from dynascope.data.task import METRICS
from dynascope.device import module_device
from dynascope.distributed import gather_objects, owned, world
from dynascope.errors import ConfigError
from dynascope.progress import progress


@torch.no_grad()
def predict(
    clf: nn.Module, enc: Encoded, batch_size: int = 64, desc: str = "eval"
) -> tuple[np.ndarray, np.ndarray]:
    """Logits [N, C] and features φ [N, h] (float32 NumPy, in the split's order), in eval mode, computed on
    ``clf``'s device.

    Under ``torchrun`` the length-sorted batches are dealt round-robin to the ranks and the results gathered, so
    every rank gets all rows, each computed in the very batch a single process would have used (same padding,
    same bits).
    """
    was_training = clf.training
    device = module_device(clf)
    w = world()
    clf.eval()
    mine = owned(batch_order(enc, batch_size, shuffle=False), w)
    logits = np.zeros((len(enc), clf.num_labels), dtype=np.float32)
    phi = None
    try:
        for idx in progress(mine, desc=desc, total=len(mine)):
            feats = clf.features(**{k: v.to(device) for k, v in collate(enc, idx).items()})
            if phi is None:
                phi = np.zeros((len(enc), feats.shape[1]), dtype=np.float32)
            phi[idx] = feats.float().cpu().numpy()
            logits[idx] = clf.head(feats).float().cpu().numpy()
    finally:
        clf.train(was_training)
    if w.distributed:
        parts = gather_objects([(idx, logits[idx], phi[idx]) for idx in mine] if phi is not None else [])
        width = next(p[0][2].shape[1] for p in parts if p)
        phi = np.zeros((len(enc), width), dtype=np.float32)
        for part in parts:
            for idx, part_logits, part_phi in part:
                logits[idx], phi[idx] = part_logits, part_phi
    assert phi is not None
    return logits, phi


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, extra: tuple[str, ...] = ()
) -> dict[str, float]:
    """Accuracy plus ``extra`` metrics (``mcc``; ``f1`` of class 1; ``macro_f1``) from logits and labels."""
    from sklearn.metrics import f1_score, matthews_corrcoef

    labels = np.asarray(labels)
    if len(labels) == 0:
        raise ConfigError("cannot compute metrics on an empty split")
    pred = np.asarray(logits).argmax(axis=1)
    out = {"accuracy": float(np.mean(pred == labels)), "n": len(labels)}
    for name in extra:
        if name == "mcc":
            out["mcc"] = float(matthews_corrcoef(labels, pred))
        elif name == "f1":
            out["f1"] = float(f1_score(labels, pred, pos_label=1, average="binary", zero_division=0))
        elif name == "macro_f1":
            out["macro_f1"] = float(f1_score(labels, pred, average="macro", zero_division=0))
        else:
            raise ConfigError(f"unknown metric {name!r}; known: accuracy, {', '.join(METRICS)}")
    return out
