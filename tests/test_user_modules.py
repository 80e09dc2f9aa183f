"""A user's module is used as written: its own output, its forward's side effects, its hooks, its layout."""

import copy
import sys
import types
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from sktransfer import FineTuneClassifier, PretrainedFeatureExtractor
from sktransfer._changed_settings import SettingsChangedWarning
from sktransfer._layers import check_module_layer
from sktransfer._runtime import NetworkOutputError, run_inference
from sktransfer.exceptions import BatchStatisticsWarning, IgnoredSettingWarning, UnhashableModuleWarning

from ._models import TinyConvNet, VectorNet
from ._preprocessing import to_unit

MEAN, STD = (
    torch.tensor([0.485, 0.456, 0.406])[:, None, None],
    torch.tensor([0.229, 0.224, 0.225])[:, None, None],
)


def _normalised(images):
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)


def _resnet_without_fc():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = torchvision.models.resnet18()
    module.fc = nn.Identity()
    return module


def _efficientnet(replace):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = torchvision.models.efficientnet_b0()
    if replace == "classifier":
        module.classifier = nn.Identity()
    else:
        module.classifier[1] = nn.Identity()
    return module


def _mobilenet_without_last_linear():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = torchvision.models.mobilenet_v3_small()
    module.classifier[3] = nn.Identity()  # the Linear before it stays: the output is its 1024 features
    return module


def _ending_in_log_softmax():
    return nn.Sequential(TinyConvNet(), nn.LogSoftmax(dim=1))


@pytest.mark.parametrize(
    ("build", "width"),
    [
        (_resnet_without_fc, 512),
        (lambda: _efficientnet("classifier"), 1280),
        (lambda: _efficientnet("classifier[1]"), 1280),
        (_mobilenet_without_last_linear, 1024),
        (_ending_in_log_softmax, 5),
    ],
    ids=[
        "resnet18-fc-identity",
        "efficientnet-classifier-identity",
        "efficientnet-classifier1-identity",
        "mobilenet-classifier3-identity",
        "ends-in-log-softmax",
    ],
)
def test_a_classifier_set_to_identity_gives_the_modules_own_output(images, build, width):
    module = build()
    extractor = PretrainedFeatureExtractor(module, device="cpu").fit(images)
    assert extractor.n_features_out_ == width
    with torch.no_grad():
        expected = module.eval()(_normalised(images)).numpy()
    np.testing.assert_allclose(extractor.transform(images), expected, rtol=1e-4, atol=1e-5)


def test_a_module_in_dataparallel_is_read_as_the_module_inside(images):
    # The wrapper hid the classifier: the embedding was the module's 5 logits, without a word.
    module = TinyConvNet()
    plain = PretrainedFeatureExtractor(module, device="cpu").fit_transform(images)
    wrapped = PretrainedFeatureExtractor(nn.DataParallel(module), device="cpu").fit(images)
    assert wrapped.n_features_out_ == plain.shape[1] == 8
    np.testing.assert_array_equal(wrapped.transform(images), plain)
    tuned = FineTuneClassifier(nn.DataParallel(module), device="cpu", max_epochs=1, random_state=0)
    assert tuned.fit(images, np.arange(len(images)) % 2).module_.head[-1].in_features == 8
    hooked = nn.DataParallel(module)
    hooked.register_forward_hook(lambda *args: None)  # it would never run: refused, naming the fix
    with pytest.raises(ValueError, match=r"DataParallel wrapper has hooks .* on DataParallel.module"):
        PretrainedFeatureExtractor(hooked, device="cpu").fit(images)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_module_in_another_precision_is_refused_naming_the_fix(images, dtype):
    # torch's "Input type (float) and bias type (double) should be the same" named neither module nor fix.
    module = TinyConvNet().to(dtype)
    message = (
        f"holds {str(dtype).removeprefix('torch.')} parameters .*module.float\\(\\).*precision='bfloat16'"
    )
    with pytest.raises(TypeError, match=message):
        PretrainedFeatureExtractor(module, device="cpu").fit(images)
    with pytest.raises(TypeError, match=message):
        FineTuneClassifier(module, device="cpu", max_epochs=1).fit(images, np.arange(len(images)) % 2)


def test_fine_tuning_a_module_without_classifier_sizes_the_head_from_its_output(images):
    clf = FineTuneClassifier(_resnet_without_fc(), strategy="linear_probe", max_epochs=1, device="cpu")
    clf.fit(images, [0, 1, 0, 1])
    assert clf.module_.head[-1].in_features == 512


def test_the_new_head_does_not_repeat_the_random_numbers_of_the_backbone():
    # weights=None: the backbone's first layer and the head are both drawn under random_state; the head
    # drew the very numbers of the backbone's first layer when the stream was seeded again for it.
    X, y = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32), np.arange(40) % 3
    clf = FineTuneClassifier(
        model=nn.Sequential(nn.Linear(5, 8), nn.ReLU()),
        weights=None,
        random_state=0,
        device="cpu",
        max_epochs=1,
    )
    clf.set_params(lr=1e-12).fit(X, y)
    first = clf.module_.backbone.body[0].weight.detach().flatten() * 5**0.5  # uniform(-1, 1) draws
    head = clf.module_.head[1].weight.detach().flatten() * 8**0.5
    assert not torch.allclose(head, first[: len(head)], atol=1e-3)


