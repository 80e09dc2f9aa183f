"""How far to flatten importance weights: the power of the density ratios that the weighted fit uses."""

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.parallel import Parallel, delayed

from .density_ratio import effective_sample_size

# The powers that flatten="auto" chooses among: from an unweighted fit (0) to the density ratios themselves (1).
FLATTENING_POWERS = (0.0, 0.25, 0.5, 0.75, 1.0)
# Where a class has too few source rows to cross-validate, the power keeps this share of them in play.
FALLBACK_EFFECTIVE_SHARE = 0.5


def choose_flattening(estimator, source, labels, ratios, n_splits, random_state, n_jobs=None):
    """The power of ``ratios`` that importance-weighted cross-validation supports: ``flatten="auto"``.

    Importance-weighted cross-validation [1]_ estimates the target error of a model from labelled source
    rows alone: each held-out source row's error counts with its density ratio. For each power in
    ``FLATTENING_POWERS``, ``estimator`` is fitted on the training folds weighted by ``ratios ** power``
    (rescaled to mean 1) and its held-out errors are so counted. Flatter weights rest on more rows and vary
    less, so, as the one-standard-error rule [2]_ prefers the simplest model, the flattest power whose error
    is within one standard error (of the lowest error's estimate) of the lowest wins
    (:func:`flattest_within_one_standard_error`): 0, an unweighted fit, where reweighting shows no gain
    beyond that noise.

    Where a class has a single source row there is nothing to hold out, and the power is instead the largest
    that keeps an effective sample size of half the source rows (:func:`flattening_exponent`); where every
    ratio is equal, any power gives the same weights, and 1 is returned.

    Parameters
    ----------
    estimator : classifier
        Cloned for each fold and power; its ``fit`` takes ``sample_weight``, and must succeed on the rows of
        a training fold.
    source : ndarray of shape (n_source_rows, n_features)
    labels : ndarray of shape (n_source_rows,)
    ratios : ndarray of shape (n_source_rows,)
        The density ratio of each source row, positive, mean 1.
    n_splits : int
        Folds, stratified by label; lowered to the row count of the smallest class.
    random_state : int, RandomState instance or None
        Shuffles the rows into folds.
    n_jobs : int or None, default=None
        The fits (one per power and fold) run in parallel on this many jobs; ``None`` is 1 outside a
        ``joblib.parallel_config`` context. The result does not depend on it.

    Returns
    -------
    power : float
    errors : dict of float to float or None
        The importance-weighted cross-validated error rate of each power; ``None`` when none was
        cross-validated.

    References
    ----------
    .. [1] M. Sugiyama, M. Krauledat and K.-R. Müller, "Covariate shift adaptation by importance weighted
       cross validation", Journal of Machine Learning Research 8, 2007.
    .. [2] L. Breiman, J. Friedman, R. Olshen and C. Stone, "Classification and Regression Trees", 1984
       (the one-standard-error rule).

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> rng = np.random.default_rng(0)
    >>> source = rng.normal(size=(200, 1))
    >>> labels = (np.abs(source[:, 0]) > 1).astype(int)
    >>> ratios = np.exp(-2 * (source[:, 0] + 1) ** 2 + source[:, 0] ** 2 / 2)  # target N(-1, 0.5), source N(0, 1)
    >>> power, errors = choose_flattening(
    ...     LogisticRegression(), source, labels, ratios / ratios.mean(), n_splits=5, random_state=0
    ... )
    >>> power > 0, errors[power] < errors[0.0]
    (True, True)
    """
    if np.ptp(ratios) == 0:
        return 1.0, None
    _, counts = np.unique(labels, return_counts=True)
    n_splits = min(n_splits, int(counts.min()))
    if n_splits < 2:
        return flattening_exponent(ratios, FALLBACK_EFFECTIVE_SHARE), None
    folds = list(StratifiedKFold(n_splits, shuffle=True, random_state=random_state).split(source, labels))
    tasks = [(power, train, test) for power in FLATTENING_POWERS for train, test in folds]
    held_out_mistakes = Parallel(n_jobs=n_jobs)(
        delayed(_held_out_mistakes)(estimator, source, labels, ratios**power, train, test)
        for power, train, test in tasks
    )
    losses = {power: np.zeros(len(source)) for power in FLATTENING_POWERS}
    for (power, _, test), mistakes in zip(tasks, held_out_mistakes, strict=True):
        losses[power][test] = ratios[test] * mistakes
    return flattest_within_one_standard_error(losses), {
        power: float(loss.mean()) for power, loss in losses.items()
    }


