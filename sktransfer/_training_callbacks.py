"""skorch callbacks of the trainable estimators: unfreezing on a schedule, warm-up, BatchNorm recalibration."""

import copy
import math
import os
from numbers import Integral

import numpy as np
import torch
from skorch.callbacks import Checkpoint, EarlyStopping, EpochScoring, LRScheduler, PrintLog, ProgressBar
from skorch.callbacks.base import Callback
from skorch.dataset import unpack_data
from skorch.utils import to_numpy
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR
from torch.utils.data import Subset

from ._labelled_scoring import LabelledRowsScorer, compares_labels
from ._labels import UNLABELLED
from ._progress import notebook_bars, shows_progress
from ._training_data import label_codes
from ._training_state import CALLBACK_SETTINGS


def trainable_stage_count(strategy, epoch, n_stages, freeze_epochs, unfreeze_epochs):
    """How many of the ``n_stages`` backbone stages train during ``epoch`` (counted from 0).

    ``"linear_probe"``, ``"bitfit"`` and ``"lora"`` train none (BitFit trains biases and norms on top, LoRA
    its low-rank adapters), ``"full"`` all.
    ``"lp_ft"`` trains the head alone for ``freeze_epochs`` epochs, then everything. ``"gradual"`` also
    starts with the head alone, then unfreezes the stages from the top down in ``unfreeze_epochs`` equal
    steps, one per epoch.

    Examples
    --------
    >>> [trainable_stage_count("gradual", epoch, 9, 1, 3) for epoch in range(5)]
    [0, 3, 6, 9, 9]
    """
    if strategy in ("linear_probe", "bitfit", "lora"):
        return 0
    if strategy == "full":
        return n_stages
    if epoch < freeze_epochs:
        return 0
    if strategy == "lp_ft":
        return n_stages
    steps = min(epoch - freeze_epochs + 1, unfreeze_epochs)
    return math.ceil(n_stages * steps / unfreeze_epochs)


class StageUnfreezer(Callback):
    """Sets, at the start of each epoch, which backbone stages train, following the net's ``strategy``.

    The count is recorded in the history as ``trainable_stages``, and the share of the network's parameters
    that train (adapters and head included) as ``trainable_fraction``.
    """

    def on_epoch_begin(self, net, **kwargs):
        count = net._trainable_stages(len(net.history) - 1)
        net.module_.set_trainable(count, bitfit=net.strategy == "bitfit")
        net.history.record("trainable_stages", count)
        sizes = [(parameter.numel(), parameter.requires_grad) for parameter in net.module_.parameters()]
        net.history.record(
            "trainable_fraction", sum(n for n, trains in sizes if trains) / sum(n for n, _ in sizes)
        )


class WarmupSchedule:
    """Learning-rate factor at a step: linear warm-up to 1, then a cosine decay to 0 (or a constant 1)."""

    def __init__(self, total_steps, warmup_steps, shape="cosine"):
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.shape = shape

    def __call__(self, step):
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.shape == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


class WarmupLR(LRScheduler):
    """skorch's LRScheduler, stepped every batch, with a schedule sized to the training set.

    The number of steps is only known once the training data is split, so the torch scheduler is made at
    the first epoch. ``shape`` is ``"cosine"`` or ``"constant"`` (after a linear warm-up over the fraction
    ``warmup`` of all steps), or ``"onecycle"`` (torch's OneCycleLR, warming up over the same fraction).
    Each parameter group keeps its own peak rate.
    """

    def __init__(self, shape="cosine", warmup=0.1, event_name="event_lr"):
        super().__init__(policy=LambdaLR, step_every="batch", event_name=event_name)
        self.shape = shape
        self.warmup = warmup

    @property
    def kwargs(self):
        return {}

    def on_train_begin(self, net, **kwargs):
        self.lr_scheduler_ = None

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        if self.lr_scheduler_ is not None:
            return
        total = net.max_epochs * len(net.get_iterator(dataset_train, training=True))
        if self.shape == "onecycle" and total >= 4:  # OneCycleLR needs two steps in each phase
            self.lr_scheduler_ = OneCycleLR(
                net.optimizer_,
                max_lr=[group.get("initial_lr", group["lr"]) for group in net.optimizer_.param_groups],
                total_steps=total,
                pct_start=min(max(self.warmup, 2 / total), 0.5),
                cycle_momentum=False,  # the learning rate only: the optimizer's betas or momentum as given
            )
        else:
            warmup_steps = round(self.warmup * total)
            self.lr_scheduler_ = LambdaLR(net.optimizer_, WarmupSchedule(total, warmup_steps, self.shape))

    def on_train_end(self, net, **kwargs):
        self.lr_scheduler_ = None  # it holds the optimizer; a fitted net pickles without a copy of it


