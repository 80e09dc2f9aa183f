"""Training under Hugging Face Accelerate: one training run's distributed views of a net's network and data.

The trainable estimators take an ``accelerate.Accelerator`` as their ``accelerator`` parameter, as skorch's
``skorch.hf.AccelerateMixin`` does. Unlike that mixin, the net's ``module_`` stays the plain network
throughout: the accelerator's wrapper (``DistributedDataParallel`` across processes) is used for the
training forward pass only, so callbacks keep reaching the network's own attributes, and it is made again
whenever the set of trainable parameters changes (gradual unfreezing), since DDP only synchronises the
gradients of parameters that were trainable when it was built. After the run everything is unwrapped and
the fitted estimator pickles like any other (without the accelerator, which belongs to the processes that
trained).
"""

import contextlib
import os

import torch

from ._runtime import resolve_device

MIXED_PRECISION = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}


def check_accelerator(accelerator, precision, device):
    """Raise if ``accelerator`` disagrees with the estimator's ``precision`` or ``device``."""
    wanted = MIXED_PRECISION[precision]
    if str(accelerator.mixed_precision) != wanted:
        given = {value: name for name, value in MIXED_PRECISION.items()}.get(str(accelerator.mixed_precision))
        instead = f"precision={given!r}, or " if given else ""
        raise ValueError(
            f"precision={precision!r}, but the accelerator trains with mixed_precision="
            f"{accelerator.mixed_precision!r}: they must agree, since predictions run at precision. Pass "
            f"{instead}Accelerator(mixed_precision={wanted!r})."
        )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > accelerator.num_processes:
        raise ValueError(
            f"this script was launched as {launched} processes, but the accelerator runs this one alone "
            f"(num_processes={accelerator.num_processes}), so each process would train on all the data by "
            "itself. On CPUs, pass Accelerator(cpu=True); on GPUs, check the launcher's settings."
        )
    if str(device) != "auto" and resolve_device(device) != accelerator.device:
        raise ValueError(
            f"device={device!r}, but the accelerator places this process on {accelerator.device}: leave "
            "device='auto' when an accelerator is given."
        )


def _forget(registry, item):
    """Drop ``item`` from one of the accelerator's lists of prepared objects, so that it can be freed."""
    for index, held in enumerate(registry):
        if held is item:
            del registry[index]
            return


class AcceleratedRun:
    """The accelerator's wrapped network, optimizer and training batches for one training run of ``net``.

    ``net.optimizer_`` stays the plain optimizer (schedulers and checkpoints see it); the accelerator's
    optimizer around it steps and clears the gradients at the end of each accumulation cycle and unscales
    float16 gradients. Leaving restores the network's own ``forward`` and releases everything the
    accelerator was holding for this run.
    """

    def __init__(self, accelerator, net):
        self.accelerator = accelerator
        self.net = net
        self.module = net.module_
        self.wrapped = None
        self._trainable = None
        self._loaders = []

    @property
    def distributed(self):
        return self.accelerator.num_processes > 1

    def __enter__(self):
        self.net.optimizer_.zero_grad(set_to_none=True)  # nothing left over from an earlier fit
        self.optimizer = self.accelerator.prepare_optimizer(self.net.optimizer_)
        self._random_state = contextlib.ExitStack()
        if self.distributed:  # the seeds are set per epoch: see prepare_loader
            cuda = [self.accelerator.device] if self.accelerator.device.type == "cuda" else []
            self._random_state.enter_context(torch.random.fork_rng(devices=cuda))
        return self

    def __exit__(self, exc_type, exc, traceback):
        try:
            if exc_type is None:  # a process that failed leaves at once: the launcher stops the others
                self.sync_buffers()  # BatchNorm statistics, which each process updated on its own batches
                self.accelerator.wait_for_everyone()
        finally:
            self._unwrap()
            _forget(self.accelerator._optimizers, self.optimizer)
            for loader in self._loaders:
                _forget(self.accelerator._dataloaders, loader)
            self._random_state.close()
        return False

    def shared_seed(self):
        """A seed drawn by the main process and known to all (None in a single process)."""
        if not self.distributed:
            return None
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([int(torch.randint(2**31 - 1, ()))])[0]

    def sync_buffers(self):
        """Give every process the main process's buffers (BatchNorm statistics), so that all predict alike."""
        if self.distributed and torch.distributed.is_initialized():
            for buffer in self.module.buffers():
                torch.distributed.broadcast(buffer.data, src=0)

    def all_finite(self, loss):
        """Whether the loss is finite in every process, so that all of them stop together if one diverges."""
        finite = torch.isfinite(loss.detach()).float().reshape(1)
        if self.distributed:
            finite = self.accelerator.gather(finite)
        return bool(finite.min() > 0)

    def training_module(self):
        """The wrapped network, wrapped again if the trainable parameters changed since the last batch."""
        trainable = tuple(parameter.requires_grad for parameter in self.module.parameters())
        if trainable != self._trainable:
            self._unwrap()
            self.wrapped = self.accelerator.prepare_model(self.module)
            self._trainable = trainable
        return self.wrapped

    def _unwrap(self):
        if self.wrapped is None:
            return
        self.accelerator.unwrap_model(self.wrapped, keep_fp32_wrapper=False)
        for attribute in ("forward", "_is_accelerate_prepared"):  # the class's own forward, and no marks
            self.module.__dict__.pop(attribute, None)
        _forget(self.accelerator._models, self.wrapped)
        self.wrapped = None
        self._trainable = None

    def accumulate(self):
        """The context of one training batch (gradient accumulation, and no DDP sync in between)."""
        return self.accelerator.accumulate(self.training_module())

    def backward(self, loss):
        """Backpropagate ``loss``; with float16, unscale the gradients once they are complete."""
        self.accelerator.backward(loss)
        if self.accelerator.scaler is not None and self.accelerator.sync_gradients:
            self.accelerator.unscale_gradients()  # callbacks (gradient clipping) see the true gradients

    def step(self, step_fn):
        """Add one batch's gradients; step and clear them at the end of each accumulation cycle.

        The accelerator's optimizer skips ``step`` and ``zero_grad`` between the batches of a cycle, so
        the gradients add up; the net does not clear them before each batch while a run is active.
        """
        step_fn()
        self.optimizer.step()
        self.optimizer.zero_grad()

    def syncs_gradients(self):
        """Whether this batch ends an accumulation cycle (the gradients are complete)."""
        return self.accelerator.sync_gradients

    def prepare_loader(self, loader):
        """``loader`` sharded across the processes, its batches on this process's device.

        With several processes, every one must shuffle and sample alike, since the accelerator shards the
        batches of one order: before each pass, torch's generator is seeded in all of them from the main
        process (inside the run's forked generator state, so the user's is left alone).
        """
        if self.distributed:
            torch.manual_seed(self.shared_seed())
        prepared = self.accelerator.prepare_data_loader(loader)
        self._loaders.append(prepared)
        return prepared
