"""Model selection without target labels: scorers for the ``scoring`` of GridSearchCV and cross_validate.

Each reads the target rows of a validation fold: rows with ``y == -1``, or with a negative ``sample_domain``;
the importance-weighted ones also read its labelled source rows. They are scorer objects that request
``sample_domain`` as score metadata, so that with metadata routing enabled, GridSearchCV and cross_validate
hand each one its fold's slice of it; without routing, ``y == -1`` marks the target rows. Greater is better,
as GridSearchCV expects.
"""

from numbers import Integral, Real

import numpy as np
from sklearn import get_config
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import Pipeline
from sklearn.utils import check_consistent_length, check_scalar
from sklearn.utils.metadata_routing import UNCHANGED, MetadataRequest

from .._labels import UNLABELLED, label_array, missing_labels, unlabelled_mask
from .density_ratio import source_density_ratios
from .domains import checked_sample_domain
from .shallow import EstimatorOnTargetFeaturesMixin


class _DomainScorer:
    """A label-free scorer, ``scorer(estimator, X, y=None, sample_domain=None)``, that consumes ``sample_domain``.

    Routing asks a consumer for nothing but ``get_metadata_routing``, so this class builds its request on
    the public ``MetadataRequest`` instead of subclassing sklearn's private ``_BaseScorer``, whose
    ``score_func(y_true, y_pred)`` shape does not fit a score that reads the estimator itself.
    """

    _name = None

    def __init__(self):
        self._sample_domain_request = True

    def __repr__(self):
        return self._name

    def __call__(self, estimator, X, y=None, sample_domain=None):
        """Score ``estimator`` on the target rows of ``X``.

        Parameters
        ----------
        estimator : fitted classifier
        X : images or array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or None
            Labels; -1 marks a target row.
        sample_domain : array-like of shape (n_samples,) or None
            Positive for source rows, negative for target rows.

        Returns
        -------
        score : float
            Greater is better.
        """
        check_consistent_length(X, y, sample_domain)
        target = np.zeros(len(X), dtype=bool) if y is None else unlabelled_mask(label_array(y))
        if sample_domain is not None:
            target |= checked_sample_domain(sample_domain, len(X)) < 0
        classes = getattr(estimator, "classes_", None)
        if classes is not None and UNLABELLED in np.asarray(classes).tolist():
            raise ValueError(
                f"{self._name} scores an estimator whose classes_ hold -1, the label the library reserves for "
                "target rows: fitted with the target rows as a class -1, its confident predictions of -1 on "
                "them would win a search. Fit an estimator that reads y == -1 as target rows "
                "(DomainAdaptedClassifier, FeatureAlignmentClassifier, ImportanceWeightingClassifier), or "
                "recode a class named -1."
            )
        if not target.any():
            raise ValueError(
                f"{self._name} received no target row: mark target rows with y == -1 or with a negative "
                "sample_domain. GridSearchCV and cross_validate pass sample_domain to the scorer only under "
                "metadata routing (sklearn.set_config(enable_metadata_routing=True)), given with the fit "
                "parameters."
            )
        return self._score(estimator, X, y, target)

    def set_score_request(self, *, sample_domain=UNCHANGED):
        """Say whether GridSearchCV and cross_validate should pass ``sample_domain`` to this scorer.

        Needs metadata routing enabled, as sklearn's scorers do. By default the scorer requests
        ``sample_domain``. The scorers are module-level objects shared by every caller: to give one search
        a request of its own, set it on a copy (``copy.copy(prediction_entropy_scorer)``).

        Parameters
        ----------
        sample_domain : bool, None or str, default=UNCHANGED
            True: pass it; False: do not; None: raise if it is given; a str: pass the metadata given under
            that name as ``sample_domain``.

        Returns
        -------
        self : object
            The scorer, with its request updated.

        Examples
        --------
        >>> import copy
        >>> import sklearn
        >>> with sklearn.config_context(enable_metadata_routing=True):
        ...     scorer = copy.copy(prediction_entropy_scorer).set_score_request(sample_domain="domains")
        >>> scorer.get_metadata_routing().score.requests
        {'sample_domain': 'domains'}
        """
        if not get_config()["enable_metadata_routing"]:
            raise RuntimeError(
                "set_score_request is only available when metadata routing is enabled: "
                "sklearn.set_config(enable_metadata_routing=True)."
            )
        if sample_domain is not UNCHANGED:
            self._request(sample_domain)  # refuses an invalid alias now rather than during a search
            self._sample_domain_request = sample_domain
        return self

    def get_metadata_routing(self):
        """The metadata this scorer consumes: ``sample_domain``, for ``score``.

        Returns
        -------
        request : sklearn.utils.metadata_routing.MetadataRequest
        """
        return self._request(self._sample_domain_request)

    def _request(self, alias):
        request = MetadataRequest(owner=self._name)
        request.score.add_request(param="sample_domain", alias=alias)
        return request


