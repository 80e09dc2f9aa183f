"""What carries over from one training call to the next: settings changed since fitting, and randomness."""

import contextlib
from numbers import Integral, Real

import numpy as np
import torch

from ._changed_settings import (
    ArgumentsByValue,
    ClassesByValue,
    changed_settings,
    describe_change,
    same_value,
    warn_of_changed_settings,
)
from ._runtime import SEEDED_WORK, resolve_device, seed_of
from ._training_checks import is_cross_entropy

# Settings that decide the network's architecture: changed after fitting, they need a new network.
ARCHITECTURE = ("model", "weights", "layer", "pooling")
# The network's arguments (module__*) that a training call applies to the fitted network; the others decide it.
MODULE_SETTINGS_APPLIED = ("dropout", "freeze_batchnorm")
# Components whose settings (the component, or component__argument) set after fitting are kept for the next
# training call, not applied by skorch at once: the network's arguments and compilation, which skorch applies
# by building a new network, and the loaders', for which skorch raises (as for the optimizer's class, the
# key "optimizer"; its arguments, optimizer__lr and the like, skorch applies to the fitted optimizer).
KEPT_AS_SETTINGS = ("module", "compile", "iterator_train", "iterator_valid", "dataset", "criterion")


def _kept_as_setting(key):
    return key in ("optimizer", "optimizer__param_groups") or key.split("__", 1)[0] in KEPT_AS_SETTINGS


# Settings that decide the optimizer's rates: a user's optimizer__param_groups fixes them at initialisation.
OPTIMIZER_SETTINGS = ("lr", "backbone_lr_ratio", "layer_decay", "weight_decay")
# The library's settings that a skorch dunder argument can set too, overriding them: each with its alias.
ALIASED_SETTINGS = {
    "lr": "optimizer__lr",
    "weight_decay": "optimizer__weight_decay",
    "label_smoothing": "criterion__label_smoothing",
    "dropout": "module__dropout",
    "freeze_batchnorm": "module__freeze_batchnorm",
}
# Settings that decide the callbacks: changed after fitting, the callbacks are made again.
CALLBACK_SETTINGS = (
    "callbacks",
    "lr_schedule",
    "warmup",
    "early_stopping",
    "patience",
    "checkpoint_dir",
    "recalibrate_batchnorm",
    "train_split",
    "verbose",
)


def _refuse_one_group_settings(params):
    """Raise for skorch's ``optimizer__param_groups__<i>__<name>`` set after fitting.

    skorch writes it into one group of the fitted optimizer, and the next training call sets every group's
    rate and weight decay again from the estimator's settings, so that it would last until then only.
    """
    for key in params:
        if key.startswith("optimizer__param_groups__"):
            raise ValueError(
                f"{key} set after fitting would change one group of the fitted optimizer until the next "
                "training call, which sets every group's rate from lr, backbone_lr_ratio and layer_decay (or "
                "optimizer__param_groups) again: change those instead, or set it before fitting."
            )


