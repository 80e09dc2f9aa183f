import pickle
import re
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from joblib import Memory
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score, cross_validate
from sklearn.pipeline import Pipeline, make_pipeline

from sktransfer import FineTuneClassifier, PretrainedFeatureExtractor, _efficientnet_lite
from sktransfer._changed_settings import SettingsChangedWarning
from sktransfer._runtime import resolve_device, run_inference_parallel
from sktransfer.exceptions import UnhashablePreprocessWarning

from ._models import CountingNet, TinyConvNet, VectorNet
from ._preprocessing import inverted, locked, scaled, to_unit


def tiny(**params):
    return PretrainedFeatureExtractor(model=TinyConvNet(), device="cpu", **params)


def test_embeddings_are_float32_rows(rgb_images):
    extractor = tiny().fit(rgb_images)
    embeddings = extractor.transform(rgb_images)
    assert embeddings.shape == (6, extractor.n_features_out_) == (6, 8)
    assert embeddings.dtype == np.float32
    assert isinstance(embeddings, np.ndarray)


@pytest.fixture
def counting():
    CountingNet.calls.clear()
    return CountingNet


def test_fit_loads_but_does_not_run_the_data(rgb_images, counting):
    extractor = PretrainedFeatureExtractor(model=counting, device="cpu")
    extractor.fit(rgb_images)
    # one image checks that the module's forward ends with the classifier it cuts; a blank input fixes the
    # output size
    assert counting.calls == [1, 1]
    extractor.transform(rgb_images)
    assert counting.calls == [1, 1, 6]


def test_the_network_runs_in_eval_mode_and_batchnorm_is_untouched(rgb_images):
    module = TinyConvNet().train()
    stats = module.features[1].running_mean.clone()
    extractor = PretrainedFeatureExtractor(model=module, device="cpu", batch_size=2).fit(rgb_images)
    first = extractor.transform(rgb_images)
    assert not extractor.backbone_.training
    assert not any(m.training for m in extractor.backbone_.modules())
    np.testing.assert_array_equal(first, extractor.transform(rgb_images))
    # The embeddings are those of the eval-mode network (running statistics, no batch statistics).
    reference = TinyConvNet().eval()
    reference.fc = torch.nn.Identity()
    pixels = torch.from_numpy(rgb_images).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    with torch.no_grad():
        expected = reference((pixels - mean[:, None, None]) / std[:, None, None]).numpy()
    np.testing.assert_allclose(first, expected, rtol=1e-4, atol=1e-5)
    assert module.training  # the user's module is left as it was
    assert torch.equal(module.features[1].running_mean, stats)


def test_batchnorm_is_folded_only_in_networks_the_library_builds(rgb_images):
    named = PretrainedFeatureExtractor("resnet18", weights=None, device="cpu").fit(rgb_images)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in named.backbone_.modules())
    users = tiny().fit(rgb_images)  # a user's module is run as written
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in users.backbone_.modules())


class _StandardisedConv2d(torch.nn.Conv2d):
    """A convolution that standardises its weight in forward (as timm's StdConv2d): no scale folds into it."""

    def forward(self, x):
        weight = (self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)) / (
            self.weight.std(dim=(1, 2, 3), keepdim=True) + 1e-5
        )
        return self._conv_forward(x, weight, self.bias)


