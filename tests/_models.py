"""Tiny networks for tests, and a domain-adapted classifier on one: they run in milliseconds, no download."""

from typing import ClassVar

import torch
from torch import nn

from sktransfer import DomainAdaptedClassifier


class TinyConvNet(nn.Module):
    """A small image classifier with BatchNorm, a spatial trunk and a linear head (like torchvision's)."""

    def __init__(self, num_classes=5, width=8):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, width, 3)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


class VectorNet(nn.Module):
    """Reads feature vectors of any length: fixed statistics of each row, then a fixed linear map.

    Used for scikit-learn's generic estimator checks, which feed 2-D float arrays of varying width.
    """

    def __init__(self):
        super().__init__()
        self.project = nn.Linear(4, 6)
        self.head = nn.Linear(6, 2)
        with torch.no_grad():
            self.project.weight.copy_(torch.linspace(-1, 1, 24).reshape(6, 4))
            self.project.bias.zero_()

    def forward(self, x):
        stats = torch.stack([x.mean(1), x.amax(1), x.amin(1), x.abs().mean(1)], dim=1)
        return self.head(torch.tanh(self.project(stats)))


class _Tally(list):
    """A record of calls, which the embedding cache leaves out of its key: it has no value to hash, as a lock
    has none (a class's data is keyed by value, and a list that grows at each call would change the key)."""

    def __reduce__(self):
        raise TypeError("a tally of calls is not data of the network")


class CountingNet(TinyConvNet):
    """A TinyConvNet that records, in a list shared by all its copies, how many rows each forward saw.

    Pass the class itself as ``model``: a class hashes the same in every clone, so that joblib's caches
    (``Pipeline(memory=...)``) recognise it.
    """

    calls: ClassVar[list] = _Tally()

    def forward(self, x):
        self.calls.append(len(x))
        return super().forward(x)

    @classmethod
    def image_rows(cls):
        """Rows of real images seen so far (the blank input that fixes the output size at fit has one)."""
        return sum(rows for rows in cls.calls if rows > 1)


class PaddedVectorNet(nn.Module):
    """Reads feature vectors of any length, zero-padded (or cut) to 16 values, through a small MLP.

    Unlike :class:`VectorNet` it keeps the position of each feature, so a classifier on it can learn
    scikit-learn's generic toy problems.
    """

    width = 16

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(self.width, 32)
        self.head = nn.Linear(32, 2)

    def forward(self, x):
        x = nn.functional.pad(x[:, : self.width], (0, max(0, self.width - x.shape[1])))
        return self.head(torch.relu(self.hidden(x)))


def tiny_domain_adapted(**params):
    """A DomainAdaptedClassifier on TinyConvNet, small enough for unit tests: 2 epochs, batches of 8, seed 0."""
    defaults = {"model": TinyConvNet, "device": "cpu", "max_epochs": 2, "batch_size": 8, "random_state": 0}
    return DomainAdaptedClassifier(**{**defaults, **params})
