"""Resolve a backbone: which network, which weights, what preprocessing, and which layer gives features.

Every estimator of the library goes through :func:`load_backbone` and :func:`build_feature_model`, so a
torchvision name with its weights API, a local checkpoint, a user ``nn.Module`` and the offline default all
behave the same way.
"""

import copy
import difflib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms._presets import ImageClassification

from . import _efficientnet_lite
from ._checkpoints import is_checkpoint, load_checkpoint
from ._classifier_cut import classifier_name
from ._feature_model import FeatureModel, resolve_pooling
from ._layers import (
    cut_at_layer,
    gives_channels_last_maps,
    list_layers,  # noqa: F401 (re-exported)
    refuse_unknown_layer,
    unweighted_layer_names,
)
from ._runtime import seeded
from ._stacklevel import caller_stacklevel
from .text_encoders import OFFLINE_TEXT_MODEL_NAME, is_text_model, load_text_encoder

OFFLINE_MODEL_NAME = _efficientnet_lite.OFFLINE_MODEL_NAME


class WeightsUnavailableError(OSError):
    """Pretrained weights are neither in torch's cache nor downloadable from here."""


class KeptParametersWarning(UserWarning):
    """``weights=None`` could not re-draw some parameters of a module passed as an object: they keep its values."""


@dataclass
class Backbone:
    """A resolved network: the module (in eval mode, on the CPU) and the preprocessing its weights expect.

    For images (``kind="image"``), ``preprocess`` takes one (3, H, W) image tensor, uint8 or float in
    [0, 1], and returns the float tensor the network reads; ``None`` means the network reads the input as it
    is. For text, it tokenises a list of texts into a :class:`~sktransfer.texts.TokenBatch`.
    ``own_pooling`` is how the model's authors pool its outputs (``pooling="model"``): "avg" for image
    backbones; a text encoder's sentence-transformers configuration (or the error that it cannot be run).
    ``own_pooling_unread`` is the warning ``pooling="model"`` gives where that configuration could not be
    read (offline, a cache without it). ``untrained_classifier`` names a classifier that a checkpoint did not
    load (it holds none, or one of another size that could not be rebuilt): it keeps the values it was built
    with.
    """

    module: nn.Module
    preprocess: object
    description: str
    kind: str = "image"
    own_pooling: object = "avg"
    own_normalize: bool = False
    own_pooling_unread: Warning | None = None
    untrained_classifier: str | None = None


def torchvision_model_names():
    """Names of torchvision's image classification models."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def available_model_names():
    """Every image model name ``model`` accepts: the offline default and torchvision's classification models."""
    return [OFFLINE_MODEL_NAME, *torchvision_model_names()]


def reads_text(model):
    """Whether ``model`` is a text encoder (see :func:`sktransfer.text_encoders.is_text_model`).

    Examples
    --------
    >>> reads_text("all-MiniLM-L6-v2"), reads_text("resnet50")
    (True, False)
    """
    return is_text_model(model, image_model_names=available_model_names())


def built_by_library(model):
    """Whether the library builds the architecture ``model`` names (a model name), rather than the user.

    Only such networks may be rewritten for speed (BatchNorm folding, channels-last layout): a user's
    module, class or factory runs as written.

    Examples
    --------
    >>> from torch import nn
    >>> built_by_library("resnet50"), built_by_library(nn.Linear(2, 2))
    (True, False)
    """
    return isinstance(model, str)


def load_backbone(model, weights="DEFAULT", *, random_state=None, progress=False):
    """Resolve ``model`` and ``weights`` into a :class:`Backbone`.

    Parameters
    ----------
    model : str, torch.nn.Module or callable
        ``"efficientnet_lite0"`` (the offline default), a torchvision classification model name such as
        ``"resnet50"``, a module (copied, never modified; one in ``nn.DataParallel`` or
        ``DistributedDataParallel`` stands for the module inside), or a module class or factory (called
        without arguments, under ``random_state``).
    weights : str, path or None
        ``"DEFAULT"``, a torchvision weights name such as ``"IMAGENET1K_V2"``, the path of a saved
        state_dict, or ``None`` for a random initialisation (seeded by ``random_state``). For a module,
        ``"DEFAULT"`` keeps the module's own weights.
    random_state : int, RandomState or None
        Seeds the random initialisation.
    progress : bool
        Show torchvision's download progress bar.

    Returns
    -------
    Backbone

    Examples
    --------
    >>> from torch import nn
    >>> backbone = load_backbone(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()))
    >>> backbone.module.training
    False
    """
    with seeded(random_state):
        if isinstance(model, nn.Module):
            backbone = _from_module(model, weights)
        elif callable(model):
            backbone = _from_module(_build(model), weights, built_here=True)
        elif model == OFFLINE_MODEL_NAME:
            backbone = _offline_default(weights)
        elif reads_text(model):
            return load_text_encoder(model, weights, random_state=random_state, progress=progress)
        else:
            backbone = _from_torchvision(model, weights, progress)
    backbone.module.eval()
    return backbone


