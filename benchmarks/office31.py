"""The Office-31 protocol for DomainAdaptedClassifier: six transfer tasks between Amazon, DSLR and Webcam.

Needs a GPU and the data (not run in CI): Office-31 unpacked as ROOT/{amazon,dslr,webcam}/images/<class>/*.jpg
(the layout of the original archive). Every task trains ResNet-50 (torchvision IMAGENET1K_V1 weights,
downloaded into torch's cache on first use) on all labelled source images and all unlabelled target images,
then scores every target image, as in the published protocol. The published anchor is tllib's DANN: 86.1%
average accuracy over the six tasks.

Usage: python benchmarks/office31.py ROOT [--methods source_only dann] [--epochs 20] [--device cuda]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import environment_line, write_section

from sktransfer import DomainAdaptedClassifier
from sktransfer._runtime import resolve_device
from sktransfer.datasets import load_image_folder
from sktransfer.domain_adaptation import METHODS

DOMAINS = {"A": "amazon", "D": "dslr", "W": "webcam"}
TASKS = ["A→W", "D→W", "W→D", "A→D", "D→A", "W→A"]


def load_domain(root, name):
    folder = Path(root) / name
    return load_image_folder(folder / "images" if (folder / "images").is_dir() else folder)


def run_task(task, root, method, args, device):
    source_paths, source_y = load_domain(root, DOMAINS[task[0]])
    target_paths, target_y = load_domain(root, DOMAINS[task[-1]])
    X = source_paths + target_paths
    y = np.concatenate([source_y, np.full(len(target_paths), -1, dtype=object)]).astype(object)
    clf = DomainAdaptedClassifier(
        method=method,
        model="resnet50",
        weights="IMAGENET1K_V1",
        augment="default",
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        num_workers=args.workers,
        precision=args.precision,
        device=device,
        random_state=0,
    )
    start = time.perf_counter()
    clf.fit(X, y)
    accuracy = float(np.mean(clf.predict(target_paths) == target_y))
    return accuracy, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="Office-31 folder holding amazon/, dslr/ and webcam/")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=["source_only", "dann"])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=TASKS)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64, help="half source, half target")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--precision", default="bfloat16")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True
    lines = [
        f"## Office-31, ResNet-50 ({device.type})",
        "",
        environment_line(device),
        "",
        f"{args.epochs} epochs, batch {args.batch_size}, lr {args.lr}, {args.precision}; published anchor: tllib "
        "DANN 86.1% average.",
        "",
        "| method | " + " | ".join(args.tasks) + " | average |",
        "|---|" + "---:|" * (len(args.tasks) + 1),
    ]
    for method in args.methods:
        scores = []
        for task in args.tasks:
            accuracy, seconds = run_task(task, args.root, method, args, device)
            print(f"{method} {task}: {accuracy:.3f} ({seconds:.0f} s)", flush=True)
            scores.append(accuracy)
        lines.append(
            f"| {method} | "
            + " | ".join(f"{100 * s:.1f}" for s in scores)
            + f" | {100 * np.mean(scores):.1f} |"
        )
    print("\n".join(lines))
    write_section(f"office31_{device.type}", "\n".join(lines))


if __name__ == "__main__":
    main()
