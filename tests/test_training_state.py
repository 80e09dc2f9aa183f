"""Settings changed after fitting take effect on the next call (or raise), randomness continues, device stays."""

import pickle
import threading
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import get_scorer, log_loss
from skorch.callbacks import Callback
from skorch.dataset import Dataset as SkorchDataset
from skorch.dataset import ValidSplit
from torch.utils.data import TensorDataset

from sktransfer import DomainAdaptedClassifier, FineTuneClassifier
from sktransfer._changed_settings import SettingsChangedWarning
from sktransfer._network import BackboneWithHead
from sktransfer._runtime import resolve_device
from sktransfer.exceptions import IgnoredSettingWarning

from ._models import CountingNet, TinyConvNet, VectorNet, tiny_domain_adapted
from ._preprocessing import to_unit


def tiny(**params):
    defaults = {"model": TinyConvNet, "device": "cpu", "max_epochs": 1, "batch_size": 8, "random_state": 0}
    return FineTuneClassifier(**{**defaults, **params})


def _rates(clf):
    return [group["lr"] for group in clf.optimizer_.param_groups]


def test_learning_rates_set_after_fit_apply_with_the_stage_ratios(labelled_images):
    X, y = labelled_images
    clf = tiny(strategy="full", lr=1e-3, lr_schedule=None).fit(X, y)
    n_stages = len(clf.optimizer_.param_groups) - 1
    assert _rates(clf) == pytest.approx([1e-3] + [1e-4] * n_stages)
    clf.set_params(lr=0.1, backbone_lr_ratio=0.5, layer_decay=0.5, weight_decay=0.2)
    clf.partial_fit(X, y)
    assert _rates(clf) == pytest.approx([0.1] + [0.05 * 0.5**depth for depth in range(n_stages)])
    assert {group["weight_decay"] for group in clf.optimizer_.param_groups} == {0.2}


def test_a_schedule_restarts_from_the_rates_set_after_fit(labelled_images):
    X, y = labelled_images
    clf = tiny(strategy="full", lr=1e-3, lr_schedule="onecycle", max_epochs=2).fit(X, y)
    clf.set_params(lr=0.1)
    clf.partial_fit(X, y)
    peaks = [group["max_lr"] for group in clf.optimizer_.param_groups]
    assert peaks[0] == pytest.approx(0.1)
    assert peaks[1] == pytest.approx(0.01)


def test_settings_that_decide_the_callbacks_take_effect_on_a_warm_fit(labelled_images, tmp_path):
    X, y = labelled_images
    clf = tiny(warm_start=True).fit(X, y)
    assert "early_stopping" not in dict(clf.callbacks_)
    clf.set_params(early_stopping=True, patience=2, checkpoint_dir=tmp_path, lr_schedule=None).fit(X, y)
    callbacks = dict(clf.callbacks_)
    assert callbacks["early_stopping"].patience == 2
    assert callbacks["checkpoint"].dirname == str(tmp_path)
    assert "lr_schedule" not in callbacks
    assert len(clf.history) == 2  # warm: the same network went on training


class _CountBatches(Callback):
    def initialize(self):
        self.batches = 0
        return self

    def on_batch_end(self, net, **kwargs):
        self.batches += 1


