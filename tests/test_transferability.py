"""Transferability scores: values against slow references, invariances, stability, errors, and the scorers."""

import functools
import itertools
import math
import pickle
import warnings
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import sklearn
import torch
from scipy import optimize
from scipy.linalg import null_space
from scipy.special import softmax
from scipy.stats import multivariate_normal
from sklearn.base import clone
from sklearn.covariance import LedoitWolf, ledoit_wolf_shrinkage
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from sktransfer import PretrainedFeatureExtractor, _transferability_linalg
from sktransfer.exceptions import RenormalizedProbabilitiesWarning
from sktransfer.transferability import (
    gbc_score,
    gbc_scorer,
    h_score,
    h_score_scorer,
    leep_score,
    leep_scorer,
    logme_score,
    logme_scorer,
    make_transferability_scorer,
    nce_score,
    nce_scorer,
)

from ._models import CountingNet, TinyConvNet

EMBEDDING_SCORES = [logme_score, h_score, gbc_score]
OUTPUT_SCORES = [leep_score, nce_score]


# -- slow references, written out from the papers' formulas ------------------------------------------


def slow_logme(features, y, fit_intercept=False):
    """LogME by maximising each class's evidence, a Gaussian density, over (log alpha, log beta) numerically.

    The evidence of the model y = F w + noise, w ~ N(0, I / alpha), noise ~ N(0, I / beta), is the density of y
    under N(0, F F^T / alpha + I / beta). When the features interpolate y exactly, its supremum lies at
    beta = infinity, which the search approaches. With an intercept b of flat prior, y = F w + b 1 + noise:
    integrating b out leaves (up to a constant) the density of Q^T y under N(0, Q^T F F^T Q / alpha + I / beta),
    Q an orthonormal basis of the vectors orthogonal to the ones, in n - 1 dimensions.
    """
    features = np.asarray(features, dtype=float)
    basis = null_space(np.ones((1, len(features)))) if fit_intercept else np.eye(len(features))
    features = basis.T @ features
    gram = features @ features.T

    def minus_evidence(log_params, target):
        alpha, beta = np.exp(log_params)
        covariance = gram / alpha + np.eye(len(target)) / beta
        return -multivariate_normal.logpdf(target, cov=covariance) / len(target)

    values = []
    for label in np.unique(y):
        target = basis.T @ (np.asarray(y) == label).astype(float)
        best = optimize.minimize(
            minus_evidence,
            [0.0, 0.0],
            args=(target,),
            method="Nelder-Mead",
            options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000},
        )
        values.append(-best.fun)
    return float(np.mean(values))


def slow_h_score(features, y, shrinkage):
    """tr(cov^-1 cov_between) with the covariances written out; LedoitWolf's or the pseudo-inverse."""
    features = np.asarray(features, dtype=float)
    mean = features.mean(axis=0)
    between = np.zeros((features.shape[1], features.shape[1]))
    for label in np.unique(y):
        rows = features[np.asarray(y) == label]
        offset = rows.mean(axis=0) - mean
        between += len(rows) / len(features) * np.outer(offset, offset)
    covariance = np.cov(features.T, bias=True)
    if shrinkage is None:
        return float(np.trace(np.linalg.pinv(covariance) @ between))
    if shrinkage == "ledoit_wolf":
        shrinkage = LedoitWolf().fit(features).shrinkage_
        np.testing.assert_allclose(  # sklearn's shrunk covariance is the one described
            LedoitWolf().fit(features).covariance_,
            (1 - shrinkage) * covariance
            + shrinkage * np.trace(covariance) / len(covariance) * np.eye(len(covariance)),
        )
    shrunk = (1 - shrinkage) * covariance + shrinkage * np.trace(covariance) / len(covariance) * np.eye(
        len(covariance)
    )
    return float(np.trace(np.linalg.solve(shrunk, (1 - shrinkage) * between)))


def slow_gbc(features, y, n_components, covariance_type):
    """Minus the sum of exp(-Bhattacharyya distance) over ordered pairs of classes, Gaussians in sklearn's PCA."""
    reduced = PCA(n_components=n_components, svd_solver="full").fit_transform(features)
    y = np.asarray(y)
    stats = []
    for label in np.unique(y):
        rows = reduced[y == label]
        variance = rows.var(axis=0)
        stats.append(
            (
                rows.mean(axis=0),
                np.full_like(variance, variance.mean()) if covariance_type == "spherical" else variance,
            )
        )
    total = 0.0
    for i, (mean_i, var_i) in enumerate(stats):
        for j, (mean_j, var_j) in enumerate(stats):
            if i != j:
                pooled = np.diag((var_i + var_j) / 2)
                distance = (mean_i - mean_j) @ np.linalg.solve(pooled, mean_i - mean_j) / 8 + 0.5 * np.log(
                    np.linalg.det(pooled) / np.sqrt(np.prod(var_i) * np.prod(var_j))
                )
                total += math.exp(-distance)
    return -total


