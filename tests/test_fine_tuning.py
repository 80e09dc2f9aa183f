import os
import pickle
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score, cross_validate
from skorch.callbacks import Callback, LRScheduler
from skorch.dataset import Dataset as SkorchDataset
from skorch.helper import predefined_split
from torch.utils.data import TensorDataset

import sktransfer._training_data
from sktransfer import FineTuneClassifier
from sktransfer._fused_optimizer import move_optimizer_state
from sktransfer._image_batches import RawImageBatch
from sktransfer._network import BackboneWithHead
from sktransfer.exceptions import IgnoredSettingWarning
from sktransfer.training import TrainingDivergedError

from ._models import CountingNet, TinyConvNet


def tiny(**params):
    defaults = {"model": TinyConvNet, "device": "cpu", "max_epochs": 3, "batch_size": 8, "random_state": 0}
    return FineTuneClassifier(**{**defaults, **params})


def test_string_labels_in_a_grid_search(labelled_images):
    X, y = labelled_images
    grid = {"strategy": ["linear_probe", "full"], "lr": [0.05, 0.01]}
    search = GridSearchCV(tiny(max_epochs=4), grid, cv=2).fit(X, y)
    assert set(search.cv_results_["params"][0]) == {"strategy", "lr"}
    best = search.best_estimator_
    assert best.classes_.tolist() == ["bright", "dark"]
    predictions = best.predict(X)
    assert predictions.dtype == y.dtype
    assert np.mean(predictions == y) > 0.9  # a constant prediction gets 0.5
    assert best.score(X, y) > 0.9
    proba = best.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    scores = cross_val_score(tiny(lr=0.05), X, y, cv=2)  # learns from any initialisation at this rate
    assert scores.shape == (2,)
    assert scores.min() > 0.9  # each fold trains on both classes; a constant prediction gets 0.5


@pytest.mark.parametrize("strategy", ["full", "linear_probe"])  # images every epoch / features computed once
def test_dataloader_workers_inside_joblib_workers(strategy, labelled_images):
    X, y = labelled_images
    clf = tiny(strategy=strategy, max_epochs=1, num_workers=2, verbose=1)
    in_workers = cross_validate(clf, X, y, cv=2, n_jobs=2, return_estimator=True)
    in_turn = cross_validate(clf, X, y, cv=2, n_jobs=1, return_estimator=True)
    np.testing.assert_array_equal(in_workers["test_score"], in_turn["test_score"])
    for parallel, sequential in zip(in_workers["estimator"], in_turn["estimator"], strict=True):
        np.testing.assert_allclose(parallel.predict_proba(X), sequential.predict_proba(X), rtol=1e-5)
        # At verbose=1 only the main program draws progress bars: those of several workers garble each other.
        assert "progress_bar" not in dict(parallel.callbacks_)
        assert "progress_bar" in dict(sequential.callbacks_)


def test_labels_of_any_type(labelled_images):
    X, y = labelled_images
    for labels in (np.where(y == "dark", 7, -3), np.where(y == "dark", 1.0, 2.0), y.astype(object), y):
        clf = tiny(strategy="full", lr=0.05).fit(X, labels)
        predictions = clf.predict(X)
        assert predictions.dtype == labels.dtype
        assert {type(label) for label in predictions} == {type(label) for label in labels}  # str in objects
        assert set(predictions.tolist()) == set(labels.tolist())
        assert np.mean(predictions == labels) > 0.9  # a constant prediction gets 0.5


def test_linear_probe_leaves_the_backbone_untouched(labelled_images):
    X, y = labelled_images
    clf = tiny(strategy="linear_probe", precompute_features=False, lr=0.05)
    reference = TinyConvNet().state_dict()
    clf.fit(X, y)
    after = clf.module_.backbone.body.state_dict()
    for name, tensor in reference.items():
        if not name.startswith("fc."):
            torch.testing.assert_close(after[name], tensor, rtol=0, atol=0)
    assert not torch.equal(clf.module_.head[1].weight, clf.initialize().module_.head[1].weight)


def test_frozen_batchnorm_keeps_its_statistics(labelled_images):
    X, y = labelled_images
    reference = TinyConvNet().features[1]
    frozen = tiny(strategy="gradual", freeze_epochs=3, precompute_features=False, freeze_batchnorm=False)
    bn = frozen.fit(X, y).module_.backbone.body.features[1]
    torch.testing.assert_close(bn.running_mean, reference.running_mean, rtol=0, atol=0)
    assert int(bn.num_batches_tracked) == 0
    # The same layer, trainable and not told to keep its statistics, updates them.
    trained = tiny(strategy="full", freeze_batchnorm=False).fit(X, y).module_.backbone.body.features[1]
    assert int(trained.num_batches_tracked) > 0
    assert trained.momentum == reference.momentum
    # freeze_batchnorm keeps them while the weights learn.
    kept = tiny(strategy="full", freeze_batchnorm=True).fit(X, y).module_.backbone.body.features[1]
    assert int(kept.num_batches_tracked) == 0
    assert not torch.equal(kept.weight, reference.weight)


