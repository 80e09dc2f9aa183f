"""Embeddings of many image files, computed over a Dask cluster (``pip install 'sktransfer[dask]'``).

:func:`transform_on_dask` splits a list of paths into partitions, runs a
:class:`~sktransfer.PretrainedFeatureExtractor` on each partition on a ``dask.distributed`` worker, and
returns the embeddings in the order of the paths. Each worker loads the backbone once, on its first
partition, and keeps it for the others; the images of a partition are decoded a batch at a time, so a
worker holds at most ``batch_size`` decoded images plus the partition's embeddings. Partitions of a Dask
bag, series or array of paths are embedded on the workers that hold them.
"""

import copy
import importlib.util
import os
import threading
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import clone
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions, validate_params
from sklearn.utils._set_output import _get_output_config, _wrap_data_with_container
from torch import nn

from ._feature_model import refuse_text_without_pooling
from ._layers import check_module_layer
from ._stacklevel import caller_stacklevel
from .backbones import check_layer_before_loading, reads_text
from .feature_extraction import PretrainedFeatureExtractor
from .texts import is_pandas, truncations_collected, warn_of_cut_texts

_DASK_MISSING = "transform_on_dask needs Dask's distributed scheduler: pip install 'sktransfer[dask]'."
_FIT_LOCK = threading.Lock()


class PartitionError(RuntimeError):
    """Partitions whose embedding failed on the cluster, after their retries.

    Attributes
    ----------
    failures : list of (int, list or None, BaseException)
        For each failed partition: its index, its paths (None when a partition of a Dask collection could
        not even be loaded) and the error it raised last.
    """

    def __init__(self, failures, retries):
        self.failures = failures
        super().__init__(_describe_failures(failures, retries))


class PartitionFailedWarning(UserWarning):
    """Some partitions failed; their rows hold NaN (``errors="nan"``)."""


class SlowWorkersWarning(UserWarning):
    """The workers' environment slows torch down (Dask's default ``MALLOC_TRIM_THRESHOLD_``)."""


UNSET_MALLOC_TRIM = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def _malloc_trim_threshold():
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def _check_worker_environment(client):
    """Warn when the workers run with a small malloc trim threshold, as Dask's nannies set by default."""
    thresholds = set(client.run(_malloc_trim_threshold).values()) - {None}
    if thresholds:
        warnings.warn(
            f"the Dask workers run with MALLOC_TRIM_THRESHOLD_={thresholds.pop()} (Dask's default), which "
            "makes torch 1.5 to 2 times slower on CPUs (benchmarks/bench_scaling.py). Start them without it: "
            "dask.config.set(sktransfer.distributed.UNSET_MALLOC_TRIM) before the first LocalCluster(...) of "
            "the process (a cluster started with Dask's defaults leaves the variable in the environment that "
            "later workers inherit), or `MALLOC_TRIM_THRESHOLD_` unset in the pre-spawn-environ of the "
            "workers' Dask configuration.",
            SlowWorkersWarning,
            stacklevel=caller_stacklevel(),
        )


def _describe_failures(failures, retries):
    lines = [
        f"{len(failures)} partition(s) failed after {retries} retries (a sample number in an error below counts "
        "from its partition's first item):"
    ]
    for index, paths, error in failures[:5]:
        if paths is None:
            where = "its paths could not be loaded"
        else:
            shown = ", ".join(repr(str(path)) for path in paths[:3])
            where = f"paths {shown}" + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        lines.append(f"  partition {index} ({where}): {type(error).__name__}: {error}")
    if len(failures) > 5:
        lines.append(f"  ... and {len(failures) - 5} more partitions")
    return "\n".join(lines)


