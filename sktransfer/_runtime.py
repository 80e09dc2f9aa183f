"""Where and how tensors are computed: device choice, precision, seeding, batched inference, progress."""

import collections
import concurrent.futures
import contextlib
import functools
import itertools
import os
import platform
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from ._progress import progress
from ._stacklevel import caller_stacklevel

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# What the ``precision`` parameter accepts: a precision, or "auto" for the fastest one native to the device.
PRECISION_OPTIONS = (*PRECISIONS, "auto")


class SlowPrecisionWarning(UserWarning):
    """The requested precision runs emulated on this hardware, slower than float32."""


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


def autocast(device, precision):
    """Context manager running the forward pass at ``precision`` ("float32" runs as is)."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


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


@functools.cache  # read once per process: precision checks run for every training batch
def cpu_native_bfloat16():
    """The instructions this CPU computes bfloat16 with natively, or ``None`` where torch emulates it.

    x86 CPUs need AVX512-BF16 or AMX; Arm CPUs the ``bf16`` feature. Elsewhere bfloat16 autocast is emulated
    in float32 and several times slower than float32 itself.

    Examples
    --------
    >>> cpu_native_bfloat16() in (None, "AMX", "AVX512-BF16", "Arm BF16")
    True
    """
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        if torch.cpu._is_amx_tile_supported():
            return "AMX"
        if torch.cpu._is_avx512_bf16_supported():
            return "AVX512-BF16"
        return None
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine().lower() in ("aarch64", "arm64") and cpuinfo.exists():
        features = " ".join(line for line in cpuinfo.read_text().splitlines() if line.startswith("Features"))
        return "Arm BF16" if "bf16" in features.split() else None
    return None


def _cuda_native_bfloat16():
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch knows no including_emulation: it reports native support only
        return torch.cuda.is_bf16_supported()


def resolve_precision(precision, device):
    """The precision that ``precision`` means on ``device``: ``"auto"`` picks the fastest native one.

    ``"auto"`` gives bfloat16 on GPUs that compute it natively (Ampere and later) and on CPUs with AMX or
    AVX512-BF16, float16 on older GPUs, and float32 elsewhere. Any other value is returned as it is.

    Examples
    --------
    >>> resolve_precision("bfloat16", torch.device("cpu"))
    'bfloat16'
    >>> resolve_precision("auto", torch.device("cpu")) in ("bfloat16", "float32")
    True
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bfloat16" if _cuda_native_bfloat16() else "float16"
    if device.type == "cpu" and cpu_native_bfloat16() is not None:
        return "bfloat16"
    return "float32"


def check_precision(precision, devices, warn=False):
    """Resolve ``precision`` for ``devices``; raise where it cannot run, and with ``warn``, warn where it is emulated.

    float16 autocast needs a GPU (``ValueError``). bfloat16 on a CPU without native bfloat16 instructions
    gives a :class:`SlowPrecisionWarning` when ``warn`` (the calls that start a fit, a transform or a
    prediction, not those of every batch): there it runs several times slower than float32. Python's
    warning registry shows it once per line of the user's, and the user's filters decide.

    Returns
    -------
    precision : str
        The resolved precision (see :func:`resolve_precision`), the one the first device runs at.

    Examples
    --------
    >>> check_precision("float32", [torch.device("cpu")])
    'float32'
    """
    resolved = resolve_precision(precision, devices[0])
    if resolved == "float16" and any(device.type == "cpu" for device in devices):
        raise ValueError(
            "precision='float16' needs a GPU; on the CPU use precision='auto' (bfloat16 where the CPU "
            "computes it natively, float32 elsewhere) or precision='float32'."
        )
    if (
        warn
        and resolved == "bfloat16"
        and any(device.type == "cpu" for device in devices)
        and cpu_native_bfloat16() is None
    ):
        warnings.warn(
            "precision='bfloat16' runs emulated on this CPU, which has neither AVX512-BF16 nor AMX "
            "instructions: there bfloat16 autocast is several times slower than float32 (ResNet-18 "
            "extraction ran at 0.2-0.4x the float32 speed without those instructions, "
            "benchmarks/bench_precision.py). Use precision='float32', or precision='auto', which picks "
            "bfloat16 only where the hardware computes it natively.",
            SlowPrecisionWarning,
            stacklevel=caller_stacklevel(),
        )
    return resolved


def _forward(model, batch, device, precision, channels_last, width, samples):
    """One batch through ``model`` on ``device``: float32 numpy features, checked."""
    with torch.inference_mode(), autocast(device, precision):  # both are per thread
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
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
    never to a user's module. A module that symbolic tracing cannot handle is returned as it is.

    Examples
    --------
    >>> from torch import nn
    >>> folded = fold_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval())
    >>> any(isinstance(layer, nn.BatchNorm2d) for layer in folded.modules())
    False
    """
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(module, inplace=True).eval()
    except Exception:  # data-dependent control flow and other untraceable code: keep the module whole
        return module


def module_device(module):
    """The device holding ``module``'s first parameter or buffer (the CPU for a module with neither)."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device
