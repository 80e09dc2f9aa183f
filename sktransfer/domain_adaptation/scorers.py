"""Model selection without target labels: scorers for GridSearchCV's ``scoring``.

Both read the rows marked as target (``y == -1``, or a negative ``sample_domain`` when called with one) in
the validation fold; greater is better, as GridSearchCV expects.
"""

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import column_or_1d

from .domains import unlabelled_mask


def _target_rows(y, sample_domain, n_samples):
    target = np.zeros(n_samples, dtype=bool) if y is None else unlabelled_mask(column_or_1d(y))
    if sample_domain is not None:
        target |= np.asarray(sample_domain) < 0
    return target


def _rows(X, mask):
    return [X[i] for i in np.flatnonzero(mask)] if isinstance(X, list) else X[mask]


def prediction_entropy_scorer(estimator, X, y=None, sample_domain=None):
    """Minus the mean entropy of the predicted class probabilities on the target rows (all rows if none).

    A model that is confident on the target domain scores higher (Morerio et al. 2018 use it to select
    domain-adaptation hyper-parameters). It can be fooled by a model that is confidently wrong, so compare
    candidates of one method rather than across methods.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0], [1.0], [4.0], [5.0]])
    >>> clf = LogisticRegression().fit(X, [0, 0, 1, 1])
    >>> prediction_entropy_scorer(clf, X, [0, 0, -1, -1]) < 0
    True
    """
    target = _target_rows(y, sample_domain, len(X))
    proba = np.clip(estimator.predict_proba(_rows(X, target) if target.any() else X), 1e-12, 1.0)
    return float(np.mean(np.sum(proba * np.log(proba), axis=1)))


def _embeddings(estimator, X):
    """The features in which to compare domains: the estimator's own embedding, or X itself."""
    if isinstance(estimator, Pipeline):
        X, estimator = estimator[:-1].transform(X), estimator[-1]
    if hasattr(estimator, "embed"):
        return estimator.embed(X)
    X = np.asarray(X)
    if X.ndim != 2 or X.dtype.kind not in "iuf":
        raise ValueError(
            "importance_weighted_scorer needs 2-D features: X itself, a Pipeline whose last step reads "
            "features, or an estimator with an embed() method such as DomainAdaptedClassifier."
        )
    return X


def importance_weighted_scorer(estimator, X, y, sample_domain=None):
    """Accuracy on the labelled source rows, each weighted by how target-like it is (IWCV, Sugiyama 2007).

    A logistic regression tells target rows from source rows on the estimator's features; a source row
    weighs p(target | x) / p(source | x). The weighted source accuracy estimates the target accuracy without
    a single target label. It assumes that ``predict`` maps source and target rows alike, as
    DomainAdaptedClassifier does; FeatureAlignmentClassifier moves only its training source rows, so score
    it with :func:`prediction_entropy_scorer`.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0], [1.0], [4.0], [5.0], [4.5], [0.5]])
    >>> clf = LogisticRegression().fit(X[:4], [0, 0, 1, 1])
    >>> importance_weighted_scorer(clf, X, [0, 0, 1, 1, -1, -1])
    1.0
    """
    y = column_or_1d(y)
    target = _target_rows(y, sample_domain, len(y))
    source = ~target
    if not (target.any() and source.any()):
        raise ValueError("importance_weighted_scorer needs labelled source rows and target rows in X.")
    features = _embeddings(estimator, X)
    domain = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(features, target)
    p_target = np.clip(domain.predict_proba(features[source])[:, 1], 1e-6, 1 - 1e-6)
    weights = p_target / (1 - p_target)
    correct = estimator.predict(_rows(X, source)) == y[source]
    return float(np.sum(weights * correct) / np.sum(weights))
