"""Calibration metrics of a classifier's predicted probabilities: ECE, MCE, adaptive ECE, Brier, NLL.

Pure functions on arrays plus ``CalibrationAccumulator`` for streaming (torchmetrics style). Every
function takes ``scores`` [N, C] — logits by default, probabilities with ``from_logits=False`` — and
integer ``labels`` [N]; everything is computed in float64.

Binning convention (equal-width, ``n_bins`` = 15 by default as in the paper): bin b covers
(b/B, (b+1)/B], i.e. ``lower < conf ≤ upper``; a confidence of exactly 0.0 goes to the first bin and
1.0 to the last. torchmetrics' ``MulticlassCalibrationError`` uses ``lower ≤ conf < upper`` instead
and puts a confidence of exactly 1.0 into an extra (B+1)-th bin of its own, so the two agree except
for confidences lying exactly on an edge: an interior edge k/B, or 1.0 when the last bin also holds
confidences below 1.0. Adaptive (equal-mass) ECE sorts the confidences (stable) and splits them into
``n_bins`` consecutive groups whose sizes differ by at most one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from dynascope.errors import DataError
from dynascope.validation import check_array, check_int, check_labels, to_numpy

DEFAULT_BINS = 15
PROB_FLOOR = 1e-12


def softmax(logits: ArrayLike) -> NDArray[np.float64]:
    """Row-wise softmax in float64, stabilised by subtracting the row maximum."""
    z = np.asarray(to_numpy(logits), dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(logits: ArrayLike) -> NDArray[np.float64]:
    """Row-wise log-softmax in float64 (exact log-sum-exp, no clamping)."""
    z = np.asarray(to_numpy(logits), dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def validate_scores(
    scores: ArrayLike, labels: ArrayLike, from_logits: bool = True
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Validated float64 scores [N, C] (C >= 2, finite; in [0, 1] unless logits) and int64 labels [N] in [0, C)."""
    s = check_array(scores, name="scores", ndim=2)
    if s.shape[1] < 2:
        raise DataError(f"expected scores of shape [N, C] with C >= 2, found {s.shape}", field="scores")
    y = check_labels(labels, n=s.shape[0], num_classes=s.shape[1])
    if not from_logits and (s.min(initial=0.0) < 0 or s.max(initial=0.0) > 1):
        raise DataError(
            f"from_logits=False expects probabilities in [0, 1], found values in [{s.min()}, {s.max()}]",
            field="scores",
        )
    return s, y


def probabilities(scores: ArrayLike, from_logits: bool = True) -> NDArray[np.float64]:
    """Softmax of logits, or the probabilities themselves (float64) when ``from_logits`` is False."""
    s = np.asarray(to_numpy(scores), dtype=np.float64)
    return softmax(s) if from_logits else s


