"""The transferability scores that read a network's own (source) classifier: LEEP and NCE."""

import numpy as np
from sklearn.utils._param_validation import validate_params

from ._transferability_inputs import class_codes, hard_predictions, one_hot, source_probabilities

_OUTPUT_AND_LABELS = {"source_output": ["array-like"], "y": ["array-like"]}


@validate_params(_OUTPUT_AND_LABELS, prefer_skip_nested_validation=True)
def leep_score(source_output, y):
    """LEEP: the log-likelihood of the labels under the source classifier followed by its best relabelling.

    The empirical joint distribution of the target labels and the source classes, weighted by the source
    probabilities, gives p(y | source class); each sample's "expected empirical prediction" is
    ``sum_z p(y | z) p(z | x)``, and LEEP (Nguyen et al. 2020) is the mean log of it at the true label. It
    needs a network that keeps its source classifier, such as the offline EfficientNet-Lite0 and its
    ImageNet head (``PretrainedFeatureExtractor(layer="classifier")``).

    Parameters
    ----------
    source_output : array-like of shape (n_samples, n_source_classes)
        The source classifier's output for each target sample. A matrix whose entries all lie in [0, 1] (give
        or take 1e-6 of rounding, clipped) is read as probabilities and each row renormalised to sum to 1
        (rounded, truncated or bfloat16 probabilities miss it; a warning says so beyond 0.05); any other, or
        one of zeros only, is read as logits and turned into probabilities by a softmax over each row. Logits
        that happen to lie in [0, 1] would be read as probabilities: shift them, ``logits - logits.max(axis=1,
        keepdims=True)``, which changes no softmax. For a binary source classifier with one logit ``l``, pass
        ``np.column_stack([np.zeros_like(l), l])``.
    y : array-like of shape (n_samples,)
        Target class labels, at least two classes.

    Returns
    -------
    score : float
        A mean log-probability, at most 0; greater is better.

    References
    ----------
    .. [1] C. V. Nguyen, T. Hassner, M. Seeger and C. Archambeau, "LEEP: A New Measure to Evaluate
       Transferability of Learned Representations", ICML 2020.

    Examples
    --------
    Source logits that tell the two target classes apart against logits that do not:

    >>> import numpy as np
    >>> y = np.array(["cat", "cat", "dog", "dog"])
    >>> telling = np.array([[4.0, 0.0, 0.0], [3.0, 1.0, 0.0], [0.0, 0.0, 5.0], [0.0, 1.0, 4.0]])
    >>> round(leep_score(telling, y), 3), round(leep_score(np.zeros((4, 3)), y), 3)
    (-0.062, -0.693)
    """
    probabilities = source_probabilities(source_output)
    codes, n_classes = class_codes(y, len(probabilities), "source_output")
    joint = one_hot(codes, n_classes).T @ probabilities  # (n_classes, n_source_classes), n times p(y, z)
    source_mass = joint.sum(axis=0)
    conditional = np.divide(joint, source_mass, out=np.zeros_like(joint), where=source_mass > 0)
    expected = np.einsum("iz,iz->i", probabilities, conditional[codes])
    return float(np.mean(np.log(np.maximum(expected, np.finfo(np.float64).tiny))))


@validate_params(_OUTPUT_AND_LABELS, prefer_skip_nested_validation=True)
def nce_score(source_output, y):
    """NCE: minus the conditional entropy of the target labels given the source classifier's predictions.

    ``-H(Y | Z)`` of the empirical joint distribution of the target labels ``Y`` and the source classes
    ``Z`` that the source classifier predicts (Tran et al. 2019): 0 when each predicted source class
    determines the target label, ``-H(Y)`` when the predictions say nothing about it.

    Parameters
    ----------
    source_output : array-like of shape (n_samples,) or (n_samples, n_source_classes)
        The source classifier's predicted class of each target sample (labels of any type), or its
        probabilities or logits, whose largest entry in each row is the prediction.
    y : array-like of shape (n_samples,)
        Target class labels, at least two classes.

    Returns
    -------
    score : float
        At most 0; greater is better.

    References
    ----------
    .. [1] A. T. Tran, C. V. Nguyen and T. Hassner, "Transferability and Hardness of Supervised
       Classification Tasks", ICCV 2019.

    Examples
    --------
    >>> import numpy as np
    >>> y = ["cat", "cat", "dog", "dog"]
    >>> nce_score(["tabby", "siamese", "beagle", "beagle"], y)
    0.0
    >>> round(nce_score(["tabby", "beagle", "tabby", "beagle"], y), 3)  # -log(2)
    -0.693
    """
    predicted = hard_predictions(source_output)
    codes, n_classes = class_codes(y, len(predicted), "source_output")
    joint = np.bincount(predicted * n_classes + codes, minlength=(predicted.max() + 1) * n_classes)
    joint = joint.reshape(-1, n_classes) / len(codes)
    source_mass = np.broadcast_to(joint.sum(axis=1, keepdims=True), joint.shape)
    seen = joint > 0
    return float(np.sum(joint[seen] * np.log(joint[seen] / source_mass[seen])))
