"""Losses that pull the features of two domains together, and the gradient reversal layer of DANN."""

import torch
from torch import nn


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coefficient):
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coefficient * grad, None


def reverse_gradient(x, coefficient=1.0):
    """Identity on the way forward; multiplies the gradient by ``-coefficient`` on the way back.

    Examples
    --------
    >>> x = torch.ones(2, requires_grad=True)
    >>> reverse_gradient(x, 0.5).sum().backward()
    >>> x.grad
    tensor([-0.5000, -0.5000])
    """
    return _ReverseGradient.apply(x, coefficient)


def reversal_coefficient(progress, gamma=10.0):
    """Ganin & Lempitsky (2015)'s warm-up of the reversal strength: 2 / (1 + exp(-gamma p)) - 1.

    Examples
    --------
    >>> [round(reversal_coefficient(p), 3) for p in (0.0, 0.1, 1.0)]
    [0.0, 0.462, 1.0]
    """
    return float(2.0 / (1.0 + torch.exp(torch.tensor(-gamma * progress))) - 1.0)


class DomainDiscriminator(nn.Sequential):
    """A small MLP that tells source features (0) from target features (1): one logit per source domain.

    Column k of its output separates source domain k from the target, on shared hidden layers.
    """

    def __init__(self, in_features, hidden=1024, n_sources=1):
        super().__init__(
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_sources),
        )


class MultilinearMap(nn.Module):
    """CDAN's conditioning (Long et al. 2018): features ⊗ class probabilities, randomised when large.

    The outer product has ``n_features * n_classes`` columns; above ``max_features`` columns, both factors
    are projected by fixed random matrices to ``max_features`` columns and multiplied element-wise (the
    randomised multilinear map, whose inner products approximate the full map's). The default of 1024 is
    the paper's randomised width: a 256-wide bottleneck with 10 classes gives the discriminator 1024 inputs,
    not the full map's 2560 (a first layer 2.5 times as large).

    Examples
    --------
    >>> MultilinearMap(8, 3)(torch.ones(2, 8), torch.ones(2, 3) / 3).shape
    torch.Size([2, 24])
    >>> MultilinearMap(256, 10).out_features
    1024
    """

    def __init__(self, n_features, n_classes, max_features=1024):
        super().__init__()
        self.randomised = n_features * n_classes > max_features
        self.out_features = max_features if self.randomised else n_features * n_classes
        if self.randomised:
            generator = torch.Generator().manual_seed(0)
            self.register_buffer("feature_map", torch.randn(n_features, max_features, generator=generator))
            self.register_buffer("class_map", torch.randn(n_classes, max_features, generator=generator))

    def forward(self, features, probabilities):
        if self.randomised:
            projected = (features @ self.feature_map) * (probabilities @ self.class_map)
            return projected / self.out_features**0.5
        return torch.einsum("nc,nf->ncf", probabilities, features).flatten(1)


def certainty_weights(logits):
    """CDAN+E's row weights, 1 + exp(-entropy of the prediction), scaled to average 1 over the rows.

    Examples
    --------
    >>> certainty_weights(torch.tensor([[9.0, 0.0], [0.0, 0.0]])).tolist() > [1.0, 1.0]
    True
    """
    probabilities = torch.softmax(logits.detach().float(), dim=1)
    entropy = -(probabilities * torch.log(probabilities + 1e-5)).sum(dim=1)
    weights = 1 + torch.exp(-entropy)
    return len(weights) * weights / weights.sum()


def domain_adversarial_loss(domain_logits, is_target, source_index=None, weights=None):
    """Binary cross-entropy of the discriminator: source rows labelled 0, target rows 1.

    With several source domains (``source_index``, the domain of each source row, and one logit column
    per source), column k is the discriminator of source k against the target: a source row is scored on
    its own column, a target row on every column. Source and target rows weigh half each; ``weights``
    (one per row) weigh rows within them.

    Examples
    --------
    >>> logits, is_target = torch.zeros(4, 1), torch.tensor([False, False, True, True])
    >>> round(float(domain_adversarial_loss(logits, is_target)), 4)
    0.6931
    """
    logits = domain_logits.float()
    weights = torch.ones(len(logits), device=logits.device) if weights is None else weights
    source = ~is_target
    column = torch.zeros(int(source.sum()), dtype=torch.long, device=logits.device)
    if source_index is not None:
        column = source_index[source]
    source_logits = logits[source].gather(1, column[:, None])[:, 0]
    source_loss = nn.functional.binary_cross_entropy_with_logits(
        source_logits, torch.zeros_like(source_logits), reduction="none"
    )
    target_loss = nn.functional.binary_cross_entropy_with_logits(
        logits[is_target], torch.ones_like(logits[is_target]), reduction="none"
    ).mean(dim=1)
    return 0.5 * (
        _weighted_mean(source_loss, weights[source]) + _weighted_mean(target_loss, weights[is_target])
    )