def test_trained_batchnorm_statistics_are_recalibrated(labelled_images):
    X, y = labelled_images
    clf = tiny(strategy="full", weights=None, max_epochs=2)
    features = clf.fit(X, y).module_.backbone.body.features
    with torch.no_grad():
        first = features[0](clf.get_dataset(X).images.__getitems__(list(range(len(X)))))
    bn = features[1]
    assert int(bn.num_batches_tracked) == 3  # reset, then one pass over the 3 training batches
    # The mean of per-batch means of equal-sized batches is the mean over all images.
    torch.testing.assert_close(bn.running_mean, first.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    stale = tiny(strategy="full", weights=None, max_epochs=2, recalibrate_batchnorm=False).fit(X, y)
    assert not torch.allclose(stale.module_.backbone.body.features[1].running_mean, bn.running_mean)


def test_recalibrated_batchnorm_statistics_do_not_depend_on_the_order_of_the_rows():
    # Read in X's order, batches of one class each missed the variance between the classes: the running
    # variance came out a fraction of the true one for rows sorted by class (as a folder lists them).
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.integers(0, 60, (16, 16, 16, 3)), rng.integers(190, 255, (16, 16, 16, 3))])
    X, y = X.astype(np.uint8), np.repeat(["dark", "bright"], 16)
    clf = tiny(strategy="full", weights=None, max_epochs=1).fit(X, y)
    features = clf.module_.backbone.body.features
    with torch.no_grad():
        first = features[0](clf.get_dataset(X).images.__getitems__(list(range(len(X)))))
    exact = first.var(dim=(0, 2, 3))
    assert torch.all(features[1].running_var > 0.8 * exact)


def test_gradual_unfreezing_goes_top_down(labelled_images):
    X, y = labelled_images
    clf = tiny(strategy="gradual", max_epochs=5, freeze_epochs=1, unfreeze_epochs=3).fit(X, y)
    assert clf.module_.stage_names == ["body.features.0", "body.features.1", "body.features.3"]
    assert clf.history[:, "trainable_stages"] == [0, 1, 2, 3, 3]
    lp_ft = tiny(strategy="lp_ft", max_epochs=3, freeze_epochs=2).fit(X, y)
    assert lp_ft.history[:, "trainable_stages"] == [0, 0, 3]


def test_bitfit_trains_only_biases_and_norms(labelled_images):
    X, y = labelled_images
    clf = tiny(strategy="bitfit", lr=0.05).fit(X, y)
    reference = TinyConvNet().state_dict()
    after = clf.module_.backbone.body.state_dict()
    assert torch.equal(after["features.0.weight"], reference["features.0.weight"])
    assert not torch.equal(after["features.0.bias"], reference["features.0.bias"])
    assert not torch.equal(after["features.1.weight"], reference["features.1.weight"])  # BatchNorm scale


class _TinyTransformer(torch.nn.Module):
    """Patches through one transformer layer: attention whose query, key and value biases are in_proj_bias."""

    def __init__(self):
        super().__init__()
        self.patch = torch.nn.Conv2d(3, 8, 4, stride=4)
        self.encoder = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.encoder(self.patch(x).flatten(2).transpose(1, 2)).mean(1))


def test_bitfit_trains_the_query_key_and_value_biases_of_attention(labelled_images):
    # Only parameters named "bias" trained: a ViT's attention biases (in_proj_bias) stayed frozen, in silence.
    X, y = labelled_images
    clf = tiny(model=_TinyTransformer, strategy="bitfit", lr=0.05).fit(X, y)
    trained = {name for name, parameter in clf.module_.backbone.named_parameters() if parameter.requires_grad}
    assert any(name.endswith("self_attn.in_proj_bias") for name in trained)
    assert not any(name.endswith("self_attn.in_proj_weight") for name in trained)
    from sktransfer._network import is_bias

    recurrent = dict(torch.nn.LSTM(2, 2).named_parameters())
    assert [name for name in recurrent if is_bias(name)] == ["bias_ih_l0", "bias_hh_l0"]


def test_backbone_learns_slower_than_the_head(labelled_images):
    X, y = labelled_images
    clf = tiny(lr=0.01, backbone_lr_ratio=0.1, layer_decay=0.5, lr_schedule=None, max_epochs=1).fit(X, y)
    rates = [group["lr"] for group in clf.optimizer_.param_groups]
    assert rates == pytest.approx([0.01, 0.001, 0.0005, 0.00025])


def test_the_default_optimizer_is_fused_on_the_cpu_and_a_users_choice_is_kept(labelled_images):
    X, y = labelled_images
    assert tiny(max_epochs=1).fit(X, y).optimizer_.defaults["fused"] is True
    chosen = tiny(max_epochs=1, optimizer__foreach=True).fit(X, y).optimizer_.defaults
    assert chosen["foreach"] is True
    assert not chosen["fused"]

    class OwnAdamW(torch.optim.AdamW):  # a subclass may step differently: never given another kernel
        pass

    assert not tiny(max_epochs=1, optimizer=OwnAdamW).fit(X, y).optimizer_.defaults["fused"]
    assert not tiny(max_epochs=1, optimizer=torch.optim.SGD).fit(X, y).optimizer_.defaults["fused"]


