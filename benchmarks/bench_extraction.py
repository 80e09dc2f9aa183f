"""Throughput and memory of PretrainedFeatureExtractor against hand-written PyTorch, measured in one run.

Rows (images per second on the same model, image size, preprocessing and batch size):
- a hand-written best-practice loop (eval mode, inference_mode, batched, float32): ratio >= 1.0 expected;
- sktransfer at its best precision versus that float32 loop: >= 2x expected on a CPU with bfloat16 support;
- one image at a time (eval, no_grad), as several embedding libraries do: >= 1.3x on a CPU, >= 5x on a GPU.
And the peak resident memory of extracting N images given as file paths, for growing N (streamed: flat).

Usage: python benchmarks/bench_extraction.py [--images 128] [--batch-size 32] [--model resnet50] [--device auto]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision.transforms.v2 import functional as TF

sys.path.insert(0, str(Path(__file__).parent))
from _results import environment_line, write_section

from sktransfer import PretrainedFeatureExtractor
from sktransfer._runtime import resolve_device

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


def headless(model_name):
    model = torchvision.models.get_model(model_name, weights=None)
    model.fc = torch.nn.Identity()  # the same penultimate features the extractor returns
    return model


def throughput_rows(args, device):
    images = np.random.default_rng(0).integers(0, 256, size=(args.images, 224, 224, 3), dtype=np.uint8)
    warm = images[: args.batch_size]
    torch.manual_seed(0)
    model = headless(args.model)
    reference_model = headless(args.model)
    reference_model.load_state_dict(model.state_dict())

    def ours(precision):
        extractor = PretrainedFeatureExtractor(
            model, batch_size=args.batch_size, device=device, precision=precision
        ).fit(warm)
        extractor.transform(warm)  # warm-up
        return timed(lambda: extractor.transform(images), len(images), device)

    handwritten_loop(reference_model, warm, args.batch_size, device)
    loop_rate, loop_out = timed(
        lambda: handwritten_loop(reference_model, images, args.batch_size, device), len(images), device
    )
    single_rate, _ = timed(lambda: one_at_a_time(reference_model, images, device), len(images), device)
    fp32_rate, fp32_out = ours("float32")
    best_precision = "bfloat16"
    best_rate, _ = ours(best_precision)
    if device.type == "cuda":
        fp16_rate, _ = ours("float16")
        if fp16_rate > best_rate:
            best_precision, best_rate = "float16", fp16_rate
    max_diff = float(np.abs(fp32_out - loop_out).max())
    return [
        ("hand-written batched loop, float32 (baseline)", loop_rate, 1.0, ""),
        ("one image at a time, float32", single_rate, single_rate / loop_rate, ""),
        ("sktransfer, float32", fp32_rate, fp32_rate / loop_rate, f"max |diff| vs baseline {max_diff:.1e}"),
        (f"sktransfer, {best_precision}", best_rate, best_rate / loop_rate, ""),
    ], {"vs_single": fp32_rate / single_rate, "best_vs_single": best_rate / single_rate}


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
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)

    rows, single = throughput_rows(args, device)
    lines = [
        f"## Feature extraction throughput ({device.type})",
        "",
        f"`python benchmarks/bench_extraction.py` — {environment_line(device)}.",
        f"{args.model} (random weights; speed does not depend on their values), {args.images} uint8 images "
        f"224×224 in memory, resize 256 + centre crop 224 + normalise, batch {args.batch_size}.",
        "",
        "| pipeline | images/s | ratio to the batched loop |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {rate:.1f} | {ratio:.2f}× {note} |" for name, rate, ratio, note in rows]
    lines += [
        "",
        f"sktransfer float32 vs one image at a time: {single['vs_single']:.2f}×; "
        f"best precision vs one image at a time: {single['best_vs_single']:.2f}×.",
    ]
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