def test_pooling_at_the_classifiers_input_warns_that_it_is_ignored(images):
    # layer=None reads the vector the network pools for its final linear classifier: nothing to pool.
    y = np.arange(len(images)) % 2
    for estimator in (
        PretrainedFeatureExtractor(TinyConvNet(), device="cpu", pooling="max"),
        FineTuneClassifier(TinyConvNet(), device="cpu", pooling="max", max_epochs=1),
    ):
        with pytest.warns(
            IgnoredSettingWarning, match=r"pooling='max' takes effect only .*layer=None reads the features"
        ):
            estimator.fit(images, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredSettingWarning)
        PretrainedFeatureExtractor(TinyConvNet(), device="cpu", pooling="max", layer="features").fit(images)
        PretrainedFeatureExtractor(TinyConvNet(), device="cpu").fit(images)  # the default says nothing


def test_pooling_at_a_layer_that_gives_one_vector_per_image_warns_that_it_is_ignored(images):
    # A Flatten's output (N, C) has nothing to pool, whether picked by layer or ending a module without
    # a classifier; a small preprocess shows that the check reads the user's image size, not 224 pixels.
    y = np.arange(len(images)) % 2
    flat_ended = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 6), nn.Flatten())
    for estimator in (
        PretrainedFeatureExtractor(TinyConvNet(), device="cpu", pooling="max", layer="flatten"),
        PretrainedFeatureExtractor(flat_ended, device="cpu", pooling="max", preprocess=to_unit),
        FineTuneClassifier(TinyConvNet(), device="cpu", pooling="max", layer="flatten", max_epochs=1),
    ):
        with pytest.warns(IgnoredSettingWarning, match=r"pooling='max' .* outputs one vector per image"):
            estimator.fit(images, y)


def test_a_preprocess_given_with_feature_vectors_is_refused():
    # Rows of features reach the network as they are: a preprocess would be silently skipped.
    X, y = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32), np.arange(6) % 2
    for estimator in (
        PretrainedFeatureExtractor(VectorNet(), device="cpu", preprocess=to_unit),
        FineTuneClassifier(None, device="cpu", preprocess=to_unit, max_epochs=1),
    ):
        with pytest.raises(
            ValueError, match=r"preprocess=.* applies to images, but X is 2-D, feature vectors"
        ):
            estimator.fit(X, y)


def test_a_final_linear_layer_is_still_the_classifier_that_is_cut(images):
    module = TinyConvNet()
    extractor = PretrainedFeatureExtractor(module, device="cpu").fit(images)
    module.fc = nn.Identity()
    with torch.no_grad():
        expected = module.eval()(_normalised(images)).numpy()
    np.testing.assert_allclose(extractor.transform(images), expected, rtol=1e-4, atol=1e-5)


class _KeepsItsLoss(TinyConvNet):
    """Registers its loss after its head, as Lightning modules often do."""

    def __init__(self):
        super().__init__()
        self.criterion = nn.CrossEntropyLoss()


def test_a_loss_registered_after_the_classifier_does_not_hide_it(images):
    # The loss was taken for the module's last layer: no classifier found, the 5 logits were the embedding.
    extractor = PretrainedFeatureExtractor(_KeepsItsLoss(), device="cpu").fit(images)
    assert extractor.n_features_out_ == 8
    plain = PretrainedFeatureExtractor(TinyConvNet(), device="cpu").fit(images)
    np.testing.assert_allclose(extractor.transform(images), plain.transform(images), rtol=1e-5)
    y = np.arange(len(images)) % 2
    clf = FineTuneClassifier(_KeepsItsLoss, device="cpu", max_epochs=1, batch_size=4).fit(images, y)
    assert clf.module_.head[1].in_features == 8


def test_batchnorm_without_running_statistics_warns_that_outputs_depend_on_the_batch(images):
    # In evaluation it still normalises each batch by its own statistics: an image's embedding changed with
    # batch_size and with the images beside it, with no warning.
    def network():
        return nn.Sequential(
            nn.Conv2d(3, 4, 3),
            nn.BatchNorm2d(4, track_running_stats=False),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 2),
        )

    with pytest.warns(
        BatchStatisticsWarning, match=r"layer '1' keeps no running statistics.*embeddings depend"
    ):
        PretrainedFeatureExtractor(network(), device="cpu").fit(images)
    y = np.arange(len(images)) % 2
    with pytest.warns(BatchStatisticsWarning, match="predictions depend"):
        FineTuneClassifier(network, device="cpu", max_epochs=1, batch_size=4).fit(images, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BatchStatisticsWarning)
        PretrainedFeatureExtractor(TinyConvNet(), device="cpu").fit(images)  # running statistics: no warning


def test_parameters_the_user_froze_warn_that_the_strategy_trains_them(images):
    # strategy='full' set requires_grad on every parameter of the library's copy: the layer the user froze
    # trained, with no word.
    module = TinyConvNet()
    module.features[0].requires_grad_(False)
    y = np.arange(len(images)) % 2
    with pytest.warns(
        IgnoredSettingWarning, match=r"2 parameters with requires_grad=False \('features.0.weight'"
    ):
        FineTuneClassifier(module, strategy="full", device="cpu", max_epochs=1, batch_size=4).fit(images, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredSettingWarning)
        FineTuneClassifier(module, strategy="linear_probe", device="cpu", max_epochs=1).fit(images, y)
        module.features[0].bias.requires_grad_(True)  # the frozen weight is one bitfit leaves frozen
        FineTuneClassifier(module, strategy="bitfit", device="cpu", max_epochs=1).fit(images, y)
        FineTuneClassifier(TinyConvNet(), strategy="full", device="cpu", max_epochs=1).fit(images, y)