def _weighted_mean(values, weights):
    return (values * weights).sum() / weights.sum().clamp_min(1e-12)


def partial_class_weights(target_probabilities, source_counts):
    """Class weights for partial adaptation: each class's share of the target over its share of the source.

    ``target_probabilities`` sums the target rows' predicted probabilities per class and ``source_counts``
    counts the labelled source rows per class; a class's weight is the ratio of its two shares, capped at 1,
    an estimate of how much rarer the class is in the target than in the source. PADA (Cao et al. 2018)
    divides the target shares by their maximum instead, which leaves every class but the one the
    predictions favour most far below 1: on the benchmark's partial target, whose shifted images DANN
    predicted as one digit five to ten times as often as each other digit the target held, those digits
    weighed 0.1 to 0.2, about as little as the absent ones (0.01 to 0.33), and the source rows that teach
    them hardly trained. A class without source rows keeps the weight 1. Float64 on the CPU: pass CPU
    tensors (Apple's MPS has no float64).

    Examples
    --------
    >>> shares = torch.tensor([0.5, 0.3, 0.2, 0.0])  # the target's predictions favour the first class
    >>> partial_class_weights(shares, torch.tensor([25, 25, 25, 25]))
    tensor([1.0000, 1.0000, 0.8000, 0.0000])
    """
    target_share = target_probabilities.double() / target_probabilities.sum()
    source_share = source_counts.double() / source_counts.sum()
    ratio = target_share / torch.where(source_share > 0, source_share, 1.0)
    return torch.where(source_share > 0, ratio, 1.0).clamp(max=1.0).float()


def pseudo_label_loss(target_logits, threshold=0.9, balance=True, labelling_logits=None):
    """Self-training: cross-entropy of target rows with the classes the network gives them confidently.

    The pseudo-labels and their confidence come from ``labelling_logits`` (the same rows through a copy of
    the network's weights made at the start of the epoch), or from ``target_logits`` themselves when None.
    A row joins when its top probability is at least ``threshold``; the loss is averaged over every target
    row, so it grows with the share of confident rows. With ``balance``, each predicted class present among
    the selected rows carries the same total weight, so that classes the network already favours do not
    take over.

    Examples
    --------
    >>> logits = torch.tensor([[4.0, 0.0], [0.0, 0.1]])
    >>> round(float(pseudo_label_loss(logits)), 4)  # only the first row is confident
    0.0091
    >>> round(float(pseudo_label_loss(logits, labelling_logits=torch.tensor([[0.0, 4.0], [0.0, 0.1]]))), 4)
    2.0091
    """
    labelling = target_logits if labelling_logits is None else labelling_logits
    probabilities = torch.softmax(labelling.detach().float(), dim=1)
    confidence, labels = probabilities.max(dim=1)
    selected = confidence >= threshold
    if not selected.any():
        return target_logits.sum() * 0
    weights = torch.ones(int(selected.sum()), device=target_logits.device)
    if balance:
        counts = torch.bincount(labels[selected], minlength=target_logits.shape[1]).float()
        weights = selected.sum() / ((counts > 0).sum() * counts[labels[selected]])
    losses = nn.functional.cross_entropy(target_logits[selected].float(), labels[selected], reduction="none")
    return (weights * losses).sum() / len(target_logits)


