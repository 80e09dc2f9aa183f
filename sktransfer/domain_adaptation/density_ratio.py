"""How target-like a source row is: the density ratio p_target(x) / p_source(x), told by a domain discriminator."""

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

# Discriminator probabilities are kept this far from 0 and 1, so that no ratio is infinite or every weight 0.
PROBABILITY_FLOOR = 1e-6


def domain_discriminator():
    """The default discriminator of source rows (class 0) from target rows (class 1).

    Examples
    --------
    >>> domain_discriminator()
    Pipeline(steps=[('standardscaler', StandardScaler()),
                    ('logisticregression', LogisticRegression(max_iter=1000))])
    """
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def density_ratios(p_target, n_source, n_target):
    """``P(target | x) / P(source | x) * n_source / n_target``: the density ratio of each source row.

    Bayes' rule turns a discriminator's odds of "target" into p_target(x) / p_source(x) once the domains'
    row counts are divided out; over the source rows its mean is about 1. Probabilities are kept within
    [1e-6, 1 - 1e-6].

    Parameters
    ----------
    p_target : array-like of shape (n_source_rows,)
        The discriminator's probability that each source row is a target row.
    n_source, n_target : int
        Rows of each domain the discriminator learnt from.

    Returns
    -------
    ratios : ndarray of shape (n_source_rows,)

    Examples
    --------
    >>> density_ratios([0.5, 0.2], n_source=100, n_target=50).tolist()
    [2.0, 0.5]
    """
    p_target = np.clip(np.asarray(p_target, dtype=np.float64), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return p_target / (1 - p_target) * (n_source / n_target)


def effective_sample_size(weights):
    """Kish's effective number of rows of a weighted sample: (sum of weights)² / sum of squared weights.

    It is the row count for equal weights, and near 1 when one row carries nearly all the weight.

    Examples
    --------
    >>> effective_sample_size([1.0, 1.0, 1.0, 1.0])
    4.0
    >>> round(effective_sample_size([100.0, 1.0, 1.0, 1.0]), 2)
    1.06
    """
    weights = np.asarray(weights, dtype=np.float64)
    return float(weights.sum() ** 2 / np.sum(weights**2))


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
