"""Memory of extraction on a 1 GB array, and the cost of a cache lookup against the network it saves.

Two claims, measured in one run:
- ``fit`` + ``transform`` of a 1 GB array hold the working set of a batch beyond the input, not a copy of
  it: validation reads the images in place and the embedding cache hashes them an image at a time. Each row
  runs in a fresh process (a tiny convolutional network with 8 outputs, so that the embeddings are small
  and the row takes seconds): the process's resident high-water mark is reset (``5`` written to
  ``/proc/self/clear_refs``) once the input exists, and its peak beyond the input is reported (``VmHWM``
  minus the resident size at the reset), with tracemalloc's peak (numpy's allocations; torch's are not
  traced) and the ratio of the peak to one batch as it enters the network (float32).
- A cache lookup costs a small fraction of the network pass it replaces: 1,000 images through the offline
  EfficientNet-Lite0 without a cache, then with one (the first call fills it), then again (all hits, the
  index in memory) and once more with the index read from disk, as in a new process.

Usage: python benchmarks/bench_cache_memory.py [--gigabytes 1] [--lookup-images 1000]
(about 7 minutes on 2 CPU cores)
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _results import environment_line, write_section

from sktransfer import PretrainedFeatureExtractor

IMAGE_SIDE = 128
BATCH_SIZE = 64


class TinyConv(nn.Module):
    """Strided convolution, average pooling: 8 features per image, a few operations per pixel."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=4, stride=4)

    def forward(self, x):
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def _status_kib(field):
    status = Path("/proc/self/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0])


def measure_memory(dtype, gigabytes, cached):
    """Run in a child process: peak memory of fit + transform beyond a channels-last array of images."""
    image_bytes = IMAGE_SIDE * IMAGE_SIDE * 3 * np.dtype(dtype).itemsize
    n_images = int(gigabytes * 2**30) // image_bytes
    rng = np.random.default_rng(0)
    shape = (n_images, IMAGE_SIDE, IMAGE_SIDE, 3)
    X = (
        rng.integers(0, 256, size=shape, dtype=np.uint8)
        if dtype == "uint8"
        else rng.random(shape, np.float32)
    )
    with tempfile.TemporaryDirectory() as folder:
        extractor = PretrainedFeatureExtractor(
            TinyConv(), batch_size=BATCH_SIZE, device="cpu", cache=folder if cached else None
        )
        extractor.fit(X[:1]).transform(np.zeros_like(X[:BATCH_SIZE]))  # first-call allocations excluded
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the present resident size
        baseline = _status_kib("VmRSS")
        tracemalloc.start()
        start = time.perf_counter()
        embeddings = extractor.fit(X).transform(X)
        seconds = time.perf_counter() - start
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        peak = _status_kib("VmHWM")
    batch_bytes = BATCH_SIZE * 3 * IMAGE_SIDE * IMAGE_SIDE * 4
    return {
        "input_mib": X.nbytes / 2**20,
        "images": n_images,
        "peak_extra_mib": (peak - baseline) / 1024,
        "traced_mib": traced / 2**20,
        "batch_mib": batch_bytes / 2**20,
        "output_mib": embeddings.nbytes / 2**20,
        "seconds": seconds,
    }


def run_child(dtype, gigabytes, cached):
    command = [sys.executable, __file__, "--child", dtype, "--gigabytes", str(gigabytes)]
    command += ["--cached"] if cached else []
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def _timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def measure_lookup(n_images):
    """Seconds for the network on ``n_images``, and for cache lookups of the same images."""
    from sktransfer import _embedding_cache

    X = np.random.default_rng(1).integers(0, 256, size=(n_images, IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        plain = PretrainedFeatureExtractor(batch_size=32, device="cpu").fit(X[:1])
        cached = PretrainedFeatureExtractor(batch_size=32, device="cpu", cache=folder).fit(X[:1])
        plain.transform(X[:32])  # warm-up
        reference, network = _timed(lambda: plain.transform(X))
        _, filling = _timed(lambda: cached.transform(X))
        warm_rows, warm = _timed(lambda: cached.transform(X))
        _embedding_cache._CACHES.clear()  # as a new process: the index is read from the shard files
        cold_rows, cold = _timed(lambda: cached.transform(X))
    np.testing.assert_array_equal(warm_rows, cold_rows)
    np.testing.assert_allclose(warm_rows, reference, rtol=1e-4, atol=1e-5)
    return network, filling, warm, cold


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--lookup-images", type=int, default=1000)
    parser.add_argument("--child", choices=["uint8", "float32"], help=argparse.SUPPRESS)
    parser.add_argument("--cached", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_memory(args.child, args.gigabytes, args.cached)))
        return

    rows = []
    for dtype in ("uint8", "float32"):
        for gigabytes, cached in (
            (args.gigabytes, False),
            (args.gigabytes, True),
            (args.gigabytes / 4, True),
        ):
            result = run_child(dtype, gigabytes, cached)
            ratio = result["peak_extra_mib"] / result["batch_mib"]
            print(f"{dtype}, cache={cached}: {result}, peak / batch {ratio:.1f}")
            rows.append(
                f"| {dtype} | {'folder' if cached else 'None'} | {result['input_mib']:.0f} | "
                f"{result['images']} | {result['peak_extra_mib']:.0f} | {result['traced_mib']:.1f} | "
                f"{ratio:.1f}× | {result['seconds']:.1f} |"
            )
    batch_mib = BATCH_SIZE * 3 * IMAGE_SIDE * IMAGE_SIDE * 4 / 2**20

    n = args.lookup_images
    network, filling, warm, cold = measure_lookup(n)
    per_thousand = 1000 / n
    print(f"network {network:.2f}s, filling {filling:.2f}s, lookup warm {warm:.3f}s, cold {cold:.3f}s")

    body = f"""## Memory of extraction on a 1 GB array, and the cost of a cache lookup (cpu)

`python benchmarks/bench_cache_memory.py` — {environment_line(torch.device("cpu"))}.

### Peak memory of `fit` + `transform` beyond the input

Channels-last {IMAGE_SIDE}×{IMAGE_SIDE} RGB images in memory, a tiny convolutional network (8 outputs),
batch {BATCH_SIZE} (one batch entering the network, float32: {batch_mib:.1f} MiB);
each row in a fresh process, its resident high-water mark reset once the input exists. The peak is the
working set of a batch (its slice of the input, its float32 conversion, the preprocessing's temporaries,
what the allocators keep), not a copy of the input: it does not grow with the input (the last row of each
kind has a quarter of it).

| input | cache | input (MiB) | images | peak resident memory beyond the input (MiB) | tracemalloc peak (MiB) | peak / batch | seconds |
|---|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

### A cache lookup against the network pass it saves

{n} uint8 images {IMAGE_SIDE}×{IMAGE_SIDE} in memory, offline EfficientNet-Lite0 (resize and crop to 224),
batch 32, float32.

| call | seconds per 1,000 images | ratio to the network |
|---|---:|---:|
| `transform` without a cache (the network) | {network * per_thousand:.2f} | 1.000 |
| first `transform` with a cache (network, hashing, writing the shard) | {filling * per_thousand:.2f} | {filling / network:.3f} |
| cached `transform`, index in memory | {warm * per_thousand:.3f} | **{warm / network:.4f}** |
| cached `transform`, index read from disk (a new process) | {cold * per_thousand:.3f} | {cold / network:.4f} |
"""
    write_section("bench_cache_memory.py", body)


if __name__ == "__main__":
    main()
