"""Model selection without target labels: scorers for the ``scoring`` of GridSearchCV and cross_validate.

Each reads the target rows of a validation fold: rows with ``y == -1``, or with a negative ``sample_domain``;
the importance-weighted ones also read its labelled source rows. They are scorer objects that request
``sample_domain`` as score metadata, so that with metadata routing enabled, GridSearchCV and cross_validate
hand each one its fold's slice of it; without routing, ``y == -1`` marks the target rows. Greater is better,
as GridSearchCV expects.
"""

import numpy as np

from ._domain_scorer import _DomainScorer, _rows
from ._mixup_scorer import mixup_validation_scorer
from ._neighbourhood_scorers import (
    _NeighborhoodConsistencyScorer,
    _SoftNeighborhoodDensityScorer,
    neighborhood_consistency_scorer,
    soft_neighborhood_density_scorer,
)
from ._weighted_scorers import (
    _DeepEmbeddedValidationScorer,
    _ImportanceWeightedScorer,
    deep_embedded_validation_scorer,
    importance_weighted_scorer,
)

# Where searches pickled before these classes had modules of their own look for them.
_PICKLED_HERE = (
    _DeepEmbeddedValidationScorer,
    _ImportanceWeightedScorer,
    _NeighborhoodConsistencyScorer,
    _SoftNeighborhoodDensityScorer,
)

__all__ = [
    "deep_embedded_validation_scorer",
    "importance_weighted_scorer",
    "information_maximization_scorer",
    "mixup_validation_scorer",
    "neighborhood_consistency_scorer",
    "prediction_entropy_scorer",
    "soft_neighborhood_density_scorer",
]


class _PredictionEntropyScorer(_DomainScorer):
    """Minus the mean entropy of the predicted class probabilities on the target rows.

    A model that is confident on the target domain scores higher (Morerio et al. 2018 use it to select
    domain-adaptation hyper-parameters). It can be fooled by a model that is confidently wrong, so compare
    candidates of one method rather than across methods. Call it as
    ``prediction_entropy_scorer(estimator, X, y=None, sample_domain=None)``, or give it as ``scoring``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0], [1.0], [4.0], [5.0]])
    >>> clf = LogisticRegression().fit(X, [0, 0, 1, 1])
    >>> prediction_entropy_scorer(clf, X, [0, 0, -1, -1]) < 0
    True
    >>> prediction_entropy_scorer(clf, X, sample_domain=[1, 1, -1, -1]) < 0
    True
    """

    _name = "prediction_entropy_scorer"

    def _score(self, estimator, X, y, target):
        return -float(np.mean(_entropy(np.asarray(estimator.predict_proba(_rows(X, target))))))


def _entropy(proba, axis=-1):
    proba = np.clip(proba, 1e-12, 1.0)
    return -np.sum(proba * np.log(proba), axis=axis)


class _InformationMaximizationScorer(_DomainScorer):
    """The mutual information of the target predictions and the target rows: diverse and confident is best.

    ``H(mean prediction) - mean H(prediction)`` over the target rows (information maximization, the
    criterion of Gomes, Krause and Perona 2010 that SHOT trains with): the second term is the prediction
    entropy that ``prediction_entropy_scorer`` rewards, the first rewards spreading the target rows over the
    classes. A model that confidently gives most target rows the same class, which fools prediction
    entropy, scores low here. Benchmarks of validation methods for domain adaptation found it among the
    most reliable label-free criteria (Musgrave et al. 2022). It lies between 0 and log(n_classes); it
    assumes that the target's classes are not far from balanced. Call it as
    ``information_maximization_scorer(estimator, X, y=None, sample_domain=None)``, or give it as
    ``scoring``.

    References
    ----------
    .. [1] R. Gomes, A. Krause and P. Perona, "Discriminative Clustering by Regularized Information
       Maximization", NeurIPS 2010.
    .. [2] K. Musgrave, S. Belongie and S.-N. Lim, "Three New Validators and a Large-Scale Benchmark Ranking
       for Unsupervised Domain Adaptation", arXiv:2208.07360, 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0], [1.0], [4.0], [5.0], [0.2], [4.8]])
    >>> clf = LogisticRegression(C=100).fit(X[:4], [0, 0, 1, 1])
    >>> round(information_maximization_scorer(clf, X, [0, 0, 1, 1, -1, -1]), 2)  # at most log(2)
    0.69
    """

    _name = "information_maximization_scorer"

    def _score(self, estimator, X, y, target):
        proba = np.asarray(estimator.predict_proba(_rows(X, target)), dtype=np.float64)
        return float(_entropy(proba.mean(axis=0)) - np.mean(_entropy(proba)))


prediction_entropy_scorer = _PredictionEntropyScorer()
information_maximization_scorer = _InformationMaximizationScorer()
