"""A scorer that probes the model with target rows mixed in pairs: mixup validation, after MixVal."""

from numbers import Real

import numpy as np
from sklearn.utils import check_random_state, check_scalar

from ._domain_scorer import _DomainScorer, _rows


def _partners_in_class(codes, random_state):
    """For each row, another row of its predicted class (-1 where the class has no other row), at random."""
    partners = np.full(len(codes), -1)
    for code in np.unique(codes):
        members = random_state.permutation(np.flatnonzero(codes == code))
        if len(members) > 1:
            partners[members] = np.roll(members, -1)
    return partners


def _numbers_to_mix(rows, name):
    """The rows' values as an array, refused before any prediction where they are not numbers."""
    values = rows.to_numpy() if hasattr(rows, "columns") else np.asarray(rows)
    if values.dtype.kind not in "iuf":
        raise ValueError(
            f"{name} mixes pairs of target rows, so X must hold numbers (images as arrays, or features); "
            f"got values of dtype {values.dtype}. Texts, file paths and images as objects cannot be mixed: "
            "score those models with information_maximization_scorer or neighborhood_consistency_scorer."
        )
    return values


def _mixed_rows(rows, values, first, second, ratio):
    """``ratio`` of each ``first`` row and ``1 - ratio`` of its ``second`` row, in the rows' type and dtype.

    Integer rows (uint8 images) are rounded back to their dtype, so that the estimator reads the mixed rows
    on the scale it reads the target rows on; a DataFrame keeps its columns.
    """
    work = np.float64 if values.dtype == np.float64 else np.float32
    mixed = ratio * values[first].astype(work) + (1.0 - ratio) * values[second].astype(work)
    if values.dtype.kind in "iu":
        limits = np.iinfo(values.dtype)
        mixed = np.clip(np.rint(mixed), limits.min, limits.max)
    mixed = mixed.astype(values.dtype, copy=False)
    return type(rows)(mixed, columns=rows.columns) if hasattr(rows, "columns") else mixed


class _MixupValidationScorer(_DomainScorer):
    """How often the model's predictions on pairs of target rows mixed together follow the dominant row.

    Mixed samples as probes (MixVal, Hu et al. 2023): each target row is mixed with another,
    ``mix_ratio * x_i + (1 - mix_ratio) * x_j`` with ``mix_ratio`` just above one half (0.55), and the
    prediction on the mix should be the one the model gives ``x_i``, the row that dominates it. Two kinds
    of pairs probe two properties. Pairs the model puts in the same class test that its classes are
    convex regions of the input (a mix of two rows of a class stays in it); pairs it puts in different
    classes test where its boundary runs: a boundary midway between the two rows gives the dominant row's
    class, a boundary hugging one of them does not. The score is the mean of the two agreement rates, each
    between 0 and 1; greater is better. A model that gives every target row one class has no pair of the
    second kind and scores at most 0.5.

    The rows are mixed in the input space, so ``X`` must hold numbers: images as arrays (integer images are
    rounded back to their dtype) or features; texts and file paths cannot be mixed. It predicts up to
    three times as many rows as the target holds (the rows, and up to two mixes of each). Pairs are drawn with
    ``random_state`` (default 0, the same draw for every candidate of a search). Call it as
    ``mixup_validation_scorer(estimator, X, y=None, sample_domain=None)``, or give it as ``scoring``; it
    needs at least two target rows. To use another ``mix_ratio`` or ``random_state``, set it on a copy
    (``copy.copy(mixup_validation_scorer)``). The paper's score combines the two kinds of pairs by their
    ranks over the candidates; a scorer sees one candidate at a time, so this one averages their rates.

    References
    ----------
    .. [1] D. Hu, J. Liang, J. H. Liew, C. Xue, S. Bai and X. Wang, "Mixed Samples as Probes for
       Unsupervised Model Selection in Domain Adaptation", NeurIPS 2023.

    Examples
    --------
    Two target clusters: a model whose boundary runs midway between them keeps every mix on its dominant
    row's side; one whose boundary hugs a cluster puts every mix across the clusters on the other side,
    half of them wrongly.

    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0], [0.1], [0.2], [0.3], [5.0], [5.1], [5.2], [5.3]])
    >>> y = [-1] * 8
    >>> midway = LogisticRegression().fit([[0.0], [5.3]], [0, 1])
    >>> hugging = LogisticRegression(C=1e4).fit([[0.0], [1.0]], [0, 1])  # its boundary at 0.5
    >>> mixup_validation_scorer(midway, X, y), mixup_validation_scorer(hugging, X, y)
    (1.0, 0.75)
    """

    _name = "mixup_validation_scorer"

    def __init__(self, mix_ratio=0.55, random_state=0):
        super().__init__()
        self.mix_ratio = mix_ratio
        self.random_state = random_state

    def _score(self, estimator, X, y, target):
        n_target = int(target.sum())
        if n_target < 2:
            raise ValueError(f"{self._name} needs at least two target rows: it mixes them in pairs.")
        ratio = check_scalar(
            self.mix_ratio, "mix_ratio", Real, min_val=0.5, max_val=1.0, include_boundaries="neither"
        )
        random_state = check_random_state(self.random_state)
        # Each row's partner across classes: its successor in a random cycle through every row, drawn first
        # so that every candidate of a search gets the same cycle; with two classes or more, it crosses them.
        cycle = random_state.permutation(n_target)
        others = np.empty(n_target, dtype=np.intp)
        others[cycle] = np.roll(cycle, -1)
        rows = _rows(X, target)
        values = _numbers_to_mix(rows, self._name)
        predicted = np.asarray(estimator.predict(rows))
        _, codes = np.unique(predicted, return_inverse=True)
        partners = _partners_in_class(codes, random_state)
        same = np.flatnonzero(partners >= 0)
        across = np.flatnonzero(codes != codes[others])
        first = np.concatenate([same, across])
        second = np.concatenate([partners[same], others[across]])
        mixes = _mixed_rows(rows, values, first, second, ratio)
        follows = np.asarray(estimator.predict(mixes)) == predicted[first]
        within = float(follows[: len(same)].mean()) if len(same) else 0.0
        between = float(follows[len(same) :].mean()) if len(across) else 0.0
        return (within + between) / 2.0


mixup_validation_scorer = _MixupValidationScorer()
