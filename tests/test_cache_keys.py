"""The embedding cache keys what decides an embedding, wherever a notebook or a helper module keeps it."""

import enum
import functools
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import skorch
import torch
from skorch.toy import MLPModule
from torch import nn

from sktransfer import PretrainedFeatureExtractor
from sktransfer import _embedding_key as embedding_key_module
from sktransfer._embedding_key import library_versions
from sktransfer._hashing import content_hash

from ._models import TinyConvNet


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)


def _cell(source, **names):
    """What a notebook cell that runs ``source`` defines."""
    namespace = {"__name__": "__main__", "nn": nn, "functools": functools, **names}
    exec(source, namespace)
    return namespace


@pytest.fixture
def notebook(monkeypatch):
    """A notebook's namespace: a module that pickling finds, as it finds a notebook's ``__main__``."""
    module = types.ModuleType("_sktransfer_notebook")
    module.nn, module.functools = nn, functools
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


def _embeddings(module, cache, images):
    return PretrainedFeatureExtractor(module, device="cpu", cache=cache).fit(images).transform(images)


_CONSTANT = """
class Net(nn.Module):
    SCALE = {}

    def forward(self, x):
        return x.mean(dim=(2, 3)) * self.SCALE
"""

_PROPERTY = """
class Net(nn.Module):
    @property
    def scale(self):
        return {}

    def forward(self, x):
        return x.mean(dim=(2, 3)) * self.scale
"""

_CACHED_HELPER = """
@functools.lru_cache
def scale():
    return {}

class Net(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3)) * scale()
"""


@pytest.mark.filterwarnings("error::sktransfer.exceptions.UnhashableModuleWarning")
@pytest.mark.parametrize(
    "source", [_CONSTANT, _PROPERTY, _CACHED_HELPER], ids=["constant", "property", "lru"]
)
def test_a_cell_run_again_with_another_value_does_not_bring_back_cached_embeddings(
    source, notebook, images, tmp_path
):
    # A class constant, a property's code and a helper in functools.lru_cache were not keyed: the cell run
    # again with 3 in place of 1 was served the embeddings of 1.
    exec(source.format(1.0), vars(notebook))
    before = _embeddings(notebook.Net(), tmp_path, images)
    exec(source.format(3.0), vars(notebook))
    np.testing.assert_allclose(_embeddings(notebook.Net(), tmp_path, images), 3 * before, rtol=1e-6)


def test_a_class_constant_of_a_callable_preprocess_is_keyed():
    source = "class Brighter:\n    FACTOR = {}\n    def __call__(self, image):\n        return image * self.FACTOR\n"
    keys = {content_hash(_cell(source.format(factor))["Brighter"]()) for factor in (1, 3)}
    assert len(keys) == 2


def test_a_class_that_holds_an_instance_of_itself_hashes():
    namespace = _cell("class Registry:\n    DEFAULT = None\n")
    namespace["Registry"].DEFAULT = namespace["Registry"]()
    assert content_hash(namespace["Registry"]()) == content_hash(namespace["Registry"]())


@pytest.fixture
def helpers(monkeypatch):
    """A user's helper package with a settings submodule, as a file beside the notebook would be."""
    package, settings = (
        types.ModuleType("_sktransfer_helpers"),
        types.ModuleType("_sktransfer_helpers.settings"),
    )
    package.__path__ = []
    package.settings = settings
    settings.BRIGHTNESS = 1.0
    monkeypatch.setitem(sys.modules, package.__name__, package)
    monkeypatch.setitem(sys.modules, settings.__name__, settings)
    return package


def test_a_global_of_a_helper_submodule_is_keyed(helpers):
    brighten = _cell(
        "def brighten(image):\n    return image * _sktransfer_helpers.settings.BRIGHTNESS",
        _sktransfer_helpers=helpers,
    )["brighten"]
    before = content_hash(brighten)
    helpers.settings.BRIGHTNESS = 3.0
    assert content_hash(brighten) != before


def test_a_value_imported_in_the_functions_body_is_keyed(helpers):
    brighten = _cell(
        "def brighten(image):\n    from _sktransfer_helpers.settings import BRIGHTNESS\n    return image * BRIGHTNESS"
    )["brighten"]
    before = content_hash(brighten)
    helpers.settings.BRIGHTNESS = 3.0
    assert content_hash(brighten) != before


def _bias(extractor):
    return next(p for name, p in extractor.backbone_.named_parameters() if name.endswith("bias"))


def test_weights_changed_in_place_after_fit_are_not_served_old_embeddings(images, tmp_path):
    # The weights were hashed once per fit: an optimizer step or load_state_dict on backbone_ was served the
    # embeddings of the weights before it.
    cached = PretrainedFeatureExtractor(TinyConvNet(), device="cpu", cache=tmp_path).fit(images)
    before = cached.transform(images)
    with torch.no_grad():
        _bias(cached).add_(1)
    after = cached.transform(images)
    np.testing.assert_allclose(after, cached.set_params(cache=None).transform(images), rtol=1e-6)
    assert not np.allclose(after, before)