def test_the_fused_optimizer_trains_as_the_unfused_one(labelled_images):
    X, y = labelled_images
    params = {"strategy": "full", "max_epochs": 3, "lr": 0.01}
    fused, unfused = tiny(**params).fit(X, y), tiny(**params, optimizer__fused=False).fit(X, y)
    assert fused.optimizer_.defaults["fused"]
    assert not unfused.optimizer_.defaults["fused"]
    expected = unfused.module_.state_dict()
    for name, after in fused.module_.state_dict().items():
        torch.testing.assert_close(after, expected[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("fused", [True, False])
def test_the_optimizer_state_follows_the_network_as_its_implementation_expects(labelled_images, fused):
    X, y = labelled_images
    optimizer = tiny(max_epochs=1, optimizer__fused=fused).fit(X, y).optimizer_
    move_optimizer_state(optimizer, torch.device("meta"))  # stands for a GPU: only where tensors go matters
    for state in optimizer.state.values():
        assert state["exp_avg"].device.type == "meta"
        assert state["step"].device.type == ("meta" if fused else "cpu")  # fused kernels read it there


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_fit_on_the_cpu_continues_on_the_gpu(labelled_images):
    X, y = labelled_images
    clf = tiny(max_epochs=1).fit(X, y)
    assert clf.optimizer_.defaults["fused"]
    clf.set_params(device="cuda").partial_fit(X, y)
    assert all(state["step"].device.type == "cuda" for state in clf.optimizer_.state.values())
    assert np.isfinite(clf.predict_proba(X)).all()


def test_learning_rate_warms_up_then_decays(labelled_images):
    X, y = labelled_images
    clf = tiny(max_epochs=5, warmup=0.3, lr=0.01, strategy="full").fit(X, y)
    rates = [rate for epoch in clf.history[:, "batches"] for rate in (b["event_lr"] for b in epoch)]
    peak = int(np.argmax(rates))
    assert 0 < peak < len(rates) - 1
    assert rates[0] < rates[peak]
    assert rates[-1] < rates[peak]
    # at lr=0.05 it learns from any initialisation (at the default rate, from about half of them)
    assert tiny(lr_schedule="onecycle", strategy="full", lr=0.05).fit(X, y).score(X, y) > 0.5


def test_one_cycle_schedules_the_rate_and_leaves_the_optimizers_momentum_as_given(labelled_images):
    # OneCycleLR cycled beta1 (and an SGD's momentum, from 0) by default: the user's betas were overridden.
    X, y = labelled_images
    seen = []

    class Betas(Callback):
        def on_batch_end(self, net, **kwargs):
            seen.append(net.optimizer_.param_groups[0]["betas"][0])

    tiny(lr_schedule="onecycle", optimizer__betas=(0.5, 0.999), callbacks=[Betas()]).fit(X, y)
    assert set(seen) == {0.5}


def test_settings_of_the_librarys_parameter_groups_warn_beside_param_groups_of_the_users(labelled_images):
    X, y = labelled_images
    groups = [("head.*", {"lr": 0.01})]
    with pytest.warns(
        IgnoredSettingWarning, match=r"weight_decay=0.5 and layer_decay=0.5 take effect only in"
    ):
        clf = tiny(optimizer__param_groups=groups, weight_decay=0.5, layer_decay=0.5, max_epochs=1).fit(X, y)
    assert 0.5 not in {group["weight_decay"] for group in clf.optimizer_.param_groups}


@pytest.mark.parametrize("labels", [["bright", "dark"], [10, 20]])
def test_a_predefined_validation_split_is_read_as_fit_reads_x_and_y(labelled_images, labels):
    # The user's Dataset reached skorch raw: no preprocessing, labels not encoded (an error each time).
    X, y = labelled_images
    y = np.asarray(labels)[(y == y[0]).astype(int)]
    valid = SkorchDataset(X[:8], y[:8])
    clf = tiny(train_split=predefined_split(valid), strategy="full", max_epochs=2).fit(X[8:], y[8:])
    assert np.isfinite(clf.history[:, "valid_loss"]).all()
    net = tiny(
        train_split=predefined_split(valid), strategy="full", max_epochs=2, recalibrate_batchnorm=False
    )
    last = net.fit(X[8:], y[8:]).history[-1, "valid_acc"]
    assert last == pytest.approx(net.score(X[:8], y[:8]))
    with pytest.raises(ValueError, match=r"train_split gave a validation TensorDataset .* cannot read"):
        tiny(train_split=predefined_split(TensorDataset(torch.zeros(2, 3)))).fit(X, y)


def test_skorchs_default_nll_loss_on_logits_is_refused_before_training(labelled_images):
    # On logits the loss falls without bound: training diverged and the error blamed the learning rate.
    X, y = labelled_images
    clf = tiny(criterion=torch.nn.NLLLoss)
    with pytest.raises(ValueError, match=r"criterion=NLLLoss reads log-probabilities.*CrossEntropyLoss"):
        clf.fit(X, y)
    assert not clf.initialized_


def test_a_scheduler_of_the_users_beside_lr_schedule_is_refused_naming_the_fix(labelled_images):
    # Both set the rate: the library's every batch, from its base, so a StepLR of the user's held one batch.
    X, y = labelled_images
    step = LRScheduler("StepLR", step_size=1, gamma=0.1)
    with pytest.raises(
        ValueError, match=r"scheduler of yours \(LRScheduler\), and lr_schedule='cosine'.*=None"
    ):
        tiny(callbacks=[("step", step)]).fit(X, y)
    clf = tiny(callbacks=[step], lr_schedule=None, lr=0.1, strategy="full").fit(X, y)
    assert clf.history[:, "event_lr"] == pytest.approx([0.1, 0.01, 0.001])


def test_warmup_auto_warms_pretrained_weights_up_and_starts_at_full_rate_from_scratch(labelled_images):
    X, y = labelled_images

    def first_rates(**params):
        clf = tiny(max_epochs=2, lr=0.01, strategy="full", **params).fit(X, y)
        return [batch["event_lr"] for batch in clf.history[0, "batches"]]

    pretrained, scratch = first_rates(), first_rates(weights=None)
    assert pretrained[0] < 0.01  # warming up
    assert scratch[0] == pytest.approx(0.01)  # the head's rate from the first step
    assert first_rates(weights=None, warmup=0.1) == pytest.approx(pretrained)
    features = np.random.default_rng(0).normal(size=(len(X), 6))
    on_features = tiny(model=None, max_epochs=1, lr=0.01).fit(features, y)
    assert on_features.history[0, "batches"][0]["event_lr"] == pytest.approx(0.01)


class CountingAugment:
    def __init__(self):
        self.calls = 0

    def __call__(self, image):
        self.calls += 1
        return image.flip(-1)


def test_augmentation_in_training_only(labelled_images):
    X, y = labelled_images
    augment = CountingAugment()
    clf = tiny(augment=augment, max_epochs=2, early_stopping=True, validation_fraction=0.25).fit(X, y)
    trained_on = len(X) - round(0.25 * len(X))
    assert clf.augment.calls == 2 * trained_on  # validation images are not augmented
    clf.predict(X)
    assert clf.augment.calls == 2 * trained_on


def test_a_seeded_fit_with_augmentation_does_not_depend_on_the_number_of_loader_workers(labelled_images):
    # Each DataLoader worker drew the augmentations from its own seed, and the main process from the seeded
    # stream: 0, 1 and 2 workers gave three different models.
    X, y = labelled_images
    params = {"augment": "default", "strategy": "full", "max_epochs": 2}
    in_process = tiny(**params).fit(X, y).predict_proba(X)
    in_workers = tiny(**params, num_workers=2).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(in_workers, in_process)
    assert not np.array_equal(tiny(**params, random_state=1).fit(X, y).predict_proba(X), in_process)


def test_precomputed_features_give_the_same_model(labelled_images):
    X, y = labelled_images
    CountingNet.calls.clear()
    fast = tiny(model=CountingNet, strategy="linear_probe", dropout=0.2).fit(X, y)
    assert CountingNet.image_rows() == len(X)  # one pass, not one per epoch
    naive = tiny(model=CountingNet, strategy="linear_probe", dropout=0.2, precompute_features=False).fit(X, y)
    np.testing.assert_allclose(fast.predict_proba(X), naive.predict_proba(X), rtol=1e-5, atol=1e-6)


def test_stored_features_of_the_library_preprocessing_on_the_device_train_alike(
    labelled_images, network_inputs, monkeypatch
):
    # On a GPU, the library's own preprocessing runs there: batches leave the loader as loaded (uint8).
    X, y = labelled_images
    params = {"model": "resnet18", "weights": None, "strategy": "linear_probe", "max_epochs": 2}
    expected = tiny(**params).fit(X, y).predict_proba(X)
    monkeypatch.setattr(sktransfer._training_data, "preprocesses_on_the_gpu", lambda *args: True)
    network_inputs.clear()  # those of the first fit, preprocessed on the CPU
    np.testing.assert_array_equal(tiny(**params).fit(X, y).predict_proba(X), expected)
    assert [batch.dtype for batch in network_inputs] == [torch.uint8] * 3  # 24 images in batches of 8
    assert network_inputs[0].shape == (8, 3, 16, 16)


def test_training_and_prediction_batches_of_the_library_preprocessing_on_the_device_train_alike(
    labelled_images, monkeypatch, raw_batches_moved
):
    # Backbone trained, so every epoch's batches (and prediction's) leave the loader as loaded, uint8, and
    # are preprocessed once on the device: the same model as preprocessing on the CPU.
    X, y = labelled_images
    params = {"model": "resnet18", "weights": None, "strategy": "full", "max_epochs": 2}
    expected = tiny(**params).fit(X, y).predict_proba(X)
    monkeypatch.setattr(sktransfer._training_data, "preprocesses_on_the_gpu", lambda *args: True)
    clf = tiny(**params).fit(X, y)
    # two epochs of three batches of 8, and BatchNorm's statistics set from the training rows at the end
    assert [tuple(images.shape) for images in raw_batches_moved] == [(8, 3, 16, 16)] * 9
    np.testing.assert_array_equal(clf.predict_proba(X), expected)
    assert len(raw_batches_moved) == 9 + 3


class BatchesSeen(Callback):
    """Records the images of every training batch, as callbacks see them."""

    def initialize(self):
        self.batches = []
        return self

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if training:
            self.batches.append(batch[0].clone())


def test_callbacks_see_batches_preprocessed_on_the_device_as_on_the_cpu(labelled_images, monkeypatch):
    # A callback (or a loss reading X) gets the float tensor the network reads, wherever it was preprocessed.
    X, y = labelled_images
    params = {"model": "resnet18", "weights": None, "strategy": "full", "max_epochs": 1}
    on_the_cpu = tiny(**params, callbacks=[("seen", BatchesSeen())]).fit(X, y)
    monkeypatch.setattr(sktransfer._training_data, "preprocesses_on_the_gpu", lambda *args: True)
    on_the_device = tiny(**params, callbacks=[("seen", BatchesSeen())]).fit(X, y)
    seen = [net.get_params()["callbacks__seen"].batches for net in (on_the_cpu, on_the_device)]
    assert [batch.dtype for batch in seen[1]] == [torch.float32] * 3
    for cpu_batch, device_batch in zip(*seen, strict=True):
        torch.testing.assert_close(device_batch, cpu_batch, rtol=0, atol=0)


def test_a_raw_batch_moves_to_a_device_only():
    batch = RawImageBatch(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), lambda images: images.float())
    with pytest.raises(TypeError):
        batch.to(torch.float32)  # a tensor's .to(dtype) would cast; this one is read as a device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_library_preprocessing_of_training_batches_runs_on_the_gpu(
    labelled_images, monkeypatch, raw_batches_moved
):
    X, y = labelled_images
    params = {
        "model": "resnet18",
        "weights": None,
        "strategy": "full",
        "device": "cuda",
        "precision": "float32",
    }
    clf = tiny(**params).fit(X, y)
    on_the_gpu = clf.predict_proba(X)
    assert raw_batches_moved
    assert {images.dtype for images in raw_batches_moved} == {torch.uint8}
    monkeypatch.setattr(sktransfer._training_data, "preprocesses_on_the_gpu", lambda *args: False)
    np.testing.assert_allclose(clf.predict_proba(X), on_the_gpu, atol=1e-2)  # preprocessed on the CPU


