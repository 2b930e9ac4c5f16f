"""timm's generic constructor arguments, handled one way by every model this package registers.

Generic training scripts (timm's ``train.py``, dstbench's ``--model-kwargs``) pass options such as
``drop_rate`` to any model. Our CIFAR networks have no use for them: each is accepted at the value that
means "off", any other value is a warning (the option cannot change this architecture), and every
unknown name is an error, so that a typo such as ``num_clases=100`` cannot build a 10-class model.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["consume_generic_kwargs"]

# timm's generic constructor arguments, with the value that means "off".
_NEUTRAL_KWARGS: dict[str, Any] = {
    "drop_rate": 0.0,
    "drop_path_rate": 0.0,
    "drop_block_rate": 0.0,
    "global_pool": "avg",
}


def consume_generic_kwargs(arch: str, kwargs: dict[str, Any]) -> None:
    """Drop timm's generic kwargs from ``kwargs`` (warning when one asks for a feature ``arch`` lacks);
    raise ``TypeError`` naming anything else that is left."""
    for name, neutral in _NEUTRAL_KWARGS.items():
        value = kwargs.pop(name, None)
        if value is not None and value != neutral:
            warnings.warn(f"{arch}: ignoring {name}={value!r}; the architecture has no such option", stacklevel=3)
    if kwargs:
        raise TypeError(f"{arch}: unexpected keyword arguments {sorted(kwargs)}")
