"""Soft neighbourhood density, deep embedded validation, information maximization, neighbourhood
consistency and mixup validation: their values, their ranking and their routing."""

import copy
import math
import pickle

import numpy as np
import pytest
import sklearn
import torch
from scipy.stats import spearmanr
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_validate
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.metadata_routing import get_routing_for_object

import sktransfer
from sktransfer.domain_adaptation import (
    FeatureAlignmentClassifier,
    deep_embedded_validation_scorer,
    importance_weighted_scorer,
    information_maximization_scorer,
    mixup_validation_scorer,
    neighborhood_consistency_scorer,
    prediction_entropy_scorer,
    soft_neighborhood_density_scorer,
)
from sktransfer.domain_adaptation._neighbourhood_scorers import _neighbourhood_entropies
from sktransfer.domain_adaptation._weighted_scorers import _control_variate_risk

NEW_SCORERS = [
    soft_neighborhood_density_scorer,
    deep_embedded_validation_scorer,
    information_maximization_scorer,
    neighborhood_consistency_scorer,
    mixup_validation_scorer,
]


class KnownProbabilities:
    """A fitted classifier stand-in: the row whose first feature is i gets the probabilities ``proba[i]``."""

    def __init__(self, proba, classes=(0, 1)):
        self.proba = np.asarray(proba, dtype=float)
        self.classes_ = np.asarray(classes)

    def predict_proba(self, X):
        return self.proba[np.asarray(X)[:, 0].astype(int)]


class SameArray:
    """A stand-in whose predict_proba hands out its own array, so that a scorer writing into it shows."""

    classes_ = np.array([0, 1])

    def __init__(self, proba):
        self.proba = proba

    def predict_proba(self, X):
        assert len(X) == len(self.proba)
        return self.proba


class PredictsByRow:
    """A fitted classifier stand-in: the row whose first column is i is predicted ``labels[i]``, and its
    other columns are its features (what ``embed`` returns, as DomainAdaptedClassifier's bottleneck)."""

    def __init__(self, labels):
        self.labels = np.asarray(labels)

    def predict(self, X):
        return self.labels[np.asarray(X)[:, 0].astype(int)]

    def embed(self, X):
        return np.asarray(X)[:, 1:]


def slow_neighborhood_consistency(features, predicted, n_neighbors):
    """Neighbourhood consistency written out: sorted distances, agreeing neighbours, Cohen's kappa."""
    n = len(features)
    agreeing = 0
    for i in range(n):
        distances = sorted((math.dist(features[i], features[j]), j) for j in range(n) if j != i)
        agreeing += sum(predicted[j] == predicted[i] for _, j in distances[:n_neighbors])
    observed = agreeing / (n * n_neighbors)
    chance = sum((list(predicted).count(c) / n) ** 2 for c in set(predicted))
    return (observed - chance) / (1 - chance)


def slow_snd(proba, temperature=0.05):
    """Soft neighbourhood density written out row by row, neighbour by neighbour."""
    unit = [np.asarray(row, dtype=float) / math.sqrt(sum(v * v for v in row)) for row in proba]
    entropies = []
    for i, row in enumerate(unit):
        logits = [float(row @ other) / temperature for j, other in enumerate(unit) if j != i]
        top = max(logits)
        odds = [math.exp(value - top) for value in logits]
        total = sum(odds)
        entropies.append(-sum(o / total * math.log(o / total) for o in odds if o > 0))
    return sum(entropies) / len(entropies)


def slow_dev(estimator, X, y, target):
    """Deep embedded validation written out: density ratios, per-row losses, the control-variate formula."""
    source = ~target
    domain = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, target)
    p_target = np.clip(domain.predict_proba(X[source])[:, 1], 1e-6, 1 - 1e-6)
    ratio = source.sum() / target.sum()
    weights = [ratio * p / (1 - p) for p in p_target]
    classes = list(estimator.classes_)
    losses = []
    for row, label in zip(estimator.predict_proba(X[source]), y[source], strict=True):
        p_true = row[classes.index(label)] if label in classes else 0.0
        losses.append(-math.log(max(p_true, 1e-12)))
    weighted = [w * loss for w, loss in zip(weights, losses, strict=True)]
    n = len(weights)
    mean_w, mean_wl = sum(weights) / n, sum(weighted) / n
    # Sample covariance and variance (n - 1): their ratio is the scorer's, which divides both by n.
    cov = sum((a - mean_wl) * (b - mean_w) for a, b in zip(weighted, weights, strict=True)) / (n - 1)
    var = sum((b - mean_w) ** 2 for b in weights) / (n - 1)
    eta = -cov / var
    return -(mean_wl + eta * mean_w - eta), mean_wl


def blobs(seed):
    """Three Gaussian classes in 2-D; the target domain is the source rotated and moved.

    400 source rows (the first 200 to train on, the others to validate with) and 200 target rows.
    """
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [3.0, 0.0], [1.5, 2.5]])
    ys = rng.integers(0, 3, 400)
    source = centres[ys] + rng.normal(size=(400, 2))
    yt = rng.integers(0, 3, 200)
    turn = np.array([[np.cos(0.6), -np.sin(0.6)], [np.sin(0.6), np.cos(0.6)]])
    target = (centres[yt] + rng.normal(size=(200, 2))) @ turn.T + [1.0, 0.5]
    return source, ys, target, yt


@pytest.fixture
def shifted_blobs():
    return blobs(0)


