"""bfloat16 against float32 extraction on CPUs with and without native bfloat16, measured in one run.

The claim behind ``precision="auto"`` and the warning for ``precision="bfloat16"`` on a CPU without AVX512-BF16
or AMX: there bfloat16 autocast is emulated and several times slower than float32, while on a CPU that has
the instructions it is faster. Both kinds of CPU are measured on this one machine: each row runs in a fresh
process, and the emulated rows cap oneDNN's instruction set below AVX512-BF16 (``ONEDNN_MAX_CPU_ISA``), which
is what torch's CPU kernels see on an older CPU. Each process times float32 and bfloat16 extraction of the
same images alternately (ResNet-18, random weights, 224×224, batch 16) and reports the median of the rounds.

Usage: python benchmarks/bench_precision.py [--images 64] [--rounds 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import environment_line, write_section

# oneDNN's names for instruction-set caps; ``None`` leaves the CPU as it is.
ISA_CAPS = {
    "as the CPU is": None,
    "capped at AVX512 without BF16": "AVX512_CORE_VNNI",
    "capped at AVX2": "AVX2",
}


def measure(n_images, rounds):
    """Run in the child process: images/s of float32 and bfloat16 extraction, median over ``rounds``."""
    from sktransfer import PretrainedFeatureExtractor

    images = np.random.default_rng(0).integers(0, 256, size=(n_images, 224, 224, 3), dtype=np.uint8)
    extractors = {
        precision: PretrainedFeatureExtractor(
            "resnet18", weights=None, batch_size=16, device="cpu", precision=precision, random_state=0
        ).fit(images[:1])
        for precision in ("float32", "bfloat16")
    }
    for extractor in extractors.values():  # warm-up: oneDNN builds its kernels on the first call
        extractor.transform(images[:16])
    speeds = {precision: [] for precision in extractors}
    for _ in range(rounds):
        for precision, extractor in extractors.items():
            start = time.perf_counter()
            extractor.transform(images)
            speeds[precision].append(n_images / (time.perf_counter() - start))
    return {precision: statistics.median(values) for precision, values in speeds.items()}


def run_child(cap, n_images, rounds):
    env = dict(os.environ)
    if cap is not None:
        env["ONEDNN_MAX_CPU_ISA"] = cap
    command = [sys.executable, __file__, "--child", "--images", str(n_images), "--rounds", str(rounds)]
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.images, args.rounds)))
        return
    rows = []
    for label, cap in ISA_CAPS.items():
        speeds = run_child(cap, args.images, args.rounds)
        ratio = speeds["bfloat16"] / speeds["float32"]
        rows.append(f"| {label} | {speeds['float32']:.1f} | {speeds['bfloat16']:.1f} | {ratio:.2f}× |")
        print(rows[-1], flush=True)
    body = "\n".join(
        [
            "## bfloat16 against float32 on the CPU, with and without native bfloat16",
            "",
            f"`python benchmarks/bench_precision.py` — {environment_line(torch.device('cpu'))}.",
            f"ResNet-18 (random weights), {args.images} uint8 images 224×224, batch 16, median of "
            f"{args.rounds} alternating rounds, each row in a fresh process. Rows below the first cap oneDNN's "
            "instruction set (`ONEDNN_MAX_CPU_ISA`) to what a CPU without native bfloat16 offers.",
            "",
            "| CPU instructions | float32 images/s | bfloat16 images/s | bfloat16 / float32 |",
            "|---|---:|---:|---:|",
            *rows,
        ]
    )
    write_section("bench_precision", body)


if __name__ == "__main__":
    main()
