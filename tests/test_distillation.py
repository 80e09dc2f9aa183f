"""Knowledge distillation: a network learns from a fitted teacher's probabilities, on labelled and -1 rows."""

import pickle
import warnings
from typing import ClassVar

import numpy as np
import pytest
import sklearn
import torch
from sklearn.base import clone
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVC
from sklearn.utils._param_validation import InvalidParameterError
from skorch.dataset import Dataset as SkorchDataset
from skorch.helper import predefined_split

from sktransfer import FineTuneClassifier, labelled_rows_scorer
from sktransfer._distillation import distillation_loss, kl_dtype, soften, teacher_probabilities
from sktransfer.exceptions import IgnoredSettingWarning, UnlabelledScoringWarning

from ._models import CountingNet, TinyConvNet


def colour_cues(X):
    """Two numbers per image: red minus green, and brightness."""
    X = np.asarray(X, dtype=np.float64)
    return np.stack(
        [X[..., 0].mean(axis=(1, 2)) - X[..., 1].mean(axis=(1, 2)), X.mean(axis=(1, 2, 3))], axis=1
    )


class CountingPipeline(Pipeline):
    """A Pipeline that records how many rows each ``predict_proba`` call received."""

    calls: ClassVar[list] = []

    def predict_proba(self, X, **params):
        self.calls.append(len(X))
        return super().predict_proba(X, **params)


def images(colours, brightness, seed):
    """16×16 images: bright (150) or dark (20) with noise, and red or green (+50 in that channel)."""
    rng = np.random.default_rng(seed)
    X = (
        rng.integers(0, 30, size=(len(colours), 16, 16, 3))
        + np.where(brightness, 150, 20)[:, None, None, None]
    )
    X[np.arange(len(X)), :, :, np.where(colours == "red", 0, 1)] += 50
    return X.astype(np.uint8)


@pytest.fixture(scope="module")
def teacher():
    """Knows the task: the colour, whatever the brightness."""
    colours = np.array(["red", "green"] * 40)
    X = images(colours, np.tile([True, True, False, False], 20), seed=1)
    steps = [("cues", FunctionTransformer(colour_cues)), ("model", LogisticRegression())]
    return CountingPipeline(steps).fit(X, colours)


@pytest.fixture(scope="module")
def confounded():
    """Labelled rows where brightness and colour go together (red ones bright); unlabelled rows of all four kinds."""
    labelled = np.array(["red", "green"] * 4)
    unlabelled = np.array(["red", "green"] * 16)
    X = np.concatenate(
        [
            images(labelled, labelled == "red", seed=2),
            images(unlabelled, np.tile([True, True, False, False], 8), seed=3),
        ]
    )
    y = np.concatenate([labelled, np.full(len(unlabelled), -1, dtype=object)]).astype(object)
    return X, y, len(labelled)


def tiny(**params):
    defaults = {
        "model": TinyConvNet,
        "device": "cpu",
        "strategy": "full",
        "lr": 0.05,
        "max_epochs": 8,
        "batch_size": 8,
        "random_state": 0,
    }
    return FineTuneClassifier(**{**defaults, **params})


def test_a_distilled_student_follows_the_teacher_where_labels_mislead(teacher, confounded):
    X, y, n_labelled = confounded
    unlabelled = X[n_labelled:]
    expected = teacher.predict(unlabelled)
    plain = tiny().fit(X[:n_labelled], y[:n_labelled].astype(str))
    student = tiny(teacher=teacher).fit(X, y)
    assert student.classes_.tolist() == ["green", "red"]
    plain_agreement = np.mean(plain.predict(unlabelled) == expected)
    student_agreement = np.mean(student.predict(unlabelled) == expected)
    assert student_agreement >= 0.95
    assert student_agreement >= plain_agreement + 0.2


def test_a_students_score_refuses_unlabelled_rows_which_would_count_as_errors(teacher, confounded):
    X, y, n_labelled = confounded
    student = tiny(teacher=FrozenEstimator(teacher), max_epochs=2).fit(X, y)
    with pytest.raises(
        ValueError, match=r"y holds -1 \(unlabelled rows\) at samples \[8, 9,.*Score with labelled"
    ):
        student.score(X, y)
    assert 0 <= student.score(X[:n_labelled], y[:n_labelled].astype(str)) <= 1
    with pytest.warns(UnlabelledScoringWarning, match="y holds -1"):  # said first, inside cross-validation
        scores = cross_val_score(student, X, y, cv=KFold(2, shuffle=True, random_state=0))
    assert np.isnan(scores).all()
    # without a teacher, -1 is a label like any other
    numbers = np.array([0, 1, -1] * 4)
    without = tiny(max_epochs=1).fit(X[:12], numbers)
    assert 0 <= without.score(X[:12], numbers) <= 1


