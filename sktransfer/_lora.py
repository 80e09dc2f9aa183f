"""Low-rank adapters (LoRA, Hu et al. 2021): trainable low-rank updates to a network's frozen layers.

An adapted weight ``W`` (out × in) acts as ``W + B @ A * alpha / rank``; ``A`` (rank × in) starts as an
``nn.Linear`` weight does and ``B`` (out × rank) at zero, so an adapted network computes what it did until
they are trained. Layers are replaced in place: callers adapt their own copy of a network, never the user's.
"""

import math
import numbers
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ._stacklevel import caller_stacklevel
from ._submodules import replace_submodule
from ._unused_settings import IgnoredSettingWarning
from .text_encoders import TextEncoder


def _check(rank, alpha):
    if not isinstance(rank, numbers.Integral) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool) or not 0 < alpha < math.inf:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")


class _LoRAAdapter(nn.Module):
    """A wrapped layer (``base``, left as it is) and its adapters, the only parameters of its own."""

    def __init__(self, base, rank, alpha):
        _check(rank, alpha)
        super().__init__()
        self.base = base
        self.rank, self.alpha, self.scaling = int(rank), alpha, float(alpha) / int(rank)

    def _adapters(self, weight):
        """A (rank × in, initialised like an ``nn.Linear`` weight) and B (out × rank, zero) for ``weight``."""
        like = {"device": weight.device, "dtype": weight.dtype}
        a = nn.init.kaiming_uniform_(torch.empty(self.rank, weight.shape[1], **like), a=math.sqrt(5))
        return nn.Parameter(a), nn.Parameter(torch.zeros(weight.shape[0], self.rank, **like))

    def extra_repr(self):
        return f"rank={self.rank}, alpha={self.alpha}"


class LoRALinear(_LoRAAdapter):
    """An ``nn.Linear`` with a trainable low-rank update: ``base(x) + x @ A.T @ B.T * alpha / rank``.

    Parameters
    ----------
    base : nn.Linear
        The layer adapted; kept as ``self.base``, its parameters untouched.
    rank : int, default=8
        The rank of the update.
    alpha : float, default=16
        The update is scaled by ``alpha / rank``.

    Examples
    --------
    >>> import torch
    >>> layer = LoRALinear(torch.nn.Linear(4, 3), rank=2)
    >>> layer.extra_repr(), layer.weight is layer.base.weight
    ('rank=2, alpha=16', True)
    >>> x = torch.randn(5, 4)
    >>> torch.equal(layer(x), layer.base(x)), tuple(layer.lora_A.shape), tuple(layer.lora_B.shape)
    (True, (2, 4), (3, 2))
    """

    def __init__(self, base, rank=8, alpha=16):
        super().__init__(base, rank, alpha)
        self.lora_A, self.lora_B = self._adapters(base.weight)

    # Code written for nn.Linear reads these (Hugging Face models: ``layer.weight.dtype``).
    in_features = property(lambda self: self.base.in_features)
    out_features = property(lambda self: self.base.out_features)
    weight = property(lambda self: self.base.weight)
    bias = property(lambda self: self.base.bias)

    def forward(self, x):
        update = F.linear(F.linear(x, self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype))
        return self.base(x) + update * self.scaling