class _PerToken(nn.Module):
    """Patches, then a classifier of each patch: its output at layer=None is a sequence, which pooling reads."""

    def __init__(self):
        super().__init__()
        self.patches = nn.Conv2d(3, 8, 4, stride=4)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.patches(x).flatten(2).transpose(1, 2))


def test_pooling_set_at_the_classifiers_input_still_applies_where_that_input_is_a_sequence(images):
    module = _PerToken()
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredSettingWarning)  # it applies: no warning that it is ignored
        maximum = PretrainedFeatureExtractor(module, pooling="max", device="cpu").fit_transform(images)
    mean = PretrainedFeatureExtractor(module, device="cpu").fit_transform(images)
    assert maximum.shape == mean.shape == (len(images), 8)
    assert not np.allclose(maximum, mean)


class _ConvolutionalHead(nn.Module):
    """A convolutional classifier block, as SqueezeNet's, whose output the forward does not flatten."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 8, 4, stride=4)
        self.head = nn.Sequential(nn.Conv2d(8, 3, 1))

    def forward(self, x):
        return self.head(self.features(x))


def test_pooling_at_a_convolutional_classifiers_input_warns_that_it_is_ignored(images):
    # Replaced by global average pooling, the block leaves a 1x1 map: trying the module on a blank input took
    # that for a map to pool, and the warning went.
    with pytest.warns(IgnoredSettingWarning, match="pooling='max' takes effect only"):
        PretrainedFeatureExtractor(_ConvolutionalHead(), pooling="max", device="cpu").fit(images)


def _halves_the_input(module, args):
    return (args[0] / 2,)


def test_a_hook_on_the_modules_own_input_is_refused_at_a_layer(images):
    # layer= traces the module's forward, which skipped the hooks torch runs on the module's input: the
    # embedding at "pool" differed from the classifier's input, which layer=None gives with the hook.
    module = TinyConvNet()
    module.register_forward_pre_hook(_halves_the_input)
    PretrainedFeatureExtractor(module, device="cpu").fit(images)  # layer=None calls the module: the hook runs
    with pytest.raises(ValueError, match="forward pre-hook on its own input"):
        check_module_layer(module, "pool")  # as a cluster's client checks a layer before the workers cut
    with pytest.raises(ValueError, match=r"layer='pool': the TinyConvNet module has a forward pre-hook"):
        PretrainedFeatureExtractor(module, layer="pool", device="cpu").fit(images)
    with pytest.raises(ValueError, match="forward pre-hook on its own input"):
        FineTuneClassifier(module, layer="pool", device="cpu", max_epochs=1).fit(
            images, np.arange(len(images)) % 2
        )


def test_hooks_that_a_cut_would_skip_are_refused_and_hooks_on_torch_layers_run(images):
    # A hook on a block (an nn.Sequential here) ran while the cut was traced, and never on an image.
    module = TinyConvNet()
    seen = []
    module.features[0].register_forward_hook(lambda _layer, _inputs, output: seen.append(len(output)))
    extractor = PretrainedFeatureExtractor(module, layer="pool", device="cpu", batch_size=3).fit(images)
    seen.clear()
    extractor.transform(images)
    assert sum(seen) == len(images)  # a torch layer is called, hooks and all
    module.features.register_forward_hook(lambda *args: None)
    with pytest.raises(ValueError, match=r"hooks registered on the module at 'features' \(a Sequential\)"):
        PretrainedFeatureExtractor(module, layer="pool", device="cpu").fit(images)
    with pytest.raises(ValueError, match="hooks registered on the module at 'features'"):
        FineTuneClassifier(module, layer="pool", device="cpu", max_epochs=1).fit(
            images, np.arange(len(images)) % 2
        )
    PretrainedFeatureExtractor(module, device="cpu").fit(images)  # layer=None calls the module: all run
    # the output of a block the cut ends inside, or after the cut: no part of the embedding
    check_module_layer(module, "features.0")
    PretrainedFeatureExtractor(module, layer="features.0", device="cpu").fit(images)
    module.fc.register_forward_pre_hook(lambda *args: None)
    PretrainedFeatureExtractor(module, layer="features.0", device="cpu").fit(images)


class _BlockTwice(nn.Module):
    """One block called before and after the layer in the middle."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())
        self.mid = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.block(self.mid(self.block(x))).mean((2, 3))


class _BlockOnBlock(_BlockTwice):
    """The block called twice in a row."""

    def forward(self, x):
        return self.block(self.block(x)).mean((2, 3))


@pytest.mark.parametrize(("network", "layer"), [(_BlockTwice, "mid"), (_BlockOnBlock, "block.0_1")])
def test_a_hook_on_a_block_called_before_the_cut_and_again_after_it_is_refused(images, network, layer):
    # The block's nodes ran from before the cut to after it, read as one call that the cut ends inside.
    module = network()
    module.block.register_forward_hook(lambda *args: None)
    with pytest.raises(ValueError, match=r"hooks registered on the module at 'block' \(a Sequential\)"):
        PretrainedFeatureExtractor(module, layer=layer, device="cpu").fit(images)


