"""The adaptation methods' own parts: losses, domain batch statistics, several sources, partial, self-training."""

import warnings

import numpy as np
import pytest
import sklearn
import torch
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from skorch.dataset import ValidSplit
from torch import nn

from sktransfer import DomainAdaptedClassifier, FineTuneClassifier
from sktransfer._changed_settings import SettingsChangedWarning
from sktransfer.domain_adaptation import (
    PseudoLabelCollapseWarning,
    deep_embedded_validation_scorer,
    prediction_entropy_scorer,
)
from sktransfer.domain_adaptation import objectives as adaptation_objectives
from sktransfer.domain_adaptation.deep import METHODS
from sktransfer.domain_adaptation.losses import (
    MultilinearMap,
    SmoothedCoralLoss,
    certainty_weights,
    domain_adversarial_loss,
    minimum_class_confusion_loss,
    mmd_loss,
    partial_class_weights,
    pseudo_label_loss,
)
from sktransfer.domain_adaptation.networks import DomainAdaptationNetwork
from sktransfer.exceptions import (
    IgnoredSettingWarning,
    PartialWithoutAlignmentWarning,
    UntrainedPseudoLabelsWarning,
)

from ._models import TinyConvNet
from ._models import tiny_domain_adapted as deep


def coral_loss(source, target, source_weights=None):
    """Deep CORAL on one batch: a new SmoothedCoralLoss has no earlier batches to average."""
    return SmoothedCoralLoss()(source, target, source_weights=source_weights)


def deep_coral_by_hand(source, target):
    d = source.shape[1]
    return (torch.cov(source.T) - torch.cov(target.T)).pow(2).sum() / (4 * d * d)


def test_smoothed_coral_averages_the_covariance_difference_over_batches():
    generator = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(16, 3, generator=generator, requires_grad=True),
            torch.randn(16, 3, generator=generator) * 2,
        )
        for _ in range(3)
    ]
    smoothed, one_batch = SmoothedCoralLoss(momentum=0.9), SmoothedCoralLoss(momentum=0.0)
    average = None
    for source, target in batches:
        difference = torch.cov(source.T) - torch.cov(target.T)
        average = difference.detach() if average is None else 0.9 * average + 0.1 * difference.detach()
        loss = smoothed(source, target)
        assert float(loss.detach()) == pytest.approx(float(average.pow(2).sum() / 36))
        (gradient,) = torch.autograd.grad(loss, source)
        # The gradient of the averaged distance, through this batch's covariances only.
        (expected,) = torch.autograd.grad(2 * (average * torch.cov(source.T)).sum() / 36, source)
        torch.testing.assert_close(gradient, expected)
        # momentum=0 is Deep CORAL on the batch, value and gradient, however many batches came before.
        plain = one_batch(source, target)
        torch.testing.assert_close(plain, deep_coral_by_hand(source, target))
        torch.testing.assert_close(
            torch.autograd.grad(plain, source)[0],
            torch.autograd.grad(deep_coral_by_hand(source, target), source)[0],
        )


def test_smoothed_coral_keeps_an_average_per_source():
    generator = torch.Generator().manual_seed(0)
    a, b, target = (torch.randn(16, 3, generator=generator) * scale for scale in (1, 3, 2))
    loss = SmoothedCoralLoss(momentum=0.9)
    first_a = loss(a, target, key=0)
    assert float(loss(b, target, key=1)) == pytest.approx(float(coral_loss(b, target)))  # b's own, not a's
    assert float(loss(a, target, key=0)) == pytest.approx(float(first_a))  # a's average is unchanged by b


def test_coral_averages_start_anew_each_fit_and_do_not_stay_on_the_estimator(shifted_images, monkeypatch):
    X, y, _ = shifted_images
    calls = []
    original = SmoothedCoralLoss.__call__

    def record(self, *args, **kwargs):
        calls.append((self, len(self._averages)))  # the instance itself: kept alive, never confused
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SmoothedCoralLoss, "__call__", record)
    clf = deep(method="coral", max_epochs=1).fit(X, y)
    first_fit = calls[0][0]
    assert calls[0][1] == 0  # nothing averaged before the first batch
    assert all(instance is first_fit for instance, _ in calls)
    assert clf._coral is None
    calls.clear()
    clf.fit(X, y)
    assert calls[0][1] == 0
    assert all(instance is not first_fit for instance, _ in calls)


def test_covariance_momentum_reaches_the_coral_loss(shifted_images):
    X, y, _ = shifted_images
    averaged = deep(method="coral", max_epochs=2).fit(X, y).predict_proba(X)
    one_batch = deep(method="coral", max_epochs=2, covariance_momentum=0.0).fit(X, y).predict_proba(X)
    assert not np.allclose(averaged, one_batch)
    np.testing.assert_array_equal(
        deep(method="mmd", max_epochs=2).fit(X, y).predict_proba(X),
        deep(method="mmd", max_epochs=2, covariance_momentum=0.0).fit(X, y).predict_proba(X),
    )


@pytest.mark.parametrize(("partial", "momentum"), [(False, 0.9), (True, 0.0)])
def test_auto_covariance_momentum_takes_one_batch_on_a_partial_target(shifted_images, partial, momentum):
    X, y, _ = shifted_images
    auto = deep(method="coral", partial=partial, max_epochs=2).fit(X, y)
    explicit = deep(method="coral", partial=partial, max_epochs=2, covariance_momentum=momentum).fit(X, y)
    np.testing.assert_array_equal(auto.predict_proba(X), explicit.predict_proba(X))