def _build(factory):
    module = factory()
    if not isinstance(module, nn.Module):
        raise TypeError(f"model={factory!r} returned a {type(module).__name__}, not a torch.nn.Module.")
    return module


def _from_module(model, weights, built_here=False):
    # A model kept in its multi-GPU wrapper: the module inside, which the library places on its devices
    # itself (and whose classifier the wrapper would hide, giving logits for embeddings).
    while isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
        if model._forward_pre_hooks or model._forward_hooks:
            raise ValueError(
                f"model: the {type(model).__name__} wrapper has hooks of its own, and the library reads the "
                "module inside it (it places the network on its devices itself): register the hooks on "
                f"{type(model).__name__}.module, or pass that module."
            )
        model = model.module
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            f"model is a TorchScript module ({type(model).__name__}): the library cuts, copies and keys a "
            "network layer by layer, which a scripted one does not allow. Pass the nn.Module before "
            "torch.jit.script (or a function that builds it)."
        )
    _refuse_other_precisions(model)
    try:
        module = copy.deepcopy(model)
    except Exception as exc:
        raise TypeError(
            f"model: the {type(model).__name__} module could not be copied ({exc}); the library trains and "
            "cuts a copy, so that your module is never modified. Keep copyable values as its attributes (no "
            "locks, open files or sockets), or pass its class or a function that builds it (called in fit)."
        ) from exc
    module = module.cpu()
    untrained = None  # a classifier the checkpoint did not load
    if is_checkpoint(weights):
        untrained = load_checkpoint(module, weights, classifier_name(module))
    elif weights is None:
        kept = _redraw_parameters(module)
        if kept and not built_here:
            warnings.warn(
                f"weights=None re-drew the layers of the {type(model).__name__} module that initialise "
                "themselves (reset_parameters), but these parameters have no initialisation of their own "
                f"and keep the values the module holds: {', '.join(kept[:5])}"
                f"{f' and {len(kept) - 5} more' if len(kept) > 5 else ''}. For a module built anew under "
                f"random_state, pass model={type(model).__name__} (the class, or a function that builds "
                "it), or initialise them in the module's reset_parameters.",
                KeptParametersWarning,
                stacklevel=caller_stacklevel(),
            )
    elif weights != "DEFAULT":
        raise ValueError(
            f"weights={weights!r} cannot apply to a torch.nn.Module model: pass weights='DEFAULT' to keep the "
            "module's own weights, or the path of a state_dict file to load into it."
        )
    return Backbone(module, imagenet_normalize(), type(model).__name__, untrained_classifier=untrained)


def _refuse_other_precisions(model):
    """Raise for a module whose floating-point parameters are not float32: it fails on the float32 batches the
    library gives it, with an error of torch's that names neither the module nor the fix."""
    for name, parameter in model.named_parameters():
        if parameter.is_floating_point() and parameter.dtype != torch.float32:
            dtype = str(parameter.dtype).removeprefix("torch.")
            raise TypeError(
                f"model: the {type(model).__name__} module holds {dtype} parameters ({name!r}, ...), and the "
                "library feeds networks float32 batches: pass it in float32 (module.float()), and ask for "
                "reduced precision with precision='bfloat16' (or 'float16' on a GPU), which runs it under "
                "autocast."
            )