def slow_mackay(features, y, iterations=2000):
    """LogME as You et al. compute it: MacKay's fixed-point updates of alpha and beta, then the evidence."""
    features = np.asarray(features, dtype=float)
    n, d = features.shape
    gram = features.T @ features
    eigenvalues = np.linalg.eigvalsh(gram)
    values = []
    for label in np.unique(y):
        target = (np.asarray(y) == label).astype(float)
        alpha, beta = 1.0, 1.0
        for _ in range(iterations):
            precision = alpha * np.eye(d) + beta * gram
            mean = beta * np.linalg.solve(precision, features.T @ target)
            gamma = np.sum(beta * eigenvalues / (alpha + beta * eigenvalues))
            alpha, beta = gamma / (mean @ mean), (n - gamma) / np.sum((features @ mean - target) ** 2)
        precision = alpha * np.eye(d) + beta * gram
        mean = beta * np.linalg.solve(precision, features.T @ target)
        evidence = (
            n / 2 * math.log(beta)
            + d / 2 * math.log(alpha)
            - n / 2 * math.log(2 * math.pi)
            - beta / 2 * np.sum((features @ mean - target) ** 2)
            - alpha / 2 * mean @ mean
            - np.linalg.slogdet(precision)[1] / 2
        )
        values.append(evidence / n)
    return float(np.mean(values))


def slow_leep(probabilities, y):
    """LEEP sample by sample, source class by source class."""
    n, n_source = probabilities.shape
    labels = sorted(set(y))
    joint = {
        (label, z): sum(probabilities[i, z] for i in range(n) if y[i] == label) / n
        for label in labels
        for z in range(n_source)
    }
    marginal = [sum(joint[label, z] for label in labels) for z in range(n_source)]
    total = 0.0
    for i in range(n):
        total += math.log(sum(joint[y[i], z] / marginal[z] * probabilities[i, z] for z in range(n_source)))
    return total / n


def slow_nce(predicted, y):
    """-H(Y | Z) from counts."""
    pairs = Counter(zip(predicted, y, strict=True))
    sources = Counter(predicted)
    n = len(y)
    return sum(count / n * math.log(count / sources[z]) for (z, _), count in pairs.items())


# -- data ---------------------------------------------------------------------------------------------


