"""Precision is never a trap: "auto" picks the native one, emulated bfloat16 warns, float16 needs a GPU."""

import contextlib
import warnings

import numpy as np
import pytest
import torch

from sktransfer import FineTuneClassifier, PretrainedFeatureExtractor, _precision
from sktransfer._precision import SlowPrecisionWarning, check_precision, resolve_precision

from ._models import TinyConvNet

CPU = torch.device("cpu")


@pytest.fixture
def cpu_without_bfloat16(monkeypatch):
    monkeypatch.setattr(_precision, "cpu_native_bfloat16", lambda: None)


@pytest.fixture
def cpu_with_bfloat16(monkeypatch):
    monkeypatch.setattr(_precision, "cpu_native_bfloat16", lambda: "AVX512-BF16")


def test_auto_is_bfloat16_on_a_cpu_that_computes_it_natively(cpu_with_bfloat16):
    assert resolve_precision("auto", CPU) == "bfloat16"


def test_auto_is_float32_on_a_cpu_without_native_bfloat16(cpu_without_bfloat16):
    assert resolve_precision("auto", CPU) == "float32"


@pytest.mark.parametrize(("native", "expected"), [(True, "bfloat16"), (False, "float16")])
def test_auto_on_gpus(monkeypatch, native, expected):
    monkeypatch.setattr(_precision, "_cuda_native_bfloat16", lambda: native)
    assert resolve_precision("auto", torch.device("cuda")) == expected


def test_emulated_bfloat16_warns_with_the_reason_and_the_faster_choice(cpu_without_bfloat16, rgb_images):
    extractor = PretrainedFeatureExtractor(TinyConvNet(), device="cpu", precision="bfloat16", batch_size=2)
    with pytest.warns(
        SlowPrecisionWarning, match=r"neither AVX512-BF16 nor AMX.*precision='float32'.*'auto'"
    ) as record:
        extractor.fit(rgb_images).transform(rgb_images)
    # at the fit and the transform the user called, not at each of the three batches
    assert [w.filename for w in record if w.category is SlowPrecisionWarning] == [__file__] * 2
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("default")  # Python's own: once per line of the user's
        for _ in range(3):
            extractor.transform(rgb_images)
    assert [w.category for w in record] == [SlowPrecisionWarning]


def test_a_warning_silenced_once_is_not_lost_for_the_process(cpu_without_bfloat16, rgb_images):
    # It was shown once per process: a library call inside a quiet block used up the only one, and the
    # user's own bfloat16 fits then ran several times slower than float32 with no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        PretrainedFeatureExtractor(TinyConvNet(), device="cpu", precision="bfloat16").fit(rgb_images)
    clf = FineTuneClassifier(TinyConvNet(), precision="bfloat16", max_epochs=1, batch_size=2, device="cpu")
    with pytest.warns(SlowPrecisionWarning) as record:
        clf.fit(rgb_images, [0, 1, 2] * 2).predict(rgb_images)
    assert sum(w.category is SlowPrecisionWarning for w in record) == 2  # the fit and the prediction


def test_native_bfloat16_does_not_warn(cpu_with_bfloat16):
    with _no_warning(SlowPrecisionWarning):
        assert check_precision("bfloat16", [CPU]) == "bfloat16"


def test_auto_runs_where_bfloat16_is_emulated_at_float32_without_a_warning(cpu_without_bfloat16, rgb_images):
    with _no_warning(SlowPrecisionWarning):
        auto = PretrainedFeatureExtractor(TinyConvNet(), device="cpu", precision="auto").fit_transform(
            rgb_images
        )
    exact = PretrainedFeatureExtractor(TinyConvNet(), device="cpu").fit_transform(rgb_images)
    np.testing.assert_array_equal(auto, exact)


def test_fine_tuning_trains_and_predicts_at_auto(cpu_with_bfloat16, rgb_images):
    clf = FineTuneClassifier(TinyConvNet(), precision="auto", strategy="full", max_epochs=1, device="cpu")
    clf.fit(rgb_images, [0, 1, 2] * 2)
    assert clf.predict_proba(rgb_images).shape == (6, 3)


def test_float16_set_after_fit_cannot_run_on_the_cpu(rgb_images):
    clf = FineTuneClassifier(TinyConvNet(), strategy="linear_probe", max_epochs=1, device="cpu")
    clf.fit(rgb_images, [0, 1, 2] * 2)
    clf.set_params(precision="float16")
    with pytest.raises(ValueError, match="precision='float16' needs a GPU"):
        clf.predict_proba(rgb_images)
    extractor = PretrainedFeatureExtractor(TinyConvNet(), device="cpu").fit(rgb_images)
    extractor.set_params(precision="float16")
    with pytest.raises(ValueError, match="precision='float16' needs a GPU"):
        extractor.transform(rgb_images)


@pytest.mark.parametrize("precision", ["bf16", "fp32", None])
def test_a_precision_set_after_fit_that_is_none_of_the_options_is_named(rgb_images, precision):
    # transform and predict read it at once, before any validation: a bare KeyError: 'bf16'.
    message = rf"precision={precision!r} is none of \['float32', 'bfloat16', 'float16', 'auto'\]"
    clf = FineTuneClassifier(TinyConvNet(), strategy="linear_probe", max_epochs=1, device="cpu")
    clf.fit(rgb_images, [0, 1, 2] * 2).set_params(precision=precision)
    with pytest.raises(ValueError, match=message):
        clf.predict(rgb_images)
    extractor = PretrainedFeatureExtractor(TinyConvNet(), device="cpu").fit(rgb_images)
    with pytest.raises(ValueError, match=message):
        extractor.set_params(precision=precision).transform(rgb_images)


@contextlib.contextmanager
def _no_warning(category):
    """Fail if a warning of ``category`` is raised inside the block."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", category)
        yield