def test_labelled_rows_scorer_cross_validates_a_student_on_the_labelled_rows_of_each_fold(
    teacher, confounded
):
    X, y, n_labelled = confounded
    student = tiny(teacher=FrozenEstimator(teacher), max_epochs=2)
    folds = list(KFold(2, shuffle=True, random_state=0).split(X))
    scorer = labelled_rows_scorer("accuracy")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnlabelledScoringWarning)
        scores = cross_val_score(student, X, y, cv=folds, scoring=scorer)
        grid = GridSearchCV(student, {"temperature": [2.0, 4.0]}, cv=folds, scoring=scorer).fit(X, y)
    assert not np.isnan(grid.cv_results_["mean_test_score"]).any()
    for (train, test), score in zip(folds, scores, strict=True):
        labelled = test[test < n_labelled]
        fitted = clone(student).fit(X[train], y[train])
        assert score == pytest.approx(np.mean(fitted.predict(X[labelled]) == y[labelled]))
    # the unlabelled rows are neither counted as errors nor predicted
    always_red = DummyClassifier(strategy="constant", constant="red").fit(X[:2], ["red", "green"])
    assert scorer(always_red, X, y) == pytest.approx(np.mean(y[:n_labelled] == "red"))
    assert scorer(always_red, X.tolist(), list(y)) == scorer(always_red, X, y)  # a list of labels and of rows
    assert repr(scorer) == "labelled_rows_scorer('accuracy')"
    with pytest.raises(ValueError, match="'acuracy' is not a valid scoring value"):
        labelled_rows_scorer("acuracy")  # at once, not as a NaN in every fold
    with pytest.raises(ValueError, match=r"none of the 32 rows has a label \(y == -1 or blank\)"):
        scorer(always_red, X[n_labelled:], y[n_labelled:])
    numbers = np.array([0, 1, -1] * 4)  # -1 among the classes (no teacher): a label like any other
    minus_one = DummyClassifier(strategy="constant", constant=-1).fit(X[:12], numbers)
    assert scorer(minus_one, X[:12], numbers) == pytest.approx(1 / 3)


def test_teacher_probabilities_are_computed_once_per_fit(teacher, confounded):
    X, y, _ = confounded
    CountingNet.calls.clear()
    for params in ({}, {"early_stopping": True, "validation_fraction": 0.25, "max_epochs": 3}):
        teacher.calls.clear()
        tiny(teacher=teacher, **params).fit(X, y)
        assert teacher.calls == [len(X)]
    # the linear probe's fast path: the backbone's features and the teacher's probabilities, each once
    teacher.calls.clear()
    probe = tiny(teacher=teacher, model=CountingNet, strategy="linear_probe", max_epochs=3).fit(X, y)
    assert teacher.calls == [len(X)]
    assert CountingNet.image_rows() == len(X)
    probe.partial_fit(X, y)
    assert teacher.calls == [len(X)] * 2


def test_every_row_unlabelled_distils_the_teacher_alone(teacher, confounded):
    X = confounded[0]
    y = np.full(len(X), -1)
    student = tiny(teacher=teacher, distillation_weight=1.0).fit(X, y)
    assert student.classes_.tolist() == ["green", "red"]
    assert np.mean(student.predict(X) == teacher.predict(X)) >= 0.9


def test_bad_teachers_are_refused_before_training(teacher, confounded):
    X, y, _ = confounded
    unfitted = Pipeline([("cues", FunctionTransformer(colour_cues)), ("model", LogisticRegression())])
    with pytest.raises(NotFittedError, match=r"teacher=Pipeline is not fitted.*FrozenEstimator"):
        tiny(teacher=unfitted).fit(X, y)
    with pytest.raises(InvalidParameterError, match=r"'teacher' parameter.*predict_proba"):
        tiny(teacher=LinearSVC()).fit(X, y)
    with pytest.raises(ValueError, match=r"labels that the teacher does not predict: \['blue'\]"):
        tiny(teacher=teacher).fit(X, np.where(y == "red", "blue", y))
    minus_one = Pipeline([("cues", FunctionTransformer(colour_cues)), ("model", LogisticRegression())])
    minus_one.fit(X[:8], np.array([-1, 1] * 4))
    with pytest.raises(ValueError, match="the teacher predicts a class -1"):
        tiny(teacher=minus_one).fit(X, y)
    with pytest.raises(InvalidParameterError, match="'temperature'"):
        tiny(teacher=teacher, temperature=0).fit(X, y)