class LoRAMultiheadAttention(_LoRAAdapter):
    """An ``nn.MultiheadAttention`` with low-rank updates to its input and output projections.

    ``nn.MultiheadAttention.forward`` reads ``in_proj_weight`` and ``out_proj.weight`` as tensors (it never
    calls ``out_proj``), so its layers cannot be adapted one by one: this module computes the attention
    itself, with the updated weights, as the wrapped module would (same arguments, same return value).

    Parameters
    ----------
    base : nn.MultiheadAttention
        The attention adapted, with packed input projections (query, key and value of one size); kept as
        ``self.base``, its parameters untouched.
    rank : int, default=8
        The rank of the updates.
    alpha : float, default=16
        The updates are scaled by ``alpha / rank``.

    Examples
    --------
    >>> import torch
    >>> attention = torch.nn.MultiheadAttention(8, num_heads=2, batch_first=True)
    >>> adapted = LoRAMultiheadAttention(attention, rank=2)
    >>> x = torch.randn(3, 5, 8)
    >>> out, weights = adapted(x, x, x)
    >>> torch.allclose(out, attention(x, x, x)[0], atol=1e-6), tuple(weights.shape)
    (True, (3, 5, 5))
    """

    # nn.TransformerEncoderLayer reads these two to choose its fused inference kernel, which takes the
    # projection weights as tensors and would leave the updates out: False keeps it on the plain path.
    _qkv_same_embed_dim = False
    in_proj_bias = property(lambda self: self.base.in_proj_bias)

    def __init__(self, base, rank=8, alpha=16):
        if not base._qkv_same_embed_dim:
            raise ValueError(
                "LoRA adapts nn.MultiheadAttention with packed input projections only; this one has "
                f"separate ones (kdim={base.kdim}, vdim={base.vdim}, embed_dim={base.embed_dim})"
            )
        super().__init__(base, rank, alpha)
        self.in_proj_lora_A, self.in_proj_lora_B = self._adapters(base.in_proj_weight)
        self.out_proj_lora_A, self.out_proj_lora_B = self._adapters(base.out_proj.weight)

    batch_first = property(lambda self: self.base.batch_first)
    embed_dim = property(lambda self: self.base.embed_dim)
    num_heads = property(lambda self: self.base.num_heads)

    def _updated(self, weight, a, b, dtype):
        return weight + (b.to(dtype) @ a.to(dtype)) * self.scaling

    def forward(
        self,
        query,
        key,
        value,
        key_padding_mask=None,
        need_weights=True,
        attn_mask=None,
        average_attn_weights=True,
        is_causal=False,
    ):
        base = self.base
        batched_first = base.batch_first and query.dim() == 3
        if batched_first:  # tensors that were the same stay the same: self-attention projects once
            q = query.transpose(0, 1)
            k = q if key is query else key.transpose(0, 1)
            value = k if value is key else value.transpose(0, 1)
            query, key = q, k
        dtype = query.dtype
        in_proj = self._updated(base.in_proj_weight, self.in_proj_lora_A, self.in_proj_lora_B, dtype)
        out_proj = self._updated(base.out_proj.weight, self.out_proj_lora_A, self.out_proj_lora_B, dtype)
        output, weights = F.multi_head_attention_forward(
            query,
            key,
            value,
            base.embed_dim,
            base.num_heads,
            in_proj,
            base.in_proj_bias,
            base.bias_k,
            base.bias_v,
            base.add_zero_attn,
            base.dropout,
            out_proj,
            base.out_proj.bias,
            training=self.training,
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            attn_mask=attn_mask,
            average_attn_weights=average_attn_weights,
            is_causal=is_causal,
        )
        return (output.transpose(0, 1) if batched_first else output), weights


def _unread_poolers(module):
    """The prefixes (``"transformer.pooler."``) of the poolers of the Hugging Face models in ``module``
    that no embedding reads: BERT-style models compute one that only a :class:`TextEncoder` cut in it reads.

    A user's own layer named ``pooler`` is no such thing: it is adapted as any other.
    """
    read = {
        id(encoder.transformer)
        for encoder in module.modules()
        if isinstance(encoder, TextEncoder) and encoder.reads_pooler()
    }
    return tuple(
        f"{name}.pooler." if name else "pooler."
        for name, layer in module.named_modules()
        if type(layer).__module__.startswith("transformers.")
        and isinstance(getattr(layer, "pooler", None), nn.Module)
        and id(layer) not in read
    )


def add_lora(module, rank=8, alpha=16):
    """Replace, in place, the linear and attention layers of ``module`` by their LoRA-adapted versions.

    Every ``nn.MultiheadAttention`` is adapted, and every ``nn.Linear`` that is not one of their parts and
    whose qualified name does not contain "pooler" (the pooler of Hugging Face BERT-like encoders, whose
    output is not used, unless ``module`` is a text encoder read at its pooler).

    Parameters
    ----------
    module : nn.Module
        The network; modified in place.
    rank : int, default=8
        The rank of the updates.
    alpha : float, default=16
        The updates are scaled by ``alpha / rank``.

    Returns
    -------
    names : list of str
        The qualified names of the layers adapted.

    Examples
    --------
    >>> from torch import nn
    >>> network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    >>> add_lora(network, rank=4)
    ['2']
    >>> network[2]
    LoRALinear(
      rank=4, alpha=16
      (base): Linear(in_features=4, out_features=2, bias=True)
    )
    """
    if any(isinstance(layer, _LoRAAdapter) for layer in module.modules()):
        raise ValueError(
            f"this {type(module).__name__} already has LoRA adapters (add_lora was applied to it)"
        )
    if isinstance(module, (nn.Linear, nn.MultiheadAttention)):
        raise ValueError(
            f"add_lora replaces the layers inside a module: put this {type(module).__name__} in an nn.Sequential"
        )
    _check(rank, alpha)
    targets, adapted, attention = [], {}, ()
    unread = _unread_poolers(module)
    for name, layer in module.named_modules(remove_duplicate=False):
        if name.startswith(attention):  # out_proj is adapted with its attention
            continue
        if isinstance(layer, nn.MultiheadAttention):
            attention += (name + ".",)
            kind = LoRAMultiheadAttention
        elif isinstance(layer, nn.Linear) and not name.startswith(unread):
            kind = LoRALinear
        else:
            continue
        if id(layer) not in adapted:  # a layer reached by several names stays shared
            adapted[id(layer)] = kind(layer, rank, alpha)
        targets.append((name, adapted[id(layer)]))
    if not targets:
        raise ValueError(
            "strategy='lora' adapts linear and attention layers (nn.Linear, nn.MultiheadAttention), and this "
            f"{type(module).__name__} has none; use strategy='bitfit' or strategy='full' to fine-tune it"
        )
    for name, adapter in targets:
        replace_submodule(module, name, adapter)
    for layer in module.modules():  # its nested-tensor inference path reads the projection weights too
        if isinstance(layer, nn.TransformerEncoder):
            layer.use_nested_tensor = False
    return [name for name, _ in targets]


