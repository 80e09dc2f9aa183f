"""Content hashes that every process computes alike: of weights and preprocessing, and of single images.

They key the embedding cache, which processes, Dask workers and later sessions share, so a hash must not
depend on memory addresses, on the order of a set or on the process: two objects hash alike only when
they hold the same values, and the same values hash alike everywhere.
"""

import contextlib
import dis
import functools
import hashlib
import importlib.util
import inspect
import os
import sys
import sysconfig
import threading
import types
import uuid
import weakref

import numpy as np
import torch
from joblib.hashing import NumpyHasher

from ._pixel_values import is_eight_bit, upright

DIGEST_SIZE = 16  # bytes of an image's key
# Where installed libraries live: their code changes with their version, not in a notebook cell.
_LIBRARY_FOLDERS = tuple(
    {os.path.realpath(sysconfig.get_paths()[kind]) + os.sep for kind in ("purelib", "platlib", "stdlib")}
)
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
        elif isinstance(obj, types.MethodType):  # by its function's code and its owner
            obj = ("method", obj.__func__, obj.__self__)
        elif isinstance(obj, type) and not installed(obj):
            # a class of the user's, by name (its code is keyed where it runs: its instances' methods, the
            # layers of a network): pickled by reference, it is not found in a worker that rebuilt it
            obj = ("class", obj.__module__, obj.__qualname__)
        elif not isinstance(obj, type | types.ModuleType) and not installed(type(obj)):
            # an instance of a class of the user's: its methods' code decides what it computes (a callable
            # preprocess object, a layer's activation), and pickling names the class only
            super().save(("code of", class_content(type(obj))))
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
    name, bytecode, constants, defaults, captured values and what they read as globals: data by value, the
    user's own functions, classes and helper modules by their code, an installed library's by name (its
    code changes with its version; its own functions by their code, defaults and captured values, not the
    globals they read); bound methods by their function and owner; anything else as joblib
    hashes it (objects by class name and state), with the code of the methods of a user's class.

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
    """What a function computes with: its code, defaults, captured values and the data globals it reads.

    A function whose code is an installed library's (by the file it was compiled from, not by its
    ``__module__``, which a notebook's ``__main__`` in a worker process, or ``functools.wraps``, can make a
    library's) leaves out the globals it reads: they may be the library's state of this process (a registry
    that loading a model fills), which would give another key in every process.
    """
    code = function.__code__
    content = (
        "function",
        function.__module__,
        function.__qualname__,
        _code_content(code),
        function.__defaults__,
        function.__kwdefaults__,
        tuple(_cell_content(cell) for cell in function.__closure__ or ()),
    )
    if _compiled_in_a_library(code):
        return content
    scope = function.__globals__
    attributes = _names(code)  # of globals and of attributes: what it may read of a helper module
    read = {
        name: _by_name_if_code(scope[name], attributes)
        for name in sorted(_global_names(code))
        if name in scope
    }
    imported = {
        name: _by_name_if_code(module, attributes)
        for name, module in sorted(_imported_modules(code, scope.get("__package__")).items())
    }  # an installed library's module is ("module", name) already, which _by_name_if_code returns as it is
    return (*content, read, imported)


def _compiled_in_a_library(code):
    """Whether ``code`` was compiled from a file of an installed library or of Python itself."""
    return _in_a_library(code.co_filename)


def _in_a_library(path):
    return os.path.realpath(path).startswith(_LIBRARY_FOLDERS)


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


def _with_nested_code(code):
    """``code`` and the code objects nested in it (its lambdas, comprehensions and inner functions)."""
    yield code
    for value in code.co_consts:
        if isinstance(value, types.CodeType):
            yield from _with_nested_code(value)


def _names(code):
    """Every name ``code`` (nested code included) uses: of globals, attributes and methods."""
    return {name for each in _with_nested_code(code) for name in each.co_names}


_GLOBAL_OPERATIONS = {dis.opmap[name] for name in ("LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL")}


def _global_names(code):
    """The names ``code`` (nested code included) reads or writes as globals, not those of attributes: a
    global of the same name as an attribute (``mean`` beside ``np.mean``) is no part of what it computes,
    and a worker process, which receives only the globals a function uses, does not have it."""
    return {
        instruction.argval
        for each in _with_nested_code(code)
        for instruction in dis.get_instructions(each)
        if instruction.opcode in _GLOBAL_OPERATIONS
    }