def test_with_a_teacher_minus_one_among_the_students_classes_is_refused(teacher, confounded):
    # -1 marks unlabelled rows: as a class of the student it made them labelled, and the labelled-rows
    # scorer counted every one as an error.
    X, y, _ = confounded
    with pytest.raises(ValueError, match="classes holds -1, which marks unlabelled rows"):
        tiny(teacher=teacher, classes=[-1, "green", "red"]).fit(X, y)
    with pytest.raises(ValueError, match="partial_fit's classes holds -1"):
        tiny(teacher=teacher).partial_fit(X, y, classes=[-1, "green", "red"])


def test_the_loss_is_exact_at_a_large_temperature():
    # In float32, T² times a KL of order 1/T² was rounding: at T = 1e5 the recorded loss came out negative.
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=generator) * 3
    proba = torch.softmax(torch.randn(64, 10, generator=generator, dtype=torch.float64) * 3, dim=1).numpy()
    temperature = 1e5
    teacher = torch.as_tensor(soften(proba, temperature))
    exact = temperature**2 * (teacher * (teacher.log() - torch.log_softmax(logits.double() / temperature, 1)))
    labels = torch.full((64,), -1)
    loss = distillation_loss(logits, labels, teacher, torch.nn.CrossEntropyLoss(), temperature, weight=1.0)
    assert loss.item() == pytest.approx(exact.sum(dim=1).mean().item(), rel=1e-5)


def test_the_kl_term_is_float64_but_on_apples_gpus():
    # MPS holds no float64: the teacher's probabilities, float64 since the KL term is, would fail there.
    assert kl_dtype("cpu") == kl_dtype(torch.device("cuda")) == torch.float64
    assert kl_dtype("mps") == torch.float32


def test_without_a_teacher_minus_one_is_a_label(labelled_images):
    X, y = labelled_images
    labels = np.where(y == "dark", -1, 1)  # scikit-learn's check_classifiers_classes uses [-1, 1]
    assert tiny(max_epochs=1).fit(X, labels).classes_.tolist() == [-1, 1]


def test_clones_need_a_frozen_teacher(teacher, confounded):
    X, y, _ = confounded
    student = tiny(teacher=teacher, max_epochs=2)
    with pytest.raises(NotFittedError, match="FrozenEstimator"):
        clone(student).fit(X, y)  # the clone's teacher is an unfitted copy
    frozen = FrozenEstimator(teacher)
    copy = clone(tiny(teacher=frozen, max_epochs=2))
    assert copy.teacher is frozen
    np.testing.assert_array_equal(
        copy.fit(X, y).predict_proba(X), tiny(teacher=teacher, max_epochs=2).fit(X, y).predict_proba(X)
    )


def test_fits_are_deterministic_and_leave_the_teacher_alone(teacher, confounded):
    X, y, _ = confounded
    coef = teacher[-1].coef_.copy()
    X_before, y_before = X.copy(), y.copy()
    first = tiny(teacher=teacher, max_epochs=2, augment="default").fit(X, y).predict_proba(X)
    second = tiny(teacher=teacher, max_epochs=2, augment="default").fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(teacher[-1].coef_, coef)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)


def test_a_distilled_student_pickles_without_the_teacher_probabilities(teacher, confounded):
    X, y, _ = confounded
    student = tiny(teacher=teacher, max_epochs=2, early_stopping=True).fit(X, y)
    held = [name for name, value in vars(student).items() if _holds_rows(value, len(X))]
    held += [
        name
        for name, callback in student.callbacks_
        if any(_holds_rows(v, len(X)) for v in vars(callback).values())
    ]
    assert held == []
    restored = pickle.loads(pickle.dumps(student))
    np.testing.assert_array_equal(restored.predict_proba(X), student.predict_proba(X))
    alone = pickle.loads(pickle.dumps(student.set_params(teacher=None)))  # a student that only predicts
    np.testing.assert_array_equal(alone.predict(X), student.predict(X))


def _holds_rows(value, n_rows):
    """Whether ``value`` is an array, tensor or dict of them with ``n_rows`` rows."""
    if isinstance(value, dict):
        return any(_holds_rows(item, n_rows) for item in value.values())
    if isinstance(value, list):
        return any(_holds_rows(item, n_rows) for item in value[:50])
    return isinstance(value, np.ndarray | torch.Tensor) and value.ndim > 0 and len(value) == n_rows


