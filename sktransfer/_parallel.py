"""Running inside joblib's workers: telling that this is one, and starting DataLoader workers there."""

import multiprocessing
import sys
import warnings

from joblib.parallel import get_active_backend

from ._stacklevel import caller_stacklevel
from ._unused_settings import IgnoredSettingWarning


def in_joblib_worker():
    """Whether this code runs inside a joblib worker (a process or a thread of ``Parallel(n_jobs=...)``).

    joblib runs each task under the backend that nested ``Parallel`` calls would use, one nesting level
    deeper than the caller's; the main program runs at level 0, and so do tasks run one after the other
    (``n_jobs=1``).

    Examples
    --------
    >>> from joblib import Parallel, delayed
    >>> in_joblib_worker()
    False
    >>> Parallel(n_jobs=2, backend="threading")(delayed(in_joblib_worker)() for _ in range(2))
    [True, True]
    """
    backend, _ = get_active_backend()
    return bool(backend.nesting_level)


def in_dask_worker():
    """Whether this code runs in a task on a Dask worker (``client.submit``, joblib's "dask" backend).

    Examples
    --------
    >>> in_dask_worker()
    False
    """
    distributed = sys.modules.get("distributed")  # not imported here where no one uses Dask
    if distributed is None:
        return False
    try:
        distributed.get_worker()
    except ValueError:  # "No worker found"
        return False
    return True


def loader_processes(num_workers):
    """DataLoader keywords for ``num_workers`` worker processes that also start inside joblib's workers.

    A process of joblib's default (loky) backend has loky's own start method, with which DataLoader
    workers fail to start (``'Process' object has no attribute 'env'``), and so do "spawn" and
    "forkserver" children, which ask for that start method again. There the workers are forked; where
    fork does not exist (Windows) the images are loaded in the process itself, with a warning, as they are
    in a daemonic process (a Dask worker's), which may not start children at all. Anywhere else torch's
    default is kept.

    Examples
    --------
    >>> loader_processes(2)
    {'num_workers': 2}
    """
    if not num_workers:
        return {"num_workers": num_workers}
    if multiprocessing.current_process().daemon:  # a Dask worker's process, a multiprocessing pool's
        where = "a daemonic process (a Dask worker, a multiprocessing pool), which cannot start processes"
    else:
        standard = multiprocessing.get_all_start_methods()
        if multiprocessing.get_start_method(allow_none=True) in (None, *standard):
            return {"num_workers": num_workers}
        if "fork" in standard:
            return {"num_workers": num_workers, "multiprocessing_context": "fork"}
        where = "this joblib worker process"
    warnings.warn(
        f"num_workers={num_workers} cannot start DataLoader workers inside {where}; the images are loaded "
        "in the process itself. Use n_jobs=1 with num_workers, or num_workers=0.",
        IgnoredSettingWarning,
        stacklevel=caller_stacklevel(),
    )
    return {"num_workers": 0}
