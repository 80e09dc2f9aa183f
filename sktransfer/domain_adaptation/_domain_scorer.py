"""The base of the label-free scorers: which rows are target, and the ``sample_domain`` request routing reads."""

import numpy as np
from sklearn.utils import check_consistent_length
from sklearn.utils.metadata_routing import UNCHANGED

from .._labels import UNLABELLED, label_array, unlabelled_mask
from .._score_request import OneParameterScoreRequest
from .domains import checked_sample_domain


class _DomainScorer(OneParameterScoreRequest):
    """A label-free scorer, ``scorer(estimator, X, y=None, sample_domain=None)``, that consumes ``sample_domain``.

    Routing asks a consumer for nothing but ``get_metadata_routing``, so this class builds its request on
    the public ``MetadataRequest`` instead of subclassing sklearn's private ``_BaseScorer``, whose
    ``score_func(y_true, y_pred)`` shape does not fit a score that reads the estimator itself.
    """

    _name = None
    _routed_param = "sample_domain"

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
        target = np.zeros(len(X), dtype=bool) if y is None else unlabelled_mask(label_array(y))
        if sample_domain is not None:
            target |= checked_sample_domain(sample_domain, len(X)) < 0
        classes = getattr(estimator, "classes_", None)
        if classes is not None and UNLABELLED in np.asarray(classes).tolist():
            raise ValueError(
                f"{self._name} scores an estimator whose classes_ hold -1, the label the library reserves for "
                "target rows: fitted with the target rows as a class -1, its confident predictions of -1 on "
                "them would win a search. Fit an estimator that reads y == -1 as target rows "
                "(DomainAdaptedClassifier, FeatureAlignmentClassifier, ImportanceWeightingClassifier), or "
                "recode a class named -1."
            )
        if not target.any() and sample_domain is not None:
            raise ValueError(
                f"{self._name} received no target row: the {len(X)} rows it scores (a test fold, in a search) "
                "are all source rows by their sample_domain. Folds that cut rows in order leave the target rows "
                "that follow the source rows out of the first folds: shuffle them "
                "(cv=StratifiedKFold(5, shuffle=True, random_state=0)), or mix the domains' rows."
            )
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
        ``sample_domain``. The scorers are module-level objects shared by every caller: to give one search
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
        >>> from sktransfer.domain_adaptation import prediction_entropy_scorer
        >>> with sklearn.config_context(enable_metadata_routing=True):
        ...     scorer = copy.copy(prediction_entropy_scorer).set_score_request(sample_domain="domains")
        >>> scorer.get_metadata_routing().score.requests
        {'sample_domain': 'domains'}
        """
        return self._update_request(sample_domain)


def _rows(X, mask):
    return [X[i] for i in np.flatnonzero(mask)] if isinstance(X, list | tuple) else X[mask]
