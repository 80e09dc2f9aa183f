"""Checks on what a TransferClassifier is given (criterion, classes, weights) and the probabilities it gives."""

import inspect
import warnings

import numpy as np
import torch
from torch import nn

from ._network import NORM_LAYERS, BackboneWithHead, is_bias
from ._stacklevel import caller_stacklevel
from ._unused_settings import IgnoredSettingWarning


def softmax_over_classes(logits):
    """The probabilities that one row of logits per sample gives (``predict_nonlinearity="auto"``)."""
    return torch.softmax(logits, dim=-1)


def is_cross_entropy(criterion):
    """Whether ``criterion`` is a class of cross entropy that the library builds with ``label_smoothing``.

    A subclass whose ``__init__`` takes no ``label_smoothing`` (a focal loss, say) is built as written; an
    instance is the user's own, its smoothing theirs.

    Examples
    --------
    >>> class Focal(nn.CrossEntropyLoss):
    ...     def __init__(self, gamma=2.0):
    ...         super().__init__(reduction="none")
    >>> is_cross_entropy(nn.CrossEntropyLoss), is_cross_entropy(Focal), is_cross_entropy(nn.CrossEntropyLoss())
    (True, False, False)
    """
    if not (isinstance(criterion, type) and issubclass(criterion, nn.CrossEntropyLoss)):
        return False
    parameters = inspect.signature(criterion).parameters.values()
    return any(p.name == "label_smoothing" or p.kind is p.VAR_KEYWORD for p in parameters)


def refuse_log_probability_loss(criterion, module):
    """Raise for NLLLoss (skorch's default) on the library's network, whose head gives logits.

    On logits the negative log-likelihood falls without bound: training diverged, and the error blamed the
    learning rate.
    """
    reads_log_probabilities = isinstance(criterion, type) and issubclass(criterion, nn.NLLLoss)
    if reads_log_probabilities and isinstance(module, type) and issubclass(module, BackboneWithHead):
        raise ValueError(
            f"criterion={criterion.__name__} reads log-probabilities, but the network's head gives logits, on "
            "which its loss falls without bound: use torch.nn.CrossEntropyLoss (the default, NLLLoss after a "
            "log-softmax)."
        )


def checked_probabilities(proba):
    """The network's probabilities in float64, each row summing to 1; raises if a row is not probabilities.

    Rows are rescaled to sum to exactly 1 (bfloat16 leaves them a little off); a value that is not finite, a
    negative one or a row of zeros raises, naming the samples.
    """
    proba = proba.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(proba).all(axis=1))
    if bad.size:
        raise FloatingPointError(
            f"the network's outputs are not finite for samples {bad[:10].tolist()}; the weights may have "
            "diverged during training (refit with a smaller lr or precision='float32')."
        )
    sums = proba.sum(axis=1, keepdims=True)
    bad = np.flatnonzero((proba < 0).any(axis=1) | (sums[:, 0] <= 0))
    if bad.size:
        raise ValueError(
            f"the network's outputs for samples {bad[:10].tolist()} are not probabilities (negative, or all "
            "zero) once predict_nonlinearity has run: it must map each row of logits to probabilities, as "
            "its default 'auto' (a softmax) does."
        )
    return proba / sums


def refuse_sample_weight(fit_params, estimator_name):
    """Drop ``sample_weight=None``; raise for weights, which skorch would pass to the network's forward."""
    if fit_params.get("sample_weight") is None:
        fit_params.pop("sample_weight", None)  # as scikit-learn's meta-estimators pass it
    else:
        raise TypeError(
            f"sample_weight: {estimator_name} does not weigh rows in its loss (further arguments of fit go "
            "to the network's forward, as in skorch). To weigh classes, pass criterion__weight=torch.tensor"
            "([...]) with one weight per class in the order of classes_; to weigh rows, repeat them."
        )


def sorted_classes(classes):
    """``classes`` sorted, as every scikit-learn classifier's ``classes_`` (and ``predict_proba``'s columns) are.

    Scorers such as ``neg_log_loss`` and ``roc_auc_ovr`` read the columns in the sorted order of the labels;
    in the order given, they would score the wrong class's probability.

    Examples
    --------
    >>> sorted_classes(["c", "a", "b"]).tolist()
    ['a', 'b', 'c']
    """
    given = np.asarray(classes)
    ordered = np.unique(given)
    if len(ordered) != len(given):
        repeated = [label for label in ordered.tolist() if np.sum(given == label) > 1]
        raise ValueError(f"classes names {repeated[:10]} more than once: give each class once.")
    return ordered


def same_classes(classes, fitted):
    """Whether ``classes`` names the ``fitted`` classes, in any order.

    Examples
    --------
    >>> same_classes(["b", "a"], np.array(["a", "b"])), same_classes(["a", "z"], np.array(["a", "b"]))
    (True, False)
    """
    classes, fitted = np.unique(np.asarray(classes)), np.unique(np.asarray(fitted))
    return classes.shape == fitted.shape and bool(np.all(classes == fitted))


def warn_of_frozen_parameters(network, strategy, estimator_name):
    """Warn when ``network`` (a user's module) has parameters it froze and ``strategy`` will train them.

    The strategy decides what trains, on the library's copy of the module: its ``requires_grad`` flags are
    set again, so that parameters the user froze would train without a word.

    Examples
    --------
    >>> import warnings
    >>> from torch import nn
    >>> network = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    >>> _ = network[0].requires_grad_(False)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_of_frozen_parameters(network, "full", "FineTuneClassifier")
    >>> str(caught[0].message)[:72]
    "FineTuneClassifier: model holds 2 parameters with requires_grad=False ('"
    """
    frozen = [
        f"{owner}.{name}" if owner else name
        for owner, layer in network.named_modules()
        for name, parameter in layer.named_parameters(recurse=False)
        if not parameter.requires_grad
        and (strategy != "bitfit" or is_bias(name) or isinstance(layer, NORM_LAYERS))  # what bitfit trains
    ]
    if frozen and strategy not in ("linear_probe", "lora"):
        warnings.warn(
            f"{estimator_name}: model holds {len(frozen)} parameters with requires_grad=False "
            f"({', '.join(map(repr, frozen[:3]))}{', ...' if len(frozen) > 3 else ''}), but strategy="
            f"{strategy!r} decides what trains, and trains them too. Use strategy='linear_probe' to keep the "
            "backbone fixed; 'gradual' and 'lp_ft' train its top stages first.",
            IgnoredSettingWarning,
            stacklevel=caller_stacklevel(),
        )