def _redraw_parameters(module):
    """Re-draw every layer that initialises itself, innermost first as construction does; the names kept.

    A layer initialises itself through ``reset_parameters`` (or ``_reset_parameters``, as
    ``nn.MultiheadAttention`` and ``nn.Transformer`` name it). A parameter that no such layer owns keeps its
    value unless an enclosing layer's reset changed it: those kept are returned, by name.
    """
    before = {  # a lazy layer's parameters take their shape, and their values, from its first input
        name: parameter.detach().clone()
        for name, parameter in module.named_parameters()
        if not nn.parameter.is_lazy(parameter)
    }
    owned = set()
    for name, layer in reversed(list(module.named_modules())):
        reset = getattr(layer, "reset_parameters", None) or getattr(layer, "_reset_parameters", None)
        if callable(reset):
            reset()
            owned.update(f"{name}.{own}" if name else own for own, _ in layer.named_parameters(recurse=False))
    return [
        name
        for name, parameter in module.named_parameters()
        if name in before and name not in owned and torch.equal(parameter.detach(), before[name])
    ]


def _offline_default(weights):
    module, untrained = _efficientnet_lite.EfficientNetLite0(), None
    if weights in ("DEFAULT", "IMAGENET1K_V1"):
        module.load_state_dict(_efficientnet_lite.load_packaged_state_dict())
    elif is_checkpoint(weights):
        untrained = load_checkpoint(module, weights, classifier_name(module))
    elif weights is not None:
        raise ValueError(
            f"weights={weights!r} is not available for model={OFFLINE_MODEL_NAME!r}: use 'DEFAULT' (ImageNet, "
            "shipped offline), None (random initialisation) or the path of a state_dict file."
        )
    mean, std = input_scaling(OFFLINE_MODEL_NAME)
    return Backbone(
        module,
        ImageClassification(crop_size=224, resize_size=256, mean=mean, std=std),
        OFFLINE_MODEL_NAME,
        untrained_classifier=untrained,
    )


def _check_model_name(name):
    names = available_model_names()
    if not isinstance(name, str) or name not in names:
        close = difflib.get_close_matches(str(name), names, n=5, cutoff=0.5)
        hint = f" Did you mean one of {close}?" if close else ""
        raise ValueError(
            f"model={name!r} is not a known model.{hint} Pass a torchvision classification model name "
            f"(sktransfer.backbones.available_model_names() lists all {len(names)}), a torch.nn.Module, or "
            f"for text a Hugging Face encoder: a hub id such as 'sentence-transformers/all-MiniLM-L6-v2', a "
            f"local model folder, or the offline {OFFLINE_TEXT_MODEL_NAME!r}."
        )


def _resolve_torchvision_weights(name, weights):
    """The torchvision weights entry that ``weights`` names for model ``name`` (None for a random init)."""
    if weights is None:
        return None
    enum = torchvision.models.get_model_weights(name)
    prefix, _, key = weights.rpartition(".")
    if key in enum.__members__ and prefix in ("", enum.__name__):
        return enum[key]
    raise ValueError(
        f"weights={weights!r} is not available for model={name!r}; choose one of "
        f"{list(enum.__members__)}, None, or the path of a state_dict file."
    )


def _from_torchvision(name, weights, progress):
    _check_model_name(name)
    untrained = None
    if is_checkpoint(weights):
        module = torchvision.models.get_model(name, weights=None)
        untrained = load_checkpoint(module, weights, classifier_name(module))
        resolved = _resolve_torchvision_weights(name, "DEFAULT")
    else:
        resolved = _resolve_torchvision_weights(name, weights)
        module = _download_guarded(name, resolved, progress)
    preprocess = resolved.transforms() if resolved is not None else ImageClassification(crop_size=224)
    label = name if resolved is None else f"{name} ({resolved})"
    return Backbone(module, preprocess, label, untrained_classifier=untrained)


