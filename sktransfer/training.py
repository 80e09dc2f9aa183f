"""The skorch machinery the trainable estimators share.

:class:`TransferNetwork` is a backbone with a new head. :class:`TransferNet` is the skorch classifier that
trains it: it resolves the backbone (any form :func:`~sktransfer.backbones.load_backbone` accepts), turns
any accepted X into batches, encodes labels of any type, freezes and unfreezes backbone stages on a schedule
(:class:`StageUnfreezer`), gives the backbone its own learning rates (parameter groups), warms the learning
rate up (:class:`WarmupLR`), runs in mixed precision, stops on a diverging loss, and trains only the head on
features computed once when the backbone stays frozen. Estimators subclass it and choose the defaults.
"""

import contextlib
import copy
import os
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions, validate_parameter_constraints
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d
from skorch import NeuralNetClassifier
from skorch.callbacks import Checkpoint, EarlyStopping, EpochScoring, PrintLog, ProgressBar
from skorch.dataset import ValidSplit, unpack_data
from skorch.utils import is_dataset, noop, to_numpy, to_tensor
from torch import nn

from ._accelerate import AcceleratedRun, check_accelerator
from ._parallel import loader_processes
from ._progress import notebook_bars, shows_progress
from ._runtime import (
    PRECISION_OPTIONS,
    autocast,
    check_precision,
    module_device,
    resolve_device,
    run_inference,
    seeded,
)
from ._training_callbacks import (
    BatchNormRecalibration,
    StageUnfreezer,
    WarmupLR,
    encoded_accuracy,
    trainable_stage_count,
)
from ._training_data import (
    LabelledImages,
    PrecomputedFeatures,
    already_batched,
    default_augmentation,
    with_augment,
    yields_batches,
)
from ._training_repr import SklearnRepr
from .backbones import (
    Backbone,
    FeatureModel,
    cut_at_layer,
    feature_size,
    group_parameters,
    layer_groups,
    load_backbone,
)
from .images import PreprocessedImages, VectorRows, batch_loader, validated_source

STRATEGIES = ("linear_probe", "full", "gradual", "lp_ft", "bitfit")
LR_SCHEDULES = ("cosine", "onecycle", "constant")
_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class TrainingDivergedError(FloatingPointError):
    """The training loss stopped being a finite number."""


class TransferNetwork(nn.Module):
    """A feature backbone and a new linear head; backbone stages are frozen and unfrozen as wholes.

    A stage whose parameters are all frozen stays in evaluation mode while the network trains, so its
    BatchNorm statistics do not move and its dropout is off; a backbone frozen whole is in evaluation mode
    whole. With ``frozen_statistics``, every BatchNorm layer of the backbone keeps its running statistics
    (and uses them), even where its weights train. ``forward(features=...)`` runs the head alone, on
    features computed beforehand.

    Parameters
    ----------
    backbone : torch.nn.Module
        Maps a batch of inputs to (N, n_features) features.
    n_features : int
        Length of a feature vector.
    n_classes : int
        Outputs of the head (logits).
    dropout : float, default=0.0
        Dropout before the head.
    frozen_statistics : bool, default=False
        Keep every BatchNorm layer of the backbone in evaluation mode.

    Examples
    --------
    >>> import torch
    >>> net = TransferNetwork(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8)), 8, 3)
    >>> net.stage_names
    ['0', '2']
    >>> net.set_trainable(1)  # the top stage and the head
    >>> [p.requires_grad for p in net.backbone.parameters()]
    [False, False, True, True]
    >>> net(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    """

    def __init__(
        self, backbone, n_features, n_classes, dropout=0.0, frozen_statistics=False, channels_last=False
    ):
        super().__init__()
        self.backbone = backbone
        self.frozen_statistics = frozen_statistics
        self.channels_last = channels_last
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_features, n_classes))
        self.stage_names = layer_groups(backbone)

    def forward(self, x=None, features=None):
        return self.head(self.features(x) if features is None else features).float()

    def features(self, x):
        """The backbone's features of a batch of inputs (in channels-last layout with ``channels_last``)."""
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    def stage_parameters(self):
        """The parameters of each backbone stage, from the input to the output."""
        return group_parameters(self.backbone, self.stage_names)

    def set_trainable(self, n_top_stages, bitfit=False):
        """Train the head, the top ``n_top_stages`` backbone stages and, with ``bitfit``, every bias and norm."""
        stages = self.stage_parameters()
        for index, parameters in enumerate(stages):
            for parameter in parameters:
                parameter.requires_grad_(index >= len(stages) - n_top_stages)
        if bitfit:
            for module in self.backbone.modules():
                for name, parameter in module.named_parameters(recurse=False):
                    if name == "bias" or isinstance(module, _NORM_LAYERS):
                        parameter.requires_grad_(True)
        self.head.requires_grad_(True)
        self.train(self.training)

    def train(self, mode=True):
        super().train(mode)
        if not mode:
            return self
        if not any(parameter.requires_grad for parameter in self.backbone.parameters()):
            self.backbone.eval()
            return self
        for name in self.stage_names:
            stage = self.backbone.get_submodule(name)
            if not any(parameter.requires_grad for parameter in stage.parameters()):
                stage.eval()
        if self.frozen_statistics:
            for layer in self.backbone.modules():
                if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                    layer.eval()
        return self


