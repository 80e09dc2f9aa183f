import numpy as np
import pytest


@pytest.fixture
def rgb_images():
    return np.random.default_rng(0).integers(0, 256, size=(6, 20, 20, 3), dtype=np.uint8)
