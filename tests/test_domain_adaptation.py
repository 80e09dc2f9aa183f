import copy
import pickle
import warnings

import numpy as np
import pytest
import sklearn
import torch
from scipy.stats import entropy
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.metadata_routing import get_routing_for_object

import sktransfer._training_data
from sktransfer import DomainAdaptedClassifier, ImportanceWeightingClassifier
from sktransfer.domain_adaptation import (
    FeatureAlignmentClassifier,
    NoTargetDataWarning,
    PooledDomainsWarning,
    deep_embedded_validation_scorer,
    importance_weighted_scorer,
    mixup_validation_scorer,
    neighborhood_consistency_scorer,
    prediction_entropy_scorer,
)
from sktransfer.domain_adaptation.deep import METHODS
from sktransfer.domain_adaptation.domain_batches import DomainBalancedBatchSampler
from sktransfer.exceptions import IgnoredSettingWarning

from ._models import TinyConvNet
from ._models import tiny_domain_adapted as deep


@pytest.fixture
def shifted_features():
    """Two Gaussian classes; the target domain is mixed by a symmetric positive definite map and moved."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=200)
    scales, centres = [1, 3, 0.5, 1], labels[:, None] * [2.5, 0, 0, 0]
    source = rng.normal(size=(200, 4)) * scales + centres
    mixing = rng.normal(size=(4, 4))
    target = (rng.normal(size=(200, 4)) * scales + centres) @ (mixing @ mixing.T / 4 + np.eye(4)) + 3
    X = np.concatenate([source, target])
    y = np.concatenate([labels, np.full(200, -1)])
    return X, y, labels


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_and_predicts_one_row_per_input(shifted_images, method):
    X, y, y_source = shifted_images
    clf = deep(method=method).fit(X, y)
    assert clf.classes_.tolist() == ["bright", "dark"]
    assert clf.predict(X[-5:]).shape == (5,)
    predictions = clf.predict(X)
    assert predictions.dtype == y.dtype
    assert {type(label) for label in predictions} == {str}
    # Brightness separates the classes in both domains; a constant prediction gets 0.5 of the target rows.
    assert np.mean(predictions[len(y_source) :] == y_source) > 0.9
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1.0)
    assert clf.embed(X[:3]).shape == (3, 256)


def test_grid_search_with_minus_one_labels(shifted_images):
    X, y, _ = shifted_images
    y = np.array([-1 if label == -1 else int(label == "dark") for label in y])  # stratified splits sort y
    search = GridSearchCV(
        deep(method="coral"), {"trade_off": [0.1, 1.0]}, cv=2, scoring=prediction_entropy_scorer
    ).fit(X, y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.predict(X[:4]).shape == (4,)


def test_routed_sample_domain_through_pipeline_and_grid_search(shifted_images):
    X, _, y_source = shifted_images
    y = np.concatenate([y_source, y_source])  # target labels given, but masked by the negative domain
    domains = np.repeat([1, -2], len(y_source))
    folds = list(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))  # both domains in each fold
    with sklearn.config_context(enable_metadata_routing=True):
        clf = deep(method="mmd", max_epochs=1).set_fit_request(sample_domain=True)
        search = GridSearchCV(clf, {"lr": [1e-3, 1e-2]}, cv=folds, scoring=prediction_entropy_scorer)
        search.fit(X, y, sample_domain=domains)
        assert search.best_estimator_.predict(X[:3]).shape == (3,)
        # The scorer got each fold's sample_domain and read its target rows alone.
        for candidate, params in enumerate(search.cv_results_["params"]):
            for fold, (train, test) in enumerate(folds):
                fitted = clone(clf).set_params(**params).fit(X[train], y[train], sample_domain=domains[train])
                proba = fitted.predict_proba(X[test][domains[test] < 0])
                target_only = np.mean(np.sum(proba * np.log(proba), axis=1))
                direct = prediction_entropy_scorer(fitted, X[test], y[test], sample_domain=domains[test])
                assert direct == pytest.approx(target_only)
                assert search.cv_results_[f"split{fold}_test_score"][candidate] == pytest.approx(direct)
        shallow = FeatureAlignmentClassifier().set_fit_request(sample_domain=True)
        rng = np.random.default_rng(0)
        features = rng.normal(size=(len(X), 6))
        pipeline = make_pipeline(StandardScaler(), shallow).fit(features, y, sample_domain=domains)
        assert pipeline.predict(features).shape == (len(X),)


@pytest.mark.parametrize(
    "params", [{"method": "dann"}, {"method": "cdan", "partial": True}, {"method": "self_training"}]
)
def test_masked_target_labels_do_not_change_the_fit(shifted_images, params):
    X, _, y_source = shifted_images
    domains = np.repeat([1, -1], len(y_source))
    rng = np.random.default_rng(1)
    one = np.concatenate([y_source, y_source])
    other = np.concatenate([y_source, rng.permutation(y_source)])
    first = deep(**params).fit(X, one, sample_domain=domains).predict_proba(X)
    second = deep(**params).fit(X, other, sample_domain=domains).predict_proba(X)
    np.testing.assert_array_equal(first, second)
    minus_one = np.concatenate([y_source, np.full(len(y_source), -1, dtype=object)]).astype(object)
    third = deep(**params).fit(X, minus_one).predict_proba(X)
    np.testing.assert_array_equal(first, third)


@pytest.mark.parametrize("method", ["dann", "cdan", "self_training"])
def test_two_fits_give_identical_predictions_and_pickle_round_trips(shifted_images, method):
    X, y, _ = shifted_images
    first = deep(method=method, dropout=0.2, partial=True).fit(X, y)
    second = deep(method=method, dropout=0.2, partial=True).fit(X, y)
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    restored = pickle.loads(pickle.dumps(first))
    np.testing.assert_array_equal(restored.predict_proba(X), first.predict_proba(X))


@pytest.mark.parametrize("method", ["cdan", "self_training"])
def test_batches_preprocessed_on_the_device_adapt_alike(
    shifted_images, method, monkeypatch, raw_batches_moved
):
    # On a GPU the library's own preprocessing runs there, on each batch as loaded; the self-training copy
    # of the network then picks the batch's target rows, per-domain BatchNorm each domain's.
    X, y, _ = shifted_images
    params = {"model": "resnet18", "weights": None, "method": method, "self_training_epochs": 1}
    expected = deep(**params).fit(X, y).predict_proba(X)
    monkeypatch.setattr(sktransfer._training_data, "preprocesses_on_the_gpu", lambda *args: True)
    np.testing.assert_array_equal(deep(**params).fit(X, y).predict_proba(X), expected)
    assert {len(images) for images in raw_batches_moved} == {
        8
    }  # whole batches, half source, half target, preprocessed before the step


def test_batches_are_half_source_half_target():
    is_target = np.array([False] * 10 + [True] * 3)
    sampler = DomainBalancedBatchSampler(is_target, batch_size=4)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5
    assert sorted(i for batch in batches for i in batch if i < 10) == list(range(10))
    assert all(sum(i >= 10 for i in batch) == sum(i < 10 for i in batch) == 2 for batch in batches)


@pytest.mark.parametrize("n_source", [2, 3, 5, 7, 9])
def test_no_batch_holds_a_single_source_row(n_source):
    is_target = np.array([False] * n_source + [True] * 3)
    batches = list(DomainBalancedBatchSampler(is_target, batch_size=4))
    assert sorted(i for batch in batches for i in batch if i < n_source) == list(range(n_source))
    assert all(sum(i < n_source for i in batch) >= 2 for batch in batches)
    assert max(map(len, batches)) - min(map(len, batches)) <= 2  # a row of each domain at most


def test_batches_too_small_for_batchnorm_by_domain_are_refused_before_training(shifted_images):
    X, y, _ = shifted_images
    clf = deep(batch_size=3)
    with pytest.raises(ValueError, match="batch_size=3 gives each training batch 1 source row"):
        clf.fit(X, y)
    assert not clf.initialized_
    deep(batch_size=2, domain_batchnorm=False, max_epochs=1).fit(X, y)  # one row of each domain: fine
    source = np.asarray(y, dtype=object) != -1
    deep(batch_size=2, max_epochs=1).fit(X[source], y[source])  # no target rows: batches of two source rows
    with pytest.raises(ValueError, match="batch_size=1 gives training batches of one row"):
        deep(batch_size=1).fit(X[source], y[source])


def test_reversal_strength_warms_up(shifted_images):
    X, y, _ = shifted_images
    clf = deep(method="dann", max_epochs=3)
    seen = []
    original = clf.on_batch_begin

    def record(net, batch=None, training=False, **kwargs):
        original(net, batch=batch, training=training, **kwargs)
        if training:
            seen.append(net.module_.reversal)

    clf.on_batch_begin = record
    clf.fit(X, y)
    assert seen[0] == 0.0
    assert seen == sorted(seen)
    assert 0.9 < seen[-1] < 1.0


@pytest.mark.parametrize("method", ["mcc", "mmd", "coral"])
def test_the_other_alignment_losses_warm_up_alike(shifted_images, method):
    """No alignment at full weight on an untrained head: the loss weight follows the reversal schedule."""
    X, y, _ = shifted_images
    clf = deep(method=method, max_epochs=3, trade_off=2.0)
    losses = []
    clf._alignment = lambda y_pred, *args: y_pred[0].sum() * 0 + 100.0  # an alignment of known size
    original = clf.get_loss

    def record(y_pred, y_true, X=None, training=False):
        loss = original(y_pred, y_true, X=X, training=training)
        if training:
            losses.append(float(loss) - float(clf.criterion_(y_pred[0][y_true != -1], y_true[y_true != -1])))
        return loss

    clf.get_loss = record
    clf.fit(X, y)
    assert losses[0] == pytest.approx(0.0, abs=1e-4)  # 2 * 100 * 0 on the first batch
    assert losses == sorted(losses)
    assert 0.9 * 200 < losses[-1] < 200


@pytest.mark.parametrize("method", ["mmd", "coral"])
@pytest.mark.parametrize("alignment_layer", [None, "logits", "bottleneck"])
def test_distances_align_the_chosen_layer(method, alignment_layer):
    """MMD and CORAL measure the logits by default (Deep CORAL's fc8), the bottleneck on request."""
    from sktransfer.domain_adaptation.losses import SmoothedCoralLoss, mmd_loss

    params = {} if alignment_layer is None else {"alignment_layer": alignment_layer}
    clf = DomainAdaptedClassifier(method=method, **params)
    clf._n_sources = 1
    generator = torch.Generator().manual_seed(0)
    logits, features = torch.randn(8, 3, generator=generator), torch.randn(8, 5, generator=generator)
    codes = torch.tensor([0, 1, 2, 0, -1, -1, -1, -1])
    aligned = features if alignment_layer == "bottleneck" else logits
    distance = mmd_loss if method == "mmd" else SmoothedCoralLoss()
    expected = distance(aligned[:4], aligned[4:])
    got = clf._alignment((logits, features), codes, codes[:4] % 3, codes[:4] // 3, torch.ones(3))
    assert float(got) == pytest.approx(float(expected))


@pytest.mark.parametrize("method", ["mmd", "coral"])
def test_the_aligned_layer_reaches_the_fit(shifted_images, method):
    X, y, _ = shifted_images
    logits = deep(method=method).fit(X, y).predict_proba(X)
    bottleneck = deep(method=method, alignment_layer="bottleneck").fit(X, y).predict_proba(X)
    assert not np.allclose(logits, bottleneck)


def test_bad_input_is_refused_early(shifted_images):
    X, y, _ = shifted_images
    with pytest.raises(ValueError, match="no labelled source rows"):
        deep().fit(X, np.full(len(X), -1))
    with pytest.raises(ValueError, match="sample_domain has 3 values but X has 48 rows"):
        deep().fit(X, y, sample_domain=[1, 1, -1])
    with pytest.raises(ValueError, match="only zeros"):
        deep().fit(X, y, sample_domain=np.zeros(len(X)))
    labels = np.concatenate([y[:24], np.array(["grey"] * 24, dtype=object)])
    with pytest.raises(ValueError, match=r"no source row has: \['grey'\]"):
        deep().fit(X, labels, sample_domain=np.repeat([1, -1], 24))
    with pytest.raises(ValueError, match="method"):
        deep(method="adda").fit(X, y)
    with pytest.raises(ValueError, match="-1"):
        deep(max_epochs=1).fit(X, y).score(X, y)


def test_no_target_rows_warns_and_trains_on_the_source(labelled_images):
    X, y = labelled_images
    with pytest.warns(NoTargetDataWarning, match="y == -1.*negative sample_domain") as record:
        clf = deep(method="dann").fit(X, y)
    assert record[0].filename == __file__  # the line that called fit, not a frame of sklearn's
    assert clf.predict(X).dtype == y.dtype
    assert clf.score(X, y) > 0.9  # a constant prediction gets 0.5


def test_shallow_no_target_warning_points_at_the_line_that_called_fit():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 3)), np.tile([0, 1], 10)
    with pytest.warns(NoTargetDataWarning) as record:
        FeatureAlignmentClassifier().fit(X, y)
    assert record[0].filename == __file__


