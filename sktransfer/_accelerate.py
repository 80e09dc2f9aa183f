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
import copy
import os

import torch
from skorch.callbacks import Checkpoint, PrintLog, ProgressBar, TrainEndCheckpoint
from skorch.utils import noop

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
    """Drop ``item`` from one of the accelerator's lists of prepared objects, so that it can be freed.

    Accelerate has no public call that releases one prepared object (``free_memory`` releases all of them,
    the user's own too), so its lists (``_models``, ``_optimizers``, ``_dataloaders``) are read here.
    """
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
            if self.distributed:  # the next run (a partial_fit) must draw other seeds than this one did
                torch.randint(2**31 - 1, ())
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

    def sum_over_processes(self, tensor):
        """``tensor`` summed over the processes (each holds its own batches' part); itself in one process."""
        return self.accelerator.reduce(tensor, reduction="sum") if self.distributed else tensor

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


def _quiet_copy(callback):
    """``callback``, or a copy of it that prints nothing and pickles no checkpoint (a ``Checkpoint``'s
    ``f_pickle``, also inside a ``TrainEndCheckpoint``)."""
    silent = getattr(callback, "sink", None) is print  # EarlyStopping's and Checkpoint's messages
    pickles = isinstance(callback, Checkpoint) and callback.f_pickle
    inner = getattr(callback, "checkpoint_", None) if isinstance(callback, TrainEndCheckpoint) else None
    if not (silent or pickles or inner is not None):
        return callback
    callback = copy.copy(callback)
    if silent:
        callback.sink = noop
    if pickles:
        callback.f_pickle = None
    if inner is not None:
        callback.checkpoint_ = _quiet_copy(inner)
    return callback


class AcceleratedTrainingMixin:
    """The net's hooks when it trains under its ``accelerator``, as skorch's ``AccelerateMixin`` does.

    During a run, ``_run`` holds the :class:`AcceleratedRun`: training forward passes go through its wrapped
    network, each batch is a step of the accelerator's gradient accumulation (the net does not clear the
    gradients itself, and gradient callbacks run only at the end of a cycle), the accelerator backpropagates
    and steps, every process validates with the main process's BatchNorm statistics, and only the main
    process prints and writes checkpoints.
    """

    _run = None  # an AcceleratedRun while training under an accelerator

    @contextlib.contextmanager
    def _accelerated_run(self):
        """With an accelerator, hold the run's wrapped network and optimizer in ``_run`` while training."""
        if self.accelerator is None:
            yield
            return
        try:
            with AcceleratedRun(self.accelerator, self) as self._run:
                yield
        finally:
            self._run = None

    def _is_main_process(self):
        return self.accelerator is None or self.accelerator.is_main_process

    def _main_process_callbacks(self, callbacks):
        """``callbacks`` without printing or pickling in every process but the main one.

        The user's objects are left untouched: copies stay silent. A ``Checkpoint``'s parameter files go
        through ``save_params``, which only the main process runs, but its ``f_pickle`` is written directly:
        the copies write none, so that processes do not write the same file at once.
        """
        if self._is_main_process():
            return callbacks
        kept = []
        for name, callback in callbacks:
            if isinstance(callback, PrintLog | ProgressBar):
                continue
            kept.append((name, _quiet_copy(callback)))
        return kept

    def infer(self, x, **fit_params):
        run = self._run
        if run is None or not self.module_.training:
            return super().infer(x, **fit_params)
        with self._autocast():  # a training forward pass under an accelerator goes through its wrapper (DDP)
            args, kwargs = self._forward_arguments(x, fit_params)
            return run.training_module()(*args, **kwargs)

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        if not training and self._run is not None:
            # Every process validates with the same BatchNorm statistics, so that early stopping and the
            # best-weights checkpoint decide alike in all of them.
            self._run.sync_buffers()
        return super().run_single_epoch(iterator, training, prefix, step_fn, **fit_params)

    def train_step(self, batch, **fit_params):
        run = self._run
        with contextlib.nullcontext() if run is None else run.accumulate():
            return super().train_step(batch, **fit_params)

    def _loss_is_finite(self, loss):
        """Whether the loss is finite (in every process, so that all of them stop together)."""
        return bool(torch.isfinite(loss)) if self._run is None else self._run.all_finite(loss)

    def _backward(self, loss):
        if self._run is None:
            return super()._backward(loss)
        return self._run.backward(loss)

    def _step_optimizer(self, step_fn):
        if self._run is None:
            return super()._step_optimizer(step_fn)
        return self._run.step(step_fn)

    def _zero_grad_optimizer(self, set_to_none=None):
        if self._run is None:  # under an accelerator, gradients add up over an accumulation cycle
            super()._zero_grad_optimizer(set_to_none)

    def notify(self, method_name, **cb_kwargs):
        if method_name == "on_grad_computed" and self._run is not None and not self._run.syncs_gradients():
            return  # gradient callbacks (clipping) see the complete gradients of a cycle only
        super().notify(method_name, **cb_kwargs)

    def _distributed_loader(self, loader):
        """A training loader sharded across the processes of a run (as it is without one)."""
        return loader if self._run is None else self._run.prepare_loader(loader)

    def _validation_seed(self):
        """Under several processes without ``random_state``, a seed all of them share."""
        return None if self._run is None else self._run.shared_seed()

    def load_params(self, *args, **kwargs):
        if self._run is not None:  # a checkpoint callback: the main process may still be writing the file
            self.accelerator.wait_for_everyone()
        return super().load_params(*args, **kwargs)

    def save_params(self, *args, **kwargs):
        """skorch's ``save_params``; with an accelerator, only the main process writes."""
        if not self._is_main_process():
            return None
        return super().save_params(*args, **kwargs)

    def __getstate__(self):
        state = super().__getstate__()
        # The accelerator belongs to the processes that trained: a pickled net predicts on its own
        # ``device`` wherever it is loaded, without accelerate.
        state["accelerator"] = None
        state["_run"] = None  # a checkpoint pickled during training
        return state

    def __copy__(self):
        # copy.copy too would go through __getstate__: a shallow copy shares every attribute, the
        # accelerator included
        copied = type(self).__new__(type(self))
        copied.__dict__.update(self.__dict__)
        return copied

    def __deepcopy__(self, memo):
        # copy.deepcopy would go through __getstate__ and lose the accelerator, which only a pickle must
        # leave behind: a copy made in this process trains under the same one (the process's own state,
        # shared, not copied), as the original would.
        accelerator = self.__dict__.get("accelerator")
        state = self.__getstate__()
        state["accelerator"] = accelerator
        if accelerator is not None:
            memo.setdefault(id(accelerator), accelerator)
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        copied.__setstate__(copy.deepcopy(state, memo))
        return copied
