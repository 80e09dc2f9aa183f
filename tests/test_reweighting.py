"""ImportanceWeightingClassifier: density-ratio weights of the source rows, and the sklearn contract."""

import pickle
import warnings

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sktransfer import ImportanceWeightingClassifier
from sktransfer.domain_adaptation import (
    FewEffectiveRowsWarning,
    NoTargetDataWarning,
    prediction_entropy_scorer,
)
from sktransfer.domain_adaptation.density_ratio import effective_sample_size
from sktransfer.domain_adaptation.flattening import (
    FLATTENING_POWERS,
    choose_flattening,
    flattening_exponent,
    flattest_within_one_standard_error,
)


def truth(x):
    """The labelling rule both domains share: class 1 outside [-1, 1]; no single threshold fits it."""
    return (np.abs(x[:, 0]) > 1).astype(int)


@pytest.fixture
def covariate_shift():
    """Source rows spread around 0; target rows gather on the left, where the rule is a threshold at -1.

    A linear model fitted on the whole source sees a symmetric problem and predicts one class everywhere;
    one fitted where the target lies finds the threshold at -1.
    """
    rng = np.random.default_rng(0)
    source = rng.normal(size=(200, 1))
    target = rng.normal(-1, 0.5, size=(100, 1))
    X = np.concatenate([source, target])
    y = np.concatenate([truth(source), np.full(100, -1)])
    return X, y, truth(target)


def iw(**params):
    return ImportanceWeightingClassifier(**{"random_state": 0, **params})


def test_reweighting_beats_the_unweighted_estimator_on_the_target(covariate_shift):
    X, y, target_labels = covariate_shift
    source, target = X[y != -1], X[y == -1]
    unweighted = LogisticRegression(max_iter=1000).fit(source, y[y != -1])
    clf = iw().fit(X, y)
    unweighted_accuracy = np.mean(unweighted.predict(target) == target_labels)
    assert unweighted_accuracy < 0.5
    assert clf.score(target, target_labels) > unweighted_accuracy + 0.4
    assert clf.score(target, target_labels) > 0.9


def test_weights_are_larger_for_source_rows_near_the_target(covariate_shift):
    X, y, _ = covariate_shift
    clf = iw().fit(X, y)
    x = X[y != -1, 0]
    assert clf.weights_.shape == (200,)
    assert clf.weights_.mean() == pytest.approx(1.0)
    assert (clf.weights_ > 0).all()
    near, far = clf.weights_[np.abs(x + 1) < 0.5], clf.weights_[x > 0.5]
    assert near.mean() > 4 * far.mean()
    assert np.corrcoef(x, clf.weights_)[0, 1] < -0.5
    # The discriminator fitted on every row scores target-like rows higher too.
    assert clf.discriminator_.predict_proba([[-1.0]])[0, 1] > clf.discriminator_.predict_proba([[1.0]])[0, 1]


def test_weights_follow_the_formula_on_out_of_fold_probabilities(covariate_shift):
    X, y, _ = covariate_shift
    target = (y == -1).astype(int)
    folds = list(StratifiedKFold(4, shuffle=True, random_state=3).split(X, target))
    clf = iw(cv=folds, clip=None, flatten=1.0).fit(X, y)
    proba = np.zeros(len(X))
    for train, test in folds:  # each row scored by a discriminator that did not see it
        domain = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(
            X[train], target[train]
        )
        proba[test] = domain.predict_proba(X[test])[:, 1]
    ratio = proba[y != -1] / (1 - proba[y != -1]) * 200 / 100
    np.testing.assert_allclose(clf.weights_, ratio / ratio.mean(), rtol=1e-6)
    assert clf.flatten_ == 1.0
    assert clf.flatten_cv_errors_ is None  # a number was given: nothing was chosen
    # The default raises the same ratios to the power it chose.
    auto = iw(cv=folds, clip=None).fit(X, y)
    assert 0 < auto.flatten_ < 1
    flattened = ratio**auto.flatten_
    np.testing.assert_allclose(auto.weights_, flattened / flattened.mean(), rtol=1e-6)
    half = iw(cv=folds, clip=None, flatten=0.5).fit(X, y)
    np.testing.assert_allclose(half.weights_, ratio**0.5 / np.mean(ratio**0.5), rtol=1e-6)
    assert iw(cv=folds, flatten=0.0).fit(X, y).effective_sample_size_ == pytest.approx(200)


