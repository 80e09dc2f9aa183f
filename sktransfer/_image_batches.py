"""Images as a network reads them: preprocessed, a batch at a time, in the order given."""

import copy

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ._image_sources import VectorRows
from ._parallel import loader_processes
from ._pixel_values import sample_error

# Spreads the images' seeds within an epoch's: a prime, so that no two indices share one.
_INDEX_STRIDE = 1_000_003


class PreprocessedImages(Dataset):
    """An :class:`ImageSource` with the backbone's preprocessing applied; yields whole batches.

    Uniform sources with the library's own preprocessing are preprocessed a batch at a time; otherwise each
    image is preprocessed alone and the batch stacked, with an error naming two samples whose sizes differ.
    ``augment`` (a random transform such as ``torchvision.transforms.v2.RandomHorizontalFlip()``) is applied
    to each image before its preprocessing; training datasets get it through :meth:`with_augment`. With an
    ``augment_seed`` (one per epoch, drawn where training runs), each image's draws come from torch's
    generator seeded by it and the image's index: the same wherever the image loads, in this process or in a
    DataLoader worker, so that ``num_workers`` does not change a seeded fit. With ``preprocess_on_device``,
    batches preprocessed a batch at a time come as loaded, as :class:`RawImageBatch` es that preprocess
    themselves once on the network's device (a GPU resizes a batch faster than the CPU loads the next).
    """

    def __init__(
        self,
        source,
        preprocess,
        batch_preprocess=False,
        augment=None,
        augment_seed=None,
        preprocess_on_device=False,
    ):
        self.source = source
        self.preprocess = preprocess
        self.batch_preprocess = batch_preprocess and source.uniform
        self.augment = augment
        self.augment_seed = augment_seed
        self.preprocess_on_device = preprocess_on_device

    @classmethod
    def for_estimator(cls, source, estimator):
        """``source`` as a fitted estimator reads it: through its ``preprocess_``, or as is for vectors.

        The library's own preprocessing (``_batch_preprocess``, fixed at fit) runs a batch at a time.
        """
        preprocess = None if isinstance(source, VectorRows) else estimator.preprocess_
        return cls(source, preprocess, batch_preprocess=estimator._batch_preprocess)

    def preprocessed_on_the_device(self):
        """The same images, their batch-at-a-time preprocessing left to the network's device."""
        return self._with(preprocess_on_device=True)

    def with_augment(self, augment, seed=None):
        """The same images with ``augment`` applied to each one as it loads, its draws seeded by ``seed``.

        (Augmented images are preprocessed one by one, on the CPU, whatever ``preprocess_on_device``.)
        """
        return self._with(augment=augment, augment_seed=seed)

    def _with(self, **changes):
        """A copy with ``changes`` to its attributes; the source and the preprocessing are shared, not copied."""
        twin = copy.copy(self)
        vars(twin).update(changes)
        return twin

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        return self.__getitems__([index])[0]

    @property
    def yields_raw_batches(self):
        """Whether batches come as :class:`RawImageBatch` es, to be preprocessed on the network's device."""
        return self.preprocess_on_device and self.preprocess is not None and not self._per_image()

    def _per_image(self):
        """Whether each image is loaded and preprocessed alone (else a batch at a time)."""
        return self.augment is not None or not (
            self.batch_preprocess or (self.source.uniform and self.preprocess is None)
        )

    def __getitems__(self, indices):
        if not self._per_image():
            batch = self.source.load_batch(indices)
            if self.preprocess is None:
                return batch
            if self.yields_raw_batches:
                # contiguous to be pinned: a grayscale batch is an expanded view, which pinning cannot copy
                return RawImageBatch(batch.contiguous(), self.preprocess)
            return self.preprocess(batch)
        images = [self.source.load(index) for index in indices]
        if self.augment is not None:
            # contiguous: a grayscale image is a view of its one channel three times, which a transform
            # that writes in place (RandomErasing(inplace=True)) cannot write to
            images = [
                self._augmented(image.contiguous(), index)
                for image, index in zip(images, indices, strict=True)
            ]
        if self.preprocess is not None:  # contiguous for a preprocess that writes in place, as augment's
            images = [
                self._preprocessed(image.contiguous(), index)
                for image, index in zip(images, indices, strict=True)
            ]
        first = tuple(images[0].shape)
        for index, image in zip(indices, images, strict=True):
            if tuple(image.shape) != first:
                raise sample_error(
                    f"after preprocessing, sample {indices[0]} has shape {first} but sample {index} has shape "
                    f"{tuple(image.shape)}; images of different sizes need a preprocessing that resizes them. "
                    "preprocess replaces the whole default preprocessing, so give it the scaling and "
                    "normalisation too: e.g. preprocess=v2.Compose([v2.Resize((224, 224)), "
                    "v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]), with the mean and std "
                    "that sktransfer.backbones.input_scaling(model) gives (torchvision.transforms.v2 as v2)."
                )
        return torch.stack(images)

    def _augmented(self, image, index):
        if self.augment_seed is None:
            return self.augment(image)
        # the CPU generator only: torch.manual_seed would reseed CUDA's as well
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed((self.augment_seed + index * _INDEX_STRIDE) % 2**63)
            return self.augment(image)

    def _preprocessed(self, image, index):
        try:
            preprocessed = self.preprocess(image)
        except Exception as exc:
            raise sample_error(
                f"the preprocessing failed on sample {index}, a {tuple(image.shape)} {image.dtype} tensor "
                f"({type(exc).__name__}: {exc}). It receives each image as a torch tensor, channels first, "
                "uint8 or float in [0, 1], not a PIL image: use torchvision.transforms.v2 transforms, "
                "without ToTensor or ToPILImage (v2.ToDtype(torch.float32, scale=True) scales to [0, 1])."
            ) from exc
        if not isinstance(preprocessed, torch.Tensor):
            raise sample_error(
                f"the preprocessing returned a {type(preprocessed).__name__} for sample {index}; it must return "
                "a torch tensor, channels first (drop a final ToPILImage, or .numpy(), from preprocess)."
            )
        return preprocessed


