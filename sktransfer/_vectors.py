"""Rows of numbers as directions: each row scaled to unit length, for the cosines that compare them."""

import numpy as np


def unit_rows(X):
    """Each row of ``X`` divided by its length, in float64; rows of zeros stay zeros.

    scikit-learn's ``normalize`` leaves rows shorter than ten machine epsilons as they are, which would keep
    tiny embeddings off the unit sphere that a cosine compares on.

    Examples
    --------
    >>> unit_rows(np.array([[3e-16, 4e-16], [0.0, 0.0], [3e200, 4e200]])).round(12).tolist()
    [[0.6, 0.8], [0.0, 0.0], [0.6, 0.8]]
    """
    X = np.asarray(X, dtype=np.float64)
    # scaled by its largest entry first, a row's length neither overflows (rows over ~1e154) nor underflows
    largest = np.abs(X).max(axis=1, keepdims=True)
    X = np.divide(X, largest, out=np.zeros_like(X), where=largest > 0)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
