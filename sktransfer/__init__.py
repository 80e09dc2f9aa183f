"""sktransfer: transfer learning for scikit-learn.

Pretrained vision and text networks as scikit-learn estimators that work in Pipeline, GridSearchCV and
cross_val_score.
"""

from importlib.metadata import PackageNotFoundError, version

from ._labelled_scoring import labelled_rows_scorer
from .domain_adaptation import (
    DomainAdaptedClassifier,
    FeatureAlignmentClassifier,
    ImportanceWeightingClassifier,
    deep_embedded_validation_scorer,
    importance_weighted_scorer,
    information_maximization_scorer,
    mixup_validation_scorer,
    neighborhood_consistency_scorer,
    prediction_entropy_scorer,
    soft_neighborhood_density_scorer,
)
from .feature_extraction import PretrainedFeatureExtractor
from .few_shot import PrototypeClassifier
from .fine_tuning import FineTuneClassifier
from .parameter_transfer import RegularTransferClassifier, RegularTransferRegressor
from .transferability import (
    gbc_score,
    gbc_scorer,
    h_score,
    h_score_scorer,
    leep_score,
    leep_scorer,
    logme_score,
    logme_scorer,
    make_transferability_scorer,
    nce_score,
    nce_scorer,
)

try:
    __version__ = version("sktransfer")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = [
    "DomainAdaptedClassifier",
    "FeatureAlignmentClassifier",
    "FineTuneClassifier",
    "ImportanceWeightingClassifier",
    "PretrainedFeatureExtractor",
    "PrototypeClassifier",
    "RegularTransferClassifier",
    "RegularTransferRegressor",
    "__version__",
    "deep_embedded_validation_scorer",
    "gbc_score",
    "gbc_scorer",
    "h_score",
    "h_score_scorer",
    "importance_weighted_scorer",
    "information_maximization_scorer",
    "labelled_rows_scorer",
    "leep_score",
    "leep_scorer",
    "logme_score",
    "logme_scorer",
    "make_transferability_scorer",
    "mixup_validation_scorer",
    "nce_score",
    "nce_scorer",
    "neighborhood_consistency_scorer",
    "prediction_entropy_scorer",
    "soft_neighborhood_density_scorer",
]
