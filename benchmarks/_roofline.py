"""Shared by the benchmark scripts: a device's measured bfloat16 matrix rate and a network's FLOPs per image.

The fraction of the roofline that a pipeline reaches is its images/s times the network's FLOPs per image,
over the matrix rate measured in the same run (not the datasheet's): what the arithmetic units could do.
"""

import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device):
    """Wait for the work queued on ``device`` (a CUDA GPU; nothing to wait for elsewhere, or for None)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_bf16_matmul_rate(device, size=8192, repeats=10):
    """FLOP/s of a ``size``³ bfloat16 matrix product on ``device`` (random operands, median of ``repeats``)."""
    generator = torch.Generator(device=device).manual_seed(0)
    a, b = (
        torch.randn(size, size, device=device, dtype=torch.bfloat16, generator=generator) for _ in range(2)
    )
    for _ in range(3):  # warm-up: handles, kernel selection, clocks
        a @ b
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(seconds)


def flops_per_image(model, example):
    """Forward FLOPs (matrix products and convolutions, as torch counts them) of ``model`` on one image.

    ``example`` is a batch of preprocessed images on the model's device. For a training step, take three
    times this (the backward pass costs about twice the forward): torch's counter of the backward pass
    ignores a convolution's groups, so it counts depthwise convolutions' gradients dozens of times over.
    """
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(example)
    return counter.get_total_flops() / len(example)
