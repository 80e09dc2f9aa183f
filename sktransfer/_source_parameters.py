"""The source model of the regular-transfer estimators: its parameters as the prior, kept fitted in clones."""

import sys
import warnings
from numbers import Real

import numpy as np
from scipy import sparse
from sklearn.base import ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import GammaRegressor, PoissonRegressor, TweedieRegressor
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC, NuSVC
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from ._stacklevel import caller_stacklevel


class NewClassWarning(UserWarning):
    """Target classes that the source model lacks: their parameters are pulled toward zero."""


class UnnamedColumnsWarning(UserWarning):
    """X without column names for a source fitted on named ones: its coefficients apply by position."""


def source_parameters(estimator, n_features, n_rows=None):
    """Float64 copies of the ``coef_`` (2-D) and ``intercept_`` (one per row) of ``estimator``'s source.

    The source must be a classifier (have ``classes_``) when ``estimator`` is one, and must not otherwise;
    ``n_rows``, when given, is the number of rows its ``coef_`` must have (a regressor's outputs).
    """
    source, name = estimator.source_estimator, type(estimator).__name__
    classifier = isinstance(estimator, ClassifierMixin)
    if isinstance(source, Pipeline):
        raise TypeError(
            "source_estimator is a Pipeline: pass its final linear model and put the fitted preprocessing "
            f"before {name}, unchanged: make_pipeline(FrozenEstimator(source[:-1]), {name}(source[-1])), "
            "with sklearn.frozen.FrozenEstimator."
        )
    try:
        check_is_fitted(source)
    except NotFittedError as exc:
        raise NotFittedError(
            f"source_estimator={source!r} is not fitted: fit it on the source task first (it is read, never "
            "refitted). GridSearchCV clones the values it tries, and a clone is unfitted: to search over "
            "fitted sources, wrap each in sklearn.frozen.FrozenEstimator."
        ) from exc
    if classifier != hasattr(source, "classes_"):
        problem, kind = ("has no classes_", "classifier") if classifier else ("is a classifier", "regressor")
        raise TypeError(f"source_estimator={source!r} {problem}: {name} takes a fitted linear {kind}.")
    if not (hasattr(source, "coef_") and hasattr(source, "intercept_")):
        raise TypeError(
            f"source_estimator={source!r} has no coef_ and intercept_: pass a fitted linear model, such as "
            "LogisticRegression, LinearSVC, RidgeClassifier, SGDClassifier, Ridge or LinearRegression."
        )
    _refuse_other_parameterisations(source)
    coef = source.coef_.toarray() if sparse.issparse(source.coef_) else source.coef_
    coef = np.array(coef, dtype=np.float64, ndmin=2)  # a copy: the source is never modified
    if coef.shape[1] != n_features:
        raise ValueError(
            f"X has {n_features} features, but source_estimator was fitted on {coef.shape[1]} (the columns "
            "of its coef_): both need the same features, such as embeddings of the same extractor."
        )
    _check_feature_names(source, getattr(estimator, "feature_names_in_", None))
    if n_rows is not None and len(coef) != n_rows:
        raise ValueError(
            f"y has {n_rows} target column(s), but source_estimator predicts {len(coef)} (the rows of its "
            "coef_)."
        )
    intercept = np.broadcast_to(np.asarray(source.intercept_, dtype=np.float64), (len(coef),)).copy()
    if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise ValueError(
            f"source_estimator={source!r} has NaN or infinite values in its coef_ or intercept_: there is no "
            "source model to transfer; refit it (scaled features or a stronger regularisation often help)."
        )
    _check_linear_output(source, coef, intercept, classifier)
    return coef, intercept


def _check_linear_output(source, coef, intercept, classifier):
    """Raise unless the source's scores are ``X @ coef_.T + intercept_``, which its prior stands for.

    Checked on a few random rows, on ``predict`` for a regressor and ``decision_function`` for a classifier
    that has one: a model whose ``coef_`` means something else (PLS, which centres X first; a target
    transformed after the linear map) would otherwise pass its parameters off as a linear model's.
    """
    method = "decision_function" if classifier else "predict"
    if not hasattr(source, method):
        return
    rows = np.random.default_rng(0).standard_normal((8, coef.shape[1]))
    names = getattr(source, "feature_names_in_", None)
    given = rows if names is None else sys.modules["pandas"].DataFrame(rows, columns=names)
    actual = np.asarray(getattr(source, method)(given), dtype=np.float64).reshape(len(rows), -1)
    expected = rows @ coef.T + intercept
    gap = np.inf if actual.shape != expected.shape else float(np.abs(actual - expected).max())
    if not gap <= 1e-6 * (1.0 + float(np.abs(expected).max())):
        raise TypeError(
            f"source_estimator={source!r} does not score X as X @ coef_.T + intercept_ (its {method} differs "
            f"by up to {gap:.3g} on random rows): its coefficients are not those of a linear model of X, "
            "which is what this estimator starts from. Pass a linear model such as LogisticRegression, "
            "Ridge or LinearRegression, fitted on the source task."
        )