def test_shallow_alignment_with_one_target_row_warns_that_it_aligns_nothing(shifted_features):
    X, y, _ = shifted_features
    rows = np.r_[0:200, 200]  # the source rows and a single target row
    for method in ("coral", "subspace"):
        with pytest.warns(NoTargetDataWarning, match=f"method='{method}'.*single target row"):
            clf = FeatureAlignmentClassifier(method=method).fit(X[rows], y[rows])
        assert clf.source_map_ is None
        assert clf.target_basis_ is None


def test_shallow_alignment_of_several_positive_domains_warns_that_it_pools_them(shifted_features):
    # Labelled target rows given a positive domain of their own would be moved as source rows, silently.
    X, y, labels = shifted_features
    domains = np.repeat([1, -1], 200)
    semi = y.copy()
    semi[200:220], domains[200:220] = labels[:20], 2
    with pytest.warns(PooledDomainsWarning, match=r"positive domains \[1, 2\] into one source") as record:
        FeatureAlignmentClassifier().fit(X, semi, sample_domain=domains)
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FeatureAlignmentClassifier(method="source_only").fit(X, semi, sample_domain=domains)
        FeatureAlignmentClassifier().fit(X, y, sample_domain=np.where(y == -1, -1, 3))


def test_shallow_n_components_that_cannot_take_effect_warn(shifted_features):
    X, y, _ = shifted_features
    with pytest.warns(
        IgnoredSettingWarning,
        match=r"n_components=2 takes effect only with method='subspace', not method='coral'",
    ):
        FeatureAlignmentClassifier(n_components=2).fit(X, y)
    with pytest.warns(IgnoredSettingWarning, match="lowers n_components=9 to 4"):
        clf = FeatureAlignmentClassifier(method="subspace", n_components=9).fit(X, y)
    assert clf.target_basis_.shape == (4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FeatureAlignmentClassifier(method="subspace", n_components=3).fit(X, y)


def test_subspace_alignment_does_not_depend_on_the_order_of_the_target_rows():
    # The subspaces kept as many axes as the rows of the smaller domain, one more than centred rows vary
    # along: the last axis was rounding noise that turned with the order of the rows, and source rows were
    # projected onto it (8% of the predictions changed when 30 target rows were reordered).
    rng = np.random.default_rng(0)
    source = rng.normal(size=(120, 40))
    labels = (source @ rng.normal(size=40) > 0).astype(int)
    target = rng.normal(size=(12, 40)) * 1.3 + 0.3
    y = np.concatenate([labels, np.full(12, -1)])
    new_rows = rng.normal(size=(500, 40)) * 1.3 + 0.3
    predictions = [
        FeatureAlignmentClassifier(method="subspace")
        .fit(np.concatenate([source, target[np.random.default_rng(seed).permutation(12)]]), y)
        .predict(new_rows)
        for seed in range(3)
    ]
    assert all((p == predictions[0]).all() for p in predictions[1:])
    with pytest.warns(IgnoredSettingWarning, match="lowers n_components=20 to 11: .* target rows along 11"):
        clf = FeatureAlignmentClassifier(method="subspace", n_components=20).fit(
            np.concatenate([source, target]), y
        )
    assert clf.target_basis_.shape == (40, 11)


def test_coral_aligns_alike_in_any_units():
    # Eigenvalues of the covariances were floored at an absolute 1e-12: features of scale 1e-6 were barely
    # recoloured, and a target-constant column was given a variance of the shrinkage in absolute units.
    rng = np.random.default_rng(0)
    source = rng.normal(size=(300, 3))
    target = rng.normal(size=(300, 3)) * [5, 0.2, 0] + [1, -1, 2]
    y = np.concatenate([(source[:, 0] > 0).astype(int), np.full(300, -1)])
    X = np.concatenate([source, target])
    for scale in (1.0, 1e-7):
        clf = FeatureAlignmentClassifier().fit(X * scale, y)
        aligned = (source * scale - clf.source_mean_) @ clf.source_map_
        np.testing.assert_allclose(aligned.std(axis=0)[:2], target.std(axis=0)[:2] * scale, rtol=0.01)
        assert aligned.std(axis=0)[2] < 1e-9 * scale


def test_coral_whitens_only_the_directions_the_source_varies_in():
    # A column constant in the source (a one-hot feature absent from a fold, say) was whitened with a gain of
    # about 1e6: a held-out source row that differs there was thrown far off (importance-weighted scorers).
    rng = np.random.default_rng(0)
    source = np.c_[rng.normal(size=(200, 3)), np.zeros(200)]
    target = np.c_[rng.normal(size=(200, 3)) * 2 + 1, rng.random(200) < 0.3]
    y = np.concatenate([(source[:, 0] > 0).astype(int), np.full(200, -1)])
    clf = FeatureAlignmentClassifier().fit(np.concatenate([source, target]), y)
    assert np.abs(clf.source_map_).max() < 10


@pytest.mark.parametrize("method", ["coral", "subspace"])
def test_target_rows_all_alike_align_nothing_and_say_so(shifted_features, method):
    # Identical target rows have no covariance and no principal axis: CORAL recoloured every source row to the
    # same point, and subspace alignment kept a rounding-noise axis.
    X, y, _ = shifted_features
    alike = X.copy()
    alike[y == -1] = alike[y == -1][0]
    with pytest.warns(NoTargetDataWarning, match="got 200 target rows, all alike"):
        clf = FeatureAlignmentClassifier(method=method).fit(alike, y)
    assert clf.source_map_ is None
    assert clf.target_basis_ is None


@pytest.mark.parametrize("make", [FeatureAlignmentClassifier, ImportanceWeightingClassifier])
def test_a_regressor_as_the_estimator_is_refused_before_any_work(shifted_features, make):
    from sklearn.linear_model import LinearRegression

    X, y, _ = shifted_features
    with pytest.raises(ValueError, match=r"estimator=LinearRegression\(...\) is a regressor"):
        make(LinearRegression()).fit(X, y)


@pytest.mark.parametrize("blank", [np.nan, None])
def test_blank_labels_of_target_rows_are_ignored(shifted_features, blank):
    X, y, _ = shifted_features
    target = y == -1
    marked = y
    if blank is None:  # string classes, target rows marked with the integer -1
        marked = np.array(["a", "b"], dtype=object)[y.clip(0)]
        marked[target] = -1
    blanked = marked.astype(float if blank is not None else object)  # pandas' float labels with NaN, or None
    blanked[target] = blank
    domains = np.where(target, -1, 1)
    for make in (FeatureAlignmentClassifier, lambda: ImportanceWeightingClassifier(random_state=0)):
        expected = make().fit(X, marked).predict(X)
        predicted = make().fit(X, blanked, sample_domain=domains).predict(X)
        np.testing.assert_array_equal(predicted, expected)


def test_inputs_are_not_modified(shifted_images):
    X, y, _ = shifted_images
    X_before, y_before = X.copy(), y.copy()
    domains = np.repeat([1, -1], 24)
    deep(max_epochs=1).fit(X, y, sample_domain=domains)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)
    np.testing.assert_array_equal(domains, np.repeat([1, -1], 24))


