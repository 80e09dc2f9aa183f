"""The network the trainable estimators train: a backbone's features, then a new head; its stages."""

import warnings

import torch
from torch import nn

from ._lora import lora_parameters
from ._stacklevel import caller_stacklevel
from ._unused_settings import IgnoredSettingWarning
from .text_encoders import TextEncoder

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def backbone_stages(module, dominance=0.5):
    """Names of ``module``'s stages, from the input to the output, for gradual unfreezing and per-layer rates.

    Stages are the children that hold parameters. An only child with parameters, or a child that holds more
    than ``dominance`` of them and is itself a sequence of blocks (torchvision's ``features`` Sequential, a
    ViT's ``encoder.layers``, a ResNet-50's ``layer4``), is replaced by its own stages; single layers
    (convolutions, norms) are never split apart. So a ResNet-50 gives ``conv1, bn1, layer1, layer2, layer3,
    layer4.0, layer4.1, layer4.2`` and an EfficientNet ``features.0, ..., features.8``. A text encoder's stages
    are its embeddings and then each transformer block up to its ``layer`` (see ``TextEncoder.stage_names``;
    the rest never trains). Parameters that belong to no stage (a ViT's class token) go with the first one,
    see :func:`parameters_by_stage`.

    Examples
    --------
    >>> from torch import nn
    >>> backbone_stages(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)))
    ['0', '2']
    """

    for name, part in module.named_modules():  # a text encoder knows its embeddings and blocks
        if isinstance(part, TextEncoder):
            return [f"{name}.{stage}" if name else stage for stage in part.stage_names()]

    def size(part):
        return sum(parameter.numel() for parameter in part.parameters())

    def stages(prefix, part):
        children = [(name, child) for name, child in part.named_children() if size(child) > 0]
        total = size(part)
        names = []
        for name, child in children:
            qualified = f"{prefix}{name}"
            grandchildren = [c for c in child.children() if size(c) > 0]
            blocks = len(grandchildren) > 1 and all(any(True for _ in c.children()) for c in grandchildren)
            if grandchildren and (len(children) == 1 or (size(child) > dominance * total and blocks)):
                names.extend(stages(f"{qualified}.", child))
            else:
                names.append(qualified)
        return names

    return stages("", module) or [""]


def parameters_by_stage(module, stages):
    """The parameters of each of ``stages`` (names from :func:`backbone_stages`); strays join the first."""
    owned = [[] for _ in stages]
    for name, parameter in module.named_parameters():
        index = next(
            (
                i
                for i, stage in enumerate(stages)
                if stage and (name == stage or name.startswith(f"{stage}."))
            ),
            0,
        )
        owned[index].append(parameter)
    return owned


def is_bias(name):
    """Whether a module's own parameter ``name`` is a bias: ``bias``, ``nn.MultiheadAttention``'s
    ``in_proj_bias`` (the query, key and value biases) and ``bias_k``/``bias_v`` (the key and value rows
    ``add_bias_kv`` appends), the recurrent layers' ``bias_ih_l0``, ``bias_hh_l0`` and their kin."""
    return name == "bias" or name.endswith("_bias") or name.startswith("bias_")