def _rows(X, mask):
    return [X[i] for i in np.flatnonzero(mask)] if isinstance(X, list | tuple) else X[mask]


class _PredictionEntropyScorer(_DomainScorer):
    """Minus the mean entropy of the predicted class probabilities on the target rows.

    A model that is confident on the target domain scores higher (Morerio et al. 2018 use it to select
    domain-adaptation hyper-parameters). It can be fooled by a model that is confidently wrong, so compare
    candidates of one method rather than across methods. Call it as
    ``prediction_entropy_scorer(estimator, X, y=None, sample_domain=None)``, or give it as ``scoring``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0], [1.0], [4.0], [5.0]])
    >>> clf = LogisticRegression().fit(X, [0, 0, 1, 1])
    >>> prediction_entropy_scorer(clf, X, [0, 0, -1, -1]) < 0
    True
    >>> prediction_entropy_scorer(clf, X, sample_domain=[1, 1, -1, -1]) < 0
    True
    """

    _name = "prediction_entropy_scorer"

    def _score(self, estimator, X, y, target):
        return -float(np.mean(_entropy(np.asarray(estimator.predict_proba(_rows(X, target))))))


def _entropy(proba, axis=-1):
    proba = np.clip(proba, 1e-12, 1.0)
    return -np.sum(proba * np.log(proba), axis=axis)


class _InformationMaximizationScorer(_DomainScorer):
    """The mutual information of the target predictions and the target rows: diverse and confident is best.

    ``H(mean prediction) - mean H(prediction)`` over the target rows (information maximization, the
    criterion of Gomes, Krause and Perona 2010 that SHOT trains with): the second term is the prediction
    entropy that ``prediction_entropy_scorer`` rewards, the first rewards spreading the target rows over the
    classes. A model that confidently gives most target rows the same class, which fools prediction
    entropy, scores low here. Benchmarks of validation methods for domain adaptation found it among the
    most reliable label-free criteria (Musgrave et al. 2022). It lies between 0 and log(n_classes); it
    assumes that the target's classes are not far from balanced. Call it as
    ``information_maximization_scorer(estimator, X, y=None, sample_domain=None)``, or give it as
    ``scoring``.

    References
    ----------
    .. [1] R. Gomes, A. Krause and P. Perona, "Discriminative Clustering by Regularized Information
       Maximization", NeurIPS 2010.
    .. [2] K. Musgrave, S. Belongie and S.-N. Lim, "Three New Validators and a Large-Scale Benchmark Ranking
       for Unsupervised Domain Adaptation", arXiv:2208.07360, 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0], [1.0], [4.0], [5.0], [0.2], [4.8]])
    >>> clf = LogisticRegression(C=100).fit(X[:4], [0, 0, 1, 1])
    >>> round(information_maximization_scorer(clf, X, [0, 0, 1, 1, -1, -1]), 2)  # at most log(2)
    0.69
    """

    _name = "information_maximization_scorer"

    def _score(self, estimator, X, y, target):
        proba = np.asarray(estimator.predict_proba(_rows(X, target)), dtype=np.float64)
        return float(_entropy(proba.mean(axis=0)) - np.mean(_entropy(proba)))


# The libraries whose predict, predict_proba and embed the scorers may bypass by walking into an estimator.
_LIBRARIES = ("sklearn", "sktransfer")


def _outputs_as_shipped(estimator):
    """Whether ``predict``, ``predict_proba`` and ``embed`` of estimator are scikit-learn's or sktransfer's own.

    A subclass that overrides one of them (a user's post-processing, say) must be asked for its outputs
    itself, not through the steps or the network it wraps.
    """
    for name in ("predict", "predict_proba", "embed"):
        owner = next((cls for cls in type(estimator).__mro__ if name in vars(cls)), None)
        if owner is not None and owner.__module__.partition(".")[0] not in _LIBRARIES:
            return False
    return True