@pytest.mark.parametrize(("method", "weight"), [("dann", 0.3), ("cdan", 0.3), ("mmd", 1.0)])
def test_auto_trade_off_is_lower_for_the_adversarial_methods(shifted_images, method, weight):
    X, y, _ = shifted_images
    auto = deep(method=method, max_epochs=2).fit(X, y)
    explicit = deep(method=method, max_epochs=2, trade_off=weight).fit(X, y)
    np.testing.assert_array_equal(auto.predict_proba(X), explicit.predict_proba(X))
    other = deep(method=method, max_epochs=2, trade_off=1.3 - weight).fit(X, y)
    assert not np.allclose(auto.predict_proba(X), other.predict_proba(X))


def test_domain_batchnorm_normalises_each_domain_with_its_own_statistics():
    net = DomainAdaptationNetwork(nn.Identity(), 4, 2, bottleneck_dim=3).train()
    generator = torch.Generator().manual_seed(0)
    source, target = torch.randn(8, 4, generator=generator), torch.randn(8, 4, generator=generator) * 5 + 3
    x = torch.cat([source, target])[torch.tensor([0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15])]
    is_target = torch.arange(16) % 2 == 1
    _logits, features = net(features=x, is_target=is_target)
    # Row order is kept, and each domain's rows equal a pass of that domain alone (its own batch statistics).
    torch.testing.assert_close(features[~is_target], net.bottleneck(source))
    torch.testing.assert_close(features[is_target], net.bottleneck(target))
    mixed = net(features=x)[1]
    assert not torch.allclose(mixed[~is_target], features[~is_target])


def test_domain_batchnorm_option_reaches_the_network(shifted_images, monkeypatch):
    X, y, _ = shifted_images
    seen = []
    forward = DomainAdaptationNetwork.forward

    def spy(self, x=None, features=None, is_target=None):
        seen.append(is_target)
        return forward(self, x, features, is_target)

    monkeypatch.setattr(DomainAdaptationNetwork, "forward", spy)
    deep(max_epochs=1).fit(X, y)
    training = [mask for mask in seen if mask is not None]
    assert training
    assert all(mask.sum() == (~mask).sum() for mask in training)
    seen.clear()
    deep(max_epochs=1, domain_batchnorm=False).fit(X, y)
    assert all(mask is None for mask in seen)


def test_cdan_conditions_the_discriminator_on_the_predictions():
    net = DomainAdaptationNetwork(nn.Identity(), 4, 3, bottleneck_dim=5, adversarial="cdan").train()
    _logits, _features, domain = net(features=torch.randn(6, 4))
    assert domain.shape == (6, 1)
    assert net.discriminator[0].in_features == 5 * 3
    assert MultilinearMap(300, 20).out_features == 1024  # 6,000 columns: the randomised map
    ten_classes = MultilinearMap(256, 10)  # the default bottleneck: 2,560 columns, randomised to 1,024
    assert ten_classes.randomised
    assert ten_classes.out_features == 1024
    assert ten_classes(torch.randn(4, 256), torch.softmax(torch.randn(4, 10), 1)).shape == (4, 1024)
    full = MultilinearMap(2, 2)(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.25, 0.75]]))
    torch.testing.assert_close(full, torch.tensor([[0.25, 0.5, 0.75, 1.5]]))


def test_certainty_weights_favour_confident_rows():
    weights = certainty_weights(torch.tensor([[8.0, 0.0], [0.0, 0.0]]))
    assert weights[0] > 1 > weights[1]
    assert weights.mean().item() == pytest.approx(1.0)


def test_adversarial_loss_scores_each_source_on_its_own_column():
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0], [0.0, 0.0]])
    is_target = torch.tensor([False, False, True])
    # Row 0 is source 1 and row 1 source 0: each is scored on its own column, where both look like targets.
    wrong = domain_adversarial_loss(logits, is_target, torch.tensor([0, 1, 0]))
    right = domain_adversarial_loss(logits, is_target, torch.tensor([1, 0, 0]))
    assert right < wrong
    weighted = domain_adversarial_loss(logits, is_target, torch.tensor([1, 0, 0]), torch.tensor([0.0, 1, 1]))
    expected = 0.5 * (nn.functional.softplus(torch.tensor(-5.0)) + np.log(2))
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-5)


def test_pseudo_labels_take_confident_rows_and_balance_classes():
    logits = torch.tensor([[6.0, 0.0], [7.0, 0.0], [8.0, 0.0], [0.0, 6.0], [0.1, 0.0]])
    assert pseudo_label_loss(logits, threshold=1.0).item() == 0.0
    per_row = nn.functional.cross_entropy(logits[:4], torch.tensor([0, 0, 0, 1]), reduction="none")
    plain = pseudo_label_loss(logits, threshold=0.9, balance=False)
    assert plain.item() == pytest.approx(per_row.sum().item() / 5, rel=1e-5)
    balanced = pseudo_label_loss(logits, threshold=0.9, balance=True)
    # Each class weighs half of the four selected rows: class 0's three rows share it, class 1's row has it.
    expected = (per_row[:3].sum() * 2 / 3 + per_row[3] * 2) / 5
    assert balanced.item() == pytest.approx(expected.item(), rel=1e-5)


def test_pseudo_labels_can_come_from_other_logits_of_the_same_rows():
    logits = torch.tensor([[6.0, 0.0], [0.0, 0.1]])
    labelling = torch.tensor([[0.0, 6.0], [0.0, 0.1]])  # the first row confidently of class 1 instead
    loss = pseudo_label_loss(logits, threshold=0.9, labelling_logits=labelling)
    expected = nn.functional.cross_entropy(logits[:1], torch.tensor([1])) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_copy_of_weights_keeps_tied_weights_tied():
    shared = nn.Linear(3, 3)
    network = nn.Sequential(shared, nn.ReLU(), shared)
    weights = adaptation_objectives.copy_of_weights(network)
    assert weights["0.weight"] is weights["2.weight"]
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.func.functional_call(network, weights, (x,)), network(x))


