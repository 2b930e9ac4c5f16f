"""``python -m dstbench ...``: the CLI, also the entry point ``torchrun -m dstbench train ...`` needs."""

import sys

from .cli import main

sys.exit(main())
