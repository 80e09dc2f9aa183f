"""Domain adaptation on a digit shift, against skada 0.6.0 on the same data and backbone, in one run.

Source: digits typeset with Pillow (several fonts, sizes, stroke widths, rotations and shifts; labelled).
Target: scikit-learn's handwritten digits, enlarged to 32×32 (unlabelled in training; every target digit is
then scored). Backbone: the offline ImageNet EfficientNet-Lite0, frozen: its embeddings are computed once and
every method adapts on them (fine-tuning the backbone of every method on a CPU would take hours; the Office-31
script does it on a GPU). Rows: target accuracy of source-only training, of each of our methods, of skada's
DANN, DeepCORAL and CORAL with the same bottleneck, head, optimizer, epochs and batch size, and of target-only
training (2-fold cross-validation on the labelled target: the upper bound).

Goal: each of our methods beats source-only on the target, and each is at least as good as skada's
counterpart.

Usage: python benchmarks/bench_domain_adaptation.py [--per-class 100] [--epochs 20] [--device auto]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _results import environment_line, write_section

from sktransfer import DomainAdaptedClassifier, PretrainedFeatureExtractor
from sktransfer._runtime import resolve_device
from sktransfer.datasets import load_digit_images, load_rendered_digits
from sktransfer.domain_adaptation import FeatureAlignmentClassifier, prediction_entropy_scorer


class BottleneckHead(nn.Module):
    """skada's network: the same bottleneck (Linear, BatchNorm, ReLU) and linear head as ours."""

    def __init__(self, n_features=1280, bottleneck_dim=256, n_classes=10):
        super().__init__()
        self.bottleneck = nn.Sequential(
            nn.Linear(n_features, bottleneck_dim), nn.BatchNorm1d(bottleneck_dim), nn.ReLU()
        )
        self.head = nn.Linear(bottleneck_dim, n_classes)

    def forward(self, x, sample_weight=None):  # skada passes sample_weight
        return self.head(self.bottleneck(x))


def ours(method, args, device, seed=0):
    return DomainAdaptedClassifier(
        method=method,
        model=None,  # X holds the backbone's embeddings
        lr=args.lr,
        warmup=0.0,  # the cosine decay skada's nets get, without the default warm-up
        max_epochs=args.epochs,
        batch_size=2 * args.batch_size,  # half source, half target
        device=device,
        random_state=seed,
    )


def skada_deep(name, args, device, epochs, seed=0):
    from skada.deep import DANN, DeepCoral
    from skorch.callbacks import LRScheduler

    torch.manual_seed(seed)  # skada has no random_state: seed its initialisation and shuffling
    common = {
        "module": BottleneckHead(),  # skada hooks into an instance
        "layer_name": "bottleneck",
        "reg": 1.0,
        "optimizer": torch.optim.AdamW,
        "optimizer__weight_decay": 0.01,
        "lr": args.lr,
        "max_epochs": epochs,
        "batch_size": args.batch_size,  # per domain
        "train_split": None,
        "callbacks": [LRScheduler(policy="CosineAnnealingLR", T_max=epochs)],  # a cosine decay, as ours
        "device": str(device),
        "verbose": 0,
    }
    if name == "DANN":
        return DANN(num_features=256, **common)
    return DeepCoral(**common)


def accuracy(predictions, labels):
    return float(np.mean(np.asarray(predictions) == labels))