def _held_out_mistakes(estimator, source, labels, weights, train, test):
    """Whether ``estimator`` fitted on the ``train`` rows, weighted, errs on each ``test`` row."""
    fitted = clone(estimator).fit(
        source[train], labels[train], sample_weight=weights[train] / weights[train].mean()
    )
    return fitted.predict(source[test]) != labels[test]


def flattest_within_one_standard_error(losses):
    """The smallest power whose mean loss is within one standard error of the lowest mean loss.

    The standard error is that of the lowest mean, ``std(ddof=1) / sqrt(n_rows)`` of its per-row losses.

    Parameters
    ----------
    losses : dict of float to ndarray of shape (n_rows,)
        Each power's per-row (weighted) losses on the same rows.

    Returns
    -------
    power : float

    Examples
    --------
    >>> flattest_within_one_standard_error({0.0: np.array([0.25, 0.1]), 1.0: np.array([0.0, 0.2])})
    0.0
    >>> flattest_within_one_standard_error({0.0: np.array([1.0, 1.0]), 1.0: np.array([0.0, 0.2])})
    1.0
    """
    means = {power: float(np.mean(loss)) for power, loss in losses.items()}
    best = min(means, key=means.get)
    tolerance = means[best] + np.std(losses[best], ddof=1) / np.sqrt(len(losses[best]))
    return min(power for power, mean in means.items() if mean <= tolerance)


def flattening_exponent(weights, min_effective_share):
    """The largest exponent in [0, 1] that keeps ``weights ** exponent`` on ``min_effective_share`` of the rows.

    Raising importance weights to a power below 1 (Shimodaira's flattening) trades the bias of a less exact
    density ratio for the variance of a fit that rests on few rows. The effective sample size of
    ``weights ** exponent`` falls as the exponent grows, so the exponent is found by bisection, as adaptive
    tempering in sequential Monte Carlo finds its next temperature: 1 when the weights already keep that
    share; about 0 (equal weights) when only equal weights would.

    Parameters
    ----------
    weights : array-like of shape (n_rows,)
        Positive, finite weights.
    min_effective_share : float in (0, 1]
        The share of the rows the flattened weights' effective sample size must reach.

    Returns
    -------
    exponent : float

    Examples
    --------
    >>> weights = [8.0, 1.0, 1.0, 1.0]
    >>> round(effective_sample_size(weights) / 4, 2)
    0.45
    >>> exponent = flattening_exponent(weights, 0.6)
    >>> round(exponent, 3), round(effective_sample_size(np.power(weights, exponent)) / 4, 3)
    (0.73, 0.6)
    """
    weights = np.asarray(weights, dtype=np.float64)
    if not (np.all(np.isfinite(weights)) and np.all(weights > 0)):
        raise ValueError("flattening_exponent needs positive, finite weights.")
    if not 0 < min_effective_share <= 1:
        raise ValueError(f"min_effective_share must be in (0, 1], got {min_effective_share}.")
    log_weights = np.log(weights)
    log_weights = log_weights - log_weights.max()  # exp never overflows

    def share(exponent):
        return effective_sample_size(np.exp(exponent * log_weights)) / len(log_weights)

    if share(1.0) >= min_effective_share:
        return 1.0
    low, high = 0.0, 1.0  # share(low) >= min_effective_share > share(high)
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if share(middle) >= min_effective_share else (low, middle)
    return low
