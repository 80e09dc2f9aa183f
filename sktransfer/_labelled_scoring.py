"""Scoring where rows may have no label (``y == -1``): refused by ``score``, skipped by epoch callbacks.

Domain adaptation and distillation train on rows without a label. A scikit-learn metric that compares
predictions with labels (a scoring name, a scorer, or ``None`` for the net's own ``score``) would count those
rows as errors: the estimators' ``score`` refuses them (:func:`refuse_unlabelled_scoring`),
:class:`LabelledRowsScorer` hands a user's epoch scoring the labelled rows alone, and
:func:`labelled_rows_scorer` does the same for ``cross_val_score`` and ``GridSearchCV``.
"""

import sys
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import check_scoring, get_scorer
from sklearn.metrics._scorer import _BaseScorer
from sklearn.utils import _safe_indexing
from sklearn.utils.metadata_routing import UNCHANGED

from ._labels import UNLABELLED, label_array, labelled_mask, unlabelled_mask
from ._score_request import OneParameterScoreRequest
from ._stacklevel import caller_stacklevel


class UnlabelledScoringWarning(UserWarning):
    """Accuracy was asked against -1 labels (unlabelled rows) by a scikit-learn scorer."""


def refuse_unlabelled_scoring(y, advice):
    """Raise for -1 labels in ``y`` (unlabelled rows), which accuracy would count as errors.

    ``advice`` says what to do instead. Called by an estimator's ``score``: inside a scikit-learn scorer, it
    warns first, since scikit-learn turns the error into a NaN score.
    """
    unlabelled = np.flatnonzero(unlabelled_mask(label_array(y)))
    refuse_scoring_rows(
        unlabelled,
        f"y holds -1 (unlabelled rows) at samples {unlabelled[:10].tolist()}: accuracy against them means "
        f"nothing. {advice}",
    )


def refuse_scoring_rows(rows, message):
    """Raise ``message`` if there are ``rows`` (that an estimator's ``score`` cannot score); warn it first
    inside a scikit-learn scorer, which turns the error into a NaN score and a warning that starts with a
    traceback."""
    if not len(rows):
        return
    if _called_by_a_scorer():
        warnings.warn(message, UnlabelledScoringWarning, stacklevel=caller_stacklevel())
    raise ValueError(message)


def _called_by_a_scorer(depth=6):
    """Whether one of the ``depth`` frames above this one's caller is scikit-learn's scorer code."""
    frame = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            return False
        if frame.f_globals.get("__name__", "") == "sklearn.metrics._scorer":
            return True
        frame = frame.f_back
    return False


def compares_labels(scoring):
    """Whether an ``EpochScoring``'s resolved scoring is scikit-learn's: a name, a scorer, or the net's score."""
    return scoring is None or isinstance(scoring, str | _BaseScorer)


def labelled_rows_scorer(scoring="accuracy"):
    """A scorer that scores only the rows with a label: ``scoring`` on the rows whose ``y`` is not -1.

    Rows whose label is missing (None, NaN, pandas.NA) are skipped as well.

    Distillation (``FineTuneClassifier(teacher=...)``) and domain adaptation train on rows marked
    ``y == -1`` (unlabelled), and a cross-validation fold of such data holds some. scikit-learn's scorers
    would count them as errors, and the estimators' own ``score`` refuses them: give this scorer as
    ``scoring`` to ``cross_val_score`` or ``GridSearchCV`` to score the labelled rows of each fold. The
    estimator predicts those rows only. Where -1 is one of the estimator's ``classes_`` (a classifier trained
    without a teacher, for which -1 is a label like any other), every row is scored. A fold without a
    labelled row raises a ValueError (a NaN score with a warning inside ``cross_val_score``). With
    metadata routing enabled, ``scorer.set_score_request(sample_weight=True)`` has each fold's sample
    weights passed on, those of the labelled rows reaching ``scoring``; as with scikit-learn's scorers, a
    search given ``sample_weight`` raises until the scorer says whether it takes them (True) or not
    (False).

    For domain adaptation the labelled rows are usually source rows: their accuracy says little about the
    target. They are predicted as ``predict`` reads any row, so for ``FeatureAlignmentClassifier``, whose
    ``predict`` maps every row as a target row, this is the accuracy of the source rows read as target
    rows, not as its fit mapped them (under CORAL or subspace alignment it can lie far below the accuracy
    its estimator reached on them). To choose a domain-adaptation model without target labels, use
    :data:`~sktransfer.neighborhood_consistency_scorer` or
    :data:`~sktransfer.information_maximization_scorer`.

    Parameters
    ----------
    scoring : str or callable, default="accuracy"
        What to compute on the labelled rows: a scikit-learn scoring name (``"accuracy"``,
        ``"balanced_accuracy"``, ``"neg_log_loss"``, ...) or a scorer ``scorer(estimator, X, y)``.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y)``, a float; greater is better when ``scoring``'s is.

    Examples
    --------
    >>> from sklearn.dummy import DummyClassifier
    >>> X, y = np.zeros((4, 1)), np.array([0, 0, 1, 1])
    >>> always_0 = DummyClassifier(strategy="constant", constant=0).fit(X, y)
    >>> labelled_rows_scorer("accuracy")(always_0, X, [0, 0, -1, -1])  # rows 2 and 3 are unlabelled
    1.0
    >>> labelled_rows_scorer("accuracy")(always_0, X, [0, 1, -1, -1], sample_weight=[3, 1, 1, 1])
    0.75
    """
    if isinstance(scoring, str):
        get_scorer(scoring)  # a misspelt name raises here, not as a NaN score in every fold
    return LabelledRowsScorer(scoring, predict_every_row=False)


