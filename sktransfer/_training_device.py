"""Where the trainable estimators run: ``device`` stays as the user set it, ``device_`` is where it resolved."""

import contextlib
import threading

import torch

from ._fused_optimizer import move_optimizer_state
from ._runtime import module_device, resolve_device

_RESOLVED = threading.local()  # per thread: id(net) -> the device skorch's code reads during a call


class DeviceMixin:
    """Resolves ``device="auto"`` into the fitted attribute ``device_``, never into the parameter.

    skorch's own code reads ``self.device`` as a torch device. During a call of the net, in the thread that
    makes it, that attribute reads as the resolved device; ``get_params()``, other threads and the pickled
    state keep the value the user set, so two threads predicting at once cannot leave it resolved.
    ``set_params(device=...)`` after fitting moves the network at its next call.
    """

    @property
    def device(self):
        resolved = getattr(_RESOLVED, "devices", {}).get(id(self))
        return self.__dict__.get("device") if resolved is None else resolved

    @device.setter
    def device(self, value):
        self.__dict__["device"] = value

    def get_params(self, deep=True):
        params = super().get_params(deep=deep)
        params["device"] = self.__dict__.get("device")  # the parameter, also in the middle of a call
        return params

    def _device(self):
        """The device to run on: the accelerator's for this process when there is one, else ``device``."""
        return self.__dict__.get("device") if self.accelerator is None else self.accelerator.device

    @contextlib.contextmanager
    def _on_device(self):
        """For the duration of a call, let skorch's code read ``self.device`` as the resolved device."""
        devices = _RESOLVED.__dict__.setdefault("devices", {})
        outer = devices.get(id(self))
        devices[id(self)] = str(resolve_device(self._device()))
        try:
            yield
        finally:
            if outer is None:
                del devices[id(self)]
            else:
                devices[id(self)] = outer

    # skorch moves new components to ``self.device``, also when set_params rebuilds one.
    def _initialize_module(self, reason=None):
        with self._on_device():
            return super()._initialize_module(reason)

    def _initialize_criterion(self, reason=None):
        with self._on_device():
            return super()._initialize_criterion(reason)

    def _initialize_optimizer(self, reason=None):
        with self._on_device():
            return super()._initialize_optimizer(reason)

    def _move_to_device(self):
        """Put the network (and the optimizer's state) on the device ``device`` names now; set ``device_``."""
        device = resolve_device(self._device())
        self.device_ = device
        if module_device(self.module_) == device:
            return
        self.module_.to(device)
        self.criterion_.to(device)
        move_optimizer_state(self.optimizer_, device)

    def forward_iter(self, X, training=False, device="cpu"):
        with self._on_device():
            self._move_to_device()
            yield from super().forward_iter(X, training=training, device=device)

    def load_params(self, *args, **kwargs):
        requested = self.__dict__.get("device")
        try:
            with self._on_device():
                return super().load_params(*args, **kwargs)
        finally:  # skorch writes the device it mapped the file onto into ``device``: keep the user's
            self.device = requested

    def __setstate__(self, state):
        # skorch maps the pickled tensors onto ``state["device"]``: "auto" means this machine's best one.
        # torch.load cannot map storages onto "cpu:0" (an index of the one CPU), only onto "cpu".
        requested = state["device"]
        if requested == "auto":
            state["device"] = str(resolve_device("auto"))
        elif _is_cpu(requested):
            state["device"] = "cpu"
        super().__setstate__(state)
        self.device = requested


def _is_cpu(device):
    """Whether ``device`` names the CPU ("cpu", "cpu:0", a torch.device)."""
    try:
        return torch.device(device).type == "cpu"
    except (TypeError, RuntimeError):
        return False