def confidence_and_correct(
    scores: ArrayLike, labels: ArrayLike, from_logits: bool = True
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Top-label confidence (max probability) and correctness (1.0 if argmax == label) per example."""
    s, y = validate_scores(scores, labels, from_logits)
    p = probabilities(s, from_logits)
    pred = p.argmax(axis=1)
    return p.max(axis=1), (pred == y).astype(np.float64)


@dataclass(frozen=True)
class Binning:
    """How confidences were binned, stated in every result."""

    scheme: Literal["equal-width", "equal-mass"]
    n_bins: int
    edges: tuple[float, ...]

    def describe(self) -> str:
        """One line for reports and JSON."""
        if self.scheme == "equal-width":
            return (
                f"{self.n_bins} equal-width bins on [0, 1], right-closed (lower < conf <= upper); "
                "conf 0.0 in the first bin, 1.0 in the last"
            )
        return f"{self.n_bins} equal-mass bins of sorted confidences (sizes differ by at most one)"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "scheme": self.scheme,
            "n_bins": self.n_bins,
            "edges": list(self.edges),
            "rule": self.describe(),
        }


def equal_width_binning(n_bins: int = DEFAULT_BINS) -> Binning:
    """Equal-width bins on [0, 1] with edges b/B."""
    n_bins = check_int(n_bins, "n_bins")
    return Binning("equal-width", n_bins, tuple(float(e) for e in np.linspace(0.0, 1.0, n_bins + 1)))


def bin_index(confidence: ArrayLike, n_bins: int = DEFAULT_BINS) -> NDArray[np.int64]:
    """Equal-width bin of each confidence: b such that b/B < conf ≤ (b+1)/B; 0.0 → bin 0, 1.0 → bin B−1."""
    edges = np.asarray(equal_width_binning(n_bins).edges)
    idx = np.searchsorted(edges, np.asarray(confidence, dtype=np.float64), side="left") - 1
    return np.clip(idx, 0, n_bins - 1).astype(np.int64)


@dataclass(frozen=True)
class ReliabilityData:
    """Per-bin count, mean confidence and accuracy (NaN where a bin is empty)."""

    binning: Binning
    count: NDArray[np.int64]
    confidence: NDArray[np.float64]
    accuracy: NDArray[np.float64]

    @property
    def gaps(self) -> NDArray[np.float64]:
        """|accuracy − confidence| per bin (NaN for empty bins)."""
        return np.abs(self.accuracy - self.confidence)

    def ece(self) -> float:
        """Σ_b (n_b / N) |acc_b − conf_b| over non-empty bins."""
        mask = self.count > 0
        total = self.count.sum()
        return float(np.sum(self.count[mask] * self.gaps[mask]) / total) if total else float("nan")

    def mce(self) -> float:
        """max_b |acc_b − conf_b| over non-empty bins."""
        mask = self.count > 0
        return float(self.gaps[mask].max()) if mask.any() else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; empty bins have null confidence and accuracy."""

        def clean(a: NDArray[np.float64]) -> list[float | None]:
            return [None if np.isnan(v) else float(v) for v in a]

        return {
            "binning": self.binning.to_dict(),
            "count": [int(c) for c in self.count],
            "confidence": clean(self.confidence),
            "accuracy": clean(self.accuracy),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReliabilityData:
        """Inverse of ``to_dict``."""
        b = d["binning"]

        def arr(v: list[float | None]) -> NDArray[np.float64]:
            return np.array([np.nan if x is None else x for x in v], dtype=np.float64)

        return cls(
            Binning(b["scheme"], int(b["n_bins"]), tuple(b["edges"])),
            np.asarray(d["count"], dtype=np.int64),
            arr(d["confidence"]),
            arr(d["accuracy"]),
        )


def _reliability_from(conf: NDArray[np.float64], correct: NDArray[np.float64], n_bins: int) -> ReliabilityData:
    idx = bin_index(conf, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return ReliabilityData(equal_width_binning(n_bins), count.astype(np.int64), mean_conf, acc)


def reliability_diagram(
    scores: ArrayLike, labels: ArrayLike, n_bins: int = DEFAULT_BINS, from_logits: bool = True
) -> ReliabilityData:
    """Equal-width reliability data: per bin, the count, mean confidence and accuracy."""
    check_int(n_bins, "n_bins")
    conf, correct = confidence_and_correct(scores, labels, from_logits)
    return _reliability_from(conf, correct, n_bins)


def expected_calibration_error(
    scores: ArrayLike, labels: ArrayLike, n_bins: int = DEFAULT_BINS, from_logits: bool = True
) -> float:
    """ECE = Σ_b (n_b / N) |acc_b − conf_b| over equal-width bins (top-label confidence)."""
    return reliability_diagram(scores, labels, n_bins, from_logits).ece()


def maximum_calibration_error(
    scores: ArrayLike, labels: ArrayLike, n_bins: int = DEFAULT_BINS, from_logits: bool = True
) -> float:
    """MCE = max over non-empty equal-width bins of |acc_b − conf_b|."""
    return reliability_diagram(scores, labels, n_bins, from_logits).mce()


def _adaptive_from(conf: NDArray[np.float64], correct: NDArray[np.float64], n_bins: int) -> float:
    if conf.size == 0:
        return float("nan")
    order = np.argsort(conf, kind="stable")
    groups = [g for g in np.array_split(order, min(n_bins, conf.size)) if g.size]
    return float(sum(g.size * abs(conf[g].mean() - correct[g].mean()) for g in groups) / conf.size)


def adaptive_calibration_error(
    scores: ArrayLike, labels: ArrayLike, n_bins: int = DEFAULT_BINS, from_logits: bool = True
) -> float:
    """Equal-mass ECE: confidences sorted and split into ``n_bins`` groups of (nearly) equal size."""
    check_int(n_bins, "n_bins")
    conf, correct = confidence_and_correct(scores, labels, from_logits)
    return _adaptive_from(conf, correct, n_bins)


def _per_example_brier(p: NDArray[np.float64], y: NDArray[np.int64]) -> NDArray[np.float64]:
    onehot = np.zeros_like(p)
    onehot[np.arange(y.size), y] = 1.0
    return np.sum((p - onehot) ** 2, axis=1)


def _per_example_nll(s: NDArray[np.float64], y: NDArray[np.int64], from_logits: bool) -> NDArray[np.float64]:
    if from_logits:
        return -log_softmax(s)[np.arange(y.size), y]
    return -np.log(np.maximum(s[np.arange(y.size), y], PROB_FLOOR))


def brier_score(scores: ArrayLike, labels: ArrayLike, from_logits: bool = True) -> float:
    """Multiclass Brier score: Σ_c (p_c − 1[c = y])², averaged over examples (range [0, 2])."""
    s, y = validate_scores(scores, labels, from_logits)
    return float(_per_example_brier(probabilities(s, from_logits), y).mean())


def brier_paper(scores: ArrayLike, labels: ArrayLike, from_logits: bool = True) -> float:
    """The paper's Brier: mean of (p_c − 1[c = y])² over all N·C entries (= ``brier_score`` / C)."""
    s, y = validate_scores(scores, labels, from_logits)
    return float(_per_example_brier(probabilities(s, from_logits), y).mean() / s.shape[1])


def negative_log_likelihood(scores: ArrayLike, labels: ArrayLike, from_logits: bool = True) -> float:
    """Mean −log p_y (exact log-softmax on logits; probabilities are floored at 1e-12)."""
    s, y = validate_scores(scores, labels, from_logits)
    return float(_per_example_nll(s, y, from_logits).mean())


@dataclass(frozen=True)
class CalibrationMetrics:
    """All calibration numbers of one set of predictions, with the binning they used."""

    n: int
    accuracy: float
    mean_confidence: float
    ece: float
    mce: float
    adaptive_ece: float
    brier: float
    brier_paper: float
    nll: float
    reliability: ReliabilityData

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (metrics as fractions, not percent)."""
        out: dict[str, Any] = {
            k: getattr(self, k)
            for k in (
                "n",
                "accuracy",
                "mean_confidence",
                "ece",
                "mce",
                "adaptive_ece",
                "brier",
                "brier_paper",
                "nll",
            )
        }
        out["binning"] = self.reliability.binning.describe()
        out["adaptive_binning"] = Binning("equal-mass", self.reliability.binning.n_bins, ()).describe()
        out["reliability"] = self.reliability.to_dict()
        return out


def _metrics_from(
    conf: NDArray[np.float64],
    correct: NDArray[np.float64],
    brier_i: NDArray[np.float64],
    nll_i: NDArray[np.float64],
    n_classes: int,
    n_bins: int,
) -> CalibrationMetrics:
    rel = _reliability_from(conf, correct, n_bins)
    n = int(conf.size)
    mean = (lambda a: float(a.mean())) if n else (lambda a: float("nan"))
    return CalibrationMetrics(
        n=n,
        accuracy=mean(correct),
        mean_confidence=mean(conf),
        ece=rel.ece(),
        mce=rel.mce(),
        adaptive_ece=_adaptive_from(conf, correct, n_bins),
        brier=mean(brier_i),
        brier_paper=mean(brier_i) / n_classes if n else float("nan"),
        nll=mean(nll_i),
        reliability=rel,
    )


def calibration_metrics(
    scores: ArrayLike, labels: ArrayLike, n_bins: int = DEFAULT_BINS, from_logits: bool = True
) -> CalibrationMetrics:
    """ECE, MCE, adaptive ECE, Brier (both conventions), NLL and reliability data in one pass."""
    acc = CalibrationAccumulator(n_bins=n_bins, from_logits=from_logits)
    acc.update(scores, labels)
    return acc.compute()


@dataclass
class CalibrationAccumulator:
    """Streaming calibration metrics: ``update`` batch by batch, ``compute`` at the end.

    Keeps four floats per example (confidence, correctness, Brier and NLL terms), never the logits,
    so ``compute`` is exactly ``calibration_metrics`` on the concatenated batches.
    """

    n_bins: int = DEFAULT_BINS
    from_logits: bool = True
    _parts: list[NDArray[np.float64]] = field(default_factory=list, init=False, repr=False)
    _n_classes: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_int(self.n_bins, "n_bins")

    def update(self, scores: ArrayLike, labels: ArrayLike) -> None:
        """Add one batch of scores [B, C] and labels [B]."""
        s, y = validate_scores(scores, labels, self.from_logits)
        if self._n_classes is not None and s.shape[1] != self._n_classes:
            raise DataError(f"expected {self._n_classes} classes as in earlier batches, found {s.shape[1]}")
        self._n_classes = s.shape[1]
        p = probabilities(s, self.from_logits)
        conf = p.max(axis=1)
        correct = (p.argmax(axis=1) == y).astype(np.float64)
        self._parts.append(
            np.stack([conf, correct, _per_example_brier(p, y), _per_example_nll(s, y, self.from_logits)])
        )

    def compute(self) -> CalibrationMetrics:
        """Metrics over everything seen since the last ``reset``."""
        if self._n_classes is None:
            raise DataError("no batches were given to the calibration accumulator")
        conf, correct, brier_i, nll_i = np.concatenate(self._parts, axis=1)
        return _metrics_from(conf, correct, brier_i, nll_i, self._n_classes, self.n_bins)

    def reset(self) -> None:
        """Forget every batch."""
        self._parts.clear()
        self._n_classes = None