def test_hooks_on_torchvisions_operator_blocks_run_in_a_cut_and_are_accepted(images):
    # Conv2dNormActivation is a leaf of torchvision's tracer, called with its hooks; it was refused, and by the
    # Dask client's check only in a process that had not traced before.
    module = torchvision.models.mobilenet_v3_small()
    seen = []
    module.features[0].register_forward_hook(lambda _layer, _inputs, output: seen.append(len(output)))
    check_module_layer(module, "features.2")
    extractor = PretrainedFeatureExtractor(module, layer="features.2", device="cpu").fit(images)
    seen.clear()
    extractor.transform(images)
    assert sum(seen) == len(images)


_SEEN = []  # what _Counted's forward saw (a global: the extractor works on a copy of the module)


class _Counted(TinyConvNet):
    """Records the number of images each forward call sees, a side effect outside the module."""

    def forward(self, x):
        _SEEN.append(x.shape[0])  # traceable, so a torch.fx rewrite would drop it
        return super().forward(x)


def test_side_effects_and_hooks_of_a_users_module_run(images):
    hooked = []
    module = _Counted()
    module.register_forward_hook(lambda _module, _inputs, output: hooked.append(len(output)))
    extractor = PretrainedFeatureExtractor(module, device="cpu", batch_size=3).fit(images)
    _SEEN.clear(), hooked.clear()
    extractor.transform(images)
    assert sum(_SEEN) == sum(hooked) == len(images)


class _Flattening(nn.Module):
    """A forward written for contiguous (NCHW) tensors: ``.view`` fails on channels-last ones."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 30 * 30, 2)

    def forward(self, x):
        out = self.conv(x)
        return self.fc(out.view(out.size(0), -1))


def test_a_users_module_gets_its_inputs_in_the_layout_it_was_written_for(images):
    embeddings = PretrainedFeatureExtractor(_Flattening(), device="cpu").fit_transform(images)
    assert embeddings.shape == (4, 4 * 30 * 30)
    clf = FineTuneClassifier(_Flattening(), strategy="full", max_epochs=1, device="cpu").fit(
        images, [0, 1] * 2
    )
    assert clf.predict_proba(images).shape == (4, 2)


class _DropsARow(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))[1:]


class _FiveDimensional(nn.Module):
    def forward(self, x):
        return x[:, :, None]


class _NaNForSecondImage(nn.Module):
    def forward(self, x):
        out = x.mean(dim=(2, 3)).clone()
        if len(out) > 1:
            out[1] = float("nan")
        return out


class _ReturnsADict(nn.Module):
    """A Hugging Face model's way: a dict of outputs (ModelOutput is a dict) rather than a tensor."""

    def forward(self, x):
        return {"last_hidden_state": x.flatten(2).transpose(1, 2), "pooler_output": x.mean(dim=(2, 3))}


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (_DropsARow(), r"_DropsARow at layer=None is \(0, 3\) for a batch of 1 inputs"),
        # the library's cut at a layer returns {"features": ...}: any dict was read as one, a KeyError
        (
            _ReturnsADict(),
            r"_ReturnsADict at layer=None is a dict with keys \['last_hidden_state', 'pooler_output'\]",
        ),
        (_FiveDimensional(), r"_FiveDimensional at layer=None has shape \(1, 3, 1, 32, 32\): pooling='avg'"),
        (_NaNForSecondImage(), r"_NaNForSecondImage at layer=None holds NaN or infinity for samples \[1\]"),
    ],
    ids=["rows", "dict", "shape", "finite"],
)
def test_network_outputs_are_checked_and_the_layer_named(images, module, message):
    """Shapes are checked on fit's one blank input, before any image runs; finiteness batch by batch."""
    extractor = PretrainedFeatureExtractor(module, device="cpu", batch_size=2)
    with pytest.raises(NetworkOutputError, match=message):
        extractor.fit(images).transform(images)


def test_a_preprocessing_that_fails_names_the_sample_and_what_it_receives(images):
    # torchvision's classic pipeline starts with ToTensor, which refuses the tensor it is given: its bare
    # TypeError said nothing of the library's side.
    from torchvision import transforms

    classic = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])
    with pytest.raises(
        ValueError, match=r"failed on sample 0, a \(3, 32, 32\) torch.uint8 tensor .*ToTensor"
    ) as error:
        PretrainedFeatureExtractor(TinyConvNet(), preprocess=classic, device="cpu").fit(images)
    assert isinstance(error.value.__cause__, TypeError)


def test_rows_never_written_are_an_error_not_uninitialised_memory():
    model = nn.Linear(3, 2).eval()
    batches = [torch.ones(2, 3)]  # 2 rows for 3 samples
    with pytest.raises(NetworkOutputError, match="held 2 rows for 3 samples"):
        run_inference(model, batches, n_samples=3, device=torch.device("cpu"))


def test_embedding_width_is_checked_against_fit(images):
    extractor = PretrainedFeatureExtractor(_Flattening(), device="cpu").fit(images)
    larger = np.zeros((2, 40, 40, 3), dtype=np.uint8)  # a flattened map of another size
    with pytest.raises(NetworkOutputError, match=r"rows of length 5776, but its embeddings were 3600 long"):
        extractor.transform(larger)


def _module_class(forward_source):
    """A class named Edited whose forward is ``forward_source``, as a notebook cell run twice defines it."""
    namespace = {"nn": nn}
    exec(f"class Edited(nn.Module):\n    def forward(self, x):\n        return {forward_source}\n", namespace)
    return namespace["Edited"]


