"""FLOP accounting, for the analysis commands: the cost model itself lives in :mod:`dstbench.engine.cost`,
beside the ``Needs`` it reads, so the training core never imports the analysis package."""

from dstbench.engine.cost import *  # noqa: F401,F403
from dstbench.engine.cost import __all__  # noqa: F401