def _imported_modules(code, package):
    """The modules that ``code`` (nested code included) imports as it runs (``from helpers import SCALE``
    in a function's body), by name: an installed library's by name alone, imported or not; a user's as it is
    loaded, imported here if the function has not run yet, as it will import it.

    A module that cannot be found or imported (an import guarded by ``try``) is left out: the function does
    not read it.
    """
    modules = {}
    for each in _with_nested_code(code):
        level = 0
        for instruction in dis.get_instructions(each):
            if instruction.opname in _SMALL_CONSTANTS and isinstance(instruction.argval, int):
                level = instruction.argval  # IMPORT_NAME follows its level and its names
            elif instruction.opname == "IMPORT_NAME":
                try:
                    name = importlib.util.resolve_name("." * level + instruction.argval, package)
                    modules[name] = _module_named(name)
                except Exception:  # what the function's own import would raise as it runs
                    continue
    return modules


# The instructions that load an import's level: Python 3.14 loads small integers with an instruction of its own.
_SMALL_CONSTANTS = ("LOAD_CONST", "LOAD_SMALL_INT")


def _module_named(name):
    """``("module", name)`` for an installed library's module; a user's module, imported if need be."""
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.find_spec(name)  # where it lies, without running it
        origin = getattr(spec, "origin", None)
        if spec is None or origin in (None, "built-in", "frozen") or _in_a_library(origin):
            return ("module", name)
        module = importlib.import_module(name)
    return ("module", name) if installed(module) else module


def _cell_content(cell):
    try:
        return cell.cell_contents
    except ValueError:  # a cell not yet filled
        return ("empty cell",)


def _by_name_if_code(value, attributes=()):
    """What a function reads as a global: an installed library's modules, classes and functions by name
    (their code changes with their version), a user's by their code.

    A user's module (a helper file, edited between sessions) by the globals of it the function reads, among
    ``attributes`` (the names its code uses); a user's class by its methods; a user's function as it is,
    which the hasher hashes by content (a function that reaches itself is named there).
    """
    if isinstance(value, types.ModuleType):
        if installed(value):
            return ("module", value.__name__)
        if value.__name__ in _opened("modules"):  # a helper module that reaches itself (a.b.a)
            return ("module", value.__name__)
        with _open(_opened("modules"), value.__name__):
            # its submodules by the same names: helpers.settings.SCALE reads SCALE of helpers.settings
            return (
                "module",
                value.__name__,
                {
                    name: _by_name_if_code(vars(value)[name], attributes)
                    for name in sorted(attributes)
                    if name in vars(value)
                },
            )
    if hasattr(value, "__wrapped__") and not installed(value):
        value = _unwrapped(value)  # a helper in functools.lru_cache: by its code
    if isinstance(value, type | types.FunctionType | types.BuiltinFunctionType):
        if installed(value) or isinstance(value, types.BuiltinFunctionType):
            return ("global", getattr(value, "__module__", None), value.__qualname__)
        return class_content(value) if isinstance(value, type) else value
    return value


def installed(obj):
    """Whether ``obj`` (a module, a class or a function) comes from an installed library or Python itself.

    Examples
    --------
    >>> import numpy
    >>> installed(numpy.mean), installed(int), installed(type("Local", (), {}))
    (True, True, False)
    """
    name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    return isinstance(name, str) and _installed_module(name, id(sys.modules.get(name)))


@functools.lru_cache(maxsize=4096)
def _installed_module(name, _identity):
    """Whether the module ``name`` (as loaded now: ``_identity``) is a library's; cached, as the hasher asks
    of every object it meets. ``__main__`` is the user's (a notebook, a script) even where the process runs
    a library's file as its main module: a joblib worker, pytest."""
    module = sys.modules.get(name)
    if module is None or name == "__main__":
        return False
    if name in sys.builtin_module_names:
        return True
    path = getattr(module, "__file__", None)
    return path is not None and _in_a_library(path)


def user_functions(cls):
    """``(class, name, function)`` for every function of ``cls`` and its bases not from an installed library.

    Static and class methods by their functions; what a method of the class may call, whose code changes
    in a notebook cell rather than with a library's version.

    Examples
    --------
    >>> class Scaled:
    ...     def __call__(self, x):
    ...         return x * 2
    >>> [name for _, name, _ in user_functions(Scaled)]
    ['__call__']
    """
    for klass in _user_classes(cls):
        for name, value in sorted(vars(klass).items()):
            for part, function in _functions_of(value):
                yield klass, f"{name}{part}", function


def _user_classes(cls):
    """``cls`` and its bases, but those of installed libraries."""
    return [klass for klass in cls.__mro__ if klass is not object and not installed(klass)]