def test_editing_a_users_module_does_not_bring_back_cached_embeddings(images, tmp_path):
    old = PretrainedFeatureExtractor(_module_class("x.mean(dim=(2, 3))")(), device="cpu", cache=tmp_path)
    new = PretrainedFeatureExtractor(_module_class("x.amax(dim=(2, 3))")(), device="cpu", cache=tmp_path)
    before = old.fit(images).transform(images)
    after = new.fit(images).transform(images)
    assert not np.allclose(before, after)


class _Scaled(nn.Module):
    """A module whose output depends on a plain attribute, outside its parameters and code."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale
        self.register_buffer("shift", torch.zeros(3), persistent=False)  # not in the state_dict either

    def forward(self, x):
        return x.mean(dim=(2, 3)) * self.scale + self.shift


def test_modules_that_differ_in_attributes_or_unsaved_buffers_are_cached_apart(images, tmp_path):
    def embeddings(module):
        return PretrainedFeatureExtractor(module, device="cpu", cache=tmp_path).fit(images).transform(images)

    plain = embeddings(_Scaled(1.0))
    np.testing.assert_allclose(embeddings(_Scaled(10.0)), 10 * plain, rtol=1e-6)
    shifted = _Scaled(1.0)
    shifted.shift += 1
    np.testing.assert_allclose(embeddings(shifted), plain + 1, rtol=1e-6)


def test_transform_of_a_module_with_its_own_weights_changes_no_setting(images):
    extractor = PretrainedFeatureExtractor(TinyConvNet(), device="cpu").fit(images)  # random_state unused
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingsChangedWarning)
        extractor.transform(images)


_BRIGHTNESS = 1.0  # a data global that the preprocess below reads


def _brightened(image):
    return image.float() / 255 * _BRIGHTNESS


def test_what_the_code_reads_is_keyed_at_each_transform_not_only_the_first(images, tmp_path, monkeypatch):
    cached = PretrainedFeatureExtractor(_Scaled(1.0), preprocess=_brightened, device="cpu", cache=tmp_path)
    before = cached.fit(images).transform(images)
    monkeypatch.setattr(sys.modules[__name__], "_BRIGHTNESS", 3.0)  # as a notebook cell run again would
    np.testing.assert_allclose(cached.transform(images), 3 * before, rtol=1e-6)


def _doubled(module, inputs, output):
    return 2 * output


def test_a_forward_hook_that_changes_the_output_is_cached_apart(images, tmp_path):
    plain = (
        PretrainedFeatureExtractor(_Scaled(1.0), device="cpu", cache=tmp_path).fit(images).transform(images)
    )
    hooked = _Scaled(1.0)
    hooked.register_forward_hook(_doubled)
    doubled = PretrainedFeatureExtractor(hooked, device="cpu", cache=tmp_path).fit(images).transform(images)
    np.testing.assert_allclose(doubled, 2 * plain, rtol=1e-6)


def test_a_global_forward_hook_that_changes_the_output_is_cached_apart(images, tmp_path):
    plain = (
        PretrainedFeatureExtractor(_Scaled(1.0), device="cpu", cache=tmp_path).fit(images).transform(images)
    )
    handle = torch.nn.modules.module.register_module_forward_hook(_doubled)  # runs on every layer
    try:
        hooked = PretrainedFeatureExtractor(_Scaled(1.0), device="cpu").fit(images).transform(images)
        cached = PretrainedFeatureExtractor(_Scaled(1.0), device="cpu", cache=tmp_path).fit(images)
        np.testing.assert_allclose(cached.transform(images), hooked, rtol=1e-6)
    finally:
        handle.remove()
    assert not np.allclose(hooked, plain)


def _no_change(module, inputs, output):
    return None


def test_the_cache_key_of_a_users_module_does_not_depend_on_hooks_registered_before_it(images):
    def key():
        module = _Scaled(1.0)
        module.register_forward_hook(_no_change)  # numbered by a process-wide counter
        return PretrainedFeatureExtractor(module, device="cpu").fit(images)._embedding_key()

    first = key()
    nn.Linear(1, 1).register_forward_hook(_no_change)  # as a restarted notebook's cells might, or not
    assert key() == first


class _SelfHooked(_Scaled):
    """Registers a method of its own as a hook, as modules often do."""

    def __init__(self):
        super().__init__(1.0)
        self.register_forward_hook(self._halved)

    def _halved(self, module, inputs, output):
        return output / 2


def test_a_hook_that_is_a_method_of_the_module_keys_alike_in_every_process(images):
    def key():
        return PretrainedFeatureExtractor(_SelfHooked(), device="cpu").fit(images)._embedding_key()

    first = key()
    nn.Linear(1, 1).register_forward_hook(_no_change)  # advances torch's process-wide hook counter
    assert key() == first


def test_a_preprocess_set_after_fit_does_not_change_the_key_of_the_fitted_one(images):
    extractor = PretrainedFeatureExtractor(_Scaled(1.0), device="cpu").fit(images)
    before = extractor._embedding_key()
    extractor.set_params(preprocess=_brightened)  # transform warns, and runs the fitted preprocessing
    assert extractor._embedding_key() == before


def test_a_module_attribute_without_a_hash_by_value_warns_and_caches_for_this_process(images, tmp_path):
    class Unpicklable:  # copied with the module, but not pickled
        def __deepcopy__(self, memo):
            return self

        def __reduce__(self):
            raise TypeError("cannot be pickled")

    module = _Scaled(2.0)
    module.settings = Unpicklable()
    extractor = PretrainedFeatureExtractor(module, device="cpu", cache=tmp_path).fit(images)
    with pytest.warns(
        UnhashableModuleWarning, match=r"the attribute _Scaled\.settings of model cannot be hashed"
    ):
        first = extractor.transform(images)
    np.testing.assert_array_equal(extractor.transform(images), first)


def test_a_module_that_cannot_be_copied_is_named_with_what_to_do(images):
    import threading

    module = _Scaled(2.0)
    module.lock = threading.Lock()  # the library copies the module; a lock cannot be copied
    with pytest.raises(TypeError, match=r"model: the _Scaled module could not be copied .*pass its class"):
        PretrainedFeatureExtractor(module, device="cpu").fit(images)
    assert module.lock is not None  # the user's module is untouched


def test_palette_images_with_other_palettes_are_cached_apart(tmp_path):
    from PIL import Image

    first = Image.fromarray(np.zeros((8, 8), dtype=np.uint8), mode="P")
    first.putpalette([0, 0, 0] * 256)
    second = first.copy()
    second.putpalette([255, 255, 255] * 256)
    extractor = PretrainedFeatureExtractor(nn.Flatten(), device="cpu", cache=tmp_path).fit([first])
    extractor.transform([first])
    white = extractor.transform([second])
    np.testing.assert_array_equal(
        white, PretrainedFeatureExtractor(nn.Flatten(), device="cpu").fit_transform([second])
    )


def test_a_per_image_preprocess_stays_per_image_after_set_params(images):
    def shrink(image):
        return torch.nn.functional.interpolate(image[None].float(), size=(8, 8))[0] / 255

    extractor = PretrainedFeatureExtractor(nn.Flatten(), device="cpu", preprocess=shrink).fit(images)
    expected = extractor.transform(images)
    extractor.set_params(preprocess=None)
    with pytest.warns(SettingsChangedWarning, match="preprocess changed after fitting"):
        unchanged = extractor.transform(
            images
        )  # without refitting, the fitted preprocessing applies as it did
    np.testing.assert_array_equal(unchanged, expected)


class _AdapterRegisteredLast(nn.Module):
    """Its classifier is ``head``, but the layer registered last, ``adapter``, runs before it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.head = nn.Linear(8, 5)
        self.adapter = nn.Linear(8, 8)

    def forward(self, x):
        return self.head(torch.relu(self.adapter(self.conv(x).mean(dim=(2, 3)))))


