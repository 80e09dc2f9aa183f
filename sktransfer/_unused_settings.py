"""Warn of parameters set away from their defaults where they cannot take effect.

scikit-learn warns so of ``LogisticRegression(l1_ratio=...)`` without the elastic-net penalty: a setting that
is silently ignored reads as one that was tried.
"""

import inspect
import warnings

from ._stacklevel import caller_stacklevel


class IgnoredSettingWarning(UserWarning):
    """A parameter set away from its default cannot take effect as set with the other settings or the data.

    The message names the parameter, what it needs, and what happens instead: the setting is ignored, or
    lowered to what the data allow.
    """


def set_away_from_default(estimator, name):
    """Whether ``estimator``'s parameter ``name`` differs from its default.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> set_away_from_default(LogisticRegression(C=2.0), "C"), set_away_from_default(LogisticRegression(), "C")
    (True, False)
    """
    parameter = inspect.signature(type(estimator).__init__).parameters.get(name)
    return parameter is not None and getattr(estimator, name) != parameter.default


def warn_of_unused_settings(estimator, names, needs):
    """Warn when any of ``names`` differs from its default on ``estimator``, which ``needs`` to read it.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_of_unused_settings(LogisticRegression(tol=0.1), ["tol", "C"], "with a solver that iterates")
    >>> str(caught[0].message)
    'LogisticRegression: tol=0.1 takes effect only with a solver that iterates, and is ignored here.'
    """
    changed = [
        f"{name}={getattr(estimator, name)!r}" for name in names if set_away_from_default(estimator, name)
    ]
    if changed:
        verb = "takes effect" if len(changed) == 1 else "take effect"
        warnings.warn(
            f"{type(estimator).__name__}: {' and '.join(changed)} {verb} only {needs}, and "
            f"{'is' if len(changed) == 1 else 'are'} ignored here.",
            IgnoredSettingWarning,
            stacklevel=caller_stacklevel(),
        )
