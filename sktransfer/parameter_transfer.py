"""RegularTransferClassifier and RegularTransferRegressor: linear models fitted near a source model's parameters."""

import warnings
from numbers import Integral, Real

import numpy as np
from scipy import linalg, optimize
from scipy.special import expit, log_expit, logsumexp, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import _check_sample_weight, validate_data

from ._fitted_state import not_fitted_if_it_fails
from ._labels import checked_labels, encode_labels
from ._source_parameters import (
    NewClassWarning,
    SourceRegularizedMixin,
    class_rows,
    source_parameters,
    with_ones,
)
from ._stacklevel import caller_stacklevel

__all__ = ["NewClassWarning", "RegularTransferClassifier", "RegularTransferRegressor"]


class RegularTransferClassifier(SourceRegularizedMixin, ClassifierMixin, BaseEstimator):
    """Logistic regression on few target labels, pulled toward a fitted source model's parameters.

    Minimises, over the coefficients ``W`` and intercepts ``b``,

    ``sum_i sample_weight_i * log_loss_i + alpha * (||W - W_source||^2 + ||b - b_source||^2)``

    with the logistic loss for two classes and the multinomial (softmax) loss for more, by L-BFGS from the
    source's parameters, in float64: the estimate under a Gaussian prior centred on the source model (Chelba
    & Acero 2004; ADAPT's ``RegularTransferLC`` is the peer). The more target rows, the less the source
    counts. ``alpha`` toward infinity gives the source model (on the target's classes); ``alpha=0`` the
    target-only, unregularised logistic regression. The intercept is pulled toward the source's like the
    coefficients, so a large ``alpha`` keeps the source model whole.

    Classes match the source's ``classes_`` by label: a binary target reads the source's score of its second
    class minus that of its first, and a multiclass target the source's score of each class (centred over
    the source's classes). The source's decision scores are read as logits, whatever loss it was fitted with
    (LinearSVC, RidgeClassifier). A target class the source lacks starts from zero (the source's mean class
    score), with a :class:`NewClassWarning`; predictions are over the classes of ``y`` only.

    Parameters
    ----------
    source_estimator : fitted linear classifier or None
        A model with ``coef_``, ``intercept_`` and ``classes_`` (LogisticRegression, LinearSVC,
        RidgeClassifier, SGDClassifier, Perceptron, a FrozenEstimator of one...), fitted on features of the
        same width as X. It is read, copied, never modified or refitted; clones (GridSearchCV,
        cross_validate) share it fitted. A Pipeline is refused: put its fitted preprocessing, frozen, before
        this estimator. ``None`` pulls toward zero: an L2-regularised logistic regression of the target alone,
        intercept included, a baseline.
    alpha : float, default=1.0
        Weight of the squared distance to the source's parameters, against the summed (not averaged) loss.
    max_iter : int, default=1000
        Iterations of L-BFGS.
    tol : float, default=1e-8
        L-BFGS stops when no gradient entry of the objective, divided by the number of rows, exceeds it.

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
        One row for two classes (scoring ``classes_[1]``), else one per class.
    intercept_ : ndarray of shape (1,) or (n_classes,)
    classes_ : ndarray of shape (n_classes,)
    n_iter_ : int
        Iterations L-BFGS ran.
    n_features_in_ : int

    See Also
    --------
    RegularTransferRegressor : the least-squares counterpart.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sktransfer.parameter_transfer import RegularTransferClassifier
    >>> rng = np.random.default_rng(2)
    >>> X_source, X_target, X_test = (rng.normal(size=(n, 5)) for n in (500, 10, 1000))
    >>> source = LogisticRegression().fit(X_source, X_source[:, 0] > 0)
    >>> def task(X):  # the target task: related to the source's, not the same
    ...     return X[:, 0] + 0.5 * X[:, 1] > 0
    >>> clf = RegularTransferClassifier(source).fit(X_target, task(X_target))  # ten target labels
    >>> target_only = LogisticRegression().fit(X_target, task(X_target))
    >>> [round(model.score(X_test, task(X_test)), 2) for model in (source, target_only, clf)]
    [0.87, 0.78, 0.9]
    """

    _parameter_constraints: dict = {  # noqa: RUF012 (sklearn's convention)
        **SourceRegularizedMixin._parameter_constraints,
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, source_estimator, alpha=1.0, max_iter=1000, tol=1e-8):
        self.source_estimator = source_estimator
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol

    def _prior(self, n_features):
        """The source's parameters for the classes of y: (n_rows, n_features + 1), the intercept last."""
        n_rows = 1 if len(self.classes_) == 2 else len(self.classes_)
        if self.source_estimator is None:
            return np.zeros((n_rows, n_features + 1))
        coef, intercept = source_parameters(self, n_features)
        return class_rows(coef, intercept, self.source_estimator.classes_, self.classes_)

    @not_fitted_if_it_fails
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the target model, starting from and pulled toward the source's parameters.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Target rows.
        y : array-like of shape (n_samples,)
            Their labels, of any type.
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Non-negative weight of each row's loss.

        Returns
        -------
        self
        """
        X = validate_data(self, X, dtype=np.float64)
        y = checked_labels(y, len(X))
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        self.classes_ = np.unique(y)
        codes = encode_labels(y, self.classes_)
        prior = self._prior(X.shape[1])
        design = with_ones(X)
        rows = np.arange(len(X))
        sign = 2.0 * codes - 1  # the binary loss reads labels as -1 and +1
        penalty, scale = self.alpha, 1.0 / len(X)

        def objective(flat):
            delta = flat.reshape(prior.shape)
            scores = design @ (prior + delta).T
            if len(prior) == 1:
                margin = sign * scores[:, 0]
                loss = -log_expit(margin)
                slope = (-sign * expit(-margin))[:, None]
            else:
                normaliser = logsumexp(scores, axis=1)
                loss = normaliser - scores[rows, codes]
                slope = np.exp(scores - normaliser[:, None])
                slope[rows, codes] -= 1
            value = sample_weight @ loss + penalty * np.sum(delta**2)
            gradient = (sample_weight[:, None] * slope).T @ design + 2 * penalty * delta
            return scale * value, scale * gradient.ravel()

        result = optimize.minimize(
            objective,
            np.zeros(prior.size),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter, "gtol": self.tol, "ftol": 64 * np.finfo(float).eps},
        )
        if not result.success:
            warnings.warn(
                f"L-BFGS stopped before converging ({result.message}) after {result.nit} iterations: raise "
                "max_iter, or alpha when the target classes are separable.",
                ConvergenceWarning,
                stacklevel=caller_stacklevel(),
            )
        parameters = prior + result.x.reshape(prior.shape)
        self.coef_, self.intercept_ = parameters[:, :-1], parameters[:, -1]
        self.n_iter_ = int(result.nit)
        return self

    def decision_function(self, X):
        """Scores of X: for two classes, of ``classes_[1]`` (its log-odds); else one column per class.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        scores = self._linear_output(X)
        return scores[:, 0] if len(self.coef_) == 1 else scores

    def predict(self, X):
        """The most probable class of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        scores = self.decision_function(X)
        return self.classes_[(scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)]

    def predict_proba(self, X):
        """Class probabilities: the logistic function of the score for two classes, else its softmax.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        scores = self.decision_function(X)
        if scores.ndim == 1:
            positive = expit(scores)
            return np.column_stack([1 - positive, positive])
        return softmax(scores, axis=1)


