"""Parameters changed since fitting that decide the fitted network, which a fitted estimator cannot follow."""

import warnings

import torch

from ._stacklevel import caller_stacklevel


class SettingsChangedWarning(UserWarning):
    """A parameter that decides the fitted network changed after fitting; the network runs as fitted."""


def short(value):
    """A parameter value as a message shows it: a module by its class, anything else by its repr."""
    return f"a {type(value).__name__} module" if isinstance(value, torch.nn.Module) else repr(value)


def changed_settings(fitted, current):
    """The names in ``fitted`` whose ``current`` value is another object, or another plain value.

    Examples
    --------
    >>> changed_settings({"layer": None, "pooling": "avg"}, {"layer": "features", "pooling": "avg"})
    ['layer']
    """
    return [
        name
        for name, value in fitted.items()
        if not (
            current[name] is value
            or (isinstance(value, str | int | float | type(None)) and current[name] == value)
        )
    ]


def warn_of_changed_settings(fitted, current, method, model="the network"):
    """Warn that ``method`` runs ``model`` as fitted although the settings in ``fitted`` have changed.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_of_changed_settings({"layer": None}, {"layer": "features"}, "transform")
    >>> print(caught[0].message)
    layer changed after fitting (from None to 'features'), but transform runs the network as fitted: call fit again for the new setting, or set it back.
    """
    changed = changed_settings(fitted, current)
    if changed:
        changes = ", ".join(
            f"{name} changed after fitting (from {short(fitted[name])} to {short(current[name])})"
            for name in changed
        )
        warnings.warn(
            f"{changes}, but {method} runs {model} as fitted: call fit again for the new "
            f"setting{'s' if len(changed) > 1 else ''}, or set {'them' if len(changed) > 1 else 'it'} back.",
            SettingsChangedWarning,
            stacklevel=caller_stacklevel(),
        )
