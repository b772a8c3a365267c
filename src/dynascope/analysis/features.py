"""Feature-change metrics: how far fine-tuning moved the features φ and how separable they are.

Pure functions on arrays (numpy or torch; everything is computed in float64 numpy). Conventions:

- ``feature_shift`` is the paper's Diff(F): mean over examples of ‖φ_post(x) − φ_pre(x)‖₂.
- ``cosine_to_pre`` is the mean over examples of cos(φ_post(x), φ_pre(x)).
- ``mean_pairwise_cosine`` is the paper's CS(F): the mean cosine similarity over all ordered pairs
  (i, j), i ≠ j, of one feature set (anisotropy). The diagonal (always 1) is excluded.
- ``fisher_ratio`` is Fisher's discriminant ratio tr(S_W⁺ S_B), see its docstring.
- ``tsne_embedding`` / ``tsne_features_and_head``: seeded scikit-learn t-SNE, PCA to 50 dimensions first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from dynascope.errors import ConfigError, DataError
from dynascope.validation import check_array, check_labels

_EPS = 1e-12
FISHER_RCOND = 1e-10


def _paired(phi_post: ArrayLike, phi_pre: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    post = check_array(phi_post, name="phi_post", ndim=2)
    pre = check_array(phi_pre, name="phi_pre", ndim=2)
    if post.shape != pre.shape:
        raise DataError(f"phi_post and phi_pre must have the same shape, found {post.shape} and {pre.shape}")
    if post.shape[0] == 0:
        raise DataError("expected at least one example, found none", field="phi_post")
    return post, pre


def feature_shift(phi_post: ArrayLike, phi_pre: ArrayLike) -> float:
    """Diff(F): mean over examples of the Euclidean distance ‖φ_post(x) − φ_pre(x)‖₂."""
    post, pre = _paired(phi_post, phi_pre)
    return float(np.linalg.norm(post - pre, axis=1).mean())


def _unit_rows(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rows divided by their norms; an all-zero row stays zero (its cosine with anything counts as 0)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, _EPS)


def cosine_to_pre(phi_post: ArrayLike, phi_pre: ArrayLike) -> float:
    """Mean over examples of cos(φ_post(x), φ_pre(x)); 1.0 when the features did not move in direction."""
    post, pre = _paired(phi_post, phi_pre)
    return float(np.sum(_unit_rows(post) * _unit_rows(pre), axis=1).mean())


def mean_pairwise_cosine(phi: ArrayLike) -> float:
    """CS(F): mean of cos(φ_i, φ_j) over ordered pairs i ≠ j (the diagonal is excluded).

    Computed in O(N·h) as (‖Σ u_i‖² − Σ ‖u_i‖²) / (N(N − 1)) with u_i the unit rows; an all-zero row
    contributes cosine 0 to every pair. Needs at least two examples.
    """
    x = check_array(phi, name="phi", ndim=2)
    n = x.shape[0]
    if n < 2:
        raise DataError(f"expected at least 2 examples for pairwise cosine, found {n}", field="phi")
    u = _unit_rows(x)
    total = float(np.sum(u.sum(axis=0) ** 2))
    diagonal = float(np.sum(u * u))
    return (total - diagonal) / (n * (n - 1))


def scatter_matrices(phi: ArrayLike, labels: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Within-class and between-class scatter (S_W, S_B), both divided by the number of examples N.

    S_W = (1/N) Σ_c Σ_{i∈c} (φ_i − μ_c)(φ_i − μ_c)ᵀ and S_B = Σ_c (N_c/N)(μ_c − μ)(μ_c − μ)ᵀ, with μ the
    overall mean. Only classes present in ``labels`` count.
    """
    x = check_array(phi, name="phi", ndim=2)
    y = check_labels(labels, n=x.shape[0])
    if x.shape[0] == 0:
        raise DataError("expected at least one example, found none", field="phi")
    mu = x.mean(axis=0)
    h = x.shape[1]
    s_w = np.zeros((h, h))
    s_b = np.zeros((h, h))
    for c in np.unique(y):
        xc = x[y == c]
        mu_c = xc.mean(axis=0)
        centred = xc - mu_c
        s_w += centred.T @ centred
        d = (mu_c - mu)[:, None]
        s_b += xc.shape[0] * (d @ d.T)
    return s_w / x.shape[0], s_b / x.shape[0]