@pytest.mark.parametrize("call", ["partial_fit", "warm fit"])
def test_callbacks_set_after_fit_run_on_the_next_training_call(labelled_images, call):
    # skorch had made callbacks_ before set_params stored the new list: the new callback never ran.
    X, y = labelled_images
    clf = tiny(warm_start=call == "warm fit").fit(X, y)
    counter = _CountBatches()
    clf.set_params(callbacks=[("count", counter)])
    clf.partial_fit(X, y) if call == "partial_fit" else clf.fit(X, y)
    assert "count" in dict(clf.callbacks_)
    assert counter.batches == -(-len(X) // 8)  # one epoch of batches of 8
    restored = pickle.loads(pickle.dumps(clf))
    restored.partial_fit(X, y)  # unchanged since: kept, not made again
    assert dict(restored.callbacks_)["count"].batches == 2 * -(-len(X) // 8)


class _ComparedByArray(_CountBatches):
    """A callback whose __eq__ compares an array, as a dataclass holding one does: ambiguous as a bool."""

    def __init__(self):
        self.weights = np.zeros(3)

    def __eq__(self, other):
        return isinstance(other, _ComparedByArray) and bool(self.weights == other.weights)

    __hash__ = object.__hash__


def test_callbacks_are_compared_by_identity_not_by_their_eq(labelled_images):
    X, y = labelled_images
    clf = tiny(callbacks=[("count", _ComparedByArray())]).fit(X, y)
    clf.set_params(callbacks=[("count", _ComparedByArray())])
    clf.set_params(callbacks=[("count", _ComparedByArray())])
    clf.partial_fit(X, y)  # raised "The truth value of an array with more than one element is ambiguous"
    assert dict(clf.callbacks_)["count"].batches == -(-len(X) // 8)


def test_dropout_and_batchnorm_freezing_set_after_fit_apply(labelled_images):
    X, y = labelled_images
    clf = tiny(strategy="full", dropout=0.0, freeze_batchnorm=False).fit(X, y)
    clf.set_params(dropout=0.3, freeze_batchnorm=True).partial_fit(X, y)
    assert clf.module_.head[0].p == 0.3
    assert clf.module_.freeze_batchnorm


class _Options:
    """A module argument without __eq__: a pickled copy equals it only by its contents."""

    def __init__(self, width):
        self.width = width


class _HeadWithOptions(BackboneWithHead):
    def __init__(self, *args, options=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.options = options


def test_module_arguments_of_a_pickled_copy_are_no_change(labelled_images):
    X, y = labelled_images
    clf = tiny(module=_HeadWithOptions, module__options=_Options(1)).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingsChangedWarning)
        pickle.loads(pickle.dumps(clf)).partial_fit(X, y).predict(X)
    with pytest.raises(ValueError, match="module__\\* changed after fitting"):
        clf.set_params(module__options=_Options(2)).partial_fit(X, y)


def test_module_settings_set_after_fit_keep_the_fitted_network(labelled_images):
    # skorch builds a new, untrained module for a module or module__ key set after initialisation.
    X, y = labelled_images
    clf = tiny(strategy="full", max_epochs=2).fit(X, y)
    expected = clf.predict_proba(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingsChangedWarning)
        clf.set_params(module__dropout=0.3, module=clf.module)  # module: the same class again
        np.testing.assert_array_equal(clf.predict_proba(X), expected)
    clf.partial_fit(X, y)  # and the next training call applies it to the fitted network
    assert clf.module_.head[0].p == 0.3
    assert len(clf.history) == 4  # two more epochs of the same network

    clf.set_params(module__channels_last=True)  # an argument that decides the network
    named = r"module__\* changed after fitting \(from none to module__channels_last=True\)"
    with pytest.warns(SettingsChangedWarning, match=named):
        clf.predict(X)
    with pytest.raises(ValueError, match=named):
        clf.partial_fit(X, y)
    assert clf.fit(X, y).module_.channels_last  # a cold fit builds the network with it
    with warnings.catch_warnings():  # a pickled copy holds copies of the arguments: no change
        warnings.simplefilter("error", SettingsChangedWarning)
        pickle.loads(pickle.dumps(clf)).partial_fit(X, y).predict(X)


def test_classes_set_after_fit_do_not_relabel_the_fitted_network(labelled_images):
    # skorch's classes_ read the classes parameter as it was at each call: every label swapped, silently.
    X, names = labelled_images
    clf = tiny(strategy="full", max_epochs=2).fit(X, names)
    expected, labels = clf.predict_proba(X), clf.predict(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingsChangedWarning)
        clf.set_params(classes=["bright", "dark"]).predict(X)  # the fitted classes again: no change
        clf.set_params(classes=["dark", "bright"]).predict(X)  # the same classes, sorted as sklearn's are
    clf.set_params(classes=["dark", "bright", "grey"])
    with pytest.warns(
        SettingsChangedWarning, match=r"classes changed after fitting \(from \['bright', 'dark'\]"
    ):
        np.testing.assert_array_equal(clf.predict(X), labels)
    np.testing.assert_array_equal(clf.classes_, ["bright", "dark"])
    with pytest.warns(SettingsChangedWarning):
        np.testing.assert_array_equal(clf.predict_proba(X), expected)
    with pytest.raises(ValueError, match="classes changed after fitting"):
        clf.partial_fit(X, names)
    assert clf.fit(X, names).classes_.tolist() == ["bright", "dark", "grey"]  # a cold fit builds for them


def test_classes_given_in_any_order_are_sorted_as_scikit_learns_scorers_read_them(labelled_images):
    # neg_log_loss and roc_auc read predict_proba's columns in the sorted order of the labels: with the
    # columns in the order given, they scored each row's probability of another class.
    X, names = labelled_images
    given = tiny(strategy="full", max_epochs=2, classes=["dark", "bright"]).fit(X, names)
    default = tiny(strategy="full", max_epochs=2).fit(X, names)
    assert given.classes_.tolist() == ["bright", "dark"]
    np.testing.assert_allclose(given.predict_proba(X), default.predict_proba(X), atol=1e-6)
    scorer = get_scorer("neg_log_loss")
    assert scorer(given, X, names) == pytest.approx(-log_loss(names, given.predict_proba(X)))
    with pytest.raises(ValueError, match=r"classes names \['dark'\] more than once"):
        tiny(classes=["dark", "bright", "dark"]).fit(X, names)
    with pytest.raises(ValueError, match=r"classes names \['dark'\] more than once"):
        tiny().partial_fit(X, names, classes=["dark", "bright", "dark"])


def test_compilation_set_after_fit_keeps_the_fitted_network(labelled_images):
    # skorch builds a new, untrained module for a compile or compile__ key set after initialisation.
    X, y = labelled_images
    clf = tiny(strategy="full", max_epochs=2).fit(X, y)
    expected = clf.predict_proba(X)
    clf.set_params(compile=False)  # the value it has: no change at all
    np.testing.assert_array_equal(clf.predict_proba(X), expected)
    clf.set_params(compile=True, compile__dynamic=False)
    with pytest.warns(SettingsChangedWarning, match=r"compile changed after fitting \(from False to True\)"):
        np.testing.assert_array_equal(clf.predict_proba(X), expected)
    with pytest.raises(ValueError, match="compile changed after fitting"):
        clf.partial_fit(X, y)
    clf.set_params(compile=False)
    with pytest.raises(
        ValueError, match=r"compile__\* changed after fitting \(from none to compile__dynamic=False"
    ):
        clf.partial_fit(X, y)


def test_optimizer_and_loader_settings_set_after_fit_apply_to_the_fitted_network(labelled_images):
    # skorch raised its internal error ("Something went wrong, please open an issue") for these keys.
    X, y = labelled_images
    clf = tiny(strategy="full").fit(X, y)
    fitted = {name: tensor.clone() for name, tensor in clf.module_.state_dict().items()}
    drawn = []

    class CountingSampler(torch.utils.data.Sampler):
        def __iter__(self):
            drawn.append(len(X))
            return iter(range(len(X)))

        def __len__(self):
            return len(X)

    clf.set_params(
        optimizer=torch.optim.SGD,
        optimizer__momentum=0.5,
        iterator_train__sampler=CountingSampler(),
        iterator_train__shuffle=False,
        iterator_valid__batch_size=4,
    )
    assert all(torch.equal(fitted[name], tensor) for name, tensor in clf.module_.state_dict().items())
    clf.partial_fit(X, y)
    assert isinstance(clf.optimizer_, torch.optim.SGD)
    assert clf.optimizer_.param_groups[0]["momentum"] == 0.5
    assert [group["stage_depth"] for group in clf.optimizer_.param_groups] == [None, 0, 1, 2]  # stages
    assert drawn == [len(X)]
    assert not all(torch.equal(fitted[name], tensor) for name, tensor in clf.module_.state_dict().items())


@pytest.mark.parametrize(
    ("name", "value"), [("layer", "features.0"), ("pooling", "max"), ("model", TinyConvNet())]
)
def test_settings_that_decide_the_network_raise_on_partial_fit(labelled_images, name, value):
    X, y = labelled_images
    clf = tiny().fit(X, y)
    clf.set_params(**{name: value})
    with pytest.raises(ValueError, match=rf"(?s){name} changed after fitting .* Refit with warm_start=False"):
        clf.partial_fit(X, y)
    clf.fit(X, y)  # a cold refit builds the new network


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"layer": "features.0"}, r"layer changed after fitting \(from None to 'features.0'\)"),
        (
            {"model": TinyConvNet()},
            r"model changed after fitting \(from <class .*TinyConvNet'> to a TinyConvNet",
        ),
        ({"preprocess": to_unit}, r"preprocess changed after fitting \(from None to <function to_unit"),
    ],
)
def test_prediction_after_a_change_that_needs_a_refit_warns_naming_it(labelled_images, params, named):
    X, y = labelled_images
    clf = tiny().fit(X, y)
    expected = clf.predict_proba(X)
    clf.set_params(**params)
    with pytest.warns(
        SettingsChangedWarning,
        match=rf"{named}.*, but prediction runs the network and its preprocessing as fitted",
    ) as record:
        proba = clf.predict_proba(X)
    assert record[0].filename == __file__
    np.testing.assert_array_equal(proba, expected)  # the fitted network, as the warning says
    clf.set_params(**{name: tiny().get_params()[name] for name in params})  # set back: nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingsChangedWarning)
        clf.predict(X)