def _shipped(extractor):
    """What the workers run: a clone that each fits, unless the clones would draw other random weights.

    Random weights drawn by a fitted extractor are sent as they are (its network), unless an int
    ``random_state`` draws them again: without one, or from a RandomState it has already drawn from, a clone
    would draw others. An unfitted one without ``random_state`` gets one seed for all the workers.
    """
    if not extractor._draws_weights():
        shipped = clone(extractor)
    elif hasattr(extractor, "backbone_"):
        shipped = clone(extractor) if isinstance(extractor.random_state, Integral) else copy.copy(extractor)
    elif extractor.random_state is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
        shipped = clone(extractor).set_params(random_state=seed)
    else:
        shipped = clone(extractor)  # every worker unpickles the same RandomState, and draws the same network
    # arrays from the workers: the container set_output asks for is made here (its library checked up front)
    shipped._sklearn_output_config = {
        **getattr(extractor, "_sklearn_output_config", {}),
        "transform": "default",
    }
    return shipped


def _embed_partition(extractor, paths, first):
    """Worker side: fit the shared extractor once per worker process (under a lock), then embed ``paths``.

    Each worker fits on ``first``, X's first item, as a local ``fit(X)`` reads it (or, where that item
    cannot be read, on its partition's own first item: the partition that holds it reports it). Returns
    the embeddings as an array, their number of items and, for texts cut at the encoder's maximum length,
    what the warning would say of them (:func:`~sktransfer.texts.truncations_collected`), else None: the
    client names them among all of X, where a worker's warning would number them within its partition, or
    not reach the user at all.
    """
    paths = list(paths)
    if not paths:
        return np.empty((0, 0), dtype=np.float32), 0, None
    with _FIT_LOCK:
        if not hasattr(extractor, "backbone_"):
            try:
                extractor.fit([paths[0] if first is None else first])
            except Exception:  # X's first item is at fault: its own partition reports it, the others go on
                if first is None:
                    raise
                extractor.fit(paths[:1])
    with truncations_collected() as cut:
        embeddings = extractor.transform(paths)
    return embeddings, len(paths), (cut[0] if cut else None)


def _warn_of_cut_texts(results, cuts):
    """One TruncatedTextsWarning for the texts cut in every partition, numbered among all of X.

    ``results``: each partition's embeddings, or a failed one's number of rows; ``cuts``: what was cut in
    each (see :func:`_embed_partition`).
    """
    offset, cut, longest, max_length = 0, [], 0, None
    for rows, found in zip(results, cuts, strict=True):
        if found is not None:
            _, indices, lengths, max_length = found
            cut.extend((offset + indices).tolist())
            longest = max(longest, int(lengths.max()))
        offset += rows if isinstance(rows, int) else len(rows)
    if cut:
        warn_of_cut_texts(offset, cut, longest, max_length)


def _default_client():
    try:
        from distributed import get_client
    except ImportError as exc:
        raise ImportError(_DASK_MISSING) from exc
    try:
        return get_client()
    except ValueError as exc:
        raise ValueError(
            "client=None needs a running Dask client: create one first (distributed.Client(...)) or pass "
            "client=."
        ) from exc


def _is_dask_collection(X):
    return hasattr(X, "__dask_graph__")


def _partitions(client, X, partition_size, errors):
    """The partitions of X as futures on the cluster (Dask collections) or lists of paths (sequences).

    With ``errors="raise"``, an item that is no path or text is refused here; with ``"nan"``, its partition
    fails on its worker and comes back as NaN rows, as any other.
    """
    if _is_dask_collection(X):
        if getattr(X, "ndim", 1) != 1:
            raise ValueError("X: a Dask collection of paths must be one-dimensional (one path per item).")
        return client.compute(list(np.ravel(np.asarray(X.to_delayed(), dtype=object))))
    if isinstance(X, str) or not hasattr(X, "__len__"):
        raise ValueError(f"X must be a sequence of image paths or a Dask bag/series of them, got {type(X)}.")
    paths = _items(X)
    if not paths:
        raise ValueError("X is empty: it holds 0 paths; at least one is required.")
    for index, path in enumerate(paths if errors == "raise" else ()):  # numbered among all of X, up front
        if not isinstance(path, str | os.PathLike):
            raise ValueError(
                f"X: sample {index} is {path!r}, a {type(path).__name__}: each item must be an image path (or "
                "a text, for a text encoder)."
            )
    return [paths[start : start + partition_size] for start in range(0, len(paths), partition_size)]


