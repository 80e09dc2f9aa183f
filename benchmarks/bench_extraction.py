"""Throughput and memory of PretrainedFeatureExtractor against hand-written PyTorch, measured in one run.

Rows (images per second on the same model, image size, preprocessing and batch size):
- a hand-written best-practice loop (eval mode, inference_mode, batched, float32): ratio >= 1.0 expected;
- sktransfer at its best precision versus that float32 loop: >= 2x expected on a CPU with bfloat16 support;
- one image at a time (eval, no_grad), as several embedding libraries do: >= 1.3x on a CPU, >= 5x on a GPU.
And the peak resident memory of extracting N images given as file paths, for growing N (streamed: flat).

Usage: python benchmarks/bench_extraction.py [--images 96] [--rounds 3] [--batch-size 32] [--model resnet50] [--device auto]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

sys.path.insert(0, str(Path(__file__).parent))
from _results import environment_line, write_section

from sktransfer import PretrainedFeatureExtractor
from sktransfer._runtime import resolve_device
from sktransfer.backbones import build_feature_model, load_backbone

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def preprocess_batch(batch_uint8):
    """The same preprocessing as the weights' transforms: resize 256, centre crop 224, normalise."""
    x = TF.resize(batch_uint8, [256], antialias=True)
    x = TF.center_crop(x, [224])
    return TF.normalize(x.float() / 255, MEAN, STD)


def handwritten_loop(model, images, batch_size, device):
    """What a careful PyTorch user writes: eval, inference_mode, batches, float32."""
    model = model.eval().to(device)
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2)
            outputs.append(model(preprocess_batch(batch).to(device)).cpu())
    return torch.cat(outputs).numpy()


def one_at_a_time(model, images, device):
    """One image per forward pass (eval mode, no_grad): the pattern of several embedding libraries."""
    model = model.eval().to(device)
    outputs = []
    with torch.no_grad():
        for image in images:
            batch = torch.from_numpy(image[None]).permute(0, 3, 1, 2)
            outputs.append(model(preprocess_batch(batch).to(device)).cpu())
    return torch.cat(outputs).numpy()