def expected_weights_path(weights_entry):
    """Where torchvision keeps (or would download) the file of a weights entry: torch's hub cache."""
    filename = os.path.basename(urlparse(weights_entry.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _download_guarded(name, weights_entry, progress):
    """Build a torchvision model, downloading its weights into torch's cache if they are not there yet."""
    if weights_entry is None:
        return torchvision.models.get_model(name, weights=None)
    try:
        return torchvision.models.get_model(name, weights=weights_entry, progress=progress)
    except OSError as exc:  # URLError, HTTPError, socket errors and a failed write to the cache
        target = expected_weights_path(weights_entry)
        raise WeightsUnavailableError(
            f"could not obtain the weights {weights_entry} for model={name!r}: {exc}. torchvision looks "
            f"for them at {target} (torch's cache; set TORCH_HOME to move it). Download {weights_entry.url} "
            "there on a machine with internet access, or pass weights='<path to a state_dict file>'."
        ) from exc


# torchvision builds these with other inputs when given weights (transform_input): the graph follows them
_GRAPH_FOLLOWS_WEIGHTS = frozenset({"googlenet", "inception_v3"})


def check_layer_before_loading(model, layer, weights):
    """Raise the error :func:`cut_at_layer` would for a ``layer`` of a torchvision ``model`` name, before loading.

    The architecture is built on the meta device, without memory or weights, so that a misspelt layer is
    reported before a download. Other models (a module, a factory, a text encoder, the offline default whose
    weights are on disk), the architectures that cannot be built that way and those whose graph depends on
    ``weights`` are left to :func:`cut_at_layer`.

    Examples
    --------
    >>> check_layer_before_loading("resnet18", "layer4", "DEFAULT")
    >>> check_layer_before_loading("resnet18", "layer5", "DEFAULT")
    Traceback (most recent call last):
    ...
    ValueError: layer='layer5' is not a layer of this model. Closest: ['layer4', 'layer3', 'layer2', ...
    """
    if layer is None or not isinstance(model, str) or model not in torchvision_model_names():
        return
    if model in _GRAPH_FOLLOWS_WEIGHTS and weights is not None and not is_checkpoint(weights):
        return
    valid = unweighted_layer_names(model)
    if valid is not None:
        refuse_unknown_layer(layer, list(valid))


def cut_backbone(backbone, layer):
    """``backbone``'s network cut at ``layer`` (in place), and whether its maps there run channels last.

    A cut that holds the classifier a checkpoint did not load (:class:`Backbone`'s ``untrained_classifier``)
    raises: the layer would read the values the classifier was built with. The cut keeps what the layer
    reads, so a node after the classifier (a softmax of its logits) is caught as well as the classifier
    itself; ``layer=None`` cuts the classifier away.
    """
    channels_last = gives_channels_last_maps(backbone.module, layer)  # the network's class, before the cut
    body = cut_at_layer(backbone.module, layer)
    classifier = backbone.untrained_classifier
    if (
        classifier is not None
        and layer is not None
        and any(name.startswith(f"{classifier}.") for name, _ in body.named_parameters())
    ):
        raise ValueError(
            f"layer={layer!r} reads the classifier {classifier!r}, which the checkpoint did not load: it holds "
            "no such classifier, or one of another size (fine-tuned on other classes) that the library could "
            "not rebuild at that size (only a plain nn.Linear or nn.Conv2d is): it keeps the values it was "
            "built with. Build the module with the checkpoint's classifier and pass it, or read a layer "
            "before the classifier (layer=None reads its input)."
        )
    return body, channels_last


def build_feature_model(backbone, layer=None, pooling="avg", normalize=False):
    """Wrap a :class:`Backbone` module into a frozen, eval-mode :class:`FeatureModel`."""
    body, channels_last = cut_backbone(backbone, layer)
    pooling, normalize = resolve_pooling(backbone, pooling, normalize)
    model = FeatureModel(
        body, pooling=pooling, normalize=normalize, layer=layer, channels_last_maps=channels_last
    ).eval()
    model.requires_grad_(False)
    return model


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def input_scaling(model):
    """The per-channel mean and std (of pixels scaled to [0, 1]) that the image ``model``'s weights expect.

    ImageNet's for torchvision's models and a module of yours; the offline default's TensorFlow-trained
    weights read pixels scaled to about [-1, 1]. For a preprocessing of another size, say.

    Examples
    --------
    >>> input_scaling("resnet50")
    ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    >>> [round(value, 3) for value in input_scaling("efficientnet_lite0")[0]]
    [0.498, 0.498, 0.498]
    """
    if isinstance(model, str) and model == OFFLINE_MODEL_NAME:
        return _efficientnet_lite.INPUT_MEAN, _efficientnet_lite.INPUT_STD
    return IMAGENET_MEAN, IMAGENET_STD


def imagenet_normalize():
    """Preprocessing for a module whose weights do not say: scale to [0, 1], ImageNet mean and std.

    Images keep their size; pass ``preprocess`` to the estimator to resize them. uint8 images are scaled
    to [0, 1], float images are taken to be in [0, 1] already.

    Examples
    --------
    >>> import torch
    >>> imagenet_normalize()(torch.full((3, 2, 2), 255, dtype=torch.uint8))[:, 0, 0]
    tensor([2.2489, 2.4286, 2.6400])
    """
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