@pytest.mark.parametrize("domain_batchnorm", [True, False])
def test_self_training_takes_each_epochs_pseudo_labels_from_the_weights_it_began_with(
    shifted_images, monkeypatch, domain_batchnorm
):
    """Labels from the network being trained reinforce themselves step by step; the epoch's copy does not."""
    X, y, _ = shifted_images
    calls, copies = [], []

    def recording(target_logits, threshold, balance, labelling_logits=None):
        calls.append((target_logits.detach().clone(), labelling_logits))
        return pseudo_label_loss(target_logits, threshold, balance, labelling_logits=labelling_logits)

    def counted_copy(module):
        copies.append(len(calls))
        return copy_of_weights(module)

    copy_of_weights = adaptation_objectives.copy_of_weights
    monkeypatch.setattr(adaptation_objectives, "pseudo_label_loss", recording)
    monkeypatch.setattr(adaptation_objectives, "copy_of_weights", counted_copy)
    clf = deep(method="self_training", max_epochs=4, lr=0.05, domain_batchnorm=domain_batchnorm)
    clf.fit(X, y)  # self-trains in epochs 3 and 4
    batches = len(calls) // 2
    assert batches > 1
    assert len(calls) == 2 * batches
    assert copies == [0, batches]  # one copy per self-training epoch, before its first step
    for epoch in range(2):
        (first_logits, first_labelling), *later = calls[epoch * batches : (epoch + 1) * batches]
        # The same BatchNorm statistics as the training forward: per domain, or of the mixed batch.
        torch.testing.assert_close(first_labelling, first_logits)  # the copy is the network, at first
        assert not any(torch.allclose(logits, labelling) for logits, labelling in later)  # then it stays
    assert clf._labelling_weights is None  # the copy is not kept in the fitted estimator


@pytest.mark.parametrize(
    "params",
    [
        {"strategy": "linear_probe"},  # the head trains on the backbone's features, computed once
        {"model": None},  # X holds embeddings
    ],
    ids=["precomputed-features", "embeddings"],
)
def test_self_training_labels_batches_of_features_too(shifted_images, monkeypatch, params):
    X, y, _ = shifted_images
    if params.get("model", "tiny") is None:
        X = X.reshape(len(X), -1)[:, :12].astype(np.float32)
    labelled_rows = []

    def recording(target_logits, threshold, balance, labelling_logits=None):
        labelled_rows.append((target_logits.detach().clone(), labelling_logits))
        return pseudo_label_loss(target_logits, threshold, balance, labelling_logits=labelling_logits)

    monkeypatch.setattr(adaptation_objectives, "pseudo_label_loss", recording)
    deep(method="self_training", pseudo_label_threshold=0.0, **params).fit(X, y)
    (first_logits, first_labelling), *later = labelled_rows  # the first step of the second epoch
    torch.testing.assert_close(first_labelling, first_logits)
    assert all(labelling.shape == logits.shape for logits, labelling in later)


def test_self_training_runs_in_the_last_epochs_only(shifted_images):
    X, y, _ = shifted_images
    source_only = deep(method="source_only", max_epochs=3).fit(X, y).predict_proba(X)
    none_yet = deep(method="self_training", max_epochs=3, self_training_epochs=0).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(source_only, none_yet)
    clf = deep(method="self_training", max_epochs=3, pseudo_label_threshold=0.0)
    assert clf._self_training_epochs() == 2  # the second half of the epochs
    assert not np.array_equal(clf.fit(X, y).predict_proba(X), source_only)
    refined = deep(method="dann", max_epochs=3, self_training_epochs=1, pseudo_label_threshold=0.0).fit(X, y)
    assert not np.array_equal(
        refined.predict_proba(X), deep(method="dann", max_epochs=3).fit(X, y).predict_proba(X)
    )


def test_self_training_from_the_first_epoch_of_a_new_network_warns(shifted_images):
    # self_training_epochs >= max_epochs pseudo-labelled the target with an untrained head, silently.
    X, y, _ = shifted_images
    clf = deep(method="dann", max_epochs=2, self_training_epochs=2)
    with pytest.warns(
        UntrainedPseudoLabelsWarning, match=r"self_training_epochs=2 is not below max_epochs=2"
    ) as record:
        clf.fit(X, y)
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedPseudoLabelsWarning)
        clf.partial_fit(X, y)  # a refinement stage of the fitted network
        deep(method="self_training", max_epochs=2).fit(X, y)  # the default: the second half
    with pytest.warns(
        UntrainedPseudoLabelsWarning, match=r"second half of max_epochs=1.*Set max_epochs to 2"
    ):
        deep(method="self_training", max_epochs=1).fit(X, y)


def pushes_every_target_row_into_the_first_class(target_logits, threshold, balance, labelling_logits):
    """A self-training loss that collapses the target predictions, as confirmation bias does on a weak model."""
    first = torch.zeros(len(target_logits), dtype=torch.long)
    return 100 * nn.functional.cross_entropy(target_logits, first)


