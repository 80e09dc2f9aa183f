"""The datasets the trainable estimators train on: labelled images, stored features, augmented views."""

import contextlib
import threading
from collections.abc import Mapping

import numpy as np
import torch
from sklearn.utils import check_random_state
from skorch.dataset import Dataset as SkorchDataset
from skorch.dataset import ValidSplit
from skorch.utils import is_dataset, to_tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2

from ._batch_statistics import has_batchnorm
from ._image_batches import (
    BatchesOnTheDevice,
    PreprocessedImages,
    already_batched,
    batch_loader,
    preprocesses_on_the_gpu,
    sample_numbers_in,
)
from ._image_sources import VectorRows
from ._parallel import loader_processes
from ._runtime import resolve_device, run_inference
from .images import validated_source
from .texts import TextSource, TokenBatch, in_length_order, warn_of_truncated_texts


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


LABEL = "label"  # the key of the class codes in a dict of training targets


def target_tensors(targets):
    """Training targets as tensors: class codes, or a dict of per-row arrays whose ``"label"`` holds the codes.

    A dict carries further per-row targets next to the codes, such as a teacher's probabilities.

    Examples
    --------
    >>> target_tensors({"label": np.array([0, -1]), "teacher": np.full((2, 2), 0.5)})["label"].dtype
    torch.int64
    """
    if isinstance(targets, dict):  # each array keeps its dtype
        return {name: torch.as_tensor(values) for name, values in targets.items()}
    return None if targets is None else torch.as_tensor(targets, dtype=torch.long)


def target_rows(targets, index):
    """The rows ``index`` (an int or a list) of training targets (see :func:`target_tensors`)."""
    if isinstance(targets, dict):
        return {name: values[index] for name, values in targets.items()}
    return None if targets is None else targets[index]


def label_codes(targets):
    """The class codes of training targets, or of a batch's targets.

    Examples
    --------
    >>> label_codes({"label": np.array([1, 0]), "teacher": np.eye(2)}).tolist()
    [1, 0]
    """
    return targets[LABEL] if isinstance(targets, dict) else targets


class LabelledImages(Dataset):
    """Preprocessed images and their training targets, a whole batch per ``__getitems__`` call."""

    def __init__(self, images, targets=None):
        self.images = images
        self.targets = target_tensors(targets)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        batch, targets = self.__getitems__([index])
        return batch[0], target_rows(targets, 0)

    def __getitems__(self, indices):
        return self.images.__getitems__(indices), target_rows(self.targets, indices)


class PrecomputedFeatures(Dataset):
    """Backbone features computed once, for training the head alone: batches are ``{"features": ...}``."""

    def __init__(self, features, targets):
        self.features = torch.from_numpy(features)
        self.targets = target_tensors(targets)

    def __len__(self):
        return len(self.features)

    def __getitem__(self, index):
        batch, targets = self.__getitems__([index])
        return {"features": batch["features"][0]}, target_rows(targets, 0)

    def __getitems__(self, indices):
        return {"features": self.features[indices]}, target_rows(self.targets, indices)


def unwrap_subsets(dataset):
    """The dataset under any ``Subset`` views, and the indices of its rows they show (None: every row).

    Examples
    --------
    >>> from torch.utils.data import TensorDataset
    >>> base = TensorDataset(torch.arange(6))
    >>> unwrap_subsets(Subset(Subset(base, [5, 4, 3]), [2, 0]))[1].tolist()
    [3, 5]
    """
    indices = None
    while isinstance(dataset, Subset):
        own = np.asarray(dataset.indices)
        indices = own if indices is None else own[indices]
        dataset = dataset.dataset
    return dataset, indices


def yields_batches(dataset):
    """Whether ``dataset`` is one of the library's, whose ``__getitems__`` returns whole batches."""
    return isinstance(unwrap_subsets(dataset)[0], LabelledImages | PrecomputedFeatures)


def yields_raw_batches(dataset):
    """Whether ``dataset`` (possibly seen through Subsets) gives its images as loaded, to be preprocessed on
    the network's device (:attr:`~sktransfer._image_batches.PreprocessedImages.yields_raw_batches`)."""
    base = unwrap_subsets(dataset)[0]
    return isinstance(base, LabelledImages) and base.images.yields_raw_batches


def dataset_targets(dataset):
    """Encoded labels of a training dataset's rows, through any ``Subset`` views."""
    base, indices = unwrap_subsets(dataset)
    targets = np.asarray(label_codes(base.targets))
    return targets if indices is None else targets[indices]


