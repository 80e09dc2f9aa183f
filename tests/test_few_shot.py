import warnings

import numpy as np
import pytest
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import make_pipeline

from sktransfer import PretrainedFeatureExtractor
from sktransfer._changed_settings import SettingsChangedWarning
from sktransfer.exceptions import ZeroVectorRowsWarning
from sktransfer.few_shot import PrototypeClassifier

from ._models import TinyConvNet


@pytest.fixture
def blobs():
    """Three classes of 6-D rows around different directions, at different lengths."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 6))
    y = np.repeat(np.array(["ant", "bee", "cat"]), 20)
    X = centres[np.repeat(np.arange(3), 20)] + 0.5 * rng.normal(size=(60, 6))
    return X * rng.uniform(0.5, 3, size=(60, 1)), y


def test_cosine_prototypes_are_unit_means_of_unit_rows(blobs):
    X, y = blobs
    clf = PrototypeClassifier().fit(X, y)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    for prototype, label in zip(clf.prototypes_, clf.classes_, strict=True):
        mean = unit[y == label].mean(axis=0)
        np.testing.assert_allclose(prototype, mean / np.linalg.norm(mean))
    cosines = unit @ clf.prototypes_.T
    np.testing.assert_allclose(clf.decision_function(X), cosines)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[cosines.argmax(axis=1)])
    # Cosine reads directions only: rescaling a row changes nothing.
    np.testing.assert_allclose(clf.predict_proba(7 * X), clf.predict_proba(X))


def test_euclidean_predicts_as_nearest_centroid(blobs):
    X, y = blobs
    rng = np.random.default_rng(1)
    test = rng.normal(size=(200, 6)) * 2
    ours = PrototypeClassifier(metric="euclidean").fit(X, y)
    theirs = NearestCentroid().fit(X, y)
    np.testing.assert_allclose(ours.prototypes_, theirs.centroids_)
    np.testing.assert_array_equal(ours.predict(test), theirs.predict(test))


def test_probabilities_are_a_softmax_of_similarities_over_temperature(blobs):
    X, y = blobs
    sharp = PrototypeClassifier(temperature=0.01).fit(X, y)
    soft = PrototypeClassifier(temperature=10).fit(X, y)
    for clf in (sharp, soft):
        proba = clf.predict_proba(X)
        np.testing.assert_allclose(proba.sum(axis=1), 1)
        np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))
        scores = clf.decision_function(X) / clf.temperature
        expected = np.exp(scores - scores.max(axis=1, keepdims=True))
        np.testing.assert_allclose(proba, expected / expected.sum(axis=1, keepdims=True))
    assert sharp.predict_proba(X).max(axis=1).mean() > 0.9
    assert soft.predict_proba(X).max(axis=1).max() < 0.5


def test_binary_decision_function_is_the_second_class_minus_the_first():
    X = np.array([[1.0, 0], [0, 1], [2, 0.5], [0.5, 2]])
    clf = PrototypeClassifier().fit(X, [0, 1, 0, 1])
    similarities = clf.predict_proba(X)  # monotone in the similarities
    assert clf.decision_function(X).shape == (4,)
    np.testing.assert_array_equal(clf.decision_function(X) > 0, similarities[:, 1] > similarities[:, 0])
    assert clf.predict(X).tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_integer_weights_equal_repeated_rows(blobs, metric):
    X, y = blobs
    weights = np.random.default_rng(2).integers(1, 4, size=len(y))
    weighted = PrototypeClassifier(metric=metric).fit(X, y, sample_weight=weights)
    repeated = PrototypeClassifier(metric=metric).fit(np.repeat(X, weights, axis=0), np.repeat(y, weights))
    np.testing.assert_allclose(weighted.prototypes_, repeated.prototypes_)


def test_a_class_without_weight_is_refused(blobs):
    X, y = blobs
    weights = np.where(y == "bee", 0.0, 1.0)
    with pytest.raises(ValueError, match=r"sample_weight sums to 0 over the class\(es\) \['bee'\]"):
        PrototypeClassifier().fit(X, y, sample_weight=weights)


def test_a_blank_label_of_a_pandas_string_column_is_named():
    pandas = pytest.importorskip("pandas")
    y = pandas.Series(["a", "b", pandas.NA, "a", "b", "a"], dtype="string")
    with pytest.raises(ValueError, match=r"y holds missing labels \(NaN, None or NA\) at samples \[2\]"):
        PrototypeClassifier().fit(np.eye(6), y)  # was pandas' "boolean value of NA is ambiguous"


def test_one_shot_and_inputs_left_unchanged(blobs):
    X, y = blobs
    shots = [np.flatnonzero(y == label)[0] for label in ("ant", "bee", "cat")]
    X_shots = X[shots]
    before = X_shots.copy()
    clf = PrototypeClassifier().fit(X_shots, y[shots])
    np.testing.assert_array_equal(X_shots, before)
    assert clf.predict(X_shots).tolist() == ["ant", "bee", "cat"]
    assert np.mean(clf.predict(X) == y) > 0.8


def test_few_shot_images_in_a_pipeline(labelled_images):
    X, y = labelled_images
    shots = np.r_[0:2, 12:14]  # two images per class
    pipeline = make_pipeline(
        PretrainedFeatureExtractor(model=TinyConvNet, device="cpu"), PrototypeClassifier()
    )
    pipeline.fit(X[shots], y[shots])
    assert pipeline.predict_proba(X).shape == (len(X), 2)
    assert np.mean(pipeline.predict(X) == y) > 0.9


def test_a_metric_changed_after_fit_warns_and_the_prototypes_keep_theirs():
    X = np.array([[1.0, 0.0], [1.0, 0.0], [10.0, 1.0], [10.0, 1.0]])
    clf = PrototypeClassifier(metric="euclidean").fit(X, ["a", "a", "b", "b"])
    query = [[5.0, 0.3]]  # nearer a's mean; the cosine of its direction with b's unscaled mean is larger
    assert clf.predict(query).tolist() == ["a"]
    clf.set_params(metric="cosine")
    with pytest.warns(
        SettingsChangedWarning, match=r"metric changed after fitting \(from 'euclidean' to 'cosine'\)"
    ):
        assert clf.predict(query).tolist() == [
            "a"
        ]  # the prototypes are compared by the metric they were made for
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingsChangedWarning)
        clf.set_params(metric="euclidean", temperature=2.0).predict_proba(
            query
        )  # temperature applies at once


def test_rows_without_a_direction_warn_and_a_prototype_without_one_is_refused():
    X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.0, 0.0]])
    y = ["a", "a", "b", "b", "b"]
    with pytest.warns(ZeroVectorRowsWarning, match=r"rows of zeros \(samples \[4\]\).*add nothing") as record:
        clf = PrototypeClassifier().fit(X, y)
    assert record[0].filename == __file__
    with pytest.warns(ZeroVectorRowsWarning, match=r"samples \[1\]\).*equal probabilities"):
        proba = clf.predict_proba(np.array([[1.0, 1.0], [0.0, 0.0]]))
    np.testing.assert_allclose(proba[1], [0.5, 0.5])
    opposite = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match=r"classes \['x'\] average to zeros"):
        PrototypeClassifier().fit(opposite, ["x", "x", "y", "y"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PrototypeClassifier(metric="euclidean").fit(X, y).predict(X)  # a centroid has no need of directions


def test_cosine_reads_the_direction_of_tiny_rows():
    """scikit-learn's normalize leaves rows under ten machine epsilons unscaled: the cosine would not be one."""
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    clf = PrototypeClassifier(temperature=0.1).fit(X * 1e-16, ["cat", "dog"])
    np.testing.assert_allclose(np.linalg.norm(clf.prototypes_, axis=1), 1.0)
    rows = np.array([[0.9, 0.1], [0.1, 0.9]])
    np.testing.assert_allclose(clf.predict_proba(rows * 1e-16), clf.predict_proba(rows))
    np.testing.assert_array_equal(clf.predict(rows * 1e-16), ["cat", "dog"])


