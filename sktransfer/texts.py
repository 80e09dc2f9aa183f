"""Every accepted form of X for a text encoder as a sequence of strings, validated up front; token batches.

Accepted X: a list or tuple of strings, a 1-D numpy array of strings (or of objects that are strings), and a
pandas Series or one-column DataFrame of strings. Empty strings are texts like any other; ``None`` and NaN
are refused, naming the sample. Texts are tokenised a batch at a time (dynamic padding to the longest text
of the batch, truncation at the encoder's maximum length) as the network reads them, and a batch of tokens
travels as one :class:`TokenBatch`. Nothing the user passed is modified.
"""

import contextlib
import functools
import os
import threading
import warnings
from numbers import Integral

import numpy as np
import torch
from torch.utils.data import Subset

from ._hashing import text_key
from ._labels import is_missing_value
from ._pixel_values import sample_error
from ._stacklevel import caller_stacklevel


class TextSource:
    """A sequence of texts, loaded a batch at a time (the text counterpart of an ``ImageSource``)."""

    uniform = True  # batches are tokenised whole

    def __init__(self, texts):
        self.items = texts

    def __len__(self):
        return len(self.items)

    def load(self, index):
        return self.items[index]

    def load_batch(self, indices):
        return [self.items[index] for index in indices]

    def fingerprints(self):
        """One 16-byte key per text: the hash of its UTF-8 bytes (the embedding cache's keys)."""
        return [text_key(text) for text in self.items]


def is_pandas(X):
    """Whether X is a pandas Series or DataFrame (without importing pandas)."""
    return type(X).__module__.startswith("pandas") and hasattr(X, "to_numpy")


def as_text_source(X, model):
    """Validate X as texts for the text encoder ``model`` and wrap it as a :class:`TextSource`.

    Raises ``ValueError`` naming the sample at fault (``None``, NaN, a number, an image) before any text is
    run through a network.

    Examples
    --------
    >>> source = as_text_source(["a fine film", ""], "all-MiniLM-L6-v2")
    >>> len(source), source.load(0)
    (2, 'a fine film')
    >>> as_text_source(["ok", None], "all-MiniLM-L6-v2")
    Traceback (most recent call last):
    ...
    ValueError: X: sample 1 is None; every sample must be a string (an empty string is allowed).
    """
    if is_pandas(X):
        if X.ndim == 2:
            if X.shape[1] != 1:
                raise ValueError(
                    f"X is a DataFrame with {X.shape[1]} columns ({list(map(str, X.columns))[:10]}); pass the "
                    "one column that holds the texts, e.g. X['text'], and the labels as y."
                )
            X = X.iloc[:, 0]
        X = list(X.to_numpy())
    elif isinstance(X, str):
        raise ValueError(f"X is a single string ({X[:40]!r}); pass a list of texts, e.g. [text].")
    elif not isinstance(X, list | tuple):
        array = np.asarray(X) if not isinstance(X, torch.Tensor) else None
        if array is not None and array.ndim == 2 and array.shape[1] == 1 and array.dtype.kind in "OUS":
            array = array[:, 0]  # one column of texts, as a one-column DataFrame's values give
        if array is not None and array.ndim == 2 and array.dtype.kind in "OUS":
            raise ValueError(
                f"X is a {array.shape} array of strings: pass the one column that holds the texts, e.g. X[:, 0], "
                "and the labels as y."
            )
        if array is None or array.ndim != 1 or array.dtype.kind not in "OUS":
            shape = tuple(X.shape) if hasattr(X, "shape") else type(X).__name__
            raise ValueError(
                f"X is {shape}, which holds images or numbers, but model={model!r} is a text encoder: pass a "
                "list, 1-D array or pandas Series of strings, or an image backbone for images."
            )
        X = array.tolist()
    if len(X) == 0:
        raise ValueError("X is empty: it holds 0 texts; at least one is required.")
    if isinstance(X[0], str) and _is_image_path(X[0]) and os.path.isfile(X[0]):
        raise ValueError(
            f"X holds image files (sample 0 is {X[0]!r}), but model={model!r} is a text encoder: pass texts, "
            "or an image backbone such as model='efficientnet_lite0' for images."
        )
    for index, text in enumerate(X):
        if isinstance(text, str):
            if not text.isascii():
                _check_encodable(text, index)
            continue
        what = (
            "None"
            if text is None
            else "missing (NaN or NA)"
            if is_missing_value(text)
            else f"a {type(text).__name__}"
        )
        raise sample_error(
            f"sample {index} is {what}; every sample must be a string (an empty string is allowed)."
        )
    return TextSource(list(X))