def test_auto_flattening_is_the_flattest_power_within_a_standard_error_of_the_lowest_weighted_error(
    covariate_shift,
):
    """flatten="auto": importance-weighted cross-validation over the source rows, then the one-SE rule."""
    X, y, target_labels = covariate_shift
    source, labels = X[y != -1], y[y != -1]
    ratios = iw(flatten=1.0).fit(X, y).weights_  # the same out-of-fold ratios: same folds, same clip
    clf = iw().fit(X, y)
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(source, labels))
    losses = {}
    for power in FLATTENING_POWERS:
        wrong = np.zeros(len(source))
        for train, test in folds:  # each source row judged by a model that did not see it
            weights = ratios[train] ** power
            model = LogisticRegression(max_iter=1000).fit(
                source[train], labels[train], sample_weight=weights / weights.mean()
            )
            wrong[test] = model.predict(source[test]) != labels[test]
        losses[power] = ratios * wrong  # errors counted with their density ratio
    errors = {power: loss.mean() for power, loss in losses.items()}
    assert clf.flatten_cv_errors_ == pytest.approx(errors)
    assert clf.flatten_ == flattest_within_one_standard_error(losses)
    # Here reweighting pays: the unweighted fit errs on most target-like rows, and the chosen power does not.
    assert errors[0.0] > 10 * errors[clf.flatten_]
    assert clf.flatten_ > 0
    flattened = ratios**clf.flatten_
    np.testing.assert_allclose(clf.weights_, flattened / flattened.mean(), rtol=1e-6)
    assert clf.score(X[y == -1], target_labels) > 0.9
    # The function the estimator calls gives the same answer.
    power, same = choose_flattening(LogisticRegression(max_iter=1000), source, labels, ratios, 5, 0)
    assert power == clf.flatten_
    assert same == pytest.approx(clf.flatten_cv_errors_)


def test_auto_flattening_without_rows_to_hold_out_keeps_half_the_source_rows_in_play(covariate_shift):
    """A class with a single source row cannot be cross-validated: "auto" falls back to the effective size."""
    X, y, _ = covariate_shift
    lonely = y.copy()
    lonely[np.flatnonzero(y == 1)[1:]] = 0  # class 1 keeps a single source row
    clf = iw(clip=None).fit(X, lonely)
    assert clf.flatten_cv_errors_ is None
    ratios = iw(clip=None, flatten=1.0).fit(X, lonely).weights_
    assert clf.flatten_ == pytest.approx(flattening_exponent(ratios, 0.5))
    assert clf.effective_sample_size_ == pytest.approx(100, rel=1e-6)
    power, errors = choose_flattening(LogisticRegression(), X[:200], lonely[:200], ratios, 5, 0)
    assert (power, errors) == (pytest.approx(clf.flatten_), None)


def test_the_one_standard_error_rule_prefers_flatter_powers_within_the_noise():
    """The lowest mean loss does not win alone: a flatter power within one standard error of it does."""
    noisy_best = np.array([0.0, 0.0, 0.0, 0.6])  # mean 0.15, standard error 0.15
    losses = {0.0: np.full(4, 0.31), 0.5: np.full(4, 0.2), 1.0: noisy_best}
    assert min(losses, key=lambda power: losses[power].mean()) == 1.0
    assert flattest_within_one_standard_error(losses) == 0.5  # 0.2 <= 0.15 + 0.15; 0.31 is not
    losses[0.0] = np.full(4, 0.29)
    assert flattest_within_one_standard_error(losses) == 0.0
    precise_best = np.full(4, 0.15)  # the same mean, no spread: the lowest wins
    assert flattest_within_one_standard_error({0.0: np.full(4, 0.2), 1.0: precise_best}) == 1.0