def test_the_loss_scale_of_float16_training_survives_pickling(labelled_images, monkeypatch):
    # float16 needs a GPU; its gradient scaler works on the CPU as well. A restored net that went on from
    # the initial scale would skip its first steps as overflows, where the pickled one would have trained.
    X, y = labelled_images
    monkeypatch.setattr(FineTuneClassifier, "_scales_loss", lambda self: True)
    clf = tiny(max_epochs=1).fit(X, y)
    clf.grad_scaler_.update(new_scale=128.0)
    restored = pickle.loads(pickle.dumps(clf))
    assert restored._grad_scaler().get_scale() == 128.0
    restored.partial_fit(X, y)
    assert restored.grad_scaler_.get_scale() == 128.0  # a fit of three steps: too few to grow
    fresh = pickle.loads(pickle.dumps(tiny(max_epochs=1)))
    assert fresh._grad_scaler().get_scale() == 2.0**16


def test_two_fits_give_identical_predictions(labelled_images):
    X, y = labelled_images
    params = {"augment": "default", "dropout": 0.3, "early_stopping": True, "strategy": "gradual"}
    first = tiny(**params).fit(X, y).predict_proba(X)
    second = tiny(**params).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, second)


def test_partial_fit_continues_the_schedule(labelled_images):
    X, y = labelled_images
    clf = tiny(strategy="lp_ft", freeze_epochs=2, max_epochs=2)
    clf.partial_fit(X[:12], y[:12], classes=["bright", "dark"])  # y[:12] holds one class only
    assert clf.classes is None
    assert clf.classes_.tolist() == ["bright", "dark"]
    assert clf.history[:, "trainable_stages"] == [0, 0]
    clf.partial_fit(X, y)  # the backbone unfreezes now: no stored features
    assert clf.history[:, "trainable_stages"] == [0, 0, 3, 3]
    clf.partial_fit(X[:4], y[:4], classes=["dark", "bright"])  # the same classes, in any order
    with pytest.raises(ValueError, match=r"classes=\['bright', 'grey'\] is not the classes_ of the fitted"):
        clf.partial_fit(X, y, classes=["bright", "grey"])  # was silently ignored
    with pytest.raises(ValueError, match=r"partial_fit's classes=\['bright', 'grey'\] differ from the estim"):
        tiny(classes=["bright", "dark"]).partial_fit(
            X, y, classes=["bright", "grey"]
        )  # the constructor's won
    assert tiny(classes=["dark", "bright"]).partial_fit(
        X, y, classes=["bright", "dark"]
    ).classes_.tolist() == ["bright", "dark"]  # sorted, as scikit-learn's classifiers have them


