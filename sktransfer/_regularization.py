"""L2-SP: fine-tuning that pulls the backbone toward its pretrained weights instead of toward zero.

Li, Grandvalet and Davoine (2018), "Explicit Inductive Bias for Transfer Learning with Convolutional
Networks", penalise the distance of the fine-tuned weights from the pretrained ones ("SP": starting point),
(alpha / 2) * ||theta - theta_0||^2, added to the mean loss of each batch, while the new layers, which have
no starting point worth keeping, get ordinary weight decay. :class:`RegularizationMixin` gives a trainable
estimator the parameters ``regularization`` and ``regularization_strength`` that ask for it.
"""

from numbers import Real

import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ._unused_settings import warn_of_unused_settings

REGULARIZATION_CONSTRAINTS = {
    "regularization": [StrOptions({"l2_sp"}), None],
    "regularization_strength": [Interval(Real, 0, None, closed="left")],
}


def anchor_first_trained(module, anchor, trained_later=()):
    """Add to ``anchor`` a detached copy of each trainable parameter of ``module`` it does not hold yet.

    Called when the network is built, with ``trained_later`` the parameters that a strategy unfreezing
    stages later will train (frozen now, their pretrained values must be kept before anything, such as
    ``load_params``, replaces them), and before each step's penalty, for a parameter that a strategy
    changed after fitting lets train (frozen until then, so still pretrained). Parameters that never train
    (a linear probe's backbone, all but the biases under BitFit, the base weights under LoRA) are never
    copied.

    Examples
    --------
    >>> from torch import nn
    >>> layer = nn.Linear(2, 1)
    >>> layer.bias.requires_grad_(False)
    Parameter containing:...
    >>> anchor = {}
    >>> anchor_first_trained(layer, anchor)
    >>> sorted(anchor), anchor["weight"].requires_grad
    (['weight'], False)
    """
    later = {id(parameter) for parameter in trained_later}
    for name, parameter in module.named_parameters():
        if (parameter.requires_grad or id(parameter) in later) and name not in anchor:
            anchor[name] = parameter.detach().clone()


def l2_sp_penalty(module, anchor, strength):
    """(``strength`` / 2) times the squared distance of ``module``'s trainable parameters from ``anchor``.

    Frozen parameters are left out: they cannot move, and computing their term would cost time for
    nothing. Returns None when no parameter of ``module`` trains.

    Examples
    --------
    >>> from torch import nn
    >>> layer = nn.Linear(2, 1)
    >>> anchor = {}
    >>> anchor_first_trained(layer, anchor)
    >>> with torch.no_grad():
    ...     _ = layer.weight.add_(1.0)  # two weights, each 1 away from the anchor
    >>> round(l2_sp_penalty(layer, anchor, strength=0.1).item(), 6)
    0.1
    """
    terms = [
        (parameter - anchor[name]).pow(2).sum()
        for name, parameter in module.named_parameters()
        if parameter.requires_grad
    ]
    if not terms:
        return None
    return 0.5 * strength * torch.stack(terms).sum()


class RegularizationMixin:
    """``regularization="l2_sp"``: a penalty toward the pretrained backbone weights, weight decay on the rest.

    Each backbone parameter that the strategy will train is copied when the network is built (the anchor),
    on the network's device, and pickled with the estimator, on the CPU:
    a ``partial_fit`` after unpickling must pull toward the same weights, and the pretrained file or module
    they came from may not be there any more. Parameters that never train are never copied. Each training
    batch adds ``regularization_strength / 2`` times the squared distance of the backbone's trainable
    parameters from the anchor to the loss (``train_loss`` includes it; the validation loss does not), and
    the backbone's parameter groups get no weight decay, which would pull them toward zero instead; the
    new layers keep ``weight_decay``. ``partial_fit`` and warm fits keep the anchor of the first fit, also
    after ``load_params`` puts other weights in the network. A parameter that starts to train only because
    ``strategy`` changed after fitting is copied at its first step, when it still holds its pretrained value.
    """

    _l2_sp_anchor = None  # parameter name -> tensor, while regularization="l2_sp" was set at initialisation

    def _check_settings(self, X):
        super()._check_settings(X)
        if self.regularization != "l2_sp":
            warn_of_unused_settings(self, ["regularization_strength"], "with regularization='l2_sp'")
            return
        if self.model is None or self.weights is None:
            given = (
                "model=None (X holds features: there is no backbone)"
                if self.model is None
                else "weights=None"
            )
            raise ValueError(
                f"regularization='l2_sp' pulls the backbone toward its pretrained weights, but {given}. "
                "Use a pretrained backbone, or regularization=None (weight_decay then pulls every weight "
                "toward zero)."
            )
        if self.strategy == "linear_probe":
            warn_of_unused_settings(
                self,
                ["regularization", "regularization_strength"],
                "when the backbone trains (a strategy other than 'linear_probe')",
            )

    def initialize_module(self):
        super().initialize_module()
        self._l2_sp_anchor = None
        if self.regularization == "l2_sp":  # pretrained values, before load_params or a callback moves them
            self._l2_sp_anchor = {}
            later = self.module_.unfreezable_parameters() if self.strategy in ("gradual", "lp_ft") else ()
            anchor_first_trained(self.module_.backbone, self._l2_sp_anchor, trained_later=later)
        return self

    def _move_to_device(self):
        super()._move_to_device()
        if self._l2_sp_anchor is not None:
            self._l2_sp_anchor = {name: t.to(self.device_) for name, t in self._l2_sp_anchor.items()}

    def _apply_changed_settings(self):
        if self.regularization == "l2_sp" and self._l2_sp_anchor is None:
            raise ValueError(
                "regularization='l2_sp' was set after fitting without it, so the pretrained weights it "
                "pulls toward were not kept. Refit with warm_start=False."
            )
        super()._apply_changed_settings()

    def _group_weight_decay(self, depth, weight_decay):
        """Backbone stages (``depth`` not None) get no weight decay under L2-SP: the penalty replaces it."""
        if depth is not None and self.regularization == "l2_sp":
            return 0.0
        return super()._group_weight_decay(depth, weight_decay)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        if training and self._l2_sp_anchor is not None:  # also while set_params turned L2-SP off for a while
            anchor_first_trained(self.module_.backbone, self._l2_sp_anchor)
        if training and self.regularization == "l2_sp":
            penalty = l2_sp_penalty(self.module_.backbone, self._l2_sp_anchor, self.regularization_strength)
            if penalty is not None:
                loss = loss + penalty
        return loss

    def __getstate__(self):
        state = super().__getstate__()
        anchor = state.get("_l2_sp_anchor")
        if anchor is not None:  # a net fitted on a GPU unpickles on a machine without one
            state["_l2_sp_anchor"] = {name: tensor.cpu() for name, tensor in anchor.items()}
        return state
