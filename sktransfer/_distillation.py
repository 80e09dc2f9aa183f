"""Knowledge distillation: a network learns from the class probabilities of a fitted teacher classifier.

Hinton, Vinyals and Dean (2015), "Distilling the Knowledge in a Neural Network": the student matches the
teacher's probabilities softened at a temperature T, with the Kullback-Leibler divergence scaled by T² (so
that its gradients keep their size whatever T), next to the cross-entropy of the true labels. The teacher is
any fitted scikit-learn classifier with ``predict_proba``; only its probabilities are known, and softening
them as p^(1/T), renormalised, is exactly the temperature-T softmax of its logits when they are a softmax.
Rows labelled -1 (the ``sklearn.semi_supervised`` convention) are unlabelled: they learn from the teacher
alone. :class:`DistillationMixin` gives a trainable estimator the parameters ``teacher``, ``temperature``
and ``distillation_weight``.
"""

import warnings
from numbers import Real

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted

from ._labelled_scoring import refuse_unlabelled_scoring
from ._labels import (
    UNLABELLED,
    label_array,
    refuse_minus_one_among_classes,
    refuse_missing_labels,
    require_labels,
    unlabelled_mask,
)
from ._stacklevel import caller_stacklevel
from ._training_data import LABEL
from ._unused_settings import IgnoredSettingWarning, warn_of_unused_settings

DISTILLATION_CONSTRAINTS = {
    "teacher": [HasMethods(["predict_proba"]), None],
    "temperature": [Interval(Real, 0, None, closed="neither")],
    "distillation_weight": [Interval(Real, 0, 1, closed="both")],
}
TEACHER = "teacher"  # the key of the teacher's probabilities in a distilling net's training targets


def teacher_classes(teacher):
    """The classes of a fitted ``teacher``, in the order of its ``predict_proba`` columns."""
    try:
        check_is_fitted(teacher)
    except NotFittedError as error:
        raise NotFittedError(
            f"teacher={type(teacher).__name__} is not fitted: fit it first (it is used as given, never "
            "fitted or changed). If it was fitted, a clone of this estimator (GridSearchCV, "
            "cross_val_score, sklearn.base.clone) made an unfitted copy of it: pass "
            "teacher=sklearn.frozen.FrozenEstimator(teacher), which clones keep as it is."
        ) from error
    classes = getattr(teacher, "classes_", None)
    if classes is None:
        raise TypeError(f"teacher={type(teacher).__name__} has no classes_: it must be a fitted classifier.")
    classes = np.asarray(classes)
    if unlabelled_mask(classes).any():
        raise ValueError(
            f"the teacher predicts a class -1 (its classes_ are {classes.tolist()[:10]}), but with a teacher "
            "y == -1 marks unlabelled rows: relabel that class."
        )
    return classes


def soften(probabilities, temperature):
    """Probabilities p as p^(1/T), renormalised: the temperature-T softmax of logits whose softmax is p.

    Examples
    --------
    >>> soften(np.array([[0.8, 0.2]]), temperature=2.0).round(3).tolist()
    [[0.667, 0.333]]
    """
    with np.errstate(divide="ignore"):  # a probability of 0 stays 0
        logits = np.log(probabilities) / temperature
    soft = np.exp(logits - logits.max(axis=1, keepdims=True))
    return soft / soft.sum(axis=1, keepdims=True)


def teacher_probabilities(teacher, X, classes, n_samples):
    """``teacher.predict_proba(X)``, checked, its columns in the order of ``classes`` (the student's)."""
    own = teacher_classes(teacher)
    proba = np.asarray(teacher.predict_proba(X), dtype=np.float64)
    if proba.shape != (n_samples, len(own)):
        raise ValueError(
            f"teacher.predict_proba(X) has shape {proba.shape}, expected ({n_samples}, {len(own)}): one row "
            "per sample of X, one column per class of the teacher's classes_."
        )
    bad = np.flatnonzero(~np.isfinite(proba).all(axis=1) | (proba < 0).any(axis=1) | (proba.sum(axis=1) <= 0))
    if bad.size:
        raise ValueError(
            f"the teacher's probabilities are not finite non-negative numbers with a positive sum for "
            f"samples {bad[:10].tolist()}."
        )
    column = {label: index for index, label in enumerate(own.tolist())}
    student = classes.tolist()
    extra = sorted(set(column) - set(student), key=str)
    if extra:
        raise ValueError(
            f"the teacher predicts classes {extra[:10]} that are not among the classes {student[:10]}: the "
            "student cannot learn its probabilities for them."
        )
    mapped = np.zeros((n_samples, len(student)))
    for index, label in enumerate(student):
        if label in column:
            mapped[:, index] = proba[:, column[label]]
    return mapped / mapped.sum(axis=1, keepdims=True)


