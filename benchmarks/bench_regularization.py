"""L2-SP against plain weight decay and no regularisation, fine-tuning with 10 and 30 labels per class.

scikit-learn's handwritten digits (8×8, upscaled to 32 px, then to 64 px by the preprocessing, a resolution
two CPU cores afford), the offline ImageNet EfficientNet-Lite0 fine-tuned by FineTuneClassifier, 10 epochs,
batch 16, float32, under two schedules: the default (gradual unfreezing, the head at lr 3e-3 and the backbone
at a tenth of it) and full fine-tuning with every layer at lr 1e-3 from the first epoch (``strategy="full",
backbone_lr_ratio=1``: the backbone moves much further from its pretrained weights, the setting of the L2-SP
paper). Each seed draws other labelled digits and seeds the training; the test digits
(500, never drawn) are the same for all. Settings:

- no regularisation: ``weight_decay=0``;
- weight decay: AdamW's decoupled weight decay at the default 0.01, toward zero, on every weight;
- L2-SP (Li et al. 2018): ``regularization="l2_sp"`` at strengths 0.01 and 0.1: the backbone pulled toward
  its pretrained weights, the head with weight decay 0.01.

Test accuracy (mean ± std over seeds), and the difference of each setting from weight decay, paired by
seed (mean ± std). ``--quick`` runs at tiny sizes with one seed, as a smoke test, and leaves RESULTS.md
alone.

Usage: python benchmarks/bench_regularization.py [--seeds 3] [--labels-per-class 10 30] [--quick]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).parent))
from _results import environment_line, run_script

from sktransfer import FineTuneClassifier
from sktransfer.backbones import OFFLINE_MODEL_NAME, input_scaling
from sktransfer.datasets import load_digit_images

SCHEDULES = {
    "gradual unfreezing (default)": {},
    "full, every layer at 1e-3": {"strategy": "full", "backbone_lr_ratio": 1.0, "lr": 1e-3},
}
SETTINGS = {
    "no regularisation": {"weight_decay": 0.0},
    "weight decay 0.01": {},
    "L2-SP 0.01": {"regularization": "l2_sp", "regularization_strength": 0.01},
    "L2-SP 0.1": {"regularization": "l2_sp", "regularization_strength": 0.1},
}
BASELINE = "weight decay 0.01"
QUICK = {"labels_per_class": [3], "seeds": 1, "epochs": 2, "test": 50}


def classifier(seed, epochs, **params):
    resize = v2.Compose(
        [
            v2.Resize(64),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(*input_scaling(OFFLINE_MODEL_NAME)),
        ]
    )
    settings = {"lr": 3e-3, "max_epochs": epochs, "batch_size": 16, "device": "cpu", "random_state": seed}
    return FineTuneClassifier(preprocess=resize, **{**settings, **params})


def mean_std(values):
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def run(args):
    images, labels = load_digit_images(size=32)
    pool_x, test_x, pool_y, test_y = train_test_split(
        images, labels, test_size=args.test, stratify=labels, random_state=0
    )
    lines = [
        "### L2-SP versus weight decay: fine-tuning EfficientNet-Lite0 on few handwritten digits",
        "",
        f"`python benchmarks/bench_regularization.py` — {environment_line(torch.device('cpu'))}.",
        "",
        "scikit-learn's digits (8×8 → 32 px → 64 px), the offline ImageNet EfficientNet-Lite0 fine-tuned "
        "(default schedule: gradual unfreezing, head at 3e-3, backbone at 3e-4), "
        f"{args.epochs} epochs, batch 16; test accuracy on {args.test} held-out digits, mean ± std over "
        f"{args.seeds} seeds (labelled digits drawn and training seeded by each). Differences from weight "
        "decay are paired by seed.",
        "",
        "| schedule | labels per class | " + " | ".join(SETTINGS) + " |",
        "|---|---:|" + "---:|" * len(SETTINGS),
    ]
    differences = []
    for schedule, schedule_params in SCHEDULES.items():
        for per_class in args.labels_per_class:
            scores = {name: [] for name in SETTINGS}
            for seed in range(args.seeds):
                train_x, _, train_y, _ = train_test_split(
                    pool_x, pool_y, train_size=10 * per_class, stratify=pool_y, random_state=seed
                )
                for name, params in SETTINGS.items():
                    start = time.perf_counter()
                    clf = classifier(seed, args.epochs, **schedule_params, **params).fit(train_x, train_y)
                    scores[name].append(clf.score(test_x, test_y))
                    elapsed = time.perf_counter() - start
                    print(
                        f"{schedule}, {per_class}/class, seed {seed}, {name}: {scores[name][-1]:.3f} "
                        f"({elapsed:.0f} s)",
                        flush=True,
                    )
            row = " | ".join(mean_std(values) for values in scores.values())
            lines.append(f"| {schedule} | {per_class} | {row} |")
            baseline = np.array(scores[BASELINE])
            gaps = [
                f"{name} {mean_std(np.array(values) - baseline)}"
                for name, values in scores.items()
                if name != BASELINE
            ]
            differences.append(f"- {schedule}, {per_class} labels per class: " + "; ".join(gaps) + ".")
    lines += ["", f"Differences from {BASELINE}:", "", *differences, "", "Chance is 0.100."]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels-per-class", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one seed; RESULTS.md untouched")
    run_script("bench_regularization", parser, QUICK, run)


if __name__ == "__main__":
    main()