def test_teacher_columns_follow_the_students_classes(teacher, confounded):
    X, _, _ = confounded
    own = teacher.predict_proba(X)
    swapped = teacher_probabilities(teacher, X, np.array(["red", "green"]), len(X))
    np.testing.assert_allclose(swapped, own[:, ::-1])
    wider = teacher_probabilities(teacher, X, np.array(["blue", "green", "red"]), len(X))
    np.testing.assert_allclose(wider, np.column_stack([np.zeros(len(X)), own]))
    with pytest.raises(ValueError, match=r"predicts classes \['red'\] that are not among"):
        teacher_probabilities(teacher, X, np.array(["green", "blue"]), len(X))


def test_a_student_with_classes_of_its_own_fits_and_continues(teacher, confounded):
    # classes wider than the teacher's: the teacher's probability of "blue" is 0, the student's is learnt
    X, y, _ = confounded
    student = tiny(teacher=teacher, classes=["blue", "green", "red"], max_epochs=1).fit(X, y)
    assert student.classes_.tolist() == ["blue", "green", "red"]
    assert student.partial_fit(X, y).predict_proba(X).shape == (len(X), 3)


def test_softening_probabilities_is_softening_logits():
    logits = np.array([[3.0, 1.0, -2.0], [0.0, 0.5, 0.2]])
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = np.exp(logits / 3) / np.exp(logits / 3).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(soften(proba, 3.0), expected)
    np.testing.assert_array_equal(soften(np.array([[1.0, 0.0]]), 4.0), [[1.0, 0.0]])  # zeros stay zeros


def test_the_loss_weighs_labels_and_teacher():
    logits = torch.tensor([[1.0, -1.0], [0.5, 0.5], [-2.0, 2.0]])
    labels = torch.tensor([0, -1, 1])
    teacher = torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]])
    criterion = torch.nn.CrossEntropyLoss()
    cross_entropy = criterion(logits[[0, 2]], labels[[0, 2]])
    student = torch.log_softmax(logits / 2.0, dim=1)
    kl = (teacher * (teacher.log() - student)).sum(dim=1).mean()
    loss = distillation_loss(logits, labels, teacher, criterion, temperature=2.0, weight=0.25)
    torch.testing.assert_close(loss, 0.75 * cross_entropy + 0.25 * 4.0 * kl)
    alone = distillation_loss(logits, labels, teacher, criterion, temperature=2.0, weight=0.0)
    torch.testing.assert_close(alone, cross_entropy)


def test_string_labels_come_back_as_the_teacher_gives_them(teacher, confounded):
    X, y, n_labelled = confounded
    student = tiny(teacher=teacher, max_epochs=2).fit(X, y)
    predictions = student.predict(X[:n_labelled])
    assert predictions.dtype == teacher.classes_.dtype
    assert set(predictions.tolist()) <= {"red", "green"}
    assert student.score(X[:n_labelled], y[:n_labelled].astype(str)) >= 0.75


def test_a_plain_list_of_labels_and_minus_one_marks_unlabelled_rows(teacher, confounded):
    X, y, _ = confounded
    as_array = tiny(teacher=teacher, max_epochs=2).fit(X, y)
    as_list = tiny(teacher=teacher, max_epochs=2).fit(X, y.tolist())  # NumPy would read -1 as the text "-1"
    np.testing.assert_array_equal(as_list.predict_proba(X), as_array.predict_proba(X))


def test_a_text_student_learns_from_a_tfidf_teacher(tiny_text_model):
    texts = np.array(["good film", "great acting", "bad plot", "awful film", "fine cast", "dull story"] * 3)
    labels = np.array(["pos", "pos", "neg", "neg", "pos", "neg"] * 3)
    teacher = Pipeline([("tfidf", TfidfVectorizer()), ("model", LogisticRegression())]).fit(texts, labels)
    y = labels.astype(object)
    y[6:] = -1
    student = tiny(
        model=tiny_text_model, teacher=teacher, max_epochs=2, early_stopping=True, validation_fraction=0.25
    )
    student.fit(texts, y)
    assert student.predict(texts).shape == (len(texts),)
    assert set(student.classes_.tolist()) == {"neg", "pos"}