def kl_dtype(device):
    """float64 for the KL term of the distillation loss, but on Apple's GPUs (MPS), which have none."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def distillation_loss(logits, labels, teacher, criterion, temperature, weight):
    """(1 - ``weight``) times ``criterion`` on the labelled rows, plus ``weight`` T² KL(teacher ‖ student).

    ``teacher`` holds the teacher's probabilities already softened at ``temperature``; the student's logits
    are softened here. Each term is the mean over its rows: the labelled rows, and all rows.

    Examples
    --------
    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    >>> teacher = torch.softmax(logits / 4, dim=1)  # the student already agrees with the teacher
    >>> labels = torch.tensor([0, -1])
    >>> loss = distillation_loss(logits, labels, teacher, torch.nn.CrossEntropyLoss(), 4.0, weight=1.0)
    >>> abs(loss.item()) < 1e-6
    True
    """
    # In float64 where the device has it: KL shrinks as 1/T², and float32's rounding, times T², would be
    # the whole of the loss at a large T (negative, at T = 1e5), which early stopping and checkpoints read.
    precise = kl_dtype(logits.device)
    teacher = teacher.to(precise)
    log_student = torch.log_softmax(logits.to(precise) / temperature, dim=1)
    kl = (torch.special.xlogy(teacher, teacher) - teacher * log_student).sum(dim=1).mean()
    loss = (weight * temperature**2 * kl).float()
    labelled = labels != UNLABELLED
    if weight < 1 and labelled.any():
        loss = loss + (1 - weight) * criterion(logits[labelled], labels[labelled])
    return loss


class DistillationMixin:
    """``teacher``: training targets carry the teacher's probabilities, and the loss distils them.

    With a teacher, rows with y == -1 are unlabelled and the classes are the teacher's (every label of y
    must be one of them). The teacher's probabilities are computed once per ``fit``/``partial_fit``, on X as
    given, softened at ``temperature`` and carried with each row through the training data (and the
    validation split), as ``{"label": codes, "teacher": probabilities}``; they are not kept afterwards.
    Without a teacher, everything is as without this mixin: -1 is a label like any other.
    """

    def score(self, X, y, sample_weight=None):
        """Accuracy; with a teacher, refuses -1 labels (unlabelled rows), which would be scored as errors.

        Parameters
        ----------
        X : images
        y : array-like of shape (n_samples,)
        sample_weight : array-like or None

        Returns
        -------
        score : float
        """
        if self.teacher is not None:
            refuse_unlabelled_scoring(
                y,
                "Score with labelled rows: the student learns the unlabelled ones from the teacher alone; "
                "in cross_val_score or GridSearchCV, pass "
                "scoring=sktransfer.labelled_rows_scorer('accuracy'), which scores the labelled rows "
                "(y != -1) of each fold.",
            )
        return super().score(X, y, sample_weight=sample_weight)

    def _check_settings(self, X):
        super()._check_settings(X)
        if self.teacher is None:
            warn_of_unused_settings(self, ["temperature", "distillation_weight"], "with a teacher")
        elif self.distillation_weight == 0:
            warnings.warn(
                f"{type(self).__name__}: distillation_weight=0 gives the teacher no weight, so it is run and "
                "ignored: set teacher=None, or distillation_weight above 0.",
                IgnoredSettingWarning,
                stacklevel=caller_stacklevel(),
            )

    def _targets(self, y, n_samples, reset=True, classes=None):
        if self.teacher is None:
            return super()._targets(y, n_samples, reset=reset, classes=classes)
        own = teacher_classes(self.teacher)
        # with a teacher, -1 marks unlabelled rows, as the teacher's own classes may not hold it
        refuse_minus_one_among_classes(self.classes, "classes")
        refuse_minus_one_among_classes(classes, "partial_fit's classes")
        require_labels(y, type(self).__name__, "the label of each image, -1 for an unlabelled one")
        y = label_array(y)
        if len(y) != n_samples:  # scikit-learn's wording
            raise ValueError(
                f"Found input variables with inconsistent numbers of samples: [{n_samples}, {len(y)}]"
            )
        refuse_missing_labels(y)
        labelled = ~unlabelled_mask(y)
        if self.distillation_weight == 0 and not labelled.any():
            raise ValueError(
                "every row of y is -1 (unlabelled), and distillation_weight=0 gives the teacher no weight: "
                "nothing would train. Raise distillation_weight, or give labelled rows."
            )
        labels = y[labelled]
        if labels.dtype == object:  # an object array because of the -1 marks: give the labels their own type
            labels = np.asarray(labels.tolist(), dtype=None if labels.size else own.dtype)
        known = set(own.tolist())
        unknown = sorted({label for label in labels.tolist() if label not in known}, key=str)
        if unknown:
            raise ValueError(
                f"y holds labels that the teacher does not predict: {unknown[:10]} (its classes_ are "
                f"{own.tolist()[:10]}); the teacher must know every class of y."
            )
        codes = np.full(n_samples, UNLABELLED, dtype=np.int64)
        if classes is None and reset and self.classes is None:
            classes = own  # the student predicts the teacher's classes, unless told others
        codes[labelled] = self._encode_labels(labels, len(labels), reset=reset, classes=classes)
        return codes

    def _training_targets(self, X, codes):
        if self.teacher is None:
            return super()._training_targets(X, codes)
        proba = teacher_probabilities(self.teacher, X, self.classes_, len(codes))
        return {LABEL: codes, TEACHER: soften(proba, self.temperature)}  # float64: see distillation_loss

    def get_loss(self, y_pred, y_true, X=None, training=False):
        if not isinstance(y_true, dict):
            return super().get_loss(y_pred, y_true, X=X, training=training)
        labels = torch.as_tensor(y_true[LABEL], device=y_pred.device)
        # cast where it lies (the CPU, for float64 probabilities), then moved: MPS cannot hold float64
        teacher = torch.as_tensor(y_true[TEACHER]).to(kl_dtype(y_pred.device)).to(y_pred.device)
        return distillation_loss(
            y_pred, labels, teacher, self.criterion_, self.temperature, self.distillation_weight
        )