def clustered(n_per_class=15, n_features=6, n_classes=3, spread=0.5, seed=0):
    """Gaussian clusters, one per class: features that tell the classes apart, and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, n_features))
    y = np.repeat(np.arange(n_classes), n_per_class)
    return centres[y] + spread * rng.normal(size=(len(y), n_features)), y


def source_logits(y, n_source=5, noise=0.5, seed=0):
    """Logits of a source classifier whose favourite class follows the target label, up to noise."""
    rng = np.random.default_rng(seed)
    logits = noise * rng.normal(size=(len(y), n_source))
    logits[np.arange(len(y)), np.asarray(y) % n_source] += 3.0
    return logits


# -- values ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("shape", [(45, 6), (12, 30), (30, 40)], ids=["n>d", "n<d", "n<d noisy"])
def test_logme_is_the_maximum_evidence(shape, fit_intercept):
    features, y = clustered(
        n_per_class=shape[0] // 3, n_features=shape[1], spread=3.0 if shape == (30, 40) else 0.5
    )
    features = features + 2.0  # away from the origin, where an intercept matters
    expected = slow_logme(features, y, fit_intercept=fit_intercept)
    # Centred features have an exact null direction along the ones, whose computed eigenvalue is rounding noise
    # near the cut that drops it: kept or dropped, the score moves by 1e-8 at most.
    assert logme_score(features, y, fit_intercept=fit_intercept) == pytest.approx(expected, rel=1e-7)


def test_logme_is_the_fixed_point_of_the_papers_iteration():
    features, y = clustered(spread=1.0)
    assert logme_score(features, y, fit_intercept=False) == pytest.approx(slow_mackay(features, y), rel=1e-9)


def test_logme_does_not_reward_features_for_lying_far_from_the_origin():
    """With the intercept, a common offset of the features is neither a free intercept nor a cost."""
    features, y = clustered(spread=1.0)
    offset = features + 50.0 * np.ones(features.shape[1])
    assert logme_score(offset, y) == pytest.approx(logme_score(features, y), rel=1e-9)
    assert logme_score(offset, y) == pytest.approx(logme_score(features - features.mean(axis=0), y), rel=1e-9)
    # The paper's model, without one, fits the indicators' mean 1/3 with the offset and scores it higher.
    assert logme_score(offset, y, fit_intercept=False) > logme_score(features, y, fit_intercept=False) + 0.01


@pytest.mark.parametrize("shrinkage", [None, "ledoit_wolf", 0.3])
def test_h_score_against_the_written_out_covariances(shrinkage):
    features, y = clustered()
    expected = slow_h_score(features, y, shrinkage)
    assert h_score(features, y, shrinkage=shrinkage, adjusted=False) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("shrinkage", "n_features"), [(None, 4), ("ledoit_wolf", 4), (0.3, 4), ("ledoit_wolf", 12), (1e-6, 12)]
)
def test_adjusted_h_score_averages_zero_over_every_labelling(shrinkage, n_features):
    features, _ = clustered(n_per_class=3, n_features=n_features, n_classes=3)
    features = features[:8]  # classes of 3, 3 and 2 samples: 560 distinct labellings
    labellings = {
        tuple(labels)
        for labels in (
            np.array([0, 0, 0, 1, 1, 1, 2, 2])[list(order)] for order in itertools.permutations(range(8))
        )
    }
    raw = [h_score(features, labels, shrinkage=shrinkage, adjusted=False) for labels in labellings]
    adjusted = [h_score(features, labels, shrinkage=shrinkage) for labels in labellings]
    assert len(labellings) == 560
    assert np.mean(raw) > 0.5  # the class means of a few samples lie apart by chance
    assert np.mean(adjusted) == pytest.approx(0.0, abs=1e-9)
    assert max(adjusted) <= 1.0
    # The adjustment is the same for every labelling: the score is an increasing affine map of the raw one.
    slope, _ = np.polyfit(raw, adjusted, 1)
    assert slope > 0
    np.testing.assert_allclose(np.corrcoef(raw, adjusted)[0, 1], 1.0, rtol=1e-9)


def test_adjusted_h_score_is_one_for_perfect_separation_and_continuous_in_a_tiny_shrinkage():
    y = np.repeat([0, 1, 2], 5)
    one_hot = np.eye(3)[y] + 1e-3 * np.random.default_rng(0).normal(size=(15, 3))
    assert h_score(np.eye(3)[y], y, shrinkage=None) == pytest.approx(1.0)
    assert 0.99 < h_score(one_hot, y, shrinkage=None) <= 1.0
    # More dimensions than samples: the room above chance shrinks with the shrinkage, the score does not jump.
    features, labels = clustered(n_per_class=4, n_features=20)
    scores = [h_score(features, labels, shrinkage=amount) for amount in (1e-10, 1e-8, 1e-6)]
    np.testing.assert_allclose(scores, scores[-1], rtol=1e-4)
    assert scores[-1] > 0.1


def test_adjusted_h_score_ranks_separated_classes_above_wide_noise():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 15)
    features = rng.normal(size=(30, 3))
    features[:, 0] += 1.2 * y  # the classes lie apart along one of three directions
    noise = rng.normal(size=(30, 25))
    # Without the adjustment, 25 directions of chance separation outscore one of real separation.
    assert h_score(noise, y, shrinkage=None, adjusted=False) > h_score(
        features, y, shrinkage=None, adjusted=False
    )
    assert h_score(features, y, shrinkage=None) > 0.1 > h_score(noise, y, shrinkage=None)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
@pytest.mark.parametrize(("shape", "n_components"), [((45, 6), 4), ((45, 6), None), ((12, 30), 64)])
def test_gbc_against_the_written_out_gaussians(shape, n_components, covariance_type):
    features, y = clustered(n_per_class=shape[0] // 3, n_features=shape[1], spread=1.5)
    kept = min(shape[0] - 1, shape[1]) if n_components is None else min(n_components, shape[0] - 1, shape[1])
    expected = slow_gbc(features, y, kept, covariance_type)
    assert gbc_score(
        features, y, n_components=n_components, covariance_type=covariance_type
    ) == pytest.approx(expected, rel=1e-9)


def test_gbc_lies_between_classes_that_cannot_be_told_apart_and_classes_apart():
    features, y = clustered(spread=0.01)
    assert -1e-6 < gbc_score(features, y) <= 0
    assert gbc_score(np.zeros((15, 4)), np.repeat([0, 1, 2], 5)) == -6.0  # n_classes (n_classes - 1)
    shared = np.random.default_rng(0).normal(size=(200, 3))
    assert gbc_score(np.vstack([shared, shared]), np.repeat([0, 1], 200)) == pytest.approx(-2.0)


def test_gbc_needs_two_rows_of_each_class():
    features, y = clustered()
    with pytest.raises(ValueError, match="class 'moth' has a single row of features"):
        gbc_score(features[:31], np.array(["ant", "bee", "moth"])[y[:31]])


@pytest.mark.parametrize("n_features", [5, 40])
def test_ledoit_wolf_shrinkage_from_eigenvalues_is_sklearns(n_features):
    features, y = clustered(n_per_class=10, n_features=n_features)
    centred = features - features.mean(axis=0)
    sigma, _, _ = _transferability_linalg.spectral_projections(centred, np.eye(3)[y])
    ours = _transferability_linalg.ledoit_wolf_shrinkage(centred, sigma)
    assert ours == pytest.approx(ledoit_wolf_shrinkage(features), rel=1e-9)


def test_h_score_of_one_column_is_not_zeroed_by_rounding():
    # One column's covariance is a multiple of the identity: Ledoit-Wolf shrinks nothing. Rounding made the
    # distance to it a tiny positive number in 79 of 200 draws, full shrinkage followed, and the score was 0.
    for seed in range(20):
        rng = np.random.default_rng(seed)
        y = np.repeat([0, 1], 30)
        features = (3.0 * y + rng.normal(size=60))[:, None]
        assert h_score(features, y) == pytest.approx(h_score(features, y, shrinkage=None), rel=1e-12)


def test_small_directions_beside_a_wide_column_are_kept():
    # From the Gram matrix F^T F, whose eigenvalues square the scales, the informative directions of scale 1
    # beside a column of scale 1e8 fell under the rounding cut: LogME dropped by 0.15, GBC moved.
    features, y = clustered(n_per_class=100)
    scores = {}
    for big in (1e5, 1e8):
        wide = np.column_stack([features, big * np.random.default_rng(1).normal(size=len(y))])
        scores[big] = logme_score(wide, y)
        expected = slow_gbc(wide, y, wide.shape[1], "spherical")
        assert gbc_score(wide, y, covariance_type="spherical") == pytest.approx(expected, rel=1e-9)
    assert abs(scores[1e8] - scores[1e5]) < 0.03  # a smooth trend: about -0.005 a decade


def test_float32_rounding_of_rank_deficient_features_is_no_direction():
    # A float32 layer wider than its input: rank 2 in 20 columns. Cut at float64's resolution, float32's
    # rounding directions counted as principal components and GBC read near-perfect separation (-0.04).
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    narrow = np.c_[y + 0.5 * rng.normal(size=60), rng.normal(size=60)]
    weights = rng.normal(size=(2, 20))
    exact = narrow @ weights
    rounded = (narrow.astype(np.float32) @ weights.astype(np.float32)).astype(np.float32)
    assert gbc_score(rounded, y) == pytest.approx(gbc_score(exact, y), rel=1e-3)
    unshrunk = functools.partial(h_score, shrinkage=None, adjusted=False)
    assert unshrunk(rounded, y) == pytest.approx(unshrunk(exact, y), rel=1e-3)
    assert unshrunk(torch.from_numpy(rounded), y) == pytest.approx(unshrunk(exact, y), rel=1e-3)


def test_leep_and_nce_against_counting_references():
    y = np.array([0, 0, 1, 1, 2, 2, 2, 0, 1, 2])
    logits = source_logits(y, n_source=4, noise=2.0)
    probabilities = softmax(logits, axis=1)
    assert leep_score(probabilities, y) == pytest.approx(slow_leep(probabilities, list(y)), rel=1e-12)
    predicted = probabilities.argmax(axis=1).tolist()
    assert nce_score(predicted, y) == pytest.approx(slow_nce(predicted, list(y)), rel=1e-12)


def test_logits_and_probabilities_give_the_same_leep_and_nce():
    y = np.repeat(["a", "b", "c"], 5)
    logits = source_logits(np.repeat([0, 1, 2], 5))
    probabilities = softmax(logits, axis=1)
    assert leep_score(logits, y) == pytest.approx(leep_score(probabilities, y), rel=1e-12)
    assert leep_score(probabilities.astype(np.float32), y) == pytest.approx(
        leep_score(probabilities, y), rel=1e-6
    )
    assert nce_score(logits, y) == nce_score(probabilities, y) == nce_score(probabilities.argmax(axis=1), y)


def test_nce_of_many_predicted_source_classes_does_not_warn_about_y():
    # 40 images predicted into ~30 ImageNet classes: scikit-learn's "y could represent a regression
    # problem" warning named y, which has two classes here.
    y = np.repeat([0, 1], 20)
    predicted = np.random.default_rng(0).integers(0, 1000, size=40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nce_score(predicted, y) == nce_score(np.eye(1000)[predicted], y)


def test_nce_refuses_one_logit_per_sample_naming_what_to_pass():
    y = np.repeat(["a", "b"], 5)
    logit = np.linspace(-2, 2, 10)
    for output in (logit, logit[:, None]):
        with pytest.raises(ValueError, match=r"not a class label.*np\.column_stack"):
            nce_score(output, y)
    assert nce_score(np.column_stack([np.zeros_like(logit), logit]), y) == 0.0


def test_rounded_truncated_and_bfloat16_probabilities_are_read_as_probabilities():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, size=200)
    probabilities = softmax(2 * rng.normal(size=(200, 1000)) + 3 * np.eye(1000)[y * 200], axis=1)
    exact = leep_score(probabilities, y)
    halved = torch.from_numpy(probabilities).to(torch.bfloat16).float().numpy()
    assert leep_score(halved, y) == pytest.approx(exact, abs=0.02)
    rounded = probabilities.round(3)
    assert np.abs(rounded.sum(axis=1) - 1).max() > 0.05  # a thousand small roundings
    with pytest.warns(RenormalizedProbabilitiesWarning, match="read as probabilities and renormalised"):
        assert leep_score(rounded, y) == pytest.approx(exact, abs=0.05)
    uniform = np.zeros((200, 1000))  # logits that say nothing, not probabilities
    assert leep_score(uniform, y) == pytest.approx(leep_score(uniform - 1, y))
    with pytest.raises(ValueError, match=r"all zeros at samples \[0\]"):  # a missing row among probabilities
        leep_score(np.vstack([np.zeros(1000), probabilities[1:]]), y)


def test_probabilities_off_the_unit_interval_by_rounding_are_read_as_probabilities():
    y = np.repeat([0, 1], 20)
    probabilities = softmax(source_logits(y), axis=1)
    exact = leep_score(probabilities, y)
    below, above = probabilities.copy(), probabilities.copy()
    below[0, 1] = -1e-12  # a column computed as 1 - the others' sum
    above[0, 0] = 1 + 1e-9
    for rounded in (below, above):
        assert leep_score(rounded, y) == pytest.approx(exact, abs=0.01)  # not softmaxed as logits
    beyond = probabilities.copy()
    beyond[0, 1] = -1e-4  # beyond rounding: logits
    assert leep_score(beyond, y) == pytest.approx(leep_score(softmax(beyond, axis=1), y))


def test_known_values():
    y = np.array([0, 0, 0, 1])
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    uninformative = np.full((4, 3), 1 / 3)
    assert leep_score(uninformative, y) == pytest.approx(-entropy)  # mean log p(y) over the rows
    assert nce_score(["z"] * 4, y) == pytest.approx(-entropy)
    assert nce_score(y + 10, y) == 0.0


def test_shrinkage_keeps_the_h_score_informative_when_n_samples_is_below_n_features():
    features, labels = clustered(n_per_class=4, n_features=20)
    noise = np.random.default_rng(1).normal(size=features.shape)
    # The pseudo-inverse sees n_classes - 1 in any 20-d features of 12 samples, the shrunk covariance does not.
    assert h_score(features, labels, shrinkage=None, adjusted=False) == pytest.approx(2.0)
    assert h_score(noise, labels, shrinkage=None, adjusted=False) == pytest.approx(2.0)
    # Adjusted for chance, features that fit every labelling score 0.
    assert h_score(features, labels, shrinkage=None) == 0.0
    assert h_score(features, labels, adjusted=False) > 2 * h_score(noise, labels, adjusted=False)
    assert h_score(features, labels) > 0.5 > 0.1 > h_score(noise, labels)
    for values in (features, noise, features[:, :3]):
        assert 0 <= h_score(values, labels, adjusted=False) <= 2.0
        assert h_score(values, labels) <= 1.0


def test_more_separable_scores_higher():
    good, y = clustered(spread=0.3)
    noisy = good + 3.0 * np.random.default_rng(1).normal(size=good.shape)
    for score in EMBEDDING_SCORES:
        assert score(good, y) > score(noisy, y), score.__name__
    informative = source_logits(y, noise=0.3)
    uninformative = np.random.default_rng(2).normal(size=informative.shape)
    for score in OUTPUT_SCORES:
        assert score(informative, y) > score(uninformative, y), score.__name__


# -- invariances ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("score", EMBEDDING_SCORES + OUTPUT_SCORES, ids=lambda f: f.__name__)
def test_row_order_and_label_names_do_not_matter(score):
    features, y = clustered()
    if score in OUTPUT_SCORES:
        features = source_logits(y)
    reference = score(features, y)
    order = np.random.default_rng(0).permutation(len(y))
    assert score(features[order], y[order]) == pytest.approx(reference, rel=1e-9)
    names = np.array(["zebra", "ant", "moth"], dtype=object)[y]
    assert score(features, names) == pytest.approx(reference, rel=1e-9)
    assert score(features, list(names)) == pytest.approx(reference, rel=1e-9)


def test_embedding_scores_ignore_the_scale_of_the_features():
    features, y = clustered()
    for scale in (1e-6, 1e6):
        assert logme_score(scale * features, y) == pytest.approx(logme_score(features, y), rel=1e-7)
        assert h_score(scale * features + 5, y) == pytest.approx(h_score(features, y), rel=1e-7)
        assert gbc_score(scale * features + 5, y) == pytest.approx(gbc_score(features, y), rel=1e-7)
    for scale in (1e-150, 1e100, 1e160):  # squares and products would underflow or overflow
        for score in (logme_score, h_score, gbc_score):
            assert score(scale * features, y) == pytest.approx(score(features, y), rel=1e-7)
    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))[0]
    assert gbc_score(features @ rotation, y) == pytest.approx(gbc_score(features, y), rel=1e-7)


def test_inputs_are_not_modified():
    features, y = clustered()
    logits = source_logits(y)
    copies = features.copy(), logits.copy(), y.copy()
    for score in EMBEDDING_SCORES:
        score(features, y)
    for score in OUTPUT_SCORES:
        score(logits, y)
    for before, after in zip(copies, (features, logits, y), strict=True):
        np.testing.assert_array_equal(before, after)


# -- numerical stability ----------------------------------------------------------------------------


def degenerate_features():
    features, y = clustered(n_per_class=5, n_features=4)
    return {
        "duplicated": (np.hstack([features, features, features]), y),
        "collinear": (np.hstack([features, features @ np.ones((4, 3)), 1e-9 * features[:, :1]]), y),
        "n<d": (np.hstack([features, np.random.default_rng(0).normal(size=(15, 60))]), y),
        "constant column": (np.hstack([features, np.full((15, 1), 7.0)]), y),
        "float32 huge": ((features * 1e15).astype(np.float32), y),
        "one class unspanned": (np.where((y == 0)[:, None], 0.0, features), y),
        "all zero": (np.zeros((15, 4)), y),
    }


@pytest.mark.parametrize("case", list(degenerate_features()))
@pytest.mark.parametrize("score", EMBEDDING_SCORES, ids=lambda f: f.__name__)
def test_degenerate_features_give_finite_scores_without_warnings(score, case):
    features, y = degenerate_features()[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = score(features, y)
    assert np.isfinite(value)


def test_duplicated_columns_change_no_h_score_and_little_logme():
    features, y = clustered()
    doubled = np.hstack([features, features])
    assert h_score(doubled, y, shrinkage=None) == pytest.approx(
        h_score(features, y, shrinkage=None), rel=1e-9
    )
    assert abs(logme_score(doubled, y) - logme_score(features, y)) < 0.05


@pytest.mark.parametrize("adjusted", [True, False])
def test_constant_columns_change_no_h_score(adjusted):
    features, y = clustered()
    noise = 1e-9 * np.random.default_rng(0).normal(size=(len(features), 50))  # varying by rounding noise only
    dead = np.hstack([features, np.zeros((len(features), 100)), np.full((len(features), 3), 0.1), noise])
    score = h_score(features, y, adjusted=adjusted)
    assert h_score(dead, y, adjusted=adjusted) == pytest.approx(score, rel=1e-9)
    assert h_score(dead + 1e8, y, adjusted=adjusted) == pytest.approx(
        score, rel=1e-6
    )  # still shift-invariant
    assert h_score(np.full((len(features), 4), 0.1), y, adjusted=adjusted) == 0.0  # nothing varies


def test_extreme_logits_give_finite_source_scores():
    y = np.repeat([0, 1], 4)
    logits = np.where(np.eye(8, 3, dtype=bool), 1e4, -1e4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(leep_score(logits, y))
        assert np.isfinite(nce_score(logits, y))


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("score", EMBEDDING_SCORES + OUTPUT_SCORES, ids=lambda f: f.__name__)
def test_bad_inputs_are_named(score):
    features, y = clustered()
    if score in OUTPUT_SCORES:
        features = source_logits(y)
    name = "features" if score in EMBEDDING_SCORES else "source_output"
    with_nan = features.copy()
    with_nan[3, 1] = np.nan
    with pytest.raises(ValueError, match=f"{name} contains NaN"):
        score(with_nan, y)
    with pytest.raises(ValueError, match=f"y has 44 labels for the 45 rows of {name}"):
        score(features, y[:-1])
    with pytest.raises(ValueError, match="y has a single class \\('cat'\\)"):
        score(features, ["cat"] * len(y))
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        score(features, np.linspace(0, 1, len(y)))
    for blank in (np.nan, None, pd.NA):  # a label the user left blank is named, whatever its type
        labels = pd.Series([*y[:-2], blank, y[-1]], dtype="string" if blank is pd.NA else object)
        with pytest.raises(ValueError, match=r"y holds missing labels \(NaN, None or NA\) at samples \[43\]"):
            score(features, labels)
    with pytest.raises(ValueError, match=r"y holds missing labels .* at samples \[44\]"):
        score(features, np.r_[np.unique(y, return_inverse=True)[1][:-1], np.nan])
    with pytest.raises(ValueError, match=r"y holds infinite labels at samples \[44\]"):
        score(features, np.r_[np.unique(y, return_inverse=True)[1][:-1], np.inf])
    with pytest.raises(ValueError, match="The 'y' parameter"):
        score(features, None)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="Expected 2D array"):
        logme_score(np.arange(4.0), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="source_output has one column"):
        leep_score(np.ones((4, 1)), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="source_output has 1 sample"):
        nce_score(["z"], ["a"])
    with pytest.raises(ValueError, match="The 'shrinkage' parameter of h_score"):
        h_score(np.eye(4), [0, 0, 1, 1], shrinkage=2.0)


# -- scorers --------------------------------------------------------------------------------------------


class Blind(nn.Module):
    """A network whose features ignore the image: noise drawn from a fixed seed."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        generator = torch.Generator().manual_seed(len(x))
        return self.scale * torch.randn(len(x), 5, generator=generator)