def refuse_augment_without_images(augment, source):
    """Raise when ``augment`` is set and ``source`` (what X holds, validated) is feature vectors or texts."""
    if augment is not None and isinstance(source, VectorRows | TextSource):
        raise ValueError(
            "augment applies to images passed as X; this training data holds no images to augment "
            "(feature vectors or texts): set augment=None."
        )


def with_augment(dataset, augment, seed=None):
    """``dataset`` (possibly seen through Subsets) with ``augment`` applied to its images as they load.

    ``seed`` seeds each image's draws with its index (see :class:`~sktransfer._image_batches.PreprocessedImages`).
    """
    base, indices = unwrap_subsets(dataset)
    if not isinstance(base, LabelledImages):
        raise ValueError("augment applies to images passed as X; this training data holds stored features.")
    refuse_augment_without_images(augment, base.images.source)
    augmented = LabelledImages(base.images.with_augment(augment, seed), base.targets)
    return augmented if indices is None else Subset(augmented, indices.tolist())


# The estimators training in this thread, whose training texts were checked for truncation.
_TEXTS_CHECKED = threading.local()


class TrainingDataMixin:
    """How a trainable estimator turns X into the batches skorch iterates over.

    Any X of :mod:`sktransfer.images` becomes a :class:`LabelledImages` preprocessed as the backbone
    expects; when the backbone stays frozen for the whole fit, its features are computed once and the head
    trains on :class:`PrecomputedFeatures`. Training batches are shuffled (or drawn by the subclass's batch
    sampler) and augmented; validation and prediction batches are not. A torch ``Dataset`` of the user's
    is refused: the backbone's preprocessing would not apply to it.
    """

    def _image_dataset(self, source, targets=None):
        images = PreprocessedImages.for_estimator(source, self)
        if self._preprocesses_on_the_gpu():
            images = images.preprocessed_on_the_device()
        return LabelledImages(images, targets)

    def _preprocesses_on_the_gpu(self):
        """Whether image batches go to the GPU as loaded, to be preprocessed there (see
        :func:`~sktransfer._image_batches.preprocesses_on_the_gpu`; an augmented image is preprocessed on the
        CPU as it loads, whatever this says)."""
        # channels_last: an image network the library built
        library_built = getattr(getattr(self, "module_", None), "channels_last", False)
        # an accelerator that dispatches batches from the main process concatenates them: tensors only
        dispatches = bool(getattr(self.accelerator, "dispatch_batches", False))
        return not dispatches and preprocesses_on_the_gpu(
            library_built, self._batch_preprocess, [resolve_device(self._device())]
        )

    def get_dataset(self, X, y=None):
        if is_dataset(X) and yields_batches(X):  # the library's own, from skorch's split or callbacks
            return X
        refuse_torch_dataset(X, type(self).__name__)
        return self._image_dataset(validated_source(self, X, reset=False), y)

    def _training_targets(self, X, codes):
        """What each row of X trains on, from its class codes: the codes (a subclass may add targets)."""
        return codes

    @contextlib.contextmanager
    def _training_texts_checked(self):
        """While training, whose texts ``_training_data`` checked for truncation: predictions warn of none.

        Kept per thread, beside the estimator rather than on it, so that no pickle made during fit (a
        checkpoint) carries it.
        """
        checked = _TEXTS_CHECKED.__dict__.setdefault("estimators", set())
        checked.add(id(self))
        try:
            yield
        finally:
            checked.discard(id(self))

    def _texts_were_checked(self):
        """Whether this thread is inside this estimator's training, whose texts were checked."""
        return id(self) in getattr(_TEXTS_CHECKED, "estimators", ())

    def _training_data(self, source, targets):
        """The dataset skorch trains on: images, or the frozen backbone's features computed once."""
        dataset = self._image_dataset(source, targets)
        if not (self.precompute_features and self.augment is None and self._backbone_stays_frozen()):
            warn_of_truncated_texts(dataset)
            return dataset
        device = torch.device(self.device)
        self.module_.backbone.eval()

        def compute(images):
            loader = batch_loader(images, self.batch_size, self.num_workers, device.type == "cuda")
            return run_inference(
                self.module_.backbone,
                loader,
                n_samples=len(images),
                device=device,
                precision=self._precision(),
                channels_last=self.module_.channels_last,
                verbose=self.verbose if self._is_main_process() else 0,
                desc="features",
                sample_numbers=sample_numbers_in(images),
            )

        # A DataLoader draws from torch's generator; fork it so that training shuffles as it would have.
        with torch.random.fork_rng(devices=[]):
            # texts: sorted by length (little padding), the ones cut at the encoder's maximum named
            features = in_length_order(dataset.images, compute)
        return PrecomputedFeatures(features, dataset.targets)

    def get_split_datasets(self, X, y=None, **fit_params):
        train, valid = self._split_datasets(X, y, **fit_params)
        return train, self._own_validation_data(valid)

    def _own_validation_data(self, valid):
        """A validation dataset of the user's, ``predefined_split(Dataset(X_valid, y_valid))``, read as fit reads X.

        Its images preprocessed as the backbone expects, its labels encoded; the library's own passes as it is.
        """
        if valid is None or yields_batches(valid):
            return valid
        X, y = getattr(valid, "X", None), getattr(valid, "y", None)
        if X is None or y is None:
            raise ValueError(
                f"train_split gave a validation {type(valid).__name__} that {type(self).__name__} cannot read: "
                "give skorch.helper.predefined_split(skorch.dataset.Dataset(X_valid, y_valid)), X_valid in any "
                "form fit accepts and y_valid labels of the classes trained on."
            )
        source = validated_source(self, X, reset=False)
        # what training rows carry (a teacher's probabilities too), so that valid_loss is the training loss
        targets = self._training_targets(X, self._validation_targets(y, len(source)))
        dataset = self._image_dataset(source, targets)
        warn_of_truncated_texts(dataset, "validation texts (train_split)")  # cut as training texts are
        return dataset

    def _validation_targets(self, y, n_samples):
        """The encoded labels of a validation set of the user's: as a training call encodes y."""
        return self._targets(y, n_samples, reset=False)

    def _split_datasets(self, X, y=None, **fit_params):
        if self._holds_out_for_early_stopping():
            # several processes must validate on the same rows: without a random_state, a seed they share
            seed = self._validation_seed() if self.random_state is None else self._split_seed()
            split = ValidSplit(self.validation_fraction, stratified=True, random_state=seed)
            return split(self.get_dataset(X, y), y, **fit_params)
        if self.random_state is None or self.train_split is None:
            return super().get_split_datasets(X, y, **fit_params)
        seed = self._split_seed()
        # The user's split as it is; where it draws from numpy's global generator (skorch's ValidSplit without
        # a random_state), that generator is seeded from random_state for the call and restored after it.
        # Training holds SEEDED_WORK here (_random_stream): no seeded fit in another thread draws meanwhile.
        state = np.random.get_state()  # noqa: NPY002 (the legacy global generator is the one it draws from)
        np.random.seed(seed)  # noqa: NPY002
        try:
            return super().get_split_datasets(X, y, **fit_params)
        finally:
            np.random.set_state(state)  # noqa: NPY002

    def _split_seed(self):
        """The seed of the validation split, from ``random_state`` (a RandomState instance is drawn from)."""
        return check_random_state(self.random_state).randint(2**31)

    def _holds_out_for_early_stopping(self):
        """Whether training holds out a validation split of its own: early stopping without a train_split."""
        return bool(self.early_stopping) and self.train_split is None

    def _check_validation_split(self, codes):
        """Raise, naming the settings, where the stratified validation split cannot hold out every class."""
        groups, counts = np.unique(codes, return_counts=True)
        held_out = int(np.ceil(self.validation_fraction * len(codes)))
        settings = f"early_stopping=True holds out validation_fraction={self.validation_fraction:g}"
        advice = "Raise validation_fraction, give more rows, or set early_stopping=False."
        if counts.min() < 2:
            group = self._describe_training_group(groups[np.argmin(counts)])
            raise ValueError(
                f"{settings} of the rows, stratified by class, but {group} has a single row, which cannot be "
                f"both trained on and validated on. {advice}"
            )
        if not len(groups) <= held_out <= len(codes) - len(groups):
            rows = f"{held_out} validation row{'s' * (held_out != 1)}"
            raise ValueError(
                f"{settings} of the {len(codes)} rows, stratified by class: {rows}, but the {len(groups)} "
                f"classes need at least one row each on both sides of the split. {advice}"
            )

    def _describe_training_group(self, code):
        """A training code as a message names it: its class and source domain, or the unlabelled rows."""
        if code < 0:
            return "the unlabelled rows (y == -1)"
        classes = np.asarray(self.classes_).tolist()
        source = code // len(classes)  # a further source's codes follow the first's (domain adaptation)
        domain = f" of source domain {self._source_domains[source]:g}" if source else ""
        return f"class {classes[code % len(classes)]!r}{domain}"

    def get_iterator(self, dataset, training=False):
        kwargs = self.get_params_for("iterator_train" if training else "iterator_valid")
        kwargs.setdefault("batch_size", self.batch_size)
        if kwargs["batch_size"] == -1:
            kwargs["batch_size"] = len(dataset)
        if training:
            sampler = self._batch_sampler(dataset, kwargs["batch_size"])
            if sampler is not None:
                kwargs["batch_sampler"] = sampler
                del kwargs["batch_size"]
            else:
                kwargs.setdefault("shuffle", True)
                # A last batch of one row breaks BatchNorm in training mode; without BatchNorm it is trained on.
                last_alone = len(dataset) % kwargs["batch_size"] == 1 and len(dataset) > 1
                module = getattr(self, "module_", None)  # None before initialize: dropped, to be safe
                kwargs.setdefault("drop_last", last_alone and (module is None or has_batchnorm(module)))
            if self.augment is not None:
                augment = default_augmentation() if self.augment == "default" else self.augment
                # drawn here, from the generator a seeded fit seeds: the same in every DataLoader worker
                epoch_seed = int(torch.randint(0, 2**62, (1,)).item())
                dataset = with_augment(dataset, augment, epoch_seed)
        elif isinstance(self.iterator_valid, type) and issubclass(self.iterator_valid, DataLoader):
            # each pass draws its workers' seed: from the loader's own generator, not the global one
            kwargs.setdefault("generator", torch.Generator())
        if yields_batches(dataset):
            kwargs.setdefault("collate_fn", already_batched)
            kwargs.setdefault("num_workers", self.num_workers)
            kwargs.setdefault("pin_memory", torch.device(self.device).type == "cuda")
        if kwargs.get("num_workers") and "multiprocessing_context" not in kwargs:
            kwargs.update(loader_processes(kwargs["num_workers"]))
        iterator = (self.iterator_train if training else self.iterator_valid)(dataset, **kwargs)
        iterator = self._distributed_loader(iterator) if training else iterator
        # batches as loaded: preprocessed on the device before skorch, a callback or a loss sees them
        if yields_raw_batches(dataset):
            return BatchesOnTheDevice(iterator, resolve_device(self._device()))
        return iterator

    def _recalibration_data(self, dataset):
        """The rows whose statistics BatchNorm layers keep after training (all training rows here)."""
        return dataset

    def _batch_sampler(self, dataset, batch_size):
        """A batch sampler for the training data, or None for shuffled batches of ``batch_size``."""
        return None

    def _forward_arguments(self, x, fit_params):
        """``(args, kwargs)`` that call the network on batch ``x``, moved to the device, with ``fit_params``.

        A :class:`~sktransfer.texts.TokenBatch` is the first argument (skorch would unpack its mapping into
        keyword arguments). Anything else goes through skorch's ``to_tensor``: a mapping of tensors becomes
        keyword arguments beside ``fit_params`` (a name in both raises ValueError, as in skorch), anything
        else the first argument.
        """
        if isinstance(x, TokenBatch):
            return (x.to(self.device),), fit_params
        x = to_tensor(x, device=self.device)
        if isinstance(x, Mapping):
            return (), self._merge_x_and_fit_params(x, fit_params)
        return (x,), fit_params

    def infer(self, x, **fit_params):
        """skorch's inference step, with token batches passed whole (see ``_forward_arguments``)."""
        args, kwargs = self._forward_arguments(x, fit_params)
        return self.module_(*args, **kwargs)

    def check_data(self, X, y=None):
        """Labels are checked and encoded by ``fit`` before skorch sees them."""


