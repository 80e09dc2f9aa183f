"""Layers that normalise by the statistics of each batch even in evaluation, and the warning they bring."""

import warnings

from torch import nn

from ._stacklevel import caller_stacklevel


class BatchStatisticsWarning(UserWarning):
    """A layer of the network makes each image's output depend on the other images of its batch."""


def batch_statistics_layers(module):
    """Names of ``module``'s BatchNorm layers that keep no running statistics (they read each batch's own).

    Examples
    --------
    >>> from torch import nn
    >>> batch_statistics_layers(nn.Sequential(nn.BatchNorm1d(4, track_running_stats=False), nn.BatchNorm1d(4)))
    ['0']
    """
    return [
        name
        for name, layer in module.named_modules()
        if isinstance(layer, nn.modules.batchnorm._NormBase)
        and not isinstance(layer, nn.modules.instancenorm._InstanceNorm)  # one image's statistics
        and layer.running_mean is None
    ]


def has_batchnorm(module):
    """Whether ``module`` holds a BatchNorm layer, which cannot train on a batch of one row.

    Examples
    --------
    >>> from torch import nn
    >>> has_batchnorm(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))), has_batchnorm(nn.Linear(4, 2))
    (True, False)
    """
    return any(isinstance(layer, nn.modules.batchnorm._BatchNorm) for layer in module.modules())


def warn_of_batch_statistics(module, outputs):
    """Warn when ``module`` normalises by each batch's statistics in evaluation, naming the layers.

    ``outputs`` says what depends on the batch (``"embeddings"``, ``"predictions"``).
    """
    names = batch_statistics_layers(module)
    if not names:
        return
    listed = ", ".join(repr(name) for name in names[:5]) + (
        f" and {len(names) - 5} more" if len(names) > 5 else ""
    )
    several = len(names) > 1
    warnings.warn(
        f"The network's BatchNorm layer{'s' if several else ''} {listed} keep{'' if several else 's'} no "
        f"running statistics (track_running_stats=False): {'they normalise' if several else 'it normalises'} each "
        f"batch by its own statistics even in evaluation, so an image's {outputs} depend on the other images "
        "of its batch (batch_size, the folds of a search, the images the cache already holds). Use BatchNorm "
        "with track_running_stats=True (trained, or fitted on your images), or a norm of one image at a time "
        "(GroupNorm, LayerNorm).",
        BatchStatisticsWarning,
        stacklevel=caller_stacklevel(),
    )
