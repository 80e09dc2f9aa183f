"""Setting a layer of a network by its qualified name."""


def replace_submodule(module, name, layer):
    """Set ``layer`` in ``module`` under its qualified ``name`` (``"classifier.3"``), in place.

    Examples
    --------
    >>> from torch import nn
    >>> network = nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.ReLU(), nn.Linear(8, 2)))
    >>> replace_submodule(network, "1.1", nn.Identity())
    >>> network[1][1]
    Identity()
    """
    parent, _, attribute = name.rpartition(".")
    setattr(module.get_submodule(parent), attribute, layer)
