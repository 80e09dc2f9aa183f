"""Parameters changed since fitting that decide the fitted network, which a fitted estimator cannot follow."""

import numbers
import os
import warnings

import numpy as np
import torch

from ._hashing import content_hash
from ._stacklevel import caller_stacklevel


class ArgumentsByValue:
    """Further arguments of a network (``module__*`` or ``compile__*``), equal when their values are.

    A pickled estimator holds copies of them, which must not count as a change.

    Examples
    --------
    >>> ArgumentsByValue({"tags": ("a",)}) == ArgumentsByValue({"tags": ("a",)}), ArgumentsByValue({})
    (True, none)
    """

    def __init__(self, arguments, prefix="module"):
        self.arguments = dict(arguments)
        self.prefix = prefix

    def __eq__(self, other):
        return (
            isinstance(other, ArgumentsByValue)
            and self.arguments.keys() == other.arguments.keys()
            and all(same_value(value, other.arguments[name]) for name, value in self.arguments.items())
        )

    __hash__ = None

    def __repr__(self):
        arguments = self.arguments.items()
        return ", ".join(f"{self.prefix}__{name}={short(value)}" for name, value in arguments) or "none"


class ClassesByValue:
    """The classes a network is built for, equal to others when they hold the same labels in the same order.

    Examples
    --------
    >>> ClassesByValue(["a", "b"]) == ClassesByValue(np.array(["a", "b"])), ClassesByValue(["b", "a"])
    (True, ['b', 'a'])
    """

    def __init__(self, classes):
        self.classes = np.asarray(classes)

    def __eq__(self, other):
        return (
            isinstance(other, ClassesByValue)
            and self.classes.shape == other.classes.shape
            and bool(np.all(self.classes == other.classes))
        )

    __hash__ = None

    def __repr__(self):
        return short(self.classes.tolist())


def same_value(first, second):
    """Equal, or (an object without ``__eq__`` unpickled, an array) of equal contents.

    Examples
    --------
    >>> import numpy as np
    >>> groups = [("head.*", {"betas": np.array([0.9, 0.99])})]
    >>> same_value(groups, [("head.*", {"betas": np.array([0.9, 0.99])})])
    True
    """
    if first is second:
        return True
    try:
        if bool(first == second):
            return True
    except Exception:  # an array compares element by element
        pass
    try:
        return content_hash(first) == content_hash(second)
    except Exception:
        return False


# Values that set_params may replace with an equal copy (a path built again, a numpy integer): compared by value.
_COMPARED_BY_VALUE = (str, numbers.Number, os.PathLike, type(None), ArgumentsByValue, ClassesByValue)


class SettingsChangedWarning(UserWarning):
    """A parameter that decides the fitted network changed after fitting; the network runs as fitted."""


def short(value, limit=80):
    """A parameter value as a message shows it: a module by its class, anything else by its repr, on one line.

    Examples
    --------
    >>> short(torch.nn.Linear(2, 2)), short("features.3")
    ('a Linear module', "'features.3'")
    """
    if isinstance(value, torch.nn.Module):
        return f"a {type(value).__name__} module"
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
            current[name] is value or (isinstance(value, _COMPARED_BY_VALUE) and bool(current[name] == value))
        )
    ]


def describe_change(name, fitted, current, parameter=None):
    """ "``parameter`` changed after fitting (...)": what went from which value to which.

    ``parameter`` is the one behind ``name`` where ``name`` is a setting it decides, not a parameter itself.

    Examples
    --------
    >>> describe_change("adversarial", "dann", None, parameter="method")
    "method changed after fitting (so that adversarial went from 'dann' to None)"
    """
    change = f"from {short(fitted)} to {short(current)}"
    if parameter is None or parameter == name:
        return f"{name} changed after fitting ({change})"
    return f"{parameter} changed after fitting (so that {name} went {change})"


def warn_of_changed_settings(fitted, current, method, model="the network", parameters=None):
    """Warn that ``method`` runs ``model`` as fitted although the settings in ``fitted`` have changed.

    ``parameters`` names the parameter behind a setting that is not one itself.

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
        parameters = parameters or {}
        changes = ", ".join(
            describe_change(name, fitted[name], current[name], parameters.get(name)) for name in changed
        )
        several = len(changed) > 1
        warnings.warn(
            f"{changes}, but {method} runs {model} as fitted: call fit again for the new "
            f"setting{'s' if several else ''}, or set {'them' if several else 'it'} back.",
            SettingsChangedWarning,
            stacklevel=caller_stacklevel(),
        )
