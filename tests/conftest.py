"""Suite-wide settings.

One torch thread per test process: the runs here are tiny, and on a 2-core CI machine two threads
fighting over each small kernel cost several times more CPU than they save. The example plugin's
methods are registered as if installed, so tests parametrised over ``list_methods()`` cover them.
"""

import torch

from tests.plugins import register_example_plugin

torch.set_num_threads(1)
register_example_plugin()