def test_settings_that_apply_without_a_refit_do_not_warn_and_a_training_call_applies_preprocess(
    labelled_images,
):
    X, y = labelled_images
    clf = tiny().fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingsChangedWarning)
        clf.set_params(lr=0.5, batch_size=4, max_epochs=2, strategy="lp_ft").predict(X)
        clf.set_params(preprocess=to_unit).partial_fit(X, y)  # preprocess applies from this call on
        clf.predict(X)
        pickle.loads(pickle.dumps(clf.set_params(model=TinyConvNet()).fit(X, y))).predict(X)


def test_domain_adaptation_names_the_parameter_behind_a_network_argument(labelled_images):
    X, y = labelled_images
    unlabelled = np.array(list(y[:-4]) + [-1] * 4, dtype=object)
    clf = DomainAdaptedClassifier(model=TinyConvNet, device="cpu", max_epochs=1, random_state=0)
    clf.fit(X, unlabelled).set_params(method="mmd", bottleneck_dim=8)
    with pytest.warns(
        SettingsChangedWarning,
        match=r"bottleneck_dim changed after fitting \(from 256 to 8\), method changed after fitting \(so that "
        r"adversarial went from 'dann' to None\), .* call fit again for the new settings, or set them back",
    ):
        clf.predict(X)


