"""ImportanceWeightingClassifier: weight source rows by how target-like they are, then fit any estimator."""

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, _fit_context, clone
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.model_selection._search import BaseSearchCV
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, has_fit_parameter, validate_data

from .._fitted_state import not_fitted_if_it_fails
from .._labels import labelled_rows_of
from .._stacklevel import caller_stacklevel
from .density_ratio import density_ratios, domain_discriminator, effective_sample_size
from .domains import TargetScoreMixin, split_domains
from .flattening import choose_flattening
from .shallow import EstimatorOnTargetFeaturesMixin

# Density ratios that rest on under this share of the source rows say that the domains barely overlap.
_FEW_EFFECTIVE_ROWS = 0.1
# The folds of cv=None, and of flatten="auto" when cv is not an int.
_DEFAULT_FOLDS = 5


class FewEffectiveRowsWarning(UserWarning):
    """The density ratios concentrate on a small share of the source rows: the domains barely overlap."""


def _require_sample_weight(estimator):
    while isinstance(estimator, BaseSearchCV):  # a search passes sample_weight on to the estimator it tunes
        estimator = estimator.estimator
    if not has_fit_parameter(estimator, "sample_weight"):
        name = type(estimator).__name__
        raise ValueError(
            f"ImportanceWeightingClassifier passes the importance weights to estimator.fit as sample_weight, "
            f"and {name}.fit does not accept a sample_weight parameter. Choose an estimator whose fit takes "
            "sample_weight (LogisticRegression, SVC, RandomForestClassifier, ...). A Pipeline passes it on "
            "only through its steps: put ImportanceWeightingClassifier last in the Pipeline instead, around "
            "the final classifier."
        )


