"""Linear probing (LP): fit the head V, b on frozen features φ.

Three protocols, because the protocol decides the head norm that LP-FT starts from:
- ``cv``: multinomial L2 logistic regression with cross-validated strength (the paper: scikit-learn
  ``LogisticRegressionCV``, 10 strengths on logspace(-4, 4), stratified 5-fold, accuracy scoring, lbfgs);
- ``fixed``: the same model at one strength ``C``;
- ``gd``: full-batch gradient descent on the unregularised cross-entropy from the initial head, logging ‖V‖_F
  at every step — the mechanism the paper credits for the norm growth.

Binary problems: scikit-learn returns one row w (and intercept c); it is mapped to V = [−w/2; w/2],
b = [−c/2; c/2], which gives the same decision (w·φ + c > 0 ⇔ class 1) and the same probabilities.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from dynascope.errors import ConfigError
from dynascope.progress import say
from dynascope.validation import check_array, check_choice, check_int, check_labels, check_number

PROTOCOLS = ("cv", "fixed", "gd")
SCORINGS = ("accuracy", "neg_log_loss")


@dataclass(frozen=True)
class ProbeSettings:
    """How LP fits the head (see the module docstring)."""

    protocol: str = "cv"
    C: float = 1.0
    Cs: int = 10
    folds: int = 5
    scoring: str = "accuracy"
    max_iter: int = 5000
    tol: float = 1e-4
    gd_steps: int = 2000
    gd_lr: float = 0.1

    def __post_init__(self) -> None:
        check_choice(self.protocol, PROTOCOLS, "protocol")
        check_choice(self.scoring, SCORINGS, "scoring")
        check_number(self.C, "lp C", minimum=0.0, exclusive_minimum=True)
        check_number(self.gd_lr, "lp gd_lr", minimum=0.0, exclusive_minimum=True)
        for name, least in (("Cs", 1), ("folds", 2), ("max_iter", 1), ("gd_steps", 1)):
            check_int(getattr(self, name), f"lp {name}", minimum=least)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class ProbeResult:
    """A fitted head: ``weight`` V (C×h), ``bias`` b (C), the chosen strength and the ‖V‖ trajectory (``gd``)."""

    weight: np.ndarray
    bias: np.ndarray
    strength: float | None
    train_accuracy: float
    norm_trajectory: list[float] = field(default_factory=list)

    @property
    def norm(self) -> float:
        """‖V‖_F."""
        return float(np.linalg.norm(self.weight))


def _check(phi: np.ndarray, labels: np.ndarray, num_labels: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Features [N, h] (float64) and labels [N] in [0, num_labels) with at least two classes present."""
    phi = check_array(phi, name="phi", ndim=2)
    labels = check_labels(labels, n=phi.shape[0], num_classes=num_labels)
    present = np.unique(labels)
    if len(present) < 2:
        raise ConfigError(
            f"LP needs at least two classes in the {split} split ({len(labels)} rows), found {present.tolist()}"
        )
    return phi, labels


def cv_folds(labels: np.ndarray, folds: int, split: str = "training") -> int:
    """Stratified folds for ``labels``: ``folds``, or fewer (at least 2, with a note) when a class is smaller.

    Stratified k-fold needs k members of every class (scikit-learn raises when no class has k); a class of
    one example cannot be in both halves of any split, so it is a ``ConfigError`` naming the split and size.
    """
    classes, counts = np.unique(labels, return_counts=True)
    smallest = int(counts.min())
    if smallest >= folds:
        return folds
    rare = int(classes[np.argmin(counts)])
    if smallest < 2:
        raise ConfigError(
            f"LP cross-validation on the {split} split ({len(labels)} rows) needs at least 2 examples of every "
            f"class; class {rare} has {smallest}; use more training rows or --lp-protocol fixed"
        )
    say(
        f"note: class {rare} has only {smallest} examples in the {split} split ({len(labels)} rows); "
        f"LP cross-validation uses {smallest} folds instead of {folds}"
    )
    return smallest