def test_self_training_warns_when_it_empties_classes_of_the_target_predictions(shifted_images, monkeypatch):
    X, y, _ = shifted_images
    monkeypatch.setattr(
        adaptation_objectives, "pseudo_label_loss", pushes_every_target_row_into_the_first_class
    )
    clf = deep(method="self_training", max_epochs=4, lr=0.05)
    with pytest.warns(
        PseudoLabelCollapseWarning, match="stop predicting 1 of the 2 classes on the target rows"
    ) as record:
        clf.fit(X, y)
    assert len(np.unique(clf.predict(X[len(X) // 2 :]))) == 1
    assert record[0].filename == __file__  # it points at the line that called fit


@pytest.mark.filterwarnings("error::sktransfer.domain_adaptation.PseudoLabelCollapseWarning")
def test_self_training_that_keeps_every_class_is_quiet(shifted_images):
    X, y, _ = shifted_images
    clf = deep(method="self_training", max_epochs=4).fit(X, y)
    # The target rows of the epoch before self-training and of the last one were counted.
    assert clf._counts_before_self_training.sum() == clf._last_counts.sum() > 0


@pytest.mark.filterwarnings("error::sktransfer.domain_adaptation.PseudoLabelCollapseWarning")
@pytest.mark.parametrize(
    "params",
    [
        {"method": "self_training", "self_training_epochs": 4},  # no epoch before it to compare with
        {"method": "self_training", "partial": True},  # classes the target lacks are meant to leave
        {"method": "source_only"},
    ],
)
def test_collapse_is_not_judged_without_an_epoch_before_self_training_or_with_partial(
    shifted_images, monkeypatch, params
):
    X, y, _ = shifted_images
    monkeypatch.setattr(
        adaptation_objectives, "pseudo_label_loss", pushes_every_target_row_into_the_first_class
    )
    clf = deep(max_epochs=4, lr=0.05, **params).fit(X, y)
    assert clf._counts_before_self_training is None


def test_collapsed_classes_held_a_share_before_and_kept_almost_none():
    collapsed = adaptation_objectives.collapsed_classes
    # Class 3 held under half the uniform share before: too small to judge.
    assert collapsed(np.array([30, 30, 30, 10]), np.array([0, 50, 49, 1])) == [0]
    assert collapsed(np.array([30, 30, 30, 10]), np.array([1, 60, 39, 0])) == [0]  # 1% of 100 < 5% of 30%
    assert collapsed(np.array([30, 30, 30, 10]), np.array([5, 50, 45, 0])) == []
    assert collapsed(np.array([50, 50]), np.array([0, 100])) == [0]


@pytest.mark.parametrize("method", ["dann", "cdan", "mmd", "coral"])
def test_several_sources_are_aligned_one_by_one(shifted_images, method):
    X, _, y_source = shifted_images
    half = len(y_source) // 2
    order = np.r_[0:6, 12:18, 6:12, 18:24]  # both classes in each source
    X = np.concatenate([X[: len(y_source)][order], X[len(y_source) :]])
    y = np.concatenate([y_source[order], np.full(len(y_source), -1, dtype=object)]).astype(object)
    domains = np.concatenate([np.repeat([1, 2], half), np.full(len(y_source), -1)])
    clf = deep(method=method).fit(X, y, sample_domain=domains)
    assert clf._n_sources == 2
    if method in ("dann", "cdan"):
        assert clf.module_.discriminator[-1].out_features == 2
    pooled = deep(method=method).fit(X, y).predict_proba(X)
    assert not np.allclose(clf.predict_proba(X), pooled)
    three = np.where(domains == 2, 3, domains)
    three[:2] = 2
    with pytest.raises(ValueError, match=r"source domains \[3, 5\], which .* not initialised with"):
        clf.partial_fit(X, y, sample_domain=np.where(np.arange(len(y)) < 4, 5, three))


def test_a_source_domain_keeps_its_discriminator_column_when_others_are_absent(shifted_images):
    X, _, y_source = shifted_images
    half = len(y_source) // 2
    order = np.r_[0:6, 12:18, 6:12, 18:24]
    X = np.concatenate([X[: len(y_source)][order], X[len(y_source) :]])
    y = np.concatenate([y_source[order], np.full(len(y_source), -1, dtype=object)]).astype(object)
    domains = np.concatenate([np.repeat([1, 2], half), np.full(len(y_source), -1)])
    clf = deep(method="dann", max_epochs=1).fit(X, y, sample_domain=domains)
    second = domains != 1  # the second source and the target
    codes = clf._targets(y[second], int(second.sum()), reset=False, sample_domain=domains[second])
    source_codes = codes[codes >= 0]
    assert source_codes.size == half
    assert (source_codes // len(clf.classes_) == 1).all()
    clf.partial_fit(X[second], y[second], sample_domain=domains[second])
    assert clf.module_.discriminator[-1].out_features == 2
    with pytest.raises(ValueError, match=r"fitted on the source domains \[1, 2\].*pass sample_domain"):
        clf.partial_fit(X, y)
    del clf._source_domains  # as pickled by an earlier version
    with pytest.raises(ValueError, match="pickled by an earlier version"):  # one of its two sources only
        clf.partial_fit(X[second], y[second], sample_domain=domains[second])
    clf.partial_fit(X, y, sample_domain=domains)  # every source: columns in their sorted order, as fit gave
    np.testing.assert_array_equal(clf._source_domains, [1, 2])


def test_partial_fit_after_initialize_learns_its_single_source(shifted_images):
    X, y, _ = shifted_images
    clf = deep(method="dann", max_epochs=1, classes=["bright", "dark"]).initialize()
    clf.partial_fit(X, y)
    np.testing.assert_array_equal(clf._source_domains, [1])
    two = np.where(np.asarray(y, dtype=object) == -1, -1, np.arange(len(y)) % 2 + 1)
    with pytest.raises(ValueError, match="holds 2 source domain"):
        deep(method="dann", max_epochs=1, classes=["bright", "dark"]).initialize().partial_fit(
            X, y, sample_domain=two
        )


def test_without_sample_domain_partial_fit_reads_the_single_source_fit_knew(shifted_images):
    X, y, _ = shifted_images
    domains = np.where(np.asarray(y, dtype=object) == -1, -1, 2)
    clf = deep(method="dann", max_epochs=1).fit(X, y, sample_domain=domains)
    clf.partial_fit(X, y)  # the source rows are domain 2's, the only one fit knew
    np.testing.assert_array_equal(clf._source_domains, [2])


def test_validation_accuracy_reads_the_class_of_every_source(shifted_images):
    X, _, y_source = shifted_images
    y = np.concatenate([y_source, y_source]).astype(object)
    domains = np.repeat([1, 2], len(y_source))  # the second domain's codes are shifted by n_classes
    clf = deep(method="dann", max_epochs=3, lr=0.01, train_split=ValidSplit(4, stratified=True))
    clf.fit(X, y, sample_domain=domains)
    assert clf.history[-1, "valid_acc"] > 0.9


def test_a_users_accuracy_callback_scores_the_labelled_rows_of_every_source(shifted_images):
    from skorch.callbacks import EpochScoring

    X, y, y_source = shifted_images
    order = np.r_[0:6, 12:18, 6:12, 18:24]  # both classes in each source
    X = np.concatenate([X[: len(y_source)][order], X[len(y_source) :]])
    y = np.concatenate([y_source[order], y[len(y_source) :]]).astype(object)
    domains = np.concatenate([np.repeat([1, 2], len(y_source) // 2), np.full(len(y_source), -1)])
    scoring = EpochScoring("accuracy", name="user_acc", lower_is_better=False)
    clf = deep(method="dann", max_epochs=3, callbacks=[scoring], train_split=ValidSplit(4, stratified=True))
    clf.fit(X, y, sample_domain=domains)  # the validation rows hold target rows and both sources' rows
    assert clf.history[:, "user_acc"] == pytest.approx(clf.history[:, "valid_acc"])
    assert not hasattr(scoring, "scoring_") or not callable(scoring.scoring_)  # the user's callback as given


def test_a_users_scoring_callback_can_be_set_before_fit_and_searched(shifted_images):
    from skorch.callbacks import EpochScoring

    X, y, _ = shifted_images
    scoring = EpochScoring("accuracy", name="user_acc", lower_is_better=False)
    clf = deep(max_epochs=1, callbacks=[("user_acc", scoring)], train_split=ValidSplit(4, stratified=True))
    clf.set_params(callbacks=[("user_acc", scoring)])  # skorch rebuilds the callbacks of an unfitted net
    clf.set_params(callbacks__user_acc__on_train=True)
    folds = list(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y.astype(str)))
    grid = {"callbacks__user_acc__on_train": [True, False]}
    search = GridSearchCV(clf, grid, cv=folds, scoring=prediction_entropy_scorer, error_score="raise")
    search.fit(X, y.astype(object))
    assert np.isfinite(search.best_estimator_.history[:, "user_acc"]).all()


def test_a_users_scoring_callback_keeps_a_class_named_minus_one_without_a_teacher(labelled_images):
    from sklearn.metrics import make_scorer
    from skorch.callbacks import EpochScoring

    X, y = labelled_images
    minus_one = np.where(y == y[0], -1, 1)  # without a teacher, -1 is a label like any other
    rows = EpochScoring(make_scorer(lambda truth, _: float(len(truth))), name="rows", lower_is_better=False)
    clf = FineTuneClassifier(
        model=TinyConvNet,
        device="cpu",
        strategy="full",
        max_epochs=1,
        batch_size=8,
        callbacks=[rows],
        train_split=ValidSplit(4, stratified=True),
    )
    clf.fit(X, minus_one)
    assert clf.history[-1, "rows"] == len(X) // 4  # every validation row, those of class -1 included


def test_partial_adaptation_down_weights_classes_absent_from_the_target(shifted_images):
    X, _y, y_source = shifted_images
    dark = np.flatnonzero(y_source == "dark")
    target_dark = X[dark] + 10  # the target holds no bright image
    X_partial = np.concatenate([X[: len(y_source)], target_dark])
    y_partial = np.concatenate([y_source, np.full(len(dark), -1, dtype=object)]).astype(object)
    clf = deep(method="dann", partial=True, max_epochs=6, lr=0.01, recalibrate_batchnorm=False)
    clf.fit(X_partial, y_partial)
    weights = dict(zip(clf.classes_, clf.class_weights_, strict=True))
    assert weights["dark"] == 1.0
    assert weights["bright"] < 0.5
    assert np.array_equal(deep(method="dann", max_epochs=3).fit(X_partial, y_partial).class_weights_, [1, 1])


def test_partial_false_in_a_later_partial_fit_resets_the_class_weights(shifted_images):
    X, _y, y_source = shifted_images
    dark = np.flatnonzero(y_source == "dark")
    X_partial = np.concatenate([X[: len(y_source)], X[dark] + 10])
    y_partial = np.concatenate([y_source, np.full(len(dark), -1, dtype=object)]).astype(object)
    clf = deep(method="dann", partial=True, max_epochs=6, lr=0.01, recalibrate_batchnorm=False)
    assert clf.fit(X_partial, y_partial).class_weights_.min() < 1
    clf.set_params(partial=False).partial_fit(X_partial, y_partial)
    assert np.array_equal(clf.class_weights_, [1, 1])  # as documented: ones without partial


def test_partial_weights_keep_the_classes_the_target_holds_although_it_favours_one():
    # The target holds class 0 three times as often as class 1, and no class 2; the source holds class 1
    # three times as often as class 0. Each weight estimates how much rarer the class is in the target than in
    # the source, capped at 1: (1, 1/2, 0); a source read as balanced would give class 1 3/4. Dividing the
    # target shares by their maximum, as PADA does, weighs class 1 about 1/3, nearer the absent class.
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 6.0], [6.0, 0.0], [-6.0, -6.0]], dtype=np.float32)
    y_source = np.repeat([0, 1, 2], [20, 60, 40])
    source = centres[y_source] + rng.normal(size=(120, 2)).astype(np.float32)
    y_target = np.repeat([0, 1], [90, 30])
    target = centres[y_target] + 1.0 + rng.normal(size=(120, 2)).astype(np.float32)
    X = np.concatenate([source, target])
    y = np.concatenate([y_source, np.full(120, -1)])
    clf = DomainAdaptedClassifier(
        model=None, method="dann", partial=True, max_epochs=10, batch_size=32, device="cpu", random_state=0
    ).fit(X, y)
    assert np.mean(clf.predict(target) == y_target) > 0.9
    assert clf.class_weights_[0] == 1.0
    assert 0.45 < clf.class_weights_[1] < 0.65  # from soft predictions, about 1/2
    assert clf.class_weights_[2] < 0.15


def test_partial_weights_are_the_ratio_of_target_to_source_shares_capped_at_one():
    predicted = torch.tensor([30.0, 10.0, 0.0, 0.0])  # the target's summed probabilities
    counts = torch.tensor([10, 10, 20, 0])  # the source's rows: the last class has none
    np.testing.assert_allclose(partial_class_weights(predicted, counts), [1.0, 1.0, 0.0, 1.0])


def test_mmd_of_rows_all_alike_is_zero_not_nan():
    same = torch.zeros(8, 4)  # a bottleneck whose units are all dead: every row the same
    assert float(mmd_loss(same[:4], same[4:])) == 0.0
    assert float(mmd_loss(same[:4], same[4:], source_weights=torch.ones(4))) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("distance", [mmd_loss, coral_loss], ids=["mmd", "coral"])
def test_source_weights_can_leave_out_the_rows_the_target_lacks(distance):
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(10, 4, generator=generator)
    source = torch.cat([target, torch.randn(6, 4, generator=generator) * 3 + 5])  # the target and more
    present = torch.tensor([1.0] * 10 + [0.0] * 6)
    assert float(distance(source, target)) > 0.1
    assert float(distance(source, target, source_weights=present)) == pytest.approx(0.0, abs=1e-5)
    equal = float(distance(source, target, source_weights=torch.full((16,), 0.3)))
    assert equal == pytest.approx(float(distance(source, target)), rel=1e-5)


@pytest.mark.parametrize("method", ["mmd", "coral"])
def test_partial_weighs_the_classes_in_mmd_and_coral(method):
    clf = DomainAdaptedClassifier(method=method, partial=True)
    clf._n_sources = 1
    generator = torch.Generator().manual_seed(0)
    logits, features = torch.randn(10, 3, generator=generator), torch.randn(10, 5, generator=generator)
    codes = torch.tensor([0, 1, 2, 0, 1, 2, -1, -1, -1, -1])
    labels, sources = codes[:6] % 3, codes[:6] // 3
    class_weights = torch.tensor([1.0, 0.5, 0.0])
    distance = mmd_loss if method == "mmd" else coral_loss
    expected = distance(logits[:6], logits[6:], source_weights=class_weights[labels])
    got = clf._alignment((logits, features), codes, labels, sources, class_weights)
    assert float(got) == pytest.approx(float(expected))
    assert float(got) != pytest.approx(float(distance(logits[:6], logits[6:])))
    assert float(clf._alignment((logits, features), codes, labels, sources, torch.zeros(3))) == 0.0
    one_of_class_2 = torch.tensor([0, 1, 2, 0, 1, 0, -1, -1, -1, -1])  # one row left: no covariance
    only_2 = torch.tensor([0.0, 0.0, 1.0])
    alone = clf._alignment((logits, features), one_of_class_2, one_of_class_2[:6], sources, only_2)
    assert float(alone) == 0.0


@pytest.mark.parametrize("method", ["source_only", "self_training", "mcc"])
def test_partial_without_alignment_warns(shifted_images, method):
    X, y, _ = shifted_images
    message = f"partial=True with method='{method}' weighs the classification"
    with pytest.warns(PartialWithoutAlignmentWarning, match=message) as record:
        deep(method=method, partial=True, max_epochs=1).fit(X, y)
    assert [w.filename for w in record if message in str(w.message)] == [__file__]  # the line that called fit


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        (
            "mmd",
            {"discriminator_dim": 8},
            r"discriminator_dim=8 takes effect only with method='dann' or 'cdan'",
        ),
        ("dann", {"alignment_layer": "bottleneck"}, r"alignment_layer='bottleneck' takes effect only with"),
        (
            "mmd",
            {"covariance_momentum": 0.5},
            r"covariance_momentum=0\.5 takes effect only with method='coral'",
        ),
        (
            "coral",
            {"pseudo_label_threshold": 0.5},
            r"pseudo_label_threshold=0\.5 takes effect only with self",
        ),
    ],
)
def test_settings_the_method_does_not_read_warn(shifted_images, method, params, message):
    X, y, _ = shifted_images
    with pytest.warns(IgnoredSettingWarning, match=message) as record:
        deep(method=method, max_epochs=1, **params).fit(X, y)
    assert [w.filename for w in record if "takes effect" in str(w.message)] == [__file__]


@pytest.mark.parametrize("method", METHODS)
def test_the_defaults_warn_of_nothing_unread(shifted_images, method):
    X, y, _ = shifted_images
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        deep(method=method, max_epochs=1).fit(X, y)
    assert not [w for w in record if "takes effect" in str(w.message)]


class _FocalLikeLoss(nn.CrossEntropyLoss):
    def forward(self, logits, labels):
        return 2 * super().forward(logits, labels)


@pytest.mark.parametrize("criterion", [nn.MultiMarginLoss, _FocalLikeLoss, _FocalLikeLoss()])
def test_partial_needs_cross_entropy_itself_and_says_so_before_training(shifted_images, criterion):
    X, y, _ = shifted_images
    clf = deep(partial=True, criterion=criterion)
    with pytest.raises(ValueError, match=r"partial=True weighs the classes of nn\.CrossEntropyLoss"):
        clf.fit(X, y)
    assert not clf.initialized_  # refused before the network was built


def test_partial_keeps_the_criterions_own_settings():
    clf = DomainAdaptedClassifier(method="dann", partial=True, device="cpu")
    clf.classes_inferred_, clf.class_weights_ = np.array(["a", "b"]), np.array([1.0, 0.5])
    criterion = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 100.0]), label_smoothing=0.1, reduction="sum")
    object.__setattr__(clf, "criterion_", criterion)  # as initialize sets it from criterion__* parameters
    logits = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    codes = torch.tensor([0, 1, 1, 0, -1, -1])
    # each row's smoothed cross-entropy weighed by its class's weight, the criterion's times PADA's
    per_row = nn.functional.cross_entropy(logits[:4], codes[:4], label_smoothing=0.1, reduction="none")
    expected = (torch.tensor([1.0, 50.0])[codes[:4]] * per_row).sum()
    assert float(clf.get_loss((logits,), codes)) == pytest.approx(float(expected))


