"""Torch's fused Adam and AdamW kernels for networks on the CPU, where torch's default loops over tensors.

On the CPU, ``torch.optim.AdamW`` updates one parameter tensor at a time with several elementwise passes
each; its fused implementation (``fused=True``, on the CPU since torch 2.4) does the same arithmetic in one
pass per tensor. The library builds its default optimizer fused where that applies: the same update, up to
the order of floating-point operations, in a fraction of the time on small networks (a bottleneck, head
and discriminator on embeddings spend about half their training time in the optimizer's step otherwise).
"""

import torch

# The implementations a user chooses between; any of them given, the choice is the user's.
_IMPLEMENTATION_SETTINGS = ("fused", "foreach", "differentiable", "capturable")
_CPU_FUSED = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 4)


def with_fused_default(optimizer, kwargs, parameters):
    """``kwargs`` with ``fused=True`` when ``optimizer`` is torch's Adam or AdamW over CPU parameters.

    Left as given for any other class (a subclass too, whose ``step`` may differ), when ``kwargs`` chooses
    an implementation itself (``fused``, ``foreach``, ``differentiable``, ``capturable``), for parameters
    on another device (torch's default there, such as ``foreach`` on CUDA, is already vectorised) or not
    floating point, and before torch 2.4.

    Examples
    --------
    >>> layer = torch.nn.Linear(3, 2)
    >>> with_fused_default(torch.optim.AdamW, {"lr": 0.1}, layer.parameters())["fused"]
    True
    >>> with_fused_default(torch.optim.AdamW, {"foreach": True}, layer.parameters())
    {'foreach': True}
    >>> with_fused_default(torch.optim.SGD, {"lr": 0.1}, layer.parameters())
    {'lr': 0.1}
    """
    if not _CPU_FUSED or optimizer not in (torch.optim.Adam, torch.optim.AdamW):
        return kwargs
    if any(setting in kwargs for setting in _IMPLEMENTATION_SETTINGS):
        return kwargs
    if not all(parameter.device.type == "cpu" and parameter.is_floating_point() for parameter in parameters):
        return kwargs
    return {**kwargs, "fused": True}


def move_optimizer_state(optimizer, device):
    """Move ``optimizer``'s state to ``device``, where its parameters went, as torch's kernels expect it.

    Moments follow their parameters. The step counts (0-dim tensors) stay on the CPU for torch's default
    implementations, and follow the parameters for fused and capturable ones, whose kernels read them on
    the parameters' device (as ``Optimizer.load_state_dict`` places them).

    Examples
    --------
    >>> layer = torch.nn.Linear(3, 2)
    >>> optimizer = torch.optim.AdamW(layer.parameters(), fused=True)
    >>> layer(torch.ones(1, 3)).sum().backward()
    >>> optimizer.step()
    >>> move_optimizer_state(optimizer, torch.device("meta"))  # as a move to a GPU would
    >>> {key: value.device.type for key, value in optimizer.state[layer.weight].items()}
    {'step': 'meta', 'exp_avg': 'meta', 'exp_avg_sq': 'meta'}
    """
    for group in optimizer.param_groups:
        steps_follow = bool(group.get("fused") or group.get("capturable"))
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            for key, value in state.items():
                if torch.is_tensor(value) and (value.ndim > 0 or steps_follow):
                    state[key] = value.to(device)
