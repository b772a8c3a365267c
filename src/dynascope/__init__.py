"""dynascope: measure why fine-tuning and looped inference of Transformers behave as they do.

The public API (``import dynascope as ds``): the functional NTK (``as_classifier``, ``empirical_ntk_fn``,
``NtkImplementation``), its statistics, traces and kernel solvers, calibration and feature-change metrics,
temperature scaling, and the looped-attention dynamics (Jacobians, spectra, Lyapunov exponents).
"""

from dynascope.analysis import (
    TemperatureScaler,
    calibration_metrics,
    feature_change_metrics,
    fisher_ratio,
    fit_temperature,
)
from dynascope.api import NtkImplementation, as_classifier, empirical_ntk_fn
from dynascope.dynamics.jacobian import step_jacobian
from dynascope.dynamics.lyapunov import LyapunovResult, lyapunov_benettin, lyapunov_exact, lyapunov_lanczos
from dynascope.dynamics.spectral import leading_eigenvalues, pseudo_energy, spectral_norm
from dynascope.errors import ConfigError, DataError, DynascopeError, NotFittedError
from dynascope.models.backbone import load_backbone
from dynascope.models.classifier import Classifier
from dynascope.ntk import (
    KernelLogistic,
    KernelRidge,
    NTKComponents,
    as_matrix,
    ft_ratio,
    hutchinson_trace,
    hutchpp_trace,
    kernel_rank,
    summarize,
)

__version__ = "0.1.0"

__all__ = [
    "Classifier",
    "ConfigError",
    "DataError",
    "DynascopeError",
    "KernelLogistic",
    "KernelRidge",
    "LyapunovResult",
    "NTKComponents",
    "NotFittedError",
    "NtkImplementation",
    "TemperatureScaler",
    "__version__",
    "as_classifier",
    "as_matrix",
    "calibration_metrics",
    "empirical_ntk_fn",
    "feature_change_metrics",
    "fisher_ratio",
    "fit_temperature",
    "ft_ratio",
    "hutchinson_trace",
    "hutchpp_trace",
    "kernel_rank",
    "leading_eigenvalues",
    "load_backbone",
    "lyapunov_benettin",
    "lyapunov_exact",
    "lyapunov_lanczos",
    "pseudo_energy",
    "spectral_norm",
    "step_jacobian",
    "summarize",
]
