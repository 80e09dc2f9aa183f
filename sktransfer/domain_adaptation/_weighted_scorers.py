"""Scorers that weigh the labelled source rows by how target-like they are: IWCV and deep embedded validation."""

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .._labels import label_array, missing_labels
from ._domain_scorer import _DomainScorer
from ._scored_outputs import _features_and_outputs
from .density_ratio import source_density_ratios


class _SourceWeightedScorer(_DomainScorer):
    """A score of the labelled source rows, each weighted by the density ratio p_target(x) / p_source(x).

    A logistic regression tells the fold's target rows from its source rows on the estimator's features;
    a source row weighs its odds of being target times (source rows / target rows), an estimate of the
    density ratio whose mean over the source rows is about 1. Subclasses turn the weights into a score.
    """

    def _score(self, estimator, X, y, target):
        source = ~target
        if y is None or not source.any():
            raise ValueError(
                f"{self._name} needs labelled source rows: y, and rows that are neither y == -1 nor of a "
                "negative sample_domain."
            )
        y = label_array(y)
        missing = np.flatnonzero(source)[missing_labels(y[source])]
        if missing.size:
            raise ValueError(
                f"{self._name} needs the label of every source row, and y is missing (NaN or None) at samples "
                f"{missing[:10].tolist()}: mark target rows with -1 or a negative sample_domain."
            )
        features, outputs = _features_and_outputs(
            estimator, X, source, self._output, self._name, source_rows=source
        )
        return self._weighted_score(estimator, outputs, y[source], source_density_ratios(features, target))


class _ImportanceWeightedScorer(_SourceWeightedScorer):
    """Accuracy on the labelled source rows, each weighted by how target-like it is (IWCV, Sugiyama 2007).

    A logistic regression tells target rows from source rows on the estimator's features; a source row
    weighs p(target | x) / p(source | x), up to a constant factor. The weighted source accuracy estimates the
    target accuracy without a single target label. Where the estimator maps source rows otherwise than
    target rows (FeatureAlignmentClassifier), the source rows are predicted, and compared with the target
    rows, as its fit mapped them. Call it as
    ``importance_weighted_scorer(estimator, X, y, sample_domain=None)``, or give it as ``scoring``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0], [1.0], [4.0], [5.0], [4.5], [0.5]])
    >>> clf = LogisticRegression().fit(X[:4], [0, 0, 1, 1])
    >>> importance_weighted_scorer(clf, X, [0, 0, 1, 1, -1, -1])
    1.0
    >>> importance_weighted_scorer(clf, X, [0, 0, 1, 1, 1, 0], sample_domain=[1, 1, 1, 1, -1, -1])
    1.0
    """

    _name = "importance_weighted_scorer"
    _output = "predict"

    def _weighted_score(self, estimator, predicted, y_source, weights):
        correct = predicted == y_source
        return float(np.sum(weights * correct) / np.sum(weights))


def _control_variate_risk(weighted_loss, weights):
    """The mean weighted loss corrected by the weights' known mean of 1 (You et al. 2019).

    ``mean(wl) + eta * (mean(w) - 1)`` with ``eta = -Cov(wl, w) / Var(w)``, the coefficient that minimises the
    variance of the estimate; ``eta`` is 0 when the weights are constant (to rounding).
    """
    variance = np.var(weights)
    eta = 0.0
    if variance > np.finfo(np.float64).eps * np.mean(weights) ** 2:
        covariance = np.mean((weighted_loss - weighted_loss.mean()) * (weights - weights.mean()))
        eta = -covariance / variance
    return float(np.mean(weighted_loss) + eta * np.mean(weights) - eta)


class _DeepEmbeddedValidationScorer(_SourceWeightedScorer):
    """Minus the importance-weighted cross-entropy of the source labels, with a control variate (DEV).

    Deep Embedded Validation (You et al. 2019) estimates the target risk from the labelled source rows of
    the validation fold: each row's cross-entropy ``l = -log p(y | x)`` under ``predict_proba`` is weighted by
    the row's density ratio ``w = p_target(x) / p_source(x)``, which a logistic regression that tells the
    fold's target rows from its source rows estimates on the estimator's features, as in
    ``importance_weighted_scorer``. The weights are known to average 1, so their sample mean serves as a
    control variate that cuts the variance of the estimate:
    ``risk = mean(w l) + eta * mean(w) - eta`` with ``eta = -Cov(w l, w) / Var(w)``. The score is
    ``-risk``, greater is better. A source label that the estimator's ``classes_`` lacks has probability 0,
    clipped to 1e-12.

    As in ``importance_weighted_scorer``, the source rows of an estimator that maps them otherwise than
    target rows (FeatureAlignmentClassifier) are read as its fit mapped them. Call it as
    ``deep_embedded_validation_scorer(estimator, X, y, sample_domain=None)``, or give it as ``scoring``.

    References
    ----------
    .. [1] K. You, X. Wang, M. Long and M. I. Jordan, "Towards Accurate Model Selection in Deep Unsupervised
       Domain Adaptation", ICML 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0], [1.0], [4.0], [5.0], [4.5], [0.5]])
    >>> sure = LogisticRegression(C=100).fit(X[:4], [0, 0, 1, 1])
    >>> unsure = LogisticRegression(C=0.01).fit(X[:4], [0, 0, 1, 1])
    >>> y = [0, 0, 1, 1, -1, -1]
    >>> bool(deep_embedded_validation_scorer(sure, X, y) > deep_embedded_validation_scorer(unsure, X, y))
    True
    """

    _name = "deep_embedded_validation_scorer"
    _output = "predict_proba"

    def _score(self, estimator, X, y, target):
        # before the estimator runs over the rows
        if getattr(estimator, "classes_", None) is None and hasattr(estimator, "fit"):
            check_is_fitted(estimator)  # an unfitted classifier lacks classes_ for that reason alone
        if getattr(estimator, "classes_", None) is None or not hasattr(estimator, "predict_proba"):
            raise ValueError(
                f"{self._name} reads the probability of each source label (predict_proba) in the columns of "
                "estimator.classes_: score a classifier that has both."
            )
        return super()._score(estimator, X, y, target)

    def _weighted_score(self, estimator, proba, y_source, weights):
        column = {label: i for i, label in enumerate(np.asarray(estimator.classes_).tolist())}
        index = np.array([column.get(label, -1) for label in np.asarray(y_source).tolist()])
        proba = np.asarray(proba, dtype=np.float64)
        true_proba = np.where(index >= 0, proba[np.arange(len(index)), index], 0.0)
        loss = -np.log(np.clip(true_proba, 1e-12, 1.0))
        return -_control_variate_risk(weights * loss, weights)


importance_weighted_scorer = _ImportanceWeightedScorer()
deep_embedded_validation_scorer = _DeepEmbeddedValidationScorer()