def test_new_methods_through_routed_grid_search_with_a_label_free_scorer(shifted_images):
    X, _, y_source = shifted_images
    y = np.concatenate([y_source, y_source])  # target labels given, but masked by the negative domain
    domains = np.repeat([1, -2], len(y_source))
    folds = list(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))
    with sklearn.config_context(enable_metadata_routing=True):
        clf = deep(method="cdan", max_epochs=1).set_fit_request(sample_domain=True)
        scorer = deep_embedded_validation_scorer
        search = GridSearchCV(clf, {"method": ["cdan", "self_training"]}, cv=folds, scoring=scorer)
        search.fit(X, y, sample_domain=domains)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.predict(X[:3]).shape == (3,)


def test_backbone_lr_ratio_auto_depends_on_pretrained_weights(labelled_images):
    X, y = labelled_images
    scratch = FineTuneClassifier(model=TinyConvNet, weights=None, strategy="full", max_epochs=1, device="cpu")
    pretrained = FineTuneClassifier(model=TinyConvNet, strategy="full", max_epochs=1, device="cpu")
    for clf, ratio in ((scratch, 1.0), (pretrained, 0.1)):
        clf.fit(X, y)
        rates = {group["stage_depth"]: group["initial_lr"] for group in clf.optimizer_.param_groups}
        assert rates[0] == pytest.approx(rates[None] * ratio)


