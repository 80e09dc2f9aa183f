"""The network DomainAdaptedClassifier trains, and the batches of both domains it trains on."""

import math

import numpy as np
import torch
from skorch.utils import to_tensor
from torch import nn
from torch.utils.data import Sampler, Subset

from .._network import BackboneWithHead
from .._training_data import dataset_targets
from .domains import UNLABELLED
from .losses import DomainDiscriminator, MultilinearMap, reverse_gradient

ADVERSARIAL = ("dann", "cdan")


class DomainAdaptationNetwork(BackboneWithHead):
    """Backbone, bottleneck (Linear, BatchNorm, ReLU) and head; with ``adversarial``, a domain discriminator.

    ``forward`` returns ``(logits, bottleneck features)``, and in training with a discriminator also the
    discriminator's logits (one column per source domain) through a gradient reversal of strength
    ``reversal``. The discriminator reads the bottleneck features (``adversarial="dann"``) or their
    multilinear map with the predicted class probabilities (``"cdan"``).

    With ``is_target`` (a boolean row mask) in training, the rows of each domain go through the backbone
    and the bottleneck on their own: every BatchNorm layer normalises a domain with its own batch
    statistics, as prediction (target rows only) and AdaBN do afterwards. The discriminator sees both.

    Examples
    --------
    >>> net = DomainAdaptationNetwork(nn.Linear(4, 8), 8, 3, bottleneck_dim=5, adversarial="dann")
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
        discriminator_dim=512,
        adversarial=None,
        n_sources=1,
    ):
        super().__init__(backbone, bottleneck_dim, n_classes, dropout, freeze_batchnorm, channels_last)
        self.bottleneck = nn.Sequential(
            nn.Linear(n_features, bottleneck_dim), nn.BatchNorm1d(bottleneck_dim), nn.ReLU()
        )
        self.conditioning = MultilinearMap(bottleneck_dim, n_classes) if adversarial == "cdan" else None
        width = bottleneck_dim if self.conditioning is None else self.conditioning.out_features
        self.discriminator = (
            DomainDiscriminator(width, discriminator_dim, n_sources) if adversarial in ADVERSARIAL else None
        )
        self.reversal = 0.0

    def forward(self, x=None, features=None, is_target=None):
        inputs, read = (x, self.features) if features is None else (features, nn.Identity())
        if self.training and is_target is not None and 0 < int(is_target.sum()) < len(is_target):
            order = torch.cat([torch.nonzero(~is_target)[:, 0], torch.nonzero(is_target)[:, 0]])
            parts = [self.bottleneck(read(inputs[rows])) for rows in (~is_target, is_target)]
            bottleneck = torch.cat(parts)[torch.argsort(order)]
        else:
            bottleneck = self.bottleneck(read(inputs))
        logits = self.head(bottleneck).float()
        if self.discriminator is None or not self.training:
            return logits, bottleneck
        domain_input = bottleneck
        if self.conditioning is not None:  # CDAN: features conditioned on the (fixed) predictions
            domain_input = self.conditioning(bottleneck.float(), torch.softmax(logits, dim=1).detach())
        return logits, bottleneck, self.discriminator(reverse_gradient(domain_input, self.reversal))


class DomainBalancedBatchSampler(Sampler):
    """Batches of half source rows and half target rows; an epoch is one pass over the source rows.

    Target rows are drawn in shuffled passes, as many as the source rows need. Without target rows the
    batches are plain shuffled source batches. The batches' numbers of source rows differ by at most one
    (and so do their numbers of target rows), and unless ``batch_size`` asks for a single source row per
    batch, no batch holds fewer than two source rows (BatchNorm normalises a batch by its statistics): five
    source rows at two per batch make batches of three and two.

    Examples
    --------
    >>> sampler = DomainBalancedBatchSampler(np.array([False] * 4 + [True] * 2), batch_size=4)
    >>> [len(batch) for batch in sampler]
    [4, 4]
    """

    def __init__(self, is_target, batch_size):
        self.source = np.flatnonzero(~is_target)
        self.target = np.flatnonzero(is_target)
        self.per_batch = max(1, batch_size // 2) if self.target.size else batch_size

    def __len__(self):
        n_batches = math.ceil(len(self.source) / self.per_batch)
        if self.per_batch > 1:  # no batch of a single source row, which BatchNorm cannot normalise
            n_batches = min(n_batches, max(1, len(self.source) // 2))
        return n_batches

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


class DomainBatchesMixin:
    """How the training batches hold the two domains: half of each, and BatchNorm statistics per domain.

    Batches are drawn by :class:`DomainBalancedBatchSampler`; with ``domain_batchnorm`` the network
    normalises each domain's rows of a batch apart (its ``is_target`` input), and after training BatchNorm is
    recalibrated on the target rows alone (AdaBN), which prediction reads.
    """

    def _refuse_batches_too_small_for_batchnorm(self, has_target_rows):
        """BatchNorm normalises a batch by its own statistics, which one row cannot give."""
        if self.batch_size < 2:
            raise ValueError(
                f"batch_size={self.batch_size} gives training batches of one row, and the bottleneck's "
                "BatchNorm needs at least 2: use batch_size >= 2 (>= 4 with target rows and per-domain BatchNorm)."
            )
        if has_target_rows and self.batch_size < 4 and self._normalises_domains_apart():
            raise ValueError(
                f"batch_size={self.batch_size} gives each training batch {self.batch_size // 2} source row and "
                "as many target rows, and BatchNorm, which normalises each domain's rows apart in training "
                f"(domain_batchnorm={self.domain_batchnorm!r}), needs at least 2 rows of each: use "
                "batch_size >= 4."
            )

    def _normalises_domains_apart(self):
        """Whether BatchNorm normalises each domain's rows by their own statistics in training."""
        return not (self.domain_batchnorm is False or (self.domain_batchnorm == "auto" and self.partial))

    def _training_inputs(self, y):
        if not self._normalises_domains_apart():
            return {}
        return {"is_target": to_tensor(y, device=self.device) == UNLABELLED}

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