def unreached_adapters(module, sample):
    """The layers ``add_lora`` adapted in ``module`` whose updates do not reach its output for ``sample``.

    A network may read a layer's weight without calling the layer (torchvision's Swin attention reads its
    ``qkv`` and ``proj`` weights): an adapter there would never train. One forward and backward pass on
    ``sample`` (a batch of inputs), in evaluation mode, tells: an adapter none of whose parameters gets a
    gradient is not reached.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> class ReadsTheWeight(nn.Module):  # calls its first layer, reads the second's weight
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.called, self.read = nn.Linear(4, 4), nn.Linear(4, 2)
    ...     def forward(self, x):
    ...         return nn.functional.linear(self.called(x), self.read.weight)
    >>> network = ReadsTheWeight()
    >>> add_lora(network, rank=2)
    ['called', 'read']
    >>> unreached_adapters(network, torch.randn(3, 4))
    ['read']
    """
    adapters = [(name, layer) for name, layer in module.named_modules() if isinstance(layer, _LoRAAdapter)]
    parameters = [list(layer.parameters(recurse=False)) for _, layer in adapters]
    was_training = module.training
    module.eval()
    try:
        with torch.enable_grad():
            output = module(sample)
            gradients = torch.autograd.grad(
                output.float().sum(), [p for group in parameters for p in group], allow_unused=True
            )
    finally:
        module.train(was_training)
    unreached, start = [], 0
    for (name, _), group in zip(adapters, parameters, strict=True):
        if all(gradient is None for gradient in gradients[start : start + len(group)]):
            unreached.append(name)
        start += len(group)
    return unreached


def remove_adapters(module, names):
    """Put back, in place, the layers of ``module`` that ``add_lora`` adapted under ``names``.

    Examples
    --------
    >>> from torch import nn
    >>> pair = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    >>> add_lora(pair, rank=1), remove_adapters(pair, ['1'])
    (['0', '1'], None)
    >>> [type(layer).__name__ for layer in pair]
    ['LoRALinear', 'Linear']
    """
    removed = {id(module.get_submodule(name)) for name in names}
    shared = [name for name, layer in module.named_modules(remove_duplicate=False) if id(layer) in removed]
    for name in shared:  # a layer reached by several names goes back under each
        replace_submodule(module, name, module.get_submodule(name).base)


def drop_unreached_adapters(features, sample, owner):
    """Take out of ``features.body``, warning for ``owner``, the adapters that ``sample`` shows never train.

    ``features`` runs ``features.body`` (a :class:`~sktransfer._feature_model.FeatureModel`), whose layers
    the warning names. Raises a ValueError when none is reached: LoRA would train nothing but the head.
    """
    unreached = [name.removeprefix("body.") for name in unreached_adapters(features, sample)]
    if not unreached:
        return
    remove_adapters(features.body, unreached)
    if not lora_parameters(features.body):
        raise ValueError(
            f"strategy='lora': none of the adapted layers ({unreached[:5]}) reaches the network's output: "
            "the network reads their weights without calling them. Use strategy='full', 'gradual' or "
            "'bitfit' for this network."
        )
    warnings.warn(
        f"{owner}: strategy='lora' leaves out the layers {unreached[:5]}"
        f"{' and more' if len(unreached) > 5 else ''}: the network reads their weights without calling them "
        "(torchvision's Swin attention does), so their adapters would never train. The other adapted layers "
        "train; strategy='full' trains every layer.",
        IgnoredSettingWarning,
        stacklevel=caller_stacklevel(),
    )


def lora_parameters(module):
    """The adapters' parameters in ``module``: the ``A`` and ``B`` of every layer ``add_lora`` adapted.

    Examples
    --------
    >>> from torch import nn
    >>> network = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> add_lora(network, rank=2)
    ['0', '2']
    >>> [tuple(parameter.shape) for parameter in lora_parameters(network)]
    [(2, 6), (4, 2), (2, 4), (2, 2)]
    """
    return [
        parameter
        for layer in module.modules()
        if isinstance(layer, _LoRAAdapter)
        for parameter in layer.parameters(recurse=False)
    ]


def freeze_all_but_lora(module):
    """Make the adapters the only trainable parameters of ``module``.

    Examples
    --------
    >>> from torch import nn
    >>> network = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> _ = add_lora(network, rank=2)
    >>> freeze_all_but_lora(network)
    >>> [name for name, parameter in network.named_parameters() if parameter.requires_grad]
    ['0.lora_A', '0.lora_B', '2.lora_A', '2.lora_B']
    """
    adapters = lora_parameters(module)
    if not adapters:
        raise ValueError(f"this {type(module).__name__} has no LoRA adapters; call add_lora on it first")
    module.requires_grad_(False)
    for parameter in adapters:
        parameter.requires_grad_(True)
