"""The features a backbone gives: its output at a layer, pooled to one vector per input, checked."""

import warnings

import torch
from torch import nn

from ._runtime import NetworkOutputError
from ._stacklevel import caller_stacklevel


class FeatureModel(nn.Module):
    """A backbone cut at a layer, its output pooled to one vector per input and optionally L2-normalised.

    Spatial maps (N, C, H, W) are pooled over H and W; token sequences (N, L, D) over L, counting only the
    tokens of the attention mask for texts (``"avg"``, ``"max"``), or read at the first real token
    (``"cls"``); ``pooling=None`` flattens instead. With ``channels_last_maps`` (a layer of torchvision's
    that gives (N, H, W, C) maps: :func:`~sktransfer._layers.gives_channels_last_maps`), maps are read so.
    An output with another number of rows than the input, or of a shape that pooling cannot read, raises
    :class:`~sktransfer._runtime.NetworkOutputError` naming ``layer`` and the shapes.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> FeatureModel(nn.Conv2d(3, 4, 1), pooling="max")(torch.zeros(2, 3, 5, 5)).shape
    torch.Size([2, 4])
    """

    def __init__(self, body, pooling="avg", normalize=False, layer=None, channels_last_maps=False):
        super().__init__()
        self.body = body
        self.pooling = pooling
        self.normalize = normalize
        self.layer = layer
        self.channels_last_maps = channels_last_maps

    def extra_repr(self):
        return f"layer={self.layer!r}, pooling={self.pooling!r}, normalize={self.normalize}"

    def output_name(self):
        """The features' origin, as errors name it."""
        body = type(self.body).__name__
        return f"the output of {body} at layer={self.layer!r}"

    def forward(self, x):
        out = self.body(x)
        if isinstance(out, dict) and list(out) == ["features"]:  # the library's cut at ``layer``
            out = out["features"]
        elif isinstance(out, dict):  # a Hugging Face model's output, say
            raise NetworkOutputError(
                f"{self.output_name()} is a {type(out).__name__} with keys {list(out)}, not a tensor: pass a "
                "module whose forward returns the features (for a Hugging Face vision model, its "
                "pooler_output or last_hidden_state[:, 0], say)."
            )
        if not isinstance(out, torch.Tensor) or out.ndim < 1 or len(out) != len(x):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise NetworkOutputError(
                f"{self.output_name()} is {shape} for a batch of {len(x)} inputs of shape {tuple(x.shape)}; "
                "it must have one row per input (check the module's forward, or pick another layer)."
            )
        if out.ndim == 4 and getattr(self, "channels_last_maps", False):  # (N, H, W, C): Swin's stages, say
            out = out.permute(0, 3, 1, 2)
        if out.ndim > 2 and self.pooling is not None:
            if out.ndim not in (3, 4):
                raise NetworkOutputError(
                    f"{self.output_name()} has shape {tuple(out.shape)}: pooling={self.pooling!r} reads "
                    "(N, C, H, W) maps or (N, tokens, D) sequences; use pooling=None to flatten it."
                )
            out = _pool(out, self.pooling, getattr(x, "attention_mask", None))
        out = out.reshape(len(out), -1).float()
        if self.normalize:
            out = nn.functional.normalize(out, dim=1)
        return out


def _pool(out, pooling, mask):
    """(N, C, H, W) or (N, L, D) to (N, C) or (N, D); ``mask`` (N, L) marks the real tokens of texts."""
    if pooling == "cls":
        if out.ndim != 3:
            raise NetworkOutputError(
                f"pooling='cls' reads (N, tokens, D) sequences, not {tuple(out.shape)} maps."
            )
        if mask is None:
            return out[:, 0]
        # The first real token: the first position, unless the tokenizer pads on the left.
        real = mask[:, : out.shape[1]].to(torch.int8)
        if ((real.sum(dim=1) == 0) & mask.any(dim=1)).any():
            raise NetworkOutputError(
                f"pooling='cls' reads the first real token, and a {out.shape[1]}-token output holds none for "
                f"a text whose padding comes first (a {mask.shape[1]}-token batch): use pooling='avg'."
            )
        first = real.argmax(dim=1).to(out.device)
        return out[torch.arange(len(out), device=out.device), first]
    if out.ndim == 4:
        return out.mean(dim=(2, 3)) if pooling == "avg" else out.amax(dim=(2, 3))
    if mask is None:
        return out.mean(dim=1) if pooling == "avg" else out.amax(dim=1)
    mask = mask[:, : out.shape[1], None].to(out.dtype)
    if pooling == "avg":
        return (out * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return out.masked_fill(mask == 0, torch.finfo(out.dtype).min).amax(dim=1)


def refuse_text_without_pooling(pooling):
    """Raise for ``pooling=None`` on a text encoder, whose token sequences differ in length between texts."""
    if pooling is None:
        raise ValueError(
            "pooling=None flattens the token sequence, whose length differs between texts: use 'avg' (mean over "
            "the real tokens), 'max', 'cls' (the first token) or 'model' (the encoder's own pooling) for text."
        )


def resolve_pooling(backbone, pooling, normalize):
    """``pooling`` and ``normalize`` as a :class:`FeatureModel` applies them: ``"model"`` is the backbone's own."""
    if backbone.kind == "text":
        refuse_text_without_pooling(pooling)
    if pooling != "model":
        return pooling, normalize
    if isinstance(backbone.own_pooling, Exception):
        raise backbone.own_pooling
    unread = backbone.own_pooling_unread
    if unread is not None:
        warnings.warn(str(unread), type(unread), stacklevel=caller_stacklevel())
    return backbone.own_pooling, normalize or backbone.own_normalize
