"""Which rows a split keeps: the held-out tail of a file (the 9:1 rule) and seeded stratified subsets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from dynascope.data.task import Task
from dynascope.errors import ConfigError
from dynascope.validation import check_int

HOLDOUT_FRACTION = 0.1


def tail_split(n: int, fraction: float = HOLDOUT_FRACTION) -> int:
    """Rows held out at the end of an ``n``-row file: ``ceil(fraction * n)``, as in sklearn's split."""
    return math.ceil(fraction * n)


def stratified_subset(labels: Sequence[int], k: int, seed: int) -> list[int]:
    """Sorted indices of ``k`` rows drawn without replacement, class proportions kept (seeded, deterministic).

    Per-class quotas are ``floor(k n_c / n)`` plus one for the largest remainders (ties: lower class first);
    when ``k`` is at least the number of classes, a class left at zero takes one row from the largest quota,
    so no class vanishes. Rows within a class are drawn by a ``numpy`` generator seeded with ``seed``.
    """
    k = check_int(k, "k")
    y = np.asarray(labels)
    n = len(y)
    if k >= n:
        return list(range(n))
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * k / n
    quota = np.floor(exact).astype(np.int64)
    by_remainder = sorted(range(len(classes)), key=lambda c: (-(exact[c] - quota[c]), c))
    for c in by_remainder[: k - int(quota.sum())]:
        quota[c] += 1
    if k >= len(classes):
        for c in np.flatnonzero(quota == 0):
            quota[int(np.argmax(quota))] -= 1
            quota[c] = 1
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for c, q in zip(classes, quota, strict=True):
        members = np.flatnonzero(y == c)
        chosen.extend(int(i) for i in rng.permutation(members)[:q])
    return sorted(chosen)


def limit_train(task: Task, max_train: int | None, seed: int) -> Task:
    """``task`` with a stratified, seeded subset of ``max_train`` training rows (unchanged when None)."""
    if max_train is None:
        return task
    seed = check_int(seed, "seed", minimum=0)
    max_train = check_int(max_train, "max_train")
    classes = len(set(task.train.labels))
    if max_train < classes:
        raise ConfigError(
            f"max_train: {max_train} rows cannot hold the {classes} classes of the training split "
            f"({task.train.source}); use at least {classes}"
        )
    keep = stratified_subset(task.train.labels, max_train, seed)
    if len(keep) == len(task.train):
        return task
    train = task.train.subset(keep)
    source = f"{task.train.source} [stratified {len(keep)} of {len(task.train)} rows, seed {seed}]"
    return replace(task, train=replace(train, source=source))
