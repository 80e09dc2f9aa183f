"""L2-SP: a penalty toward the pretrained backbone weights, weight decay on the new head only."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone

from sktransfer import FineTuneClassifier
from sktransfer._regularization import l2_sp_penalty
from sktransfer.exceptions import IgnoredSettingWarning

from ._models import TinyConvNet


def tiny(**params):
    defaults = {
        "model": TinyConvNet,
        "device": "cpu",
        "strategy": "full",
        "regularization": "l2_sp",
        "max_epochs": 3,
        "batch_size": 8,
        "random_state": 0,
    }
    return FineTuneClassifier(**{**defaults, **params})


def _distance(module, anchor):
    """Root of the summed squared distance of ``module``'s parameters from ``anchor``."""
    return (
        sum((p.detach() - anchor[name]).pow(2).sum().item() for name, p in module.named_parameters()) ** 0.5
    )


def test_the_penalty_is_zero_at_first_and_its_gradient_pulls_toward_the_anchor():
    clf = tiny(regularization_strength=0.5, classes=["bright", "dark"]).initialize()
    backbone, anchor = clf.module_.backbone, clf._l2_sp_anchor
    assert set(anchor) == {name for name, _ in backbone.named_parameters()}  # copied at build; not the head
    assert l2_sp_penalty(backbone, anchor, 0.5).item() == 0.0
    with torch.no_grad():
        for parameter in backbone.parameters():
            parameter.add_(0.1)
    penalty = l2_sp_penalty(backbone, anchor, 0.5)
    penalty.backward()
    for name, parameter in backbone.named_parameters():  # d/dw (alpha / 2)||w - w0||² = alpha (w - w0)
        torch.testing.assert_close(parameter.grad, 0.5 * (parameter.detach() - anchor[name]))


def test_a_strong_penalty_holds_the_backbone_while_the_head_learns(labelled_images):
    X, y = labelled_images
    settings = {"lr": 0.05, "backbone_lr_ratio": 1.0, "weight_decay": 0.0, "max_epochs": 4}
    free = tiny(regularization=None, **settings).fit(X, y)
    held = tiny(regularization_strength=1e4, **settings).fit(X, y)
    start = {
        name: p.detach()
        for name, p in tiny(classes=["bright", "dark"]).initialize().module_.named_parameters()
    }
    backbone_start = {
        name.removeprefix("backbone."): p for name, p in start.items() if name.startswith("backbone.")
    }
    head_start = {name.removeprefix("head."): p for name, p in start.items() if name.startswith("head.")}
    moved, stayed = (
        _distance(free.module_.backbone, backbone_start),
        _distance(held.module_.backbone, backbone_start),
    )
    assert stayed < moved / 10
    assert _distance(held.module_.head, head_start) > _distance(free.module_.head, head_start) / 2  # not held
    assert held.score(X, y) > 0.9


def test_the_backbone_gets_no_weight_decay_and_the_head_keeps_it(labelled_images):
    X, y = labelled_images
    clf = tiny(weight_decay=0.05, max_epochs=1).fit(X, y)
    decays = {group["stage_depth"] is None: group["weight_decay"] for group in clf.optimizer_.param_groups}
    assert decays == {True: 0.05, False: 0.0}
    clf.set_params(regularization=None).partial_fit(X, y)  # takes effect on the next call
    assert {group["weight_decay"] for group in clf.optimizer_.param_groups} == {0.05}


def test_the_training_loss_includes_the_penalty(labelled_images):
    X, y = labelled_images
    settings = {"weight_decay": 0.0, "max_epochs": 2, "lr": 0.05}
    plain = tiny(regularization=None, **settings).fit(X, y)
    # at strength 0, L2-SP is plain training (without weight decay, which it takes from the backbone)
    weak = tiny(regularization_strength=0.0, **settings).fit(X, y)
    np.testing.assert_allclose(weak.predict_proba(X), plain.predict_proba(X), rtol=1e-5, atol=1e-6)
    strong = tiny(regularization_strength=1e3, **settings).fit(X, y)
    assert strong.history[-1, "train_loss"] > weak.history[-1, "train_loss"]


def test_partial_fit_keeps_pulling_toward_the_pretrained_weights(labelled_images):
    X, y = labelled_images
    clf = tiny(lr=0.05, max_epochs=1).fit(X, y)
    anchor = {name: tensor.clone() for name, tensor in clf._l2_sp_anchor.items()}
    clf.partial_fit(X, y)
    for name, tensor in clf._l2_sp_anchor.items():
        torch.testing.assert_close(tensor, anchor[name])
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    for name, tensor in restored._l2_sp_anchor.items():
        torch.testing.assert_close(tensor, anchor[name])
    restored.partial_fit(X, y)  # after unpickling, toward the same weights


def test_the_anchor_stays_the_pretrained_weights_while_l2_sp_is_off_for_a_while(labelled_images):
    X, y = labelled_images
    settings = {"strategy": "gradual", "freeze_epochs": 1, "unfreeze_epochs": 1, "max_epochs": 1, "lr": 0.05}
    clf = tiny(**settings).fit(X, y)  # the head alone trained: nothing of the backbone anchored yet
    pretrained = {name: p.detach().clone() for name, p in clf.module_.backbone.named_parameters()}
    clf.set_params(regularization=None).partial_fit(X, y)  # the backbone trains, unpenalised
    clf.set_params(regularization="l2_sp").partial_fit(X, y)
    assert set(clf._l2_sp_anchor) == set(pretrained)
    for name, tensor in clf._l2_sp_anchor.items():
        torch.testing.assert_close(tensor, pretrained[name])


