"""The embedding cache: one float32 row per image on disk, shared by every process that reads the folder.

Layout: ``<cache>/sktransfer-embeddings/<backbone key>/`` holds shards, one per call that had to run the
network: ``<id>.npy`` (the embeddings it computed) and then ``<id>.keys.npy`` (one image key per row).
Each file is written under a temporary name and renamed into place, and a shard counts only once its
keys file exists, so processes and Dask workers that share the folder never read half a shard. Two
processes that miss the same image at once both compute it; either row serves later lookups.
"""

import os
import threading
import uuid

import numpy as np

from ._hashing import DIGEST_SIZE

_SUBFOLDER = "sktransfer-embeddings"
_KEYS_SUFFIX = ".keys.npy"
_CACHES = {}  # folder -> EmbeddingCache: extractors of this process (clones included) share one index
_CACHES_LOCK = threading.Lock()


def cache_folder(cache):
    """The folder that the ``cache`` parameter of an extractor names; None for no cache.

    ``cache`` is a folder path, a ``joblib.Memory`` (its location is used; ``Memory(None)`` caches
    nothing) or None.

    Examples
    --------
    >>> from joblib import Memory
    >>> cache_folder("embeddings"), cache_folder(Memory("embeddings", verbose=0)), cache_folder(Memory(None))
    ('embeddings', 'embeddings', None)
    """
    if cache is None:
        return None
    if not isinstance(cache, str | os.PathLike):
        if not hasattr(cache, "location"):
            raise ValueError(
                f"cache={cache!r} names no folder: pass a path or a joblib.Memory (its location is used)."
            )
        cache = cache.location
        if cache is None:
            return None
    return os.fspath(cache)


class EmbeddingCache:
    """The embeddings stored in one folder (one backbone key), with an in-memory index of their rows.

    Use :meth:`at` rather than the constructor: it returns the one instance of this process for a key.
    The index maps an image key to its shard and row; it reads the keys of shards that other processes
    wrote when a lookup misses, and starts again from the folder when a shard it knew has gone (the folder
    was deleted to clear the cache).

    Parameters
    ----------
    folder : str
        The folder of one backbone key, made at the first store.

    Examples
    --------
    >>> import numpy as np
    >>> cache = EmbeddingCache.at(getfixture("tmp_path"), "backbone-key")
    >>> keys = [bytes([i]) * 16 for i in range(3)]
    >>> embed = lambda rows: np.full((len(rows), 2), 7.0, dtype=np.float32)
    >>> cache.embed(keys, embed, width=2)[:, 0]
    array([7., 7., 7.], dtype=float32)
    >>> cache.embed(keys, lambda rows: 1 / 0, width=2)[:, 0]  # all cached: nothing is computed
    array([7., 7., 7.], dtype=float32)
    """

    def __init__(self, folder):
        self.folder = folder
        self._shards = []  # shard ids, in the order they were indexed
        self._index = {}  # image key -> (position in _shards, row)
        self._lock = threading.Lock()

    @classmethod
    def at(cls, root, backbone_key):
        """The instance of this process for ``backbone_key`` under the folder ``root``."""
        folder = os.path.abspath(os.path.join(root, _SUBFOLDER, backbone_key))
        with _CACHES_LOCK:
            if folder not in _CACHES:
                _CACHES[folder] = cls(folder)
            return _CACHES[folder]

    def embed(self, keys, compute, width):
        """Embeddings of the images with ``keys``, in order: cached rows, and ``compute`` for the others.

        Parameters
        ----------
        keys : list of bytes
            One key per image.
        compute : callable
            ``compute(indices)`` embeds the images at ``indices`` (positions in ``keys``, each distinct
            image once) and returns one float32 row per index.
        width : int
            Length of an embedding.

        Returns
        -------
        embeddings : ndarray of shape (len(keys), width)
        """
        embeddings = np.empty((len(keys), width), dtype=np.float32)
        missing = np.flatnonzero(~self._read(keys, embeddings))
        if missing.size:
            first_of = {}  # key -> the first position that holds it
            for position in missing:
                first_of.setdefault(keys[position], position)
            computed = np.asarray(compute(np.fromiter(first_of.values(), dtype=np.intp, count=len(first_of))))
            self._write(list(first_of), computed)
            row_of = {key: row for row, key in enumerate(first_of)}
            embeddings[missing] = computed[[row_of[keys[position]] for position in missing]]
        return embeddings

    def _read(self, keys, out):
        """Fill the rows of ``out`` whose keys are cached; return which were."""
        with self._lock:
            if any(key not in self._index for key in keys):
                self._index_new_shards()
            located = [self._index.get(key) for key in keys]
            shards = list(self._shards)
        found = np.array([place is not None for place in located], dtype=bool)
        by_shard = {}
        for position, place in enumerate(located):
            if place is not None:
                by_shard.setdefault(place[0], []).append((place[1], position))
        for shard, pairs in by_shard.items():
            rows, positions = np.array(sorted(pairs)).T
            try:
                stored = np.load(self._path(shards[shard], ".npy"), mmap_mode="r")
            except FileNotFoundError:  # the folder was cleared: those rows are computed again
                found[positions] = False
                self._forget()
                continue
            out[positions] = stored[rows]  # reads those rows only
        return found

    def _forget(self):
        """Drop the index, to be read again from the folder at the next lookup."""
        with self._lock:
            self._shards, self._index = [], {}

    def _index_new_shards(self):
        if not os.path.isdir(self.folder):
            return
        known = set(self._shards)
        for name in sorted(os.listdir(self.folder)):
            shard = name[: -len(_KEYS_SUFFIX)]
            if name.endswith(_KEYS_SUFFIX) and not name.startswith(".") and shard not in known:
                self._add(shard, np.load(os.path.join(self.folder, name)))

    def _add(self, shard, key_rows):
        position = len(self._shards)
        self._shards.append(shard)
        for row, key in enumerate(key_rows):
            self._index.setdefault(key.tobytes(), (position, row))

    def _write(self, keys, embeddings):
        os.makedirs(self.folder, exist_ok=True)
        shard = uuid.uuid4().hex
        key_rows = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), DIGEST_SIZE)
        self._save_atomically(shard, ".npy", np.ascontiguousarray(embeddings, dtype=np.float32))
        self._save_atomically(shard, _KEYS_SUFFIX, key_rows)  # last: it makes the shard visible
        with self._lock:
            self._add(shard, key_rows)

    def _save_atomically(self, shard, suffix, array):
        temporary = os.path.join(self.folder, f".{shard}{suffix}.tmp")
        with open(temporary, "wb") as file:
            np.save(file, array)
        os.replace(temporary, self._path(shard, suffix))

    def _path(self, shard, suffix):
        return os.path.join(self.folder, shard + suffix)