def test_pickle_and_skorch_save_load_round_trips(labelled_images, tmp_path):
    X, y = labelled_images
    clf = tiny(strategy="full", device="auto").fit(X, y)
    expected = clf.predict_proba(X)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict_proba(X), expected)
    clf.save_params(f_params=tmp_path / "params.pt", f_history=tmp_path / "history.json")
    restored = tiny(strategy="full", device="auto", classes=clf.classes_.tolist()).initialize()
    restored.load_params(f_params=tmp_path / "params.pt", f_history=tmp_path / "history.json")
    np.testing.assert_array_equal(restored.predict_proba(X), expected)
    assert restored.predict(X).tolist() == clf.predict(X).tolist()
    assert len(restored.history) == len(clf.history)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fitted_on_cuda_unpickles_on_the_cpu(labelled_images):
    X, y = labelled_images
    clf = tiny(device="cuda").fit(X, y)
    expected = clf.predict_proba(X)
    restored = pickle.loads(pickle.dumps(clf)).set_params(device="cpu")
    # On a GPU machine the network unpickles there; set_params(device=) moves it at the next call.
    np.testing.assert_allclose(restored.predict_proba(X), expected, rtol=1e-4, atol=1e-5)
    assert all(t.device.type == "cpu" for t in restored.module_.state_dict().values())


def test_early_stopping_restores_the_best_weights(labelled_images, tmp_path):
    X, y = labelled_images
    clf = tiny(
        strategy="full", lr=0.3, max_epochs=12, early_stopping=True, patience=2, checkpoint_dir=tmp_path
    ).fit(X, y)
    losses = clf.history[:, "valid_loss"]
    best = int(np.argmin(losses))
    assert clf.history[best, "valid_loss_best"]
    saved = torch.load(tmp_path / "params.pt", weights_only=True)
    for name, tensor in clf.module_.state_dict().items():
        torch.testing.assert_close(tensor, saved[name])
    assert len(losses) < 12 or best == len(losses) - 1


