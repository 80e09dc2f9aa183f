"""FeatureAlignmentClassifier: align source embeddings with the target's, then fit any estimator."""

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, _fit_context, clone
from sklearn.covariance import ledoit_wolf
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.utils import get_tags
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from .._fitted_state import not_fitted_if_it_fails
from .._labels import labelled_rows_of
from .._stacklevel import caller_stacklevel
from .._unused_settings import IgnoredSettingWarning, warn_of_unused_settings
from .domains import NoTargetDataWarning, TargetScoreMixin, split_domains


def _covariance(X, reg):
    """The covariance of X's columns: shrunk (``reg="auto"``) or with ``reg`` on its diagonal.

    ``"auto"`` shrinks the correlations of the columns that vary (Ledoit-Wolf), so that features of small
    scale are not swamped; a constant column keeps its covariance of zero, in any units.
    """
    if reg != "auto":
        return np.cov(X, rowvar=False).reshape(X.shape[1], X.shape[1]) + reg * np.eye(X.shape[1])
    scale = X.std(axis=0)
    live = scale > 0
    covariance = np.zeros((X.shape[1], X.shape[1]))
    if live.any():
        shrunk = ledoit_wolf(X[:, live] / scale[live])[0]
        covariance[np.ix_(live, live)] = shrunk * np.outer(scale[live], scale[live])
    return covariance


def _principal_axes(X):
    """The principal axes of X's rows (columns, widest first) along which they vary, and their number.

    Centred rows span one dimension fewer than their number, and rank-deficient features fewer still: an
    axis beyond that rank has no variance, and its direction is rounding noise that changes with the order
    of the rows. The rank is counted as numpy's ``matrix_rank`` counts it.
    """
    pca = PCA(svd_solver="full").fit(X)
    values = pca.singular_values_
    tolerance = values[0] * max(X.shape) * np.finfo(np.float64).eps if len(values) else 0.0
    rank = int(np.count_nonzero(values > tolerance))
    return pca.components_.T, rank


def _subspace_dimension(n_components, source_rank, target_rank):
    """``n_components`` within the dimensions both domains span; ``None``: all of them, at most 100."""
    limit = max(1, min(source_rank, target_rank))
    return min(limit, 100) if n_components is None else min(n_components, limit)


def _matrix_power(matrix, power):
    """``matrix ** power`` of a covariance, over the directions it varies in (a pseudo-inverse for a negative
    power): an eigenvalue under 1e-12 of the largest, in any units, counts as none (a constant column)."""
    values, vectors = np.linalg.eigh(matrix)
    varying = values > values.max() * 1e-12
    powered = np.zeros_like(values)
    powered[varying] = values[varying] ** power
    return (vectors * powered) @ vectors.T


def _estimator_has(method):
    def check(self):
        return hasattr(self.estimator_ if hasattr(self, "estimator_") else self._estimator(), method)

    return check


class EstimatorOnTargetFeaturesMixin:
    """Predictions of the fitted ``estimator_`` on the features that ``_target_features(X)`` gives.

    The class defines ``_target_features``: X checked against the fit and mapped as the estimator was
    trained to read target rows. ``predict_proba`` and ``decision_function`` exist when the estimator has them.
    """

    def _estimator(self):
        return LogisticRegression(max_iter=1000) if self.estimator is None else self.estimator

    def _classifier(self):
        """The estimator to fit, refused before any work when it says it is no classifier (a regressor)."""
        estimator = self._estimator()
        try:
            kind = get_tags(estimator).estimator_type
        except AttributeError:  # no scikit-learn tags: taken at its word
            kind = None
        if kind not in (None, "classifier"):
            kind = kind.replace("_", " ")
            raise ValueError(
                f"estimator={type(estimator).__name__}(...) is {'an' if kind[0] in 'aeiou' else 'a'} {kind}, "
                f"and {type(self).__name__} trains a "
                "classifier on the source labels: pass a classifier (LogisticRegression, SVC, ...) or None."
            )
        return estimator

    def _scoring_features(self, X, source_rows):
        """X mapped as the estimator reads it, ``source_rows`` (labelled source rows) as fit mapped those.

        For the scorers that weigh the source rows' errors: the same as :meth:`_target_features` where fit
        maps source and target rows alike.
        """
        return self._target_features(X)

    def predict(self, X):
        """Labels of X, every row read as a target row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        features = self._target_features(X)
        return self.estimator_.predict(features)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities of X, every row read as a target row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        features = self._target_features(X)
        return self.estimator_.predict_proba(features)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X):
        """Decision scores of X from the fitted estimator, every row read as a target row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        features = self._target_features(X)
        return self.estimator_.decision_function(features)