def refuse_two_schedules(estimator):
    """Raise when ``callbacks`` holds an LRScheduler of the user's while ``lr_schedule`` schedules the rate too.

    Both would set the learning rate: the library's at every batch, from its base rate, so that an epoch-level
    scheduler of the user's held for one batch per epoch, and both wrote the ``event_lr`` of the history.
    """
    if estimator.lr_schedule is None or not isinstance(estimator.callbacks, list | tuple):
        return
    for item in estimator.callbacks:
        callback = item[1] if isinstance(item, tuple) and len(item) == 2 else item
        kind = callback if isinstance(callback, type) else type(callback)
        if issubclass(kind, LRScheduler):
            raise ValueError(
                f"callbacks holds a learning-rate scheduler of yours ({kind.__name__}), and "
                f"lr_schedule={estimator.lr_schedule!r} schedules the rate too: each would overwrite the other. "
                "Set lr_schedule=None to let yours set the rate, or drop yours."
            )


def _tracked_batchnorms(module):
    return [
        (name, layer)
        for name, layer in module.named_modules()
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.track_running_stats
    ]


class BatchNormRecalibration(Callback):
    """Re-estimates, after training, the running statistics of the BatchNorm layers that trained.

    Running statistics follow the batches with a momentum (0.01 in EfficientNet), so after a short
    training they still mostly describe the initial weights and evaluation-mode predictions suffer, most
    after training from scratch, where the weights moved furthest. One pass over the
    training images (without augmentation), with only these layers in training mode and a cumulative
    average, replaces them by the statistics of the final weights. Where ``checkpoint_dir``'s checkpoint
    holds these very weights (early stopping restored them, or the last epoch was the best), it is saved
    again with the new statistics, so that loading it gives the fitted network.
    """

    def on_train_begin(self, net, **kwargs):
        self.counts_ = {
            name: int(layer.num_batches_tracked) for name, layer in _tracked_batchnorms(net.module_)
        }
        self.dataset_ = None

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        self.dataset_ = dataset_train

    def on_train_end(self, net, **kwargs):
        dataset, self.dataset_ = self.dataset_, None
        trained = [
            layer
            for name, layer in _tracked_batchnorms(net.module_)
            if int(layer.num_batches_tracked) != self.counts_.get(name)
        ]
        if trained and dataset is not None:
            recalibrate_batchnorm(net, trained, net._recalibration_data(dataset))
            _save_checkpoint_again(net)


# What a BatchNorm layer's state holds beside its weights: the statistics that recalibration sets.
_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def _save_checkpoint_again(net):
    """Save the parameters of ``checkpoint_dir``'s checkpoint again where it holds the weights ``net`` ends
    with: all but the BatchNorm statistics equal."""
    checkpoint = dict(net.callbacks_).get("checkpoint")
    if net.checkpoint_dir is None or not isinstance(checkpoint, Checkpoint):
        return  # the library's own checkpoint only, not a user's callback of that name
    if not isinstance(checkpoint.f_params, str) or "{" in checkpoint.f_params:
        return  # a file per epoch: which one the weights came from is not known here
    if not getattr(net, "_is_main_process", lambda: True)():
        return  # the main process writes the files
    path = os.path.join(checkpoint.dirname, checkpoint.fn_prefix + checkpoint.f_params)
    if not os.path.exists(path):
        return
    saved = torch.load(path, map_location="cpu", weights_only=True)
    current = net.module_.state_dict()
    if saved.keys() == current.keys() and all(
        name.rsplit(".", 1)[-1] in _STATISTICS or torch.equal(value, current[name].cpu())
        for name, value in saved.items()
    ):
        net.save_params(f_params=path)


class EpochTable(PrintLog):
    """skorch's table of epochs, printed as the progress bars are drawn: from ``verbose=1`` in the main
    program, from 2 in a joblib worker, where the folds of ``cross_val_score(..., n_jobs=2)`` would print
    their rows into one another's table. Another ``sink`` than ``print`` receives every row."""

    def on_epoch_end(self, net, **kwargs):
        if self.sink is print and not shows_progress(net.verbose):
            return
        super().on_epoch_end(net, **kwargs)


def recalibrate_batchnorm(net, layers, dataset):
    """Set the running statistics of ``layers`` (BatchNorm layers of ``net.module_``) from ``dataset``.

    The rows are read in a fixed shuffled order: the statistics average those of the batches, and batches
    of rows in X's order (a folder's images, class by class) would each miss the variance between classes.
    """
    # the same order for every fit: a fixed generator, not the user's stream
    dataset = Subset(dataset, np.random.default_rng(0).permutation(len(dataset)).tolist())
    module = net.module_
    was_training = module.training
    module.eval()
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average
        layer.train()
    with torch.no_grad():
        for batch in net.get_iterator(dataset, training=False):
            inputs, _ = unpack_data(batch)
            if len(next(iter(inputs.values())) if isinstance(inputs, dict) else inputs) > 1:
                net.infer(inputs)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
    module.train(was_training)