class ImportanceWeightingClassifier(
    TargetScoreMixin, EstimatorOnTargetFeaturesMixin, MetaEstimatorMixin, ClassifierMixin, BaseEstimator
):
    """Reweight labelled source rows towards the target distribution, then train ``estimator`` on them.

    Instance reweighting for covariate shift (Shimodaira 2000): when the source and target domains share
    the labelling rule p(y | x) but not the distribution of x, a model fitted on source rows weighted by the
    density ratio p_target(x) / p_source(x) minimises the expected loss on the target. The ratio is estimated
    discriminatively (Bickel et al. 2007): a ``discriminator`` learns to tell source rows (0) from target
    rows (1), and a source row weighs ``P(target | x) / P(source | x) * n_source / n_target``.

    The shallow path for embeddings, e.g. after :class:`~sktransfer.PretrainedFeatureExtractor` in a
    Pipeline. Rows are marked as in :class:`~sktransfer.DomainAdaptedClassifier`: ``y == -1`` or a negative
    ``sample_domain`` is target; the labels of target rows are never read. :meth:`predict` reads every row
    as a target row and calls the fitted estimator on it unchanged.

    Each source row is scored by a discriminator that did not see it during training: the probabilities are
    out-of-fold (``cross_val_predict`` over folds that keep the source/target proportions). The weights are
    then clipped at a quantile, against the few rows that a confident discriminator would otherwise let
    dominate, flattened (raised to a power of at most 1, see ``flatten``) and rescaled to a mean of 1 over
    the source rows. The default chooses the power by importance-weighted cross-validation, so that the
    weights are used only as far as they show a gain on the source rows that resemble the target. When the
    density ratios rest on fewer than a tenth of the source rows (their effective sample size), fit warns
    with a ``FewEffectiveRowsWarning``: the domains barely overlap, and reweighting can then do little for
    the target; the warning says which power was used, and whether cross-validation chose it.

    Parameters
    ----------
    estimator : classifier or None, default=None
        Trained on the weighted source rows; its ``fit`` must accept ``sample_weight``. ``None`` is a
        ``LogisticRegression(max_iter=1000)``.
    discriminator : classifier with predict_proba or None, default=None
        Tells source rows (class 0) from target rows (class 1). ``None`` is a
        ``LogisticRegression(max_iter=1000)`` (L2-regularised, ``C=1``) on standardised features.
    clip : float in (0, 1] or None, default=0.99
        Weights above this quantile of the source rows' weights are lowered to it, before the rescaling to
        mean 1. ``1.0`` or ``None`` keeps every weight as estimated.
    flatten : float in [0, 1] or "auto", default="auto"
        The weights are the (clipped) density ratios to this power (Shimodaira's flattening): 1 keeps the
        ratios, under which the weighted source loss estimates the target's without bias, but rests on few
        rows when the domains barely overlap; 0 weighs every row alike, as an unweighted fit. ``"auto"``
        chooses among 0, 0.25, 0.5, 0.75 and 1 by importance-weighted cross-validation [3]_: ``estimator``
        is fitted on the source rows of each training fold, weighted by the ratios to that power, and its
        errors on the held-out source rows count with their ratios, which estimates its error on the
        target. The flattest power whose error is within one standard error (that of the lowest error's
        estimate) of the lowest wins, by the one-standard-error rule [4]_: 0, an unweighted fit, where
        reweighting shows no gain beyond that noise. That costs ``estimator`` five fits per fold, each on a
        training fold's rows (``n_jobs`` runs them in parallel); set a number to skip them. Where a class
        has a single source row and nothing can be held out, ``"auto"`` is the largest power whose weights
        keep an effective sample size of half the source rows [5]_. On the benchmarks' shifts, where a
        discriminator tells the domains apart almost everywhere, the unflattened ratios cost up to 0.13 of
        target accuracy against an unweighted fit, and ``"auto"`` lands within 0.004 of it
        (benchmarks/RESULTS.md).
    cv : int, cross-validation generator, iterable or None, default=5
        The folds of the out-of-fold discriminator probabilities. An int is the number of stratified,
        shuffled folds, lowered to the number of rows of the smaller domain where that is fewer (at least 2
        of each are needed); ``None`` is 5. A generator or an iterable of (train, test) index arrays splits
        the rows of X, with the domain (0 source, 1 target) as the labels to stratify on. ``flatten="auto"``
        cross-validates over as many folds of the source rows (5 when ``cv`` is not an int), stratified by
        label and lowered to the row count of the smallest class.
    random_state : int, RandomState instance or None, default=None
        Shuffles the rows into folds. ``estimator`` and ``discriminator`` keep their own ``random_state``.
    n_jobs : int or None, default=None
        Jobs for the discriminator's fits over the folds and, with ``flatten="auto"``, the cross-validated
        fits of ``estimator``, as in scikit-learn: ``None`` is 1 outside a ``joblib.parallel_config``
        context, -1 every processor. The fitted weights and estimator do not depend on it.

    Attributes
    ----------
    weights_ : ndarray of shape (n_source_rows,)
        The importance weight of each labelled source row, in the order of the rows in X; all 1 when fit saw
        no target row.
    effective_sample_size_ : float
        Kish's effective number of source rows under ``weights_``, (Σw)² / Σw²: the number of equally weighted
        rows that would give an estimate as precise. It equals the number of source rows when all weights
        are equal.
    flatten_ : float
        The power the density ratios were raised to: ``flatten``, or the one ``"auto"`` chose.
    flatten_cv_errors_ : dict of float to float or None
        With ``flatten="auto"``: the importance-weighted cross-validated error rate of each power it chose
        among. ``None`` when it did not cross-validate (a number for ``flatten``, no target row or equal
        ratios everywhere, or a class with a single source row).
    discriminator_ : classifier or None
        The ``discriminator`` fitted on every row, for inspection (``weights_`` come from the out-of-fold
        copies); ``None`` when fit saw no target row.
    estimator_ : classifier
        The fitted ``estimator``.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined when X has feature names that are all strings.

    See Also
    --------
    FeatureAlignmentClassifier : Moves the source features onto the target's instead of reweighting rows.
    DomainAdaptedClassifier : Deep domain adaptation that fine-tunes the backbone itself.
    importance_weighted_scorer : Weights source rows the same way to score models without target labels.

    Notes
    -----
    Reweighting helps when the target lies within the source's support and the estimator is too simple to
    be right everywhere (a linear model on a curved boundary, say); it cannot invent source rows where the
    target has no counterpart, and few effective rows remain when the domains barely overlap. ``flatten``,
    a lower ``clip`` (say 0.9) or a more regularised discriminator (say ``LogisticRegression(C=0.01)`` on
    standardised features) flatten the weights and keep more rows in play, at the cost of a less exact
    ratio. Discriminator probabilities are kept within [1e-6, 1 - 1e-6].

    References
    ----------
    .. [1] H. Shimodaira, "Improving predictive inference under covariate shift by weighting the
       log-likelihood function", Journal of Statistical Planning and Inference 90(2), 2000.
    .. [2] S. Bickel, M. Brückner and T. Scheffer, "Discriminative learning for differing training and test
       distributions", ICML 2007.
    .. [3] M. Sugiyama, M. Krauledat and K.-R. Müller, "Covariate shift adaptation by importance weighted
       cross validation", Journal of Machine Learning Research 8, 2007.
    .. [4] L. Breiman, J. Friedman, R. Olshen and C. Stone, "Classification and Regression Trees", 1984
       (the one-standard-error rule).
    .. [5] A. Jasra, D. A. Stephens, A. Doucet and T. Tsagaris, "Inference for Lévy-driven stochastic
       volatility models via adaptive sequential Monte Carlo", Scandinavian Journal of Statistics 38(1),
       2011 (the effective sample size that picks the tempering exponent).

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.domain_adaptation import ImportanceWeightingClassifier
    >>> rng = np.random.default_rng(0)
    >>> source = rng.normal(size=(200, 1))
    >>> labels = (np.abs(source[:, 0]) > 1).astype(int)  # no threshold fits both sides
    >>> target = rng.normal(-1, 0.5, size=(100, 1))  # the target sits on the left side
    >>> X = np.concatenate([source, target])
    >>> y = np.concatenate([labels, np.full(100, -1)])
    >>> clf = ImportanceWeightingClassifier(random_state=0).fit(X, y)
    >>> clf.weights_.shape
    (200,)
    >>> bool(clf.weights_[source[:, 0] < -1].mean() > clf.weights_[source[:, 0] > 1].mean())
    True
    >>> float(clf.score(target, (np.abs(target[:, 0]) > 1).astype(int)))
    0.92
    """

    _parameter_constraints: dict = {  # noqa: RUF012 (sklearn's convention)
        "estimator": [HasMethods(["fit", "predict"]), None],
        "discriminator": [HasMethods(["fit", "predict_proba"]), None],
        "clip": [Interval(Real, 0, 1, closed="right"), None],
        "flatten": [Interval(Real, 0, 1, closed="both"), StrOptions({"auto"})],
        "cv": ["cv_object"],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
    }

    def __init__(
        self,
        estimator=None,
        discriminator=None,
        clip=0.99,
        flatten="auto",
        cv=5,
        random_state=None,
        n_jobs=None,
    ):
        self.estimator = estimator
        self.discriminator = discriminator
        self.clip = clip
        self.flatten = flatten
        self.cv = cv
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _discriminator(self):
        return domain_discriminator() if self.discriminator is None else self.discriminator

    @not_fitted_if_it_fails
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, sample_domain=None):
        """Weight the labelled source rows by their density ratio and fit ``estimator`` on them.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Source and target rows.
        y : array-like of shape (n_samples,)
            Source labels; -1 for target rows.
        sample_domain : array-like of shape (n_samples,) or None
            Positive for source rows, negative for target rows.

        Returns
        -------
        self
        """
        estimator = self._classifier()
        _require_sample_weight(estimator)
        X = validate_data(self, X, dtype=np.float64)
        split = split_domains(y, sample_domain, len(X))
        source, labels = X[split.labelled], labelled_rows_of(y, split.labelled)
        ratios = np.ones(len(source))
        self.discriminator_ = None
        if split.target.any():
            ratios = self._density_ratios(X, split.target)
            self.discriminator_ = clone(self._discriminator()).fit(X, split.target.astype(int))
        self.flatten_, self.flatten_cv_errors_ = self._choose_flattening(estimator, source, labels, ratios)
        weights = ratios**self.flatten_
        self.weights_ = weights / weights.mean()
        self.effective_sample_size_ = effective_sample_size(self.weights_)
        self._warn_if_few_effective_rows(effective_sample_size(ratios), len(source))
        self.estimator_ = clone(estimator).fit(source, labels, sample_weight=self.weights_)
        self.classes_ = self.estimator_.classes_
        return self

    def _choose_flattening(self, estimator, source, labels, ratios):
        if self.flatten != "auto":
            return float(self.flatten), None
        n_splits = self.cv if isinstance(self.cv, Integral) else _DEFAULT_FOLDS
        return choose_flattening(estimator, source, labels, ratios, n_splits, self.random_state, self.n_jobs)

    def _warn_if_few_effective_rows(self, ratios_effective_size, n_source):
        # With flatten=0 the fit is unweighted, as asked: how little the domains overlap does not change it.
        if ratios_effective_size >= _FEW_EFFECTIVE_ROWS * n_source or self.flatten == 0:
            return
        align = (
            "Aligning the features may do more: FeatureAlignmentClassifier, or DomainAdaptedClassifier to train "
            "the network itself."
        )
        if self.flatten_cv_errors_ is not None and self.flatten_ == 0:
            consequence = (
                "importance-weighted cross-validation found no power of them that beats the unweighted fit "
                "by more than a standard error, so flatten='auto' fitted the estimator unweighted (flatten_=0, "
                f"flatten_cv_errors_): reweighting showed no gain on this shift. {align}"
            )
        elif self.flatten_cv_errors_ is not None:
            consequence = (
                f"importance-weighted cross-validation chose the power {self.flatten_:.2f} (flatten_, "
                f"flatten_cv_errors_), under which the weights keep {self.effective_sample_size_:.0f} rows in "
                "play; the held-out errors behind that choice count with the ratios themselves, so the gain it "
                f"measured rests on about {ratios_effective_size:.0f} rows. Where a few target labels are at "
                f"hand, compare with flatten=0. {align}"
            )
        elif self.flatten != "auto" and self.effective_sample_size_ < _FEW_EFFECTIVE_ROWS * n_source:
            consequence = (
                f"the weights used (flatten={self.flatten}) rest on {self.effective_sample_size_:.0f} rows, so "
                "the weighted fit may be no better than an unweighted one. Flatten the weights with "
                "flatten='auto', a lower clip (e.g. clip=0.9) or a more regularised discriminator (e.g. "
                "LogisticRegression(C=0.01) on standardised features)."
            )
        else:
            consequence = (
                f"raised to the power {self.flatten_:.2f} (flatten_) the weights keep "
                f"{self.effective_sample_size_:.0f} rows in play, which moves the fit toward an unweighted one: "
                f"reweighting can do little for this shift. {align}"
            )
        warnings.warn(
            f"ImportanceWeightingClassifier: the density ratios rest on {ratios_effective_size:.0f} of the "
            f"{n_source} source rows (their effective sample size; effective_sample_size_ is that of the "
            f"weights used): the discriminator tells the domains apart almost everywhere, and {consequence}",
            FewEffectiveRowsWarning,
            stacklevel=caller_stacklevel(),
        )

    def _folds(self, n_source, n_target):
        if self.cv is not None and not isinstance(self.cv, Integral):
            return self.cv
        n_splits = min(_DEFAULT_FOLDS if self.cv is None else self.cv, n_source, n_target)
        if n_splits < 2:
            raise ValueError(
                f"ImportanceWeightingClassifier got {n_source} source rows and {n_target} target rows: "
                "scoring each row with a discriminator that did not see it needs at least 2 of each."
            )
        return StratifiedKFold(n_splits, shuffle=True, random_state=self.random_state)

    def _density_ratios(self, X, target):
        """Out-of-fold P(target | x) / P(source | x) * n_source / n_target per source row, clipped, mean 1."""
        n_target = int(target.sum())
        n_source = len(target) - n_target
        domain = target.astype(int)
        folds = self._folds(n_source, n_target)
        proba = cross_val_predict(
            clone(self._discriminator()), X, domain, cv=folds, method="predict_proba", n_jobs=self.n_jobs
        )
        weights = density_ratios(proba[~target, 1], n_source, n_target)
        if self.clip is not None:
            weights = np.minimum(weights, np.quantile(weights, self.clip))
        return weights / weights.mean()

    def _target_features(self, X):
        """X checked against the fit, before ``estimator_`` is read: unfitted raises NotFittedError."""
        check_is_fitted(self)
        return validate_data(self, X, dtype=np.float64, reset=False)
