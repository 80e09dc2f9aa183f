"""DomainAdaptedClassifier: a backbone, a bottleneck and a head trained to work on another domain."""

import math
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import column_or_1d
from skorch.utils import to_tensor
from torch import nn
from torch.utils.data import Sampler, Subset

from .._network import BackboneWithHead
from .._training_data import dataset_targets
from .._training_docs import document_parameters
from ..backbones import OFFLINE_MODEL_NAME
from ..training import TransferClassifier
from .domains import UNLABELLED, TargetScoreMixin, split_domains
from .losses import (
    DomainDiscriminator,
    coral_loss,
    domain_adversarial_loss,
    minimum_class_confusion_loss,
    mmd_loss,
    reversal_coefficient,
    reverse_gradient,
)

METHODS = ("dann", "mmd", "coral", "mcc", "source_only")


class DomainAdaptationNetwork(BackboneWithHead):
    """Backbone, bottleneck (Linear, BatchNorm, ReLU) and head; with ``adversarial``, a domain discriminator.

    ``forward`` returns ``(logits, bottleneck features)``, and in training with a discriminator also the
    discriminator's logits on the features through a gradient reversal of strength ``reversal``.

    Examples
    --------
    >>> net = DomainAdaptationNetwork(nn.Linear(4, 8), 8, 3, bottleneck_dim=5, adversarial=True)
    >>> [tuple(out.shape) for out in net(torch.zeros(6, 4))]
    [(6, 3), (6, 5), (6, 1)]
    """

    def __init__(
        self,
        backbone,
        n_features,
        n_classes,
        dropout=0.0,
        freeze_batchnorm=False,
        channels_last=False,
        bottleneck_dim=256,
        discriminator_dim=1024,
        adversarial=False,
    ):
        super().__init__(backbone, bottleneck_dim, n_classes, dropout, freeze_batchnorm, channels_last)
        self.bottleneck = nn.Sequential(
            nn.Linear(n_features, bottleneck_dim), nn.BatchNorm1d(bottleneck_dim), nn.ReLU()
        )
        self.discriminator = DomainDiscriminator(bottleneck_dim, discriminator_dim) if adversarial else None
        self.reversal = 0.0

    def forward(self, x=None, features=None):
        bottleneck = self.bottleneck(self.features(x) if features is None else features)
        logits = self.head(bottleneck).float()
        if self.discriminator is None or not self.training:
            return logits, bottleneck
        return logits, bottleneck, self.discriminator(reverse_gradient(bottleneck, self.reversal))


