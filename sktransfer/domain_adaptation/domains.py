"""Which rows of ``fit(X, y, sample_domain)`` are labelled source rows and which are target rows.

A row is target when its label is -1 (the convention of ``sklearn.semi_supervised``) or when its
``sample_domain`` is negative; positive domains are sources. A -1 label on a row of a positive domain still
marks a target row, with an :class:`UnlabelledSourceRowsWarning`: -1 cannot be a class. The labels of target
rows are never read for training. Rows that keep a label and a positive domain train the classifier, so a few
labelled target images given with their own positive domain make the adaptation semi-supervised.
"""

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.utils.validation import column_or_1d

from .._labelled_scoring import refuse_scoring_rows, refuse_unlabelled_scoring
from .._labels import (
    UNLABELLED,
    label_array,
    labelled_mask,
    labelled_rows_of,
    missing_labels,
    refuse_missing_labels,
    require_labels,
    unlabelled_mask,
)
from .._stacklevel import caller_stacklevel


class NoTargetDataWarning(UserWarning):
    """fit saw no target row, so it trains on the source alone."""


@dataclass
class DomainSplit:
    """The outcome of :func:`split_domains`: boolean masks over the rows."""

    labelled: np.ndarray
    target: np.ndarray


def split_domains(y, sample_domain, n_samples):
    """Check ``y`` and ``sample_domain`` and tell the labelled source rows from the target rows.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Labels, -1 for target rows.
    sample_domain : array-like of shape (n_samples,) or None
        Positive for source rows, negative for target rows.
    n_samples : int
        Rows of X.

    Returns
    -------
    DomainSplit

    Examples
    --------
    >>> split = split_domains(["cat", "dog", "cat", "dog"], [1, 1, -2, -2], 4)
    >>> split.labelled.tolist(), split.target.tolist()
    ([True, True, False, False], [False, False, True, True])
    >>> split_domains([0, 1, -1], None, 3).target.tolist()
    [False, False, True]
    """
    require_labels(y, "this estimator", "the labels of the source rows, and -1 for target rows")
    y = label_array(y)
    if len(y) != n_samples:
        raise ValueError(f"y has {len(y)} labels but X has {n_samples} rows.")
    _warn_about_text_minus_one(y)
    target = unlabelled_mask(y)
    if sample_domain is not None:
        masked = checked_sample_domain(sample_domain, n_samples) < 0
        _warn_about_unlabelled_source_rows(target & ~masked)
        if (target | masked).all():
            _no_source_rows()
        _check_target_classes(y, target, masked)
        target = target | masked
    labelled = ~target
    if not labelled.any():
        _no_source_rows()
    refuse_missing_labels(y, among=labelled)  # a blank label on a target row is no label, as -1 is
    if not target.any():
        warnings.warn(
            "fit received no target rows, so it trains on the source alone. Mark target rows with y == -1 or "
            "with a negative sample_domain (fit(X, y, sample_domain=...)).",
            NoTargetDataWarning,
            stacklevel=caller_stacklevel(),
        )
    return DomainSplit(labelled=labelled, target=target)


def warn_of_a_single_target_row(split, name):
    """Warn where ``split`` (a :class:`DomainSplit`) holds one target row, which every batch would repeat."""
    if split.target.sum() == 1:
        warnings.warn(
            f"{name} got a single target row: every batch repeats it as its target half, so the method aligns "
            "the source with one point, and BatchNorm finds no variance in it. Pass more target rows (y == -1 "
            "or a negative sample_domain).",
            NoTargetDataWarning,
            stacklevel=caller_stacklevel(),
        )