def mmd_loss(source, target, bandwidth_multipliers=(0.25, 0.5, 1.0, 2.0, 4.0), source_weights=None):
    """Squared maximum mean discrepancy with a sum of Gaussian kernels (DAN, Long et al. 2015).

    The base bandwidth is the mean squared distance between all pairs of rows (not back-propagated through);
    each kernel scales it by one of ``bandwidth_multipliers``. ``source_weights`` (non-negative, not all
    zero) weigh the source rows in their kernel mean embedding, as partial adaptation weighs the classes;
    None weighs them equally.

    Examples
    --------
    >>> a = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    >>> bool(mmd_loss(a, a + 2) > mmd_loss(a[:32], a[32:]))
    True
    """
    rows = torch.cat([source, target]).float()
    distances = torch.cdist(rows, rows).pow(2)
    base = distances.detach().sum() / (len(rows) ** 2 - len(rows))
    base = base.clamp_min(torch.finfo(base.dtype).tiny)  # rows all alike (dead units): no distance, not NaN
    kernel = sum(torch.exp(-distances / (base * multiplier)) for multiplier in bandwidth_multipliers)
    n = len(source)
    if source_weights is None:
        return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()
    weights = source_weights.float() / source_weights.float().sum()
    return weights @ kernel[:n, :n] @ weights + kernel[n:, n:].mean() - 2 * (weights @ kernel[:n, n:]).mean()


class SmoothedCoralLoss:
    """Deep CORAL (Sun & Saenko 2016) whose covariance difference is averaged over the recent batches.

    Deep CORAL's loss is the squared Frobenius norm of D = C_source − C_target, the difference of the two
    domains' feature covariances, over 4 d². Measured on one batch (16 rows per domain at the default
    ``batch_size``), D is mostly the batch's own sampling noise, and its gradient pushes the features at
    random. Here D is an exponential moving average over the batches (``momentum`` weighs the earlier ones;
    0 is one batch's D, as in Deep CORAL): the loss is its squared norm over 4 d², and its gradient is that
    of the squared norm through the current batch's covariances, 2 <D, ∂(C_source − C_target)> / 4 d².
    ``key`` names the source domain, each of which keeps its own average. One instance per ``fit``.

    ``source_weights`` (non-negative, not all zero) weigh the source rows in their covariance, as partial
    adaptation weighs the classes; None weighs them equally.

    Examples
    --------
    >>> a = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    >>> bool(SmoothedCoralLoss()(a, 3 * a) > SmoothedCoralLoss()(a, a))
    True
    """

    def __init__(self, momentum=0.9):
        self.momentum = momentum
        self._averages = {}

    def __call__(self, source, target, source_weights=None, key=0):
        source, target = source.float(), target.float()
        d = source.shape[1]
        weights = None if source_weights is None else source_weights.float()
        difference = torch.cov(source.T, aweights=weights) - torch.cov(target.T)
        average = self._averages.get(key)
        if average is None:
            average = difference.detach()
        else:
            average = self.momentum * average + (1 - self.momentum) * difference.detach()
        self._averages[key] = average
        # Its value is the averaged distance; its gradient flows through this batch's covariances alone.
        through_batch = 2 * (average * (difference - difference.detach())).sum()
        return (average.pow(2).sum() + through_batch) / (4 * d * d)


def minimum_class_confusion_loss(target_logits, temperature=2.5):
    """Minimum Class Confusion (Jin et al. 2020) on target predictions: how often classes are confused.

    Predictions are softened by ``temperature``; confident rows weigh more (by their entropy); the
    class-confusion matrix is normalised per class and its off-diagonal mass is the loss.

    Examples
    --------
    >>> confident = torch.tensor([[9.0, 0.0], [0.0, 9.0]])
    >>> bool(minimum_class_confusion_loss(confident) < minimum_class_confusion_loss(torch.zeros(2, 2)))
    True
    """
    n_rows, n_classes = target_logits.shape
    probabilities = torch.softmax(target_logits.float() / temperature, dim=1)
    entropy = -(probabilities * torch.log(probabilities + 1e-5)).sum(dim=1)
    weights = 1 + torch.exp(-entropy.detach())  # weights, not a term to train, as in the paper's code
    weights = (n_rows * weights / weights.sum()).unsqueeze(1)
    confusion = (probabilities * weights).T @ probabilities
    confusion = confusion / confusion.sum(dim=1, keepdim=True)
    return (confusion.sum() - confusion.trace()) / n_classes
