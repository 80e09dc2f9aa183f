"""Domain adaptation: train on labelled source images and unlabelled target images, predict on the target.

- :class:`DomainAdaptedClassifier`: deep methods (DANN, CDAN+E, MMD, Deep CORAL, MCC, self-training) on a
  fine-tuned backbone, with several source domains and partial adaptation.
- :class:`FeatureAlignmentClassifier`: CORAL and subspace alignment of embeddings around any estimator.
- :class:`ImportanceWeightingClassifier`: source rows weighted by their density ratio, around any estimator.
- Scorers that select models without target labels, requesting ``sample_domain`` under metadata routing:
  :obj:`prediction_entropy_scorer`, :obj:`information_maximization_scorer`, :obj:`importance_weighted_scorer`,
  :obj:`deep_embedded_validation_scorer`, :obj:`soft_neighborhood_density_scorer`,
  :obj:`neighborhood_consistency_scorer`, :obj:`mixup_validation_scorer`.
"""

from .deep import METHODS, DomainAdaptedClassifier
from .domains import NoTargetDataWarning, split_domains
from .objectives import PseudoLabelCollapseWarning, UntrainedPseudoLabelsWarning
from .reweighting import FewEffectiveRowsWarning, ImportanceWeightingClassifier
from .scorers import (
    deep_embedded_validation_scorer,
    importance_weighted_scorer,
    information_maximization_scorer,
    mixup_validation_scorer,
    neighborhood_consistency_scorer,
    prediction_entropy_scorer,
    soft_neighborhood_density_scorer,
)
from .shallow import FeatureAlignmentClassifier, PooledDomainsWarning

__all__ = [
    "METHODS",
    "DomainAdaptedClassifier",
    "FeatureAlignmentClassifier",
    "FewEffectiveRowsWarning",
    "ImportanceWeightingClassifier",
    "NoTargetDataWarning",
    "PooledDomainsWarning",
    "PseudoLabelCollapseWarning",
    "UntrainedPseudoLabelsWarning",
    "deep_embedded_validation_scorer",
    "importance_weighted_scorer",
    "information_maximization_scorer",
    "mixup_validation_scorer",
    "neighborhood_consistency_scorer",
    "prediction_entropy_scorer",
    "soft_neighborhood_density_scorer",
    "split_domains",
]
