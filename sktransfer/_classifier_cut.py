"""The classifier that ``layer=None`` cuts from a network: which layer it is, what it reads, and checks."""

import torch
from torch import nn

from .text_encoders import TextEncoder

_CLASSIFIER_NAMES = ("classifier", "fc", "head", "heads")


def _descends_into(layer):
    """Whether the search for the last layer looks inside ``layer``: not into torch's own layers.

    Containers and composite models are searched; a layer of torch's own is one layer, even where it holds
    sublayers whose weights it reads itself (``MultiheadAttention.out_proj``).
    """
    own = type(layer).__module__.startswith("torch.nn.")
    return not own or isinstance(layer, nn.Sequential | nn.ModuleList | nn.ModuleDict)


def _layers_of(module):
    """``module``'s named children but its losses: a loss kept as an attribute (as Lightning modules keep
    theirs, often registered after the head) is no layer of the forward."""
    return [
        (name, child)
        for name, child in module.named_children()
        if not isinstance(child, nn.modules.loss._Loss)
    ]


def classifier_name(module):
    """The name of ``module``'s classifier, or ``None`` when it has none (its output is then the embedding).

    The classifier is the module's last layer, found by descending into the last child at each level (a
    loss module kept as an attribute is no layer), when that layer is an ``nn.Linear``; or a top-level
    ``classifier``/``fc``/``head``/``heads`` block holding a convolution (SqueezeNet's, which ends in
    pooling). A classifier the user replaced by ``nn.Identity()``, or a module that ends in anything else (a
    softmax, a norm, a layer registered out of order), counts as having no classifier: its own output is
    used, as written.

    Examples
    --------
    >>> from torch import nn
    >>> classifier_name(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    '2'
    >>> print(classifier_name(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Identity())))
    None
    >>> classifier_name(nn.ModuleDict({"head": nn.Linear(8, 2), "loss": nn.CrossEntropyLoss()}))
    'head'
    """
    path, part = [], module
    while _descends_into(part) and (children := _layers_of(part)):
        name, part = children[-1]
        path.append(name)
    if not path:
        return None
    if isinstance(part, nn.Linear):
        return ".".join(path)
    block = module.get_submodule(path[0])
    if path[0] in _CLASSIFIER_NAMES and any(isinstance(layer, nn.Conv2d) for layer in block.modules()):
        return path[0]
    return None


def _first_layer(head):
    """The first Linear or Conv2d layer of a classifier head (the head itself when it is one), or None."""
    if isinstance(head, nn.Linear | nn.Conv2d):
        return head
    return next((m for m in head.modules() if isinstance(m, nn.Linear | nn.Conv2d)), None)


def classifier_to_cut(backbone, layer):
    """``(name, width)`` of the classifier that ``layer=None`` cuts from ``backbone`` and of what it reads.

    None for another layer, for a network without a classifier (see :func:`classifier_name`) and for text
    encoders. Call it before :func:`~sktransfer.backbones.build_feature_model`, which cuts the module in
    place.

    Examples
    --------
    >>> from torch import nn
    >>> from sktransfer.backbones import Backbone
    >>> network = nn.Sequential(nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 2))
    >>> classifier_to_cut(Backbone(network, None, ""), None)
    ('2', 7)
    """
    if layer is not None or isinstance(backbone.module, TextEncoder):
        return None
    name = classifier_name(backbone.module)
    first = None if name is None else _first_layer(backbone.module.get_submodule(name))
    # a lazy layer that has not run yet reads 0 features: its width is measured, as for a layer
    if isinstance(first, nn.Linear) and first.in_features:
        return name, first.in_features
    if isinstance(first, nn.Conv2d) and first.in_channels:
        return name, first.in_channels
    return None