def _refuse_other_parameterisations(source):
    """Raise for linear models whose ``coef_`` is not one linear score per class or output.

    An SVC or NuSVC with a linear kernel keeps one row per pair of classes (one-vs-one); with three classes
    there are as many pairs as classes, and the rows would pass for the classes' own. Poisson, Gamma and
    Tweedie regressors with a log link predict ``exp(X @ coef_ + intercept_)``, so their coefficients are on
    another scale than a linear regressor's.
    """
    model = source.estimator if isinstance(source, FrozenEstimator) else source
    if isinstance(model, SVC | NuSVC) and len(model.classes_) > 2:
        raise TypeError(
            f"source_estimator={source!r} has {len(model.classes_)} classes and keeps one coef_ row per pair "
            "of classes (one-vs-one), not one per class: pass a model with one linear score per class, such "
            "as LinearSVC, LogisticRegression or RidgeClassifier, fitted on the source task."
        )
    link = getattr(model, "link", "log")
    log_link = isinstance(model, PoissonRegressor | GammaRegressor) or (
        isinstance(model, TweedieRegressor) and (link == "log" or (link == "auto" and model.power > 0))
    )
    if log_link:
        raise TypeError(
            f"source_estimator={source!r} predicts exp(X @ coef_ + intercept_) (a log link): its "
            "coefficients are not those of a linear prediction. Pass a linear regressor (Ridge, "
            "LinearRegression, or TweedieRegressor(power=0)), or fit the source and this estimator both on "
            "log(y)."
        )


def _check_feature_names(source, names):
    """Raise when X's column names differ from the source's: its coefficients apply to the columns by position."""
    source_names = getattr(source, "feature_names_in_", None)
    if source_names is not None and names is None:
        listed = np.asarray(source_names).tolist()
        warnings.warn(
            f"X has no column names, but source_estimator was fitted on named columns ({listed[:5]}"
            f"{'...' if len(listed) > 5 else ''}): its coefficients apply to X's columns by position, "
            "so they must come in that order; give X as a DataFrame with those columns to have it checked.",
            UnnamedColumnsWarning,
            stacklevel=caller_stacklevel(),
        )
    if source_names is None or names is None:
        return
    source_names, names = np.asarray(source_names).tolist(), np.asarray(names).tolist()
    if source_names != names:
        column = next(i for i, (a, b) in enumerate(zip(names, source_names, strict=True)) if a != b)
        raise ValueError(
            f"X's columns differ from those source_estimator was fitted on (column {column} is "
            f"{names[column]!r} in X, {source_names[column]!r} in the source): its coefficients apply by "
            "position, so give X the columns of source_estimator.feature_names_in_, in that order (rename "
            "or reorder them)."
        )


def class_rows(coef, intercept, source_classes, classes):
    """The source's parameters as the prior of each target class: one row for two classes, else one a class.

    The source's class scores (coefficients and intercept) are centred over its classes (a softmax is blind
    to that); a class the source lacks gets zeros, the source's mean score. Labels match by value.
    """
    rows = np.hstack([coef, intercept[:, None]])
    source_classes = np.asarray(source_classes).tolist()
    if len(rows) == 1 and len(source_classes) == 2:  # a binary model scores classes_[1] against classes_[0]
        rows = np.vstack([-rows / 2, rows / 2])
    elif len(rows) != len(source_classes):
        raise ValueError(
            f"source_estimator has {len(source_classes)} classes_ but {len(rows)} rows of coef_: expected one "
            "row per class, or one row for two classes."
        )
    rows -= rows.mean(axis=0)
    position = {label: index for index, label in enumerate(source_classes)}
    labels = classes.tolist()
    new = [label for label in labels if label not in position]
    if len(new) == len(labels):
        raise ValueError(
            f"none of the classes of y {labels[:10]} is among source_estimator.classes_ {source_classes[:10]}: "
            "there is nothing to transfer (labels match by value, so 1 and '1' differ)."
        )
    if new:
        warnings.warn(
            f"the classes {new[:10]} of y are not among source_estimator.classes_ {source_classes[:10]}: "
            "their parameters are pulled toward zero (the source's mean class score).",
            NewClassWarning,
            stacklevel=caller_stacklevel(),
        )
    zeros = np.zeros(rows.shape[1])
    table = np.array([rows[position[label]] if label in position else zeros for label in labels])
    return table[1:] - table[:1] if len(labels) == 2 else table


class SourceRegularizedMixin:
    """The shared parameters' constraints, clones that keep the fitted ``source_estimator``, the linear map."""

    _parameter_constraints: dict = {  # noqa: RUF012 (sklearn's convention)
        "source_estimator": [HasMethods(["fit", "predict"]), None],
        "alpha": [Interval(Real, 0, None, closed="left")],
    }

    def __sklearn_clone__(self):
        # Cloning the source would return it unfitted; it is read only, so every clone shares it, as
        # sklearn.frozen.FrozenEstimator would (GridSearchCV and cross_validate clone their estimator).
        cloned = super().__sklearn_clone__()
        cloned.source_estimator = self.source_estimator
        return cloned

    def get_params(self, deep=True):
        """The estimator's parameters, without ``source_estimator``'s own (``source_estimator__*``).

        The fitted source is read, never refitted or changed: its parameters are not this estimator's to
        search, so ``deep`` adds nothing.

        Parameters
        ----------
        deep : bool, default=True
            Accepted for scikit-learn's interface; the result is the same either way.

        Returns
        -------
        params : dict
        """
        return super().get_params(deep=False)

    def set_params(self, **params):
        """Set parameters; ``source_estimator__*`` is refused, as the fitted source is never changed.

        Parameters
        ----------
        **params : dict

        Returns
        -------
        self
        """
        nested = sorted(name for name in params if name.startswith("source_estimator__"))
        if nested:
            raise ValueError(
                f"{type(self).__name__} reads the fitted source_estimator and never changes it, so {nested} "
                "cannot be set (it would change the source model every clone shares, and no fit would read "
                "it): fit source models with those settings and search over source_estimator instead, each "
                "wrapped in sklearn.frozen.FrozenEstimator (GridSearchCV clones the values it tries)."
            )
        return super().set_params(**params)

    def _linear_output(self, X):
        """``X @ coef_.T + intercept_`` for X checked against the fit."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return X @ self.coef_.T + self.intercept_


def with_ones(X):
    """X with a column of ones, for the intercept."""
    return np.hstack([X, np.ones((len(X), 1))])