def test_settings_that_cannot_take_effect_warn(labelled_images):
    X, y = labelled_images
    cases = {
        r"temperature=2\.0 and distillation_weight=0\.2 take effect only with a teacher": {
            "temperature": 2.0,
            "distillation_weight": 0.2,
        },
        r"regularization_strength=5\.0 takes effect only with regularization='l2_sp'": {
            "regularization_strength": 5.0
        },
        r"lora_rank=4 takes effect only with strategy='lora'": {"lora_rank": 4},
    }
    for message, params in cases.items():
        with pytest.warns(UserWarning, match=message) as record:
            tiny(max_epochs=1, **params).fit(X, y)
        assert [w.filename for w in record if "take" in str(w.message)] == [__file__]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        tiny(max_epochs=1).fit(X, y)  # at their defaults, nothing to say


def test_a_teacher_without_weight_warns_and_cannot_teach_unlabelled_rows(teacher, confounded):
    X, y, n_labelled = confounded
    with pytest.warns(IgnoredSettingWarning, match=r"distillation_weight=0 gives the teacher no weight"):
        tiny(teacher=teacher, distillation_weight=0.0, max_epochs=1).fit(X, y)
    with pytest.raises(ValueError, match=r"every row of y is -1 .* nothing would train"):
        tiny(teacher=teacher, distillation_weight=0.0, max_epochs=1).fit(X[n_labelled:], y[n_labelled:])


def test_labelled_rows_scorer_takes_the_sample_weights_of_the_labelled_rows_under_routing():
    X = np.arange(12.0)[:, None]
    y = np.array(["red", "green", "red", "-1"] * 3, dtype=object)
    y[y == "-1"] = -1
    weights = np.arange(1.0, 13.0)
    always_red = DummyClassifier(strategy="constant", constant="red").fit(X[:2], ["red", "green"])
    scorer = labelled_rows_scorer("accuracy")
    labelled = np.flatnonzero(y != -1)
    expected = np.average(y[labelled] == "red", weights=weights[labelled])
    assert scorer(always_red, X, y, sample_weight=weights) == pytest.approx(expected)
    with pytest.raises(ValueError, match="sample_weight has 3 values for 12 rows"):
        scorer(always_red, X, y, sample_weight=weights[:3])
    folds = [(np.arange(6), np.arange(6, 12)), (np.arange(6, 12), np.arange(6))]
    with sklearn.config_context(enable_metadata_routing=True):
        with pytest.raises(
            Exception, match="not explicitly set as requested or not requested for labelled_rows"
        ):
            cross_validate(
                FrozenEstimator(always_red),
                X,
                y,
                cv=folds,
                scoring=scorer,
                params={"sample_weight": weights},
            )
        requested = labelled_rows_scorer("accuracy").set_score_request(sample_weight=True)
        result = cross_validate(
            FrozenEstimator(always_red),
            X,
            y,
            cv=folds,
            scoring=requested,
            params={"sample_weight": weights},
        )
    for (_, test), score in zip(folds, result["test_score"], strict=True):
        rows = test[y[test] != -1]
        assert score == pytest.approx(np.average(y[rows] == "red", weights=weights[rows]))
    with pytest.raises(RuntimeError, match="metadata routing is enabled"):
        labelled_rows_scorer().set_score_request(sample_weight=True)


def test_a_predefined_validation_set_is_scored_with_the_training_loss(teacher, confounded):
    # valid_loss of a user's validation set is the distillation loss, as on the early-stopping split, and
    # its unlabelled rows (-1) count through the teacher's term alone, as training rows do.
    X, y, n_labelled = confounded
    X_valid, y_valid = X[n_labelled - 4 :], y[n_labelled - 4 :]  # four labelled rows, the rest unlabelled
    split = predefined_split(SkorchDataset(X_valid, y_valid))
    student = tiny(
        teacher=teacher, max_epochs=1, batch_size=64, recalibrate_batchnorm=False, train_split=split
    )
    student.fit(X, y)
    logits = torch.as_tensor(student.forward(X_valid))
    codes = np.full(len(y_valid), -1)
    codes[:4] = np.searchsorted(student.classes_, y_valid[:4].astype(str))
    soft = soften(
        teacher_probabilities(teacher, X_valid, student.classes_, len(X_valid)), student.temperature
    )
    expected = distillation_loss(
        logits,
        torch.as_tensor(codes),
        torch.as_tensor(soft, dtype=torch.float32),
        student.criterion_,
        student.temperature,
        student.distillation_weight,
    )
    assert student.history[-1, "valid_loss"] == pytest.approx(expected.item(), rel=1e-5)