def test_snd_of_a_hand_computed_case():
    # Target rows: two predictions of class 0, one of class 1 (row 3 is a source row, ignored).
    clf = KnownProbabilities([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    X = np.arange(4)[:, None]
    # Rows 0 and 1: cosine 1 with each other and 0 with row 2, so logits 20 and 0 at temperature 0.05 and
    # a neighbourhood (s, 1 - s) with s = sigmoid(20). Row 2: cosine 0 with both, a uniform pair: log 2.
    s = 1 / (1 + math.exp(-20))
    two_of_a_kind = -(s * math.log(s) + (1 - s) * math.log(1 - s))
    expected = (2 * two_of_a_kind + math.log(2)) / 3
    assert soft_neighborhood_density_scorer(clf, X, [-1, -1, -1, 0]) == pytest.approx(expected, rel=1e-12)
    assert soft_neighborhood_density_scorer(clf, X, sample_domain=[-1, -1, -1, 1]) == pytest.approx(expected)
    assert slow_snd(clf.proba[:3]) == pytest.approx(expected, rel=1e-12)
    # Two target rows: each has one neighbour, a certain neighbourhood.
    assert soft_neighborhood_density_scorer(clf, X, [-1, 0, -1, 1]) == 0.0


@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_snd_matches_a_slow_loop(temperature):
    rng = np.random.default_rng(1)
    proba = rng.dirichlet([0.3, 0.3, 0.3, 0.3], size=40)
    clf = KnownProbabilities(proba, classes=[0, 1, 2, 3])
    scorer = copy.copy(soft_neighborhood_density_scorer)
    scorer.temperature = temperature
    score = scorer(clf, np.arange(40)[:, None], sample_domain=-np.ones(40))
    assert score == pytest.approx(slow_snd(proba, temperature), rel=1e-10)
    assert soft_neighborhood_density_scorer.temperature == 0.05  # the shared scorer kept its own


def test_snd_in_blocks_equals_one_pass():
    """Past 2048 rows the similarities are taken a block of rows at a time; the entropies do not change."""
    rng = np.random.default_rng(2)
    proba = rng.dirichlet([1.0, 1.0, 1.0], size=2100)
    unit = proba / np.linalg.norm(proba, axis=1, keepdims=True)
    blocked = _neighbourhood_entropies(proba, 0.05)
    for i in [0, 1, 1000, 2047, 2048, 2099]:  # rows of both blocks, at their edges
        logits = np.delete(unit @ unit[i], i) / 0.05
        p = np.exp(logits - logits.max())
        p /= p.sum()
        assert blocked[i] == pytest.approx(-np.sum(p * np.log(p)), rel=1e-10)
    assert np.isfinite(blocked).all()


def test_snd_prefers_dense_clusters_to_scattered_predictions_and_peaks_when_collapsed():
    n = 60
    one_hot = np.eye(3)[np.repeat([0, 1, 2], n // 3)]
    scattered = np.random.default_rng(3).dirichlet([1.0, 1.0, 1.0], size=n)
    collapsed = np.tile([0.4, 0.35, 0.25], (n, 1))
    X, domains = np.arange(n)[:, None], -np.ones(n)

    def snd(proba):
        return soft_neighborhood_density_scorer(
            KnownProbabilities(proba, [0, 1, 2]), X, sample_domain=domains
        )

    # Confident, well separated: each row's neighbourhood is the 19 other rows of its class, near uniformly.
    assert snd(one_hot) == pytest.approx(math.log(n // 3 - 1), abs=1e-6)
    assert snd(one_hot) > snd(scattered)  # 2.94 against 2.86: a narrow margin with three classes
    # A model that predicts the same for every row scores the most there is, log(n - 1): the known failure
    # mode the docstring warns of.
    assert snd(collapsed) == pytest.approx(math.log(n - 1))


def test_dev_is_the_control_variate_formula(shifted_blobs):
    source, ys, target, _ = shifted_blobs
    clf = LogisticRegression(C=0.1).fit(source[:200], ys[:200])
    X = np.concatenate([source[200:260], target[:40]])
    y = np.concatenate([ys[200:260], np.full(40, -1)])
    expected, weighted_mean = slow_dev(clf, X, y, y == -1)
    assert deep_embedded_validation_scorer(clf, X, y) == pytest.approx(expected, rel=1e-9)
    assert expected != pytest.approx(-weighted_mean, rel=1e-3)  # the control variate is at work
    # A source label the estimator never saw has probability 0, clipped: a loss of -log(1e-12).
    y_unseen = y.copy()
    y_unseen[0] = 7
    expected_unseen, _ = slow_dev(clf, X, y_unseen, y == -1)
    assert deep_embedded_validation_scorer(clf, X, y_unseen) == pytest.approx(expected_unseen, rel=1e-9)
    assert expected_unseen < expected


def test_dev_with_weights_of_one_is_the_mean_source_loss():
    loss = np.array([0.1, 2.0, 0.7, 0.0])
    assert _control_variate_risk(loss, np.ones(4)) == pytest.approx(loss.mean(), rel=1e-15)
    # Target rows that copy the source rows: the domain classifier cannot tell them apart, every weight is 1.
    rng = np.random.default_rng(4)
    features = rng.normal(size=(40, 2))
    labels = (features[:, 0] + 0.3 * rng.normal(size=40) > 0).astype(int)
    clf = LogisticRegression().fit(features, labels)
    X, y = np.concatenate([features, features]), np.concatenate([labels, np.full(40, -1)])
    mean_loss = -np.mean(np.log(clf.predict_proba(features)[np.arange(40), labels]))
    assert deep_embedded_validation_scorer(clf, X, y) == pytest.approx(-mean_loss, rel=1e-9)


def correlations_with_target_accuracy(scorer):
    """Mean Spearman correlations of ``scorer`` and of prediction entropy with the target accuracy.

    Source-only models of several kinds, scored on held-out source rows and unlabelled target rows: ten
    models, on five draws of the problem. Entropy prefers the confident deep trees and 1-nearest neighbour,
    which overfit the source.
    """
    correlations = []
    for seed in range(5):
        source, ys, target, yt = blobs(seed)
        models = [LogisticRegression(C=c) for c in (0.01, 0.1, 1, 10)]
        models += [DecisionTreeClassifier(max_depth=depth, random_state=0) for depth in (2, 4, 8)]
        models += [KNeighborsClassifier(k) for k in (1, 5, 25)]
        X = np.concatenate([source[200:], target])
        y = np.concatenate([ys[200:], np.full(len(target), -1)])
        accuracy, scores, entropy = [], [], []
        for model in models:
            model.fit(source[:200], ys[:200])
            accuracy.append(np.mean(model.predict(target) == yt))
            scores.append(scorer(model, X, y))
            entropy.append(prediction_entropy_scorer(model, X, y))
        assert np.ptp(accuracy) > 0.05  # the candidates differ on the target
        correlations.append([spearmanr(scores, accuracy)[0], spearmanr(entropy, accuracy)[0]])
    return np.mean(correlations, axis=0)


def test_dev_ranks_models_by_target_accuracy_better_than_prediction_entropy():
    dev_correlation, entropy_correlation = correlations_with_target_accuracy(deep_embedded_validation_scorer)
    assert dev_correlation > 0.2  # 0.30, against -0.17 for prediction entropy
    assert dev_correlation > entropy_correlation + 0.3


def test_information_maximization_is_the_mutual_information_of_rows_and_predictions():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    clf = KnownProbabilities(proba)
    mean = proba.mean(axis=0)
    expected = -np.sum(mean * np.log(mean)) + np.mean(np.sum(proba * np.log(proba), axis=1))
    X = np.arange(4)[:, None]
    assert information_maximization_scorer(clf, X, [-1, -1, -1, -1]) == pytest.approx(expected, rel=1e-12)
    assert information_maximization_scorer(clf, X, sample_domain=[-1, -1, -1, 1]) == pytest.approx(
        information_maximization_scorer(clf, X[:3], [-1, -1, -1])
    )


def test_information_maximization_is_not_fooled_by_a_confident_collapse():
    """Prediction entropy prefers a model that confidently puts every target row in one class; IM does not."""
    rows = np.arange(4)[:, None]
    collapsed = KnownProbabilities([[0.99, 0.01]] * 4)
    right = KnownProbabilities([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    target = [-1, -1, -1, -1]
    assert prediction_entropy_scorer(collapsed, rows, target) > prediction_entropy_scorer(right, rows, target)
    assert information_maximization_scorer(right, rows, target) > information_maximization_scorer(
        collapsed, rows, target
    )
    assert information_maximization_scorer(collapsed, rows, target) == pytest.approx(0.0, abs=1e-9)
    proba = np.array([[0.7, 0.3], [0.4, 0.6]])
    information_maximization_scorer(SameArray(proba), rows[:2], [-1, -1])
    np.testing.assert_array_equal(proba, [[0.7, 0.3], [0.4, 0.6]])  # the model's own array is left alone


@pytest.mark.parametrize("routing", [True, False])
def test_scorers_in_a_search_and_cross_validation_of_a_pipeline(shifted_blobs, routing):
    """With routing, string labels and sample_domain reach the scorers; without it, y == -1 marks the target."""
    source, ys, target, yt = shifted_blobs
    X = np.concatenate([source[:200], target])
    domains = np.repeat([1, -1], 200)
    if routing:  # the target rows carry their true labels, masked by the negative domain
        names = np.array(["a", "b", "c"])
        y, params = np.concatenate([names[ys[:200]], names[yt]]), {"sample_domain": domains}
    else:
        y, params = np.concatenate([ys[:200], np.full(200, -1)]), {}
    folds = list(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))
    scoring = {
        "snd": soft_neighborhood_density_scorer,
        "dev": deep_embedded_validation_scorer,
        "im": information_maximization_scorer,
        "nc": neighborhood_consistency_scorer,
        "mix": mixup_validation_scorer,
    }
    with sklearn.config_context(enable_metadata_routing=routing):
        aligned = FeatureAlignmentClassifier(method="source_only")
        pipeline = make_pipeline(
            StandardScaler(), aligned.set_fit_request(sample_domain=True) if routing else aligned
        )
        grid = {"featurealignmentclassifier__estimator": [LogisticRegression(C=0.01), LogisticRegression()]}
        search = GridSearchCV(pipeline, grid, cv=folds, scoring=scoring, refit="dev").fit(X, y, **params)
        result = cross_validate(
            pipeline, X, y, cv=folds, scoring=scoring, params=params, return_estimator=True
        )
    assert search.best_params_["featurealignmentclassifier__estimator"].C == 1.0
    for name, scorer in scoring.items():
        assert np.isfinite(search.cv_results_[f"mean_test_{name}"]).all()
        for (_, test), fitted, score in zip(folds, result["estimator"], result[f"test_{name}"], strict=True):
            fold_params = {key: value[test] for key, value in params.items()}
            assert score == pytest.approx(scorer(fitted, X[test], y[test], **fold_params))


def test_scorers_request_sample_domain_pickle_and_are_public():
    for scorer in NEW_SCORERS:
        assert get_routing_for_object(scorer).score.requests == {"sample_domain": True}
        assert repr(pickle.loads(pickle.dumps(scorer))) == repr(scorer)
        assert sktransfer.__dict__[repr(scorer)] is scorer
    with sklearn.config_context(enable_metadata_routing=True):
        aliased = copy.copy(soft_neighborhood_density_scorer).set_score_request(sample_domain="domains")
    restored = pickle.loads(pickle.dumps(aliased))
    assert get_routing_for_object(restored).score.requests == {"sample_domain": "domains"}
    assert restored.temperature == 0.05
    assert get_routing_for_object(soft_neighborhood_density_scorer).score.requests == {"sample_domain": True}


@pytest.mark.parametrize("scorer", NEW_SCORERS, ids=repr)
def test_scorers_refuse_data_without_target_rows(shifted_blobs, scorer):
    source, ys, _, _ = shifted_blobs
    clf = LogisticRegression().fit(source, ys)
    both_ways = "mark target rows with y == -1 or with a negative sample_domain"
    with pytest.raises(ValueError, match=both_ways):
        scorer(clf, source, ys)
    # with sample_domain given, the rows are all source rows: in a search, a fold cut in order (the message
    # blamed metadata routing, which had passed sample_domain)
    with pytest.raises(ValueError, match=r"are all source rows by their sample_domain.*shuffle=True"):
        scorer(clf, source, ys, sample_domain=np.ones(len(ys)))


def test_snd_needs_two_target_rows_and_dev_needs_labelled_source_rows(shifted_blobs):
    source, ys, target, _ = shifted_blobs
    clf = LogisticRegression().fit(source, ys)
    with pytest.raises(ValueError, match="soft_neighborhood_density_scorer needs at least two target rows"):
        soft_neighborhood_density_scorer(clf, source[:5], [0, 1, 2, 0, -1])
    needs_source = "deep_embedded_validation_scorer needs labelled source rows"
    with pytest.raises(ValueError, match=needs_source):
        deep_embedded_validation_scorer(clf, target, np.full(len(target), -1))
    with pytest.raises(ValueError, match=needs_source):
        deep_embedded_validation_scorer(clf, target, sample_domain=-np.ones(len(target)))
    with pytest.raises(ValueError, match=needs_source):  # labels are needed, even with source rows
        deep_embedded_validation_scorer(clf, source, sample_domain=np.repeat([1, -1], 200))
    with pytest.raises(ValueError, match="needs 2-D features"):
        deep_embedded_validation_scorer(clf, source.ravel(), np.repeat([0, -1], 400))
    # Without classes_, DEV cannot tell which probability is the true label's.
    no_classes = KnownProbabilities([[0.5, 0.5]] * 3)
    del no_classes.classes_
    with pytest.raises(ValueError, match=r"estimator\.classes_"):
        deep_embedded_validation_scorer(no_classes, np.array([[0], [1], [2]]), [0, 1, -1])
    # A label-free scorer does not need y.
    assert np.isfinite(soft_neighborhood_density_scorer(clf, source[:4], sample_domain=[1, -1, -1, -1]))


def test_scorers_leave_their_inputs_alone(shifted_blobs):
    source, ys, target, _ = shifted_blobs
    X = np.concatenate([source[:30], target[:30]])
    y = np.concatenate([ys[:30], np.full(30, -1)])
    domains = np.repeat([1, -1], 30)
    X_before, y_before, domains_before = X.copy(), y.copy(), domains.copy()
    clf = LogisticRegression().fit(source, ys)
    for scorer in NEW_SCORERS:
        scorer(clf, X, y)
        scorer(clf, X, y, sample_domain=domains)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)
    np.testing.assert_array_equal(domains, domains_before)
    # The probabilities an estimator hands out are read, never written to.
    proba = np.random.default_rng(5).dirichlet([1.0, 1.0], size=30)
    proba_before = proba.copy()
    soft_neighborhood_density_scorer(SameArray(proba), X, y)
    np.testing.assert_array_equal(proba, proba_before)
    deep_embedded_validation_scorer(SameArray(proba), X, y)
    np.testing.assert_array_equal(proba, proba_before)


@pytest.mark.parametrize("n_neighbors", [1, 4, 100])
def test_neighborhood_consistency_matches_a_slow_loop(n_neighbors):
    rng = np.random.default_rng(3)
    features = rng.normal(size=(25, 3))
    predicted = rng.choice(["a", "b", "c"], size=25)
    clf = PredictsByRow(predicted)
    X = np.column_stack([np.arange(25), features])  # the row index, then the features the neighbours use
    scorer = copy.copy(neighborhood_consistency_scorer)
    scorer.n_neighbors = n_neighbors
    on_features = scorer(clf, X, np.full(25, -1))
    expected = slow_neighborhood_consistency(features, predicted, min(n_neighbors, 24))
    assert on_features == pytest.approx(expected, rel=1e-12)
    assert neighborhood_consistency_scorer.n_neighbors == 10  # the shared scorer kept its own


def test_neighborhood_consistency_of_clusters_noise_and_a_collapse():
    """1 when predictions follow the clusters, about 0 when they ignore them, 0 when all are one class."""
    rng = np.random.default_rng(0)
    clusters = rng.integers(0, 4, 2000)
    features = np.eye(4)[clusters] * 10 + rng.normal(size=(2000, 4))
    X = np.column_stack([np.arange(2000), features])
    target = np.full(2000, -1)
    follows = neighborhood_consistency_scorer(PredictsByRow(clusters), X, target)
    ignores = neighborhood_consistency_scorer(PredictsByRow(rng.permutation(clusters)), X, target)
    collapsed = neighborhood_consistency_scorer(PredictsByRow(np.zeros(2000)), X, target)
    assert follows == 1.0
    assert abs(ignores) < 0.02
    assert collapsed == 0.0


def test_neighborhood_consistency_prefers_a_boundary_between_clusters_to_a_confident_one_through_them():
    """Prediction entropy and information maximization prefer the confident model that cuts the target's
    clusters; neighbourhood consistency prefers the one whose boundary runs between them."""
    rng = np.random.default_rng(1)
    target = np.concatenate([rng.normal(0, 0.5, 100), rng.normal(6, 0.5, 100)])[:, None]
    y = np.full(200, -1)
    between = LogisticRegression(C=0.01).fit([[0.0], [6.0]], [0, 1])  # boundary at 3, unsure
    through = LogisticRegression(C=1000).fit([[-0.5], [0.5]], [0, 1])  # boundary at 0, sure
    for confidence in (prediction_entropy_scorer, information_maximization_scorer):
        assert confidence(through, target, y) > confidence(between, target, y)
    assert neighborhood_consistency_scorer(between, target, y) == 1.0
    # Only the rows near the cut have neighbours on its other side: the score is local.
    assert neighborhood_consistency_scorer(through, target, y) < 0.97


def test_neighborhood_consistency_ranks_models_by_target_accuracy_better_than_prediction_entropy():
    consistency_correlation, entropy_correlation = correlations_with_target_accuracy(
        neighborhood_consistency_scorer
    )
    assert consistency_correlation > 0.1  # 0.18, against -0.17 for prediction entropy
    assert consistency_correlation > entropy_correlation + 0.3


def test_neighborhood_consistency_needs_two_target_rows_and_features():
    rows = np.array([[0, 0.0], [1, 1.0], [2, 2.0]])
    clf = PredictsByRow([0, 0, 1])
    with pytest.raises(ValueError, match="neighborhood_consistency_scorer needs at least two target rows"):
        neighborhood_consistency_scorer(clf, rows, [0, 1, -1])
    # Two target rows of two classes, each the other's only neighbour: never agreeing, below chance.
    assert neighborhood_consistency_scorer(clf, rows, [0, -1, -1]) == -1.0
    plain = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    with pytest.raises(ValueError, match="needs 2-D features"):
        neighborhood_consistency_scorer(plain, np.zeros((3, 2, 2)), [-1, -1, -1])


def _marked(shifted_blobs):
    """Source and target rows together, the target rows marked -1."""
    source, ys, target, _ = shifted_blobs
    return np.concatenate([source, target]), np.concatenate([ys, np.full(len(target), -1)])


def test_an_estimator_that_learnt_minus_one_as_a_class_is_refused(shifted_blobs):
    X, y = _marked(shifted_blobs)
    minus_one_a_class = LogisticRegression().fit(X, y)  # the target rows taught a class -1
    for scorer in (prediction_entropy_scorer, importance_weighted_scorer, *NEW_SCORERS):
        with pytest.raises(ValueError, match="classes_ hold -1, the label the library reserves"):
            scorer(minus_one_a_class, X, y)


def test_the_features_are_those_the_estimator_classifies(shifted_blobs):
    X, y = _marked(shifted_blobs)
    squash = FunctionTransformer(lambda Z: np.tanh(Z * [3.0, 0.3]))  # features no scaling of X gives
    pipeline = make_pipeline(squash, LogisticRegression())
    search = GridSearchCV(pipeline, {"logisticregression__C": [0.1, 1.0]}, cv=2).fit(X[y != -1], y[y != -1])
    for scorer in (neighborhood_consistency_scorer, deep_embedded_validation_scorer):
        assert scorer(search, X, y) == scorer(search.best_estimator_, X, y)  # a search read as its best
        assert scorer(search, X, y) != pytest.approx(scorer(_OnRawRows(search), X, y))
    inner = FeatureAlignmentClassifier(make_pipeline(squash, LogisticRegression()), method="coral").fit(X, y)
    reads = inner.estimator_[0].transform(inner._target_features(X[y == -1]))
    expected = neighborhood_consistency_scorer(inner.estimator_[-1], reads, y[y == -1])
    assert neighborhood_consistency_scorer(inner, X, y) == pytest.approx(expected)  # through its estimator
    subspace = FeatureAlignmentClassifier(method="subspace", n_components=1).fit(X, y)
    target = X[y == -1]
    reads = subspace._target_features(target)  # what its estimator_ reads: the target's principal direction
    expected = neighborhood_consistency_scorer(subspace.estimator_, reads, y[y == -1])
    assert neighborhood_consistency_scorer(subspace, X, y) == pytest.approx(expected)
    assert neighborhood_consistency_scorer(subspace, X, y) != pytest.approx(
        neighborhood_consistency_scorer(_OnRawRows(subspace), X, y)
    )


@pytest.mark.parametrize("method", ["coral", "subspace"])
def test_source_weighted_scorers_read_an_aligners_source_rows_as_its_fit_mapped_them(method):
    # FeatureAlignmentClassifier trains on source rows mapped otherwise than the target rows it predicts:
    # read as target rows, the source rows were misclassified, and the aligners ranked below source-only.
    rng = np.random.default_rng(0)
    source = rng.normal(size=(200, 3))
    target = 3 * rng.normal(size=(200, 3)) + 1  # the same task, rescaled and shifted
    X = np.concatenate([source, target])
    y = np.concatenate([(source[:, 0] > 0).astype(int), np.full(200, -1)])
    aligner = FeatureAlignmentClassifier(method=method).fit(X, y)
    trained_on = (source - aligner.source_mean_) @ aligner.source_map_
    assert (aligner.estimator_.predict(trained_on) == y[:200]).mean() > 0.95
    assert importance_weighted_scorer(aligner, X, y) > 0.95
    assert deep_embedded_validation_scorer(aligner, X, y) > -0.15  # read as target rows: -0.244 and -0.196


class _OnRawRows:
    """A fitted classifier seen from outside: its predictions, and no features of its own."""

    def __init__(self, fitted):
        self.fitted, self.classes_ = fitted, fitted.classes_

    def predict(self, X):
        return self.fitted.predict(X)

    def predict_proba(self, X):
        return self.fitted.predict_proba(X)


def test_scorers_refuse_what_fit_refuses(shifted_blobs):
    X, y = _marked(shifted_blobs)
    clf = FeatureAlignmentClassifier().fit(X, y)
    blank = y.astype(float)
    blank[:3] = np.nan
    with pytest.raises(ValueError, match=r"missing \(NaN or None\) at samples \[0, 1, 2\]"):
        deep_embedded_validation_scorer(clf, X, blank)
    with pytest.raises(ValueError, match=r"sample_domain is 0 for samples \[0\]"):
        prediction_entropy_scorer(clf, X, y, sample_domain=np.r_[0, np.ones(len(y) - 1)])
    with pytest.raises(ValueError, match="sample_domain must hold numbers"):
        prediction_entropy_scorer(clf, X, y, sample_domain=np.full(len(y), "source"))
    for value in (0.0, -0.05, np.inf, np.nan):
        scorer = copy.copy(soft_neighborhood_density_scorer)
        scorer.temperature = value
        with pytest.raises(ValueError, match="temperature"):
            scorer(clf, X, y)
    scorer = copy.copy(neighborhood_consistency_scorer)
    scorer.n_neighbors = None
    with pytest.raises(TypeError, match="n_neighbors"):
        scorer(clf, X, y)


class _Stateless(TransformerMixin, BaseEstimator):
    """A frozen extractor: fit learns nothing, so it sets no fitted attribute."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.tanh(np.asarray(X, dtype=float))


def test_a_pipeline_with_a_stateless_extractor_is_scored(shifted_blobs):
    X, y = _marked(shifted_blobs)
    pipeline = make_pipeline(_Stateless(), LogisticRegression()).fit(X[y != -1], y[y != -1])
    reference = make_pipeline(FunctionTransformer(np.tanh), LogisticRegression()).fit(X[y != -1], y[y != -1])
    for scorer in (neighborhood_consistency_scorer, deep_embedded_validation_scorer):
        assert scorer(pipeline, X, y) == pytest.approx(scorer(reference, X, y))
    rows = tuple(X)  # a tuple of rows, as the loaders accept
    assert prediction_entropy_scorer(pipeline, rows, y) == pytest.approx(
        prediction_entropy_scorer(pipeline, X, y)
    )


@pytest.mark.parametrize(
    "scorer", [neighborhood_consistency_scorer, importance_weighted_scorer, deep_embedded_validation_scorer]
)
def test_a_frozen_model_is_scored_as_the_model_it_wraps(shifted_blobs, scorer):
    X, y = _marked(shifted_blobs)
    X = X * np.linspace(0.1, 10, X.shape[1])  # scales that the StandardScaler undoes
    model = make_pipeline(StandardScaler(), FeatureAlignmentClassifier(method="coral")).fit(X, y)
    assert scorer(FrozenEstimator(model), X, y) == scorer(model, X, y)


class _CountingRows(_Stateless):
    """The stateless extractor, counting the rows it transforms: an embedding pass is the costly part."""

    def transform(self, X):
        self.rows_transformed_ = getattr(self, "rows_transformed_", 0) + len(X)
        return super().transform(X)


class _Outputs:
    """A fitted classifier stand-in that hands out the predictions and probabilities it was given."""

    def __init__(self, fitted, rows):
        self.predicted, self.proba, self.classes_ = (
            fitted.predict(rows),
            fitted.predict_proba(rows),
            fitted.classes_,
        )

    def predict(self, X):
        assert len(X) == len(self.predicted)
        return self.predicted

    def predict_proba(self, X):
        assert len(X) == len(self.proba)
        return self.proba


@pytest.mark.parametrize(
    "scorer", [importance_weighted_scorer, deep_embedded_validation_scorer, neighborhood_consistency_scorer]
)
def test_a_pipeline_embeds_each_row_once_for_features_and_predictions(shifted_blobs, scorer):
    X, y = _marked(shifted_blobs)
    pipeline = make_pipeline(_CountingRows(), LogisticRegression()).fit(X[y != -1], y[y != -1])
    pipeline[0].rows_transformed_ = 0
    score = scorer(pipeline, X, y)
    scored = y == -1 if scorer is neighborhood_consistency_scorer else np.ones(len(y), dtype=bool)
    assert pipeline[0].rows_transformed_ == scored.sum()
    # the score of the pipeline's outputs (predictions of the source rows for the importance-weighted ones, of
    # the target rows for neighbourhood consistency) in the features its classifier reads
    predicted = y != -1 if scorer is not neighborhood_consistency_scorer else scored
    stand_in = _Outputs(pipeline, X[predicted])
    assert score == pytest.approx(scorer(stand_in, np.tanh(X[scored]), y[scored]))


class _Thresholded(Pipeline):
    """A user's Pipeline whose predict moves the decision threshold: what it predicts is what counts."""

    def predict(self, X):
        return self.classes_[(self.predict_proba(X)[:, 1] > 0.9).astype(int)]


@pytest.mark.parametrize("scorer", [importance_weighted_scorer, neighborhood_consistency_scorer])
def test_scorers_ask_a_wrapper_that_overrides_predict_for_its_own(shifted_blobs, scorer):
    X, y = _marked(shifted_blobs)
    pipeline = _Thresholded([("squash", _Stateless()), ("clf", LogisticRegression())])
    pipeline.fit(X[y != -1], y[y != -1])
    scored = y == -1 if scorer is neighborhood_consistency_scorer else np.ones(len(y), dtype=bool)
    predicted = y == -1 if scorer is neighborhood_consistency_scorer else y != -1
    stand_in = _Outputs(pipeline, X[predicted])
    assert not np.array_equal(stand_in.predicted, pipeline[-1].predict(np.tanh(X[predicted])))
    assert scorer(pipeline, X, y) == pytest.approx(scorer(stand_in, np.tanh(X[scored]), y[scored]))
    patched = make_pipeline(_Stateless(), LogisticRegression()).fit(X[y != -1], y[y != -1])
    patched.predict = pipeline.predict  # set on the instance: what it predicts is what counts too
    assert scorer(patched, X, y) == pytest.approx(scorer(stand_in, np.tanh(X[scored]), y[scored]))


def test_scorers_read_boolean_features(shifted_blobs):
    X, y = _marked(shifted_blobs)
    flags = X > 0
    clf = LogisticRegression().fit(flags[y != -1], y[y != -1])
    for scorer in (importance_weighted_scorer, neighborhood_consistency_scorer):
        assert scorer(clf, flags, y) == pytest.approx(scorer(clf, flags.astype(float), y))


def test_deep_embedded_validation_of_an_unfitted_classifier_says_so(shifted_blobs):
    X, y = _marked(shifted_blobs)
    with pytest.raises(NotFittedError):
        deep_embedded_validation_scorer(make_pipeline(StandardScaler(), LogisticRegression()), X, y)


def test_scorers_refuse_what_they_cannot_score_before_embedding(shifted_blobs):
    X, y = _marked(shifted_blobs)
    without_proba = make_pipeline(_CountingRows(), LinearSVC()).fit(X[y != -1], y[y != -1])
    without_proba[0].rows_transformed_ = 0
    with pytest.raises(ValueError, match=r"predict_proba"):
        deep_embedded_validation_scorer(without_proba, X, y)
    scorer = copy.copy(neighborhood_consistency_scorer)
    scorer.n_neighbors = 0
    with pytest.raises(ValueError, match="n_neighbors"):
        scorer(without_proba, X, y)
    assert without_proba[0].rows_transformed_ == 0


@pytest.mark.parametrize(
    "scorer",
    [
        soft_neighborhood_density_scorer,
        neighborhood_consistency_scorer,
        importance_weighted_scorer,
        deep_embedded_validation_scorer,
    ],
)
def test_scorers_pickled_before_they_had_modules_of_their_own_still_load(scorer):
    module = type(scorer).__module__
    old = pickle.dumps(scorer, protocol=0).replace(module.encode(), b"sktransfer.domain_adaptation.scorers")
    assert b"sktransfer.domain_adaptation.scorers" in old
    assert type(pickle.loads(old)) is type(scorer)


class ByThreshold:
    """A fitted classifier stand-in on one feature: class 1 above ``threshold``; it records what it reads."""

    classes_ = np.array([0, 1])

    def __init__(self, threshold):
        self.threshold = threshold
        self.read = []

    def predict(self, X):
        self.read.append(X)
        if isinstance(X, torch.Tensor):
            X = X.float().numpy()
        elif hasattr(X, "toarray"):  # sparse
            X = X.toarray()
        elif hasattr(X, "columns"):
            X = X.iloc[:, :1].to_numpy(dtype=float)
        values = np.asarray(X, dtype=float).reshape(len(X), -1)[:, 0]
        return (values > self.threshold).astype(int)


def slow_mixup_validation(clf, rows, predicted, first, second, ratio):
    """The mean of the two agreement rates, pair by pair, for the pairs the scorer drew."""
    agree = {True: [], False: []}
    for i, j in zip(first, second, strict=True):
        mixed = ratio * rows[i] + (1 - ratio) * rows[j]
        agree[bool(predicted[i] == predicted[j])].append(clf.predict(mixed[None])[0] == predicted[i])
    return (np.mean(agree[True]) + np.mean(agree[False])) / 2


def test_mixup_validation_is_the_mean_of_its_two_agreement_rates():
    rows = np.array([[0.0], [1.0], [2.0], [6.0], [8.0], [9.0], [10.0]])
    clf = ByThreshold(3.0)
    score = mixup_validation_scorer(clf, rows, np.full(7, -1))
    original, mixes = clf.read
    np.testing.assert_array_equal(original, rows)
    # Every row of a class of two rows or more is mixed once with another row of its class, and once with
    # its successor in a cycle through all rows where that successor is of the other class.
    predicted = clf.predict(rows)
    within = {(i, j) for i in range(7) for j in range(7) if i != j and predicted[i] == predicted[j]}
    blends = 0.55 * rows[:, None, 0] + 0.45 * rows[None, :, 0]
    np.fill_diagonal(blends, np.nan)
    pairs = [tuple(np.argwhere(np.isclose(blends, mix))[0]) for mix in mixes[:, 0]]
    assert sorted(i for i, _ in pairs[:7]) == list(range(7))
    assert set(pairs[:7]) <= within
    assert len(pairs) > 7
    assert not set(pairs[7:]) & within
    first, second = zip(*pairs, strict=True)
    assert score == pytest.approx(slow_mixup_validation(clf, rows, predicted, first, second, 0.55))


def test_mixup_validation_prefers_a_boundary_midway_between_clusters():
    """Entropy prefers the confident model whose boundary hugs one cluster; mixup validation prefers the
    one whose boundary runs midway, where mixes of a row from each cluster fall on the dominant row's side."""
    rng = np.random.default_rng(1)
    target = np.concatenate([rng.normal(0, 0.5, 100), rng.normal(6, 0.5, 100)])[:, None]
    y = np.full(200, -1)
    midway = LogisticRegression(C=0.01).fit([[0.0], [6.0]], [0, 1])  # boundary at 3, unsure
    hugging = LogisticRegression(C=1000).fit([[0.5], [1.5]], [0, 1])  # boundary at 1, sure
    assert prediction_entropy_scorer(hugging, target, y) > prediction_entropy_scorer(midway, target, y)
    midway_score, hugging_score = (mixup_validation_scorer(clf, target, y) for clf in (midway, hugging))
    assert midway_score > 0.9  # the mixes across clusters near its boundary can fall on either side
    # Half of its mixes across clusters, those dominated by the cluster it hugs, cross its boundary.
    assert hugging_score < 0.8


def test_mixup_validation_of_a_collapsed_model_is_at_most_one_half():
    rows = np.arange(10.0)[:, None]
    assert mixup_validation_scorer(ByThreshold(100.0), rows, np.full(10, -1)) == 0.5


def test_mixup_validation_mixes_integer_images_in_their_own_dtype_and_frames_with_their_columns():
    pd = pytest.importorskip("pandas")
    images = np.random.default_rng(0).integers(0, 256, size=(6, 1, 3, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = [0, 10, 20, 200, 230, 255]  # what ByThreshold reads
    clf = ByThreshold(100)
    mixup_validation_scorer(clf, images, np.full(6, -1))
    mixes = clf.read[1]
    assert mixes.dtype == np.uint8
    assert mixes.shape[1:] == (1, 3, 3)
    # Each mix is a rounded 0.55/0.45 blend of two of the images, every pixel of it.
    blends = np.rint(0.55 * images[:, None].astype(float) + 0.45 * images[None].astype(float))
    assert all(np.any(np.all(blends == mix, axis=(2, 3, 4))) for mix in mixes)
    frame = pd.DataFrame({"a": np.arange(6.0), "b": np.ones(6)})
    clf = ByThreshold(2.5)
    mixup_validation_scorer(clf, frame, np.full(6, -1))
    assert list(clf.read[1].columns) == ["a", "b"]


class _OnNumpy:
    """A fitted scikit-learn classifier given tensors: it reads them as float64 arrays."""

    def __init__(self, model):
        self.model, self.classes_ = model, model.classes_

    def predict(self, X):
        return self.model.predict(np.asarray(X, dtype=np.float64))


def test_mixup_validation_mixes_integer_features_as_floats_and_refuses_mixes_rounded_back_to_their_rows():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    flags = rng.integers(0, 2, size=(200, 20))
    labels = (flags[:, :10].sum(axis=1) > flags[:, 10:].sum(axis=1)).astype(int)
    learnt = LogisticRegression().fit(flags, labels)
    guessing = LogisticRegression().fit(flags, rng.integers(0, 2, 200))
    target = np.full(200, -1)
    for model in (learnt, guessing):  # rounded back to 0s and 1s, every mix was its dominant row: 1.0 each
        score = mixup_validation_scorer(model, flags, target)
        assert score == mixup_validation_scorer(model, flags.astype(float), target) < 1.0
        for rows in (torch.as_tensor(flags), torch.as_tensor(flags.astype(bool))):  # tensors: not truncated
            assert mixup_validation_scorer(_OnNumpy(model), rows, target) == score
    assert mixup_validation_scorer(learnt, flags, target) > mixup_validation_scorer(guessing, flags, target)
    frame = pd.DataFrame(flags, columns=[f"f{i}" for i in range(20)])  # integer columns keep their dtype
    with pytest.raises(ValueError, match=r"each mix rounds back to its dominant row.*X.astype\(float\)"):
        mixup_validation_scorer(LogisticRegression().fit(frame, labels), frame, target)
    images = np.repeat(flags[:, None, :, None], 2, axis=3).astype(np.uint8)  # 0/1 images of 20×2 pixels
    with pytest.raises(ValueError, match="each mix rounds back to its dominant row"):
        mixup_validation_scorer(ByThreshold(0.5), images, target)


def test_mixup_validation_refuses_what_it_cannot_mix_before_predicting():
    clf = ByThreshold(0.5)
    with pytest.raises(
        ValueError, match="mixup_validation_scorer mixes pairs of target rows, so X must hold"
    ):
        mixup_validation_scorer(clf, ["a text", "another text", "a third"], [-1, -1, -1])
    assert clf.read == []
    with pytest.raises(ValueError, match="mixup_validation_scorer needs at least two target rows"):
        mixup_validation_scorer(clf, np.zeros((3, 1)), [0, 1, -1])
    for ratio in (0.5, 1.0, 2.0):
        scorer = copy.copy(mixup_validation_scorer)
        scorer.mix_ratio = ratio
        with pytest.raises(ValueError, match="mix_ratio"):
            scorer(clf, np.zeros((3, 1)), [-1, -1, -1])
    assert clf.read == []
    assert mixup_validation_scorer.mix_ratio == 0.55  # the shared scorer kept its own


def test_mixup_validation_draws_the_same_pairs_each_call_and_others_with_another_random_state():
    rows = np.random.default_rng(2).normal(size=(40, 1))
    clf = ByThreshold(0.0)
    y = np.full(40, -1)
    assert mixup_validation_scorer(clf, rows, y) == mixup_validation_scorer(clf, rows, y)
    np.testing.assert_array_equal(clf.read[1], clf.read[3])
    scorer = copy.copy(mixup_validation_scorer)
    scorer.random_state = 1
    scorer(clf, rows, y)
    assert not np.array_equal(clf.read[1], clf.read[5])


def test_mixup_validation_ranks_models_by_target_accuracy_better_than_prediction_entropy():
    mixup_correlation, entropy_correlation = correlations_with_target_accuracy(mixup_validation_scorer)
    assert mixup_correlation > 0.2  # 0.27, against -0.17 for prediction entropy
    assert mixup_correlation > entropy_correlation + 0.3


def test_mixup_validation_mixes_each_kind_of_rows_in_its_own_kind():
    """Tensors stay tensors (the library reads them channels first, arrays channels last), each DataFrame
    column keeps its dtype, wide integers mix exactly, and sparse rows stay sparse."""
    pd = pytest.importorskip("pandas")
    scipy_sparse = pytest.importorskip("scipy.sparse")
    y = np.full(4, -1)
    for dtype in (torch.float32, torch.bfloat16, torch.uint8):
        images = torch.arange(4 * 3 * 2 * 2).reshape(4, 3, 2, 2).to(dtype)
        clf = ByThreshold(10)
        mixup_validation_scorer(clf, images, y)
        assert isinstance(clf.read[1], torch.Tensor)
        assert clf.read[1].dtype == dtype
        assert clf.read[1].shape[1:] == (3, 2, 2)
    clf = ByThreshold(10)
    mixup_validation_scorer(clf, list(torch.arange(8.0).reshape(4, 2)), y)  # a list of tensors
    assert isinstance(clf.read[1], torch.Tensor)
    frame = pd.DataFrame(
        {
            "x": [0.0, 1.0, 20.0, 21.0],
            "city": np.array([1, 2, 3, 4]),
            "count": pd.array([1, None, 3, 4], dtype="Int64"),
            "flag": [True, False, True, False],
        }
    )
    clf = ByThreshold(10)
    mixup_validation_scorer(clf, frame, y)
    mixed = clf.read[1]
    assert mixed.dtypes.to_dict() == frame.dtypes.to_dict()
    assert set(mixed["city"]) <= {1, 2, 3, 4}  # 0.55 * 1 + 0.45 * 2 = 1.45, rounded to a whole code
    wide = np.array([[1_700_000_001], [1_700_000_101], [5], [7]], dtype=np.int64)
    clf = ByThreshold(1000)
    mixup_validation_scorer(clf, wide, y)
    assert {int(v) for v in clf.read[1][:, 0]} & {1_700_000_046, 1_700_000_056}  # exact, not float32's
    clf = ByThreshold(10)
    mixup_validation_scorer(clf, scipy_sparse.csr_matrix(np.array([[0.0], [1.0], [20.0], [21.0]])), y)
    assert scipy_sparse.issparse(clf.read[1])


def test_mixup_validation_refuses_images_as_objects_and_rows_of_several_shapes():
    image = pytest.importorskip("PIL.Image")
    pictures = [image.new("P", (4, 4)) for _ in range(3)]
    with pytest.raises(ValueError, match="got rows of type Image"):
        mixup_validation_scorer(ByThreshold(0), pictures, [-1, -1, -1])
    with pytest.raises(ValueError, match="its rows cannot form one array"):
        mixup_validation_scorer(ByThreshold(0), [np.zeros(2), np.zeros(3)], [-1, -1])
    with pytest.raises(ValueError, match="the tensors of the target rows differ in shape"):
        mixup_validation_scorer(ByThreshold(0), [torch.zeros(2), torch.zeros(3)], [-1, -1])