def _expand(
    coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray, num_labels: int
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn coefficients → full V (C×h), b (C): binary ±½ mapping; classes never seen get a very low bias."""
    h = coef.shape[1]
    weight = np.zeros((num_labels, h))
    bias = np.zeros(num_labels)
    if coef.shape[0] == 1:  # binary: one row for classes[1] against classes[0]
        weight[classes[0]], weight[classes[1]] = -coef[0] / 2, coef[0] / 2
        bias[classes[0]], bias[classes[1]] = -intercept[0] / 2, intercept[0] / 2
    else:
        weight[classes] = coef
        bias[classes] = intercept
    missing = np.setdiff1d(np.arange(num_labels), classes)
    if len(missing):  # a class never seen in training can never be predicted
        bias[missing] = bias[classes].min() - 1e3
    return weight, bias


def fit_linear_probe(
    phi: np.ndarray,
    labels: np.ndarray,
    num_labels: int,
    settings: ProbeSettings | None = None,
    *,
    seed: int = 0,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    split: str = "training",
) -> ProbeResult:
    """Fit V, b on features ``phi`` [N, h]; ``init`` (V0, b0) is the starting head for the ``gd`` protocol.

    ``split`` names the labels' split in messages (the ``cv`` protocol may reduce its folds, see ``cv_folds``).
    """
    settings = settings or ProbeSettings()
    phi, labels = _check(phi, labels, num_labels, split)
    if settings.protocol == "gd":
        return _fit_gd(phi, labels, num_labels, settings, seed, init)
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        if settings.protocol == "cv":
            model = LogisticRegressionCV(
                Cs=settings.Cs,
                l1_ratios=(0.0,),
                cv=StratifiedKFold(cv_folds(labels, settings.folds, split)),
                scoring=settings.scoring,
                max_iter=settings.max_iter,
                tol=settings.tol,
                random_state=seed,
                use_legacy_attributes=False,
            )
        else:
            model = LogisticRegression(
                C=settings.C, l1_ratio=0.0, max_iter=settings.max_iter, tol=settings.tol, random_state=seed
            )
        model.fit(phi, labels)
    strength = float(np.ravel(model.C_)[0]) if settings.protocol == "cv" else settings.C
    weight, bias = _expand(model.coef_, model.intercept_, model.classes_, num_labels)
    accuracy = float(np.mean(np.argmax(phi @ weight.T + bias, axis=1) == labels))
    return ProbeResult(weight=weight, bias=bias, strength=strength, train_accuracy=accuracy)


def _fit_gd(
    phi: np.ndarray,
    labels: np.ndarray,
    num_labels: int,
    settings: ProbeSettings,
    seed: int,
    init: tuple[np.ndarray, np.ndarray] | None,
) -> ProbeResult:
    """Plain full-batch gradient descent on mean cross-entropy, no regularisation, float64."""
    x = torch.as_tensor(phi)
    y = torch.as_tensor(labels)
    if init is None:
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(num_labels, x.shape[1], generator=generator, dtype=torch.float64) * 0.02
        bias = torch.zeros(num_labels, dtype=torch.float64)
    else:
        weight = torch.as_tensor(np.asarray(init[0], dtype=np.float64)).clone()
        bias = torch.as_tensor(np.asarray(init[1], dtype=np.float64)).clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    norms = [float(weight.detach().norm())]
    for _ in range(settings.gd_steps):
        loss = torch.nn.functional.cross_entropy(x @ weight.T + bias, y)
        gw, gb = torch.autograd.grad(loss, (weight, bias))
        with torch.no_grad():
            weight -= settings.gd_lr * gw
            bias -= settings.gd_lr * gb
        norms.append(float(weight.detach().norm()))
    w, b = weight.detach().numpy(), bias.detach().numpy()
    accuracy = float(np.mean(np.argmax(phi @ w.T + b, axis=1) == labels))
    return ProbeResult(weight=w, bias=b, strength=None, train_accuracy=accuracy, norm_trajectory=norms)