def _features_and_outputs(estimator, X, rows, output, name):
    """The features in which to compare domains, of every row of X, and ``output`` of ``rows`` of X.

    ``output`` is ``"predict"`` or ``"predict_proba"``, of the estimator that classifies. The features are
    those it classifies: a fitted search is read through its ``best_estimator_``, a Pipeline (nested or
    not) through its steps, then the last estimator's own embedding (``embed``), the features a shallow
    aligner maps the rows to (FeatureAlignmentClassifier, ImportanceWeightingClassifier), or X. Each step
    transforms X once, and a network that gives its embedding and its predictions in one pass
    (DomainAdaptedClassifier) runs once over the rows. Where a wrapper on the way, or that network,
    overrides ``predict``, ``predict_proba`` or ``embed`` in a class of its own, the outputs are asked of the
    estimator as given instead, at the cost of a second pass.
    """
    given, given_X, shipped = estimator, X, True
    while True:
        if hasattr(estimator, "best_estimator_"):
            shipped, estimator = shipped and _outputs_as_shipped(estimator), estimator.best_estimator_
        elif isinstance(estimator, Pipeline):  # step by step: a slice would ask its stateless steps for fit
            shipped = shipped and _outputs_as_shipped(estimator)
            for _, step in estimator.steps[:-1]:
                X = X if step is None or step == "passthrough" else step.transform(X)
            estimator = estimator[-1]
        elif isinstance(estimator, EstimatorOnTargetFeaturesMixin):  # then what its own estimator reads
            shipped = shipped and _outputs_as_shipped(estimator)
            X, estimator = estimator._target_features(X), estimator.estimator_
        else:
            break
    if shipped and hasattr(estimator, "_embed_and_predict_proba") and _outputs_as_shipped(estimator):
        features, proba = estimator._embed_and_predict_proba(X)
        proba = proba[rows]
        return features, proba if output == "predict_proba" else estimator.classes_[proba.argmax(axis=1)]
    if hasattr(estimator, "embed"):
        features = estimator.embed(X)
    else:
        features = np.asarray(X)
        if features.ndim != 2 or features.dtype.kind not in "biuf":
            raise ValueError(
                f"{name} needs 2-D features: X itself, a Pipeline whose last step reads features, or an "
                "estimator with an embed() method such as DomainAdaptedClassifier."
            )
    if not shipped:
        return features, getattr(given, output)(_rows(given_X, rows))
    return features, getattr(estimator, output)(_rows(X, rows))


class _SourceWeightedScorer(_DomainScorer):
    """A score of the labelled source rows, each weighted by the density ratio p_target(x) / p_source(x).

    A logistic regression tells the fold's target rows from its source rows on the estimator's features;
    a source row weighs its odds of being target times (source rows / target rows), an estimate of the
    density ratio whose mean over the source rows is about 1. Subclasses turn the weights into a score.
    """

    def _score(self, estimator, X, y, target):
        source = ~target
        if y is None or not source.any():
            raise ValueError(
                f"{self._name} needs labelled source rows: y, and rows that are neither y == -1 nor of a "
                "negative sample_domain."
            )
        y = label_array(y)
        missing = np.flatnonzero(source)[missing_labels(y[source])]
        if missing.size:
            raise ValueError(
                f"{self._name} needs the label of every source row, and y is missing (NaN or None) at samples "
                f"{missing[:10].tolist()}: mark target rows with -1 or a negative sample_domain."
            )
        features, outputs = _features_and_outputs(estimator, X, source, self._output, self._name)
        return self._weighted_score(estimator, outputs, y[source], source_density_ratios(features, target))


class _ImportanceWeightedScorer(_SourceWeightedScorer):
    """Accuracy on the labelled source rows, each weighted by how target-like it is (IWCV, Sugiyama 2007).

    A logistic regression tells target rows from source rows on the estimator's features; a source row
    weighs p(target | x) / p(source | x), up to a constant factor. The weighted source accuracy estimates the
    target accuracy without a single target label. It assumes that ``predict`` maps source and target rows
    alike, as DomainAdaptedClassifier does; FeatureAlignmentClassifier moves only its training source rows,
    so score it with ``prediction_entropy_scorer``. Call it as
    ``importance_weighted_scorer(estimator, X, y, sample_domain=None)``, or give it as ``scoring``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0], [1.0], [4.0], [5.0], [4.5], [0.5]])
    >>> clf = LogisticRegression().fit(X[:4], [0, 0, 1, 1])
    >>> importance_weighted_scorer(clf, X, [0, 0, 1, 1, -1, -1])
    1.0
    >>> importance_weighted_scorer(clf, X, [0, 0, 1, 1, 1, 0], sample_domain=[1, 1, 1, 1, -1, -1])
    1.0
    """

    _name = "importance_weighted_scorer"
    _output = "predict"

    def _weighted_score(self, estimator, predicted, y_source, weights):
        correct = predicted == y_source
        return float(np.sum(weights * correct) / np.sum(weights))