@pytest.mark.parametrize("method", ["coral", "subspace"])
def test_shallow_alignment_beats_source_only(shifted_features, method):
    X, y, labels = shifted_features
    target = X[200:]
    baseline = FeatureAlignmentClassifier(method="source_only").fit(X, y)
    adapted = FeatureAlignmentClassifier(method=method).fit(X, y)
    assert adapted.score(target, labels) > baseline.score(target, labels) + 0.1


def test_shallow_path_after_the_extractor_in_a_pipeline(shifted_images):
    from sktransfer import PretrainedFeatureExtractor

    X, y, _ = shifted_images
    pipeline = make_pipeline(
        PretrainedFeatureExtractor(model=TinyConvNet, device="cpu"), FeatureAlignmentClassifier()
    ).fit(X, y)
    assert pipeline.predict(X).shape == (len(X),)
    # Minus the mean entropy of the predictions on the target rows (y == -1) alone.
    target_entropy = entropy(pipeline.predict_proba(X[y == -1]), axis=1)
    assert prediction_entropy_scorer(pipeline, X, y) == pytest.approx(-target_entropy.mean(), rel=1e-6)


class KnownProbabilities:
    """A fitted classifier stand-in: the row whose first feature is i gets the probabilities ``proba[i]``."""

    def __init__(self, proba):
        self.proba = np.asarray(proba)

    def predict_proba(self, X):
        return self.proba[np.asarray(X)[:, 0].astype(int)]


