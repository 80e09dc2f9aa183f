"""The inputs of the transferability scores checked: features, class labels, and source classifier outputs."""

import warnings

import numpy as np
import torch
from scipy.special import softmax
from sklearn.utils import check_array
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

from ._labels import refuse_missing_labels
from ._stacklevel import caller_stacklevel

# A matrix whose entries all lie in [0, 1] holds probabilities (rounded, truncated to the top classes, or
# stored in bfloat16, its rows may miss 1 by 0.1 over a thousand classes: a softmax of them as logits would
# flatten them to almost uniform); any other, logits. Rows that miss 1 by more than this are renormalised
# with a warning. Entries may leave [0, 1] by rounding (a column computed as 1 - the others' sum): by this
# much, they are clipped, not read as logits.
_PROBABILITY_ATOL = 0.05
_ENTRY_ATOL = 1e-6
# What to pass for a binary source classifier that gives one logit per sample.
_ONE_LOGIT = "for a binary classifier with one logit l, np.column_stack([np.zeros_like(l), l])"


class RenormalizedProbabilitiesWarning(UserWarning):
    """``source_output`` read as probabilities whose rows do not sum to 1, and renormalised."""


def checked_features(values, name):
    """A finite float64 matrix of at least two rows; a new array where a conversion was needed."""
    return check_array(values, dtype=np.float64, ensure_min_samples=2, input_name=name)


def unit_scaled_features(values, name):
    """:func:`checked_features`, scaled by a power of two so that the largest magnitude lies in [0.5, 1).

    The scores do not change when the features are scaled; their squares and products, though, overflow
    or underflow for magnitudes beyond about 1e±77. A power of two changes no digit of any value.

    Examples
    --------
    >>> unit_scaled_features([[3.0, -4.0], [1.0, 2.0]], "features").tolist()
    [[0.375, -0.5], [0.125, 0.25]]
    """
    features = checked_features(values, name)
    largest = np.max(np.abs(features))
    if largest == 0:
        return features
    return np.ldexp(features, -int(np.frexp(largest)[1]))


def rounding_noise(values, features):
    """A bound on the singular values that rounding alone gives ``features``: those of the error ``values``
    carry in their own floating-point type (float32 embeddings, say, read in float64 as ``features``).

    Each value holds an error of at most eps times itself; a matrix of such independent errors has a
    largest singular value of about eps times their root mean square times (sqrt(n) + sqrt(d)). Twice that:
    directions of rank-deficient float32 features (a layer wider than its input) that hold nothing else.
    Integers and float64 give float64's eps.

    Examples
    --------
    >>> features = np.ones((100, 4))
    >>> bool(rounding_noise(features.astype(np.float32), features) > 1e3 * rounding_noise(features, features))
    True
    """
    n_samples, n_features = features.shape
    root_mean_square = np.sqrt(np.mean(features**2))
    return 2 * _own_eps(values) * root_mean_square * (np.sqrt(n_samples) + np.sqrt(n_features))


def _own_eps(values):
    """The machine epsilon of ``values``' floating-point type: a NumPy array's, a tensor's or a DataFrame's
    widest column's; float64's for integers and anything else."""
    dtype = getattr(values, "dtype", None)
    if dtype is None and hasattr(values, "dtypes"):  # a DataFrame
        try:
            dtype = np.result_type(*values.dtypes)
        except TypeError:  # columns of pandas' own dtypes
            dtype = None
    if isinstance(dtype, torch.dtype):
        return torch.finfo(dtype).eps if dtype.is_floating_point else _FLOAT64_EPS
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        return _FLOAT64_EPS
    return float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else _FLOAT64_EPS


_FLOAT64_EPS = float(np.finfo(np.float64).eps)


def class_codes(y, n_samples, name):
    """``y``'s classes as codes 0..n_classes-1, and n_classes; labels of any type, at least two classes."""
    codes, classes = label_codes(y, "y")
    if len(codes) != n_samples:
        raise ValueError(
            f"y has {len(codes)} labels for the {n_samples} rows of {name}: give one label per row."
        )
    if len(classes) < 2:
        raise ValueError(
            f"y has a single class ({classes.tolist()[0]!r}): a transferability score compares at least two "
            "classes. (GridSearchCV splits the rows of a transformer, such as PretrainedFeatureExtractor, into "
            "folds without stratifying them: pass cv=StratifiedKFold(5, shuffle=True, random_state=0).)"
        )
    return codes, len(classes)


def label_codes(labels, name):
    """Class labels of any type as codes 0..k-1, in the order of the sorted labels, and those labels."""
    labels = column_or_1d(labels)
    refuse_missing_labels(labels, name)  # before sklearn calls them an unknown label type, or sorting fails
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):  # before sklearn casts inf to int
        raise ValueError(
            f"{name} holds infinite labels at samples {np.flatnonzero(np.isinf(labels))[:10].tolist()}."
        )
    with warnings.catch_warnings():
        if name != "y":  # predicted source classes may well be many; sklearn's warning would name y
            warnings.filterwarnings("ignore", "The number of unique classes", UserWarning)
        check_classification_targets(labels)
    try:
        classes, codes = np.unique(labels, return_inverse=True)
    except TypeError as exc:
        raise ValueError(f"{name} mixes labels that cannot be sorted together: {exc}") from exc
    return codes.reshape(-1), classes


def one_hot(codes, n_classes):
    indicators = np.zeros((len(codes), n_classes))
    indicators[np.arange(len(codes)), codes] = 1.0
    return indicators


def source_probabilities(source_output):
    """``source_output`` as float64 probabilities: kept (renormalised) if they are, softmaxed if logits."""
    values = checked_features(source_output, "source_output")
    if values.shape[1] < 2:
        raise ValueError(
            f"source_output has one column: give the source classifier's output for every source class "
            f"({_ONE_LOGIT})."
        )
    sums = values.sum(axis=1)
    in_unit_range = (values >= -_ENTRY_ATOL) & (values <= 1 + _ENTRY_ATOL)
    if not np.all(in_unit_range) or np.all(sums == 0):  # all zeros: uniform logits
        return softmax(values, axis=1)
    values = np.clip(values, 0.0, 1.0)
    sums = values.sum(axis=1)
    empty = np.flatnonzero(sums == 0)
    if empty.size:
        raise ValueError(
            f"source_output reads as probabilities (every entry in [0, 1]) but is all zeros at samples "
            f"{empty[:10].tolist()}: give every sample the source classifier's probabilities, or pass logits."
        )
    if np.abs(sums - 1).max() > _PROBABILITY_ATOL:
        warnings.warn(
            f"source_output lies in [0, 1], but its rows sum to between {sums.min():.3g} and {sums.max():.3g}: "
            "read as probabilities and renormalised. Pass the source classifier's logits if these are not "
            "probabilities.",
            RenormalizedProbabilitiesWarning,
            stacklevel=caller_stacklevel(),
        )
    return values / sums[:, None]


def hard_predictions(source_output):
    """The predicted source class of each sample as codes: from labels, or from each row's largest entry."""
    values = np.asarray(source_output)
    if values.ndim == 2 and values.shape[1] > 1:
        return checked_features(values, "source_output").argmax(axis=1)
    if values.dtype.kind == "f" and np.all(np.isfinite(values)) and np.any(values != np.round(values)):
        raise ValueError(
            "source_output holds one number per sample that is not a class label: give the source "
            f"classifier's predicted classes, or its output for every source class ({_ONE_LOGIT})."
        )
    codes, _ = label_codes(values, "source_output")
    if len(codes) < 2:
        raise ValueError(f"source_output has {len(codes)} sample(s): a score needs at least 2.")
    return codes