class LabelledRowsScorer(OneParameterScoreRequest):
    """Score ``net`` with ``scoring`` on the rows whose label is not -1; NaN when there are none.

    Where -1 is one of ``net.classes_`` (a classifier without a teacher, for which -1 is a label like any
    other), every row is scored. ``predict_every_row`` (skorch's epoch scoring, whose cached outputs cover
    all of ``X``): the net predicts every row and the scorer reads the labelled ones; otherwise (the public
    :func:`labelled_rows_scorer`) the net predicts the labelled rows only, and none raises a ValueError.

    Examples
    --------
    >>> from sklearn.dummy import DummyClassifier
    >>> X, y = np.zeros((4, 1)), np.array([0, 0, 1, 1])
    >>> net = DummyClassifier(strategy="constant", constant=0).fit(X, y)
    >>> LabelledRowsScorer("accuracy")(net, X, np.array([0, 0, -1, -1]))
    1.0
    """

    _routed_param = "sample_weight"  # unset (None) until asked for, as scikit-learn's scorers

    def __init__(self, scoring, predict_every_row=True):
        self.scoring = scoring
        self.predict_every_row = predict_every_row

    def __call__(self, net, X, y, sample_weight=None):
        y = label_array(y)
        scorer = check_scoring(net, self.scoring)
        weights = {} if sample_weight is None else {"sample_weight": np.asarray(sample_weight)}
        if weights and len(weights["sample_weight"]) != len(y):
            raise ValueError(f"sample_weight has {len(weights['sample_weight'])} values for {len(y)} rows.")
        if UNLABELLED in np.asarray(getattr(net, "classes_", [])).tolist():  # -1 is a class: all are labelled
            return scorer(net, X, y, **weights)
        labelled = labelled_mask(y)
        if labelled.all():
            return scorer(net, X, y, **weights)
        labels = np.array(y[labelled].tolist())  # without the -1 marks, the labels' own dtype
        weights = {name: values[labelled] for name, values in weights.items()}
        if self.predict_every_row:
            if not labelled.any():
                return float("nan")
            return scorer(_PredictionsOnRows(net, X, labelled), None, labels, **weights)
        if not labelled.any():
            raise ValueError(
                f"labelled_rows_scorer: none of the {len(y)} rows has a label (y == -1 or blank): nothing "
                "to score."
            )
        return scorer(net, _safe_indexing(X, np.flatnonzero(labelled)), labels, **weights)

    def set_score_request(self, *, sample_weight=UNCHANGED):
        """Say whether ``GridSearchCV`` and ``cross_validate`` should pass ``sample_weight`` to this scorer.

        Needs metadata routing enabled, as scikit-learn's scorers do. By default the request is unset
        (None): a search given ``sample_weight`` raises until it is set. The weights of the labelled rows
        reach ``scoring``.

        Parameters
        ----------
        sample_weight : bool, None or str, default=UNCHANGED
            Whether the search hands each fold's weights over (True), leaves them out (False) or raises
            when they are given (None); a str names the metadata to read as the weights. UNCHANGED keeps
            the current request.

        Returns
        -------
        self : LabelledRowsScorer
            This scorer, now requesting as asked.

        Examples
        --------
        >>> import sklearn
        >>> with sklearn.config_context(enable_metadata_routing=True):
        ...     scorer = labelled_rows_scorer("accuracy").set_score_request(sample_weight=True)
        >>> scorer.get_metadata_routing().score.requests
        {'sample_weight': True}
        """
        return self._update_request(sample_weight)

    def __repr__(self):
        if self.predict_every_row:
            return f"{type(self).__name__}({self.scoring!r})"
        return f"labelled_rows_scorer({self.scoring!r})"


class _PredictionsOnRows(ClassifierMixin, BaseEstimator):
    """A fitted classifier's predictions on all of ``X``, restricted to ``rows``: what a scorer reads.

    The net predicts on the whole of ``X`` (during skorch's scoring, its cached validation outputs), and
    the scorer sees the selected rows only.
    """

    def __init__(self, net, X, rows):
        self.net = net
        self.X = X
        self.rows = rows

    @property
    def classes_(self):
        return self.net.classes_

    def predict(self, X):
        return np.asarray(self.net.predict(self.X))[self.rows]

    def predict_proba(self, X):
        return np.asarray(self.net.predict_proba(self.X))[self.rows]
