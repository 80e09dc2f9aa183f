"""Mixed precision for the trainable estimators: autocast, and the float16 gradient scaler."""

import torch

from ._precision import autocast, check_precision
from ._runtime import resolve_device


class MixedPrecisionMixin:
    """Autocasts the forward pass at the net's ``precision``; with float16, scales the loss.

    float16 gradients underflow, so the loss is scaled before the backward pass and the gradients are
    unscaled before callbacks see them (gradient clipping needs the true ones); the optimizer steps through
    the scaler, which skips steps whose gradients overflowed. An accelerator brings its own scaler.
    """

    def _precision(self, warn=False):
        """``precision`` resolved ("auto") for this call's device; float16 on a CPU raises.

        ``warn``: the call that starts a fit or a prediction warns where bfloat16 is emulated.
        """
        return check_precision(self.precision, [resolve_device(self._device())], warn=warn)

    def _autocast(self):
        """The context of a forward pass at the resolved precision."""
        return autocast(resolve_device(self._device()), self._precision())

    def infer(self, x, **fit_params):
        with self._autocast():
            return super().infer(x, **fit_params)

    def _scales_loss(self):
        return self.accelerator is None and self._precision() == "float16"

    def _grad_scaler(self):
        """The scaler, made again after ``set_params(precision=..., accelerator=...)`` changed the need.

        One made after unpickling starts from the pickled scaler's scale, as training would have gone on.
        """
        scaler = getattr(self, "grad_scaler_", None)
        if scaler is None or scaler.is_enabled() != self._scales_loss():
            device = resolve_device(self._device())
            self.grad_scaler_ = torch.amp.GradScaler(device.type, enabled=self._scales_loss())
            pickled = self.__dict__.pop("_grad_scaler_state", None)
            if pickled and self.grad_scaler_.is_enabled():
                self.grad_scaler_.load_state_dict(pickled)
        return self.grad_scaler_

    def _backward(self, loss):
        scaler = self._grad_scaler()
        scaler.scale(loss).backward()
        if scaler.is_enabled():  # callbacks (gradient clipping) must see the true gradients
            for name in self._optimizers:
                scaler.unscale_(getattr(self, name + "_"))

    def _step_optimizer(self, step_fn):
        scaler = self._grad_scaler()
        if not scaler.is_enabled():
            return super()._step_optimizer(step_fn)
        step_fn()  # GradScaler cannot step with a closure
        for name in self._optimizers:
            scaler.step(getattr(self, name + "_"))
        scaler.update()
        return None

    def __getstate__(self):
        state = super().__getstate__()
        # may hold CUDA tensors: made again when training resumes, from its state (numbers only)
        scaler = state.pop("grad_scaler_", None)
        if scaler is not None and scaler.is_enabled():
            state["_grad_scaler_state"] = scaler.state_dict()
        return state