def test_l2_sp_set_after_fitting_without_it_asks_for_a_refit(labelled_images):
    X, y = labelled_images
    clf = tiny(regularization=None, max_epochs=1).fit(X, y)
    assert clf._l2_sp_anchor is None  # no copy of the backbone without L2-SP
    clf.set_params(regularization="l2_sp")
    with pytest.raises(ValueError, match="regularization='l2_sp' was set after fitting"):
        clf.partial_fit(X, y)
    clf.fit(X, y)  # a new fit anchors at the pretrained weights
    assert clf._l2_sp_anchor is not None


@pytest.mark.parametrize(
    ("params", "named"),
    [({"weights": None}, "weights=None"), ({"model": None}, "model=None")],
)
def test_l2_sp_without_pretrained_weights_is_refused(labelled_images, params, named):
    X, y = labelled_images
    X = X.reshape(len(X), -1).astype(np.float32) if params.get("model", "") is None else X
    with pytest.raises(ValueError, match=f"regularization='l2_sp'.*{named}"):
        tiny(**params).fit(X, y)
    with pytest.raises(ValueError, match="regularization"):
        tiny(regularization="l2sp").fit(X, y)


@pytest.mark.parametrize("strategy", ["gradual", "lp_ft", "bitfit", "linear_probe"])
def test_every_strategy_trains_under_l2_sp(labelled_images, strategy):
    X, y = labelled_images
    clf = tiny(strategy=strategy, lr=0.05, freeze_epochs=1, unfreeze_epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IgnoredSettingWarning)
        clf.fit(X, y)
    ignored = [
        w for w in caught if issubclass(w.category, IgnoredSettingWarning) and "l2_sp" in str(w.message)
    ]
    assert bool(ignored) == (strategy == "linear_probe")  # nothing in a linear probe's backbone trains
    assert clf.score(X, y) > 0.9
    penalty = l2_sp_penalty(clf.module_.backbone, clf._l2_sp_anchor, 1.0)
    trained = {name for name, p in clf.module_.backbone.named_parameters() if p.requires_grad}
    assert set(clf._l2_sp_anchor) == trained  # no copy of what never trains
    if strategy == "linear_probe":  # nothing in the backbone trains
        assert penalty is None
    else:
        assert penalty.item() > 0


def test_the_anchor_of_a_frozen_backbone_costs_nothing_in_the_pickle(labelled_images):
    X, y = labelled_images
    with pytest.warns(IgnoredSettingWarning, match="regularization='l2_sp'.*other than 'linear_probe'"):
        probe = tiny(strategy="linear_probe", max_epochs=1).fit(X, y)
    plain = tiny(strategy="linear_probe", regularization=None, max_epochs=1).fit(X, y)
    assert probe._l2_sp_anchor == {}
    assert len(pickle.dumps(probe)) < len(pickle.dumps(plain)) + 2000


def test_lora_adapters_are_held_near_their_start(tiny_text_model):
    texts = ["good film", "great acting", "bad plot", "awful film"] * 4
    labels = ["pos", "pos", "neg", "neg"] * 4
    clf = tiny(model=tiny_text_model, strategy="lora", lora_rank=2, lr=0.05, max_epochs=1).fit(texts, labels)
    trainable = {name for name, p in clf.module_.backbone.named_parameters() if p.requires_grad}
    assert trainable
    assert all("lora_" in name for name in trainable)  # the pretrained weights stay frozen
    assert l2_sp_penalty(clf.module_.backbone, clf._l2_sp_anchor, 1.0).item() > 0


def test_fits_are_deterministic_and_clones_keep_the_settings(labelled_images):
    X, y = labelled_images
    clf = tiny(regularization_strength=0.3, augment="default", dropout=0.2)
    first = clf.fit(X, y).predict_proba(X)
    copy = clone(clf)
    assert copy.get_params()["regularization"] == "l2_sp"
    assert copy.get_params()["regularization_strength"] == 0.3
    np.testing.assert_array_equal(copy.fit(X, y).predict_proba(X), first)


@pytest.mark.parametrize("strategy", ["full", "gradual"])
def test_the_anchor_is_the_pretrained_weights_when_load_params_moved_them_before_training(
    labelled_images, tmp_path, strategy
):
    X, y = labelled_images
    drifted = tiny(regularization=None, lr=0.05, backbone_lr_ratio=1.0, max_epochs=2).fit(X, y)
    drifted.save_params(f_params=tmp_path / "drifted.pt")
    clf = tiny(strategy=strategy, classes=["bright", "dark"], max_epochs=1).initialize()
    pretrained = {name: p.detach().clone() for name, p in clf.module_.backbone.named_parameters()}
    clf.load_params(f_params=tmp_path / "drifted.pt")  # skorch's resume: other weights before the first step
    clf.partial_fit(X, y)
    assert set(clf._l2_sp_anchor) == set(pretrained)
    for name, tensor in clf._l2_sp_anchor.items():
        torch.testing.assert_close(tensor, pretrained[name])  # not the loaded checkpoint's weights
