"""Scorers that compare each target row with its neighbours: soft neighbourhood density and consistency."""

from numbers import Integral, Real

import numpy as np
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_scalar

from .._vectors import unit_rows
from ._domain_scorer import _DomainScorer, _rows
from ._scored_outputs import _features_and_outputs


def _neighbourhood_entropies(points, temperature):
    """Entropy of each row's softmax over its cosine similarities to the other rows, divided by temperature.

    Rows are taken a block at a time, so that memory stays near 2**22 similarities whatever the row count.
    """
    unit = unit_rows(points)
    entropies = np.empty(len(unit))
    block = max(1, 2**22 // len(unit))
    for start in range(0, len(unit), block):
        logits = unit[start : start + block] @ unit.T / temperature
        rows = np.arange(len(logits))
        logits[rows, start + rows] = -np.inf  # a row is not its own neighbour
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        logits[rows, start + rows] = 0.0  # its odds are 0: keep 0 * -inf out of the sum below
        total = odds.sum(axis=1)
        # -sum p log p with p = odds / total and log p = logits - log(total)
        entropies[start : start + block] = np.log(total) - np.sum(odds * logits, axis=1) / total
    return entropies


class _SoftNeighborhoodDensityScorer(_DomainScorer):
    """The mean entropy of the target rows' soft neighbourhoods in the space of predictions (SND).

    Soft Neighborhood Density (Saito et al. 2021): the class probabilities (``predict_proba``) of the
    target rows are scaled to unit length; each row's cosine similarities to the other target rows, divided
    by a temperature of 0.05, go through a softmax, and the score is the mean entropy of these neighbourhood
    distributions. A row whose prediction many other rows share has a spread-out, high-entropy
    neighbourhood: greater is better, and it rewards target predictions that form dense clusters.
    Call it as ``soft_neighborhood_density_scorer(estimator, X, y=None, sample_domain=None)``, or give it
    as ``scoring``; it needs at least two target rows. To use another temperature, set ``temperature`` on a
    copy (``copy.copy(soft_neighborhood_density_scorer)``). It compares every pair of target rows: its
    memory stays bounded, but its time grows with the square of their number, for each candidate and fold
    of a search.

    The score lies between 0 and log(n_target - 1): compare candidates on the same rows, as GridSearchCV
    does. It grows with the size of the clusters, not with their correctness: a model that gives every
    target row the same prediction scores the most, and among confident models, one that puts most target
    rows in few classes beats one that spreads them over the classes. Rule out collapsed models, e.g. by
    their source accuracy, and prefer it for tuning one adaptation method with many classes, the setting of
    the paper; on problems with a few classes it can rank models worse than ``prediction_entropy_scorer``.

    References
    ----------
    .. [1] K. Saito, D. Kim, P. Teterwak, S. Sclaroff, T. Darrell and K. Saenko, "Tune it the Right Way:
       Unsupervised Validation of Domain Adaptation via Soft Neighborhood Density", ICCV 2021.

    Examples
    --------
    Two target clusters of three rows, predicted confidently: each row's neighbourhood is, almost
    uniformly, the two other rows of its cluster, of entropy log(2).

    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0], [1.0], [4.0], [5.0], [0.0], [0.2], [0.4], [4.6], [4.8], [5.0]])
    >>> clf = LogisticRegression(C=100).fit(X[:4], [0, 0, 1, 1])
    >>> score = soft_neighborhood_density_scorer(clf, X, [0, 0, 1, 1, -1, -1, -1, -1, -1, -1])
    >>> round(score, 4), round(float(np.log(2)), 4)
    (0.6931, 0.6931)
    """

    _name = "soft_neighborhood_density_scorer"

    def __init__(self, temperature=0.05):
        super().__init__()
        self.temperature = temperature

    def _score(self, estimator, X, y, target):
        if target.sum() < 2:
            raise ValueError(
                f"{self._name} needs at least two target rows: it compares each one with the others."
            )
        temperature = check_scalar(
            self.temperature, "temperature", Real, min_val=0, include_boundaries="neither"
        )
        if not np.isfinite(temperature):
            raise ValueError(f"temperature == {temperature}, must be a finite number above 0.")
        proba = estimator.predict_proba(_rows(X, target))
        return float(np.mean(_neighbourhood_entropies(proba, temperature)))


class _NeighborhoodConsistencyScorer(_DomainScorer):
    """How often the target rows' nearest neighbours share their predicted class, beyond chance.

    Each target row's ``n_neighbors`` nearest other target rows (Euclidean distance, in the features the
    estimator classifies: its ``embed`` output, such as DomainAdaptedClassifier's bottleneck, or the
    features a Pipeline's last step reads) are compared with it by their predicted classes (``predict``).
    The observed share of neighbours that agree, ``p_o``, is corrected for the agreement that the predicted
    class frequencies alone would give, ``p_e = sum_c share_c ** 2``, as Cohen's kappa corrects it:
    ``(p_o - p_e) / (1 - p_e)``. It is 1 when every neighbourhood is one class, about 0 when the predictions
    are unrelated to the neighbourhoods, and 0 when every target row gets the same class.

    It rewards predictions that follow the clusters of the target rows in the model's own features (the
    cluster assumption of domain adaptation): a local counterpart of the validators that cluster the target
    features and compare the clusters with the predictions (Musgrave et al. 2022). Prediction entropy and
    information maximization only see how confident the predictions are, and a model can be confident about
    rows its features do not group. It needs no ``predict_proba``. Tune one method's hyper-parameters with
    it: it compares models in their own feature spaces, so across methods, where some (MCC, self-training)
    sharpen the features around their own predictions, ``information_maximization_scorer`` ranked better
    on the benchmark. ``benchmarks/RESULTS.md`` ("choosing without target labels") gives both rankings.
    Call it as ``neighborhood_consistency_scorer(estimator, X, y=None, sample_domain=None)``, or give it as
    ``scoring``; it needs at least two target rows. To use another ``n_neighbors`` (default 10, or one
    fewer than the target rows when they are fewer), set it on a copy
    (``copy.copy(neighborhood_consistency_scorer)``). Its cost grows with the square of the target rows.

    References
    ----------
    .. [1] K. Musgrave, S. Belongie and S.-N. Lim, "Three New Validators and a Large-Scale Benchmark Ranking
       for Unsupervised Domain Adaptation", arXiv:2208.07360, 2022.
    .. [2] J. Cohen, "A Coefficient of Agreement for Nominal Scales", Educational and Psychological
       Measurement 20(1), 1960.

    Examples
    --------
    Two target clusters: a model whose boundary runs between them agrees with every neighbourhood, one whose
    boundary cuts through them does not.

    >>> import copy
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0], [0.1], [0.2], [0.3], [5.0], [5.1], [5.2], [5.3]])
    >>> y = [-1] * 8
    >>> between = LogisticRegression().fit([[0.0], [5.0]], [0, 1])
    >>> through = LogisticRegression().fit([[0.0], [0.3]], [0, 1])
    >>> scorer = copy.copy(neighborhood_consistency_scorer)
    >>> scorer.n_neighbors = 3
    >>> scorer(between, X, y), round(scorer(through, X, y), 2)
    (1.0, 0.11)
    """

    _name = "neighborhood_consistency_scorer"

    def __init__(self, n_neighbors=10):
        super().__init__()
        self.n_neighbors = n_neighbors

    def _score(self, estimator, X, y, target):
        n_target = int(target.sum())
        if n_target < 2:
            raise ValueError(
                f"{self._name} needs at least two target rows: it compares each one with its neighbours."
            )
        n_neighbors = min(check_scalar(self.n_neighbors, "n_neighbors", Integral, min_val=1), n_target - 1)
        rows = _rows(X, target)
        every_row = np.ones(n_target, dtype=bool)
        features, predicted = _features_and_outputs(estimator, rows, every_row, "predict", self._name)
        _, predicted = np.unique(np.asarray(predicted), return_inverse=True)
        # Without a query, kneighbors leaves each row out of its own neighbours.
        neighbours = NearestNeighbors(n_neighbors=n_neighbors).fit(features).kneighbors(return_distance=False)
        observed = float(np.mean(predicted[neighbours] == predicted[:, None]))
        chance = float(np.sum((np.bincount(predicted) / n_target) ** 2))
        if chance == 1.0:  # every target row in one class: nothing agrees beyond chance
            return 0.0
        return (observed - chance) / (1.0 - chance)


soft_neighborhood_density_scorer = _SoftNeighborhoodDensityScorer()
neighborhood_consistency_scorer = _NeighborhoodConsistencyScorer()
