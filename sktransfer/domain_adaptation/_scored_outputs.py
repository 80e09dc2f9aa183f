"""The features and the outputs a label-free scorer reads, from one pass through a search, Pipeline or network."""

import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline

from ._domain_scorer import _rows
from .shallow import EstimatorOnTargetFeaturesMixin

# The libraries whose predict, predict_proba and embed the scorers may bypass by walking into an estimator.
_LIBRARIES = ("sklearn", "sktransfer")


def _outputs_as_shipped(estimator):
    """Whether ``predict``, ``predict_proba`` and ``embed`` of estimator are scikit-learn's or sktransfer's own.

    Each is looked up as a call would find it (through a wrapper that forwards attributes, such as
    FrozenEstimator): a method whose function was written outside these libraries (a user's subclass, or a
    function patched onto a class) or set on the instance itself must be asked for the outputs, not
    bypassed through the steps or the network it wraps.
    """
    for name in ("predict", "predict_proba", "embed"):
        try:
            method = getattr(estimator, name)
        except AttributeError:  # absent, or unavailable (available_if)
            continue
        owner, function = getattr(method, "__self__", None), getattr(method, "__func__", None)
        if owner is None or function is None or name in getattr(owner, "__dict__", {}):
            return False
        if getattr(function, "__module__", "").partition(".")[0] not in _LIBRARIES:
            return False
    return True


def _features_and_outputs(estimator, X, rows, output, name, source_rows=None):
    """The features in which to compare domains, of every row of X, and ``output`` of ``rows`` of X.

    ``output`` is ``"predict"`` or ``"predict_proba"``, of the estimator that classifies. The features are
    those it classifies: a FrozenEstimator through the estimator it wraps, a fitted search through its
    ``best_estimator_``, a Pipeline (nested or not) through its steps, then the last estimator's own embedding
    (``embed``), the features a shallow aligner maps the rows to (FeatureAlignmentClassifier,
    ImportanceWeightingClassifier; ``source_rows``, the labelled source rows that a scorer weighs, mapped as
    its fit mapped those, the rest as target rows), or X. Each step transforms X once, and a network that
    gives its embedding and its predictions in one pass (DomainAdaptedClassifier) runs once over the rows.
    Where a wrapper on the way, or that network, has a ``predict``, ``predict_proba`` or ``embed`` that is not
    scikit-learn's or sktransfer's (a subclass's override, or a function set on it), the outputs are asked of
    the estimator as given instead, at the cost of a second pass.
    """
    given, given_X, shipped = estimator, X, True
    while True:
        if isinstance(estimator, FrozenEstimator):
            shipped, estimator = shipped and _outputs_as_shipped(estimator), estimator.estimator
        elif hasattr(estimator, "best_estimator_"):
            shipped, estimator = shipped and _outputs_as_shipped(estimator), estimator.best_estimator_
        elif isinstance(estimator, Pipeline):  # step by step: a slice would ask its stateless steps for fit
            shipped = shipped and _outputs_as_shipped(estimator)
            for _, step in estimator.steps[:-1]:
                X = X if step is None or step == "passthrough" else step.transform(X)
            estimator = estimator[-1]
        elif isinstance(estimator, EstimatorOnTargetFeaturesMixin):  # then what its own estimator reads
            shipped = shipped and _outputs_as_shipped(estimator)
            X = (
                estimator._target_features(X)
                if source_rows is None
                else estimator._scoring_features(X, source_rows)
            )
            estimator = estimator.estimator_
        else:
            break
    if shipped and hasattr(estimator, "_embed_and_predict_proba") and _outputs_as_shipped(estimator):
        features, proba = estimator._embed_and_predict_proba(X)
        proba = proba[rows]
        return features, proba if output == "predict_proba" else estimator.classes_[proba.argmax(axis=1)]
    if hasattr(estimator, "embed"):
        features = estimator.embed(X)
    else:
        features = np.asarray(X)
        if features.ndim != 2 or features.dtype.kind not in "biuf":
            raise ValueError(
                f"{name} needs 2-D features: X itself, a Pipeline whose last step reads features, or an "
                "estimator with an embed() method such as DomainAdaptedClassifier."
            )
    if not shipped:
        return features, getattr(given, output)(_rows(given_X, rows))
    return features, getattr(estimator, output)(_rows(X, rows))