@pytest.mark.parametrize("adapted", [False, True], ids=["fine-tuned", "domain-adapted"])
def test_the_checkpoint_of_the_final_weights_holds_their_recalibrated_batchnorm(
    labelled_images, tmp_path, adapted
):
    # The checkpoint was written at the best epoch's end, before BatchNorm recalibration (for domain
    # adaptation, the target statistics): loading it gave other predictions than the fitted network's.
    from sktransfer import DomainAdaptedClassifier

    X, y = labelled_images
    common = {"model": TinyConvNet, "weights": None, "device": "cpu", "batch_size": 8, "random_state": 0}
    common.update(max_epochs=3, lr=0.01, early_stopping=True, validation_fraction=0.25)
    if adapted:
        X, y = np.concatenate([X, X // 2 + 60]), np.concatenate([y, np.full(len(y), -1, dtype=object)])
        clf = DomainAdaptedClassifier(**common, checkpoint_dir=tmp_path).fit(X, y)
    else:
        clf = FineTuneClassifier(**common, strategy="full", checkpoint_dir=tmp_path).fit(X, y)
    saved = torch.load(tmp_path / "params.pt", weights_only=True)
    assert saved.keys() == clf.module_.state_dict().keys()
    for name, tensor in clf.module_.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0, msg=name)


def test_a_users_own_callback_named_checkpoint_is_left_as_it_saved(labelled_images, tmp_path):
    # Recalibration read back and rewrote a user's callback named "checkpoint" as if it were checkpoint_dir's:
    # one saving safetensors made fit fail at its end, in torch.load.
    from skorch.callbacks import Checkpoint

    X, y = labelled_images
    mine = Checkpoint(
        monitor="train_loss_best", dirname=str(tmp_path), use_safetensors=True, f_optimizer=None
    )
    tiny(weights=None, strategy="full", callbacks=[("checkpoint", mine)], max_epochs=2).fit(X, y)
    assert (tmp_path / "params.pt").exists()


def test_bfloat16_training_on_the_cpu(labelled_images):
    X, y = labelled_images
    clf = tiny(precision="bfloat16", strategy="full", lr=0.05).fit(X, y)
    assert clf.predict_proba(X).dtype == np.float64
    assert clf.score(X, y) > 0.8


def test_image_files_are_read_lazily(labelled_images, tmp_path, monkeypatch):
    X, y = labelled_images
    paths = []
    for index, image in enumerate(X):
        paths.append(str(tmp_path / f"{index}.png"))
        Image.fromarray(image).save(paths[-1])
    names = [f"{index}.png" for index in range(len(X))]
    decoded = Counter()
    load = ImageFile.ImageFile.load

    def counting_load(image):
        if image.tile:  # pixels not read yet: this call decodes them
            decoded[os.path.basename(image.filename)] += 1
        return load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    clf = tiny(strategy="full", lr=0.05).fit(paths, y)
    # Training reads the files as it draws batches, each epoch: none is held decoded in memory. The first is
    # read once more, to check the output width of a user's network without its classifier.
    assert set(decoded) == set(names)
    assert decoded[names[0]] == decoded[names[1]] + 1
    decoded[names[0]] -= 1
    assert len(set(decoded.values())) == 1
    assert min(decoded.values()) >= clf.max_epochs
    decoded.clear()
    dataset = clf.get_dataset(paths)  # checks that every file is an image, without decoding it
    assert not decoded
    dataset.images.__getitems__([4, 1])
    assert decoded == {names[4]: 1, names[1]: 1}
    decoded.clear()
    assert clf.predict(paths[:3]).tolist() == clf.predict(X[:3]).tolist()
    assert decoded == dict.fromkeys(names[:3], 1)


def test_a_diverging_loss_stops_training_with_advice(labelled_images):
    X, y = labelled_images
    broken = TinyConvNet()
    with torch.no_grad():
        broken.features[0].weight.fill_(float("inf"))
    with pytest.raises(TrainingDivergedError, match=r"epoch 1.*smaller lr"):
        tiny(model=broken, precompute_features=False).fit(X, y)


def test_bad_input_is_refused_before_training(labelled_images, tmp_path):
    X, y = labelled_images
    CountingNet.calls.clear()
    clf = tiny(model=CountingNet)
    with pytest.raises(ValueError, match="one class"):
        clf.fit(X, np.full(len(X), "cat"))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf.fit(X, y[:-1])
    with pytest.raises(ValueError, match=r"missing labels .* samples \[3\]"):
        clf.fit(X, np.where(np.arange(len(X)) == 3, np.nan, 1.0 * (y == "dark")))
    with pytest.raises(ValueError, match="strategy"):
        tiny(strategy="finetune").fit(X, y)
    with pytest.raises(ValueError, match="float16"):
        tiny(precision="float16").fit(X, y)
    with pytest.raises(ValueError, match="not among classes"):
        tiny(classes=["bright", "grey"]).fit(X, y)
    assert CountingNet.image_rows() == 0
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"broken\.png"):
        tiny().fit([str(broken)] * 4, ["a", "b"] * 2)


def test_inputs_are_not_modified(labelled_images):
    X, y = labelled_images
    X_before, y_before = X.copy(), y.copy()
    model = TinyConvNet()
    weights = {name: t.clone() for name, t in model.state_dict().items()}
    FineTuneClassifier(model=model, device="cpu", max_epochs=1, strategy="full").fit(X, y)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights[name])


def test_clone_and_params():
    clf = tiny(optimizer__betas=(0.8, 0.99), strategy="bitfit")
    params = clone(clf).get_params()
    assert params["strategy"] == "bitfit"
    assert params["optimizer__betas"] == (0.8, 0.99)
    assert "_params_to_validate" not in clf.get_params(deep=False)


def test_offline_default_fine_tunes(labelled_images):
    X, y = labelled_images
    clf = FineTuneClassifier(max_epochs=2, batch_size=12, device="cpu", random_state=0).fit(X, y)
    assert clf.module_.head[1].in_features == 1280
    assert clf.score(X, y) > 0.9


def test_verbose_prints_the_epoch_table(labelled_images, capsys):
    X, y = labelled_images
    tiny(max_epochs=1).fit(X, y)
    assert capsys.readouterr().out == ""
    clf = tiny(max_epochs=1, verbose=1).fit(X, y)
    assert "train_loss" in capsys.readouterr().out
    # a refit starts over, as every sklearn fit does, and says nothing of it
    clf.set_params(lr=0.01).fit(X, y)
    out = capsys.readouterr().out
    assert "train_loss" in out
    assert "Re-initializing" not in out


class TrainingAccuracy(Callback):
    """The accuracy of each epoch's training predictions, from the logits and encoded labels of its batches."""

    def on_train_begin(self, net, **kwargs):
        self.per_epoch = []

    def on_epoch_begin(self, net, **kwargs):
        self.hits = []

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        if training:
            self.hits.append((y_pred.argmax(1) == batch[1]).cpu())

    def on_epoch_end(self, net, **kwargs):
        self.per_epoch.append(torch.cat(self.hits).float().mean().item())


