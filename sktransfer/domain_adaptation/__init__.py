"""Domain adaptation: train on labelled source images and unlabelled target images, predict on the target.

- :class:`DomainAdaptedClassifier`: deep methods (DANN, MMD, Deep CORAL, MCC) on a fine-tuned backbone.
- :class:`FeatureAlignmentClassifier`: CORAL and subspace alignment of embeddings around any estimator.
- Scorers that select models without target labels, requesting ``sample_domain`` under metadata routing:
  :obj:`prediction_entropy_scorer`, :obj:`importance_weighted_scorer`.
"""

from .deep import METHODS, DomainAdaptedClassifier
from .domains import NoTargetDataWarning, split_domains
from .scorers import importance_weighted_scorer, prediction_entropy_scorer
from .shallow import FeatureAlignmentClassifier

__all__ = [
    "METHODS",
    "DomainAdaptedClassifier",
    "FeatureAlignmentClassifier",
    "NoTargetDataWarning",
    "importance_weighted_scorer",
    "prediction_entropy_scorer",
    "split_domains",
]