def test_a_last_registered_layer_that_is_not_the_classifier_is_not_cut_silently(images):
    # layer=None cut "adapter" away, and the embedding was the class scores of a network without it.
    labels = np.arange(len(images)) % 2
    named = r"cuts away the layer it registers last, 'adapter' \(reading 8 features\).* returns 5 features"
    with pytest.raises(ValueError, match=named):
        PretrainedFeatureExtractor(_AdapterRegisteredLast(), device="cpu").fit(images)
    with pytest.raises(ValueError, match=named):  # it failed at the first batch, with a shape error
        FineTuneClassifier(_AdapterRegisteredLast, weights=None, device="cpu", max_epochs=1).fit(
            images, labels
        )
    embeddings = PretrainedFeatureExtractor(_AdapterRegisteredLast(), layer="adapter", device="cpu")
    assert embeddings.fit(images).n_features_out_ == 8


class _AttentionPooled(nn.Module):
    """Attention pooling of a convolution's map: the module's output, from torch's MultiheadAttention."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.query = nn.Parameter(torch.ones(1, 1, 8))
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        tokens = self.conv(x).flatten(2).transpose(1, 2)
        return self.attention(self.query.expand(len(x), -1, -1), tokens, tokens, need_weights=False)[0][:, 0]


def test_a_layer_of_torch_is_not_searched_for_a_classifier_inside(images):
    # MultiheadAttention's out_proj (a Linear it reads as weights) was cut away, and fit failed.
    module = _AttentionPooled().eval()
    with torch.inference_mode():
        expected = module(torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255).numpy()
    embeddings = PretrainedFeatureExtractor(module, device="cpu", preprocess=to_unit).fit(images)
    np.testing.assert_allclose(embeddings.transform(images), expected, rtol=1e-5, atol=1e-6)


class _Encoded(nn.Module):
    """Patch tokens through one transformer layer, averaged: its settings are not all in its repr."""

    def __init__(self, norm_first=False):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.block = nn.TransformerEncoderLayer(
            8, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first
        )

    def forward(self, x):
        return self.block(self.patch(x).flatten(2).transpose(1, 2)).mean(1)


def test_torch_layers_that_differ_in_settings_their_repr_hides_are_cached_apart(images, tmp_path):
    # repr(TransformerEncoderLayer) leaves norm_first out: both networks shared one key.
    plain = _Encoded().eval()
    norm_first = _Encoded(norm_first=True).eval()
    norm_first.load_state_dict(plain.state_dict())
    assert repr(plain) == repr(norm_first)
    expected = PretrainedFeatureExtractor(norm_first, device="cpu").fit(images).transform(images)
    PretrainedFeatureExtractor(plain, device="cpu", cache=tmp_path).fit(images).transform(images)
    cached = PretrainedFeatureExtractor(norm_first, device="cpu", cache=tmp_path).fit(images)
    np.testing.assert_allclose(cached.transform(images), expected, rtol=1e-6)


class _Pooled(nn.Module):
    """Its forward calls a method of its own, which decides the embedding as much as forward does."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def pool(self, maps):
        return maps.mean(dim=(2, 3))

    def forward(self, x):
        return self.pool(self.conv(x))


