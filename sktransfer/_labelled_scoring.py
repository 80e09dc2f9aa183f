"""Scoring where rows may have no label (``y == -1``): refused by ``score``, skipped by epoch callbacks.

Domain adaptation and distillation train on rows without a label. A scikit-learn metric that compares
predictions with labels (a scoring name, a scorer, or ``None`` for the net's own ``score``) would count those
rows as errors: the estimators' ``score`` refuses them (:func:`refuse_unlabelled_scoring`), and
:class:`LabelledRowsScorer` hands a user's epoch scoring the labelled rows alone.
"""

import sys
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import check_scoring
from sklearn.metrics._scorer import _BaseScorer

from ._labels import UNLABELLED, label_array, unlabelled_mask
from ._stacklevel import caller_stacklevel


class UnlabelledScoringWarning(UserWarning):
    """Accuracy was asked against -1 labels (unlabelled rows) by a scikit-learn scorer."""


def refuse_unlabelled_scoring(y, advice):
    """Raise for -1 labels in ``y`` (unlabelled rows), which accuracy would count as errors.

    ``advice`` says what to do instead. Called by an estimator's ``score``: inside a scikit-learn scorer, it
    warns first, since scikit-learn turns the error into a NaN score.
    """
    unlabelled = np.flatnonzero(unlabelled_mask(label_array(y)))
    if not unlabelled.size:
        return
    message = (
        f"y holds -1 (unlabelled rows) at samples {unlabelled[:10].tolist()}: accuracy against them means "
        f"nothing. {advice}"
    )
    if sys._getframe(2).f_globals.get("__name__", "") == "sklearn.metrics._scorer":
        # Inside cross_val_score or GridSearchCV, scikit-learn turns the error into a NaN score and a warning
        # that starts with a traceback: say what is wrong first.
        warnings.warn(message, UnlabelledScoringWarning, stacklevel=caller_stacklevel())
    raise ValueError(message)


def compares_labels(scoring):
    """Whether an ``EpochScoring``'s resolved scoring is scikit-learn's: a name, a scorer, or the net's score."""
    return scoring is None or isinstance(scoring, str | _BaseScorer)


class LabelledRowsScorer:
    """Score ``net`` with ``scoring`` on the rows whose label is not -1; NaN when there are none.

    Where -1 is one of ``net.classes_`` (a classifier without a teacher, for which -1 is a label like any
    other), every row is scored.

    Examples
    --------
    >>> from sklearn.dummy import DummyClassifier
    >>> X, y = np.zeros((4, 1)), np.array([0, 0, 1, 1])
    >>> net = DummyClassifier(strategy="constant", constant=0).fit(X, y)
    >>> LabelledRowsScorer("accuracy")(net, X, np.array([0, 0, -1, -1]))
    1.0
    """

    def __init__(self, scoring):
        self.scoring = scoring

    def __call__(self, net, X, y):
        y = np.asarray(y)
        scorer = check_scoring(net, self.scoring)
        if UNLABELLED in net.classes_.tolist():  # -1 is a class (no teacher): every row has a label
            return scorer(net, X, y)
        labelled = ~unlabelled_mask(y)
        if labelled.all():
            return scorer(net, X, y)
        if not labelled.any():
            return float("nan")
        labels = np.array(y[labelled].tolist())  # without the -1 marks, the labels' own dtype
        return scorer(_PredictionsOnRows(net, X, labelled), None, labels)


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