class FixedPredictions:
    """A fitted classifier stand-in that predicts ``labels``, whatever the features of those rows."""

    def __init__(self, labels):
        self.labels = labels

    def predict(self, X):
        assert len(X) == len(self.labels)
        return self.labels


def test_prediction_entropy_of_known_probabilities():
    proba = [[0.5, 0.5], [0.9, 0.1], [1.0, 0.0], [0.2, 0.8], [0.6, 0.4]]
    X = np.arange(5)[:, None]
    # Entropies of the three target rows: ln 2, -(0.9 ln 0.9 + 0.1 ln 0.1), and 0 for a certain prediction.
    expected = -(0.693147181 + 0.325082973 + 0.0) / 3
    clf = KnownProbabilities(proba)
    assert prediction_entropy_scorer(clf, X, [-1, -1, -1, 0, 1]) == pytest.approx(expected)
    assert prediction_entropy_scorer(clf, X, sample_domain=[-1, -1, -1, 1, 2]) == pytest.approx(expected)
    assert prediction_entropy_scorer(clf, X, [0, 1, -1, 0, 1]) == pytest.approx(0.0, abs=1e-9)


def test_importance_weighting_counts_the_target_like_source_rows():
    # Source rows spread over [0, 10], target rows over [8, 12]; every source row has the label 1.
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.uniform(0, 10, 100), rng.uniform(8, 12, 100)])[:, None]
    y = np.concatenate([np.ones(100, dtype=int), np.full(100, -1)])
    right_above_5 = LogisticRegression().fit([[4.0], [6.0]], [0, 1])  # predicts 1 above 5, 0 below
    wrong_above_5 = LogisticRegression().fit([[4.0], [6.0]], [1, 0])
    plain_accuracy = np.mean(right_above_5.predict(X[:100]) == 1)
    assert 0.4 < plain_accuracy < 0.6
    right = importance_weighted_scorer(right_above_5, X, y)
    wrong = importance_weighted_scorer(wrong_above_5, X, y)
    assert right > 0.9  # the source rows near the target weigh the most
    assert wrong < 0.1
    assert right + wrong == pytest.approx(1.0)  # the same weights, on complementary rows


