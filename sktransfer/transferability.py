"""Transferability scores: rank pretrained backbones and layers for a labelled task without training any.

Each score reads what one forward pass gives, with the target task's labels ``y``: :func:`logme_score`,
:func:`h_score` and :func:`gbc_score` the embeddings, :func:`leep_score` and :func:`nce_score` the outputs
of the network's own (source) classifier. Greater is more transferable for all five, so that their scorers
(:data:`logme_scorer`, :data:`h_score_scorer`, :data:`gbc_scorer`, :data:`leep_scorer`, :data:`nce_scorer`)
serve as the ``scoring`` of GridSearchCV over backbones, layers and weights. The computations run in float64,
vectorised over the classes (GBC's pairs of classes, over one class at a time), through one singular value
decomposition of the features for each embedding score and never through the inverse of a matrix. Labels may
be of any type, strings included; -1 is a class like any other here (where the library's estimators read it as
the mark of an unlabelled row): score the labelled rows only.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ._source_classifier_scores import leep_score, nce_score
from ._transferability_inputs import (
    RenormalizedProbabilitiesWarning,
    class_codes,
    label_codes,
    one_hot,
    rounding_noise,
    unit_scaled_features,
)
from ._transferability_linalg import (
    bhattacharyya_overlap,
    ledoit_wolf_shrinkage,
    log_evidence,
    principal_coordinates,
    spectral_projections,
)
from ._transferability_scorers import TransferabilityScorer, make_transferability_scorer

__all__ = [
    "RenormalizedProbabilitiesWarning",
    "gbc_score",
    "gbc_scorer",
    "h_score",
    "h_score_scorer",
    "leep_score",
    "leep_scorer",
    "logme_score",
    "logme_scorer",
    "make_transferability_scorer",
    "nce_score",
    "nce_scorer",
]

_FEATURES_AND_LABELS = {"features": ["array-like"], "y": ["array-like"]}
# The adjusted H-score's room above chance, as a share of its largest value, below which the features fit
# every labelling (up to rounding) and the score is 0.
_CHANCE_ROOM = 1e-12
# h_score leaves out the columns whose range is under this share of the widest column's: dead units.
_DEAD_COLUMN_SPREAD = 1e-6


@validate_params({**_FEATURES_AND_LABELS, "fit_intercept": ["boolean"]}, prefer_skip_nested_validation=True)
def logme_score(features, y, *, fit_intercept=True):
    """LogME: the log marginal evidence of a Bayesian linear model from the features to the labels.

    For each class, the one-vs-rest indicator of ``y`` is modelled as a linear function of the features
    with a Gaussian prior on the weights (precision alpha) and Gaussian noise (precision beta), and alpha and
    beta maximise the evidence (You et al. 2021). The score is the maximum log evidence per sample, averaged
    over the classes. It grows when the labels are a simple, low-noise linear function of the features, and
    does not change when the features are scaled, or (with ``fit_intercept``) shifted. One singular value
    decomposition of F serves every class and every value of alpha and beta; the maximisation
    itself is one-dimensional (the best beta for a given alpha / beta is explicit) and vectorised over the
    classes. It finds the fixed point of the paper's iteration, and also the maxima that lie at the edge,
    where that iteration crawls: when there are no more samples than features, the features fit every class
    exactly and the noise precision goes to infinity.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Embeddings of the target task's samples, e.g. from
        :class:`~sktransfer.PretrainedFeatureExtractor`.
    y : array-like of shape (n_samples,)
        Class labels, at least two classes.
    fit_intercept : bool, default=True
        Give each linear model an intercept of flat prior: features and indicators are centred, and the
        evidence is that of the n - 1 dimensions left. The paper's model has none, so that the features'
        common offset has to fit the indicators' mean, 1 / n_classes: features far from the origin get a
        free intercept and features near it pay for one: a bias in favour of networks whose features lie
        far from the origin, as randomly initialised ones often do (on Rotten Tomatoes reviews, the mean of
        a randomly initialised MiniLM's mean-pooled features is 4.7 times as far from the origin as the
        rows' spread around it; for the pretrained MiniLM's last layer, 0.45 times), and a score that
        changes when the features are centred, as a ``StandardScaler`` before the scorer does. ``False``:
        the paper's LogME.

    Returns
    -------
    score : float
        Mean log evidence per sample (per remaining dimension with ``fit_intercept``); greater is better.
        Compare it between candidates on the same samples.

    Notes
    -----
    The score is the mean over the classes of each indicator's evidence, which follows the log of its
    residual variance: a class that one network separates much better from the rest raises its score
    more than a better fit of the classes that both separate loosely, although those make most of a
    classifier's errors. On Rotten Tomatoes fresh / rotten / synopsis texts, a randomly initialised MiniLM
    scores above the pretrained one at the last layer (``benchmarks/RESULTS.md``): both fit the fresh and
    rotten indicators equally loosely (one-vs-rest LogME -0.55 each), the random network fits the synopsis
    indicator better (0.15 against -0.23), and the pretrained one's linear probe is still the more accurate
    (0.75 against 0.70). The one-vs-rest scores, ``logme_score(features, y == label)`` for each label, show
    which classes drive a ranking.

    References
    ----------
    .. [1] K. You, Y. Liu, J. Wang and M. Long, "LogME: Practical Assessment of Pre-trained Models for
       Transfer Learning", ICML 2021.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat(["cat", "dog", "fox"], 20)
    >>> centres = rng.normal(size=(3, 8))
    >>> separable = centres[np.repeat([0, 1, 2], 20)] + 0.3 * rng.normal(size=(60, 8))
    >>> noise = rng.normal(size=(60, 8))
    >>> bool(logme_score(separable, y) > logme_score(noise, y))
    True
    """
    values, features = features, unit_scaled_features(features, "features")
    noise = rounding_noise(values, features)
    codes, n_classes = class_codes(y, len(features), "features")
    indicators, dimensions = one_hot(codes, n_classes), len(features)
    if fit_intercept:  # the flat-prior intercept integrated out: what is left lies orthogonal to the ones
        features, indicators = features - features.mean(axis=0), indicators - indicators.mean(axis=0)
        dimensions -= 1
    sigma, projected2, left_out = spectral_projections(features, indicators, noise)
    return float(np.mean(log_evidence(sigma, projected2, left_out, dimensions)))


@validate_params(
    {
        **_FEATURES_AND_LABELS,
        "shrinkage": [StrOptions({"ledoit_wolf"}), Interval(Real, 0, 1, closed="both"), None],
        "adjusted": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def h_score(features, y, *, shrinkage="ledoit_wolf", adjusted=True):
    """H-score: how much of the features' variance lies between the classes, in the features' own metric.

    ``tr(cov(f)^-1 cov(E[f | y]))`` (Bao et al. 2019), the sum of the squared canonical correlations
    between the features and the one-hot labels. With ``shrinkage=None``, as in the paper, ``cov(f)^-1`` is
    the pseudo-inverse and the score lies between 0 and ``n_classes - 1``; but whenever the features have at
    least as many dimensions as samples it is ``n_classes - 1`` whatever they are. The default shrinkage is
    the regularised H-score of Ibrahim et al. (2022): ``tr(cov_s(f)^-1 (1 - s) cov(E[f | y]))``, with
    ``cov_s(f)`` shrunk towards a multiple of the identity by the Ledoit-Wolf amount ``s``; it also lies
    between 0 and ``n_classes - 1``.

    Even so, the class means of a few samples lie apart by chance, the more so the more directions the
    features vary in: labels drawn at random give wide features a high H-score. By default the score is
    adjusted for chance, as the adjusted Rand index adjusts the Rand index: ``(H - E) / (n_classes - 1 - E)``,
    with ``E`` the exact mean of ``H`` over every permutation of ``y`` (the shrinkage does not depend on the
    labels): ``E = (n_classes - 1) / (n_samples - 1) * sum_i w_i``, where ``w_i`` is the weight that the
    shrunk inverse covariance gives the i-th principal direction (1 without shrinkage), so that ``sum_i w_i``
    counts the directions the features effectively vary in. The adjusted score is at most 1 (1 for classes told
    apart perfectly, without shrinkage) and 0, on average, for labels unrelated to the features; it is 0
    where the features fit every labelling (``shrinkage=None`` and as many dimensions as samples). Its
    spread over random labels grows as the room above chance, ``n_classes - 1 - E``, shrinks: without
    shrinkage and with nearly as many dimensions as samples it can lie far below 0; the default shrinkage
    keeps the room wide. In
    ``benchmarks/bench_transferability.py`` the adjustment is what makes the H-score rank layers of different
    widths and random-weights networks at all. Neither score changes when the features are scaled or
    shifted, or when constant columns (units dead on every sample) are added: they carry no information, and
    are left out, since they would lower the mean variance ``mu`` the shrinkage aims at and so raise the
    score. A column counts as constant when its range is under a millionth of the widest column's (float32
    rounding noise); features that are all constant score 0.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Embeddings of the target task's samples.
    y : array-like of shape (n_samples,)
        Class labels, at least two classes.
    shrinkage : "ledoit_wolf", float in [0, 1] or None, default="ledoit_wolf"
        ``s``, the weight of the identity in the shrunk covariance ``cov_s(f) = (1 - s) cov(f) + s mu I``
        (``mu`` the mean variance): Ledoit and Wolf's estimate, or a given value. ``None`` or 0: the
        pseudo-inverse of ``cov(f)``, directions of (numerically) no variance left out.
    adjusted : bool, default=True
        Adjust the score for chance, as above. ``False``: the papers' H-score.

    Returns
    -------
    score : float
        Greater is better: at most 1 adjusted (below 0 when the classes lie less apart than chance would
        put them), between 0 and ``n_classes - 1`` not adjusted.

    References
    ----------
    .. [1] Y. Bao, Y. Li, S.-L. Huang, L. Zhang, L. Zheng, A. Zamir and L. Guibas, "An Information-Theoretic
       Approach to Transferability in Task Transfer Learning", ICIP 2019.
    .. [2] S. Ibrahim, N. Ponomareva and R. Mazumder, "Newer is not always better: Rethinking
       transferability metrics, their peculiarities, stability and performance", ECML PKDD 2022.
    .. [3] L. Hubert and P. Arabie, "Comparing partitions", Journal of Classification 2, 1985 (the
       adjustment for chance).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 30)
    >>> separable = np.c_[y + 0.2 * rng.normal(size=60), rng.normal(size=60)]
    >>> round(h_score(separable, y, adjusted=False), 2), round(h_score(separable, y), 2)
    (0.67, 0.66)
    >>> noise = rng.normal(size=(60, 40))  # 40 directions of chance separation, without shrinkage
    >>> round(h_score(noise, y, shrinkage=None, adjusted=False), 2), round(h_score(noise, y, shrinkage=None), 2)
    (0.69, 0.04)
    """
    values, features = features, unit_scaled_features(features, "features")
    codes, n_classes = class_codes(y, len(features), "features")
    # A constant column (a unit dead on every sample; or varying by rounding noise, below float32's resolution
    # of the widest column) would only lower the mean variance the shrinkage aims at.
    spread = np.ptp(features, axis=0)
    varying = spread > _DEAD_COLUMN_SPREAD * spread.max()
    if not varying.any():  # nothing varies: no direction tells the classes apart
        return 0.0
    features = features[:, varying]
    noise = rounding_noise(values, features)
    centred = features - features.mean(axis=0)
    indicators = one_hot(codes, n_classes)
    # sigma: n_samples times the eigenvalues of cov(f); H = sum over classes k and directions i of
    # weight_i (u_i^T 1_k)^2 / n_k, each weight the direction's eigenvalue, shrunk, over its shrunk covariance.
    sigma, projected2, _ = spectral_projections(centred, indicators, noise)
    if shrinkage == "ledoit_wolf":
        shrinkage = ledoit_wolf_shrinkage(centred, sigma)
    shrinkage = shrinkage or 0.0
    kept = (1 - shrinkage) * sigma
    mean_variance = np.sum(centred**2) / centred.shape[1]  # n_samples times the mean variance, as sigma
    shrunk = kept + shrinkage * mean_variance
    weights = kept / shrunk
    score = float(np.sum(weights[:, None] * projected2 / indicators.sum(axis=0)))
    if not adjusted:
        return score
    # Each u_i is a unit vector orthogonal to the ones; over the permutations of y, (u_i^T 1_k)^2 / n_k
    # averages (n - n_k) / (n (n - 1)), and so H averages (n_classes - 1) / (n - 1) * sum_i weight_i. The
    # room above it, n_classes - 1 minus that, is summed from its non-negative parts (the n - 1 directions
    # orthogonal to the ones that the features leave out, and 1 - weight_i for those they keep), not
    # subtracted, so that it stays exact when the shrinkage is tiny.
    scale = (n_classes - 1) / (len(features) - 1)
    chance = scale * float(np.sum(weights))
    left_out = max(len(features) - 1 - len(weights), 0)
    room = scale * (left_out + float(np.sum(shrinkage * mean_variance / shrunk)))
    return 0.0 if room <= _CHANCE_ROOM * (n_classes - 1) else (score - chance) / room


@validate_params(
    {
        **_FEATURES_AND_LABELS,
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "covariance_type": [StrOptions({"spherical", "diag"})],
    },
    prefer_skip_nested_validation=True,
)
def gbc_score(features, y, *, n_components=64, covariance_type="spherical"):
    """GBC: minus how much the classes' Gaussians overlap in the features' leading principal components.

    The features are reduced to their ``n_components`` leading principal components; each class is
    modelled there as a Gaussian of its own mean and (spherical or diagonal) covariance, and the Gaussian
    Bhattacharyya Coefficient (Pándy et al. 2022) is minus the sum, over every ordered pair of classes, of
    their Bhattacharyya coefficient ``exp(-D_B)``, the overlap of their densities: 0 for classes that do not
    overlap at all, ``-n_classes (n_classes - 1)`` for classes that cannot be told apart. Unlike LogME and
    H-score, it asks whether the classes lie apart, not whether the one-hot labels are a linear function of
    the features (``benchmarks/RESULTS.md`` compares the scores on images and on a sentence encoder). It does
    not change when the features are scaled, shifted or rotated, and costs one eigendecomposition.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Embeddings of the target task's samples, at least two of each class.
    y : array-like of shape (n_samples,)
        Class labels, at least two classes.
    n_components : int or None, default=64
        The number of principal components kept, as in the paper (fewer when the features span fewer
        directions); None keeps all of them.
    covariance_type : {"spherical", "diag"}, default="spherical"
        Each class's covariance in the principal components, named as in sklearn's ``GaussianMixture``: the
        mean of its variances along them times the identity (the published code's default), or its variance
        along each of them, which needs more rows per class to estimate. The distance between spherical
        Gaussians is the paper's formula for them, in which the variance term counts once per component;
        the published code counts it once in all, and floors each variance at 1e-4, which depends on the
        features' scale, where this floor is relative to their variance.

    Returns
    -------
    score : float
        Between ``-n_classes (n_classes - 1)`` and 0; greater is better.

    References
    ----------
    .. [1] M. Pándy, A. Agostinelli, J. Uijlings, V. Ferrari and T. Mensink, "Transferability Estimation
       using Bhattacharyya Class Separability", CVPR 2022.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat(["cat", "dog"], 30)
    >>> apart = np.c_[3 * (y == "cat") + rng.normal(size=60), rng.normal(size=60)]
    >>> round(gbc_score(apart, y), 2), round(gbc_score(rng.normal(size=(60, 2)), y), 2)
    (-0.77, -1.97)
    """
    values, features = features, unit_scaled_features(features, "features")
    codes, n_classes = class_codes(y, len(features), "features")
    counts = np.bincount(codes, minlength=n_classes)
    if counts.min() < 2:
        label = label_codes(y, "y")[1].tolist()[counts.argmin()]
        raise ValueError(
            f"gbc_score fits a Gaussian to each class, and class {label!r} has a single row of features: give "
            "at least two rows of each class. (GridSearchCV splits the rows of a transformer, such as "
            "PretrainedFeatureExtractor, into folds without stratifying them: pass "
            "cv=StratifiedKFold(5, shuffle=True, random_state=0).)"
        )
    noise = rounding_noise(values, features)
    coordinates = principal_coordinates(features - features.mean(axis=0), n_components, noise)
    if coordinates.shape[1] == 0:  # constant features tell no class apart from any other
        return float(-n_classes * (n_classes - 1))
    indicators = one_hot(codes, n_classes)
    means = indicators.T @ coordinates / counts[:, None]
    variances = indicators.T @ (coordinates - means[codes]) ** 2 / counts[:, None]
    if covariance_type == "spherical":
        variances = np.broadcast_to(variances.mean(axis=1, keepdims=True), variances.shape)
    # A class that is one point in some direction has no variance there: floor it far below the features'.
    floor = np.finfo(np.float64).eps * max(np.mean(coordinates**2), np.finfo(np.float64).tiny)
    return float(-bhattacharyya_overlap(means, np.maximum(variances, floor)))


# Its name here before it had a module of its own, where searches pickled then look for it.
_TransferabilityScorer = TransferabilityScorer

logme_scorer = TransferabilityScorer(logme_score, "logme_scorer", {})
h_score_scorer = TransferabilityScorer(h_score, "h_score_scorer", {})
gbc_scorer = TransferabilityScorer(gbc_score, "gbc_scorer", {})
leep_scorer = TransferabilityScorer(leep_score, "leep_scorer", {})
nce_scorer = TransferabilityScorer(nce_score, "nce_scorer", {})