class TrainingStateMixin:
    """Each ``partial_fit`` or warm ``fit`` trains with the settings of that moment, from the state left.

    Learning rates and weight decay (with the per-stage ratios), dropout, BatchNorm freezing, label
    smoothing, ``preprocess``, the optimizer's class, the loaders' settings, the criterion's arguments (the
    optimizer keeps its state) and the settings that decide the callbacks (schedules, early stopping,
    checkpoints, verbosity) take effect on the next call; a setting that decides the network's architecture,
    or ``optimizer__param_groups``, raises there, asking for a refit. Training randomness continues
    across calls (see :meth:`_random_stream`).
    """

    # The parameter behind each further argument of the network (``_network_kwargs``), for error messages.
    _network_kwarg_parameters: dict = {}  # noqa: RUF012 (read-only)

    def set_params(self, **params):
        for name, alias in ALIASED_SETTINGS.items():
            if name in params and alias not in params and alias in vars(self):
                # The one set last counts: kept, the alias would override the new value in this estimator
                # and every clone (GridSearchCV setting lr on a clone made with optimizer__lr changed nothing).
                del vars(self)[alias]
                self._params_to_validate.discard(alias)
        if self.initialized_:
            _refuse_one_group_settings(params)
            self._record_what_the_fit_was_made_with()  # a net pickled before these records existed
            # skorch builds a new, untrained module for a module, module__, compile or compile__ key set after
            # initialisation, which would throw away the fitted weights at once, and raises its internal error
            # for optimizer, iterator_* and dataset keys. Kept as settings instead: the next training call
            # applies dropout, BatchNorm freezing, the optimizer's class and the loaders' settings to the
            # fitted network, and raises for the others, which decide the network (prediction warns of them
            # meanwhile); a cold fit builds with them. Dataset keys are kept too, for the next fit to refuse.
            kept = {key: value for key, value in params.items() if _kept_as_setting(key)}
            vars(self).update(kept)
            self._params_to_validate.update(kept)
            params = {key: value for key, value in params.items() if key not in kept}
        super().set_params(**params)
        if self.initialized_:
            # skorch applies optimizer__lr and the like straight to every parameter group, and keeps no
            # record; kept here, the next training call sets each group's rate from them, stage ratios too.
            vars(self).update(
                {
                    key: value
                    for key, value in params.items()
                    if key.startswith("optimizer__") and not key.startswith("optimizer__param_groups")
                }
            )
        return self

    def _record_what_the_fit_was_made_with(self):
        if not hasattr(self, "_criterion_made_for"):
            self._criterion_made_for = self._criterion_settings()
        if not hasattr(self, "_param_groups_made_for"):
            self._param_groups_made_for = self.get_params_for("optimizer").get("param_groups")

    def _criterion_settings(self):
        """The criterion and its ``criterion__*`` arguments, compared by value."""
        return ArgumentsByValue({"": self.criterion, **self.get_params_for("criterion")}, "criterion")

    def _callback_settings_changed(self):
        """Whether a setting that decides the callbacks changed since they were made: ``callbacks`` by identity
        (a callback's ``__eq__`` may compare arrays), the others by value; a setting the record lacks (pickled
        before it was recorded) counts as unchanged."""
        made_for = self._callbacks_made_for
        for name, value in self._settings(CALLBACK_SETTINGS).items():
            made = made_for.get(name, value)
            if (made is not value) if name == "callbacks" else (made != value):
                return True
        return False

    def _settings(self, names):
        return {name: getattr(self, name) for name in names}

    def _architecture_settings(self):
        """The settings that decide the network, as fitted: parameters, subclass arguments, LoRA adapters."""
        # by value: alpha=16 and alpha=16.0 scale the adapters alike
        alpha = self.lora_alpha
        alpha = float(alpha) if isinstance(alpha, Real) and not isinstance(alpha, bool) else alpha
        adapters = f"rank={self.lora_rank}, alpha={alpha!r}" if self.strategy == "lora" else None
        arguments = {
            name: value
            for name, value in self.get_params_for("module").items()
            if name not in MODULE_SETTINGS_APPLIED
        }
        return (
            self._settings(ARCHITECTURE)
            | self._network_kwargs()
            | {
                "strategy='lora' adapters": adapters,
                "module": self.module,
                "module__*": ArgumentsByValue(arguments),
                "compile": self.compile,
                "compile__*": ArgumentsByValue(self.get_params_for("compile"), "compile"),
                # the fitted classes while the parameter leaves them to y (None)
                "classes": ClassesByValue(self.classes_ if self.classes is None else np.unique(self.classes)),
            }
        )

    def _warn_if_network_settings_changed(self):
        """Warn when settings that decide the network, or ``preprocess``, changed since the last training call."""
        # An estimator pickled before this record existed compares its preprocess with itself.
        applied = getattr(self, "_preprocess_applied", self.preprocess)
        warn_of_changed_settings(
            {**self._architecture, "preprocess": applied},
            {**self._architecture_settings(), "preprocess": self.preprocess},
            "prediction",
            "the network and its preprocessing",
            self._network_kwarg_parameters,
        )

    def _apply_changed_settings(self):
        """Make the settings changed since initialisation take effect, or raise for those that cannot."""
        current = self._architecture_settings()
        changed = changed_settings(self._architecture, current)
        if changed:
            name = changed[0]
            change = describe_change(
                name, self._architecture[name], current[name], self._network_kwarg_parameters.get(name)
            )
            raise ValueError(
                f"{change}, but it decides the network, which partial_fit and warm_start keep. Refit with "
                "warm_start=False to build a new one."
            )
        if self._callback_settings_changed():
            self.initialize_callbacks()
        # pickled before this record: the class of the optimizer it has
        made_with = type(self.optimizer_) if isinstance(self.optimizer, type) else self.optimizer
        if self.optimizer is not getattr(self, "_optimizer_class", made_with):
            self._initialize_optimizer()  # another class: a new optimizer, whose state starts afresh
        overrides = self.get_params_for("module")  # module__dropout=... wins, as at initialisation
        self.module_.set_dropout(overrides.get("dropout", self.dropout))
        self.module_.freeze_batchnorm = overrides.get("freeze_batchnorm", self._freezes_batchnorm())
        self.module_.train(self.module_.training)
        criterion_settings = self._criterion_settings()
        if criterion_settings != getattr(self, "_criterion_made_for", criterion_settings):
            self._initialize_criterion()  # the criterion alone: the optimizer keeps its moments,
            criterion = self.criterion_
            if isinstance(criterion, torch.nn.Module) and any(
                p.requires_grad for p in criterion.parameters()
            ):
                self._initialize_optimizer()  # unless the criterion has weights for it to train
        if is_cross_entropy(self.criterion):  # built by the library; a user's instance keeps its own
            smoothing = self.get_params_for("criterion").get("label_smoothing", self.label_smoothing)
            self.criterion_.label_smoothing = smoothing
        self._apply_preprocess()
        self._apply_learning_rates()

    def _apply_learning_rates(self):
        """Each parameter group's rate and weight decay as the settings give them now; schedules start there."""
        optimizer_settings = self.get_params_for("optimizer")
        made_with = getattr(self, "_param_groups_made_for", optimizer_settings.get("param_groups"))
        if not same_value(optimizer_settings.get("param_groups"), made_with):
            raise ValueError(
                "optimizer__param_groups changed after fitting, but the groups decide the fitted optimizer: "
                "refit with warm_start=False to train with them."
            )
        if "param_groups" in optimizer_settings:
            changed = [
                name
                for name, value in self._settings(OPTIMIZER_SETTINGS).items()
                if value != self._optimizer_made_for[name]
            ]
            if optimizer_settings.get("lr") != getattr(
                self, "_optimizer_lr_made_for", optimizer_settings.get("lr")
            ):
                changed.append(
                    "optimizer__lr"
                )  # skorch sets it on every group at once: the groups' own rates go
            if changed:
                raise ValueError(
                    f"{changed[0]} changed after fitting, but optimizer__param_groups sets the rates of this "
                    "net's optimizer: change them there and refit with warm_start=False."
                )
            for group in self.optimizer_.param_groups:
                group["lr"] = group["initial_lr"] = group["configured_lr"]
            return
        weight_decay = optimizer_settings.get("weight_decay", self.weight_decay)
        for group in self.optimizer_.param_groups:  # schedulers start from initial_lr
            group["lr"] = group["initial_lr"] = self._stage_rate(group["stage_depth"])
            group["weight_decay"] = self._group_weight_decay(group["stage_depth"], weight_decay)

    def _group_weight_decay(self, depth, weight_decay):
        """The weight decay of the new layers (``depth`` None) or of the backbone stage ``depth`` from the top."""
        return weight_decay

    @contextlib.contextmanager
    def _random_stream(self):
        """Training randomness from ``random_state``: seeded by the first call, continued by the next ones.

        Shuffling, augmentation and dropout draw from torch's CPU and CUDA generators. With a
        ``random_state`` they are seeded when training starts after initialisation (or after
        ``random_state`` changed), and each later ``partial_fit`` or warm ``fit`` continues where the
        previous call stopped, so the same sequence of calls gives the same result while successive calls
        draw new batches. The user's own CPU and CUDA generator states are left alone (Apple's MPS
        generator is not covered). Seeded training calls in several threads (joblib's threading backend)
        run one at a time, since they share torch's generators.
        """
        if self.random_state is None:
            yield
            return
        device = resolve_device(self._device())
        cuda = [device] if device.type == "cuda" else []
        with SEEDED_WORK, torch.random.fork_rng(devices=cuda):
            saved = self._training_rng
            if saved is None or not _same_random_state(saved[2], self.random_state):
                torch.manual_seed(seed_of(self.random_state))
            else:
                torch.set_rng_state(saved[0])
                if cuda and saved[1] is not None:
                    torch.cuda.set_rng_state(saved[1], device)
                elif cuda:  # the net moved to a GPU since the last call: seed it from the CPU stream
                    torch.cuda.manual_seed(int(torch.randint(2**31 - 1, ())))
            yield
            cuda_state = torch.cuda.get_rng_state(device) if cuda else None
            self._training_rng = (torch.get_rng_state(), cuda_state, self.random_state)


def _same_random_state(before, now):
    """Whether ``random_state`` is still the one the training stream was seeded from.

    An int is the same seed whatever the object holding it: a pickled estimator or ``set_params`` with an
    equal value gets a new int object, and must continue the stream, not reseed it. A ``RandomState``
    instance is the same only as the same object (its state moves as it is drawn from).

    Examples
    --------
    >>> _same_random_state(12345, int("12345")), _same_random_state(1, 2)
    (True, False)
    """
    if isinstance(before, Integral) and isinstance(now, Integral):
        return int(before) == int(now)
    return before is now