def _check_encodable(text, index):
    """Raise, naming the sample, for text that is not valid Unicode (lone surrogates): tokenizers fail."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise sample_error(
            f"sample {index} holds {text[exc.start]!r} at character {exc.start}, a lone surrogate that is no "
            "Unicode character (a file read with errors='surrogateescape' gives them): read it with its own "
            "encoding, or clean it, e.g. text.encode('utf-8', 'replace').decode()."
        ) from exc


@functools.cache
def _image_extensions():
    from PIL import Image

    return set(Image.registered_extensions())


def _is_image_path(text):
    return os.path.splitext(text)[1].lower() in _image_extensions() and len(text) < 4096


def looks_like_text(X):
    """Whether X is a sequence of strings whose first one is neither a file nor named like an image file."""
    # the first sample alone decides: no copy of X at every call (transform and predict ask too)
    if is_pandas(X):  # a Series, a DataFrame, an Index
        X = np.asarray(X.iloc[:1] if hasattr(X, "iloc") else X[:1], dtype=object).ravel()
    if isinstance(X, np.ndarray) and X.ndim == 1 and X.dtype.kind in "OUS" and len(X):
        X = X[:1].tolist()
    if not isinstance(X, list | tuple) or not X or not isinstance(X[0], str):
        return False
    return not (os.path.exists(X[0]) or _is_image_path(X[0]))


class TokenBatch:
    """The tokens of a batch of texts: ``input_ids``, ``attention_mask`` and the model's other inputs.

    Moves between devices like a tensor (``to``, ``pin_memory``), has one row per text (``len``), and
    selecting rows (a mask or indices) trims the padding the remaining texts no longer need.

    Examples
    --------
    >>> import torch
    >>> batch = TokenBatch({"input_ids": torch.tensor([[1, 2, 3], [4, 0, 0]]),
    ...                     "attention_mask": torch.tensor([[1, 1, 1], [1, 0, 0]])})
    >>> len(batch), batch[torch.tensor([False, True])].inputs["input_ids"].tolist()
    (2, [[4]])
    """

    def __init__(self, inputs):
        self.inputs = dict(inputs)

    @property
    def attention_mask(self):
        return self.inputs["attention_mask"]

    def __len__(self):
        return len(self.inputs["input_ids"])

    def __getitem__(self, rows):
        if isinstance(rows, Integral):
            rows = [rows]
        selected = {name: tensor[rows] for name, tensor in self.inputs.items()}
        mask = selected["attention_mask"]
        width = max(int(mask.sum(dim=1).max()) if len(mask) else 1, 1)
        if mask[:, width:].any():  # padded on the left: nothing to trim
            return TokenBatch(selected)
        return TokenBatch({name: tensor[:, :width] for name, tensor in selected.items()})

    def to(self, device, non_blocking=False):
        return TokenBatch({n: t.to(device, non_blocking=non_blocking) for n, t in self.inputs.items()})

    def pin_memory(self):
        return TokenBatch({name: tensor.pin_memory() for name, tensor in self.inputs.items()})

    @property
    def shape(self):
        """(texts, tokens) of the padded batch."""
        return tuple(self.inputs["input_ids"].shape)

    @property
    def n_tokens(self):
        """Tokens the network reads, padding included."""
        return self.inputs["input_ids"].numel()

    def __repr__(self):
        return f"TokenBatch({len(self)} texts × {self.inputs['input_ids'].shape[1]} tokens)"


class TruncatedTextsWarning(UserWarning):
    """Texts longer than the encoder's maximum length: the tokens past it never reach the network."""


# Where this thread collects the texts cut short instead of warning of them (truncations_collected).
_COLLECTING = threading.local()


@contextlib.contextmanager
def truncations_collected():
    """In this thread, record the texts cut short instead of warning: a list of what each warning would say.

    Each entry is ``(n_texts, cut, lengths, max_length)``: the texts checked, the indices of those cut among
    them, every text's token count, and the encoder's maximum. A Dask worker embeds its partition so, and
    the client names the cut texts among all of X in one warning (:func:`warn_of_cut_texts`).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> letters = SimpleNamespace(max_length=2, lengths=lambda texts: np.array([len(t) for t in texts]))
    >>> with truncations_collected() as cut:
    ...     _ = token_lengths(["ab", "abcd"], letters)
    >>> [(n, indices.tolist(), maximum) for n, indices, _, maximum in cut]
    [(2, [1], 2)]
    """
    collected, previous = [], getattr(_COLLECTING, "found", None)
    _COLLECTING.found = collected
    try:
        yield collected
    finally:
        _COLLECTING.found = previous


