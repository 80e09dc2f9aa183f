"""The optimizer of the trainable estimators: one parameter group per backbone stage, each at its own rate."""

from ._fused_optimizer import with_fused_default
from ._training_state import OPTIMIZER_SETTINGS


class StageRatesMixin:
    """``initialize_optimizer``: the new layers at ``lr``, backbone stages slower the deeper they lie.

    ``backbone_lr_ratio`` and ``warmup`` resolve their ``"auto"`` here, from whether the weights are
    pretrained.
    """

    def initialize_optimizer(self, triggered_directly=None):
        """AdamW-style parameter groups: the head at ``lr``, each backbone stage at a smaller rate.

        Stage k from the top trains at ``lr * backbone_lr_ratio * layer_decay**k`` (its group's
        ``stage_depth`` is k; the new layers' is None), each group with the weight decay
        ``_group_weight_decay`` gives it, fused on the CPU (:mod:`sktransfer._fused_optimizer`). A user's own
        ``optimizer__param_groups`` replaces this.
        """
        self._optimizer_made_for = self._settings(OPTIMIZER_SETTINGS)
        self._optimizer_class = self.optimizer
        self._param_groups_made_for = self.get_params_for("optimizer").get("param_groups")
        self._optimizer_lr_made_for = self.get_params_for("optimizer").get("lr")
        if "param_groups" in self.get_params_for("optimizer"):
            super().initialize_optimizer()
            for group in self.optimizer_.param_groups:  # the rates a schedule starts from at each call
                group["configured_lr"] = group["lr"]
            return self
        _, kwargs = self.get_params_for_optimizer("optimizer", self.module_.named_parameters())
        kwargs.setdefault("weight_decay", self.weight_decay)
        in_backbone = {id(parameter) for parameter in self.module_.backbone.parameters()}
        new_layers = [
            parameter for parameter in self.module_.parameters() if id(parameter) not in in_backbone
        ]
        stages = [(None, new_layers), *enumerate(reversed(self.module_.stage_parameters()))]
        groups = [
            {
                "params": parameters,
                "lr": self._stage_rate(depth),
                "weight_decay": self._group_weight_decay(depth, kwargs["weight_decay"]),
                "stage_depth": depth,
            }
            for depth, parameters in stages
            if depth is None or parameters
        ]
        kwargs = with_fused_default(
            self.optimizer, {**kwargs, "lr": self._stage_rate(None)}, self.module_.parameters()
        )
        self.optimizer_ = self.optimizer(groups, **kwargs)
        return self

    def _stage_rate(self, depth):
        """The learning rate of the new layers (``depth`` None) or of the backbone stage ``depth`` from the top.

        The new layers train at ``lr`` (or ``optimizer__lr``, which skorch lets override it).
        """
        lr = self.get_params_for("optimizer").get("lr", self.lr)
        return lr if depth is None else lr * self._backbone_lr_ratio() * self.layer_decay**depth

    def _warmup(self):
        """The fraction of the steps the learning rate warms up over, ``"auto"`` resolved."""
        if self.warmup != "auto":
            return self.warmup
        # A warm-up keeps the first steps, driven by a head that knows nothing yet, from wrecking pretrained
        # weights; a network trained from scratch (or new layers on features) has none to keep.
        return 0.1 if self.model is not None and self.weights is not None else 0.0

    def _backbone_lr_ratio(self):
        if self.backbone_lr_ratio != "auto":
            return self.backbone_lr_ratio
        # Pretrained weights move slowly; random ones, and LoRA's new adapters (all that trains of a LoRA
        # backbone), learn at the head's rate.
        return 0.1 if self.weights is not None and self.strategy != "lora" else 1.0
