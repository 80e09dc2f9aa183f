"""The integer counts and sizes that the data loaders take, checked before any work, naming the parameter."""

from numbers import Integral


def check_count(value, name, high=None, why=""):
    """``value`` as an int if it is an integer from 1 to ``high`` (unbounded if None), else a ValueError.

    Booleans are refused: ``True`` is an integer to Python but not a count to a user. ``why`` ends the
    message (where the bound comes from).

    Examples
    --------
    >>> check_count(3, "n_per_class")
    3
    >>> check_count(2.5, "n_per_class")
    Traceback (most recent call last):
    ...
    ValueError: n_per_class=2.5 must be an integer of at least 1.
    >>> check_count(600, "n_per_class", high=500, why=": there are 500 digits of each class")
    Traceback (most recent call last):
    ...
    ValueError: n_per_class=600 must be an integer in [1, 500]: there are 500 digits of each class.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, Integral)
        or value < 1
        or (high is not None and value > high)
    ):
        bound = "of at least 1" if high is None else f"in [1, {high}]"
        raise ValueError(f"{name}={value!r} must be an integer {bound}{why}.")
    return int(value)