def _max_pool(self, maps):
    return maps.amax(dim=(2, 3))


def test_a_method_that_forward_calls_is_keyed_at_each_transform(images, tmp_path, monkeypatch):
    # Only forward's code was keyed: a cell that redefines the method got the old embeddings.
    module = _Pooled()
    cached = PretrainedFeatureExtractor(module, device="cpu", cache=tmp_path).fit(images)
    averaged = cached.transform(images)
    monkeypatch.setattr(_Pooled, "pool", _max_pool)
    expected = PretrainedFeatureExtractor(module, device="cpu").fit(images).transform(images)
    assert not np.allclose(expected, averaged)
    np.testing.assert_allclose(cached.transform(images), expected, rtol=1e-6)


def _helper_pool(maps):
    return maps.mean(dim=(2, 3))


class _PooledByAHelper(nn.Module):
    """Its forward calls a module-level function: editing that function changes the embeddings."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return _helper_pool(self.conv(x))


class _Scale:
    """A preprocess object of the user's: its __call__ decides the input as a function would."""

    def __call__(self, image):
        return to_unit(image)


def _scaled_twice(self, image):
    return to_unit(image) * 2


def test_edited_helpers_and_preprocess_objects_are_keyed_at_each_transform(images, tmp_path, monkeypatch):
    """A module-level function that forward calls, a preprocess object's method, a bound method: each is keyed
    by its code, which pickling would have named only, serving the old embeddings after an edit."""
    module = _PooledByAHelper()
    cached = PretrainedFeatureExtractor(module, device="cpu", cache=tmp_path / "helper").fit(images)
    averaged = cached.transform(images)
    monkeypatch.setattr(sys.modules[__name__], "_helper_pool", lambda maps: maps.amax(dim=(2, 3)))
    expected = PretrainedFeatureExtractor(module, device="cpu").fit(images).transform(images)
    assert not np.allclose(expected, averaged)
    np.testing.assert_allclose(cached.transform(images), expected, rtol=1e-6)

    folder = tmp_path / "preprocess"
    once = PretrainedFeatureExtractor(TinyConvNet(), preprocess=_Scale(), device="cpu", cache=folder)
    once = once.fit(images).transform(images)
    monkeypatch.setattr(_Scale, "__call__", _scaled_twice)  # the class's cell run again, edited
    for preprocess in (_Scale(), types.MethodType(_scaled_twice, _Scale())):
        edited = PretrainedFeatureExtractor(TinyConvNet(), preprocess=preprocess, device="cpu", cache=folder)
        fresh = PretrainedFeatureExtractor(TinyConvNet(), preprocess=preprocess, device="cpu")
        twice = edited.fit(images).transform(images)
        np.testing.assert_allclose(twice, fresh.fit(images).transform(images), rtol=1e-6)
        assert not np.allclose(once, twice)


def test_a_lazy_classifier_that_has_not_run_is_cut_at_its_measured_width(images):
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LazyLinear(5))
    assert PretrainedFeatureExtractor(module, device="cpu").fit(images).n_features_out_ == 4
    labels = np.arange(len(images)) % 2
    classifier = FineTuneClassifier(lambda: copy.deepcopy(module), device="cpu", max_epochs=1).fit(
        images, labels
    )
    assert classifier.module_.head[-1].in_features == 4


def test_the_cache_key_changes_with_the_version_of_the_code_that_runs(images, monkeypatch):
    """An upgrade of torch (or torchvision, Pillow, transformers, this library) may change what a model or
    a decoder computes: the embeddings cached before it are not served after it."""
    import PIL

    extractor = PretrainedFeatureExtractor(TinyConvNet(), device="cpu").fit(images)
    key = extractor._embedding_key()
    assert extractor._embedding_key() == key
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    assert extractor._embedding_key() != key
    monkeypatch.undo()
    monkeypatch.setattr(PIL, "__version__", "0.0.1")
    assert extractor._embedding_key() != key


def test_a_torchscript_module_is_refused_with_what_to_pass_instead(images):
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    with pytest.raises(
        TypeError, match=r"TorchScript module .* Pass the nn.Module before torch\.jit\.script"
    ):
        PretrainedFeatureExtractor(scripted, device="cpu").fit(images)


class _MnistExampleNet(nn.Module):
    """As PyTorch's MNIST example writes it: functional activations, a log-softmax after the classifier."""

    def __init__(self, after=torch.nn.functional.log_softmax):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, stride=4)
        self.fc1 = nn.Linear(4 * 8 * 8, 16)
        self.fc2 = nn.Linear(16, 3)
        self.after = after

    def forward(self, x):
        x = torch.relu(self.fc1(torch.flatten(torch.relu(self.conv1(x)), 1)))
        return self.after(self.fc2(x), dim=1)


