"""Labels of any type as class indices and back: the checks the trainable estimators share."""

import sys
from numbers import Real

import numpy as np
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d


def labelled_rows_of(y, labelled):
    """The labels of the ``labelled`` rows (a mask) of ``y``, as NumPy would type them without the -1 marks.

    Labels that an object array kept apart from -1 (booleans, by :func:`label_array`, or integers that a user
    marked in ``y.astype(object)``) come back as an array of their own type, which scikit-learn's checks
    read as classes: an object array of anything but text is of an "unknown" type to them.

    Examples
    --------
    >>> labelled_rows_of([True, -1, False], np.array([True, False, True])).tolist()
    [True, False]
    >>> labelled_rows_of(np.array([3, -1, 7], dtype=object), np.array([True, False, True])).dtype.kind
    'i'
    """
    labels = label_array(y)[labelled]
    if labels.dtype == object and labels.size and not any(isinstance(v, str) for v in labels):
        typed = np.asarray(labels.tolist())
        if typed.shape == labels.shape and typed.dtype.kind in "biuf":
            return typed
    return labels


def require_labels(y, estimator_name, what="the label of each image"):
    """Raise scikit-learn's error for ``y=None`` (an estimator that needs labels), saying what to pass."""
    if y is None:
        raise ValueError(f"{estimator_name} requires y to be passed, but the target y is None: pass {what}.")


def label_array(y):
    """``y`` as a 1-D array, where a list that mixes class names or booleans with the number -1 keeps both.

    NumPy would turn such a list into text, and the mark of an unlabelled row into the class "-1"; or
    booleans into the integers 0 and 1, which ``classes_`` and ``predict`` would then give back.

    Examples
    --------
    >>> label_array(["cat", -1, "dog"]).tolist()
    ['cat', -1, 'dog']
    >>> label_array(["cat", "-1"]).dtype.kind
    'U'
    >>> label_array([True, -1, False]).tolist()
    [True, -1, False]
    """
    if isinstance(y, list | tuple) and _mixes_labels_with_minus_one(list(y)):
        y = np.asarray(list(y), dtype=object)
    return column_or_1d(y, warn=True)


def _mixes_labels_with_minus_one(values):
    """Whether NumPy would change ``values``' types: names beside other values, or booleans beside -1."""
    texts = [isinstance(value, str) for value in values]
    if any(texts):
        return not all(texts)
    flags = [isinstance(value, bool | np.bool_) for value in values]
    others = [value for value, flag in zip(values, flags, strict=True) if not flag]
    return any(flags) and bool(others) and all(_is_minus_one(value) for value in others)


def _is_minus_one(value):
    """Whether ``value`` is the number -1 (the mark of an unlabelled row)."""
    return isinstance(value, Real) and value == UNLABELLED


def missing_labels(y):
    """Indices of NaN, None or pandas.NA labels.

    Examples
    --------
    >>> missing_labels(np.array(["a", None, "b", float("nan")], dtype=object)).tolist()
    [1, 3]
    """
    if y.dtype.kind == "f":
        return np.flatnonzero(np.isnan(y))
    if y.dtype.kind == "O":
        return np.flatnonzero([is_missing_value(value) for value in y])
    return np.array([], dtype=int)


def is_missing_value(value):
    """Whether ``value`` is None, a NaN (of any float type) or pandas.NA.

    Examples
    --------
    >>> [is_missing_value(v) for v in (None, np.float32("nan"), 0.0, "")]
    [True, True, False, False]
    """
    # pandas.NA (the missing value of pandas' "string", "Int64" and "boolean" dtypes) is read without
    # importing pandas: only data from pandas can hold it.
    pandas = sys.modules.get("pandas")
    return (
        value is None
        or (isinstance(value, Real) and bool(value != value))
        or (pandas is not None and value is pandas.NA)
    )


def refuse_missing_labels(y, name="y", among=None):
    """Raise naming the samples whose label is None, NaN or pandas.NA (those of ``among``, a row mask).

    Examples
    --------
    >>> refuse_missing_labels(np.array(["a", None], dtype=object))
    Traceback (most recent call last):
    ...
    ValueError: y holds missing labels (NaN, None or NA) at samples [1].
    """
    missing = missing_labels(y)
    if among is not None:
        missing = missing[among[missing]]
    if missing.size:
        raise ValueError(f"{name} holds missing labels (NaN, None or NA) at samples {missing[:10].tolist()}.")


def checked_labels(y, n_samples):
    """``y`` as a 1-D array of one classification label per sample, without missing values."""
    y = column_or_1d(y, warn=True)
    if len(y) != n_samples:  # scikit-learn's wording
        raise ValueError(
            f"Found input variables with inconsistent numbers of samples: [{n_samples}, {len(y)}]"
        )
    refuse_missing_labels(y)
    check_classification_targets(y)
    return y


def encode_labels(y, classes):
    """The index in ``classes`` of each label of ``y``; labels outside ``classes`` raise.

    Examples
    --------
    >>> encode_labels(np.array(["b", "a", "b"]), np.array(["a", "b"])).tolist()
    [1, 0, 1]
    """
    if len(classes) < 2:
        raise ValueError(f"y holds one class only ({classes[0]!r}); a classifier needs at least 2 classes.")
    index = {label: code for code, label in enumerate(classes.tolist())}
    unknown = [label for label in np.unique(y).tolist() if label not in index]
    if unknown:
        raise ValueError(f"y holds labels that are not among classes {classes.tolist()}: {unknown[:10]}.")
    return np.array([index[label] for label in y.tolist()], dtype=np.int64)


UNLABELLED = -1  # the label that marks a row without one (a target row, or a row only a teacher labels)


def labelled_mask(y):
    """True where a row has a label: neither the mark -1 nor a blank (None, NaN, pandas.NA).

    Examples
    --------
    >>> labelled_mask(np.array(["cat", -1, None], dtype=object)).tolist()
    [True, False, False]
    """
    labelled = ~unlabelled_mask(y)
    labelled[missing_labels(y)] = False
    return labelled


def unlabelled_mask(y):
    """True where the label is the number -1, the mark of an unlabelled row (a string "-1" is a class name).

    Examples
    --------
    >>> unlabelled_mask(["cat", -1, "dog"]).tolist()
    [False, True, False]
    >>> unlabelled_mask(np.array(["cat", -1, "-1"], dtype=object)).tolist()
    [False, True, False]
    """
    y = np.asarray(y, dtype=object) if not hasattr(y, "dtype") else np.asarray(y)
    if y.dtype.kind in "iuf":
        return y == UNLABELLED
    if y.dtype.kind == "O":
        return np.array(
            [not isinstance(v, str) and not is_missing_value(v) and bool(v == UNLABELLED) for v in y],
            dtype=bool,
        )
    return np.zeros(len(y), dtype=bool)


def refuse_minus_one_among_classes(classes, name):
    """Raise where the ``classes`` a user listed hold -1, the mark of unlabelled rows (never a class).

    Examples
    --------
    >>> refuse_minus_one_among_classes(["cat", "dog"], "classes")
    >>> refuse_minus_one_among_classes([-1, 0, 1], "classes")
    Traceback (most recent call last):
    ...
    ValueError: classes holds -1, which marks unlabelled rows ...
    """
    if classes is not None and any(np.asarray(classes, dtype=object).ravel() == -1):
        raise ValueError(
            f"{name} holds -1, which marks unlabelled rows (the target's, in domain adaptation) and is never a "
            "class: list the classes of the labelled rows only."
        )