def timed(function, n_images, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n_images / (time.perf_counter() - start), result


def throughput_rows(args, device):
    """Median images/s of every pipeline over ``args.rounds`` interleaved rounds (this CPU is noisy)."""
    images = np.random.default_rng(0).integers(0, 256, size=(args.images, 224, 224, 3), dtype=np.uint8)

    def fitted(precision, batch_size):
        extractor = PretrainedFeatureExtractor(
            args.model,
            weights=None,
            random_state=0,
            batch_size=batch_size,
            device=device,
            precision=precision,
        )
        return extractor.fit(images[:batch_size])

    # The baselines run the same network with the same weights and the classifier cut off, as a user would
    # write it: without the extractor's inference optimisations (BatchNorm folding, channels-last).
    reference = build_feature_model(load_backbone(args.model, weights=None, random_state=0)).body
    pipelines = {
        ("hand-written batched loop, float32", args.batch_size): partial(
            handwritten_loop, reference, images, args.batch_size, device
        ),
        ("one image at a time, float32", 1): partial(one_at_a_time, reference, images, device),
    }
    precisions = ["float32", "bfloat16"] + (["float16"] if device.type == "cuda" else [])
    for batch_size in sorted({args.batch_size, args.small_batch_size}, reverse=True):
        for precision in precisions:
            pipelines[f"sktransfer, {precision}", batch_size] = partial(
                fitted(precision, batch_size).transform, images
            )
    rates = {key: [] for key in pipelines}
    outputs = {}
    for _ in range(args.rounds):
        for key, pipeline in pipelines.items():
            rate, outputs[key] = timed(pipeline, len(images), device)
            rates[key].append(rate)
    rates = {key: float(np.median(values)) for key, values in rates.items()}
    loop_key, *_ = pipelines
    loop_rate, loop_out = rates[loop_key], outputs[loop_key]
    ours_fp32 = outputs["sktransfer, float32", args.batch_size]
    relative = np.abs(ours_fp32 - loop_out).max() / np.abs(loop_out).max()
    rows = [
        (name, batch, rate, rate / loop_rate, "")
        if (name, batch) != ("sktransfer, float32", args.batch_size)
        else (name, batch, rate, rate / loop_rate, f"max abs diff to the baseline / max abs: {relative:.1e}")
        for (name, batch), rate in rates.items()
    ]
    ours = {key: rate for key, rate in rates.items() if key[0].startswith("sktransfer")}
    single_rate = rates["one image at a time, float32", 1]
    summary = {
        "sktransfer float32 vs the hand-written float32 loop, same batch": ours[
            "sktransfer, float32", args.batch_size
        ]
        / loop_rate,
        "sktransfer best precision vs the hand-written float32 loop, same batch": max(
            rate for (_, batch), rate in ours.items() if batch == args.batch_size
        )
        / loop_rate,
        "sktransfer float32 (best batch) vs one image at a time": max(
            rate for (name, _), rate in ours.items() if name.endswith("float32")
        )
        / single_rate,
        "sktransfer best setting vs one image at a time": max(ours.values()) / single_rate,
    }
    return rows, summary


MEMORY_CHILD = """
import resource, sys
from pathlib import Path
from sktransfer import PretrainedFeatureExtractor
paths = sorted(str(p) for p in Path(sys.argv[1]).glob("*.jpg"))[: int(sys.argv[2])]
extractor = PretrainedFeatureExtractor("mobilenet_v3_small", weights=None, batch_size=32, device=sys.argv[3])
embeddings = extractor.fit(paths[:1]).transform(paths)
assert embeddings.shape[0] == len(paths)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def memory_rows(device, counts=(250, 500, 1000, 2000)):
    from PIL import Image

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for index in range(max(counts)):
            pixels = rng.integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(Path(folder) / f"{index:05d}.jpg")
        rows = []
        for count in counts:
            start = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", MEMORY_CHILD, folder, str(count), str(device)],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append((count, int(out.stdout.strip()) / 1024, time.perf_counter() - start))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the median counts")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--small-batch-size", type=int, default=8, help="a second, cache-friendlier batch")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)

    rows, summary = throughput_rows(args, device)
    lines = [
        f"## Feature extraction throughput ({device.type})",
        "",
        f"`python benchmarks/bench_extraction.py` — {environment_line(device)}.",
        f"{args.model} (random weights; speed does not depend on their values), {args.images} uint8 images "
        "224×224 in memory, resize 256 + centre crop 224 + normalise, penultimate features; median of "
        f"{args.rounds} interleaved rounds.",
        "",
        "| pipeline | batch | images/s | ratio to the hand-written loop | note |",
        "|---|---:|---:|---:|---|",
    ]
    lines += [
        f"| {name} | {batch} | {rate:.1f} | {ratio:.2f}× | {note} |"
        for name, batch, rate, ratio, note in rows
    ]
    lines += ["", *(f"- {claim}: **{ratio:.2f}×**" for claim, ratio in summary.items())]
    print("\n".join(lines))
    if not args.skip_memory:
        memory = memory_rows(device)
        lines += [
            "",
            "Peak resident memory of a fresh process extracting N JPEG files (96×96) given as paths "
            "with mobilenet_v3_small, batch 32:",
            "",
            "| N images | peak RSS (MiB) | seconds |",
            "|---:|---:|---:|",
        ]
        lines += [f"| {count} | {rss:.0f} | {seconds:.1f} |" for count, rss, seconds in memory]
        growth = memory[-1][1] - memory[0][1]
        lines += [
            "",
            f"Growth from {memory[0][0]} to {memory[-1][0]} images: {growth:.0f} MiB "
            f"(the embeddings themselves: {(memory[-1][0] - memory[0][0]) * 576 * 4 / 2**20:.1f} MiB).",
        ]
        print("\n".join(lines[-len(memory) - 6 :]))
    write_section(f"bench_extraction_{device.type}", "\n".join(lines))


if __name__ == "__main__":
    main()
