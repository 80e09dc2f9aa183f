"""FineTuneClassifier's claims, each measured against its baseline in the same run.

Sections:
- epoch: seconds per epoch of full fine-tuning against a hand-written PyTorch training loop on the same model
  (the offline EfficientNet-Lite0), data, preprocessing, optimizer and batch size: ratio <= 1.10 expected;
  the loop runs twice, with torch's default AdamW and with ``fused=True``, the implementation the library
  chooses on the CPU, so that the table tells the optimizer's share of the difference; on a GPU, in float32 and
  in bfloat16, with each row's fraction of the bfloat16 roofline (training images/s times the FLOPs of a
  forward and backward pass, over the bfloat16 matrix rate measured in the same run), and a loop that
  preprocesses each batch on the GPU, as the library does with the preprocessing it built;
- precision: FineTuneClassifier's epoch time in bfloat16 against float32 at several batch sizes (the
  trade-off ``precision="auto"`` makes);
- fast: a frozen backbone trained through the stored-features fast path against the same fit running the
  backbone every epoch (precompute_features=False): >= 5x faster expected, with the same predictions;
- transfer: test accuracy on scikit-learn's handwritten digits with 10 and 30 labels per class, for a linear
  probe, fine-tuning, and the same network trained from scratch (weights=None): fine-tuning well above
  scratch expected.

Usage: python benchmarks/bench_fine_tuning.py [--sections epoch precision fast transfer] [--device auto]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
from _results import environment_line, write_section
from _roofline import flops_per_image, measured_bf16_matmul_rate, synchronize

from sktransfer import FineTuneClassifier
from sktransfer._precision import autocast
from sktransfer._runtime import resolve_device
from sktransfer.backbones import load_backbone
from sktransfer.datasets import load_digit_images, load_textures


class PreprocessedDataset(Dataset):
    """What a PyTorch user writes: one image at a time through the weights' own transforms."""

    def __init__(self, images, labels, preprocess):
        self.images, self.labels, self.preprocess = images, labels, preprocess

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1)
        return self.preprocess(image), int(self.labels[index])


def handwritten_model(n_classes, device):
    """EfficientNet-Lite0 with a new head of ``n_classes``, in train mode, and its preprocessing."""
    backbone = load_backbone("efficientnet_lite0")
    model = backbone.module
    model.classifier = nn.Linear(model.classifier.in_features, n_classes)
    return model.to(device).train(), backbone.preprocess


def handwritten_epochs(
    images, labels, epochs, batch_size, lr, device, seed, fused=None, precision="float32", on_the_gpu=False
):
    """A plain PyTorch fine-tuning loop: new head, AdamW, train mode, shuffled batches. Seconds per epoch.

    ``on_the_gpu``: the loop of a user who moves each batch to the GPU as loaded (uint8) and preprocesses it
    there, rather than one image at a time in the DataLoader.
    """
    torch.manual_seed(seed)
    model, preprocess = handwritten_model(int(labels.max()) + 1, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, fused=fused)
    if on_the_gpu:
        uint8 = TensorDataset(torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(labels))
        loader = DataLoader(uint8, batch_size, shuffle=True, pin_memory=True)
    else:
        loader = DataLoader(PreprocessedDataset(images, labels, preprocess), batch_size, shuffle=True)
    durations = []
    for _ in range(epochs):
        start = time.perf_counter()
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            if on_the_gpu:
                x = preprocess(x)
            optimizer.zero_grad()
            with autocast(device, precision):
                loss = nn.functional.cross_entropy(model(x), y.to(device))
            loss.backward()
            optimizer.step()
        synchronize(device)
        durations.append(time.perf_counter() - start)
    return durations


def sktransfer_epochs(images, labels, epochs, batch_size, lr, device, seed, precision="float32"):
    """The same training with FineTuneClassifier, configured to do the same work. Seconds per epoch."""
    clf = FineTuneClassifier(
        precision=precision,
        strategy="full",
        freeze_batchnorm=False,  # BatchNorm in training mode, as in the loop above
        recalibrate_batchnorm=False,  # no pass after training: the loop above has none
        lr=lr,
        backbone_lr_ratio=1.0,
        lr_schedule=None,
        max_epochs=epochs,
        batch_size=batch_size,
        device=device,
        random_state=seed,
    ).fit(images, labels)
    return list(clf.history[:, "dur"])


def after_warm_up(durations):
    """A fit's epoch durations without its first, which pays for warm-up (kernel choice, allocation)."""
    return durations[1:] if len(durations) > 1 else durations


