"""What DomainAdaptedClassifier minimises: the classification loss, the method's alignment and its stages."""

import warnings

import numpy as np
import torch
from skorch.utils import to_tensor
from torch import nn

from .._stacklevel import caller_stacklevel
from .._unused_settings import warn_of_unused_settings
from ._objective_parts import class_counts, collapsed_classes, copy_of_weights, rows_of, running_sum
from .domains import UNLABELLED
from .losses import (
    SmoothedCoralLoss,
    certainty_weights,
    domain_adversarial_loss,
    minimum_class_confusion_loss,
    mmd_loss,
    partial_class_weights,
    pseudo_label_loss,
    reversal_coefficient,
)
from .networks import ADVERSARIAL


class PartialWithoutAlignmentWarning(UserWarning):
    """``partial=True`` with a method that aligns no source rows: its class weights only weigh the labelled loss."""


class PseudoLabelCollapseWarning(UserWarning):
    """Self-training made the network stop predicting classes it predicted on the target before."""


class UntrainedPseudoLabelsWarning(UserWarning):
    """Self-training starts at the first epoch of a new network, whose first pseudo-labels are guesses."""


class AdaptationObjectiveMixin:
    """The loss of a training batch of both domains, and the schedule of its parts over the epochs.

    Training targets are class indices for labelled rows (source k's shifted by k * n_classes) and -1 for
    target rows. The loss is the classification loss of the labelled rows (weighted per class with
    ``partial``), plus self-training on confident target rows in the last ``self_training_epochs``, plus
    ``trade_off`` times the method's alignment loss. Self-training takes each epoch's pseudo-labels from a
    copy of the trainable weights made at the epoch's first step, not from the network each step leaves.
    The alignment warms up over the epochs, from 0 to ``trade_off`` along DANN's schedule
    2 / (1 + exp(-10 p)) - 1 of the training progress p: through the gradient reversal for DANN and CDAN, as
    a factor of the loss for the others: in the first steps the features and predictions are still those of
    an untrained head, and aligning them is noise. PADA's class weights are updated at the end of each epoch
    from the target predictions and the source rows' classes. The estimator it is mixed into says whether
    BatchNorm normalises the domains apart in training (``_normalises_domains_apart``).
    """

    def _self_training_epochs(self):
        if self.self_training_epochs is not None:
            return self.self_training_epochs
        return self.max_epochs - self.max_epochs // 2 if self.method == "self_training" else 0

    def _check_settings(self, X):
        super()._check_settings(X)
        self._warn_of_settings_the_method_ignores()
        if not self.partial:
            return
        criterion = self.criterion if isinstance(self.criterion, type) else type(self.criterion)
        if criterion is not nn.CrossEntropyLoss:  # a subclass's own forward would be bypassed
            raise ValueError(
                f"partial=True weighs the classes of nn.CrossEntropyLoss; criterion={self.criterion!r} "
                "cannot take those weights: use nn.CrossEntropyLoss (its weight, ignore_index, reduction and "
                "label_smoothing are kept) or partial=False."
            )
        if self.method in ("source_only", "self_training", "mcc"):
            measured = (
                " on the benchmark's partial target (benchmarks/RESULTS.md) it lowered the target accuracy."
                if self.method == "source_only"
                else ""
            )
            warnings.warn(
                f"partial=True with method={self.method!r} weighs the classification loss alone, by the "
                "model's own target predictions: the method aligns no source rows with the target, so the "
                f"class weights cannot keep the alignment away from the absent classes;{measured} Use "
                "partial=True with method='dann', 'cdan', 'mmd' or 'coral', or partial=False.",
                PartialWithoutAlignmentWarning,
                stacklevel=caller_stacklevel(),
            )

    def _warn_of_settings_the_method_ignores(self):
        method = f"method={self.method!r}"
        if self.method in ("source_only", "self_training"):  # no alignment loss for it to weigh
            warn_of_unused_settings(
                self,
                ["trade_off"],
                f"with a method that aligns the domains (dann, cdan, mmd, coral, mcc), not {method}",
            )
        if self.method not in ADVERSARIAL:
            warn_of_unused_settings(
                self, ["discriminator_dim"], f"with method='dann' or 'cdan', not {method}"
            )
        if self.method not in ("mmd", "coral"):
            warn_of_unused_settings(self, ["alignment_layer"], f"with method='mmd' or 'coral', not {method}")
        if self.method != "coral":
            warn_of_unused_settings(self, ["covariance_momentum"], f"with method='coral', not {method}")
        if self._self_training_epochs() == 0:
            how = "self_training_epochs above 0"
            if self.method != "self_training":
                how = f"method='self_training', or {how}"
            warn_of_unused_settings(
                self, ["pseudo_label_threshold", "pseudo_label_balance"], f"with self-training ({how})"
            )

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        super().on_train_begin(net, X=X, y=y, **kwargs)
        if not self.history and self._self_training_epochs() >= self.max_epochs:
            if self.self_training_epochs is None:  # method="self_training" with max_epochs=1
                setting = "method='self_training' self-trains the second half of"
                advice = "Set max_epochs to 2 or more"
            else:
                setting = f"self_training_epochs={self.self_training_epochs} is not below"
                advice = "Set self_training_epochs below max_epochs"
            setting = f"{setting} max_epochs={self.max_epochs}"
            warnings.warn(
                f"{setting}, so self-training starts at the first epoch of a new network: its first "
                "pseudo-labels are the guesses of an untrained head, and PseudoLabelCollapseWarning has no "
                f"predictions from before self-training to compare with. {advice}, or self-train in a later "
                "partial_fit of the fitted network.",
                UntrainedPseudoLabelsWarning,
                stacklevel=caller_stacklevel(),
            )
        self._first_epoch_of_call = len(self.history)
        if (
            not self.partial
            or not self.history
            or len(getattr(self, "class_weights_", ())) != len(self.classes_)
        ):  # a new fit starts from equal weights, and partial=False keeps them
            self.class_weights_ = np.ones(len(self.classes_))
        self._target_probabilities = self._source_counts = None
        self._coral = None  # each fit averages CORAL's covariance difference anew
        self._predicted_counts = self._counts_before_self_training = self._last_counts = None
        self._labelling_weights = None

    def on_train_end(self, net, X=None, y=None, **kwargs):
        super().on_train_end(net, X=X, y=y, **kwargs)
        self._coral = None  # its averages live on the training device: not kept in the fitted estimator
        self._labelling_weights = None  # a copy of the network's weights, for training only
        self._warn_if_self_training_collapsed()

    def __getstate__(self):
        state = super().__getstate__()
        state["_labelling_weights"] = None  # for training only (a fit that raised may have left one)
        return state

    def on_epoch_end(self, net, **kwargs):
        super().on_epoch_end(net, **kwargs)
        if self.partial:  # PADA: what the target predictions say of each class, against the source rows
            summed = self._epoch_total(self._target_probabilities)
            counts = self._epoch_total(self._source_counts)
            if summed is not None and summed.max() > 0 and counts is not None and counts.max() > 0:
                self.class_weights_ = partial_class_weights(summed.cpu(), counts.cpu()).numpy()
        self._target_probabilities = self._source_counts = None
        self._labelling_weights = None  # the next self-training epoch copies the weights it begins with
        counts = self._epoch_total(self._predicted_counts) if self._watches_self_training() else None
        if counts is not None:
            self._last_counts = counts.cpu().numpy()
            epoch = len(self.history) - 1 - self._first_epoch_of_call
            if epoch == self.max_epochs - self._self_training_epochs() - 1:  # the last epoch before it
                self._counts_before_self_training = self._last_counts
        self._predicted_counts = None

    def _epoch_total(self, summed):
        """A per-class sum over this epoch's rows, over every process (each trained on its own batches).

        The target rows' predicted probabilities or counts, or the source rows' counts. Under several
        processes every one takes part in the sum, even one that saw no such row (zeros). None when no
        process saw one.
        """
        if self._run is None or not self._run.distributed:
            return summed
        if summed is None:
            summed = torch.zeros(len(self.classes_), device=self.accelerator.device)
        total = self._run.sum_over_processes(summed.float())
        return total if total.max() > 0 else None  # the same total, so the same answer, in every process

    def _watches_self_training(self):
        # With partial=True, classes the target lacks are meant to leave its predictions.
        return 0 < self._self_training_epochs() < self.max_epochs and not self.partial

    def _warn_if_self_training_collapsed(self):
        """Warn when self-training made classes leave the target predictions: a sign of confirmation bias."""
        before, after = self._counts_before_self_training, self._last_counts
        collapsed = [] if before is None or after is None else collapsed_classes(before, after)
        if not collapsed:
            return
        before, after = before / before.sum(), after / after.sum()
        shares = ", ".join(f"{self.classes_[k]!r} {before[k]:.0%} → {after[k]:.1%}" for k in collapsed)
        warnings.warn(
            f"Self-training (self_training_epochs={self._self_training_epochs()}) made the network all but stop "
            f"predicting {len(collapsed)} of the {len(before)} classes on the target rows (share of the target "
            f"predictions before self-training → at the end: {shares}). Its confident pseudo-labels were "
            "reinforcing the network's own mistakes, and the target accuracy is likely lower than without "
            "self-training (benchmarks/RESULTS.md measures it). Compare it with self_training_epochs=0 (or "
            "method='source_only') on a label-free scorer such as information_maximization_scorer.",
            PseudoLabelCollapseWarning,
            stacklevel=caller_stacklevel(),
        )

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        super().on_batch_begin(net, batch=batch, training=training, **kwargs)
        epoch = len(self.history) - 1 - self._first_epoch_of_call  # skorch has opened this epoch's row
        self._self_training_now = training and epoch >= self.max_epochs - self._self_training_epochs()
        if self._self_training_now and self._labelling_weights is None:
            # The epoch's first step: after the callbacks' on_epoch_begin, which may unfreeze layers.
            self._labelling_weights = copy_of_weights(self.module_)
        if training:
            # skorch has just opened this batch's history row, so the rows before it are the batches done.
            done = len(self.history) - 1 + (len(self.history[-1, "batches"]) - 1) / self._batches_per_epoch
            self._warm_up = reversal_coefficient(min(done / self.max_epochs, 1.0))
            if self.module_.discriminator is not None:
                self.module_.reversal = self._warm_up

    def get_loss(self, y_pred, y_true, X=None, training=False):
        logits = y_pred[0]
        codes = to_tensor(y_true, device=self.device)
        labelled = codes != UNLABELLED
        target = ~labelled
        labels, sources = codes[labelled] % len(self.classes_), codes[labelled] // len(self.classes_)
        class_weights = torch.as_tensor(self.class_weights_, dtype=torch.float32, device=logits.device)
        if not labelled.any():
            loss = logits.sum() * 0
        elif self.partial:  # the criterion's own settings, its class weights times PADA's
            criterion = self.criterion_
            weight = (
                class_weights if criterion.weight is None else class_weights * criterion.weight.to(logits)
            )
            loss = _weighed_cross_entropy(logits[labelled], labels, weight, criterion)
        else:
            loss = self.criterion_(logits[labelled], labels)
        if len(y_pred) == 3:  # the discriminator ran: keep it in the graph (DDP expects every gradient)
            loss = loss + 0 * y_pred[2].sum()
        if training and self.partial:  # each class's source rows this epoch, which the target shares weigh
            self._source_counts = running_sum(self._source_counts, class_counts(labels, len(self.classes_)))
        if not training or not target.any():
            return loss
        if self.partial:
            probabilities = torch.softmax(logits[target].detach(), dim=1).sum(dim=0)
            self._target_probabilities = running_sum(self._target_probabilities, probabilities)
        if self._watches_self_training():  # which classes the network predicts on the target, each epoch
            predicted = class_counts(logits[target].detach().argmax(dim=1), logits.shape[1])
            self._predicted_counts = running_sum(self._predicted_counts, predicted)
        if self._self_training_now:
            loss = loss + pseudo_label_loss(
                logits[target],
                self.pseudo_label_threshold,
                self.pseudo_label_balance,
                labelling_logits=self._labelling_logits(X, target),
            )
        if self.method in ("source_only", "self_training") or not labelled.any():
            return loss
        # The reversal layer warms the adversarial methods up; the other alignment losses warm up alike.
        warm_up = 1.0 if self.method in ADVERSARIAL else self._warm_up
        return loss + self._trade_off() * warm_up * self._alignment(
            y_pred, codes, labels, sources, class_weights
        )

    def _labelling_logits(self, X, rows):
        """The logits that the network as it was at this epoch's first step gives the ``rows`` of batch ``X``.

        Pseudo-labels from the network being trained reinforce themselves within the epoch: each step
        makes its own confident predictions more confident, and on a weak network classes empty out. The
        copy runs in training mode, as the network does: BatchNorm normalises the target rows by their own
        batch statistics where the training forward does (``domain_batchnorm``), else the whole batch is
        run, and dropout draws its own mask.
        """
        apart = self._normalises_domains_apart()
        if apart:  # each domain normalised on its own: the target rows alone give the same logits
            X = rows_of(X, rows)  # moved to the device after selection: fewer rows to copy
        args, kwargs = self._forward_arguments(X, {})
        with torch.no_grad(), self._autocast():
            logits = torch.func.functional_call(self.module_, self._labelling_weights, args, kwargs)[0]
        return logits if apart else logits[rows]

    def _coral_loss(self):
        if getattr(self, "_coral", None) is None:
            self._coral = SmoothedCoralLoss(self._covariance_momentum())
        return self._coral

    def _covariance_momentum(self):
        if self.covariance_momentum != "auto":
            return self.covariance_momentum
        return 0.0 if self.partial else 0.9

    def _trade_off(self):
        if self.trade_off != "auto":
            return self.trade_off
        return 0.3 if self.method in ADVERSARIAL else 1.0

    def _alignment(self, y_pred, codes, labels, sources, class_weights):
        """The method's alignment loss on a training batch that holds source and target rows."""
        logits, features = y_pred[0], y_pred[1]
        labelled = codes != UNLABELLED
        target = ~labelled
        if self.method in ADVERSARIAL:
            weights = torch.ones(len(codes), device=logits.device)
            if self.method == "cdan":
                weights = certainty_weights(logits)
            if self.partial:
                weights[labelled] = weights[labelled] * class_weights[labels]
            index = torch.zeros(len(codes), dtype=torch.long, device=logits.device)
            index[labelled] = sources
            return domain_adversarial_loss(y_pred[2], target, index, weights)
        if self.method == "mcc":
            return minimum_class_confusion_loss(logits[target])
        coral = self._coral_loss() if self.method == "coral" else None
        aligned = logits if self.alignment_layer == "logits" else features
        source_rows = aligned[labelled]
        weights = class_weights[labels] if self.partial else None  # PADA weighs the source rows' classes
        per_source = []
        for k in range(self._n_sources):
            rows = sources == k
            if not _enough_rows(rows, weights):
                continue
            source_weights = None if weights is None else weights[rows]
            pair = (source_rows[rows], aligned[target])
            per_source.append(
                mmd_loss(*pair, source_weights=source_weights)
                if coral is None
                else coral(*pair, source_weights=source_weights, key=k)  # an average per source
            )
        return torch.stack(per_source).mean() if per_source else logits.sum() * 0


