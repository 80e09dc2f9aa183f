"""scikit-learn's repr for the trainable estimators: the parameters the user set, not skorch's layout."""

import inspect

from sklearn.base import BaseEstimator
from skorch import NeuralNet

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _full_signature(cls):
    """The signature of ``cls.__init__`` with the skorch parameters its ``**kwargs`` passes on.

    Those are keyword-only, with the defaults of the nearest skorch class that declares them
    (``NeuralNetClassifier``'s ``train_split`` over ``NeuralNet``'s); the ``**kwargs`` stays for dunder
    parameters.
    """
    own = inspect.signature(cls.__init__).parameters
    inherited = {}
    for base in reversed(cls.__mro__[1:]):
        if issubclass(base, NeuralNet) and "__init__" in vars(base):
            for parameter in inspect.signature(base.__init__).parameters.values():
                if parameter.kind in _NAMED:
                    inherited[parameter.name] = parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY)
    passed_on = [parameter for name, parameter in inherited.items() if name not in own]
    var_keyword = [parameter for parameter in own.values() if parameter.kind == inspect.Parameter.VAR_KEYWORD]
    declared = [parameter for parameter in own.values() if parameter.kind != inspect.Parameter.VAR_KEYWORD]
    return inspect.Signature([*declared, *passed_on, *var_keyword])


class SklearnRepr:
    """Show a skorch net the way scikit-learn shows its estimators, also in its HTML diagram.

    scikit-learn lists the parameters whose value differs from their default in the signature of
    ``__init__``. Every subclass that defines ``__init__`` gets a signature that also lists the skorch
    parameters it passes on through ``**kwargs`` (``warm_start``, ``iterator_train``, ``classes``...), with
    skorch's defaults, so that those show only when set; dunder parameters (``optimizer__betas``) show
    whenever they are set. A fitted net shows the same parameters, without its network.

    Examples
    --------
    >>> from sktransfer import FineTuneClassifier
    >>> FineTuneClassifier(strategy="lp_ft", lr=3e-3, warm_start=True)
    FineTuneClassifier(lr=0.003, strategy='lp_ft', warm_start=True)
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in vars(cls):
            cls.__init__.__signature__ = _full_signature(cls)

    # The very function, not a wrapper: scikit-learn's pretty printer recognises estimators by it.
    __repr__ = BaseEstimator.__repr__

    def _get_params_html(self, deep=True, doc_link=""):
        # The parameter table of the HTML diagram. skorch's deep parameters are the settings of every
        # default callback, which nobody set and ``__init__`` does not list: they would all read "user-set".
        return super()._get_params_html(deep=False, doc_link=doc_link)