def test_torchvision_transforms_and_skorch_features_as_parameters(labelled_images):
    from skorch.callbacks import EpochScoring
    from torchvision.transforms import v2

    X, y = labelled_images
    training_accuracy = TrainingAccuracy()
    clf = tiny(
        strategy="full",
        augment=v2.RandomHorizontalFlip(),
        preprocess=v2.Compose([v2.Resize((12, 12)), v2.ToDtype(torch.float32, scale=True)]),
        callbacks=[EpochScoring("accuracy", on_train=True, name="train_acc"), training_accuracy],
        module__dropout=0.1,
        random_state=np.random.RandomState(0),
        early_stopping=True,
        validation_fraction=0.25,
        lr=0.05,
        max_epochs=4,
    ).fit(X, y)
    assert clf.module_.head[0].p == 0.1
    # Scored against the labels as given (strings): the accuracy of the training batches' own predictions.
    assert clf.history[:, "train_acc"] == pytest.approx(training_accuracy.per_epoch)
    assert max(training_accuracy.per_epoch) > 0
    clf.set_params(criterion__label_smoothing=0.1)  # at the next training call, as every setting
    clf.set_params(device="cpu", warm_start=True).fit(X[:12], y[:12])
    assert clf.criterion_.label_smoothing == 0.1
    assert clf.classes_.tolist() == ["bright", "dark"]  # a warm start keeps the classes and the head


def test_a_classifier_fitted_on_cpu_0_pickles_and_a_device_list_is_refused(labelled_images):
    """torch.load cannot map storages onto "cpu:0"; several devices are Accelerate's to use."""
    X, y = labelled_images
    clf = FineTuneClassifier(TinyConvNet, device="cpu:0", max_epochs=1, random_state=0).fit(X, y)
    restored = pickle.loads(pickle.dumps(clf))
    assert restored.device == "cpu:0"
    np.testing.assert_array_equal(restored.predict(X), clf.predict(X))
    with pytest.raises(ValueError, match="'device' parameter"):
        FineTuneClassifier(TinyConvNet, device=["cpu"], max_epochs=1).fit(X, y)


def _three_blobs():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8)).astype(np.float32)
    X[:, 0] += np.tile([0, 3, 6], 20)
    return X, np.array(["a", "b", "c"] * 20)


def test_a_loss_other_than_cross_entropy_still_gives_probabilities_and_the_networks_classes():
    # skorch's predict_nonlinearity="auto" leaves the outputs of any loss but cross-entropy as they are:
    # rows of logits, divided by their sums, went negative and made predict pick other classes.
    from sktransfer.domain_adaptation import DomainAdaptedClassifier

    X, y = _three_blobs()
    common = {"model": None, "criterion": torch.nn.MultiMarginLoss, "device": "cpu", "random_state": 0}
    unlabelled = np.full(len(y), -1, dtype=object)
    for clf in (
        FineTuneClassifier(**common, max_epochs=20, lr=0.05).fit(X, y),
        DomainAdaptedClassifier(**common, method="source_only", max_epochs=5).fit(
            np.vstack([X, X]), np.concatenate([y, unlabelled])
        ),
    ):
        proba = clf.predict_proba(X)
        assert proba.min() >= 0
        assert np.allclose(proba.sum(axis=1), 1)
        with torch.no_grad():
            logits = clf.module_(torch.as_tensor(X))
        logits = logits[0] if isinstance(logits, tuple) else logits
        np.testing.assert_array_equal(clf.predict(X), clf.classes_[logits.argmax(dim=1).numpy()])


def test_outputs_that_are_not_probabilities_are_refused_and_label_smoothing_says_it_needs_cross_entropy():
    X, y = _three_blobs()
    logits = FineTuneClassifier(model=None, predict_nonlinearity=None, max_epochs=3, device="cpu").fit(X, y)
    with pytest.raises(ValueError, match=r"outputs for samples \[.*\] are not probabilities"):
        logits.predict_proba(X)
    with pytest.warns(IgnoredSettingWarning, match="label_smoothing=0.1 takes effect only with criterion"):
        FineTuneClassifier(
            model=None, criterion=torch.nn.MultiMarginLoss, label_smoothing=0.1, max_epochs=1, device="cpu"
        ).fit(X, y)


class _LinearHead(BackboneWithHead):
    """A subclass with a head of one linear layer, without dropout."""

    def __init__(self, backbone, n_features, n_classes, **kwargs):
        super().__init__(backbone, n_features, n_classes, **kwargs)
        self.head = torch.nn.Linear(n_features, n_classes)


class _TwoLayerHead(BackboneWithHead):
    """A subclass with a head of two linear layers, dropout before them and dropout of its own between."""

    def __init__(self, backbone, n_features, n_classes, **kwargs):
        super().__init__(backbone, n_features, n_classes, **kwargs)
        self.head = torch.nn.Sequential(
            torch.nn.Dropout(),
            torch.nn.Linear(n_features, 16),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(16, n_classes),
        )


def test_dropout_sets_the_dropout_a_subclass_head_begins_with_and_warns_where_there_is_none():
    # A head of one Linear failed ("'Linear' object is not subscriptable"); a head that began with a Linear had
    # it given an unused .p, and trained without dropout in silence. The head's own dropout stays as written.
    X, y = _three_blobs()
    common = {"model": None, "max_epochs": 1, "device": "cpu", "random_state": 0}
    two = FineTuneClassifier(**common, module=_TwoLayerHead, dropout=0.3).fit(X, y)
    assert [two.module_.head[0].p, two.module_.head[3].p] == [0.3, 0.2]
    FineTuneClassifier(**common, module=_LinearHead).fit(X, y)  # dropout=0.0: nothing to say
    with pytest.warns(
        IgnoredSettingWarning, match=r"dropout=0.5 sets the nn.Dropout .* begins with a Linear"
    ):
        FineTuneClassifier(**common, module=_LinearHead, dropout=0.5).fit(X, y)


