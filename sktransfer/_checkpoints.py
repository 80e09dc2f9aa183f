"""Local checkpoints as weights: which values name a file, reading a state_dict, loading it into a module."""

import os
from pathlib import Path

import torch

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


def load_checkpoint(module, path, classifier):
    """Load a checkpoint into ``module``; a ``classifier`` of another size (fine-tuned on other classes) is skipped."""
    own = module.state_dict()
    state = read_checkpoint(path, own)
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
    missing = [key for key in missing if not (classifier and key.startswith(classifier + "."))]
    if missing or unexpected:
        raise ValueError(
            f"weights={str(path)!r} does not match the architecture: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]} (of {len(missing)} and {len(unexpected)})."
        )