class PooledDomainsWarning(UserWarning):
    """FeatureAlignmentClassifier aligned the rows of several positive domains as one source.

    Labelled target rows given a positive domain of their own are mapped as source rows then, moved away
    from the target; DomainAdaptedClassifier aligns each positive domain with the target apart.
    """


def _warn_of_pooled_domains(labelled_domains):
    domains = np.unique(labelled_domains)
    if len(domains) > 1:
        warnings.warn(
            f"FeatureAlignmentClassifier pools the labelled rows of the positive domains {domains.tolist()[:10]} "
            "into one source and aligns it with the target as a whole: rows of a domain that is already "
            "target-like (labelled target rows, say) are moved as source rows. To align each domain apart, "
            "use DomainAdaptedClassifier(model=None); to pool them knowingly, give them one domain.",
            PooledDomainsWarning,
            stacklevel=caller_stacklevel(),
        )


class FeatureAlignmentClassifier(
    TargetScoreMixin, EstimatorOnTargetFeaturesMixin, MetaEstimatorMixin, ClassifierMixin, BaseEstimator
):
    """Align labelled source features with unlabelled target features, then train ``estimator`` on them.

    The shallow path for embeddings, e.g. after :class:`~sktransfer.PretrainedFeatureExtractor` in a
    Pipeline. Rows are marked as in :class:`~sktransfer.DomainAdaptedClassifier`: ``y == -1`` or a negative
    ``sample_domain`` is target. Unlike there, the labelled rows of several positive domains are aligned
    with the target as one source (a :class:`PooledDomainsWarning` says so).

    - ``"coral"`` (Sun et al. 2016): source features are centred, whitened with their own covariance and
      re-coloured with the target's; :meth:`predict` centres target features on the target's mean.
    - ``"subspace"`` (subspace alignment, Fernando et al. 2013): source and target get their own PCA bases,
      and the source basis is mapped onto the target's; both are compared in the target's basis.
    - ``"source_only"``: no alignment, the baseline.

    Parameters
    ----------
    estimator : classifier or None, default=None
        Trained on the aligned source features; ``None`` is a ``LogisticRegression(max_iter=1000)``.
    method : {"coral", "subspace", "source_only"}, default="coral"
    n_components : int or None, default=None
        Dimension of the subspaces (``method="subspace"`` only); ``None`` keeps as many as both domains
        vary along (at most 100): centred rows span at most one dimension fewer than their number, and
        rank-deficient features fewer still. A number above that is lowered to it, with a warning.
    reg : "auto" or float, default="auto"
        Regularisation of CORAL's covariances: Ledoit-Wolf shrinkage of the correlation matrix (towards the
        diagonal of the variances), or this much added to the diagonal.

    Attributes
    ----------
    estimator_ : classifier
        The fitted ``estimator``.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.domain_adaptation import FeatureAlignmentClassifier
    >>> rng = np.random.default_rng(0)
    >>> source = rng.normal(size=(40, 5))
    >>> labels = (source[:, 0] > 0).astype(int)
    >>> target = 3 * source[:20] + 1  # the same task, rescaled and shifted
    >>> X = np.concatenate([source, target])
    >>> y = np.concatenate([labels, np.full(20, -1)])
    >>> clf = FeatureAlignmentClassifier().fit(X, y)
    >>> float((clf.predict(target) == labels[:20]).mean())
    1.0
    """

    _parameter_constraints: dict = {  # noqa: RUF012 (sklearn's convention)
        "estimator": [HasMethods(["fit", "predict"]), None],
        "method": [StrOptions({"coral", "subspace", "source_only"})],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "reg": [StrOptions({"auto"}), Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, estimator=None, method="coral", n_components=None, reg="auto"):
        self.estimator = estimator
        self.method = method
        self.n_components = n_components
        self.reg = reg

    @not_fitted_if_it_fails
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, sample_domain=None):
        """Align the domains and fit ``estimator`` on the aligned labelled rows.

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
        X = validate_data(self, X, dtype=np.float64)
        split = split_domains(y, sample_domain, len(X))
        source, labels, target = X[split.labelled], labelled_rows_of(y, split.labelled), X[split.target]
        target_varies = len(target) > 1 and bool(np.ptp(target, axis=0).any())
        self._warn_about_settings_without_effect(len(target), target_varies)
        if sample_domain is not None and self.method != "source_only":
            _warn_of_pooled_domains(np.asarray(sample_domain)[split.labelled])
        self.target_mean_ = target.mean(axis=0) if len(target) else source.mean(axis=0)
        self.source_mean_ = source.mean(axis=0)
        self.source_map_ = None  # source rows are read as (row - source_mean_) @ source_map_
        self.target_basis_ = None
        if self.method == "coral" and target_varies:
            colour = _matrix_power(_covariance(target, self.reg), 0.5)
            self.source_map_ = _matrix_power(_covariance(source, self.reg), -0.5) @ colour
        elif self.method == "subspace" and target_varies:
            (source_axes, source_rank), (target_axes, target_rank) = map(_principal_axes, (source, target))
            components = _subspace_dimension(self.n_components, source_rank, target_rank)
            self._warn_of_fewer_components(components, source_rank, target_rank)
            source_basis, self.target_basis_ = source_axes[:, :components], target_axes[:, :components]
            self.source_map_ = source_basis @ (source_basis.T @ self.target_basis_)
        aligned = source if self.source_map_ is None else (source - self.source_mean_) @ self.source_map_
        self.estimator_ = clone(estimator).fit(aligned, labels)
        self.classes_ = self.estimator_.classes_
        return self

    def _warn_about_settings_without_effect(self, n_target, target_varies):
        name = f"FeatureAlignmentClassifier(method={self.method!r})"
        if self.method != "source_only" and n_target and not target_varies:
            needs = "its covariance" if self.method == "coral" else "its principal components"
            got = "a single target row" if n_target == 1 else f"{n_target} target rows, all alike"
            warnings.warn(
                f"{name} got {got}, and aligning with the target needs {needs}, which "
                f"{'one row' if n_target == 1 else 'rows that never vary'} cannot give: fit aligns nothing and "
                "trains on the source alone, as method='source_only'. Pass at least two different target rows "
                "(y == -1 or a negative sample_domain).",
                NoTargetDataWarning,
                stacklevel=caller_stacklevel(),
            )
        if self.n_components is None or not target_varies:
            return
        if self.method != "subspace":
            warn_of_unused_settings(
                self, ["n_components"], f"with method='subspace', not method={self.method!r}"
            )

    def _warn_of_fewer_components(self, components, source_rank, target_rank):
        if self.n_components is not None and self.n_components > components:
            warnings.warn(
                f"FeatureAlignmentClassifier(method='subspace') lowers n_components={self.n_components} to "
                f"{components}: the source rows vary along {source_rank} dimensions and the target rows along "
                f"{target_rank} (centred rows span at most their number minus one, and no more than the "
                "features), and an axis beyond those has no variance: its direction would be rounding noise.",
                IgnoredSettingWarning,
                stacklevel=caller_stacklevel(),
            )

    def _target_features(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        if self.target_basis_ is not None:
            return (X - self.target_mean_) @ self.target_basis_
        if self.source_map_ is not None:
            return X - self.target_mean_
        return X

    def _scoring_features(self, X, source_rows):
        features = self._target_features(X)
        if self.source_map_ is not None:  # aligned: the source rows as the estimator was trained on them
            source = validate_data(self, X, dtype=np.float64, reset=False)[source_rows]
            features[source_rows] = (source - self.source_mean_) @ self.source_map_
        return features
