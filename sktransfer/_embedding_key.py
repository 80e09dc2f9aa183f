"""The embedding cache's key: a hash of everything that decides a fitted extractor's embeddings."""

import functools
import inspect
import itertools
import warnings
from importlib import metadata

import torch
from torch import fx, nn
from torch.nn.modules import module as torch_module

from ._hashing import class_content, content_hash, installed, process_local_key
from ._stacklevel import caller_stacklevel


class UnhashablePreprocessWarning(UserWarning):
    """``preprocess`` has no hash by value, so the embedding cache serves only the process that filled it."""


class UnhashableModuleWarning(UserWarning):
    """A layer of ``model`` holds a value without a hash by value: the embedding cache serves one process."""


# The version of how inputs are read and keyed: changed with them, so that a cache filled before (the
# embeddings of 16-bit images clipped at 255, say, or pooling='cls' reading a left-padded text's first pad)
# is not served for inputs now read otherwise (4: photos turned as their EXIF orientation says; 5: the
# channels-last maps of Swin and ConvNeXt pooled over their spatial axes).
_KEY_VERSION = 5
# torch's own bookkeeping of every module (parameters, buffers and sublayers, keyed apart; hook registries
# numbered by a process-wide counter; the training flag): not the attributes of a user's layer.
_MODULE_BOOKKEEPING = frozenset(vars(nn.Module()))


def embedding_key(extractor, precision):
    """Hash of all that decides an embedding: weights, graph, preprocessing, settings and precision.

    The weights, buffers and the library's own preprocessing are hashed once per fit (most of the cost) and
    kept on the fitted ``extractor``. The rest is hashed at each call: the code of a user's layers and the
    data globals it reads, their attributes and hooks, and a user's ``preprocess`` may change after fit (a
    cell run again in a notebook, a module edited before an unpickled extractor runs), and a key that kept
    them would serve the embeddings of the old code.
    """
    keys = _NetworkKeys(extractor)
    backbone = extractor.backbone_
    fingerprint = weights_fingerprint(backbone)
    if extractor._backbone_key is not None and getattr(extractor, "_backbone_fingerprint", None) is None:
        extractor._backbone_fingerprint = fingerprint  # unpickled with its key: the weights came with it
    if extractor._backbone_key is None or extractor._backbone_fingerprint != fingerprint:
        # first call of this fit, or weights changed in place since (an optimizer step on backbone_)
        # every buffer: those not persistent (not in the state_dict) can decide the output too
        buffers = dict(backbone.named_buffers())
        # The library's own preprocessing (the weights' transforms, a tokenizer, whose hash costs tens of
        # milliseconds and whose padding state changes as it runs) is keyed once, as the weights are.
        own = keys.preprocess() if extractor._batch_preprocess else None
        extractor._backbone_key = content_hash((backbone.state_dict(), buffers, own, keys.torch_layers()))
        extractor._backbone_fingerprint = fingerprint
    graph = (
        repr(backbone),
        keys.user_code(),
        keys.user_layers(),
        keys.hooks(),
        None if extractor._batch_preprocess else keys.preprocess(),
    )
    versions = (_versions(), library_versions(backbone, extractor.preprocess_))
    return content_hash(
        (_KEY_VERSION, versions, extractor._backbone_key, *graph, extractor._fitted_settings, precision)
    )


def weights_fingerprint(module):
    """What changes, at no cost of reading them, when ``module``'s weights or buffers change: each tensor's
    version counter (which in-place operations, optimizer steps and ``load_state_dict`` raise), where its
    data lie, its shape and dtype.

    Writes through ``tensor.data`` escape the version counter, as they escape autograd.

    Examples
    --------
    >>> layer = nn.Linear(2, 2)
    >>> before = weights_fingerprint(layer)
    >>> with torch.no_grad():
    ...     _ = layer.weight.mul_(2)
    >>> weights_fingerprint(layer) == before
    False
    """
    tensors = [
        *module.named_parameters(remove_duplicate=False),
        *module.named_buffers(remove_duplicate=False),
    ]
    return tuple(
        (name, _version(tensor), tensor.data_ptr(), tuple(tensor.shape), str(tensor.dtype))
        for name, tensor in tensors
    )