def _epoch_losses(clf, X, y, calls):
    losses = []
    for _ in range(calls):
        clf.partial_fit(X, y)
        losses.append(clf.history[-1, "train_loss"])
    return losses


def test_successive_partial_fits_draw_new_batches_and_replay_exactly(labelled_images):
    X, y = labelled_images
    params = {"strategy": "full", "dropout": 0.5, "lr": 1e-12, "lr_schedule": None}
    losses = _epoch_losses(tiny(**params), X, y, calls=3)
    assert len(set(losses)) == 3  # the same weights, but new shuffles and dropout masks in each call
    assert _epoch_losses(tiny(**params), X, y, calls=3) == losses  # and the same sequence replays exactly


def test_device_keeps_the_value_the_user_set(labelled_images):
    X, y = labelled_images
    clf = tiny(device="auto").fit(X, y)
    seen = []
    clf.module_.register_forward_hook(lambda *_: seen.append(clf.get_params()["device"]))
    clf.predict(X)
    assert set(seen) == {"auto"}
    assert clf.device_ == resolve_device("auto")  # a GPU where there is one
    threads = [threading.Thread(target=clf.predict_proba, args=(X,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clf.device == "auto"


def test_torch_datasets_are_refused_with_a_clear_message(labelled_images):
    X, y = labelled_images
    dataset = TensorDataset(torch.from_numpy(X).permute(0, 3, 1, 2), torch.arange(len(X)) % 2)
    with pytest.raises(TypeError, match=r"X is a torch Dataset \(TensorDataset\).*preprocessing"):
        tiny().fit(dataset, np.arange(len(X)) % 2)
    clf = tiny().fit(X, y)
    with pytest.raises(TypeError, match=r"X is a torch Dataset"):
        clf.predict(dataset)


class _UsersDataset(SkorchDataset):
    pass


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"dataset": _UsersDataset}, r"dataset=<class '.*_UsersDataset'>"),
        ({"dataset__length": 4}, r"dataset__length=4"),
    ],
)
@pytest.mark.parametrize("make", [tiny, tiny_domain_adapted])
def test_skorch_dataset_settings_are_refused_not_ignored(labelled_images, params, named, make):
    # get_dataset is the library's own: a user's dataset class and its arguments were silently ignored.
    X, y = labelled_images
    message = named + r" cannot take effect: \w+ makes its datasets from X itself"
    with pytest.raises(ValueError, match=message):
        make(**params).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DomainAdaptedClassifier: no target rows
        clf = make(max_epochs=1).fit(X, y)
    clf.set_params(**params)
    with pytest.raises(ValueError, match=message):
        clf.partial_fit(X, y)


