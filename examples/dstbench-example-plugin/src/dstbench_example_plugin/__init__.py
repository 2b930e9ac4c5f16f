"""An external dstbench plugin: one mask updater, registered through the ``dstbench.methods`` entry point."""

from .magnitude_random import MagnitudeRandom

__all__ = ["MagnitudeRandom"]