def check_classifier_ran_last(cut, width):
    """Raise when the network without its classifier ``cut`` returns ``width`` features, not what that read.

    ``cut`` is what :func:`classifier_to_cut` gave. A mismatch means that the layer registered last (taken
    for the classifier) is not the last one the network's forward runs.
    """
    if cut is not None and cut[1] != width:
        name, read = cut
        raise ValueError(
            f"model: layer=None cuts away the layer it registers last, {name!r} (reading {read} features), "
            f"as its classifier, but without it the network returns {width} features, not {read}: its "
            f"forward does not end with {name!r}, so the output would not be the classifier's input. Pass "
            "layer= naming the layer whose output you want (sktransfer.backbones.list_layers(model) lists "
            "them), or register the classifier last in the module's __init__."
        )


def check_forward_returns_classifier_output(module, cut, batch):
    """Raise when ``module``'s forward does not return what its classifier gives, as ``layer=None`` assumes.

    ``layer=None`` swaps the classifier (``cut``, what :func:`classifier_to_cut` gave) for an identity and
    takes what the network then returns for the embedding. Whatever forward does after the classifier (a
    log-softmax, a temperature, as PyTorch's MNIST example does) would then be applied to the embedding, with
    no error and no change of width. The uncut ``module`` (the library's own copy) runs once on ``batch``, in
    eval mode, to compare its output with the classifier's; a classifier that does not run once, or whose
    output is not as wide as the network's, is left to :func:`check_classifier_ran_last`.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> class LogProbabilities(nn.Sequential):
    ...     def forward(self, x):
    ...         return torch.log_softmax(super().forward(x), dim=1)
    >>> check_forward_returns_classifier_output(  # doctest: +ELLIPSIS
    ...     LogProbabilities(nn.Linear(4, 3), nn.Linear(3, 2)), ("1", 3), torch.ones(1, 4)
    ... )
    Traceback (most recent call last):
    ...
    ValueError: model: layer=None cuts away '1', the layer it registers last, as its classifier, ...
    """
    if cut is None:
        return
    name = cut[0]
    returned, given = _run_recording(module, module.get_submodule(name), batch)
    if len(given) != 1 or not isinstance(returned, torch.Tensor) or not isinstance(given[0], torch.Tensor):
        return
    classifier_output = given[0]
    if returned.numel() != classifier_output.numel():  # another width: check_classifier_ran_last names it
        return
    # a cast to another dtype (.half()) changes no value but its rounding: compared at the returned dtype
    classifier_output = classifier_output.to(returned.dtype).reshape(-1).float()
    returned = returned.reshape(-1).float()
    if torch.allclose(returned, classifier_output, rtol=1e-4, atol=1e-6, equal_nan=True):  # NaN: diverged
        return
    raise ValueError(
        f"model: layer=None cuts away {name!r}, the layer it registers last, as its classifier, and takes "
        f"what {name!r} reads for the embedding; but the module's forward does not return what {name!r} "
        "gives: it changes it afterwards (a log-softmax or a temperature, say), or runs other layers after "
        "it. Without the classifier, that change would apply to the embedding. Pass layer= naming the layer "
        "whose output you want (sktransfer.backbones.list_layers(model) lists them), or end forward with the "
        "classifier."
    )


def _run_recording(module, layer, batch):
    """``module(batch)`` in eval mode without gradients, and the outputs ``layer`` gave, each copied.

    ``module`` is the library's own copy of the user's network: its modes are restored and the hook removed
    afterwards; what its forward creates on first call (a cached table, a lazy layer's weights) is kept. A
    forward that fails returns None: the checks that run the network next name the failure.
    """
    modes = [(sub, sub.training) for sub in module.modules()]
    given = []
    handle = layer.register_forward_hook(lambda _layer, _inputs, output: given.append(_copied(output)))
    try:
        module.eval()
        # no_grad, not inference_mode: the network trains next, and a tensor its forward keeps (a table it
        # builds once, a lazy layer's weights) must stay one that autograd can save
        with torch.no_grad():
            return module(batch.to(next(module.parameters(), batch).device)), given
    except Exception:
        return None, given
    finally:
        handle.remove()
        for sub, training in modes:
            sub.training = training


def _copied(output):
    """A copy of a tensor output, so that a change forward makes in place afterwards does not reach it."""
    return output.clone() if isinstance(output, torch.Tensor) else output
