"""Local checkpoints as weights: which values name a file, reading a state_dict, loading it into a module."""

import os
from pathlib import Path

import torch
from torch import nn

from ._submodules import replace_submodule

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar")


def is_checkpoint(weights):
    """Whether ``weights`` names a state_dict file rather than pretrained weights of torchvision's."""
    if isinstance(weights, os.PathLike):
        return True
    if not isinstance(weights, str) or weights == "DEFAULT":
        return False
    # a folder is no checkpoint: one named like a weights entry ("IMAGENET1K_V1") must not shadow it
    return weights.lower().endswith(_CHECKPOINT_SUFFIXES) or os.sep in weights or os.path.isfile(weights)


def read_checkpoint(path, own_keys=()):
    """Read a state_dict saved with ``torch.save``; accepts the usual wrappers and DataParallel prefixes.

    The "module." that DataParallel and DDP put before every name is taken off, unless that makes fewer of
    the names those of ``own_keys`` (the state_dict keys of the module it is for): a network whose own layer is
    called ``module`` keeps its names.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights={str(path)!r}: no such checkpoint file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"weights={str(path)!r} could not be read as a torch state_dict: {exc}") from exc
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights={str(path)!r} does not hold a state_dict (a mapping of names to tensors).")
    state = dict(state)
    if not all(key.startswith("module.") for key in state):  # DataParallel and DDP prefix every key
        return state
    stripped, own_keys = {key.removeprefix("module."): value for key, value in state.items()}, set(own_keys)
    return stripped if len(stripped.keys() & own_keys) >= len(state.keys() & own_keys) else state


def _rebuilt_at_shape(layer, weight, bias):
    """An ``nn.Linear`` or ``nn.Conv2d`` like ``layer`` but for a ``weight`` of another shape, else None.

    Built without values (the checkpoint's are loaded next): drawing an initialisation would move torch's
    random stream.
    """
    if type(layer) is nn.Linear and weight.ndim == 2:  # a subclass's own forward could not be rebuilt
        rebuilt = nn.Linear(weight.shape[1], weight.shape[0], bias=bias, device="meta")
    elif type(layer) is nn.Conv2d and weight.ndim == 4:
        rebuilt = nn.Conv2d(
            weight.shape[1] * layer.groups,
            weight.shape[0],
            tuple(weight.shape[2:]),
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            bias=bias,
            padding_mode=layer.padding_mode,
            device="meta",
        )
    else:
        return None
    return rebuilt.to_empty(device=layer.weight.device).to(layer.weight.dtype)


def _resize_classifier(module, classifier, state):
    """Rebuild the layers of ``classifier`` whose weights ``state`` holds at another shape (other classes)."""
    for name, layer in list(module.get_submodule(classifier).named_modules()):
        path = f"{classifier}.{name}" if name else classifier
        weight = state.get(f"{path}.weight")
        if weight is None or not isinstance(getattr(layer, "weight", None), torch.Tensor):
            continue
        if weight.shape != layer.weight.shape:
            rebuilt = _rebuilt_at_shape(layer, weight, bias=f"{path}.bias" in state)
            if rebuilt is not None:
                replace_submodule(module, path, rebuilt)


def load_checkpoint(module, path, classifier):
    """Load a checkpoint into ``module``; a ``classifier`` of another size (fine-tuned on other classes) is
    rebuilt at the checkpoint's size first, so that a layer reading it reads the checkpoint's classifier (a
    plain ``nn.Linear`` or ``nn.Conv2d``; another is skipped, as ``layer=None`` cuts it anyway). The name of a
    classifier the checkpoint did not load (skipped, or absent from it) is returned, so that a layer reading
    it can be refused.

    Examples
    --------
    >>> import tempfile, torch
    >>> from torch import nn
    >>> path = tempfile.mkdtemp() + "/ten_classes.pt"
    >>> torch.save(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 10)).state_dict(), path)
    >>> network = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1000))
    >>> load_checkpoint(network, path, classifier="2")
    >>> network[2]
    Linear(in_features=8, out_features=10, bias=True)
    """
    state = read_checkpoint(path, module.state_dict())
    if classifier:
        _resize_classifier(module, classifier, state)
    own = module.state_dict()
    # a classifier that cannot be rebuilt (a subclass of Linear, a parametrized weight) is left as built
    skipped = {
        key
        for key, tensor in state.items()
        if key in own and own[key].shape != tensor.shape and classifier and key.startswith(classifier + ".")
    }
    mismatched = [
        f"{key} {tuple(state[key].shape)} for {tuple(own[key].shape)}"
        for key in state
        if key in own and key not in skipped and own[key].shape != state[key].shape
    ]
    if mismatched:  # load_state_dict would raise torch's RuntimeError, naming neither weights nor the file
        raise ValueError(
            f"weights={str(path)!r} does not match the architecture: {len(mismatched)} tensors have another "
            f"shape, such as {mismatched[:3]}."
        )
    state = {key: value for key, value in state.items() if key not in skipped}
    missing, unexpected = module.load_state_dict(state, strict=False)
    # a checkpoint of the network without its classifier (saved with the classifier cut) is a backbone's
    untrained = [key for key in missing if classifier and key.startswith(classifier + ".")]
    missing = [key for key in missing if key not in untrained]
    if missing or unexpected:
        raise ValueError(
            f"weights={str(path)!r} does not match the architecture: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]} (of {len(missing)} and {len(unexpected)})."
        )
    return classifier if skipped or untrained else None