class RawImageBatch:
    """A batch of images as loaded, whose preprocessing runs once the batch is on the network's device.

    Moves like a tensor (``pin_memory``; rows selected by a mask or indices; ``len``), except that ``to``
    gives the preprocessed float tensor on the device. The preprocessing runs at full precision, outside any
    autocast, as it would on the CPU.

    Examples
    --------
    >>> batch = RawImageBatch(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), lambda images: images.float() + 1)
    >>> len(batch), batch[torch.tensor([True, False])].to("cpu").mean().item()
    (2, 1.0)
    """

    def __init__(self, images, preprocess):
        self.images = images
        self.preprocess = preprocess

    def __len__(self):
        return len(self.images)

    def __getitem__(self, rows):
        return RawImageBatch(self.images[rows], self.preprocess)

    @property
    def device(self):
        return self.images.device

    def pin_memory(self):
        return RawImageBatch(self.images.pin_memory(), self.preprocess)

    def to(self, device, non_blocking=False):
        """The preprocessed batch on ``device`` (a device, not a dtype): a tensor, as the network reads it."""
        images = self.images.to(torch.device(device), non_blocking=non_blocking)
        with torch.autocast(images.device.type, enabled=False):
            return self.preprocess(images)

    def __repr__(self):
        return f"RawImageBatch({len(self)} images of {tuple(self.images.shape[1:])}, {self.images.dtype})"


class BatchesOnTheDevice:
    """A loader of ``(X, y)`` batches whose :class:`RawImageBatch` es arrive preprocessed on ``device``.

    What iterates over it (skorch's loop, callbacks, a loss) sees each batch's images as the network reads
    them: the float tensor that preprocessing on the CPU would have given, already on the device (as
    Accelerate's loaders give whole batches). Anything else about the loader (its length, dataset,
    sampler) is the loader's.
    """

    def __init__(self, loader, device):
        self.loader = loader
        self.device = device

    def __iter__(self):
        for X, *rest in self.loader:
            yield (X.to(self.device, non_blocking=True) if isinstance(X, RawImageBatch) else X, *rest)

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):
        if name == "loader":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)


def preprocesses_on_the_gpu(library_built, batch_preprocess, devices):
    """Whether batches go to the GPUs as loaded, to be preprocessed there: only where the library built both
    the network (``library_built``) and its preprocessing (``batch_preprocess``); a user's transform runs as
    written, on the CPU.

    Examples
    --------
    >>> preprocesses_on_the_gpu(True, True, [torch.device("cuda", 0), torch.device("cpu")])
    False
    """
    return library_built and batch_preprocess and all(device.type == "cuda" for device in devices)


def already_batched(batch):
    """The collate function of loaders over datasets whose ``__getitems__`` returns whole batches."""
    return batch


def batch_loader(dataset, batch_size, num_workers=0, pin_memory=False):
    """A DataLoader over a :class:`PreprocessedImages` that keeps order and its batches as they come.

    It has a generator of its own: a DataLoader draws its workers' seed at every pass, from torch's global
    generator otherwise, which embedding would then move for the user (and for seeded fits in other threads).
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=already_batched,
        pin_memory=pin_memory,
        generator=torch.Generator(),
        **loader_processes(num_workers),
    )


def sample_numbers_in(dataset):
    """The function from positions in ``dataset`` to the samples of X they hold, through its Subsets.

    The datasets the library runs pick rows of X with ``Subset``: those missing from the cache, texts in
    length order.

    Examples
    --------
    >>> sample_numbers_in(Subset(Subset(range(10), [7, 8, 9]), [2, 0]))(np.array([0, 1])).tolist()
    [9, 7]
    """

    def numbers(positions):
        positions, data = np.asarray(positions), dataset
        while isinstance(data, Subset):
            positions, data = np.asarray(data.indices)[positions], data.dataset
        return positions

    return numbers