def test_sample_weight_is_refused_naming_the_way_to_weigh_classes(labelled_images):
    # It reached the network's forward: "forward() got an unexpected keyword argument 'sample_weight'".
    X, y = labelled_images
    weights = np.ones(len(X))
    for clf in (tiny(), DomainAdaptedClassifier(model=TinyConvNet, device="cpu", max_epochs=1)):
        with pytest.raises(TypeError, match=r"sample_weight: .* criterion__weight=torch.tensor"):
            clf.fit(X, y, sample_weight=weights)
        with pytest.raises(TypeError, match="sample_weight"):
            clf.partial_fit(X, y, sample_weight=weights)
    tiny().fit(X, y, sample_weight=None)  # as scikit-learn's meta-estimators may pass it
    weighted = tiny(criterion__weight=torch.tensor([1.0, 3.0])).fit(X, y)  # the way the message names
    assert weighted.criterion_.weight.tolist() == [1.0, 3.0]


def test_early_stopping_on_too_few_rows_per_class_names_the_settings(labelled_images):
    # scikit-learn's splitter raised about test_size and "the least populated class", naming neither.
    X, y = labelled_images
    with pytest.raises(ValueError, match=r"validation_fraction=0.1 .* class 'dark' has a single row"):
        tiny(early_stopping=True).fit(X[11:], y[11:])
    with pytest.raises(ValueError, match=r"of the 6 rows, stratified by class: 1 validation row, but the 2"):
        tiny(early_stopping=True).fit(X[9:15], y[9:15])
    tiny(early_stopping=True, validation_fraction=0.34).fit(X[9:15], y[9:15])
    CountingNet.calls.clear()
    probe = tiny(model=CountingNet, strategy="linear_probe", early_stopping=True)  # embeds X once, first
    with pytest.raises(ValueError, match="has a single row"):
        probe.fit(X[11:], y[11:])
    assert CountingNet.image_rows() == 0  # refused before the backbone embedded the rows
    domains = DomainAdaptedClassifier(model=TinyConvNet, device="cpu", max_epochs=1, early_stopping=True)
    target = np.full(len(X), -1, dtype=object)
    with pytest.raises(ValueError, match=r"class 'dark' of source domain 5 has a single row"):
        domains.fit(
            np.concatenate([X, X[:1], X]),
            np.concatenate([y, y[:1], target]),
            sample_domain=np.concatenate([np.ones(len(X)), [5], -np.ones(len(X))]),
        )


@pytest.mark.parametrize(
    ("params", "named"),
    [
        (
            {"strategy": "full", "freeze_epochs": 3},
            "freeze_epochs=3 takes effect only with strategy='gradual'",
        ),
        (
            {"strategy": "lp_ft", "unfreeze_epochs": 5},
            "unfreeze_epochs=5 takes effect only with strategy='gr",
        ),
        ({"lr_schedule": None, "warmup": 0.3}, "warmup=0.3 takes effect only with an lr_schedule"),
        (
            {"patience": 2, "validation_fraction": 0.3},
            "patience=2 and validation_fraction=0.3 take effect only",
        ),
        (
            {
                "early_stopping": True,
                "validation_fraction": 0.3,
                "train_split": ValidSplit(3, stratified=True),
            },
            "validation_fraction=0.3 takes effect only without a train_split of your own",
        ),
    ],
)
def test_training_settings_that_cannot_take_effect_warn(labelled_images, params, named):
    X, y = labelled_images
    with pytest.warns(IgnoredSettingWarning, match=named):
        tiny(**params).fit(X, y)


def test_other_settings_changed_after_fit_apply(labelled_images):
    X, y = labelled_images
    clf = tiny(strategy="full").fit(X, y)
    seen = []

    def preprocess(image):
        seen.append(1)
        return image.float() / 255

    clf.set_params(label_smoothing=0.3, preprocess=preprocess, optimizer__lr=0.2, lr_schedule=None)
    clf.partial_fit(X, y)
    assert clf.criterion_.label_smoothing == 0.3
    assert clf.preprocess_ is preprocess
    assert len(seen) >= len(X)
    assert clf.optimizer_.param_groups[0]["lr"] == pytest.approx(0.2)


