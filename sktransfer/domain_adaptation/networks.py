"""The network DomainAdaptedClassifier trains: backbone, bottleneck, head and domain discriminator."""

import torch
from torch import nn

from .._network import BackboneWithHead
from .losses import DomainDiscriminator, MultilinearMap, reverse_gradient

ADVERSARIAL = ("dann", "cdan")
# The discriminator's hidden width with a backbone (DomainAdaptedClassifier's discriminator_dim="auto").
DISCRIMINATOR_DIM = 512


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
        discriminator_dim=DISCRIMINATOR_DIM,
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