def test_a_plain_list_of_labels_and_minus_one_marks_target_rows(shifted_features):
    X, y, _ = shifted_features
    names = np.array(["a", "b"], dtype=object)[y.clip(0)]
    names[y == -1] = -1
    as_list = names.tolist()  # NumPy would read -1 as the text "-1" among the class names
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no TextLabelWarning: the -1 is a number
        clf = FeatureAlignmentClassifier().fit(X, as_list)
    np.testing.assert_array_equal(clf.predict(X), FeatureAlignmentClassifier().fit(X, names).predict(X))
    for scorer in (prediction_entropy_scorer, importance_weighted_scorer):
        assert scorer(clf, X, as_list) == scorer(clf, X, names)


def test_label_free_scorers(shifted_features, shifted_images):
    X, y, _ = shifted_features
    plain = FeatureAlignmentClassifier(method="source_only").fit(X, y)
    with pytest.raises(ValueError, match="needs labelled source rows"):
        importance_weighted_scorer(plain, X[200:], y[200:])
    images, image_labels, _ = shifted_images
    y_int = np.array([-1 if label == -1 else int(label == "dark") for label in image_labels])
    clf = deep(method="coral", lr=0.01).fit(images, y_int)  # learns from any initialisation at this rate
    source = y_int != -1
    predictions = clf.predict(images[source])
    assert np.mean(predictions == y_int[source]) > 0.9
    # Scored against every other source label flipped, clf is right on half of the source rows; the
    # weights come from a domain classifier on clf.embed() features.
    y_scored = y_int.copy()
    y_scored[np.flatnonzero(source)[::2]] ^= 1
    score = importance_weighted_scorer(clf, images, y_scored)
    on_embeddings = importance_weighted_scorer(FixedPredictions(predictions), clf.embed(images), y_scored)
    assert score == pytest.approx(on_embeddings)
    assert score != pytest.approx(np.mean(predictions == y_scored[source]), abs=0.01)
    # Neighbourhood consistency compares the target rows' predictions in the bottleneck features too.
    target = ~source
    consistency = neighborhood_consistency_scorer(clf, images, y_int)
    on_bottleneck = neighborhood_consistency_scorer(
        FixedPredictions(clf.predict(images[target])), clf.embed(images[target]), y_int[target]
    )
    assert consistency == on_bottleneck