def _control_variate_risk(weighted_loss, weights):
    """The mean weighted loss corrected by the weights' known mean of 1 (You et al. 2019).

    ``mean(wl) + eta * (mean(w) - 1)`` with ``eta = -Cov(wl, w) / Var(w)``, the coefficient that minimises the
    variance of the estimate; ``eta`` is 0 when the weights are constant (to rounding).
    """
    variance = np.var(weights)
    eta = 0.0
    if variance > np.finfo(np.float64).eps * np.mean(weights) ** 2:
        covariance = np.mean((weighted_loss - weighted_loss.mean()) * (weights - weights.mean()))
        eta = -covariance / variance
    return float(np.mean(weighted_loss) + eta * np.mean(weights) - eta)


class _DeepEmbeddedValidationScorer(_SourceWeightedScorer):
    """Minus the importance-weighted cross-entropy of the source labels, with a control variate (DEV).

    Deep Embedded Validation (You et al. 2019) estimates the target risk from the labelled source rows of
    the validation fold: each row's cross-entropy ``l = -log p(y | x)`` under ``predict_proba`` is weighted by
    the row's density ratio ``w = p_target(x) / p_source(x)``, which a logistic regression that tells the
    fold's target rows from its source rows estimates on the estimator's features, as in
    ``importance_weighted_scorer``. The weights are known to average 1, so their sample mean serves as a
    control variate that cuts the variance of the estimate:
    ``risk = mean(w l) + eta * mean(w) - eta`` with ``eta = -Cov(w l, w) / Var(w)``. The score is
    ``-risk``, greater is better. A source label that the estimator's ``classes_`` lacks has probability 0,
    clipped to 1e-12.

    Like ``importance_weighted_scorer``, it assumes that ``predict_proba`` maps source and target rows
    alike, as DomainAdaptedClassifier does (FeatureAlignmentClassifier does not). Call it as
    ``deep_embedded_validation_scorer(estimator, X, y, sample_domain=None)``, or give it as ``scoring``.

    References
    ----------
    .. [1] K. You, X. Wang, M. Long and M. I. Jordan, "Towards Accurate Model Selection in Deep Unsupervised
       Domain Adaptation", ICML 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0], [1.0], [4.0], [5.0], [4.5], [0.5]])
    >>> sure = LogisticRegression(C=100).fit(X[:4], [0, 0, 1, 1])
    >>> unsure = LogisticRegression(C=0.01).fit(X[:4], [0, 0, 1, 1])
    >>> y = [0, 0, 1, 1, -1, -1]
    >>> bool(deep_embedded_validation_scorer(sure, X, y) > deep_embedded_validation_scorer(unsure, X, y))
    True
    """

    _name = "deep_embedded_validation_scorer"
    _output = "predict_proba"

    def _score(self, estimator, X, y, target):
        # before the estimator runs over the rows
        if getattr(estimator, "classes_", None) is None or not hasattr(estimator, "predict_proba"):
            raise ValueError(
                f"{self._name} reads the probability of each source label (predict_proba) in the columns of "
                "estimator.classes_: score a classifier that has both."
            )
        return super()._score(estimator, X, y, target)

    def _weighted_score(self, estimator, proba, y_source, weights):
        column = {label: i for i, label in enumerate(np.asarray(estimator.classes_).tolist())}
        index = np.array([column.get(label, -1) for label in np.asarray(y_source).tolist()])
        proba = np.asarray(proba, dtype=np.float64)
        true_proba = np.where(index >= 0, proba[np.arange(len(index)), index], 0.0)
        loss = -np.log(np.clip(true_proba, 1e-12, 1.0))
        return -_control_variate_risk(weights * loss, weights)


def _neighbourhood_entropies(points, temperature):
    """Entropy of each row's softmax over its cosine similarities to the other rows, divided by temperature.

    Rows are taken a block at a time, so that memory stays near 2**22 similarities whatever the row count.
    """
    points = np.asarray(points, dtype=np.float64)
    norms = np.linalg.norm(points, axis=1, keepdims=True)
    unit = points / np.maximum(norms, np.finfo(np.float64).tiny)
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


prediction_entropy_scorer = _PredictionEntropyScorer()
information_maximization_scorer = _InformationMaximizationScorer()
importance_weighted_scorer = _ImportanceWeightedScorer()
deep_embedded_validation_scorer = _DeepEmbeddedValidationScorer()
soft_neighborhood_density_scorer = _SoftNeighborhoodDensityScorer()
neighborhood_consistency_scorer = _NeighborhoodConsistencyScorer()