def test_auto_flattening_folds_follow_cv_and_the_smallest_class(covariate_shift):
    X, y, _ = covariate_shift
    source, labels = X[y != -1], y[y != -1]
    ratios = iw(flatten=1.0, cv=KFold(3, shuffle=True, random_state=0)).fit(X, y).weights_

    def chosen(n_splits, labels=labels, ratios=ratios, random_state=0):
        estimator = LogisticRegression(max_iter=1000)
        return choose_flattening(estimator, source, labels, ratios, n_splits, random_state)[1]

    # A splitter for the discriminator's folds: "auto" validates on 5 folds of the source rows, not its 3.
    splitter = iw(cv=KFold(3, shuffle=True, random_state=0)).fit(X, y)
    assert splitter.flatten_cv_errors_ == pytest.approx(chosen(5))
    assert splitter.flatten_cv_errors_ != pytest.approx(chosen(3))
    # An int: as many folds for both.
    three = iw(cv=3).fit(X, y)
    assert three.flatten_cv_errors_ == pytest.approx(
        chosen(3, ratios=iw(cv=3, flatten=1.0).fit(X, y).weights_)
    )
    # A class of three source rows: three folds (so each training fold holds two of them), not five or two.
    few = labels.copy()
    few[np.argsort(source[:, 0])[:3]] = 2  # the three leftmost rows
    assert chosen(5, few) == pytest.approx(chosen(3, few))
    assert chosen(3, few) != pytest.approx(chosen(2, few))
    with_few = np.concatenate([few, np.full(100, -1)])
    assert set(iw(cv=KFold(3, shuffle=True, random_state=0)).fit(X, with_few).flatten_cv_errors_) == set(
        FLATTENING_POWERS
    )
    # A RandomState instance draws the folds once, for every power: as the seed it was made from.
    assert chosen(5, random_state=np.random.RandomState(0)) == chosen(5)
    first = iw(random_state=np.random.RandomState(0)).fit(X, y)
    second = iw(random_state=np.random.RandomState(0)).fit(X, y)
    assert first.flatten_cv_errors_ == second.flatten_cv_errors_
    np.testing.assert_array_equal(first.weights_, second.weights_)


def test_clip_caps_the_largest_weights(covariate_shift):
    X, y, _ = covariate_shift
    free = iw(clip=None, flatten=1.0).fit(X, y).weights_
    clipped = iw(clip=0.9, flatten=1.0).fit(X, y).weights_
    assert clipped.mean() == pytest.approx(1.0)
    assert clipped.max() / clipped.min() < free.max() / free.min()
    assert np.sum(clipped == clipped.max()) >= 20  # the top tenth share the cap
    np.testing.assert_allclose(iw(clip=1.0, flatten=1.0).fit(X, y).weights_, free)


def test_effective_sample_size_counts_the_rows_the_weights_rest_on(covariate_shift):
    X, y, _ = covariate_shift
    clf = iw().fit(X, y)
    w = clf.weights_
    assert clf.effective_sample_size_ == pytest.approx(w.sum() ** 2 / np.sum(w**2))
    assert 50 <= clf.effective_sample_size_ < 200  # the target covers part of the source
    assert clf.flatten_ < 1
    unweighted = iw().fit(
        X[y != -1], y[y != -1]
    )  # no target row: weights of one (and a warning, tested below)
    assert unweighted.effective_sample_size_ == pytest.approx(200)


def test_weights_on_a_few_rows_warn_naming_the_way_out():
    """Domains a discriminator separates almost everywhere: a weighted fit on few rows is flagged, not silent."""
    rng = np.random.default_rng(0)
    source = rng.normal(size=(300, 2))
    target = rng.normal(3.5, 0.3, size=(100, 2))  # beyond all but a handful of source rows
    X = np.concatenate([source, target])
    y = np.concatenate([(source[:, 0] > 0).astype(int), np.full(100, -1)])
    exact = r"of the 300.*\(flatten=1\.0\) rest on \d+ rows.*flatten='auto', a lower clip.*C=0\.01"
    with pytest.warns(FewEffectiveRowsWarning, match=exact):
        clf = iw(clip=None, flatten=1.0).fit(X, y)
    assert clf.effective_sample_size_ < 30
    exact_effective_size = clf.effective_sample_size_
    # The default chose a power by cross-validation, and says how few rows the gain it saw rests on.
    flattened = r"cross-validation chose the power 0\.\d\d \(flatten_, flatten_cv_errors_\), under which the "
    flattened += (
        r"weights keep \d+ rows in play.*rests on about \d+ rows.*compare with flatten=0.*FeatureAlignment"
    )
    with pytest.warns(FewEffectiveRowsWarning, match=flattened) as record:
        clf = iw(clip=None).fit(X, y)
    assert record[0].filename == __file__  # the line that called fit
    assert 0 < clf.flatten_ < 1
    assert clf.effective_sample_size_ > exact_effective_size
    assert "flatten='auto'" not in str(record[0].message)  # not offered to whoever already uses it
    # A power given that keeps more rows in play: the warning says that reweighting can do little.
    with pytest.warns(
        FewEffectiveRowsWarning, match=r"raised to the power 0\.30 \(flatten_\).*can do little"
    ):
        iw(clip=None, flatten=0.3).fit(X, y)
    # Unweighted as asked (flatten=0): nothing to warn of.
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewEffectiveRowsWarning)
        assert iw(clip=None, flatten=0.0).fit(X, y).effective_sample_size_ == pytest.approx(300)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewEffectiveRowsWarning)
        iw().fit(*_overlapping(rng))