def refuse_dataset_settings(estimator):
    """Raise for skorch's ``dataset`` and ``dataset__*`` settings, which the estimators cannot apply.

    They make their datasets from X themselves, so that the backbone's preprocessing (if any) reaches every
    row; skorch's ``get_dataset``, the one place that reads these settings, is theirs.
    """
    changed = [] if estimator.dataset is SkorchDataset else [f"dataset={estimator.dataset!r}"]
    changed += [f"dataset__{name}={value!r}" for name, value in estimator.get_params_for("dataset").items()]
    if changed:
        raise ValueError(
            f"{' and '.join(changed)} cannot take effect: {type(estimator).__name__} makes its datasets "
            "from X itself (the backbone's preprocessing, if any, applies to every row). Pass your data as "
            "X, and training-time transforms as augment."
        )


def refuse_torch_dataset(X, estimator_name):
    """Raise for a torch ``Dataset`` as X: the estimators read images and preprocess them themselves."""
    if is_dataset(X):
        raise TypeError(
            f"X is a torch Dataset ({type(X).__name__}); {estimator_name} reads images as arrays, tensors, "
            "PIL images or file paths and applies the backbone's preprocessing to them itself, which it "
            "cannot do inside a Dataset. Pass the images, e.g. [dataset[i][0] for i in range(len(dataset))] "
            "and the labels as y, or the list of image file paths."
        )
