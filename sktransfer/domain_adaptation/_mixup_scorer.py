"""A scorer that probes the model with target rows mixed in pairs: mixup validation, after MixVal."""

from numbers import Real

import numpy as np
import torch
from scipy.sparse import issparse
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


def _cannot_mix(name, what):
    return ValueError(
        f"{name} mixes pairs of target rows, so X must hold numbers of one shape (images as arrays or "
        f"tensors, or features); {what}. Texts, file paths and images as objects cannot be mixed: score "
        "those models with information_maximization_scorer or neighborhood_consistency_scorer."
    )


def _mix(values, first, second, ratio, name):
    """``ratio`` of each ``first`` row of an array and ``1 - ratio`` of its ``second`` row.

    Images (arrays of three dimensions or more) stay in their dtype: integers and booleans are rounded back
    to it, so that a uint8 image stays one, read on the scale the target rows are read on. Feature vectors
    (one or two dimensions) of integers or booleans are mixed in floating point, not rounded: rounded, a
    mix of two rows of 0s and 1s (or of counts that differ by one) would be its dominant row again, and
    every model would follow it. Integers wider than 16 bits and float64 are mixed in float64, the others
    in float32.

    Examples
    --------
    >>> flags = np.array([[0, 1], [1, 1]])
    >>> _mix(flags, [0], [1], 0.55, "mixup_validation_scorer").round(2).tolist()
    [[0.45, 1.0]]
    """
    dtype = values.dtype
    exact = dtype == np.float64 or (dtype.kind in "iu" and dtype.itemsize > 2)
    work = np.float64 if exact else np.float32
    mixed = ratio * values[first].astype(work) + (1.0 - ratio) * values[second].astype(work)
    if values.ndim < 3:
        return mixed if dtype.kind in "iub" else mixed.astype(dtype, copy=False)
    if dtype.kind in "iu":
        limits = np.iinfo(dtype)
        mixed = np.clip(np.rint(mixed), limits.min, limits.max)
    elif dtype.kind == "b":
        mixed = np.rint(mixed)
    mixed = mixed.astype(dtype, copy=False)
    _check_mixes_differ(
        np.array_equal(mixed, values[first]), np.array_equal(values[first], values[second]), name
    )
    return mixed


def _check_mixes_differ(mixes_are_dominant_rows, pairs_are_equal, name):
    """Refuse rows that rounding to their own dtype mixes back into their dominant rows: every model would
    follow every mix, and score 1."""
    if mixes_are_dominant_rows and not pairs_are_equal:
        raise ValueError(
            f"{name} mixes pairs of target rows and rounds the mixes back to the rows' whole-number dtype, "
            f"and here each mix rounds back to its dominant row (values that differ by 1 at most, at a "
            "mix_ratio of 0.55): every model would follow every mix and score 1. Pass the rows as floats "
            "(X.astype(float)) where the model reads them so, or score with "
            "neighborhood_consistency_scorer or information_maximization_scorer."
        )


def _frame_mixer(frame, name):
    """Mixes the rows of a DataFrame column by column, each column back in its own dtype (integer columns,
    which may hold category codes, rounded to whole values)."""
    from pandas.api.types import is_bool_dtype, is_integer_dtype, is_numeric_dtype

    not_numbers = [column for column in frame.columns if not is_numeric_dtype(frame[column].dtype)]
    if not_numbers:
        raise _cannot_mix(name, f"the columns {not_numbers[:5]} do not hold numbers")
    columns = {column: frame[column].to_numpy(dtype=np.float64, na_value=np.nan) for column in frame.columns}

    def mix(first, second, ratio):
        mixed = {}
        for column, values in columns.items():
            dtype = frame[column].dtype
            blend = _mix(values, first, second, ratio, name)
            whole = is_integer_dtype(dtype) or is_bool_dtype(dtype)
            mixed[column] = np.rint(blend) if whole else blend
        _check_mixes_differ(
            all(
                np.array_equal(mixed[column], values[first], equal_nan=True)
                for column, values in columns.items()
            ),
            all(np.array_equal(values[first], values[second], equal_nan=True) for values in columns.values()),
            name,
        )
        return type(frame)(mixed, columns=frame.columns).astype(frame.dtypes.to_dict())

    return mix