def _nuisance_shift(shift):
    """Shifted in every feature but the one the labels follow, by ``shift`` standard deviations."""
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(300, 20)), rng.normal(size=(200, 20))
    target[:, 1:] += shift
    source_labels = (source[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(int)
    target_labels = (target[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int)
    X = np.concatenate([source, target])
    y = np.concatenate([source_labels, np.full(200, -1)])
    unweighted = LogisticRegression(max_iter=1000).fit(source, source_labels).score(target, target_labels)
    return X, y, target, target_labels, unweighted


def test_flattening_keeps_separable_domains_from_costing_target_accuracy():
    """The rule is the same in both domains, so the unweighted fit is right; one on the few rows the exact
    ratios keep is not. Cross-validation shows no gain from reweighting, and the default does not reweight.
    """
    X, y, target, target_labels, unweighted = _nuisance_shift(0.6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewEffectiveRowsWarning)
        exact = iw(flatten=1.0).fit(X, y)
    default = iw().fit(X, y)
    assert exact.effective_sample_size_ < 40
    assert exact.score(target, target_labels) < unweighted - 0.05
    assert default.flatten_ == 0
    assert default.effective_sample_size_ == pytest.approx(300)
    assert default.score(target, target_labels) == unweighted
    # Further apart the ratios rest on under a tenth of the rows: fit says it did not reweight, and why.
    X, y, target, target_labels, unweighted = _nuisance_shift(1.0)
    message = r"rest on \d+ of the 300.*found no power.*fitted the estimator unweighted \(flatten_=0"
    with pytest.warns(FewEffectiveRowsWarning, match=message) as record:
        default = iw().fit(X, y)
    assert record[0].filename == __file__
    assert default.score(target, target_labels) == unweighted
    assert set(default.flatten_cv_errors_) == set(FLATTENING_POWERS)


def test_flattening_exponent_keeps_the_share_asked_for_and_refuses_bad_weights():
    weights = np.random.default_rng(0).lognormal(sigma=3, size=1000)
    assert effective_sample_size(weights) < 100
    for share in (0.1, 0.5, 0.9):
        exponent = flattening_exponent(weights, share)
        assert effective_sample_size(weights**exponent) == pytest.approx(1000 * share, rel=1e-6)
    assert flattening_exponent(np.ones(5), 1.0) == 1.0
    assert flattening_exponent([1e-300, 1.0, 1e300], 0.5) > 0  # no overflow across 600 orders of magnitude
    for bad in ([1.0, 0.0], [1.0, np.nan], [1.0, np.inf], [-1.0, 1.0]):
        with pytest.raises(ValueError, match="positive, finite"):
            flattening_exponent(bad, 0.5)
    with pytest.raises(ValueError, match="min_effective_share"):
        flattening_exponent(weights, 0.0)


def _overlapping(rng):
    source, target = rng.normal(size=(300, 2)), rng.normal(0.3, 1.0, size=(100, 2))
    y = np.concatenate([(source[:, 0] > 0).astype(int), np.full(100, -1)])
    return np.concatenate([source, target]), y


def test_sample_domain_marks_target_rows_and_their_labels_are_ignored(covariate_shift):
    X, y, target_labels = covariate_shift
    domains = np.repeat([1, -1], [200, 100])
    minus_one = iw().fit(X, y)
    given = np.concatenate([y[:200], target_labels])
    wrong = np.concatenate([y[:200], 1 - target_labels])
    for labels in (given, wrong):
        clf = iw().fit(X, labels, sample_domain=domains)
        np.testing.assert_array_equal(clf.weights_, minus_one.weights_)
        np.testing.assert_array_equal(clf.predict_proba(X), minus_one.predict_proba(X))


def test_routed_sample_domain_through_pipeline_and_grid_search(covariate_shift):
    X, y, target_labels = covariate_shift
    labels = np.concatenate([y[:200], target_labels])  # target labels given, masked by the negative domain
    domains = np.repeat([1, -1], [200, 100])
    folds = list(StratifiedKFold(2, shuffle=True, random_state=0).split(X, domains))
    with sklearn.config_context(enable_metadata_routing=True):
        pipeline = make_pipeline(StandardScaler(), iw().set_fit_request(sample_domain=True))
        grid = {"importanceweightingclassifier__clip": [0.9, None]}
        search = GridSearchCV(pipeline, grid, cv=folds, scoring=prediction_entropy_scorer)
        search.fit(X, labels, sample_domain=domains)
        with pytest.raises(ValueError, match="sample_domain"):  # not requested: routing refuses it
            make_pipeline(StandardScaler(), iw()).fit(X, labels, sample_domain=domains)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    best = search.best_estimator_
    # The same fit as with y == -1 on the standardised features: the routed target labels were not read.
    clip = search.best_params_["importanceweightingclassifier__clip"]
    direct = iw(clip=clip).fit(StandardScaler().fit_transform(X), y)
    np.testing.assert_allclose(best[-1].weights_, direct.weights_)
    assert np.mean(best.predict(X[200:]) == target_labels) > 0.9


def test_pickle_round_trip_and_determinism(covariate_shift):
    X, y, _ = covariate_shift
    first, second = iw().fit(X, y), iw().fit(X, y)
    np.testing.assert_array_equal(first.weights_, second.weights_)
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    restored = pickle.loads(pickle.dumps(first))
    np.testing.assert_array_equal(restored.predict(X), first.predict(X))
    np.testing.assert_array_equal(restored.predict_proba(X), first.predict_proba(X))
    np.testing.assert_array_equal(restored.weights_, first.weights_)
    other = iw(random_state=1).fit(X, y)  # other folds, other out-of-fold probabilities
    assert not np.array_equal(other.weights_, first.weights_)


def test_n_jobs_runs_the_fits_in_parallel_with_the_same_result(covariate_shift, monkeypatch):
    X, y, _ = covariate_shift
    serial = iw().fit(X, y)
    jobs = []
    original = joblib.Parallel.__init__

    def record(self, *args, **kwargs):
        jobs.append(kwargs.get("n_jobs", args[0] if args else None))
        original(self, *args, **kwargs)

    monkeypatch.setattr(joblib.Parallel, "__init__", record)
    parallel = iw(n_jobs=2).fit(X, y)
    assert jobs == [2, 2]  # the discriminator's folds, then the cross-validated powers
    assert parallel.flatten_ == serial.flatten_
    assert parallel.flatten_cv_errors_ == serial.flatten_cv_errors_
    np.testing.assert_array_equal(parallel.weights_, serial.weights_)
    np.testing.assert_array_equal(parallel.predict_proba(X), serial.predict_proba(X))


def test_an_estimator_without_sample_weight_is_refused(covariate_shift):
    X, y, _ = covariate_shift
    with pytest.raises(ValueError, match=r"KNeighborsClassifier\.fit does not accept a sample_weight"):
        iw(estimator=KNeighborsClassifier()).fit(X, y)


def test_a_search_over_an_estimator_that_takes_sample_weight_gets_the_weights(covariate_shift):
    # GridSearchCV.fit passes sample_weight on to the estimator it tunes, but its own signature does not name
    # it: the search was refused as an estimator without sample_weight.
    X, y, _ = covariate_shift
    search = GridSearchCV(LogisticRegression(), {"C": [1.0]}, cv=2)
    searched = iw(estimator=search, flatten=1.0).fit(X, y)
    direct = iw(estimator=LogisticRegression(), flatten=1.0).fit(X, y)
    np.testing.assert_allclose(searched.predict_proba(X), direct.predict_proba(X))
    with pytest.raises(ValueError, match=r"Pipeline\.fit does not accept a sample_weight"):
        iw(estimator=GridSearchCV(make_pipeline(LogisticRegression()), {"logisticregression__C": [1.0]})).fit(
            X, y
        )


def test_no_target_rows_warns_and_uses_weights_of_one(covariate_shift):
    X, y, _ = covariate_shift
    source, labels = X[:200], y[:200]
    with pytest.warns(NoTargetDataWarning, match="y == -1.*negative sample_domain") as record:
        clf = iw().fit(source, labels)
    assert record[0].filename == __file__  # the line that called fit, not a frame of sklearn's
    with pytest.warns(NoTargetDataWarning) as record:  # each fold's fit too, through joblib's frames
        GridSearchCV(iw(), {"clip": [0.9, None]}, cv=2).fit(source, labels)
    assert {w.filename for w in record if w.category is NoTargetDataWarning} == {__file__}
    np.testing.assert_array_equal(clf.weights_, np.ones(200))
    assert clf.discriminator_ is None
    plain = LogisticRegression(max_iter=1000).fit(source, labels)
    np.testing.assert_allclose(clf.predict_proba(source), plain.predict_proba(source))


def test_string_labels_come_back_as_given(covariate_shift):
    X, y, target_labels = covariate_shift
    names = np.array(["inside", "outside"], dtype=object)
    labels = np.concatenate([names[y[:200]], np.full(100, -1, dtype=object)])
    clf = iw().fit(X, labels)
    assert clf.classes_.tolist() == ["inside", "outside"]
    predictions = clf.predict(X[200:])
    assert {type(label) for label in predictions} == {str}
    assert np.mean(predictions == names[target_labels]) > 0.9
    with pytest.raises(ValueError, match="-1"):  # accuracy against unlabelled rows is refused
        clf.score(X, labels)


def test_inputs_and_estimators_are_not_modified(covariate_shift):
    X, y, _ = covariate_shift
    domains = np.repeat([1, -1], [200, 100])
    X_before, y_before = X.copy(), y.copy()
    estimator, discriminator = (
        LogisticRegression(C=0.5),
        RandomForestClassifier(n_estimators=5, random_state=0),
    )
    params = (estimator.get_params(), discriminator.get_params())
    with pytest.warns(FewEffectiveRowsWarning):  # a 5-tree forest's probabilities are mostly 0 or 1
        clf = iw(estimator=estimator, discriminator=discriminator).fit(X, y, sample_domain=domains)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)
    np.testing.assert_array_equal(domains, np.repeat([1, -1], [200, 100]))
    assert (estimator.get_params(), discriminator.get_params()) == params
    assert not hasattr(estimator, "coef_")
    assert not hasattr(discriminator, "estimators_")
    assert clf.estimator_ is not estimator
    assert isinstance(clf.discriminator_, RandomForestClassifier)


def test_methods_follow_the_estimator(covariate_shift):
    X, y, _ = covariate_shift
    clf = iw(estimator=SVC(kernel="linear")).fit(X, y)
    assert not hasattr(clf, "predict_proba")
    assert clf.decision_function(X).shape == (len(X),)
    assert hasattr(iw(), "predict_proba")
    with pytest.raises(sklearn.exceptions.NotFittedError):
        iw().predict(X)


def test_folds_need_two_rows_of_each_domain_and_a_splitter_is_used_as_given(covariate_shift):
    X, y, _ = covariate_shift
    one_target = y[:201].copy()
    one_target[200] = -1
    with pytest.raises(ValueError, match="at least 2 of each"):
        iw().fit(X[:201], one_target)
    few = iw(cv=5).fit(X[:203], y[:203])  # three target rows: three folds
    assert few.weights_.shape == (200,)
    splitter = KFold(3, shuffle=True, random_state=0)
    as_list = iw(cv=list(splitter.split(X))).fit(X, y).weights_
    np.testing.assert_array_equal(iw(cv=splitter).fit(X, y).weights_, as_list)
    with pytest.raises(ValueError, match="clip"):
        iw(clip=0).fit(X, y)
    for flatten in (-0.1, 1.5, "exact"):
        with pytest.raises(ValueError, match="flatten"):
            iw(flatten=flatten).fit(X, y)
