"""The datasets the trainable estimators train on: labelled images, stored features, augmented views."""

import torch
from torch.utils.data import Dataset, Subset
from torchvision.transforms import v2

from .images import VectorRows


def default_augmentation():
    """The ``augment="default"`` transform: flips, small shifts, rotations and zooms, and colour jitter.

    Every step keeps the image size, so it works before any preprocessing.

    Examples
    --------
    >>> import torch
    >>> default_augmentation()(torch.zeros(3, 32, 32, dtype=torch.uint8)).shape
    torch.Size([3, 32, 32])
    """
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        ]
    )


class LabelledImages(Dataset):
    """Preprocessed images and their encoded labels, a whole batch per ``__getitems__`` call."""

    def __init__(self, images, targets=None):
        self.images = images
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.long)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        batch, targets = self.__getitems__([index])
        return batch[0], None if targets is None else targets[0]

    def __getitems__(self, indices):
        return self.images.__getitems__(indices), None if self.targets is None else self.targets[indices]


class PrecomputedFeatures(Dataset):
    """Backbone features computed once, for training the head alone: batches are ``{"features": ...}``."""

    def __init__(self, features, targets):
        self.features = torch.from_numpy(features)
        self.targets = torch.as_tensor(targets, dtype=torch.long)

    def __len__(self):
        return len(self.features)

    def __getitem__(self, index):
        batch, targets = self.__getitems__([index])
        return {"features": batch["features"][0]}, targets[0]

    def __getitems__(self, indices):
        return {"features": self.features[indices]}, self.targets[indices]


def yields_batches(dataset):
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return isinstance(dataset, LabelledImages | PrecomputedFeatures)


def already_batched(batch):
    return batch


def with_augment(dataset, augment):
    """``dataset`` (possibly a Subset of a Subset) with ``augment`` applied to its images as they load."""
    if isinstance(dataset, Subset):
        return Subset(with_augment(dataset.dataset, augment), dataset.indices)
    if isinstance(dataset, LabelledImages) and not isinstance(dataset.images.source, VectorRows):
        return LabelledImages(dataset.images.with_augment(augment), dataset.targets)
    raise ValueError("augment applies to images passed as X; this training data holds no images to augment.")
