"""Pickling errors that name the parameter at fault: a lambda or a local function as a parameter."""

import types

# Parameters that may hold a function or a class (stored by pickle by name only).
CALLABLE_PARAMETERS = ("model", "preprocess", "augment")


def _stored_by_name_only(value):
    """A function or class that pickle cannot find again by its name: a lambda, or one defined in a function."""
    if not isinstance(value, types.FunctionType | type):
        return False
    return "<lambda>" in value.__qualname__ or "<locals>" in value.__qualname__


class _Probe(type):
    """The type of the probes: its repr is the whole message, so pickle's error states it once."""

    def __repr__(cls):
        return cls.message


def _named_probe(name, value):
    """A class whose repr says which parameter cannot be pickled, and why; it is never used.

    Pickle stores classes by name, so it fails on this one first, with an error that shows its repr (and its
    short name). Picklers that store classes by value (cloudpickle, which joblib and Dask use to send work to
    their workers) store it as they store the parameter itself, and unpickling drops it.
    """
    probe = _Probe(f"{name}={value.__name__}", (), {"__module__": __name__})
    probe.message = (
        f"{name}={value.__name__}, a lambda or a local function, which pickle cannot store by name: "
        "define it at module level"
    )
    return probe


def _rebuild(constructor, args, probes):
    """Unpickle: make the object as the default reduction would; the probes are dropped."""
    return constructor(*args)


class NamedPicklingErrorsMixin:
    """Pickling an estimator whose ``model``, ``preprocess`` or ``augment`` is a lambda or a local function
    fails with an error that names the parameter (plain pickle names only ``<lambda>``).

    Examples
    --------
    >>> import pickle
    >>> from sktransfer import PretrainedFeatureExtractor
    >>> pickle.dumps(PretrainedFeatureExtractor(preprocess=lambda image: image))
    Traceback (most recent call last):
    ...
    _pickle.PicklingError: Can't pickle preprocess=<lambda>, a lambda or a local function, which pickle ...
    """

    def __reduce_ex__(self, protocol):
        reduced = super().__reduce_ex__(protocol)
        probes = [
            _named_probe(name, value)
            for name in CALLABLE_PARAMETERS
            if _stored_by_name_only(value := self.__dict__.get(name))
        ]
        if not probes:
            return reduced
        return (_rebuild, (reduced[0], reduced[1], probes), *reduced[2:])
