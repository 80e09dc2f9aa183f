import ipaddress
import os
import socket

# Tests never reach the network: Hugging Face reads its cache only (set before it is imported).
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

import sktransfer._runtime
from sktransfer._image_batches import RawImageBatch
from tests._text_models import write_tiny_encoder

_connect = socket.socket.connect


def _loopback_only(sock, address, *args):
    host = address[0] if isinstance(address, tuple) else None
    if host is not None:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise OSError(f"a test tried to reach {address!r}: tests must not use the network")
    return _connect(sock, address, *args)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory):
    """A folder holding a tiny BERT and its tokenizer, with a sentence-transformers config (mean pooling)."""
    return str(write_tiny_encoder(tmp_path_factory.mktemp("tiny_text_model"), pooling="mean_tokens"))


@pytest.fixture
def rgb_images():
    return np.random.default_rng(0).integers(0, 256, size=(6, 20, 20, 3), dtype=np.uint8)


@pytest.fixture
def labelled_images():
    """Two classes that differ in brightness, so that even a random network separates them."""
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 100, size=(12, 16, 16, 3))
    bright = rng.integers(150, 256, size=(12, 16, 16, 3))
    X = np.concatenate([dark, bright]).astype(np.uint8)
    y = np.array(["dark"] * 12 + ["bright"] * 12)
    return X, y


@pytest.fixture
def shifted_images(labelled_images):
    """Source: the dark/bright images; target: the same images at half the contrast, brightened, unlabelled."""
    X, y = labelled_images
    target = (X // 2 + 60).astype(np.uint8)
    images = np.concatenate([X, target])
    labels = np.concatenate([y, np.full(len(target), -1, dtype=object)]).astype(object)
    return images, labels, y


@pytest.fixture
def raw_batches_moved(monkeypatch):
    """The images (as loaded) of every :class:`RawImageBatch` moved to a device to be preprocessed there."""
    moved, to = [], RawImageBatch.to

    def recorded(batch, *args, **kwargs):
        moved.append(batch.images)
        return to(batch, *args, **kwargs)

    monkeypatch.setattr(RawImageBatch, "to", recorded)
    return moved


@pytest.fixture
def network_inputs(monkeypatch):
    """The image batches that leave for the network's device in inference passes, as the loader gave them
    (a batch to be preprocessed there as its images), recorded in a list."""
    inputs = []
    forward = sktransfer._runtime._forward

    def recorded(model, batch, *args):
        inputs.append(batch.images if isinstance(batch, RawImageBatch) else batch)
        return forward(model, batch, *args)

    monkeypatch.setattr(sktransfer._runtime, "_forward", recorded)
    return inputs
