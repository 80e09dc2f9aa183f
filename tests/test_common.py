"""scikit-learn's own estimator checks, on small instances."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sktransfer import PretrainedFeatureExtractor

from ._models import VectorNet

# The generic checks feed 2-D float arrays, so they run on a network that reads feature vectors.
# Real images are tested in test_feature_extraction.py.
ESTIMATORS = [PretrainedFeatureExtractor(model=VectorNet, device="cpu", batch_size=16)]
EXPECTED_FAILURES = {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILURES)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