def test_mixup_validation_scores_a_network_on_mixed_uint8_images(shifted_images):
    """The mixes are images of the target's dtype, read on its scale: a fitted network follows the dominant
    image on most of them, and the score is the same each call."""
    images, image_labels, _ = shifted_images
    y = np.array([-1 if label == -1 else int(label == "dark") for label in image_labels])
    clf = deep(method="coral", lr=0.01).fit(images, y)
    read = []
    hook = clf.module_.bottleneck.register_forward_hook(
        lambda module, inputs, output: read.append(len(output))
    )
    try:
        score = mixup_validation_scorer(clf, images, y)
    finally:
        hook.remove()
    target = int((y == -1).sum())
    assert target + target <= sum(read) <= 3 * target  # the rows, then a mix within a class for each
    assert 0.5 < score <= 1.0
    assert mixup_validation_scorer(clf, images, y) == score


class _FixedProbabilities(FixedPredictions):
    """The stand-in with the probabilities of each row too, and the classes they are of."""

    def __init__(self, fitted, rows):
        super().__init__(fitted.predict(rows))
        self.proba, self.classes_ = fitted.predict_proba(rows), fitted.classes_

    def predict_proba(self, X):
        assert len(X) == len(self.proba)
        return self.proba


def test_scorers_run_the_network_once_over_each_row(shifted_images):
    images, image_labels, _ = shifted_images
    y = np.array([-1 if label == -1 else int(label == "dark") for label in image_labels])
    clf = deep(method="coral").fit(images, y)
    source, target = y != -1, y == -1
    on_features = {
        importance_weighted_scorer: (_FixedProbabilities(clf, images[source]), clf.embed(images), y),
        deep_embedded_validation_scorer: (_FixedProbabilities(clf, images[source]), clf.embed(images), y),
        neighborhood_consistency_scorer: (
            _FixedProbabilities(clf, images[target]),
            clf.embed(images[target]),
            y[target],
        ),
    }
    rows = []
    hook = clf.module_.bottleneck.register_forward_hook(
        lambda module, inputs, output: rows.append(len(output))
    )
    try:
        for scorer, (stand_in, features, labels) in on_features.items():
            rows.clear()
            score = scorer(clf, images, y)
            # embedding and predictions from one pass: each scored row through the network once
            assert sum(rows) == (target.sum() if scorer is neighborhood_consistency_scorer else len(images))
            assert score == pytest.approx(scorer(stand_in, features, labels))
    finally:
        hook.remove()


class _Reweighted(DomainAdaptedClassifier):
    """A user's subclass whose predict_proba post-processes the network's: class 1 made 50 times likelier."""

    def predict_proba(self, X):
        proba = super().predict_proba(X) * [1.0, 50.0]
        return proba / proba.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    "scorer", [importance_weighted_scorer, deep_embedded_validation_scorer, neighborhood_consistency_scorer]
)
def test_scorers_ask_a_subclass_that_overrides_predict_proba_for_its_own(shifted_images, scorer):
    """The one pass through the network would bypass the override: the subclass's outputs are scored."""
    images, image_labels, _ = shifted_images
    y = np.array([-1 if label == -1 else int(label == "dark") for label in image_labels])
    reweighted = _Reweighted(**deep(method="coral").get_params()).fit(images, y)
    scored = y == -1 if scorer is neighborhood_consistency_scorer else np.ones(len(y), dtype=bool)
    predicted = y == -1 if scorer is neighborhood_consistency_scorer else y != -1
    stand_in = _FixedProbabilities(reweighted, images[predicted])
    expected = scorer(stand_in, reweighted.embed(images[scored]), y[scored])
    assert scorer(reweighted, images, y) == pytest.approx(expected)
    assert scorer(FrozenEstimator(reweighted), images, y) == pytest.approx(expected)  # it forwards attributes


@pytest.mark.parametrize("scorer", [prediction_entropy_scorer, importance_weighted_scorer])
def test_scorers_refuse_data_without_target_rows(shifted_features, scorer):
    X, _, labels = shifted_features
    clf = LogisticRegression().fit(X[:200], labels)
    both_ways = "mark target rows with y == -1 or with a negative sample_domain"
    with pytest.raises(ValueError, match=both_ways):
        scorer(clf, X[:200], labels)
    with pytest.raises(ValueError, match=r"all source rows by their sample_domain.*shuffle=True"):
        scorer(clf, X[:200], labels, sample_domain=np.ones(200))