def tiny_extractor(**params):
    return PretrainedFeatureExtractor(model=TinyConvNet(), device="cpu", **params)


def test_scorers_read_the_transform_before_a_classifier(labelled_images):
    X, y = labelled_images
    extractor = tiny_extractor().fit(X)
    features = extractor.transform(X)
    with_classifier = Pipeline([("emb", tiny_extractor()), ("clf", LogisticRegression())]).fit(X, y)
    passthrough = Pipeline([("emb", tiny_extractor()), ("clf", "passthrough")]).fit(X, y)
    for scorer, score in [(logme_scorer, logme_score), (h_score_scorer, h_score), (gbc_scorer, gbc_score)]:
        expected = score(features, y)
        for estimator in (extractor, with_classifier, passthrough):
            assert scorer(estimator, X, y) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(TypeError, match="logme_scorer scores the features a transformer gives"):
        logme_scorer(LogisticRegression().fit(features, y), features, y)
    with pytest.raises(TypeError, match="Pipeline transforms nothing before it predicts"):
        logme_scorer(Pipeline([("clf", LogisticRegression())]).fit(features, y), features, y)


@pytest.mark.parametrize("split", ["folds", "every row"])
def test_grid_search_ranks_by_one_embedding_pass_per_candidate(labelled_images, split):
    X, y = labelled_images
    rows = np.arange(len(y))
    cv = StratifiedKFold(3, shuffle=True, random_state=0) if split == "folds" else [(rows, rows)]
    CountingNet.calls.clear()
    search = GridSearchCV(
        PretrainedFeatureExtractor(model=CountingNet, device="cpu"),
        {"pooling": ["avg", "max"]},
        scoring=logme_scorer,
        cv=cv,
    ).fit(X, y)
    # Each image once per candidate, by the scorer: fit loads the weights and runs one blank input only.
    assert CountingNet.image_rows() == 2 * len(X)
    if split == "every row":
        for params, value in zip(
            search.cv_results_["params"], search.cv_results_["mean_test_score"], strict=True
        ):
            features = PretrainedFeatureExtractor(model=CountingNet, device="cpu", **params).fit_transform(X)
            assert value == pytest.approx(logme_score(features, y), rel=1e-6)