def warn_of_cut_texts(n_texts, cut, longest, max_length, texts="texts"):
    """A :class:`TruncatedTextsWarning`: the ``texts`` at indices ``cut`` of ``n_texts`` are cut at
    ``max_length`` tokens; the longest has ``longest``."""
    one = len(cut) == 1
    warnings.warn(
        f"{len(cut)} of the {n_texts} {texts} {'is' if one else 'are'} longer than the encoder's "
        f"maximum of {max_length} tokens (samples {list(cut[:10])}; the longest has "
        f"{longest}): "
        f"{'it is' if one else 'they are'} cut there, and what follows never reaches the network. Split "
        "long texts into passages of fewer tokens (and average their embeddings, say), or use an encoder "
        "with a longer maximum.",
        TruncatedTextsWarning,
        stacklevel=caller_stacklevel(),
    )


def token_lengths(texts, tokenize, warn=True, described="texts"):
    """Each text's tokens, at most ``tokenize.max_length``; with ``warn``, say which texts are cut there
    (calling them ``described``).

    Examples
    --------
    >>> class Words:  # a stand-in tokenizer: one token per word, 3 at most
    ...     max_length = 3
    ...     def lengths(self, texts):
    ...         return np.array([len(text.split()) for text in texts])
    >>> token_lengths(["a b", "a b c d"], Words(), warn=False).tolist()
    [2, 3]
    >>> Words.max_length = None  # an encoder without a limit: nothing is cut
    >>> token_lengths(["a b", "a b c d"], Words()).tolist()
    [2, 4]
    """
    lengths = tokenize.lengths(texts)
    if tokenize.max_length is None:  # an encoder without a limit of its own
        return lengths
    cut = np.flatnonzero(lengths > tokenize.max_length)
    if warn and cut.size:
        collecting = getattr(_COLLECTING, "found", None)
        if collecting is not None:
            collecting.append((len(texts), cut, lengths, tokenize.max_length))
        else:
            warn_of_cut_texts(len(texts), cut.tolist(), int(lengths.max()), tokenize.max_length, described)
    return np.minimum(lengths, tokenize.max_length)


def texts_and_tokenizer(dataset):
    """The texts ``dataset`` holds (possibly through Subsets), in its order, and their tokenizer; else None.

    ``dataset`` holds the texts (``source``) and their tokenizer (``preprocess``) or, as a training dataset
    does, holds them as its ``images``.
    """
    base, indices = dataset, None
    while isinstance(base, Subset):
        indices = np.asarray(base.indices) if indices is None else np.asarray(base.indices)[indices]
        base = base.dataset
    base = getattr(base, "images", base)
    source = getattr(base, "source", None)
    tokenize = getattr(base, "preprocess", None)
    if not isinstance(source, TextSource) or not hasattr(tokenize, "lengths"):
        return None
    return (source.items if indices is None else [source.items[i] for i in indices]), tokenize


def warn_of_truncated_texts(dataset, described="texts"):
    """A :class:`TruncatedTextsWarning` for the texts of ``dataset`` (``described`` so) cut at the encoder's
    maximum length."""
    found = texts_and_tokenizer(dataset)
    if found is not None:
        token_lengths(*found, described=described)


def length_order(dataset, warn=True):
    """Indices of ``dataset`` (texts, possibly seen through a Subset) from the longest text to the shortest.

    Batches of texts of similar lengths need little padding; ``None`` when ``dataset`` does not hold texts
    or is already in that order. ``warn``: a :class:`TruncatedTextsWarning` names the texts cut short.
    """
    found = texts_and_tokenizer(dataset)
    if found is None:
        return None
    order = np.argsort(-token_lengths(*found, warn=warn), kind="stable")
    return None if np.all(order[1:] > order[:-1]) else order


def in_length_order(dataset, run, warn=True):
    """``run(dataset)`` on texts sorted by length, its rows put back in ``dataset``'s order."""
    order = length_order(dataset, warn)
    if order is None:
        return run(dataset)
    rows = run(Subset(dataset, order.tolist()))
    result = np.empty_like(rows)
    result[order] = rows
    return result
