"""Content hashes that every process computes alike: of weights and preprocessing, and of single images.

They key the embedding cache, which processes, Dask workers and later sessions share, so a hash must not
depend on memory addresses, on the order of a set or on the process: two objects hash alike only when
they hold the same values, and the same values hash alike everywhere.
"""

import functools
import hashlib
import os
import types
import uuid
import weakref

import numpy as np
import torch
from joblib.hashing import NumpyHasher

from ._pixel_values import is_eight_bit

DIGEST_SIZE = 16  # bytes of an image's key
_READ_CHUNK = 1 << 20
_LOCAL_KEYS = {}  # id(obj) -> key, while obj lives (see process_local_key)


class _ContentHasher(NumpyHasher):
    """joblib's hasher with tensors hashed by value and Python functions by what they compute.

    joblib alone pickles a function by its name, so that an edited function keeps its hash, and cannot
    pickle a lambda or a closure at all; torch pickles a tensor with the address of its storage.
    """

    def __init__(self):
        super().__init__(hash_name="md5")
        self._open_functions = set()  # functions being hashed, for those that reach themselves

    def save(self, obj):
        if isinstance(obj, torch.Tensor):
            obj = _tensor_content(obj)
        elif isinstance(obj, types.FunctionType):
            if id(obj) in self._open_functions:
                obj = ("recursive function", obj.__module__, obj.__qualname__)
            else:
                self._open_functions.add(id(obj))
                try:
                    super().save(_function_content(obj))
                finally:
                    self._open_functions.discard(id(obj))
                return
        super().save(obj)


def content_hash(obj):
    """Hex digest of ``obj`` that any process computes alike for equal values.

    Tensors hash by dtype, shape and bytes; Python functions (lambdas and closures included) by module,
    name, bytecode, constants, defaults, captured values and the values of the data globals they read
    (not the code of other functions they call); anything else as joblib hashes it (objects by class name
    and state, so that the code of an object's methods is not part of its hash).

    Raises
    ------
    Exception
        Whatever pickling raises for an object that cannot be hashed by value (a lock, say).

    Examples
    --------
    >>> import torch
    >>> content_hash(torch.ones(2)) == content_hash(torch.ones(2)) != content_hash(torch.zeros(2))
    True
    >>> scale = lambda k: lambda x: x * k
    >>> content_hash(scale(2)) == content_hash(scale(2)) != content_hash(scale(3))
    True
    """
    return _ContentHasher().hash(obj)


def process_local_key(obj):
    """A random key for ``obj`` that no other process, and no other object, will ever be given.

    The same live object gets the same key; once it is collected, its key is forgotten (its ``id`` may be
    reused). An object that cannot be weakly referenced gets a new key at every call.

    Examples
    --------
    >>> def f(x):
    ...     return x
    >>> process_local_key(f) == process_local_key(f) != process_local_key(lambda x: x)
    True
    """
    key = _LOCAL_KEYS.get(id(obj))
    if key is None:
        key = uuid.uuid4().hex
        try:
            weakref.finalize(obj, _LOCAL_KEYS.pop, id(obj), None)
        except TypeError:
            return key
        _LOCAL_KEYS[id(obj)] = key
    return key


def _tensor_content(tensor):
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return ("tensor", str(tensor.dtype), tuple(tensor.shape), data)


def _function_content(function):
    """What a function computes with: its code, defaults, captured values and the data globals it reads."""
    code = function.__code__
    scope = function.__globals__
    return (
        "function",
        function.__module__,
        function.__qualname__,
        _code_content(code),
        function.__defaults__,
        function.__kwdefaults__,
        tuple(_cell_content(cell) for cell in function.__closure__ or ()),
        {name: _by_name_if_code(scope[name]) for name in sorted(_global_names(code)) if name in scope},
    )


def _code_content(code):
    """Bytecode, names and constants (nested code included); line numbers and file names left out."""
    constants = tuple(
        _code_content(value)
        if isinstance(value, types.CodeType)
        else sorted(value, key=repr)
        if isinstance(value, frozenset)  # iterated in an order that differs between processes
        else value
        for value in code.co_consts
    )
    return (code.co_code, code.co_names, code.co_varnames, code.co_freevars, constants)


def _global_names(code):
    names = set(code.co_names)
    for value in code.co_consts:
        if isinstance(value, types.CodeType):
            names |= _global_names(value)
    return names


def _cell_content(cell):
    try:
        return cell.cell_contents
    except ValueError:  # a cell not yet filled
        return ("empty cell",)


def _by_name_if_code(value):
    """Modules, classes and functions that a function reads are named, not hashed (that would never end)."""
    if isinstance(value, types.ModuleType):
        return ("module", value.__name__)
    if isinstance(value, type | types.FunctionType | types.BuiltinFunctionType):
        return ("global", getattr(value, "__module__", None), value.__qualname__)
    return value


def array_key(array):
    """Key of one image (or row) held in an array: its dtype, shape and bytes, read without a copy.

    The axes are read in the order they lie in memory, so that the channels-first view of a channels-last
    image is read in place; only an image whose bytes are scattered (a strided slice) is copied.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    >>> array_key(np.moveaxis(image, -1, 0)) == array_key(np.moveaxis(image.copy(), -1, 0))
    True
    >>> len(array_key(image))
    16
    """
    order = sorted(range(array.ndim), key=lambda axis: -abs(array.strides[axis]))
    laid_out = array.transpose(order)
    if not laid_out.flags.c_contiguous:
        laid_out = np.ascontiguousarray(laid_out)
    header = f"array {laid_out.dtype.str} {laid_out.shape} {order}"
    return _digest(header, memoryview(laid_out).cast("B"))


def text_key(text):
    """Key of a text: its UTF-8 bytes.

    Examples
    --------
    >>> len(text_key("a fine film")), text_key("a") == text_key("b")
    (16, False)
    """
    return _digest("text", text.encode())


def pil_image_key(image):
    """Key of a PIL image: the pixels the network reads.

    The RGB pixels of an 8-bit mode (a palette image's indices are not enough), or a wider mode's own values
    (16-bit, float), which a conversion to RGB would clip.
    """
    if not is_eight_bit(image.mode):
        return _digest(f"pil {image.mode} {image.size}", np.asarray(image).tobytes())
    rgb = image.convert("RGB")
    return _digest(f"pil {rgb.size}", rgb.tobytes())


def file_key(path):
    """Key of an image file: its bytes, read once per version of the file in this process."""
    stat = os.stat(path)
    return _file_key(path, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


@functools.lru_cache(maxsize=1 << 16)
def _file_key(path, size, mtime_ns, ctime_ns, inode):
    hasher = hashlib.sha256(b"file\n")
    with open(path, "rb") as file:
        while chunk := file.read(_READ_CHUNK):
            hasher.update(chunk)
    return hasher.digest()[:DIGEST_SIZE]


def _digest(header, data):
    hasher = hashlib.sha256(header.encode() + b"\n")
    hasher.update(data)
    return hasher.digest()[:DIGEST_SIZE]
