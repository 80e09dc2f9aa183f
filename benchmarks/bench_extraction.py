"""Throughput and memory of PretrainedFeatureExtractor against hand-written PyTorch, measured in one run.

Rows (images per second on the same model, image size, preprocessing and batch size):
- a hand-written best-practice loop (eval mode, inference_mode, batched, float32): ratio >= 1.0 expected;
- sktransfer at its best precision versus that float32 loop: >= 2x expected on a CPU with bfloat16 support;
- one image at a time (eval, no_grad), as several embedding libraries do: >= 1.3x on a CPU, >= 5x on a GPU.
On a GPU also: the hand-written loop under bfloat16 autocast; the extractor over several devices (every GPU,
or two copies of the network on a machine with one); the network alone on batches already preprocessed on
the GPU; and each pipeline's fraction of the bfloat16 roofline (its images/s times the network's FLOPs per
image, over the bfloat16 matrix rate measured in the same run).
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
from _roofline import flops_per_image, measured_bf16_matmul_rate, synchronize

from sktransfer import PretrainedFeatureExtractor
from sktransfer._precision import autocast
from sktransfer._runtime import resolve_device
from sktransfer.backbones import build_feature_model, load_backbone

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def preprocess_batch(batch_uint8):
    """The same preprocessing as the weights' transforms: resize 256, centre crop 224, normalise."""
    x = TF.resize(batch_uint8, [256], antialias=True)
    x = TF.center_crop(x, [224])
    return TF.normalize(x.float() / 255, MEAN, STD)


def handwritten_loop(model, images, batch_size, device, precision="float32"):
    """What a careful PyTorch user writes: eval, inference_mode, batches, float32 (or autocast)."""
    model = model.eval().to(device)
    outputs = []
    with torch.inference_mode(), autocast(device, precision):
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2)
            outputs.append(model(preprocess_batch(batch).to(device)).float().cpu())
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
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return n_images / (time.perf_counter() - start), result


def network_only(model, batch, device, precision, repeats=20):
    """Images/s of ``model`` alone on ``batch``, already preprocessed and on the device: a pipeline's ceiling."""
    with torch.inference_mode(), autocast(device, precision):
        for _ in range(3):
            model(batch)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            model(batch)
        synchronize(device)
    return repeats * len(batch) / (time.perf_counter() - start)


def several_devices(device):
    """Every GPU where there are several; else two copies of the network on the one (the same code path)."""
    count = torch.cuda.device_count()
    if count > 1:
        return [torch.device("cuda", index) for index in range(count)], f"{count} GPUs"
    return [device, device], "2 copies on the 1 GPU"


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
    if device.type == "cuda":
        pipelines["hand-written batched loop, bfloat16 autocast", args.batch_size] = partial(
            handwritten_loop, reference, images, args.batch_size, device, "bfloat16"
        )
    for batch_size in sorted({args.batch_size, args.small_batch_size}, reverse=True):
        for precision in precisions:
            pipelines[f"sktransfer, {precision}", batch_size] = partial(
                fitted(precision, batch_size).transform, images
            )
    several_key = None
    if device.type == "cuda":
        devices, described = several_devices(device)
        several_key = f"sktransfer, bfloat16, {described}", args.batch_size
        several = fitted("bfloat16", args.batch_size).set_params(device=devices)
        pipelines[several_key] = partial(several.transform, images)
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
    ours = {  # on one device: the several-device row has a line of its own
        key: rate for key, rate in rates.items() if key[0].startswith("sktransfer") and key != several_key
    }
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
    if several_key:
        single = outputs["sktransfer, bfloat16", args.batch_size]
        gap = np.abs(outputs[several_key] - single).max() / np.abs(single).max()
        summary[f"{several_key[0]} vs one device (bfloat16, same batch); outputs differ by {gap:.1e}"] = (
            rates[several_key] / rates["sktransfer, bfloat16", args.batch_size]
        )
    return rows, summary, rates


def roofline_lines(args, device, rates):
    """Each pipeline's achieved FLOP/s as a fraction of the bfloat16 matrix rate measured now."""
    size = 8192
    peak = measured_bf16_matmul_rate(device, size)
    extractor = PretrainedFeatureExtractor(
        args.model, weights=None, random_state=0, batch_size=args.network_batch_size, device=device
    )
    images = np.random.default_rng(1).integers(
        0, 256, size=(args.network_batch_size, 224, 224, 3), dtype=np.uint8
    )
    extractor.fit(images[:1])
    model = extractor.backbone_
    batch = preprocess_batch(torch.from_numpy(images).permute(0, 3, 1, 2)).to(device)
    if getattr(extractor, "_library_built", False):
        batch = batch.contiguous(memory_format=torch.channels_last)
    flops = flops_per_image(model, batch[:1])
    alone = {
        precision: network_only(model, batch, device, precision) for precision in ("bfloat16", "float32")
    }
    lines = [
        "",
        f"Roofline: {args.model} forward, {flops / 1e9:.2f} GFLOP per image (matrix products and "
        f"convolutions, as torch.utils.flop_counter counts them); bfloat16 matrix rate measured in this run "
        f"({size}³ product, median of 10): {peak / 1e12:.0f} TFLOP/s, so at most "
        f"{peak / flops:,.0f} images/s.",
        "",
        "| pipeline | batch | images/s | TFLOP/s | fraction of the bfloat16 roofline |",
        "|---|---:|---:|---:|---:|",
    ]
    measured = {
        **{
            (f"the network alone, {p}, input preprocessed on the GPU", args.network_batch_size): r
            for p, r in alone.items()
        },
        **rates,
    }
    for (name, batch_size), rate in measured.items():
        lines.append(
            f"| {name} | {batch_size} | {rate:,.0f} | {rate * flops / 1e12:.1f} | {rate * flops / peak:.1%} |"
        )
    return lines


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
    parser.add_argument(
        "--network-batch-size", type=int, default=256, help="batch of the network-alone rows (GPU only)"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)

    rows, summary, rates = throughput_rows(args, device)
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
    if device.type == "cuda":
        lines += roofline_lines(args, device, rates)
    print("\n".join(lines), flush=True)
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