@pytest.mark.parametrize("method", ["dann", "cdan"])
def test_auto_discriminator_is_as_wide_as_the_bottleneck_without_a_backbone(shifted_images, method):
    X, y, _ = shifted_images
    features = X.reshape(len(X), -1)
    on_features = DomainAdaptedClassifier(
        model=None, method=method, bottleneck_dim=12, max_epochs=1, device="cpu", random_state=0
    ).fit(features, y)
    on_a_backbone = deep(method=method, bottleneck_dim=12, max_epochs=1).fit(X, y)
    chosen = deep(method=method, discriminator_dim=6, max_epochs=1).fit(X, y)
    for clf, width in ((on_features, 12), (on_a_backbone, 512), (chosen, 6)):
        assert clf.module_.discriminator[0].out_features == width
    assert on_features.discriminator_dim == "auto"  # the setting stays as the user wrote it


def test_a_changed_bottleneck_is_named_not_the_auto_discriminator_width_it_moves(shifted_images):
    X, y, _ = shifted_images
    features = X.reshape(len(X), -1)
    clf = DomainAdaptedClassifier(model=None, method="dann", max_epochs=1, device="cpu", random_state=0)
    clf.fit(features, y).set_params(bottleneck_dim=16)
    with pytest.warns(SettingsChangedWarning) as record:
        clf.predict(features)
    message = " ".join(str(warning.message) for warning in record)
    assert "bottleneck_dim changed after fitting" in message
    assert "discriminator_dim" not in message  # still "auto", as the user left it


