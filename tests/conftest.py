"""Suite-wide settings.

One torch thread per test process: the runs here are tiny, and on a 2-core CI machine two threads
fighting over each small kernel cost several times more CPU than they save.
"""

import torch

torch.set_num_threads(1)
