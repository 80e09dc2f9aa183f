"""Model selection without target labels: scorers for the ``scoring`` of GridSearchCV and cross_validate.

Both score the target rows of a validation fold: rows with ``y == -1``, or with a negative ``sample_domain``.
They are scorer objects that request ``sample_domain`` as score metadata, so that with metadata routing
enabled, GridSearchCV and cross_validate hand each one its fold's slice of it; without routing, ``y == -1``
marks the target rows. Greater is better, as GridSearchCV expects.
"""

import numpy as np
from sklearn import get_config
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_consistent_length
from sklearn.utils.metadata_routing import UNCHANGED, MetadataRequest
from sklearn.utils.validation import column_or_1d

from .domains import unlabelled_mask


class _DomainScorer:
    """A label-free scorer, ``scorer(estimator, X, y=None, sample_domain=None)``, that consumes ``sample_domain``.

    Routing asks a consumer for nothing but ``get_metadata_routing``, so this class builds its request on
    the public ``MetadataRequest`` instead of subclassing sklearn's private ``_BaseScorer``, whose
    ``score_func(y_true, y_pred)`` shape does not fit a score that reads the estimator itself.
    """

    _name = None

    def __init__(self):
        self._sample_domain_request = True

    def __repr__(self):
        return self._name

    def __call__(self, estimator, X, y=None, sample_domain=None):
        """Score ``estimator`` on the target rows of ``X``.

        Parameters
        ----------
        estimator : fitted classifier
        X : images or array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or None
            Labels; -1 marks a target row.
        sample_domain : array-like of shape (n_samples,) or None
            Positive for source rows, negative for target rows.

        Returns
        -------
        score : float
            Greater is better.
        """
        check_consistent_length(X, y, sample_domain)
        target = np.zeros(len(X), dtype=bool) if y is None else unlabelled_mask(column_or_1d(y))
        if sample_domain is not None:
            target |= column_or_1d(sample_domain) < 0
        if not target.any():
            raise ValueError(
                f"{self._name} received no target row: mark target rows with y == -1 or with a negative "
                "sample_domain. GridSearchCV and cross_validate pass sample_domain to the scorer only under "
                "metadata routing (sklearn.set_config(enable_metadata_routing=True)), given with the fit "
                "parameters."
            )
        return self._score(estimator, X, y, target)

    def set_score_request(self, *, sample_domain=UNCHANGED):
        """Say whether GridSearchCV and cross_validate should pass ``sample_domain`` to this scorer.

        Needs metadata routing enabled, as sklearn's scorers do. By default the scorer requests
        ``sample_domain``. The two scorers are module-level objects shared by every caller: to give one search
        a request of its own, set it on a copy (``copy.copy(prediction_entropy_scorer)``).

        Parameters
        ----------
        sample_domain : bool, None or str, default=UNCHANGED
            True: pass it; False: do not; None: raise if it is given; a str: pass the metadata given under
            that name as ``sample_domain``.

        Returns
        -------
        self : object
            The scorer, with its request updated.

        Examples
        --------
        >>> import copy
        >>> import sklearn
        >>> with sklearn.config_context(enable_metadata_routing=True):
        ...     scorer = copy.copy(prediction_entropy_scorer).set_score_request(sample_domain="domains")
        >>> scorer.get_metadata_routing().score.requests
        {'sample_domain': 'domains'}
        """
        if not get_config()["enable_metadata_routing"]:
            raise RuntimeError(
                "set_score_request is only available when metadata routing is enabled: "
                "sklearn.set_config(enable_metadata_routing=True)."
            )
        if sample_domain is not UNCHANGED:
            self._request(sample_domain)  # refuses an invalid alias now rather than during a search
            self._sample_domain_request = sample_domain
        return self

    def get_metadata_routing(self):
        """The metadata this scorer consumes: ``sample_domain``, for ``score``.

        Returns
        -------
        request : sklearn.utils.metadata_routing.MetadataRequest
        """
        return self._request(self._sample_domain_request)

    def _request(self, alias):
        request = MetadataRequest(owner=self._name)
        request.score.add_request(param="sample_domain", alias=alias)
        return request


def _rows(X, mask):
    return [X[i] for i in np.flatnonzero(mask)] if isinstance(X, list) else X[mask]


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
        proba = np.clip(estimator.predict_proba(_rows(X, target)), 1e-12, 1.0)
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


class _ImportanceWeightedScorer(_DomainScorer):
    """Accuracy on the labelled source rows, each weighted by how target-like it is (IWCV, Sugiyama 2007).

    A logistic regression tells target rows from source rows on the estimator's features; a source row
    weighs p(target | x) / p(source | x). The weighted source accuracy estimates the target accuracy without
    a single target label. It assumes that ``predict`` maps source and target rows alike, as
    DomainAdaptedClassifier does; FeatureAlignmentClassifier moves only its training source rows, so score
    it with ``prediction_entropy_scorer``. Call it as
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

    def _score(self, estimator, X, y, target):
        source = ~target
        if y is None or not source.any():
            raise ValueError(
                "importance_weighted_scorer needs labelled source rows: y, and rows that are neither y == -1 "
                "nor of a negative sample_domain."
            )
        y = column_or_1d(y)
        features = _embeddings(estimator, X)
        domain = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(features, target)
        p_target = np.clip(domain.predict_proba(features[source])[:, 1], 1e-6, 1 - 1e-6)
        weights = p_target / (1 - p_target)
        correct = estimator.predict(_rows(X, source)) == y[source]
        return float(np.sum(weights * correct) / np.sum(weights))


prediction_entropy_scorer = _PredictionEntropyScorer()
importance_weighted_scorer = _ImportanceWeightedScorer()
