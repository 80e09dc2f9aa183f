"""Where and how tensors are computed: device choice, seeding, batched inference (precision: ``_precision``)."""

import collections
import concurrent.futures
import contextlib
import functools
import itertools
import os
import threading

import numpy as np
import torch

from ._precision import autocast
from ._progress import progress


class NetworkOutputError(ValueError):
    """A network returned something other than one finite feature row per input."""


def resolve_device(device):
    """Turn the ``device`` parameter into a :class:`torch.device`.

    ``"auto"`` picks CUDA, then Apple's MPS, then the CPU. An explicit device that this machine lacks raises
    a ``ValueError`` that names the parameter, so that a model fitted on a GPU machine can be moved with
    ``set_params(device="cpu")``.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:  # torch lists its twenty device types, not what to pass
        raise ValueError(
            f"device={device!r} is not a device: use 'auto' (a GPU where there is one), 'cpu', 'cuda', "
            "'cuda:1', 'mps', or a list of them."
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this machine; "
            "use device='auto' or device='cpu' (set_params(device='cpu') on a fitted estimator)."
        )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} was requested but MPS is not available; use device='auto'.")
    return resolved


# torch's generators are global to the process: threads that draw from them at once (joblib's threading
# backend running fits side by side) interleave their draws. Seeded work holds this lock, so that seeded fits
# in threads give what they give one after the other; unseeded work, which promises nothing, does not take
# it, and a thread of it drawing meanwhile still moves the shared generators.
SEEDED_WORK = threading.RLock()


@contextlib.contextmanager
def seeded(random_state):
    """Run a block with torch's global generators seeded from ``random_state``, restoring them after.

    ``None`` leaves the generators alone. This is how random initialisations inside third-party
    constructors (torchvision's models) become reproducible without touching the user's global seed. The
    CUDA generators are seeded too once CUDA runs; before, the block draws on the CPU only (networks are built
    there), and it does not start CUDA. Seeded blocks of several threads run one at a time (``SEEDED_WORK``).
    """
    if random_state is None:
        yield
        return
    # The CUDA generators only where CUDA runs already: reading their state would start it (a context on every
    # GPU, and torch's warning of forking several) in a process whose fits may never leave the CPU.
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with SEEDED_WORK, torch.random.fork_rng(devices=cuda):
        if cuda:
            torch.manual_seed(seed_of(random_state))  # the CPU generator and every CUDA one
        else:  # torch.manual_seed would queue the CUDA seeding for when CUDA starts, after the block
            torch.random.default_generator.manual_seed(seed_of(random_state))
        yield


def seed_of(random_state):
    """A torch seed from an int ``random_state``, or one drawn from a ``RandomState`` instance.

    Examples
    --------
    >>> seed_of(7)
    7
    """
    return int(random_state.randint(2**31 - 1)) if hasattr(random_state, "randint") else int(random_state)


def resolve_devices(device):
    """The devices a data-parallel forward pass runs on: ``"auto"`` gives every visible GPU.

    In a process started by a distributed launcher (``LOCAL_RANK`` set), ``"auto"`` gives this process's
    GPU only. A list (or tuple) of devices is resolved one by one; any other value gives the one device of
    :func:`resolve_device`.

    Examples
    --------
    >>> resolve_devices(["cpu", "cpu"])
    [device(type='cpu'), device(type='cpu')]
    """
    if isinstance(device, list | tuple):
        if not device:
            raise ValueError("device=[] lists no device; pass at least one, or device='auto'.")
        return [resolve_device(each) for each in device]
    if device == "auto" and torch.cuda.device_count() > 1:
        # One of several processes on this machine (torchrun, accelerate): its own GPU.
        if "LOCAL_RANK" in os.environ:
            return [torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())]
        return [torch.device("cuda", index) for index in range(torch.cuda.device_count())]
    return [resolve_device(device)]


def _forward(model, batch, device, precision, channels_last, width, samples):
    """One batch through ``model`` on ``device``: float32 features, checked.

    A :class:`~sktransfer._image_batches.RawImageBatch` is preprocessed there, by its ``to``.
    """
    with torch.inference_mode():  # per thread, as autocast
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            output = model(batch)
    return check_output(output, len(batch), model, width, samples=samples, precision=precision)


def output_name(model):
    """How errors name the part of ``model`` whose output is the features (see ``FeatureModel``)."""
    describe = getattr(model, "output_name", None)
    return describe() if callable(describe) else f"the output of {type(model).__name__}"


def check_output(output, n_inputs, model, width=None, *, samples=None, precision="float32"):
    """``output`` as a float32 numpy array, after checking it holds one finite row per input.

    Raises :class:`NetworkOutputError` naming the layer (``output_name(model)``) and the shapes when the
    network returns something else: not a tensor, another number of rows, not 2-D, rows of another length
    than ``width`` (when given), NaN or infinity. ``samples`` maps the batch's rows to the numbers of their
    samples in X, by which the error names those that are not finite; ``precision`` the one it ran at.

    Examples
    --------
    >>> from torch import nn
    >>> check_output(torch.ones(2, 3), 2, nn.Identity()).shape
    (2, 3)
    """
    where = output_name(model)
    if not isinstance(output, torch.Tensor):
        raise NetworkOutputError(f"{where} is a {type(output).__name__}, not a tensor of features.")
    if output.ndim != 2 or len(output) != n_inputs:
        raise NetworkOutputError(
            f"{where} has shape {tuple(output.shape)} for a batch of {n_inputs} inputs; it must be 2-D with "
            "one row per input (check the module's forward, or pick another layer)."
        )
    if width is not None and output.shape[1] != width:
        raise NetworkOutputError(
            f"{where} has rows of length {output.shape[1]}, but its embeddings were {width} long at fit: "
            "inputs of another size change it (pooling=None flattens whole maps). Resize the images with "
            "preprocess=, or refit."
        )
    features = output.float().cpu().numpy()
    bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
    if bad.size:
        named = np.sort(samples(bad)) if samples is not None else bad
        advice = (
            "the weights may overflow at this precision: try precision='float32'"
            if precision != "float32"
            else "the weights may be corrupt, or the module's forward give them for these inputs"
        )
        raise NetworkOutputError(
            f"{where} holds NaN or infinity for samples {named[:10].tolist()} ({bad.size} of the {n_inputs} "
            f"inputs of a batch) at precision={precision!r}: {advice}."
        )
    return features


class _Rows:
    """The output array, allocated once from the first batch's features and filled batch by batch."""

    def __init__(self, n_samples):
        self.n_samples = n_samples
        self.written = 0
        self.array = None

    def write(self, start, features):
        if self.array is None:
            self.array = np.empty((self.n_samples, *features.shape[1:]), dtype=np.float32)
        self.array[start : start + len(features)] = features
        self.written += len(features)

    def result(self):
        """The filled array; a row never written is an error, never uninitialised memory."""
        if self.written != self.n_samples:
            raise NetworkOutputError(
                f"the batches held {self.written} rows for {self.n_samples} samples; every sample must go "
                "through the network once."
            )
        return self.array


def run_inference(model, batches, *, n_samples, device, **options):
    """Run ``model`` over ``batches`` in inference mode and gather its outputs into one float32 array.

    ``model`` must already be on ``device`` and in eval mode. Each batch's output is checked (one finite row
    per input, see :func:`check_output`). With ``channels_last``, image batches go in channels-last layout,
    which the convolution kernels of oneDNN and cuDNN prefer (for networks the library built). The output
    array is allocated once, so memory does not grow with the number of batches beyond the result itself.
    ``options`` are those of :func:`run_inference_parallel`.
    """
    return run_inference_parallel([(model, device)], batches, n_samples=n_samples, **options)


def run_inference_parallel(
    replicas,
    batches,
    *,
    n_samples,
    precision="float32",
    channels_last=False,
    width=None,
    verbose=0,
    desc=None,
    sample_numbers=None,
):
    """:func:`run_inference` with one copy of the model per device, each running whole batches in turn.

    ``replicas`` lists ``(model, device)`` pairs. Batch i runs on replica i modulo their number, in one
    thread per replica (CUDA kernels release the GIL); at most two batches per replica are in flight, so
    memory stays bounded by the batch size. Rows come back in the order of ``batches``; with ``width``, each
    must have that length. ``sample_numbers`` maps positions in ``batches`` to the numbers by which errors
    name the samples (their positions by default).

    Examples
    --------
    >>> from torch import nn
    >>> model = nn.Linear(3, 2).eval()
    >>> batches = list(torch.ones(5, 3).split(2))
    >>> replicas = [(model, torch.device("cpu")), (model, torch.device("cpu"))]
    >>> run_inference_parallel(replicas, batches, n_samples=5).shape
    (5, 2)
    """
    rows = _Rows(n_samples)
    lock = threading.Lock()

    numbered = sample_numbers or (lambda positions: positions)

    def run(replica, batch, start):
        model, device = replica
        samples = functools.partial(_shifted, numbered, start)
        features = _forward(model, batch, device, precision, channels_last, width, samples)
        with lock:  # the first write allocates the array
            rows.write(start, features)
            bar.update()

    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(progress(None, verbose=verbose, total=len(batches), desc=desc))
        if len(replicas) == 1:  # this thread runs every batch
            start = 0
            for batch in batches:
                run(replicas[0], batch, start)
                start += len(batch)
            return rows.result()
        # One thread per replica, so that each device runs its own batches one after the other.
        threads = [
            stack.enter_context(concurrent.futures.ThreadPoolExecutor(max_workers=1)) for _ in replicas
        ]
        in_flight = collections.deque()
        start = 0
        for index, batch in enumerate(batches):
            if len(in_flight) == 2 * len(replicas):
                in_flight.popleft().result()
            which = index % len(replicas)
            in_flight.append(threads[which].submit(run, replicas[which], batch, start))
            start += len(batch)
        for future in in_flight:
            future.result()
    return rows.result()


def _shifted(numbered, start, rows):
    """The sample numbers of a batch's ``rows``, the batch starting at position ``start``."""
    return numbered(start + rows)


def fold_batchnorm(module):
    """Fold each BatchNorm that follows a convolution into the convolution's weights, for inference only.

    The result computes the same function as the eval-mode module with one memory pass less per layer.
    It is a torch.fx rewrite, which drops Python side effects of ``forward`` and hooks on the module, so the
    library applies it only to architectures it builds itself (torchvision names, the offline default),
    never to a user's module. torch's convolutions are folded, and the offline default's TensorFlow-padded
    ones (an ``nn.Conv2d`` subclass, which torch.fx's own ``fuse`` traces through and so leaves unfolded),
    which keep their class, and so their padding. A module that symbolic tracing cannot handle is
    returned as it is.

    Examples
    --------
    >>> from torch import nn
    >>> folded = fold_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval())
    >>> any(isinstance(layer, nn.BatchNorm2d) for layer in folded.modules())
    False
    """
    from torch import fx
    from torch.fx.experimental.optimization import replace_node_module
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    try:
        graph = _ConvolutionsAsLeaves().trace(module)
    except Exception:  # data-dependent control flow and other untraceable code: keep the module whole
        return module
    modules = dict(module.named_modules())
    for node in list(graph.nodes):
        if not _folds_into_its_input(node, modules):
            continue
        convolution = node.args[0]
        replace_node_module(
            convolution, modules, fuse_conv_bn_eval(modules[convolution.target], modules[node.target])
        )
        node.replace_all_uses_with(convolution)
        graph.erase_node(node)
    return fx.GraphModule(module, graph).eval()


class _ConvolutionsAsLeaves(torch.fx.Tracer):
    """torch.fx's tracer, with the convolutions it may fold kept as one call of their module."""

    def is_leaf_module(self, module, qualified_name):
        return _foldable_convolution(module) or super().is_leaf_module(module, qualified_name)


def _foldable_convolution(module):
    """An ``nn.Conv2d`` whose forward convolves with its weight as stored: torch's own, or a subclass that
    only pads its input (the offline default's); not one that transforms its weight (weight standardisation),
    into which a BatchNorm's scale cannot be folded."""
    from ._efficientnet_lite import SameConv2d

    return type(module) in (torch.nn.Conv2d, SameConv2d)


def _folds_into_its_input(node, modules):
    """Whether ``node`` is a BatchNorm2d with running statistics that reads only a convolution's output."""
    if node.op != "call_module" or type(modules.get(node.target)) is not torch.nn.BatchNorm2d:
        return False
    source = node.args[0] if len(node.args) == 1 else None
    return (
        modules[node.target].track_running_stats
        and isinstance(source, torch.fx.Node)
        and source.op == "call_module"
        and _foldable_convolution(modules.get(source.target))
        and len(source.users) == 1
    )


def module_device(module):
    """The device holding ``module``'s first parameter or buffer (the CPU for a module with neither)."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device
