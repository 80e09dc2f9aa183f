"""The training batches of DomainAdaptedClassifier: half source, half target, normalised per domain."""

import math

import numpy as np
import torch
from skorch.utils import to_tensor
from torch.utils.data import Sampler, Subset

from .._training_data import dataset_targets
from .domains import UNLABELLED


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
        rows, every row is used. With ``partial=True`` and the domains normalised together in training, the
        target alone, which lacks classes, would shift its features: every source and target row is read, the
        smaller domain's repeated, so that each weighs half, as in the training batches.
        """
        target = dataset_targets(dataset) == UNLABELLED
        rows = np.flatnonzero(target)
        if rows.size < 2:
            return dataset
        source = np.flatnonzero(~target)
        if self.partial and not self._normalises_domains_apart() and source.size:
            size = max(rows.size, source.size)
            rows = np.concatenate([np.resize(rows, size), np.resize(source, size)])
        return Subset(dataset, rows)