def test_replicas_on_other_devices_follow_weights_changed_in_place(images):
    extractor = PretrainedFeatureExtractor(TinyConvNet(), device="cpu").fit(images)
    devices = [torch.device("cpu")] * 2
    extractor._replicas_on(devices)
    with torch.no_grad():
        _bias(extractor).add_(1)
    (_, _), (replica, _) = extractor._replicas_on(devices)
    torch.testing.assert_close(replica.state_dict(), extractor.backbone_.state_dict())


def test_layers_of_another_installed_library_key_its_version(images, monkeypatch):
    network = nn.Sequential(nn.Flatten(), MLPModule(input_units=192, output_units=2, hidden_units=4))
    assert library_versions(network, None) == {"skorch": (("skorch", skorch.__version__),)}
    extractor = PretrainedFeatureExtractor(network, device="cpu").fit(images)
    before = extractor._embedding_key()
    monkeypatch.setattr(embedding_key_module, "_distribution_version", lambda module: (("skorch", "0.0"),))
    assert extractor._embedding_key() != before  # an upgrade of skorch changes what its layers compute


def _scaled_by(factor):
    """A decorator with an argument, as a user writes one: its wrapper captures the factor."""

    def decorate(function):
        @functools.wraps(function)
        def wrapper(image):
            return function(image) * factor

        return wrapper

    return decorate


def test_a_decorators_arguments_are_keyed():
    # Unwrapping every __wrapped__ hashed the inner function alone: @scaled_by(2) and @scaled_by(3) shared a key.
    def brighten(image):
        return image + 1

    keys = {
        content_hash(
            _cell("def preprocess(image):\n    return helper(image)", helper=_scaled_by(factor)(brighten))[
                "preprocess"
            ]
        )
        for factor in (2, 3)
    }
    assert len(keys) == 2


class _Speed(enum.Enum):
    SLOW, STEADY, FAST, FASTER, FASTEST, LUDICROUS = range(6)


def test_an_enum_and_classes_that_name_each_other_hash_at_once():
    # Each member's hash took in its class's members again (minutes for six); classes holding each other as
    # class attributes raised RecursionError.
    assert content_hash(_Speed.FAST) == content_hash(_Speed.FAST) != content_hash(_Speed.SLOW)
    namespace = _cell(
        "class Net:\n    pass\nclass Block:\n    owner = Net\nNet.block = Block\nNet.me = Net\n"
    )
    assert content_hash(namespace["Net"]()) == content_hash(namespace["Net"]())


class _PropertyLayer(nn.Module):
    """A layer with a property's getter and setter: two functions of one qualified name."""

    def __init__(self):
        super().__init__()
        self._scale = 2.0

    @property
    def scale(self):
        return self._scale

    @scale.setter
    def scale(self, value):
        self._scale = value

    def forward(self, x):
        return x.mean(dim=(2, 3)) * self.scale


def _property_layer_key():
    images = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    return PretrainedFeatureExtractor(_PropertyLayer(), device="cpu").fit(images)._embedding_key()


def test_a_layer_with_a_property_setter_has_the_same_key_in_other_processes():
    # Its getter and setter were sorted by their one name, so in the order of their memory addresses.
    script = (
        "import random, types; junk = [types.FunctionType((lambda: 0).__code__, {}) for _ in "
        "range(random.randint(1, 500))]; from tests.test_cache_keys import _property_layer_key; "
        "print(_property_layer_key())"
    )
    root = Path(__file__).parents[1]
    keys = {
        subprocess.run(
            [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True
        ).stdout
        for _ in range(3)
    }
    assert keys == {_property_layer_key() + "\n"}


class _SetsABufferInForward(nn.Module):
    def forward(self, x):
        self.register_buffer("last_mean", x.mean(), persistent=False)  # made under inference_mode
        return x.mean(dim=(2, 3))


def test_a_buffer_set_under_inference_mode_is_keyed_without_error(images, tmp_path):
    # Such tensors keep no version counter: reading it raised at the second cached transform.
    extractor = PretrainedFeatureExtractor(_SetsABufferInForward(), device="cpu", cache=tmp_path).fit(images)
    first = extractor.transform(images)
    np.testing.assert_array_equal(extractor.transform(images), first)


def test_an_unpickled_extractor_keeps_the_key_of_its_weights(images, tmp_path):
    extractor = PretrainedFeatureExtractor(TinyConvNet(), device="cpu", cache=tmp_path).fit(images)
    extractor.transform(images)
    copy = pickle.loads(pickle.dumps(extractor))
    copy._backbone_key = "kept"  # a weights hash made again would replace it
    copy.transform(images)
    assert copy._backbone_key == "kept"


def test_a_preprocess_whose_transforms_is_no_list_is_keyed():
    class Steps:
        def transforms(self):  # a method of that name, not a Compose's list
            return []

    assert library_versions(nn.Linear(2, 2), Steps()) == {}