def test_a_module_ending_with_flatten_is_sized_on_the_training_images(shifted_images):
    X, y, _ = shifted_images  # 16×16 images: the flattened width is not that of a 224×224 image
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
    clf = DomainAdaptedClassifier(model=cnn, weights=None, max_epochs=1, device="cpu", random_state=0)
    clf.fit(X, y)
    assert clf.module_.bottleneck[0].in_features == 4 * 7 * 7
    assert clf.predict(X).shape == (len(X),)


@pytest.mark.parametrize(
    ("partial", "domain_batchnorm", "rows"),
    [(False, "auto", 120), (True, "auto", 400), (False, False, 120), (True, True, 120)],
)
def test_batchnorm_is_recalibrated_on_the_rows_training_normalised_together(partial, domain_batchnorm, rows):
    # With partial=True the domains are normalised together in training; recalibrating on the target alone,
    # which lacks classes, shifted its features at prediction (below the uncalibrated accuracy in every run).
    # Every row is read, the target's repeated to weigh half, as in the training batches; a target that holds
    # every class is recalibrated on alone (AdaBN), whatever domain_batchnorm.
    dataset = torch.utils.data.TensorDataset(torch.zeros(320, 2))
    dataset.targets = np.concatenate([np.repeat([0, 1], 100), np.full(120, -1)])  # as the training data's
    clf = DomainAdaptedClassifier(
        model=None, partial=partial, domain_batchnorm=domain_batchnorm, device="cpu"
    )
    recalibrated = clf._recalibration_data(dataset)
    assert len(recalibrated) == rows
    read = dataset.targets[recalibrated.indices]
    assert set(np.flatnonzero(dataset.targets == -1)) <= set(recalibrated.indices)
    assert (read == -1).sum() == (120 if rows == 120 else 200)  # with the source: half the rows