def test_a_new_random_state_reseeds_training(labelled_images):
    X, y = labelled_images
    params = {"strategy": "full", "dropout": 0.5, "lr": 1e-12, "lr_schedule": None}

    def second_loss(new_random_state):
        clf = tiny(**params).fit(X, y)
        return clf.set_params(random_state=new_random_state).partial_fit(X, y).history[-1, "train_loss"]

    assert second_loss(1) != second_loss(0)
    assert second_loss(1) == second_loss(1)


def test_an_equal_random_state_continues_the_stream_after_pickling_and_set_params(labelled_images):
    # 12345 is not one of Python's cached small ints: a pickled copy, or set_params with an equal value,
    # holds another int object of the same value, which must not reseed the stream.
    X, y = labelled_images
    params = {"strategy": "full", "dropout": 0.5, "lr": 1e-12, "lr_schedule": None, "random_state": 12345}
    clf = tiny(**params).fit(X, y)
    copied = pickle.loads(pickle.dumps(clf))
    reset = pickle.loads(pickle.dumps(clf)).set_params(random_state=int("12345"))
    expected = clf.partial_fit(X, y).history[-1, "train_loss"]
    assert copied.partial_fit(X, y).history[-1, "train_loss"] == expected
    assert reset.partial_fit(X, y).history[-1, "train_loss"] == expected


def test_rates_of_users_param_groups_restart_and_cannot_change(labelled_images):
    X, y = labelled_images
    clf = tiny(strategy="full", lr=1e-3, optimizer__param_groups=[("backbone.*", {"lr": 1e-4})]).fit(X, y)
    configured = sorted(group["lr"] for group in clf.optimizer_.param_groups)
    assert configured == pytest.approx([0.0, 0.0], abs=1e-6)  # the cosine schedule ran down to 0
    clf.partial_fit(X, y)
    assert sorted(group["initial_lr"] for group in clf.optimizer_.param_groups) == pytest.approx([1e-4, 1e-3])
    clf.set_params(lr=0.1)
    with pytest.raises(ValueError, match="lr changed after fitting, but optimizer__param_groups"):
        clf.partial_fit(X, y)
    clf.set_params(
        lr=1e-3, optimizer__lr=0.5
    )  # skorch sets it on every group: undone by the restart, silently
    with pytest.raises(ValueError, match="optimizer__lr changed after fitting, but optimizer__param_groups"):
        clf.partial_fit(X, y)


def test_a_network_initialised_without_fit_reads_vectors_once_told_their_width(tmp_path):
    # skorch's initialize() then load_params(): the error said "fitted on images" of a net never fitted.
    X, y = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32), np.arange(8) % 2
    fitted = FineTuneClassifier(VectorNet(), device="cpu", max_epochs=1, random_state=0).fit(X, y)
    fitted.save_params(f_params=tmp_path / "weights.pt")
    loaded = FineTuneClassifier(VectorNet(), device="cpu", classes=[0, 1]).initialize()
    loaded.load_params(f_params=tmp_path / "weights.pt")
    with pytest.raises(ValueError, match=r"initialised without fit .* set clf.n_features_in_ = 4 first"):
        loaded.predict(X)
    loaded.n_features_in_ = 4
    np.testing.assert_allclose(loaded.predict_proba(X), fitted.predict_proba(X), atol=1e-6)


def test_loading_parameters_keeps_the_device_the_user_set(labelled_images, tmp_path):
    X, y = labelled_images
    clf = tiny(device="auto").fit(X, y)
    clf.save_params(f_params=tmp_path / "weights.pt")
    clf.load_params(f_params=tmp_path / "weights.pt")
    assert clf.get_params()["device"] == "auto"


