"""An external dstbench plugin: two mask updaters, registered through the ``dstbench.methods`` entry point."""

from .gradual_regrow import GradualRegrow
from .magnitude_random import MagnitudeRandom

__all__ = ["GradualRegrow", "MagnitudeRandom"]
