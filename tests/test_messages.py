"""Everyday mistakes get a message that says what to do, and the public names import from the package."""

import ast
import copy
import pickle
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import sktransfer
from sktransfer import FineTuneClassifier, PretrainedFeatureExtractor, domain_adaptation
from sktransfer.datasets import save_image_folder
from sktransfer.domain_adaptation import FeatureAlignmentClassifier
from sktransfer.domain_adaptation.domains import TextLabelWarning, UnlabelledSourceRowsWarning
from sktransfer.exceptions import UnlabelledScoringWarning

from ._models import TinyConvNet


@pytest.fixture
def image_folder(tmp_path, rgb_images):
    paths = save_image_folder(rgb_images, ["a", "b"] * 3, tmp_path / "images")
    return tmp_path / "images", paths


def test_a_dataframe_of_paths_and_labels_asks_for_the_path_column(image_folder):
    _, paths = image_folder
    frame = pd.DataFrame({"file": paths, "label": ["a", "b"] * 3})
    with pytest.raises(
        ValueError, match=r"pass the one column that holds the image paths, e.g. X\[\['file'\]\]"
    ):
        PretrainedFeatureExtractor(TinyConvNet(), device="cpu").fit(frame)


def test_a_folder_as_x_points_to_load_image_folder(image_folder):
    folder, paths = image_folder
    with pytest.raises(ValueError, match=r"is the folder .*sktransfer.datasets.load_image_folder"):
        PretrainedFeatureExtractor(TinyConvNet(), device="cpu").fit(str(folder))
    with pytest.raises(ValueError, match=r"is the single path .*pass a list of image paths"):
        PretrainedFeatureExtractor(TinyConvNet(), device="cpu").fit(paths[0])


def test_the_text_minus_one_is_a_class_and_the_warning_says_how_to_mark_targets():
    X = np.random.default_rng(0).normal(size=(9, 3))
    y = np.array(["a", "b", "a", "b", "a", "b", "-1", "-1", "-1"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", domain_adaptation.NoTargetDataWarning)
        with pytest.warns(TextLabelWarning, match=r"integer -1 .*sample_domain") as record:
            clf = FeatureAlignmentClassifier().fit(X, y)
        with pytest.warns(TextLabelWarning) as in_pipeline:
            make_pipeline(StandardScaler(), FeatureAlignmentClassifier()).fit(X, y)
    assert "-1" in clf.classes_.tolist()
    # Both point at the line that called fit, not at a frame of sklearn's.
    assert [w.filename for w in [*record, *in_pipeline] if w.category is TextLabelWarning] == [__file__] * 2


def test_minus_one_on_a_source_domain_warns_that_it_marks_target_rows_not_a_class():
    X = np.random.default_rng(0).normal(size=(12, 3))
    y = np.array([-1, 0, 1] * 3 + [0, 1, -1])  # -1 meant as a class of the source rows
    domains = np.array([1] * 9 + [-2] * 3)
    with pytest.warns(UnlabelledSourceRowsWarning, match=r"samples \[0, 3, 6\] \(3 rows\).*recode") as record:
        clf = FeatureAlignmentClassifier().fit(X, y, sample_domain=domains)
    assert clf.classes_.tolist() == [0, 1]
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnlabelledSourceRowsWarning)  # -1 on target rows only: as documented
        FeatureAlignmentClassifier().fit(X, np.where(domains < 0, -1, y % 2), sample_domain=domains)


def test_scoring_against_minus_one_in_cross_validation_says_so_first():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 4)), np.array([0, 1] * 20 + [-1] * 20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = cross_val_score(FeatureAlignmentClassifier(), X, y, cv=3)
    assert np.isnan(scores).all()
    assert issubclass(caught[0].category, UnlabelledScoringWarning)
    assert caught[0].filename == __file__  # the line that called cross_val_score
    assert str(caught[0].message).startswith("y holds -1 (unlabelled rows)")
    fitted = FeatureAlignmentClassifier().fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnlabelledScoringWarning)  # a direct call raises, without a warning
        with pytest.raises(ValueError, match="y holds -1"):
            fitted.score(X, y)


