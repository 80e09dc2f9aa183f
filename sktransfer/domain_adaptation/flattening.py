"""How far to flatten importance weights: the power of the density ratios that the weighted fit uses."""

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold

from .density_ratio import effective_sample_size

# The powers that flatten="auto" chooses among: from an unweighted fit (0) to the density ratios themselves (1).
FLATTENING_POWERS = (0.0, 0.25, 0.5, 0.75, 1.0)


def cross_validated_flattening(estimator, source, labels, ratios, n_splits, random_state):
    """The flattest power of ``ratios`` whose importance-weighted validation error is within a standard error of the lowest.

    Importance-weighted cross-validation (Sugiyama, Krauledat and Müller 2007) estimates the target error of
    a model from labelled source rows alone: each held-out source row's error counts with its density ratio.
    For each power in ``FLATTENING_POWERS``, ``estimator`` is fitted on the training folds weighted by
    ``ratios ** power`` and scored on the held-out fold so. Flatter weights rest on more rows and vary less,
    so, as the one-standard-error rule prefers the simplest model (Breiman et al. 1984), the flattest power
    whose error is within one standard error of the lowest wins: reweighting is used only as far as it
    shows a gain larger than the noise of its own estimate.

    Parameters
    ----------
    estimator : classifier
        Cloned for each fold and power; its ``fit`` takes ``sample_weight``.
    source : ndarray of shape (n_source_rows, n_features)
    labels : ndarray of shape (n_source_rows,)
    ratios : ndarray of shape (n_source_rows,)
        The density ratio of each source row, mean 1.
    n_splits : int
        Folds, stratified by label; lowered to the row count of the smallest class.
    random_state : int, RandomState instance or None
        Shuffles the rows into folds.

    Returns
    -------
    power : float or None
        ``None`` when a class has a single source row: there is then nothing to validate on.
    errors : dict of float to float
        The importance-weighted cross-validated error rate of each power.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> rng = np.random.default_rng(0)
    >>> source = rng.normal(size=(200, 1))
    >>> labels = (np.abs(source[:, 0]) > 1).astype(int)
    >>> ratios = np.exp(-2 * (source[:, 0] + 1) ** 2 + source[:, 0] ** 2 / 2)  # target N(-1, 0.5), source N(0, 1)
    >>> power, errors = cross_validated_flattening(
    ...     LogisticRegression(), source, labels, ratios / ratios.mean(), n_splits=5, random_state=0
    ... )
    >>> power > 0, errors[power] < errors[0.0]
    (True, True)
    """
    _, counts = np.unique(labels, return_counts=True)
    n_splits = min(n_splits, int(counts.min()))
    if n_splits < 2:
        return None, {}
    folds = list(StratifiedKFold(n_splits, shuffle=True, random_state=random_state).split(source, labels))
    losses = {}
    for power in FLATTENING_POWERS:
        weights = ratios**power
        wrong = np.zeros(len(source))
        for train, test in folds:
            fitted = clone(estimator).fit(
                source[train], labels[train], sample_weight=weights[train] / weights[train].mean()
            )
            wrong[test] = fitted.predict(source[test]) != labels[test]
        losses[power] = ratios * wrong
    errors = {power: float(loss.mean()) for power, loss in losses.items()}
    best = min(errors, key=errors.get)
    tolerance = errors[best] + np.std(losses[best], ddof=1) / np.sqrt(len(source))
    return min(power for power in FLATTENING_POWERS if errors[power] <= tolerance), errors


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