@pytest.mark.parametrize(
    "after",
    [torch.nn.functional.log_softmax, torch.softmax, lambda logits, dim: logits / 2.0],
    ids=["log-softmax", "softmax", "temperature"],
)
def test_a_forward_that_changes_the_classifiers_output_is_refused_for_layer_none(images, after):
    # layer=None swapped fc2 for an identity and the log-softmax ran on fc1's features: embeddings shifted by
    # about 2.8, with no error (the width, 16, was right).
    message = r"cuts away 'fc2'.*forward does not return what 'fc2' gives.*Pass layer="
    with pytest.raises(ValueError, match=message):
        PretrainedFeatureExtractor(_MnistExampleNet(after), device="cpu").fit(images)
    with pytest.raises(ValueError, match=message):
        FineTuneClassifier(_MnistExampleNet(after), max_epochs=1, device="cpu").fit(images, [0, 1, 0, 1])
    extractor = PretrainedFeatureExtractor(_MnistExampleNet(after), layer="fc1", device="cpu").fit(images)
    assert extractor.transform(images).shape == (4, 16)


def test_a_forward_that_only_reshapes_the_classifiers_output_is_accepted(images):
    module = _MnistExampleNet(after=lambda logits, dim: logits.reshape(len(logits), -1))
    extractor = PretrainedFeatureExtractor(module, device="cpu").fit(images)
    with torch.no_grad():
        module = module.eval()
        expected = torch.relu(module.fc1(torch.flatten(torch.relu(module.conv1(_normalised(images))), 1)))
    np.testing.assert_allclose(extractor.transform(images), expected.numpy(), rtol=1e-4, atol=1e-5)


class _NaNForBrightCorners(nn.Module):
    """NaN for the images whose top-left pixel is white."""

    def forward(self, x):
        out = x.mean(dim=(2, 3))
        return torch.where(x[:, :1, 0, 0] > 0.99, out * float("nan"), out)


def test_a_sample_that_gives_nan_is_named_by_its_number_in_x(tmp_path):
    # The error named its row within the batch (1 for sample 5) and advised precision='float32', the
    # precision it already ran at.
    X = np.zeros((8, 5, 5, 3), dtype=np.uint8)
    X[5, 0, 0] = 255
    extractor = PretrainedFeatureExtractor(
        _NaNForBrightCorners(), device="cpu", batch_size=2, preprocess=to_unit, cache=tmp_path
    ).fit(X)
    extractor.transform(X[:4])  # cached: the next transform embeds the other four, as a subset of X
    named = (
        r"holds NaN or infinity for samples \[5\] \(1 of the \d inputs of a batch\) at precision='float32'"
    )
    with pytest.raises(NetworkOutputError, match=named) as error:
        extractor.transform(X)
    assert "try precision='float32'" not in str(error.value)
    clf = FineTuneClassifier(
        _NaNForBrightCorners(), strategy="linear_probe", batch_size=2, preprocess=to_unit, device="cpu"
    )
    with pytest.raises(NetworkOutputError, match=r"for samples \[5\]"):  # its features, computed once
        clf.fit(X, np.arange(8) % 2)


class _ScaledInPlace(_MnistExampleNet):
    def forward(self, x):
        x = torch.relu(self.fc1(torch.flatten(torch.relu(self.conv1(x)), 1)))
        logits = self.fc2(x)
        return logits.div_(10)  # a temperature, in place: the recorded output must not follow it


class _CastToHalf(_MnistExampleNet):
    def forward(self, x):
        x = torch.relu(self.fc1(torch.flatten(torch.relu(self.conv1(x)), 1)))
        return self.fc2(x).half()  # another dtype, the same values: nothing to refuse


def test_the_classifier_check_sees_in_place_changes_passes_casts_and_leaves_shape_errors_to_fit(images):
    with pytest.raises(ValueError, match=r"forward does not return what 'fc2' gives"):
        PretrainedFeatureExtractor(_ScaledInPlace(), device="cpu").fit(images)
    assert PretrainedFeatureExtractor(_CastToHalf(), device="cpu").fit(images).n_features_out_ == 16
    # a network that cannot run on these images: the error that names the input shape, not torch's own
    wrong_width = nn.Sequential(nn.Flatten(), nn.Linear(100, 5), nn.Linear(5, 2))
    with pytest.raises(ValueError, match=r"model could not run on an input of shape"):
        PretrainedFeatureExtractor(wrong_width, device="cpu").fit(images)
    with pytest.raises(ValueError, match=r"could not find the feature size of layer=None"):
        FineTuneClassifier(wrong_width, max_epochs=1, device="cpu").fit(images, [0, 1, 0, 1])


class _BuildsATableOnItsFirstCall(nn.Module):
    """Builds a tensor it keeps on its first forward call, as rotary and positional tables often are."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc, self.table = nn.Conv2d(3, 4, 3), nn.Linear(4, 2), None

    def forward(self, x):
        features = self.conv(x).mean(dim=(2, 3))
        if self.table is None:
            self.table = torch.linspace(0.5, 1.5, features.shape[1])
        return self.fc(features * self.table)


def test_fine_tuning_a_module_that_keeps_a_tensor_from_its_first_call(images):
    # The classifier check ran that first call under inference_mode: the table was an inference tensor, and
    # the first training step failed with "Inference tensors cannot be saved for backward".
    clf = FineTuneClassifier(_BuildsATableOnItsFirstCall(), strategy="full", max_epochs=1, device="cpu")
    assert clf.fit(images, [0, 1, 0, 1]).predict(images).shape == (4,)