class RegularTransferRegressor(SourceRegularizedMixin, RegressorMixin, BaseEstimator):
    """Least squares on few target labels, pulled toward a fitted source model's parameters.

    Minimises, over the coefficients ``w`` and intercept ``b``,

    ``sum_i sample_weight_i * (y_i - x_i w - b)^2 + alpha * (||w - w_source||^2 + (b - b_source)^2)``

    in closed form: the least-squares solution of the system of the weighted rows stacked over
    ``sqrt(alpha)`` times the identity (no inverse is formed). This is the objective of ADAPT's
    ``RegularTransferLR``, with the intercept pulled toward the source's like the coefficients. ``alpha``
    toward infinity gives the source model; ``alpha=0`` ordinary least squares or, with fewer rows than
    features, the interpolating solution closest to the source.

    Parameters
    ----------
    source_estimator : fitted linear regressor or None
        A model with ``coef_`` and ``intercept_`` (Ridge, LinearRegression, Lasso, ElasticNet,
        SGDRegressor, a FrozenEstimator of one...), fitted on features of the same width as X and on as many
        targets as y has. It is read, copied, never modified or refitted; clones (GridSearchCV,
        cross_validate) share it fitted. A Pipeline is refused: put its fitted preprocessing, frozen, before
        this estimator. ``None`` pulls toward zero: ridge regression of the target alone, intercept included,
        a baseline.
    alpha : float, default=1.0
        Weight of the squared distance to the source's parameters, against the summed squared errors (the
        scale of Ridge's ``alpha``).

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_targets, n_features)
    intercept_ : float or ndarray of shape (n_targets,)
    n_features_in_ : int

    See Also
    --------
    RegularTransferClassifier : the logistic counterpart.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import Ridge
    >>> from sktransfer.parameter_transfer import RegularTransferRegressor
    >>> rng = np.random.default_rng(0)
    >>> X_source, X_target = rng.normal(size=(500, 5)), rng.normal(size=(8, 5))
    >>> source = Ridge().fit(X_source, X_source @ [1.0, 2, 0, 0, -1])
    >>> target = np.array([1.2, 2, 0, 0, -1])  # the target task: related to the source's, not the same
    >>> y_target = X_target @ target + 0.5 + 0.3 * rng.normal(size=8)  # eight noisy target labels
    >>> reg = RegularTransferRegressor(source).fit(X_target, y_target)
    >>> target_only = Ridge().fit(X_target, y_target)
    >>> X_test = rng.normal(size=(1000, 5))
    >>> [round(model.score(X_test, X_test @ target + 0.5), 2) for model in (source, target_only, reg)]
    [0.95, 0.93, 0.97]
    """

    def __init__(self, source_estimator, alpha=1.0):
        self.source_estimator = source_estimator
        self.alpha = alpha

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _prior(self, n_features, n_targets):
        """The source's parameters: (n_features + 1, n_targets), the intercept last."""
        if self.source_estimator is None:
            return np.zeros((n_features + 1, n_targets))
        coef, intercept = source_parameters(self, n_features, n_targets)
        return np.vstack([coef.T, intercept])

    @not_fitted_if_it_fails
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the target model in closed form.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Target rows.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Non-negative weight of each row's squared error.

        Returns
        -------
        self
        """
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        targets = y.reshape(len(y), -1)
        prior = self._prior(X.shape[1], targets.shape[1])
        design = with_ones(X)
        root = np.sqrt(sample_weight)[:, None]
        system = np.vstack([root * design, np.sqrt(self.alpha) * np.eye(len(prior))])
        residuals = np.vstack([root * (targets - design @ prior), np.zeros_like(prior)])
        parameters = prior + linalg.lstsq(system, residuals)[0]
        self.coef_, self.intercept_ = parameters[:-1].T, parameters[-1]
        if y.ndim == 1:
            self.coef_, self.intercept_ = self.coef_[0], float(self.intercept_[0])
        return self

    def predict(self, X):
        """Predicted targets of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_targets)
        """
        return self._linear_output(X)
