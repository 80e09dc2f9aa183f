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
    """A small MLP that tells source features (0) from target features (1); outputs one logit per row."""

    def __init__(self, in_features, hidden=1024):
        super().__init__(
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )


def domain_adversarial_loss(domain_logits, is_target):
    """Binary cross-entropy of the discriminator, source rows labelled 0 and target rows 1."""
    return nn.functional.binary_cross_entropy_with_logits(domain_logits.float().squeeze(1), is_target.float())


def mmd_loss(source, target, bandwidth_multipliers=(0.25, 0.5, 1.0, 2.0, 4.0)):
    """Squared maximum mean discrepancy with a sum of Gaussian kernels (DAN, Long et al. 2015).

    The base bandwidth is the mean squared distance between all pairs of rows (not back-propagated through);
    each kernel scales it by one of ``bandwidth_multipliers``.

    Examples
    --------
    >>> a = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    >>> bool(mmd_loss(a, a + 2) > mmd_loss(a[:32], a[32:]))
    True
    """
    rows = torch.cat([source, target]).float()
    distances = torch.cdist(rows, rows).pow(2)
    base = distances.detach().sum() / (len(rows) ** 2 - len(rows))
    kernel = sum(torch.exp(-distances / (base * multiplier)) for multiplier in bandwidth_multipliers)
    n = len(source)
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


def coral_loss(source, target):
    """Deep CORAL (Sun & Saenko 2016): squared Frobenius distance of the feature covariances, over 4 d².

    Examples
    --------
    >>> a = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    >>> bool(coral_loss(a, 3 * a) > coral_loss(a, a))
    True
    """
    source, target = source.float(), target.float()
    d = source.shape[1]
    difference = torch.cov(source.T) - torch.cov(target.T)
    return difference.pow(2).sum() / (4 * d * d)


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
    weights = 1 + torch.exp(-entropy)
    weights = (n_rows * weights / weights.sum()).unsqueeze(1)
    confusion = (probabilities * weights).T @ probabilities
    confusion = confusion / confusion.sum(dim=1, keepdim=True)
    return (confusion.sum() - confusion.trace()) / n_classes
