"""scikit-learn's own estimator checks, on small instances."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sktransfer import FineTuneClassifier, PretrainedFeatureExtractor

from ._models import PaddedVectorNet, VectorNet

# The generic checks feed 2-D float arrays, so they run on a network that reads feature vectors.
# Real images are tested in the estimators' own test modules.
ESTIMATORS = [
    PretrainedFeatureExtractor(model=VectorNet, device="cpu", batch_size=16),
    FineTuneClassifier(
        model=PaddedVectorNet,
        strategy="full",
        lr=0.05,
        max_epochs=20,
        batch_size=32,
        device="cpu",
        random_state=0,
    ),
]
EXPECTED_FAILURES = {
    FineTuneClassifier: {
        "check_no_attributes_set_in_init": (
            "skorch's NeuralNet.__init__ sets history_, initialized_ and virtual_params_, which the rest of "
            "skorch reads before fit"
        ),
    },
}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILURES.get(type(est), {}))
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