class DomainBalancedBatchSampler(Sampler):
    """Batches of half source rows and half target rows; an epoch is one pass over the source rows.

    Target rows are drawn in shuffled passes, as many as the source rows need. Without target rows the
    batches are plain shuffled source batches. Batch sizes differ by at most one row.
    """

    def __init__(self, is_target, batch_size):
        self.source = np.flatnonzero(~is_target)
        self.target = np.flatnonzero(is_target)
        self.per_batch = max(1, batch_size // 2) if self.target.size else batch_size

    def __len__(self):
        return math.ceil(len(self.source) / self.per_batch)

    def __iter__(self):
        chunks = np.array_split(self.source[torch.randperm(len(self.source)).numpy()], len(self))
        if not self.target.size:
            yield from (chunk.tolist() for chunk in chunks)
            return
        passes = math.ceil(sum(len(chunk) for chunk in chunks) / len(self.target))
        stream = np.concatenate(
            [self.target[torch.randperm(len(self.target)).numpy()] for _ in range(passes)]
        )
        start = 0
        for chunk in chunks:
            yield [*chunk.tolist(), *stream[start : start + len(chunk)].tolist()]
            start += len(chunk)


@document_parameters
class DomainAdaptedClassifier(TargetScoreMixin, TransferClassifier):
    """Learn from labelled source images and unlabelled target images, to predict well on the target.

    ``fit(X, y, sample_domain=None)`` takes both domains in one X: a row is target when ``y == -1`` or when
    its ``sample_domain`` is negative (positive = source), so that GridSearchCV and cross-validation split
    them together. Target labels are never used for training. :meth:`predict` treats every row as target.

    A skorch classifier like :class:`~sktransfer.FineTuneClassifier`, with its training options: the
    network is the backbone, a bottleneck and a new head, trained on batches of half source and half target
    rows with the classification loss of the labelled rows plus ``trade_off`` times an alignment loss:

    - ``"dann"``: a domain discriminator behind a gradient reversal layer whose strength warms up as
      2 / (1 + exp(-10 p)) - 1 over training progress p (Ganin & Lempitsky 2015);
    - ``"mmd"``: multi-kernel maximum mean discrepancy of the bottleneck features (DAN);
    - ``"coral"``: distance between the features' covariances (Deep CORAL);
    - ``"mcc"``: minimum class confusion of the target predictions (Jin et al. 2020);
    - ``"source_only"``: no alignment, the baseline.

    Parameters
    ----------
    method : {"dann", "mmd", "coral", "mcc", "source_only"}, default="dann"
        The alignment loss.
    trade_off : float, default=1.0
        Weight of the alignment loss.
    bottleneck_dim : int, default=256
        Width of the bottleneck between backbone and head.
    discriminator_dim : int, default=1024
        Hidden width of DANN's domain discriminator.
    strategy : {"full", "gradual", "lp_ft", "linear_probe", "bitfit"}, default="full"
        What trains in the backbone; the bottleneck, head and discriminator always train. ``"full"``: the
        whole backbone from the first epoch. ``"linear_probe"``: none of it. ``"lp_ft"``: none of it for
        ``freeze_epochs`` epochs, then all of it. ``"gradual"``: none of it for ``freeze_epochs`` epochs,
        then its stages from the top down, over ``unfreeze_epochs`` epochs. ``"bitfit"``: its biases and
        norm layers only. Frozen stages stay in evaluation mode, so their BatchNorm statistics do not change.
    recalibrate_batchnorm : bool, default=True
        After training, re-estimate the running statistics of the BatchNorm layers whose statistics
        trained (the bottleneck's always do) with one pass over the target rows, the rows :meth:`predict`
        sees (AdaBN): running averages gathered on mixed source and target batches lag behind the weights
        and partly describe the source domain.
    lr : float, default=1e-3
        Learning rate of the new layers (bottleneck, head and discriminator).
    max_epochs : int, default=10
        Passes over the source rows.
    batch_size : int, default=32
        Rows per step, half source and half target.
    module : type, default=DomainAdaptationNetwork
        The network, built by :meth:`initialize` from the cut backbone, its output width, the number of
        classes, ``dropout``, ``bottleneck_dim``, ``discriminator_dim``, ``adversarial`` (True for DANN)
        and ``module__*`` parameters: a subclass of :class:`DomainAdaptationNetwork` changes the new layers.

    Attributes
    ----------
    module_ : DomainAdaptationNetwork
        The trained network.
    classes_ : ndarray of shape (n_classes,)
        The source labels.
    preprocess_ : callable or None
        The preprocessing applied to each image.
    device_ : torch.device
        Where the network is: ``device`` resolved (``"auto"``) at the last call.
    history_ : skorch.History
        Losses and accuracies (of labelled rows) per epoch.

    See Also
    --------
    sktransfer.domain_adaptation.FeatureAlignmentClassifier : CORAL and subspace alignment on embeddings.
    sktransfer.domain_adaptation.prediction_entropy_scorer : model selection without target labels.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from sktransfer import DomainAdaptedClassifier
    >>> tiny_cnn = nn.Sequential(
    ...     nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)
    ... )
    >>> rng = np.random.default_rng(0)
    >>> source = rng.integers(0, 128, size=(16, 16, 16, 3), dtype=np.uint8)
    >>> X = np.concatenate([source, source + 100])  # the target domain is brighter
    >>> y = np.array(["a", "b"] * 8 + [-1] * 16, dtype=object)
    >>> clf = DomainAdaptedClassifier(method="coral", model=tiny_cnn, max_epochs=2, device="cpu")
    >>> clf.fit(X, y).predict(X[:2]).shape
    (2,)
    """

    _parameter_constraints: dict = {  # noqa: RUF012 (sklearn's convention)
        **TransferClassifier._parameter_constraints,
        "method": [StrOptions(set(METHODS))],
        "trade_off": [Interval(Real, 0, None, closed="left")],
        "bottleneck_dim": [Interval(Integral, 1, None, closed="left")],
        "discriminator_dim": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        method="dann",
        model=OFFLINE_MODEL_NAME,
        weights="DEFAULT",
        trade_off=1.0,
        bottleneck_dim=256,
        discriminator_dim=1024,
        strategy="full",
        layer=None,
        pooling="avg",
        dropout=0.0,
        freeze_batchnorm="auto",
        recalibrate_batchnorm=True,
        lr=1e-3,
        backbone_lr_ratio=0.1,
        layer_decay=1.0,
        weight_decay=0.01,
        label_smoothing=0.0,
        lr_schedule="cosine",
        warmup=0.1,
        freeze_epochs=1,
        unfreeze_epochs=3,
        augment=None,
        precompute_features=True,
        early_stopping=False,
        patience=5,
        validation_fraction=0.1,
        checkpoint_dir=None,
        max_epochs=10,
        batch_size=32,
        preprocess=None,
        num_workers=0,
        device="auto",
        precision="float32",
        accelerator=None,
        random_state=None,
        verbose=0,
        *,
        module=DomainAdaptationNetwork,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.AdamW,
        train_split=None,
        **kwargs,
    ):
        super().__init__(
            module,
            criterion=criterion,
            optimizer=optimizer,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            train_split=train_split,
            device=device,
            verbose=verbose,
            **kwargs,
        )
        self.method = method
        self.model = model
        self.weights = weights
        self.trade_off = trade_off
        self.bottleneck_dim = bottleneck_dim
        self.discriminator_dim = discriminator_dim
        self.strategy = strategy
        self.layer = layer
        self.pooling = pooling
        self.dropout = dropout
        self.freeze_batchnorm = freeze_batchnorm
        self.recalibrate_batchnorm = recalibrate_batchnorm
        self.backbone_lr_ratio = backbone_lr_ratio
        self.layer_decay = layer_decay
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.lr_schedule = lr_schedule
        self.warmup = warmup
        self.freeze_epochs = freeze_epochs
        self.unfreeze_epochs = unfreeze_epochs
        self.augment = augment
        self.precompute_features = precompute_features
        self.early_stopping = early_stopping
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.checkpoint_dir = checkpoint_dir
        self.preprocess = preprocess
        self.num_workers = num_workers
        self.precision = precision
        self.accelerator = accelerator
        self.random_state = random_state

    def fit(self, X, y, sample_domain=None, **fit_params):
        """Train on the labelled source rows and the target rows of X.

        Parameters
        ----------
        X : images or 2-D feature matrix
            Source and target rows together.
        y : array-like of shape (n_samples,)
            Labels of source rows; -1 marks target rows.
        sample_domain : array-like of shape (n_samples,) or None
            Positive for source rows, negative for target rows (whose labels are then ignored). Request it
            with ``set_fit_request(sample_domain=True)`` to route it through Pipeline and GridSearchCV.
        **fit_params : dict
            Passed to skorch.

        Returns
        -------
        self
        """
        return self._fit(X, y, fit_params, sample_domain=sample_domain)

    def partial_fit(self, X, y, classes=None, sample_domain=None, **fit_params):
        """Train ``max_epochs`` more epochs; the first call initialises. See :meth:`fit`."""
        return self._partial_fit(X, y, fit_params, classes=classes, sample_domain=sample_domain)

    def _targets(self, y, n_samples, reset=True, classes=None, sample_domain=None):
        split = split_domains(y, sample_domain, n_samples)
        labels = column_or_1d(y)[split.labelled]
        codes = np.full(n_samples, UNLABELLED, dtype=np.int64)
        codes[split.labelled] = self._encode_labels(labels, len(labels), reset=reset, classes=classes)
        return codes

    _network_kwarg_parameters = {"adversarial": "method"}  # noqa: RUF012 (read-only)

    def _network_kwargs(self):
        return {
            "bottleneck_dim": self.bottleneck_dim,
            "discriminator_dim": self.discriminator_dim,
            "adversarial": self.method == "dann",
        }

    def _batch_sampler(self, dataset, batch_size):
        return DomainBalancedBatchSampler(dataset_targets(dataset) == UNLABELLED, batch_size)

    def get_iterator(self, dataset, training=False):
        iterator = super().get_iterator(dataset, training=training)
        if training:  # this process's batches (an accelerator shards them across processes)
            self._batches_per_epoch = len(iterator)
        return iterator

    def _recalibration_data(self, dataset):
        """The target rows: predict reads every row as a target row, so BatchNorm keeps target statistics.

        This is AdaBN (Li et al. 2016) on top of each method: statistics gathered on the mixed batches of
        training would normalise target features partly with the source domain's mean and variance; those
        of the target rows alone standardise them as the layers above expect. With fewer than two target
        rows, every row is used.
        """
        rows = np.flatnonzero(dataset_targets(dataset) == UNLABELLED)
        return Subset(dataset, rows) if rows.size > 1 else dataset

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        super().on_batch_begin(net, batch=batch, training=training, **kwargs)
        if training and self.module_.discriminator is not None:
            # skorch has just opened this batch's history row, so the rows before it are the batches done.
            done = len(self.history) - 1 + (len(self.history[-1, "batches"]) - 1) / self._batches_per_epoch
            self.module_.reversal = reversal_coefficient(min(done / self.max_epochs, 1.0))

    def get_loss(self, y_pred, y_true, X=None, training=False):
        logits, features = y_pred[0], y_pred[1]
        y_true = to_tensor(y_true, device=self.device)
        labelled = y_true != UNLABELLED
        target = ~labelled
        loss = self.criterion_(logits[labelled], y_true[labelled]) if labelled.any() else logits.sum() * 0
        if not training or self.method == "source_only" or not target.any() or not labelled.any():
            if len(y_pred) == 3:  # the discriminator ran: keep it in the graph (DDP expects every gradient)
                loss = loss + 0 * y_pred[2].sum()
            return loss
        if self.method == "dann":
            alignment = domain_adversarial_loss(y_pred[2], target)
        elif self.method == "mmd":
            alignment = mmd_loss(features[labelled], features[target])
        elif self.method == "coral":
            alignment = coral_loss(features[labelled], features[target])
        else:
            alignment = minimum_class_confusion_loss(logits[target])
        return loss + self.trade_off * alignment

    def embed(self, X):
        """The bottleneck features of X, the space in which the domains are aligned.

        Parameters
        ----------
        X : images or 2-D feature matrix

        Returns
        -------
        features : ndarray of shape (n_samples, bottleneck_dim)
        """
        return self.forward(X)[1].float().numpy()
