import inspect
import re

import pytest

from sktransfer import DomainAdaptedClassifier, FineTuneClassifier
from sktransfer._training_docs import SHARED_PARAMETERS, document_parameters

TRAINABLE = [FineTuneClassifier, DomainAdaptedClassifier]


def _documented(cls):
    """The parameter names of the numpydoc Parameters section of ``cls.__doc__``, in order."""
    doc = inspect.cleandoc(cls.__doc__)
    section = re.search(r"^Parameters\n-+\n(.*?)(?=\n\n\S[^\n]*\n-+\n|\Z)", doc, re.S | re.M).group(1)
    return re.findall(r"^(\*\*\w+|\w+)(?: : |$)", section, re.M)


def _declared(cls):
    """The parameters ``cls.__init__`` lists itself, in signature order, and its ``**kwargs``.

    The signature also lists the skorch parameters that ``**kwargs`` passes on (so that scikit-learn shows
    them); those are documented in skorch, and not listed in the ``def``.
    """
    code = cls.__init__.__code__
    written = set(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])
    names = []
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if parameter.kind == inspect.Parameter.VAR_KEYWORD:
            names.append(f"**{name}")
        elif name in written and name != "self":
            names.append(name)
    return names


@pytest.mark.parametrize("cls", TRAINABLE, ids=lambda cls: cls.__name__)
def test_every_parameter_is_documented_in_signature_order(cls):
    declared = _declared(cls)
    assert declared[0] in ("model", "method")
    assert declared[-2:] == ["train_split", "**kwargs"]
    assert "warm_start" in inspect.signature(cls.__init__).parameters  # passed on, not declared
    assert _documented(cls) == declared


def test_shared_entries_are_written_once_and_specific_ones_per_estimator():
    fine_tuning, adaptation = (inspect.cleandoc(cls.__doc__) for cls in TRAINABLE)
    for doc in (fine_tuning, adaptation):
        assert SHARED_PARAMETERS["weight_decay"] in doc
    assert 'default="gradual"' in fine_tuning
    assert 'default="full"' in adaptation
    assert "Rows per step, half source and half target." in adaptation
    assert "Rows per step" not in fine_tuning


def test_a_parameter_without_an_entry_is_refused():
    class Documented:
        """An estimator.

        Parameters
        ----------
        alpha : float
            Own entry.
        """

        def __init__(self, alpha=1.0, undocumented=2, lr=0.1):
            pass

    with pytest.raises(TypeError, match=r"no entry for the parameters \['undocumented', 'lr'\]"):
        document_parameters(Documented)


def test_shared_entries_fill_the_section_in_signature_order():
    class Documented:
        """An estimator.

        Parameters
        ----------
        alpha : float
            Own entry.

        Examples
        --------
        >>> 1
        1
        """

        def __init__(self, weight_decay=0.01, alpha=1.0, **kwargs):
            pass

    assert _documented(document_parameters(Documented)) == ["weight_decay", "alpha", "**kwargs"]
    assert inspect.cleandoc(Documented.__doc__).endswith("Examples\n--------\n>>> 1\n1")