@pytest.mark.parametrize(
    ("scorer", "layer"),
    [
        (logme_scorer, None),
        (h_score_scorer, None),
        (gbc_scorer, None),
        (leep_scorer, "fc"),
        (nce_scorer, "fc"),
    ],
    ids=repr,
)
def test_grid_search_ranks_a_seeing_network_above_a_blind_one(labelled_images, scorer, layer):
    X, y = labelled_images
    search = GridSearchCV(
        Pipeline([("emb", tiny_extractor())]),
        [{"emb__model": [TinyConvNet()], "emb__layer": [layer]}, {"emb__model": [Blind()]}],
        scoring=scorer,
        cv=KFold(2, shuffle=True, random_state=0),
    ).fit(X, y)
    assert isinstance(search.best_params_["emb__model"], TinyConvNet)
    assert search.best_estimator_["emb"].n_features_out_ == (5 if layer == "fc" else 8)


def test_scorers_work_under_metadata_routing_and_pickle(labelled_images):
    X, y = labelled_images
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(
            tiny_extractor(), {"pooling": ["avg", "max"]}, scoring=logme_scorer, cv=StratifiedKFold(2)
        )
        assert np.all(np.isfinite(search.fit(X, y).cv_results_["mean_test_score"]))
    for scorer in (logme_scorer, h_score_scorer, gbc_scorer, leep_scorer, nce_scorer):
        assert repr(pickle.loads(pickle.dumps(scorer))) == repr(scorer)