@pytest.mark.parametrize("routing", [True, False])
def test_scorers_in_a_search_and_multimetric_cross_validation_of_a_pipeline(shifted_features, routing):
    """With routing, string labels and sample_domain reach the scorers; without it, y == -1 marks the target."""
    X, y, labels = shifted_features
    domains = np.repeat([1, -1], 200)
    if routing:  # the target rows carry their true labels, masked by the negative domain
        names = np.array(["no", "yes"])[labels]
        y, params = np.concatenate([names, names]), {"sample_domain": domains}
    else:
        params = {}
    folds = list(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))
    scoring = {"entropy": prediction_entropy_scorer, "iwcv": importance_weighted_scorer}
    with sklearn.config_context(enable_metadata_routing=routing):
        aligned = FeatureAlignmentClassifier()
        pipeline = make_pipeline(
            StandardScaler(), aligned.set_fit_request(sample_domain=True) if routing else aligned
        )
        grid = {"featurealignmentclassifier__method": ["coral", "source_only"]}
        search = GridSearchCV(pipeline, grid, cv=folds, scoring=scoring, refit="iwcv").fit(X, y, **params)
        result = cross_validate(
            pipeline, X, y, cv=folds, scoring=scoring, params=params, return_estimator=True
        )
    for name, scorer in scoring.items():
        assert np.isfinite(search.cv_results_[f"mean_test_{name}"]).all()
        for (_, test), fitted, score in zip(folds, result["estimator"], result[f"test_{name}"], strict=True):
            fold_params = {key: value[test] for key, value in params.items()}
            assert score == pytest.approx(scorer(fitted, X[test], y[test], **fold_params))


def test_scorers_request_sample_domain_like_sklearn_scorers_and_pickle(shifted_features):
    X, _, labels = shifted_features
    names = np.array(["no", "yes"])[labels]
    y, domains = np.concatenate([names, names]), np.repeat([1, -1], 200)
    for scorer in (prediction_entropy_scorer, importance_weighted_scorer):
        assert get_routing_for_object(scorer).score.requests == {"sample_domain": True}
    with pytest.raises(RuntimeError, match="enable_metadata_routing=True"):
        copy.copy(prediction_entropy_scorer).set_score_request(sample_domain=False)
    folds = list(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))
    with sklearn.config_context(enable_metadata_routing=True):
        aliased = copy.copy(importance_weighted_scorer).set_score_request(sample_domain="domains")
        with pytest.raises(ValueError, match="valid identifier"):
            copy.copy(aliased).set_score_request(sample_domain="not a name")
        # The estimator does not consume the domains; the scorer takes them under the alias.
        aliased_domains = {"domains": domains}
        result = cross_validate(LogisticRegression(), X, y, cv=folds, scoring=aliased, params=aliased_domains)
    assert get_routing_for_object(importance_weighted_scorer).score.requests == {"sample_domain": True}
    restored = pickle.loads(pickle.dumps(aliased))
    assert get_routing_for_object(restored).score.requests == {"sample_domain": "domains"}
    for (train, test), score in zip(folds, result["test_score"], strict=True):
        fitted = LogisticRegression().fit(X[train], y[train])
        direct = importance_weighted_scorer(fitted, X[test], y[test], sample_domain=domains[test])
        assert score == pytest.approx(direct)
        assert restored(fitted, X[test], y[test], sample_domain=domains[test]) == direct
    entropy = pickle.loads(pickle.dumps(prediction_entropy_scorer))
    expected = prediction_entropy_scorer(fitted, X, sample_domain=domains)
    assert entropy(fitted, X, sample_domain=domains) == expected