def target_only(target, target_y, args, device):
    """2-fold cross-validated predictions of the same network trained on labelled target digits."""
    predictions = np.empty_like(target_y)
    for train, test in StratifiedKFold(2, shuffle=True, random_state=0).split(target, target_y):
        clf = ours("source_only", args, device).fit(target[train], target_y[train])
        predictions[test] = clf.predict(target[test])
    return predictions


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=100, help="typeset source digits per class")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32, help="rows per domain in a batch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per deep method")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)

    source_images, source_y = load_rendered_digits(n_per_class=args.per_class, random_state=0)
    target_images, target_y = load_digit_images(size=32)
    start = time.perf_counter()
    extractor = PretrainedFeatureExtractor(batch_size=64, device=device).fit(source_images)
    source, target = extractor.transform(source_images), extractor.transform(target_images)
    print(f"embedded {len(source) + len(target)} images in {time.perf_counter() - start:.0f} s", flush=True)
    X = np.concatenate([source, target])
    y = np.concatenate([source_y, np.full(len(target), -1)])
    domains = np.concatenate([np.ones(len(source), dtype=int), np.full(len(target), -2)])

    rows = {}

    def record(name, fit_predict, seeds=(0,)):
        """Mean target accuracy over ``seeds`` (its spread when there are several) and seconds per fit."""
        start = time.perf_counter()
        scores = [accuracy(fit_predict(seed), target_y) for seed in seeds]
        spread = f" ± {np.std(scores):.3f}" if len(scores) > 1 else ""
        rows[name] = (f"{np.mean(scores):.3f}{spread}", (time.perf_counter() - start) / len(seeds))
        print(f"{name}: {rows[name][0]} ({rows[name][1]:.0f} s per fit)", flush=True)

    seeds = tuple(range(args.seeds))
    for method in ("source_only", "dann", "mmd", "coral", "mcc"):
        record(
            f"sktransfer {method}",
            lambda seed, m=method: ours(m, args, device, seed).fit(X, y).predict(target),
            seeds,
        )
    for method in ("source_only", "coral", "subspace"):
        record(
            f"sktransfer FeatureAlignmentClassifier({method}) + logistic regression",
            lambda seed, m=method: FeatureAlignmentClassifier(method=m).fit(X, y).predict(target),
        )
    record(
        "sktransfer FeatureAlignmentClassifier(subspace), n_components in (10, 30, 100) chosen without "
        "target labels (GridSearchCV, scoring=prediction_entropy_scorer)",
        lambda seed: (
            GridSearchCV(
                FeatureAlignmentClassifier(method="subspace"),
                {"n_components": [10, 30, 100]},
                cv=2,
                scoring=prediction_entropy_scorer,
            )
            .fit(X, y)
            .predict(target)
        ),
    )
    try:
        from skada import CORAL
    except ImportError:
        print("skada is not installed (pip install skada==0.6.0): its rows are left out", flush=True)
    else:
        target_domains = np.full(len(target), -2)
        # skada's epoch is a pass over the larger domain, ours over the source: give both as many steps.
        skada_epochs = max(1, round(args.epochs * len(source) / max(len(source), len(target))))
        for name in ("DANN", "DeepCORAL"):
            record(
                f"skada {name}",
                lambda seed, n=name: (
                    skada_deep(n, args, device, skada_epochs, seed)
                    .fit(X.astype(np.float32), y, sample_domain=domains)
                    .predict(target.astype(np.float32), sample_domain=target_domains)
                ),
                seeds,
            )
        record(
            "skada CORAL + logistic regression",
            lambda seed: (
                CORAL(LogisticRegression(max_iter=1000))
                .fit(X, y, sample_domain=domains)
                .predict(target, sample_domain=target_domains)
            ),
        )
    record(
        "target only (2-fold CV on labelled target; upper bound)",
        lambda seed: target_only(target, target_y, args, device),
    )

    lines = [
        f"## Domain adaptation: typeset digits → handwritten digits ({device.type})",
        "",
        environment_line(device),
        "",
        f"Source: {len(source)} Pillow-typeset digits (labelled). Target: {len(target)} scikit-learn handwritten "
        "digits (unlabelled in training, all scored). Frozen offline EfficientNet-Lite0 embeddings for every "
        f"method; bottleneck 256 + linear head, AdamW lr {args.lr} with a cosine decay, {args.batch_size} rows "
        f"per domain per batch, the same number of steps for all: {args.epochs} epochs for sktransfer (a pass "
        "over the source each) and the same steps in passes over the larger domain for skada.",
        "",
        f"Deep methods: mean ± standard deviation over {args.seeds} seeds; the shallow ones are deterministic.",
        "",
        "| method | target accuracy | seconds per fit |",
        "|---|---:|---:|",
        *(f"| {name} | {score} | {seconds:.0f} |" for name, (score, seconds) in rows.items()),
    ]
    print("\n".join(lines))
    write_section(f"bench_domain_adaptation_{device.type}", "\n".join(lines))


if __name__ == "__main__":
    main()
