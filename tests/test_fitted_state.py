"""A fit that raises leaves the estimator not fitted, never the new labels beside the old model."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression

from sktransfer import FeatureAlignmentClassifier, PrototypeClassifier
from sktransfer.parameter_transfer import RegularTransferClassifier, RegularTransferRegressor

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 3))
BINARY = np.where(X[:, 0] > 0, "b", "a")


def prototypes():
    refit = {"y": np.where(X[:, 0] > 0, "bee", "ant"), "sample_weight": (X[:, 0] > 0).astype(float)}
    return PrototypeClassifier(), {"y": BINARY}, refit, "sample_weight sums to 0"


def regular_transfer():
    source = LogisticRegression().fit(X, BINARY)
    refit = {"y": np.where(X[:, 0] > 0, "y", "x")}
    return RegularTransferClassifier(source), {"y": BINARY}, refit, "none of the classes of y"


def regular_transfer_regressor():
    source = LinearRegression().fit(X, X[:, 0])
    refit = {"X": X[:, :2], "y": X[:, 0]}  # two columns, where the source read three
    return RegularTransferRegressor(source), {"y": X[:, 0]}, refit, "feature"


def feature_alignment():
    semi = BINARY.astype(object)
    semi[20:] = -1  # unlabelled target rows
    refit = {"y": np.full(40, -1, dtype=object)}  # no labelled row
    return FeatureAlignmentClassifier(), {"y": semi}, refit, "label"


@pytest.mark.parametrize(
    "case",
    [prototypes, regular_transfer, regular_transfer_regressor, feature_alignment],
    ids=lambda c: c.__name__,
)
def test_a_refit_that_raises_leaves_the_estimator_not_fitted(case):
    estimator, fit, refit, message = case()
    estimator.fit(fit.get("X", X), **{k: v for k, v in fit.items() if k != "X"})
    estimator.predict(X[:3])
    with pytest.raises(ValueError, match=message):
        estimator.fit(refit.get("X", X), **{k: v for k, v in refit.items() if k != "X"})
    with pytest.raises(NotFittedError):
        estimator.predict(X[:3])
