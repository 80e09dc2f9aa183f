"""A fit that fails leaves the estimator not fitted, rather than a mix of the earlier fit and the new one."""

import functools


def forget_fitted_attributes(estimator):
    """Delete ``estimator``'s fitted attributes (the scikit-learn names that end with one underscore).

    Examples
    --------
    >>> from sklearn.linear_model import LinearRegression
    >>> model = LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])
    >>> forget_fitted_attributes(model)
    >>> sorted(name for name in vars(model) if name.endswith("_"))
    []
    """
    for name in [name for name in vars(estimator) if name.endswith("_") and not name.endswith("__")]:
        delattr(estimator, name)


def not_fitted_if_it_fails(fit):
    """Decorate a ``fit`` method: when it raises, the estimator's fitted attributes are deleted.

    A refit that raises halfway (labels a source does not know, a class without weight) would otherwise
    leave the new ``classes_`` next to the old coefficients, and ``predict`` would answer with that mix,
    silently. After a failed fit the estimator reads as not fitted.

    Examples
    --------
    >>> class Model:
    ...     @not_fitted_if_it_fails
    ...     def fit(self, y):
    ...         self.classes_ = sorted(set(y))
    ...         if len(self.classes_) < 2:
    ...             raise ValueError("one class")
    ...         self.coef_ = [1.0]
    ...         return self
    >>> model = Model().fit([0, 1])
    >>> try:
    ...     model.fit([2])
    ... except ValueError:
    ...     pass
    >>> hasattr(model, "classes_"), hasattr(model, "coef_")
    (False, False)
    """

    @functools.wraps(fit)
    def fit_or_forget(self, *args, **kwargs):
        try:
            return fit(self, *args, **kwargs)
        except BaseException:
            forget_fitted_attributes(self)
            raise

    return fit_or_forget