def test_partial_fit_under_several_processes_draws_new_batches(labelled_images, monkeypatch):
    """An accelerator with several processes seeds each pass from the main process: calls must not replay."""
    accelerate = pytest.importorskip("accelerate")
    from sktransfer import _accelerate

    monkeypatch.setattr(_accelerate.AcceleratedRun, "distributed", property(lambda self: True))
    monkeypatch.setattr(
        _accelerate.AcceleratedRun, "shared_seed", lambda self: int(torch.randint(2**31 - 1, ()))
    )
    X, y = labelled_images
    params = {"strategy": "full", "dropout": 0.5, "lr": 1e-12, "lr_schedule": None}
    clf = tiny(**params, accelerator=accelerate.Accelerator(cpu=True))
    assert len(set(_epoch_losses(clf, X, y, calls=3))) == 3


def test_param_groups_set_after_fitting_are_kept_for_a_refit_and_one_group_settings_are_refused(
    labelled_images,
):
    # skorch dropped optimizer__param_groups set after fitting, for the next fit and for clones, and
    # optimizer__param_groups__<i>__lr lasted until the next training call set the rates again.
    X, y = labelled_images
    clf = tiny(strategy="full", lr=1e-3, lr_schedule=None).fit(X, y)
    groups = [("backbone.*", {"lr": 1e-5})]
    clf.set_params(optimizer__param_groups=groups)
    assert clf.get_params()["optimizer__param_groups"] == groups
    assert clone(clf).get_params()["optimizer__param_groups"] == groups
    with pytest.raises(ValueError, match="optimizer__param_groups changed after fitting"):
        clf.partial_fit(X, y)
    assert sorted({group["lr"] for group in clf.fit(X, y).optimizer_.param_groups}) == [1e-5, 1e-3]
    with pytest.raises(
        ValueError, match=r"optimizer__param_groups__1__lr set after fitting .* lr, backbone_lr"
    ):
        clf.set_params(optimizer__param_groups__1__lr=0.5)


def test_criterion_settings_changed_after_fitting_keep_the_optimizer_state(labelled_images):
    # skorch rebuilt the criterion and the optimizer at once: AdamW's moments were lost.
    X, y = labelled_images
    clf = tiny(strategy="full").fit(X, y)
    optimizer, moments = clf.optimizer_, len(clf.optimizer_.state)
    clf.set_params(criterion__weight=torch.tensor([1.0, 3.0]))
    assert clf.optimizer_ is optimizer
    assert len(optimizer.state) == moments
    clf.partial_fit(X, y)
    assert clf.optimizer_ is optimizer
    assert clf.criterion_.weight.tolist() == [1.0, 3.0]
    clf.set_params(criterion__label_smoothing=0.2).partial_fit(X, y)
    assert clf.criterion_.label_smoothing == 0.2
    assert clf.criterion_.weight.tolist() == [1.0, 3.0]
    old = pickle.loads(pickle.dumps(tiny(strategy="full").fit(X, y)))
    del old._criterion_made_for, old._param_groups_made_for  # pickled before these records existed
    old.set_params(criterion__weight=torch.tensor([2.0, 1.0])).partial_fit(X, y)
    assert old.criterion_.weight.tolist() == [2.0, 1.0]


@pytest.mark.parametrize(
    ("name", "alias", "read"),
    [
        ("lr", "optimizer__lr", lambda clf: clf.optimizer_.param_groups[0]["lr"]),
        (
            "weight_decay",
            "optimizer__weight_decay",
            lambda clf: clf.optimizer_.param_groups[0]["weight_decay"],
        ),
        ("label_smoothing", "criterion__label_smoothing", lambda clf: clf.criterion_.label_smoothing),
        ("dropout", "module__dropout", lambda clf: clf.module_.head[0].p),
    ],
)
def test_a_setting_set_after_its_skorch_alias_counts(labelled_images, name, alias, read):
    """skorch's dunder alias overrides the library's setting; set later, the setting must win over it."""
    X, y = labelled_images
    base = tiny(lr_schedule=None, **{alias: 0.3})
    candidate = clone(base).set_params(**{name: 0.1})  # as GridSearchCV sets a candidate
    assert alias not in candidate.get_params()
    assert read(candidate.fit(X, y)) == pytest.approx(0.1)
    fitted = tiny(lr_schedule=None).fit(X, y)
    fitted.set_params(**{alias: 0.3}).partial_fit(X, y)
    assert read(fitted) == pytest.approx(0.3)
    fitted.set_params(**{name: 0.2}).partial_fit(X, y)
    assert read(fitted) == pytest.approx(0.2)
    assert read(clone(fitted).fit(X, y)) == pytest.approx(0.2)