def epoch_rows(images, labels, args, device, precision):
    """Median seconds per epoch after the first of each fit, for the hand-written loops and FineTuneClassifier."""
    loops = {
        "hand-written PyTorch loop": {},
        "the same loop, AdamW(fused=True)": {"fused": True},
    }
    if device.type == "cuda":
        loops["the same loop, each batch preprocessed on the GPU"] = {"on_the_gpu": True}
    durations = {name: [] for name in [*loops, "FineTuneClassifier(strategy='full')"]}
    common = (images, labels, args.epochs, args.batch_size, 1e-4, device)
    for round_ in range(args.rounds):  # interleaved, so that drifts of the machine hit all alike
        for name, options in loops.items():
            durations[name] += after_warm_up(
                handwritten_epochs(*common, round_, precision=precision, **options)
            )
        ours = sktransfer_epochs(*common, round_, precision=precision)
        durations["FineTuneClassifier(strategy='full')"] += after_warm_up(ours)
    return {name: float(np.median(each)) for name, each in durations.items()}


def epoch_section(args, device):
    images, names = load_textures(n_per_class=args.images // 5, patch_size=64, random_state=0)
    labels = np.unique(names, return_inverse=True)[1]
    # bfloat16 only where it is native to every device this runs on: a GPU (the CPU rows are float32).
    precisions = ["float32", "bfloat16"] if device.type == "cuda" else ["float32"]
    lines = [
        f"### Epoch time of full fine-tuning ({len(images)} images 64×64 → 224×224, batch {args.batch_size}, "
        f"AdamW, {' and '.join(precisions)}; median of {args.rounds}×{args.epochs - 1 or 1} epochs, each fit's "
        "first left out as warm-up)",
        "",
        "| training | precision | s/epoch | ratio to the hand-written loop |",
        "|---|---|---:|---:|",
    ]
    seconds = {}
    for precision in precisions:
        rows = seconds[precision] = epoch_rows(images, labels, args, device, precision)
        loop_s = rows["hand-written PyTorch loop"]
        for name, row_s in rows.items():
            ratio = f"{row_s / loop_s:.2f}"
            if name.startswith("FineTuneClassifier"):
                ratio = f"**{ratio}** (goal <= 1.10)"
            lines.append(f"| {name} | {precision} | {row_s:.2f} | {ratio} |")
    if device.type == "cuda":
        lines += training_roofline_lines(len(images), int(labels.max()) + 1, device, seconds)
    return lines


def precision_section(args, device):
    """FineTuneClassifier's epoch time in bfloat16 against float32, at each batch size (what "auto" weighs)."""
    images, names = load_textures(n_per_class=args.precision_images // 5, patch_size=64, random_state=0)
    labels = np.unique(names, return_inverse=True)[1]
    lines = [
        f"### bfloat16 against float32 by batch size (full fine-tuning, {len(images)} images 64×64 → 224×224, "
        f"median of {args.rounds}×{args.epochs - 1 or 1} epochs after each fit's first)",
        "",
        "| batch size | float32 s/epoch | bfloat16 s/epoch | bfloat16 time / float32 time |",
        "|---:|---:|---:|---:|",
    ]
    for batch_size in args.precision_batch_sizes:
        seconds = {}
        for precision in ("float32", "bfloat16"):
            runs = []
            for round_ in range(args.rounds):
                epochs = sktransfer_epochs(
                    images, labels, args.epochs, batch_size, 1e-4, device, round_, precision
                )
                runs += after_warm_up(epochs)
            seconds[precision] = float(np.median(runs))
        ratio = seconds["bfloat16"] / seconds["float32"]
        lines.append(
            f"| {batch_size} | {seconds['float32']:.2f} | {seconds['bfloat16']:.2f} | **{ratio:.2f}** |"
        )
    return lines


def training_roofline_lines(n_images, n_classes, device, seconds):
    """Training images/s as a fraction of the bfloat16 roofline (forward and backward FLOPs per image)."""
    peak = measured_bf16_matmul_rate(device)
    model, _ = handwritten_model(n_classes, device)
    forward = flops_per_image(model.eval(), torch.randn(2, 3, 224, 224, device=device))
    flops = 3 * forward  # the backward pass costs about twice the forward
    lines = [
        "",
        f"Roofline: a training step of EfficientNet-Lite0 at 224×224 is about {flops / 1e9:.2f} GFLOP per "
        f"image: three times the forward pass's {forward / 1e9:.2f} (matrix products and convolutions, as "
        "torch.utils.flop_counter counts them). bfloat16 matrix rate measured in this run: "
        f"{peak / 1e12:.0f} TFLOP/s.",
        "",
        "| training | precision | images/s | fraction of the bfloat16 roofline |",
        "|---|---|---:|---:|",
    ]
    for precision, rows in seconds.items():
        for name, duration in rows.items():
            rate = n_images / duration
            lines.append(f"| {name} | {precision} | {rate:,.0f} | {rate * flops / peak:.2%} |")
    return lines


def fast_path_section(args, device):
    images, names = load_textures(n_per_class=args.images // 5, patch_size=64, random_state=0)
    test_images, test_names = load_textures(n_per_class=20, patch_size=64, random_state=1)
    rows, probas = [], {}
    for precompute in (False, True):
        clf = FineTuneClassifier(
            strategy="linear_probe",
            precompute_features=precompute,
            lr=1e-2,
            max_epochs=args.probe_epochs,
            batch_size=args.batch_size,
            device=device,
            random_state=0,
        )
        start = time.perf_counter()
        clf.fit(images, names)
        seconds = time.perf_counter() - start
        probas[precompute] = clf.predict_proba(test_images)
        rows.append((precompute, seconds, clf.score(test_images, test_names)))
    (_, naive_s, naive_acc), (_, fast_s, fast_acc) = rows
    gap = float(np.abs(probas[True] - probas[False]).max())
    return [
        f"### Frozen backbone: stored features versus a backbone pass every epoch ({len(images)} images, "
        f"{args.probe_epochs} epochs, batch {args.batch_size})",
        "",
        "| linear probe | fit seconds | test accuracy | speed-up |",
        "|---|---:|---:|---:|",
        f"| precompute_features=False (backbone every epoch) | {naive_s:.1f} | {naive_acc:.3f} | 1.0× |",
        f"| precompute_features=True (default) | {fast_s:.1f} | {fast_acc:.3f} | **{naive_s / fast_s:.1f}×** "
        "(goal >= 5×) |",
        "",
        f"Largest difference between the two models' test probabilities: {gap:.1e}.",
    ]


def transfer_section(args, device):
    images, labels = load_digit_images(size=32)
    methods = {
        "linear probe (pretrained, frozen)": {"strategy": "linear_probe", "lr": 1e-2, "max_epochs": 30},
        "fine-tuning (pretrained, gradual)": {"lr": 3e-3, "freeze_epochs": 3},
        "same network from scratch (weights=None)": {
            "weights": None,
            "strategy": "full",
            "lr": 3e-3,
            "backbone_lr_ratio": 1.0,
        },
    }
    lines = [
        "### Transfer versus training from scratch: scikit-learn's handwritten digits (8×8 → 32×32 → "
        f"224×224), EfficientNet-Lite0, {args.transfer_epochs} epochs, batch 16, bfloat16; test accuracy on "
        f"{args.test_images} held-out digits",
        "",
        "| labels per class | " + " | ".join(methods) + " |",
        "|---:|" + "---:|" * len(methods),
    ]
    for per_class in args.labels_per_class:
        train_x, rest_x, train_y, rest_y = train_test_split(
            images, labels, train_size=10 * per_class, stratify=labels, random_state=0
        )
        test_x, test_y = rest_x[: args.test_images], rest_y[: args.test_images]
        scores = []
        for name, params in methods.items():
            settings = {"max_epochs": args.transfer_epochs, "batch_size": 16, **params}
            clf = FineTuneClassifier(device=device, precision="bfloat16", random_state=0, **settings)
            start = time.perf_counter()
            scores.append(clf.fit(train_x, train_y).score(test_x, test_y))
            print(
                f"{per_class}/class {name}: {scores[-1]:.3f} ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        lines.append(f"| {per_class} | " + " | ".join(f"{score:.3f}" for score in scores) + " |")
    lines += ["", "Chance is 0.100."]
    return lines


SECTIONS = {
    "epoch": epoch_section,
    "precision": precision_section,
    "fast": fast_path_section,
    "transfer": transfer_section,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections", nargs="+", choices=list(SECTIONS), help="default: all; precision on a GPU only"
    )
    parser.add_argument("--images", type=int, default=100, help="training images (epoch and fast sections)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per round (epoch section)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--precision-images", type=int, default=1280, help="training images (precision section)"
    )
    parser.add_argument("--precision-batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--probe-epochs", type=int, default=10)
    parser.add_argument("--transfer-epochs", type=int, default=10)
    parser.add_argument("--labels-per-class", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--test-images", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.sections is None:
        args.sections = [name for name in SECTIONS if name != "precision" or device.type == "cuda"]
    lines = [f"## FineTuneClassifier ({device.type})", "", environment_line(device), ""]
    for name in args.sections:
        print(f"section {name} ...", flush=True)
        lines += [*SECTIONS[name](args, device), ""]
    print("\n".join(lines))
    write_section(f"bench_fine_tuning_{device.type}", "\n".join(lines))


if __name__ == "__main__":
    main()