@pytest.mark.parametrize("temperature", [0, -0.1])
def test_a_temperature_set_after_fit_is_checked_when_it_is_read(temperature):
    clf = PrototypeClassifier().fit(np.eye(2), ["cat", "dog"])
    clf.set_params(temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        clf.predict_proba(np.eye(2))


def test_a_class_whose_unit_rows_cancel_out_up_to_rounding_is_refused():
    # Three unit rows 120 degrees apart sum to ~1e-16: the prototype was that rounding noise, scaled to unit
    # length, and predictions followed it with no warning.
    angles = np.deg2rad([90, 210, 330])
    X = np.vstack([np.column_stack([np.cos(angles), np.sin(angles)]), [[1.0, 0.0], [0.9, 0.1]]])
    with pytest.raises(ValueError, match=r"classes \[0\] average to zeros \(or cancel out\)"):
        PrototypeClassifier().fit(X, [0, 0, 0, 1, 1])


def test_tiny_features_give_an_underflow_error_for_distances():
    # Every squared distance rounds to 0, and argmax picked classes_[0] for every row.
    X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    y = [0, 0, 1, 1]
    near = PrototypeClassifier(metric="euclidean").fit(X * 1e-170, y)
    with pytest.raises(FloatingPointError, match=r"samples \[0, 1, 2, 3\] to the prototypes underflow"):
        near.predict(X * 1e-170)
    np.testing.assert_array_equal(
        PrototypeClassifier(metric="euclidean").fit(X * 1e-150, y).predict(X * 1e-150), y
    )
    same = PrototypeClassifier(metric="euclidean").fit(np.ones((4, 2)), [0, 1, 2, 2])  # equal prototypes
    assert same.predict(np.ones((1, 2))).tolist() == [0]


def test_huge_features_give_right_cosines_and_an_overflow_error_for_distances():
    X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    y = [0, 0, 1, 1]
    clf = PrototypeClassifier().fit(X * 1e200, y)  # their lengths overflowed: every row became zeros
    np.testing.assert_array_equal(clf.predict(X * 1e200), y)
    np.testing.assert_allclose(clf.prototypes_, PrototypeClassifier().fit(X, y).prototypes_)
    far = PrototypeClassifier(metric="euclidean").fit(X * 1e160, y)  # NaN probabilities, every row class 0
    with pytest.raises(FloatingPointError, match=r"samples \[0, 1, 2, 3\] to the prototypes overflow"):
        far.predict(X * 1e160)
