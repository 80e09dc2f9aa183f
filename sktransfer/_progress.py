"""Progress bars: widgets in a notebook that can draw them, text elsewhere, silent in joblib's workers."""

import sys

from tqdm import tqdm as text_bar

from ._parallel import in_dask_worker, in_joblib_worker


def notebook_bars():
    """Whether progress bars are notebook widgets: in a Jupyter kernel where ipywidgets imports.

    tqdm's notebook bar raises ``ImportError: IProgress not found`` without ipywidgets, so anywhere else
    the bars are text, as in a terminal. Decided when a bar is made, not when sktransfer is imported.

    Examples
    --------
    >>> notebook_bars()  # not in a Jupyter kernel
    False
    """
    ipython = sys.modules.get("IPython")  # a kernel has imported it long before any bar
    shell = None if ipython is None else ipython.get_ipython()
    if type(shell).__name__ != "ZMQInteractiveShell":
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def shows_progress(verbose):
    """Whether ``verbose`` asks for progress bars here: from 1 in the main program, from 2 in a joblib worker
    or a Dask task.

    Bars drawn by several workers at once (``cross_val_score(..., n_jobs=2)``) garble each other.

    Examples
    --------
    >>> shows_progress(1), shows_progress(0)
    (True, False)
    """
    return bool(verbose) and verbose >= (2 if in_joblib_worker() or in_dask_worker() else 1)


def progress(iterable, *, verbose, total=None, desc=None):
    """Wrap ``iterable`` in a progress bar if :func:`shows_progress` (``iterable=None``: a bar to update).

    Examples
    --------
    >>> sum(progress(range(4), verbose=0))
    6
    """
    if notebook_bars():
        from tqdm.notebook import tqdm as bar
    else:
        bar = text_bar
    return bar(iterable, total=total, desc=desc, disable=not shows_progress(verbose), leave=False)