def encoded_accuracy(net, X, y):
    """Accuracy of ``net`` against encoded labels (what skorch's validation scoring hands over).

    Rows labelled -1 (unlabelled, as in domain adaptation) are left out. Codes past the last class are
    those of further source domains (class + k * n_classes) and count as their class.
    """
    y = np.asarray(y)
    labelled = y >= 0
    if not labelled.any():
        return float("nan")
    proba = net.predict_proba(X)
    return float(np.mean(proba.argmax(axis=1)[labelled] == y[labelled] % proba.shape[1]))


def encoded_labels(y):
    """The class codes of a batch's targets, as a numpy array (the target extractor of scoring callbacks)."""
    return to_numpy(label_codes(y))


def _is_true(flag):
    return isinstance(flag, bool | np.bool_) and bool(flag)


class CallbacksMixin:
    """The callbacks a trainable estimator's parameters ask for, around skorch's own.

    Logging of losses and validation accuracy, stage unfreezing, the warmed-up schedule (``lr_schedule``),
    checkpoints (``checkpoint_dir``), a progress bar (``verbose``), early stopping and BatchNorm
    recalibration. Scoring callbacks that compare labels get them decoded, as ``predict`` returns them.
    """

    @property
    def _default_callbacks(self):
        # skorch also reads this in get_params, with whatever values set_params received: no validation here.
        skorch_defaults = dict(super()._default_callbacks)
        callbacks = [
            *((name, skorch_defaults[name]) for name in ("epoch_timer", "train_loss", "valid_loss")),
            (
                "valid_acc",
                EpochScoring(
                    encoded_accuracy, name="valid_acc", lower_is_better=False, target_extractor=encoded_labels
                ),
            ),
            ("unfreezer", StageUnfreezer()),
        ]
        if isinstance(self.lr_schedule, str):
            callbacks.append(("lr_schedule", WarmupLR(self.lr_schedule, self._warmup())))
        if isinstance(self.checkpoint_dir, str | os.PathLike):
            monitor = "valid_loss_best" if self._validates() else "train_loss_best"
            callbacks.append(("checkpoint", Checkpoint(monitor=monitor, dirname=str(self.checkpoint_dir))))
        if isinstance(self.verbose, Integral) and shows_progress(self.verbose):
            callbacks.append(("progress_bar", ProgressBar(detect_notebook=notebook_bars())))
        callbacks.append(("print_log", EpochTable()))
        # Early stopping ends an epoch by raising, so it comes after the callbacks that log the epoch; the
        # recalibration comes after it, so that it sees the best weights early stopping restores.
        if _is_true(self.early_stopping):
            callbacks.append(("early_stopping", EarlyStopping(patience=self.patience, load_best=True)))
        if _is_true(self.recalibrate_batchnorm):
            callbacks.append(("batchnorm_recalibration", BatchNormRecalibration()))
        return callbacks

    def initialize_callbacks(self):
        """skorch's callbacks; scoring callbacks that compare labels get them decoded, as predict gives them.

        Rows without a label (-1: target rows, rows only a teacher labels) keep -1, as the library's
        label-free scorers read them; scikit-learn's metrics (a scoring name, a scorer, or ``None`` for the
        net's ``score``) are computed on the labelled rows alone, unless -1 is one of the classes (without
        a teacher, -1 is a label like any other).
        """
        super().initialize_callbacks()
        decoded = []
        for name, callback in self.callbacks_:
            if isinstance(callback, EpochScoring) and callback.target_extractor is to_numpy:
                callback = copy.copy(callback)  # the user's callback object stays as given
                callback.target_extractor = self._decode_targets
                if compares_labels(callback.scoring_):
                    callback.scoring_ = LabelledRowsScorer(callback.scoring_)
            decoded.append((name, callback))
        self.callbacks_ = self._main_process_callbacks(decoded)
        self._callbacks_made_for = self._settings(CALLBACK_SETTINGS)
        return self

    def _decode_targets(self, y):
        """The labels of training codes, as predict gives them; -1 (no label) stays -1.

        A further source domain's codes (class + k * n_classes) read as their class.
        """
        codes = encoded_labels(y)
        labelled = codes != UNLABELLED
        labels = self.classes_[np.where(labelled, codes, 0) % len(self.classes_)]
        if labelled.all():
            return labels
        if labels.dtype.kind in "iuf":
            return np.where(labelled, labels, UNLABELLED)
        labels = labels.astype(object)
        labels[~labelled] = UNLABELLED
        return labels

    def _validates(self):
        return self.train_split is not None or _is_true(self.early_stopping)
