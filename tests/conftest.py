"""Suite-wide settings.

One torch thread per test process: the runs here are tiny, and on a 2-core CI machine two threads
fighting over each small kernel cost several times more CPU than they save. The example plugin's
methods are registered as if installed, so tests parametrised over ``list_methods()`` cover them. The
code version is pinned (see below).
"""

import os

import torch

from tests.plugins import register_example_plugin

torch.set_num_threads(1)
register_example_plugin()
# Runs record the code version (package + git commit) and are only resumed or reused by the same code;
# pin it so that a commit made while the suite runs cannot fail a kill-and-resume test.
os.environ.setdefault("DSTBENCH_CODE_VERSION", "tests")