def test_batchnorm_keeps_the_statistics_of_the_target_rows(shifted_features):
    import torch

    X, y, _ = shifted_features
    clf = DomainAdaptedClassifier(
        model=None, method="coral", max_epochs=2, batch_size=40, device="cpu", random_state=0
    ).fit(X, y)
    linear, batchnorm = clf.module_.bottleneck[0], clf.module_.bottleneck[1]
    with torch.no_grad():
        target_activations = linear(torch.as_tensor(X[200:], dtype=torch.float32))
    # Five equal batches of the 200 target rows: the average of batch means is the mean.
    torch.testing.assert_close(batchnorm.running_mean, target_activations.mean(dim=0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("estimator", ["shallow", "deep"])
def test_score_refuses_the_rows_that_sample_domain_marks_as_target(shifted_features, estimator):
    # A search with the default scoring counted the target rows' placeholder labels, which fit masks, as
    # labels: candidates were ranked partly on them, with no warning.
    X, _, labels = shifted_features
    names = np.array(["no", "yes"])[labels]
    y, domains = np.concatenate([names, np.full(200, "no")]), np.repeat([1, -1], 200)
    classifier, grid = (
        (FeatureAlignmentClassifier(), {"method": ["coral"]})
        if estimator == "shallow"
        else (DomainAdaptedClassifier(model=None, max_epochs=1, device="cpu", random_state=0), {"lr": [1e-3]})
    )
    fitted = clone(classifier).fit(X, y, sample_domain=domains)
    message = r"sample_domain is negative \(target rows, whose labels fit masks\) at samples \[200, 201"
    with pytest.raises(ValueError, match=message):
        fitted.score(X, y, sample_domain=domains)
    assert 0 <= fitted.score(X[:200], y[:200], sample_domain=domains[:200]) <= 1  # the source rows
    folds = StratifiedKFold(2, shuffle=True, random_state=0)
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(classifier.set_fit_request(sample_domain=True), grid, cv=folds)
        with pytest.warns(UserWarning, match=message[:40]):
            search.fit(X, y, sample_domain=domains)
    assert np.isnan(search.cv_results_["mean_test_score"]).all()


def _adapting_classifier(kind):
    """One of the three kinds of domain adaptation, at settings quick on the shifted features."""
    return {
        "shallow": FeatureAlignmentClassifier(),
        "deep": DomainAdaptedClassifier(model=None, max_epochs=1, device="cpu", random_state=0),
        "reweighting": ImportanceWeightingClassifier(random_state=0),
    }[kind]


@pytest.mark.parametrize("estimator", ["shallow", "deep", "reweighting"])
def test_boolean_labels_listed_with_minus_one_stay_booleans(shifted_features, estimator):
    # NumPy turned [True, False, ..., -1, -1] into integers: classes_ and predict gave 0 and 1.
    X, _, labels = shifted_features
    y = [bool(label) for label in labels] + [-1] * 200
    classifier = _adapting_classifier(estimator)
    fitted = classifier.fit(X.astype(np.float32), y)
    assert fitted.classes_.tolist() == [False, True]
    assert {type(label) for label in fitted.predict(X[:5].astype(np.float32)).tolist()} == {bool}


@pytest.mark.parametrize("estimator", ["shallow", "deep", "reweighting"])
def test_integer_labels_marked_in_an_object_array_are_classes(shifted_features, estimator):
    # y = labels.astype(object); y[target] = -1, as the README marks rows: "Unknown label type: unknown".
    X, _, labels = shifted_features
    y = np.r_[3 + 4 * labels, np.full(200, -1)].astype(object)
    classifier = _adapting_classifier(estimator)
    fitted = classifier.fit(X.astype(np.float32), y)
    assert fitted.classes_.tolist() == [3, 7]
    assert set(fitted.predict(X[:5].astype(np.float32)).tolist()) <= {3, 7}


def test_minus_one_among_the_classes_is_refused(shifted_features):
    # classes_ held -1, whose output never trained and which predict could return.
    X, y, _ = shifted_features
    classifier = DomainAdaptedClassifier(model=None, classes=[-1, 0, 1], max_epochs=1, device="cpu")
    with pytest.raises(ValueError, match="classes holds -1, which marks unlabelled"):
        classifier.fit(X.astype(np.float32), y)
    with pytest.raises(ValueError, match="partial_fit's classes holds -1"):
        DomainAdaptedClassifier(model=None, max_epochs=1, device="cpu").partial_fit(
            X.astype(np.float32), y, classes=[-1, 0, 1]
        )


@pytest.mark.parametrize("method", ["source_only", "self_training"])
def test_trade_off_warns_where_the_method_aligns_nothing(shifted_features, method):
    X, y, _ = shifted_features
    classifier = DomainAdaptedClassifier(model=None, method=method, trade_off=3.0, max_epochs=2, device="cpu")
    with pytest.warns(
        IgnoredSettingWarning, match=r"trade_off=3.0 takes effect only with a method that aligns"
    ):
        classifier.fit(X.astype(np.float32), y)


def test_a_single_target_row_warns(shifted_features):
    # Every batch repeated it as its target half, with no word (FeatureAlignmentClassifier warned).
    X, y, _ = shifted_features
    X, y = X[:201].astype(np.float32), y[:201]
    with pytest.warns(NoTargetDataWarning, match=r"method='dann'\) got a single target row"):
        DomainAdaptedClassifier(model=None, max_epochs=1, device="cpu").fit(X, y)


def test_a_labelled_validation_set_of_the_users_is_read_without_fits_checks_on_domains(shifted_features):
    # Its labels went through fit's checks of domains: "fit received no target rows" although X held 200,
    # and with several sources an error asking for the sample_domain that a validation set cannot have.
    from skorch.dataset import Dataset
    from skorch.helper import predefined_split

    X, y, labels = shifted_features
    X = X.astype(np.float32)
    X_valid, y_valid = X[200:260], labels[:60]  # labelled target rows (their labels made up: a fixture's)
    # without the recalibration at the end of training, the last epoch's accuracy is the fitted network's
    common = {
        "model": None,
        "max_epochs": 2,
        "device": "cpu",
        "random_state": 0,
        "recalibrate_batchnorm": False,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        single = DomainAdaptedClassifier(**common, train_split=predefined_split(Dataset(X_valid, y_valid)))
        single.fit(X, y)
    assert single.history[-1, "valid_acc"] == pytest.approx(single.score(X_valid, y_valid))
    domains = np.concatenate([np.where(np.arange(200) % 2, 1, 2), np.full(200, -1)])
    several = DomainAdaptedClassifier(**common, train_split=predefined_split(Dataset(X_valid, y_valid)))
    several.fit(X, y, sample_domain=domains)
    assert several.history[-1, "valid_acc"] == pytest.approx(several.score(X_valid, y_valid))