def _items(X):
    """The paths (or texts) of a sequence, Series, one-column DataFrame or (n, 1) array, as a list."""
    if is_pandas(X) and X.ndim == 2:  # iterating over a DataFrame gives its column names
        if X.shape[1] != 1:
            raise ValueError(
                f"X is a DataFrame with {X.shape[1]} columns ({list(map(str, X.columns))[:10]}); pass the one "
                "column that holds the paths or texts, e.g. X[['path']]."
            )
        X = X.iloc[:, 0]
    if isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == 1:
        X = X[:, 0]
    if getattr(X, "ndim", 1) != 1:
        raise ValueError(f"X has shape {X.shape}: give one path (or text) per item, a 1-D sequence.")
    return list(X.tolist() if hasattr(X, "tolist") else X)


@validate_params(
    {
        "extractor": [PretrainedFeatureExtractor],
        "X": ["array-like", object],
        "client": [object, None],
        "partition_size": [Interval(Integral, 1, None, closed="left")],
        "retries": [Interval(Integral, 0, None, closed="left")],
        "errors": [StrOptions({"raise", "nan"})],
    },
    prefer_skip_nested_validation=True,
)
def transform_on_dask(extractor, X, *, client=None, partition_size=256, retries=2, errors="raise"):
    """Embed a large list of image files (or texts) on a Dask cluster, partition by partition, in order.

    The extractor's parameters are sent to the workers once; each worker loads the weights itself (from
    its torch cache, a checkpoint path it can read, or the pickled module) on its first partition and
    keeps them for the next ones. A worker embeds its partition in batches of ``extractor.batch_size``,
    decoding each batch just before it runs, so its memory is bounded by the batch size plus the
    embeddings of one partition, whatever the number of paths. A partition that raises is retried
    ``retries`` times; partitions that still fail are reported together, with their paths. (Dask itself
    reschedules the partitions of a worker that dies, up to its ``distributed.scheduler.allowed-failures``.)
    Texts cut at the encoder's maximum length are named among all of X, in one
    :class:`~sktransfer.texts.TruncatedTextsWarning` raised here, as ``transform`` names them.

    Parameters
    ----------
    extractor : PretrainedFeatureExtractor
        The extractor to run; fitted or not, its parameters are what is used (it is cloned, never fitted
        here; each worker fits its clone on X's first item, as ``fit(X)`` reads it), except where its weights
        are drawn at random (``weights=None``, a module class) without an int ``random_state``: a fitted
        extractor then runs as fitted, and an unfitted one gets one seed for every worker, so that all rows
        come from one network. ``device="auto"`` picks each worker's GPU(s) when it has any.
    X : sequence of paths, dask.bag.Bag, dask.dataframe.Series or 1-D dask.array.Array
        Image files that every worker can read (shared or object storage), or texts for a text encoder.
        The partitions of a Dask collection are embedded where they are; a sequence is cut into partitions
        of ``partition_size``.
    client : distributed.Client or None, default=None
        The cluster's client; ``None`` takes the current one.
    partition_size : int, default=256
        Paths per task, for a sequence X.
    retries : int, default=2
        How many times a failed partition is tried again.
    errors : {"raise", "nan"}, default="raise"
        After the retries: ``"raise"`` a :class:`PartitionError` naming each failed partition and its
        paths, once every other partition has finished; ``"nan"`` fill the failed partitions' rows with
        NaN and warn with the same report (it raises all the same when no partition succeeded, or when a
        Dask partition of paths could not even be loaded, so that its number of rows is unknown).

    Returns
    -------
    embeddings : ndarray of shape (n_paths, n_features_out)
        Row i embeds the i-th path; a DataFrame where ``extractor.set_output(transform="pandas")`` (or
        ``"polars"``) asks for one, with the columns ``transform`` names.

    Notes
    -----
    Dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also stops glibc from raising
    its mmap threshold: every large tensor torch allocates is then mapped afresh and its pages faulted in
    and zeroed, which slows torch down on CPUs. Start the first cluster of the process under
    ``dask.config.set(UNSET_MALLOC_TRIM)`` (a :class:`SlowWorkersWarning` says when a worker runs with it).
    Dask also sets ``OMP_NUM_THREADS=1``: one torch thread per worker process.

    Examples
    --------
    >>> from distributed import Client, LocalCluster
    >>> from sktransfer import PretrainedFeatureExtractor
    >>> from sktransfer.datasets import load_textures, save_image_folder
    >>> from sktransfer.distributed import transform_on_dask
    >>> images, labels = load_textures(n_per_class=2, patch_size=32)
    >>> paths = save_image_folder(images, labels, getfixture("tmp_path"))
    >>> with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
    ...     embeddings = transform_on_dask(
    ...         PretrainedFeatureExtractor(device="cpu"), paths, client=client, partition_size=4
    ...     )
    >>> embeddings.shape
    (10, 1280)
    """
    try:  # here, once, rather than on every worker for every partition and retry
        extractor._validate_params()
    except InvalidParameterError as error:
        # sklearn's validate_params renames "parameter of <name> must be" to this function's name: reworded
        name = type(extractor).__name__
        message = str(error).replace(f"parameter of {name} must", f"parameter of {name}, the extractor, must")
        raise InvalidParameterError(f"extractor: {message}") from None
    if not hasattr(extractor, "backbone_"):  # a misspelt layer, here rather than on every worker
        check_layer_before_loading(extractor.model, extractor.layer, extractor.weights)
        if reads_text(extractor.model):
            refuse_text_without_pooling(extractor.pooling)
        if isinstance(extractor.model, nn.Module):
            check_module_layer(extractor.model, extractor.layer)
    client = _default_client() if client is None else client
    partitions = _partitions(client, X, partition_size, errors)
    _check_worker_environment(client)
    _check_output_library(extractor)
    shared = client.scatter(_shipped(extractor), broadcast=True, hash=False)
    first = client.scatter(_first_item(partitions), broadcast=True, hash=False)  # sent once, a text too
    futures = [
        client.submit(_embed_partition, shared, partition, first, retries=retries, pure=False)
        for partition in partitions
    ]
    parts, failures = _gather(futures, partitions)
    results = [part[0] if isinstance(part, tuple) else part for part in parts]
    cuts = [part[2] if isinstance(part, tuple) else None for part in parts]
    width = _embedding_width(results)
    if failures and (errors == "raise" or width is None or any(part is None for part in results)):
        raise PartitionError(failures, retries)  # NaN rows need a width and every failed row count
    if width is None:
        raise ValueError("X is empty: its partitions hold 0 paths; at least one is required.")
    _refuse_uneven_partitions(parts, width)
    if failures:
        warnings.warn(
            _describe_failures(failures, retries), PartitionFailedWarning, stacklevel=caller_stacklevel()
        )
    _warn_of_cut_texts(results, cuts)
    return _as_configured_output(extractor, _stack(results, width), X)


