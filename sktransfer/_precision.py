"""Which precision a network runs at: bfloat16 where the hardware computes it natively, checked and warned."""

import contextlib
import functools
import platform
import warnings
from pathlib import Path

import torch

from ._stacklevel import caller_stacklevel

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# What the ``precision`` parameter accepts: a precision, or "auto" for the fastest one native to the device.
PRECISION_OPTIONS = (*PRECISIONS, "auto")


class SlowPrecisionWarning(UserWarning):
    """The requested precision runs emulated on this hardware, slower than float32."""


def autocast(device, precision):
    """Context manager running the forward pass at ``precision`` ("float32" runs as is)."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


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
    # set after fit, it has not been through the parameter validation of fit
    if not isinstance(precision, str) or precision not in PRECISION_OPTIONS:
        raise ValueError(f"precision={precision!r} is none of {list(PRECISION_OPTIONS)}.")
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