def _version(tensor):
    """The tensor's version counter; for a tensor made under ``torch.inference_mode`` (a buffer a forward
    set), which keeps none, a number never given before: the weights count as changed."""
    if tensor.is_inference():
        return ("inference", next(_UNVERSIONED))
    return tensor._version


_UNVERSIONED = itertools.count()


def library_versions(backbone, preprocess):
    """The versions of the installed libraries, beyond those of :func:`_versions`, whose classes make up
    ``backbone`` or ``preprocess`` (timm's layers, say): their code runs unhashed, and changes with them.

    Examples
    --------
    >>> library_versions(nn.Linear(2, 2), None)
    {}
    """
    transforms = getattr(preprocess, "transforms", ())  # a Compose's steps
    objects = [*backbone.modules(), preprocess, *(transforms if isinstance(transforms, list | tuple) else ())]
    roots = {type(each).__module__.split(".")[0] for each in objects if installed(type(each))}
    return {root: _distribution_version(root) for root in sorted(roots - _KEYED_ELSEWHERE)}


# The libraries whose versions _versions keys by name (their import names), and Python's own types.
_KEYED_ELSEWHERE = frozenset({"PIL", "torch", "torchvision", "sktransfer", "transformers", "builtins"})


@functools.cache
def _packages_distributions():
    return metadata.packages_distributions()  # reads every installed distribution's files: once


@functools.lru_cache(maxsize=256)
def _distribution_version(module):
    """``(distribution, version)`` of each installed distribution that provides the top-level ``module``."""
    distributions = _packages_distributions().get(module, ())
    return tuple(sorted((name, metadata.version(name)) for name in set(distributions)))