def _refuse_uneven_partitions(parts, width):
    """Raise when a partition's embeddings are not one row of ``width`` per item (the workers' networks
    differ: their first images, of other sizes, gave flattened maps of other lengths)."""
    for index, part in enumerate(parts):
        if not isinstance(part, tuple) or not part[1]:
            continue
        embeddings, items, _ = part
        if embeddings.shape != (items, width):
            raise ValueError(
                f"partition {index} gave embeddings of shape {embeddings.shape} for its {items} items, where "
                f"the first partition with rows has them {width} wide: the workers' networks read images of other "
                "sizes (pooling=None flattens maps whose size follows the image's). Give images of one size, "
                "or resize them in preprocess, or pool the maps (pooling='avg')."
            )


def _first_item(partitions):
    """X's first item, which every worker fits on, as a local ``fit(X)`` does; None if no partition gives one.

    A Dask collection's first partition that holds items is loaded for it (one partition of paths).
    """
    for partition in partitions:
        if hasattr(partition, "result"):
            try:
                partition = list(partition.result())
            except Exception:  # a partition that cannot be loaded: reported with the others
                continue
        if len(partition):
            return partition[0]
    return None


def _check_output_library(extractor):
    """Raise, before any work, when the container ``set_output`` asks for needs a library not installed."""
    container = _get_output_config("transform", extractor)["dense"]
    if container != "default" and importlib.util.find_spec(container) is None:
        raise ImportError(
            f"extractor.set_output(transform={container!r}) asks for a {container} DataFrame, and {container} is "
            f"not installed: pip install {container}, or set_output(transform='default') for an array."
        )


