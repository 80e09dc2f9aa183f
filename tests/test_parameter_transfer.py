import warnings

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.cross_decomposition import PLSRegression
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import (
    GammaRegressor,
    LinearRegression,
    LogisticRegression,
    PoissonRegressor,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
    TweedieRegressor,
)
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC, NuSVC

from sktransfer.exceptions import UnnamedColumnsWarning
from sktransfer.parameter_transfer import (
    NewClassWarning,
    RegularTransferClassifier,
    RegularTransferRegressor,
)

LABELS = np.array(["ant", "bee", "cat"])


def related_tasks(n_classes, n_target=30, seed=0):
    """A source task with many rows and a target task whose class directions are slightly rotated."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n_classes, 5))
    X_source, X_target = rng.normal(size=(400, 5)), rng.normal(size=(n_target, 5))
    rotated = directions + 0.3 * rng.normal(size=directions.shape)

    def labels(X, weights):
        scores = X @ weights.T + rng.gumbel(size=(len(X), n_classes))  # noisy: not separable
        return LABELS[scores.argmax(axis=1)] if n_classes > 2 else scores.argmax(axis=1)

    return X_source, labels(X_source, directions), X_target, labels(X_target, rotated)


@pytest.fixture(params=[2, 3], ids=["binary", "multiclass"])
def tasks(request):
    return related_tasks(request.param)


def augmented(X):
    return np.hstack([X, np.ones((len(X), 1))])


def test_a_large_alpha_gives_the_source_model(tasks):
    X_source, y_source, X_target, y_target = tasks
    source = LogisticRegression().fit(X_source, y_source)
    clf = RegularTransferClassifier(source, alpha=1e12).fit(X_target, y_target)
    np.testing.assert_allclose(clf.predict_proba(X_source), source.predict_proba(X_source), atol=1e-8)
    np.testing.assert_array_equal(clf.predict(X_source), source.predict(X_source))


def test_alpha_zero_gives_the_target_only_fit(tasks):
    _, _, X_target, y_target = tasks
    source = LogisticRegression().fit(*related_tasks(len(np.unique(y_target)), seed=1)[:2])
    clf = RegularTransferClassifier(source, alpha=0.0, tol=1e-10).fit(X_target, y_target)
    target_only = LogisticRegression(C=1e12, tol=1e-10, max_iter=10_000).fit(X_target, y_target)
    np.testing.assert_allclose(clf.predict_proba(X_target), target_only.predict_proba(X_target), atol=1e-5)


def test_without_a_source_it_is_l2_logistic_regression_with_the_intercept_penalised(tasks):
    _, _, X, y = tasks
    weights = np.random.default_rng(3).uniform(0.2, 2, size=len(y))
    ours = RegularTransferClassifier(None, alpha=2.0, tol=1e-10).fit(X, y, sample_weight=weights)
    # sklearn's objective is 0.5 ||w||^2 + C * loss; on a column of ones, without an intercept of its own.
    theirs = LogisticRegression(C=0.25, fit_intercept=False, tol=1e-10, max_iter=10_000)
    theirs.fit(augmented(X), y, sample_weight=weights)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(augmented(X)), atol=1e-6)


def test_binary_fit_solves_its_optimality_condition():
    X_source, y_source, X, y = related_tasks(2)
    source = LogisticRegression().fit(X_source, y_source)
    weights = np.random.default_rng(4).uniform(0.2, 2, size=len(y))
    alpha = 3.0
    clf = RegularTransferClassifier(source, alpha=alpha, tol=1e-10).fit(X, y, sample_weight=weights)
    theta = np.r_[clf.coef_[0], clf.intercept_]
    prior = np.r_[source.coef_[0], source.intercept_]
    residuals = clf.predict_proba(X)[:, 1] - y
    gradient = augmented(X).T @ (weights * residuals) + 2 * alpha * (theta - prior)
    np.testing.assert_allclose(gradient, 0, atol=1e-7)


def test_integer_weights_equal_repeated_rows(tasks):
    X_source, y_source, X, y = tasks
    source = LogisticRegression().fit(X_source, y_source)
    weights = np.random.default_rng(5).integers(0, 4, size=len(y))
    weighted = RegularTransferClassifier(source, tol=1e-10).fit(X, y, sample_weight=weights)
    repeated = RegularTransferClassifier(source, tol=1e-10).fit(
        np.repeat(X, weights, 0), np.repeat(y, weights)
    )
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, atol=1e-6)
    np.testing.assert_allclose(weighted.intercept_, repeated.intercept_, atol=1e-6)


def test_fits_are_deterministic_and_the_source_is_left_as_it_was(tasks):
    X_source, y_source, X, y = tasks
    source = LogisticRegression().fit(X_source, y_source)
    before = joblib.hash(source)
    first = RegularTransferClassifier(source).fit(X, y)
    second = RegularTransferClassifier(source).fit(X, y)
    np.testing.assert_array_equal(first.coef_, second.coef_)
    assert joblib.hash(source) == before
    assert not np.shares_memory(first.coef_, source.coef_)
    assert first.predict_proba(X).sum(axis=1) == pytest.approx(1)
    assert first.predict(X).dtype == y.dtype


@pytest.mark.parametrize(
    "source",
    [LinearSVC(), RidgeClassifier(), SGDClassifier(random_state=0), LogisticRegression()],
    ids=lambda source: type(source).__name__,
)
def test_any_fitted_linear_classifier_is_a_source(tasks, source):
    X_source, y_source, X, y = tasks
    source.fit(X_source, y_source)
    clf = RegularTransferClassifier(source, alpha=1e12).fit(X, y)
    np.testing.assert_array_equal(clf.predict(X_source), source.predict(X_source))
    frozen = RegularTransferClassifier(FrozenEstimator(source), alpha=1e12).fit(X, y)
    np.testing.assert_allclose(frozen.coef_, clf.coef_)


def test_a_binary_target_reads_its_two_classes_of_a_multiclass_source():
    X_source, y_source, X, y = related_tasks(3)
    source = LogisticRegression().fit(X_source, y_source)
    kept = y != "bee"
    clf = RegularTransferClassifier(source, alpha=1e12).fit(X[kept], y[kept])
    assert clf.classes_.tolist() == ["ant", "cat"]
    rows = np.hstack([source.coef_, source.intercept_[:, None]])
    np.testing.assert_allclose(np.r_[clf.coef_[0], clf.intercept_], rows[2] - rows[0], atol=1e-8)


def test_a_class_the_source_lacks_starts_from_zero_with_a_warning():
    X_source, y_source, X, y = related_tasks(3)
    source = LogisticRegression().fit(X_source[y_source != "cat"], y_source[y_source != "cat"])
    with pytest.warns(NewClassWarning, match=r"the classes \['cat'\] of y are not among") as record:
        clf = RegularTransferClassifier(source, alpha=1e12).fit(X, y)
    assert [w.filename for w in record if w.category is NewClassWarning] == [__file__]  # the line of fit
    coef, intercept = source.coef_[0] / 2, source.intercept_[0] / 2  # a binary source, centred
    np.testing.assert_allclose(clf.coef_, [-coef, coef, 0 * coef], atol=1e-8)
    np.testing.assert_allclose(clf.intercept_, [-intercept, intercept, 0], atol=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RegularTransferClassifier(source).fit(X[y != "cat"], y[y != "cat"])  # no new class, no warning


def test_labels_without_a_class_in_common_are_refused():
    X_source, y_source, X, y = related_tasks(2)
    source = LogisticRegression().fit(X_source, y_source)
    with pytest.raises(ValueError, match=r"none of the classes of y \['0', '1'\] is among .* \[0, 1\]"):
        RegularTransferClassifier(source).fit(X, y.astype(str))


def test_unusable_sources_are_refused_before_fitting():
    X_source, y_source, X, y = related_tasks(2)
    with pytest.raises(NotFittedError, match=r"source_estimator=LogisticRegression\(\) is not fitted"):
        RegularTransferClassifier(LogisticRegression()).fit(X, y)
    source = LogisticRegression().fit(X_source[:, :3], y_source)
    with pytest.raises(ValueError, match=r"X has 5 features, but source_estimator was fitted on 3"):
        RegularTransferClassifier(source).fit(X, y)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(X_source, y_source)
    with pytest.raises(
        TypeError, match=r"source_estimator is a Pipeline: .*FrozenEstimator\(source\[:-1\]\)"
    ):
        RegularTransferClassifier(pipeline).fit(X, y)
    forest = RandomForestClassifier(n_estimators=2, random_state=0).fit(X_source, y_source)
    with pytest.raises(TypeError, match=r"has no coef_ and intercept_"):
        RegularTransferClassifier(forest).fit(X, y)
    ridge = Ridge().fit(X_source, y_source)
    with pytest.raises(
        TypeError, match=r"has no classes_: RegularTransferClassifier takes a fitted linear classifier"
    ):
        RegularTransferClassifier(ridge).fit(X, y)
    with pytest.raises(
        TypeError, match=r"is a classifier: RegularTransferRegressor takes a fitted linear regressor"
    ):
        RegularTransferRegressor(LogisticRegression().fit(X_source, y_source)).fit(X, y)
    with pytest.raises(ValueError, match=r"y has 1 target column\(s\), but source_estimator predicts 2"):
        RegularTransferRegressor(Ridge().fit(X_source, np.c_[y_source, y_source])).fit(X, y)


def test_sources_whose_coefficients_are_not_linear_scores_are_refused():
    # coef_ of these is not one linear score per class (a linear SVC's rows are pairs of classes, three of
    # them for three classes) or per output (a log link): they trained a model far from the source, silently
    X_source, y_source, X, y = related_tasks(3)
    for pairwise in (SVC(kernel="linear"), NuSVC(kernel="linear", nu=0.1)):
        source = pairwise.fit(X_source, y_source)
        for given in (source, FrozenEstimator(source)):
            with pytest.raises(TypeError, match=r"has 3 classes and keeps one coef_ row per pair of classes"):
                RegularTransferClassifier(given).fit(X, y)
    binary = related_tasks(2)
    RegularTransferClassifier(SVC(kernel="linear").fit(*binary[:2])).fit(*binary[2:])  # one row: one score
    counts = np.random.default_rng(0).poisson(np.exp(0.3 * X_source[:, 0]))
    for log_link in (PoissonRegressor(), GammaRegressor(), TweedieRegressor(power=1.5)):
        source = log_link.fit(X_source, counts + 1)
        with pytest.raises(TypeError, match=r"predicts exp\(X @ coef_ \+ intercept_\) \(a log link\)"):
            RegularTransferRegressor(source).fit(X, X[:, 0])
    RegularTransferRegressor(TweedieRegressor(power=0).fit(X_source, counts)).fit(X, X[:, 0])  # identity


def test_a_source_whose_scores_are_not_its_linear_map_is_refused():
    # PLS centres X before its coef_ (intercept_ is the mean of y): X @ coef_.T + intercept_ is not its
    # prediction, and the transfer started far from the source without a word
    X_source, _, X, _ = related_tasks(2)
    y_source = X_source @ np.arange(5.0) + 3.0
    pls = PLSRegression(n_components=2).fit(X_source + 5.0, y_source)
    with pytest.raises(
        TypeError, match=r"does not score X as X @ coef_.T \+ intercept_ \(its predict differs"
    ):
        RegularTransferRegressor(pls).fit(X, X @ np.arange(5.0))
    for linear in (Ridge(), LinearRegression()):  # a linear model's scores are its linear map
        RegularTransferRegressor(linear.fit(X_source, y_source)).fit(X, X @ np.arange(5.0))


def test_a_source_with_non_finite_coefficients_is_refused():
    X_source, y_source, X, y = related_tasks(2)
    source = LogisticRegression().fit(X_source, y_source)
    source.coef_[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"has NaN or infinite values in its coef_ or intercept_"):
        RegularTransferClassifier(source).fit(X, y)
    ridge = Ridge().fit(X_source, X_source[:, 0])
    ridge.intercept_ = np.inf
    with pytest.raises(ValueError, match=r"has NaN or infinite values"):
        RegularTransferRegressor(ridge).fit(X, X[:, 0])


def test_a_search_over_fitted_sources_keeps_them_fitted_when_frozen():
    X_source, y_source, X, y = related_tasks(2)
    weak, strong = (LogisticRegression(C=C).fit(X_source, y_source) for C in (0.01, 10.0))
    grid = {"source_estimator": [weak, strong]}
    with pytest.raises(NotFittedError, match=r"GridSearchCV clones the values it tries.*FrozenEstimator"):
        GridSearchCV(RegularTransferClassifier(weak), grid, cv=2, error_score="raise").fit(X, y)
    frozen = {"source_estimator": [FrozenEstimator(weak), FrozenEstimator(strong)]}
    search = GridSearchCV(RegularTransferClassifier(weak), frozen, cv=2, error_score="raise").fit(X, y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    with pytest.raises(ValueError, match=r"each wrapped in sklearn.frozen.FrozenEstimator"):
        RegularTransferClassifier(weak).set_params(source_estimator__C=1.0)


@pytest.mark.parametrize("estimator", [RegularTransferClassifier, RegularTransferRegressor])
def test_columns_in_another_order_than_the_sources_are_refused(tasks, estimator):
    pandas = pytest.importorskip("pandas")
    X_source, y_source, X, y = tasks
    columns = list("abcde")
    source_X = pandas.DataFrame(X_source, columns=columns)
    if estimator is RegularTransferRegressor:
        source, y = Ridge().fit(source_X, X_source @ np.arange(5.0)), X @ np.arange(5.0)
    else:
        source = LogisticRegression().fit(source_X, y_source)
    estimator(source).fit(pandas.DataFrame(X, columns=columns), y)  # the same columns: fine
    shuffled = pandas.DataFrame(X[:, ::-1], columns=columns[::-1])
    with pytest.raises(
        ValueError, match=r"column 0 is 'e' in X, 'a' in the source.*feature_names_in_, in that order"
    ):
        estimator(source).fit(shuffled, y)


def test_an_array_given_to_a_source_fitted_on_named_columns_warns(tasks):
    pandas = pytest.importorskip("pandas")
    X_source, y_source, X, y = tasks
    source = LogisticRegression().fit(pandas.DataFrame(X_source, columns=list("abcde")), y_source)
    with pytest.warns(
        UnnamedColumnsWarning, match=r"X has no column names, but .*\(\['a', 'b', 'c', 'd', 'e'\]\)"
    ):
        RegularTransferClassifier(source).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnnamedColumnsWarning)
        RegularTransferClassifier(source).fit(pandas.DataFrame(X, columns=list("abcde")), y)


def test_the_source_stays_fitted_through_clones_and_grid_search(tasks):
    X_source, y_source, X, y = tasks
    source = LogisticRegression().fit(X_source, y_source)
    clf = RegularTransferClassifier(source)
    assert clone(clf).source_estimator is source
    search = GridSearchCV(clf, {"alpha": [0.1, 10.0]}, cv=3).fit(X, y)
    assert search.best_estimator_.source_estimator is source


def test_the_sources_own_parameters_are_not_searchable(tasks):
    X_source, y_source, X, y = tasks
    source = LogisticRegression().fit(X_source, y_source)
    clf = RegularTransferClassifier(source)
    assert set(clf.get_params()) == {"source_estimator", "alpha", "max_iter", "tol"}
    with pytest.raises(ValueError, match=r"\['source_estimator__C'\] cannot be set"):
        GridSearchCV(clf, {"source_estimator__C": [0.001, 100.0]}, cv=3).fit(X, y)
    assert source.C == 1.0  # the user's source model as it was
    regressor = RegularTransferRegressor(Ridge().fit(X_source, X_source[:, 0]))
    with pytest.raises(ValueError, match="source_estimator__alpha"):
        regressor.set_params(source_estimator__alpha=5.0)


def test_too_few_iterations_warn():
    X_source, y_source, X, y = related_tasks(3)
    source = LogisticRegression().fit(X_source, y_source)
    with pytest.warns(ConvergenceWarning, match=r"raise max_iter") as record:
        RegularTransferClassifier(source, alpha=0.0, max_iter=1).fit(X, y)
    with pytest.warns(ConvergenceWarning) as in_pipeline:
        make_pipeline(StandardScaler(), RegularTransferClassifier(source, alpha=0.0, max_iter=1)).fit(X, y)
    # Both point at the line that called fit, not at a frame of sklearn's or the library's.
    assert {w.filename for w in [*record, *in_pipeline] if w.category is ConvergenceWarning} == {__file__}


# -- the regressor ------------------------------------------------------------------------------------------


@pytest.fixture
def regression():
    rng = np.random.default_rng(0)
    X_source, X = rng.normal(size=(300, 6)), rng.normal(size=(20, 6))
    weights = rng.normal(size=6)
    y_source = X_source @ weights + 1 + 0.1 * rng.normal(size=300)
    y = X @ (weights + 0.2 * rng.normal(size=6)) + 1.5 + 0.1 * rng.normal(size=20)
    return X_source, y_source, X, y


def test_regressor_solves_the_penalised_normal_equations(regression):
    X_source, y_source, X, y = regression
    source = Ridge().fit(X_source, y_source)
    weights = np.random.default_rng(1).uniform(0.2, 2, size=len(y))
    alpha = 2.5
    reg = RegularTransferRegressor(source, alpha=alpha).fit(X, y, sample_weight=weights)
    design, prior = augmented(X), np.r_[source.coef_, source.intercept_]
    normal = design.T @ (weights[:, None] * design) + alpha * np.eye(7)
    expected = np.linalg.solve(normal, design.T @ (weights * y) + alpha * prior)
    np.testing.assert_allclose(np.r_[reg.coef_, reg.intercept_], expected)
    np.testing.assert_allclose(reg.predict(X), design @ expected)
    assert isinstance(reg.intercept_, float)


def test_regressor_limits(regression):
    X_source, y_source, X, y = regression
    source = Ridge().fit(X_source, y_source)
    at_source = RegularTransferRegressor(source, alpha=1e12).fit(X, y)
    np.testing.assert_allclose(at_source.coef_, source.coef_, atol=1e-9)
    np.testing.assert_allclose(at_source.intercept_, source.intercept_, atol=1e-9)
    target_only = LinearRegression().fit(X, y)
    unpenalised = RegularTransferRegressor(source, alpha=0.0).fit(X, y)
    np.testing.assert_allclose(unpenalised.coef_, target_only.coef_)
    np.testing.assert_allclose(unpenalised.intercept_, target_only.intercept_)
    # With fewer rows than parameters: the exact fit closest to the source.
    few = RegularTransferRegressor(source, alpha=0.0).fit(X[:4], y[:4])
    np.testing.assert_allclose(few.predict(X[:4]), y[:4])
    prior = np.r_[source.coef_, source.intercept_]
    closest = prior + np.linalg.pinv(augmented(X[:4])) @ (y[:4] - augmented(X[:4]) @ prior)
    np.testing.assert_allclose(np.r_[few.coef_, few.intercept_], closest)


def test_regressor_weights_and_several_targets(regression):
    X_source, y_source, X, y = regression
    targets = np.c_[y, -2 * y]
    source = LinearRegression().fit(X_source, np.c_[y_source, -2 * y_source])
    reg = RegularTransferRegressor(source).fit(X, targets)
    assert reg.coef_.shape == (2, 6)
    assert reg.predict(X).shape == (20, 2)
    single = RegularTransferRegressor(Ridge().fit(X_source, -2 * y_source)).fit(X, -2 * y)
    assert single.coef_.shape == (6,)
    weights = np.random.default_rng(2).integers(0, 4, size=len(y))
    weighted = RegularTransferRegressor(source).fit(X, targets, sample_weight=weights)
    repeated = RegularTransferRegressor(source).fit(np.repeat(X, weights, 0), np.repeat(targets, weights, 0))
    np.testing.assert_allclose(weighted.coef_, repeated.coef_)