def _versions():
    """The versions of the installed code that reads the inputs and runs the network, keyed by name only.

    The same in every process of one environment: transformers by its installed distribution, whether a
    process has imported it or not.

    Examples
    --------
    >>> sorted(_versions())
    ['PIL', 'sktransfer', 'torch', 'torchvision', 'transformers']
    """
    import PIL
    import torchvision

    versions = {"PIL": PIL.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__}
    for distribution in ("sktransfer", "transformers"):
        try:
            versions[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:  # not installed (transformers is an extra)
            versions[distribution] = None
    return versions


def _layer_code(cls):
    """What decides the output of a layer of class ``cls`` beyond its weights: its ``forward``, and every
    function (by name, a property's getter and setter apart) and constant of the classes among its bases
    that are not from an installed library, which the forward may call or read; an installed library's
    code changes with its version."""
    return (cls.forward, class_content(cls))


def _ships_with_torch(layer):
    return type(layer).__module__.split(".")[0] in ("torch", "torchvision")


class _NetworkKeys:
    """The hashes of the parts of a fitted extractor's network and preprocessing that its weights miss.

    A part without a hash by value gets a key of this process instead, with a warning (once per fit, kept
    on the extractor) naming it and what to change.
    """

    def __init__(self, extractor):
        self.extractor = extractor
        self.backbone = extractor.backbone_

    def user_code(self):
        """Hash of what the layers that are not torch's compute (:func:`_layer_code`).

        Each class by its name and the hash of its code: sorted by both, an order that no memory address
        decides (a notebook's cell run again leaves two classes of one name).
        """

        def code():
            classes = {type(layer) for layer in self.backbone.modules() if not _ships_with_torch(layer)}
            return sorted((f"{c.__module__}.{c.__qualname__}", content_hash(_layer_code(c))) for c in classes)

        return self._hash_or_local_key(
            code,
            "the code of model's layers",
            "Keep the data globals its functions read picklable.",
            lazy=True,
        )

    def hooks(self):
        """Hash of the forward hooks of every layer and of torch's global ones, in order.

        Global hooks (``torch.nn.modules.module.register_module_forward_hook``) run on every layer. The
        hooks' registry numbers are per process and left out.
        """
        names = {id(layer): name for name, layer in self.backbone.named_modules()}

        def by_content(hook):
            # A method by its function's code and its owner: a layer of the network by its name (its state
            # is keyed apart, its hook registries are numbered per process), another object as it is.
            if inspect.ismethod(hook):
                owner = hook.__self__
                return (hook.__func__, names.get(id(owner), owner))
            return hook

        hooks = [
            (
                name,
                [by_content(hook) for hook in layer._forward_pre_hooks.values()],
                [by_content(hook) for hook in layer._forward_hooks.values()],
            )
            for name, layer in self.backbone.named_modules()
            if layer._forward_pre_hooks or layer._forward_hooks
        ]
        global_hooks = (torch_module._global_forward_pre_hooks, torch_module._global_forward_hooks)
        if any(global_hooks):
            hooks.append((None, *[[by_content(hook) for hook in kind.values()] for kind in global_hooks]))
        return self._hash_or_local_key(
            hooks, "a forward hook of model", "Register module-level functions as hooks."
        )

    def torch_layers(self):
        """Hash of the settings of torch's and torchvision's layers that their repr does not show.

        Such as ``norm_first`` or ``batch_first``; a network cut by torch.fx is keyed by its generated code.
        """
        settings = {}
        for name, layer in self.backbone.named_modules():
            if isinstance(layer, fx.GraphModule):  # a cut network: keyed by the code generated from its graph
                settings[f"{name}.code"] = layer.code
            elif _ships_with_torch(layer):
                settings.update(
                    (f"{name}.{attribute}", value)
                    for attribute, value in vars(layer).items()
                    if attribute not in _MODULE_BOOKKEEPING
                )
        return self._hash_or_local_key(
            settings,
            "a setting of a torch layer of model",
            "Keep picklable values as the layers' attributes.",
        )

    def user_layers(self):
        """Hash of the attributes of the user's own layers (a scale, a flag) that their forward may read.

        Their parameters, buffers and sublayers are keyed apart; the layers of torch, torchvision and
        transformers are keyed by their parameters and repr (a transformers layer's configuration holds the
        path it was loaded from). An attribute without a hash by value makes the key, with a warning naming
        it, one of this process.
        """
        hashes = {}
        for name, layer in self.backbone.named_modules():
            if _ships_with_torch(layer) or type(layer).__module__.startswith("transformers."):
                continue
            unkeyed = _MODULE_BOOKKEEPING | getattr(layer, "_UNKEYED_ATTRIBUTES", frozenset())
            for attribute, value in vars(layer).items():
                if attribute not in unkeyed:
                    hashes[f"{name}.{attribute}"] = self._hash_or_local_key(
                        value,
                        f"the attribute {type(layer).__name__}.{attribute} of model",
                        "Keep picklable values (numbers, strings, arrays) as the module's attributes.",
                    )
        return hashes

    def preprocess(self):
        """Hash of ``preprocess_``, or (with a warning) a key of this process where it has no stable hash."""
        preprocess = self.extractor.preprocess_
        return self._hash_or_local_key(
            preprocess,
            f"preprocess={preprocess!r}",
            "Nor can it see a change made to the object in place: pass a new object after changing it. Define "
            "the preprocess function at module level, without unpicklable state such as locks, or use a "
            "torchvision transform object.",
            UnhashablePreprocessWarning,
            owner=preprocess,
        )

    def _hash_or_local_key(
        self, value, subject, advice, category=UnhashableModuleWarning, owner=None, lazy=False
    ):
        """``content_hash(value)`` (of ``value()`` if ``lazy``), or a key of this process (of ``owner``, else
        the network) with a warning.

        Where ``value`` has no hash by value, the warning names ``subject``, once per fit.
        """
        try:
            return content_hash(value() if lazy else value)
        except Exception as exc:
            self._warn_of_a_process_local_key(subject, exc, advice, category)
            return process_local_key(self.backbone if owner is None else owner)

    def _warn_of_a_process_local_key(self, subject, exc, advice, category):
        warned = vars(self.extractor).setdefault("_process_local_keys_warned", set())
        if (category, subject) in warned:
            return
        warned.add((category, subject))
        reason = exc.args[0] if exc.args else type(exc).__name__
        warnings.warn(
            f"{subject} cannot be hashed by value ({reason}), so the embedding cache will only serve this "
            "process: other processes (Dask or joblib workers, a restarted notebook) compute the embeddings "
            f"again. {advice}",
            category,
            stacklevel=caller_stacklevel(),
        )