def _as_configured_output(extractor, embeddings, X):
    """The embeddings in the container that ``extractor.set_output(transform=...)`` asks for, named as its
    ``get_feature_names_out`` names them (whether or not it is fitted here)."""
    if _get_output_config("transform", extractor)["dense"] == "default":
        return embeddings
    return _wrap_data_with_container(
        "transform", embeddings, X if is_pandas(X) else None, _NamedColumns(extractor, embeddings.shape[1])
    )


class _NamedColumns:
    """An extractor's output settings, with the column names its ``get_feature_names_out`` gives ``width``
    embeddings (scikit-learn's class-name prefix), fitted here or not."""

    def __init__(self, extractor, width):
        self._sklearn_output_config = getattr(extractor, "_sklearn_output_config", {})
        self._sklearn_auto_wrap_output_keys = {"transform"}
        prefix = type(extractor).__name__.lower()
        self.names = np.asarray([f"{prefix}{index}" for index in range(width)], dtype=object)

    def get_feature_names_out(self, input_features=None):
        return self.names


def _gather(futures, partitions):
    """Each partition's embeddings, or its number of rows when it failed; and the failures, in order.

    Results are gathered as they finish, so that workers do not hold finished embeddings while an earlier
    partition still runs.
    """
    from distributed import as_completed

    index_of = {future.key: index for index, future in enumerate(futures)}
    results, failures = [None] * len(futures), []
    try:
        for future in as_completed(futures):
            index = index_of[future.key]
            if future.status != "finished":  # an error, or cancelled from elsewhere
                paths = _partition_paths(partitions[index])
                error = future.exception() if future.status == "error" else RuntimeError(future.status)
                failures.append((index, paths, error))
                results[index] = None if paths is None else len(paths)
            else:
                results[index] = future.result()
            future.release()
    finally:  # an interrupted gather leaves nothing running on the cluster
        for future in futures:
            future.cancel()
    return results, sorted(failures, key=lambda failure: failure[0])


def _partition_paths(partition):
    """The paths of a partition, or None when they cannot be had (the partition itself failed to load)."""
    if not hasattr(partition, "result"):
        return list(partition)
    try:
        return list(partition.result())
    except Exception:
        return None


def _embedding_width(results):
    """The length of an embedding, from the first partition that holds rows (None if none does)."""
    # each is an array (see _embed_partition), or a failed partition's number of rows
    return next((part.shape[1] for part in results if isinstance(part, np.ndarray) and part.size), None)


def _stack(results, width):
    """One array of every partition's rows, NaN for the failed ones."""
    return np.concatenate(
        [
            np.full((part, width), np.nan, dtype=np.float32)
            if isinstance(part, int)
            else part.reshape(-1, width)
            for part in results
        ]
    )
