"""Which layers a network has, by name, and the sub-network that ends at one of them."""

import copy
import difflib
import functools
import re
import warnings

import torch
import torchvision
from torch import nn
from torchvision.models import ConvNeXt, SwinTransformer, feature_extraction

from . import _efficientnet_lite
from ._classifier_cut import classifier_name
from ._submodules import replace_submodule
from .text_encoders import TextEncoder

# Traced as single calls so that node names stay those of the modules.
_TRACER_KWARGS = {"leaf_modules": [_efficientnet_lite.SameConv2d]}


def _node_names(module):
    """The qualified names of the nodes of ``module``'s traced graph (in evaluation mode), in the order its
    forward runs them: a layer called as a module is one node of its own name, a module whose forward is
    traced gives nodes below its name."""
    # a copy of the arguments: torchvision adds its own leaf modules to the dict it is given
    return feature_extraction.get_graph_node_names(module, tracer_kwargs=dict(_TRACER_KWARGS))[1]


def _containers(node):
    """The qualified names of the modules that hold a graph node, innermost first: block.0.conv gives
    block.0, then block."""
    return [node.rsplit(".", depth)[0] for depth in range(1, node.count(".") + 1)]


def layer_names(module, nodes=None):
    """Names ``layer`` accepts for ``module``: its graph nodes and the modules that contain them.

    A module name stands for the output of its last node, as in ``torchvision.models.feature_extraction``.
    ``nodes``: :func:`_node_names` of ``module``, where the caller has them.
    """
    nodes = _node_names(module) if nodes is None else nodes
    prefixes = {container for node in nodes for container in _containers(node)}
    modules = [name for name, _ in module.named_modules() if name in prefixes]
    return modules + [node for node in nodes if node not in prefixes]


def cut_at_layer(module, layer):
    """The sub-network of ``module`` whose output is ``layer``.

    ``None`` gives the input of the classifier (:func:`~sktransfer._classifier_cut.classifier_name`): a final
    ``nn.Linear`` is replaced by an identity, so that the network's own pooling and flattening still apply,
    and a top-level convolutional classifier block (SqueezeNet's) by global average pooling. A network
    without a classifier, such as one whose classifier the user set to ``nn.Identity()``, is used whole. A
    name picks any node or module of torchvision's feature-extraction graph; an unknown name lists the valid
    ones.
    """
    if isinstance(module, TextEncoder):
        return module.at_layer(layer)
    if layer is None:
        classifier = classifier_name(module)
        if classifier is not None:
            linear = isinstance(module.get_submodule(classifier), nn.Linear)
            replace_submodule(module, classifier, nn.Identity() if linear else nn.AdaptiveAvgPool2d(1))
        return module
    try:
        nodes = _node_names(module)
    except Exception as exc:
        raise ValueError(
            f"layer={layer!r}: this model cannot be traced by torchvision.models.feature_extraction ({exc}); "
            "use layer=None (penultimate features) or pass a module that returns the features you want."
        ) from exc
    refuse_unknown_layer(layer, layer_names(module, nodes))
    refuse_skipped_hooks(module, layer, nodes)
    return feature_extraction.create_feature_extractor(
        module, return_nodes={layer: "features"}, tracer_kwargs=dict(_TRACER_KWARGS)
    )


