"""How wide a backbone's features are at a layer, and whether its ``pooling`` can take effect there."""

import copy

import torch
from torch import nn

from ._classifier_cut import (
    check_classifier_ran_last,
    check_forward_returns_classifier_output,
    classifier_name,
    classifier_to_cut,
)
from ._layers import cut_at_layer
from ._unused_settings import set_away_from_default, warn_of_unused_settings
from .backbones import Backbone, build_feature_model
from .text_encoders import TextEncoder


def pooling_cannot_apply(backbone, layer, example=None):
    """What ``pooling`` needs to take effect at ``layer``, where it cannot there; None where it can.

    With ``layer=None`` an image network's classifier is cut away: a final linear layer reads what the
    network has pooled, and a convolutional classifier block (SqueezeNet's) is replaced by global average
    pooling. A text encoder's layer that gives one vector per text (a BERT's ``pooler``) has nothing left
    to pool either, nor has an image network's layer (or a module without a classifier) whose output is one
    vector per image, a Flatten's say: a blank input shaped like ``example()`` (a preprocessed image, as in
    :func:`feature_size`) runs through a copy to tell. Only a spatial node (a map or a token sequence) has
    something for ``pooling`` to pool: the classifier's input too, where it reads a token sequence (a user's
    module, tried on a blank input as well).

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    >>> pooling_cannot_apply(Backbone(net, None, ""), None)[:50]
    'at a layer that outputs a map or a token sequence '
    >>> pooling_cannot_apply(Backbone(net, None, ""), "0") is None
    True
    >>> pooling_cannot_apply(Backbone(net, None, ""), "2")[-61:]
    'one vector per image: set layer to a block before flattening)'
    """
    if isinstance(backbone.module, TextEncoder):
        if (
            layer is None
            or layer in backbone.module.block_names()
            or len(_text_output_shape(backbone, layer)) > 2
        ):
            return None
        return (
            f"at a layer that outputs a token sequence (layer={layer!r} gives one vector per text: set layer "
            "to one of the encoder's blocks, or to None for its last hidden state)"
        )
    if layer is None and (classifier := classifier_name(backbone.module)) is not None:
        # a final linear layer may read a token sequence (a user's module), which pooling does pool
        linear = isinstance(backbone.module.get_submodule(classifier), nn.Linear)
        if linear and _output_axes(backbone, None, example) not in (2, None):
            return None
        return (
            "at a layer that outputs a map or a token sequence (layer=None reads the features the network "
            "pools for its classifier: set layer to one of its blocks or stages instead)"
        )
    if _output_axes(backbone, layer, example) != 2:  # a map or a sequence, or None: feature_size says why
        return None
    where = "the module" if layer is None else f"layer={layer!r}"
    return (
        f"at a layer that outputs a map or a token sequence ({where} outputs one vector per image: set layer "
        "to a block before flattening)"
    )


def pooling_to_apply(estimator, backbone, example=None):
    """The ``pooling`` to build ``estimator``'s network with at its ``layer``, warned of where it cannot apply.

    Only a ``pooling`` set away from its default is tried (on a copy, see :func:`pooling_cannot_apply`).
    Where it cannot apply, an :class:`~sktransfer.exceptions.IgnoredSettingWarning` says so, and
    ``"model"`` gives way to ``"avg"``: its normalisation is ignored too, as the warning says.
    """
    if not set_away_from_default(estimator, "pooling"):
        return estimator.pooling
    needs = pooling_cannot_apply(backbone, estimator.layer, example)
    if needs is None:
        return estimator.pooling
    warn_of_unused_settings(estimator, ["pooling"], needs)
    return "avg" if estimator.pooling == "model" else estimator.pooling


def _output_axes(backbone, layer, example):
    """The number of axes of an image network's output at ``layer``, before pooling; None where it fails."""
    body = cut_at_layer(copy.deepcopy(backbone.module), layer)  # cut_at_layer swaps the classifier out
    try:
        with torch.inference_mode():
            out = body(_blank_like(backbone, None if example is None else example())[None])
    except Exception:
        return None
    out = out.get("features") if isinstance(out, dict) else out
    return out.ndim if isinstance(out, torch.Tensor) else None


def _blank_like(backbone, sample):
    """Zeros shaped like ``sample`` (a preprocessed image), or like a 224×224 image through the preprocessing."""
    if sample is None:
        image = torch.zeros(3, 224, 224, dtype=torch.uint8)
        sample = backbone.preprocess(image) if backbone.preprocess is not None else image.float()
    return torch.zeros_like(sample)


def feature_size(backbone, layer=None, pooling="avg", example=None, verify=False):
    """Length of the feature vector that :func:`build_feature_model` gives for ``backbone``.

    With ``layer=None`` this is the input size of the classifier being cut away, so no forward pass is
    needed, unless ``verify`` asks to check on ``example()`` that the network without it gives as many (a
    user's module, whose classifier is only taken to be the layer it registers last:
    :func:`check_classifier_ran_last`).
    Otherwise one blank input runs through a copy: shaped like the preprocessed image that ``example()``
    returns (modules ending with a Flatten have a width that depends on the image size), or like a 224×224
    image through the backbone's preprocessing when ``example`` is None or returns None.

    Examples
    --------
    >>> from torch import nn
    >>> feature_size(Backbone(nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.Linear(7, 2)), None, ""))
    7
    """
    if isinstance(backbone.module, TextEncoder):
        return _text_feature_size(backbone, layer)
    cut = classifier_to_cut(backbone, layer)
    sample = None if example is None else example()
    if cut is not None and not (verify and sample is not None):
        return cut[1]
    if verify and sample is not None:
        check_forward_returns_classifier_output(backbone.module, cut, sample[None])
    model = build_feature_model(Backbone(copy.deepcopy(backbone.module), None, ""), layer, pooling)
    sample = _blank_like(backbone, sample)
    try:
        with torch.inference_mode():
            width = int(model(sample[None]).shape[1])
    except Exception as exc:
        raise ValueError(
            f"could not find the feature size of layer={layer!r}: a blank {tuple(sample.shape)} input failed "
            f"({exc}); use layer=None or a module that returns features for such images."
        ) from exc
    check_classifier_ran_last(cut, width)
    return width


def _text_feature_size(backbone, layer):
    """The width of a text encoder's pooled features: its hidden size at a block, else one text's run.

    A sub-layer (a block's feed-forward, say) may be of another width; every pooling keeps the last axis.
    """
    if layer is None or layer in backbone.module.block_names():
        return backbone.module.hidden_size
    return _text_output_shape(backbone, layer)[-1]


def _text_output_shape(backbone, layer):
    """The shape of a text encoder's output at ``layer`` for one short text.

    The library's own encoder, loaded for this fit, is read at ``layer`` once, without a copy.
    """
    encoder = backbone.module
    taken_at = encoder.layer
    try:
        with torch.inference_mode():
            return tuple(encoder.at_layer(layer)(backbone.preprocess(["a short text"])).shape)
    finally:
        encoder.layer = taken_at