def test_batchnorm_after_a_convolution_that_transforms_its_weight_is_not_folded():
    from sktransfer._runtime import fold_batchnorm

    network = torch.nn.Sequential(_StandardisedConv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    with torch.no_grad():
        network[1].running_mean.uniform_(-1, 1)
        network[1].running_var.uniform_(0.5, 2)
    batch = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        expected = network(batch)
        torch.testing.assert_close(fold_batchnorm(network)(batch), expected)


@pytest.mark.parametrize("layer", [None, "features.6"])
def test_the_offline_defaults_batchnorm_is_folded_and_gives_the_same_embeddings(layer):
    # Its TensorFlow-padded convolutions (an nn.Conv2d subclass) were traced through, and none of its 49
    # BatchNorm layers was folded: about 1.4 times slower, in silence.
    from sktransfer.backbones import build_feature_model, load_backbone

    extractor = PretrainedFeatureExtractor(layer=layer, device="cpu").fit(np.zeros((1, 8, 8, 3), np.uint8))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in extractor.backbone_.modules())
    unfolded = build_feature_model(load_backbone("efficientnet_lite0"), layer).eval()
    batch = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(extractor.backbone_(batch), unfolded(batch), rtol=1e-4, atol=1e-4)


def test_rows_do_not_depend_on_the_batch(rgb_images):
    full = tiny(batch_size=64).fit_transform(rgb_images)
    np.testing.assert_allclose(tiny(batch_size=4).fit_transform(rgb_images), full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        tiny().fit(rgb_images).transform(rgb_images[2:3]), full[2:3], rtol=1e-5, atol=1e-6
    )