def refuse_skipped_hooks(module, layer, nodes):
    """Raise for hooks that a network cut at ``layer`` would skip: on ``module``'s own input, or on a module
    on the way to ``layer`` whose forward the cut traces.

    Tracing reads the network's forward, not its call, and calls as modules (hooks and all) only its leaf
    layers (torch's own, torchvision's operators): a hook on the module itself, on an ``nn.Sequential`` or
    on a block of the user's own class would run once, on the trace's placeholders, and never on an image.
    ``nodes`` are :func:`_node_names` of ``module``; the modules that hold one of the nodes up to ``layer``
    (its own included) are the traced ones on the way; a hook on the output of a module the cut ends inside,
    or on layers after the cut, sees no part of the embedding and is not its concern.

    Examples
    --------
    >>> block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> network = nn.Sequential(block, nn.Flatten(), nn.Linear(4, 2))
    >>> nodes = _node_names(network)
    >>> _ = block[0].register_forward_hook(lambda *args: None)  # a torch layer: called, its hook runs
    >>> _ = network[2].register_forward_hook(lambda *args: None)  # after the cut
    >>> refuse_skipped_hooks(network, "0", nodes)
    >>> _ = block.register_forward_hook(lambda *args: None)
    >>> refuse_skipped_hooks(network, "0", nodes)
    Traceback (most recent call last):
    ...
    ValueError: layer='0': hooks registered on the module at '0' (a Sequential) would not run: ...
    """
    if module._forward_pre_hooks:
        raise ValueError(
            f"layer={layer!r}: the {type(module).__name__} module has a forward pre-hook on its own input, "
            "which a network cut at a layer does not run (the cut traces its forward). Apply that change in "
            "preprocess= or in the module's forward, or use layer=None."
        )
    cut = max(i for i, node in enumerate(nodes) if node == layer or node.startswith(f"{layer}."))
    calls = {}  # each traced module: [first, last, nodes seen] of each run of its nodes, a call of it
    for index, node in enumerate(nodes):
        seen_as = _REPEAT_SUFFIX.sub("", node)  # torchvision numbers a node's repeats: block.0, block.0_1
        for container in _containers(node):
            runs = calls.setdefault(container, [])
            if runs and runs[-1][1] == index - 1 and seen_as not in runs[-1][2]:
                runs[-1][1] = index
                runs[-1][2].add(seen_as)
            else:  # a gap, or a node the run has seen: the module called again (block(block(x)))
                runs.append([index, index, {seen_as}])
    skipped = [
        (name, type(sub).__name__)
        for name, sub in module.named_modules()
        if name in calls and _skips_hooks(sub, calls[name], cut)
    ]
    if skipped:
        where = ", ".join(f"'{name}' (a {kind})" for name, kind in skipped[:5])
        raise ValueError(
            f"layer={layer!r}: hooks registered on the module at {where} would not run: a network cut at a "
            "layer traces the forward of the modules on the way, and calls only their layers (nn.Conv2d, "
            "nn.Linear, ...) with their hooks. Register the hooks on a layer inside them, have your module's "
            "forward return the features you want, or use layer=None, which calls the module as written."
        )


# The suffix torchvision's tracer gives a node's name when the same name comes again.
_REPEAT_SUFFIX = re.compile(r"_\d+$")


def _skips_hooks(module, calls, cut):
    """Whether the cut, whose last node is at position ``cut``, skips hooks of a traced ``module`` called over
    the runs of node positions ``calls``: those on its input and gradients where a call starts before the cut
    ends, those on its output where a call ends there too (a call the cut ends inside gives its output after)."""
    on_input = module._forward_pre_hooks or module._backward_pre_hooks or module._backward_hooks
    starts = any(first <= cut for first, _, _ in calls)
    ends = any(last <= cut for _, last, _ in calls)
    return bool((starts and on_input) or (ends and module._forward_hooks))


# Beyond this many layers, an unknown name's error shows the closest and the first, and where the rest are.
_LAYERS_SHOWN = 40


def refuse_unknown_layer(layer, valid):
    if layer not in valid:
        close = difflib.get_close_matches(layer, valid, n=5)
        hint = f" Closest: {close}." if close else ""
        if len(valid) <= _LAYERS_SHOWN:
            listed = f"Valid layers: {valid}"
        else:
            listed = (
                f"It has {len(valid)} layers, listed by sktransfer.backbones.list_layers(model); the first "
                f"{_LAYERS_SHOWN}: {valid[:_LAYERS_SHOWN]}"
            )
        raise ValueError(f"layer={layer!r} is not a layer of this model.{hint} {listed}")