def checked_sample_domain(sample_domain, n_samples):
    """``sample_domain`` as a 1-D array of non-zero numbers, one per row of X; anything else raises.

    Examples
    --------
    >>> checked_sample_domain([1, 1, -1], 3).tolist()
    [1, 1, -1]
    """
    domains = column_or_1d(np.asarray(sample_domain), warn=True)
    if len(domains) != n_samples:
        raise ValueError(f"sample_domain has {len(domains)} values but X has {n_samples} rows.")
    if domains.dtype.kind not in "iuf" or not np.all(np.isfinite(domains)):
        raise ValueError(
            "sample_domain must hold numbers: positive for source rows, negative for target rows."
        )
    zeros = np.flatnonzero(domains == 0)
    if zeros.size == n_samples:
        raise ValueError(
            "sample_domain holds only zeros: mark source rows with positive values (1, 2, ...) and target "
            "rows with negative ones (-1, -2, ...)."
        )
    if zeros.size:
        raise ValueError(
            f"sample_domain is 0 for samples {zeros[:10].tolist()}: use a positive value for a source row "
            "and a negative one for a target row."
        )
    return domains


class TextLabelWarning(UserWarning):
    """y holds the text "-1", which is a class, not the mark of a target row."""


def _warn_about_text_minus_one(y):
    text = np.array([isinstance(value, str) and value.strip() == str(UNLABELLED) for value in y.tolist()])
    if text.any():
        warnings.warn(
            f"y holds the text '-1' at samples {np.flatnonzero(text)[:10].tolist()}: it is read as a class "
            "named '-1', not as the mark of an unlabelled target row. Mark target rows with the integer -1 "
            "(y as an object array) or with a negative sample_domain (fit(X, y, sample_domain=...)), which "
            "also keeps scikit-learn's stratified splitting working with string labels.",
            TextLabelWarning,
            stacklevel=caller_stacklevel(),
        )


class UnlabelledSourceRowsWarning(UserWarning):
    """y is -1 on rows whose ``sample_domain`` is positive: they are read as target rows, not as a class."""


def _warn_about_unlabelled_source_rows(rows):
    if rows.any():
        warnings.warn(
            f"y is -1 at samples {np.flatnonzero(rows)[:10].tolist()} ({rows.sum()} rows), whose "
            "sample_domain is positive (a source): y == -1 marks unlabelled target rows, so they are read as "
            "target rows and -1 is not a class. If -1 is one of your classes, recode the labels (say, as "
            "strings); if these are target rows, give them a negative sample_domain.",
            UnlabelledSourceRowsWarning,
            stacklevel=caller_stacklevel(),
        )


def _no_source_rows():
    raise ValueError(
        "no labelled source rows: every row is a target row (y == -1 or a negative sample_domain); the "
        "classifier needs labelled source images."
    )


def _check_target_classes(y, unlabelled, masked):
    """Labels given to target rows (masked from training) must be classes the source rows teach."""
    source_classes = set(y[~(unlabelled | masked)].tolist())
    given = masked & ~unlabelled
    given[missing_labels(y)] = False  # a blank label is no label
    unknown = sorted({label for label in y[given].tolist() if label not in source_classes}, key=str)
    if unknown:
        raise ValueError(
            f"target rows hold labels that no source row has: {unknown[:10]}; a classifier trained on the "
            "source can never predict them."
        )


class TargetScoreMixin:
    """``score`` for domain-adaptation classifiers: accuracy, refusing the rows of the target.

    Those rows are marked by -1 labels, or by a negative ``sample_domain``, whose labels ``fit`` masks:
    counted, the -1 labels would be errors and the others placeholders. ``score`` requests ``sample_domain``
    by default, so that with metadata routing each fold of a search hands it its slice.
    """

    __metadata_request__score = {"sample_domain": True}  # noqa: RUF012 (scikit-learn reads it from the class)

    def score(self, X, y, sample_weight=None, sample_domain=None):
        """Accuracy on labelled rows; refuses the target's rows (-1 labels, a negative ``sample_domain``).

        Parameters
        ----------
        X : images or array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like or None
        sample_domain : array-like of shape (n_samples,) or None
            The domain of each row as ``fit`` reads it: the rows of a negative domain are target rows.

        Returns
        -------
        score : float
        """
        advice = (
            "Score with labelled target data, or select models without target labels through "
            "sktransfer.domain_adaptation.neighborhood_consistency_scorer or information_maximization_scorer "
            "(the best-ranking in benchmarks/RESULTS.md)."
        )
        refuse_unlabelled_scoring(y, advice)
        if sample_domain is not None:
            target = np.flatnonzero(checked_sample_domain(sample_domain, len(column_or_1d(y))) < 0)
            refuse_scoring_rows(
                target,
                f"sample_domain is negative (target rows, whose labels fit masks) at samples {target[:10].tolist()}: "
                f"accuracy against their labels means nothing. {advice}",
            )
        return super().score(X, y, sample_weight=sample_weight)


