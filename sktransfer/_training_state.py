"""What carries over from one training call to the next: settings changed since fitting, and randomness."""

import contextlib

import torch

from ._runtime import resolve_device, seed_of

# Settings that decide the network's architecture: changed after fitting, they need a new network.
ARCHITECTURE = ("model", "weights", "layer", "pooling")
# Settings that decide the callbacks: changed after fitting, the callbacks are made again.
CALLBACK_SETTINGS = (
    "lr_schedule",
    "warmup",
    "early_stopping",
    "patience",
    "checkpoint_dir",
    "recalibrate_batchnorm",
    "train_split",
    "verbose",
)


class TrainingStateMixin:
    """Each ``partial_fit`` or warm ``fit`` trains with the settings of that moment, from the state left.

    Learning rates and weight decay (with the per-stage ratios), dropout, BatchNorm freezing and the
    settings that decide the callbacks (schedules, early stopping, checkpoints, verbosity) take effect on
    the next call; a setting that decides the network's architecture raises there, asking for a refit.
    Training randomness continues across calls (see :meth:`_random_stream`).
    """

    def _settings(self, names):
        return {name: getattr(self, name) for name in names}

    def _apply_changed_settings(self):
        """Make the settings changed since initialisation take effect, or raise for those that cannot."""
        for name, value in (self._settings(ARCHITECTURE) | self._network_kwargs()).items():
            fitted = self._architecture[name]
            if not (
                value is fitted or (isinstance(value, str | int | float | type(None)) and value == fitted)
            ):
                raise ValueError(
                    f"{name} changed from {_short(fitted)} to {_short(value)} after fitting, but it decides the "
                    "network, which partial_fit and warm_start keep. Refit with warm_start=False to build a "
                    "new one."
                )
        if self._settings(CALLBACK_SETTINGS) != self._callbacks_made_for:
            self.initialize_callbacks()
        overrides = self.get_params_for("module")  # module__dropout=... wins, as at initialisation
        self.module_.set_dropout(overrides.get("dropout", self.dropout))
        self.module_.freeze_batchnorm = overrides.get("freeze_batchnorm", self._freezes_batchnorm())
        self.module_.train(self.module_.training)
        if "param_groups" in self.get_params_for("optimizer"):
            return
        weight_decay = self.get_params_for("optimizer").get("weight_decay", self.weight_decay)
        for group in self.optimizer_.param_groups:  # schedulers start from initial_lr
            group["lr"] = group["initial_lr"] = self._stage_rate(group["stage_depth"])
            group["weight_decay"] = weight_decay

    @contextlib.contextmanager
    def _random_stream(self):
        """Training randomness from ``random_state``: seeded by the first call, continued by the next ones.

        Shuffling, augmentation and dropout draw from torch's generators. With an int ``random_state`` they
        are seeded once, when training starts after initialisation, and each later ``partial_fit`` or warm
        ``fit`` continues where the previous call stopped, so the same sequence of calls gives the same
        result while successive calls draw new batches. The user's own generator state is left alone.
        """
        if self.random_state is None:
            yield
            return
        device = resolve_device(self._device())
        cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            if self._training_rng is None:
                torch.manual_seed(seed_of(self.random_state))
            else:
                torch.set_rng_state(self._training_rng[0])
                if cuda:
                    torch.cuda.set_rng_state(self._training_rng[1], device)
            yield
            self._training_rng = (torch.get_rng_state(), torch.cuda.get_rng_state(device) if cuda else None)


def _short(value):
    """A parameter value as an error message shows it: a module by its class, anything else by its repr."""
    return f"a {type(value).__name__} module" if isinstance(value, torch.nn.Module) else repr(value)
