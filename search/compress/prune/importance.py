"""Channel importance for structured pruning: how torch-pruning ranks the channels it removes.

``l1``/``l2``: the norm of a channel's group weights over every coupled layer (torch-pruning's
GroupMagnitudeImportance, each layer's scores divided by their mean before the global ranking).
``lamp``: LAMP (Lee et al., "Layer-adaptive Sparsity for the Magnitude-based Pruning", ICLR 2021;
torch-pruning's LAMPImportance): a channel's squared L2 norm over the sum of those of the channels
at least as large in its layer, so scores compare across layers of different scale.

Example:
    >>> type(channel_importance("lamp")).__name__
    'LAMPImportance'
"""

from __future__ import annotations

from typing import Any

from search.errors import ConfigError

IMPORTANCES = ("l1", "l2", "lamp")


def channel_importance(name: str) -> Any:
    """torch-pruning's importance object for ``name`` (one of :data:`IMPORTANCES`).

    Raises:
        ConfigError: an unknown name.
    """
    import torch_pruning as tp

    if name == "lamp":
        return tp.importance.LAMPImportance(p=2)
    if name in ("l1", "l2"):
        return tp.importance.GroupMagnitudeImportance(p=int(name[1]))
    raise ConfigError(f"importance must be one of {', '.join(IMPORTANCES)}, but got {name!r}")