def test_fit_transform_reads_x_once_and_equals_fit_then_transform():
    # 3 pixels high and 5 wide with 3 channels: read as N×H×W×C, with an AmbiguousLayoutWarning, once
    images = np.random.default_rng(0).integers(0, 256, size=(4, 3, 5, 3), dtype=np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embeddings = tiny().fit_transform(images)
    assert [type(w.message).__name__ for w in caught] == ["AmbiguousLayoutWarning"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(embeddings, tiny().fit(images).transform(images))


def test_offline_default_end_to_end():
    images = np.random.default_rng(0).integers(0, 256, size=(3, 40, 50, 3), dtype=np.uint8)
    extractor = PretrainedFeatureExtractor(batch_size=2).fit(images)
    assert extractor.transform(images).shape == (3, 1280)
    assert extractor.device_ == resolve_device("auto")  # a GPU where there is one


def test_normalize_and_precision(rgb_images):
    unit = tiny(normalize=True).fit_transform(rgb_images)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1, rtol=1e-5)
    full = tiny().fit_transform(rgb_images)
    half = tiny(precision="bfloat16").fit_transform(rgb_images)
    assert half.dtype == np.float32
    assert np.corrcoef(full.ravel(), half.ravel())[0, 1] > 0.99
    with pytest.raises(ValueError, match="precision='float16' needs a GPU"):
        tiny(precision="float16").fit(rgb_images)


def test_images_of_any_form_and_size(tmp_path, rgb_images):
    paths = []
    for index, image in enumerate(rgb_images):
        size = (20 + index, 20) if index % 2 else (20, 20)
        paths.append(tmp_path / f"{index}.jpg")
        Image.fromarray(image).resize(size).save(paths[-1])
    extractor = tiny(
        preprocess=lambda image: torch.nn.functional.interpolate(image[None].float(), (20, 20))[0]
    )
    from_files = extractor.fit_transform([str(path) for path in paths])
    assert from_files.shape == (6, 8)
    workers = clone(extractor).set_params(num_workers=2).fit_transform([str(path) for path in paths])
    np.testing.assert_array_equal(from_files, workers)
    # the advice was a bare Resize, which replaces the scaling and normalisation too
    with pytest.raises(
        ValueError, match=r"different sizes need a preprocessing that resizes them.*v2.Normalize"
    ):
        tiny().fit_transform([str(path) for path in paths])


def test_errors_of_the_network_on_its_first_input_say_what_may_have_caused_them(rgb_images):
    # torch's own message alone: "Expected 3D (unbatched) or 4D (batched) input to conv2d", or "Input type
    # (unsigned char) and bias type (float) should be the same", for X read as feature vectors or uint8 pixels.
    with pytest.raises(ValueError, match=r"2-D X is read as feature vectors.*X\[None\]"):
        tiny().fit(rgb_images[0, :, :, 0])
    from torchvision.transforms import v2

    with pytest.raises(ValueError, match=r"preprocess gave torch.uint8 pixels.*v2.ToDtype"):
        tiny(preprocess=v2.Resize((16, 16))).fit(rgb_images)


def test_other_inputs_are_read_or_named(rgb_images, tmp_path):
    # np.longdouble pixels failed in torch ("can't convert np.ndarray of type numpy.longdouble"); a folder among
    # the paths was "an image file that does not exist"; a torchvision ImageFolder failed inside numpy.
    expected = tiny().fit_transform(rgb_images / 255.0)
    np.testing.assert_allclose(tiny().fit_transform((rgb_images / 255.0).astype(np.longdouble)), expected)
    with pytest.raises(ValueError, match=r"sample 0, .* is a folder, not an image file"):
        tiny().fit([str(tmp_path)])
    from torchvision.datasets import FakeData

    with pytest.raises(TypeError, match=r"X is a torch Dataset \(FakeData\)"):
        tiny().fit(FakeData(size=2, image_size=(3, 8, 8)))


def test_a_table_of_paths_and_labels_names_the_column_to_pass(rgb_images, tmp_path):
    Image.fromarray(rgb_images[0]).save(tmp_path / "0.png")
    table = np.array([[str(tmp_path / "0.png"), "cat"], [str(tmp_path / "0.png"), "dog"]])
    for X in (table, table.astype(object)):
        with pytest.raises(ValueError, match=r"X is a \(2, 2\) array of strings; pass the one column"):
            tiny().fit(X)  # was: "could not convert string to float"


def test_feature_names_and_pandas_output(rgb_images):
    extractor = tiny().fit(rgb_images)
    names = extractor.get_feature_names_out()
    assert list(names[:2]) == ["pretrainedfeatureextractor0", "pretrainedfeatureextractor1"]
    frame = extractor.set_output(transform="pandas").transform(rgb_images)
    assert list(frame.columns) == list(names)


def test_pickle_round_trip_needs_no_download(rgb_images, monkeypatch):
    extractor = PretrainedFeatureExtractor(batch_size=4).fit(rgb_images)
    expected = extractor.transform(rgb_images)
    blob = pickle.dumps(extractor)
    monkeypatch.setattr(_efficientnet_lite, "packaged_weights_path", lambda: pytest.fail("weights reloaded"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("download"))
    restored = pickle.loads(blob)
    np.testing.assert_array_equal(restored.transform(rgb_images), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fitted_on_cuda_unpickles_on_the_cpu(rgb_images):
    extractor = PretrainedFeatureExtractor(model=TinyConvNet(), device="cuda").fit(rgb_images)
    expected = extractor.transform(rgb_images)
    state = pickle.loads(pickle.dumps(extractor)).__dict__
    assert all(t.device.type == "cpu" for t in state["backbone_"].state_dict().values())
    restored = pickle.loads(pickle.dumps(extractor)).set_params(device="cpu")
    np.testing.assert_allclose(restored.transform(rgb_images), expected, rtol=1e-3, atol=1e-4)


def test_the_library_preprocessing_alone_moves_to_the_gpu(rgb_images):
    # Only what the library built runs elsewhere than written: a user's preprocess or module stays as is.
    gpus, cpu = [torch.device("cuda", 0), torch.device("cuda", 1)], torch.device("cpu")
    library = PretrainedFeatureExtractor("resnet18", weights=None, device="cpu").fit(rgb_images)
    assert library._preprocesses_on_the_gpu(gpus)
    assert not library._preprocesses_on_the_gpu([cpu])
    assert not library._preprocesses_on_the_gpu([gpus[0], cpu])
    users_preprocess = clone(library).set_params(preprocess=scaled(1.0)).fit(rgb_images)
    assert not users_preprocess._preprocesses_on_the_gpu(gpus)
    assert not tiny().fit(rgb_images)._preprocesses_on_the_gpu(gpus)


def test_batches_preprocessed_on_the_networks_device_embed_alike(rgb_images, network_inputs, monkeypatch):
    extractor = PretrainedFeatureExtractor("resnet18", weights=None, device="cpu", batch_size=4)
    expected = extractor.fit(rgb_images).transform(rgb_images)
    monkeypatch.setattr(PretrainedFeatureExtractor, "_preprocesses_on_the_gpu", lambda self, devices: True)
    network_inputs.clear()  # those of fit and of the transform on the CPU: preprocessed there
    np.testing.assert_array_equal(extractor.transform(rgb_images), expected)
    assert [batch.dtype for batch in network_inputs] == [torch.uint8] * 2  # as loaded, in two batches
    assert [tuple(batch.shape) for batch in network_inputs] == [(4, 3, 20, 20), (2, 3, 20, 20)]


def test_grayscale_batches_for_the_device_are_contiguous_for_pinning(network_inputs, monkeypatch):
    # A grayscale batch is its one channel expanded three times (stride 0), which pin_memory cannot copy.
    gray = np.random.default_rng(0).integers(0, 256, size=(6, 20, 20), dtype=np.uint8)
    extractor = PretrainedFeatureExtractor("resnet18", weights=None, device="cpu", batch_size=4).fit(gray)
    expected = extractor.transform(gray)
    monkeypatch.setattr(PretrainedFeatureExtractor, "_preprocesses_on_the_gpu", lambda self, devices: True)
    network_inputs.clear()
    np.testing.assert_array_equal(extractor.transform(gray), expected)
    assert [batch.is_contiguous() for batch in network_inputs] == [True, True]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_library_preprocessing_runs_on_the_gpu(rgb_images, network_inputs):
    on_cpu = PretrainedFeatureExtractor("resnet18", weights=None, device="cpu").fit(rgb_images)
    expected = on_cpu.transform(rgb_images)
    network_inputs.clear()
    embeddings = on_cpu.set_params(device="cuda").transform(rgb_images)
    assert network_inputs[0].dtype == torch.uint8
    assert np.abs(embeddings - expected).max() <= 1e-2 * np.abs(expected).max()


def test_unavailable_device_names_the_parameter(rgb_images, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='cuda' was requested but CUDA is not available"):
        PretrainedFeatureExtractor(model=TinyConvNet(), device="cuda").fit(rgb_images)


def test_a_device_torch_does_not_know_gets_the_values_to_pass(rgb_images):
    # torch's own error listed its twenty device types ("ipu, xpu, mkldnn, opengl...") ten frames deep.
    message = r"device='gpu' is not a device: use 'auto' \(a GPU where there is one\), 'cpu', 'cuda'"
    with pytest.raises(ValueError, match=message):
        PretrainedFeatureExtractor(model=TinyConvNet(), device="gpu").fit(rgb_images)
    with pytest.raises(ValueError, match=message):
        FineTuneClassifier(model=TinyConvNet(), device="gpu", max_epochs=1).fit(rgb_images, [0, 1] * 3)


def test_random_initialisation_is_reproducible(rgb_images):
    def embed(seed):
        return PretrainedFeatureExtractor(
            "resnet18", weights=None, random_state=seed, batch_size=8
        ).fit_transform(rgb_images)

    np.testing.assert_array_equal(embed(0), embed(0))
    assert not np.allclose(embed(0), embed(1))


def test_pipeline_grid_search_with_string_labels(labelled_images):
    X, y = labelled_images
    pipeline = make_pipeline(tiny(), LogisticRegression(max_iter=500))
    search = GridSearchCV(pipeline, {"logisticregression__C": [0.1, 1.0]}, cv=3, n_jobs=2).fit(X, y)
    assert (search.predict(X) == y).mean() > 0.9
    assert list(search.classes_) == ["bright", "dark"]
    assert search.best_score_ > 0.9
    assert cross_val_score(clone(pipeline), X, y, cv=3).mean() > 0.9
    assert pickle.loads(pickle.dumps(search)).predict(X[:2]).tolist() == search.predict(X[:2]).tolist()


@pytest.mark.parametrize("model", [CountingNet, CountingNet()], ids=["class", "instance"])
def test_grid_search_runs_the_backbone_once_per_image(labelled_images, tmp_path, counting, model):
    X, y = labelled_images
    extractor = PretrainedFeatureExtractor(model=model, device="cpu", batch_size=64, cache=str(tmp_path))
    pipeline = Pipeline([("embed", extractor), ("classify", LogisticRegression())])
    search = GridSearchCV(pipeline, {"classify__C": [0.01, 0.1, 1.0, 10.0]}, cv=3)
    search.fit(X, y)
    # Uncached, 3 folds × 4 candidates and the refit make 13 passes over the data; a cache keyed on each
    # subset, 4 (2 training folds, 1 test fold, the refit). The goal is at most 1.2; in one process it is 1.
    assert counting.image_rows() == len(X)
    cross_validate(pipeline, X[::-1], y[::-1], cv=4)  # other subsets of the same images
    assert counting.image_rows() == len(X)


def test_cached_and_computed_rows_keep_their_order(rgb_images, tmp_path, counting):
    expected = PretrainedFeatureExtractor(model=counting, device="cpu").fit_transform(rgb_images)
    extractor = PretrainedFeatureExtractor(model=counting, device="cpu", batch_size=2, cache=tmp_path)
    extractor.fit(rgb_images).transform(rgb_images[:3])
    counting.calls.clear()
    mixed = [5, 0, 5, 2, 4, 4, 1]
    np.testing.assert_allclose(extractor.transform(rgb_images[mixed]), expected[mixed], rtol=1e-5, atol=1e-6)
    assert counting.calls == [2]  # only images 5 and 4 ran, each once, in one batch


def test_a_cleared_cache_folder_is_filled_again(rgb_images, tmp_path, counting):
    extractor = PretrainedFeatureExtractor(model=counting, device="cpu", cache=tmp_path / "cache")
    first = extractor.fit(rgb_images).transform(rgb_images)
    shutil.rmtree(tmp_path / "cache")
    np.testing.assert_array_equal(extractor.transform(rgb_images), first)
    np.testing.assert_array_equal(extractor.transform(rgb_images), first)
    assert counting.image_rows() == 2 * len(rgb_images)


def test_feature_vectors_are_cached_by_row(tmp_path):
    X = np.random.default_rng(0).normal(size=(5, 7))
    extractor = PretrainedFeatureExtractor(model=VectorNet(), device="cpu", cache=tmp_path).fit(X)
    np.testing.assert_array_equal(extractor.transform(X[2:]), extractor.transform(X)[2:])
    changed = X.copy()
    changed[1, 3] += 1
    assert not np.allclose(extractor.transform(changed)[1], extractor.transform(X)[1])


def test_cache_takes_a_joblib_memory(rgb_images, tmp_path, counting):
    extractor = PretrainedFeatureExtractor(model=counting, device="cpu", cache=Memory(tmp_path, verbose=0))
    extractor.fit(rgb_images).transform(rgb_images)
    extractor.transform(rgb_images)
    assert counting.image_rows() == len(rgb_images)
    extractor.set_params(cache=Memory(None)).transform(rgb_images)  # no location: no cache
    assert counting.image_rows() == 2 * len(rgb_images)
    with pytest.raises(ValueError, match="names no folder"):
        extractor.set_params(cache=Pipeline([("embed", tiny())])).transform(rgb_images)


def test_pipeline_memory_caches_the_embeddings(labelled_images, tmp_path, counting):
    X, y = labelled_images
    pipeline = Pipeline(
        [("embed", tiny().set_params(model=counting)), ("classify", LogisticRegression())],
        memory=str(tmp_path),
    )
    GridSearchCV(pipeline, {"classify__C": [0.1, 1.0, 10.0]}, cv=3).fit(X, y)
    fit_rows = 3 * len(X) * 2 // 3 + len(X)  # fit_transform is cached: training folds once each, refit once
    test_rows = 3 * 3 * len(X) // 3  # Pipeline's memory does not cover transform: test folds per candidate
    assert counting.image_rows() == fit_rows + test_rows


def test_cache_notices_changed_images(rgb_images, tmp_path, counting):
    extractor = PretrainedFeatureExtractor(model=counting, device="cpu", cache=tmp_path)
    extractor.fit(rgb_images)
    first = extractor.transform(rgb_images)
    np.testing.assert_array_equal(extractor.transform(rgb_images), first)
    changed = rgb_images.copy()
    changed[0] = 255 - changed[0]
    assert not np.array_equal(extractor.transform(changed)[0], first[0])
    assert counting.calls == [1, 1, 6, 1]  # fit's two single rows, then only the changed image runs again


def test_cache_key_follows_the_settings(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, size=(4, 12, 12, 3), dtype=np.uint8)

    def embed(**params):
        return tiny(cache=tmp_path, **params).fit_transform(images)

    plain = embed()
    np.testing.assert_allclose(np.linalg.norm(embed(normalize=True), axis=1), 1, rtol=1e-5)
    assert not np.allclose(embed(layer="features", pooling="max"), embed(layer="features", pooling="avg"))
    assert not np.allclose(embed(layer="features.2"), embed(layer="features.3"))
    extractor = tiny(cache=tmp_path).fit(images)
    extractor.set_params(precision="bfloat16")
    assert not np.array_equal(extractor.transform(images), plain)


def _embedding_keys(preprocesses=("to_unit", "inverted", "scaled")):
    """The cache key of a fitted extractor for each kind of preprocess in tests/_preprocessing.py."""
    images = np.random.default_rng(1).integers(0, 256, size=(2, 12, 12, 3), dtype=np.uint8)
    callables = {"to_unit": to_unit, "inverted": inverted, "scaled": scaled(2), "scaled_more": scaled(3)}
    return [tiny(preprocess=callables[name]).fit(images)._embedding_key() for name in preprocesses]


def test_cache_keys_are_the_same_in_another_process():
    # A Dask worker or a restarted notebook must find the embeddings: no memory address in the key.
    script = "from tests.test_feature_extraction import _embedding_keys; print(*_embedding_keys())"
    root = Path(__file__).parents[1]
    run = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True)
    assert run.stdout.split() == _embedding_keys()


def test_closures_over_different_values_never_share_cached_embeddings(rgb_images, tmp_path):
    assert len(set(_embedding_keys(["scaled", "scaled_more", "to_unit"]))) == 3
    double = tiny(preprocess=scaled(2), cache=tmp_path).fit_transform(rgb_images)
    triple = tiny(preprocess=scaled(3), cache=tmp_path).fit_transform(rgb_images)
    np.testing.assert_allclose(triple, tiny(preprocess=scaled(3)).fit_transform(rgb_images), rtol=1e-6)
    assert not np.allclose(double, triple)


def _compiled_as_a_library_names_it(scale):
    """A user's function whose __module__ names a library: as a notebook's __main__ reads in a joblib worker,
    or as functools.wraps(torchvision's function) leaves it."""
    namespace = {"SCALE": scale}
    exec("def scaled(image):\n    return image * SCALE", namespace)
    namespace["scaled"].__module__ = "torchvision.transforms.functional"
    return namespace["scaled"]


def test_a_users_function_is_keyed_by_what_it_reads_whatever_module_it_names():
    # Taken for a library's by its __module__, it was keyed by name: different functions shared cached rows.
    from sktransfer._hashing import content_hash

    assert content_hash(_compiled_as_a_library_names_it(2)) != content_hash(
        _compiled_as_a_library_names_it(3)
    )


def test_a_class_of_main_that_a_worker_rebuilt_is_hashed_by_name_and_code():
    # A worker's __main__ has no attribute for the class cloudpickle rebuilt: pickled by reference, its
    # network's key failed (UnhashableModuleWarning, a key of one process) in every joblib or Dask worker.
    from sktransfer._hashing import content_hash

    namespace = {"__name__": "__main__"}
    code = (
        "from torch import nn\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
    )
    exec(code, namespace)
    content_hash(namespace["Net"].__init__)  # its __class__ cell holds the class


def test_a_function_is_keyed_by_the_globals_it_reads_not_by_names_of_its_attributes():
    # co_names holds attribute names too: a global `mean` beside `np.mean` was keyed where the function ran
    # (the main process), not in a worker, which receives only the globals a function reads.
    from sktransfer._hashing import content_hash

    keys = []
    for extra in ({}, {"mean": np.median}):
        namespace = {"np": np, **extra}
        exec("def centred(image):\n    return image - np.mean(image)", namespace)
        keys.append(content_hash(namespace["centred"]))
    assert keys[0] == keys[1]


def test_main_is_the_users_module_even_where_it_is_a_librarys_file():
    # In a joblib worker (and under `python -m pytest`) __main__ is a library's file: a notebook's classes and
    # functions counted as installed, keyed by name, and one edited since kept its cached embeddings.
    from sktransfer._hashing import installed

    assert not installed(type("Scale", (), {"__module__": "__main__"}))


@pytest.mark.parametrize(
    "params",
    [
        {"layer": "features.0"},
        {"pooling": "max"},
        {"normalize": True},
        {"preprocess": to_unit},
        {"weights": None},
    ],
)
def test_transform_after_a_change_that_needs_a_refit_warns_naming_it(rgb_images, params):
    extractor = tiny().fit(rgb_images)
    expected = extractor.transform(rgb_images)
    (name,) = params
    with pytest.warns(
        SettingsChangedWarning, match=rf"{name} changed after fitting .*call fit again"
    ) as record:
        embeddings = extractor.set_params(**params).transform(rgb_images)
    assert record[0].filename == __file__
    np.testing.assert_array_equal(embeddings, expected)  # the fitted network, as the warning says
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingsChangedWarning)
        extractor.fit(rgb_images).transform(rgb_images)  # refitted: the new setting applies
        extractor.set_params(batch_size=2, precision="auto").transform(rgb_images)  # these apply at once
        pickle.loads(pickle.dumps(extractor)).transform(rgb_images)  # the same model object after unpickling


def test_random_state_warns_only_where_it_drew_the_weights_and_equal_paths_are_no_change(
    rgb_images, tmp_path
):
    checkpoint = tmp_path / "tiny.pt"
    torch.save(TinyConvNet().state_dict(), checkpoint)
    loaded = tiny(weights=checkpoint, random_state=0).fit(
        rgb_images
    )  # loaded weights: the seed decided nothing
    drawn = PretrainedFeatureExtractor(TinyConvNet, weights=None, device="cpu", random_state=0).fit(
        rgb_images
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingsChangedWarning)
        loaded.set_params(random_state=1, weights=Path(str(checkpoint))).transform(rgb_images)
    with pytest.warns(SettingsChangedWarning, match=r"random_state changed after fitting \(from 0 to 1\)"):
        drawn.set_params(random_state=1).transform(rgb_images)


def test_a_preprocess_without_a_stable_hash_warns_once_per_fit(rgb_images, tmp_path, counting):
    extractor = PretrainedFeatureExtractor(model=counting, preprocess=locked(), device="cpu", cache=tmp_path)
    extractor.fit(rgb_images)
    message = (
        r"preprocess=.*cache will only serve this process.*change made to the object in place: pass a new "
        r"object.*module level.*torchvision transform"
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        first, second = extractor.transform(rgb_images), extractor.transform(rgb_images)
    assert [re.search(message, str(w.message)) is not None for w in record] == [True]
    assert record[0].category is UnhashablePreprocessWarning
    assert record[0].filename == __file__  # the line that called transform
    np.testing.assert_array_equal(first, second)  # cached in this process
    with pytest.warns(UnhashablePreprocessWarning, match=message) as in_pipeline:
        make_pipeline(clone(extractor)).fit_transform(rgb_images)  # the same callable: still served
    assert [w.filename for w in in_pipeline if re.search(message, str(w.message))] == [__file__]
    assert counting.image_rows() == len(rgb_images)


def test_verbose_shows_a_progress_bar(rgb_images, capsys):
    tiny(verbose=0).fit_transform(rgb_images)
    assert "embedding" not in capsys.readouterr().err
    tiny(verbose=1, batch_size=2).fit_transform(rgb_images)
    assert "embedding" in capsys.readouterr().err


def test_inputs_are_not_modified(rgb_images):
    floats = rgb_images.astype(np.float32) / 255
    before = floats.copy()
    tiny().fit_transform(floats)
    np.testing.assert_array_equal(floats, before)


def test_bad_input_is_refused_before_any_work(rgb_images, counting):
    extractor = PretrainedFeatureExtractor(model=counting, device="cpu")
    bad = rgb_images.astype(np.float64)
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="sample 3 contains NaN"):
        extractor.fit(bad)
    assert counting.calls == []
    with pytest.raises(ValueError, match="model='efficientnet_lite0' reads images"):
        PretrainedFeatureExtractor().fit(np.zeros((3, 4)))
    fitted = extractor.fit(rgb_images)
    with pytest.raises(ValueError, match="fitted on images"):
        fitted.transform(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="batch_size"):
        tiny(batch_size=0).fit(rgb_images)
    with pytest.raises(ValueError, match="pooling"):
        tiny(pooling="median").fit(rgb_images)


def test_several_devices_share_the_batches_and_keep_the_order(rgb_images):
    """The data-parallel path (every visible GPU with device="auto"), run here on two CPU "devices"."""
    images = np.concatenate([rgb_images] * 4)  # 24 images, 6 batches of 4
    expected = tiny(batch_size=4).fit(images).transform(images)
    extractor = PretrainedFeatureExtractor(model=TinyConvNet(), batch_size=4, device=["cpu", "cpu"]).fit(
        images
    )
    np.testing.assert_allclose(extractor.transform(images), expected, rtol=1e-6, atol=1e-6)
    [copy_] = extractor._replicas.values()
    assert copy_ is not extractor.backbone_
    restored = pickle.loads(pickle.dumps(extractor))
    np.testing.assert_allclose(restored.transform(images), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"device=\[\]"):
        PretrainedFeatureExtractor(model=TinyConvNet(), device=[]).fit(images)


class _ThreadRecorder(torch.nn.Module):
    """Records the thread and the first value of each batch it runs."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def forward(self, x):
        self.log.append((threading.get_ident(), int(x[0, 0])))
        return x


def test_each_device_runs_its_own_batches_in_its_own_thread():
    batches = list(torch.arange(12.0).reshape(6, 2).split(1))
    logs = [[], []]
    replicas = [(_ThreadRecorder(log), torch.device("cpu")) for log in logs]
    rows = run_inference_parallel(replicas, batches, n_samples=6)
    np.testing.assert_array_equal(rows[:, 0], [0, 2, 4, 6, 8, 10])
    assert [[value for _, value in log] for log in logs] == [[0, 4, 8], [2, 6, 10]]
    threads = [{thread for thread, _ in log} for log in logs]
    assert all(len(each) == 1 for each in threads)
    assert threads[0] != threads[1]