def _mixer(rows, name):
    """A function ``mix(first, second, ratio)`` that mixes pairs of ``rows`` and gives them in their own kind.

    Arrays, lists of rows, tensors (lists of tensors become one) and DataFrames can be mixed; anything else
    (texts, paths, images as objects, rows of several shapes) is refused here, before any prediction.
    """
    if hasattr(rows, "columns"):
        return _frame_mixer(rows, name)
    if issparse(rows):
        if rows.dtype.kind not in "biuf":
            raise _cannot_mix(name, f"got a sparse matrix of dtype {rows.dtype}")
        return lambda first, second, ratio: (rows[first] * ratio + rows[second] * (1.0 - ratio)).astype(
            np.float64
        )
    if isinstance(rows, list | tuple) and rows and all(isinstance(row, torch.Tensor) for row in rows):
        if len({tuple(row.shape) for row in rows}) > 1:
            raise _cannot_mix(name, "the tensors of the target rows differ in shape")
        rows = torch.stack(list(rows))
    if isinstance(rows, torch.Tensor):
        values = rows.detach().cpu()
        values = (values.float() if values.dtype == torch.bfloat16 else values).numpy()
        # floats and images back in the tensor's dtype; integer or boolean feature vectors stay mixed in floats
        dtype = rows.dtype if rows.is_floating_point() or rows.ndim >= 3 else None
        return lambda first, second, ratio: torch.from_numpy(_mix(values, first, second, ratio, name)).to(
            dtype
        )
    if isinstance(rows, list | tuple) and not all(
        isinstance(row, np.ndarray | list | tuple | Real) for row in rows
    ):
        kinds = sorted({type(row).__name__ for row in rows})
        raise _cannot_mix(name, f"got rows of type {', '.join(kinds[:3])}")
    try:
        values = np.asarray(rows)
    except ValueError as exc:  # rows of several shapes
        raise _cannot_mix(name, f"its rows cannot form one array ({exc})") from exc
    if values.dtype.kind not in "biuf":
        raise _cannot_mix(name, f"got values of dtype {values.dtype}")
    return lambda first, second, ratio: _mix(values, first, second, ratio, name)


class _MixupValidationScorer(_DomainScorer):
    """How often the model's predictions on pairs of target rows mixed together follow the dominant row.

    Mixed samples as probes (MixVal, Hu et al. 2023): each target row is mixed with another,
    ``mix_ratio * x_i + (1 - mix_ratio) * x_j`` with ``mix_ratio`` just above one half (0.55), and the
    prediction on the mix should be the one the model gives ``x_i``, the row that dominates it. Two kinds
    of pairs probe two properties. Pairs the model puts in the same class test that its classes are
    convex regions of the input (a mix of two rows of a class stays in it); pairs it puts in different
    classes test where its boundary runs: a boundary midway between the two rows gives the dominant row's
    class, a boundary hugging one of them does not. The score is the mean of the two agreement rates, each
    between 0 and 1; greater is better. A kind of pair the model gives none of counts 0: a model that gives
    every target row one class scores at most 0.5, and one whose classes each hold a single target row
    (possible with very few target rows) at most 0.5 too.

    The rows are mixed in the input space, so ``X`` must hold numbers of one shape: images as arrays or
    tensors (integer images are rounded back to their dtype, so read on the target rows' scale), features
    as arrays (integers mixed as floats), sparse matrices or DataFrames (each column back in its own dtype,
    integer columns rounded as category codes must be); rows that rounding mixes back into their dominant
    rows are refused, since every model would follow every mix. Texts, file paths and images as objects
    (PIL) cannot be mixed. It predicts up to three times as many rows as the target holds
    (the rows, and up to two mixes of each). Pairs are drawn with ``random_state`` (default 0: an int
    gives the same draw for every candidate of a search). Call it as
    ``mixup_validation_scorer(estimator, X, y=None, sample_domain=None)``, or give it as ``scoring``; it
    needs at least two target rows. To use another ``mix_ratio`` or ``random_state``, set it on a copy
    (``copy.copy(mixup_validation_scorer)``). The paper's score combines the two kinds of pairs by their
    ranks over the candidates; a scorer sees one candidate at a time, so this one averages their rates. On
    the library's DANN grids of four image shifts it ranked the candidates below
    ``neighborhood_consistency_scorer`` and prediction entropy, its picks between theirs
    (``benchmarks/RESULTS.md``, "choosing without target labels").

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
        mix = _mixer(rows, self._name)
        predicted = np.asarray(estimator.predict(rows))
        _, codes = np.unique(predicted, return_inverse=True)
        partners = _partners_in_class(codes, random_state)
        same = np.flatnonzero(partners >= 0)
        across = np.flatnonzero(codes != codes[others])
        first = np.concatenate([same, across])
        second = np.concatenate([partners[same], others[across]])
        mixes = mix(first, second, ratio)
        follows = np.asarray(estimator.predict(mixes)) == predicted[first]
        within = float(follows[: len(same)].mean()) if len(same) else 0.0
        between = float(follows[len(same) :].mean()) if len(across) else 0.0
        return (within + between) / 2.0


mixup_validation_scorer = _MixupValidationScorer()