def fisher_ratio(phi: ArrayLike, labels: ArrayLike, *, rcond: float = FISHER_RCOND, ridge: float = 0.0) -> float:
    """Fisher's discriminant ratio tr(S_W⁺ S_B) of features ``phi`` [N, h] with integer ``labels`` [N].

    Both scatters are divided by N (``scatter_matrices``); the ratio does not depend on that common
    factor. ``ridge`` > 0 adds ``ridge · I`` to S_W before inverting. S_W⁺ is the Moore-Penrose
    pseudo-inverse (``numpy.linalg.pinv``, symmetric, singular values below ``rcond`` times the
    largest are dropped): when h ≥ N − C, S_W is singular and the ratio only counts the part of S_B inside
    the range of S_W, and tiny retained eigenvalues make the ratio huge (the paper's 10⁴–10⁸ on CB).
    Needs at least two classes.
    """
    if not rcond >= 0:
        raise ConfigError(f"rcond must be >= 0, found {rcond}")
    if not ridge >= 0:
        raise ConfigError(f"ridge must be >= 0, found {ridge}")
    x = check_array(phi, name="phi", ndim=2)
    y = check_labels(labels, n=x.shape[0])
    if np.unique(y).size < 2:
        raise DataError(f"expected at least 2 classes for a Fisher ratio, found {np.unique(y).size}", field="labels")
    s_w, s_b = scatter_matrices(x, y)
    if ridge > 0:
        s_w = s_w + ridge * np.eye(s_w.shape[0])
    inv = np.linalg.pinv(s_w, rcond=rcond, hermitian=True)
    return float(np.sum(inv * s_b.T))


@dataclass(frozen=True)
class FeatureChange:
    """Feature metrics of one split: shift from the pre-trained features and geometry before/after."""

    n: int
    diff: float
    cosine_to_pre: float
    cs_pre: float
    cs_post: float
    fdr_pre: float | None
    fdr_post: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``fdr_*`` is None when the split has a single class)."""
        return asdict(self)


def feature_change_metrics(
    phi_pre: ArrayLike,
    phi_post: ArrayLike,
    labels: ArrayLike,
    *,
    rcond: float = FISHER_RCOND,
    ridge: float = 0.0,
) -> FeatureChange:
    """Diff, cosine to the pre-trained features, CS and FDR before and after fine-tuning for one split."""
    post, pre = _paired(phi_post, phi_pre)
    y = check_labels(labels, n=post.shape[0])
    two_classes = np.unique(y).size >= 2
    return FeatureChange(
        n=int(post.shape[0]),
        diff=feature_shift(post, pre),
        cosine_to_pre=cosine_to_pre(post, pre),
        cs_pre=mean_pairwise_cosine(pre),
        cs_post=mean_pairwise_cosine(post),
        fdr_pre=fisher_ratio(pre, y, rcond=rcond, ridge=ridge) if two_classes else None,
        fdr_post=fisher_ratio(post, y, rcond=rcond, ridge=ridge) if two_classes else None,
    )


def tsne_embedding(
    x: ArrayLike, *, seed: int = 0, perplexity: float = 30.0, pca_components: int = 50
) -> NDArray[np.float64]:
    """2-D t-SNE coordinates [N, 2] of the rows of ``x`` (scikit-learn ``TSNE``, PCA init, seeded).

    Rows are first reduced to ``pca_components`` dimensions by PCA when there are more columns than
    that (the usual speed/noise step). The perplexity is lowered to (N − 1) / 3 when N is small, since
    t-SNE needs perplexity < N. Needs at least 3 rows.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    arr = check_array(x, name="x", ndim=2)
    n, h = arr.shape
    if n < 3:
        raise DataError(f"expected at least 3 rows for t-SNE, found {n}", field="x")
    if perplexity <= 0:
        raise ConfigError(f"perplexity must be > 0, found {perplexity}")
    if h > pca_components:
        arr = PCA(n_components=min(pca_components, n), random_state=seed).fit_transform(arr)
    perp = min(perplexity, max((n - 1) / 3.0, 1.0))
    tsne = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed)
    return np.asarray(tsne.fit_transform(arr), dtype=np.float64)


def tsne_features_and_head(
    phi: ArrayLike, head_weight: ArrayLike, *, seed: int = 0, perplexity: float = 30.0
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Joint t-SNE of features φ [N, h] and classifier rows V [C, h]; returns (coords [N, 2], [C, 2]).

    Every row is scaled to unit length first, so distances reflect directions (the logit of class c
    is ⟨V_c, φ⟩ + b_c) rather than the very different norms of features and head rows.
    """
    f = check_array(phi, name="phi", ndim=2)
    v = check_array(head_weight, name="head_weight", ndim=2)
    if f.shape[1] != v.shape[1]:
        raise DataError(f"phi has {f.shape[1]} columns but the head has {v.shape[1]}", field="head_weight")
    coords = tsne_embedding(np.vstack([_unit_rows(f), _unit_rows(v)]), seed=seed, perplexity=perplexity)
    return coords[: f.shape[0]], coords[f.shape[0] :]
