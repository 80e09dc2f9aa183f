"""The estimators print as scikit-learn's do: the parameters the user set, in text and in the HTML diagram."""

import inspect
import pickle
import re

from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_html_repr

from sktransfer import DomainAdaptedClassifier, FineTuneClassifier, PretrainedFeatureExtractor
from sktransfer.domain_adaptation import FeatureAlignmentClassifier

from ._models import TinyConvNet


def user_set(estimator):
    """The parameter names the HTML diagram marks as set by the user."""
    html = estimator_html_repr(estimator)
    return re.findall(r'<tr class="user-set">.*?<td class="param">(\w+)</td>', html, flags=re.DOTALL)


def test_repr_shows_the_parameters_set():
    clf = FineTuneClassifier(strategy="lp_ft", lr=3e-3, max_epochs=4)
    assert repr(clf) == "FineTuneClassifier(lr=0.003, max_epochs=4, strategy='lp_ft')"
    assert repr(clone(clf)) == repr(pickle.loads(pickle.dumps(clf))) == repr(clf)
    assert repr(FineTuneClassifier()) == "FineTuneClassifier()"
    assert (
        repr(DomainAdaptedClassifier(method="mmd", classes=None)) == "DomainAdaptedClassifier(method='mmd')"
    )
    # skorch's own parameters and dunder parameters show when set.
    assert (
        repr(FineTuneClassifier(optimizer__betas=(0.8, 0.9), warm_start=True))
        == "FineTuneClassifier(optimizer__betas=(0.8, 0.9), warm_start=True)"
    )
    assert repr(PretrainedFeatureExtractor(batch_size=8)) == "PretrainedFeatureExtractor(batch_size=8)"
    assert repr(FeatureAlignmentClassifier()) == "FeatureAlignmentClassifier()"


def test_signature_lists_skorch_parameters():
    parameters = inspect.signature(DomainAdaptedClassifier).parameters
    assert parameters["method"].default == "dann"
    assert parameters["warm_start"].default is False
    assert parameters["train_split"].default is None  # the estimator's default, not skorch's
    assert list(parameters)[-1] == "kwargs"
    assert FineTuneClassifier(use_caching=False).get_params()["use_caching"] is False


def test_repr_in_a_pipeline():
    pipeline = make_pipeline(StandardScaler(), FineTuneClassifier(strategy="lp_ft", lr=3e-3, max_epochs=4))
    assert repr(pipeline) == (
        "Pipeline(steps=[('standardscaler', StandardScaler()),\n"
        "                ('finetuneclassifier',\n"
        "                 FineTuneClassifier(lr=0.003, max_epochs=4, strategy='lp_ft'))])"
    )


def test_fitted_repr_is_the_unfitted_one(labelled_images):
    X, y = labelled_images
    clf = FineTuneClassifier(model=TinyConvNet, device="cpu", max_epochs=1)
    unfitted = repr(clf)
    assert repr(clf.fit(X, y)) == unfitted
    assert unfitted == (
        "FineTuneClassifier(device='cpu', max_epochs=1,\n"
        "                   model=<class 'tests._models.TinyConvNet'>)"
    )


def test_html_diagram_marks_the_parameters_set():
    clf = FineTuneClassifier(strategy="lp_ft", lr=3e-3, max_epochs=4)
    assert sorted(user_set(clf)) == ["lr", "max_epochs", "strategy"]
    assert sorted(user_set(clf.set_params(warm_start=True, optimizer__betas=(0.8, 0.9)))) == [
        "lr",
        "max_epochs",
        "optimizer__betas",
        "strategy",
        "warm_start",
    ]
    pipeline = make_pipeline(StandardScaler(), DomainAdaptedClassifier(method="coral"))
    assert user_set(pipeline) == ["method"]
