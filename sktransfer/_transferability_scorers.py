"""The transferability scorers: a score of the features a fitted extractor, or Pipeline, gives X."""

from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline


class TransferabilityScorer:
    """``scorer(estimator, X, y)``: a transferability score of the features that a fitted estimator gives X."""

    def __init__(self, score_func, name, kwargs):
        self._score_func = score_func
        self._name = name
        self._kwargs = kwargs

    def __repr__(self):
        return self._name

    def __call__(self, estimator, X, y):
        """Score the features (or source outputs) that ``estimator`` gives ``X`` against the labels ``y``.

        Parameters
        ----------
        estimator : fitted transformer or Pipeline
            A transformer (such as PretrainedFeatureExtractor), or a Pipeline: its final step is dropped when
            it predicts (a classifier), and the features are the transform of the steps before it.
        X : images, texts or array-like
            What the estimator reads.
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        score : float
            Greater is better.
        """
        return self._score_func(_scored_features(estimator, X, self._name), y, **self._kwargs)


def make_transferability_scorer(score_func, **kwargs):
    """A scorer, ``scorer(estimator, X, y)``, that scores the features a fitted estimator gives X.

    For the ``scoring`` of GridSearchCV over backbones, layers and weights. The features are
    ``estimator.transform(X)``; for a Pipeline whose final step predicts (a classifier), the transform of
    the steps before it.

    To rank candidates by one embedding pass each, and without training a classifier, search over the
    extractor alone (or a Pipeline that ends with it): its ``fit`` loads the weights and embeds nothing, so
    only the scorer embeds, each validation fold once. Since nothing is learnt from the training rows, one
    split that validates on every row, ``cv=[(rows, rows)]`` with ``rows = np.arange(n_samples)``, scores all
    the labelled images at once; for folds, pass ``cv=StratifiedKFold(...)``, as GridSearchCV does not
    stratify the folds of a transformer. A Pipeline that ends with a classifier, or with ``"passthrough"``,
    embeds the training folds too in each ``fit`` (and trains the classifier): give its extractor a ``cache``
    folder, so that each image still runs once per candidate. Several scores at once
    (``scoring={"logme": logme_scorer, "h_score": h_score_scorer}``) embed once per score without a cache.

    The module's ready-made scorers are ``logme_scorer``, ``h_score_scorer``, ``gbc_scorer`` (on embeddings),
    ``leep_scorer`` and ``nce_scorer`` (on the source classifier's outputs: extract at the classifier, e.g.
    ``PretrainedFeatureExtractor(layer="classifier")`` for EfficientNet-Lite0, ``layer="fc"`` for a
    torchvision ResNet).

    Parameters
    ----------
    score_func : callable
        ``score_func(features, y, **kwargs)``, greater is better, such as :func:`h_score`.
    **kwargs
        Further arguments of ``score_func``, e.g. ``shrinkage=None``.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y)``, a float.

    Examples
    --------
    Which PCA keeps the digits most linearly separable, without training a classifier:

    >>> from sklearn.datasets import load_digits
    >>> from sklearn.decomposition import PCA
    >>> from sklearn.model_selection import GridSearchCV
    >>> from sktransfer.transferability import h_score, logme_scorer
    >>> X, y = load_digits(return_X_y=True)
    >>> search = GridSearchCV(PCA(random_state=0), {"n_components": [2, 8, 32]}, scoring=logme_scorer)
    >>> search.fit(X, y).best_params_
    {'n_components': 32}
    >>> pinv_h_score = make_transferability_scorer(h_score, shrinkage=None)
    >>> pinv_h_score
    make_transferability_scorer(h_score, shrinkage=None)
    """
    arguments = "".join(f", {key}={value!r}" for key, value in kwargs.items())
    return TransferabilityScorer(
        score_func,
        f"make_transferability_scorer({getattr(score_func, '__name__', repr(score_func))}{arguments})",
        kwargs,
    )


def _scored_features(estimator, X, name):
    """What ``estimator`` makes of ``X`` before any classifier: its transform, a final predictor dropped."""
    estimator = _unwrapped(estimator)
    if isinstance(estimator, Pipeline):
        features = _before_the_predictor(estimator, X)
        if features is not None:
            return features
    elif hasattr(estimator, "transform"):
        return estimator.transform(X)
    raise TypeError(
        f"{name} scores the features a transformer gives (such as PretrainedFeatureExtractor), alone or in a "
        f"Pipeline; {type(estimator).__name__} transforms nothing before it predicts."
    )


def _before_the_predictor(pipeline, X):
    """The features ``pipeline`` makes of ``X`` before its final predictor, or None where nothing comes first.

    A final step that is a Pipeline itself (or a search over one, or a FrozenEstimator of one) has its own
    transforms applied too: an extractor followed by ``make_pipeline(StandardScaler(), PCA(),
    LogisticRegression())`` is scored on the PCA's output, not the extractor's.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import PCA
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> X, y = np.random.default_rng(0).normal(size=(20, 5)), np.arange(20) % 2
    >>> nested = make_pipeline(PCA(4), make_pipeline(PCA(2), LogisticRegression())).fit(X, y)
    >>> _before_the_predictor(nested, X).shape
    (20, 2)
    """
    final = pipeline.steps[-1][1]
    if final is None or isinstance(final, str) or not hasattr(final, "predict"):
        return pipeline.transform(X)
    before = pipeline[:-1].transform(X) if len(pipeline.steps) > 1 else None
    inner = _unwrapped(final)
    if isinstance(inner, Pipeline):
        nested = _before_the_predictor(inner, X if before is None else before)
        if nested is not None:
            return nested
    return before


def _unwrapped(estimator):
    """The estimator that ``estimator`` predicts with: through FrozenEstimator and a fitted search's
    ``best_estimator_``, as often as they nest."""
    while True:
        if isinstance(estimator, FrozenEstimator):
            estimator = estimator.estimator
        elif hasattr(estimator, "best_estimator_"):
            estimator = estimator.best_estimator_
        else:
            return estimator