class BackboneWithHead(nn.Module):
    """A feature backbone and a new linear head; backbone stages are frozen and unfrozen as wholes.

    A stage whose parameters are all frozen stays in evaluation mode while the network trains, so its
    BatchNorm statistics do not move and its dropout is off; a backbone frozen whole is in evaluation mode
    whole. With ``freeze_batchnorm``, every BatchNorm layer of the backbone keeps its running statistics
    (and uses them), even where its weights train. ``forward(features=...)`` runs the head alone, on
    features computed beforehand.

    Parameters
    ----------
    backbone : torch.nn.Module
        Maps a batch of inputs to (N, n_features) features.
    n_features : int
        Length of a feature vector.
    n_classes : int
        Outputs of the head (logits).
    dropout : float, default=0.0
        Dropout before the head.
    freeze_batchnorm : bool, default=False
        Keep every BatchNorm layer of the backbone in evaluation mode.
    channels_last : bool, default=False
        Give the backbone image batches in channels-last layout (for networks the library builds).

    Examples
    --------
    >>> import torch
    >>> net = BackboneWithHead(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8)), 8, 3)
    >>> net.stage_names
    ['0', '2']
    >>> net.set_trainable(1)  # the top stage and the head
    >>> [p.requires_grad for p in net.backbone.parameters()]
    [False, False, True, True]
    >>> net(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    """

    def __init__(
        self, backbone, n_features, n_classes, dropout=0.0, freeze_batchnorm=False, channels_last=False
    ):
        super().__init__()
        self.backbone = backbone
        self.freeze_batchnorm = freeze_batchnorm
        self.channels_last = channels_last
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_features, n_classes))
        self.stage_names = backbone_stages(backbone)

    def forward(self, x=None, features=None):
        return self.head(self.features(x) if features is None else features).float()

    def features(self, x):
        """The backbone's features of a batch of inputs (in channels-last layout with ``channels_last``)."""
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    def stage_parameters(self):
        """The parameters of each backbone stage, from the input to the output."""
        return parameters_by_stage(self.backbone, self.stage_names)

    def unfreezable_parameters(self):
        """The backbone parameters that unfreezing stages can make train: every stage's, but those of a text
        encoder's blocks after its ``layer``, which never reach the features."""
        unreached = {id(parameter) for parameter in _unreached_parameters(self.backbone)}
        return [p for stage in self.stage_parameters() for p in stage if id(p) not in unreached]

    def set_dropout(self, rate):
        """The dropout rate before the head: of the ``nn.Dropout`` the head begins with. A subclass's head that
        begins otherwise keeps its own layers as written, and a rate above 0 is warned of."""
        first = self.head[0] if isinstance(self.head, nn.Sequential) and len(self.head) else self.head
        if isinstance(first, nn.Dropout):
            first.p = rate
        elif rate > 0:
            warnings.warn(
                f"dropout={rate} sets the nn.Dropout that the head begins with, and the head of "
                f"{type(self).__name__} begins with a {type(first).__name__}: begin it with nn.Dropout, or "
                "leave dropout=0.0 (the head's own layers are left as written).",
                IgnoredSettingWarning,
                stacklevel=caller_stacklevel(),
            )

    def set_trainable(self, n_top_stages, bitfit=False):
        """Train the head, the top ``n_top_stages`` backbone stages, any LoRA adapters and, with ``bitfit``,
        every bias and norm."""
        stages = self.stage_parameters()
        for index, parameters in enumerate(stages):
            for parameter in parameters:
                parameter.requires_grad_(index >= len(stages) - n_top_stages)
        for parameter in lora_parameters(self.backbone):  # low-rank adapters train whenever present
            parameter.requires_grad_(True)
        if bitfit:
            for module in self.backbone.modules():
                for name, parameter in module.named_parameters(recurse=False):
                    if is_bias(name) or isinstance(module, NORM_LAYERS):
                        parameter.requires_grad_(True)
        for parameter in _unreached_parameters(self.backbone):  # after a text encoder's layer: no gradient
            parameter.requires_grad_(False)
        self.head.requires_grad_(True)
        self.train(self.training)

    def train(self, mode=True):
        super().train(mode)
        if not mode:
            return self
        if not any(parameter.requires_grad for parameter in self.backbone.parameters()):
            self.backbone.eval()
            return self
        for name in self.stage_names:
            stage = self.backbone.get_submodule(name)
            if not any(parameter.requires_grad for parameter in stage.parameters()):
                stage.eval()
        if self.freeze_batchnorm:
            for layer in self.backbone.modules():
                if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                    layer.eval()
        return self


def _unreached_parameters(backbone):
    """The parameters of a text encoder's blocks after its ``layer``, which do not reach the features."""
    return [
        parameter
        for part in backbone.modules()
        if isinstance(part, TextEncoder)
        for parameter in part.unreached_parameters()
    ]