def _functions_of(value):
    """``(suffix, function)`` for the functions a class attribute runs: a method as it is; a static or
    class method's, a property's getter, setter and deleter, a cached property's, and the function inside
    a decorator that kept it as ``__wrapped__`` (``functools.lru_cache``)."""
    if isinstance(value, staticmethod | classmethod):
        value = value.__func__
    if isinstance(value, property):
        parts = ((".fget", value.fget), (".fset", value.fset), (".fdel", value.fdel))
    elif isinstance(value, functools.cached_property):
        parts = ((".func", value.func),)
    else:
        parts = (("", value),)
    for suffix, part in parts:
        part = _unwrapped(part)
        if inspect.isfunction(part):
            yield suffix, part


def _unwrapped(value):
    """The function inside wrappers that are no Python functions (``functools.lru_cache``'s), which pickle
    by name. A decorator's own wrapper function stays: it is hashed by its code and what it captures (the
    decorator's arguments, the wrapped function)."""
    seen = set()
    while not isinstance(value, types.FunctionType) and id(value) not in seen:
        seen.add(id(value))
        try:
            value = value.__wrapped__
        except Exception:  # no wrapper (a proxy may raise anything for an attribute it lacks)
            break
    return value


def class_data(cls):
    """The data attributes of ``cls`` and of its bases not from an installed library, by name: the
    constants a method may read (``SCALE = 2.0``), which a notebook cell changes with the code.

    By the hash of their value where they have one; an attribute that cannot be hashed (a lock, a
    descriptor) by its type. Methods and the attributes Python, Enum and abstract classes set (``__doc__``,
    ``_member_map_``, ``_abc_impl``) are not data. Mutable state kept on a class (a counter, a memo) is data
    too: a key that changes at each call, which leaves the cache unused.

    Examples
    --------
    >>> class Scaled:
    ...     SCALE = 2.0
    ...     def __call__(self, x):
    ...         return x * self.SCALE
    >>> class_data(Scaled) == {"Scaled.SCALE": content_hash(2.0)}
    True
    """
    if id(cls) in _opened("classes"):  # reached again from its own data: an Enum's members, a registry
        return {"recursive class": f"{cls.__module__}.{cls.__qualname__}"}
    data = {}
    with _open(_opened("classes"), id(cls)):
        for klass in _user_classes(cls):
            for name, value in list(vars(klass).items()):  # pickling a value may add __slotnames__
                code = isinstance(value, _CODE_ATTRIBUTES) or next(_functions_of(value), None) is not None
                if code or _reserved(name):
                    continue
                data[f"{klass.__qualname__}.{name}"] = _data_content(value)
    return dict(sorted(data.items()))


def _reserved(name):
    """Whether a class attribute is Python's (``__doc__``), an Enum's (``_member_map_``) or an abstract
    class's (``_abc_impl``) rather than the user's data."""
    dunder = name.startswith("__") and name.endswith("__")
    sunder = len(name) > 2 and name[0] == name[-1] == "_" and name[1] != "_" and name[-2] != "_"
    return dunder or sunder or name == "_abc_impl"


# Class attributes that are code, whose functions user_functions yields.
_CODE_ATTRIBUTES = (staticmethod, classmethod, property, functools.cached_property)


def _data_content(value):
    """``value`` as the hasher can take it, or its type's name where it cannot be hashed (checked here)."""
    if isinstance(value, type | types.ModuleType | types.FunctionType):
        return _by_name_if_code(value)
    try:  # an instance its own class holds (a default, an Enum's member) ends at class_data's guard
        return content_hash(value)
    except Exception:
        return ("unhashed", type(value).__module__, type(value).__qualname__)


def class_content(cls):
    """A user's class by its name, and the functions and data of its own classes and bases (not installed
    ones)."""
    functions = tuple((klass.__qualname__, name, function) for klass, name, function in user_functions(cls))
    return ("class", cls.__module__, cls.__qualname__, functions, class_data(cls))


# What this thread's hash is taking apart, by kind ("modules", "classes"): those that reach themselves.
_OPEN = threading.local()


def _opened(kind):
    return vars(_OPEN).setdefault(kind, set())


@contextlib.contextmanager
def _open(opened, key):
    opened.add(key)
    try:
        yield
    finally:
        opened.discard(key)


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
    (16-bit, float), which a conversion to RGB would clip; turned upright as its EXIF orientation says.
    """
    image = upright(image)
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
