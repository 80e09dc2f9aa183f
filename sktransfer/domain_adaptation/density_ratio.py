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


def source_density_ratios(features, target):
    """The density ratio of each source row, told by the default discriminator fitted on every row.

    The label-free scorers weigh the labelled rows of a validation fold so: the discriminator learns the
    fold's own rows (``target`` marks the target ones) and scores its source rows.

    Examples
    --------
    >>> features = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> source_density_ratios(features, np.array([False, False, True, True])).round(2).tolist()
    [0.28, 0.66]
    """
    target = np.asarray(target, dtype=bool)
    p_target = domain_discriminator().fit(features, target).predict_proba(features[~target])[:, 1]
    return density_ratios(p_target, int((~target).sum()), int(target.sum()))


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