def list_layers(model):
    """The names ``layer`` accepts for an image ``model``: a torchvision name, the offline default, a module.

    The modules that hold graph nodes (``layer4``), then the nodes that are no module's (as
    ``torchvision.models.feature_extraction.get_graph_node_names`` names them). No weights are loaded.

    Parameters
    ----------
    model : str or torch.nn.Module

    Returns
    -------
    names : list of str

    Examples
    --------
    >>> names = list_layers("resnet18")
    >>> "layer4" in names, names[-3:]
    (True, ['avgpool', 'flatten', 'fc'])
    """
    if isinstance(model, nn.Module):
        return layer_names(copy.deepcopy(model))
    if model == _efficientnet_lite.OFFLINE_MODEL_NAME:
        return layer_names(_efficientnet_lite.EfficientNetLite0())
    if isinstance(model, str) and model in torchvision.models.list_models(module=torchvision.models):
        names = unweighted_layer_names(model)
        return list(names) if names is not None else layer_names(torchvision.models.get_model(model))
    raise ValueError(
        f"model={model!r}: list_layers reads torchvision's classification model names, the offline default "
        f"{_efficientnet_lite.OFFLINE_MODEL_NAME!r} and modules; a text encoder's layers are its blocks "
        "(encoder.layer.0, ...), which an unknown layer= names."
    )


@functools.cache
def unweighted_layer_names(name):
    """The layer names of torchvision's ``name`` built on the meta device, or None where it cannot be."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # of initialisations to change: fit warns of its own
            return tuple(layer_names(torchvision.models.get_model(name, weights=None)))
    except Exception:  # RegNets compute their widths from tensors, which the meta device does not hold
        return None


def check_module_layer(module, layer):
    """Raise the error :func:`cut_at_layer` would for a ``layer`` that ``module`` lacks, on a copy of it.

    For callers that send the module elsewhere to be cut (a cluster's workers). A module that cannot be
    copied or traced is left to :func:`cut_at_layer`, which says why.

    Examples
    --------
    >>> check_module_layer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), "2")
    Traceback (most recent call last):
    ...
    ValueError: layer='2' is not a layer of this model. Valid layers: ['input', '0', '1']
    """
    if layer is None:
        return
    try:  # traced on a copy: tracing runs the user's forward, which may count its calls, say
        nodes = _node_names(copy.deepcopy(module))
    except Exception:
        return
    refuse_unknown_layer(layer, layer_names(module, nodes))
    if isinstance(module, nn.Module):
        refuse_skipped_hooks(module, layer, nodes)


# torchvision's families whose maps run channels last, (N, H, W, C), at some nodes; the rest are (N, C, H, W).
_CONVNEXT_CHANNELS_LAST = re.compile(r"(.*\.block\.[1-5]|.*\.permute|.*\.layer_norm)")


def gives_channels_last_maps(module, layer):
    """Whether ``module``, one of torchvision's Swin or ConvNeXt networks, gives ``layer`` channels last.

    Swin runs its stages channels last (all of ``features`` but the patch embedding's convolution,
    ``features.0.0``) and its final ``norm``; ConvNeXt inside each block (``block.1`` to ``block.5``, between
    its two permutes) and inside each LayerNorm2d (``permute``, ``layer_norm``). Pooling over the last two
    axes of such a map would average over a spatial axis and the channels. The network is told by its class,
    however it was given: a model name, the class, or a module.

    Examples
    --------
    >>> import torchvision
    >>> with torch.device("meta"):
    ...     swin, convnext = torchvision.models.swin_t(), torchvision.models.convnext_tiny()
    >>> gives_channels_last_maps(swin, "features.5"), gives_channels_last_maps(swin, "features.0.0")
    (True, False)
    >>> block, stage = "features.1.0.block.3", "features.5"
    >>> gives_channels_last_maps(convnext, block), gives_channels_last_maps(convnext, stage)
    (True, False)
    """
    if layer is None:
        return False
    if isinstance(module, SwinTransformer):
        return layer == "norm" or (layer.split(".")[0] == "features" and layer != "features.0.0")
    if isinstance(module, ConvNeXt):
        return _CONVNEXT_CHANNELS_LAST.fullmatch(layer) is not None
    return False