class SourceDomainsMixin:
    """The training targets of both domains: class codes of the labelled rows, -1 for the target rows.

    Rows of several source domains (positive ``sample_domain`` values) are told apart in the codes: source k's
    are shifted by k * n_classes, so that the loss reads each row's class and the column of the domain
    discriminator that separates its source from the target. The numbering of the sources is kept from one
    ``partial_fit`` to the next. The estimator it is mixed into encodes the labels (``_encode_labels``).
    """

    def _source_codes(self, y, split, reset=True, classes=None, sample_domain=None):
        """Class indices of labelled rows, -1 for target rows; source k's rows shifted by k * n_classes."""
        labels = labelled_rows_of(y, split.labelled)
        codes = np.full(len(split.labelled), UNLABELLED, dtype=np.int64)
        codes[split.labelled] = self._encode_labels(labels, len(labels), reset=reset, classes=classes)
        domains = self._source_domain_of_rows(split.labelled, sample_domain, reset)
        if reset:
            self._source_domains = np.unique(domains)
            self._n_sources = max(len(self._source_domains), 1)
        unseen = np.setdiff1d(domains, self._source_domains)
        if unseen.size:
            raise ValueError(
                f"sample_domain holds the source domains {unseen.tolist()}, which {type(self).__name__} was not "
                f"initialised with (it knows {self._source_domains.tolist()}: each has its own column of the "
                "domain discriminator): fit with warm_start=False to start again with these domains."
            )
        # Source k keeps its number (its discriminator column) from one call to the next, whichever are present.
        codes[split.labelled] += np.searchsorted(self._source_domains, domains) * len(self.classes_)
        return codes

    def _validation_targets(self, y, n_samples):
        """The codes of a validation set of the user's (``train_split``): the classes of its labelled rows, read
        as the first source's, and -1 for the rest.

        Validation reads only the classes, and a validation set has no ``sample_domain``: fit's checks and
        warnings on the domains of its own rows (no target rows, several sources) do not apply.
        """
        y = label_array(y)
        if len(y) != n_samples:
            raise ValueError(
                f"y_valid has {len(y)} labels for the {n_samples} rows of X_valid (train_split)."
            )
        labelled = labelled_mask(y)
        codes = np.full(n_samples, UNLABELLED, dtype=np.int64)
        labels = labelled_rows_of(y, labelled)
        codes[labelled] = self._encode_labels(labels, len(labels), reset=False)
        return codes

    def _source_domain_of_rows(self, labelled, sample_domain, reset):
        """The source domain of each labelled row: 1 without ``sample_domain``, or the one source fitted."""
        known = getattr(self, "_source_domains", ())
        if sample_domain is not None:
            domains = column_or_1d(sample_domain)[labelled]
        elif reset or not len(known):
            domains = np.ones(labelled.sum(), dtype=np.int64)
        elif len(known) == 1:
            domains = np.full(labelled.sum(), known[0])  # the single source fit knew
        else:
            raise ValueError(
                f"{type(self).__name__} was fitted on the source domains {known.tolist()}, each with its own column "
                "of the domain discriminator: pass sample_domain to say which rows come from which."
            )
        if not reset and not hasattr(self, "_source_domains"):  # initialize() called, or an earlier pickle
            present, columns = np.unique(domains), getattr(self, "_n_sources", 1)
            if len(present) != columns:
                raise ValueError(
                    f"this {type(self).__name__} was initialised (by initialize(), or pickled by an earlier "
                    f"version) without a record of which source domain has which of its {columns} "
                    f"discriminator column(s); this call holds {len(present)} source domain(s): give it every "
                    "source domain, or fit with warm_start=False to start again."
                )
            self._source_domains, self._n_sources = present, columns
        return domains
