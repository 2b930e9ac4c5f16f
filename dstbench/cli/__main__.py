"""``python -m dstbench.cli ...``: the same as ``dstbench ...``."""

import sys

from .app import main

sys.exit(main())
