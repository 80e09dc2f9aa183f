"""PrototypeClassifier: few-shot classification of embeddings by their most similar class mean."""

import warnings
from numbers import Real

import numpy as np
from scipy.spatial.distance import cdist
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from ._changed_settings import warn_of_changed_settings
from ._fitted_state import not_fitted_if_it_fails
from ._labels import checked_labels, encode_labels
from ._stacklevel import caller_stacklevel
from ._vectors import unit_rows


class ZeroVectorRowsWarning(UserWarning):
    """Rows of zeros have no direction for a cosine to compare; the message says what becomes of them."""


class PrototypeClassifier(ClassifierMixin, BaseEstimator):
    """Classify embeddings by their most similar class prototype: the mean of the class's embeddings.

    Made for a few (1 to 5) labelled examples per class, where there is too little to fit a classifier:
    each class is the mean of its embeddings, and a row belongs to the class whose mean it is most similar
    to (Snell et al. 2017, "Prototypical networks", on pretrained embeddings). Use it after
    :class:`~sktransfer.PretrainedFeatureExtractor` in a Pipeline.

    - ``metric="cosine"``: each embedding is scaled to unit length, a prototype is the mean of those of its
      class, and the similarity is the cosine between a row and a prototype.
    - ``metric="euclidean"``: a prototype is the mean of the raw embeddings and the similarity is minus the
      squared euclidean distance; predictions are those of :class:`sklearn.neighbors.NearestCentroid`.

    Parameters
    ----------
    metric : {"cosine", "euclidean"}, default="cosine"
        Applies from ``fit``, which makes the prototypes for it: changed afterwards, predictions keep the
        fitted metric and warn (``SettingsChangedWarning``) until the next ``fit``.
    temperature : float, default=0.1
        Divides the similarities before their softmax in :meth:`predict_proba`; smaller gives sharper
        probabilities, and predictions do not depend on it. The default suits cosine similarities, which lie
        in [-1, 1]: a cosine higher by 0.1 multiplies the odds by e. With ``metric="euclidean"``, scale it to
        the squared distances of your embeddings.

    Attributes
    ----------
    prototypes_ : ndarray of shape (n_classes, n_features)
        One row per class: its (weighted) mean embedding, scaled to unit length for ``metric="cosine"``.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int

    See Also
    --------
    sklearn.neighbors.NearestCentroid : the euclidean (and manhattan) nearest class mean, without
        probabilities or sample weights.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.few_shot import PrototypeClassifier
    >>> X = np.array([[1.0, 0.1], [0.9, 0.0], [0.1, 1.0], [0.0, 2.0]])  # two shots per class
    >>> clf = PrototypeClassifier().fit(X, ["cat", "cat", "dog", "dog"])
    >>> clf.predict([[3.0, 0.5], [0.2, 0.4]])
    array(['cat', 'dog'], dtype='<U3')
    >>> clf.predict_proba([[1.0, 1.0]]).round(2)
    array([[0.5, 0.5]])
    """

    _parameter_constraints: dict = {  # noqa: RUF012 (sklearn's convention)
        "metric": [StrOptions({"cosine", "euclidean"})],
        "temperature": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, metric="cosine", temperature=0.1):
        self.metric = metric
        self.temperature = temperature

    @not_fitted_if_it_fails
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Compute the prototype of each class.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings of the labelled examples.
        y : array-like of shape (n_samples,)
            Their labels, of any type.
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Non-negative weight of each row in its class's mean; every class needs a positive total.

        Returns
        -------
        self
        """
        X = validate_data(self, X, dtype=np.float64)
        y = checked_labels(y, len(X))
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        self.classes_ = np.unique(y)
        codes = encode_labels(y, self.classes_)
        totals = np.bincount(codes, weights=sample_weight, minlength=len(self.classes_))
        if np.any(totals == 0):
            raise ValueError(
                f"sample_weight sums to 0 over the class(es) {self.classes_[totals == 0].tolist()[:10]}: "
                "a class needs a positive total weight to have a prototype."
            )
        sums = np.zeros((len(self.classes_), X.shape[1]))
        np.add.at(sums, codes, sample_weight[:, None] * self._directions(X))
        means = sums / totals[:, None]
        if self.metric == "cosine":
            _refuse_prototypes_without_direction(means, self.classes_)
        self.prototypes_ = unit_rows(means) if self.metric == "cosine" else means
        self._fitted_metric = self.metric
        return self

    def _directions(self, X):
        """Rows scaled to unit length for the cosine, else unchanged."""
        if self.metric == "cosine":
            _warn_of_rows_without_direction(X, "they add nothing to their class's prototype")
            return unit_rows(X)
        return X

    def _similarities(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        # The prototypes were made for the fitted metric: comparing rows to them by another would mix both.
        # One pickled before this record existed falls back on its metric parameter.
        metric = getattr(self, "_fitted_metric", self.metric)
        warn_of_changed_settings({"metric": metric}, {"metric": self.metric}, "prediction", "the prototypes")
        if metric == "cosine":
            _warn_of_rows_without_direction(
                X, "each is as similar to every prototype, and gets equal probabilities"
            )
            return unit_rows(X) @ self.prototypes_.T
        with np.errstate(over="ignore"):
            distances = cdist(X, self.prototypes_, "sqeuclidean")
        overflowed = np.flatnonzero(~np.isfinite(distances).all(axis=1))
        if overflowed.size:
            raise FloatingPointError(
                f"the squared distances of samples {overflowed[:10].tolist()} to the prototypes overflow float64: "
                "scale the features down (StandardScaler), or use metric='cosine'."
            )
        # No row lies at distance 0 from two different prototypes: where one seems to, the squares underflowed.
        distinct = np.unique(self.prototypes_, axis=0, return_index=True)[1]
        underflowed = np.flatnonzero((distances[:, distinct] == 0).sum(axis=1) > 1)
        if underflowed.size:
            raise FloatingPointError(
                f"the squared distances of samples {underflowed[:10].tolist()} to the prototypes underflow "
                "float64 (every one is 0): scale the features up (StandardScaler), or use metric='cosine'."
            )
        return -distances

    def decision_function(self, X):
        """Similarity of each row to each prototype; for two classes, to ``classes_[1]``'s minus ``classes_[0]``'s.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Cosine similarities, or minus squared euclidean distances.
        """
        similarities = self._similarities(X)
        return similarities[:, 1] - similarities[:, 0] if len(self.classes_) == 2 else similarities

    def predict(self, X):
        """The class of the most similar prototype.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        similarities = self._similarities(X)
        return self.classes_[similarities.argmax(axis=1)]

    def predict_proba(self, X):
        """Softmax of the similarities divided by ``temperature``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        # set_params after fit skips fit's validation: a temperature of 0 or below would give NaN or
        # inverted probabilities
        validate_parameter_constraints(
            {"temperature": self._parameter_constraints["temperature"]},
            {"temperature": self.temperature},
            caller_name=type(self).__name__,
        )
        return softmax(self._similarities(X) / self.temperature, axis=1)


def _warn_of_rows_without_direction(X, consequence):
    """A cosine compares directions, and a row of zeros has none (an empty input often embeds to zeros)."""
    zero = np.flatnonzero(~np.any(X, axis=1))
    if zero.size:
        warnings.warn(
            f"X holds rows of zeros (samples {zero[:10].tolist()}), which have no direction for "
            f"metric='cosine' to compare: {consequence}. Drop them, or use metric='euclidean'.",
            ZeroVectorRowsWarning,
            stacklevel=caller_stacklevel(),
        )


# The length under which a mean of unit rows (at most 1 long) is the rounding left of rows that cancel out.
_NO_DIRECTION = np.sqrt(np.finfo(np.float64).eps)


def _refuse_prototypes_without_direction(means, classes):
    """Raise for a class whose unit rows cancel out: the direction of their mean would be rounding noise."""
    zero = np.flatnonzero(np.linalg.norm(means, axis=1) <= _NO_DIRECTION)
    if zero.size:
        raise ValueError(
            f"the unit rows of the classes {classes[zero].tolist()[:10]} average to zeros (or cancel out), so "
            "their prototypes have no direction for metric='cosine' to compare: give them rows that are not all "
            "zeros, or use metric='euclidean'."
        )