def test_a_made_scorer_passes_its_arguments(labelled_images):
    X, y = labelled_images
    extractor = tiny_extractor().fit(X)
    scorer = make_transferability_scorer(h_score, shrinkage=None)
    assert scorer(extractor, X, y) == pytest.approx(h_score(extractor.transform(X), y, shrinkage=None))
    assert repr(scorer) == "make_transferability_scorer(h_score, shrinkage=None)"
    partial_scorer = make_transferability_scorer(functools.partial(h_score, shrinkage=None))
    assert partial_scorer(extractor, X, y) == scorer(extractor, X, y)
    assert repr(partial_scorer).startswith("make_transferability_scorer(functools.partial(<function h_score")


def test_scorers_pickled_before_they_had_a_module_of_their_own_still_load():
    new = b"sktransfer._transferability_scorers\nTransferabilityScorer"
    data = pickle.dumps(logme_scorer, protocol=0)
    assert new in data
    old = data.replace(new, b"sktransfer.transferability\n_TransferabilityScorer")
    assert repr(pickle.loads(old)) == "logme_scorer"


def test_a_final_pipeline_has_its_own_transforms_scored():
    # An extractor then make_pipeline(scaler, PCA, classifier): the PCA's output is what the classifier reads.
    X, y = load_digits(return_X_y=True)
    X, y = X[:300], y[:300]
    grid = {"n_components": [2, 8, 32]}
    flat = Pipeline(
        [
            ("scale", StandardScaler()),
            ("pca", PCA(random_state=0)),
            ("clf", LogisticRegression(max_iter=2000)),
        ]
    )
    nested = Pipeline(
        [
            ("scale", StandardScaler()),
            ("model", make_pipeline(PCA(random_state=0), LogisticRegression(max_iter=2000))),
        ]
    )
    search = GridSearchCV(clone(nested[-1]), {"pca__n_components": grid["n_components"]}, cv=3)
    searched = Pipeline([("scale", StandardScaler()), ("search", search)])
    scores = []
    for n_components in grid["n_components"]:
        flat.set_params(pca__n_components=n_components).fit(X, y)
        nested.set_params(model__pca__n_components=n_components).fit(X, y)
        assert logme_scorer(nested, X, y) == logme_scorer(flat, X, y)
        scores.append(logme_scorer(flat, X, y))
    assert len(set(scores)) == 3
    best = searched.fit(X, y)[-1].best_params_["pca__n_components"]
    assert logme_scorer(searched, X, y) == scores[grid["n_components"].index(best)]
    # a fitted model kept through a search as a FrozenEstimator, alone or as the final step
    assert logme_scorer(FrozenEstimator(flat), X, y) == scores[-1]
    assert logme_scorer(make_pipeline(FrozenEstimator(flat)), X, y) == scores[-1]
    assert logme_scorer(FrozenEstimator(searched), X, y) == scores[grid["n_components"].index(best)]
