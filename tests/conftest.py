import numpy as np
import pytest


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