def test_a_blank_label_of_a_pandas_string_column_is_named_by_every_estimator():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 4)).astype(np.float32)
    y = pd.Series(["a", "b", pd.NA, *["a", "b"] * 4, "a"], dtype="string")
    teacher = LogisticRegression().fit(X, np.array(["a", "b"] * 6))
    estimators = [
        FineTuneClassifier(model=None, teacher=FrozenEstimator(teacher), max_epochs=1, device="cpu"),
        sktransfer.DomainAdaptedClassifier(model=None, max_epochs=1, device="cpu"),
        FeatureAlignmentClassifier(),
    ]
    for estimator in estimators:  # were pandas' "boolean value of NA is ambiguous"
        with pytest.raises(ValueError, match=r"y holds missing labels \(NaN, None or NA\) at samples \[2\]"):
            estimator.fit(X, y)
    marked = y.astype(object).where(y.notna(), -1)  # the same row marked unlabelled instead
    assert sktransfer.labelled_rows_scorer("accuracy")(teacher, X, y) == pytest.approx(
        sktransfer.labelled_rows_scorer("accuracy")(teacher, X, marked)
    )  # the scorer skips a blank label as it skips -1


def test_every_public_estimator_and_scorer_imports_from_the_package():
    from sktransfer import (  # noqa: F401
        DomainAdaptedClassifier,
        FeatureAlignmentClassifier,
        FineTuneClassifier,
        PretrainedFeatureExtractor,
        importance_weighted_scorer,
        prediction_entropy_scorer,
    )

    public = {"DomainAdaptedClassifier", "FeatureAlignmentClassifier"}
    public |= {name for name in domain_adaptation.__all__ if name.endswith("_scorer")}
    assert public <= set(sktransfer.__all__)


def _local_factory():
    def preprocess(image):
        return image.float() / 255

    return preprocess


@pytest.mark.parametrize(
    ("estimator", "name"),
    [
        (lambda: PretrainedFeatureExtractor(TinyConvNet(), preprocess=lambda image: image), "preprocess"),
        (lambda: PretrainedFeatureExtractor(model=lambda: TinyConvNet()), "model"),
        (lambda: FineTuneClassifier(TinyConvNet(), augment=_local_factory()), "augment"),
    ],
    ids=["lambda-preprocess", "lambda-model", "local-augment"],
)
def test_pickling_a_lambda_parameter_names_the_parameter(estimator, name):
    with pytest.raises(
        pickle.PicklingError, match=rf"{name}=.*a lambda or a local function.*define it at module level"
    ) as error:
        pickle.dumps(estimator())
    assert str(error.value).count("define it at module level") == 1, "the advice is stated once"


def test_lambda_parameters_still_reach_joblib_workers_and_copies(rgb_images):
    extractor = PretrainedFeatureExtractor(
        TinyConvNet(), device="cpu", preprocess=lambda image: image.float() / 255
    )
    assert copy.deepcopy(extractor).preprocess is extractor.preprocess
    in_workers = Parallel(n_jobs=2)(delayed(clone(extractor).fit_transform)(rgb_images) for _ in range(2))
    np.testing.assert_allclose(in_workers[0], extractor.fit_transform(rgb_images), rtol=1e-5)
    fitted = pickle.loads(
        pickle.dumps(PretrainedFeatureExtractor(TinyConvNet(), device="cpu").fit(rgb_images))
    )
    assert fitted.transform(rgb_images).shape == (6, 8)


def test_every_warning_of_the_library_takes_its_stacklevel_from_the_stack_walk():
    """A fixed stacklevel points into sklearn (or the library) as soon as the call goes through a Pipeline."""
    package = Path(sktransfer.__file__).parent
    fixed = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "warnings.warn":
                levels = [ast.unparse(k.value) for k in node.keywords if k.arg == "stacklevel"]
                if levels != ["caller_stacklevel()"]:
                    fixed.append(f"{path.relative_to(package)}:{node.lineno} stacklevel={levels}")
    assert not fixed, fixed


def test_a_warning_in_a_worker_thread_points_at_the_library_call_not_at_the_thread_loop():
    # With n_jobs, no frame of the user's is on a worker's stack: the warning pointed at the standard
    # library's worker loop (threading.py, or multiprocessing/process.py in a process), a line that says
    # nothing.
    y = np.array(["a", "b"] * 4 + ["-1"] * 4)
    X = np.random.default_rng(0).normal(size=(12, 2))
    with warnings.catch_warnings(record=True) as caught:  # the warnings of every thread
        warnings.simplefilter("always")
        Parallel(n_jobs=2, backend="threading")(delayed(FeatureAlignmentClassifier().fit)(X, y) for _ in "ab")
    shown = {(w.category, Path(w.filename).name) for w in caught}
    assert (TextLabelWarning, "shallow.py") in shown, shown  # FeatureAlignmentClassifier.fit, the call made
    assert not {name for _, name in shown} & {"threading.py", "process.py", "_base.py"}, shown