def test_recalibration_without_source_rows_reads_the_target_rows():
    # np.resize fills an empty array with zeros: row 0 was read as a source row.
    dataset = torch.utils.data.TensorDataset(torch.zeros(6, 2))
    dataset.targets = np.full(6, -1)
    clf = DomainAdaptedClassifier(model=None, partial=True, device="cpu")
    assert list(clf._recalibration_data(dataset).indices) == list(range(6))


def _partial_on_features(method):
    """A partial DomainAdaptedClassifier fitted on two blobs of features, and rows of both domains."""
    rng = np.random.default_rng(0)
    source = rng.normal(size=(16, 3)).astype(np.float32) + np.repeat([[0.0], [4.0]], 8, axis=0)
    X = np.concatenate([source, rng.normal(size=(16, 3)).astype(np.float32) - 5])
    y = np.concatenate([np.repeat([0, 1], 8), np.full(16, -1)])
    clf = DomainAdaptedClassifier(
        model=None, method=method, partial=True, max_epochs=1, device="cpu", random_state=0
    ).fit(X, y)
    return clf, X


def test_partial_loss_of_a_batch_of_classes_weighed_zero_is_zero_not_nan():
    # torch's weighted mean divided by the batch's total weight, 0: NaN, reported as a diverged training.
    clf, X = _partial_on_features("dann")
    clf.class_weights_ = np.array([0.0, 1.0], dtype=np.float32)
    rows, codes = [0, 1, 2, 20, 21], np.array([0, 0, 0, -1, -1])
    with torch.no_grad():
        loss = clf.get_loss(clf.infer(torch.as_tensor(X[rows])), codes)
    assert float(loss) == 0.0
    clf.criterion_.label_smoothing = 0.1  # its smoothing term, weighed by the other classes: 0 all the same
    with torch.no_grad():
        assert float(clf.get_loss(clf.infer(torch.as_tensor(X[rows])), codes)) == 0.0
        # weighed near 0, not 0: torch's smoothing term over a total of 1e-20 gave about 1e19; the rows' own
        # smoothed cross-entropy, weighed alike, averages to its unweighted mean
        clf.class_weights_ = np.array([1e-20, 1.0], dtype=np.float32)
        logits = clf.infer(torch.as_tensor(X[rows]))
        expected = nn.functional.cross_entropy(
            logits[0][:3], torch.zeros(3, dtype=torch.long), label_smoothing=0.1
        )
        torch.testing.assert_close(clf.get_loss(logits, codes), expected)
    clf.criterion_.label_smoothing = 0.0
    clf.class_weights_ = np.array([0.5, 1.0], dtype=np.float32)  # otherwise torch's weighted mean
    rows, codes = [0, 1, 9, 20, 21], np.array([0, 0, 1, -1, -1])
    with torch.no_grad():
        logits = clf.infer(torch.as_tensor(X[rows]))[0][:3]
        expected = nn.functional.cross_entropy(
            logits, torch.tensor([0, 0, 1]), weight=torch.tensor([0.5, 1.0])
        )
        torch.testing.assert_close(clf.get_loss(clf.infer(torch.as_tensor(X[rows])), codes), expected)


@pytest.mark.parametrize("method", ["coral", "mmd"])
def test_partial_alignment_leaves_out_source_rows_that_count_as_one_and_keeps_the_others(method):
    # One row of weight 1 beside rows weighed ~1e-9: float32's weighted covariance divided by 0, NaN. Two rows
    # weighed 0.5 and 1 count as more than one: aligned, as before.
    clf, X = _partial_on_features(method)
    rows, codes = [0, 1, 2, 9, 20, 21, 22], torch.tensor([0, 0, 0, 1, -1, -1, -1])
    labels, sources = torch.tensor([0, 0, 0, 1]), torch.zeros(4, dtype=torch.long)
    alignment = clf._alignment(
        clf.infer(torch.as_tensor(X[rows])), codes, labels, sources, torch.tensor([1e-9, 1.0])
    )
    assert float(alignment) == 0.0  # left out
    rows, codes = [0, 9, 20, 21, 22], torch.tensor([0, 1, -1, -1, -1])
    labels, sources = torch.tensor([0, 1]), torch.zeros(2, dtype=torch.long)
    alignment = clf._alignment(
        clf.infer(torch.as_tensor(X[rows])), codes, labels, sources, torch.tensor([0.5, 1.0])
    )
    assert float(alignment) > 0


def test_mcc_weighs_rows_by_their_certainty_without_training_it():
    # As the paper's code: the entropy weights are detached, and the gradient flows through the confusion.
    logits = (torch.randn(16, 5, generator=torch.Generator().manual_seed(0)) * 5).requires_grad_()
    probabilities = torch.softmax(logits / 2.5, dim=1)
    entropy = -(probabilities * torch.log(probabilities + 1e-5)).sum(dim=1).detach()
    weights = 1 + torch.exp(-entropy)
    weights = (16 * weights / weights.sum()).unsqueeze(1)
    confusion = (probabilities * weights).T @ probabilities
    confusion = confusion / confusion.sum(dim=1, keepdim=True)
    expected = torch.autograd.grad((confusion.sum() - confusion.trace()) / 5, logits)[0]
    torch.testing.assert_close(torch.autograd.grad(minimum_class_confusion_loss(logits), logits)[0], expected)
