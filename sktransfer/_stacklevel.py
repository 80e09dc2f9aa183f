"""The ``stacklevel`` of a warning raised deep in the library, so that it points at the user's line.

Every warning of sktransfer takes its ``stacklevel`` from :func:`caller_stacklevel` (a test checks it).
"""

import sys

# The packages between a user's call (fit, transform, a scorer, transform_on_dask) and the code that warns:
# the library, skorch, sklearn (and the joblib calls of its searches), torch.
_SKIPPED_PACKAGES = frozenset({"sktransfer", "skorch", "sklearn", "joblib", "torch"})
# What a worker process or thread starts from: reached, no user's frame is on the stack.
_WORKER_STARTS = frozenset({"multiprocessing", "threading", "concurrent", "loky"})


def caller_stacklevel():
    """The ``stacklevel`` that points a warning at the first frame outside sktransfer and the code it runs in.

    Call it as the ``stacklevel`` argument of ``warnings.warn``: the function that warns is level 1, and
    every frame of sktransfer, skorch, scikit-learn, joblib or torch above it is skipped, however deep the
    call: a fit inside a Pipeline or a sequential GridSearchCV points at the user's line. In a worker process
    or thread (``n_jobs``), where no frame of the user's is on the stack, it points at the outermost call
    into sktransfer's public modules (the estimator's ``fit``, say), not at the standard library's worker
    loop.

    Examples
    --------
    A function of the library that warns, called from a user's script:

    >>> import warnings
    >>> library = {"__name__": "sktransfer.example", "warnings": warnings, "level": caller_stacklevel}
    >>> exec("def fit(): warnings.warn('deep', UserWarning, stacklevel=level())", library)
    >>> script = {"__name__": "__main__", "fit": library["fit"]}
    >>> exec(compile("def main(): fit()", "user_script.py", "exec"), script)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     script["main"]()
    >>> caught[0].filename, caught[0].lineno
    ('user_script.py', 1)
    """
    frame, level = sys._getframe(1), 1  # the function that warns is stacklevel 1
    outermost_library_call = level
    while frame is not None and (module := _module(frame))[0] in _SKIPPED_PACKAGES:
        # the public modules' frames (an estimator's fit), not those of private helpers (a decorator's)
        if module[0] == "sktransfer" and not any(part.startswith("_") for part in module):
            outermost_library_call = level
        frame, level = frame.f_back, level + 1
    if frame is None or _module(frame)[0] in _WORKER_STARTS:
        return outermost_library_call
    return level


def _module(frame):
    """The dotted name of ``frame``'s module, split: ("sktransfer", "domain_adaptation", "shallow")."""
    return tuple(frame.f_globals.get("__name__", "").split("."))