def _enough_rows(rows, weights):
    """Whether the ``rows`` (a mask) of a source can be aligned: two at least, as a covariance needs, of
    weight above 0, and, weighed, more than one row's worth (an effective sample size ``(sum w)^2 / sum w^2``
    above 1): rows weighed near 0 beside one of weight 1 leave a weighted covariance dividing by almost 0
    (in float32, by 0)."""
    if weights is None:
        return int(rows.sum()) >= 2
    chosen = weights[rows].double()
    if int((chosen > 0).sum()) < 2:
        return False
    return bool(chosen.sum() ** 2 / (chosen**2).sum() > 1 + _LEAST_EXTRA_ROWS)


# How much more than one row a source's weighed rows must count as (see _enough_rows).
_LEAST_EXTRA_ROWS = 1e-3


def _weighed_cross_entropy(logits, labels, weight, criterion):
    """Each row's cross-entropy (with the criterion's label smoothing) weighed by its class's ``weight``, and
    reduced as the criterion reduces.

    Without smoothing this is torch's weighted cross-entropy. With it, torch weighs a row's smoothing term by
    the other classes' weights, and its mean divides by the weights of the rows' own classes: a batch of
    classes that PADA weighs near 0 gave a loss near 1e36 (exactly 0: NaN). Here the mean is over the rows'
    weights, 0 where they are all 0.
    """
    per_row = nn.functional.cross_entropy(
        logits,
        labels,
        ignore_index=criterion.ignore_index,
        reduction="none",
        label_smoothing=criterion.label_smoothing,
    )
    counted = labels != criterion.ignore_index
    row_weights = torch.where(counted, weight[torch.where(counted, labels, 0)], 0.0)
    weighed = row_weights * per_row
    if criterion.reduction == "none":
        return weighed
    if criterion.reduction == "sum":
        return weighed.sum()
    total = row_weights.sum()
    return torch.where(
        total > 0, weighed.sum() / total.clamp_min(torch.finfo(total.dtype).tiny), weighed.sum() * 0
    )