def _is_true(flag):
    return isinstance(flag, bool | np.bool_) and bool(flag)


def _missing_labels(y):
    if y.dtype.kind == "f":
        return np.flatnonzero(np.isnan(y))
    if y.dtype.kind == "O":
        return np.flatnonzero([value is None or (isinstance(value, float) and value != value) for value in y])
    return np.array([], dtype=int)


class TransferNet(SklearnRepr, NeuralNetClassifier):
    """A skorch classifier that trains a :class:`TransferNetwork` built from the ``model`` parameter.

    Not used directly: estimators subclass it, declare their parameters in ``__init__`` and document them.
    Everything of skorch keeps working: dunder parameters (``optimizer__momentum``), ``callbacks``,
    ``history``, ``train_split``, ``save_params`` / ``load_params``, ``warm_start``, ``partial_fit``. It
    prints as scikit-learn's estimators do (:class:`~sktransfer._training_repr.SklearnRepr`).
    """

    _run = None  # an AcceleratedRun while training under an accelerator

    _parameter_constraints: dict = {  # noqa: RUF012 (sklearn's convention)
        "model": [str, nn.Module, callable, None],
        "weights": [str, os.PathLike, None],
        "strategy": [StrOptions(set(STRATEGIES))],
        "layer": [str, None],
        "pooling": [StrOptions({"avg", "max"}), None],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "freeze_batchnorm": [StrOptions({"auto"}), "boolean"],
        "recalibrate_batchnorm": ["boolean"],
        "backbone_lr_ratio": [Interval(Real, 0, None, closed="left")],
        "layer_decay": [Interval(Real, 0, 1, closed="right")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "label_smoothing": [Interval(Real, 0, 1, closed="left")],
        "lr_schedule": [StrOptions(set(LR_SCHEDULES)), None],
        "warmup": [Interval(Real, 0, 1, closed="left")],
        "freeze_epochs": [Interval(Integral, 0, None, closed="left")],
        "unfreeze_epochs": [Interval(Integral, 1, None, closed="left")],
        "augment": [StrOptions({"default"}), callable, None],
        "precompute_features": ["boolean"],
        "early_stopping": ["boolean"],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "checkpoint_dir": [str, os.PathLike, None],
        "preprocess": [callable, None],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "precision": [StrOptions(set(PRECISION_OPTIONS))],
        "accelerator": [HasMethods(["prepare_model", "backward", "accumulate"]), None],
        "random_state": ["random_state"],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
    }

    # -- callbacks ------------------------------------------------------------------------------------

    @property
    def _default_callbacks(self):
        # skorch also reads this in get_params, with whatever values set_params received: no validation here.
        skorch_defaults = dict(super()._default_callbacks)
        callbacks = [
            *((name, skorch_defaults[name]) for name in ("epoch_timer", "train_loss", "valid_loss")),
            ("valid_acc", EpochScoring(encoded_accuracy, name="valid_acc", lower_is_better=False)),
            ("unfreezer", StageUnfreezer()),
        ]
        if isinstance(self.lr_schedule, str):
            callbacks.append(("lr_schedule", WarmupLR(self.lr_schedule, self.warmup)))
        if isinstance(self.checkpoint_dir, str | os.PathLike):
            monitor = "valid_loss_best" if self._validates() else "train_loss_best"
            callbacks.append(("checkpoint", Checkpoint(monitor=monitor, dirname=str(self.checkpoint_dir))))
        if isinstance(self.verbose, Integral) and shows_progress(self.verbose):
            callbacks.append(("progress_bar", ProgressBar(detect_notebook=notebook_bars())))
        callbacks.append(("print_log", skorch_defaults["print_log"]))
        # Early stopping ends an epoch by raising, so it comes after the callbacks that log the epoch; the
        # recalibration comes after it, so that it sees the best weights early stopping restores.
        if _is_true(self.early_stopping):
            callbacks.append(("early_stopping", EarlyStopping(patience=self.patience, load_best=True)))
        if _is_true(self.recalibrate_batchnorm):
            callbacks.append(("batchnorm_recalibration", BatchNormRecalibration()))
        return callbacks

    def initialize_callbacks(self):
        """skorch's callbacks; scoring callbacks that compare labels get them decoded, as predict gives them."""
        super().initialize_callbacks()
        decoded = []
        for name, callback in self.callbacks_:
            if (
                isinstance(callback, EpochScoring)
                and callback.target_extractor is to_numpy
                and (callback.scoring is not encoded_accuracy)
            ):
                callback = copy.copy(callback)  # the user's callback object stays as given
                callback.target_extractor = self._decode_targets
            if not self._is_main_process():  # several processes train together: one of them prints
                if isinstance(callback, PrintLog | ProgressBar):
                    continue
                if getattr(callback, "sink", None) is print:  # EarlyStopping's and Checkpoint's messages
                    callback = copy.copy(callback)
                    callback.sink = noop
            decoded.append((name, callback))
        self.callbacks_ = decoded
        return self

    def _decode_targets(self, y):
        return self.classes_[to_numpy(y)]

    def _validates(self):
        return self.train_split is not None or _is_true(self.early_stopping)

    def trainable_stages(self, epoch):
        """How many backbone stages train during ``epoch`` (from 0) under this net's ``strategy``."""
        return trainable_stage_count(
            self.strategy, epoch, len(self.module_.stage_names), self.freeze_epochs, self.unfreeze_epochs
        )

    # -- initialisation -------------------------------------------------------------------------------

    def initialize(self):
        with seeded(self.random_state):
            super().initialize()
        self.grad_scaler_ = self._new_grad_scaler()
        return self

    # skorch moves new components to ``self.device``, also when set_params rebuilds one.
    def _initialize_module(self, reason=None):
        with self._on_device():
            return super()._initialize_module(reason)

    def _initialize_criterion(self, reason=None):
        with self._on_device():
            return super()._initialize_criterion(reason)

    def _initialize_optimizer(self, reason=None):
        with self._on_device():
            return super()._initialize_optimizer(reason)

    def _move_to_device(self):
        """Move the fitted network (and optimizer state) to ``device`` if it was set after fitting."""
        device = resolve_device(self.device)
        if module_device(self.module_) == device:
            return
        self.module_.to(device)
        self.criterion_.to(device)
        for state in self.optimizer_.state.values():
            for key, value in state.items():
                if torch.is_tensor(value) and value.ndim > 0:
                    state[key] = value.to(device)

    def initialize_module(self):
        if self.model is None:  # X holds features already (embeddings): the new layers read them as they are
            if not hasattr(self, "n_features_in_"):
                raise ValueError(
                    "model=None reads feature vectors: X must be a 2-D array, one row per sample."
                )
            backbone, n_features = Backbone(nn.Identity(), None, "features"), self.n_features_in_
        else:
            backbone = load_backbone(
                self.model,
                self.weights,
                random_state=self.random_state,
                progress=shows_progress(self.verbose),
            )
            n_features = feature_size(backbone, self.layer, self.pooling)
        features = FeatureModel(
            cut_at_layer(backbone.module, self.layer), pooling=self.pooling, layer=self.layer
        )
        frozen_statistics = (
            self.weights is not None if self.freeze_batchnorm == "auto" else self.freeze_batchnorm
        )
        # Channels-last layout only for architectures the library builds: a user's module runs as written.
        library_built = isinstance(self.model, str)
        settings = {
            "dropout": self.dropout,
            "frozen_statistics": frozen_statistics,
            "channels_last": library_built,
            **self._network_kwargs(),
        }
        module = self.module(
            backbone=features,
            n_features=n_features,
            n_classes=len(self.classes_),
            **{**settings, **self.get_params_for("module")},
        )
        n_stages = len(module.stage_names)
        initial = trainable_stage_count(self.strategy, 0, n_stages, self.freeze_epochs, self.unfreeze_epochs)
        module.set_trainable(initial, bitfit=self.strategy == "bitfit")
        self.preprocess_ = self.preprocess if self.preprocess is not None else backbone.preprocess
        self.module_ = module.to(memory_format=torch.channels_last) if library_built else module
        return self

    def _network_kwargs(self):
        """Further arguments of ``module`` that a subclass's parameters decide."""
        return {}

    def initialize_criterion(self):
        kwargs = self.get_params_for("criterion")
        if self.criterion is nn.CrossEntropyLoss:
            kwargs.setdefault("label_smoothing", self.label_smoothing)
        self.criterion_ = self.initialized_instance(self.criterion, kwargs)
        return self

    def initialize_optimizer(self, triggered_directly=None):
        """AdamW-style parameter groups: the head at ``lr``, each backbone stage at a smaller rate.

        Stage k from the top trains at ``lr * backbone_lr_ratio * layer_decay**k``. A user's own
        ``optimizer__param_groups`` replaces this.
        """
        if "param_groups" in self.get_params_for("optimizer"):
            return super().initialize_optimizer()
        _, kwargs = self.get_params_for_optimizer("optimizer", self.module_.named_parameters())
        kwargs.setdefault("weight_decay", self.weight_decay)
        stages = self.module_.stage_parameters()
        in_backbone = {id(parameter) for parameter in self.module_.backbone.parameters()}
        new_layers = [
            parameter for parameter in self.module_.parameters() if id(parameter) not in in_backbone
        ]
        groups = [{"params": new_layers, "lr": self.lr}]
        for depth, parameters in enumerate(reversed(stages)):
            if parameters:
                rate = self.lr * self.backbone_lr_ratio * self.layer_decay**depth
                groups.append({"params": parameters, "lr": rate})
        kwargs.pop("lr", None)
        self.optimizer_ = self.optimizer(groups, lr=self.lr, **kwargs)
        return self

    def _new_grad_scaler(self):
        """Our float16 gradient scaler; an accelerator brings its own."""
        return torch.amp.GradScaler(resolve_device(self.device).type, enabled=self._scales_loss())

    def _scales_loss(self):
        return self.accelerator is None and self._precision() == "float16"

    def _check_settings(self):
        params = {name: getattr(self, name) for name in self._parameter_constraints}
        validate_parameter_constraints(self._parameter_constraints, params, caller_name=type(self).__name__)
        if self.accelerator is not None:
            check_accelerator(self.accelerator, self._precision(), self.device)
        self._precision()

    def _precision(self):
        """``precision`` resolved ("auto") for this call's device; float16 on a CPU raises."""
        return check_precision(self.precision, [resolve_device(self._device())])

    def _device(self):
        """The device to run on: the accelerator's for this process when there is one, else ``device``."""
        return self.device if self.accelerator is None else self.accelerator.device

    @contextlib.contextmanager
    def _on_device(self):
        """skorch reads ``self.device`` as a torch device: resolve "auto" for the duration of a call."""
        requested = self.device
        self.device = str(resolve_device(self._device()))
        try:
            yield
        finally:
            self.device = requested

    # -- data -----------------------------------------------------------------------------------------

    def _encode_labels(self, y, n_samples, *, reset, classes=None):
        """Check y and turn it into class indices; with ``reset``, fix the classes (``classes`` or y's) first."""
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None: pass the label of "
                "each image."
            )
        y = column_or_1d(y, warn=True)
        check_consistent_length(np.empty(n_samples), y)
        missing = _missing_labels(y)
        if missing.size:
            raise ValueError(f"y holds missing labels (NaN or None) at samples {missing[:10].tolist()}.")
        check_classification_targets(y)
        if reset and self.classes is None:
            self.classes_inferred_ = np.unique(y if classes is None else np.asarray(classes))
        classes = self.classes_
        if len(classes) < 2:
            raise ValueError(
                f"y holds one class only ({classes[0]!r}); a classifier needs at least 2 classes."
            )
        index = {label: code for code, label in enumerate(classes.tolist())}
        unknown = [label for label in np.unique(y).tolist() if label not in index]
        if unknown:
            raise ValueError(f"y holds labels that are not among classes {classes.tolist()}: {unknown[:10]}.")
        return np.array([index[label] for label in y.tolist()], dtype=np.int64)

    def _targets(self, y, n_samples, reset=True, classes=None):
        """What the network trains on for ``y``: class indices (subclasses may add -1 for unlabelled rows)."""
        return self._encode_labels(y, n_samples, reset=reset, classes=classes)

    def _image_dataset(self, source, targets=None):
        vectors = isinstance(source, VectorRows)
        images = PreprocessedImages(
            source, None if vectors else self.preprocess_, batch_preprocess=self.preprocess is None
        )
        return LabelledImages(images, targets)

    def get_dataset(self, X, y=None):
        if is_dataset(X):
            return X
        return self._image_dataset(validated_source(self, X, reset=False), y)

    def _augmentation(self):
        return default_augmentation() if self.augment == "default" else self.augment

    def _backbone_stays_frozen(self):
        last_epoch = len(self.history) + self.max_epochs - 1  # partial_fit continues the epoch count
        return self.trainable_stages(last_epoch) == 0 and self.strategy != "bitfit"

    def _training_data(self, source, codes):
        """The dataset skorch trains on: images, or the frozen backbone's features computed once."""
        dataset = self._image_dataset(source, codes)
        if not (self.precompute_features and self.augment is None and self._backbone_stays_frozen()):
            return dataset
        device = torch.device(self.device)
        self.module_.backbone.eval()
        loader = batch_loader(dataset.images, self.batch_size, self.num_workers, device.type == "cuda")
        # A DataLoader draws from torch's generator; fork it so that training shuffles as it would have.
        with torch.random.fork_rng(devices=[]):
            features = run_inference(
                self.module_.backbone,
                loader,
                n_samples=len(dataset),
                device=device,
                precision=self._precision(),
                channels_last=self.module_.channels_last,
                verbose=self.verbose if self._is_main_process() else 0,
                desc="features",
            )
        return PrecomputedFeatures(features, codes)

    def get_split_datasets(self, X, y=None, **fit_params):
        if self.early_stopping and self.train_split is None:
            seed = None if self.random_state is None else check_random_state(self.random_state).randint(2**31)
            if seed is None and self._run is not None:  # several processes validate on the same rows
                seed = self._run.shared_seed()
            split = ValidSplit(self.validation_fraction, stratified=True, random_state=seed)
            return split(self.get_dataset(X, y), y, **fit_params)
        return super().get_split_datasets(X, y, **fit_params)

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
                # A last batch of one row breaks BatchNorm in training mode.
                kwargs.setdefault("drop_last", len(dataset) % kwargs["batch_size"] == 1 and len(dataset) > 1)
            if self.augment is not None:
                dataset = with_augment(dataset, self._augmentation())
        if yields_batches(dataset):
            kwargs.setdefault("collate_fn", already_batched)
            kwargs.setdefault("num_workers", self.num_workers)
            kwargs.setdefault("pin_memory", torch.device(self.device).type == "cuda")
        if kwargs.get("num_workers") and "multiprocessing_context" not in kwargs:
            kwargs.update(loader_processes(kwargs["num_workers"]))
        iterator = (self.iterator_train if training else self.iterator_valid)(dataset, **kwargs)
        run = self._run
        return run.prepare_loader(iterator) if training and run is not None else iterator

    def recalibration_data(self, dataset):
        """The rows whose statistics BatchNorm layers keep after training (all training rows here)."""
        return dataset

    def _batch_sampler(self, dataset, batch_size):
        """A batch sampler for the training data, or None for shuffled batches of ``batch_size``."""
        return None

    def check_data(self, X, y=None):
        """Labels are checked and encoded by :meth:`fit` before skorch sees them."""

    # -- training -------------------------------------------------------------------------------------

    def fit(self, X, y, **fit_params):
        """Load the backbone, build the head for the classes in ``y`` and train.

        Parameters
        ----------
        X : images
            Any form described in :mod:`sktransfer.images`.
        y : array-like of shape (n_samples,)
            Labels of any type (strings too).
        **fit_params : dict
            Passed to the module's ``forward`` and to ``train_split``, as in skorch.

        Returns
        -------
        self
        """
        return self._fit(X, y, fit_params)

    def _fit(self, X, y, fit_params, **target_kwargs):
        self._check_settings()
        source = validated_source(self, X, reset=True)
        warm = self.warm_start and self.initialized_
        codes = self._targets(y, len(source), reset=not warm, **target_kwargs)
        if not warm:
            self.initialize()
        return self._train(source, codes, "fit", fit_params)

    def partial_fit(self, X, y, classes=None, **fit_params):
        """Train for ``max_epochs`` more epochs without re-initialising (the first call initialises).

        Parameters
        ----------
        X : images
        y : array-like of shape (n_samples,)
        classes : array-like or None
            All the labels, on the first call when ``y`` does not hold every class.
        **fit_params : dict

        Returns
        -------
        self
        """
        return self._partial_fit(X, y, fit_params, classes=classes)

    def _partial_fit(self, X, y, fit_params, **target_kwargs):
        fit_params.pop("_routing_method", None)
        if not self.initialized_:
            return self._fit(X, y, fit_params, **target_kwargs)
        self._check_settings()
        source = validated_source(self, X, reset=False)
        codes = self._targets(y, len(source), reset=False, **target_kwargs)
        return self._train(source, codes, "partial_fit", fit_params)

    def _train(self, source, codes, routing_method, fit_params):
        with self._on_device(), seeded(self.random_state):
            self._move_to_device()
            data = self._training_data(source, codes)
            with self._accelerated_run():
                super().partial_fit(data, codes, _routing_method=routing_method, **fit_params)
        return self

    @contextlib.contextmanager
    def _accelerated_run(self):
        """With an accelerator, hold the run's wrapped network and optimizer in ``_run`` while training."""
        if self.accelerator is None:
            yield
            return
        try:
            with AcceleratedRun(self.accelerator, self) as self._run:
                yield
        finally:
            self._run = None

    def infer(self, x, **fit_params):
        with autocast(torch.device(self.device), self._precision()):
            run = self._run
            if run is None or not self.module_.training:
                return super().infer(x, **fit_params)
            # A training forward pass under an accelerator goes through its wrapper (DDP).
            module = run.training_module()
            x = to_tensor(x, device=self.device)
            if isinstance(x, dict):
                return module(**self._merge_x_and_fit_params(x, fit_params))
            return module(x, **fit_params)

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        if not training and self._run is not None:
            # Every process validates with the same BatchNorm statistics, so that early stopping and the
            # best-weights checkpoint decide alike in all of them.
            self._run.sync_buffers()
        return super().run_single_epoch(iterator, training, prefix, step_fn, **fit_params)

    def train_step(self, batch, **fit_params):
        run = self._run
        with contextlib.nullcontext() if run is None else run.accumulate():
            return super().train_step(batch, **fit_params)

    def train_step_single(self, batch, **fit_params):
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        run = self._run
        if not (torch.isfinite(loss) if run is None else run.all_finite(loss)):
            precision = (
                "" if self._precision() == "float32" else f"precision='float32' (now {self.precision!r}), "
            )
            value = "non-finite in another process" if torch.isfinite(loss) else loss.item()
            raise TrainingDivergedError(
                f"the training loss became {value} in epoch {len(self.history)}: training diverged. "
                f"Try a smaller lr (now {self.lr}), {precision}gradient clipping "
                "(callbacks=[skorch.callbacks.GradientNormClipping(1.0)]), and check that no image in X is corrupt."
            )
        if run is not None:
            run.backward(loss)
            return {"loss": loss, "y_pred": y_pred}
        scaler = self._grad_scaler()
        scaler.scale(loss).backward()
        if scaler.is_enabled():  # callbacks (gradient clipping) must see the true gradients
            for name in self._optimizers:
                scaler.unscale_(getattr(self, name + "_"))
        return {"loss": loss, "y_pred": y_pred}

    def _grad_scaler(self):
        scaler = getattr(self, "grad_scaler_", None)
        if scaler is None or scaler.is_enabled() != self._scales_loss():
            self.grad_scaler_ = self._new_grad_scaler()  # also after set_params(precision=, accelerator=)
        return self.grad_scaler_

    def _zero_grad_optimizer(self, set_to_none=None):
        if self._run is None:  # under an accelerator, gradients add up over an accumulation cycle
            super()._zero_grad_optimizer(set_to_none)

    def notify(self, method_name, **cb_kwargs):
        if method_name == "on_grad_computed" and self._run is not None and not self._run.syncs_gradients():
            return  # gradient callbacks (clipping) see the complete gradients of a cycle only
        super().notify(method_name, **cb_kwargs)

    def _step_optimizer(self, step_fn):
        run = self._run
        if run is not None:
            return run.step(step_fn)
        scaler = self._grad_scaler()
        if not scaler.is_enabled():
            return super()._step_optimizer(step_fn)
        step_fn()  # GradScaler cannot step with a closure
        for name in self._optimizers:
            scaler.step(getattr(self, name + "_"))
        scaler.update()
        return None

    # -- prediction -----------------------------------------------------------------------------------

    def forward_iter(self, X, training=False, device="cpu"):
        with self._on_device():
            self._precision()  # float16 set after fitting, on a CPU: raise before the first batch
            self._move_to_device()
            yield from super().forward_iter(X, training=training, device=device)

    def predict_proba(self, X):
        """Class probabilities, one row per image, columns in the order of ``classes_``.

        Parameters
        ----------
        X : images

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self, "module_")
        proba = np.asarray(super().predict_proba(X), dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(proba).all(axis=1))
        if bad.size:
            raise FloatingPointError(
                f"the network's outputs are not finite for samples {bad[:10].tolist()}; the weights may have "
                "diverged during training (refit with a smaller lr or precision='float32')."
            )
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X):
        """The most probable label of each image, of the type the labels had in ``fit``.

        Parameters
        ----------
        X : images

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        codes = self.predict_proba(X).argmax(axis=1)
        return self.classes_[codes]

    def load_params(self, *args, **kwargs):
        if self._run is not None:  # a checkpoint callback: the main process may still be writing the file
            self.accelerator.wait_for_everyone()
        with self._on_device():
            return super().load_params(*args, **kwargs)

    def save_params(self, *args, **kwargs):
        """skorch's ``save_params``; with an accelerator, only the main process writes."""
        if not self._is_main_process():
            return None
        return super().save_params(*args, **kwargs)

    def _is_main_process(self):
        return self.accelerator is None or self.accelerator.is_main_process

    def __setattr__(self, name, value):
        if name in ("model", "augment", "preprocess", "preprocess_"):
            # These may be modules (a user's network, torchvision v2 transforms), but they are parameters or
            # plain fitted state here, not components for skorch to register, move and train.
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, value)

    def _get_param_names(self):
        """skorch's parameters without its private bookkeeping (``_params_to_validate``)."""
        return [name for name in super()._get_param_names() if not name.startswith("_")]

    # -- persistence and tags -------------------------------------------------------------------------

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("grad_scaler_", None)  # may hold CUDA tensors; made again when training resumes
        # The accelerator belongs to the processes that trained: a pickled net predicts on its own
        # ``device`` wherever it is loaded, without accelerate.
        state["accelerator"] = None
        state["_run"] = None  # a checkpoint pickled during training
        return state

    def __setstate__(self, state):
        requested = state["device"]
        if requested == "auto":
            state["device"] = str(resolve_device("auto"))
        super().__setstate__(state)
        if requested == "auto":
            self.device = "auto"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        return tags