class _FocalLoss(torch.nn.CrossEntropyLoss):
    """A cross entropy of its own, whose __init__ takes no label_smoothing."""

    def __init__(self, gamma=2.0):
        super().__init__(reduction="none")
        self.gamma = gamma

    def forward(self, logits, target):
        loss = super().forward(logits, target)
        return ((1 - torch.exp(-loss)) ** self.gamma * loss).mean()


def test_a_users_cross_entropy_keeps_its_own_label_smoothing():
    # The user's CrossEntropyLoss(label_smoothing=0.3) trained with 0.0, and was itself set to 0.0; a subclass
    # whose __init__ takes no label_smoothing failed with a TypeError.
    X, y = _three_blobs()
    mine = torch.nn.CrossEntropyLoss(label_smoothing=0.3)
    clf = FineTuneClassifier(model=None, criterion=mine, max_epochs=1, device="cpu", random_state=0).fit(X, y)
    assert mine.label_smoothing == 0.3
    assert clf.criterion_.label_smoothing == 0.3
    clf.partial_fit(X, y)
    assert mine.label_smoothing == clf.criterion_.label_smoothing == 0.3
    focal = FineTuneClassifier(model=None, criterion=_FocalLoss, max_epochs=1, device="cpu").fit(X, y)
    assert isinstance(focal.criterion_, _FocalLoss)
    with pytest.warns(IgnoredSettingWarning, match="label_smoothing=0.1 takes effect only with criterion"):
        focal.set_params(label_smoothing=0.1).fit(X, y)


def test_a_fit_that_fails_leaves_the_classifier_not_fitted():
    # The failed refit kept the earlier network beside the new classes_, or a new untrained network that
    # predicted as if fitted.
    X, y = _three_blobs()
    common = {"model": None, "max_epochs": 2, "device": "cpu", "random_state": 0}
    one_row_more = np.where(np.arange(len(y)) == 0, "d", y)  # a class too small for the validation split
    for clf, X_bad, y_bad, message in [
        (FineTuneClassifier(**common), X[:5], ["z"] * 5, "one class only"),
        (
            FineTuneClassifier(**common, early_stopping=True, validation_fraction=0.25),
            X,
            one_row_more,
            "validation_fraction=0.25",
        ),
    ]:
        clf.fit(X, y)
        with pytest.raises(ValueError, match=message):
            clf.fit(X_bad, y_bad)
        with pytest.raises(NotFittedError):
            clf.predict(X)
        assert clf.fit(X, y).predict(X).shape == y.shape


def test_a_warm_fit_checks_x_against_the_network_it_keeps():
    X, y = _three_blobs()
    clf = FineTuneClassifier(model=None, max_epochs=1, device="cpu", random_state=0, warm_start=True).fit(
        X, y
    )
    with pytest.raises(ValueError, match="X has 10 features, but FineTuneClassifier is expecting 8"):
        clf.fit(np.hstack([X, X[:, :2]]), y)
    assert clf.n_features_in_ == 8
    assert clf.predict(X).shape == y.shape


def test_a_train_split_of_numpys_global_generator_follows_random_state_and_leaves_it_alone():
    # skorch's ValidSplit without a random_state validated on other rows at every fit, despite random_state.
    from skorch.dataset import ValidSplit

    X, y = _three_blobs()
    before = np.random.get_state()[1].copy()  # noqa: NPY002 (the generator ValidSplit draws from)
    fits = [
        FineTuneClassifier(
            model=None, max_epochs=2, device="cpu", random_state=0, train_split=ValidSplit(0.25)
        ).fit(X, y)
        for _ in range(2)
    ]
    assert fits[0].history[:, "valid_loss"] == fits[1].history[:, "valid_loss"]
    np.testing.assert_array_equal(fits[0].predict_proba(X), fits[1].predict_proba(X))
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002


def test_seeding_each_images_augmentation_leaves_the_gpu_generators_alone(labelled_images, monkeypatch):
    # torch.manual_seed reseeds every GPU as well: each augmented image reset the training process's CUDA
    # generator (GPU dropout's), and did so in the workers instead when there were any.
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeded.append)
    X, y = labelled_images
    tiny(max_epochs=1).fit(X, y)
    without_augment, reseeded[:] = list(reseeded), []
    tiny(augment="default", max_epochs=1).fit(X, y)
    # random_state=0 seeding the fit (once on a CPU-only machine, at each seeded step once CUDA runs); the
    # augmentation adds no reseeding, not once per image
    assert reseeded == without_augment
    assert set(reseeded) == {0}


class _RowsTrainedOn(Callback):
    def initialize(self):
        self.rows = 0
        return self

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        self.rows += len(batch[0]) if training else 0


@pytest.mark.parametrize("batchnorm", [False, True])
def test_a_last_batch_of_one_row_is_trained_on_unless_batchnorm_needs_two(batchnorm):
    # Every epoch dropped a (random) row when the last batch held one, even for networks without BatchNorm,
    # which train on it as well as on any other batch: with one epoch, a row was never trained on.
    X, y = _three_blobs()
    X, y = X[:49], y[:49]  # 49 = 3 batches of 16 and one of 1
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8)) if batchnorm else None
    counter = _RowsTrainedOn()
    FineTuneClassifier(
        model=model,
        batch_size=16,
        max_epochs=2,
        callbacks=[counter],
        device="cpu",
        random_state=0,
    ).fit(X, y)
    assert counter.rows == 2 * (48 if batchnorm else 49)
